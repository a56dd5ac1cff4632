//! The htools cluster model of Ganeti 3.0.2 (`src/Ganeti/HTools/Node.hs`, `Instance.hs`,
//! `Loader.hs`, `Cluster/Moves.hs`).
//!
//! Groups, nodes and instances live in `Vec`s in file order and refer to each other by
//! index: htools breaks every tie by index, so indices are part of the semantics.
//!
//! Every node carries its loaded fields ([`NodeData`]), the derived scalar state of
//! htools' `Node` record ([`NodeState`], `Copy`, so the balancer can evaluate a candidate
//! move without allocating) and the derived collections (primary and secondary lists,
//! peers, tag multisets). The node primitives (`removePri`, `removeSec`, `addPri`,
//! `addSec`) exist at both levels: [`NodeState`] methods that take the few values they
//! need from the collections as arguments, and [`Node`] methods that look those values up
//! and then keep the collections in step. Moves (`applyMoveEx`) are simulated by
//! [`Cluster::simulate_move`] and applied by [`Cluster::apply_move`].

use std::collections::HashMap;
use std::fmt;

/// Disk templates and instance statuses are maintd's own (the snapshot's); htools reads
/// and writes their Ganeti names.
pub use crate::model::cluster::{DiskTemplate, InstanceStatus, MirrorType};

/// A node group's allocation policy (used by allocation only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocPolicy {
    /// `preferred`.
    Preferred,
    /// `last_resort`.
    LastResort,
    /// `unallocable`.
    Unallocable,
}

impl AllocPolicy {
    /// Parses the text-format name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "preferred" => Some(Self::Preferred),
            "last_resort" => Some(Self::LastResort),
            "unallocable" => Some(Self::Unallocable),
            _ => None,
        }
    }

    /// The text-format name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Preferred => "preferred",
            Self::LastResort => "last_resort",
            Self::Unallocable => "unallocable",
        }
    }
}

/// Why a node refused an instance (htools' `FailMode`; the names are what hail prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailMode {
    /// Not enough memory, or N+1 would newly break.
    FailMem,
    /// Not enough disk or too many spindles, or not a DRBD secondary.
    FailDisk,
    /// The vCPU ratio would be exceeded.
    FailCPU,
    /// An exclusion tag is already present among the node's primaries.
    FailTags,
    /// Migration tags forbid the move.
    FailMig,
    /// Exclusive-storage spindles (not modelled; kept for completeness).
    FailSpindles,
}

impl fmt::Display for FailMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FailMem => "FailMem",
            Self::FailDisk => "FailDisk",
            Self::FailCPU => "FailCPU",
            Self::FailTags => "FailTags",
            Self::FailMig => "FailMig",
            Self::FailSpindles => "FailSpindles",
        })
    }
}

/// An instance spec: memory, CPUs, disk size, disk count, NIC count, spindle use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ISpec {
    /// `memory_size`, MiB.
    pub memory: i64,
    /// `cpu_count`.
    pub cpus: i64,
    /// `disk_size`, MiB.
    pub disk_size: i64,
    /// `disk_count`.
    pub disk_count: i64,
    /// `nic_count`.
    pub nic_count: i64,
    /// `spindle_use`.
    pub spindle_use: i64,
}

/// An instance policy (htools' `IPolicy`). Only the two ratios influence balancing and
/// evacuation.
#[derive(Debug, Clone, PartialEq)]
pub struct IPolicy {
    /// The standard spec.
    pub std: ISpec,
    /// (min, max) spec pairs.
    pub minmax: Vec<(ISpec, ISpec)>,
    /// Allowed disk templates.
    pub disk_templates: Vec<DiskTemplate>,
    /// Maximum vCPUs per physical CPU (soft check, score component).
    pub vcpu_ratio: f64,
    /// Maximum instance spindle use per node spindle.
    pub spindle_ratio: f64,
}

impl Default for IPolicy {
    /// Ganeti's built-in policy, used by a group without its own policy line (trap 10).
    fn default() -> Self {
        let min = ISpec {
            memory: 128,
            cpus: 1,
            disk_size: 1024,
            disk_count: 1,
            nic_count: 1,
            spindle_use: 1,
        };
        let max = ISpec {
            memory: 32768,
            cpus: 8,
            disk_size: 1_048_576,
            disk_count: 16,
            nic_count: 8,
            spindle_use: 12,
        };
        IPolicy {
            std: min,
            minmax: vec![(min, max)],
            disk_templates: DiskTemplate::all().collect(),
            vcpu_ratio: 4.0,
            spindle_ratio: 32.0,
        }
    }
}

/// A node group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Name (the policy section's key).
    pub name: String,
    /// UUID (the nodes' key).
    pub uuid: String,
    /// Allocation policy.
    pub alloc_policy: AllocPolicy,
    /// Group tags.
    pub tags: Vec<String>,
    /// Network UUIDs.
    pub networks: Vec<String>,
    /// The group's own policy line, if the input had one.
    pub ipolicy: Option<IPolicy>,
}

impl Group {
    /// The policy in force: the group's own line or the built-in default, never the
    /// cluster's line.
    pub fn effective_ipolicy(&self) -> IPolicy {
        self.ipolicy.clone().unwrap_or_default()
    }
}

/// The loaded (reported) fields of a node (what `Backend/Text.hs` `loadNode` reads); never
/// changed by moves.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeData {
    /// Node name.
    pub name: String,
    /// Total memory, MiB.
    pub t_mem: f64,
    /// Memory used by the node OS, MiB.
    pub n_mem: i64,
    /// Free memory as reported, MiB.
    pub f_mem: i64,
    /// Total disk, MiB.
    pub t_dsk: f64,
    /// Free disk as reported, MiB.
    pub f_dsk: i64,
    /// Physical CPUs.
    pub t_cpu: f64,
    /// htools-offline (offline, drained or not vm_capable).
    pub offline: bool,
    /// The master node (informational).
    pub master: bool,
    /// Index of the node's group.
    pub group: usize,
    /// Spindle count.
    pub spindles: i64,
    /// Node tags.
    pub tags: Vec<String>,
    /// Exclusive storage (not modelled beyond being kept).
    pub excl_storage: bool,
    /// Free spindles (exclusive storage only).
    pub free_spindles: i64,
    /// CPUs reserved for the node OS.
    pub n_cpu: i64,
    /// Relative CPU speed.
    pub cpu_speed: f64,
}

/// The derived scalar state of a node (the computed fields of htools' `Node`), `Copy` so
/// that candidate moves can be evaluated without touching the node itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeState {
    /// Total memory (copied from the data for locality).
    pub t_mem: f64,
    /// OS memory.
    pub n_mem: i64,
    /// Reported free memory.
    pub f_mem: i64,
    /// Total disk.
    pub t_dsk: f64,
    /// Physical CPUs.
    pub t_cpu: f64,
    /// Relative CPU speed.
    pub cpu_speed: f64,
    /// htools-offline.
    pub offline: bool,
    /// Number of primary instances.
    pub n_pri: u32,
    /// Number of secondary instances.
    pub n_sec: u32,
    /// Memory of primaries that use memory.
    pub i_mem: i64,
    /// Unaccounted memory, fixed at load.
    pub x_mem: i64,
    /// unalloc / t_mem.
    pub p_mem: f64,
    /// Memory needed if the worst single peer fails.
    pub r_mem: i64,
    /// r_mem / t_mem.
    pub p_rem: f64,
    /// The node fails N+1.
    pub fail_n1: bool,
    /// Free disk.
    pub f_dsk: i64,
    /// f_dsk / t_dsk (1.0 when t_dsk is 0).
    pub p_dsk: f64,
    /// Used CPUs: n_cpu + vCPUs of primaries that are not offline.
    pub u_cpu: i64,
    /// u_cpu / t_cpu.
    pub p_cpu: f64,
    /// spindle_ratio × spindles.
    pub hi_spindles: f64,
    /// Spindle use of local-storage primaries and secondaries.
    pub inst_spindles: f64,
    /// Minimum free disk (0 unless `--min-disk`).
    pub lo_dsk: i64,
    /// The group policy's vCPU ratio.
    pub vcpu_ratio: f64,
    /// Dynamic load: cpu, mem, dsk, net.
    pub load: [f64; 4],
    /// Σ over exclusion tags of (count among primaries − 1).
    pub pri_tags_score: i64,
    /// Location score (htools' `locationScore`).
    pub loc_score: i64,
    /// Free memory as if every primary were running.
    pub f_mem_f: i64,
    /// f_mem_f / t_mem.
    pub p_mem_f: f64,
    /// Forthcoming-aware free disk.
    pub f_dsk_f: i64,
    /// Forthcoming-aware p_dsk.
    pub p_dsk_f: f64,
    /// Forthcoming-aware u_cpu.
    pub u_cpu_f: i64,
    /// Forthcoming-aware p_cpu.
    pub p_cpu_f: f64,
    /// Forthcoming-aware spindle use.
    pub inst_spindles_f: f64,
    /// Forthcoming-aware load.
    pub load_f: [f64; 4],
}

/// What [`NodeState`]'s primary primitives need to know from the node's collections and
/// about the instance's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrimaryContext {
    /// Add: how many of the instance's exclusion tags the node's primaries already carry
    /// (each raises `pri_tags_score` by one and fails the soft tag check). Remove: how
    /// many of them the node carries at least twice (each lowers the score by one).
    pub tag_overlap: i64,
    /// The instance's desired-location tags the node does not have.
    pub unsatisfied_desired: i64,
    /// The instance's location score (the value it has on this node).
    pub inst_loc_score: i64,
}

/// Index of the disk slot in load vectors (cpu, mem, dsk, net).
const DSK: usize = 2;

fn ratio(num: f64, den: f64) -> f64 {
    num / den
}

fn disk_ratio(f_dsk: i64, t_dsk: f64) -> f64 {
    if t_dsk == 0.0 {
        1.0
    } else {
        f_dsk as f64 / t_dsk
    }
}

impl NodeState {
    /// Guaranteed free memory with `i_mem` primaries' memory (htools' `unallocatedMem`).
    pub fn unalloc_with(&self, i_mem: i64) -> i64 {
        self.t_mem.floor() as i64 - self.n_mem - i_mem - self.x_mem.max(0)
    }

    /// Guaranteed free memory now.
    pub fn unalloc(&self) -> i64 {
        self.unalloc_with(self.i_mem)
    }

    /// htools' `removePri`: the node without primary `inst`.
    pub fn remove_primary(&self, inst: &Instance, ctx: PrimaryContext) -> NodeState {
        let mut n = *self;
        let local = inst.dt.local_storage();
        n.n_pri = n.n_pri.saturating_sub(1);
        if inst.uses_memory() {
            n.i_mem -= inst.mem;
        }
        let free = n.unalloc();
        n.p_mem = ratio(free as f64, n.t_mem);
        n.fail_n1 = free <= n.r_mem;
        if local {
            n.f_dsk += inst.dsk;
            n.inst_spindles -= inst.spindle_use as f64;
            n.f_dsk_f += inst.dsk;
            n.inst_spindles_f -= inst.spindle_use as f64;
        }
        n.p_dsk = disk_ratio(n.f_dsk, n.t_dsk);
        if inst.not_offline() {
            n.u_cpu -= inst.vcpus;
            n.u_cpu_f -= inst.vcpus;
        }
        n.p_cpu = ratio(n.u_cpu as f64, n.t_cpu);
        for k in 0..4 {
            n.load[k] -= inst.util[k];
            n.load_f[k] -= inst.util[k];
        }
        n.loc_score -= ctx.inst_loc_score + ctx.unsatisfied_desired;
        n.pri_tags_score -= ctx.tag_overlap;
        n.f_mem_f += inst.mem;
        n.p_mem_f = ratio(n.f_mem_f as f64, n.t_mem);
        n.p_dsk_f = disk_ratio(n.f_dsk_f, n.t_dsk);
        n.p_cpu_f = ratio(n.u_cpu_f as f64, n.t_cpu);
        n
    }

    /// htools' `addPriEx`: the node with `inst` added as primary, or the first failing
    /// check. `force` skips the soft checks.
    pub fn add_primary(
        &self,
        inst: &Instance,
        ctx: PrimaryContext,
        force: bool,
    ) -> Result<NodeState, FailMode> {
        let strict = !force;
        let local = inst.dt.local_storage();
        let i_mem = self.i_mem + if inst.uses_memory() { inst.mem } else { 0 };
        let free = self.unalloc_with(i_mem);
        let n1 = free <= self.r_mem;
        let dsk = if local {
            self.f_dsk - inst.dsk
        } else {
            self.f_dsk
        };
        let su = if local { inst.spindle_use as f64 } else { 0.0 };
        let isp = self.inst_spindles + su;
        let vcpus = if inst.not_offline() { inst.vcpus } else { 0 };
        let ucpu = self.u_cpu + vcpus;
        let pcpu = ratio(ucpu as f64, self.t_cpu);
        let memf = self.f_mem_f - inst.mem;
        let dskf = if local {
            self.f_dsk_f - inst.dsk
        } else {
            self.f_dsk_f
        };
        let ispf = self.inst_spindles_f + su;
        let ucpuf = self.u_cpu_f + vcpus;
        let pcpuf = ratio(ucpuf as f64, self.t_cpu);
        if free <= 0 {
            return Err(FailMode::FailMem);
        }
        if local && dsk <= 0 {
            return Err(FailMode::FailDisk);
        }
        if strict {
            if local && dsk < self.lo_dsk {
                return Err(FailMode::FailDisk);
            }
            if local && isp > self.hi_spindles {
                return Err(FailMode::FailDisk);
            }
            if n1 && !self.fail_n1 {
                return Err(FailMode::FailMem);
            }
            if self.vcpu_ratio >= 0.0 && pcpu > self.vcpu_ratio {
                return Err(FailMode::FailCPU);
            }
            if ctx.tag_overlap > 0 {
                return Err(FailMode::FailTags);
            }
            if memf <= 0 {
                return Err(FailMode::FailMem);
            }
            if local && (dskf <= 0 || dskf < self.lo_dsk) {
                return Err(FailMode::FailDisk);
            }
            if local && ispf > self.hi_spindles {
                return Err(FailMode::FailDisk);
            }
            if pcpuf > self.vcpu_ratio {
                return Err(FailMode::FailCPU);
            }
        }
        let mut n = *self;
        n.n_pri += 1;
        n.i_mem = i_mem;
        n.p_mem = ratio(free as f64, n.t_mem);
        n.fail_n1 = n1;
        n.f_dsk = dsk;
        n.p_dsk = disk_ratio(dsk, n.t_dsk);
        n.u_cpu = ucpu;
        n.p_cpu = pcpu;
        for k in 0..4 {
            n.load[k] += inst.util[k];
            n.load_f[k] += inst.util[k];
        }
        n.inst_spindles = isp;
        n.loc_score += ctx.inst_loc_score + ctx.unsatisfied_desired;
        n.pri_tags_score += ctx.tag_overlap;
        n.f_mem_f = memf;
        n.p_mem_f = ratio(memf as f64, n.t_mem);
        n.f_dsk_f = dskf;
        n.p_dsk_f = disk_ratio(dskf, n.t_dsk);
        n.u_cpu_f = ucpuf;
        n.p_cpu_f = pcpuf;
        n.inst_spindles_f = ispf;
        Ok(n)
    }

    /// htools' `removeSec`: the node without secondary `inst`; `r_mem_after` is the
    /// maximum of the node's peers once the instance's reservation is taken out.
    pub fn remove_secondary(&self, inst: &Instance, r_mem_after: i64) -> NodeState {
        let mut n = *self;
        n.n_sec = n.n_sec.saturating_sub(1);
        if inst.dt.local_storage() {
            n.f_dsk += inst.dsk;
            n.inst_spindles -= inst.spindle_use as f64;
            n.f_dsk_f += inst.dsk;
            n.inst_spindles_f -= inst.spindle_use as f64;
        }
        n.r_mem = r_mem_after;
        n.p_rem = ratio(r_mem_after as f64, n.t_mem);
        n.fail_n1 = n.unalloc() <= r_mem_after;
        n.p_dsk = disk_ratio(n.f_dsk, n.t_dsk);
        n.p_dsk_f = disk_ratio(n.f_dsk_f, n.t_dsk);
        n.load[DSK] -= inst.util[DSK];
        n.load_f[DSK] -= inst.util[DSK];
        n
    }

    /// htools' `addSecExEx`: the node with `inst` added as secondary of primary `pdx`,
    /// where `peer_mem` is the node's current peers entry for `pdx` (0 if none).
    pub fn add_secondary(
        &self,
        inst: &Instance,
        peer_mem: i64,
        force: bool,
        ignore_disks: bool,
    ) -> Result<NodeState, FailMode> {
        let strict = !force;
        let local = inst.dt.local_storage();
        let need = if inst.uses_sec_mem() { inst.mem } else { 0 };
        let peem = peer_mem + need;
        let old = self.unalloc();
        let dsk = self.f_dsk - inst.dsk;
        let su = if local { inst.spindle_use as f64 } else { 0.0 };
        let isp = self.inst_spindles + su;
        let r = self.r_mem.max(peem);
        let n1 = old <= r;
        let dskf = self.f_dsk_f - inst.dsk;
        let ispf = self.inst_spindles_f + su;
        if inst.dt != DiskTemplate::Drbd {
            return Err(FailMode::FailDisk);
        }
        if !ignore_disks && dsk <= 0 {
            return Err(FailMode::FailDisk);
        }
        if strict {
            if dsk < self.lo_dsk || isp > self.hi_spindles {
                return Err(FailMode::FailDisk);
            }
            if need >= old || (n1 && !self.fail_n1) {
                return Err(FailMode::FailMem);
            }
            if dskf <= 0 || dskf < self.lo_dsk || ispf > self.hi_spindles {
                return Err(FailMode::FailDisk);
            }
            if need >= self.f_mem_f {
                return Err(FailMode::FailMem);
            }
        }
        let mut n = *self;
        n.n_sec += 1;
        n.f_dsk = dsk;
        n.fail_n1 = n1;
        n.r_mem = r;
        n.p_dsk = disk_ratio(dsk, n.t_dsk);
        n.p_rem = ratio(r as f64, n.t_mem);
        n.load[DSK] += inst.util[DSK];
        n.load_f[DSK] += inst.util[DSK];
        n.inst_spindles = isp;
        n.f_dsk_f = dskf;
        n.p_dsk_f = disk_ratio(dskf, n.t_dsk);
        n.inst_spindles_f = ispf;
        Ok(n)
    }
}

/// A node: loaded data, derived scalar state and derived collections.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The loaded fields.
    pub data: NodeData,
    /// The derived scalar state (see [`NodeState`]).
    pub state: NodeState,
    /// Primary instances, **oldest addition first**; htools' list is the reverse
    /// (it prepends), see [`Node::primaries`].
    plist: Vec<usize>,
    /// Secondary instances, oldest addition first; see [`Node::secondaries`].
    slist: Vec<usize>,
    /// Memory reserved per primary node for this node's secondaries (`peers`).
    peers: Vec<(usize, i64)>,
    /// Multiset of the exclusion tags (interned) of the primaries.
    p_tags: Vec<(u32, u32)>,
    /// Multiset of (location tag, exclusion tag) pairs over the primaries.
    imap: Vec<((u32, u32), u32)>,
    /// Location tags (interned, sorted).
    pub loc: Vec<u32>,
    /// Migration tags (interned, sorted).
    pub mig: Vec<u32>,
    /// Migration tags this node accepts instances from (sorted).
    pub rmig: Vec<u32>,
}

fn multiset_add<K: PartialEq + Copy>(set: &mut Vec<(K, u32)>, key: K) {
    match set.iter_mut().find(|(k, _)| *k == key) {
        Some((_, c)) => *c += 1,
        None => set.push((key, 1)),
    }
}

fn multiset_remove<K: PartialEq + Copy>(set: &mut Vec<(K, u32)>, key: K) {
    if let Some(pos) = set.iter().position(|(k, _)| *k == key) {
        if set[pos].1 > 1 {
            set[pos].1 -= 1;
        } else {
            set.remove(pos);
        }
    }
}

fn remove_item(list: &mut Vec<usize>, item: usize) {
    if let Some(pos) = list.iter().rposition(|&x| x == item) {
        list.remove(pos);
    }
}

impl Node {
    /// A node as loaded, with no instances registered yet.
    fn new(data: NodeData) -> Node {
        let t_mem = data.t_mem;
        let state = NodeState {
            t_mem,
            n_mem: data.n_mem,
            f_mem: data.f_mem,
            t_dsk: data.t_dsk,
            t_cpu: data.t_cpu,
            cpu_speed: data.cpu_speed,
            offline: data.offline,
            n_pri: 0,
            n_sec: 0,
            i_mem: 0,
            x_mem: 0,
            p_mem: ratio(data.f_mem as f64, t_mem),
            r_mem: 0,
            p_rem: 0.0,
            fail_n1: true,
            f_dsk: data.f_dsk,
            p_dsk: disk_ratio(data.f_dsk, data.t_dsk),
            u_cpu: data.n_cpu,
            p_cpu: ratio(data.n_cpu as f64, data.t_cpu),
            hi_spindles: 0.0,
            inst_spindles: 0.0,
            lo_dsk: 0,
            vcpu_ratio: 4.0,
            load: [0.0; 4],
            pri_tags_score: 0,
            loc_score: 0,
            f_mem_f: data.f_mem,
            p_mem_f: ratio(data.f_mem as f64, t_mem),
            f_dsk_f: data.f_dsk,
            p_dsk_f: disk_ratio(data.f_dsk, data.t_dsk),
            u_cpu_f: data.n_cpu,
            p_cpu_f: ratio(data.n_cpu as f64, data.t_cpu),
            inst_spindles_f: 0.0,
            load_f: [0.0; 4],
        };
        Node {
            data,
            state,
            plist: Vec::new(),
            slist: Vec::new(),
            peers: Vec::new(),
            p_tags: Vec::new(),
            imap: Vec::new(),
            loc: Vec::new(),
            mig: Vec::new(),
            rmig: Vec::new(),
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.data.name
    }

    /// Whether htools treats the node as offline.
    pub fn offline(&self) -> bool {
        self.data.offline
    }

    /// Primary instances in htools' order: most recently added first (at load time,
    /// descending instance index). maintd evacuates the first one first (trap 12).
    pub fn primaries(&self) -> impl DoubleEndedIterator<Item = usize> + ExactSizeIterator + '_ {
        self.plist.iter().rev().copied()
    }

    /// Secondary instances in htools' order (most recently added first).
    pub fn secondaries(&self) -> impl DoubleEndedIterator<Item = usize> + ExactSizeIterator + '_ {
        self.slist.iter().rev().copied()
    }

    /// The peers map: (primary node, memory reserved here for its instances).
    pub fn peers(&self) -> &[(usize, i64)] {
        &self.peers
    }

    /// The node's peers entry for primary node `pdx` (0 if none).
    pub fn peer_mem(&self, pdx: usize) -> i64 {
        self.peers
            .iter()
            .find(|(p, _)| *p == pdx)
            .map_or(0, |(_, m)| *m)
    }

    /// The (location tag, exclusion tag) multiset of the primaries.
    pub fn location_exclusion_pairs(&self) -> &[((u32, u32), u32)] {
        &self.imap
    }

    /// r_mem once `inst`'s reservation for primary `pdx` is taken out (as in `removeSec`).
    pub fn r_mem_without(&self, inst: &Instance, pdx: usize) -> i64 {
        let need = if inst.uses_sec_mem() { inst.mem } else { 0 };
        self.peers
            .iter()
            .filter_map(|&(p, m)| {
                let m = if p == pdx { m - need } else { m };
                (p != pdx || m > 0).then_some(m)
            })
            .max()
            .unwrap_or(0)
            .max(0)
    }

    /// The context for adding (`adding`) or removing `inst` as primary here, with the
    /// instance's location score `inst_loc_score`.
    pub fn primary_context(
        &self,
        inst: &Instance,
        inst_loc_score: i64,
        adding: bool,
    ) -> PrimaryContext {
        let min_count = if adding { 1 } else { 2 };
        let tag_overlap = inst
            .excl
            .iter()
            .filter(|t| self.p_tags.iter().any(|(k, c)| k == *t && *c >= min_count))
            .count() as i64;
        let unsatisfied_desired = inst
            .dsrd
            .iter()
            .filter(|t| self.loc.binary_search(t).is_err())
            .count() as i64;
        PrimaryContext {
            tag_overlap,
            unsatisfied_desired,
            inst_loc_score,
        }
    }

    /// `removePri` on the whole node.
    pub fn remove_primary(&mut self, idx: usize, inst: &Instance) {
        let ctx = self.primary_context(inst, inst.loc_score, false);
        self.state = self.state.remove_primary(inst, ctx);
        remove_item(&mut self.plist, idx);
        for &t in &inst.excl {
            multiset_remove(&mut self.p_tags, t);
            for &l in &self.loc {
                multiset_remove(&mut self.imap, (l, t));
            }
        }
    }

    /// `addPriEx` on the whole node; the node is unchanged on failure.
    pub fn add_primary(
        &mut self,
        idx: usize,
        inst: &Instance,
        force: bool,
    ) -> Result<(), FailMode> {
        let ctx = self.primary_context(inst, inst.loc_score, true);
        self.state = self.state.add_primary(inst, ctx, force)?;
        self.plist.push(idx);
        for &t in &inst.excl {
            multiset_add(&mut self.p_tags, t);
            for &l in &self.loc {
                multiset_add(&mut self.imap, (l, t));
            }
        }
        Ok(())
    }

    /// `removeSec` on the whole node (the peers key is the instance's current primary).
    pub fn remove_secondary(&mut self, idx: usize, inst: &Instance) {
        let r_mem = self.r_mem_without(inst, inst.pnode);
        self.state = self.state.remove_secondary(inst, r_mem);
        remove_item(&mut self.slist, idx);
        let need = if inst.uses_sec_mem() { inst.mem } else { 0 };
        if let Some(pos) = self.peers.iter().position(|(p, _)| *p == inst.pnode) {
            self.peers[pos].1 -= need;
            if self.peers[pos].1 <= 0 {
                self.peers.remove(pos);
            }
        }
    }

    /// `addSecExEx` on the whole node, for primary node `pdx`; unchanged on failure.
    pub fn add_secondary(
        &mut self,
        idx: usize,
        inst: &Instance,
        pdx: usize,
        force: bool,
        ignore_disks: bool,
    ) -> Result<(), FailMode> {
        let peer = self.peer_mem(pdx);
        self.state = self.state.add_secondary(inst, peer, force, ignore_disks)?;
        self.slist.push(idx);
        let need = if inst.uses_sec_mem() { inst.mem } else { 0 };
        match self.peers.iter_mut().find(|(p, _)| *p == pdx) {
            Some((_, m)) => *m += need,
            None => self.peers.push((pdx, need)),
        }
        Ok(())
    }
}

/// An instance (htools' `Instance`): loaded fields and the derived tag/location values.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Name.
    pub name: String,
    /// Memory, MiB.
    pub mem: i64,
    /// Total disk, MiB.
    pub dsk: i64,
    /// Virtual CPUs.
    pub vcpus: i64,
    /// Run state.
    pub status: InstanceStatus,
    /// Ganeti's `auto_balance` beparam.
    pub auto_balance: bool,
    /// Primary node index.
    pub pnode: usize,
    /// Secondary node index (DRBD).
    pub snode: Option<usize>,
    /// Disk template.
    pub dt: DiskTemplate,
    /// Instance tags.
    pub tags: Vec<String>,
    /// Spindle use beparam.
    pub spindle_use: i64,
    /// Total disk spindles, if known (kept for writing).
    pub spindles: Option<i64>,
    /// Forthcoming (not modelled beyond being kept).
    pub forthcoming: bool,
    /// Dynamic utilisation: cpu, mem, dsk, net (default all 1).
    pub util: [f64; 4],
    /// Whether balancing may move it (htools' `movable`, cleared by `disableSplitMoves`).
    pub movable: bool,
    /// Exclusion tags (interned).
    pub excl: Vec<u32>,
    /// Desired location tags (interned).
    pub dsrd: Vec<u32>,
    /// |loc(pnode) ∩ loc(snode)| for DRBD, else 0.
    pub loc_score: i64,
}

impl Instance {
    /// Occupies memory on its primary.
    pub fn uses_memory(&self) -> bool {
        matches!(
            self.status,
            InstanceStatus::Running
                | InstanceStatus::ErrorUp
                | InstanceStatus::ErrorNodeDown
                | InstanceStatus::ErrorNodeOffline
                | InstanceStatus::ErrorWrongNode
        )
    }

    /// Not administratively offline.
    pub fn not_offline(&self) -> bool {
        self.status != InstanceStatus::AdminOffline
    }

    /// Reserves memory on its secondary for N+1.
    pub fn uses_sec_mem(&self) -> bool {
        self.not_offline() && self.auto_balance
    }

    /// Running, for the printed command (`migrate` rather than `failover`).
    pub fn is_running(&self) -> bool {
        matches!(
            self.status,
            InstanceStatus::Running | InstanceStatus::ErrorUp
        )
    }

    /// Primary and, for DRBD, secondary.
    pub fn all_nodes(&self) -> impl Iterator<Item = usize> {
        std::iter::once(self.pnode).chain(self.snode)
    }
}

/// Interned tags and the meanings cluster tags give them (the `htools:*` prefixes of
/// `Tags/Constants.hs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagMeanings {
    /// Interned tag strings.
    names: Vec<String>,
    ids: HashMap<String, u32>,
    /// `htools:iextags:` prefixes (no colon appended).
    pub exclusion_prefixes: Vec<String>,
    /// `htools:nlocation:` prefixes (colon appended).
    pub location_prefixes: Vec<String>,
    /// `htools:desiredlocation:` prefixes (no colon appended).
    pub desired_location_prefixes: Vec<String>,
    /// `htools:migration:` prefixes (colon appended).
    pub migration_prefixes: Vec<String>,
    /// `htools:allowmigration:X::Y` pairs (X, Y).
    pub allowed_migrations: Vec<(String, String)>,
}

impl TagMeanings {
    /// Reads the meanings from the cluster tags.
    pub fn from_cluster_tags(tags: &[String]) -> TagMeanings {
        let mut m = TagMeanings::default();
        for tag in tags {
            if let Some(p) = tag.strip_prefix("htools:iextags:") {
                m.exclusion_prefixes.push(p.to_owned());
            } else if let Some(p) = tag.strip_prefix("htools:nlocation:") {
                m.location_prefixes.push(format!("{p}:"));
            } else if let Some(p) = tag.strip_prefix("htools:desiredlocation:") {
                m.desired_location_prefixes.push(p.to_owned());
            } else if let Some(p) = tag.strip_prefix("htools:migration:") {
                m.migration_prefixes.push(format!("{p}:"));
            } else if let Some(p) = tag.strip_prefix("htools:allowmigration:") {
                if p.matches("::").count() == 1 {
                    if let Some((x, y)) = p.split_once("::") {
                        m.allowed_migrations.push((x.to_owned(), y.to_owned()));
                    }
                }
            }
        }
        m
    }

    /// The id of `tag`, interning it.
    pub fn intern(&mut self, tag: &str) -> u32 {
        if let Some(&id) = self.ids.get(tag) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(tag.to_owned());
        self.ids.insert(tag.to_owned(), id);
        id
    }

    /// The tag string of an id.
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }

    fn matching(&mut self, tags: &[String], prefixes: &[String]) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for t in tags {
            if prefixes.iter().any(|p| t.starts_with(p.as_str())) {
                let id = self.intern(t);
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        out
    }
}

/// A move of one instance (htools' `IMove`), named as hbal prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Move {
    /// `f`: swap primary and secondary.
    Failover,
    /// `fa:T`: move a shared-storage instance to T.
    FailoverToAny(usize),
    /// `r:T`: new secondary T.
    ReplaceSecondary(usize),
    /// `f r:T f`: new primary T, same secondary.
    ReplacePrimary(usize),
    /// `r:T f`: T becomes primary, the old primary secondary.
    ReplaceAndFailover(usize),
    /// `f r:T`: the old secondary becomes primary, T secondary.
    FailoverAndReplace(usize),
}

/// The result of simulating a move: the nodes it changes and the instance's new place.
#[derive(Debug, Clone, PartialEq)]
pub struct MoveOutcome {
    /// The instance.
    pub instance: usize,
    /// The move.
    pub mv: Move,
    /// New primary.
    pub pnode: usize,
    /// New secondary.
    pub snode: Option<usize>,
    /// New location score of the instance.
    pub loc_score: i64,
    /// New values of the changed nodes (each node once).
    pub nodes: Vec<(usize, Node)>,
}

/// Loaded parts that do not form a cluster: a node or an instance refers to a group or
/// node that is not there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A node's group is not in the snapshot.
    #[error("node {node} is in unknown group {group}")]
    UnknownGroup {
        /// The node.
        node: String,
        /// The group UUID it names.
        group: String,
    },
    /// An instance's primary or secondary node is not in the snapshot.
    #[error("instance {instance} is on unknown node {node}")]
    UnknownNode {
        /// The instance.
        instance: String,
        /// The node name it names.
        node: String,
    },
    /// A node's group index is out of range.
    #[error("node {node} has an unknown group (index {index})")]
    GroupIndex {
        /// The node.
        node: String,
        /// Its group index.
        index: usize,
    },
    /// An instance's primary or secondary node index is out of range.
    #[error("instance {instance} has an unknown node (index {index})")]
    NodeIndex {
        /// The instance.
        instance: String,
        /// The node index.
        index: usize,
    },
}

/// A loaded cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Node groups in file order.
    pub groups: Vec<Group>,
    /// Nodes in file order.
    pub nodes: Vec<Node>,
    /// Instances in file order.
    pub instances: Vec<Instance>,
    /// Cluster tags.
    pub cluster_tags: Vec<String>,
    /// The cluster policy line (stored, never inherited by groups).
    pub cluster_ipolicy: Option<IPolicy>,
    /// Interned tags and their meanings.
    pub tags: TagMeanings,
}

/// A move's working copy of the nodes it touches.
struct Scratch<'a> {
    cluster: &'a Cluster,
    nodes: Vec<(usize, Node)>,
}

impl Scratch<'_> {
    fn node(&mut self, idx: usize) -> &mut Node {
        let pos = match self.nodes.iter().position(|(i, _)| *i == idx) {
            Some(pos) => pos,
            None => {
                self.nodes.push((idx, self.cluster.nodes[idx].clone()));
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[pos].1
    }
}

impl Cluster {
    /// Builds the cluster from loaded parts and derives all state in htools' loading order
    /// (`Loader.hs` `mergeData`, then `updateMissing`). Instance `pnode`/`snode`/`group`
    /// indices must be valid (the text reader guarantees it); an invalid one is an error,
    /// never a panic.
    pub fn new(
        groups: Vec<Group>,
        nodes: Vec<NodeData>,
        instances: Vec<Instance>,
        cluster_tags: Vec<String>,
        cluster_ipolicy: Option<IPolicy>,
    ) -> Result<Cluster, LoadError> {
        for n in &nodes {
            if n.group >= groups.len() {
                return Err(LoadError::GroupIndex {
                    node: n.name.clone(),
                    index: n.group,
                });
            }
        }
        for i in &instances {
            let bad = [Some(i.pnode), i.snode]
                .into_iter()
                .flatten()
                .find(|&n| n >= nodes.len());
            if let Some(index) = bad {
                return Err(LoadError::NodeIndex {
                    instance: i.name.clone(),
                    index,
                });
            }
        }
        let mut tags = TagMeanings::from_cluster_tags(&cluster_tags);
        let mut nodes: Vec<Node> = nodes.into_iter().map(Node::new).collect();
        let mut instances = instances;
        // Tags with meaning (`addLocationTags`, `addMigrationTags`, `updateExclTags`,
        // `updateDesiredLocationTags`).
        let loc_prefixes = tags.location_prefixes.clone();
        let mig_prefixes = tags.migration_prefixes.clone();
        let allowed = tags.allowed_migrations.clone();
        for node in &mut nodes {
            let mut loc = tags.matching(&node.data.tags, &loc_prefixes);
            loc.sort_unstable();
            let mut mig = tags.matching(&node.data.tags, &mig_prefixes);
            mig.sort_unstable();
            let mut rmig = mig.clone();
            for (x, y) in &allowed {
                let y_id = tags.intern(y);
                if mig.contains(&y_id) {
                    let x_id = tags.intern(x);
                    if !rmig.contains(&x_id) {
                        rmig.push(x_id);
                    }
                }
            }
            rmig.sort_unstable();
            node.loc = loc;
            node.mig = mig;
            node.rmig = rmig;
        }
        let excl_prefixes = tags.exclusion_prefixes.clone();
        let dsrd_prefixes = tags.desired_location_prefixes.clone();
        for inst in &mut instances {
            inst.excl = tags.matching(&inst.tags, &excl_prefixes);
            inst.dsrd = tags.matching(&inst.tags, &dsrd_prefixes);
            let split = inst
                .snode
                .is_some_and(|s| nodes[s].data.group != nodes[inst.pnode].data.group);
            let drbd_without_secondary = inst.dt == DiskTemplate::Drbd && inst.snode.is_none();
            inst.movable = inst.dt.movable() && !split && !drbd_without_secondary;
            // `setLocationScore`.
            inst.loc_score = match (inst.dt, inst.snode) {
                (DiskTemplate::Drbd, Some(s)) => {
                    common_count(&nodes[inst.pnode].loc, &nodes[s].loc)
                }
                _ => 0,
            };
        }
        // `fixNodes`: register instances in index order.
        for (idx, inst) in instances.iter().enumerate() {
            let node = &mut nodes[inst.pnode];
            let ctx = node.primary_context(inst, inst.loc_score, true);
            let st = &mut node.state;
            st.n_pri += 1;
            if inst.not_offline() {
                st.u_cpu += inst.vcpus;
                st.u_cpu_f += inst.vcpus;
            }
            for k in 0..4 {
                st.load[k] += inst.util[k];
                st.load_f[k] += inst.util[k];
            }
            if inst.dt.local_storage() {
                st.inst_spindles += inst.spindle_use as f64;
                st.inst_spindles_f += inst.spindle_use as f64;
            }
            st.loc_score += ctx.inst_loc_score + ctx.unsatisfied_desired;
            st.pri_tags_score += ctx.tag_overlap;
            if !inst.uses_memory() {
                st.f_mem_f -= inst.mem;
            }
            node.plist.push(idx);
            for &t in &inst.excl {
                multiset_add(&mut node.p_tags, t);
                let locs = node.loc.clone();
                for l in locs {
                    multiset_add(&mut node.imap, (l, t));
                }
            }
            if let Some(s) = inst.snode {
                let snode = &mut nodes[s];
                snode.state.n_sec += 1;
                snode.state.load[DSK] += inst.util[DSK];
                snode.state.load_f[DSK] += inst.util[DSK];
                if inst.dt.local_storage() {
                    snode.state.inst_spindles += inst.spindle_use as f64;
                    snode.state.inst_spindles_f += inst.spindle_use as f64;
                }
                snode.slist.push(idx);
                let need = if inst.uses_sec_mem() { inst.mem } else { 0 };
                match snode.peers.iter_mut().find(|(p, _)| *p == inst.pnode) {
                    Some((_, m)) => *m += need,
                    None => snode.peers.push((inst.pnode, need)),
                }
            }
        }
        // `buildPeers` (peers, N+1) and `setNodePolicy`; then `updateMissing`'s memory
        // bookkeeping.
        for node in &mut nodes {
            let policy = groups[node.data.group].effective_ipolicy();
            let mut i_mem = 0;
            for &i in &node.plist {
                if instances[i].uses_memory() {
                    i_mem += instances[i].mem;
                }
            }
            let st = &mut node.state;
            st.r_mem = node.peers.iter().map(|(_, m)| *m).max().unwrap_or(0);
            st.p_rem = ratio(st.r_mem as f64, st.t_mem);
            st.fail_n1 = st.f_mem < st.r_mem;
            st.vcpu_ratio = policy.vcpu_ratio;
            st.hi_spindles = policy.spindle_ratio * node.data.spindles as f64;
            st.p_mem_f = ratio(st.f_mem_f as f64, st.t_mem);
            st.p_cpu = ratio(st.u_cpu as f64, st.t_cpu);
            st.p_cpu_f = ratio(st.u_cpu_f as f64, st.t_cpu);
            st.i_mem = i_mem;
            st.x_mem = (st.t_mem.floor() as i64 - st.n_mem - i_mem) - st.f_mem;
            st.p_mem = ratio(st.unalloc() as f64, st.t_mem);
        }
        Ok(Cluster {
            groups,
            nodes,
            instances,
            cluster_tags,
            cluster_ipolicy,
            tags,
        })
    }

    /// Index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.data.name == name)
    }

    /// Index of the instance called `name`.
    pub fn instance_index(&self, name: &str) -> Option<usize> {
        self.instances.iter().position(|i| i.name == name)
    }

    /// Index of the group called `name`.
    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.name == name)
    }

    /// Nodes of group `group`, ascending index.
    pub fn group_nodes(&self, group: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| self.nodes[n].data.group == group)
            .collect()
    }

    /// The location score an instance would have with primary `p` and secondary `s`.
    pub fn location_score(&self, inst: &Instance, p: usize, s: Option<usize>) -> i64 {
        match (inst.dt, s) {
            (DiskTemplate::Drbd, Some(s)) => common_count(&self.nodes[p].loc, &self.nodes[s].loc),
            _ => 0,
        }
    }

    /// Whether a migration/failover from `from` to `to` is allowed by migration tags.
    pub fn migration_allowed(&self, from: usize, to: usize) -> bool {
        let rmig = &self.nodes[to].rmig;
        self.nodes[from]
            .mig
            .iter()
            .all(|t| rmig.binary_search(t).is_ok())
    }

    /// Simulates move `mv` of instance `idx` (`applyMoveEx`) with soft checks off when
    /// `force`; `fP`/`fS` (an offline old node forces its side) are applied here. The
    /// cluster is not changed; the targets are not checked for being online (callers
    /// choose them).
    pub fn simulate_move(
        &self,
        idx: usize,
        mv: Move,
        force: bool,
    ) -> Result<MoveOutcome, FailMode> {
        let inst = &self.instances[idx];
        let p = inst.pnode;
        let f_p = self.nodes[p].offline() || force;
        let mut scratch = Scratch {
            cluster: self,
            nodes: Vec::with_capacity(3),
        };
        let (np, ns, loc_score) = match mv {
            Move::Failover => {
                let s = inst.snode.ok_or(FailMode::FailDisk)?;
                if !self.migration_allowed(p, s) {
                    return Err(FailMode::FailMig);
                }
                scratch.node(s).remove_secondary(idx, inst);
                scratch.node(s).add_primary(idx, inst, f_p)?;
                let offline_p = self.nodes[p].offline();
                scratch.node(p).remove_primary(idx, inst);
                scratch
                    .node(p)
                    .add_secondary(idx, inst, s, f_p, offline_p)?;
                (s, Some(p), inst.loc_score)
            }
            Move::FailoverToAny(t) => {
                if !self.migration_allowed(p, t) {
                    return Err(FailMode::FailMig);
                }
                scratch.node(t).add_primary(idx, inst, f_p)?;
                scratch.node(p).remove_primary(idx, inst);
                (t, inst.snode, inst.loc_score)
            }
            Move::ReplaceSecondary(t) => {
                let s = inst.snode.ok_or(FailMode::FailDisk)?;
                let f_s = self.nodes[s].offline() || force;
                let new = self.moved(inst, p, Some(t));
                scratch.node(t).add_secondary(idx, &new, p, f_s, false)?;
                scratch.node(p).remove_primary(idx, inst);
                scratch.node(p).add_primary(idx, &new, true)?;
                scratch.node(s).remove_secondary(idx, inst);
                (p, Some(t), new.loc_score)
            }
            Move::ReplacePrimary(t) => {
                let s = inst.snode.ok_or(FailMode::FailDisk)?;
                let new = self.moved(inst, t, Some(s));
                if !self.migration_allowed(p, s) || !self.migration_allowed(s, t) {
                    return Err(FailMode::FailMig);
                }
                scratch.node(s).remove_secondary(idx, inst);
                scratch.node(s).add_primary(idx, &new, f_p)?;
                scratch.node(s).remove_primary(idx, &new);
                scratch.node(t).add_primary(idx, &new, f_p)?;
                scratch.node(s).add_secondary(idx, &new, t, f_p, false)?;
                scratch.node(p).remove_primary(idx, inst);
                (t, Some(s), new.loc_score)
            }
            Move::ReplaceAndFailover(t) => {
                let s = inst.snode.ok_or(FailMode::FailDisk)?;
                let f_s = self.nodes[s].offline() || force;
                let new = self.moved(inst, t, Some(p));
                if !self.migration_allowed(p, t) {
                    return Err(FailMode::FailMig);
                }
                scratch.node(t).add_primary(idx, &new, force)?;
                scratch.node(p).remove_primary(idx, inst);
                scratch.node(p).add_secondary(idx, &new, t, f_s, false)?;
                scratch.node(s).remove_secondary(idx, inst);
                (t, Some(p), new.loc_score)
            }
            Move::FailoverAndReplace(t) => {
                let s = inst.snode.ok_or(FailMode::FailDisk)?;
                let new = self.moved(inst, s, Some(t));
                if !self.migration_allowed(p, s) {
                    return Err(FailMode::FailMig);
                }
                scratch.node(s).remove_secondary(idx, inst);
                scratch.node(s).add_primary(idx, &new, f_p)?;
                scratch.node(t).add_secondary(idx, &new, s, f_p, false)?;
                scratch.node(p).remove_primary(idx, inst);
                (s, Some(t), new.loc_score)
            }
        };
        Ok(MoveOutcome {
            instance: idx,
            mv,
            pnode: np,
            snode: ns,
            loc_score,
            nodes: scratch.nodes,
        })
    }

    /// The instance value with new nodes and the matching location score, as the adds of
    /// the non-failover moves see it.
    fn moved(&self, inst: &Instance, p: usize, s: Option<usize>) -> Instance {
        let mut new = inst.clone();
        new.pnode = p;
        new.snode = s;
        new.loc_score = self.location_score(inst, p, s);
        new
    }

    /// Applies a simulated move.
    pub fn apply_move(&mut self, outcome: MoveOutcome) {
        let inst = &mut self.instances[outcome.instance];
        inst.pnode = outcome.pnode;
        inst.snode = outcome.snode;
        inst.loc_score = outcome.loc_score;
        for (idx, node) in outcome.nodes {
            self.nodes[idx] = node;
        }
    }

    /// Simulates and applies a move in one go; the cluster is unchanged on failure.
    pub fn try_move(&mut self, idx: usize, mv: Move, force: bool) -> Result<(), FailMode> {
        let outcome = self.simulate_move(idx, mv, force)?;
        self.apply_move(outcome);
        Ok(())
    }
}

/// Number of common elements of two sorted id lists.
fn common_count(a: &[u32], b: &[u32]) -> i64 {
    a.iter().filter(|x| b.binary_search(x).is_ok()).count() as i64
}

#[cfg(test)]
mod tests;
