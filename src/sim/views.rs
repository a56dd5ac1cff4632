//! JSON views of the simulator for its HTTP control API.

use serde::Serialize;
use serde_json::Value;

use super::placement::Placement;
use super::{MonitoringBehaviour, SimCluster, SimJob, SimNode};
use crate::model::cluster::DiskTemplate;
use crate::model::job::{JobId, JobStatus};

/// A node as `GET /sim/nodes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Node UUID.
    pub uuid: String,
    /// Group name.
    pub group: String,
    /// Drained flag.
    pub drained: bool,
    /// Offline flag.
    pub offline: bool,
    /// Master-candidate flag.
    pub master_candidate: bool,
    /// This node is the master.
    pub master: bool,
    /// May host instances.
    pub vm_capable: bool,
    /// Tags.
    pub tags: Vec<String>,
    /// Instances with this node as primary.
    pub primary_instances: Vec<String>,
    /// Instances with this node as secondary.
    pub secondary_instances: Vec<String>,
    /// Total memory, MiB.
    pub memory_total: u64,
    /// Free memory, MiB.
    pub memory_free: u64,
    /// Total disk, MiB.
    pub disk_total: u64,
    /// Free disk, MiB.
    pub disk_free: u64,
    /// What its self-diagnose collector reports.
    pub diagnose: Value,
    /// How its monitoring daemon answers.
    pub monitoring: MonitoringBehaviour,
}

/// An instance as `GET /sim/instances` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceView {
    /// Instance name.
    pub name: String,
    /// Instance UUID.
    pub uuid: String,
    /// Primary node.
    pub primary: String,
    /// Secondary nodes.
    pub secondaries: Vec<String>,
    /// Disk template.
    pub disk_template: DiskTemplate,
    /// Memory, MiB.
    pub memory: u64,
    /// Disk, MiB.
    pub disk: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Ganeti's `status`.
    pub status: String,
    /// Tags.
    pub tags: Vec<String>,
}

/// A job as `GET /sim/jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    /// Job id.
    pub id: JobId,
    /// Job status.
    pub status: JobStatus,
    /// Per-opcode summaries.
    pub summary: Vec<String>,
    /// The opcodes as submitted, with their full reason trails.
    pub ops: Vec<Value>,
    /// Per-opcode statuses.
    pub opstatus: Vec<JobStatus>,
    /// Per-opcode results (encoded exceptions for failures).
    pub opresult: Vec<Value>,
    /// Log entries `[serial, [sec, usec], type, message]`.
    pub oplog: Vec<Value>,
    /// Submission time, Unix seconds.
    pub received: f64,
    /// Start time, Unix seconds.
    pub started: Option<f64>,
    /// End time, Unix seconds.
    pub ended: Option<f64>,
    /// Held up by an injected hang until `POST /sim/faults/release`.
    pub hung: bool,
}

impl JobView {
    fn of(job: &SimJob) -> Self {
        JobView {
            id: job.id,
            status: job.status(),
            summary: job.summaries(),
            ops: job.ops.iter().map(|op| op.input.clone()).collect(),
            opstatus: job.ops.iter().map(|op| op.status).collect(),
            opresult: job.ops.iter().map(|op| op.result.clone()).collect(),
            oplog: job.log_entries(),
            received: job.received,
            started: job.started,
            ended: job.ended,
            hung: job.is_hung(),
        }
    }
}

impl SimCluster {
    /// Every node at `now`.
    pub fn node_views(&mut self, now: f64) -> Vec<NodeView> {
        self.tick(now);
        let placement = self.placement();
        self.nodes_slice()
            .iter()
            .map(|node| self.view_of(&placement, node))
            .collect()
    }

    fn view_of(&self, placement: &Placement<'_>, node: &SimNode) -> NodeView {
        let usage = placement.usage(&node.name);
        NodeView {
            name: node.name.clone(),
            uuid: node.uuid.clone(),
            group: self
                .group_name(&node.group_uuid)
                .unwrap_or_default()
                .to_owned(),
            drained: node.drained,
            offline: node.offline,
            master_candidate: node.master_candidate,
            master: node.name == self.master_name(),
            vm_capable: node.vm_capable,
            tags: node.tags.iter().cloned().collect(),
            primary_instances: usage.primaries.iter().map(|&i| i.to_owned()).collect(),
            secondary_instances: usage.secondaries.iter().map(|&i| i.to_owned()).collect(),
            memory_total: node.memory_total,
            memory_free: node.memory_total.saturating_sub(usage.memory_used),
            disk_total: node.disk_total,
            disk_free: node.disk_total.saturating_sub(usage.disk_used),
            diagnose: node.diagnose.clone(),
            monitoring: node.monitoring.clone(),
        }
    }

    /// One node at `now`; `None` if unknown.
    pub fn node_view(&mut self, name: &str, now: f64) -> Option<NodeView> {
        self.tick(now);
        let placement = self.placement();
        let node = placement.node(name)?;
        Some(self.view_of(&placement, node))
    }

    /// Every instance at `now`.
    pub fn instance_views(&mut self, now: f64) -> Vec<InstanceView> {
        self.tick(now);
        self.instances_slice()
            .iter()
            .map(|instance| InstanceView {
                name: instance.name.clone(),
                uuid: instance.uuid.clone(),
                primary: instance.primary.clone(),
                secondaries: instance.secondaries.clone(),
                disk_template: instance.disk_template,
                memory: instance.memory,
                disk: instance.disk,
                vcpus: instance.vcpus,
                status: self.instance_status(instance).name().to_owned(),
                tags: instance.tags.iter().cloned().collect(),
            })
            .collect()
    }

    /// Every job at `now`, archived ones included.
    pub fn job_views(&mut self, now: f64) -> Vec<JobView> {
        self.jobs(now).map(JobView::of).collect()
    }

    /// One job at `now`; `None` if unknown.
    pub fn job_view(&mut self, id: JobId, now: f64) -> Option<JobView> {
        self.job(id, now).map(JobView::of)
    }
}
