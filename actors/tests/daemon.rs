//! The whole daemon on the in-process simulated cluster, in virtual time: every path of
//! the incident lifecycle, observed through maintd's HTTP API and the simulator.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod harness;

use std::{collections::BTreeMap, time::Duration};

use actix_web::http::StatusCode;
use harness::{captured_log::Captured, maintd_reasons, run_paused, Harness};
use maintd::{
    model::{
        cluster::DiskTemplate,
        job::JobStatus,
        opcode::{OpBody, TagKind},
    },
    sim::MonitoringBehaviour,
};
use maintd_actors::daemon::registry::STATE_FILE;
use serde_json::{json, Value};

fn uuid_of(incident: &Value) -> String {
    incident["uuid"].as_str().expect("uuid").to_owned()
}

fn job_ids(incident: &Value) -> Vec<u64> {
    incident["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(Value::as_u64)
        .collect()
}

#[test]
fn evacuate_drains_moves_everything_and_tags_ready() {
    run_paused(|| async {
        let h = Harness::start(8, 24, 0.2).await;
        let node = h.busiest_node();
        let before = h.node(&node);
        assert!(!before.primary_instances.is_empty());
        h.report(
            &node,
            json!({"status": "evacuate", "details": {"disk": "sda"}}),
        );

        let incident = h.wait_incident_on(&node, 10.0).await;
        let uuid = uuid_of(&incident);
        assert_eq!(incident["action"], "evacuate");
        assert_eq!(
            incident["original"],
            json!({"status": "evacuate", "details": {"disk": "sda"}})
        );
        assert_eq!(incident["tag"], format!("maintd:repairready:{uuid}"));
        let done = h.wait_status(&uuid, "completed", 300.0).await;

        let after = h.node(&node);
        assert!(after.drained, "node drained");
        assert!(
            after.primary_instances.is_empty(),
            "primaries left: {:?}",
            after.primary_instances
        );
        assert!(
            after.secondary_instances.is_empty(),
            "secondaries left: {:?}",
            after.secondary_instances
        );
        assert!(after.tags.contains(&format!("maintd:repairready:{uuid}")));

        // Every job of the incident succeeded and carries maintd's source and the uuid.
        let ids = job_ids(&done);
        // One job per instance, as hail evacuates: a DRBD primary fails over to its
        // secondary, which leaves a secondary behind for a job of its own.
        let snapshot = h.sim.lock().snapshot(h.clock.now());
        let drbd_primaries = before
            .primary_instances
            .iter()
            .filter(|name| {
                snapshot
                    .instances
                    .iter()
                    .any(|i| &i.name == *name && i.disk_template == DiskTemplate::Drbd)
            })
            .count();
        assert!(drbd_primaries > 0, "the test needs a DRBD primary");
        let expected_moves =
            before.primary_instances.len() + before.secondary_instances.len() + drbd_primaries;
        assert_eq!(
            ids.len(),
            1 + expected_moves + 1,
            "drain, one job per instance (two for DRBD primaries), tag"
        );
        let jobs: BTreeMap<u64, _> = h.jobs().into_iter().map(|j| (j.id.0, j)).collect();
        for id in &ids {
            let job = &jobs[id];
            assert_eq!(job.status, JobStatus::Success, "job {id}");
            let reasons = maintd_reasons(job);
            assert!(!reasons.is_empty(), "job {id} lacks gnt:daemon:maintd");
            assert!(
                reasons.iter().all(|r| r.contains(&uuid)),
                "job {id}: {reasons:?}"
            );
        }
        // The daemon waits for nothing any more.
        let (_, pending) = h.api("GET", "/1/jobs").await;
        assert_eq!(pending, json!([]));
        let (_, evacuated) = h.api("GET", "/1/evacuated").await;
        let mut moved: Vec<String> = before.primary_instances.clone();
        moved.sort();
        assert_eq!(evacuated, json!(moved));
    });
}

#[test]
fn evacuate_failover_fails_instances_over() {
    run_paused(|| async {
        let h = Harness::start(6, 12, 0.2).await;
        let node = h.busiest_node();
        h.report(&node, json!({"status": "evacuate-failover"}));
        let uuid = uuid_of(&h.wait_incident_on(&node, 10.0).await);
        let done = h.wait_status(&uuid, "completed", 300.0).await;
        let jobs: BTreeMap<u64, _> = h.jobs().into_iter().map(|j| (j.id.0, j)).collect();
        let ops: Vec<String> = job_ids(&done)
            .iter()
            .flat_map(|id| {
                jobs[id]
                    .ops
                    .iter()
                    .map(|o| o["OP_ID"].as_str().unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(ops.contains(&"OP_INSTANCE_FAILOVER".to_owned()), "{ops:?}");
        assert!(!ops.contains(&"OP_INSTANCE_MIGRATE".to_owned()), "{ops:?}");
        assert!(h.node(&node).primary_instances.is_empty());
    });
}

#[test]
fn a_failed_migration_names_the_opcode_the_instance_and_ganetis_error() {
    run_paused(|| async {
        let h = Harness::start(8, 24, 0.2).await;
        let node = h.busiest_node();
        let instances = h.node(&node).primary_instances;
        assert!(!instances.is_empty(), "{node} hosts instances");
        h.sim.lock().inject_fault("OP_INSTANCE_MIGRATE", 1);
        h.report(&node, json!({"status": "evacuate", "details": "dimm B2"}));
        let uuid = uuid_of(&h.wait_incident_on(&node, 10.0).await);
        h.wait_status(&uuid, "failed", 120.0).await;
        let (status, detail) = h.api("GET", &format!("/1/incidents/{uuid}")).await;
        assert_eq!(status, StatusCode::OK, "{detail}");
        let message = detail["message"].as_str().expect("a message");
        let failed_job = h
            .sim
            .lock()
            .jobs(h.clock.now())
            .find(|j| j.status() == JobStatus::Error)
            .map(|j| j.id)
            .expect("the failed migration");
        let instance = instances
            .iter()
            .find(|i| message.contains(&format!("OP_INSTANCE_MIGRATE {i}: ")))
            .unwrap_or_else(|| panic!("an instance of {node} named: {message}"));
        assert_eq!(
            message,
            format!(
                "job {failed_job} ended error: OP_INSTANCE_MIGRATE {instance}: OpExecError: \
                 Injected fault: OP_INSTANCE_MIGRATE failed (simulated)"
            )
        );
        // The history tells the same.
        assert!(
            detail["history"]
                .as_array()
                .expect("history")
                .iter()
                .any(|e| e["detail"].as_str() == Some(message)),
            "{detail}"
        );
    });
}

#[test]
fn failed_job_fails_incident_tags_failed_and_stops() {
    run_paused(|| async {
        let h = Harness::start(8, 24, 0.2).await;
        let node = h.busiest_node();
        h.sim.lock().inject_fault("OP_NODE_SET_PARAMS", 1);
        let report = json!({"status": "evacuate", "details": "dimm B2"});
        h.report(&node, report.clone());
        let uuid = uuid_of(&h.wait_incident_on(&node, 10.0).await);
        let failed = h.wait_status(&uuid, "failed", 60.0).await;
        assert_eq!(failed["tag"], format!("maintd:repairfailed:{uuid}"));
        // The message names the failed opcode, its node and Ganeti's error.
        let drain_job = job_ids(&failed)[0];
        assert_eq!(
            failed["message"],
            format!(
                "job {drain_job} ended error: OP_NODE_SET_PARAMS {node}: OpExecError: \
                 Injected fault: OP_NODE_SET_PARAMS failed (simulated)"
            ),
            "{failed}"
        );

        let tag = format!("maintd:repairfailed:{uuid}");
        h.wait_for(30.0, "the failure tag", async |h: &Harness| {
            h.node(&node).tags.contains(&tag).then_some(())
        })
        .await;
        // After the failure, only the failure-tag job was submitted, and nothing more follows.
        let jobs_then = job_ids(&h.incidents().await[0]);
        assert_eq!(
            jobs_then.len(),
            2,
            "drain (failed) and the failure tag: {jobs_then:?}"
        );
        harness::advance(30.0).await;
        let incidents = h.incidents().await;
        assert_eq!(incidents.len(), 1);
        assert_eq!(job_ids(&incidents[0]), jobs_then, "no further jobs");
        assert!(!h.node(&node).drained, "the failed drain had no effect");

        // Removing the failure tag forgets the incident at once; the node still reports
        // the problem, so a fresh incident starts a new repair flow.
        let now = h.clock.now();
        h.sim.lock().remove_node_tag(&node, &tag, now).expect("tag");
        let fresh = h
            .wait_for(30.0, "a fresh incident", async |h: &Harness| {
                h.incidents()
                    .await
                    .into_iter()
                    .find(|i| i["uuid"] != uuid.as_str())
            })
            .await;
        assert_eq!(fresh["original"], report);
        let fresh_uuid = uuid_of(&fresh);
        let all = h.incidents().await;
        assert!(
            all.iter().all(|i| i["uuid"] != uuid.as_str()),
            "old incident forgotten"
        );
        h.wait_status(&fresh_uuid, "completed", 300.0).await;
    });
}

/// Each change of an incident's status is logged once saved: progress at INFO, a failure
/// at WARN with Ganeti's error, a failed job at WARN, a cancel naming who sent it.
#[test]
fn status_changes_are_logged_at_the_level_an_operator_expects() {
    let (log, _guard) = Captured::this_thread("maintd::registry=info");
    let uuids = std::cell::RefCell::new(Vec::new());
    run_paused(|| async {
        let h = Harness::start(8, 24, 0.2).await;
        let failing = h.busiest_node();
        let other = h
            .sim
            .lock()
            .node_views(h.clock.now())
            .into_iter()
            .find(|n| !n.master && n.name != failing)
            .expect("another node")
            .name;
        h.sim.lock().inject_fault("OP_NODE_SET_PARAMS", 1);
        h.report(
            &failing,
            json!({"status": "evacuate", "details": "dimm B2"}),
        );
        let failed = uuid_of(&h.wait_incident_on(&failing, 10.0).await);
        h.wait_status(&failed, "failed", 60.0).await;

        h.report(&other, json!({"status": "live-repair", "command": "fix"}));
        let canceled = uuid_of(&h.wait_incident_on(&other, 10.0).await);
        let (status, body) = h
            .api("POST", &format!("/1/incidents/{canceled}/cancel"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        h.wait_status(&canceled, "canceled", 5.0).await;
        uuids.borrow_mut().extend([failed, canceled]);
    });
    let [failed, canceled] = <[String; 2]>::try_from(uuids.take()).expect("both incidents");
    let lines = log.lines();
    let line = |level: &str, what: &str, uuid: &str| {
        let found: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(level) && l.contains(what) && l.contains(uuid))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {level} {what:?} for {uuid}: {lines:#?}"
        );
        found[0].clone()
    };
    line(" INFO ", "new incident", &failed);
    line(" INFO ", "incident pending", &failed);
    let failure = line(" WARN ", "incident failed", &failed);
    assert!(failure.contains("error"), "Ganeti's error: {failure}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" WARN ") && l.contains("job finalized without success")),
        "{lines:#?}"
    );
    let cancel = line(" INFO ", "incident canceled", &canceled);
    assert!(cancel.contains("by=api client"), "{cancel}");
}

#[test]
fn cancel_stops_action_and_forgets_once_unobserved() {
    run_paused(|| async {
        let mut h = Harness::start(6, 12, 0.2).await;
        // A long round delay: the incident is noted but no round starts before the cancel.
        h.stop_daemon().await;
        h.settings.rounds.round_delay = Duration::from_secs(1000);
        h.start_daemon().await;
        harness::advance(2.0).await;
        let node = h.busiest_node();
        h.report(&node, json!({"status": "evacuate"}));
        let incident = h.wait_incident_on(&node, 10.0).await;
        let uuid = uuid_of(&incident);
        let jobs_before = h.jobs().len();

        let (status, body) = h.api("POST", &format!("/1/incidents/{uuid}/cancel")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let canceled = h.wait_status(&uuid, "canceled", 5.0).await;
        assert!(job_ids(&canceled).is_empty());
        harness::advance(2000.0).await;
        assert_eq!(h.jobs().len(), jobs_before, "no job after cancel");
        assert_eq!(
            h.incidents().await.len(),
            1,
            "still observed: kept as canceled"
        );

        h.report(&node, json!({"status": "Ok"}));
        h.wait_no_incidents(10.0).await;
    });
}

#[test]
fn cancel_errors_are_json_with_status_codes() {
    run_paused(|| async {
        let h = Harness::start(4, 4, 0.2).await;
        harness::advance(2.0).await;
        let (status, body) = h
            .api(
                "POST",
                "/1/incidents/5f0c9a1e-2b3c-4d5e-8f90-a1b2c3d4e5f6/cancel",
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["message"].as_str().unwrap().contains("no incident"));
        let (status, body) = h.api("POST", "/1/incidents/not-a-uuid/cancel").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("not an incident uuid"));
        let (status, _) = h.api("GET", "/1/nowhere").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = h.api("GET", "/").await;
        assert_eq!((status, body), (StatusCode::OK, json!([1])));

        // A completed incident cannot be canceled.
        let node = h.busiest_node();
        h.report(&node, json!({"status": "evacuate"}));
        let uuid = uuid_of(&h.wait_incident_on(&node, 10.0).await);
        h.wait_status(&uuid, "completed", 300.0).await;
        let (status, _) = h.api("POST", &format!("/1/incidents/{uuid}/cancel")).await;
        assert_eq!(status, StatusCode::CONFLICT);
    });
}

#[test]
fn removing_ready_tag_forgets_once_no_longer_reported() {
    run_paused(|| async {
        let h = Harness::start(4, 0, 0.2).await;
        h.report("node3", json!({"status": "evacuate"}));
        let uuid = uuid_of(&h.wait_incident_on("node3", 10.0).await);
        h.wait_status(&uuid, "completed", 60.0).await;
        let tag = format!("maintd:repairready:{uuid}");
        let now = h.clock.now();
        h.sim
            .lock()
            .remove_node_tag("node3", &tag, now)
            .expect("tag");
        // Still reported: kept, and no second incident for the same report.
        harness::advance(20.0).await;
        let incidents = h.incidents().await;
        assert_eq!(incidents.len(), 1);
        assert_eq!(incidents[0]["uuid"], uuid.as_str());
        h.report("node3", json!({"status": "Ok"}));
        h.wait_no_incidents(10.0).await;
    });
}

#[test]
fn live_repair_runs_command_with_diagnose_on_stdin() {
    run_paused(|| async {
        let h = Harness::start(4, 8, 0.2).await;
        let report =
            json!({"status": "live-repair", "command": "reset-bmc", "details": {"bmc": "hung"}});
        h.report("node2", report.clone());
        let uuid = uuid_of(&h.wait_incident_on("node2", 10.0).await);
        let done = h.wait_status(&uuid, "completed", 60.0).await;
        let now = h.clock.now();
        let repairs = h.sim.lock().repairs("node2", now).expect("node");
        assert_eq!(repairs.len(), 1);
        assert_eq!(repairs[0].command, "reset-bmc");
        let stdin: Value =
            serde_json::from_str(repairs[0].input.as_deref().expect("stdin")).expect("json");
        assert_eq!(stdin, report);
        assert!(h
            .node("node2")
            .tags
            .contains(&format!("maintd:repairready:{uuid}")));
        assert!(
            !h.node("node2").drained,
            "live repair leaves the node in service"
        );
        assert_eq!(job_ids(&done).len(), 2, "repair command, tag");
    });
}

#[test]
fn live_repair_without_command_fails() {
    run_paused(|| async {
        let h = Harness::start(4, 8, 0.2).await;
        h.report(
            "node2",
            json!({"status": "live-repair", "details": "no idea"}),
        );
        let uuid = uuid_of(&h.wait_incident_on("node2", 10.0).await);
        let failed = h.wait_status(&uuid, "failed", 30.0).await;
        assert!(failed["message"]
            .as_str()
            .unwrap()
            .contains("without a repair command"));
        let tag = format!("maintd:repairfailed:{uuid}");
        h.wait_for(30.0, "the failure tag", async |h: &Harness| {
            h.node("node2").tags.contains(&tag).then_some(())
        })
        .await;
        let now = h.clock.now();
        assert!(h.sim.lock().repairs("node2", now).expect("node").is_empty());
    });
}

#[test]
fn bad_reports_never_become_incidents() {
    run_paused(|| async {
        let h = Harness::start(5, 0, 0.2).await;
        let now = h.clock.now();
        {
            let mut sim = h.sim.lock();
            sim.set_monitoring(
                "node2",
                MonitoringBehaviour::Garbage("not json".into()),
                now,
            )
            .unwrap();
            sim.set_monitoring("node3", MonitoringBehaviour::Unreachable, now)
                .unwrap();
            sim.set_monitoring(
                "node4",
                MonitoringBehaviour::Garbage("x".repeat(1 << 20)),
                now,
            )
            .unwrap();
        }
        h.report("node5", json!({"status": "reboot-please"}));
        h.report("node1", json!({"details": "no status"}));
        harness::advance(30.0).await;
        assert!(h.incidents().await.is_empty());
        let (status, nodes) = h.api("GET", "/1/nodes").await;
        assert_eq!(status, StatusCode::OK);
        let failures: BTreeMap<String, u64> = nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["node"].as_str().unwrap().to_owned(),
                    n["total_failures"].as_u64().unwrap(),
                )
            })
            .collect();
        for node in ["node1", "node2", "node3", "node4", "node5"] {
            assert!(failures[node] > 0, "{node} failures counted: {nodes}");
        }
        // The node recovers: its valid report is taken.
        h.report("node5", json!({"status": "evacuate"}));
        h.wait_incident_on("node5", 60.0).await;
    });
}

#[test]
fn failing_poller_backs_off_without_disturbing_others() {
    run_paused(|| async {
        let h = Harness::start(3, 0, 0.2).await;
        let now = h.clock.now();
        h.sim
            .lock()
            .set_monitoring("node3", MonitoringBehaviour::Unreachable, now)
            .unwrap();
        harness::advance(120.0).await;
        let (_, nodes) = h.api("GET", "/1/nodes").await;
        let view = |name: &str| {
            nodes
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["node"] == name)
                .cloned()
                .unwrap()
        };
        // With 1 s polls and a 1 s backoff doubling up to 30 s, 120 s hold about seven
        // attempts, not 120.
        let failed = view("node3")["total_failures"].as_u64().unwrap();
        assert!((5..=9).contains(&failed), "node3 attempts: {failed}");
        for healthy in ["node1", "node2"] {
            let v = view(healthy);
            assert_eq!(v["total_failures"], 0);
            let last = v["last_report_at"].as_f64().unwrap();
            assert!(
                h.clock.now() - last <= 2.0,
                "{healthy} still polled every second"
            );
        }
        // Back to normal: the next attempt succeeds and the count of failures stops growing.
        let now = h.clock.now();
        h.sim
            .lock()
            .set_monitoring("node3", MonitoringBehaviour::Normal, now)
            .unwrap();
        harness::advance(40.0).await;
        let (_, nodes) = h.api("GET", "/1/nodes").await;
        let node3 = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == "node3")
            .cloned()
            .unwrap();
        assert_eq!(node3["consecutive_failures"], 0);
    });
}

#[test]
fn state_serials_are_dated_by_the_daemon_s_clock() {
    run_paused(|| async {
        let h = Harness::start(4, 8, 0.2).await;
        harness::advance(100.0).await;
        let node = h.busiest_node();
        h.report(&node, json!({"status": "evacuate"}));
        h.wait_incident_on(&node, 10.0).await;
        let text = std::fs::read_to_string(h.dir.path().join(STATE_FILE)).unwrap();
        let serial = serde_json::from_str::<Value>(&text).unwrap()["serial"]
            .as_u64()
            .unwrap();
        // The harness's clock starts at 1_800_000_000 s, far from the machine's time: the
        // serial (Unix milliseconds, or one more than the last when that is not higher)
        // follows it, after the 100 s of virtual time.
        let now_ms = (h.clock.now() * 1000.0) as u64;
        assert!(
            (1_800_000_100_000..=now_ms + 1000).contains(&serial),
            "serial {serial}, clock {now_ms} ms"
        );
    });
}

#[test]
fn losing_mastership_stops_all_work() {
    run_paused(|| async {
        let h = Harness::start(5, 10, 0.2).await;
        harness::advance(2.0).await;
        let now = h.clock.now();
        h.sim.lock().set_master("node2", now).unwrap();
        harness::advance(5.0).await;
        let (status, body) = h.api("GET", "/1/status").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let jobs_before = h.jobs().len();
        h.report("node3", json!({"status": "evacuate"}));
        harness::advance(60.0).await;
        assert_eq!(h.jobs().len(), jobs_before, "no job while not master");
        // Mastership comes back: work resumes from the persisted state.
        let now = h.clock.now();
        h.sim.lock().set_master("node1", now).unwrap();
        let uuid = uuid_of(&h.wait_incident_on("node3", 30.0).await);
        h.wait_status(&uuid, "completed", 300.0).await;
    });
}

#[test]
fn ssconf_naming_another_master_stops_work_without_asking_the_cluster() {
    run_paused(|| async {
        let mut h = Harness::start(5, 10, 0.2).await;
        let ssconf = tempfile::tempdir().expect("tempdir");
        let master_file = ssconf.path().join("ssconf_master_node");
        std::fs::write(&master_file, "node1\n").expect("write");
        h.stop_daemon().await;
        h.ssconf_dir = Some(ssconf.path().to_owned());
        h.start_daemon().await;
        // The master role moved: this node's ssconf says so before the cluster does.
        std::fs::write(&master_file, "node2\n").expect("write");
        harness::advance(3.0).await;
        let (status, body) = h.api("GET", "/1/status").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let jobs_before = h.jobs().len();
        h.report("node3", json!({"status": "evacuate"}));
        harness::advance(30.0).await;
        assert_eq!(h.jobs().len(), jobs_before, "no job while not master");
        // Back: ssconf names this node, and the cluster agrees.
        std::fs::write(&master_file, "node1\n").expect("write");
        let uuid = uuid_of(&h.wait_incident_on("node3", 30.0).await);
        h.wait_status(&uuid, "completed", 300.0).await;
    });
}

#[test]
fn restart_mid_evacuation_loses_nothing_and_submits_nothing_twice() {
    run_paused(|| async {
        let mut h = Harness::start(8, 24, 2.0).await;
        let node = h.busiest_node();
        h.report(&node, json!({"status": "evacuate"}));
        let uuid = uuid_of(&h.wait_incident_on(&node, 10.0).await);
        h.wait_for(60.0, "two jobs", async |h: &Harness| {
            (h.jobs().len() >= 2).then_some(())
        })
        .await;
        h.stop_daemon().await;
        harness::advance(10.0).await;
        h.start_daemon().await;
        let done = h.wait_status(&uuid, "completed", 600.0).await;
        // One job per submission key: nothing was submitted twice.
        let mut keys: Vec<String> = h
            .jobs()
            .iter()
            .flat_map(|job| {
                let mut texts = maintd_reasons(job);
                texts.dedup(); // the opcodes of one job share their text
                texts
            })
            .collect();
        let total = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), total, "duplicate submissions");
        assert_eq!(job_ids(&done).len(), h.jobs().len());
        assert!(h.node(&node).primary_instances.is_empty());
    });
}

#[test]
fn departed_node_forgets_its_incident() {
    run_paused(|| async {
        let h = Harness::start(4, 0, 0.2).await;
        h.report("node4", json!({"status": "live-repair"}));
        let uuid = uuid_of(&h.wait_incident_on("node4", 10.0).await);
        h.wait_status(&uuid, "failed", 30.0).await;
        let now = h.clock.now();
        h.sim.lock().remove_node("node4", now).expect("removable");
        h.wait_no_incidents(30.0).await;
        // A node joining is polled too.
        let now = h.clock.now();
        h.sim.lock().add_node("node9", now).expect("added");
        h.report("node9", json!({"status": "evacuate"}));
        h.wait_incident_on("node9", 30.0).await;
    });
}

#[test]
fn harep_repairs_instances_of_a_drained_node_and_tags_them_as_harep_does() {
    run_paused(|| async {
        let h = Harness::start_with(6, 12, 0.2, |s| s.planner.harep = true).await;
        let node = h.busiest_node();
        let snapshot = h.snapshot();
        let drbd: Vec<String> = snapshot
            .instances
            .iter()
            .filter(|i| i.primary == node && i.disk_template == DiskTemplate::Drbd)
            .map(|i| i.name.clone())
            .collect();
        assert!(!drbd.is_empty(), "{node} hosts a DRBD primary");
        // An operator allows failovers on those instances and drains the node, without
        // any incident: harep's job.
        let mut ops: Vec<OpBody> = drbd
            .iter()
            .map(|name| OpBody::TagsSet {
                kind: TagKind::Instance,
                name: Some(name.clone()),
                tags: vec!["ganeti:watcher:autorepair:failover".into()],
            })
            .collect();
        ops.push(OpBody::drain_node(&node));
        h.operator_job(ops);

        let prefix = "ganeti:watcher:autorepair:result:failover:";
        let results = h
            .wait_for(120.0, "harep result tags", async |h: &Harness| {
                let snapshot = h.snapshot();
                let tags: Vec<String> = snapshot
                    .instances
                    .iter()
                    .filter(|i| drbd.contains(&i.name))
                    .filter_map(|i| i.tags.iter().find(|t| t.starts_with(prefix)).cloned())
                    .collect();
                (tags.len() == drbd.len()).then_some(tags)
            })
            .await;
        let snapshot = h.snapshot();
        for instance in snapshot.instances.iter().filter(|i| drbd.contains(&i.name)) {
            assert_ne!(instance.primary, node, "{} failed over", instance.name);
            assert!(
                !instance.tags.iter().any(|t| t.contains(":pending:")),
                "pending tag removed: {:?}",
                instance.tags
            );
        }
        // Each result names the repair job, which succeeded; the pending tag named it
        // while it ran.
        let jobs: BTreeMap<u64, _> = h.jobs().into_iter().map(|j| (j.id.0, j)).collect();
        for tag in &results {
            let fields: Vec<&str> = tag.split(':').collect();
            assert_eq!(fields[fields.len() - 2], "success", "{tag}");
            let id: u64 = fields[fields.len() - 1].parse().expect("a job id");
            let repair = &jobs[&id];
            assert_eq!(repair.status, JobStatus::Success);
            let op_ids: Vec<&str> = repair
                .ops
                .iter()
                .filter_map(|o| o["OP_ID"].as_str())
                .collect();
            assert_eq!(op_ids, ["OP_TEST_DELAY", "OP_INSTANCE_FAILOVER"]);
            assert!(!maintd_reasons(repair).is_empty(), "maintd's reason trail");
            let uuid = fields[fields.len() - 4];
            let pending = format!("ganeti:watcher:autorepair:pending:failover:{uuid}:");
            let pending_set = jobs.values().flat_map(|j| &j.ops).any(|o| {
                o["OP_ID"] == "OP_TAGS_SET"
                    && o["tags"][0]
                        .as_str()
                        .is_some_and(|t| t.starts_with(&pending) && t.ends_with(&format!(":{id}")))
            });
            assert!(pending_set, "a job set {pending}…:{id}");
        }
        // Nothing is repaired twice.
        let repairs = jobs
            .values()
            .filter(|j| j.ops.iter().any(|o| o["OP_ID"] == "OP_INSTANCE_FAILOVER"))
            .count();
        assert_eq!(repairs, drbd.len());
    });
}

/// The jobs of balancing moves in the queue.
fn balancing_jobs(h: &Harness) -> Vec<maintd::sim::views::JobView> {
    h.jobs()
        .into_iter()
        .filter(|j| {
            maintd_reasons(j)
                .iter()
                .any(|r| r.starts_with("balancing:"))
        })
        .collect()
}

/// At least `count` balancing jobs, all finalized.
async fn wait_balancing_jobs(h: &Harness, count: usize) -> Vec<maintd::sim::views::JobView> {
    h.wait_for(120.0, "balancing jobs", async |h: &Harness| {
        let jobs = balancing_jobs(h);
        (jobs.len() >= count && jobs.iter().all(|j| j.status.is_finalized())).then_some(jobs)
    })
    .await
}

#[test]
fn balancing_lowers_the_score_on_untouched_nodes_only() {
    run_paused(|| async {
        let h = Harness::start_with(6, 18, 0.2, |s| {
            s.planner.balance = true;
            s.planner.balance_threshold = 0.01;
        })
        .await;
        let score = |snapshot: &maintd::model::cluster::ClusterSnapshot| {
            let cluster = maintd::htools::snapshot::load(snapshot).expect("loads");
            maintd::htools::score::score(&cluster, &cluster.group_nodes(0))
        };
        let before = score(&h.snapshot());
        // node2 has an open incident: balancing must not touch it.
        h.report("node2", json!({"status": "live-repair"}));
        h.wait_incident_on("node2", 10.0).await;
        let balanced = wait_balancing_jobs(&h, 2).await;
        for job in &balanced {
            assert_eq!(job.status, JobStatus::Success, "{:?}", job.summary);
            let text = serde_json::to_string(&job.ops).expect("json");
            assert!(
                !text.contains("\"node2\""),
                "balancing touched node2: {text}"
            );
        }
        let after = score(&h.snapshot());
        assert!(after < before, "score {before} -> {after}");
    });
}

#[test]
fn balancing_by_cpu_load_uses_the_polled_loads() {
    run_paused(|| async {
        let h = Harness::start_with(6, 18, 0.2, |s| {
            s.planner.balance = true;
            s.planner.balance_by_cpu_load = true;
            s.planner.balance_threshold = 0.01;
        })
        .await;
        // The simulated collectors report each node's load; balancing acts on it.
        let balanced = wait_balancing_jobs(&h, 1).await;
        assert!(balanced.iter().all(|j| j.status == JobStatus::Success));
        // A node whose collector fails stops balancing: no figure, no guess.
        let now = h.clock.now();
        h.sim
            .lock()
            .set_monitoring("node3", MonitoringBehaviour::Unreachable, now)
            .expect("known node");
        // maintd learns of it at node3's next poll (the pollers are spread over the poll
        // interval, so a round may come first); from then on, no balancing.
        h.wait_for(10.0, "node3's failed poll", async |h: &Harness| {
            let (_, nodes) = h.api("GET", "/1/nodes").await;
            let failures = nodes.as_array().and_then(|n| {
                n.iter()
                    .find(|n| n["node"] == "node3")
                    .and_then(|n| n["consecutive_failures"].as_u64())
            });
            (failures > Some(0)).then_some(())
        })
        .await;
        let balancing_before = balancing_jobs(&h).len();
        harness::advance(30.0).await;
        let balancing = balancing_jobs(&h);
        assert_eq!(
            balancing.len(),
            balancing_before,
            "no balancing without node3's load: {balancing:?}"
        );
    });
}
