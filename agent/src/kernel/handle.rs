//! [`Kernel`]: the kernel side as the agent holds it. Opening it loads the
//! programs and opens (or creates and pins) the maps; attaching puts the
//! programs on the governed cgroup, or swaps them into pinned links; the
//! rest reads and writes the pinned maps through their own modules.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    programs::links::PinnedLink,
};
use geowall_common::{
    Counters, GrantSet, KERNEL_OFFSETS_GLOBAL, KernelOffsets, RegionGrantKey, config, names,
};

use super::{
    DnsMaps, KernelError, KernelView, Pins,
    bindings::BindingMap,
    btf,
    config_map::ConfigMap,
    grants::{GrantMaps, GrantWriter},
    map_err,
    names::NameMaps,
    pinned::CounterReader,
    programs::{Attached, OBJECT, OPTIONAL, PROGRAMS, attach_program, load_program, program_fd},
    sys, sys_err,
    tables::TableMaps,
};
use crate::tables::{
    Layout,
    grants::{RegionGrantSets, region_entries},
};

/// How to open the kernel side.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// bpffs folder of the pins.
    pub bpffs: PathBuf,
    /// Absolute path of the governed cgroup.
    pub governed: PathBuf,
    /// Its level in the cgroup v2 hierarchy.
    pub governed_level: u32,
    /// Ring buffer size in bytes (used when the map is created).
    pub ring_bytes: u32,
    /// Entries of the learned map (used when the map is created).
    pub learned_entries: u32,
}

/// The kernel programs, loaded. Maps are pinned as soon as they are created
/// and reused from their pins when they exist: tables survive the agent.
pub struct Kernel {
    pins: Pins,
    /// Programs that loaded (optional ones may be missing).
    loaded: Vec<&'static str>,
    /// Why the programs cannot read a socket's cgroup, if they cannot.
    no_socket_cgroups: Option<String>,
    ebpf: Ebpf,
    config: Arc<ConfigMap>,
    tables: TableMaps,
    names: NameMaps,
    dns: DnsMaps,
    grants: Arc<GrantMaps>,
    bindings: BindingMap,
    governed: PathBuf,
    governed_id: u64,
    /// The links this agent holds, by program.
    links: Vec<(&'static str, PinnedLink)>,
    /// Whether the inbound program is wanted on the governed cgroup: only
    /// while some policy judges inbound connections (it runs for every
    /// packet a governed socket receives).
    inbound: bool,
    /// Frees the tries the last switch replaced.
    cleanup: Option<std::thread::JoinHandle<()>>,
}

/// What attaching did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AttachReport {
    /// Links created now.
    pub attached: usize,
    /// Pinned links found at the governed cgroup and switched to the newly
    /// loaded programs in place.
    pub adopted: usize,
}

/// `GW_CONFIG[AUDIT_DENY]`: on while the audit log cannot be written and
/// `[audit] on_write_failure = "deny"`. Each change raises the bindings
/// generation, which keys the programs' verdict caches: no allow cached
/// before a change answers after it.
#[derive(Clone)]
pub struct AuditSwitch {
    config: Arc<ConfigMap>,
}

impl AuditSwitch {
    pub fn set(&self, on: bool) {
        let value = u64::from(on);
        if self.config.load(config::AUDIT_DENY) != value {
            self.config.store(config::AUDIT_DENY, value);
            self.config.bump(config::BINDINGS_GEN);
        }
    }
}

impl Kernel {
    /// Loads the programs and opens (or creates and pins) the maps. Nothing
    /// is attached yet: see [`Kernel::attach`].
    pub fn open(opts: &OpenOptions) -> Result<Kernel, KernelError> {
        let pins = Pins::new(&opts.bpffs);
        pins.prepare().map_err(|source| KernelError::Bpffs {
            path: opts.bpffs.clone(),
            source,
        })?;
        let governed_id =
            crate::host::cgroup::id_of(&opts.governed).map_err(|source| KernelError::Governed {
                path: opts.governed.clone(),
                source,
            })?;

        let map_pins: Vec<(&'static str, PathBuf)> =
            names::ALL_MAPS.iter().map(|n| (*n, pins.map(n))).collect();
        let (offsets, no_socket_cgroups) = match btf::running_kernel_offsets() {
            Ok(o) => (o, None),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the programs cannot read a socket's cgroup: a socket passed between \
                     cgroups is judged by its callers' policies only"
                );
                (KernelOffsets::NONE, Some(e.to_string()))
            }
        };
        let mut loader = EbpfLoader::new();
        loader.override_global(KERNEL_OFFSETS_GLOBAL, &offsets, true);
        loader.map_max_entries(names::EVENTS, opts.ring_bytes);
        loader.map_max_entries(names::LEARNED, opts.learned_entries);
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(KernelError::Load)?;
        let btf = aya::Btf::from_sys_fs().map_err(KernelError::Btf)?;
        let mut loaded = Vec::with_capacity(PROGRAMS.len());
        for name in PROGRAMS {
            match load_program(&mut ebpf, name, &btf) {
                Ok(()) => loaded.push(name),
                Err(e) if OPTIONAL.contains(&name) => tracing::warn!(
                    program = name,
                    error = %crate::vocab::error::chain(&e),
                    "this kernel refuses BPF LSM programs: packet and XDP sockets are refused \
                     only to jobs started by `geowall exec` (which drops CAP_NET_RAW)"
                ),
                Err(e) => return Err(e),
            }
        }

        let open = |name: &'static str| {
            sys::obj_get(&pins.map(name)).map_err(|source| KernelError::Pin {
                what: "opening pinned map",
                path: pins.map(name),
                source,
            })
        };
        let tables = TableMaps::new([
            open(names::POLICIES)?,
            open(names::TAGSETS)?,
            open(names::REGION4)?,
            open(names::REGION6)?,
            open(names::RULES4)?,
            open(names::RULES6)?,
        ]);
        let name_maps = NameMaps::new(open(names::REGION_NAMES)?, open(names::POLICY_NAMES)?);
        let grants = Arc::new(GrantMaps::new(
            open(names::GRANTS4)?,
            open(names::GRANTS6)?,
            open(names::REGION_GRANTS)?,
        ));
        let bindings = BindingMap::new(open(names::BINDINGS)?, pins.map(names::BINDINGS));
        let config = Arc::new(ConfigMap::open(&open(names::CONFIG)?)?);
        config.store(config::ROOT_LEVEL, u64::from(opts.governed_level));
        let dns = DnsMaps::open(&pins)?;
        Ok(Kernel {
            pins,
            loaded,
            no_socket_cgroups,
            ebpf,
            config,
            tables,
            names: name_maps,
            dns,
            grants,
            bindings,
            governed: opts.governed.clone(),
            governed_id,
            links: Vec::new(),
            inbound: false,
            cleanup: None,
        })
    }

    /// Why the programs cannot tell a socket's cgroup (so a socket passed
    /// between cgroups is judged by its callers' policies only), or `None`
    /// when they can.
    pub fn socket_cgroups_unavailable(&self) -> Option<&str> {
        self.no_socket_cgroups.as_deref()
    }

    /// Whether the BPF LSM program loaded (the kernel may refuse LSM
    /// programs: then packet and XDP sockets are judged by no program).
    /// The pins of this kernel side.
    pub fn pins(&self) -> &Pins {
        &self.pins
    }

    pub fn lsm_loaded(&self) -> bool {
        self.loaded.contains(&names::PROG_SOCK_POST)
    }

    /// The table epoch in force (0: no tables installed yet).
    pub fn epoch(&self) -> u64 {
        self.config.load(config::EPOCH)
    }

    /// Attaches every program to the governed cgroup, or, where a pinned
    /// link to that cgroup exists, swaps the newly loaded program into it in
    /// one step (no moment with no program, none with two). Pins the
    /// programs and new links. The inbound program is attached only with
    /// `inbound` (some policy judges inbound connections); without it, a
    /// link of an earlier agent's inbound program is detached.
    pub fn attach(&mut self, inbound: bool) -> Result<AttachReport, KernelError> {
        let cgroup = self.open_governed()?;
        self.inbound = inbound;
        let mut report = AttachReport::default();
        for name in self.loaded.clone() {
            let link_path = self.pins.link(name);
            let prog_fd = program_fd(&self.ebpf, name)?;
            if !self.wanted(name) {
                // An earlier agent's link of a program no policy wants now:
                // a failure to detach it must not stop enforcement starting.
                if let Err(e) = self.detach_pinned(name) {
                    tracing::warn!(
                        program = name,
                        error = %crate::vocab::error::chain(&e),
                        "cannot detach the link of a program no policy needs; it stays attached"
                    );
                }
            } else if let Some(link) = self.adoptable_link(&link_path)? {
                sys::link_update(link.as_fd(), prog_fd.as_fd())
                    .map_err(sys_err(format!("updating link {}", link_path.display())))?;
                let pinned =
                    PinnedLink::from_pin(&link_path).map_err(|source| KernelError::ReopenLink {
                        what: "reopening link",
                        path: link_path.clone(),
                        source,
                    })?;
                self.links.push((name, pinned));
                report.adopted += 1;
            } else {
                let link = attach_program(&mut self.ebpf, name, &cgroup)?;
                self.links.push((name, pin_link(link, &link_path)?));
                report.attached += 1;
            }
            self.pin_program(name)?;
        }
        self.config
            .store(config::PROGRAM_VERSION, geowall_common::PACKED_VERSION);
        if report.adopted == 0 || self.config.load(config::ATTACHED_AT) == 0 {
            self.config
                .store(config::ATTACHED_AT, crate::vocab::clock::unix_secs());
        }
        self.heartbeat();
        Ok(report)
    }

    /// Attaches or detaches the inbound program as the policies in force
    /// now need it. Returns whether anything changed. On an error nothing
    /// changed: the next call tries again.
    pub fn set_inbound(&mut self, inbound: bool) -> Result<bool, KernelError> {
        let name = names::PROG_INGRESS;
        if !self.loaded.contains(&name) || inbound == self.inbound_attached() {
            self.inbound = inbound;
            return Ok(false);
        }
        if inbound {
            // A link pinned there is none of ours (ours was detached with
            // its pin): it goes before ours is pinned in its place.
            self.detach_pinned(name)?;
            let cgroup = self.open_governed()?;
            let link = attach_program(&mut self.ebpf, name, &cgroup)?;
            self.links
                .push((name, pin_link(link, &self.pins.link(name))?));
        } else {
            self.detach_pinned(name)?;
        }
        self.inbound = inbound;
        Ok(true)
    }

    /// Whether the inbound program is attached (by this agent).
    pub fn inbound_attached(&self) -> bool {
        self.links.iter().any(|(n, _)| *n == names::PROG_INGRESS)
    }

    /// Whether `name` belongs on the governed cgroup now.
    fn wanted(&self, name: &str) -> bool {
        name != names::PROG_INGRESS || self.inbound
    }

    fn open_governed(&self) -> Result<File, KernelError> {
        File::open(&self.governed).map_err(|source| KernelError::Pin {
            what: "opening cgroup",
            path: self.governed.clone(),
            source,
        })
    }

    /// Detaches `name`'s link (this agent's or a pinned one of an earlier
    /// agent) and removes its pin; nothing to do when there is none. This
    /// agent lets go of its link only once it is detached.
    fn detach_pinned(&mut self, name: &'static str) -> Result<(), KernelError> {
        let path = self.pins.link(name);
        let fd = match sys::obj_get(&path) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.links.retain(|(n, _)| *n != name);
                return Ok(());
            }
            Err(source) => {
                return Err(KernelError::Pin {
                    what: "opening pinned link",
                    path,
                    source,
                });
            }
        };
        sys::link_detach(fd.as_fd())
            .map_err(sys_err(format!("detaching link {}", path.display())))?;
        self.links.retain(|(n, _)| *n != name);
        std::fs::remove_file(&path).map_err(|source| KernelError::Pin {
            what: "removing a detached link",
            path,
            source,
        })
    }

    /// Once the links run this agent's programs: removes what agents of
    /// other ABI versions pinned (their programs and tables). Returns how
    /// many pins went.
    pub fn retire_other_abis(&self) -> io::Result<usize> {
        self.pins.remove_other_abis()
    }

    /// Records that the agent is alive (status tells how long it has been
    /// down from this).
    pub fn heartbeat(&self) {
        self.config
            .store(config::HEARTBEAT, crate::vocab::clock::unix_secs());
    }

    /// Re-attaches every program whose link something outside geowall has
    /// detached (or whose pin was removed): a detached cgroup link stays
    /// pinned but no longer runs its program. Returns the programs
    /// re-attached.
    pub fn repair(&mut self) -> Result<Vec<&'static str>, KernelError> {
        let mut broken = Vec::new();
        for name in self.loaded.clone() {
            if !self.wanted(name) {
                continue;
            }
            let path = self.pins.link(name);
            let ours = self
                .ebpf
                .program(name)
                .and_then(|p| p.info().ok())
                .map(|info| info.id());
            // Attached to the governed cgroup, and running our program (not
            // one swapped in by someone else).
            let healthy = match sys::obj_get(&path) {
                Ok(fd) => {
                    sys::cgroup_link_cgroup(fd.as_fd()).is_ok_and(|id| id == self.governed_id)
                        && sys::link_prog_id(fd.as_fd()).ok() == ours
                }
                Err(_) => false,
            };
            if !healthy {
                broken.push(name);
            }
        }
        if broken.is_empty() {
            return Ok(broken);
        }
        let cgroup = self.open_governed()?;
        for name in &broken {
            let path = self.pins.link(name);
            if let Ok(fd) = sys::obj_get(&path) {
                // A defunct link: detaching it again is harmless.
                let _ = sys::link_detach(fd.as_fd());
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(KernelError::Pin {
                        what: "removing a detached link",
                        path,
                        source,
                    });
                }
            }
            self.links.retain(|(n, _)| n != name);
            let link = attach_program(&mut self.ebpf, name, &cgroup)?;
            self.links.push((name, pin_link(link, &path)?));
        }
        Ok(broken)
    }

    /// A pinned link at `path` that is attached to the governed cgroup. A
    /// pinned link attached elsewhere (the config moved) or to a cgroup that
    /// is gone is unpinned, which detaches it.
    fn adoptable_link(&self, path: &Path) -> Result<Option<OwnedFd>, KernelError> {
        let fd = match sys::obj_get(path) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(KernelError::Pin {
                    what: "opening pinned link",
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let cgroup_id = sys::cgroup_link_cgroup(fd.as_fd())
            .map_err(sys_err(format!("reading link {}", path.display())))?;
        if cgroup_id == self.governed_id {
            return Ok(Some(fd));
        }
        tracing::warn!(
            link = %path.display(),
            cgroup_id,
            "pinned link is attached to another cgroup; detaching it"
        );
        sys::link_detach(fd.as_fd())
            .map_err(sys_err(format!("detaching link {}", path.display())))?;
        std::fs::remove_file(path).map_err(|source| KernelError::Pin {
            what: "removing stale link",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(None)
    }

    fn pin_program(&mut self, name: &'static str) -> Result<(), KernelError> {
        let path = self.pins.prog(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KernelError::Pin {
                    what: "replacing pinned program",
                    path,
                    source,
                });
            }
        }
        let prog = self
            .ebpf
            .program_mut(name)
            .expect("programs are loaded in open");
        prog.pin(&path).map_err(|source| KernelError::Pinning {
            what: "pinning program",
            path: path.clone(),
            source,
        })
    }

    /// Takes the flow-event ring buffer for the reader (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, KernelError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(KernelError::MissingMap(names::EVENTS))?;
        RingBuf::try_from(map).map_err(map_err("opening the ring buffer"))
    }

    /// Per-policy counters summed over CPUs; the last row is for events that
    /// belong to no policy.
    pub fn counters(&self) -> Result<Vec<Counters>, KernelError> {
        CounterReader::open(&self.pins)?.rows()
    }

    /// Binds a cgroup (by id) to a policy slot.
    pub fn bind(&self, cgroup_id: u64, slot: u32) -> Result<(), KernelError> {
        self.bindings.bind(&self.config, cgroup_id, slot)
    }

    /// Removes a cgroup's binding (absent is fine).
    pub fn unbind(&self, cgroup_id: u64) -> Result<(), KernelError> {
        self.bindings.unbind(&self.config, cgroup_id)
    }

    /// The slot a cgroup (by id) is bound to.
    pub fn binding(&self, cgroup_id: u64) -> Result<Option<u32>, KernelError> {
        self.bindings.get(cgroup_id)
    }

    /// Every binding: cgroup id → slot.
    pub fn bindings(&self) -> Result<Vec<(u64, u32)>, KernelError> {
        self.bindings.all()
    }

    /// Region names by id, as pinned.
    pub fn region_names(&self) -> Result<Vec<Option<String>>, KernelError> {
        self.names.regions()
    }

    /// Policy names by slot, as pinned.
    pub fn policy_names(&self) -> Result<Vec<Option<String>>, KernelError> {
        self.names.policies()
    }

    /// Records a policy slot's name (`None` frees the slot).
    pub fn set_policy_name(&self, slot: u32, name: Option<&str>) -> Result<(), KernelError> {
        self.names.set_policy(slot, name)
    }

    /// Installs `layout` with one table switch, after recording the names of
    /// the ids it uses; the region grants `region_grants` are written for
    /// the new tables' region ids before the switch. On error the tables in
    /// force stay in force.
    pub fn install(
        &mut self,
        layout: &Layout,
        region_grants: &RegionGrantSets,
        name_allow: &BTreeSet<(u32, u16)>,
    ) -> Result<u64, KernelError> {
        self.names.record(layout)?;
        // The idle half may still be being freed by the last switch.
        if let Some(h) = self.cleanup.take() {
            let _ = h.join();
        }
        let ids = layout
            .regions
            .iter()
            .map(|(id, name)| (name.as_str(), *id))
            .collect();
        let dns = &self.dns;
        let (epoch, cleanup) = self.tables.switch(
            &self.config,
            &self.grants,
            &layout.tables,
            |generation| region_entries(region_grants, &ids, generation),
            |generation| dns.set_name_allow(generation, name_allow),
        )?;
        self.cleanup = cleanup;
        Ok(epoch)
    }

    /// The DNS maps, for the forwarder.
    pub fn dns_maps(&self) -> DnsMaps {
        self.dns.clone()
    }

    /// Tells the programs where the forwarder listens (`None`: redirection
    /// off), and the network namespace it serves.
    pub fn set_dns(&self, forwarder: Option<(std::net::Ipv4Addr, u16)>) {
        match forwarder {
            Some((addr, port)) => {
                // As `user_ip4` holds it: the address's bytes in memory order.
                let ip = u32::from_ne_bytes(addr.octets());
                self.config.store(config::DNS_ADDR4, u64::from(ip));
                self.config.store(config::NETNS, own_netns_cookie());
                self.config
                    .store(config::DNS, geowall_common::dns_config::encode(port));
            }
            None => self.config.store(config::DNS, 0),
        }
    }

    /// Where the programs redirect DNS, as set (`None`: off).
    pub fn dns_forwarder(&self) -> Option<(std::net::Ipv4Addr, u16)> {
        let v = self.config.load(config::DNS);
        if v & geowall_common::dns_config::ON == 0 {
            return None;
        }
        let ip = self.config.load(config::DNS_ADDR4) as u32;
        Some((
            std::net::Ipv4Addr::from(ip.to_ne_bytes()),
            (v & geowall_common::dns_config::PORT_MASK) as u16,
        ))
    }

    /// Makes the operator's NAT64 prefixes exactly `prefixes`.
    pub fn set_nat64(&self, prefixes: &[(std::net::Ipv6Addr, u8)]) -> Result<(), KernelError> {
        // Stop the lookups first, fill, then say how many.
        self.config.store(config::NAT64, 0);
        self.dns.set_nat64(prefixes)?;
        self.config.store(config::NAT64, prefixes.len() as u64);
        Ok(())
    }

    /// A read-only view of the tables in force, for `policy explain`.
    pub fn view(&self) -> Result<KernelView<'_>, KernelError> {
        KernelView::new(&self.tables, self.epoch(), self.region_names()?)
    }

    /// Kernel memory of the tries in force, as the kernel accounts it
    /// (memlock): region tries and rule tries.
    pub fn trie_memlock(&self) -> Result<u64, KernelError> {
        self.tables.trie_memlock((self.epoch() & 1) as u32)
    }

    /// The switch that makes the programs refuse governed jobs' new
    /// connections while the audit log cannot be written.
    pub fn audit_switch(&self) -> AuditSwitch {
        AuditSwitch {
            config: Arc::clone(&self.config),
        }
    }

    /// Whether the audit switch is on (see [`AuditSwitch`]).
    pub fn audit_deny(&self) -> bool {
        self.config.load(config::AUDIT_DENY) != 0
    }

    /// The grant tries, for the writers of grants.
    pub fn grant_writer(&self) -> GrantWriter {
        GrantWriter::new(Arc::clone(&self.grants), Arc::clone(&self.config))
    }

    /// Makes generation `generation`'s region grants exactly `wanted` (and,
    /// with `others`, removes every other generation's). Returns the entries
    /// left in the map.
    pub fn write_region_grants(
        &self,
        generation: u8,
        wanted: &BTreeMap<RegionGrantKey, GrantSet>,
        others: bool,
    ) -> Result<usize, KernelError> {
        self.grants
            .write_region_grants(&self.config, generation, wanted, others)
    }

    /// Detaches every program and removes every pin: enforcement ends.
    pub fn detach_and_unpin(mut self) -> Result<usize, KernelError> {
        self.links.clear();
        let removed = self.pins.remove_all().map_err(|source| KernelError::Pin {
            what: "removing pins under",
            path: self.pins.root().to_path_buf(),
            source,
        })?;
        drop(self);
        Ok(removed)
    }
}

/// Pins a new link at `path`.
fn pin_link(link: Attached, path: &Path) -> Result<PinnedLink, KernelError> {
    match link {
        Attached::Link(link) => link.pin(path).map_err(|source| KernelError::Pinning {
            what: "pinning link",
            path: path.to_path_buf(),
            source,
        }),
        Attached::Raw(fd) => {
            sys::obj_pin(fd.as_fd(), path)
                .map_err(sys_err(format!("pinning link {}", path.display())))?;
            PinnedLink::from_pin(path).map_err(|source| KernelError::ReopenLink {
                what: "reopening link",
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

/// The cookie of this process's network namespace (`SO_NETNS_COOKIE`, Linux
/// 5.14+; 0 when unknown: then no socket matches, and DNS of governed jobs
/// is refused rather than redirected to another namespace's loopback).
fn own_netns_cookie() -> u64 {
    // SAFETY: a plain socket, closed below; getsockopt writes 8 bytes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return 0;
        }
        let mut cookie = 0u64;
        let mut len = 8u32;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        );
        libc::close(fd);
        if rc == 0 { cookie } else { 0 }
    }
}
