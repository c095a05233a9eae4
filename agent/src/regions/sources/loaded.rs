//! What a map source yields: its networks with their tags ([`Loaded`]),
//! built by the readers with a [`Builder`], and summed up in a
//! [`SourceInfo`].

use std::{collections::HashMap, net::IpAddr};

use thiserror::Error;

use super::spec::{SourceError, Spec};
use crate::regions::{Family, Layer, Prefix};

/// A network of one family: left-aligned address bits, prefix length, and
/// the index of its tag in [`Loaded::tags`]. Packed to 24 bytes: a world
/// map holds a million of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C, packed(8))]
pub struct Net {
    pub bits: u128,
    pub len: u8,
    pub tag: u16,
}

/// Everything read from one source.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub spec: Spec,
    /// SHA-256 of the file's bytes (for `builtin`, of the decompressed
    /// database): names the exact data that decided.
    pub sha256: String,
    /// What the file says about itself (database type and build date,
    /// provider sync token...).
    pub about: String,
    /// Tag names; [`Net::tag`] indexes this.
    pub tags: Vec<String>,
    /// IPv4 networks, sorted, without duplicates.
    pub v4: Vec<Net>,
    /// IPv6 networks, sorted, without duplicates.
    pub v6: Vec<Net>,
    /// Records read (entries of the file, before de-duplication).
    pub records: usize,
    /// Records that carried no usable tag (no country in an MMDB record, an
    /// empty country in a geofeed row).
    pub untagged_records: usize,
}

impl Loaded {
    pub fn networks(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Distinct networks per tag.
    #[cfg(test)]
    pub fn tag_counts(&self) -> HashMap<&str, usize> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for n in self.v4.iter().chain(&self.v6) {
            *counts
                .entry(self.tags[n.tag as usize].as_str())
                .or_default() += 1;
        }
        counts
    }

    /// This source's own answer for `addr`, read as the compiler reads it:
    /// for countries and for cloud regions separately ([`Layer::of`]), the
    /// most specific network containing `addr` that carries tags of that
    /// layer. Countries first; a single hit when both layers answer from
    /// the same network; none when the source says nothing about `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Vec<Hit<'_>> {
        let host = Prefix::host(addr);
        let list = match host.family() {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        };
        let mut countries: Option<Hit<'_>> = None;
        let mut clouds: Option<Hit<'_>> = None;
        for len in (0..=host.len()).rev() {
            if countries.is_some() && clouds.is_some() {
                break;
            }
            let p = Prefix::new(host.family(), host.bits(), len);
            let start = list.partition_point(|n| (n.bits, n.len) < (p.bits(), len));
            for n in list[start..]
                .iter()
                .take_while(|n| n.bits == p.bits() && n.len == len)
            {
                let tag = self.tags[n.tag as usize].as_str();
                let layer = match Layer::of(tag) {
                    Layer::Countries => &mut countries,
                    Layer::Clouds => &mut clouds,
                };
                match layer {
                    None => {
                        *layer = Some(Hit {
                            prefix: p,
                            tags: vec![tag],
                        })
                    }
                    // Found at this length: more tags of the same network.
                    Some(hit) if hit.prefix == p => hit.tags.push(tag),
                    // Found at a longer length already.
                    Some(_) => {}
                }
            }
        }
        match (countries, clouds) {
            (Some(mut a), Some(b)) if a.prefix == b.prefix => {
                a.tags.extend(b.tags);
                vec![a]
            }
            (a, b) => a.into_iter().chain(b).collect(),
        }
    }
}

/// One layer's answer of a source for an address (see [`Loaded::lookup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<'a> {
    /// The network that answers.
    pub prefix: Prefix,
    /// Its tags of the layer (of both layers when both answer from it).
    pub tags: Vec<&'a str>,
}

#[cfg(test)]
impl Loaded {
    /// What the source says about `addr` (see [`Loaded::lookup`]), as
    /// (network, tags) text, for tests.
    pub(crate) fn hits(&self, addr: &str) -> Vec<(String, Vec<String>)> {
        self.lookup(addr.parse().unwrap())
            .into_iter()
            .map(|h| {
                (
                    h.prefix.to_string(),
                    h.tags.into_iter().map(str::to_owned).collect(),
                )
            })
            .collect()
    }

    /// A `cidr` source of `(prefix, tag)` pairs, for tests.
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Loaded {
        let mut b = Builder::default();
        for (p, t) in pairs {
            b.add(p.parse().unwrap(), t).unwrap();
        }
        b.finish(
            &Spec::new(super::Kind::Cidr, "t"),
            String::new(),
            String::new(),
        )
        .unwrap()
    }
}

/// A source with more distinct tags than a tag id can number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("more than 65536 distinct tags in one source")]
pub struct TooManyTags;

/// Collects a source's networks: interns tags, drops duplicates.
#[derive(Default)]
pub struct Builder {
    tags: Vec<String>,
    ids: HashMap<String, u16>,
    v4: Vec<Net>,
    v6: Vec<Net>,
    pub records: usize,
    pub untagged_records: usize,
}

impl Builder {
    /// Adds `prefix` tagged `tag` (already normalized).
    pub fn add(&mut self, prefix: Prefix, tag: &str) -> Result<(), TooManyTags> {
        let id = self.intern(tag)?;
        self.push(prefix, id);
        Ok(())
    }

    /// The id of tag `tag` (already normalized).
    pub fn intern(&mut self, tag: &str) -> Result<u16, TooManyTags> {
        if let Some(id) = self.ids.get(tag) {
            return Ok(*id);
        }
        let id = u16::try_from(self.tags.len()).map_err(|_| TooManyTags)?;
        self.tags.push(tag.to_owned());
        self.ids.insert(tag.to_owned(), id);
        Ok(id)
    }

    /// Adds `prefix` tagged with tag `id` (from [`Builder::intern`]).
    pub fn push(&mut self, prefix: Prefix, id: u16) {
        let net = Net {
            bits: prefix.bits(),
            len: prefix.len(),
            tag: id,
        };
        match prefix.family() {
            Family::V4 => self.v4.push(net),
            Family::V6 => self.v6.push(net),
        }
    }

    pub fn finish(
        mut self,
        spec: &Spec,
        sha256: String,
        about: String,
    ) -> Result<Loaded, SourceError> {
        for list in [&mut self.v4, &mut self.v6] {
            list.sort_unstable();
            list.dedup();
        }
        if self.v4.is_empty() && self.v6.is_empty() {
            return Err(SourceError::Empty {
                source_label: spec.label(),
            });
        }
        Ok(Loaded {
            spec: spec.clone(),
            sha256,
            about,
            tags: self.tags,
            v4: self.v4,
            v6: self.v6,
            records: self.records,
            untagged_records: self.untagged_records,
        })
    }
}

/// A map source as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    pub spec: Spec,
    pub sha256: String,
    /// What the file says about itself (type, build date, sync token).
    pub about: String,
    /// Distinct networks it brought.
    pub networks: usize,
    pub v4: usize,
    pub v6: usize,
    /// Entries read, and those that tagged nothing.
    pub records: usize,
    pub untagged_records: usize,
}

impl SourceInfo {
    pub fn of(l: &Loaded) -> Self {
        Self {
            spec: l.spec.clone(),
            sha256: l.sha256.clone(),
            about: l.about.clone(),
            networks: l.networks(),
            v4: l.v4.len(),
            v6: l.v6.len(),
            records: l.records,
            untagged_records: l.untagged_records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::sources::Kind;

    #[test]
    fn a_source_answers_with_its_most_specific_networks() {
        let l = Loaded::from_pairs(&[
            ("10.0.0.0/8", "DE"),
            ("10.1.0.0/16", "aws:eu-west-1"),
            ("10.1.0.0/16", "aws:GLOBAL"),
            ("10.1.0.0/16", "aws:GLOBAL"),
        ]);
        assert_eq!(l.v4.len(), 3);
        // Both cloud tags of the /16; the country from the /8 around it.
        assert_eq!(
            l.hits("10.1.2.3"),
            [
                ("10.0.0.0/8".into(), vec!["DE".into()]),
                (
                    "10.1.0.0/16".into(),
                    vec!["aws:eu-west-1".into(), "aws:GLOBAL".into()]
                ),
            ]
        );
        assert_eq!(
            l.hits("10.2.0.1"),
            [("10.0.0.0/8".into(), vec!["DE".into()])]
        );
        assert!(l.lookup("11.0.0.1".parse().unwrap()).is_empty());
        assert_eq!(l.tag_counts()["aws:GLOBAL"], 1);
    }

    #[test]
    fn an_empty_source_is_refused() {
        let err = Builder::default()
            .finish(
                &Spec::new(Kind::Cidr, "e.cidr"),
                String::new(),
                String::new(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("has no network at all"), "{err}");
    }
}
