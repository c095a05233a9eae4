//! Built-in region groups.

/// The 27 member states of the European Union.
pub const EU: &[&str] = &[
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// The European Economic Area: the EU plus Iceland, Liechtenstein, Norway.
pub const EEA_EXTRA: &[&str] = &["IS", "LI", "NO"];

/// Names of the built-in groups.
pub const NAMES: &[&str] = &["EU", "EEA"];

/// The countries of built-in group `name` (case-insensitive), if it is one.
pub fn members(name: &str) -> Option<Vec<&'static str>> {
    match name.to_ascii_uppercase().as_str() {
        "EU" => Some(EU.to_vec()),
        "EEA" => Some(EU.iter().chain(EEA_EXTRA).copied().collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::countries;

    #[test]
    fn groups_have_their_members() {
        assert_eq!(members("EU").unwrap().len(), 27);
        assert_eq!(members("eea").unwrap().len(), 30);
        assert!(members("EEA").unwrap().contains(&"NO"));
        assert!(!members("EU").unwrap().contains(&"CH"));
        assert!(members("NATO").is_none());
        for c in members("EEA").unwrap() {
            assert!(countries::name(c).is_some(), "{c}");
        }
    }
}
