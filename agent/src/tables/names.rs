//! Which learned names each policy's `allow_names` matches, as the kernel's
//! name-allow map holds them for one table generation: (name id, policy
//! slot) pairs.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy::NamesPolicy;

/// The (name id, slot) pairs of `names` (id → canonical name) that the
/// `allow_names` of the policies in `slots` (slot → its names policy)
/// match.
pub fn name_allow<'a>(
    names: impl IntoIterator<Item = (u32, &'a str)>,
    slots: &BTreeMap<u32, &NamesPolicy>,
) -> BTreeSet<(u32, u16)> {
    let with_allow: Vec<(u16, &NamesPolicy)> = slots
        .iter()
        .filter(|(_, p)| !p.allow.is_empty())
        .map(|(slot, p)| (*slot as u16, *p))
        .collect();
    let mut out = BTreeSet::new();
    if with_allow.is_empty() {
        return out;
    }
    for (id, name) in names {
        for (slot, policy) in &with_allow {
            if policy.allows(name) {
                out.insert((id, *slot));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::NamePattern;

    #[test]
    fn each_name_goes_with_the_slots_whose_patterns_match() {
        let eu = NamesPolicy {
            allow: vec![NamePattern::parse("*.partner.test").unwrap()],
            ..NamesPolicy::default()
        };
        let other = NamesPolicy {
            allow: vec![NamePattern::parse("api.partner.test").unwrap()],
            ..NamesPolicy::default()
        };
        let none = NamesPolicy::default();
        let slots = BTreeMap::from([(1, &eu), (2, &other), (3, &none)]);
        let set = name_allow(
            [
                (10, "api.partner.test"),
                (11, "x.partner.test"),
                (12, "partner.test"),
            ],
            &slots,
        );
        assert_eq!(set, BTreeSet::from([(10, 1), (10, 2), (11, 1)]));
    }
}
