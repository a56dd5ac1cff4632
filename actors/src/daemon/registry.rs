//! EventRegistry: owns the maintenance state (incidents, the current round, the brakes),
//! applies every change through the domain's state machine and persists it before
//! answering.

use std::{collections::BTreeMap, sync::Arc};

use actix::{prelude::*, WeakRecipient};
use maintd::{
    clock::Clock,
    metrics::{Metrics, StateSample},
    model::{
        incident::{MaintenanceState, Observed, RoundPlan, StatePolicy},
        job::JobStatus,
        replication::next_serial,
        safety::{SafetyLimits, PAUSE_TAG},
        transition::{StatusBook, StatusChange},
    },
    notify::Transition,
    planner::pending_tag_jobs,
    store::JsonStore,
};
use tracing::{error, info, warn};

use crate::daemon::messages::{
    AwaitDurable, BreakerView, CancelIncident, CancelRefused, ExtendRound, GetHistory, GetIncident,
    GetPlan, GetRecovery, GetRoundFinished, GetSafety, GetStatus, IncidentNote, JobStatusesSeen,
    JobToSubmit, JobsSubmitted, NodeLoadSeen, NodeObserved, NodePollView, NotDurable, Pause,
    PlanContext, PlanView, Planned, PlannedJobView, Reconcile, Recovery, ReplicationChanged,
    Resume, SafetyView, Shutdown, StartRound, StateSaved, StatusView, SubmissionLost,
    TransitionsSaved,
};
// The scrape's state gauges (GET /metrics).
use crate::daemon::messages::GetMetricsState;

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// The registry's share of the settings: the brakes and the job timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// The cap and the breaker's thresholds.
    pub limits: SafetyLimits,
    /// Debounce, flap budget, escalation, history size.
    pub policy: StatePolicy,
    /// Submit nothing, set no tag.
    pub dry_run: bool,
    /// How long a job may wait or run (`rounds.job_timeout`).
    pub job_timeout: std::time::Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            limits: SafetyLimits::default(),
            policy: StatePolicy::default(),
            dry_run: false,
            job_timeout: std::time::Duration::from_secs(3600),
        }
    }
}

/// The event-registry actor.
pub struct EventRegistry {
    state: MaintenanceState,
    store: JsonStore,
    config: RegistryConfig,
    polls: BTreeMap<String, NodePollView>,
    /// Latest CPU load per node; transient, refreshed by the pollers.
    loads: BTreeMap<String, f64>,
    /// The cluster carried the pause tag at the last reconciliation.
    paused_by_tag: bool,
    /// The last round's plan, submitted or held back.
    last_plan: Option<PlanView>,
    /// Why the last save failed, while the state in memory is ahead of the disk: no new
    /// round starts and no operator request is acknowledged until a save succeeds.
    unsaved: Option<String>,
    /// Where every save goes next: the state replicator, when replication is on.
    replicator: Option<WeakRecipient<StateSaved>>,
    /// Who tells when a save is on a majority of the master candidates (the same).
    durability: Option<WeakRecipient<AwaitDurable>>,
    /// The copies on the master candidates, as the replicator last told.
    replication: Option<maintd::model::replication::ReplicationView>,
    /// Incident statuses as last saved: each save logs the changes since.
    saved_statuses: StatusBook,
    /// Who posts the saved changes to the webhook (`[notify]`), when it is on.
    notifier: Option<WeakRecipient<TransitionsSaved>>,
    /// Dates the serials, which grow with time across restarts and masters: the daemon's
    /// clock is anchored at the system's time when it starts.
    clock: Clock,
    /// Counts polls, jobs and failed saves for `/metrics`.
    metrics: Arc<Metrics>,
}

/// How often a failed save is retried.
const SAVE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl EventRegistry {
    /// A registry over `state`, persisting to `store`, its serials dated by `clock`,
    /// counting its events in `metrics`.
    pub fn new(
        mut state: MaintenanceState,
        store: JsonStore,
        config: RegistryConfig,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Self {
        state.policy = config.policy.clone();
        EventRegistry {
            saved_statuses: StatusBook::of(&state),
            notifier: None,
            state,
            store,
            config,
            polls: BTreeMap::new(),
            loads: BTreeMap::new(),
            paused_by_tag: false,
            last_plan: None,
            unsaved: None,
            replicator: None,
            durability: None,
            replication: None,
            clock,
            metrics,
        }
    }

    /// Send every save to `replicator`, starting with the state as it is now, and
    /// acknowledge operator requests once `durability` says they are durable.
    pub fn replicated_by(
        mut self,
        replicator: Recipient<StateSaved>,
        durability: Recipient<AwaitDurable>,
    ) -> Self {
        replicator.do_send(self.saved_message());
        // Weak: the supervisor owns the replicator, and it holds the registry's address.
        self.replicator = Some(replicator.downgrade());
        self.durability = Some(durability.downgrade());
        self
    }

    /// Tell `notifier` every saved change of an incident's status.
    pub fn notifying(mut self, notifier: Recipient<TransitionsSaved>) -> Self {
        // Weak: the supervisor owns the notifier.
        self.notifier = Some(notifier.downgrade());
        self
    }

    /// Resolves once the current state is on a majority of the master candidates (at
    /// once without replication), or with why it is not.
    fn until_durable(&self) -> impl std::future::Future<Output = Result<(), NotDurable>> {
        let serial = self.state.serial;
        let durability = self.durability.as_ref().and_then(WeakRecipient::upgrade);
        async move {
            let Some(durability) = durability else {
                return Ok(());
            };
            durability
                .send(AwaitDurable { serial })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
                .map_err(NotDurable::NotReplicated)
        }
    }

    fn saved_message(&self) -> StateSaved {
        StateSaved {
            serial: self.state.serial,
            state: std::sync::Arc::new(
                serde_json::to_value(&self.state).unwrap_or(serde_json::Value::Null),
            ),
        }
    }

    /// Save the state. A failure is remembered (and retried every [`SAVE_RETRY`]): until
    /// a save succeeds no round starts, so nothing is submitted on unsaved state.
    /// Returns whether the state is on disk.
    fn persist(&mut self) -> bool {
        self.state.serial = next_serial(self.state.serial, self.clock.now());
        match self.store.save(&self.state) {
            Ok(()) => {
                if self.unsaved.take().is_some() {
                    info!(target: "maintd::registry", path = %self.store.path().display(), "the maintenance state is saved again; work resumes");
                }
                if let Some(replicator) = self.replicator.as_ref().and_then(WeakRecipient::upgrade)
                {
                    replicator.do_send(self.saved_message());
                }
                let changes = self.saved_statuses.changes(&self.state);
                for change in &changes {
                    self.log_change(change);
                }
                let notifier = self.notifier.as_ref().and_then(WeakRecipient::upgrade);
                if let Some(notifier) = notifier.filter(|_| !changes.is_empty()) {
                    let at = self.clock.now();
                    let saved = changes.iter().map(|c| Transition::of(c, &self.state, at));
                    notifier.do_send(TransitionsSaved(saved.collect()));
                }
                self.saved_statuses = StatusBook::of(&self.state);
                true
            }
            Err(e) => {
                self.metrics.record_save_failure();
                let why = e.to_string();
                if self.unsaved.as_ref() != Some(&why) {
                    error!(target: "maintd::registry", error = %why, "could not save the maintenance state: nothing is submitted until it can be saved");
                }
                self.unsaved = Some(why);
                false
            }
        }
    }

    /// Log a saved change of an incident's status: a failure as a warning, with who made
    /// it (the last history entry names maintd, the node or the API client).
    fn log_change(&self, change: &StatusChange) {
        if change.from.is_none() {
            // Logged with its report when noted.
            return;
        }
        let by = self
            .state
            .incident(change.uuid)
            .and_then(|incident| incident.history.last())
            .map_or("maintd", |entry| entry.by.as_str());
        let (uuid, node, action, status) = (change.uuid, &change.node, change.action, change.to);
        let message = change.message.as_deref().unwrap_or("");
        if change.is_failure() {
            warn!(target: "maintd::registry", %uuid, %node, action = %action.as_str(), %message, tag = %change.tag, "incident failed");
        } else {
            info!(target: "maintd::registry", %uuid, %node, action = %action.as_str(), %by, %message, "incident {status}");
        }
    }

    /// Apply `change` only if the result can be saved: otherwise the state is as before
    /// and the error says why. For decisions (new rounds, operator requests): they take
    /// effect only once they are on disk.
    fn durably<T>(
        &mut self,
        change: impl FnOnce(&mut MaintenanceState) -> T,
    ) -> Result<T, NotDurable> {
        let before = self.state.clone();
        let result = change(&mut self.state);
        if self.persist() {
            Ok(result)
        } else {
            self.state = before;
            Err(NotDurable::NotSaved(
                self.unsaved
                    .clone()
                    .unwrap_or_else(|| "unknown error".into()),
            ))
        }
    }

    fn halt_reason(&self) -> Option<String> {
        self.state
            .halt_reason(self.paused_by_tag, self.config.dry_run)
            .or_else(|| self.replication.as_ref().and_then(|r| r.halt_reason()))
    }

    fn safety_view(&self) -> SafetyView {
        let pause = self.state.safety.pause.as_ref();
        let breaker = self.state.safety.breaker.as_ref();
        SafetyView {
            paused: pause.is_some() || self.paused_by_tag,
            pause_reason: pause.and_then(|p| p.reason.clone()),
            paused_by: pause.map(|p| p.by.clone()),
            paused_since: pause.map(|p| p.since),
            paused_by_tag: self.paused_by_tag,
            breaker: BreakerView {
                tripped: breaker.is_some(),
                reason: breaker.map(|b| b.reason.clone()),
                since: breaker.map(|b| b.since),
            },
            in_repair: self.state.in_repair().into_iter().collect(),
            replication: self.replication.clone(),
            limit: self.config.limits.max_nodes_in_repair,
            limit_percent: self.config.limits.max_percent_in_repair,
            dry_run: self.config.dry_run,
            halted: self.halt_reason().or_else(|| {
                self.unsaved
                    .as_ref()
                    .map(|e| format!("state could not be saved: {e}"))
            }),
            state_error: self.unsaved.clone(),
        }
    }
}

/// The plan as `/1/plan` shows it.
fn plan_view(
    plan: &RoundPlan,
    at: f64,
    round: Option<u64>,
    held_by: Option<String>,
    dropped: Vec<uuid::Uuid>,
) -> PlanView {
    let notes = |list: &[(uuid::Uuid, String)]| {
        list.iter()
            .map(|(incident, message)| IncidentNote {
                incident: *incident,
                message: message.clone(),
            })
            .collect()
    };
    PlanView {
        planned_at: at,
        round,
        mode: if held_by.is_some() {
            "held"
        } else {
            "submitted"
        },
        held_by,
        jobs: plan
            .jobs
            .iter()
            .map(|j| PlannedJobView {
                key: j.key.clone(),
                incident: j.incident,
                purpose: j.purpose.clone(),
                nodes: j.nodes.iter().cloned().collect(),
                opcodes: j.ops.clone(),
            })
            .collect(),
        notes: notes(&plan.notes),
        failures: notes(&plan.failures),
        warnings: plan.warnings.clone(),
        dropped,
    }
}

impl Actor for EventRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SAVE_RETRY, |act, _| {
            if act.unsaved.is_some() {
                act.persist();
            }
        });
        info!(target: "maintd::registry", incidents = self.state.incidents.len(), round = self.state.round.number, "event registry started");
    }
}

impl Handler<NodeObserved> for EventRegistry {
    type Result = ();

    fn handle(&mut self, msg: NodeObserved, _: &mut Context<Self>) {
        self.metrics.record_poll(&msg.node, msg.report.is_ok());
        let poll = self
            .polls
            .entry(msg.node.clone())
            .or_insert_with(|| NodePollView {
                node: msg.node.clone(),
                ..Default::default()
            });
        match msg.report {
            Ok(diagnose) => {
                poll.last_status = Some(diagnose.action.to_string());
                poll.last_report_at = Some(msg.at);
                poll.consecutive_failures = 0;
                let before = self.state.incidents.len();
                let observed = self.state.observe(&msg.node, &diagnose, msg.at);
                match &observed {
                    Observed::NewIncident(uuid) => {
                        info!(target: "maintd::registry", node = %msg.node, %uuid, action = %diagnose.action, report = %diagnose.original, "new incident")
                    }
                    Observed::Confirmed(uuid) => {
                        info!(target: "maintd::registry", node = %msg.node, %uuid, "incident confirmed")
                    }
                    Observed::Seen(_) | Observed::Nothing => {}
                }
                if observed != Observed::Nothing || self.state.incidents.len() != before {
                    self.persist();
                }
            }
            Err(e) => {
                // Its load figure, if any, is no longer current.
                self.loads.remove(&msg.node);
                poll.consecutive_failures += 1;
                poll.total_failures += 1;
                poll.last_error = Some(e.to_string());
                warn!(target: "maintd::registry", node = %msg.node, error = %e, failures = poll.consecutive_failures, "no valid diagnose report");
            }
        }
    }
}

impl Handler<NodeLoadSeen> for EventRegistry {
    type Result = ();

    fn handle(&mut self, msg: NodeLoadSeen, _: &mut Context<Self>) {
        match msg.load {
            Ok(load) => {
                self.loads.insert(msg.node, load.cpu_total);
            }
            Err(e) => {
                // A stale figure would mislead balancing: forget it.
                self.loads.remove(&msg.node);
                if let Some(poll) = self.polls.get_mut(&msg.node) {
                    poll.load_failures += 1;
                }
                warn!(target: "maintd::registry", node = %msg.node, error = %e, "no valid cpu-avg-load report");
            }
        }
    }
}

impl Handler<Reconcile> for EventRegistry {
    type Result = MessageResult<Reconcile>;

    fn handle(&mut self, msg: Reconcile, _: &mut Context<Self>) -> Self::Result {
        let forgotten = self.state.reconcile(&msg.cluster, msg.at);
        for uuid in &forgotten {
            info!(target: "maintd::registry", %uuid, "incident forgotten");
        }
        let names = msg.cluster.node_names();
        self.polls.retain(|node, _| names.contains(node.as_str()));
        self.loads.retain(|node, _| names.contains(node.as_str()));
        let tagged = msg.cluster.cluster_tags.contains(PAUSE_TAG);
        if tagged != self.paused_by_tag {
            if tagged {
                warn!(target: "maintd::registry", tag = PAUSE_TAG, "paused by the cluster tag: no new action until it is removed");
            } else {
                info!(target: "maintd::registry", tag = PAUSE_TAG, "the cluster's pause tag was removed");
            }
            self.paused_by_tag = tagged;
        }
        let tripped = self
            .state
            .check_breaker(&msg.cluster, &self.config.limits, msg.at);
        if let Some(reason) = &tripped {
            error!(target: "maintd::registry", %reason, "circuit breaker tripped: no new action until an operator resumes (maintd resume)");
        }
        if !forgotten.is_empty() || tripped.is_some() {
            self.persist();
        }
        MessageResult(PlanContext {
            incidents: self.state.incidents.clone(),
            // A fresh nonce per planning: a key never names two different jobs, even if a
            // planned round could not be saved and its number comes again.
            key_prefix: format!(
                "{}-r{}-{}",
                self.state.state_id,
                self.state.round.number + 1,
                &uuid::Uuid::new_v4().simple().to_string()[..6]
            ),
            node_loads: self.loads.clone(),
            gate: self.state.gate(&msg.cluster, &self.config.limits),
        })
    }
}

impl Handler<GetRoundFinished> for EventRegistry {
    type Result = bool;

    fn handle(&mut self, _: GetRoundFinished, _: &mut Context<Self>) -> bool {
        self.unsaved.is_none() && self.state.round_finished()
    }
}

impl Handler<StartRound> for EventRegistry {
    type Result = MessageResult<StartRound>;

    fn handle(&mut self, msg: StartRound, _: &mut Context<Self>) -> Self::Result {
        let mut plan = msg.plan;
        if let Some(halt) = self.halt_reason() {
            // Nothing is submitted and no incident changes but for its message, which
            // says what would have been done; saved only when a message changed.
            let mut changed = false;
            for (uuid, why) in plan.notes.iter().chain(&plan.failures) {
                changed |= self.state.note(*uuid, format!("{halt}; {why}"), msg.at);
            }
            for job in &plan.jobs {
                if let Some(uuid) = job.incident {
                    let would = format!("{halt}; would submit: {}", job.purpose.describe());
                    changed |= self.state.note_event(uuid, "held", would, msg.at);
                }
            }
            info!(target: "maintd::registry", jobs = plan.jobs.len(), reason = %halt, "round planned, nothing submitted");
            self.last_plan = Some(plan_view(&plan, msg.at, None, Some(halt), Vec::new()));
            if changed {
                self.persist();
            }
            return MessageResult(Planned::default());
        }
        let planned = self.durably(|state| {
            let dropped = state.drop_stale(&mut plan, msg.at);
            for (uuid, why) in &plan.failures {
                state.fail_incident(*uuid, why.clone(), msg.at);
            }
            for (uuid, why) in &plan.notes {
                state.note(*uuid, why.clone(), msg.at);
            }
            let round = (!plan.jobs.is_empty()).then(|| {
                state.start_round(&plan.jobs, msg.at);
                state.round.number
            });
            (dropped, round)
        });
        // Saved before submission: a restart then finds the keys and never submits twice;
        // a round that cannot be saved is not submitted at all.
        let (dropped, round) = match planned {
            Ok(planned) => planned,
            Err(why) => {
                self.last_plan = Some(plan_view(
                    &plan,
                    msg.at,
                    None,
                    Some(why.to_string()),
                    Vec::new(),
                ));
                return MessageResult(Planned::default());
            }
        };
        for uuid in &dropped {
            info!(target: "maintd::registry", %uuid, "incident dropped: its node no longer reports it");
        }
        // Failures are logged once saved, as every change of status.
        for (uuid, why) in &plan.notes {
            info!(target: "maintd::registry", %uuid, reason = %why, "incident waits");
        }
        for warning in &plan.warnings {
            warn!(target: "maintd::registry", %warning, "round planning");
        }
        if let Some(round) = round {
            info!(target: "maintd::registry", round, jobs = plan.jobs.len(), "round planned");
        }
        self.last_plan = Some(plan_view(&plan, msg.at, round, None, dropped));
        MessageResult(Planned {
            jobs: plan
                .jobs
                .into_iter()
                .map(|j| JobToSubmit {
                    key: j.key,
                    ops: j.ops,
                })
                .collect(),
            serial: self.state.serial,
        })
    }
}

impl Handler<ExtendRound> for EventRegistry {
    type Result = MessageResult<ExtendRound>;

    fn handle(&mut self, msg: ExtendRound, _: &mut Context<Self>) -> Self::Result {
        let repairs = self.state.repairs_awaiting_tags();
        if repairs.is_empty() {
            return MessageResult(Planned::default());
        }
        let (origins, jobs) = pending_tag_jobs(&repairs, msg.now_ns);
        // Saved before submission, as for a new round.
        if self
            .durably(|state| state.extend_round(&origins, &jobs))
            .is_err()
        {
            return MessageResult(Planned::default());
        }
        info!(target: "maintd::registry", jobs = jobs.len(), "round extended by harep pending tags");
        MessageResult(Planned {
            jobs: jobs
                .into_iter()
                .map(|j| JobToSubmit {
                    key: j.key,
                    ops: j.ops,
                })
                .collect(),
            serial: self.state.serial,
        })
    }
}

impl Handler<JobsSubmitted> for EventRegistry {
    type Result = ();

    fn handle(&mut self, msg: JobsSubmitted, _: &mut Context<Self>) {
        self.metrics
            .record_jobs_submitted(msg.results.iter().filter(|(_, r)| r.is_ok()).count());
        for (key, result) in msg.results {
            match &result {
                Ok(id) => info!(target: "maintd::registry", %key, job = %id, "job submitted"),
                Err(why) => warn!(target: "maintd::registry", %key, reason = %why, "job refused"),
            }
            self.state.record_submission(&key, result, msg.at);
        }
        self.persist();
    }
}

impl Handler<SubmissionLost> for EventRegistry {
    type Result = ();

    fn handle(&mut self, msg: SubmissionLost, _: &mut Context<Self>) {
        info!(target: "maintd::registry", key = %msg.key, "planned job never reached the queue; dropped");
        self.state.drop_unsubmitted(&msg.key);
        self.persist();
    }
}

impl Handler<JobStatusesSeen> for EventRegistry {
    type Result = MessageResult<JobStatusesSeen>;

    fn handle(&mut self, msg: JobStatusesSeen, _: &mut Context<Self>) -> Self::Result {
        let round_was_running = !self.state.round_finished();
        self.metrics.record_job_statuses(&msg.statuses);
        let mut changed = false;
        for (id, status) in msg.statuses {
            match status {
                None => {
                    warn!(target: "maintd::registry", job = %id, "job unknown to the queue; counted as failed")
                }
                Some(JobStatus::Success) => {
                    info!(target: "maintd::registry", job = %id, "job succeeded")
                }
                Some(s) if s.is_finalized() => {
                    warn!(target: "maintd::registry", job = %id, status = %s, detail = msg.failure_details.get(&id).map_or("", String::as_str), "job finalized without success")
                }
                Some(_) => {}
            }
            let detail = msg.failure_details.get(&id).map(String::as_str);
            changed |= self.state.record_job_outcome(id, status, detail, msg.at);
        }
        let (cancel, stuck) = self
            .state
            .apply_job_timeout(self.config.job_timeout.as_secs_f64(), msg.at);
        for (job, incident) in &stuck {
            warn!(target: "maintd::registry", %job, incident = ?incident, timeout = ?self.config.job_timeout, "job running past rounds.job_timeout: its incident is stuck; other incidents go on");
        }
        for job in &cancel {
            warn!(target: "maintd::registry", %job, timeout = ?self.config.job_timeout, "job waiting past rounds.job_timeout: canceling it");
        }
        self.metrics
            .record_jobs_timed_out(cancel.len() + stuck.len());
        if round_was_running && self.state.round_finished() {
            self.metrics
                .observe_round(msg.at - self.state.round.started_at);
        }
        if changed || !cancel.is_empty() || !stuck.is_empty() {
            self.persist();
        }
        MessageResult(cancel)
    }
}

impl Handler<GetRecovery> for EventRegistry {
    type Result = MessageResult<GetRecovery>;

    fn handle(&mut self, _: GetRecovery, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Recovery {
            unfinished: self.state.unfinished_jobs(),
            unconfirmed: self.state.unconfirmed_submissions(),
        })
    }
}

impl Handler<CancelIncident> for EventRegistry {
    type Result = ResponseFuture<Result<(), CancelRefused>>;

    fn handle(&mut self, msg: CancelIncident, _: &mut Context<Self>) -> Self::Result {
        let done = self
            .durably(|state| state.cancel_by(msg.uuid, &msg.by, msg.at))
            .map_err(CancelRefused::NotDurable)
            .and_then(|canceled| canceled.map_err(CancelRefused::Refused));
        if let Err(refused) = done {
            return Box::pin(async move { Err(refused) });
        }
        let durable = self.until_durable();
        Box::pin(async move { durable.await.map_err(CancelRefused::NotDurable) })
    }
}

impl Handler<Pause> for EventRegistry {
    type Result = ResponseFuture<Result<SafetyView, NotDurable>>;

    fn handle(&mut self, msg: Pause, _: &mut Context<Self>) -> Self::Result {
        if let Err(why) = self.durably(|state| state.pause(msg.reason.clone(), &msg.by, msg.at)) {
            return Box::pin(async move { Err(why) });
        }
        warn!(target: "maintd::registry", by = %msg.by, reason = ?msg.reason, "paused: no new action until resumed");
        let (durable, view) = (self.until_durable(), self.safety_view());
        Box::pin(async move { durable.await.map(|()| view) })
    }
}

impl Handler<Resume> for EventRegistry {
    type Result = ResponseFuture<Result<SafetyView, NotDurable>>;

    fn handle(&mut self, msg: Resume, _: &mut Context<Self>) -> Self::Result {
        if let Err(why) = self.durably(|state| state.resume(&msg.by, msg.at)) {
            return Box::pin(async move { Err(why) });
        }
        info!(target: "maintd::registry", by = %msg.by, "resumed: the pause and the breaker are lifted, open incidents acknowledged");
        let (durable, view) = (self.until_durable(), self.safety_view());
        Box::pin(async move { durable.await.map(|()| view) })
    }
}

impl Handler<ReplicationChanged> for EventRegistry {
    type Result = ();

    fn handle(&mut self, msg: ReplicationChanged, _: &mut Context<Self>) {
        self.replication = Some(msg.0);
    }
}

impl Handler<GetSafety> for EventRegistry {
    type Result = MessageResult<GetSafety>;

    fn handle(&mut self, _: GetSafety, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.safety_view())
    }
}

impl Handler<GetPlan> for EventRegistry {
    type Result = MessageResult<GetPlan>;

    fn handle(&mut self, _: GetPlan, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.last_plan.clone())
    }
}

impl Handler<GetIncident> for EventRegistry {
    type Result = MessageResult<GetIncident>;

    fn handle(&mut self, msg: GetIncident, _: &mut Context<Self>) -> Self::Result {
        let open = self.state.incident(msg.uuid).map(|i| (i.clone(), false));
        let found = open.or_else(|| {
            let mut forgotten = self.state.forgotten.iter().rev();
            forgotten
                .find(|i| i.uuid == msg.uuid)
                .map(|i| (i.clone(), true))
        });
        MessageResult(found)
    }
}

impl Handler<GetHistory> for EventRegistry {
    type Result = MessageResult<GetHistory>;

    fn handle(&mut self, msg: GetHistory, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.state
                .forgotten
                .iter()
                .rev()
                .take(msg.limit)
                .cloned()
                .collect(),
        )
    }
}

impl Handler<GetStatus> for EventRegistry {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(StatusView {
            incidents: self.state.incidents.clone(),
            jobs: self.state.unfinished_jobs(),
            evacuated: self.state.evacuated.keys().cloned().collect(),
            nodes: self.polls.values().cloned().collect(),
            round: self.state.round.number,
        })
    }
}

impl Handler<GetMetricsState> for EventRegistry {
    type Result = MessageResult<GetMetricsState>;

    fn handle(&mut self, _: GetMetricsState, _: &mut Context<Self>) -> Self::Result {
        let reports = self
            .polls
            .values()
            .map(|poll| (poll.node.as_str(), poll.last_report_at));
        MessageResult(StateSample::of(
            &self.state,
            reports,
            self.paused_by_tag,
            self.unsaved.is_some(),
            self.clock.now(),
        ))
    }
}

impl Handler<Shutdown> for EventRegistry {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
