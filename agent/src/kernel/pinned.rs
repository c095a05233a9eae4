//! What the pins hold, read without loading anything: the per-policy
//! counters, and (for `status` while no agent runs) which programs are
//! attached and what the tables hold.

use std::os::fd::AsFd;

use aya::maps::{Map, MapData, PerCpuArray};
use geowall_common::{Counters, MAX_POLICIES, config, counter, names};

use super::{KernelError, Pins, map_err, names::read_policy_names, sys};

/// The pinned per-CPU counters, opened once.
pub struct CounterReader {
    map: PerCpuArray<MapData, Counters>,
    id: u32,
}

impl CounterReader {
    /// Opens the counters pinned under `pins`.
    pub fn open(pins: &Pins) -> Result<Self, KernelError> {
        let path = pins.map(names::COUNTERS);
        let data = MapData::from_pin(&path)
            .map_err(map_err(format!("opening counters {}", path.display())))?;
        let id = data.info().map(|i| i.id()).unwrap_or(0);
        let map = PerCpuArray::try_from(Map::PerCpuArray(data))
            .map_err(map_err(format!("reading counters {}", path.display())))?;
        Ok(Self { map, id })
    }

    /// Every row summed over CPUs: one per policy slot, then the row of
    /// what belongs to no policy.
    pub fn rows(&self) -> Result<Vec<Counters>, KernelError> {
        (0..=MAX_POLICIES)
            .map(|i| {
                self.sum(i)
                    .map_err(map_err(format!("reading counters row {i}")))
            })
            .collect()
    }

    /// The map's id (unique for the boot).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Row `slot` summed over CPUs (the last row, [`MAX_POLICIES`], is for
    /// what belongs to no policy).
    pub fn row(&self, slot: u32) -> Option<Counters> {
        self.sum(slot).ok()
    }

    fn sum(&self, slot: u32) -> Result<Counters, aya::maps::MapError> {
        let per_cpu = self.map.get(&slot, 0)?;
        let mut sum: Counters = [0; counter::COUNT];
        for row in per_cpu.iter() {
            for (s, v) in sum.iter_mut().zip(row) {
                *s = s.wrapping_add(*v);
            }
        }
        Ok(sum)
    }
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
        && let Ok(names) = read_policy_names(fd.as_fd())
    {
        info.policies = names.into_iter().flatten().collect();
    }
    info
}
