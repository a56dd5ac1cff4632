//! harep: detection of broken instances and the auto-repair tag state machine.
//!
//! This reproduces what Ganeti's `harep` (htools 3.0.2) and the 2.17 maintd's harep round
//! decide and tag, as plain functions over plain inputs (Ganeti's
//! `src/Ganeti/HTools/Program/Harep.hs` and 2.17's `src/Ganeti/MaintD/Autorepairs.hs`; the
//! tags are those of `design-autorepair`). All state lives in the instances' tags:
//!
//! - `ganeti:watcher:autorepair:<type>` on the cluster, a node group or an instance allows
//!   repairs up to `<type>` ([`RepairType`]); `ganeti:watcher:autorepair:suspend[:<ts>]`
//!   suspends them. The instance's own tags win over its primary node's group's, which win
//!   over the cluster's ([`effective_policy`]).
//! - `ganeti:watcher:autorepair:pending:<type>:<uuid>:<ts>:<jobs>` records a submitted
//!   repair, `ganeti:watcher:autorepair:result:<type>:<uuid>:<ts>:<result>:<jobs>` a
//!   finished or refused one ([`RepairRecord`]).
//!
//! A round has three steps, driven by the caller because each needs the cluster:
//!
//! 1. [`HarepRound::start`] parses every instance's tags into a [`RepairState`] (an
//!    instance with an unfinished repair and a newer record is an error that aborts the
//!    round, as in harep) and detects broken instances ([`detect_broken`]).
//! 2. [`HarepRound::settle_pending`] takes the statuses of the jobs of pending repairs
//!    ([`HarepRound::jobs_to_query`]) and turns finished ones into `success`/`failure`
//!    results, returning the [`TagChanges`] to apply.
//! 3. [`HarepRound::plan_repairs`] decides, for each broken instance that is healthy by its
//!    tags, either to refuse (an `enoperm` result tag) or to submit one repair job
//!    ([`RepairJob`]); once the job is submitted, [`HarepRound::record_submission`] gives the
//!    `pending` tag carrying its id.
//!
//! Each [`TagChanges`] becomes up to two jobs, run one after the other: `OP_TAGS_SET` with
//! the new tag, then `OP_TAGS_DEL` with the tags it supersedes.
//!
//! Known differences from harep's JSON (not from its decisions): `OP_INSTANCE_REPLACE_DISKS`
//! is sent without `"iallocator": "hail"` (so Ganeti uses the cluster's default
//! iallocator) and `OP_TEST_DELAY` without `"no_locks": false` (which Ganeti 3.0 ignores),
//! because the shared opcode variants have no such fields.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use thiserror::Error;

use crate::model::cluster::DiskTemplate;
use crate::model::job::{JobId, JobStatus};
use crate::model::opcode::{OpBody, Opcode, ReplaceDisksMode, TagKind};

/// Prefix of every auto-repair tag; followed by a [`RepairType`] it enables repairs.
pub const TAG_PREFIX: &str = "ganeti:watcher:autorepair:";
/// Prefix of the tag recording a submitted repair.
pub const PENDING_TAG_PREFIX: &str = "ganeti:watcher:autorepair:pending:";
/// Prefix of the tag recording a finished or refused repair.
pub const RESULT_TAG_PREFIX: &str = "ganeti:watcher:autorepair:result:";
/// Prefix of the suspend tag; also matches `ganeti:watcher:autorepair:suspend` (forever).
pub const SUSPEND_TAG_PREFIX: &str = "ganeti:watcher:autorepair:suspend:";

/// Seconds of `OP_TEST_DELAY` put before the repair opcodes (harep's `--job-delay`
/// default; the 2.17 maintd always uses it). The delay lets the `pending` tag be set before
/// the repair takes the instance's locks.
pub const DEFAULT_JOB_DELAY_SECONDS: f64 = 10.0;
/// The iallocator harep names for the disks it recreates or moves.
pub const REPAIR_IALLOCATOR: &str = "hail";
/// Ganeti's default shutdown timeout, used by the failover repair.
pub const FAILOVER_SHUTDOWN_TIMEOUT: u64 = 120;
/// Reason-trail text of repair jobs (the 2.17 maintd's).
pub const REPAIR_REASON: &str = "harep-style repair";
/// Reason-trail text of `OP_TAGS_SET` jobs (the 2.17 maintd's).
pub const TAG_ADD_REASON: &str = "harep state tagging";
/// Reason-trail text of `OP_TAGS_DEL` jobs (the 2.17 maintd's).
pub const TAG_REMOVE_REASON: &str = "harep state tag removal";

/// Repairs, from least to most destructive; a policy allows every type up to its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RepairType {
    /// Replace the storage on a lost secondary (`fix-storage`).
    FixStorage,
    /// Live migration (`migrate`; allowed by policies, never detected by harep).
    Migrate,
    /// Fail over to the secondary (`failover`).
    Failover,
    /// Recreate the disks elsewhere and reinstall the OS (`reinstall`).
    Reinstall,
}

impl RepairType {
    /// Every type, least destructive first.
    pub const ALL: [RepairType; 4] = [
        RepairType::FixStorage,
        RepairType::Migrate,
        RepairType::Failover,
        RepairType::Reinstall,
    ];

    /// The spelling in tags.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairType::FixStorage => "fix-storage",
            RepairType::Migrate => "migrate",
            RepairType::Failover => "failover",
            RepairType::Reinstall => "reinstall",
        }
    }

    /// The type spelled `text` exactly, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for RepairType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of a repair. When records of one repair disagree, the greater one wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RepairResult {
    /// Refused: the policy allows only less destructive repairs (`enoperm`).
    Enoperm,
    /// Every job of the repair succeeded (`success`).
    Success,
    /// Some job of the repair did not succeed (`failure`).
    Failure,
}

impl RepairResult {
    /// Every result, in precedence order.
    pub const ALL: [RepairResult; 3] = [
        RepairResult::Enoperm,
        RepairResult::Success,
        RepairResult::Failure,
    ];

    /// The spelling in tags.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairResult::Enoperm => "enoperm",
            RepairResult::Success => "success",
            RepairResult::Failure => "failure",
        }
    }

    /// The result spelled `text` exactly, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|result| result.as_str() == text)
    }
}

impl fmt::Display for RepairResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long repairs are suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspension {
    /// Until the tag is removed.
    Forever,
    /// Until this Unix time (seconds).
    Until(i64),
}

/// What repairs an object's tags allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairPolicy {
    /// Repairs up to this type are allowed.
    Enabled(RepairType),
    /// No repair, not even one allowed at a wider scope.
    Suspended(Suspension),
    /// Nothing enabled anywhere: no repair.
    NotEnabled,
}

/// The policy one object's tags express at time `now`, or `None` if they say nothing.
///
/// A suspend tag without time (`…:suspend` or `…:suspend:`) wins; then the latest
/// suspension still in the future; then the least destructive enabled type. Expired
/// suspensions and unparsable remainders are ignored.
pub fn policy_from_tags<'a>(
    tags: impl IntoIterator<Item = &'a str>,
    now: i64,
) -> Option<RepairPolicy> {
    let mut least_enabled: Option<RepairType> = None;
    let mut suspended_forever = false;
    let mut latest_suspension: Option<i64> = None;
    for tag in tags {
        if let Some(kind) = chomp_prefix(TAG_PREFIX, tag).and_then(RepairType::parse) {
            least_enabled = Some(least_enabled.map_or(kind, |least| least.min(kind)));
        }
        if let Some(until) = chomp_prefix(SUSPEND_TAG_PREFIX, tag) {
            if until.is_empty() {
                suspended_forever = true;
            } else if let Some(until) = parse_haskell_integer(until) {
                if until > now {
                    latest_suspension = Some(latest_suspension.map_or(until, |t| t.max(until)));
                }
            }
        }
    }
    if suspended_forever {
        Some(RepairPolicy::Suspended(Suspension::Forever))
    } else if let Some(until) = latest_suspension {
        Some(RepairPolicy::Suspended(Suspension::Until(until)))
    } else {
        least_enabled.map(RepairPolicy::Enabled)
    }
}

/// An instance's policy: its own tags' opinion, else its primary node's group's, else the
/// cluster's, else [`RepairPolicy::NotEnabled`].
pub fn effective_policy<'a>(
    instance_tags: impl IntoIterator<Item = &'a str>,
    group_tags: impl IntoIterator<Item = &'a str>,
    cluster_tags: impl IntoIterator<Item = &'a str>,
    now: i64,
) -> RepairPolicy {
    policy_from_tags(instance_tags, now)
        .or_else(|| policy_from_tags(group_tags, now))
        .or_else(|| policy_from_tags(cluster_tags, now))
        .unwrap_or(RepairPolicy::NotEnabled)
}

/// One repair as recorded in a `pending` or `result` tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairRecord {
    /// What kind of repair.
    pub repair: RepairType,
    /// Identifies the repair episode; its pending and result tags share it.
    pub uuid: String,
    /// Unix seconds when the record was made.
    pub timestamp: i64,
    /// The repair's jobs.
    pub jobs: Vec<JobId>,
    /// `None` while pending.
    pub result: Option<RepairResult>,
    /// The tag carrying this record, as found on the instance or as it will be added.
    pub tag: String,
}

impl RepairRecord {
    /// A new record, with its tag formatted as harep does.
    pub fn new(
        repair: RepairType,
        uuid: String,
        timestamp: i64,
        jobs: Vec<JobId>,
        result: Option<RepairResult>,
    ) -> Self {
        let mut record = RepairRecord {
            repair,
            uuid,
            timestamp,
            jobs,
            result,
            tag: String::new(),
        };
        record.tag = record.format_tag();
        record
    }

    /// The tag for the record's fields: `pending:<type>:<uuid>:<ts>:<jobs>` or
    /// `result:<type>:<uuid>:<ts>:<result>:<jobs>` after [`TAG_PREFIX`], the job ids in
    /// decimal joined by `+` (empty without jobs).
    pub fn format_tag(&self) -> String {
        let jobs = self
            .jobs
            .iter()
            .map(JobId::to_string)
            .collect::<Vec<_>>()
            .join("+");
        let (repair, uuid, timestamp) = (self.repair, &self.uuid, self.timestamp);
        match self.result {
            None => format!("{PENDING_TAG_PREFIX}{repair}:{uuid}:{timestamp}:{jobs}"),
            Some(result) => {
                format!("{RESULT_TAG_PREFIX}{repair}:{uuid}:{timestamp}:{result}:{jobs}")
            }
        }
    }

    /// Parse a `pending` or `result` tag; `None` for any other tag and for malformed ones
    /// (wrong field count, unknown type or result, non-integer time, negative or
    /// non-integer job id), which harep ignores.
    ///
    /// Numbers are read like Haskell's `read`: an optional `-`, then decimal digits or a
    /// `0x`/`0o` literal. Job ids wrap modulo 2⁶⁴ like Haskell's `Int`; times beyond the
    /// 64-bit range saturate (Haskell keeps them exact).
    pub fn parse_tag(tag: &str) -> Option<Self> {
        if let Some(fields) = chomp_prefix(PENDING_TAG_PREFIX, tag) {
            if let [repair, uuid, timestamp, jobs] = haskell_split(fields, ':').as_slice() {
                return Self::parse_fields(tag, repair, uuid, timestamp, None, jobs);
            }
            return None;
        }
        let fields = chomp_prefix(RESULT_TAG_PREFIX, tag)?;
        match haskell_split(fields, ':').as_slice() {
            [repair, uuid, timestamp, result, jobs] => {
                let result = RepairResult::parse(result)?;
                Self::parse_fields(tag, repair, uuid, timestamp, Some(result), jobs)
            }
            _ => None,
        }
    }

    fn parse_fields(
        tag: &str,
        repair: &str,
        uuid: &str,
        timestamp: &str,
        result: Option<RepairResult>,
        jobs: &str,
    ) -> Option<Self> {
        let jobs = haskell_split(jobs, '+')
            .into_iter()
            .map(parse_job_id)
            .collect::<Option<Vec<_>>>()?;
        Some(RepairRecord {
            repair: RepairType::parse(repair)?,
            uuid: uuid.to_owned(),
            timestamp: parse_haskell_integer(timestamp)?,
            jobs,
            result,
            tag: tag.to_owned(),
        })
    }

    /// The record of a finished pending repair: same type, uuid and jobs, new result and
    /// time, and the matching tag.
    fn finished(&self, result: RepairResult, now: i64) -> Self {
        RepairRecord::new(
            self.repair,
            self.uuid.clone(),
            now,
            self.jobs.clone(),
            Some(result),
        )
    }
}

/// An instance's repair state, as harep names it in its summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairState {
    /// No unfinished or failed repair; the record of the latest one, if any.
    Healthy(Option<RepairRecord>),
    /// Broken, but the policy refused the repair (an `enoperm` record).
    NeedsRepair(RepairRecord),
    /// A repair was submitted and is not known to be finished.
    Pending(RepairRecord),
    /// A repair failed; harep leaves the instance alone until the tag is removed.
    Failed(RepairRecord),
}

impl RepairState {
    /// harep's name for the state: `Healthy`, `Needs repair`, `Pending repair`, `Failure`.
    pub fn name(&self) -> &'static str {
        match self {
            RepairState::Healthy(_) => "Healthy",
            RepairState::NeedsRepair(_) => "Needs repair",
            RepairState::Pending(_) => "Pending repair",
            RepairState::Failed(_) => "Failure",
        }
    }

    /// The record the state carries, if any.
    pub fn record(&self) -> Option<&RepairRecord> {
        match self {
            RepairState::Healthy(record) => record.as_ref(),
            RepairState::NeedsRepair(record)
            | RepairState::Pending(record)
            | RepairState::Failed(record) => Some(record),
        }
    }
}

/// Tags to change on one instance, applied as up to two jobs run one after the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagChanges {
    /// The instance.
    pub instance: String,
    /// The tag of the instance's new state, added first.
    pub add: Option<String>,
    /// Superseded tags, removed after, most recently superseded first.
    pub remove: Vec<String>,
}

impl TagChanges {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.add.is_none() && self.remove.is_empty()
    }

    /// The opcodes, one job each, in order: `OP_TAGS_SET` then `OP_TAGS_DEL` (each only if
    /// needed). harep waits for each job and stops if it fails.
    pub fn opcodes(&self) -> Vec<OpBody> {
        let name = Some(self.instance.clone());
        let add = self.add.iter().map(|tag| OpBody::TagsSet {
            kind: TagKind::Instance,
            name: name.clone(),
            tags: vec![tag.clone()],
        });
        let remove = (!self.remove.is_empty()).then(|| OpBody::TagsDel {
            kind: TagKind::Instance,
            name: name.clone(),
            tags: self.remove.clone(),
        });
        add.chain(remove).collect()
    }

    /// [`Self::opcodes`] as one-opcode jobs with the 2.17 maintd's reason trail.
    pub fn jobs(&self, timestamp_ns: i64) -> Vec<Vec<Opcode>> {
        self.opcodes()
            .into_iter()
            .map(|body| {
                let reason = match body {
                    OpBody::TagsDel { .. } => TAG_REMOVE_REASON,
                    _ => TAG_ADD_REASON,
                };
                vec![body.with_reason(reason.to_owned(), timestamp_ns)]
            })
            .collect()
    }
}

/// An instance's repair state with the tags it supersedes that are still to be removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRepair {
    /// The instance.
    pub instance: String,
    /// Its state.
    pub state: RepairState,
    /// Tags of superseded records, removed at the next commit; most recent first.
    pub tags_to_remove: Vec<String>,
}

impl InstanceRepair {
    /// The state harep derives from an instance's tags (in the order Ganeti lists them;
    /// the order only breaks ties between records of one repair with the same result
    /// and time).
    ///
    /// Records are grouped by uuid, groups taken by their earliest time (then by uuid), and
    /// each group stands for its record with the greatest (result, time). The first
    /// failure wins; a group after a pending one is an error; otherwise the last group
    /// decides, the ones before it are superseded.
    pub fn from_tags<'a>(
        instance: &str,
        tags: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, HarepError> {
        let mut records: Vec<RepairRecord> = tags
            .into_iter()
            .filter_map(RepairRecord::parse_tag)
            .collect();
        records.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        let mut episodes: Vec<Vec<RepairRecord>> = Vec::new();
        for record in records {
            match episodes.last_mut() {
                Some(episode) if episode[0].uuid == record.uuid => episode.push(record),
                _ => episodes.push(vec![record]),
            }
        }
        episodes.sort_by_key(|episode| episode.iter().map(|r| r.timestamp).min());

        let mut repair = InstanceRepair {
            instance: instance.to_owned(),
            state: RepairState::Healthy(None),
            tags_to_remove: Vec::new(),
        };
        for episode in episodes {
            // `max_by_key` keeps the last of equal maxima, like harep's stable sort.
            let Some(latest) = episode
                .into_iter()
                .max_by_key(|record| (record.result, record.timestamp))
            else {
                continue;
            };
            match &repair.state {
                RepairState::Failed(_) => {}
                RepairState::Healthy(_) => {
                    let state = match latest.result {
                        Some(RepairResult::Success | RepairResult::Enoperm) => {
                            RepairState::Healthy(Some(latest))
                        }
                        Some(RepairResult::Failure) => RepairState::Failed(latest),
                        None => RepairState::Pending(latest),
                    };
                    repair.supersede(state);
                }
                RepairState::Pending(pending) => {
                    return Err(HarepError::UnfinishedRepair {
                        instance: instance.to_owned(),
                        found_tag: latest.tag,
                        pending_tag: pending.tag.clone(),
                    });
                }
                // Never produced from tags.
                RepairState::NeedsRepair(_) => {}
            }
        }
        Ok(repair)
    }

    /// Replace the state, queueing the old record's tag for removal.
    fn supersede(&mut self, state: RepairState) {
        if let Some(old) = self.state.record() {
            self.tags_to_remove.insert(0, old.tag.clone());
        }
        self.state = state;
    }

    /// The tag changes that make the tags match the state: add the state's tag, remove the
    /// superseded ones (which are then forgotten).
    fn commit(&mut self) -> TagChanges {
        TagChanges {
            instance: self.instance.clone(),
            add: self.state.record().map(|record| record.tag.clone()),
            remove: std::mem::take(&mut self.tags_to_remove),
        }
    }

    /// The jobs whose statuses [`Self::settle_pending`] needs (empty if not pending).
    pub fn pending_jobs(&self) -> &[JobId] {
        match &self.state {
            RepairState::Pending(record) => &record.jobs,
            _ => &[],
        }
    }

    /// Finish a pending repair whose jobs are all finalized: `success` if every job
    /// succeeded (state Healthy), else `failure` (state Failed), stamped `now`. Returns the
    /// tag changes, or `None` if the instance is not pending or a job is still queued,
    /// waiting, canceling or running.
    ///
    /// A repair recorded without job ids is judged, like harep's `QueryJobs` without ids,
    /// by every job in `statuses` (none: success).
    pub fn settle_pending(
        &mut self,
        statuses: &BTreeMap<JobId, JobStatus>,
        now: i64,
    ) -> Result<Option<TagChanges>, HarepError> {
        let RepairState::Pending(record) = &self.state else {
            return Ok(None);
        };
        let job_statuses: Vec<JobStatus> = if record.jobs.is_empty() {
            statuses.values().copied().collect()
        } else {
            record
                .jobs
                .iter()
                .map(|job| {
                    statuses
                        .get(job)
                        .copied()
                        .ok_or_else(|| HarepError::UnknownJob {
                            instance: self.instance.clone(),
                            job: *job,
                        })
                })
                .collect::<Result<_, _>>()?
        };
        if job_statuses.iter().any(|status| !status.is_finalized()) {
            return Ok(None);
        }
        let state = if job_statuses.iter().all(|s| *s == JobStatus::Success) {
            RepairState::Healthy(Some(record.finished(RepairResult::Success, now)))
        } else {
            RepairState::Failed(record.finished(RepairResult::Failure, now))
        };
        self.supersede(state);
        Ok(Some(self.commit()))
    }

    /// Decide what to do about a detected problem at time `now`. Only a Healthy instance
    /// with an [`RepairPolicy::Enabled`] policy is acted on: a repair more destructive than
    /// allowed is refused with an `enoperm` record (state Needs repair, tags changed now; a
    /// later round parses it as Healthy and refuses again with a new uuid); an allowed one
    /// becomes a [`RepairJob`] to submit, then to pass to [`Self::record_submission`].
    /// `new_uuid` is called only when a record is made.
    pub fn decide(
        &mut self,
        policy: RepairPolicy,
        detected: &DetectedRepair,
        now: i64,
        job_delay_seconds: f64,
        new_uuid: impl FnOnce() -> String,
    ) -> RepairDecision {
        if !matches!(self.state, RepairState::Healthy(_)) {
            return RepairDecision::NotHealthy;
        }
        let RepairPolicy::Enabled(allowed) = policy else {
            return RepairDecision::NotAllowed(policy);
        };
        if detected.repair > allowed {
            let record = RepairRecord::new(
                detected.repair,
                new_uuid(),
                now,
                Vec::new(),
                Some(RepairResult::Enoperm),
            );
            self.supersede(RepairState::NeedsRepair(record));
            return RepairDecision::Refused(self.commit());
        }
        let delay = (job_delay_seconds > 0.0).then_some(OpBody::TestDelay {
            duration: job_delay_seconds,
            on_master: true,
        });
        RepairDecision::Submit(RepairJob {
            instance: self.instance.clone(),
            repair: detected.repair,
            uuid: new_uuid(),
            timestamp: now,
            opcodes: delay.into_iter().chain(detected.opcodes.clone()).collect(),
            touched_nodes: detected.touched_nodes.clone(),
        })
    }

    /// Record that `job` was submitted as `job_ids`: state Pending, with the `pending` tag
    /// to add and the previous record's tag to remove.
    pub fn record_submission(&mut self, job: &RepairJob, job_ids: Vec<JobId>) -> TagChanges {
        let record = RepairRecord::new(job.repair, job.uuid.clone(), job.timestamp, job_ids, None);
        self.supersede(RepairState::Pending(record));
        self.commit()
    }
}

/// What [`InstanceRepair::decide`] concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum RepairDecision {
    /// The instance is pending or failed by its tags: left alone.
    NotHealthy,
    /// The policy is not [`RepairPolicy::Enabled`] (suspended or not enabled).
    NotAllowed(RepairPolicy),
    /// The repair is more destructive than allowed: apply these tag changes (an `enoperm`
    /// result tag).
    Refused(TagChanges),
    /// Submit this job.
    Submit(RepairJob),
}

/// One repair job to submit.
#[derive(Debug, Clone, PartialEq)]
pub struct RepairJob {
    /// The instance.
    pub instance: String,
    /// The repair type.
    pub repair: RepairType,
    /// uuid of the repair episode, for the `pending` tag.
    pub uuid: String,
    /// Unix seconds, for the `pending` tag.
    pub timestamp: i64,
    /// The job: `OP_TEST_DELAY` (if the delay is positive), then the repair opcodes.
    pub opcodes: Vec<OpBody>,
    /// The instance's primary and secondary node: the 2.17 maintd does not balance on them
    /// in this round.
    pub touched_nodes: Vec<String>,
}

impl RepairJob {
    /// The job's opcodes with the 2.17 maintd's reason trail.
    pub fn job(&self, timestamp_ns: i64) -> Vec<Opcode> {
        self.opcodes
            .iter()
            .map(|body| {
                body.clone()
                    .with_reason(REPAIR_REASON.to_owned(), timestamp_ns)
            })
            .collect()
    }
}

/// Why an instance is broken, as harep sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Breakage {
    /// Both nodes of a DRBD instance are offline.
    PrimaryAndSecondaryOffline,
    /// The primary node is offline (DRBD: the secondary is fine).
    PrimaryOffline,
    /// The secondary node of a DRBD instance is offline.
    SecondaryOffline,
}

/// A broken instance and the repair harep would run.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectedRepair {
    /// What is wrong.
    pub breakage: Breakage,
    /// The repair type, checked against the policy.
    pub repair: RepairType,
    /// The repair opcodes, without the leading delay.
    pub opcodes: Vec<OpBody>,
    /// The primary node and the secondary, if any.
    pub touched_nodes: Vec<String>,
}

/// A node as harep sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView {
    /// Ganeti's offline flag.
    pub offline: bool,
    /// Ganeti's drained flag.
    pub drained: bool,
    /// Ganeti's vm_capable flag.
    pub vm_capable: bool,
}

impl NodeView {
    /// htools calls a node offline when it is offline, drained or not vm_capable; harep
    /// treats all three as broken.
    pub fn is_htools_offline(&self) -> bool {
        self.offline || self.drained || !self.vm_capable
    }
}

/// An instance as harep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// Instance name.
    pub name: String,
    /// Disk template; only `drbd` and `plain` are ever repaired.
    pub disk_template: DiskTemplate,
    /// Primary node name.
    pub primary: String,
    /// Secondary node names (the first one counts, as in htools).
    pub secondaries: Vec<String>,
    /// Name of the primary node's group, whose tags give the group policy.
    pub group: String,
    /// The instance's tags, in the order Ganeti lists them.
    pub tags: Vec<String>,
}

/// The harep repair for `instance`, if it is broken (`Harep.hs` `detectBroken`): DRBD with
/// both nodes offline or plain with the primary offline → reinstall (recreate the disks
/// with hail, reinstall the OS); DRBD with the primary offline → failover; DRBD with the
/// secondary offline → fix-storage (new secondary chosen by hail). Other templates are
/// never repaired. Instances are not checked for their run status, as harep does not.
pub fn detect_broken(
    instance: &InstanceView,
    nodes: &BTreeMap<String, NodeView>,
) -> Result<Option<DetectedRepair>, HarepError> {
    let offline = |node: &str| {
        nodes
            .get(node)
            .map(NodeView::is_htools_offline)
            .ok_or_else(|| HarepError::UnknownNode {
                instance: instance.name.clone(),
                node: node.to_owned(),
            })
    };
    let name = instance.name.as_str();
    let primary_offline = offline(&instance.primary)?;
    let found = match instance.disk_template {
        DiskTemplate::Drbd => {
            let secondary =
                instance
                    .secondaries
                    .first()
                    .ok_or_else(|| HarepError::MissingSecondary {
                        instance: name.to_owned(),
                    })?;
            match (primary_offline, offline(secondary)?) {
                (true, true) => Some((
                    Breakage::PrimaryAndSecondaryOffline,
                    RepairType::Reinstall,
                    reinstall_opcodes(name),
                )),
                (true, false) => Some((
                    Breakage::PrimaryOffline,
                    RepairType::Failover,
                    vec![OpBody::InstanceFailover {
                        instance_name: name.to_owned(),
                        target_node: None,
                        ignore_consistency: false,
                        shutdown_timeout: FAILOVER_SHUTDOWN_TIMEOUT,
                    }],
                )),
                (false, true) => Some((
                    Breakage::SecondaryOffline,
                    RepairType::FixStorage,
                    vec![OpBody::InstanceReplaceDisks {
                        instance_name: name.to_owned(),
                        mode: ReplaceDisksMode::ReplaceNewSecondary,
                        remote_node: None,
                        disks: Vec::new(),
                        early_release: false,
                        // As harep: the cluster's allocator picks the new secondary.
                        iallocator: Some("hail".into()),
                    }],
                )),
                (false, false) => None,
            }
        }
        DiskTemplate::Plain if primary_offline => Some((
            Breakage::PrimaryOffline,
            RepairType::Reinstall,
            reinstall_opcodes(name),
        )),
        _ => None,
    };
    Ok(found.map(|(breakage, repair, opcodes)| DetectedRepair {
        breakage,
        repair,
        opcodes,
        touched_nodes: std::iter::once(&instance.primary)
            .chain(instance.secondaries.first())
            .cloned()
            .collect(),
    }))
}

fn reinstall_opcodes(instance: &str) -> Vec<OpBody> {
    vec![
        OpBody::InstanceRecreateDisks {
            instance_name: instance.to_owned(),
            disks: Vec::new(),
            nodes: Vec::new(),
            iallocator: Some(REPAIR_IALLOCATOR.to_owned()),
        },
        OpBody::InstanceReinstall {
            instance_name: instance.to_owned(),
            os_type: None,
            force_variant: false,
        },
    ]
}

/// Why harep cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HarepError {
    /// A repair record was found after a pending one (harep exits on it).
    #[error(
        "An unfinished repair was found in instance {instance}: found tag {found_tag:?}, \
         but older pending tag {pending_tag:?} exists."
    )]
    UnfinishedRepair {
        /// The instance.
        instance: String,
        /// The newer record's tag.
        found_tag: String,
        /// The pending record's tag.
        pending_tag: String,
    },
    /// The status of a pending repair's job is not known (the queue does not know the job).
    #[error("could not check job status: job {job} of the repair of {instance} is unknown")]
    UnknownJob {
        /// The instance.
        instance: String,
        /// The job.
        job: JobId,
    },
    /// An instance names a node that is not in the node list.
    #[error("instance {instance} is on unknown node {node}")]
    UnknownNode {
        /// The instance.
        instance: String,
        /// The node.
        node: String,
    },
    /// A DRBD instance has no secondary node.
    #[error("DRBD instance {instance} has no secondary node")]
    MissingSecondary {
        /// The instance.
        instance: String,
    },
    /// [`HarepRound::record_submission`] named an instance the round does not have.
    #[error("instance {instance} is not part of this harep round")]
    UnknownInstance {
        /// The instance.
        instance: String,
    },
}

/// What one harep round looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HarepCluster {
    /// Cluster tags.
    pub cluster_tags: Vec<String>,
    /// Tags of each node group, by the name used in [`InstanceView::group`]; a group
    /// missing here has no tags.
    pub group_tags: BTreeMap<String, Vec<String>>,
    /// Every node by name.
    pub nodes: BTreeMap<String, NodeView>,
    /// Every instance, in the order harep processes them.
    pub instances: Vec<InstanceView>,
}

/// One instance's part of a round.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundInstance {
    /// The tag state.
    pub repair: InstanceRepair,
    /// The policy at the round's start.
    pub policy: RepairPolicy,
    /// The problem found, if any.
    pub detected: Option<DetectedRepair>,
}

/// What a round does for one broken instance, in the order harep does it.
#[derive(Debug, Clone, PartialEq)]
pub enum RepairAction {
    /// Apply these tag changes (an `enoperm` result).
    Refuse(TagChanges),
    /// Submit this job, then pass its id to [`HarepRound::record_submission`] and apply the
    /// tag changes that returns.
    Submit(RepairJob),
}

/// One harep round over a cluster; see the module documentation for the steps.
#[derive(Debug, Clone, PartialEq)]
pub struct HarepRound {
    instances: Vec<RoundInstance>,
}

impl HarepRound {
    /// Parse every instance's tags, compute its policy at `now` and detect problems.
    /// Fails on the first instance whose tags show an unfinished repair followed by another
    /// record, or that names an unknown node.
    pub fn start(cluster: &HarepCluster, now: i64) -> Result<Self, HarepError> {
        let no_tags = Vec::new();
        let instances = cluster
            .instances
            .iter()
            .map(|instance| {
                let group_tags = cluster.group_tags.get(&instance.group).unwrap_or(&no_tags);
                Ok(RoundInstance {
                    repair: InstanceRepair::from_tags(&instance.name, strs(&instance.tags))?,
                    policy: effective_policy(
                        strs(&instance.tags),
                        strs(group_tags),
                        strs(&cluster.cluster_tags),
                        now,
                    ),
                    detected: detect_broken(instance, &cluster.nodes)?,
                })
            })
            .collect::<Result<_, HarepError>>()?;
        Ok(HarepRound { instances })
    }

    /// The instances, in order.
    pub fn instances(&self) -> &[RoundInstance] {
        &self.instances
    }

    /// Every job of a pending repair, sorted and without duplicates.
    pub fn jobs_to_query(&self) -> Vec<JobId> {
        let jobs: BTreeSet<JobId> = self
            .instances
            .iter()
            .flat_map(|i| i.repair.pending_jobs().iter().copied())
            .collect();
        jobs.into_iter().collect()
    }

    /// Settle every pending repair whose jobs are finalized (see
    /// [`InstanceRepair::settle_pending`]). One entry per instance that changed or could not
    /// be checked, in instance order: harep applies them in order and stops at the first
    /// error; the 2.17 maintd applies every success, then fails the round if any erred.
    pub fn settle_pending(
        &mut self,
        statuses: &BTreeMap<JobId, JobStatus>,
        now: i64,
    ) -> Vec<Result<TagChanges, HarepError>> {
        self.instances
            .iter_mut()
            .filter_map(|i| i.repair.settle_pending(statuses, now).transpose())
            .collect()
    }

    /// Decide the repairs of broken instances that are Healthy, in instance order (see
    /// [`InstanceRepair::decide`]). `new_uuid` is called once per refused or submitted
    /// repair.
    pub fn plan_repairs(
        &mut self,
        now: i64,
        job_delay_seconds: f64,
        mut new_uuid: impl FnMut() -> String,
    ) -> Vec<RepairAction> {
        let mut actions = Vec::new();
        for instance in &mut self.instances {
            let Some(detected) = &instance.detected else {
                continue;
            };
            let decision = instance.repair.decide(
                instance.policy,
                detected,
                now,
                job_delay_seconds,
                &mut new_uuid,
            );
            match decision {
                RepairDecision::Refused(changes) => actions.push(RepairAction::Refuse(changes)),
                RepairDecision::Submit(job) => actions.push(RepairAction::Submit(job)),
                RepairDecision::NotHealthy | RepairDecision::NotAllowed(_) => {}
            }
        }
        actions
    }

    /// Record that `job` was submitted as `job_ids`; returns the `pending` tag changes.
    pub fn record_submission(
        &mut self,
        job: &RepairJob,
        job_ids: Vec<JobId>,
    ) -> Result<TagChanges, HarepError> {
        let instance = self
            .instances
            .iter_mut()
            .find(|i| i.repair.instance == job.instance)
            .ok_or_else(|| HarepError::UnknownInstance {
                instance: job.instance.clone(),
            })?;
        Ok(instance.repair.record_submission(job, job_ids))
    }

    /// How many instances are in each state, by harep's state names (its final summary).
    pub fn state_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for instance in &self.instances {
            *counts.entry(instance.repair.state.name()).or_insert(0) += 1;
        }
        counts
    }
}

fn strs(tags: &[String]) -> impl Iterator<Item = &str> {
    tags.iter().map(String::as_str)
}

/// The rest of `text` after `prefix`; also `""` when `text` is `prefix` without its last
/// character (so `…:suspend` matches the `…:suspend:` prefix), as htools matches prefixes.
fn chomp_prefix<'a>(prefix: &str, text: &'a str) -> Option<&'a str> {
    if let Some(rest) = text.strip_prefix(prefix) {
        return Some(rest);
    }
    let mut without_last = prefix.chars();
    without_last.next_back();
    (text == without_last.as_str()).then_some("")
}

/// Split like htools: the empty string has no fields; a trailing separator gives a last
/// empty field.
fn haskell_split(text: &str, separator: char) -> Vec<&str> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(separator).collect()
    }
}

/// An integer literal as Haskell's `read` accepts it in a tag: `-`? then decimal digits,
/// or `0x`/`0X` and hex digits, or `0o`/`0O` and octal digits. The magnitude, wrapped
/// modulo 2⁶⁴, with the sign and whether it overflowed 64 bits.
fn parse_integer_literal(text: &str) -> Option<(bool, u64, bool)> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let prefixed = |lower: &str, upper: &str| {
        unsigned
            .strip_prefix(lower)
            .or_else(|| unsigned.strip_prefix(upper))
    };
    let (radix, digits) = if let Some(hex) = prefixed("0x", "0X") {
        (16, hex)
    } else if let Some(octal) = prefixed("0o", "0O") {
        (8, octal)
    } else {
        (10, unsigned)
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    let mut overflowed = false;
    for c in digits.chars() {
        let digit = u64::from(c.to_digit(radix)?);
        let (shifted, o1) = value.overflowing_mul(u64::from(radix));
        let (sum, o2) = shifted.overflowing_add(digit);
        overflowed |= o1 || o2;
        value = sum;
    }
    Some((negative, value, overflowed))
}

/// A Haskell `Integer` read from a tag, saturated to 64 bits.
fn parse_haskell_integer(text: &str) -> Option<i64> {
    let (negative, magnitude, overflowed) = parse_integer_literal(text)?;
    Some(match (negative, overflowed) {
        (false, true) => i64::MAX,
        (true, true) => i64::MIN,
        (false, false) => i64::try_from(magnitude).unwrap_or(i64::MAX),
        (true, false) => 0i64.checked_sub_unsigned(magnitude).unwrap_or(i64::MIN),
    })
}

/// A job id read like Haskell's `Int` (wrapping modulo 2⁶⁴), which must not be negative.
fn parse_job_id(text: &str) -> Option<JobId> {
    let (negative, magnitude, _) = parse_integer_literal(text)?;
    let wrapped = if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    // As a signed 64-bit Int, a value with the top bit set is negative.
    (i64::try_from(wrapped).is_ok()).then_some(JobId(wrapped))
}

#[cfg(test)]
mod tests;
