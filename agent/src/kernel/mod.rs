//! The kernel side, from userspace: loading and pinning the programs and
//! maps, attaching them to the governed cgroup, switching tables, reading
//! counters and flow events.

pub mod btf;
pub mod grants;
pub mod pins;
pub mod sys;
mod tables;

use std::{
    fs::File,
    io,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, RingBuf},
    programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr, links::FdLink, links::PinnedLink},
};
use geowall_common::{
    Counters, KERNEL_OFFSETS_GLOBAL, KernelOffsets, MAX_POLICIES, MAX_REGIONS, POLICY_NAME_LEN,
    REGION_NAME_LEN, config, names,
};
use thiserror::Error;

pub use pins::Pins;

/// The compiled kernel programs, embedded at build time (see build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/geowall-ebpf"));

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("loading geowall's eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("{what} {path}: {source}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
}

fn sys_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Sys { what, source }
}

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
    config: ConfigMap,
    maps: MapFds,
    governed: PathBuf,
    governed_id: u64,
    links: Vec<PinnedLink>,
    /// Frees the tries the last switch replaced.
    cleanup: Option<std::thread::JoinHandle<()>>,
}

/// File descriptors of the maps userspace writes, opened from their pins.
struct MapFds {
    bindings: OwnedFd,
    policies: OwnedFd,
    tagsets: OwnedFd,
    region4: OwnedFd,
    region6: OwnedFd,
    rules4: OwnedFd,
    rules6: OwnedFd,
    regnames: OwnedFd,
    polnames: OwnedFd,
    grants4: OwnedFd,
    grants6: OwnedFd,
    region_grants: OwnedFd,
}

/// The active half of the kernel's tables, read through the bpf syscall:
/// the trie lookups are the kernel's own longest-prefix matches.
pub struct KernelView<'a> {
    kernel: &'a Kernel,
    pub epoch: u64,
    half: u32,
    region4: Option<OwnedFd>,
    region6: Option<OwnedFd>,
    rules4: Option<OwnedFd>,
    rules6: Option<OwnedFd>,
    regions: Vec<Option<String>>,
}

impl KernelView<'_> {
    fn lookup<V: Copy + Default>(
        map: Option<&OwnedFd>,
        bits: u32,
        data: &[u8],
    ) -> Result<Option<V>, String> {
        let Some(map) = map else {
            return Ok(None);
        };
        let mut key = bits.to_ne_bytes().to_vec();
        key.extend_from_slice(data);
        let mut value = V::default();
        // SAFETY: `V` is a plain-data ABI type; the kernel writes exactly
        // its size.
        let buf = unsafe {
            std::slice::from_raw_parts_mut((&mut value as *mut V).cast::<u8>(), size_of::<V>())
        };
        let found = sys::map_lookup(map.as_fd(), &key, buf).map_err(|e| e.to_string())?;
        Ok(found.then_some(value))
    }

    fn read<V: Copy + Default>(map: &OwnedFd, idx: u32) -> Result<V, String> {
        let mut value = V::default();
        // SAFETY: as in `lookup`.
        let buf = unsafe {
            std::slice::from_raw_parts_mut((&mut value as *mut V).cast::<u8>(), size_of::<V>())
        };
        sys::map_lookup(map.as_fd(), &idx.to_ne_bytes(), buf).map_err(|e| e.to_string())?;
        Ok(value)
    }
}

impl crate::tables::explain::TableView for KernelView<'_> {
    fn policy(&self, slot: u32) -> Result<Option<geowall_common::PolicyEntry>, String> {
        if slot >= MAX_POLICIES {
            return Ok(None);
        }
        let mut entry = geowall_common::PolicyEntry::empty();
        // SAFETY: as in `lookup`.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                (&mut entry as *mut geowall_common::PolicyEntry).cast::<u8>(),
                size_of::<geowall_common::PolicyEntry>(),
            )
        };
        sys::map_lookup(
            self.kernel.maps.policies.as_fd(),
            &(self.half * MAX_POLICIES + slot).to_ne_bytes(),
            buf,
        )
        .map_err(|e| e.to_string())?;
        Ok((entry.flags & geowall_common::policy_flags::PRESENT != 0).then_some(entry))
    }

    fn rules(
        &self,
        slot: u32,
        addr: &[u8; 16],
        v4: bool,
    ) -> Result<Option<geowall_common::RuleSet>, String> {
        let mut data = slot.to_be_bytes().to_vec();
        if v4 {
            data.extend_from_slice(&addr[..4]);
            Self::lookup(self.rules4.as_ref(), 64, &data)
        } else {
            data.extend_from_slice(addr);
            Self::lookup(self.rules6.as_ref(), 160, &data)
        }
    }

    fn region(
        &self,
        addr: &[u8; 16],
        v4: bool,
    ) -> Result<Option<geowall_common::RegionValue>, String> {
        if v4 {
            Self::lookup(self.region4.as_ref(), 32, &addr[..4])
        } else {
            Self::lookup(self.region6.as_ref(), 128, addr)
        }
    }

    fn tags(&self, tagset: u16) -> Result<Vec<String>, String> {
        let set: geowall_common::TagSet = Self::read(
            &self.kernel.maps.tagsets,
            self.half * geowall_common::MAX_TAGSETS + u32::from(tagset),
        )?;
        Ok(set
            .regions
            .iter()
            .take(set.count as usize)
            .map(|id| {
                self.regions
                    .get(*id as usize)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| format!("region#{id}"))
            })
            .collect())
    }
}

/// The programs, their attach kind, in the order they are attached.
pub const PROGRAMS: [&str; 6] = [
    names::PROG_SOCK_CREATE,
    names::PROG_SOCK_POST,
    names::PROG_CONNECT4,
    names::PROG_CONNECT6,
    names::PROG_SENDMSG4,
    names::PROG_SENDMSG6,
];

/// Programs the kernel may refuse to load without geowall giving up: BPF
/// LSM programs need `lsm=...,bpf` and a kernel that allows the program
/// type (some sandboxed kernels do not).
const OPTIONAL: [&str; 1] = [names::PROG_SOCK_POST];

/// What attaching did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AttachReport {
    /// Links created now.
    pub attached: usize,
    /// Pinned links found at the governed cgroup and switched to the newly
    /// loaded programs in place.
    pub adopted: usize,
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
            crate::host::cgroup::id_of(&opts.governed).map_err(|e| KernelError::Sys {
                what: format!("governed cgroup {}", opts.governed.display()),
                source: io::Error::other(e.to_string()),
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
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(KernelError::Load)?;
        let btf = aya::Btf::from_sys_fs().map_err(|e| KernelError::Sys {
            what: "reading the kernel's BTF (/sys/kernel/btf/vmlinux)".into(),
            source: io::Error::other(e.to_string()),
        })?;
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
        let maps = MapFds {
            bindings: open(names::BINDINGS)?,
            policies: open(names::POLICIES)?,
            tagsets: open(names::TAGSETS)?,
            region4: open(names::REGION4)?,
            region6: open(names::REGION6)?,
            rules4: open(names::RULES4)?,
            rules6: open(names::RULES6)?,
            regnames: open(names::REGION_NAMES)?,
            polnames: open(names::POLICY_NAMES)?,
            grants4: open(names::GRANTS4)?,
            grants6: open(names::GRANTS6)?,
            region_grants: open(names::REGION_GRANTS)?,
        };
        let config = ConfigMap::open(&open(names::CONFIG)?)?;
        config.store(config::ROOT_LEVEL, u64::from(opts.governed_level));
        Ok(Kernel {
            pins,
            loaded,
            no_socket_cgroups,
            ebpf,
            config,
            maps,
            governed: opts.governed.clone(),
            governed_id,
            links: Vec::new(),
            cleanup: None,
        })
    }

    /// Why the programs cannot tell a socket's cgroup (so a socket passed
    /// between cgroups is judged by its callers' policies only), or `None`
    /// when they can.
    pub fn socket_cgroups_unavailable(&self) -> Option<&str> {
        self.no_socket_cgroups.as_deref()
    }

    /// The table epoch in force (0: no tables installed yet).
    pub fn epoch(&self) -> u64 {
        self.config.load(config::EPOCH)
    }

    /// Attaches every program to the governed cgroup, or, where a pinned
    /// link to that cgroup exists, swaps the newly loaded program into it in
    /// one step (no moment with no program, none with two). Pins the
    /// programs and new links.
    pub fn attach(&mut self) -> Result<AttachReport, KernelError> {
        let cgroup = File::open(&self.governed).map_err(|source| KernelError::Pin {
            what: "opening cgroup",
            path: self.governed.clone(),
            source,
        })?;
        let mut report = AttachReport::default();
        for name in self.loaded.clone() {
            let link_path = self.pins.link(name);
            let prog_fd = program_fd(&self.ebpf, name)?;
            if let Some(link) = self.adoptable_link(&link_path)? {
                sys::link_update(link.as_fd(), prog_fd.as_fd())
                    .map_err(sys_err(format!("updating link {}", link_path.display())))?;
                self.links
                    .push(
                        PinnedLink::from_pin(&link_path).map_err(|e| KernelError::Pin {
                            what: "reopening link",
                            path: link_path.clone(),
                            source: io::Error::other(e.to_string()),
                        })?,
                    );
                report.adopted += 1;
            } else {
                let link = attach_program(&mut self.ebpf, name, &cgroup)?;
                let pinned = link.pin(&link_path).map_err(|e| KernelError::Pin {
                    what: "pinning link",
                    path: link_path.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
                self.links.push(pinned);
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
            let path = self.pins.link(name);
            let ours = program_fd(&self.ebpf, name)
                .ok()
                .and_then(|p| sys::prog_stats(p.as_fd()).ok())
                .map(|s| s.id);
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
        let cgroup = File::open(&self.governed).map_err(|source| KernelError::Pin {
            what: "opening cgroup",
            path: self.governed.clone(),
            source,
        })?;
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
            let link = attach_program(&mut self.ebpf, name, &cgroup)?;
            let pinned = link.pin(&path).map_err(|e| KernelError::Pin {
                what: "pinning link",
                path: path.clone(),
                source: io::Error::other(e.to_string()),
            })?;
            self.links.push(pinned);
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
        prog.pin(&path).map_err(|e| KernelError::Pin {
            what: "pinning program",
            path: path.clone(),
            source: io::Error::other(e.to_string()),
        })
    }

    /// Takes the flow-event ring buffer for the reader (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, KernelError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(KernelError::MissingMap(names::EVENTS))?;
        RingBuf::try_from(map).map_err(|e| KernelError::Sys {
            what: "opening the ring buffer".into(),
            source: io::Error::other(e.to_string()),
        })
    }

    /// Per-policy counters summed over CPUs; the last row is for events that
    /// belong to no policy.
    pub fn counters(&self) -> Result<Vec<Counters>, KernelError> {
        read_counters(&self.pins)
    }

    /// Binds a cgroup (by id) to a policy slot.
    pub fn bind(&self, cgroup_id: u64, slot: u32) -> Result<(), KernelError> {
        sys::map_update(
            self.maps.bindings.as_fd(),
            &cgroup_id.to_ne_bytes(),
            &slot.to_ne_bytes(),
            sys::BPF_ANY,
        )
        .map_err(sys_err(format!("binding cgroup {cgroup_id}")))?;
        self.bindings_changed();
        Ok(())
    }

    /// Removes a cgroup's binding (absent is fine).
    pub fn unbind(&self, cgroup_id: u64) -> Result<(), KernelError> {
        let result = sys::map_delete(self.maps.bindings.as_fd(), &cgroup_id.to_ne_bytes())
            .map_err(sys_err(format!("unbinding cgroup {cgroup_id}")));
        self.bindings_changed();
        result
    }

    /// Raises the bindings generation after a binding changed: every
    /// socket's cached verdict was keyed by the old one (the store comes
    /// after the map write, so a program that reads the new generation also
    /// sees the new binding).
    fn bindings_changed(&self) {
        let next = self.config.load(config::BINDINGS_GEN).wrapping_add(1);
        self.config.store(config::BINDINGS_GEN, next);
    }

    /// The slot a cgroup (by id) is bound to.
    pub fn binding(&self, cgroup_id: u64) -> Result<Option<u32>, KernelError> {
        let mut slot = [0u8; 4];
        let found = sys::map_lookup(
            self.maps.bindings.as_fd(),
            &cgroup_id.to_ne_bytes(),
            &mut slot,
        )
        .map_err(sys_err(format!("looking up cgroup {cgroup_id}")))?;
        Ok(found.then(|| u32::from_ne_bytes(slot)))
    }

    /// Every binding: cgroup id → slot.
    pub fn bindings(&self) -> Result<Vec<(u64, u32)>, KernelError> {
        let map =
            MapData::from_pin(self.pins.map(names::BINDINGS)).map_err(|e| KernelError::Sys {
                what: "opening bindings".into(),
                source: io::Error::other(e.to_string()),
            })?;
        let map =
            aya::maps::HashMap::<MapData, u64, u32>::try_from(Map::HashMap(map)).map_err(|e| {
                KernelError::Sys {
                    what: "reading bindings".into(),
                    source: io::Error::other(e.to_string()),
                }
            })?;
        let mut out = Vec::new();
        for item in map.iter() {
            let (k, v) = item.map_err(|e| KernelError::Sys {
                what: "reading bindings".into(),
                source: io::Error::other(e.to_string()),
            })?;
            out.push((k, v));
        }
        Ok(out)
    }

    /// Region names by id, as pinned.
    pub fn region_names(&self) -> Result<Vec<Option<String>>, KernelError> {
        read_names::<REGION_NAME_LEN>(self.maps.regnames.as_fd(), MAX_REGIONS)
    }

    /// Policy names by slot, as pinned.
    pub fn policy_names(&self) -> Result<Vec<Option<String>>, KernelError> {
        read_names::<POLICY_NAME_LEN>(self.maps.polnames.as_fd(), MAX_POLICIES)
    }

    /// Records a policy slot's name (`None` frees the slot).
    pub fn set_policy_name(&self, slot: u32, name: Option<&str>) -> Result<(), KernelError> {
        write_name::<POLICY_NAME_LEN>(self.maps.polnames.as_fd(), slot, name)
    }

    /// Installs `layout` with one table switch, after recording the names of
    /// the ids it uses; the region grants `region_grants` are written for
    /// the new tables' region ids before the switch. On error the tables in
    /// force stay in force.
    pub fn install(
        &mut self,
        layout: &crate::tables::Layout,
        region_grants: &crate::tables::grants::RegionGrantSets,
    ) -> Result<u64, KernelError> {
        let known = self.region_names()?;
        for (id, name) in &layout.regions {
            if known.get(*id as usize).and_then(Option::as_deref) != Some(name.as_str()) {
                write_name::<REGION_NAME_LEN>(
                    self.maps.regnames.as_fd(),
                    u32::from(*id),
                    Some(name),
                )?;
            }
        }
        let slots = self.policy_names()?;
        for (name, slot) in &layout.slots {
            if slots.get(*slot as usize).and_then(Option::as_deref) != Some(name.as_str()) {
                self.set_policy_name(*slot, Some(name))?;
            }
        }
        // The idle half may still be being freed by the last switch.
        if let Some(h) = self.cleanup.take() {
            let _ = h.join();
        }
        let ids = layout
            .regions
            .iter()
            .map(|(id, name)| (name.as_str(), *id))
            .collect();
        let (epoch, cleanup) = tables::switch(self, &layout.tables, |generation| {
            crate::tables::grants::region_entries(region_grants, &ids, generation)
        })?;
        self.cleanup = cleanup;
        Ok(epoch)
    }

    /// A read-only view of the tables in force, for `policy explain`.
    pub fn view(&self) -> Result<KernelView<'_>, KernelError> {
        let epoch = self.epoch();
        let half = (epoch & 1) as u32;
        let inner = |outer: &OwnedFd| -> Result<Option<OwnedFd>, KernelError> {
            let mut id = [0u8; 4];
            if !sys::map_lookup(outer.as_fd(), &half.to_ne_bytes(), &mut id)
                .map_err(sys_err("reading a trie slot"))?
            {
                return Ok(None);
            }
            sys::map_fd_by_id(u32::from_ne_bytes(id))
                .map(Some)
                .map_err(sys_err("opening a trie"))
        };
        Ok(KernelView {
            kernel: self,
            epoch,
            half,
            region4: inner(&self.maps.region4)?,
            region6: inner(&self.maps.region6)?,
            rules4: inner(&self.maps.rules4)?,
            rules6: inner(&self.maps.rules6)?,
            regions: self.region_names()?,
        })
    }

    /// Kernel memory of the tries in force, as the kernel accounts it
    /// (memlock): region tries and rule tries.
    pub fn trie_memlock(&self) -> Result<u64, KernelError> {
        let half = (self.epoch() & 1) as u32;
        let mut total = 0;
        for outer in [
            &self.maps.region4,
            &self.maps.region6,
            &self.maps.rules4,
            &self.maps.rules6,
        ] {
            let mut id = [0u8; 4];
            if !sys::map_lookup(outer.as_fd(), &half.to_ne_bytes(), &mut id)
                .map_err(sys_err("reading a trie slot"))?
            {
                continue;
            }
            let inner =
                sys::map_fd_by_id(u32::from_ne_bytes(id)).map_err(sys_err("opening a trie"))?;
            total += sys::map_memlock(inner.as_fd()).map_err(sys_err("reading a trie's memory"))?;
        }
        Ok(total)
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

/// The LSM hook of the LSM program.
const LSM_HOOK: &str = "socket_post_create";

fn load_program(ebpf: &mut Ebpf, name: &'static str, btf: &aya::Btf) -> Result<(), KernelError> {
    let prog = ebpf.program_mut(name).ok_or(KernelError::Program {
        name,
        source: aya::programs::ProgramError::NotLoaded,
    })?;
    let result = match prog {
        aya::programs::Program::CgroupSockAddr(p) => p.load(),
        aya::programs::Program::CgroupSock(p) => p.load(),
        aya::programs::Program::LsmCgroup(p) => p.load(LSM_HOOK, btf),
        _ => Err(aya::programs::ProgramError::UnexpectedProgramType),
    };
    result.map_err(|source| KernelError::Program { name, source })
}

fn program_fd(ebpf: &Ebpf, name: &'static str) -> Result<OwnedFd, KernelError> {
    let prog = ebpf.program(name).ok_or(KernelError::Program {
        name,
        source: aya::programs::ProgramError::NotLoaded,
    })?;
    let fd = prog
        .fd()
        .map_err(|source| KernelError::Program { name, source })?;
    fd.as_fd()
        .try_clone_to_owned()
        .map_err(sys_err(format!("duplicating program fd of {name}")))
}

/// Creates a cgroup link. Link attachments are always multi-attach (the
/// kernel rejects the BPF_F_ALLOW_MULTI flag on link creation and implies
/// it): other tools' programs on the same cgroup keep running.
fn attach_program(
    ebpf: &mut Ebpf,
    name: &'static str,
    cgroup: &File,
) -> Result<FdLink, KernelError> {
    let err = |source| KernelError::Program { name, source };
    let prog = ebpf.program_mut(name).ok_or(KernelError::Program {
        name,
        source: aya::programs::ProgramError::NotLoaded,
    })?;
    match prog {
        aya::programs::Program::CgroupSockAddr(p) => {
            let p: &mut CgroupSockAddr = p;
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(err)?;
            let link = p.take_link(id).map_err(err)?;
            FdLink::try_from(link).map_err(link_err(name))
        }
        aya::programs::Program::CgroupSock(p) => {
            let p: &mut CgroupSock = p;
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(err)?;
            let link = p.take_link(id).map_err(err)?;
            FdLink::try_from(link).map_err(link_err(name))
        }
        aya::programs::Program::LsmCgroup(p) => {
            let id = p.attach(cgroup).map_err(err)?;
            let link = p.take_link(id).map_err(err)?;
            Ok(FdLink::from(link))
        }
        _ => Err(err(aya::programs::ProgramError::UnexpectedProgramType)),
    }
}

fn link_err(name: &'static str) -> impl Fn(aya::programs::links::LinkError) -> KernelError {
    move |e| KernelError::Sys {
        what: format!("link of {name}"),
        source: io::Error::other(e.to_string()),
    }
}

/// Per-policy counters from the pins (works while the agent is down).
pub fn read_counters(pins: &Pins) -> Result<Vec<Counters>, KernelError> {
    let map = MapData::from_pin(pins.map(names::COUNTERS)).map_err(|e| KernelError::Sys {
        what: "opening counters".into(),
        source: io::Error::other(e.to_string()),
    })?;
    let arr = aya::maps::PerCpuArray::<MapData, Counters>::try_from(Map::PerCpuArray(map))
        .map_err(|e| KernelError::Sys {
            what: "reading counters".into(),
            source: io::Error::other(e.to_string()),
        })?;
    let mut out = Vec::with_capacity(MAX_POLICIES as usize + 1);
    for i in 0..=MAX_POLICIES {
        let per_cpu = arr.get(&i, 0).map_err(|e| KernelError::Sys {
            what: format!("reading counters row {i}"),
            source: io::Error::other(e.to_string()),
        })?;
        let mut sum: Counters = [0; geowall_common::counter::COUNT];
        for row in per_cpu.iter() {
            for (s, v) in sum.iter_mut().zip(row) {
                *s = s.wrapping_add(*v);
            }
        }
        out.push(sum);
    }
    Ok(out)
}

fn read_names<const N: usize>(
    map: std::os::fd::BorrowedFd<'_>,
    count: u32,
) -> Result<Vec<Option<String>>, KernelError> {
    let mut out = Vec::with_capacity(count as usize);
    let mut buf = [0u8; N];
    for i in 0..count {
        sys::map_lookup(map, &i.to_ne_bytes(), &mut buf)
            .map_err(sys_err(format!("reading name {i}")))?;
        let end = buf.iter().position(|b| *b == 0).unwrap_or(N);
        out.push((end > 0).then(|| String::from_utf8_lossy(&buf[..end]).into_owned()));
    }
    Ok(out)
}

fn write_name<const N: usize>(
    map: std::os::fd::BorrowedFd<'_>,
    idx: u32,
    name: Option<&str>,
) -> Result<(), KernelError> {
    let mut buf = [0u8; N];
    if let Some(name) = name {
        for (d, s) in buf.iter_mut().zip(name.bytes().take(N - 1)) {
            *d = s;
        }
    }
    sys::map_update(map, &idx.to_ne_bytes(), &buf, sys::BPF_ANY)
        .map_err(sys_err(format!("writing name {idx}")))
}

/// What the pins say when no agent runs: which version's programs are
/// attached, since when, when the agent was last alive, which policies the
/// tables hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedInfo {
    pub programs: Vec<String>,
    pub version: Option<String>,
    pub attached_at: Option<u64>,
    pub heartbeat: Option<u64>,
    pub policies: Vec<String>,
    pub epoch: u64,
}

/// Reads [`PinnedInfo`] from the pins (root needed; missing parts stay
/// empty).
pub fn pinned_info(pins: &Pins) -> PinnedInfo {
    let mut info = PinnedInfo::default();
    if let Ok(dir) = std::fs::read_dir(pins.links()) {
        info.programs = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        info.programs.sort();
    }
    if let Ok(fd) = sys::obj_get(&pins.map(names::CONFIG)) {
        let slot = |i: u32| {
            let mut v = [0u8; 8];
            sys::map_lookup(fd.as_fd(), &i.to_ne_bytes(), &mut v)
                .ok()
                .filter(|found| *found)
                .map(|_| u64::from_ne_bytes(v))
                .filter(|v| *v != 0)
        };
        info.version = slot(config::PROGRAM_VERSION).map(crate::tables::codes::unpack_version);
        info.attached_at = slot(config::ATTACHED_AT);
        info.heartbeat = slot(config::HEARTBEAT);
        info.epoch = slot(config::EPOCH).unwrap_or(0);
    }
    if let Ok(fd) = sys::obj_get(&pins.map(names::POLICY_NAMES))
        && let Ok(names) = read_names::<POLICY_NAME_LEN>(fd.as_fd(), MAX_POLICIES)
    {
        info.policies = names.into_iter().flatten().collect();
    }
    info
}

/// `GW_CONFIG`, memory-mapped: each slot is written with one aligned 8-byte
/// store, so a program's single load sees the old or the new value whole.
struct ConfigMap {
    ptr: NonNull<u64>,
    len: usize,
}

// SAFETY: the mapping is process-wide shared memory accessed only through
// atomic loads and stores.
unsafe impl Send for ConfigMap {}
unsafe impl Sync for ConfigMap {}

impl ConfigMap {
    fn open(fd: &OwnedFd) -> Result<Self, KernelError> {
        let len = page_size();
        // SAFETY: mapping a BPF_F_MMAPABLE array's fd: the kernel backs it
        // with the array's values (8 bytes each, contiguous).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(fd),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(KernelError::Sys {
                what: "mapping GW_CONFIG".into(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(ConfigMap {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned non-null"),
            len,
        })
    }

    fn slot(&self, slot: u32) -> &AtomicU64 {
        assert!(slot < config::SLOTS, "config slot in range");
        // SAFETY: the slot lies within the mapping and is 8-aligned.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(slot as usize)) }
    }

    fn load(&self, slot: u32) -> u64 {
        self.slot(slot).load(Ordering::Acquire)
    }

    fn store(&self, slot: u32, value: u64) {
        self.slot(slot).store(value, Ordering::Release);
    }
}

impl Drop for ConfigMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `open` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}
