//! The brakes, end to end on the in-process simulated cluster in virtual time: concurrent
//! evacuations, the blast-radius cap, the circuit breaker, pause (API and cluster tag),
//! opt-out tags, dry-run, debounce, the flap budget, hung jobs and history. Many nodes go
//! bad at once in most of these tests, because that is when the brakes matter.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod harness;

use std::{collections::BTreeSet, time::Duration};

use actix_web::http::StatusCode;
use harness::{maintd_reasons, run_paused, Harness};
use maintd::{
    config::Settings,
    model::{cluster::DiskTemplate, job::JobStatus, opcode::TagKind},
    sim::views::JobView,
};
use serde_json::{json, Value};

fn evacuate(detail: &str) -> Value {
    json!({"status": "evacuate", "details": {"disk": detail}})
}

/// Brakes loose enough that a test of one brake is not stopped by another.
fn loose(settings: &mut Settings) {
    settings.safety.max_nodes_in_repair = 20;
    settings.safety.max_percent_in_repair = 100.0;
    settings.safety.breaker_nodes = 50;
    settings.safety.breaker_percent = 100.0;
}

/// Every job maintd submitted.
fn maintd_jobs(h: &Harness) -> Vec<JobView> {
    h.jobs()
        .into_iter()
        .filter(|j| !maintd_reasons(j).is_empty())
        .collect()
}

fn failed_maintd_jobs(h: &Harness) -> Vec<JobView> {
    maintd_jobs(h)
        .into_iter()
        .filter(|j| j.status == JobStatus::Error)
        .collect()
}

async fn safety(h: &Harness) -> Value {
    let (status, body) = h.api("GET", "/1/safety").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Nodes in repair as maintd reports them.
async fn in_repair(h: &Harness) -> BTreeSet<String> {
    safety(h).await["in_repair"]
        .as_array()
        .expect("in_repair")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Nodes drained in the simulator among `nodes`.
fn drained_among(h: &Harness, nodes: &[String]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| h.node(n).drained)
        .cloned()
        .collect()
}

/// Three non-master nodes that pairwise share DRBD instances (one primary on one, its
/// secondary on the other), if the cluster has them.
fn drbd_triangle(h: &Harness) -> Vec<String> {
    let snapshot = h.snapshot();
    let mut pairs = BTreeSet::new();
    for inst in &snapshot.instances {
        if inst.disk_template != DiskTemplate::Drbd {
            continue;
        }
        for s in &inst.secondaries {
            if inst.primary != snapshot.master && *s != snapshot.master {
                pairs.insert((inst.primary.clone(), s.clone()));
                pairs.insert((s.clone(), inst.primary.clone()));
            }
        }
    }
    let names: Vec<String> = snapshot
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| *n != snapshot.master)
        .collect();
    for a in &names {
        for b in &names {
            for c in &names {
                if a < b
                    && b < c
                    && pairs.contains(&(a.clone(), b.clone()))
                    && pairs.contains(&(b.clone(), c.clone()))
                    && pairs.contains(&(a.clone(), c.clone()))
                {
                    return vec![a.clone(), b.clone(), c.clone()];
                }
            }
        }
    }
    panic!("no three nodes sharing DRBD instances");
}

async fn incident_on(h: &Harness, node: &str) -> Option<Value> {
    h.try_incidents()
        .await?
        .into_iter()
        .find(|i| i["node"] == node)
}

/// Advance time until every listed node has a completed incident, checking `invariant`
/// at every step.
async fn run_until_completed(
    h: &Harness,
    nodes: &[String],
    limit: f64,
    mut invariant: impl AsyncFnMut(&Harness),
) {
    let mut waited = 0.0;
    loop {
        invariant(h).await;
        let incidents = h.incidents().await;
        let done = nodes.iter().all(|n| {
            incidents
                .iter()
                .any(|i| i["node"] == n.as_str() && i["repair-status"] == "completed")
        });
        if done {
            return;
        }
        assert!(
            waited < limit,
            "not all of {nodes:?} completed after {limit} s: {incidents:#?}"
        );
        harness::advance(0.25).await;
        waited += 0.25;
    }
}

#[test]
fn three_nodes_sharing_drbd_pairs_evacuated_at_once_all_complete_without_a_failed_job() {
    run_paused(|| async {
        let h = Harness::start_with(12, 48, 0.2, loose).await;
        let nodes = drbd_triangle(&h);
        for node in &nodes {
            h.report(node, evacuate("sda"));
        }
        run_until_completed(&h, &nodes, 900.0, async |_| {}).await;
        assert!(
            failed_maintd_jobs(&h).is_empty(),
            "failed jobs: {:#?}",
            failed_maintd_jobs(&h)
        );
        for node in &nodes {
            let view = h.node(node);
            assert!(view.drained, "{node} drained");
            assert!(
                view.primary_instances.is_empty() && view.secondary_instances.is_empty(),
                "{node} still holds {:?} / {:?}",
                view.primary_instances,
                view.secondary_instances
            );
        }
    });
}

#[test]
fn the_cap_holds_at_every_instant_and_waiting_incidents_say_why() {
    run_paused(|| async {
        let h = Harness::start_with(8, 24, 0.2, |s| {
            loose(s);
            s.safety.max_nodes_in_repair = 1;
        })
        .await;
        let nodes: Vec<String> = ["node3", "node5", "node7"].map(String::from).to_vec();
        for node in &nodes {
            h.report(node, evacuate("sdb"));
        }
        let mut saw_waiting = false;
        run_until_completed(&h, &nodes, 1200.0, async |h: &Harness| {
            let repairing = in_repair(h).await;
            assert!(repairing.len() <= 1, "in repair at once: {repairing:?}");
            // Nodes drained for an incident that is not completed yet.
            let incidents = h.incidents().await;
            let draining: Vec<&Value> = incidents
                .iter()
                .filter(|i| i["repair-status"] != "completed")
                .filter(|i| h.node(i["node"].as_str().unwrap_or_default()).drained)
                .collect();
            assert!(draining.len() <= 1, "drained at once: {draining:#?}");
            saw_waiting |= incidents.iter().any(|i| {
                i["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("waiting: 1 of 1 nodes already in repair"))
            });
        })
        .await;
        assert!(saw_waiting, "an incident waited for the cap, saying so");
        assert!(failed_maintd_jobs(&h).is_empty());
    });
}

#[test]
fn a_storm_of_reports_trips_the_breaker_after_at_most_the_cap_and_it_stays_tripped() {
    run_paused(|| async {
        let mut h = Harness::start(8, 24, 0.2).await;
        let others: Vec<String> = (2..=8).map(|n| format!("node{n}")).collect();
        for node in &others {
            h.report(node, evacuate("storm"));
        }
        h.wait_for(60.0, "the breaker to trip", async |h: &Harness| {
            (safety(h).await["breaker"]["tripped"] == true).then_some(())
        })
        .await;
        let view = safety(&h).await;
        assert!(
            view["breaker"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("more than safety.breaker_nodes = 3")),
            "{view}"
        );
        // Nothing more happens while it is tripped: at most the cap was drained.
        harness::advance(60.0).await;
        let drained = drained_among(&h, &others);
        assert!(drained.len() <= 1, "drained: {drained:?}");
        let jobs_before = maintd_jobs(&h).len();

        // Latched across a restart.
        h.stop_daemon().await;
        h.start_daemon().await;
        harness::advance(30.0).await;
        assert_eq!(safety(&h).await["breaker"]["tripped"], true);
        assert_eq!(maintd_jobs(&h).len(), jobs_before, "no job while tripped");
        assert_eq!(drained_among(&h, &others), drained);

        // Resuming acknowledges the open incidents: they proceed within the cap.
        let (status, body) = h.api("POST", "/1/resume").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["breaker"]["tripped"], false);
        harness::advance(10.0).await;
        // With every other node under evacuation nothing fits anywhere: the incidents
        // wait and say why, instead of draining the cluster.
        for incident in h.incidents().await {
            let message = incident["message"].as_str().unwrap_or_default();
            assert!(
                incident["repair-status"] == "pending" || message.starts_with("waiting"),
                "{incident}"
            );
        }
        for _ in 0..120 {
            assert!(in_repair(&h).await.len() <= 1, "the cap holds after resume");
            assert!(drained_among(&h, &others).len() <= 1);
            harness::advance(0.5).await;
        }
        assert_eq!(
            safety(&h).await["breaker"]["tripped"],
            false,
            "not re-tripped"
        );
    });
}

#[test]
fn pause_through_the_api_stops_new_jobs_within_one_round_and_resume_finishes() {
    run_paused(|| async {
        let h = Harness::start_with(8, 24, 0.5, loose).await;
        let node = h.busiest_node();
        h.report(&node, evacuate("sdc"));
        let incident = h
            .wait_for(60.0, "the first job", async |h: &Harness| {
                incident_on(h, &node)
                    .await
                    .filter(|i| i["repair-status"] == "pending")
            })
            .await;
        let uuid = incident["uuid"].as_str().unwrap().to_owned();

        let (status, body) = h
            .api_with_body("POST", "/1/pause", r#"{"reason": "rack A4 power work"}"#)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["paused"], true);
        assert_eq!(body["pause_reason"], "rack A4 power work");
        // A round planned before the pause may still be handed over; after one round
        // delay no new job appears.
        harness::advance(1.5).await;
        let frozen: Vec<u64> = maintd_jobs(&h).iter().map(|j| j.id.0).collect();
        harness::advance(60.0).await;
        let later: Vec<u64> = maintd_jobs(&h).iter().map(|j| j.id.0).collect();
        assert_eq!(frozen, later, "no new job while paused");
        let held = incident_on(&h, &node).await.unwrap();
        assert!(
            held["message"]
                .as_str()
                .is_some_and(|m| m.contains("paused by api client 127.0.0.9")),
            "{held}"
        );
        // Malformed pauses are refused and change nothing.
        for bad in ["{", r#"{"reason": 5}"#, r#"{"why": "x"}"#, "[]"] {
            let (status, body) = h.api_with_body("POST", "/1/pause", bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        }
        let (status, _) = h.api_with_body("POST", "/1/resume", "nonsense").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (status, body) = h.api("POST", "/1/resume").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["paused"], false);
        h.wait_status(&uuid, "completed", 600.0).await;
        let (_, detail) = h.api("GET", &format!("/1/incidents/{uuid}")).await;
        let events: Vec<&str> = detail["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["event"].as_str())
            .collect();
        for expected in [
            "noted",
            "confirmed",
            "pending",
            "job-submitted",
            "job-finalized",
            "paused",
            "resumed",
            "completed",
        ] {
            assert!(
                events.contains(&expected),
                "{expected} missing from {events:?}"
            );
        }
        let paused = detail["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"] == "paused")
            .unwrap();
        assert_eq!(paused["by"], "api client 127.0.0.9");
    });
}

#[test]
fn the_cluster_pause_tag_stops_new_jobs_and_its_removal_lets_them_go_on() {
    run_paused(|| async {
        let h = Harness::start_with(8, 24, 0.5, loose).await;
        h.add_tag(TagKind::Cluster, None, "maintd:paused");
        h.wait_for(20.0, "the tag to be seen", async |h: &Harness| {
            (safety(h).await["paused_by_tag"] == true).then_some(())
        })
        .await;
        let node = h.busiest_node();
        h.report(&node, evacuate("sdd"));
        let incident = h.wait_incident_on(&node, 20.0).await;
        harness::advance(60.0).await;
        assert!(maintd_jobs(&h).is_empty(), "no job while the tag is set");
        assert!(!h.node(&node).drained);
        let (_, plan) = h.api("GET", "/1/plan").await;
        assert_eq!(plan["mode"], "held", "{plan}");
        assert!(plan["held_by"].as_str().unwrap().contains("maintd:paused"));
        assert!(
            !plan["jobs"].as_array().unwrap().is_empty(),
            "the plan shows the drain"
        );

        h.remove_tag(TagKind::Cluster, None, "maintd:paused");
        h.wait_status(incident["uuid"].as_str().unwrap(), "completed", 600.0)
            .await;
    });
}

#[test]
fn excluded_nodes_get_no_action_and_are_never_targets() {
    run_paused(|| async {
        let h = Harness::start_with(8, 24, 0.2, loose).await;
        h.add_tag(TagKind::Node, Some("node4"), "maintd:exclude");
        h.add_tag(TagKind::Node, Some("node6"), "maintd:exclude");
        harness::advance(3.0).await;
        h.report("node4", evacuate("sde"));
        let node = h.busiest_node_except(&["node4", "node6"]);
        h.report(&node, evacuate("sdf"));
        let other = h.wait_incident_on(&node, 20.0).await;
        h.wait_status(other["uuid"].as_str().unwrap(), "completed", 900.0)
            .await;
        let excluded = incident_on(&h, "node4").await.unwrap();
        assert_eq!(excluded["repair-status"], "noted");
        assert!(
            excluded["message"]
                .as_str()
                .is_some_and(|m| m.contains("maintd:exclude")),
            "{excluded}"
        );
        for job in maintd_jobs(&h) {
            let text = serde_json::to_string(&job.ops).unwrap();
            assert!(
                !text.contains("\"node4\"") && !text.contains("\"node6\""),
                "a job touches an excluded node: {text}"
            );
        }
        assert!(!h.node("node4").drained);
    });
}

#[test]
fn dry_run_plans_but_submits_nothing() {
    run_paused(|| async {
        let h = Harness::start_with(8, 24, 0.2, |s| {
            loose(s);
            s.safety.dry_run = true;
        })
        .await;
        let node = h.busiest_node();
        h.report(&node, evacuate("sdg"));
        let plan = h
            .wait_for(30.0, "a plan", async |h: &Harness| {
                let (_, plan) = h.api("GET", "/1/plan").await;
                plan["jobs"]
                    .as_array()
                    .is_some_and(|j| !j.is_empty())
                    .then_some(plan)
            })
            .await;
        assert_eq!(plan["mode"], "held");
        assert!(plan["held_by"].as_str().unwrap().starts_with("dry-run"));
        let job = &plan["jobs"][0];
        assert_eq!(job["opcodes"][0]["OP_ID"], "OP_NODE_SET_PARAMS", "{job}");
        assert!(job["incident"].is_string());
        harness::advance(60.0).await;
        assert!(maintd_jobs(&h).is_empty(), "nothing submitted in dry-run");
        assert!(!h.node(&node).drained);
        let incident = incident_on(&h, &node).await.unwrap();
        assert_eq!(incident["repair-status"], "noted");
        assert!(incident["message"]
            .as_str()
            .unwrap()
            .contains("would submit"));
        assert_eq!(safety(&h).await["dry_run"], true);
    });
}

#[test]
fn a_report_whose_details_change_at_every_poll_leads_to_nothing() {
    run_paused(|| async {
        let h = Harness::start_with(8, 24, 0.2, loose).await;
        for counter in 0..60 {
            h.report(
                "node3",
                json!({"status": "live-repair", "command": "fix", "details": {"errors": counter}}),
            );
            harness::advance(0.5).await;
            let incidents = h.incidents().await;
            assert!(incidents.len() <= 1, "{incidents:#?}");
            assert!(incidents.iter().all(|i| i["confirmed"] == false));
        }
        assert!(
            maintd_jobs(&h).is_empty(),
            "no action on an unconfirmed report"
        );
        h.report("node3", json!({"status": "Ok"}));
        h.wait_no_incidents(10.0).await;
        let (status, history) = h.api("GET", "/1/history?limit=5").await;
        assert_eq!(status, StatusCode::OK);
        let history = history.as_array().unwrap();
        assert_eq!(history.len(), 5);
        assert!(history.iter().all(|i| i["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "dropped")));
        for bad in [
            "/1/history?limit=0",
            "/1/history?limit=x",
            "/1/history?limit=99999999",
            "/1/history?lmit=3",
        ] {
            assert_eq!(h.api("GET", bad).await.0, StatusCode::BAD_REQUEST, "{bad}");
        }
    });
}

#[test]
fn a_report_seen_twice_is_acted_upon_and_the_flap_budget_holds_the_fourth() {
    run_paused(|| async {
        let h = Harness::start_with(8, 24, 0.2, loose).await;
        let mut uuids = Vec::new();
        for round in 0..4 {
            h.report(
                "node3",
                json!({"status": "live-repair", "command": "fix", "details": {"round": round}}),
            );
            let incident = h
                .wait_for(20.0, "the incident", async |h: &Harness| {
                    incident_on(h, "node3").await.filter(|i| {
                        i["original"]["details"]["round"] == round && i["confirmed"] == true
                    })
                })
                .await;
            let uuid = incident["uuid"].as_str().unwrap().to_owned();
            if round < 3 {
                h.wait_status(&uuid, "completed", 120.0).await;
                // The operator acknowledges; the node reports the next problem.
                let tag = format!("maintd:repairready:{uuid}");
                h.remove_tag(TagKind::Node, Some("node3"), &tag);
            }
            uuids.push(uuid);
        }
        harness::advance(60.0).await;
        let fourth = h
            .incidents()
            .await
            .into_iter()
            .find(|i| i["uuid"] == uuids[3].as_str())
            .unwrap();
        assert_eq!(fourth["repair-status"], "noted", "{fourth}");
        assert_eq!(fourth["flapping"], true);
        assert!(fourth["message"].as_str().unwrap().starts_with("flapping"));
        assert!(fourth["jobs"].as_array().unwrap().is_empty());
        // The operator looks, and resumes: it proceeds.
        assert_eq!(h.api("POST", "/1/resume").await.0, StatusCode::OK);
        h.wait_status(&uuids[3], "completed", 120.0).await;
    });
}

#[test]
fn a_hung_job_marks_its_incident_stuck_while_other_incidents_go_on() {
    run_paused(|| async {
        let h = Harness::start_with(8, 24, 0.2, |s| {
            loose(s);
            s.rounds.job_timeout = Duration::from_secs(60);
        })
        .await;
        h.sim.lock().inject_hang("OP_NODE_SET_PARAMS", 1);
        let node = h.busiest_node();
        h.report(&node, evacuate("sdh"));
        let stuck = h
            .wait_for(200.0, "the incident stuck", async |h: &Harness| {
                incident_on(h, &node).await.filter(|i| i["stuck"] == true)
            })
            .await;
        assert!(
            stuck["message"].as_str().unwrap().starts_with("stuck: job"),
            "{stuck}"
        );
        let stuck_uuid = stuck["uuid"].as_str().unwrap().to_owned();

        // Another incident completes meanwhile.
        let other = if node == "node2" { "node8" } else { "node2" };
        h.report(
            other,
            json!({"status": "live-repair", "command": "fix", "details": {}}),
        );
        let incident = h.wait_incident_on(other, 20.0).await;
        h.wait_status(incident["uuid"].as_str().unwrap(), "completed", 120.0)
            .await;
        let still = incident_on(&h, &node).await.unwrap();
        assert_eq!(
            still["jobs"].as_array().unwrap().len(),
            1,
            "no further job while stuck"
        );

        let released = h.sim.lock().release_hung_jobs(h.clock.now());
        assert_eq!(released.len(), 1);
        h.wait_status(&stuck_uuid, "completed", 900.0).await;
        assert!(failed_maintd_jobs(&h).is_empty());
    });
}

#[test]
fn a_job_waiting_past_the_timeout_is_canceled_and_its_step_planned_again() {
    run_paused(|| async {
        let h = Harness::start_with(8, 24, 0.2, |s| {
            loose(s);
            s.rounds.job_timeout = Duration::from_secs(30);
        })
        .await;
        // An operator's job on node5 hangs and holds the node.
        h.sim.lock().inject_hang("OP_TAGS_SET", 1);
        h.add_tag(TagKind::Node, Some("node5"), "rack:a4");
        h.report(
            "node5",
            json!({"status": "live-repair", "command": "fix", "details": {}}),
        );
        let uuid = h.wait_incident_on("node5", 20.0).await["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let canceled = h
            .wait_for(200.0, "maintd's job canceled", async |h: &Harness| {
                maintd_jobs(h)
                    .into_iter()
                    .find(|j| j.status == JobStatus::Canceled)
            })
            .await;
        assert!(!maintd_reasons(&canceled).is_empty());
        let incident = incident_on(&h, "node5").await.unwrap();
        assert_ne!(incident["repair-status"], "failed", "{incident}");
        h.sim.lock().release_hung_jobs(h.clock.now());
        h.wait_status(&uuid, "completed", 200.0).await;
    });
}

#[test]
fn a_cancel_records_who_asked_and_forgotten_incidents_stay_in_the_history() {
    run_paused(|| async {
        let h = Harness::start_with(8, 24, 0.2, |s| {
            loose(s);
            s.safety.dry_run = true;
        })
        .await;
        h.report("node4", evacuate("sdi"));
        let uuid = h
            .wait_for(20.0, "a confirmed incident", async |h: &Harness| {
                incident_on(h, "node4")
                    .await
                    .filter(|i| i["confirmed"] == true)
            })
            .await["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, _) = h.api("POST", &format!("/1/incidents/{uuid}/cancel")).await;
        assert_eq!(status, StatusCode::OK);
        h.report("node4", json!({"status": "Ok"}));
        h.wait_no_incidents(10.0).await;
        let (status, detail) = h.api("GET", &format!("/1/incidents/{uuid}")).await;
        assert_eq!(status, StatusCode::OK, "{detail}");
        assert_eq!(detail["forgotten"], true);
        let history = detail["history"].as_array().unwrap();
        let cancel = history.iter().find(|e| e["event"] == "canceled").unwrap();
        assert_eq!(cancel["by"], "api client 127.0.0.9");
        assert_eq!(history.last().unwrap()["event"], "forgotten");
        let (_, listed) = h.api("GET", "/1/history?limit=1").await;
        assert_eq!(listed[0]["uuid"], uuid.as_str());
    });
}

/// The scenario an operator woken by a rack failure lives through, on 12 nodes and 48
/// instances (seed 11), at most two nodes in repair and a breaker at five nodes.
#[test]
fn a_rack_failure_on_twelve_nodes_is_handled_within_the_cap_and_then_stopped_by_the_breaker() {
    run_paused(|| async {
        let spec = maintd::sim::SimSpec {
            nodes: 12,
            instances: 48,
            seed: 11,
            job_seconds: 0.2,
            ..maintd::sim::SimSpec::default()
        };
        let h = Harness::start_spec(spec, |s| {
            s.safety.max_nodes_in_repair = 2;
            s.safety.breaker_nodes = 5;
        })
        .await;
        let first = drbd_triangle(&h);
        for node in &first {
            h.report(node, evacuate("rack-a"));
        }
        let mut most = 0;
        run_until_completed(&h, &first, 1800.0, async |h: &Harness| {
            let incidents = h.incidents().await;
            let draining = incidents
                .iter()
                .filter(|i| i["repair-status"] != "completed")
                .filter(|i| h.node(i["node"].as_str().unwrap_or_default()).drained)
                .count();
            assert!(draining <= 2, "{draining} drained for open incidents");
            most = most.max(draining);
            assert!(in_repair(h).await.len() <= 2);
        })
        .await;
        assert_eq!(most, 2, "two at a time");
        assert!(
            failed_maintd_jobs(&h).is_empty(),
            "{:#?}",
            failed_maintd_jobs(&h)
        );

        // Six more nodes report at once: the breaker trips and nothing more is drained.
        let master = h.snapshot().master;
        let more: Vec<String> = h
            .snapshot()
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| *n != master && !first.contains(n))
            .take(6)
            .collect();
        for node in &more {
            h.report(node, evacuate("rack-b"));
        }
        h.wait_for(30.0, "the breaker to trip", async |h: &Harness| {
            (safety(h).await["breaker"]["tripped"] == true).then_some(())
        })
        .await;
        let drained_at_trip = drained_among(&h, &more);
        assert!(drained_at_trip.len() <= 2, "{drained_at_trip:?}");
        harness::advance(60.0).await;
        assert_eq!(drained_among(&h, &more), drained_at_trip);

        // Resume: they proceed, never more than two in repair at once.
        assert_eq!(h.api("POST", "/1/resume").await.0, StatusCode::OK);
        let mut most = 0;
        for _ in 0..600 {
            let repairing = in_repair(&h).await.len();
            assert!(repairing <= 2);
            most = most.max(repairing);
            harness::advance(0.5).await;
        }
        assert_eq!(most, 2, "two at a time after the resume");
        let incidents = h.incidents().await;
        let completed = incidents
            .iter()
            .filter(|i| more.iter().any(|n| i["node"] == n.as_str()))
            .filter(|i| i["repair-status"] == "completed")
            .count();
        assert!(completed >= 2, "{incidents:#?}");
        // What no longer fits waits, saying why; nothing failed.
        for incident in incidents.iter().filter(|i| i["repair-status"] == "noted") {
            assert!(
                incident["message"].as_str().unwrap().starts_with("waiting"),
                "{incident}"
            );
        }
        assert!(failed_maintd_jobs(&h).is_empty());
    });
}

#[test]
fn a_failed_live_migration_is_retried_as_a_failover_when_escalation_is_on() {
    run_paused(|| async {
        let h = Harness::start_with(8, 24, 0.2, |s| {
            loose(s);
            s.rounds.escalate_to_failover = true;
        })
        .await;
        h.sim.lock().inject_fault("OP_INSTANCE_MIGRATE", 1);
        let node = h.busiest_node();
        h.report(&node, evacuate("sdj"));
        let uuid = h.wait_incident_on(&node, 20.0).await["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let done = h.wait_status(&uuid, "completed", 900.0).await;
        let failed = failed_maintd_jobs(&h);
        assert_eq!(failed.len(), 1, "the injected migration failure only");
        let failovers = maintd_jobs(&h)
            .into_iter()
            .filter(|j| j.ops.iter().any(|op| op["OP_ID"] == "OP_INSTANCE_FAILOVER"))
            .count();
        assert!(failovers >= 1, "the instance was failed over");
        let (_, detail) = h.api("GET", &format!("/1/incidents/{uuid}")).await;
        assert!(detail["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "escalated"));
        assert!(h.node(&node).primary_instances.is_empty(), "{done}");
    });
}

#[test]
fn a_state_that_cannot_be_saved_stops_new_work_and_operator_requests_until_it_can() {
    run_paused(|| async {
        let mut h = Harness::start_with(8, 24, 0.5, loose).await;
        let node = h.busiest_node();
        h.report(&node, evacuate("sdl"));
        let uuid = h
            .wait_for(60.0, "the first job", async |h: &Harness| {
                incident_on(h, &node)
                    .await
                    .filter(|i| i["repair-status"] == "pending")
            })
            .await["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let faults = h.daemon.as_ref().unwrap().save_faults.clone();
        faults.store(true, std::sync::atomic::Ordering::Relaxed);
        // The next change cannot be saved: from then on nothing is submitted.
        let error = h
            .wait_for(30.0, "the save error", async |h: &Harness| {
                safety(h).await["state_error"].as_str().map(str::to_owned)
            })
            .await;
        assert!(error.contains("save failure injected"), "{error}");
        harness::advance(2.0).await;
        let frozen: Vec<u64> = maintd_jobs(&h).iter().map(|j| j.id.0).collect();
        h.report(
            "node3",
            json!({"status": "live-repair", "command": "fix", "details": {}}),
        );
        harness::advance(30.0).await;
        let later: Vec<u64> = maintd_jobs(&h).iter().map(|j| j.id.0).collect();
        assert_eq!(frozen, later, "no job while the state cannot be saved");
        // Operator requests are refused, not acknowledged and then lost.
        let (status, body) = h.api("POST", &format!("/1/incidents/{uuid}/cancel")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("state could not be saved"));
        assert_eq!(
            h.api("POST", "/1/pause").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(safety(&h).await["paused"], false);

        // Once saves work again, everything goes on, and a restart loses nothing.
        faults.store(false, std::sync::atomic::Ordering::Relaxed);
        h.wait_for(10.0, "the state saved", async |h: &Harness| {
            safety(h).await["state_error"].is_null().then_some(())
        })
        .await;
        h.stop_daemon().await;
        h.start_daemon().await;
        h.wait_status(&uuid, "completed", 900.0).await;
        let repair = h.wait_incident_on("node3", 30.0).await;
        h.wait_status(repair["uuid"].as_str().unwrap(), "completed", 300.0)
            .await;
        assert!(failed_maintd_jobs(&h).is_empty());
        // No submission key names two jobs.
        let mut seen = BTreeSet::new();
        for job in maintd_jobs(&h) {
            let keys: BTreeSet<String> = maintd_reasons(&job)
                .iter()
                .filter_map(|r| r.split("submission ").nth(1).map(str::to_owned))
                .collect();
            assert_eq!(keys.len(), 1, "one key per job: {keys:?}");
            assert!(seen.insert(keys.into_iter().next().unwrap()), "key reused");
        }
    });
}
