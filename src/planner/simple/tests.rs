use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::model::{
    cluster::{Group, Node},
    diagnose::parse_diagnose,
    incident::{MaintenanceState, PlannedJob},
};

fn node(name: &str, memory_free: u64) -> Node {
    Node {
        name: name.into(),
        uuid: format!("u-{name}"),
        group: "g1".into(),
        memory_total: 64_000,
        memory_free,
        disk_total: 1_000_000,
        disk_free: 1_000_000,
        cpus: 16,
        offline: false,
        drained: false,
        vm_capable: true,
        tags: BTreeSet::new(),
        ..Node::default()
    }
}

fn instance(
    name: &str,
    template: DiskTemplate,
    primary: &str,
    secondary: Option<&str>,
) -> Instance {
    Instance {
        name: name.into(),
        uuid: format!("u-{name}"),
        primary: primary.into(),
        secondaries: secondary.into_iter().map(str::to_owned).collect(),
        disk_template: template,
        memory: 4_000,
        disk: 50_000,
        vcpus: 2,
        status: "running".into(),
        tags: BTreeSet::new(),
        ..Instance::default()
    }
}

fn cluster(nodes: Vec<Node>, instances: Vec<Instance>) -> ClusterSnapshot {
    ClusterSnapshot {
        // The master is a node the tests never evacuate, unless they say so.
        master: "master".into(),
        groups: vec![Group {
            name: "default".into(),
            uuid: "g1".into(),
            alloc_policy: "preferred".into(),
            ..Group::default()
        }],
        nodes,
        instances,
        ..Default::default()
    }
}

fn state_with(reports: &[(&str, serde_json::Value)]) -> MaintenanceState {
    let mut s = MaintenanceState::new();
    for (t, (node, report)) in reports.iter().enumerate() {
        s.observe(node, &parse_diagnose(report.clone()).unwrap(), t as f64);
    }
    s
}

fn plan(c: &ClusterSnapshot, s: &MaintenanceState) -> RoundPlan {
    SimplePlanner.plan(PlanInput {
        cluster: c,
        incidents: &s.incidents,
        key_prefix: "t-r1",
        now_ns: 7,
        job_statuses: &Default::default(),
        node_loads: &Default::default(),
        gate: &crate::model::safety::SafetyGate::open(),
    })
}

fn op_ids(job: &PlannedJob) -> Vec<&'static str> {
    job.ops.iter().map(|o| o.body.op_id()).collect()
}

fn assert_no_shared_nodes(plan: &RoundPlan) {
    let mut seen = BTreeSet::new();
    for job in &plan.jobs {
        for node in &job.nodes {
            assert!(
                seen.insert(node.clone()),
                "node {node} touched twice in {plan:#?}"
            );
        }
    }
}

#[test]
fn evacuation_drains_first() {
    let c = cluster(
        vec![node("n1", 60_000), node("n2", 60_000)],
        vec![instance("i1", DiskTemplate::Drbd, "n1", Some("n2"))],
    );
    let s = state_with(&[("n1", json!({"status": "evacuate"}))]);
    let p = plan(&c, &s);
    assert_eq!(p.jobs.len(), 1);
    assert_eq!(p.jobs[0].purpose, JobPurpose::Drain);
    assert_eq!(op_ids(&p.jobs[0]), vec!["OP_NODE_SET_PARAMS"]);
    let reason = &p.jobs[0].ops[0].reason[0];
    assert_eq!(reason.0, "gnt:daemon:maintd");
    assert!(reason.1.contains(&s.incidents[0].uuid.to_string()));
    assert!(reason.1.contains("t-r1-0"));
}

#[test]
fn drained_node_moves_primaries_then_secondaries_then_tags() {
    let mut n1 = node("n1", 60_000);
    n1.drained = true;
    let s = state_with(&[("n1", json!({"status": "evacuate"}))]);
    let c = cluster(
        vec![n1.clone(), node("n2", 60_000), node("n3", 60_000)],
        vec![
            instance("i2", DiskTemplate::Drbd, "n2", Some("n1")),
            instance("i1", DiskTemplate::Drbd, "n1", Some("n2")),
        ],
    );
    let p = plan(&c, &s);
    assert_eq!(p.jobs.len(), 1);
    assert_eq!(
        p.jobs[0].purpose,
        JobPurpose::MovePrimary {
            instance: "i1".into()
        }
    );
    assert_eq!(
        op_ids(&p.jobs[0]),
        vec!["OP_INSTANCE_MIGRATE", "OP_INSTANCE_REPLACE_DISKS"]
    );
    assert_eq!(
        p.jobs[0].nodes,
        ["n1", "n2", "n3"].iter().map(|s| s.to_string()).collect()
    );

    let c = cluster(
        vec![n1.clone(), node("n2", 60_000), node("n3", 60_000)],
        vec![instance("i2", DiskTemplate::Drbd, "n2", Some("n1"))],
    );
    let p = plan(&c, &s);
    assert_eq!(
        p.jobs[0].purpose,
        JobPurpose::MoveSecondary {
            instance: "i2".into()
        }
    );
    match &p.jobs[0].ops[0].body {
        OpBody::InstanceReplaceDisks { remote_node, .. } => {
            assert_eq!(remote_node.as_deref(), Some("n3"))
        }
        other => panic!("unexpected {other:?}"),
    }

    let c = cluster(vec![n1, node("n2", 60_000)], vec![]);
    let p = plan(&c, &s);
    assert_eq!(p.jobs[0].purpose, JobPurpose::TagReady);
    match &p.jobs[0].ops[0].body {
        OpBody::TagsSet { tags, .. } => assert_eq!(tags, &vec![s.incidents[0].tag.clone()]),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn failover_action_uses_failover() {
    let mut n1 = node("n1", 60_000);
    n1.drained = true;
    let s = state_with(&[("n1", json!({"status": "evacuate-failover"}))]);
    let c = cluster(
        vec![n1, node("n2", 60_000)],
        vec![instance("i1", DiskTemplate::Drbd, "n1", Some("n2"))],
    );
    // No third node for the mirror: the failover alone; the secondary moves later.
    assert_eq!(op_ids(&plan(&c, &s).jobs[0]), vec!["OP_INSTANCE_FAILOVER"]);
}

#[test]
fn full_secondary_gets_a_new_secondary_first() {
    let mut n1 = node("n1", 60_000);
    n1.drained = true;
    let s = state_with(&[("n1", json!({"status": "evacuate"}))]);
    let c = cluster(
        vec![n1, node("n2", 1_000), node("n3", 60_000)],
        vec![instance("i1", DiskTemplate::Drbd, "n1", Some("n2"))],
    );
    let p = plan(&c, &s);
    match &p.jobs[0].ops[0].body {
        OpBody::InstanceReplaceDisks { remote_node, .. } => {
            assert_eq!(remote_node.as_deref(), Some("n3"))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn plain_instances_are_moved_and_diskless_migrated_to_a_target() {
    let mut n1 = node("n1", 60_000);
    n1.drained = true;
    let s = state_with(&[("n1", json!({"status": "evacuate"}))]);
    let c = cluster(
        vec![n1.clone(), node("n2", 10_000), node("n3", 50_000)],
        vec![instance("i1", DiskTemplate::Plain, "n1", None)],
    );
    let p = plan(&c, &s);
    match &p.jobs[0].ops[0].body {
        OpBody::InstanceMove { target_node, .. } => assert_eq!(target_node, "n3"),
        other => panic!("unexpected {other:?}"),
    }
    let c = cluster(
        vec![n1, node("n2", 10_000), node("n3", 50_000)],
        vec![instance("i1", DiskTemplate::Diskless, "n1", None)],
    );
    match &plan(&c, &s).jobs[0].ops[0].body {
        OpBody::InstanceMigrate { target_node, .. } => {
            assert_eq!(target_node.as_deref(), Some("n3"))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn no_capacity_waits_with_a_note() {
    let mut n1 = node("n1", 60_000);
    n1.drained = true;
    let s = state_with(&[("n1", json!({"status": "evacuate"}))]);
    let c = cluster(
        vec![n1, node("n2", 100)],
        vec![instance("i1", DiskTemplate::Plain, "n1", None)],
    );
    let p = plan(&c, &s);
    assert!(p.jobs.is_empty());
    assert_eq!(p.notes.len(), 1);
    assert!(p.notes[0].1.contains("no node of its group has room"));
}

#[test]
fn most_invasive_incident_per_node_wins() {
    let s = state_with(&[
        ("n1", json!({"status": "live-repair", "command": "fix"})),
        ("n1", json!({"status": "evacuate"})),
        ("n1", json!({"status": "evacuate", "details": "later"})),
    ]);
    let c = cluster(vec![node("n1", 60_000), node("n2", 60_000)], vec![]);
    let p = plan(&c, &s);
    assert_eq!(p.jobs.len(), 1);
    assert_eq!(
        p.jobs[0].incident,
        Some(s.incidents[1].uuid),
        "older of the two evacuations"
    );
}

#[test]
fn live_repair_runs_command_with_diagnose_on_stdin_then_tags() {
    let report = json!({"status": "live-repair", "command": "reset-bmc", "details": {"bmc": 1}});
    let mut s = state_with(&[("n2", report.clone())]);
    let c = cluster(vec![node("n1", 60_000), node("n2", 60_000)], vec![]);
    let p = plan(&c, &s);
    match &p.jobs[0].ops[0].body {
        OpBody::RepairCommand {
            node_name,
            command,
            input,
        } => {
            assert_eq!(node_name, "n2");
            assert_eq!(command, "reset-bmc");
            let stdin: serde_json::Value = serde_json::from_str(input.as_deref().unwrap()).unwrap();
            assert_eq!(stdin, report);
        }
        other => panic!("unexpected {other:?}"),
    }
    s.incidents[0].repair_done = true;
    assert_eq!(plan(&c, &s).jobs[0].purpose, JobPurpose::TagReady);
}

#[test]
fn live_repair_without_command_fails_and_tags_failed() {
    let s = state_with(&[("n2", json!({"status": "live-repair"}))]);
    let c = cluster(vec![node("n1", 60_000), node("n2", 60_000)], vec![]);
    let p = plan(&c, &s);
    assert_eq!(p.failures.len(), 1);
    assert_eq!(p.jobs[0].purpose, JobPurpose::TagFailed);
}

#[test]
fn jobs_of_a_round_never_share_a_node() {
    let mut nodes: Vec<Node> = (1..=6).map(|i| node(&format!("n{i}"), 60_000)).collect();
    nodes[0].drained = true;
    nodes[1].drained = true;
    let s = state_with(&[
        ("n1", json!({"status": "evacuate"})),
        ("n2", json!({"status": "evacuate-failover"})),
        ("n3", json!({"status": "live-repair", "command": "x"})),
    ]);
    let instances = vec![
        instance("a", DiskTemplate::Drbd, "n1", Some("n3")),
        instance("b", DiskTemplate::Diskless, "n2", None),
        instance("c", DiskTemplate::Plain, "n1", None),
    ];
    let c = cluster(nodes, instances);
    let p = plan(&c, &s);
    assert_no_shared_nodes(&p);
    // n1's instance 'a' migrates to n3, so n3's live repair waits for a later round.
    assert!(p
        .jobs
        .iter()
        .all(|j| j.purpose != JobPurpose::RepairCommand));
    assert_eq!(p.jobs.len(), 2);
    // Evacuating nodes are never targets.
    for job in &p.jobs {
        assert!(!(job.nodes.contains("n1") && job.nodes.contains("n2")));
    }
}

#[test]
fn failed_untagged_incident_gets_its_failure_tag() {
    let mut s = state_with(&[("n1", json!({"status": "evacuate"}))]);
    let u = s.incidents[0].uuid;
    s.fail_incident(u, "boom".into(), 1.0);
    let c = cluster(vec![node("n1", 60_000)], vec![]);
    let p = plan(&c, &s);
    assert_eq!(p.jobs.len(), 1);
    assert_eq!(p.jobs[0].purpose, JobPurpose::TagFailed);
    s.incidents[0].tagged = true;
    assert!(plan(&c, &s).jobs.is_empty());
}

#[test]
fn the_master_is_never_drained() {
    let s = state_with(&[("n1", json!({"status": "evacuate"}))]);
    let mut c = cluster(vec![node("n1", 60_000), node("n2", 60_000)], vec![]);
    c.master = "n1".into();
    let p = plan(&c, &s);
    assert_eq!(p.failures.len(), 1);
    assert!(p.failures[0].1.contains("master-failover"));
    assert_eq!(p.jobs.len(), 1);
    assert_eq!(p.jobs[0].purpose, JobPurpose::TagFailed);
}
