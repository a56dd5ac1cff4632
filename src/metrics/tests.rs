use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::model::{
    diagnose::parse_diagnose,
    incident::{MaintenanceState, RepairStatus},
    safety::BreakerTrip,
};

fn observe(state: &mut MaintenanceState, node: &str, status: &str, now: f64) -> uuid::Uuid {
    let diagnose = parse_diagnose(json!({ "status": status })).expect("valid diagnose");
    state.observe(node, &diagnose, now);
    state
        .incidents
        .iter()
        .find(|i| i.node == node)
        .expect("incident opened")
        .uuid
}

fn scrape(metrics: &Metrics, state: Option<&StateSample>, format: Exposition) -> Vec<Sample> {
    parse_exposition(&metrics.encode(state, format)).expect("parses")
}

#[test]
fn the_sample_counts_incidents_by_status_and_action() {
    let mut state = MaintenanceState::new();
    observe(&mut state, "n1", "evacuate", 100.0);
    observe(&mut state, "n2", "evacuate", 200.0);
    let failed = observe(&mut state, "n3", "live-repair", 50.0);
    state.fail_incident(failed, "no command".into(), 300.0);
    let sample = StateSample::of(&state, [], false, false, 1000.0);
    assert_eq!(
        sample.incident_count(RepairStatus::Noted, RepairAction::Evacuate),
        2
    );
    assert_eq!(
        sample.incident_count(RepairStatus::Failed, RepairAction::LiveRepair),
        1
    );
    assert_eq!(
        sample.incident_count(RepairStatus::Pending, RepairAction::Evacuate),
        0
    );
    // The failed incident is older but no longer open.
    assert_eq!(sample.oldest_open_age, 900.0);
}

#[test]
fn no_open_incident_means_an_age_of_zero() {
    let mut state = MaintenanceState::new();
    let uuid = observe(&mut state, "n1", "evacuate", 100.0);
    state.cancel(uuid, 150.0).expect("canceled");
    let sample = StateSample::of(&state, [], false, false, 1000.0);
    assert_eq!(sample.oldest_open_age, 0.0);
    assert_eq!(
        sample.incident_count(RepairStatus::Canceled, RepairAction::Evacuate),
        1
    );
}

#[test]
fn report_ages_are_infinite_for_nodes_that_never_reported() {
    let state = MaintenanceState::new();
    let sample = StateSample::of(
        &state,
        [("n1", Some(990.0)), ("n2", None), ("n3", Some(1005.0))],
        false,
        false,
        1000.0,
    );
    assert_eq!(sample.report_age["n1"], 10.0);
    assert_eq!(sample.report_age["n2"], f64::INFINITY);
    // A report dated after the sample (clocks of different processes) is not negative.
    assert_eq!(sample.report_age["n3"], 0.0);
}

#[test]
fn the_brakes_come_from_the_state_and_the_tag() {
    let mut state = MaintenanceState::new();
    assert!(!StateSample::of(&state, [], false, false, 0.0).paused);
    assert!(StateSample::of(&state, [], true, false, 0.0).paused);
    state.pause(Some("disk swap".into()), "operator", 1.0);
    state.safety.breaker = Some(BreakerTrip {
        reason: "3 nodes".into(),
        since: 2.0,
    });
    let sample = StateSample::of(&state, [], false, true, 3.0);
    assert!(sample.paused && sample.breaker_tripped && sample.save_failing);
}

#[test]
fn events_are_counted() {
    let metrics = Metrics::new();
    metrics.record_poll("n1", true);
    metrics.record_poll("n1", false);
    metrics.record_poll("n2", true);
    metrics.record_jobs_submitted(3);
    metrics.record_job_statuses(&[
        (JobId(1), Some(JobStatus::Success)),
        (JobId(2), Some(JobStatus::Error)),
        (JobId(3), None),
        (JobId(4), Some(JobStatus::Running)),
    ]);
    metrics.record_jobs_timed_out(1);
    metrics.record_save_failure();
    metrics.observe_round(42.0);
    metrics.observe_plan(0.002);
    let samples = scrape(&metrics, None, Exposition::OpenMetrics);
    let value = |name, labels: &[(&str, &str)]| sample_value(&samples, name, labels);
    assert_eq!(value("maintd_polls_total", &[("node", "n1")]), Some(2.0));
    assert_eq!(value("maintd_polls_total", &[("node", "n2")]), Some(1.0));
    assert_eq!(
        value("maintd_poll_failures_total", &[("node", "n1")]),
        Some(1.0)
    );
    assert_eq!(value("maintd_poll_failures_total", &[("node", "n2")]), None);
    assert_eq!(value("maintd_jobs_submitted_total", &[]), Some(3.0));
    assert_eq!(value("maintd_jobs_failed_total", &[]), Some(2.0));
    assert_eq!(value("maintd_jobs_timed_out_total", &[]), Some(1.0));
    assert_eq!(value("maintd_state_save_failures_total", &[]), Some(1.0));
    assert_eq!(value("maintd_round_duration_seconds_count", &[]), Some(1.0));
    assert_eq!(value("maintd_round_duration_seconds_sum", &[]), Some(42.0));
    assert_eq!(
        value("maintd_round_duration_seconds_bucket", &[("le", "40.0")]),
        Some(0.0)
    );
    assert_eq!(
        value("maintd_round_duration_seconds_bucket", &[("le", "80.0")]),
        Some(1.0)
    );
    assert_eq!(value("maintd_plan_duration_seconds_count", &[]), Some(1.0));
}

#[test]
fn state_gauges_only_while_master() {
    let metrics = Metrics::new();
    let idle = scrape(&metrics, None, Exposition::OpenMetrics);
    assert_eq!(sample_value(&idle, "maintd_is_master", &[]), Some(0.0));
    assert_eq!(sample_value(&idle, "maintd_paused", &[]), None);
    assert!(!idle.iter().any(|s| s.name == "maintd_incidents"));

    let mut state = MaintenanceState::new();
    observe(&mut state, "n1", "evacuate-failover", 100.0);
    state.pause(None, "operator", 101.0);
    let sample = StateSample::of(&state, [("n1", Some(110.0))], false, false, 160.0);
    let master = scrape(&metrics, Some(&sample), Exposition::OpenMetrics);
    let value = |name, labels: &[(&str, &str)]| sample_value(&master, name, labels);
    assert_eq!(value("maintd_is_master", &[]), Some(1.0));
    assert_eq!(value("maintd_paused", &[]), Some(1.0));
    assert_eq!(value("maintd_breaker_tripped", &[]), Some(0.0));
    assert_eq!(value("maintd_state_save_failing", &[]), Some(0.0));
    assert_eq!(
        value(
            "maintd_incidents",
            &[("status", "noted"), ("action", "evacuate-failover")]
        ),
        Some(1.0)
    );
    // Every status and action is there, at zero when none: alerts need no absent().
    assert_eq!(
        value(
            "maintd_incidents",
            &[("status", "failed"), ("action", "live-repair")]
        ),
        Some(0.0)
    );
    let incident_series = master
        .iter()
        .filter(|s| s.name == "maintd_incidents")
        .count();
    assert_eq!(incident_series, STATUSES.len() * ACTIONS.len());
    assert_eq!(
        value("maintd_oldest_open_incident_age_seconds", &[]),
        Some(60.0)
    );
    assert_eq!(
        value(
            "maintd_node_last_good_report_age_seconds",
            &[("node", "n1")]
        ),
        Some(50.0)
    );
}

#[test]
fn both_formats_name_the_same_samples() {
    let metrics = Metrics::new();
    metrics.record_poll("n1", false);
    let mut state = MaintenanceState::new();
    observe(&mut state, "n1", "evacuate", 1.0);
    let sample = StateSample::of(&state, [("n1", None)], false, false, 2.0);
    let open = metrics.encode(Some(&sample), Exposition::OpenMetrics);
    let text = metrics.encode(Some(&sample), Exposition::Text);
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(!text.contains("# EOF"), "{text}");
    assert!(text.contains("# TYPE maintd_polls_total counter"), "{text}");
    let names = |body: &str| {
        let mut names: Vec<(String, Vec<(String, String)>)> = parse_exposition(body)
            .expect("parses")
            .into_iter()
            .filter(|s| !s.name.ends_with("_created"))
            // Bucket bounds are spelled 10.0 in OpenMetrics and 10 in the text format.
            .map(|s| {
                let labels = s
                    .labels
                    .into_iter()
                    .map(|(k, v)| match v.parse::<f64>() {
                        Ok(bound) if k == "le" => (k, bound.to_string()),
                        _ => (k, v),
                    })
                    .collect();
                (s.name, labels)
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&open), names(&text));
    assert_eq!(
        sample_value(
            &parse_exposition(&text).expect("parses"),
            "maintd_node_last_good_report_age_seconds",
            &[("node", "n1")]
        ),
        Some(f64::INFINITY)
    );
}

#[test]
fn the_format_follows_the_accept_header() {
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(
        Exposition::from_accept(Some(prometheus)),
        Exposition::OpenMetrics
    );
    assert_eq!(Exposition::from_accept(Some("*/*")), Exposition::Text);
    assert_eq!(Exposition::from_accept(None), Exposition::Text);
    assert!(Exposition::OpenMetrics
        .content_type()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(Exposition::Text.content_type().starts_with("text/plain"));
}

#[test]
fn the_parser_refuses_garbage() {
    assert!(parse_exposition("maintd_polls_total{node=\"n1\"} x").is_err());
    assert!(parse_exposition("maintd_polls_total{node=n1} 1").is_err());
    assert!(parse_exposition("novalue").is_err());
    assert_eq!(
        parse_exposition("# HELP a b\n\na 1\n").expect("parses"),
        vec![Sample {
            name: "a".into(),
            labels: Vec::new(),
            value: 1.0
        }]
    );
}

struct FixedPlanner;

impl Planner for FixedPlanner {
    fn plan(&self, _: PlanInput<'_>) -> RoundPlan {
        RoundPlan {
            warnings: vec!["planned".into()],
            ..RoundPlan::default()
        }
    }

    fn jobs_to_query(&self, _: &ClusterSnapshot) -> Vec<JobId> {
        vec![JobId(7)]
    }
}

#[test]
fn a_timed_planner_plans_as_its_inner_one_and_counts_each_plan() {
    let metrics = Arc::new(Metrics::new());
    let planner = TimedPlanner::new(Arc::new(FixedPlanner), metrics.clone());
    let cluster = ClusterSnapshot::default();
    assert_eq!(planner.jobs_to_query(&cluster), vec![JobId(7)]);
    let gate = crate::model::safety::SafetyGate::open();
    let plan = planner.plan(PlanInput {
        cluster: &cluster,
        incidents: &[],
        key_prefix: "k",
        now_ns: 0,
        job_statuses: &BTreeMap::new(),
        node_loads: &BTreeMap::new(),
        gate: &gate,
    });
    assert_eq!(plan.warnings, vec!["planned".to_owned()]);
    let samples = scrape(&metrics, None, Exposition::Text);
    assert_eq!(
        sample_value(&samples, "maintd_plan_duration_seconds_count", &[]),
        Some(1.0)
    );
}
