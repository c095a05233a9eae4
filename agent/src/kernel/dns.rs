//! The kernel's DNS maps, from userspace: the entries the programs write for
//! a redirected query ([`names::DNS_SOCKS`], read by the forwarder), what
//! each job resolved ([`names::LEARNED`]) and the names it refers to
//! ([`names::NAMES`]), written by the forwarder before an answer reaches
//! its job, and which names each policy's `allow_names` matches
//! ([`names::NAME_ALLOW`], per table generation). The forwarder runs on
//! tasks of its own: [`DnsMaps`] is shared (its descriptors behind an
//! `Arc`), and every call is one `bpf(2)` command or a few.

use std::{
    collections::BTreeSet,
    net::Ipv6Addr,
    os::fd::{AsFd, OwnedFd},
    sync::Arc,
};

use geowall_common::{
    DNS_NAME_LEN, DnsName, DnsSock, DnsSockKey, Learned, LearnedKey, NameAllowKey, names,
};

use super::{KernelError, Pins, sys, sys_err};
use crate::dns::learned::Changes;

struct Fds {
    socks: OwnedFd,
    learned: OwnedFd,
    names: OwnedFd,
    name_allow: OwnedFd,
    nat64: OwnedFd,
}

/// The DNS maps, opened from their pins.
#[derive(Clone)]
pub struct DnsMaps {
    fds: Arc<Fds>,
}

impl std::fmt::Debug for DnsMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DnsMaps")
    }
}

impl DnsMaps {
    /// Opens the pinned maps under `pins` (the kernel side created them);
    /// an error when one is missing.
    pub fn open(pins: &Pins) -> Result<DnsMaps, KernelError> {
        let open = |name| open_pinned(pins, name);
        Ok(DnsMaps {
            fds: Arc::new(Fds {
                socks: open(names::DNS_SOCKS)?,
                learned: open(names::LEARNED)?,
                names: open(names::NAMES)?,
                name_allow: open(names::NAME_ALLOW)?,
                nat64: open(names::NAT64)?,
            }),
        })
    }

    /// The entry the programs wrote for socket `cookie`'s query through
    /// forwarder slot `slot`.
    pub fn query(&self, cookie: u64, slot: u32) -> Result<Option<DnsSock>, KernelError> {
        let key = DnsSockKey {
            cookie,
            slot,
            _pad: 0,
        };
        let mut value = DnsSock::default();
        let found = sys::map_lookup(
            self.fds.socks.as_fd(),
            sys::bytes_of(&key),
            sys::bytes_of_mut(&mut value),
        )
        .map_err(sys_err("reading a DNS socket entry"))?;
        Ok(found.then_some(value))
    }

    /// Writes what learning an answer changed: names first (an entry never
    /// refers to a name the map lacks), then entries, then what went.
    pub fn apply(&self, changes: &Changes) -> Result<(), KernelError> {
        for (id, name) in &changes.new_names {
            let value = name_value(name);
            sys::map_update(self.fds.names.as_fd(), &id.to_ne_bytes(), &value, 0)
                .map_err(sys_err("writing a learned name"))?;
        }
        for (key, value) in &changes.entries {
            sys::map_update(
                self.fds.learned.as_fd(),
                sys::bytes_of(key),
                sys::bytes_of(value),
                0,
            )
            .map_err(sys_err("writing a learned address"))?;
        }
        for key in &changes.removed_entries {
            sys::map_delete(self.fds.learned.as_fd(), sys::bytes_of(key))
                .map_err(sys_err("removing a learned address"))?;
        }
        for id in &changes.removed_names {
            sys::map_delete(self.fds.names.as_fd(), &id.to_ne_bytes())
                .map_err(sys_err("removing a learned name"))?;
            self.forget_name_allow(*id)?;
        }
        Ok(())
    }

    /// Every learned entry.
    pub fn learned(&self) -> Result<Vec<(LearnedKey, Learned)>, KernelError> {
        let mut out = Vec::new();
        for key in keys::<LearnedKey>(self.fds.learned.as_fd())? {
            let mut value = Learned::default();
            if sys::map_lookup(
                self.fds.learned.as_fd(),
                sys::bytes_of(&key),
                sys::bytes_of_mut(&mut value),
            )
            .map_err(sys_err("reading a learned address"))?
            {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// Every name, by id.
    pub fn names(&self) -> Result<Vec<(u32, String)>, KernelError> {
        let mut out = Vec::new();
        for id in keys::<u32>(self.fds.names.as_fd())? {
            let mut value: DnsName = [0; DNS_NAME_LEN];
            if sys::map_lookup(self.fds.names.as_fd(), &id.to_ne_bytes(), &mut value)
                .map_err(sys_err("reading a learned name"))?
            {
                let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                out.push((id, String::from_utf8_lossy(&value[..end]).into_owned()));
            }
        }
        Ok(out)
    }

    /// Removes names by id (those no entry refers to after a restart).
    pub fn remove_names(&self, ids: &[u32]) -> Result<(), KernelError> {
        for id in ids {
            sys::map_delete(self.fds.names.as_fd(), &id.to_ne_bytes())
                .map_err(sys_err("removing a learned name"))?;
        }
        Ok(())
    }

    /// Makes table generation `generation`'s `allow_names` matches exactly
    /// `wanted` (name id, policy slot).
    pub fn set_name_allow(
        &self,
        generation: u8,
        wanted: &BTreeSet<(u32, u16)>,
    ) -> Result<(), KernelError> {
        let present = keys::<NameAllowKey>(self.fds.name_allow.as_fd())?;
        for key in &present {
            if key.generation == generation && !wanted.contains(&(key.name, key.slot)) {
                sys::map_delete(self.fds.name_allow.as_fd(), sys::bytes_of(key))
                    .map_err(sys_err("removing a name a policy allows"))?;
            }
        }
        for (name, slot) in wanted {
            self.allow_name(generation, *name, *slot)?;
        }
        Ok(())
    }

    /// Records that policy `slot` allows name `name` in `generation`.
    pub fn allow_name(&self, generation: u8, name: u32, slot: u16) -> Result<(), KernelError> {
        let key = NameAllowKey::new(name, slot, generation);
        sys::map_update(self.fds.name_allow.as_fd(), sys::bytes_of(&key), &[1], 0)
            .map_err(sys_err("writing a name a policy allows"))
    }

    /// Removes name `name` from every generation's matches (it went).
    fn forget_name_allow(&self, name: u32) -> Result<(), KernelError> {
        for key in keys::<NameAllowKey>(self.fds.name_allow.as_fd())? {
            if key.name == name {
                sys::map_delete(self.fds.name_allow.as_fd(), sys::bytes_of(&key))
                    .map_err(sys_err("removing a name a policy allows"))?;
            }
        }
        Ok(())
    }

    /// Makes the operator's NAT64 prefixes exactly `prefixes`.
    pub fn set_nat64(&self, prefixes: &[(Ipv6Addr, u8)]) -> Result<(), KernelError> {
        let fd = self.fds.nat64.as_fd();
        let mut raw = [0u8; 20];
        let mut present = Vec::new();
        let mut key: Option<[u8; 20]> = None;
        while sys::map_next_key(fd, key.as_ref().map(|k| &k[..]), &mut raw)
            .map_err(sys_err("listing NAT64 prefixes"))?
        {
            present.push(raw);
            key = Some(raw);
        }
        for k in present {
            sys::map_delete(fd, &k).map_err(sys_err("removing a NAT64 prefix"))?;
        }
        for (addr, len) in prefixes {
            let mut k = [0u8; 20];
            k[..4].copy_from_slice(&u32::from(*len).to_ne_bytes());
            k[4..].copy_from_slice(&addr.octets());
            sys::map_update(fd, &k, &[*len], 0).map_err(sys_err("writing a NAT64 prefix"))?;
        }
        Ok(())
    }
}

/// A name as the names map holds it: NUL padded, cut at the map's size.
fn name_value(name: &str) -> DnsName {
    let mut value: DnsName = [0; DNS_NAME_LEN];
    let bytes = name.as_bytes();
    let n = bytes.len().min(DNS_NAME_LEN - 1);
    value[..n].copy_from_slice(&bytes[..n]);
    value
}

/// Every key of a hash map whose keys are `K`.
fn keys<K: Copy + Default>(map: std::os::fd::BorrowedFd<'_>) -> Result<Vec<K>, KernelError> {
    let mut out = Vec::new();
    let mut next = K::default();
    let mut prev: Option<K> = None;
    loop {
        let more = sys::map_next_key(
            map,
            prev.as_ref().map(sys::bytes_of),
            sys::bytes_of_mut(&mut next),
        )
        .map_err(sys_err("listing a DNS map"))?;
        if !more {
            break;
        }
        out.push(next);
        prev = Some(next);
    }
    Ok(out)
}

/// The pinned map `name` under `pins`.
pub(super) fn open_pinned(pins: &Pins, name: &'static str) -> Result<OwnedFd, KernelError> {
    sys::obj_get(&pins.map(name)).map_err(|source| KernelError::Pin {
        what: "opening pinned map",
        path: pins.map(name),
        source,
    })
}

/// What the DNS forwarder needs of a previous run's pins to serve again
/// before this run's programs are loaded and verified (seconds on a busy
/// host): the maps it writes, the grant tries, the generation of the
/// tables in force, and their policies by slot. Only pins of this build's
/// ABI are read: after an upgrade that changes it, the forwarder starts
/// with the programs.
pub struct PinnedDns {
    pub maps: DnsMaps,
    pub grants: super::GrantWriter,
    /// The table generation in force.
    pub generation: u8,
    /// Policy names by slot.
    pub policies: Vec<Option<String>>,
    /// Whether the pinned programs redirect DNS (a run with `[dns]` on).
    pub redirecting: bool,
}

impl PinnedDns {
    pub fn open(pins: &Pins) -> Result<PinnedDns, KernelError> {
        let config = super::config_map::ConfigMap::open(&open_pinned(pins, names::CONFIG)?)?;
        let grants = super::grants::GrantMaps::new(
            open_pinned(pins, names::GRANTS4)?,
            open_pinned(pins, names::GRANTS6)?,
            open_pinned(pins, names::REGION_GRANTS)?,
        );
        let policies =
            super::names::read_policy_names(open_pinned(pins, names::POLICY_NAMES)?.as_fd())?;
        let generation = (config.load(geowall_common::config::EPOCH) & 1) as u8;
        let redirecting =
            config.load(geowall_common::config::DNS) & geowall_common::dns_config::ON != 0;
        Ok(PinnedDns {
            maps: DnsMaps::open(pins)?,
            grants: super::GrantWriter::new(Arc::new(grants), Arc::new(config)),
            generation,
            policies,
            redirecting,
        })
    }
}
