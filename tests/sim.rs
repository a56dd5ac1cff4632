//! End-to-end behaviour of the simulated cluster through its public API and Luxi.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use maintd::model::cluster::DiskTemplate;
use maintd::model::job::{JobId, JobStatus};
use maintd::model::opcode::OpBody;
use maintd::sim::{SimCluster, SimSpec};
use serde_json::{json, Value};

const START: f64 = 1_700_000_000.0;

fn cluster(job_seconds: f64) -> SimCluster {
    SimCluster::generate(
        &SimSpec {
            nodes: 4,
            instances: 16,
            seed: 2024,
            job_seconds,
            ..SimSpec::default()
        },
        START,
    )
}

fn luxi(sim: &mut SimCluster, method: &str, args: Value, now: f64) -> Value {
    let request = serde_json::to_vec(&json!({"method": method, "args": args, "version": 3000000}))
        .expect("serializable");
    serde_json::from_slice(&sim.handle_luxi(&request, now)).expect("luxi answers JSON")
}

fn reason(text: &str) -> Value {
    json!([["gnt:daemon:maintd", text, 1_700_000_000_000_000_000i64]])
}

#[test]
fn evacuating_a_node_over_luxi_empties_it() {
    let mut sim = cluster(2.0);
    let victim = "node2";
    let snapshot = sim.snapshot(START);
    let others: Vec<String> = snapshot
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| n != victim)
        .collect();

    // One job per instance, as maintd's planner builds them, after a drain job.
    let mut jobs = vec![json!([{"OP_ID": "OP_NODE_SET_PARAMS", "node_name": victim,
        "drained": true, "force": true, "reason": reason("Draining node2")}])];
    for (index, inst) in snapshot.instances.iter().enumerate() {
        let target = &others[index % others.len()];
        if inst.primary == victim {
            let job = match inst.disk_template {
                // Migrating swaps primary and secondary; then move the secondary away.
                DiskTemplate::Drbd => {
                    let new_primary = &inst.secondaries[0];
                    let new_secondary = others
                        .iter()
                        .find(|n| *n != new_primary)
                        .expect("four nodes");
                    json!([{"OP_ID": "OP_INSTANCE_MIGRATE",
                        "instance_name": inst.name, "mode": "live", "allow_failover": true,
                        "reason": reason("Evacuating node2")},
                        {"OP_ID": "OP_INSTANCE_REPLACE_DISKS", "instance_name": inst.name,
                        "mode": "replace_new_secondary", "remote_node": new_secondary,
                        "reason": reason("Evacuating node2")}])
                }
                DiskTemplate::Diskless => json!([{"OP_ID": "OP_INSTANCE_FAILOVER",
                    "instance_name": inst.name, "target_node": target,
                    "reason": reason("Evacuating node2")}]),
                _ => json!([{"OP_ID": "OP_INSTANCE_MOVE", "instance_name": inst.name,
                    "target_node": target, "reason": reason("Evacuating node2")}]),
            };
            jobs.push(job);
        } else if inst.secondaries.iter().any(|s| s == victim) {
            let new_secondary = others
                .iter()
                .find(|n| **n != inst.primary)
                .expect("four nodes");
            jobs.push(json!([{"OP_ID": "OP_INSTANCE_REPLACE_DISKS",
                "instance_name": inst.name, "mode": "replace_new_secondary",
                "remote_node": new_secondary, "reason": reason("Evacuating node2")}]));
        }
    }
    let submitted = luxi(&mut sim, "SubmitManyJobs", json!([jobs]), START);
    let results = submitted["result"]
        .as_array()
        .expect("one result per job")
        .clone();
    assert_eq!(results.len(), jobs.len());

    // All jobs touch node2, so they run one after the other: 2 s each.
    let done_at = START + 2.0 * jobs.len() as f64;
    let ids: Vec<Value> = results.iter().map(|r| r[1].clone()).collect();
    let statuses = luxi(
        &mut sim,
        "QueryJobs",
        json!([ids.clone(), ["status"]]),
        START + 1.0,
    );
    assert_eq!(statuses["result"][0], json!(["running"]));
    assert_eq!(statuses["result"][1], json!(["waiting"]));

    let statuses = luxi(
        &mut sim,
        "QueryJobs",
        json!([ids, ["status", "opresult"]]),
        done_at,
    );
    for row in statuses["result"].as_array().expect("rows") {
        assert_eq!(row[0], "success", "{row}");
    }
    let after = sim.snapshot(done_at);
    assert!(after.node(victim).expect("exists").drained);
    assert_eq!(after.primaries_of(victim).count(), 0);
    assert_eq!(after.secondaries_of(victim).count(), 0);
    let node = after.node(victim).expect("exists");
    assert_eq!(node.memory_free, node.memory_total);
    assert_eq!(node.disk_free, node.disk_total);
    sim.remove_node(victim, done_at)
        .expect("empty nodes can be removed");
}

#[test]
fn same_seed_and_requests_give_identical_answers() {
    let run = || {
        let mut sim = cluster(3.0);
        let mut answers = Vec::new();
        let requests = [
            (
                "SubmitJob",
                json!([[{"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "node3", "drained": true, "reason": []}]]),
            ),
            (
                "Query",
                json!([
                    "instance",
                    ["name", "uuid", "pnode", "snodes", "status"],
                    null
                ]),
            ),
            (
                "QueryJobs",
                json!([null, ["id", "status", "ops", "received_ts"]]),
            ),
            (
                "Query",
                json!(["node", ["name", "uuid", "mfree", "drained", "role"], null]),
            ),
        ];
        for (step, (method, args)) in requests.iter().enumerate() {
            answers.push(luxi(
                &mut sim,
                method,
                args.clone(),
                START + step as f64 * 2.0,
            ));
        }
        answers
    };
    assert_eq!(run(), run());
}

#[test]
fn injected_fault_fails_next_job_with_that_opcode_only() {
    let mut sim = cluster(0.0);
    sim.inject_fault("OP_TAGS_SET", 1);
    let tag = |node: &str| {
        json!([[{"OP_ID": "OP_TAGS_SET", "kind": "node", "name": node,
        "tags": ["maintd:repairready:x"], "reason": []}]])
    };
    let drain = json!([[{"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "node4", "drained": true, "reason": []}]]);
    let unaffected = luxi(&mut sim, "SubmitJob", drain, START)["result"].clone();
    let failed = luxi(&mut sim, "SubmitJob", tag("node3"), START)["result"].clone();
    let retried = luxi(&mut sim, "SubmitJob", tag("node3"), START)["result"].clone();
    let rows = luxi(
        &mut sim,
        "QueryJobs",
        json!([[unaffected, failed, retried], ["status", "opresult"]]),
        START,
    );
    assert_eq!(rows["result"][0][0], "success");
    assert_eq!(rows["result"][1][0], "error");
    assert_eq!(rows["result"][1][1][0][0], "OpExecError");
    assert!(rows["result"][1][1][0][1][0]
        .as_str()
        .is_some_and(|m| m.contains("Injected fault")));
    assert_eq!(rows["result"][2][0], "success");
    assert!(sim
        .snapshot(START)
        .node("node3")
        .expect("exists")
        .tags
        .contains("maintd:repairready:x"));
}

#[test]
fn waiting_job_can_be_canceled_and_then_never_runs() {
    let mut sim = cluster(10.0);
    let first = sim
        .submit_job(
            vec![OpBody::drain_node("node3").with_reason("a".into(), 1)],
            START,
        )
        .expect("accepted");
    let second = sim
        .submit_job(
            vec![OpBody::tag_node("node3", "later").with_reason("b".into(), 1)],
            START,
        )
        .expect("accepted");
    assert_eq!(
        sim.job_status(second, START + 1.0),
        Some(JobStatus::Waiting)
    );
    let answer = luxi(&mut sim, "CancelJob", json!([second.0]), START + 1.0);
    assert_eq!(
        answer["result"],
        json!([true, "Job successfully cancelled"])
    );
    assert_eq!(
        sim.job_status(first, START + 10.0),
        Some(JobStatus::Success)
    );
    assert_eq!(
        sim.job_status(second, START + 30.0),
        Some(JobStatus::Canceled)
    );
    assert!(!sim
        .snapshot(START + 30.0)
        .node("node3")
        .expect("exists")
        .tags
        .contains("later"));
    assert_eq!(sim.job_status(JobId(999), START), None);
}

#[test]
fn job_query_filters_by_status() {
    let mut sim = cluster(5.0);
    for node in ["node2", "node3"] {
        let op = json!([[{"OP_ID": "OP_TEST_DELAY", "duration": 1.0, "reason": []},
                         {"OP_ID": "OP_NODE_SET_PARAMS", "node_name": node, "offline": true, "reason": []}]]);
        luxi(&mut sim, "SubmitJob", op, START);
    }
    let running = luxi(
        &mut sim,
        "Query",
        json!([
            "job",
            ["id", "opstatus", "summary"],
            ["==", "status", "running"]
        ]),
        START + 1.0,
    );
    assert_eq!(
        running["result"]["data"][0],
        json!([
            [0, 1],
            [0, ["running", "queued"]],
            [0, ["TEST_DELAY(1.0)", "NODE_SET_PARAMS(node2)"]]
        ])
    );
    assert_eq!(running["result"]["data"].as_array().map(Vec::len), Some(2));
    let offline = luxi(
        &mut sim,
        "Query",
        json!(["node", ["name", "mfree", "role"], ["?", "offline"]]),
        START + 5.0,
    );
    assert_eq!(
        offline["result"]["data"],
        json!([
            [[0, "node2"], [4, null], [0, "O"]],
            [[0, "node3"], [4, null], [0, "O"]]
        ])
    );
}
