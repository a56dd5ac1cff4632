//! Synthetic Ganeti clusters, for the htools parity tests and for experiments with the
//! planner.
//!
//! A [`Spec`] (counts, groups, disk-template mix, failed nodes, tags, seed) becomes a
//! [`Generated`] cluster. [`Generated::text`] renders it in the htools text format with
//! [`text::write`], the input of `hbal -t FILE` and of `maintd plan --text FILE`;
//! [`Generated::evacuation_request`] renders a hail `node-evacuate` request (iallocator
//! JSON) over the very same data, for `hail -t FILE REQUEST`. Every random choice comes
//! from one `StdRng` seeded with [`Spec::seed`], drawn in a fixed order, so a spec always
//! gives the same bytes (for a given major version of the `rand` crate): a spec *is* the
//! reproduction of a cluster. [`Spec::from_args`]
//! and [`Spec::args`] spell a spec as command-line flags (`cargo run --example
//! gen_cluster -- --help`).
//!
//! # What the clusters look like
//!
//! - Hardware: each node is drawn from [`NODE_CLASSES`]. Nodes are split into the groups
//!   in contiguous runs of names; `node-0001` is the master.
//! - Load: every node gets a popularity from a Pareto distribution of shape
//!   [`Spec::skew`], except a fraction ([`Spec::empty_fraction`]) of new, empty nodes
//!   (never the master). Each instance picks a group uniformly, then its primary by
//!   popularity and, for DRBD, its secondary among the other nodes of the group by the
//!   square root of popularity. The resulting unevenness is what a balancer has to
//!   repair.
//! - Room: a running instance needs its memory on the primary plus
//!   [`Spec::mem_headroom`]; `plain` and `drbd` disks need space on every node they use;
//!   vCPUs stay within [`Spec::max_vcpu_ratio`] per CPU. An instance that finds no room
//!   in a few draws is left out and counted ([`Generated::skipped`]). Redundancy (N+1) is
//!   not sought, so crowded clusters start with N+1 failures, like neglected real ones.
//! - Reported resources: free memory is total minus the node's own memory minus the
//!   running primaries, minus a per-node amount of unaccounted memory drawn up to
//!   [`Spec::mem_noise`] (htools' `x_mem`); free disk is total minus the LVM disks of the
//!   node's primaries and secondaries.
//! - Failed nodes: after placement, so that they carry instances, [`Spec::offline`] and
//!   [`Spec::drained`] non-master nodes are taken out. An offline node is written as
//!   Ganeti reports it, without runtime data (zeros); a drained one keeps its data. The
//!   text format marks both `Y`; the request tells them apart.
//! - Tags: with [`Spec::exclusion_tags`], one instance in eight carries a `service:svcNNN`
//!   tag (one service per 25 instances) and the cluster tag `htools:iextags:service`
//!   makes them exclusion tags; with [`Spec::location_tags`], nodes carry `rack:rNN` by
//!   runs of [`Spec::rack_size`] and the cluster tag `htools:nlocation:rack`.

use std::fmt;

use rand::rngs::StdRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use serde::{Serialize, Serializer};
use serde_json::{json, Value};

use super::evacuate::EvacMode;
use super::model::{
    AllocPolicy, Cluster, DiskTemplate, Group, IPolicy, ISpec, Instance, InstanceStatus, NodeData,
};
use super::text;

/// The largest node count a spec may ask for.
pub const MAX_NODES: usize = 100_000;

/// The largest instance count a spec may ask for.
pub const MAX_INSTANCES: usize = 1_000_000;

/// How many times an instance draws nodes before it is left out.
const PLACEMENT_DRAWS: usize = 20;

/// The share of instances that are administratively down.
const DOWN_SHARE: f64 = 0.05;

/// The share of instances that carry a service (exclusion) tag.
const SERVICE_TAG_SHARE: f64 = 0.125;

/// Instances per service name.
const INSTANCES_PER_SERVICE: usize = 25;

/// The cap of a node's popularity, which keeps a tiny Pareto shape finite.
const MAX_POPULARITY: f64 = 1e6;

/// A node hardware model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeClass {
    /// Short name.
    pub name: &'static str,
    /// Relative frequency among the nodes.
    pub weight: f64,
    /// Total memory, MiB.
    pub memory: i64,
    /// Memory used by the node itself, MiB.
    pub node_memory: i64,
    /// Physical CPUs.
    pub cpus: i64,
    /// Total LVM disk, MiB.
    pub disk: i64,
    /// Spindles.
    pub spindles: i64,
}

/// The node hardware the generator draws from.
pub const NODE_CLASSES: [NodeClass; 3] = [
    NodeClass {
        name: "small",
        weight: 3.0,
        memory: 128 << 10,
        node_memory: 4 << 10,
        cpus: 16,
        disk: 4 << 20,
        spindles: 8,
    },
    NodeClass {
        name: "medium",
        weight: 5.0,
        memory: 256 << 10,
        node_memory: 6 << 10,
        cpus: 32,
        disk: 8 << 20,
        spindles: 12,
    },
    NodeClass {
        name: "large",
        weight: 2.0,
        memory: 512 << 10,
        node_memory: 8 << 10,
        cpus: 64,
        disk: 16 << 20,
        spindles: 24,
    },
];

/// Instance sizes: (relative frequency, memory MiB, vCPUs). An instance with disks gets
/// one disk of ten times its memory.
const INSTANCE_SIZES: [(f64, i64, i64); 6] = [
    (20.0, 1 << 10, 1),
    (30.0, 2 << 10, 1),
    (25.0, 4 << 10, 2),
    (15.0, 8 << 10, 4),
    (7.0, 16 << 10, 8),
    (3.0, 32 << 10, 8),
];

/// The disk templates a spec may mix.
const TEMPLATES: [DiskTemplate; 4] = [
    DiskTemplate::Drbd,
    DiskTemplate::Plain,
    DiskTemplate::Diskless,
    DiskTemplate::File,
];

/// The mix of [`Spec::new`].
const DEFAULT_MIX: [(DiskTemplate, f64); 3] = [
    (DiskTemplate::Drbd, 0.6),
    (DiskTemplate::Plain, 0.25),
    (DiskTemplate::Diskless, 0.15),
];

/// Why a cluster cannot be generated or a request written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenError {
    /// A command-line argument is unknown, lacks its value or has a malformed one.
    #[error("bad argument: {0}")]
    Argument(String),
    /// The spec asks for something no cluster satisfies.
    #[error("impossible cluster: {0}")]
    Impossible(String),
    /// An evacuation request names a node the cluster does not have (or none).
    #[error("bad evacuation request: {0}")]
    Request(String),
    /// The generated parts do not form a cluster (a bug of the generator).
    #[error("generated cluster is inconsistent: {0}")]
    Model(String),
}

/// The parameters of one generated cluster. Build it with [`Spec::new`] and adjust the
/// public fields, or read it from flags with [`Spec::from_args`].
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Node count (`--nodes`), at least two per group.
    pub nodes: usize,
    /// Instances to place (`--instances`); some may be left out, see [`Generated::skipped`].
    pub instances: usize,
    /// Node groups (`--groups`): `default` for one, else `group-01`, `group-02`, ...
    pub groups: usize,
    /// Seed of the random generator (`--seed`).
    pub seed: u64,
    /// Relative weights of the disk templates (`--mix drbd=0.6,plain=0.4`): `drbd`,
    /// `plain`, `diskless` and `file`.
    pub mix: Vec<(DiskTemplate, f64)>,
    /// Nodes taken offline after placement (`--offline`).
    pub offline: usize,
    /// Nodes drained after placement (`--drained`).
    pub drained: usize,
    /// Share of nodes left empty, between 0 and 1 (`--empty-fraction`).
    pub empty_fraction: f64,
    /// Pareto shape of node popularity; smaller is more uneven (`--skew`).
    pub skew: f64,
    /// Free memory, MiB, a primary keeps beyond a running instance (`--mem-headroom`).
    pub mem_headroom: u32,
    /// Most vCPUs placed per physical CPU (`--max-vcpu-ratio`).
    pub max_vcpu_ratio: f64,
    /// Service tags on instances and the exclusion cluster tag (off with
    /// `--no-exclusion-tags`).
    pub exclusion_tags: bool,
    /// Rack tags on nodes and the location cluster tag (`--location-tags`).
    pub location_tags: bool,
    /// Nodes per rack (`--rack-size`).
    pub rack_size: usize,
    /// Most unaccounted memory, MiB, per node (`--mem-noise`).
    pub mem_noise: u32,
}

impl Spec {
    /// A single-group cluster of `nodes` nodes and `instances` instances, with every other
    /// parameter at its default.
    pub fn new(nodes: usize, instances: usize, seed: u64) -> Spec {
        Spec {
            nodes,
            instances,
            groups: 1,
            seed,
            mix: DEFAULT_MIX.to_vec(),
            offline: 0,
            drained: 0,
            empty_fraction: 0.1,
            skew: 1.5,
            mem_headroom: 2048,
            max_vcpu_ratio: 3.5,
            exclusion_tags: true,
            location_tags: false,
            rack_size: 4,
            mem_noise: 0,
        }
    }

    /// Reads a spec from command-line flags (`--flag value` or `--flag=value`); every flag
    /// not given keeps the default of `Spec::new(20, 200, 42)`.
    pub fn from_args<I, S>(args: I) -> Result<Spec, GenError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut spec = Spec::new(20, 200, 42);
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let arg = arg.as_ref();
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
                _ => (arg, None),
            };
            match flag {
                "--location-tags" | "--no-exclusion-tags" => {
                    if inline.is_some() {
                        return Err(GenError::Argument(format!("{flag} takes no value")));
                    }
                    if flag == "--location-tags" {
                        spec.location_tags = true;
                    } else {
                        spec.exclusion_tags = false;
                    }
                    continue;
                }
                _ => {}
            }
            let value = match inline {
                Some(value) => value,
                None => args
                    .next()
                    .map(|v| v.as_ref().to_owned())
                    .ok_or_else(|| GenError::Argument(format!("{flag} needs a value")))?,
            };
            match flag {
                "--nodes" => spec.nodes = number(flag, &value)?,
                "--instances" => spec.instances = number(flag, &value)?,
                "--groups" => spec.groups = number(flag, &value)?,
                "--seed" => spec.seed = number(flag, &value)?,
                "--mix" => spec.mix = parse_mix(&value)?,
                "--offline" => spec.offline = number(flag, &value)?,
                "--drained" => spec.drained = number(flag, &value)?,
                "--empty-fraction" => spec.empty_fraction = number(flag, &value)?,
                "--skew" => spec.skew = number(flag, &value)?,
                "--mem-headroom" => spec.mem_headroom = number(flag, &value)?,
                "--max-vcpu-ratio" => spec.max_vcpu_ratio = number(flag, &value)?,
                "--rack-size" => spec.rack_size = number(flag, &value)?,
                "--mem-noise" => spec.mem_noise = number(flag, &value)?,
                other => return Err(GenError::Argument(format!("unknown flag {other:?}"))),
            }
        }
        Ok(spec)
    }

    /// The flags that [`Spec::from_args`] reads back into this spec: the counts and the
    /// seed always, every other parameter when it differs from its default.
    pub fn args(&self) -> Vec<String> {
        let defaults = Spec::new(self.nodes, self.instances, self.seed);
        let mut args: Vec<String> = Vec::new();
        let mut push = |words: &[&str]| args.extend(words.iter().map(|w| w.to_string()));
        push(&["--nodes", &self.nodes.to_string()]);
        push(&["--instances", &self.instances.to_string()]);
        push(&["--seed", &self.seed.to_string()]);
        if self.mix != defaults.mix {
            push(&["--mix", &mix_text(&self.mix)]);
        }
        if self.groups != defaults.groups {
            push(&["--groups", &self.groups.to_string()]);
        }
        if self.offline != defaults.offline {
            push(&["--offline", &self.offline.to_string()]);
        }
        if self.drained != defaults.drained {
            push(&["--drained", &self.drained.to_string()]);
        }
        if self.location_tags {
            push(&["--location-tags"]);
        }
        if !self.exclusion_tags {
            push(&["--no-exclusion-tags"]);
        }
        if self.mem_noise != defaults.mem_noise {
            push(&["--mem-noise", &self.mem_noise.to_string()]);
        }
        if self.empty_fraction != defaults.empty_fraction {
            push(&["--empty-fraction", &self.empty_fraction.to_string()]);
        }
        if self.skew != defaults.skew {
            push(&["--skew", &self.skew.to_string()]);
        }
        if self.mem_headroom != defaults.mem_headroom {
            push(&["--mem-headroom", &self.mem_headroom.to_string()]);
        }
        if self.max_vcpu_ratio != defaults.max_vcpu_ratio {
            push(&["--max-vcpu-ratio", &self.max_vcpu_ratio.to_string()]);
        }
        if self.rack_size != defaults.rack_size {
            push(&["--rack-size", &self.rack_size.to_string()]);
        }
        args
    }

    /// Whether some cluster satisfies the spec; the error says what is impossible.
    pub fn check(&self) -> Result<(), GenError> {
        let impossible = |what: String| Err(GenError::Impossible(what));
        if self.nodes > MAX_NODES || self.instances > MAX_INSTANCES {
            return impossible(format!(
                "at most {MAX_NODES} nodes and {MAX_INSTANCES} instances"
            ));
        }
        if self.groups == 0 {
            return impossible("at least one group".into());
        }
        if self.nodes < 2 * self.groups {
            return impossible(format!(
                "{} nodes cannot give {} groups two nodes each",
                self.nodes, self.groups
            ));
        }
        if self.offline.saturating_add(self.drained) >= self.nodes {
            return impossible(format!(
                "{} offline and {} drained nodes among {} (the master stays)",
                self.offline, self.drained, self.nodes
            ));
        }
        if self.mix.is_empty() {
            return impossible("an empty disk-template mix".into());
        }
        if let Some((template, _)) = self.mix.iter().find(|(t, _)| !TEMPLATES.contains(t)) {
            return impossible(format!(
                "disk template {} is not generated",
                template.name()
            ));
        }
        if self.mix.iter().any(|(_, w)| !w.is_finite() || *w < 0.0)
            || self.mix.iter().map(|(_, w)| w).sum::<f64>() <= 0.0
        {
            return impossible("mix weights must be finite, non-negative and not all 0".into());
        }
        if !(0.0..=1.0).contains(&self.empty_fraction) {
            return impossible(format!(
                "empty fraction {} is not between 0 and 1",
                self.empty_fraction
            ));
        }
        if !(self.skew.is_finite() && self.skew > 0.0) {
            return impossible(format!("skew {} is not positive", self.skew));
        }
        if !(self.max_vcpu_ratio.is_finite() && self.max_vcpu_ratio > 0.0) {
            return impossible(format!(
                "vCPU ratio {} is not positive",
                self.max_vcpu_ratio
            ));
        }
        if self.rack_size == 0 {
            return impossible("racks of no node".into());
        }
        Ok(())
    }

    /// Generates the cluster.
    pub fn generate(&self) -> Result<Generated, GenError> {
        self.check()?;
        Builder::new(self).build()
    }
}

impl fmt::Display for Spec {
    /// The flags of [`Spec::args`], space-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.args().join(" "))
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, GenError> {
    value
        .parse()
        .map_err(|_| GenError::Argument(format!("{flag}: malformed value {value:?}")))
}

/// Reads `drbd=0.6,plain=0.4`; a template without `=weight` weighs 1.
fn parse_mix(text: &str) -> Result<Vec<(DiskTemplate, f64)>, GenError> {
    text.split(',')
        .map(|part| {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let template = DiskTemplate::parse(name.trim())
                .filter(|t| TEMPLATES.contains(t))
                .ok_or_else(|| {
                    GenError::Argument(format!(
                        "--mix: {name:?} is none of drbd, plain, diskless, file"
                    ))
                })?;
            Ok((template, number("--mix", weight.trim())?))
        })
        .collect()
}

fn mix_text(mix: &[(DiskTemplate, f64)]) -> String {
    mix.iter()
        .map(|(t, w)| format!("{}={w}", t.name()))
        .collect::<Vec<_>>()
        .join(",")
}

/// What a node is to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// The master node (`node-0001`).
    Master,
    /// An ordinary online node.
    Regular,
    /// Offline: no runtime data is reported.
    Offline,
    /// Drained: online with its data, but takes no instances.
    Drained,
}

/// A node group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenGroup {
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: String,
}

/// A generated node: its hardware and what its instances use.
#[derive(Debug, Clone, PartialEq)]
pub struct GenNode {
    /// Name (`node-0001`, ...).
    pub name: String,
    /// The hardware model.
    pub class: NodeClass,
    /// Index of the node's group.
    pub group: usize,
    /// Master, regular, offline or drained.
    pub role: NodeRole,
    /// Node tags.
    pub tags: Vec<String>,
    /// Memory of the running primaries, MiB.
    pub instance_memory: i64,
    /// LVM disk of the `plain`/`drbd` instances using the node, MiB.
    pub instance_disk: i64,
    /// vCPUs of the primaries.
    pub instance_vcpus: i64,
    /// Memory used by nothing htools knows of, MiB.
    pub unaccounted_memory: i64,
}

impl GenNode {
    /// Whether Ganeti reports runtime data (memory, disk, CPUs) for the node.
    pub fn reports_resources(&self) -> bool {
        self.role != NodeRole::Offline
    }

    /// Free memory as reported, MiB.
    pub fn free_memory(&self) -> i64 {
        self.class.memory - self.class.node_memory - self.instance_memory - self.unaccounted_memory
    }

    /// Free disk as reported, MiB.
    pub fn free_disk(&self) -> i64 {
        self.class.disk - self.instance_disk
    }
}

/// A generated instance.
#[derive(Debug, Clone, PartialEq)]
pub struct GenInstance {
    /// Name (`inst-00001`, ...).
    pub name: String,
    /// Memory, MiB.
    pub memory: i64,
    /// Disk, MiB (0 for `diskless`).
    pub disk: i64,
    /// vCPUs.
    pub vcpus: i64,
    /// `running`, else `ADMIN_down`.
    pub running: bool,
    /// Disk template.
    pub template: DiskTemplate,
    /// Index of the primary node.
    pub primary: usize,
    /// Index of the secondary node (DRBD only).
    pub secondary: Option<usize>,
    /// Instance tags.
    pub tags: Vec<String>,
}

/// A generated cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The spec it was generated from.
    pub spec: Spec,
    /// Groups, in index order.
    pub groups: Vec<GenGroup>,
    /// Nodes, in index order.
    pub nodes: Vec<GenNode>,
    /// Instances, in index order.
    pub instances: Vec<GenInstance>,
    /// Cluster tags.
    pub cluster_tags: Vec<String>,
    /// Instances of the spec that found no room and were left out.
    pub skipped: usize,
}

/// The instance policy of every generated cluster and group.
pub fn policy() -> IPolicy {
    let spec = |memory, cpus, disk_size, disk_count, nic_count, spindle_use| ISpec {
        memory,
        cpus,
        disk_size,
        disk_count,
        nic_count,
        spindle_use,
    };
    IPolicy {
        std: spec(1024, 1, 10240, 1, 1, 1),
        minmax: vec![(
            spec(128, 1, 1024, 1, 1, 1),
            spec(65536, 16, 1 << 20, 16, 8, 12),
        )],
        disk_templates: TEMPLATES.to_vec(),
        vcpu_ratio: 4.0,
        spindle_ratio: 32.0,
    }
}

impl Generated {
    /// Index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The cluster as htools loads it.
    pub fn cluster(&self) -> Result<Cluster, GenError> {
        let groups = self
            .groups
            .iter()
            .map(|g| Group {
                name: g.name.clone(),
                uuid: g.uuid.clone(),
                alloc_policy: AllocPolicy::Preferred,
                tags: Vec::new(),
                networks: Vec::new(),
                ipolicy: Some(policy()),
            })
            .collect();
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                let live = n.reports_resources();
                let value = |v: i64| if live { v } else { 0 };
                NodeData {
                    name: n.name.clone(),
                    t_mem: value(n.class.memory) as f64,
                    n_mem: value(n.class.node_memory),
                    f_mem: value(n.free_memory()),
                    t_dsk: value(n.class.disk) as f64,
                    f_dsk: value(n.free_disk()),
                    t_cpu: value(n.class.cpus) as f64,
                    offline: matches!(n.role, NodeRole::Offline | NodeRole::Drained),
                    master: n.role == NodeRole::Master,
                    group: n.group,
                    spindles: n.class.spindles,
                    tags: n.tags.clone(),
                    excl_storage: false,
                    free_spindles: 0,
                    n_cpu: value(1),
                    cpu_speed: 1.0,
                }
            })
            .collect();
        let instances = self
            .instances
            .iter()
            .map(|i| Instance {
                name: i.name.clone(),
                mem: i.memory,
                dsk: i.disk,
                vcpus: i.vcpus,
                status: if i.running {
                    InstanceStatus::Running
                } else {
                    InstanceStatus::AdminDown
                },
                auto_balance: true,
                pnode: i.primary,
                snode: i.secondary,
                dt: i.template,
                tags: i.tags.clone(),
                spindle_use: 1,
                spindles: None,
                forthcoming: false,
                util: [1.0; 4],
                movable: false,
                excl: Vec::new(),
                dsrd: Vec::new(),
                loc_score: 0,
            })
            .collect();
        Cluster::new(
            groups,
            nodes,
            instances,
            self.cluster_tags.clone(),
            Some(policy()),
        )
        .map_err(|e| GenError::Model(e.to_string()))
    }

    /// The cluster in the htools text format.
    pub fn text(&self) -> Result<String, GenError> {
        Ok(text::write(&self.cluster()?))
    }

    /// The instances a `node-evacuate` of the nodes `nodes` (indices) in `mode` lists, in
    /// index order: those with their primary on one of the nodes (modes primary-only and
    /// all) or their secondary (modes secondary-only and all).
    pub fn evacuated_instances(&self, nodes: &[usize], mode: EvacMode) -> Vec<usize> {
        let primaries = mode != EvacMode::SecondaryOnly;
        let secondaries = mode != EvacMode::PrimaryOnly;
        self.instances
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                (primaries && nodes.contains(&i.primary))
                    || (secondaries && i.secondary.is_some_and(|s| nodes.contains(&s)))
            })
            .map(|(index, _)| index)
            .collect()
    }

    /// A hail `node-evacuate` request of the nodes called `nodes` in `mode`, with this
    /// cluster's data. Groups, nodes and instances appear in index order, because hail
    /// run as `hail -t FILE REQUEST` reads the data from FILE but resolves the requested
    /// instances by their position in the request.
    pub fn evacuation_request<S: AsRef<str>>(
        &self,
        nodes: &[S],
        mode: EvacMode,
    ) -> Result<String, GenError> {
        if nodes.is_empty() {
            return Err(GenError::Request("no node to evacuate".into()));
        }
        let indices = nodes
            .iter()
            .map(|name| {
                let name = name.as_ref();
                self.node_index(name)
                    .ok_or_else(|| GenError::Request(format!("unknown node {name:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let selected: Vec<&str> = self
            .evacuated_instances(&indices, mode)
            .into_iter()
            .map(|i| self.instances[i].name.as_str())
            .collect();
        let ipolicy = ipolicy_json(&policy());
        let groups = self
            .groups
            .iter()
            .map(|g| {
                let group = json!({
                    "name": g.name,
                    "alloc_policy": "preferred",
                    "networks": [],
                    "ipolicy": ipolicy,
                    "tags": [],
                });
                (g.uuid.clone(), Json::Value(group))
            })
            .collect();
        let node_objects = self
            .nodes
            .iter()
            .map(|n| {
                let mut node = json!({
                    "offline": n.role == NodeRole::Offline,
                    "drained": n.role == NodeRole::Drained,
                    "vm_capable": true,
                    "group": self.groups[n.group].uuid,
                    "tags": n.tags,
                    "ndparams": {
                        "exclusive_storage": false,
                        "spindle_count": n.class.spindles,
                    },
                });
                if n.reports_resources() {
                    let runtime = json!({
                        "total_memory": n.class.memory,
                        "reserved_memory": n.class.node_memory,
                        "free_memory": n.free_memory(),
                        "total_disk": n.class.disk,
                        "free_disk": n.free_disk(),
                        "total_cpus": n.class.cpus,
                        "reserved_cpus": 1,
                        "total_spindles": n.class.spindles,
                        "free_spindles": 0,
                    });
                    if let (Some(node), Value::Object(runtime)) = (node.as_object_mut(), runtime) {
                        node.extend(runtime);
                    }
                }
                (n.name.clone(), Json::Value(node))
            })
            .collect();
        let instance_objects = self
            .instances
            .iter()
            .map(|i| {
                let nodes: Vec<&str> = std::iter::once(i.primary)
                    .chain(i.secondary)
                    .map(|n| self.nodes[n].name.as_str())
                    .collect();
                let instance = json!({
                    "disk_space_total": i.disk,
                    "disks": [{"size": i.disk, "mode": "rw"}],
                    "memory": i.memory,
                    "vcpus": i.vcpus,
                    "tags": i.tags,
                    "disk_template": i.template.name(),
                    "spindle_use": 1,
                    "nics": [],
                    "admin_state": if i.running { "up" } else { "down" },
                    "nodes": nodes,
                });
                (i.name.clone(), Json::Value(instance))
            })
            .collect();
        let request = Json::Object(vec![
            ("version".into(), Json::Value(json!(2))),
            (
                "cluster_name".into(),
                Json::Value(json!("cluster.example.com")),
            ),
            ("cluster_tags".into(), Json::Value(json!(self.cluster_tags))),
            (
                "enabled_hypervisors".into(),
                Json::Value(json!(["xen-pvm"])),
            ),
            ("ipolicy".into(), Json::Value(ipolicy)),
            ("nodegroups".into(), Json::Object(groups)),
            ("nodes".into(), Json::Object(node_objects)),
            ("instances".into(), Json::Object(instance_objects)),
            (
                "request".into(),
                Json::Value(json!({
                    "type": "node-evacuate",
                    "instances": selected,
                    "evac_mode": mode.name(),
                })),
            ),
        ]);
        let mut out =
            serde_json::to_string(&request).map_err(|e| GenError::Model(e.to_string()))?;
        out.push('\n');
        Ok(out)
    }
}

/// A JSON value whose objects keep the order they are built in (`serde_json::Value`
/// sorts its keys unless the `preserve_order` feature is on).
enum Json {
    Value(Value),
    Object(Vec<(String, Json)>),
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Value(value) => value.serialize(serializer),
            Json::Object(pairs) => serializer.collect_map(pairs.iter().map(|(k, v)| (k, v))),
        }
    }
}

/// An instance policy in the iallocator's spelling.
fn ipolicy_json(p: &IPolicy) -> Value {
    let spec = |s: &ISpec| {
        json!({
            "memory-size": s.memory,
            "cpu-count": s.cpus,
            "disk-size": s.disk_size,
            "disk-count": s.disk_count,
            "nic-count": s.nic_count,
            "spindle-use": s.spindle_use,
        })
    };
    let minmax: Vec<Value> = p
        .minmax
        .iter()
        .map(|(min, max)| json!({"min": spec(min), "max": spec(max)}))
        .collect();
    let templates: Vec<&str> = p.disk_templates.iter().map(|t| t.name()).collect();
    json!({
        "minmax": minmax,
        "std": spec(&p.std),
        "disk-templates": templates,
        "vcpu-ratio": p.vcpu_ratio,
        "spindle-ratio": p.spindle_ratio,
    })
}

/// An index drawn with probability proportional to its weight; uniform when the weights
/// do not add up to a positive finite total. `weights` must not be empty.
fn draw_weighted(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return rng.gen_range(0..weights.len());
    }
    let mut x = rng.gen::<f64>() * total;
    for (index, weight) in weights.iter().enumerate() {
        if x < *weight {
            return index;
        }
        x -= weight;
    }
    weights.len() - 1
}

/// A random UUID-shaped string.
fn uuid(rng: &mut StdRng) -> String {
    let hex = format!("{:032x}", rng.gen::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The state of one generation.
struct Builder<'a> {
    spec: &'a Spec,
    rng: StdRng,
    nodes: Vec<GenNode>,
    /// Each node's popularity: how often it is drawn as a primary.
    popularity: Vec<f64>,
}

impl<'a> Builder<'a> {
    fn new(spec: &'a Spec) -> Builder<'a> {
        Builder {
            spec,
            rng: StdRng::seed_from_u64(spec.seed),
            nodes: Vec::new(),
            popularity: Vec::new(),
        }
    }

    fn build(mut self) -> Result<Generated, GenError> {
        let spec = self.spec;
        let groups: Vec<GenGroup> = (0..spec.groups)
            .map(|g| GenGroup {
                name: if spec.groups == 1 {
                    "default".to_owned()
                } else {
                    format!("group-{:02}", g + 1)
                },
                uuid: uuid(&mut self.rng),
            })
            .collect();
        self.make_nodes();
        let members: Vec<Vec<usize>> = (0..spec.groups)
            .map(|g| {
                (0..spec.nodes)
                    .filter(|&n| self.nodes[n].group == g)
                    .collect()
            })
            .collect();
        if let Some(g) = members.iter().position(|m| m.len() < 2) {
            return Err(GenError::Impossible(format!(
                "group {} has fewer than two nodes",
                groups[g].name
            )));
        }
        let services = if spec.exclusion_tags {
            spec.instances / INSTANCES_PER_SERVICE
        } else {
            0
        };
        let mut instances = Vec::with_capacity(spec.instances);
        let mut skipped = 0;
        for number in 1..=spec.instances {
            match self.place_instance(number, services, &members) {
                Some(instance) => instances.push(instance),
                None => skipped += 1,
            }
        }
        self.fail_nodes();
        if spec.mem_noise > 0 {
            for node in &mut self.nodes {
                let noise = self.rng.gen_range(0..=i64::from(spec.mem_noise));
                node.unaccounted_memory = noise.min(node.free_memory().max(0));
            }
        }
        let mut cluster_tags = Vec::new();
        if spec.exclusion_tags {
            cluster_tags.push("htools:iextags:service".to_owned());
        }
        if spec.location_tags {
            cluster_tags.push("htools:nlocation:rack".to_owned());
        }
        Ok(Generated {
            spec: spec.clone(),
            groups,
            nodes: self.nodes,
            instances,
            cluster_tags,
            skipped,
        })
    }

    /// Draws the nodes' hardware and popularity.
    fn make_nodes(&mut self) {
        let spec = self.spec;
        let class_weights: Vec<f64> = NODE_CLASSES.iter().map(|c| c.weight).collect();
        for i in 0..spec.nodes {
            let class = NODE_CLASSES[draw_weighted(&mut self.rng, &class_weights)];
            let tags = if spec.location_tags {
                vec![format!("rack:r{:02}", i / spec.rack_size + 1)]
            } else {
                Vec::new()
            };
            self.nodes.push(GenNode {
                name: format!("node-{:04}", i + 1),
                class,
                group: i * spec.groups / spec.nodes,
                role: if i == 0 {
                    NodeRole::Master
                } else {
                    NodeRole::Regular
                },
                tags,
                instance_memory: 0,
                instance_disk: 0,
                instance_vcpus: 0,
                unaccounted_memory: 0,
            });
        }
        // New nodes join an existing cluster, so the master is never one of them.
        let empty_count =
            ((spec.nodes as f64 * spec.empty_fraction).round() as usize).min(spec.nodes - 1);
        let mut empty = vec![false; spec.nodes];
        for i in index::sample(&mut self.rng, spec.nodes - 1, empty_count) {
            empty[i + 1] = true;
        }
        self.popularity = empty
            .iter()
            .map(|&empty| {
                if empty {
                    0.0
                } else {
                    // Inverse of the Pareto distribution function (minimum 1).
                    let u: f64 = self.rng.gen();
                    (1.0 - u).powf(-1.0 / spec.skew).min(MAX_POPULARITY)
                }
            })
            .collect();
    }

    /// Draws instance number `number` and places it, or `None` when it finds no room.
    fn place_instance(
        &mut self,
        number: usize,
        services: usize,
        members: &[Vec<usize>],
    ) -> Option<GenInstance> {
        let spec = self.spec;
        let mix_weights: Vec<f64> = spec.mix.iter().map(|(_, w)| *w).collect();
        let template = spec.mix[draw_weighted(&mut self.rng, &mix_weights)].0;
        let size_weights: Vec<f64> = INSTANCE_SIZES.iter().map(|s| s.0).collect();
        let (_, memory, vcpus) = INSTANCE_SIZES[draw_weighted(&mut self.rng, &size_weights)];
        let disk = if template == DiskTemplate::Diskless {
            0
        } else {
            10 * memory
        };
        let running = !self.rng.gen_bool(DOWN_SHARE);
        let mut tags = Vec::new();
        if services > 0 && self.rng.gen_bool(SERVICE_TAG_SHARE) {
            tags.push(format!(
                "service:svc{:03}",
                self.rng.gen_range(1..=services)
            ));
        }
        let candidates = &members[self.rng.gen_range(0..members.len())];
        let local = template.local_storage();
        let fits_primary = |node: &GenNode| {
            let memory_ok = !running || node.free_memory() - memory >= i64::from(spec.mem_headroom);
            let disk_ok = !local || node.free_disk() >= disk;
            let cpu_ok = (node.instance_vcpus + vcpus) as f64
                <= node.class.cpus as f64 * spec.max_vcpu_ratio;
            memory_ok && disk_ok && cpu_ok
        };
        let primary_weights: Vec<f64> = candidates
            .iter()
            .map(|&n| self.popularity[n] + 1e-9)
            .collect();
        let mut placed = None;
        for _ in 0..PLACEMENT_DRAWS {
            let primary = candidates[draw_weighted(&mut self.rng, &primary_weights)];
            if !fits_primary(&self.nodes[primary]) {
                continue;
            }
            if template != DiskTemplate::Drbd {
                placed = Some((primary, None));
                break;
            }
            let others: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&n| n != primary)
                .collect();
            let secondary_weights: Vec<f64> = others
                .iter()
                .map(|&n| self.popularity[n].sqrt() + 1e-9)
                .collect();
            let secondary = others[draw_weighted(&mut self.rng, &secondary_weights)];
            if self.nodes[secondary].free_disk() >= disk {
                placed = Some((primary, Some(secondary)));
                break;
            }
        }
        let (primary, secondary) = placed?;
        let node = &mut self.nodes[primary];
        if running {
            node.instance_memory += memory;
        }
        node.instance_vcpus += vcpus;
        if local {
            node.instance_disk += disk;
        }
        if let Some(secondary) = secondary {
            self.nodes[secondary].instance_disk += disk;
        }
        Some(GenInstance {
            name: format!("inst-{number:05}"),
            memory,
            disk,
            vcpus,
            running,
            template,
            primary,
            secondary,
            tags,
        })
    }

    /// Takes the spec's offline and drained nodes out, never the master.
    fn fail_nodes(&mut self) {
        let spec = self.spec;
        let count = (spec.offline + spec.drained).min(spec.nodes - 1);
        let picked = index::sample(&mut self.rng, spec.nodes - 1, count);
        for (k, i) in picked.into_iter().enumerate() {
            self.nodes[i + 1].role = if k < spec.offline {
                NodeRole::Offline
            } else {
                NodeRole::Drained
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn generate(spec: &Spec) -> Generated {
        spec.generate().unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    fn with(spec: Spec, change: impl FnOnce(&mut Spec)) -> Spec {
        let mut spec = spec;
        change(&mut spec);
        spec
    }

    /// Specs covering every feature.
    fn specs() -> Vec<Spec> {
        vec![
            Spec::new(6, 60, 1),
            with(Spec::new(12, 150, 2), |s| {
                s.groups = 3;
                s.offline = 2;
                s.drained = 1;
            }),
            with(Spec::new(10, 120, 3), |s| {
                s.mix = parse_mix("drbd=0.5,plain=0.2,diskless=0.2,file=0.1").unwrap();
                s.location_tags = true;
                s.mem_noise = 2048;
                s.offline = 1;
                s.drained = 1;
            }),
            with(Spec::new(8, 100, 4), |s| {
                s.mix = vec![(DiskTemplate::Drbd, 1.0)];
                s.exclusion_tags = false;
            }),
        ]
    }

    #[test]
    fn a_seed_gives_the_same_bytes() {
        for spec in specs() {
            let (a, b) = (generate(&spec), generate(&spec));
            assert_eq!(a, b);
            assert_eq!(a.text().unwrap(), b.text().unwrap());
            let request = |g: &Generated| g.evacuation_request(&["node-0002"], EvacMode::All);
            assert_eq!(request(&a).unwrap(), request(&b).unwrap());
            let other = generate(&with(spec.clone(), |s| s.seed += 1));
            assert_ne!(a.text().unwrap(), other.text().unwrap(), "{spec}");
        }
    }

    #[test]
    fn counts_and_roles_follow_the_spec() {
        for spec in specs() {
            let generated = generate(&spec);
            let cluster = text::parse(&generated.text().unwrap()).unwrap();
            assert_eq!(cluster.groups.len(), spec.groups, "{spec}");
            assert_eq!(cluster.nodes.len(), spec.nodes, "{spec}");
            assert_eq!(generated.skipped, 0, "{spec}: room for every instance");
            assert_eq!(cluster.instances.len(), spec.instances, "{spec}");
            for group in 0..spec.groups {
                assert!(cluster.group_nodes(group).len() >= 2, "{spec}");
            }
            let masters: Vec<&str> = cluster
                .nodes
                .iter()
                .filter(|n| n.data.master)
                .map(|n| n.name())
                .collect();
            assert_eq!(masters, ["node-0001"], "{spec}");
            let failed = cluster.nodes.iter().filter(|n| n.data.offline).count();
            assert_eq!(failed, spec.offline + spec.drained, "{spec}");
            let without_data = cluster
                .nodes
                .iter()
                .filter(|n| n.data.offline && n.data.t_mem == 0.0 && n.data.t_dsk == 0.0)
                .count();
            assert_eq!(without_data, spec.offline, "{spec}");
            assert!(
                generated
                    .instances
                    .iter()
                    .any(|i| i.primary == 0 || i.secondary == Some(0)),
                "{spec}: the master is never a new, empty node"
            );
            let role_count = |role| generated.nodes.iter().filter(|n| n.role == role).count();
            assert_eq!(role_count(NodeRole::Offline), spec.offline);
            assert_eq!(role_count(NodeRole::Drained), spec.drained);
            assert!(
                generated
                    .instances
                    .iter()
                    .any(|i| generated.nodes[i.primary].role != NodeRole::Regular
                        && generated.nodes[i.primary].role != NodeRole::Master)
                    || spec.offline + spec.drained == 0,
                "{spec}: failed nodes carry instances"
            );
        }
    }

    #[test]
    fn free_memory_and_disk_follow_the_placed_instances() {
        for spec in specs() {
            let generated = generate(&spec);
            let cluster = text::parse(&generated.text().unwrap()).unwrap();
            for (index, node) in cluster.nodes.iter().enumerate() {
                if node.data.t_mem == 0.0 {
                    continue; // offline: no data reported
                }
                let on_primary = cluster.instances.iter().filter(|i| i.pnode == index);
                let running: i64 = on_primary
                    .filter(|i| i.status == InstanceStatus::Running)
                    .map(|i| i.mem)
                    .sum();
                let disks: i64 = cluster
                    .instances
                    .iter()
                    .filter(|i| i.dt.local_storage())
                    .filter(|i| i.pnode == index || i.snode == Some(index))
                    .map(|i| i.dsk)
                    .sum();
                let noise = generated.nodes[index].unaccounted_memory;
                assert!((0..=i64::from(spec.mem_noise)).contains(&noise), "{spec}");
                let d = &node.data;
                assert_eq!(
                    d.f_mem,
                    d.t_mem as i64 - d.n_mem - running - noise,
                    "{spec}: {}",
                    d.name
                );
                assert_eq!(d.f_dsk, d.t_dsk as i64 - disks, "{spec}: {}", d.name);
                assert!(d.f_dsk >= 0 && d.f_mem >= 0, "{spec}: {}", d.name);
                // htools sees exactly the noise as memory used by nothing it knows.
                assert_eq!(node.state.x_mem, noise, "{spec}: {}", d.name);
            }
            if spec.mem_noise > 0 {
                assert!(generated.nodes.iter().any(|n| n.unaccounted_memory > 0));
            }
        }
    }

    #[test]
    fn placement_respects_capacity_and_templates() {
        for spec in specs() {
            let generated = generate(&spec);
            for node in &generated.nodes {
                assert!(
                    node.free_memory() + node.unaccounted_memory >= i64::from(spec.mem_headroom)
                );
                assert!(node.free_disk() >= 0);
                assert!(node.instance_vcpus as f64 <= node.class.cpus as f64 * spec.max_vcpu_ratio);
            }
            for i in &generated.instances {
                assert!(spec.mix.iter().any(|(t, _)| *t == i.template));
                match i.secondary {
                    Some(s) => {
                        assert_eq!(i.template, DiskTemplate::Drbd);
                        assert_ne!(s, i.primary);
                        assert_eq!(generated.nodes[s].group, generated.nodes[i.primary].group);
                    }
                    None => assert_ne!(i.template, DiskTemplate::Drbd),
                }
                assert_eq!(i.disk == 0, i.template == DiskTemplate::Diskless);
            }
        }
    }

    #[test]
    fn tags_follow_the_spec() {
        let spec = &specs()[2];
        let generated = generate(spec);
        assert_eq!(
            generated.cluster_tags,
            ["htools:iextags:service", "htools:nlocation:rack"]
        );
        assert_eq!(generated.nodes[4].tags, ["rack:r02"]);
        assert!(generated.instances.iter().any(|i| !i.tags.is_empty()));
        let plain = generate(&specs()[3]);
        assert!(plain.cluster_tags.is_empty());
        assert!(plain.instances.iter().all(|i| i.tags.is_empty()));
        assert!(plain.nodes.iter().all(|n| n.tags.is_empty()));
    }

    #[test]
    fn the_text_parses_back_and_writes_identically() {
        for spec in specs() {
            let text = generate(&spec).text().unwrap();
            let cluster = text::parse(&text).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(text::write(&cluster), text, "{spec}");
        }
    }

    #[test]
    fn requests_list_the_evacuated_instances_of_existing_nodes() {
        let spec = &specs()[1];
        let generated = generate(spec);
        let offline = generated
            .nodes
            .iter()
            .find(|n| n.role == NodeRole::Offline)
            .unwrap();
        let drained = generated
            .nodes
            .iter()
            .find(|n| n.role == NodeRole::Drained)
            .unwrap();
        for mode in [
            EvacMode::PrimaryOnly,
            EvacMode::SecondaryOnly,
            EvacMode::All,
        ] {
            let names = ["node-0002", offline.name.as_str()];
            let raw = generated.evacuation_request(&names, mode).unwrap();
            let request: Value = serde_json::from_str(&raw).unwrap();
            assert_eq!(request["request"]["type"], "node-evacuate");
            assert_eq!(request["request"]["evac_mode"], mode.name());
            let requested: Vec<&str> = request["request"]["instances"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let expected: Vec<&str> = generated
                .instances
                .iter()
                .filter(|i| {
                    let on = |n: usize| names.contains(&generated.nodes[n].name.as_str());
                    (mode != EvacMode::SecondaryOnly && on(i.primary))
                        || (mode != EvacMode::PrimaryOnly && i.secondary.is_some_and(on))
                })
                .map(|i| i.name.as_str())
                .collect();
            assert_eq!(requested, expected, "{mode}");
            assert!(!requested.is_empty(), "{mode}");
            // Every node an instance names exists; every requested instance exists.
            let nodes = request["nodes"].as_object().unwrap();
            assert_eq!(nodes.len(), generated.nodes.len());
            for instance in request["instances"].as_object().unwrap().values() {
                for node in instance["nodes"].as_array().unwrap() {
                    assert!(nodes.contains_key(node.as_str().unwrap()));
                }
            }
            let instances = request["instances"].as_object().unwrap();
            assert!(requested.iter().all(|i| instances.contains_key(*i)));
            // Offline nodes report no data, drained ones do.
            let node = |name: &str| &nodes[name];
            assert_eq!(node(&offline.name)["offline"], true);
            assert!(node(&offline.name).get("total_memory").is_none());
            assert_eq!(node(&drained.name)["drained"], true);
            assert_eq!(node(&drained.name)["offline"], false);
            assert_eq!(
                node(&drained.name)["free_memory"],
                json!(drained.free_memory())
            );
            // Groups, nodes and instances keep index order.
            let positions = |names: Vec<&str>| {
                names
                    .iter()
                    .map(|n| raw.find(&format!("\"{n}\":{{")).unwrap())
                    .collect::<Vec<_>>()
            };
            for order in [
                positions(generated.groups.iter().map(|g| g.uuid.as_str()).collect()),
                positions(generated.nodes.iter().map(|n| n.name.as_str()).collect()),
                positions(
                    generated
                        .instances
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect(),
                ),
            ] {
                assert!(order.windows(2).all(|w| w[0] < w[1]));
            }
        }
        assert!(matches!(
            generated.evacuation_request(&["node-9999"], EvacMode::All),
            Err(GenError::Request(_))
        ));
        assert!(matches!(
            generated.evacuation_request::<&str>(&[], EvacMode::All),
            Err(GenError::Request(_))
        ));
    }

    #[test]
    fn args_spell_the_spec() {
        for spec in specs() {
            assert_eq!(Spec::from_args(spec.args()).unwrap(), spec);
            assert_eq!(spec.to_string(), spec.args().join(" "));
        }
        let spec = with(Spec::new(7, 70, 9), |s| {
            s.empty_fraction = 0.25;
            s.skew = 1.1;
            s.mem_headroom = 1024;
            s.max_vcpu_ratio = 2.5;
            s.rack_size = 2;
        });
        assert_eq!(Spec::from_args(spec.args()).unwrap(), spec);
        assert_eq!(
            Spec::from_args(["--nodes=7", "--instances", "70", "--seed=9", "--skew=1.1"]).unwrap(),
            with(Spec::new(7, 70, 9), |s| s.skew = 1.1)
        );
        assert_eq!(
            Spec::new(3, 4, 5).args().join(" "),
            "--nodes 3 --instances 4 --seed 5"
        );
        assert_eq!(
            Spec::from_args(["--mix", "drbd,plain=3"]).unwrap().mix,
            [(DiskTemplate::Drbd, 1.0), (DiskTemplate::Plain, 3.0)]
        );
    }

    #[test]
    fn impossible_specs_and_bad_flags_are_errors() {
        let impossible = [
            Spec::new(1, 10, 0),
            Spec::new(0, 0, 0),
            with(Spec::new(5, 10, 0), |s| s.groups = 3),
            with(Spec::new(5, 10, 0), |s| s.groups = 0),
            with(Spec::new(5, 10, 0), |s| s.offline = 5),
            with(Spec::new(5, 10, 0), |s| {
                s.offline = 2;
                s.drained = 3;
            }),
            with(Spec::new(5, 10, 0), |s| s.drained = usize::MAX),
            with(Spec::new(5, 10, 0), |s| s.mix.clear()),
            with(Spec::new(5, 10, 0), |s| {
                s.mix = vec![(DiskTemplate::Drbd, 0.0)]
            }),
            with(Spec::new(5, 10, 0), |s| {
                s.mix = vec![(DiskTemplate::Drbd, f64::NAN)]
            }),
            with(Spec::new(5, 10, 0), |s| {
                s.mix = vec![(DiskTemplate::Rbd, 1.0)]
            }),
            with(Spec::new(5, 10, 0), |s| s.empty_fraction = 1.5),
            with(Spec::new(5, 10, 0), |s| s.skew = 0.0),
            with(Spec::new(5, 10, 0), |s| s.max_vcpu_ratio = f64::INFINITY),
            with(Spec::new(5, 10, 0), |s| s.rack_size = 0),
            Spec::new(MAX_NODES + 1, 10, 0),
            Spec::new(5, MAX_INSTANCES + 1, 0),
        ];
        for spec in impossible {
            assert!(
                matches!(spec.generate(), Err(GenError::Impossible(_))),
                "{spec:?}"
            );
        }
        let bad_args: [&[&str]; 7] = [
            &["--nodes"],
            &["--nodes", "-3"],
            &["--mix", "rbd=1"],
            &["--mix", "drbd=x"],
            &["--mem-headroom", "-1"],
            &["--frobnicate", "1"],
            &["--location-tags=yes"],
        ];
        for args in bad_args {
            assert!(
                matches!(Spec::from_args(args), Err(GenError::Argument(_))),
                "{args:?}"
            );
        }
    }

    #[test]
    fn a_crowded_cluster_leaves_instances_out() {
        let generated = generate(&Spec::new(2, 400, 1));
        assert!(generated.skipped > 0);
        assert_eq!(generated.instances.len() + generated.skipped, 400);
        let cluster = text::parse(&generated.text().unwrap()).unwrap();
        assert!(cluster
            .nodes
            .iter()
            .all(|n| n.data.f_mem >= 0 && n.data.f_dsk >= 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_spec_generates_or_is_refused(
            nodes in 0usize..16,
            instances in 0usize..80,
            groups in 0usize..6,
            offline in 0usize..6,
            drained in 0usize..6,
            seed in any::<u64>(),
            weights in prop::collection::vec(0.0f64..2.0, 4),
            empty_fraction in -0.5f64..1.5,
            skew in -1.0f64..4.0,
            mem_noise in 0u32..300_000,
            rack_size in 0usize..5,
        ) {
            let spec = Spec {
                nodes,
                instances,
                groups,
                seed,
                mix: TEMPLATES.iter().copied().zip(weights).collect(),
                offline,
                drained,
                empty_fraction,
                skew,
                mem_noise,
                rack_size,
                location_tags: seed % 2 == 0,
                exclusion_tags: seed % 3 != 0,
                ..Spec::new(0, 0, 0)
            };
            if let Ok(generated) = spec.generate() {
                let text = generated.text().unwrap();
                let cluster = text::parse(&text).unwrap();
                prop_assert_eq!(cluster.nodes.len(), nodes);
                prop_assert_eq!(generated.instances.len() + generated.skipped, instances);
                prop_assert!(generated.nodes.iter().all(|n| n.free_memory() >= 0));
                for mode in [EvacMode::PrimaryOnly, EvacMode::SecondaryOnly, EvacMode::All] {
                    let request = generated.evacuation_request(&["node-0001"], mode).unwrap();
                    prop_assert!(serde_json::from_str::<Value>(&request).is_ok());
                }
            }
        }
    }
}
