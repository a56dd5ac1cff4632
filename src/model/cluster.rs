//! A consistent view of a Ganeti cluster, as the planner consumes it.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Storage layout of an instance's disks (Ganeti's disk template).
///
/// The one vocabulary of maintd: snapshots from RAPI and Luxi, the simulator, the
/// planners and the htools engines all use it. Its names ([`DiskTemplate::name`]) are
/// Ganeti's, the same in RAPI, Luxi and the htools text format; serde reads and writes
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum DiskTemplate {
    /// `drbd`: network-mirrored between a primary and one secondary node.
    Drbd,
    /// `plain`: local LVM volumes on the primary only.
    Plain,
    /// `diskless`: no disks at all.
    Diskless,
    /// `file`: files on the primary.
    File,
    /// `sharedfile`: files on storage shared by all nodes.
    SharedFile,
    /// `blockdev`: pre-existing block devices.
    Blockdev,
    /// `rbd`: Ceph RBD (externally mirrored).
    Rbd,
    /// `ext`: an external storage provider (externally mirrored).
    Ext,
    /// `gluster`: Gluster (externally mirrored).
    Gluster,
}

/// How an instance's disks are mirrored, which decides the moves it can make (htools'
/// `MirrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorType {
    /// Not mirrored (`plain`, `file`): never moved by balancing or evacuation.
    None,
    /// Mirrored between primary and secondary (`drbd`).
    Internal,
    /// Storage reachable from any node (`diskless`, shared storage).
    External,
}

/// A disk template name that Ganeti does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown disk template {0:?}")]
pub struct UnknownDiskTemplate(pub String);

impl DiskTemplate {
    /// Every template, in Ganeti's order.
    const ALL: [Self; 9] = [
        Self::Diskless,
        Self::File,
        Self::SharedFile,
        Self::Plain,
        Self::Blockdev,
        Self::Drbd,
        Self::Rbd,
        Self::Ext,
        Self::Gluster,
    ];

    /// Every template, in Ganeti's order (`diskless` first, `gluster` last).
    pub fn all() -> impl Iterator<Item = Self> {
        Self::ALL.into_iter()
    }

    /// The template called `name` (Ganeti's name), if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::all().find(|t| t.name() == name)
    }

    /// Ganeti's name of the template.
    pub fn name(self) -> &'static str {
        match self {
            Self::Drbd => "drbd",
            Self::Plain => "plain",
            Self::Diskless => "diskless",
            Self::File => "file",
            Self::SharedFile => "sharedfile",
            Self::Blockdev => "blockdev",
            Self::Rbd => "rbd",
            Self::Ext => "ext",
            Self::Gluster => "gluster",
        }
    }

    /// The mirror type (htools' `templateMirrorType`).
    pub fn mirror(self) -> MirrorType {
        match self {
            Self::Drbd => MirrorType::Internal,
            Self::Plain | Self::File => MirrorType::None,
            Self::Diskless
            | Self::SharedFile
            | Self::Blockdev
            | Self::Rbd
            | Self::Ext
            | Self::Gluster => MirrorType::External,
        }
    }

    /// Mirrored by DRBD: has a secondary node, migrates only to it.
    pub fn is_internally_mirrored(self) -> bool {
        self.mirror() == MirrorType::Internal
    }

    /// Storage reachable from any node: the simulator and the simple planner migrate such
    /// an instance to any node. Unlike [`DiskTemplate::mirror`] (htools) this leaves
    /// `blockdev` out, so neither moves a `blockdev` instance.
    pub fn is_externally_mirrored(self) -> bool {
        self.mirror() == MirrorType::External && self != Self::Blockdev
    }

    /// Whether the disks are LVM volumes on the nodes, the only ones the htools disk and
    /// spindle model accounts (`file` disks live outside LVM and are invisible to it).
    pub fn local_storage(self) -> bool {
        matches!(self, Self::Plain | Self::Drbd)
    }

    /// Whether hbal may move instances of this template at all (`diskless` may not).
    pub fn movable(self) -> bool {
        matches!(
            self,
            Self::Drbd | Self::Blockdev | Self::SharedFile | Self::Gluster | Self::Rbd | Self::Ext
        )
    }
}

impl fmt::Display for DiskTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DiskTemplate {
    type Err = UnknownDiskTemplate;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::parse(name).ok_or_else(|| UnknownDiskTemplate(name.to_owned()))
    }
}

impl TryFrom<String> for DiskTemplate {
    type Error = UnknownDiskTemplate;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::parse(&name).ok_or(UnknownDiskTemplate(name))
    }
}

impl From<DiskTemplate> for &'static str {
    fn from(template: DiskTemplate) -> Self {
        template.name()
    }
}

/// An instance's run state: Ganeti's instance `status` (in RAPI, Luxi and the htools text
/// format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    /// `running`.
    Running,
    /// `ERROR_up`: running although it should be stopped.
    ErrorUp,
    /// `ADMIN_down`: stopped on purpose.
    AdminDown,
    /// `ERROR_down`: not running although it should.
    ErrorDown,
    /// `USER_down`: shut down by its user.
    UserDown,
    /// `ADMIN_offline`: offline, using no resources.
    AdminOffline,
    /// `ERROR_nodedown`: its primary node is down.
    ErrorNodeDown,
    /// `ERROR_nodeoffline`: its primary node is marked offline.
    ErrorNodeOffline,
    /// `ERROR_wrongnode`: running, but not on its primary node.
    ErrorWrongNode,
}

impl InstanceStatus {
    /// Every status.
    const ALL: [Self; 9] = [
        Self::Running,
        Self::ErrorUp,
        Self::AdminDown,
        Self::ErrorDown,
        Self::UserDown,
        Self::AdminOffline,
        Self::ErrorNodeDown,
        Self::ErrorNodeOffline,
        Self::ErrorWrongNode,
    ];

    /// The status called `name` (Ganeti's name), if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Ganeti's name of the status.
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::ErrorUp => "ERROR_up",
            Self::AdminDown => "ADMIN_down",
            Self::ErrorDown => "ERROR_down",
            Self::UserDown => "USER_down",
            Self::AdminOffline => "ADMIN_offline",
            Self::ErrorNodeDown => "ERROR_nodedown",
            Self::ErrorNodeOffline => "ERROR_nodeoffline",
            Self::ErrorWrongNode => "ERROR_wrongnode",
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
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
    /// Ganeti's `status` field (`running`, `ADMIN_down`, `ERROR_down`, ...: the names of
    /// [`InstanceStatus`]), as the backend read it.
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

    /// The names of every node, for membership tests over many nodes (`node` is a
    /// linear search).
    pub fn node_names(&self) -> std::collections::HashSet<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_template_names_are_ganetis_in_text_and_json() {
        for template in DiskTemplate::all() {
            let name = template.name();
            assert_eq!(DiskTemplate::parse(name), Some(template));
            assert_eq!(name.parse::<DiskTemplate>(), Ok(template));
            assert_eq!(template.to_string(), name);
            let json = serde_json::to_value(template).expect("serializes");
            assert_eq!(json, serde_json::Value::from(name));
            assert_eq!(
                serde_json::from_value::<DiskTemplate>(json).ok(),
                Some(template)
            );
        }
        let distinct: std::collections::HashSet<_> = DiskTemplate::all().collect();
        assert_eq!(distinct.len(), 9);
        assert_eq!(DiskTemplate::SharedFile.name(), "sharedfile");
        assert_eq!(DiskTemplate::Blockdev.name(), "blockdev");
    }

    #[test]
    fn an_unknown_disk_template_is_an_error() {
        assert_eq!(DiskTemplate::parse("DRBD"), None);
        let err = "lvm".parse::<DiskTemplate>().unwrap_err();
        assert_eq!(err, UnknownDiskTemplate("lvm".into()));
        assert_eq!(err.to_string(), "unknown disk template \"lvm\"");
        assert!(serde_json::from_value::<DiskTemplate>(serde_json::json!("lvm")).is_err());
        assert!(serde_json::from_value::<DiskTemplate>(serde_json::json!(3)).is_err());
    }

    #[test]
    fn instance_status_names_are_ganetis() {
        for status in InstanceStatus::ALL {
            assert_eq!(InstanceStatus::parse(status.name()), Some(status));
            assert_eq!(status.to_string(), status.name());
        }
        assert_eq!(
            InstanceStatus::parse("running"),
            Some(InstanceStatus::Running)
        );
        assert_eq!(
            InstanceStatus::parse("ERROR_nodeoffline"),
            Some(InstanceStatus::ErrorNodeOffline)
        );
        assert_eq!(InstanceStatus::parse("RUNNING"), None);
    }

    #[test]
    fn mirroring_as_the_simulator_and_htools_see_it() {
        let internal: Vec<_> = DiskTemplate::all()
            .filter(|t| t.is_internally_mirrored())
            .collect();
        assert_eq!(internal, [DiskTemplate::Drbd]);
        let external: Vec<_> = DiskTemplate::all()
            .filter(|t| t.is_externally_mirrored())
            .collect();
        assert_eq!(
            external,
            [
                DiskTemplate::Diskless,
                DiskTemplate::SharedFile,
                DiskTemplate::Rbd,
                DiskTemplate::Ext,
                DiskTemplate::Gluster,
            ]
        );
        // htools counts blockdev as externally mirrored; the simulator does not move it.
        assert_eq!(DiskTemplate::Blockdev.mirror(), MirrorType::External);
        assert_eq!(DiskTemplate::File.mirror(), MirrorType::None);
    }
}
