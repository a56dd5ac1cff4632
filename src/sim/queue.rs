//! The simulated job queue.
//!
//! It behaves like Ganeti's: increasing integer ids; a job runs for the cluster's
//! `job_seconds`, its opcodes one after the other, each taking an equal share; a job whose
//! opcodes touch a node or instance that an earlier unfinished job also touches waits
//! (`waiting`) until that job is finalized, as Ganeti's locks make it. Effects happen when
//! an opcode finishes. Nothing runs in the background: [`JobQueue::advance`] replays the
//! events up to the requested time, in time order.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::{ganeti_timestamp, unix_to_ns, SimCluster, SimError};
use crate::model::job::{JobId, JobStatus};
use crate::model::opcode::{OpBody, Opcode};

/// One opcode of a job, with its progress.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedOp {
    /// The opcode as submitted, with luxid's entry appended to its reason trail.
    pub input: Value,
    /// The decoded opcode.
    pub body: OpBody,
    /// Opcode status.
    pub status: JobStatus,
    /// Result: the LU's result, an encoded exception, or null.
    pub result: Value,
    /// Log entries `(serial, time, message)`.
    pub log: Vec<(u64, f64, String)>,
    /// When the opcode started.
    pub started: Option<f64>,
    /// When the opcode finished.
    pub ended: Option<f64>,
}

/// A job in the simulated queue.
#[derive(Debug, Clone, PartialEq)]
pub struct SimJob {
    /// The job id.
    pub id: JobId,
    /// Its opcodes, in order.
    pub ops: Vec<QueuedOp>,
    /// When it was submitted.
    pub received: f64,
    /// When it started running.
    pub started: Option<f64>,
    /// When it was finalized.
    pub ended: Option<f64>,
    /// Seconds each opcode takes.
    pub op_seconds: f64,
    /// Lock names (`node/x`, `instance/y`, ...) held from start to end.
    pub locks: BTreeSet<String>,
    /// Index of the opcode that fails because of an injected fault.
    pub fault_at: Option<usize>,
    /// Archived jobs are hidden from "all jobs" listings.
    pub archived: bool,
}

impl SimJob {
    /// The job status, computed from the opcode statuses exactly like Ganeti's
    /// `calcJobStatus`.
    pub fn status(&self) -> JobStatus {
        let mut candidate = JobStatus::Queued;
        let mut all_success = true;
        for op in &self.ops {
            match op.status {
                JobStatus::Error | JobStatus::Canceling | JobStatus::Canceled => return op.status,
                JobStatus::Success => {}
                JobStatus::Queued => all_success = false,
                other => {
                    candidate = other;
                    all_success = false;
                }
            }
        }
        if all_success {
            JobStatus::Success
        } else {
            candidate
        }
    }

    /// Ganeti's per-opcode summary, e.g. `NODE_SET_PARAMS(node3)`.
    pub fn summaries(&self) -> Vec<String> {
        self.ops.iter().map(|op| summary(&op.body)).collect()
    }

    /// The reason trail of each opcode.
    pub fn reason_trails(&self) -> Vec<Value> {
        self.ops
            .iter()
            .map(|op| op.input.get("reason").cloned().unwrap_or_else(|| json!([])))
            .collect()
    }

    /// All log entries as Luxi sends them: `[serial, [sec, usec], "message", text]`.
    pub fn log_entries(&self) -> Vec<Value> {
        self.ops
            .iter()
            .flat_map(|op| op.log.iter().map(log_entry))
            .collect()
    }

    fn running_op(&self) -> Option<usize> {
        self.ops
            .iter()
            .position(|op| op.status == JobStatus::Running)
    }

    /// When the running opcode finishes.
    fn running_op_end(&self) -> Option<f64> {
        let op = &self.ops[self.running_op()?];
        Some(op.started.unwrap_or(self.received) + self.op_seconds)
    }

    fn next_log_serial(&self) -> u64 {
        self.ops
            .iter()
            .flat_map(|op| op.log.iter().map(|entry| entry.0))
            .max()
            .unwrap_or(0)
            + 1
    }
}

/// One log entry in Luxi's shape.
pub(crate) fn log_entry(entry: &(u64, f64, String)) -> Value {
    json!([entry.0, ganeti_timestamp(entry.1), "message", entry.2])
}

/// Ganeti's summary of one opcode: the name without `OP_` and the main argument.
pub(crate) fn summary(body: &OpBody) -> String {
    let name = body.op_id().trim_start_matches("OP_");
    let argument = match body {
        OpBody::NodeSetParams { node_name, .. } | OpBody::RepairCommand { node_name, .. } => {
            node_name.clone()
        }
        OpBody::InstanceMigrate { instance_name, .. }
        | OpBody::InstanceFailover { instance_name, .. }
        | OpBody::InstanceReplaceDisks { instance_name, .. }
        | OpBody::InstanceMove { instance_name, .. }
        | OpBody::InstanceRecreateDisks { instance_name, .. }
        | OpBody::InstanceReinstall { instance_name, .. } => instance_name.clone(),
        OpBody::TagsSet { kind, name, .. } | OpBody::TagsDel { kind, name, .. } => name
            .clone()
            .unwrap_or_else(|| format!("{kind:?}").to_lowercase()),
        // Python prints floats with at least one decimal, like Rust's Debug.
        OpBody::TestDelay { duration, .. } => format!("{duration:?}"),
    };
    format!("{name}({argument})")
}

/// The queue proper. Lives inside [`SimCluster`].
#[derive(Debug, Clone, Default)]
pub(crate) struct JobQueue {
    /// Seconds a job submitted now will take.
    pub(crate) job_seconds: f64,
    /// The time the queue has been advanced to.
    time: f64,
    next_id: u64,
    jobs: BTreeMap<u64, SimJob>,
    /// Ids of jobs that are not finalized, in submission order.
    active: BTreeSet<u64>,
    /// Opcode id → how many more jobs containing it must fail.
    faults: BTreeMap<String, u32>,
    /// Refuse submissions (`SetDrainFlag`).
    pub(crate) drained: bool,
}

/// The encoded exception of opcodes after a failed one, as Ganeti records it.
fn preceding_failed() -> Value {
    json!(["OpExecError", ["Preceding opcode failed"]])
}

impl JobQueue {
    pub(crate) fn new(job_seconds: f64, now: f64) -> Self {
        JobQueue {
            job_seconds,
            time: if now.is_finite() { now } else { 0.0 },
            next_id: 1,
            ..JobQueue::default()
        }
    }

    /// Replay every start and opcode completion up to `now`, in time order (ties by job id).
    pub(crate) fn advance(&mut self, sim: &mut SimCluster, now: f64) {
        let now = if now.is_finite() {
            now.max(self.time)
        } else {
            self.time
        };
        loop {
            self.start_unblocked_jobs();
            let next = self
                .active
                .iter()
                .filter_map(|id| Some((self.jobs.get(id)?.running_op_end()?, *id)))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            match next {
                Some((at, id)) if at <= now => {
                    self.time = self.time.max(at);
                    self.finish_running_op(sim, id);
                }
                _ => break,
            }
        }
        self.time = now;
        self.start_unblocked_jobs();
    }

    /// Start every job that no earlier unfinished job blocks; mark the others waiting.
    fn start_unblocked_jobs(&mut self) {
        let mut held: BTreeSet<String> = BTreeSet::new();
        for id in &self.active {
            let Some(job) = self.jobs.get_mut(id) else {
                continue;
            };
            if job.started.is_none() {
                if job.locks.is_disjoint(&held) {
                    job.started = Some(self.time);
                    if let Some(first) = job.ops.first_mut() {
                        first.status = JobStatus::Running;
                        first.started = Some(self.time);
                    }
                } else if let Some(first) = job.ops.first_mut() {
                    first.status = JobStatus::Waiting;
                }
            }
            held.extend(job.locks.iter().cloned());
        }
    }

    fn finish_running_op(&mut self, sim: &mut SimCluster, id: u64) {
        let at = self.time;
        let Some(job) = self.jobs.get_mut(&id) else {
            self.active.remove(&id);
            return;
        };
        let Some(index) = job.running_op() else {
            return;
        };
        let outcome = if job.fault_at == Some(index) {
            Err(super::ops::OpFailure::injected(job.ops[index].body.op_id()))
        } else {
            sim.execute(&job.ops[index].body, job.id, at)
        };
        let mut serial = job.next_log_serial();
        let op = &mut job.ops[index];
        op.ended = Some(at);
        match outcome {
            Ok(done) => {
                op.status = JobStatus::Success;
                op.result = done.result;
                for message in done.log {
                    op.log.push((serial, at, message));
                    serial += 1;
                }
                if let Some(next) = job.ops.get_mut(index + 1) {
                    next.status = JobStatus::Running;
                    next.started = Some(at);
                } else {
                    job.ended = Some(at);
                    self.active.remove(&id);
                }
            }
            Err(failure) => {
                op.status = JobStatus::Error;
                op.result = failure.encode();
                for later in &mut job.ops[index + 1..] {
                    later.status = JobStatus::Error;
                    later.result = preceding_failed();
                    later.ended = Some(at);
                }
                job.ended = Some(at);
                self.active.remove(&id);
            }
        }
    }
}

impl SimCluster {
    /// Submit one job (Luxi `SubmitJob`); its opcodes get luxid's reason-trail entry.
    pub fn submit_job(&mut self, ops: Vec<Opcode>, now: f64) -> Result<JobId, SimError> {
        let inputs = ops
            .into_iter()
            .map(|op| {
                let input = serde_json::to_value(&op).unwrap_or_else(|_| json!({}));
                (input, op.body)
            })
            .collect();
        self.submit_inputs(inputs, now)
    }

    /// Submit one job given each opcode's submitted JSON and its decoded form.
    pub(crate) fn submit_inputs(
        &mut self,
        ops: Vec<(Value, OpBody)>,
        now: f64,
    ) -> Result<JobId, SimError> {
        self.tick(now);
        if ops.is_empty() {
            return Err(SimError::EmptyJob);
        }
        if self.queue.drained {
            return Err(SimError::QueueDrained);
        }
        let id = self.queue.next_id;
        self.queue.next_id += 1;
        let received = self.queue.time;
        let received_ns = unix_to_ns(received);

        let mut locks = BTreeSet::new();
        for (_, body) in &ops {
            locks.extend(self.op_locks(body));
        }
        // A job containing a faulted opcode consumes one fault of that opcode.
        let mut fault_at = None;
        for (index, (_, body)) in ops.iter().enumerate() {
            if let Some(remaining) = self.queue.faults.get_mut(body.op_id()) {
                if *remaining > 0 {
                    *remaining -= 1;
                    fault_at = Some(fault_at.unwrap_or(index));
                }
            }
        }
        let op_seconds = self.queue.job_seconds / ops.len() as f64;
        let queued_ops = ops
            .into_iter()
            .enumerate()
            .map(|(index, (mut input, body))| {
                let snake = body.op_id().trim_start_matches("OP_").to_lowercase();
                let entry = json!([
                    format!("gnt:opcode:{snake}"),
                    format!("job={id};index={index}"),
                    received_ns
                ]);
                if let Value::Object(fields) = &mut input {
                    match fields.get_mut("reason") {
                        Some(Value::Array(trail)) => trail.push(entry),
                        _ => {
                            fields.insert("reason".to_owned(), json!([entry]));
                        }
                    }
                }
                QueuedOp {
                    input,
                    body,
                    status: JobStatus::Queued,
                    result: Value::Null,
                    log: Vec::new(),
                    started: None,
                    ended: None,
                }
            })
            .collect();
        self.queue.jobs.insert(
            id,
            SimJob {
                id: JobId(id),
                ops: queued_ops,
                received,
                started: None,
                ended: None,
                op_seconds,
                locks,
                fault_at,
                archived: false,
            },
        );
        self.queue.active.insert(id);
        // Like luxid's scheduler, pick the job up right away (or park it waiting for locks).
        self.tick(now);
        Ok(JobId(id))
    }

    /// Make the next `count` jobs containing opcode `op_id` fail (the first such opcode
    /// errors with an injected-fault message).
    pub fn inject_fault(&mut self, op_id: &str, count: u32) {
        if count == 0 {
            self.queue.faults.remove(op_id);
        } else {
            self.queue.faults.insert(op_id.to_owned(), count);
        }
    }

    /// Faults still pending per opcode id.
    pub fn pending_faults(&self) -> BTreeMap<String, u32> {
        self.queue.faults.clone()
    }

    /// Refuse (`true`) or accept (`false`) new jobs, like `gnt-cluster queue drain`.
    pub fn set_drain_flag(&mut self, drained: bool) {
        self.queue.drained = drained;
    }

    /// Whether new jobs are refused.
    pub fn drain_flag(&self) -> bool {
        self.queue.drained
    }

    /// A job at `now`; `None` for an unknown id.
    pub fn job(&mut self, id: JobId, now: f64) -> Option<&SimJob> {
        self.tick(now);
        self.queue.jobs.get(&id.0)
    }

    /// Every job at `now`, archived ones included, in id order.
    pub fn jobs(&mut self, now: f64) -> impl Iterator<Item = &SimJob> + '_ {
        self.tick(now);
        self.queue.jobs.values()
    }

    /// Status of a job at `now`; `None` for an unknown id.
    pub fn job_status(&mut self, id: JobId, now: f64) -> Option<JobStatus> {
        self.job(id, now).map(SimJob::status)
    }

    /// Cancel a queued or waiting job. `None` for an unknown id; otherwise luxid's answer
    /// `(canceled, message)`.
    pub fn cancel_job(&mut self, id: JobId, now: f64) -> Option<(bool, String)> {
        self.tick(now);
        let at = self.queue.time;
        let job = self.queue.jobs.get_mut(&id.0)?;
        if job.started.is_some() || job.ended.is_some() {
            return Some((false, format!("Job {id} is no longer waiting in the queue")));
        }
        for op in &mut job.ops {
            op.status = JobStatus::Canceled;
            op.result = json!("Job canceled by request");
            op.ended = Some(at);
        }
        job.ended = Some(at);
        self.queue.active.remove(&id.0);
        // Jobs that waited for this one's locks may start now.
        self.tick(now);
        Some((true, format!("Job {id} canceled")))
    }

    /// Archive a finalized job: it stays queryable by id but leaves "all jobs" listings.
    pub fn archive_job(&mut self, id: JobId, now: f64) -> bool {
        self.tick(now);
        match self.queue.jobs.get_mut(&id.0) {
            Some(job) if job.status().is_finalized() => {
                job.archived = true;
                true
            }
            _ => false,
        }
    }

    /// Every job, without advancing time (for queries that already did).
    pub(crate) fn queue_jobs(&self) -> impl Iterator<Item = &SimJob> + '_ {
        self.queue.jobs.values()
    }

    /// One job, without advancing time.
    pub(crate) fn queue_job(&self, id: u64) -> Option<&SimJob> {
        self.queue.jobs.get(&id)
    }

    /// Ids of jobs with a reason-trail entry whose text contains `marker`.
    pub fn find_jobs_by_reason(&mut self, marker: &str, now: f64) -> Vec<JobId> {
        self.jobs(now)
            .filter(|job| {
                job.reason_trails().iter().any(|trail| {
                    trail.as_array().is_some_and(|entries| {
                        entries.iter().any(|entry| {
                            entry
                                .get(1)
                                .and_then(Value::as_str)
                                .is_some_and(|text| text.contains(marker))
                        })
                    })
                })
            })
            .map(|job| job.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::opcode::OpBody;
    use crate::sim::SimSpec;

    fn sim(job_seconds: f64) -> SimCluster {
        SimCluster::generate(
            &SimSpec {
                nodes: 3,
                instances: 6,
                seed: 11,
                job_seconds,
                ..SimSpec::default()
            },
            100.0,
        )
    }

    fn tag(node: &str, tag: &str) -> Opcode {
        OpBody::tag_node(node, tag).with_reason("test".into(), 1)
    }

    #[test]
    fn job_runs_for_job_seconds_then_succeeds() {
        let mut sim = sim(10.0);
        let id = sim
            .submit_job(vec![tag("node2", "a")], 100.0)
            .expect("accepted");
        assert_eq!(id, JobId(1));
        assert_eq!(sim.job_status(id, 100.0), Some(JobStatus::Running));
        assert_eq!(sim.job_status(id, 109.9), Some(JobStatus::Running));
        assert!(!sim
            .snapshot(109.9)
            .node("node2")
            .expect("exists")
            .tags
            .contains("a"));
        assert_eq!(sim.job_status(id, 110.0), Some(JobStatus::Success));
        assert!(sim
            .snapshot(110.0)
            .node("node2")
            .expect("exists")
            .tags
            .contains("a"));
        let job = sim.job(id, 110.0).expect("known");
        assert_eq!(job.started, Some(100.0));
        assert_eq!(job.ended, Some(110.0));
        assert_eq!(sim.job_status(JobId(99), 110.0), None);
    }

    #[test]
    fn zero_second_jobs_finish_immediately() {
        let mut sim = sim(0.0);
        let id = sim.submit_job(vec![tag("node2", "a"), tag("node3", "b")], 100.0);
        let id = id.expect("accepted");
        assert_eq!(sim.job_status(id, 100.0), Some(JobStatus::Success));
    }

    #[test]
    fn ops_take_equal_shares_in_order() {
        let mut sim = sim(10.0);
        let id = sim
            .submit_job(vec![tag("node2", "first"), tag("node2", "second")], 100.0)
            .expect("accepted");
        let job = sim.job(id, 105.0).expect("known");
        assert_eq!(job.ops[0].status, JobStatus::Success);
        assert_eq!(job.ops[1].status, JobStatus::Running);
        let tags = &sim.snapshot(105.0).nodes[1].tags;
        assert!(tags.contains("first") && !tags.contains("second"));
    }

    #[test]
    fn conflicting_jobs_wait_for_the_earlier_one() {
        let mut sim = sim(10.0);
        let first = sim.submit_job(vec![tag("node2", "a")], 100.0).expect("ok");
        let second = sim.submit_job(vec![tag("node2", "b")], 101.0).expect("ok");
        let unrelated = sim.submit_job(vec![tag("node3", "c")], 101.0).expect("ok");
        assert_eq!(sim.job_status(second, 101.0), Some(JobStatus::Waiting));
        assert_eq!(sim.job_status(unrelated, 101.0), Some(JobStatus::Running));
        assert_eq!(sim.job_status(first, 110.0), Some(JobStatus::Success));
        assert_eq!(sim.job_status(second, 110.0), Some(JobStatus::Running));
        let job = sim.job(second, 120.0).expect("known");
        assert_eq!(job.status(), JobStatus::Success);
        assert_eq!(job.started, Some(110.0));
        assert_eq!(job.ended, Some(120.0));
    }

    #[test]
    fn reason_trail_gets_luxid_entry() {
        let mut sim = sim(1.0);
        sim.submit_job(vec![tag("node1", "x")], 100.0).expect("ok");
        let id = sim.submit_job(vec![tag("node1", "y"), tag("node2", "z")], 100.5);
        let job = sim.job(id.expect("ok"), 100.5).expect("known");
        let trail = &job.reason_trails()[1];
        assert_eq!(trail[0], json!(["gnt:daemon:maintd", "test", 1]));
        assert_eq!(
            trail[1],
            json!(["gnt:opcode:tags_set", "job=2;index=1", 100_500_000_000i64])
        );
        assert_eq!(job.summaries(), ["TAGS_SET(node1)", "TAGS_SET(node2)"]);
    }

    #[test]
    fn cancel_only_before_start() {
        let mut sim = sim(10.0);
        let running = sim.submit_job(vec![tag("node2", "a")], 100.0).expect("ok");
        let waiting = sim.submit_job(vec![tag("node2", "b")], 100.0).expect("ok");
        let (ok, _) = sim.cancel_job(running, 101.0).expect("known");
        assert!(!ok);
        let (ok, message) = sim.cancel_job(waiting, 101.0).expect("known");
        assert!(ok, "{message}");
        assert_eq!(sim.job_status(waiting, 200.0), Some(JobStatus::Canceled));
        assert!(!sim.snapshot(200.0).nodes[1].tags.contains("b"));
        assert_eq!(sim.cancel_job(JobId(77), 200.0), None);
    }

    #[test]
    fn injected_fault_fails_the_next_jobs_with_that_opcode() {
        let mut sim = sim(0.0);
        sim.inject_fault("OP_TAGS_SET", 1);
        let delay = Opcode {
            body: OpBody::TestDelay {
                duration: 1.0,
                on_master: true,
            },
            reason: vec![],
        };
        let failed = sim
            .submit_job(vec![delay.clone(), tag("node2", "a"), delay], 100.0)
            .expect("ok");
        let job = sim.job(failed, 100.0).expect("known");
        assert_eq!(job.status(), JobStatus::Error);
        let statuses: Vec<_> = job.ops.iter().map(|op| op.status).collect();
        assert_eq!(
            statuses,
            [JobStatus::Success, JobStatus::Error, JobStatus::Error]
        );
        assert_eq!(job.ops[1].result[0], "OpExecError");
        assert!(job.ops[1].result[1][0]
            .as_str()
            .is_some_and(|m| m.contains("njected fault")));
        assert_eq!(job.ops[2].result, preceding_failed());
        let next = sim.submit_job(vec![tag("node2", "a")], 100.0).expect("ok");
        assert_eq!(sim.job_status(next, 100.0), Some(JobStatus::Success));
        assert!(sim.pending_faults()["OP_TAGS_SET"] == 0);
    }

    #[test]
    fn drained_queue_refuses_jobs_and_reason_search_finds_markers() {
        let mut sim = sim(0.0);
        sim.submit_job(
            vec![OpBody::tag_node("node1", "t").with_reason("incident abc-123".into(), 5)],
            100.0,
        )
        .expect("ok");
        assert_eq!(sim.find_jobs_by_reason("abc-123", 100.0), [JobId(1)]);
        assert!(sim.find_jobs_by_reason("zzz", 100.0).is_empty());
        sim.set_drain_flag(true);
        assert_eq!(
            sim.submit_job(vec![tag("node1", "u")], 100.0),
            Err(SimError::QueueDrained)
        );
        assert_eq!(sim.submit_job(vec![], 100.0), Err(SimError::EmptyJob));
    }

    #[test]
    fn job_status_follows_ganeti_rules() {
        let mut sim = sim(10.0);
        let id = sim.submit_job(vec![tag("node1", "a"), tag("node1", "b")], 100.0);
        let mut job = sim.job(id.expect("ok"), 100.0).expect("known").clone();
        job.ops[0].status = JobStatus::Success;
        job.ops[1].status = JobStatus::Queued;
        assert_eq!(job.status(), JobStatus::Queued);
        job.ops[1].status = JobStatus::Canceled;
        assert_eq!(job.status(), JobStatus::Canceled);
    }
}
