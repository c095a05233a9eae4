//! Built-in region groups: names a policy's allow list can use for a set of
//! countries (`allow = ["EEA", "GDPR-adequate"]`).
//!
//! Group names are matched case-insensitively (`eea`, `north-america`). None
//! of them is two letters long, so none can be mistaken for a country code;
//! the continents are spelled out (`Europe`) so that they cannot be confused
//! with `EU`, the Union. Every member is a code of [`countries::COUNTRIES`].
//!
//! [`countries::COUNTRIES`]: super::countries::COUNTRIES

/// The 27 member states of the European Union.
///
/// Only the member states' own codes: territories that are part of the Union
/// but that geolocation databases tag with codes of their own (Aland `AX`;
/// the outermost regions `GF`, `GP`, `MQ`, `RE`, `YT`, `MF`) are not
/// included; a policy that needs them names them.
pub const EU: &[&str] = &[
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// The European Economic Area: the EU plus Iceland, Liechtenstein, Norway.
pub const EEA: &[&str] = &[
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IS",
    "IT", "LI", "LT", "LU", "LV", "MT", "NL", "NO", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// The European Free Trade Association: Iceland, Liechtenstein, Norway and
/// Switzerland (which is not in the EEA).
pub const EFTA: &[&str] = &["CH", "IS", "LI", "NO"];

/// Third countries and territories with an adequacy decision of the European
/// Commission under GDPR Art. 45 that covers the whole country, as of 2026:
/// Andorra, Argentina, Canada, the Faroe Islands, Guernsey, Israel, the Isle
/// of Man, Japan, Jersey, New Zealand, the Republic of Korea, Switzerland,
/// the United Kingdom and Uruguay.
///
/// The EEA itself is not in this group (within it data flows freely anyway):
/// a policy writes `allow = ["EEA", "GDPR-adequate"]`.
///
/// Judgment calls:
/// - Canada's decision covers only commercial organisations subject to
///   PIPEDA; Canada is included, and transfers to public bodies there need
///   another basis.
/// - The United States' decision (EU-US Data Privacy Framework, 2023) covers
///   only organisations certified under it, so `US` is not included; a
///   policy adds `"US"` explicitly when its counterparty is DPF-certified.
/// - The European Patent Organisation's decision covers an international
///   organisation, not a country, so it has no code here.
/// - Brazil: the Commission began the procedure for a decision in 2025;
///   its adoption could not be confirmed when this list was written, so
///   `BR` is not included. Add it here once the decision is in force.
/// - Gibraltar (`GI`) and Greenland (`GL`) are not included: neither has a
///   decision of its own, and neither is covered by the United Kingdom's
///   decision or by Denmark's membership of the Union.
pub const GDPR_ADEQUATE: &[&str] = &[
    "AD", "AR", "CA", "CH", "FO", "GB", "GG", "IL", "IM", "JE", "JP", "KR", "NZ", "UY",
];

// The continents follow the convention of geolocation databases: the
// `continent` column of GeoNames' countryInfo (current GeoNames data), the
// assignment MaxMind's databases report too. Every country code is on exactly
// one continent, so some placements are conventions rather than geography:
// Russia, Cyprus and Kosovo are in Europe; Turkey, Armenia, Azerbaijan,
// Georgia and Kazakhstan in Asia; Egypt in Africa; Central America, the
// Caribbean, Greenland and Bermuda in North America; the Falklands and French
// Guiana in South America; Timor-Leste, Christmas Island and the US Minor
// Outlying Islands in Oceania; Antarctica includes Bouvet Island, South
// Georgia, Heard and McDonald Islands and the French Southern Territories.

/// Africa, as geolocation databases place it (GeoNames continent `AF`).
pub const AFRICA: &[&str] = &[
    "AO", "BF", "BI", "BJ", "BW", "CD", "CF", "CG", "CI", "CM", "CV", "DJ", "DZ", "EG", "EH", "ER",
    "ET", "GA", "GH", "GM", "GN", "GQ", "GW", "KE", "KM", "LR", "LS", "LY", "MA", "MG", "ML", "MR",
    "MU", "MW", "MZ", "NA", "NE", "NG", "RE", "RW", "SC", "SD", "SH", "SL", "SN", "SO", "SS", "ST",
    "SZ", "TD", "TG", "TN", "TZ", "UG", "YT", "ZA", "ZM", "ZW",
];

/// Antarctica and the sub-Antarctic territories (GeoNames continent `AN`).
pub const ANTARCTICA: &[&str] = &["AQ", "BV", "GS", "HM", "TF"];

/// Asia, as geolocation databases place it (GeoNames continent `AS`).
pub const ASIA: &[&str] = &[
    "AE", "AF", "AM", "AZ", "BD", "BH", "BN", "BT", "CC", "CN", "GE", "HK", "ID", "IL", "IN", "IO",
    "IQ", "IR", "JO", "JP", "KG", "KH", "KP", "KR", "KW", "KZ", "LA", "LB", "LK", "MM", "MN", "MO",
    "MV", "MY", "NP", "OM", "PH", "PK", "PS", "QA", "SA", "SG", "SY", "TH", "TJ", "TM", "TR", "TW",
    "UZ", "VN", "YE",
];

/// Europe, as geolocation databases place it (GeoNames continent `EU`).
pub const EUROPE: &[&str] = &[
    "AD", "AL", "AT", "AX", "BA", "BE", "BG", "BY", "CH", "CY", "CZ", "DE", "DK", "EE", "ES", "FI",
    "FO", "FR", "GB", "GG", "GI", "GR", "HR", "HU", "IE", "IM", "IS", "IT", "JE", "LI", "LT", "LU",
    "LV", "MC", "MD", "ME", "MK", "MT", "NL", "NO", "PL", "PT", "RO", "RS", "RU", "SE", "SI", "SJ",
    "SK", "SM", "UA", "VA", "XK",
];

/// North America with Central America and the Caribbean (GeoNames continent
/// `NA`).
pub const NORTH_AMERICA: &[&str] = &[
    "AG", "AI", "AW", "BB", "BL", "BM", "BQ", "BS", "BZ", "CA", "CR", "CU", "CW", "DM", "DO", "GD",
    "GL", "GP", "GT", "HN", "HT", "JM", "KN", "KY", "LC", "MF", "MQ", "MS", "MX", "NI", "PA", "PM",
    "PR", "SV", "SX", "TC", "TT", "US", "VC", "VG", "VI",
];

/// Oceania, as geolocation databases place it (GeoNames continent `OC`).
pub const OCEANIA: &[&str] = &[
    "AS", "AU", "CK", "CX", "FJ", "FM", "GU", "KI", "MH", "MP", "NC", "NF", "NR", "NU", "NZ", "PF",
    "PG", "PN", "PW", "SB", "TK", "TL", "TO", "TV", "UM", "VU", "WF", "WS",
];

/// South America, as geolocation databases place it (GeoNames continent
/// `SA`).
pub const SOUTH_AMERICA: &[&str] = &[
    "AR", "BO", "BR", "CL", "CO", "EC", "FK", "GF", "GY", "PE", "PY", "SR", "UY", "VE",
];

/// Names of the built-in groups, in display order.
pub const NAMES: &[&str] = &[
    "EU",
    "EEA",
    "EFTA",
    "GDPR-adequate",
    "Africa",
    "Antarctica",
    "Asia",
    "Europe",
    "North-America",
    "Oceania",
    "South-America",
];

/// A built-in group.
struct Group {
    /// The name a policy writes, matched case-insensitively.
    name: &'static str,
    /// One line for `geowall policy check`, ending in the member count.
    description: &'static str,
    /// Country codes, sorted.
    members: &'static [&'static str],
}

/// Every built-in group, in the order of [`NAMES`].
const GROUPS: &[Group] = &[
    Group {
        name: "EU",
        description: "European Union member states (27)",
        members: EU,
    },
    Group {
        name: "EEA",
        description: "European Economic Area: the EU plus Iceland, Liechtenstein, Norway (30)",
        members: EEA,
    },
    Group {
        name: "EFTA",
        description: "European Free Trade Association states (4)",
        members: EFTA,
    },
    Group {
        name: "GDPR-adequate",
        description: "Non-EEA countries with a GDPR adequacy decision; not the US (14)",
        members: GDPR_ADEQUATE,
    },
    Group {
        name: "Africa",
        description: "Countries and territories in Africa (58)",
        members: AFRICA,
    },
    Group {
        name: "Antarctica",
        description: "Antarctica and the sub-Antarctic territories (5)",
        members: ANTARCTICA,
    },
    Group {
        name: "Asia",
        description: "Countries and territories in Asia (51)",
        members: ASIA,
    },
    Group {
        name: "Europe",
        description: "Countries and territories in Europe (53)",
        members: EUROPE,
    },
    Group {
        name: "North-America",
        description: "North America, Central America and the Caribbean (41)",
        members: NORTH_AMERICA,
    },
    Group {
        name: "Oceania",
        description: "Countries and territories in Oceania (28)",
        members: OCEANIA,
    },
    Group {
        name: "South-America",
        description: "Countries and territories in South America (14)",
        members: SOUTH_AMERICA,
    },
];

/// The built-in group called `name` (case-insensitive), if there is one.
fn find(name: &str) -> Option<&'static Group> {
    GROUPS.iter().find(|g| g.name.eq_ignore_ascii_case(name))
}

/// The countries of built-in group `name` (case-insensitive), if it is one.
pub fn members(name: &str) -> Option<Vec<&'static str>> {
    find(name).map(|g| g.members.to_vec())
}

/// A one-line description of built-in group `name` (case-insensitive), if
/// it is one, ending in its member count: "European Union member states
/// (27)".
pub fn describe(name: &str) -> Option<&'static str> {
    find(name).map(|g| g.description)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::countries;

    const CONTINENTS: &[&str] = &[
        "Africa",
        "Antarctica",
        "Asia",
        "Europe",
        "North-America",
        "Oceania",
        "South-America",
    ];

    fn of(name: &str) -> Vec<&'static str> {
        members(name).unwrap_or_else(|| panic!("no group {name}"))
    }

    #[test]
    fn groups_have_their_member_counts() {
        assert_eq!(of("EU").len(), 27);
        assert_eq!(of("EEA").len(), 30);
        assert_eq!(of("EFTA").len(), 4);
        assert_eq!(of("GDPR-adequate").len(), 14);
    }

    #[test]
    fn the_eea_is_the_eu_plus_iceland_liechtenstein_norway() {
        let eea = of("EEA");
        assert!(of("EU").iter().all(|c| eea.contains(c)));
        let extra: Vec<_> = eea.into_iter().filter(|c| !EU.contains(c)).collect();
        assert_eq!(extra, ["IS", "LI", "NO"]);
    }

    #[test]
    fn switzerland_is_in_efta_but_not_the_eea() {
        let (efta, eea) = (of("EFTA"), of("EEA"));
        assert!(efta.contains(&"CH") && !eea.contains(&"CH"));
        assert!(efta.iter().all(|c| *c == "CH" || eea.contains(c)));
    }

    #[test]
    fn gdpr_adequate_leaves_out_the_us_and_the_eea() {
        let adequate = of("GDPR-adequate");
        assert!(!adequate.contains(&"US"));
        assert!(adequate.contains(&"CA") && adequate.contains(&"GB"));
        assert!(adequate.iter().all(|c| !EEA.contains(c)), "{adequate:?}");
    }

    #[test]
    fn every_country_is_on_exactly_one_continent() {
        for (code, name) in countries::COUNTRIES {
            let on: Vec<_> = CONTINENTS.iter().filter(|c| of(c).contains(code)).collect();
            assert_eq!(on.len(), 1, "{code} ({name}) is on {on:?}");
        }
        let total: usize = CONTINENTS.iter().map(|c| of(c).len()).sum();
        assert_eq!(total, countries::COUNTRIES.len());
    }

    #[test]
    fn continents_follow_the_geolocation_convention() {
        let on = |code: &str, continent: &str| of(continent).contains(&code);
        assert!(on("RU", "Europe") && on("CY", "Europe") && on("XK", "Europe"));
        assert!(on("TR", "Asia") && on("AM", "Asia") && on("AZ", "Asia") && on("GE", "Asia"));
        assert!(on("EG", "Africa") && on("PA", "North-America") && on("CU", "North-America"));
        for code in ["AQ", "BV", "GS", "HM", "TF"] {
            assert!(on(code, "Antarctica"), "{code}");
        }
    }

    #[test]
    fn every_member_is_a_known_country() {
        for name in NAMES {
            for c in of(name) {
                assert!(countries::name(c).is_some(), "{name}: {c}");
            }
        }
    }

    #[test]
    fn member_lists_are_sorted_and_unique() {
        for g in GROUPS {
            assert!(g.members.windows(2).all(|w| w[0] < w[1]), "{}", g.name);
        }
    }

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(of("gdpr-adequate"), GDPR_ADEQUATE);
        assert_eq!(of("north-america"), NORTH_AMERICA);
        assert_eq!(of("eea"), EEA);
        assert_eq!(of("Eu"), EU);
        assert_eq!(describe("efta"), describe("EFTA"));
    }

    #[test]
    fn unknown_names_are_none() {
        for name in ["NATO", "", "DE", "North America", "GDPR", "Americas"] {
            assert!(members(name).is_none(), "{name}");
            assert!(describe(name).is_none(), "{name}");
        }
    }

    #[test]
    fn names_list_every_group() {
        let names: Vec<_> = GROUPS.iter().map(|g| g.name).collect();
        assert_eq!(names, NAMES);
        for name in NAMES {
            assert!(members(name).is_some(), "{name}");
            assert!(describe(name).is_some(), "{name}");
            let upper = name.to_ascii_uppercase();
            assert!(countries::name(&upper).is_none(), "{name}");
        }
        for (i, a) in NAMES.iter().enumerate() {
            let twice = NAMES[i + 1..].iter().any(|b| a.eq_ignore_ascii_case(b));
            assert!(!twice, "{a} twice");
        }
        for c in CONTINENTS {
            assert!(NAMES.contains(c), "{c}");
        }
    }

    #[test]
    fn descriptions_end_with_the_member_count() {
        for g in GROUPS {
            let count = format!("({})", g.members.len());
            assert!(g.description.ends_with(&count), "{}", g.description);
        }
        assert_eq!(describe("EU"), Some("European Union member states (27)"));
    }
}
