//! What the web page shows, computed from the registry's answers: plain data with texts
//! ready to print (ages, tones), so that the templates only lay it out.

use maintd::model::incident::{Incident, RepairStatus};

use crate::daemon::{
    access::ApiCaller,
    messages::{NodePollView, SafetyView, StatusView},
};

/// Who looks at the page, as the page tells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// The API has no users (`maintd sim`): anyone may act.
    Open,
    /// Not logged in: read-only.
    LoggedOut,
    /// Logged in without the write option: read-only.
    Reader(String),
    /// Logged in with the write option: the buttons are shown.
    Writer(String),
}

impl Viewer {
    /// The viewer of a request served for `caller` (logged out when the request has none).
    pub fn of(caller: Option<&ApiCaller>) -> Viewer {
        match caller {
            Some(ApiCaller::Open) => Viewer::Open,
            Some(ApiCaller::User { name, write: true }) => Viewer::Writer(name.clone()),
            Some(ApiCaller::User { name, write: false }) => Viewer::Reader(name.clone()),
            Some(ApiCaller::Anonymous) | None => Viewer::LoggedOut,
        }
    }

    /// Whether the page offers cancel, pause and resume.
    pub fn may_act(&self) -> bool {
        matches!(self, Viewer::Open | Viewer::Writer(_))
    }
}

/// How a status or a node's health is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Nothing to worry about.
    Good,
    /// In progress or waiting.
    Busy,
    /// Needs an operator's look.
    Warn,
    /// Failed.
    Bad,
    /// Over, nothing more happens.
    Quiet,
}

impl Tone {
    /// The CSS class of the tone.
    pub fn class(self) -> &'static str {
        match self {
            Tone::Good => "good",
            Tone::Busy => "busy",
            Tone::Warn => "warn",
            Tone::Bad => "bad",
            Tone::Quiet => "quiet",
        }
    }
}

/// One entry of an incident's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// How long ago.
    pub ago: String,
    /// What happened.
    pub event: String,
    /// Who did it.
    pub by: String,
    /// Details, if any.
    pub detail: Option<String>,
}

/// One incident as a row of the page.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRow {
    /// Its uuid (the cancel button's target).
    pub uuid: String,
    /// The node that reported it.
    pub node: String,
    /// The requested action.
    pub action: String,
    /// The repair command of a live repair.
    pub command: Option<String>,
    /// `noted`, `pending`, ...
    pub status: &'static str,
    /// The status's colour.
    pub tone: Tone,
    /// Since it was first seen.
    pub age: String,
    /// Since it last changed.
    pub changed: String,
    /// The last noteworthy thing that happened.
    pub message: Option<String>,
    /// Its jobs' ids, in order.
    pub jobs: Vec<String>,
    /// Remarks: not yet confirmed, flapping, stuck job.
    pub flags: Vec<&'static str>,
    /// The node's report as received (compact JSON).
    pub report: String,
    /// Its history, latest first.
    pub history: Vec<HistoryRow>,
    /// maintd may still act on it, so it can be canceled.
    pub cancelable: bool,
}

/// One node's polling health.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    /// Node name.
    pub node: String,
    /// The last valid report's action, if any.
    pub last_status: Option<String>,
    /// How long ago the last valid report came, or `never`.
    pub last_report: String,
    /// `ok`, `N failed polls`, `no report yet`.
    pub health: String,
    /// The health's colour.
    pub tone: Tone,
    /// The last failed poll's error, while polls fail.
    pub last_error: Option<String>,
    /// Failed polls in all.
    pub total_failures: u64,
}

/// The brakes.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyPanel {
    /// One line: running, paused, breaker tripped, ...
    pub headline: String,
    /// The headline's colour.
    pub tone: Tone,
    /// Paused (through the API or the cluster tag): resume is offered.
    pub paused: bool,
    /// Something resume lifts (a pause, the breaker).
    pub resumable: bool,
    /// Further facts, one line each.
    pub facts: Vec<String>,
}

/// Everything the live part of the page shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Live {
    /// This node is not master: maintd is idle here.
    Idle,
    /// The master's state.
    Serving {
        /// The brakes.
        safety: SafetyPanel,
        /// Open incidents (and closed ones not yet forgotten), oldest first.
        incidents: Vec<IncidentRow>,
        /// Recently forgotten incidents, latest first.
        forgotten: Vec<IncidentRow>,
        /// Every polled node, by name.
        nodes: Vec<NodeRow>,
        /// The current round.
        round: u64,
    },
}

/// A duration in seconds as a short text: `4 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn duration_text(seconds: f64) -> String {
    // Clocks of different nodes may disagree a little: never a negative age.
    let s = if seconds.is_finite() && seconds > 0.0 {
        seconds as u64
    } else {
        0
    };
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
        _ => match (s % 86_400) / 3600 {
            0 => format!("{} d", s / 86_400),
            h => format!("{} d {h} h", s / 86_400),
        },
    }
}

/// The time of day of `now` (Unix seconds) in UTC, `HH:MM:SS UTC`.
pub fn utc_time_of_day(now: f64) -> String {
    let seconds = if now.is_finite() && now > 0.0 {
        now as u64 % 86_400
    } else {
        0
    };
    format!(
        "{:02}:{:02}:{:02} UTC",
        seconds / 3600,
        (seconds % 3600) / 60,
        seconds % 60
    )
}

/// How long ago `then` was, at `now` (Unix seconds).
pub fn ago(now: f64, then: f64) -> String {
    if now - then < 1.0 {
        return "just now".to_owned();
    }
    format!("{} ago", duration_text(now - then))
}

fn status_tone(status: RepairStatus) -> Tone {
    match status {
        RepairStatus::Noted => Tone::Warn,
        RepairStatus::Pending => Tone::Busy,
        RepairStatus::Completed => Tone::Good,
        RepairStatus::Failed => Tone::Bad,
        RepairStatus::Canceled => Tone::Quiet,
    }
}

/// An incident as a row, at `now`.
pub fn incident_row(incident: &Incident, now: f64) -> IncidentRow {
    let mut flags = Vec::new();
    if !incident.confirmed {
        flags.push("not yet confirmed");
    }
    if incident.flapping {
        flags.push("held: flapping");
    }
    if incident.stuck_job.is_some() {
        flags.push("a job is stuck");
    }
    IncidentRow {
        uuid: incident.uuid.to_string(),
        node: incident.node.clone(),
        action: incident.action.as_str().to_owned(),
        command: incident.command.clone(),
        status: incident.status.as_str(),
        tone: status_tone(incident.status),
        age: duration_text(now - incident.ctime),
        changed: ago(now, incident.mtime),
        message: incident.message.clone(),
        jobs: incident.jobs.iter().map(ToString::to_string).collect(),
        flags,
        report: incident.original.to_string(),
        history: incident
            .history
            .iter()
            .rev()
            .map(|entry| HistoryRow {
                ago: ago(now, entry.time),
                event: entry.event.clone(),
                by: entry.by.clone(),
                detail: entry.detail.clone(),
            })
            .collect(),
        cancelable: incident.status.is_open(),
    }
}

/// A node's polling health as a row, at `now`.
pub fn node_row(node: &NodePollView, now: f64) -> NodeRow {
    let (health, tone) = match (node.consecutive_failures, node.last_report_at) {
        (0, Some(_)) => ("ok".to_owned(), Tone::Good),
        (0, None) => ("no report yet".to_owned(), Tone::Quiet),
        (1, _) => ("1 failed poll".to_owned(), Tone::Warn),
        (n, _) => (format!("{n} failed polls in a row"), Tone::Bad),
    };
    NodeRow {
        node: node.node.clone(),
        last_status: node.last_status.clone(),
        last_report: node
            .last_report_at
            .map_or_else(|| "never".to_owned(), |at| ago(now, at)),
        health,
        tone,
        last_error: (node.consecutive_failures > 0)
            .then(|| node.last_error.clone())
            .flatten(),
        total_failures: node.total_failures,
    }
}

/// The brakes as a panel, at `now`.
pub fn safety_panel(safety: &SafetyView, now: f64) -> SafetyPanel {
    let mut facts = Vec::new();
    if safety.paused {
        if let Some(by) = &safety.paused_by {
            let since = safety
                .paused_since
                .map(|at| format!(", {}", ago(now, at)))
                .unwrap_or_default();
            facts.push(format!("Paused by {by}{since}."));
        }
        if let Some(reason) = &safety.pause_reason {
            facts.push(format!("Reason: {reason}"));
        }
        if safety.paused_by_tag {
            facts.push("The cluster carries the maintd:paused tag.".to_owned());
        }
    }
    if safety.breaker.tripped {
        let since = safety
            .breaker
            .since
            .map(|at| format!(" ({})", ago(now, at)))
            .unwrap_or_default();
        let reason = safety
            .breaker
            .reason
            .as_deref()
            .unwrap_or("no reason given");
        facts.push(format!("Circuit breaker tripped{since}: {reason}"));
    }
    if let Some(halted) = &safety.halted {
        facts.push(format!("No new action: {halted}"));
    }
    if let Some(error) = &safety.state_error {
        facts.push(format!("The state cannot be saved: {error}"));
    }
    let in_repair = if safety.in_repair.is_empty() {
        "none".to_owned()
    } else {
        safety.in_repair.join(", ")
    };
    facts.push(format!(
        "In repair: {in_repair} (limits: {} at once, {}% of a group).",
        safety.limit, safety.limit_percent
    ));
    if safety.dry_run {
        facts.push("Dry run: nothing is submitted.".to_owned());
    }
    let (headline, tone) = if safety.state_error.is_some() {
        ("State not durable", Tone::Bad)
    } else if safety.breaker.tripped {
        ("Circuit breaker tripped", Tone::Bad)
    } else if safety.paused {
        ("Paused", Tone::Warn)
    } else if safety.halted.is_some() {
        ("Halted", Tone::Warn)
    } else if safety.dry_run {
        ("Running (dry run)", Tone::Busy)
    } else {
        ("Running", Tone::Good)
    };
    SafetyPanel {
        headline: headline.to_owned(),
        tone,
        paused: safety.paused,
        resumable: safety.paused || safety.breaker.tripped,
        facts,
    }
}

/// The live part of the page from the registry's answers, at `now`.
pub fn live(status: &StatusView, safety: &SafetyView, forgotten: &[Incident], now: f64) -> Live {
    let mut nodes: Vec<NodeRow> = status.nodes.iter().map(|n| node_row(n, now)).collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Live::Serving {
        safety: safety_panel(safety, now),
        incidents: status
            .incidents
            .iter()
            .map(|i| incident_row(i, now))
            .collect(),
        forgotten: forgotten.iter().map(|i| incident_row(i, now)).collect(),
        nodes,
        round: status.round,
    }
}

#[cfg(test)]
mod tests {
    use maintd::model::{incident::HistoryEntry, job::JobId};
    use serde_json::json;

    use super::*;

    fn incident(status: RepairStatus) -> Incident {
        serde_json::from_value(json!({
            "uuid": "6f0c5e0e-4a0e-4c59-9d1e-0e3f2d0b9a11",
            "node": "node3.example.org",
            "original": {"status": "evacuate", "details": {"disk": "sda"}},
            "action": "evacuate",
            "command": null,
            "status": status.as_str(),
            "jobs": [],
            "tag": "maintd:repaired",
            "tagged": false,
            "acknowledged": false,
            "repair_done": false,
            "message": null,
            "ctime": 1000.0,
            "mtime": 1000.0,
        }))
        .expect("an incident")
    }

    #[test]
    fn durations_read_short_and_never_negative() {
        let cases = [
            (-5.0, "0 s"),
            (f64::NAN, "0 s"),
            (0.4, "0 s"),
            (59.9, "59 s"),
            (60.0, "1 min"),
            (3599.0, "59 min"),
            (3600.0, "1 h"),
            (3600.0 * 3.0 + 300.0, "3 h 5 min"),
            (86_400.0, "1 d"),
            (86_400.0 * 2.0 + 3600.0 * 4.0 + 59.0, "2 d 4 h"),
        ];
        for (seconds, text) in cases {
            assert_eq!(duration_text(seconds), text, "{seconds}");
        }
        assert_eq!(ago(100.0, 40.0), "1 min ago");
        assert_eq!(ago(100.0, 99.5), "just now");
        assert_eq!(ago(100.0, 130.0), "just now", "a clock ahead of ours");
        assert_eq!(utc_time_of_day(1_796_630_462.7), "08:01:02 UTC");
        assert_eq!(utc_time_of_day(-1.0), "00:00:00 UTC");
    }

    #[test]
    fn an_incident_row_has_age_jobs_flags_and_history_latest_first() {
        let mut i = incident(RepairStatus::Pending);
        i.jobs = vec![JobId(17), JobId(18)];
        i.confirmed = true;
        i.stuck_job = Some(JobId(18));
        i.message = Some("waiting for job 18".into());
        i.history = vec![
            HistoryEntry {
                time: 1000.0,
                event: "noted".into(),
                by: "node3.example.org".into(),
                detail: None,
            },
            HistoryEntry {
                time: 1100.0,
                event: "job-submitted".into(),
                by: "maintd".into(),
                detail: Some("job 17".into()),
            },
        ];
        i.mtime = 1100.0;
        let row = incident_row(&i, 1000.0 + 3600.0 * 2.0 + 60.0 * 7.0);
        assert_eq!(row.status, "pending");
        assert_eq!(row.tone, Tone::Busy);
        assert_eq!(row.age, "2 h 7 min");
        assert_eq!(row.changed, "2 h 5 min ago");
        assert_eq!(row.jobs, ["17", "18"]);
        assert_eq!(row.flags, ["a job is stuck"]);
        assert_eq!(row.history[0].event, "job-submitted");
        assert_eq!(row.history[1].ago, "2 h 7 min ago");
        assert!(row.cancelable);
        assert_eq!(
            row.report,
            r#"{"details":{"disk":"sda"},"status":"evacuate"}"#
        );
    }

    #[test]
    fn only_open_incidents_can_be_canceled() {
        let open = [RepairStatus::Noted, RepairStatus::Pending];
        for status in [
            RepairStatus::Noted,
            RepairStatus::Pending,
            RepairStatus::Canceled,
            RepairStatus::Failed,
            RepairStatus::Completed,
        ] {
            let row = incident_row(&incident(status), 1000.0);
            assert_eq!(row.cancelable, open.contains(&status), "{status:?}");
            assert_eq!(row.status, status.as_str());
        }
    }

    #[test]
    fn node_health_counts_failed_polls() {
        let mut node = NodePollView {
            node: "node1".into(),
            ..NodePollView::default()
        };
        assert_eq!(node_row(&node, 50.0).health, "no report yet");
        assert_eq!(node_row(&node, 50.0).last_report, "never");
        node.last_report_at = Some(20.0);
        node.last_status = Some("Ok".into());
        let row = node_row(&node, 50.0);
        assert_eq!((row.health.as_str(), row.tone), ("ok", Tone::Good));
        assert_eq!(row.last_report, "30 s ago");
        node.consecutive_failures = 3;
        node.total_failures = 9;
        node.last_error = Some("connection refused".into());
        let row = node_row(&node, 50.0);
        assert_eq!(row.health, "3 failed polls in a row");
        assert_eq!(row.tone, Tone::Bad);
        assert_eq!(row.last_error.as_deref(), Some("connection refused"));
    }

    #[test]
    fn the_safety_panel_names_the_strongest_brake_and_why() {
        let mut safety = SafetyView {
            limit: 2,
            limit_percent: 50.0,
            ..SafetyView::default()
        };
        let panel = safety_panel(&safety, 0.0);
        assert_eq!(
            (panel.headline.as_str(), panel.tone),
            ("Running", Tone::Good)
        );
        assert!(!panel.resumable);
        safety.paused = true;
        safety.paused_by = Some("user operator (api client 127.0.0.1)".into());
        safety.paused_since = Some(100.0);
        safety.pause_reason = Some("disk firmware update".into());
        let panel = safety_panel(&safety, 400.0);
        assert_eq!(panel.headline, "Paused");
        assert!(panel.paused && panel.resumable);
        assert!(panel
            .facts
            .contains(&"Paused by user operator (api client 127.0.0.1), 5 min ago.".to_owned()));
        assert!(panel
            .facts
            .contains(&"Reason: disk firmware update".to_owned()));
        safety.breaker.tripped = true;
        safety.breaker.reason = Some("3 nodes failed within 10 min".into());
        let panel = safety_panel(&safety, 400.0);
        assert_eq!(
            (panel.headline.as_str(), panel.tone),
            ("Circuit breaker tripped", Tone::Bad)
        );
        assert!(panel
            .facts
            .iter()
            .any(|f| f.contains("3 nodes failed within 10 min")));
    }

    #[test]
    fn viewers_may_act_only_with_the_write_option_or_an_open_api() {
        let writer = ApiCaller::User {
            name: "operator".into(),
            write: true,
        };
        let reader = ApiCaller::User {
            name: "reader".into(),
            write: false,
        };
        assert!(Viewer::of(Some(&ApiCaller::Open)).may_act());
        assert!(Viewer::of(Some(&writer)).may_act());
        assert!(!Viewer::of(Some(&reader)).may_act());
        assert!(!Viewer::of(Some(&ApiCaller::Anonymous)).may_act());
        assert_eq!(Viewer::of(None), Viewer::LoggedOut);
    }
}
