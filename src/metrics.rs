//! maintd's Prometheus metrics, as `GET /metrics` serves them.
//!
//! Two kinds: events are counted where they happen ([`Metrics::record_poll`] and the
//! other `record_` and `observe_` methods), and the state (incidents, the brakes, how
//! long ago each node reported) is read from the registry's state at each scrape
//! ([`StateSample`]), so that it can never drift from what `/1/status` shows.
//!
//! One [`Metrics`] lives as long as the process and is shared by every actor that counts
//! an event; counters start at zero at each start, as Prometheus expects.

use std::{collections::BTreeMap, time::Instant};

use prometheus_client::{
    encoding::{prometheus_text, text, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};

use crate::{
    model::{
        cluster::ClusterSnapshot,
        diagnose::RepairAction,
        incident::{MaintenanceState, RepairStatus, RoundPlan},
        job::{JobId, JobStatus},
    },
    planner::{PlanInput, Planner},
};

/// Every metric name prefix.
const PREFIX: &str = "maintd";

/// The statuses of the `maintd_incidents` gauge, each always present (zero when none).
const STATUSES: [RepairStatus; 5] = [
    RepairStatus::Noted,
    RepairStatus::Pending,
    RepairStatus::Canceled,
    RepairStatus::Failed,
    RepairStatus::Completed,
];

/// The actions of the `maintd_incidents` gauge, each always present.
const ACTIONS: [RepairAction; 3] = [
    RepairAction::LiveRepair,
    RepairAction::Evacuate,
    RepairAction::EvacuateFailover,
];

/// The label of the per-node metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

/// The labels of `maintd_incidents`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IncidentLabels {
    status: String,
    action: String,
}

/// The exposition format of a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0 text, which Prometheus asks for first.
    OpenMetrics,
    /// Prometheus' text format 0.0.4, for clients that do not ask for OpenMetrics
    /// (curl, `promtool check metrics`).
    Text,
}

impl Exposition {
    /// The format a client asks for with its `Accept` header (`None`: no header).
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => {
                Exposition::OpenMetrics
            }
            _ => Exposition::Text,
        }
    }

    /// The `Content-Type` of the answer.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Text => prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The event metrics of one maintd process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    polls: Family<NodeLabel, Counter>,
    poll_failures: Family<NodeLabel, Counter>,
    jobs_submitted: Counter,
    jobs_failed: Counter,
    jobs_timed_out: Counter,
    round_duration: Histogram,
    plan_duration: Histogram,
    save_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every event metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let polls = Family::<NodeLabel, Counter>::default();
        registry.register(
            "polls",
            "Diagnose polls of each node, successful or not",
            polls.clone(),
        );
        let poll_failures = Family::<NodeLabel, Counter>::default();
        registry.register(
            "poll_failures",
            "Diagnose polls of each node that brought no valid report",
            poll_failures.clone(),
        );
        let jobs_submitted = Counter::default();
        registry.register(
            "jobs_submitted",
            "Jobs the Ganeti job queue accepted from maintd",
            jobs_submitted.clone(),
        );
        let jobs_failed = Counter::default();
        registry.register(
            "jobs_failed",
            "maintd's jobs that ended in error or that the job queue no longer knew",
            jobs_failed.clone(),
        );
        let jobs_timed_out = Counter::default();
        registry.register(
            "jobs_timed_out",
            "maintd's jobs that waited or ran longer than rounds.job_timeout",
            jobs_timed_out.clone(),
        );
        // 10 s to about 5.7 h: rounds drain and evacuate whole nodes.
        let round_duration = Histogram::new(exponential_buckets(10.0, 2.0, 12));
        registry.register_with_unit(
            "round_duration",
            "Time from the start of a round until all its jobs ended",
            Unit::Seconds,
            round_duration.clone(),
        );
        // 1 ms to about 4.4 min: hail runs as a separate program.
        let plan_duration = Histogram::new(exponential_buckets(0.001, 4.0, 10));
        registry.register_with_unit(
            "plan_duration",
            "Time the planner took to plan one round",
            Unit::Seconds,
            plan_duration.clone(),
        );
        let save_failures = Counter::default();
        registry.register(
            "state_save_failures",
            "Failed saves of the maintenance state (retried every second while failing)",
            save_failures.clone(),
        );
        Metrics {
            registry,
            polls,
            poll_failures,
            jobs_submitted,
            jobs_failed,
            jobs_timed_out,
            round_duration,
            plan_duration,
            save_failures,
        }
    }

    /// A diagnose poll of `node` ended: `ok` when it brought a valid report.
    pub fn record_poll(&self, node: &str, ok: bool) {
        let label = NodeLabel {
            node: node.to_owned(),
        };
        self.polls.get_or_create(&label).inc();
        if !ok {
            self.poll_failures.get_or_create(&label).inc();
        }
    }

    /// The job queue accepted `count` jobs.
    pub fn record_jobs_submitted(&self, count: usize) {
        self.jobs_submitted.inc_by(as_u64(count));
    }

    /// The job queue answered these statuses (`None`: unknown to the queue): jobs in
    /// error and unknown jobs count as failed. Each job is reported once finalized.
    pub fn record_job_statuses(&self, statuses: &[(JobId, Option<JobStatus>)]) {
        let failed = statuses
            .iter()
            .filter(|(_, status)| matches!(status, None | Some(JobStatus::Error)))
            .count();
        self.jobs_failed.inc_by(as_u64(failed));
    }

    /// `count` jobs went past `rounds.job_timeout` (canceled while waiting, or marked
    /// stuck while running).
    pub fn record_jobs_timed_out(&self, count: usize) {
        self.jobs_timed_out.inc_by(as_u64(count));
    }

    /// A round took `seconds` from its start until its jobs all ended.
    pub fn observe_round(&self, seconds: f64) {
        self.round_duration.observe(seconds.max(0.0));
    }

    /// Planning one round took `seconds`.
    pub fn observe_plan(&self, seconds: f64) {
        self.plan_duration.observe(seconds.max(0.0));
    }

    /// A save of the maintenance state failed.
    pub fn record_save_failure(&self) {
        self.save_failures.inc();
    }

    /// The scrape: the event metrics and, while this node is master (`state` is
    /// `Some`), the state gauges of `state`.
    pub fn encode(&self, state: Option<&StateSample>, format: Exposition) -> String {
        let gauges = state_registry(state);
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = match format {
            Exposition::OpenMetrics => text::encode_registry(&mut out, &self.registry)
                .and_then(|()| text::encode_registry(&mut out, &gauges))
                .and_then(|()| text::encode_eof(&mut out)),
            Exposition::Text => prometheus_text::encode(&mut out, &self.registry)
                .and_then(|()| prometheus_text::encode(&mut out, &gauges)),
        };
        out
    }
}

fn as_u64(count: usize) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX)
}

/// The state gauges of one scrape, taken from the registry's state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateSample {
    /// Incidents not yet forgotten, by status and action (as the API spells them).
    pub incidents: BTreeMap<(&'static str, &'static str), u64>,
    /// Age of the oldest open (noted or pending) incident; 0 when none is open.
    pub oldest_open_age: f64,
    /// Per node, seconds since its last valid diagnose report (infinite: none since
    /// this node became master).
    pub report_age: BTreeMap<String, f64>,
    /// No new action: paused through the API or by the cluster tag.
    pub paused: bool,
    /// The circuit breaker is tripped.
    pub breaker_tripped: bool,
    /// The last save of the state failed and no save has succeeded since.
    pub save_failing: bool,
}

impl StateSample {
    /// The gauges of `state` at `now`. `last_reports`: each polled node with the time of
    /// its last valid report, if any; `paused_by_tag`: the cluster carries the pause tag;
    /// `save_failing`: the state in memory is ahead of the disk.
    pub fn of<'a>(
        state: &MaintenanceState,
        last_reports: impl IntoIterator<Item = (&'a str, Option<f64>)>,
        paused_by_tag: bool,
        save_failing: bool,
        now: f64,
    ) -> Self {
        let mut incidents = BTreeMap::new();
        for incident in &state.incidents {
            *incidents
                .entry((incident.status.as_str(), incident.action.as_str()))
                .or_insert(0) += 1;
        }
        let oldest_open_age = state
            .incidents
            .iter()
            .filter(|i| i.status.is_open())
            .map(|i| now - i.ctime)
            .fold(0.0_f64, f64::max);
        let report_age = last_reports
            .into_iter()
            .map(|(node, at)| {
                let age = at.map_or(f64::INFINITY, |at| (now - at).max(0.0));
                (node.to_owned(), age)
            })
            .collect();
        StateSample {
            incidents,
            oldest_open_age,
            report_age,
            paused: state.safety.pause.is_some() || paused_by_tag,
            breaker_tripped: state.safety.breaker.is_some(),
            save_failing,
        }
    }

    /// Incidents of `status` and `action` (0 when none).
    pub fn incident_count(&self, status: RepairStatus, action: RepairAction) -> u64 {
        self.incidents
            .get(&(status.as_str(), action.as_str()))
            .copied()
            .unwrap_or(0)
    }
}

/// A registry of one scrape's state gauges: `maintd_is_master` always, the others only
/// while master.
fn state_registry(state: Option<&StateSample>) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    let flag = |registry: &mut Registry, name: &str, help: &str, on: bool| {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::from(on));
        registry.register(name, help, gauge);
    };
    flag(
        &mut registry,
        "is_master",
        "1 while this node is master and maintd works, 0 while it is idle",
        state.is_some(),
    );
    let Some(state) = state else {
        return registry;
    };
    let incidents = Family::<IncidentLabels, Gauge>::default();
    // Every status and action at zero first, then the counts.
    let zeros = STATUSES
        .iter()
        .flat_map(|s| ACTIONS.iter().map(move |a| ((s.as_str(), a.as_str()), 0)));
    for ((status, action), count) in zeros.chain(state.incidents.iter().map(|(k, n)| (*k, *n))) {
        incidents
            .get_or_create(&IncidentLabels {
                status: status.to_owned(),
                action: action.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register(
        "incidents",
        "Incidents not yet forgotten, by status and action",
        incidents,
    );
    let oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    oldest.set(state.oldest_open_age);
    registry.register_with_unit(
        "oldest_open_incident_age",
        "Age of the oldest open (noted or pending) incident; 0 when none is open",
        Unit::Seconds,
        oldest,
    );
    let ages = Family::<NodeLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (node, age) in &state.report_age {
        ages.get_or_create(&NodeLabel { node: node.clone() })
            .set(*age);
    }
    registry.register_with_unit(
        "node_last_good_report_age",
        "Time since each node's last valid diagnose report (+Inf: none since this node became master)",
        Unit::Seconds,
        ages,
    );
    flag(
        &mut registry,
        "paused",
        "1 while maintd is paused (maintd pause or the cluster's maintd:paused tag)",
        state.paused,
    );
    flag(
        &mut registry,
        "breaker_tripped",
        "1 while the circuit breaker is tripped (until an operator resumes)",
        state.breaker_tripped,
    );
    flag(
        &mut registry,
        "state_save_failing",
        "1 while the maintenance state cannot be saved (nothing is submitted meanwhile)",
        state.save_failing,
    );
    registry
}

/// A planner that records how long each [`Planner::plan`] takes in [`Metrics`].
pub struct TimedPlanner {
    inner: std::sync::Arc<dyn Planner>,
    metrics: std::sync::Arc<Metrics>,
}

impl TimedPlanner {
    /// Time `inner`'s plans into `metrics`.
    pub fn new(inner: std::sync::Arc<dyn Planner>, metrics: std::sync::Arc<Metrics>) -> Self {
        TimedPlanner { inner, metrics }
    }
}

impl Planner for TimedPlanner {
    fn plan(&self, input: PlanInput<'_>) -> RoundPlan {
        // The real time the plan took on the planner thread, even in virtual time.
        let started = Instant::now();
        let plan = self.inner.plan(input);
        self.metrics.observe_plan(started.elapsed().as_secs_f64());
        plan
    }

    fn jobs_to_query(&self, cluster: &ClusterSnapshot) -> Vec<JobId> {
        self.inner.jobs_to_query(cluster)
    }
}

/// A parsed sample of a text exposition: for tests and tools reading a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name, with its `_total`, `_bucket`... suffix.
    pub name: String,
    /// The labels, in their order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// The samples of a text exposition (OpenMetrics or Prometheus 0.0.4), comments left
/// out. Label values must not contain `,` or `"` escapes (maintd's never do); a line
/// that does not parse is an error naming it.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("not a sample line: {line:?}");
        let (series, value) = line.rsplit_once(' ').ok_or_else(bad)?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse::<f64>().map_err(|_| bad())?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').ok_or_else(bad)?;
                let labels = inner
                    .split(',')
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, quoted) = pair.split_once('=').ok_or_else(bad)?;
                        let value = quoted
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .ok_or_else(bad)?;
                        Ok((key.to_owned(), value.to_owned()))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                (name, labels)
            }
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// The value of the sample `name` whose labels include every pair of `labels`.
pub fn sample_value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
}

#[cfg(test)]
mod tests;
