use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::model::{
    cluster::{ClusterSnapshot, Node},
    diagnose::parse_diagnose,
};

fn diag(v: Value) -> Diagnose {
    parse_diagnose(v).unwrap()
}

fn node(name: &str, tags: &[&str]) -> Node {
    Node {
        name: name.into(),
        uuid: format!("uuid-{name}"),
        group: "g".into(),
        memory_total: 1000,
        memory_free: 1000,
        disk_total: 1000,
        disk_free: 1000,
        cpus: 4,
        offline: false,
        drained: false,
        vm_capable: true,
        tags: tags.iter().map(|t| t.to_string()).collect::<BTreeSet<_>>(),
        ..Node::default()
    }
}

fn cluster(nodes: Vec<Node>) -> ClusterSnapshot {
    ClusterSnapshot {
        master: "n1".into(),
        nodes,
        ..Default::default()
    }
}

fn only_uuid(state: &MaintenanceState) -> Uuid {
    assert_eq!(state.incidents.len(), 1);
    state.incidents[0].uuid
}

/// Submit one job for `uuid` and finish it with `status`.
fn run_job(
    state: &mut MaintenanceState,
    uuid: Uuid,
    purpose: JobPurpose,
    id: u64,
    status: Option<JobStatus>,
) {
    let job = PlannedJob {
        key: format!("k{id}"),
        incident: Some(uuid),
        purpose,
        nodes: BTreeSet::new(),
        ops: vec![],
    };
    state.start_round(&[job], 1.0);
    state.record_submission(&format!("k{id}"), Ok(JobId(id)), 1.0);
    assert_eq!(state.unfinished_jobs(), vec![JobId(id)]);
    state.record_job_status(JobId(id), status, 2.0);
    assert!(state.round_finished());
}

#[test]
fn same_json_same_incident_different_json_new_incident() {
    let mut s = MaintenanceState::new();
    let a = json!({"status": "evacuate", "details": {"disk": "sda"}});
    assert!(matches!(
        s.observe("n1", &diag(a.clone()), 0.0),
        Observed::NewIncident(_)
    ));
    // Key order does not matter: it is the same JSON object.
    let a_reordered: Value =
        serde_json::from_str(r#"{"details": {"disk": "sda"}, "status": "evacuate"}"#).unwrap();
    assert_eq!(s.observe("n1", &diag(a_reordered), 1.0), Observed::Nothing);
    assert!(matches!(
        s.observe("n2", &diag(a.clone()), 1.0),
        Observed::NewIncident(_)
    ));
    assert_eq!(s.observe("n2", &diag(a), 1.5), Observed::Nothing);
    assert!(matches!(
        s.observe(
            "n1",
            &diag(json!({"status": "evacuate", "details": {"disk": "sdb"}})),
            2.0
        ),
        Observed::NewIncident(_)
    ));
    assert_eq!(s.incidents.len(), 3);
    assert!(s.incidents.iter().all(|i| i.status == RepairStatus::Noted));
    assert_eq!(
        s.observe("n3", &diag(json!({"status": "Ok"})), 3.0),
        Observed::Nothing
    );
    assert_eq!(s.incidents.len(), 3);
}

#[test]
fn success_path_completes_and_tags() {
    let mut s = MaintenanceState::new();
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let u = only_uuid(&s);
    run_job(&mut s, u, JobPurpose::Drain, 1, Some(JobStatus::Success));
    assert_eq!(s.incident(u).unwrap().status, RepairStatus::Pending);
    run_job(&mut s, u, JobPurpose::TagReady, 2, Some(JobStatus::Success));
    let i = s.incident(u).unwrap();
    assert_eq!(i.status, RepairStatus::Completed);
    assert!(i.tagged);
    assert_eq!(i.tag, format!("maintd:repairready:{u}"));
    assert_eq!(i.jobs, vec![JobId(1), JobId(2)]);
}

#[test]
fn failed_job_fails_incident_and_switches_tag() {
    let mut s = MaintenanceState::new();
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let u = only_uuid(&s);
    run_job(&mut s, u, JobPurpose::Drain, 1, Some(JobStatus::Error));
    let i = s.incident(u).unwrap();
    assert_eq!(i.status, RepairStatus::Failed);
    assert_eq!(i.tag, format!("maintd:repairfailed:{u}"));
    assert!(!i.tagged);
    // A failing failure-tag job keeps the incident failed and untagged (retried later).
    run_job(&mut s, u, JobPurpose::TagFailed, 2, Some(JobStatus::Error));
    assert!(!s.incident(u).unwrap().tagged);
    run_job(
        &mut s,
        u,
        JobPurpose::TagFailed,
        3,
        Some(JobStatus::Success),
    );
    assert!(s.incident(u).unwrap().tagged);
}

#[test]
fn unknown_job_counts_as_failed() {
    let mut s = MaintenanceState::new();
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let u = only_uuid(&s);
    run_job(&mut s, u, JobPurpose::Drain, 9, None);
    let i = s.incident(u).unwrap();
    assert_eq!(i.status, RepairStatus::Failed);
    assert!(i
        .message
        .as_deref()
        .unwrap()
        .contains("unknown to the queue"));
}

#[test]
fn refused_submission_fails_incident_and_finishes_round() {
    let mut s = MaintenanceState::new();
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let u = only_uuid(&s);
    let job = PlannedJob {
        key: "k".into(),
        incident: Some(u),
        purpose: JobPurpose::Drain,
        nodes: BTreeSet::new(),
        ops: vec![],
    };
    s.start_round(&[job], 1.0);
    s.record_submission("k", Err("Queue drained".into()), 1.0);
    assert!(s.round_finished());
    assert_eq!(s.incident(u).unwrap().status, RepairStatus::Failed);
}

#[test]
fn removing_ready_tag_forgets_once_no_longer_observed() {
    let mut s = MaintenanceState::new();
    let report = json!({"status": "evacuate"});
    s.observe("n1", &diag(report.clone()), 0.0);
    let u = only_uuid(&s);
    run_job(&mut s, u, JobPurpose::TagReady, 1, Some(JobStatus::Success));
    let tag = s.incident(u).unwrap().tag.clone();
    // Tag present: nothing happens.
    assert!(s
        .reconcile(&cluster(vec![node("n1", &[&tag])]), 0.0)
        .is_empty());
    // Tag removed while still reported: kept, and no new incident for the same report.
    assert!(s.reconcile(&cluster(vec![node("n1", &[])]), 0.0).is_empty());
    assert_eq!(s.observe("n1", &diag(report), 1.0), Observed::Nothing);
    assert_eq!(s.incidents.len(), 1);
    // No longer reported: forgotten.
    s.observe("n1", &diag(json!({"status": "Ok"})), 2.0);
    assert!(s.incidents.is_empty());
}

#[test]
fn removing_failed_tag_forgets_at_once_and_restarts_flow() {
    let mut s = MaintenanceState::new();
    let report = json!({"status": "evacuate"});
    s.observe("n1", &diag(report.clone()), 0.0);
    let u = only_uuid(&s);
    run_job(&mut s, u, JobPurpose::Drain, 1, Some(JobStatus::Error));
    run_job(
        &mut s,
        u,
        JobPurpose::TagFailed,
        2,
        Some(JobStatus::Success),
    );
    let tag = s.incident(u).unwrap().tag.clone();
    assert!(s
        .reconcile(&cluster(vec![node("n1", &[&tag])]), 0.0)
        .is_empty());
    assert_eq!(s.reconcile(&cluster(vec![node("n1", &[])]), 0.0), vec![u]);
    assert!(s.incidents.is_empty());
    // Still reported: a fresh incident.
    assert!(matches!(s.observe("n1", &diag(report), 3.0), Observed::NewIncident(n) if n != u));
}

#[test]
fn failed_incident_is_not_forgotten_before_its_tag_was_set() {
    let mut s = MaintenanceState::new();
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let u = only_uuid(&s);
    run_job(&mut s, u, JobPurpose::Drain, 1, Some(JobStatus::Error));
    assert!(s.reconcile(&cluster(vec![node("n1", &[])]), 0.0).is_empty());
    assert_eq!(s.incidents.len(), 1);
}

#[test]
fn cancel_stops_and_forgets_once_unobserved() {
    let mut s = MaintenanceState::new();
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let u = only_uuid(&s);
    s.cancel(u, 1.0).unwrap();
    assert_eq!(s.incident(u).unwrap().status, RepairStatus::Canceled);
    s.cancel(u, 1.5).unwrap(); // idempotent
                               // A late job result does not revive it.
    run_job(&mut s, u, JobPurpose::Drain, 1, Some(JobStatus::Error));
    assert_eq!(s.incident(u).unwrap().status, RepairStatus::Canceled);
    s.observe("n1", &diag(json!({"status": "Ok"})), 2.0);
    assert!(s.incidents.is_empty());
    assert_eq!(s.cancel(u, 3.0), Err(CancelError::NotFound(u)));
}

#[test]
fn cancel_of_unobserved_incident_forgets_immediately() {
    let mut s = MaintenanceState::new();
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let u = only_uuid(&s);
    s.observe("n1", &diag(json!({"status": "Ok"})), 1.0);
    assert_eq!(
        s.incidents.len(),
        1,
        "open incidents stay when the node recovers"
    );
    s.cancel(u, 2.0).unwrap();
    assert!(s.incidents.is_empty());
}

#[test]
fn finished_incidents_cannot_be_canceled() {
    let mut s = MaintenanceState::new();
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let u = only_uuid(&s);
    run_job(&mut s, u, JobPurpose::TagReady, 1, Some(JobStatus::Success));
    assert_eq!(
        s.cancel(u, 1.0),
        Err(CancelError::Finished(u, RepairStatus::Completed))
    );
}

#[test]
fn departed_node_forgets_incidents_and_evacuated_instances() {
    let mut s = MaintenanceState::new();
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let u = only_uuid(&s);
    run_job(
        &mut s,
        u,
        JobPurpose::MovePrimary {
            instance: "i1".into(),
        },
        1,
        Some(JobStatus::Success),
    );
    assert_eq!(s.evacuated.keys().collect::<Vec<_>>(), vec!["i1"]);
    assert_eq!(s.reconcile(&cluster(vec![node("n2", &[])]), 0.0), vec![u]);
    assert!(s.incidents.is_empty());
    assert!(s.evacuated.is_empty());
}

#[test]
fn unconfirmed_submissions_are_listed_and_dropped() {
    let mut s = MaintenanceState::new();
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let u = only_uuid(&s);
    let jobs: Vec<PlannedJob> = ["a", "b"]
        .iter()
        .map(|k| PlannedJob {
            key: k.to_string(),
            incident: Some(u),
            purpose: JobPurpose::Drain,
            nodes: BTreeSet::new(),
            ops: vec![],
        })
        .collect();
    s.start_round(&jobs, 0.0);
    s.record_submission("a", Ok(JobId(5)), 0.0);
    assert_eq!(s.unconfirmed_submissions(), vec!["b".to_string()]);
    s.drop_unsubmitted("b");
    assert_eq!(s.round.jobs.len(), 1);
    assert!(!s.round_finished());
}

#[test]
fn state_survives_serialization() {
    let mut s = MaintenanceState::new();
    s.observe(
        "n1",
        &diag(json!({"status": "live-repair", "command": "fix"})),
        0.0,
    );
    let text = serde_json::to_string(&s).unwrap();
    let back: MaintenanceState = serde_json::from_str(&text).unwrap();
    assert_eq!(back.incidents, s.incidents);
    assert_eq!(back.state_id, s.state_id);
}

#[test]
fn submission_markers_never_match_longer_keys() {
    let text_of_job_10 = format!("Draining n1 (incident u, {}", submission_marker("s-r5-10"));
    assert!(!text_of_job_10.contains(&submission_marker("s-r5-1")));
    assert!(text_of_job_10.contains(&submission_marker("s-r5-10")));
}

#[test]
fn a_round_with_a_harep_repair_waits_for_its_pending_tag_job() {
    let mut s = MaintenanceState::new();
    let repair = PlannedJob {
        key: "r1-0".into(),
        incident: None,
        purpose: JobPurpose::HarepRepair {
            instance: "i1".into(),
            repair: "failover".into(),
            uuid: "abc".into(),
            timestamp: 7,
            replaces: vec![],
        },
        nodes: BTreeSet::new(),
        ops: vec![],
    };
    s.start_round(&[repair], 1.0);
    // Not submitted yet: nothing to follow up.
    assert!(s.repairs_awaiting_tags().is_empty());
    s.record_submission("r1-0", Ok(JobId(42)), 1.0);
    s.record_job_status(JobId(42), Some(JobStatus::Success), 2.0);
    // The repair is done, but its pending tag never was: the round is not over.
    assert_eq!(s.repairs_awaiting_tags().len(), 1);
    assert!(!s.round_finished());

    let follow_up = PlannedJob {
        key: "r1-0-pending".into(),
        incident: None,
        purpose: JobPurpose::HarepTags {
            instance: "i1".into(),
        },
        nodes: BTreeSet::new(),
        ops: vec![],
    };
    s.extend_round(&["r1-0".into()], &[follow_up]);
    assert!(s.repairs_awaiting_tags().is_empty());
    assert_eq!(s.unconfirmed_submissions(), vec!["r1-0-pending".to_owned()]);
    assert!(!s.round_finished());
    s.record_submission("r1-0-pending", Ok(JobId(43)), 3.0);
    s.record_job_status(JobId(43), Some(JobStatus::Success), 4.0);
    assert!(s.round_finished());
    // Survives a restart: the flag is part of the persisted state.
    let back: MaintenanceState = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert!(back.repairs_awaiting_tags().is_empty());
}

#[test]
fn a_failed_jobs_detail_becomes_part_of_the_incidents_message() {
    let mut s = MaintenanceState::new();
    s.observe(
        "n1",
        &diag(json!({"status": "live-repair", "command": "fix"})),
        0.0,
    );
    let uuid = only_uuid(&s);
    let job = PlannedJob {
        key: "k9".into(),
        incident: Some(uuid),
        purpose: JobPurpose::RepairCommand,
        nodes: BTreeSet::new(),
        ops: vec![],
    };
    s.start_round(&[job], 1.0);
    s.record_submission("k9", Ok(JobId(9)), 1.0);
    s.record_job_outcome(
        JobId(9),
        Some(JobStatus::Error),
        Some("repair command fix on n1 failed: command exited with code 2"),
        2.0,
    );
    let incident = &s.incidents[0];
    assert_eq!(incident.status, RepairStatus::Failed);
    assert_eq!(
        incident.message.as_deref(),
        Some("job 9 ended error: repair command fix on n1 failed: command exited with code 2")
    );
}

/// A planned job of `uuid` without opcodes or nodes.
fn planned(key: &str, uuid: Uuid, purpose: JobPurpose) -> PlannedJob {
    PlannedJob {
        key: key.into(),
        incident: Some(uuid),
        purpose,
        nodes: BTreeSet::new(),
        ops: vec![],
    }
}

/// Start a round with `job` alone and record it submitted as job `id` at time 0.
fn submit_alone(state: &mut MaintenanceState, job: PlannedJob, id: u64) {
    let key = job.key.clone();
    state.start_round(&[job], 0.0);
    state.record_submission(&key, Ok(JobId(id)), 0.0);
}

fn debounced(confirm_polls: u32, flap_budget: Option<usize>) -> MaintenanceState {
    let mut s = MaintenanceState::new();
    s.policy = StatePolicy {
        confirm_polls,
        flap_budget,
        ..StatePolicy::default()
    };
    s
}

#[test]
fn a_report_is_confirmed_after_consecutive_polls_and_dropped_when_it_changes_first() {
    let mut s = debounced(2, None);
    let a = diag(json!({"status": "evacuate", "details": {"t": 1}}));
    let b = diag(json!({"status": "evacuate", "details": {"t": 2}}));
    let Observed::NewIncident(first) = s.observe("n1", &a, 0.0) else {
        panic!("new")
    };
    assert!(!s.incident(first).unwrap().confirmed);
    // Another report before confirmation: the first is dropped, never acted upon.
    let Observed::NewIncident(second) = s.observe("n1", &b, 1.0) else {
        panic!("new")
    };
    assert!(s.incident(first).is_none());
    assert_eq!(s.forgotten.back().unwrap().uuid, first);
    assert_eq!(
        s.forgotten.back().unwrap().history.last().unwrap().event,
        "dropped"
    );
    assert_eq!(s.observe("n1", &b, 2.0), Observed::Confirmed(second));
    let confirmed = s.incident(second).unwrap();
    assert!(confirmed.confirmed);
    let events: Vec<&str> = confirmed.history.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, ["noted", "confirmed"]);
    // Confirmed incidents stay when the report changes (the identity rule is unchanged).
    s.observe("n1", &a, 3.0);
    assert!(s.incident(second).is_some());
}

#[test]
fn the_flap_budget_holds_incidents_beyond_it_within_an_hour() {
    let mut s = debounced(1, Some(2));
    let mut uuids = Vec::new();
    for t in 0..3 {
        let report = diag(json!({"status": "live-repair", "command": "c", "details": {"n": t}}));
        let Observed::NewIncident(uuid) = s.observe("n1", &report, t as f64 * 10.0) else {
            panic!("new")
        };
        uuids.push(uuid);
    }
    assert!(!s.incident(uuids[0]).unwrap().flapping);
    assert!(!s.incident(uuids[1]).unwrap().flapping);
    let third = s.incident(uuids[2]).unwrap();
    assert!(third.flapping);
    assert!(third.message.as_deref().unwrap().starts_with("flapping"));
    // An hour later the budget is back; another node has its own budget.
    let later = diag(json!({"status": "live-repair", "command": "c", "details": {"n": 9}}));
    let Observed::NewIncident(uuid) = s.observe("n1", &later, 3700.0) else {
        panic!("new")
    };
    assert!(!s.incident(uuid).unwrap().flapping);
    // Resume releases the held one.
    s.resume("operator", 3701.0);
    assert!(!s.incident(uuids[2]).unwrap().flapping);
}

#[test]
fn a_stale_signal_drops_the_incident_before_its_first_job() {
    let mut s = debounced(1, None);
    let a = diag(json!({"status": "evacuate"}));
    let Observed::NewIncident(uuid) = s.observe("n1", &a, 0.0) else {
        panic!("new")
    };
    let job = |key: &str| planned(key, uuid, JobPurpose::Drain);
    // Still reported: kept.
    let mut plan = RoundPlan {
        jobs: vec![job("k1")],
        ..RoundPlan::default()
    };
    assert!(s.drop_stale(&mut plan, 1.0).is_empty());
    assert_eq!(plan.jobs.len(), 1);
    // The node now reports something else (not yet confirmed): the planned first job of
    // the old incident is dropped with it.
    s.policy.confirm_polls = 2;
    s.observe(
        "n1",
        &diag(json!({"status": "evacuate", "details": 1})),
        2.0,
    );
    let mut plan = RoundPlan {
        jobs: vec![job("k2")],
        ..RoundPlan::default()
    };
    assert_eq!(s.drop_stale(&mut plan, 3.0), vec![uuid]);
    assert!(plan.jobs.is_empty());
    assert!(s.incident(uuid).is_none());
}

#[test]
fn a_started_incident_is_not_dropped_when_its_report_goes_away() {
    let mut s = debounced(1, None);
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let uuid = only_uuid(&s);
    run_job(&mut s, uuid, JobPurpose::Drain, 1, Some(JobStatus::Success));
    s.observe("n1", &diag(json!({"status": "Ok"})), 3.0);
    let mut plan = RoundPlan {
        jobs: vec![planned("k2", uuid, JobPurpose::TagReady)],
        ..RoundPlan::default()
    };
    assert!(s.drop_stale(&mut plan, 4.0).is_empty());
    assert_eq!(plan.jobs.len(), 1);
}

#[test]
fn a_running_job_past_the_timeout_is_stuck_and_the_round_goes_on_without_it() {
    let mut s = MaintenanceState::new();
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let uuid = only_uuid(&s);
    let job = PlannedJob {
        nodes: BTreeSet::from(["n1".to_owned()]),
        ..planned("k1", uuid, JobPurpose::Drain)
    };
    submit_alone(&mut s, job, 7);
    s.record_job_status(JobId(7), Some(JobStatus::Running), 10.0);
    assert_eq!(s.apply_job_timeout(60.0, 30.0), (vec![], vec![]));
    assert!(!s.round_finished());
    let (cancel, stuck) = s.apply_job_timeout(60.0, 61.0);
    assert!(cancel.is_empty());
    assert_eq!(stuck, vec![(JobId(7), Some(uuid))]);
    assert!(s.round_finished(), "a stuck job does not hold the round");
    assert_eq!(s.incident(uuid).unwrap().stuck_job, Some(JobId(7)));
    // The next round carries it: still watched, its node busy.
    s.start_round(&[], 62.0);
    assert_eq!(s.unfinished_jobs(), vec![JobId(7)]);
    assert_eq!(s.stuck_jobs().count(), 1);
    s.record_job_status(JobId(7), Some(JobStatus::Success), 100.0);
    assert_eq!(s.incident(uuid).unwrap().stuck_job, None);
    assert_eq!(s.stuck_jobs().count(), 0);
}

#[test]
fn a_waiting_job_past_the_timeout_is_canceled_without_failing_its_incident() {
    let mut s = MaintenanceState::new();
    s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
    let uuid = only_uuid(&s);
    submit_alone(&mut s, planned("k1", uuid, JobPurpose::Drain), 3);
    s.record_job_status(JobId(3), Some(JobStatus::Waiting), 5.0);
    let (cancel, stuck) = s.apply_job_timeout(60.0, 61.0);
    assert_eq!(cancel, vec![JobId(3)]);
    assert!(stuck.is_empty());
    // Asked once only.
    assert_eq!(s.apply_job_timeout(60.0, 70.0).0, vec![]);
    s.record_job_status(JobId(3), Some(JobStatus::Canceled), 71.0);
    let incident = s.incident(uuid).unwrap();
    assert!(incident.status.is_open(), "{:?}", incident.status);
    assert!(incident.message.as_deref().unwrap().contains("canceled"));
    assert!(s.round_finished());
}

#[test]
fn a_failed_live_migration_escalates_to_a_failover_once_when_allowed() {
    let migrate = crate::model::opcode::Opcode {
        body: OpBody::InstanceMigrate {
            instance_name: "i1".into(),
            mode: None,
            target_node: None,
            allow_failover: true,
            ignore_hvversions: true,
            allow_runtime_changes: false,
            cleanup: false,
        },
        reason: vec![],
    };
    for allowed in [false, true] {
        let mut s = MaintenanceState::new();
        s.policy.escalate_to_failover = allowed;
        s.observe("n1", &diag(json!({"status": "evacuate"})), 0.0);
        let uuid = only_uuid(&s);
        let fail_migration = |s: &mut MaintenanceState, id: u64| {
            let purpose = JobPurpose::MovePrimary {
                instance: "i1".into(),
            };
            let job = PlannedJob {
                ops: vec![migrate.clone()],
                ..planned(&format!("k{id}"), uuid, purpose)
            };
            submit_alone(s, job, id);
            s.record_job_status(JobId(id), Some(JobStatus::Error), 1.0);
        };
        fail_migration(&mut s, 1);
        let incident = s.incident(uuid).unwrap();
        if allowed {
            assert!(incident.status.is_open());
            assert!(incident.failover_instances.contains("i1"));
            // A second failure of the same instance fails the incident.
            fail_migration(&mut s, 2);
            assert_eq!(s.incident(uuid).unwrap().status, RepairStatus::Failed);
        } else {
            assert_eq!(incident.status, RepairStatus::Failed);
        }
    }
}
