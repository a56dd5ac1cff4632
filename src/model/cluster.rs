//! A consistent view of a Ganeti cluster, as the planner consumes it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Storage layout of an instance's disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskTemplate {
    /// Network-mirrored between a primary and one secondary node.
    Drbd,
    /// Local LVM volumes on the primary only.
    Plain,
    /// No disks at all.
    Diskless,
    /// Files on the primary.
    File,
    /// Files on storage shared by all nodes.
    Sharedfile,
    /// Pre-existing block devices.
    Blockdev,
    /// Ceph RBD (externally mirrored).
    Rbd,
    /// External storage provider (externally mirrored).
    Ext,
    /// Gluster (externally mirrored).
    Gluster,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

impl DiskTemplate {
    /// Mirrored by DRBD: has a secondary node, migrates only to it.
    pub fn is_internally_mirrored(self) -> bool {
        self == DiskTemplate::Drbd
    }

    /// Storage reachable from any node: migrates to any node.
    pub fn is_externally_mirrored(self) -> bool {
        matches!(
            self,
            DiskTemplate::Sharedfile
                | DiskTemplate::Rbd
                | DiskTemplate::Ext
                | DiskTemplate::Gluster
                | DiskTemplate::Diskless
        )
    }
}

/// A node group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group UUID.
    pub uuid: String,
    /// `preferred`, `last_resort` or `unallocable`.
    pub alloc_policy: String,
    /// The group's tags (harep policies may be set here).
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// The group policy's `vcpu-ratio`, when the group has its own policy.
    #[serde(default)]
    pub vcpu_ratio: Option<f64>,
    /// The group policy's `spindle-ratio`, when the group has its own policy.
    #[serde(default)]
    pub spindle_ratio: Option<f64>,
}

/// A node with its resources and flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Node name (Ganeti's primary key in opcodes).
    pub name: String,
    /// Node UUID.
    pub uuid: String,
    /// UUID of the node's group.
    pub group: String,
    /// Total memory, MiB.
    pub memory_total: u64,
    /// Free memory, MiB.
    pub memory_free: u64,
    /// Total disk, MiB.
    pub disk_total: u64,
    /// Free disk, MiB.
    pub disk_free: u64,
    /// Physical CPUs.
    pub cpus: u32,
    /// Memory used by the node itself (Ganeti's `mnode`), MiB.
    #[serde(default)]
    pub memory_node: u64,
    /// CPUs reserved for the node itself (Ganeti's `cnos`).
    #[serde(default = "one")]
    pub cpus_node: u32,
    /// Spindles (the `spindle_count` node parameter).
    #[serde(default = "one")]
    pub spindles: u32,
    /// The node is offline.
    pub offline: bool,
    /// The node is drained (no new instances).
    pub drained: bool,
    /// The node may host instances.
    pub vm_capable: bool,
    /// The node's tags.
    pub tags: BTreeSet<String>,
}

impl Default for Node {
    /// An online, vm-capable node without resources, with Ganeti's parameter defaults.
    fn default() -> Self {
        Node {
            name: String::new(),
            uuid: String::new(),
            group: String::new(),
            memory_total: 0,
            memory_free: 0,
            disk_total: 0,
            disk_free: 0,
            cpus: 0,
            memory_node: 0,
            cpus_node: 1,
            spindles: 1,
            offline: false,
            drained: false,
            vm_capable: true,
            tags: BTreeSet::new(),
        }
    }
}

impl Node {
    /// The node may receive instances.
    pub fn accepts_instances(&self) -> bool {
        !self.offline && !self.drained && self.vm_capable
    }
}

/// An instance and where it lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Instance name.
    pub name: String,
    /// Instance UUID.
    pub uuid: String,
    /// Primary node name.
    pub primary: String,
    /// Secondary node names (one for DRBD, none otherwise).
    pub secondaries: Vec<String>,
    /// Disk template.
    pub disk_template: DiskTemplate,
    /// Maximum memory, MiB.
    pub memory: u64,
    /// Disk usage, MiB.
    pub disk: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// The `auto_balance` backend parameter: N+1 memory is reserved on the secondary.
    #[serde(default = "yes")]
    pub auto_balance: bool,
    /// The `spindle_use` backend parameter.
    #[serde(default = "one")]
    pub spindle_use: u32,
    /// Ganeti's `status` field (`running`, `ADMIN_down`, `ERROR_down`, ...).
    pub status: String,
    /// The instance's tags.
    pub tags: BTreeSet<String>,
}

impl Default for Instance {
    /// A running diskless instance without resources, with Ganeti's parameter defaults.
    fn default() -> Self {
        Instance {
            name: String::new(),
            uuid: String::new(),
            primary: String::new(),
            secondaries: Vec::new(),
            disk_template: DiskTemplate::Diskless,
            memory: 0,
            disk: 0,
            vcpus: 0,
            auto_balance: true,
            spindle_use: 1,
            status: "running".to_owned(),
            tags: BTreeSet::new(),
        }
    }
}

impl Instance {
    /// The instance is meant to run (its memory is in use on the primary).
    pub fn is_running(&self) -> bool {
        self.status == "running" || self.status.starts_with("ERROR_up")
    }
}

/// Everything the planner needs to know about the cluster at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterSnapshot {
    /// Name of the master node.
    pub master: String,
    /// Cluster tags.
    pub cluster_tags: BTreeSet<String>,
    /// Node groups.
    pub groups: Vec<Group>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Instances.
    pub instances: Vec<Instance>,
}

impl ClusterSnapshot {
    /// Look a node up by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Instances whose primary is `node`.
    pub fn primaries_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.iter().filter(move |i| i.primary == node)
    }

    /// Instances that have `node` as a secondary.
    pub fn secondaries_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances
            .iter()
            .filter(move |i| i.secondaries.iter().any(|s| s == node))
    }
}
