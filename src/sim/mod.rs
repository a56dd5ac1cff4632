//! The built-in simulated Ganeti cluster.
//!
//! [`SimCluster`] is pure and deterministic: no I/O, no threads, no timers. Every method
//! that can observe or change state takes the current time `now` (Unix seconds) and first
//! calls [`SimCluster::tick`], which lazily advances the job queue to its state at `now`.
//! The same seed and the same sequence of calls therefore always give the same cluster.
//!
//! # Layout
//!
//! - [`generate`]: building a cluster from a [`SimSpec`].
//! - [`queue`]: the job queue (ids, statuses, locking, timestamps, injected failures and hangs).
//! - [`ops`]: what each opcode checks and does to the cluster.
//! - [`query`]: Ganeti's query language (`Query`, field definitions, filters).
//! - [`luxi`]: one Luxi request in, one Luxi response out, like luxid.
//! - [`views`]: the JSON shapes of the simulator's HTTP control API.
//! - [`luxi_server`]: the Unix-socket server that feeds requests to [`SimCluster::handle_luxi`].

pub mod generate;
pub mod luxi;
pub mod luxi_server;
pub mod ops;
mod placement;
pub mod query;
pub mod queue;
pub mod views;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use thiserror::Error;

use crate::clock::Clock;
use crate::model::cluster::{ClusterSnapshot, DiskTemplate, Group, Instance, InstanceStatus, Node};
use crate::model::diagnose::report_envelope;
use crate::model::job::JobId;

pub use generate::SimSpec;
pub use queue::SimJob;

/// A simulator shared between the Luxi server, the HTTP API and in-process backends.
pub type SharedSim = Arc<Mutex<SimCluster>>;

/// Lock a shared simulator. A panic while the lock was held cannot leave the cluster
/// half-updated in a way that matters for a simulation, so a poisoned lock is simply reused.
pub fn lock_sim(sim: &SharedSim) -> MutexGuard<'_, SimCluster> {
    sim.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the HTTP layer needs to serve the simulator: the cluster and the clock that
/// supplies `now`.
#[derive(Debug, Clone)]
pub struct SimHandle {
    /// The simulated cluster.
    pub sim: SharedSim,
    /// Source of the current time for every call into the simulator.
    pub clock: Clock,
}

impl SimHandle {
    /// Wrap a shared simulator and a clock.
    pub fn new(sim: SharedSim, clock: Clock) -> Self {
        SimHandle { sim, clock }
    }

    /// Generate a fresh cluster from `spec` at the clock's current time.
    pub fn generate(spec: &SimSpec, clock: Clock) -> Self {
        let sim = SimCluster::generate(spec, clock.now());
        SimHandle::new(Arc::new(Mutex::new(sim)), clock)
    }

    /// The current time according to the clock.
    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    /// Lock the simulator (see [`lock_sim`]).
    pub fn lock(&self) -> MutexGuard<'_, SimCluster> {
        lock_sim(&self.sim)
    }

    /// Make the next `count` jobs containing opcode `op_id` hang until released (see
    /// [`SimCluster::inject_hang`]); 0 withdraws the hang.
    pub fn inject_hang(&self, op_id: &str, count: u32) {
        self.lock().inject_hang(op_id, count);
    }

    /// Let every hung job finish at the clock's current time and drop pending hangs (see
    /// [`SimCluster::release_hung_jobs`]); the released jobs' ids.
    pub fn release_hung_jobs(&self) -> Vec<JobId> {
        let now = self.now();
        self.lock().release_hung_jobs(now)
    }
}

/// How a node's (simulated) monitoring daemon answers, so tests can exercise bad input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "behaviour", content = "body", rename_all = "snake_case")]
pub enum MonitoringBehaviour {
    /// Serve the diagnose report normally.
    #[default]
    Normal,
    /// The daemon cannot be reached.
    Unreachable,
    /// Serve this raw body instead of a report.
    Garbage(String),
    /// Answer with this HTTP status and no report.
    Status(u16),
}

/// What a node's monitoring daemon answers to `/1/report/node/diagnose` right now.
#[derive(Debug, Clone, PartialEq)]
pub enum MonitoringReply {
    /// The report envelope.
    Report(Value),
    /// No answer at all.
    Unreachable,
    /// A raw body that is probably not a valid report.
    Raw(String),
    /// An HTTP error status.
    Status(u16),
}

/// One `OP_REPAIR_COMMAND` the simulator "ran" on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairRecord {
    /// The job that ran it.
    pub job: JobId,
    /// The command name.
    pub command: String,
    /// What the command got on standard input.
    pub input: Option<String>,
    /// When it ran (Unix seconds).
    pub at: f64,
}

/// Administrative state of an instance (Ganeti's `admin_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Meant to run.
    Up,
    /// Stopped on purpose.
    Down,
    /// Stopped and using no resources.
    Offline,
}

impl AdminState {
    /// Ganeti's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Up => "up",
            AdminState::Down => "down",
            AdminState::Offline => "offline",
        }
    }
}

/// A simulated node.
#[derive(Debug, Clone, PartialEq)]
pub struct SimNode {
    /// Node name.
    pub name: String,
    /// Node UUID.
    pub uuid: String,
    /// UUID of the node's group.
    pub group_uuid: String,
    /// Total memory, MiB.
    pub memory_total: u64,
    /// Total disk, MiB.
    pub disk_total: u64,
    /// Physical CPUs.
    pub cpus: u32,
    /// Marked offline.
    pub offline: bool,
    /// Marked drained.
    pub drained: bool,
    /// A master candidate.
    pub master_candidate: bool,
    /// May become a master candidate.
    pub master_capable: bool,
    /// May host instances.
    pub vm_capable: bool,
    /// Tags.
    pub tags: BTreeSet<String>,
    /// The diagnose object its self-diagnose collector reports.
    pub diagnose: Value,
    /// How its monitoring daemon answers.
    pub monitoring: MonitoringBehaviour,
    /// Repair commands run on it, oldest first.
    pub repairs: Vec<RepairRecord>,
}

/// A simulated instance.
#[derive(Debug, Clone, PartialEq)]
pub struct SimInstance {
    /// Instance name.
    pub name: String,
    /// Instance UUID.
    pub uuid: String,
    /// Primary node name.
    pub primary: String,
    /// Secondary node names (one for DRBD).
    pub secondaries: Vec<String>,
    /// Disk template.
    pub disk_template: DiskTemplate,
    /// Memory, MiB.
    pub memory: u64,
    /// Disk size, MiB.
    pub disk: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Administrative state.
    pub admin_state: AdminState,
    /// Tags.
    pub tags: BTreeSet<String>,
}

impl SimInstance {
    /// The disks take space on the nodes themselves (not on shared or external storage).
    pub fn uses_local_disk(&self) -> bool {
        matches!(
            self.disk_template,
            DiskTemplate::Drbd | DiskTemplate::Plain | DiskTemplate::File | DiskTemplate::Blockdev
        )
    }

    /// Nodes whose disk space the instance occupies.
    pub fn disk_nodes(&self) -> impl Iterator<Item = &String> {
        let local = self.uses_local_disk();
        std::iter::once(&self.primary)
            .chain(self.secondaries.iter())
            .filter(move |_| local)
    }

    /// The instance occupies memory on its primary.
    pub fn uses_memory(&self) -> bool {
        self.admin_state == AdminState::Up
    }
}

/// A simulated node group.
#[derive(Debug, Clone, PartialEq)]
pub struct SimGroup {
    /// Group name.
    pub name: String,
    /// Group UUID.
    pub uuid: String,
    /// `preferred`, `last_resort` or `unallocable`.
    pub alloc_policy: String,
    /// Tags.
    pub tags: BTreeSet<String>,
}

/// Refusals of the simulator's direct (non-job) operations.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SimError {
    /// No node of that name.
    #[error("node {0} does not exist")]
    UnknownNode(String),
    /// A node of that name exists already.
    #[error("node {0} already exists")]
    NodeExists(String),
    /// The name is not a valid node name.
    #[error("invalid node name {0:?}")]
    InvalidName(String),
    /// The node still hosts instances.
    #[error("node {0} still hosts instances")]
    NodeInUse(String),
    /// The operation is not allowed on the master node.
    #[error("node {0} is the master")]
    IsMaster(String),
    /// The node is offline.
    #[error("node {0} is offline")]
    NodeOffline(String),
    /// The node does not carry that tag.
    #[error("node {node} has no tag {tag:?}")]
    NoSuchTag {
        /// The node.
        node: String,
        /// The missing tag.
        tag: String,
    },
    /// A job needs at least one opcode.
    #[error("a job needs at least one opcode")]
    EmptyJob,
    /// The queue is drained (`SetDrainFlag`).
    #[error("Queue drained")]
    QueueDrained,
}

/// Default diagnose object of a healthy node.
pub fn healthy_diagnose() -> Value {
    json!({"status": "Ok"})
}

/// The simulated cluster: configuration, job queue and per-node monitoring.
#[derive(Debug, Clone)]
pub struct SimCluster {
    cluster_name: String,
    cluster_uuid: String,
    master: String,
    cluster_tags: BTreeSet<String>,
    groups: Vec<SimGroup>,
    nodes: Vec<SimNode>,
    instances: Vec<SimInstance>,
    /// Resources given to nodes added later.
    new_node_memory: u64,
    new_node_disk: u64,
    new_node_cpus: u32,
    queue: queue::JobQueue,
    /// Source of UUIDs for nodes added later (seeded, so still deterministic).
    rng: SmallRng,
}

/// Ganeti's default `candidate_pool_size`.
const CANDIDATE_POOL_SIZE: usize = 10;

impl SimCluster {
    /// Build a cluster from `spec`; the same spec always gives the same cluster.
    pub fn generate(spec: &SimSpec, now: f64) -> Self {
        generate::generate(spec, now)
    }

    /// Advance the job queue to its state at `now`. Time never goes backwards: an
    /// earlier `now` than already seen is treated as "no time passed".
    pub fn tick(&mut self, now: f64) {
        let mut queue = std::mem::take(&mut self.queue);
        queue.advance(self, now);
        self.queue = queue;
    }

    /// The cluster's name.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// Name of the master node.
    pub fn master(&mut self, now: f64) -> String {
        self.tick(now);
        self.master.clone()
    }

    /// Seconds a whole job takes from start to end.
    pub fn job_seconds(&self) -> f64 {
        self.queue.job_seconds
    }

    /// Change how long jobs submitted from now on take (negative or NaN means 0).
    pub fn set_job_seconds(&mut self, seconds: f64, now: f64) {
        self.tick(now);
        self.queue.job_seconds = sanitize_seconds(seconds);
    }

    /// Nodes, instances, groups and tags at `now`.
    pub fn snapshot(&mut self, now: f64) -> ClusterSnapshot {
        self.tick(now);
        let placement = self.placement();
        ClusterSnapshot {
            master: self.master.clone(),
            cluster_tags: self.cluster_tags.clone(),
            groups: self
                .groups
                .iter()
                .map(|g| Group {
                    name: g.name.clone(),
                    uuid: g.uuid.clone(),
                    alloc_policy: g.alloc_policy.clone(),
                    tags: g.tags.clone(),
                    vcpu_ratio: Some(4.0),
                    spindle_ratio: Some(32.0),
                })
                .collect(),
            nodes: self
                .nodes
                .iter()
                .map(|n| Node {
                    name: n.name.clone(),
                    uuid: n.uuid.clone(),
                    group: n.group_uuid.clone(),
                    memory_total: n.memory_total,
                    memory_free: n
                        .memory_total
                        .saturating_sub(placement.usage(&n.name).memory_used),
                    disk_total: n.disk_total,
                    disk_free: n
                        .disk_total
                        .saturating_sub(placement.usage(&n.name).disk_used),
                    cpus: n.cpus,
                    offline: n.offline,
                    drained: n.drained,
                    vm_capable: n.vm_capable,
                    tags: n.tags.clone(),
                    ..Node::default()
                })
                .collect(),
            instances: self
                .instances
                .iter()
                .map(|i| Instance {
                    name: i.name.clone(),
                    uuid: i.uuid.clone(),
                    primary: i.primary.clone(),
                    secondaries: i.secondaries.clone(),
                    disk_template: i.disk_template,
                    memory: i.memory,
                    disk: i.disk,
                    vcpus: i.vcpus,
                    status: self
                        .status_given(i, placement.node(&i.primary).is_none_or(|n| n.offline))
                        .name()
                        .to_owned(),
                    tags: i.tags.clone(),
                    ..Instance::default()
                })
                .collect(),
        }
    }

    /// Set the diagnose object `node` reports from now on (any JSON value, valid or not).
    pub fn set_diagnose(&mut self, node: &str, diagnose: Value, now: f64) -> Result<(), SimError> {
        self.tick(now);
        self.node_mut(node)?.diagnose = diagnose;
        Ok(())
    }

    /// The monitoring daemon's report envelope for `node`, ignoring its monitoring
    /// behaviour; `None` for an unknown node.
    pub fn diagnose_report(&mut self, node: &str, now: f64) -> Option<Value> {
        self.tick(now);
        let diagnose = &self.node(node)?.diagnose;
        Some(report_envelope(diagnose, unix_to_ns(now)))
    }

    /// `node`'s `cpu-avg-load` report: each running primary instance keeps a quarter of
    /// each of its vCPUs busy, up to the node's CPUs; `None` for an unknown or offline node.
    pub fn cpu_load_report(&mut self, node: &str, now: f64) -> Option<Value> {
        self.tick(now);
        let n = self.node(node)?;
        if n.offline {
            return None;
        }
        let cpus = n.cpus;
        let busy: f64 = self
            .instances
            .iter()
            .filter(|i| i.primary == node && i.uses_memory())
            .map(|i| f64::from(i.vcpus) * 0.25)
            .sum();
        let total = busy.min(f64::from(cpus));
        let per_cpu = if cpus == 0 {
            0.0
        } else {
            total / f64::from(cpus)
        };
        Some(serde_json::json!({
            "name": "cpu-avg-load",
            "version": "B",
            "format_version": 1,
            "timestamp": unix_to_ns(now),
            "category": null,
            "kind": 0,
            "data": {
                "cpu_number": cpus,
                "cpus": vec![per_cpu; cpus as usize],
                "cpu_total": total,
            },
        }))
    }

    /// Set how `node`'s monitoring daemon answers from now on.
    pub fn set_monitoring(
        &mut self,
        node: &str,
        behaviour: MonitoringBehaviour,
        now: f64,
    ) -> Result<(), SimError> {
        self.tick(now);
        self.node_mut(node)?.monitoring = behaviour;
        Ok(())
    }

    /// What `node`'s monitoring daemon answers right now, honouring its behaviour;
    /// `None` for an unknown node.
    pub fn monitoring_reply(&mut self, node: &str, now: f64) -> Option<MonitoringReply> {
        self.tick(now);
        let behaviour = self.node(node)?.monitoring.clone();
        Some(match behaviour {
            MonitoringBehaviour::Normal => {
                MonitoringReply::Report(self.diagnose_report(node, now)?)
            }
            MonitoringBehaviour::Unreachable => MonitoringReply::Unreachable,
            MonitoringBehaviour::Garbage(body) => MonitoringReply::Raw(body),
            MonitoringBehaviour::Status(code) => MonitoringReply::Status(code),
        })
    }

    /// The repair commands run on `node`, oldest first.
    pub fn repairs(&mut self, node: &str, now: f64) -> Result<Vec<RepairRecord>, SimError> {
        self.tick(now);
        Ok(self.node_ref(node)?.repairs.clone())
    }

    /// Remove a tag from a node directly, as an operator would (no job).
    pub fn remove_node_tag(&mut self, node: &str, tag: &str, now: f64) -> Result<(), SimError> {
        self.tick(now);
        let entry = self.node_mut(node)?;
        if entry.tags.remove(tag) {
            Ok(())
        } else {
            Err(SimError::NoSuchTag {
                node: node.to_owned(),
                tag: tag.to_owned(),
            })
        }
    }

    /// Master failover to `node` (which becomes a master candidate, as Ganeti requires).
    pub fn set_master(&mut self, node: &str, now: f64) -> Result<(), SimError> {
        self.tick(now);
        let entry = self.node_mut(node)?;
        if entry.offline {
            return Err(SimError::NodeOffline(node.to_owned()));
        }
        entry.master_candidate = true;
        entry.drained = false;
        self.master = node.to_owned();
        Ok(())
    }

    /// Add an empty node to the default group, with the generated nodes' resources.
    pub fn add_node(&mut self, name: &str, now: f64) -> Result<(), SimError> {
        self.tick(now);
        if !is_valid_node_name(name) {
            return Err(SimError::InvalidName(name.to_owned()));
        }
        if self.node(name).is_some() {
            return Err(SimError::NodeExists(name.to_owned()));
        }
        let candidates = self.nodes.iter().filter(|n| n.master_candidate).count();
        let node = SimNode {
            name: name.to_owned(),
            uuid: generate::next_uuid(&mut self.rng),
            group_uuid: self
                .groups
                .first()
                .map(|g| g.uuid.clone())
                .unwrap_or_default(),
            memory_total: self.new_node_memory,
            disk_total: self.new_node_disk,
            cpus: self.new_node_cpus,
            offline: false,
            drained: false,
            master_candidate: candidates < CANDIDATE_POOL_SIZE,
            master_capable: true,
            vm_capable: true,
            tags: BTreeSet::new(),
            diagnose: healthy_diagnose(),
            monitoring: MonitoringBehaviour::Normal,
            repairs: Vec::new(),
        };
        self.nodes.push(node);
        Ok(())
    }

    /// Remove a node; refused for the master and for nodes that still host instances.
    pub fn remove_node(&mut self, name: &str, now: f64) -> Result<(), SimError> {
        self.tick(now);
        self.node_ref(name)?;
        if self.master == name {
            return Err(SimError::IsMaster(name.to_owned()));
        }
        let hosts = self
            .instances
            .iter()
            .any(|i| i.primary == name || i.secondaries.iter().any(|s| s == name));
        if hosts {
            return Err(SimError::NodeInUse(name.to_owned()));
        }
        self.nodes.retain(|n| n.name != name);
        Ok(())
    }

    // ----- lookups and derived values shared by the submodules -----

    pub(crate) fn node(&self, name: &str) -> Option<&SimNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn node_ref(&self, name: &str) -> Result<&SimNode, SimError> {
        self.node(name)
            .ok_or_else(|| SimError::UnknownNode(name.to_owned()))
    }

    pub(crate) fn node_mut(&mut self, name: &str) -> Result<&mut SimNode, SimError> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| SimError::UnknownNode(name.to_owned()))
    }

    pub(crate) fn instance(&self, name: &str) -> Option<&SimInstance> {
        self.instances.iter().find(|i| i.name == name)
    }

    pub(crate) fn instance_mut(&mut self, name: &str) -> Option<&mut SimInstance> {
        self.instances.iter_mut().find(|i| i.name == name)
    }

    pub(crate) fn group_name(&self, uuid: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|g| g.uuid == uuid)
            .map(|g| g.name.as_str())
    }

    /// Memory of running primaries on `node`, MiB.
    pub(crate) fn memory_used(&self, node: &str) -> u64 {
        self.instances
            .iter()
            .filter(|i| i.primary == node && i.uses_memory())
            .map(|i| i.memory)
            .sum()
    }

    /// Free memory of `node`, MiB: always derived from placement, so it cannot drift.
    pub(crate) fn memory_free(&self, node: &str) -> u64 {
        let total = self.node(node).map_or(0, |n| n.memory_total);
        total.saturating_sub(self.memory_used(node))
    }

    /// Disk used on `node` by the local disks of its primaries and secondaries, MiB.
    pub(crate) fn disk_used(&self, node: &str) -> u64 {
        self.instances
            .iter()
            .filter(|i| i.disk_nodes().any(|n| n == node))
            .map(|i| i.disk)
            .sum()
    }

    /// Free disk of `node`, MiB.
    pub(crate) fn disk_free(&self, node: &str) -> u64 {
        let total = self.node(node).map_or(0, |n| n.disk_total);
        total.saturating_sub(self.disk_used(node))
    }

    #[cfg(test)]
    pub(crate) fn primaries_of(&self, node: &str) -> Vec<String> {
        self.instances
            .iter()
            .filter(|i| i.primary == node)
            .map(|i| i.name.clone())
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn secondaries_of(&self, node: &str) -> Vec<String> {
        self.instances
            .iter()
            .filter(|i| i.secondaries.iter().any(|s| s == node))
            .map(|i| i.name.clone())
            .collect()
    }

    /// Ganeti's node role letter: master, candidate, drained, offline or regular.
    pub(crate) fn node_role(&self, node: &SimNode) -> &'static str {
        if node.name == self.master {
            "M"
        } else if node.master_candidate {
            "C"
        } else if node.drained {
            "D"
        } else if node.offline {
            "O"
        } else {
            "R"
        }
    }

    /// Ganeti's instance `status`, derived from the admin state and the primary's state.
    pub(crate) fn instance_status(&self, instance: &SimInstance) -> InstanceStatus {
        let primary_offline = self.node(&instance.primary).is_none_or(|n| n.offline);
        self.status_given(instance, primary_offline)
    }

    /// [`SimCluster::instance_status`], knowing whether the primary is offline (or unknown).
    pub(crate) fn status_given(
        &self,
        instance: &SimInstance,
        primary_offline: bool,
    ) -> InstanceStatus {
        match instance.admin_state {
            AdminState::Offline => InstanceStatus::AdminOffline,
            _ if primary_offline => InstanceStatus::ErrorNodeOffline,
            AdminState::Up => InstanceStatus::Running,
            AdminState::Down => InstanceStatus::AdminDown,
        }
    }

    pub(crate) fn master_name(&self) -> &str {
        &self.master
    }

    pub(crate) fn nodes_slice(&self) -> &[SimNode] {
        &self.nodes
    }

    pub(crate) fn instances_slice(&self) -> &[SimInstance] {
        &self.instances
    }

    pub(crate) fn groups_slice(&self) -> &[SimGroup] {
        &self.groups
    }

    pub(crate) fn cluster_tags(&self) -> &BTreeSet<String> {
        &self.cluster_tags
    }

    pub(crate) fn cluster_uuid(&self) -> &str {
        &self.cluster_uuid
    }

    /// Names of the master candidates, for self-promotion decisions.
    pub(crate) fn candidate_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.master_candidate).count()
    }
}

/// Node names: letters, digits, dots and dashes, as host names are.
fn is_valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !name.starts_with(['.', '-'])
}

/// Seconds as a job duration: finite and not negative.
pub(crate) fn sanitize_seconds(seconds: f64) -> f64 {
    if seconds.is_finite() && seconds > 0.0 {
        seconds
    } else {
        0.0
    }
}

/// Unix seconds to nanoseconds, as reason trails and report timestamps want them.
pub(crate) fn unix_to_ns(seconds: f64) -> i64 {
    (seconds * 1e9) as i64
}

/// Unix seconds to Ganeti's `[seconds, microseconds]` timestamp.
pub(crate) fn ganeti_timestamp(seconds: f64) -> Value {
    let whole = seconds.floor();
    let micros = (((seconds - whole) * 1e6).round() as i64).clamp(0, 999_999);
    json!([whole as i64, micros])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SimCluster {
        SimCluster::generate(
            &SimSpec {
                nodes: 3,
                instances: 6,
                seed: 7,
                ..SimSpec::default()
            },
            1000.0,
        )
    }

    #[test]
    fn timestamps_split_seconds_and_micros() {
        assert_eq!(ganeti_timestamp(12.5), json!([12, 500000]));
        assert_eq!(ganeti_timestamp(3.0), json!([3, 0]));
    }

    #[test]
    fn diagnose_defaults_to_ok_and_can_be_changed() {
        let mut sim = small();
        let report = sim.diagnose_report("node2", 1001.0).expect("node2 exists");
        assert_eq!(report["data"], json!({"status": "Ok"}));
        assert_eq!(report["name"], "diagnose");
        assert_eq!(report["timestamp"], json!(1_001_000_000_000i64));
        sim.set_diagnose("node2", json!({"status": "evacuate"}), 1002.0)
            .expect("node2 exists");
        let report = sim.diagnose_report("node2", 1003.0).expect("node2 exists");
        assert_eq!(report["data"]["status"], "evacuate");
        assert!(sim.diagnose_report("node9", 1003.0).is_none());
        assert_eq!(
            sim.set_diagnose("node9", json!(1), 1003.0),
            Err(SimError::UnknownNode("node9".into()))
        );
    }

    #[test]
    fn monitoring_behaviour_changes_the_reply() {
        let mut sim = small();
        assert!(matches!(
            sim.monitoring_reply("node1", 1000.0),
            Some(MonitoringReply::Report(_))
        ));
        sim.set_monitoring("node1", MonitoringBehaviour::Garbage("xx".into()), 1000.0)
            .expect("node1 exists");
        assert_eq!(
            sim.monitoring_reply("node1", 1000.0),
            Some(MonitoringReply::Raw("xx".into()))
        );
        sim.set_monitoring("node1", MonitoringBehaviour::Unreachable, 1000.0)
            .expect("node1 exists");
        assert_eq!(
            sim.monitoring_reply("node1", 1000.0),
            Some(MonitoringReply::Unreachable)
        );
        assert_eq!(sim.monitoring_reply("nope", 1000.0), None);
    }

    #[test]
    fn monitoring_behaviour_json_shape() {
        let garbage: MonitoringBehaviour =
            serde_json::from_str(r#"{"behaviour":"garbage","body":"{{"}"#).expect("valid");
        assert_eq!(garbage, MonitoringBehaviour::Garbage("{{".into()));
        let normal: MonitoringBehaviour =
            serde_json::from_str(r#"{"behaviour":"normal"}"#).expect("valid");
        assert_eq!(normal, MonitoringBehaviour::Normal);
        let status: MonitoringBehaviour =
            serde_json::from_str(r#"{"behaviour":"status","body":503}"#).expect("valid");
        assert_eq!(status, MonitoringBehaviour::Status(503));
    }

    #[test]
    fn master_failover_and_node_add_remove() {
        let mut sim = small();
        assert_eq!(sim.master(1000.0), "node1");
        sim.set_master("node2", 1000.0).expect("node2 exists");
        assert_eq!(sim.snapshot(1000.0).master, "node2");
        assert_eq!(
            sim.set_master("node7", 1000.0),
            Err(SimError::UnknownNode("node7".into()))
        );

        sim.add_node("node4", 1000.0).expect("new name");
        assert_eq!(
            sim.add_node("node4", 1000.0),
            Err(SimError::NodeExists("node4".into()))
        );
        assert_eq!(
            sim.add_node("bad name", 1000.0),
            Err(SimError::InvalidName("bad name".into()))
        );
        let snap = sim.snapshot(1000.0);
        let added = snap.node("node4").expect("added");
        assert_eq!(added.memory_free, added.memory_total);

        let busy = snap.instances[0].primary.clone();
        assert!(matches!(
            sim.remove_node(&busy, 1000.0),
            Err(SimError::NodeInUse(_)) | Err(SimError::IsMaster(_))
        ));
        sim.remove_node("node4", 1000.0).expect("empty node");
        assert!(sim.snapshot(1000.0).node("node4").is_none());
        assert_eq!(
            sim.remove_node("node2", 1000.0),
            Err(SimError::IsMaster("node2".into()))
        );
    }

    #[test]
    fn free_resources_follow_placement() {
        let mut sim = small();
        let snap = sim.snapshot(1000.0);
        for node in &snap.nodes {
            let mem: u64 = snap
                .primaries_of(&node.name)
                .filter(|i| i.status == "running")
                .map(|i| i.memory)
                .sum();
            assert_eq!(node.memory_total - node.memory_free, mem);
        }
    }
}
