//! The simulated job queue.
//!
//! It behaves like Ganeti's: increasing integer ids; a job runs for the cluster's
//! `job_seconds`, its opcodes one after the other, each taking an equal share; a job whose
//! opcodes touch a node or instance that an earlier unfinished job also touches waits
//! (`waiting`) until that job is finalized, as Ganeti's locks make it. Effects happen when
//! an opcode finishes. Nothing runs in the background: `JobQueue::advance` replays the
//! events up to the requested time, in time order.
//!
//! For tests, faults can be injected per opcode: the next jobs containing it either fail
//! ([`SimCluster::inject_fault`]) or hang ([`SimCluster::inject_hang`]): the opcode stays
//! `running`, and the job keeps its locks, until [`SimCluster::release_hung_jobs`].

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
    /// Index of the opcode that hangs because of an injected hang: it runs until released.
    pub hang_at: Option<usize>,
    /// When the hang was released; the hung opcode then ends at its normal end or at the
    /// release, whichever is later.
    pub released: Option<f64>,
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

    /// When the running opcode finishes; `None` while it hangs.
    fn running_op_end(&self) -> Option<f64> {
        let index = self.running_op()?;
        let op = &self.ops[index];
        let end = op.started.unwrap_or(self.received) + self.op_seconds;
        if self.hang_at == Some(index) {
            return self.released.map(|released| end.max(released));
        }
        Some(end)
    }

    /// Marked to hang, not yet released and not finalized.
    pub fn is_hung(&self) -> bool {
        self.hang_at.is_some() && self.released.is_none() && self.ended.is_none()
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
    /// Opcode id → how many more jobs containing it must hang.
    hangs: BTreeMap<String, u32>,
    /// Refuse submissions (`SetDrainFlag`).
    pub(crate) drained: bool,
}

/// Consume one pending fault for a job of `ops`: the index of its first opcode with a
/// pending fault, if any (each faulted opcode id present in the job uses up one).
fn consume_fault(pending: &mut BTreeMap<String, u32>, ops: &[(Value, OpBody)]) -> Option<usize> {
    let mut at = None;
    let mut consumed = BTreeSet::new();
    for (index, (_, body)) in ops.iter().enumerate() {
        let op_id = body.op_id();
        if consumed.contains(op_id) {
            continue;
        }
        if let Some(remaining) = pending.get_mut(op_id).filter(|n| **n > 0) {
            *remaining -= 1;
            consumed.insert(op_id);
            at = Some(at.unwrap_or(index));
        }
    }
    at
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
        let fault_at = consume_fault(&mut self.queue.faults, &ops);
        let hang_at = consume_fault(&mut self.queue.hangs, &ops);
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
                hang_at,
                released: None,
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

    /// Make the next `count` jobs containing opcode `op_id` hang: the first such opcode
    /// stays `running`, its job holding its locks (so later jobs on the same nodes stay
    /// `waiting`), until [`SimCluster::release_hung_jobs`]. A count of 0 withdraws the hang.
    pub fn inject_hang(&mut self, op_id: &str, count: u32) {
        if count == 0 {
            self.queue.hangs.remove(op_id);
        } else {
            self.queue.hangs.insert(op_id.to_owned(), count);
        }
    }

    /// Hangs still pending per opcode id.
    pub fn pending_hangs(&self) -> BTreeMap<String, u32> {
        self.queue.hangs.clone()
    }

    /// Ids of the unfinished jobs marked to hang at `now` (running their hung opcode or
    /// yet to reach it), in id order.
    pub fn hung_jobs(&mut self, now: f64) -> Vec<JobId> {
        self.jobs(now)
            .filter(|job| job.is_hung())
            .map(|job| job.id)
            .collect()
    }

    /// Let every hung job go on at `now`: a hung opcode finishes (successfully, unless a
    /// fault says otherwise) at `now` or at its normal end if that is later, and the rest
    /// of its job runs as usual. Pending hangs are withdrawn too, so nothing hangs any more.
    /// The ids of the released jobs.
    pub fn release_hung_jobs(&mut self, now: f64) -> Vec<JobId> {
        self.tick(now);
        let at = self.queue.time;
        self.queue.hangs.clear();
        let mut released = Vec::new();
        for job in self.queue.jobs.values_mut() {
            if job.is_hung() {
                job.released = Some(at);
                released.push(job.id);
            }
        }
        // Released opcodes whose end is already due finish now, in time order.
        self.tick(now);
        released
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

    /// Cancel a job like Ganeti 3.0's luxid (`CancelJob` without `kill`), answering
    /// `(canceled, message)` with luxid's messages (`src/Ganeti/Query/Server.hs`,
    /// `JQueue.hs`): a waiting job is canceled; a running job is only told (it goes on);
    /// a finished or unknown job is not in the queue any more.
    /// A canceled job releases its locks, so jobs waiting for them may start.
    pub fn cancel_job(&mut self, id: JobId, now: f64) -> (bool, String) {
        self.tick(now);
        let at = self.queue.time;
        let Some(job) = self
            .queue
            .jobs
            .get_mut(&id.0)
            .filter(|job| job.ended.is_none())
        else {
            return (false, format!("Job {id} not found in queue"));
        };
        // The simulator hands every job over at once, so an unstarted job is `waiting` (for
        // locks), never `queued`: luxid then has the job process cancel itself.
        if job.status() != JobStatus::Waiting {
            return (
                false,
                "Job no longer waiting, can't cancel (informed it anyway)".into(),
            );
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
        (true, "Job successfully cancelled".to_owned())
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
        let after = sim.submit_job(vec![tag("node2", "c")], 100.0).expect("ok");
        assert_eq!(
            sim.cancel_job(running, 101.0),
            (
                false,
                "Job no longer waiting, can't cancel (informed it anyway)".to_owned()
            )
        );
        assert_eq!(
            sim.cancel_job(waiting, 101.0),
            (true, "Job successfully cancelled".to_owned())
        );
        let job = sim.job(waiting, 101.0).expect("known");
        assert_eq!(job.status(), JobStatus::Canceled);
        assert_eq!(job.ops[0].result, json!("Job canceled by request"));
        assert_eq!((job.started, job.ended), (None, Some(101.0)));
        // The canceled job's locks are released: the next one runs right after the first.
        assert_eq!(sim.job_status(after, 110.0), Some(JobStatus::Running));
        assert_eq!(sim.job(after, 110.0).expect("known").started, Some(110.0));
        assert_eq!(sim.job_status(waiting, 200.0), Some(JobStatus::Canceled));
        assert!(!sim.snapshot(200.0).nodes[1].tags.contains("b"));
        assert!(sim.snapshot(200.0).nodes[1].tags.contains("c"));
        for finished in [running, waiting, JobId(77)] {
            assert_eq!(
                sim.cancel_job(finished, 200.0),
                (false, format!("Job {finished} not found in queue"))
            );
        }
        assert_eq!(sim.job_status(running, 200.0), Some(JobStatus::Success));
    }

    #[test]
    fn a_hung_job_runs_and_holds_its_locks_until_released() {
        let mut sim = sim(10.0);
        sim.inject_hang("OP_TAGS_SET", 1);
        let delay = Opcode {
            body: OpBody::TestDelay {
                duration: 1.0,
                on_master: true,
            },
            reason: vec![],
        };
        // Two opcodes of the hanging kind: the job uses up one hang, at the first of them.
        let hung = sim
            .submit_job(vec![delay, tag("node2", "a"), tag("node2", "b")], 100.0)
            .expect("ok");
        assert_eq!(sim.pending_hangs()["OP_TAGS_SET"], 0);
        let blocked = sim.submit_job(vec![tag("node2", "c")], 101.0).expect("ok");
        let elsewhere = sim.submit_job(vec![tag("node3", "d")], 101.0).expect("ok");
        let later = 100.0 + 1e6;
        let job = sim.job(hung, later).expect("known");
        let statuses: Vec<_> = job.ops.iter().map(|op| op.status).collect();
        assert_eq!(
            statuses,
            [JobStatus::Success, JobStatus::Running, JobStatus::Queued]
        );
        assert_eq!(sim.job_status(blocked, later), Some(JobStatus::Waiting));
        assert_eq!(sim.job_status(elsewhere, later), Some(JobStatus::Success));
        assert_eq!(sim.hung_jobs(later), [hung]);
        // Not cancelable while it runs; the waiting job behind it is.
        assert!(!sim.cancel_job(hung, later).0);
        assert!(sim.cancel_job(blocked, later).0);
        let next = sim.submit_job(vec![tag("node2", "e")], later).expect("ok");
        assert_eq!(sim.job_status(next, later), Some(JobStatus::Waiting));

        assert_eq!(sim.release_hung_jobs(later), [hung]);
        assert!(sim.hung_jobs(later).is_empty());
        let job = sim.job(hung, later).expect("known");
        // The hung opcode ends at the release; the next one takes its normal share.
        assert_eq!(job.ops[1].status, JobStatus::Success);
        assert_eq!(job.ops[1].ended, Some(later));
        assert_eq!(job.ops[2].status, JobStatus::Running);
        let share = 10.0 / 3.0;
        assert_eq!(
            sim.job_status(hung, later + share),
            Some(JobStatus::Success)
        );
        assert_eq!(
            sim.job_status(next, later + share),
            Some(JobStatus::Running)
        );
        assert_eq!(
            sim.job_status(next, later + share + 10.0),
            Some(JobStatus::Success)
        );
        let tags = &sim.snapshot(later + share + 10.0).nodes[1].tags;
        assert!(tags.contains("a") && tags.contains("b") && tags.contains("e"));
        assert!(!tags.contains("c"));
    }

    #[test]
    fn a_release_before_the_hang_is_reached_drops_it_and_pending_hangs() {
        let mut sim = sim(10.0);
        sim.inject_hang("OP_TAGS_SET", 3);
        let first = sim.submit_job(vec![tag("node2", "a")], 100.0).expect("ok");
        let second = sim.submit_job(vec![tag("node2", "b")], 100.0).expect("ok");
        assert_eq!(sim.hung_jobs(100.0), [first, second]);
        assert_eq!(sim.release_hung_jobs(105.0), [first, second]);
        assert!(sim.pending_hangs().is_empty());
        // The first ends at its normal end, the second then runs its normal length.
        assert_eq!(sim.job(first, 110.0).expect("known").ended, Some(110.0));
        assert_eq!(sim.job_status(second, 119.9), Some(JobStatus::Running));
        assert_eq!(sim.job_status(second, 120.0), Some(JobStatus::Success));
        let third = sim.submit_job(vec![tag("node2", "c")], 120.0).expect("ok");
        assert_eq!(sim.job_status(third, 130.0), Some(JobStatus::Success));
        assert!(sim.release_hung_jobs(130.0).is_empty());
    }

    #[test]
    fn a_hang_and_a_failure_of_the_same_job_come_in_opcode_order() {
        let mut sim = sim(0.0);
        sim.inject_hang("OP_TAGS_SET", 1);
        sim.inject_fault("OP_TAGS_SET", 1);
        let id = sim.submit_job(vec![tag("node2", "a")], 100.0).expect("ok");
        assert_eq!(sim.job_status(id, 500.0), Some(JobStatus::Running));
        sim.release_hung_jobs(500.0);
        let job = sim.job(id, 500.0).expect("known");
        assert_eq!(job.status(), JobStatus::Error);
        assert_eq!(job.ended, Some(500.0));
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
