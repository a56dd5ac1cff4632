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
    safety::{RepairSlots, SafetyGate},
};
use crate::planner::EXCLUDE_TAG;
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
        assert_targets_usable(&c, &plan, &evacuated);
    }
}

/// No job puts an instance, or a new role of one, on a drained, offline or evacuated
/// node: failing over onto a secondary counts.
fn assert_targets_usable(c: &ClusterSnapshot, plan: &RoundPlan, evacuated: &[&str]) {
    for job in &plan.jobs {
        for op in &job.ops {
            let (instance, target) = match &op.body {
                OpBody::InstanceMigrate {
                    instance_name,
                    target_node,
                    ..
                }
                | OpBody::InstanceFailover {
                    instance_name,
                    target_node,
                    ..
                } => {
                    let current = c.instances.iter().find(|i| &i.name == instance_name);
                    let secondary = current.and_then(|i| i.secondaries.first()).cloned();
                    (instance_name, target_node.clone().or(secondary))
                }
                OpBody::InstanceReplaceDisks {
                    instance_name,
                    remote_node,
                    ..
                } => (instance_name, remote_node.clone()),
                OpBody::InstanceMove {
                    instance_name,
                    target_node,
                    ..
                } => (instance_name, Some(target_node.clone())),
                _ => continue,
            };
            let Some(target) = target else { continue };
            let node = c.node(&target).unwrap();
            assert!(
                node.accepts_instances() && !evacuated.contains(&target.as_str()),
                "{instance} onto {target}: {job:#?}"
            );
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
    let mut alone = cluster.clone();
    let first = balance::balance_first_job_set(&mut alone, 0, &opts);
    let expected: Vec<String> = first
        .steps
        .iter()
        .map(|s| cluster.instances[s.instance].name.clone())
        .collect();
    // hbal's first job set of the whole plan starts it (and here is all of it).
    let engine = balance::balance_group(&mut cluster, 0, &opts, &mut |_| {});
    let hbal_first: Vec<String> = balance::job_sets(&engine.steps)[0]
        .iter()
        .map(|&i| cluster.instances[engine.steps[i].instance].name.clone())
        .collect();
    assert_eq!(hbal_first, expected);
    assert!(engine.steps.len() > first.steps.len(), "{engine:?}");
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

fn plan_gated(
    planner: &HtoolsPlanner,
    c: &ClusterSnapshot,
    s: &MaintenanceState,
    gate: &SafetyGate,
) -> RoundPlan {
    planner.plan(PlanInput {
        cluster: c,
        incidents: &s.incidents,
        key_prefix: "t-r1",
        now_ns: 1_800_000_000_000_000_000,
        job_statuses: &BTreeMap::new(),
        node_loads: &BTreeMap::new(),
        gate,
    })
}

fn notes_of(plan: &RoundPlan, incident: &Incident) -> Vec<String> {
    plan.notes
        .iter()
        .filter(|(u, _)| *u == incident.uuid)
        .map(|(_, m)| m.clone())
        .collect()
}

#[test]
fn a_drbd_primary_whose_secondary_is_drained_gets_a_new_secondary_first() {
    // i1 lives on node3 and node4, both evacuated (drained): the failover hail would
    // do goes onto drained node4, which Ganeti refuses.
    let mut c = cluster(
        &["node3", "node4"],
        vec![instance("i1", DiskTemplate::Drbd, "node3", Some("node4"))],
    );
    let s = state_with(&[
        ("node3", json!({"status": "evacuate"})),
        ("node4", json!({"status": "evacuate"})),
    ]);
    let plan = plan(&c, &s);
    assert_targets_usable(&c, &plan, &["node3", "node4"]);
    assert_no_shared_nodes(&plan);
    let job = &plan.jobs[0];
    assert_eq!(op_ids(job), ["OP_INSTANCE_REPLACE_DISKS"], "{plan:#?}");
    let OpBody::InstanceReplaceDisks {
        remote_node: Some(new_secondary),
        ..
    } = &job.ops[0].body
    else {
        panic!("{job:#?}");
    };
    assert!(!["node3", "node4"].contains(&new_secondary.as_str()));
    // The job touches the old secondary too: node4's incident waits this round.
    assert!(job.nodes.contains("node4"), "{job:#?}");
    assert_eq!(plan.jobs.len(), 1, "{plan:#?}");

    // Next round, with the new secondary in place: a failover onto it.
    c.instances[0].secondaries = vec![new_secondary.clone()];
    let plan = super::tests::plan(&c, &s);
    assert_targets_usable(&c, &plan, &["node3", "node4"]);
    let moves: Vec<&PlannedJob> = plan
        .jobs
        .iter()
        .filter(|j| {
            j.purpose
                == JobPurpose::MovePrimary {
                    instance: "i1".into(),
                }
        })
        .collect();
    assert_eq!(moves.len(), 1, "{plan:#?}");
    assert_eq!(op_ids(moves[0]), ["OP_INSTANCE_MIGRATE"]);
    assert!(moves[0].nodes.contains(new_secondary));
}

#[test]
fn the_new_secondary_is_hails_choice_among_usable_nodes() {
    // node2 is fuller than node5 and node6: hail's score prefers an emptier node.
    let mut instances = vec![instance("i1", DiskTemplate::Drbd, "node3", Some("node4"))];
    for k in 0..3 {
        instances.push(instance(
            &format!("f{k}"),
            DiskTemplate::Drbd,
            "node2",
            Some("node1"),
        ));
    }
    let c = cluster(&["node3", "node4"], instances);
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let plan = plan(&c, &s);
    let OpBody::InstanceReplaceDisks {
        remote_node: Some(target),
        ..
    } = &plan.jobs[0].ops[0].body
    else {
        panic!("{plan:#?}");
    };
    // The same node hail picks with node4 (drained) and node3 out of reach.
    let work = snapshot::load(&c).unwrap();
    let idx = work.instance_index("i1").unwrap();
    let mut hail_work = work.clone();
    let result = crate::htools::evacuate::evacuate_in_place(
        &mut hail_work,
        &[idx],
        EvacMode::SecondaryOnly,
        true,
    )
    .unwrap();
    assert_eq!(&result.moved[0].2[1], target);
    assert!(["node5", "node6"].contains(&target.as_str()), "{target}");
}

#[test]
fn a_busy_secondary_makes_the_move_wait_and_busy_nodes_are_never_targets() {
    let c = cluster(
        &["node3"],
        vec![
            instance("i1", DiskTemplate::Drbd, "node3", Some("node4")),
            instance("d1", DiskTemplate::Diskless, "node5", None),
        ],
    );
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let gate = SafetyGate {
        busy_nodes: BTreeSet::from(["node4".to_owned()]),
        ..SafetyGate::open()
    };
    let plan = plan_gated(&HtoolsPlanner::default(), &c, &s, &gate);
    assert!(plan.jobs.is_empty(), "{plan:#?}");
    let notes = notes_of(&plan, &s.incidents[0]);
    assert!(
        notes[0].contains("node4") && notes[0].contains("busy"),
        "{notes:?}"
    );

    // An incident on a busy node waits too.
    let s = state_with(&[("node4", json!({"status": "evacuate"}))]);
    let plan = plan_gated(&HtoolsPlanner::default(), &c, &s, &gate);
    assert!(plan.jobs.is_empty(), "{plan:#?}");
    assert!(notes_of(&plan, &s.incidents[0])[0].contains("still runs on node4"));
}

#[test]
fn held_incidents_get_no_job_but_their_node_is_no_target() {
    let c = cluster(
        &["node3"],
        vec![instance("d1", DiskTemplate::Diskless, "node3", None)],
    );
    let s = state_with(&[
        ("node3", json!({"status": "evacuate"})),
        ("node5", json!({"status": "evacuate"})),
    ]);
    let held = s.incidents[1].uuid;
    let gate = SafetyGate {
        held: BTreeMap::from([(held, "waiting: flapping".to_owned())]),
        ..SafetyGate::open()
    };
    let plan = plan_gated(&HtoolsPlanner::default(), &c, &s, &gate);
    assert!(
        plan.jobs.iter().all(|j| j.incident != Some(held)),
        "{plan:#?}"
    );
    assert_eq!(notes_of(&plan, &s.incidents[1]), ["waiting: flapping"]);
    assert_eq!(plan.jobs.len(), 1, "{plan:#?}");
    assert!(!plan.jobs[0].nodes.contains("node5"), "{plan:#?}");
    assert_targets_usable(&c, &plan, &["node3", "node5"]);
}

#[test]
fn repair_slots_start_the_oldest_incident_and_the_rest_wait() {
    let c = cluster(&[], Vec::new());
    let s = state_with(&[
        ("node3", json!({"status": "evacuate"})),
        ("node4", json!({"status": "evacuate"})),
        ("node5", json!({"status": "live-repair", "command": "fix"})),
    ]);
    let gate = SafetyGate {
        slots: RepairSlots::new(Some(1), BTreeMap::new(), []),
        ..SafetyGate::open()
    };
    let plan = plan_gated(&HtoolsPlanner::default(), &c, &s, &gate);
    assert_eq!(plan.jobs.len(), 1, "{plan:#?}");
    assert_eq!(plan.jobs[0].incident, Some(s.incidents[0].uuid));
    assert_eq!(plan.jobs[0].purpose, JobPurpose::Drain);
    for waiting in &s.incidents[1..] {
        let notes = notes_of(&plan, waiting);
        assert!(
            notes[0].contains("1 of 1 nodes already in repair"),
            "{notes:?}"
        );
    }

    // A started incident needs no slot; the master fails without one.
    let mut s = s;
    s.incidents[0].status = RepairStatus::Pending;
    s.incidents[0].jobs.push(JobId(7));
    let full = SafetyGate {
        slots: RepairSlots::new(Some(1), BTreeMap::new(), [("node3", "g1")]),
        ..SafetyGate::open()
    };
    let mut s2 = s.clone();
    s2.observe(
        "node1",
        &parse_diagnose(json!({"status": "evacuate"})).unwrap(),
        9.0,
    );
    let plan = plan_gated(&HtoolsPlanner::default(), &c, &s2, &full);
    assert!(plan
        .jobs
        .iter()
        .any(|j| j.incident == Some(s.incidents[0].uuid)));
    assert_eq!(plan.failures.len(), 1, "{plan:#?}");
    assert!(plan.failures[0].1.contains("master"));
}

#[test]
fn an_excluded_node_is_left_alone_and_never_a_target() {
    let mut c = cluster(
        &["node3"],
        vec![instance("d1", DiskTemplate::Diskless, "node3", None)],
    );
    for n in ["node2", "node4", "node6"] {
        c.nodes
            .iter_mut()
            .find(|x| x.name == n)
            .unwrap()
            .tags
            .insert(EXCLUDE_TAG.into());
    }
    let s = state_with(&[
        ("node3", json!({"status": "evacuate"})),
        ("node4", json!({"status": "evacuate"})),
    ]);
    let plan = plan(&c, &s);
    assert_eq!(
        notes_of(&plan, &s.incidents[1]),
        ["waiting: node node4 is tagged maintd:exclude"]
    );
    assert_eq!(plan.jobs.len(), 1, "{plan:#?}");
    // node1 (the master) or node5: the only nodes neither excluded nor evacuated.
    let target = plan.jobs[0].nodes.iter().find(|n| *n != "node3").unwrap();
    assert!(["node1", "node5"].contains(&target.as_str()), "{plan:#?}");
}

#[test]
fn an_excluded_instance_makes_the_evacuation_wait_and_is_never_balanced() {
    let mut c = cluster(
        &["node3"],
        vec![instance(
            "inst7",
            DiskTemplate::Drbd,
            "node3",
            Some("node4"),
        )],
    );
    c.instances[0].tags.insert(EXCLUDE_TAG.into());
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let plan = plan(&c, &s);
    assert!(plan.jobs.is_empty(), "{plan:#?}");
    assert_eq!(
        notes_of(&plan, &s.incidents[0]),
        ["waiting: instance inst7 is tagged maintd:exclude"]
    );

    let mut c = lopsided();
    for i in &mut c.instances {
        i.tags.insert(EXCLUDE_TAG.into());
    }
    let plan = plan_with(
        &balance_planner(),
        &c,
        &MaintenanceState::new(),
        &BTreeMap::new(),
    );
    assert!(plan.jobs.is_empty(), "{plan:#?}");
    // Without the tags the same cluster is balanced (the test could fail).
    let plan = plan_with(
        &balance_planner(),
        &lopsided(),
        &MaintenanceState::new(),
        &BTreeMap::new(),
    );
    assert!(!plan.jobs.is_empty());
}

/// node2..node4 carry one big instance each, mirrored in a ring; the other nodes have
/// little free memory: wherever node3's mirrors go, their new node cannot absorb the
/// failover of their primary.
fn tight_cluster() -> ClusterSnapshot {
    let mut c = cluster(
        &[],
        vec![
            instance("a", DiskTemplate::Drbd, "node2", Some("node3")),
            instance("b", DiskTemplate::Drbd, "node3", Some("node4")),
            instance("c", DiskTemplate::Drbd, "node4", Some("node2")),
        ],
    );
    for i in &mut c.instances {
        i.memory = 30_000;
    }
    for n in &mut c.nodes {
        n.memory_free = match n.name.as_str() {
            "node2" | "node3" | "node4" => 34_000,
            _ => 20_000,
        };
        n.memory_total = 64_000;
    }
    c
}

#[test]
fn an_evacuation_that_would_break_n_plus_1_waits_but_a_failover_goes_ahead() {
    let c = tight_cluster();
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let first = plan(&c, &s);
    let plan = first;
    assert!(plan.jobs.is_empty(), "{plan:#?}");
    let notes = notes_of(&plan, &s.incidents[0]);
    assert!(
        notes[0].starts_with(
            "waiting: evacuating node3 would leave group default without N+1 redundancy ("
        ),
        "{notes:?}"
    );
    assert!(notes[0].contains("could not absorb"), "{notes:?}");

    let s = state_with(&[("node3", json!({"status": "evacuate-failover"}))]);
    let plan = super::tests::plan(&c, &s);
    assert_eq!(plan.jobs[0].purpose, JobPurpose::Drain, "{plan:#?}");
    let notes = notes_of(&plan, &s.incidents[0]);
    assert!(notes[0].contains("without N+1 redundancy"), "{notes:?}");

    // With room enough the same evacuation is admitted and drains at once.
    let mut roomy = tight_cluster();
    for n in &mut roomy.nodes {
        n.memory_total = 256_000;
        n.memory_free += 192_000;
    }
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let plan = super::tests::plan(&roomy, &s);
    assert_eq!(plan.jobs[0].purpose, JobPurpose::Drain, "{plan:#?}");
    assert!(plan.notes.is_empty(), "{plan:#?}");
}

#[test]
fn instances_that_fit_nowhere_hold_the_drain_back() {
    let mut c = cluster(
        &[],
        vec![instance("p1", DiskTemplate::Plain, "node3", None)],
    );
    c.instances[0].memory = 63_000;
    for n in &mut c.nodes {
        if n.name != "node3" {
            n.memory_free = 10_000;
        }
    }
    let s = state_with(&[("node3", json!({"status": "evacuate"}))]);
    let plan = plan(&c, &s);
    assert!(plan.jobs.is_empty(), "{plan:#?}");
    let notes = notes_of(&plan, &s.incidents[0]);
    assert!(
        notes[0].starts_with("waiting: the instances of node3 do not fit elsewhere: "),
        "{notes:?}"
    );
}

/// The three non-master nodes of a generated cluster sharing the most DRBD instances
/// among themselves.
fn drbd_triangle(c: &ClusterSnapshot) -> [String; 3] {
    let names: Vec<&str> = c
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .filter(|n| *n != c.master)
        .collect();
    let shared = |a: &str, b: &str| {
        c.instances
            .iter()
            .filter(|i| i.disk_template == DiskTemplate::Drbd)
            .filter(|i| {
                let s = i.secondaries.first().map(String::as_str);
                (i.primary == a && s == Some(b)) || (i.primary == b && s == Some(a))
            })
            .count()
    };
    let mut best = (0, [""; 3]);
    for (x, a) in names.iter().enumerate() {
        for (y, b) in names.iter().enumerate().skip(x + 1) {
            for cc in names.iter().skip(y + 1) {
                let pairs = [shared(a, b), shared(b, cc), shared(a, cc)];
                let score =
                    pairs.iter().filter(|&&p| p > 0).count() * 100 + pairs.iter().sum::<usize>();
                if score > best.0 {
                    best = (score, [*a, *b, *cc]);
                }
            }
        }
    }
    best.1.map(str::to_owned)
}

/// Runs daemon rounds of `planner` against `sim` until no incident is open: plan,
/// submit, wait for every job, record. Returns the jobs that did not succeed.
fn run_rounds(
    sim: &mut SimCluster,
    state: &mut MaintenanceState,
    planner: &HtoolsPlanner,
    max_rounds: usize,
) -> Vec<String> {
    let mut now = 1000.0;
    let mut failed = Vec::new();
    for round in 0..max_rounds {
        let snapshot = sim.snapshot(now);
        state.reconcile(&snapshot, 0.0);
        if state.incidents.iter().all(|i| !i.status.is_open()) {
            return failed;
        }
        let prefix = format!("t-r{round}");
        let plan = planner.plan(PlanInput {
            cluster: &snapshot,
            incidents: &state.incidents,
            key_prefix: &prefix,
            now_ns: (now * 1e9) as i64,
            job_statuses: &BTreeMap::new(),
            node_loads: &BTreeMap::new(),
            gate: &SafetyGate::open(),
        });
        assert_no_shared_nodes(&plan);
        for (uuid, why) in &plan.failures {
            state.fail_incident(*uuid, why.clone(), now);
        }
        state.start_round(&plan.jobs, now);
        for job in &plan.jobs {
            let ops = job.ops.clone();
            let submitted = sim.submit_job(ops, now).map_err(|e| e.to_string());
            state.record_submission(&job.key, submitted, now);
        }
        now += 600.0;
        for id in state.unfinished_jobs() {
            let status = sim.job_status(id, now);
            if status != Some(JobStatus::Success) {
                let job = sim.job(id, now).map(|j| format!("{:?}", j.log_entries()));
                failed.push(format!("round {round}: job {id:?} {status:?} {job:?}"));
            }
            state.record_job_status(id, status, now);
        }
    }
    failed.push(format!(
        "still open after {max_rounds} rounds: {:#?}",
        state.incidents
    ));
    failed
}

#[test]
fn three_nodes_sharing_drbd_pairs_evacuated_at_once_all_complete() {
    for seed in 1..=4 {
        let spec = SimSpec {
            nodes: 12,
            instances: 48,
            seed,
            ..SimSpec::default()
        };
        let mut sim = SimCluster::generate(&spec, 0.0);
        let snapshot = sim.snapshot(0.0);
        let nodes = drbd_triangle(&snapshot);
        let spanning = snapshot
            .instances
            .iter()
            .filter(|i| {
                nodes.contains(&i.primary)
                    && i.secondaries.first().is_some_and(|s| nodes.contains(s))
            })
            .count();
        assert!(spanning >= 2, "seed {seed}: the nodes share DRBD instances");
        let mut state = MaintenanceState::new();
        for node in &nodes {
            let report = parse_diagnose(json!({"status": "evacuate"})).unwrap();
            state.observe(node, &report, 0.0);
        }
        let failed = run_rounds(&mut sim, &mut state, &HtoolsPlanner::default(), 200);
        assert!(failed.is_empty(), "seed {seed} {nodes:?}: {failed:#?}");
        for incident in &state.incidents {
            assert_eq!(incident.status, RepairStatus::Completed, "{incident:#?}");
        }
        let after = sim.snapshot(1e9);
        for node in &nodes {
            assert_eq!(after.primaries_of(node).count(), 0, "seed {seed}: {node}");
            assert_eq!(after.secondaries_of(node).count(), 0, "seed {seed}: {node}");
        }
    }
}
