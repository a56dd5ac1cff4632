//! Tests of the htools round.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::*;
use crate::htools::{
    evacuate::{evacuate, EvacMode},
    harep::RepairResult,
};
use crate::model::{
    cluster::{DiskTemplate, Group, Instance, Node},
    diagnose::parse_diagnose,
    incident::MaintenanceState,
    job::JobStatus,
};
use crate::sim::{SimCluster, SimSpec};

fn node(name: &str) -> Node {
    Node {
        name: name.into(),
        uuid: format!("u-{name}"),
        group: "g1".into(),
        memory_total: 64_000,
        memory_free: 64_000,
        disk_total: 1_000_000,
        disk_free: 1_000_000,
        cpus: 16,
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
        ..Instance::default()
    }
}

/// Nodes node1 (master) .. node6; `drained` are drained.
fn cluster(drained: &[&str], instances: Vec<Instance>) -> ClusterSnapshot {
    let mut nodes: Vec<Node> = (1..=6).map(|i| node(&format!("node{i}"))).collect();
    for n in &mut nodes {
        n.drained = drained.contains(&n.name.as_str());
    }
    // Account the instances' memory and disk, as Ganeti reports them.
    for i in &instances {
        for n in nodes.iter_mut() {
            if n.name == i.primary {
                n.memory_free -= i.memory;
            }
            if n.name == i.primary || i.secondaries.contains(&n.name) {
                n.disk_free -= i.disk;
            }
        }
    }
    ClusterSnapshot {
        master: "node1".into(),
        groups: vec![Group {
            name: "default".into(),
            uuid: "g1".into(),
            alloc_policy: "preferred".into(),
            ..Group::default()
        }],
        nodes,
        instances,
        ..ClusterSnapshot::default()
    }
}

fn state_with(reports: &[(&str, serde_json::Value)]) -> MaintenanceState {
    let mut s = MaintenanceState::new();
    for (t, (node, report)) in reports.iter().enumerate() {
        s.observe(node, &parse_diagnose(report.clone()).unwrap(), t as f64);
    }
    s
}

fn plan_with(
    planner: &HtoolsPlanner,
    c: &ClusterSnapshot,
    s: &MaintenanceState,
    statuses: &BTreeMap<JobId, JobStatus>,
) -> RoundPlan {
    planner.plan(PlanInput {
        cluster: c,
        incidents: &s.incidents,
        key_prefix: "t-r1",
        now_ns: 1_800_000_000_000_000_000,
        job_statuses: statuses,
        node_loads: &BTreeMap::new(),
        gate: &crate::model::safety::SafetyGate::open(),
    })
}

fn plan(c: &ClusterSnapshot, s: &MaintenanceState) -> RoundPlan {
    plan_with(&HtoolsPlanner::default(), c, s, &BTreeMap::new())
}

fn bodies(job: &PlannedJob) -> Vec<OpBody> {
    job.ops.iter().map(|o| o.body.clone()).collect()
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

/// hail's own answer for evacuating `instance` of `c` in `mode`, as opcodes.
fn hail(c: &ClusterSnapshot, instance: &str, mode: EvacMode) -> (Vec<OpBody>, Vec<String>) {
    let cluster = snapshot::load(c).unwrap();
    let idx = cluster.instance_index(instance).unwrap();
    let result = evacuate(&cluster, &[idx], mode, true).unwrap();
    assert!(result.failed.is_empty(), "{result:?}");
    let ops = result.jobs[0].iter().map(|o| o.body.clone()).collect();
    (ops, result.moved[0].2.clone())
}

#[test]
fn an_undrained_node_is_drained_first() {
    let c = cluster(
        &[],
        vec![instance("i1", DiskTemplate::Drbd, "node3", Some("node4"))],
    );
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let plan = plan(&c, &s);
    assert_eq!(plan.jobs.len(), 1);
    assert_eq!(op_ids(&plan.jobs[0]), ["OP_NODE_SET_PARAMS"]);
    assert_eq!(plan.jobs[0].purpose, JobPurpose::Drain);
}

#[test]
fn a_drbd_primary_moves_as_hail_moves_it() {
    let c = cluster(
        &["node3"],
        vec![instance("i1", DiskTemplate::Drbd, "node3", Some("node4"))],
    );
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let plan = plan(&c, &s);
    assert_eq!(plan.jobs.len(), 1, "{plan:#?}");
    let job = &plan.jobs[0];
    let (ops, targets) = hail(&c, "i1", EvacMode::PrimaryOnly);
    assert_eq!(bodies(job), ops);
    // ChangePrimary of a DRBD instance is a migration to its secondary.
    assert_eq!(op_ids(job), ["OP_INSTANCE_MIGRATE"]);
    assert_eq!(targets[0], "node4");
    assert_eq!(
        job.purpose,
        JobPurpose::MovePrimary {
            instance: "i1".into()
        }
    );
    assert!(job.nodes.contains("node3") && job.nodes.contains("node4"));
    let uuid = s.incidents[0].uuid.to_string();
    assert!(job.ops.iter().all(|o| o.reason[0].1.contains(&uuid)));
}

#[test]
fn evacuate_failover_fails_over_instead_of_migrating() {
    let c = cluster(
        &["node3"],
        vec![instance("i1", DiskTemplate::Drbd, "node3", Some("node4"))],
    );
    let s = state_with(&[("node3", json!({"status": "evacuate-failover"}))]);
    let plan = plan(&c, &s);
    assert_eq!(op_ids(&plan.jobs[0]), ["OP_INSTANCE_FAILOVER"]);
}

#[test]
fn the_highest_index_primary_goes_first_as_in_htools_lists() {
    let c = cluster(
        &["node3"],
        vec![
            instance("a", DiskTemplate::Drbd, "node3", Some("node4")),
            instance("b", DiskTemplate::Drbd, "node3", Some("node5")),
        ],
    );
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let plan = plan(&c, &s);
    assert_eq!(
        plan.jobs[0].purpose,
        JobPurpose::MovePrimary {
            instance: "b".into()
        }
    );
}

#[test]
fn a_secondary_moves_to_hails_choice() {
    let c = cluster(
        &["node3"],
        vec![instance("i1", DiskTemplate::Drbd, "node2", Some("node3"))],
    );
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let plan = plan(&c, &s);
    let job = &plan.jobs[0];
    let (ops, targets) = hail(&c, "i1", EvacMode::SecondaryOnly);
    assert_eq!(bodies(job), ops);
    assert_eq!(op_ids(job), ["OP_INSTANCE_REPLACE_DISKS"]);
    assert!(job.nodes.contains(&targets[1]));
    assert_eq!(
        job.purpose,
        JobPurpose::MoveSecondary {
            instance: "i1".into()
        }
    );
}

#[test]
fn externally_mirrored_instances_migrate_to_hails_target() {
    let c = cluster(
        &["node3"],
        vec![instance("i1", DiskTemplate::Diskless, "node3", None)],
    );
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let plan = plan(&c, &s);
    let (ops, targets) = hail(&c, "i1", EvacMode::PrimaryOnly);
    assert_eq!(bodies(&plan.jobs[0]), ops);
    assert!(plan.jobs[0].nodes.contains(&targets[0]));
}

#[test]
fn plain_instances_which_hail_refuses_are_copied_with_instance_move() {
    let c = cluster(
        &["node3"],
        vec![instance("p1", DiskTemplate::Plain, "node3", None)],
    );
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let plan = plan(&c, &s);
    assert_eq!(op_ids(&plan.jobs[0]), ["OP_INSTANCE_MOVE"]);
}

#[test]
fn an_empty_node_gets_its_ready_tag_and_the_master_is_refused() {
    let c = cluster(&["node3"], Vec::new());
    let s = state_with(&[
        ("node3", json!({"status": "evacuate"})),
        ("node1", json!({"status": "evacuate"})),
    ]);
    let plan = plan(&c, &s);
    let purposes: Vec<&JobPurpose> = plan.jobs.iter().map(|j| &j.purpose).collect();
    assert!(purposes.contains(&&JobPurpose::TagReady));
    assert!(purposes.contains(&&JobPurpose::TagFailed));
    assert_eq!(plan.failures.len(), 1);
    assert!(plan.failures[0].1.contains("master"));
}

#[test]
fn an_impossible_move_waits_with_hails_reason() {
    // Nowhere to go: every other node is drained.
    let c = cluster(
        &["node2", "node3", "node4", "node5", "node6"],
        vec![instance("i1", DiskTemplate::Diskless, "node3", None)],
    );
    let mut c = c;
    c.master = "node9".into();
    c.nodes[0].drained = true;
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let plan = plan(&c, &s);
    assert!(plan.jobs.is_empty(), "{plan:#?}");
    assert_eq!(plan.notes.len(), 1);
    assert!(
        plan.notes[0].1.contains("hail cannot move i1"),
        "{:?}",
        plan.notes
    );
}

#[test]
fn evacuations_of_a_generated_cluster_never_share_a_node() {
    for seed in 1..=20 {
        let spec = SimSpec {
            nodes: 8,
            instances: 30,
            seed,
            ..SimSpec::default()
        };
        let mut c = SimCluster::generate(&spec, 0.0).snapshot(0.0);
        let evacuated = ["node2", "node3", "node4"];
        for n in &mut c.nodes {
            n.drained = evacuated.contains(&n.name.as_str());
        }
        let s = state_with(&[
            ("node2", json!({"status": "evacuate"})),
            ("node3", json!({"status": "evacuate-failover"})),
            ("node4", json!({"status": "evacuate"})),
        ]);
        let plan = plan(&c, &s);
        assert_no_shared_nodes(&plan);
        for job in &plan.jobs {
            let instance = match &job.purpose {
                JobPurpose::MovePrimary { instance } | JobPurpose::MoveSecondary { instance } => {
                    instance
                }
                _ => continue,
            };
            let current = c.instances.iter().find(|i| &i.name == instance).unwrap();
            // No instance lands on a node being evacuated, unless it is there already
            // (hail fails a DRBD instance over to its secondary whatever that node's state).
            for target in &job.nodes {
                let already_there =
                    current.primary == *target || current.secondaries.contains(target);
                assert!(
                    already_there || !evacuated.contains(&target.as_str()),
                    "seed {seed}: {job:#?}"
                );
            }
        }
    }
}

const FAILOVER_ALLOWED: &str = "ganeti:watcher:autorepair:failover";

fn harep_planner() -> HtoolsPlanner {
    HtoolsPlanner::new(HtoolsSettings {
        harep: true,
        ..HtoolsSettings::default()
    })
}

/// node3 drained by an operator (no incident); i1's primary is there.
fn broken_cluster() -> ClusterSnapshot {
    let mut c = cluster(
        &["node3"],
        vec![instance("i1", DiskTemplate::Drbd, "node3", Some("node4"))],
    );
    c.cluster_tags.insert(FAILOVER_ALLOWED.into());
    c
}

#[test]
fn harep_fails_over_an_instance_on_a_drained_node() {
    let c = broken_cluster();
    let plan = plan_with(
        &harep_planner(),
        &c,
        &MaintenanceState::new(),
        &BTreeMap::new(),
    );
    assert_eq!(plan.jobs.len(), 1, "{plan:#?}");
    let job = &plan.jobs[0];
    assert_eq!(op_ids(job), ["OP_TEST_DELAY", "OP_INSTANCE_FAILOVER"]);
    assert_eq!(job.incident, None);
    let JobPurpose::HarepRepair {
        instance, repair, ..
    } = &job.purpose
    else {
        panic!("{job:#?}");
    };
    assert_eq!((instance.as_str(), repair.as_str()), ("i1", "failover"));
    assert!(job.ops[0].reason[0].0 == crate::model::opcode::REASON_SOURCE);

    // Once submitted as job 42, the follow-up adds harep's pending tag naming it.
    let (origins, follow_ups) =
        pending_tag_jobs(&[(job.key.clone(), job.purpose.clone(), JobId(42))], 5);
    assert_eq!(origins, vec![job.key.clone()]);
    let OpBody::TagsSet { tags, name, .. } = &follow_ups[0].ops[0].body else {
        panic!("{follow_ups:#?}");
    };
    assert_eq!(name.as_deref(), Some("i1"));
    let record = RepairRecord::parse_tag(&tags[0]).expect("a harep tag");
    assert_eq!(record.jobs, vec![JobId(42)]);
    assert_eq!(record.result, None);
    assert!(tags[0].starts_with("ganeti:watcher:autorepair:pending:failover:"));
}

#[test]
fn harep_without_policy_or_on_incident_nodes_does_nothing() {
    let mut c = broken_cluster();
    c.cluster_tags.clear();
    let plan = plan_with(
        &harep_planner(),
        &c,
        &MaintenanceState::new(),
        &BTreeMap::new(),
    );
    assert!(plan.jobs.is_empty(), "{plan:#?}");

    // node4 (the secondary) has an open incident: the repair waits.
    let c = broken_cluster();
    let s = state_with(&[("node4", json!({"status": "live-repair", "command": "fix"}))]);
    let plan = plan_with(&harep_planner(), &c, &s, &BTreeMap::new());
    assert!(
        plan.jobs
            .iter()
            .all(|j| !matches!(j.purpose, JobPurpose::HarepRepair { .. })),
        "{plan:#?}"
    );
}

#[test]
fn harep_settles_a_finished_repair_with_its_result_tag() {
    let mut c = broken_cluster();
    let pending = "ganeti:watcher:autorepair:pending:failover:abc:1700000000:42";
    c.instances[0].tags.insert(pending.into());
    let planner = harep_planner();
    assert_eq!(planner.jobs_to_query(&c), vec![JobId(42)]);

    // Still running: nothing to do for i1.
    let running = BTreeMap::from([(JobId(42), JobStatus::Running)]);
    let plan = plan_with(&planner, &c, &MaintenanceState::new(), &running);
    assert!(plan.jobs.is_empty(), "{plan:#?}");

    // Finished: a result tag replaces the pending one.
    let done = BTreeMap::from([(JobId(42), JobStatus::Success)]);
    let plan = plan_with(&planner, &c, &MaintenanceState::new(), &done);
    let tags_job = plan
        .jobs
        .iter()
        .find(|j| matches!(j.purpose, JobPurpose::HarepTags { .. }))
        .expect("a tag job");
    let OpBody::TagsSet { tags, .. } = &tags_job.ops[0].body else {
        panic!("{tags_job:#?}");
    };
    let record = RepairRecord::parse_tag(&tags[0]).unwrap();
    assert_eq!(record.result, Some(RepairResult::Success));
    assert_eq!(record.uuid, "abc");
    let OpBody::TagsDel { tags, .. } = &tags_job.ops[1].body else {
        panic!("{tags_job:#?}");
    };
    assert_eq!(tags, &vec![pending.to_owned()]);
}

fn balance_planner() -> HtoolsPlanner {
    HtoolsPlanner::new(HtoolsSettings {
        balance: true,
        balance_threshold: 0.01,
        ..HtoolsSettings::default()
    })
}

/// Every instance on node2 and node3: badly balanced.
fn lopsided() -> ClusterSnapshot {
    let mut instances = Vec::new();
    for i in 0..8 {
        instances.push(instance(
            &format!("i{i}"),
            DiskTemplate::Drbd,
            if i % 2 == 0 { "node2" } else { "node3" },
            Some(if i % 2 == 0 { "node3" } else { "node2" }),
        ));
    }
    cluster(&[], instances)
}

#[test]
fn balancing_submits_hbals_first_job_set() {
    let c = lopsided();
    let plan = plan_with(
        &balance_planner(),
        &c,
        &MaintenanceState::new(),
        &BTreeMap::new(),
    );
    assert!(!plan.jobs.is_empty(), "the lopsided cluster is balanced");
    assert_no_shared_nodes(&plan);
    // The same steps as the balancing engine's first job set.
    let mut cluster = snapshot::load(&c).unwrap();
    let opts = BalanceOptions {
        min_gain: 0.01,
        min_gain_limit: 0.1,
        min_score: f64::NEG_INFINITY,
        allowed_nodes: Some((0..6).collect()),
        ..BalanceOptions::default()
    };
    let engine = balance::balance_group(&mut cluster, 0, &opts, &mut |_| {});
    let first = &balance::job_sets(&engine.steps)[0];
    let expected: Vec<String> = first
        .iter()
        .map(|&i| cluster.instances[engine.steps[i].instance].name.clone())
        .collect();
    let planned: Vec<String> = plan
        .jobs
        .iter()
        .map(|j| match &j.purpose {
            JobPurpose::Balance { instance } => instance.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(planned, expected);
    for job in &plan.jobs {
        assert_eq!(job.incident, None);
        assert!(job.ops[0].reason[0].1.contains("balancing"));
    }
}

#[test]
fn balancing_leaves_incident_nodes_alone_and_is_off_by_default() {
    let c = lopsided();
    let plan = plan(&c, &MaintenanceState::new());
    assert!(plan.jobs.is_empty(), "balancing is off by default");

    let s = state_with(&[("node2", json!({"status": "live-repair", "command": "fix"}))]);
    let plan = plan_with(&balance_planner(), &c, &s, &BTreeMap::new());
    for job in plan
        .jobs
        .iter()
        .filter(|j| matches!(j.purpose, JobPurpose::Balance { .. }))
    {
        assert!(!job.nodes.contains("node2"), "{job:#?}");
    }
}
