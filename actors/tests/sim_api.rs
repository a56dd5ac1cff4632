//! The simulator's HTTP control API and monitoring endpoints, served in-process.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use actix_web::{test, web, App};
use maintd::clock::Clock;
use maintd::model::job::JobStatus;
use maintd::model::opcode::OpBody;
use maintd::sim::{SimHandle, SimSpec};
use maintd_actors::sim::api;
use serde_json::{json, Value};

fn handle() -> SimHandle {
    let spec = SimSpec {
        nodes: 3,
        instances: 6,
        seed: 77,
        job_seconds: 0.0,
        ..SimSpec::default()
    };
    SimHandle::generate(&spec, Clock::starting_at(1_700_000_000.0))
}

macro_rules! app {
    ($handle:expr) => {
        test::init_service(
            App::new()
                .app_data(web::Data::new($handle.clone()))
                .configure(api::configure),
        )
        .await
    };
}

#[actix_rt::test]
async fn nodes_instances_and_diagnose_updates() {
    let sim = handle();
    let app = app!(sim);

    let nodes: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get().uri("/sim/nodes").to_request(),
    )
    .await;
    let nodes = nodes.as_array().expect("list").clone();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["name"], "node1");
    assert_eq!(nodes[0]["master"], true);
    assert_eq!(nodes[0]["group"], "default");
    assert_eq!(nodes[0]["diagnose"], json!({"status": "Ok"}));
    for key in [
        "drained",
        "offline",
        "tags",
        "primary_instances",
        "secondary_instances",
    ] {
        assert!(nodes[0].get(key).is_some(), "missing {key}");
    }

    let instances: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get().uri("/sim/instances").to_request(),
    )
    .await;
    assert_eq!(instances.as_array().map(Vec::len), Some(6));

    let request = test::TestRequest::put()
        .uri("/sim/nodes/node2/diagnose")
        .set_payload(r#"{"status": "live-repair", "command": "fix-disk"}"#)
        .to_request();
    assert_eq!(test::call_service(&app, request).await.status(), 200);
    let report: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get()
            .uri("/mond/node2/1/report/node/diagnose")
            .to_request(),
    )
    .await;
    assert_eq!(report["name"], "diagnose");
    assert_eq!(report["category"], "node");
    assert_eq!(
        report["data"],
        json!({"status": "live-repair", "command": "fix-disk"})
    );

    let bad = test::TestRequest::put()
        .uri("/sim/nodes/node2/diagnose")
        .set_payload("{not json")
        .to_request();
    let response = test::call_service(&app, bad).await;
    assert_eq!(response.status(), 400);
    let body: Value = test::read_body_json(response).await;
    assert!(body["error"].is_string());

    let unknown = test::TestRequest::put()
        .uri("/sim/nodes/node9/diagnose")
        .set_payload("{}")
        .to_request();
    assert_eq!(test::call_service(&app, unknown).await.status(), 404);
}

/// Set node1's monitoring behaviour (which must be accepted), then fetch its report.
macro_rules! diagnose_with {
    ($app:expr, $behaviour:expr) => {{
        let set = test::TestRequest::put()
            .uri("/sim/nodes/node1/monitoring")
            .set_payload($behaviour)
            .to_request();
        assert_eq!(test::call_service(&$app, set).await.status(), 200);
        let get = test::TestRequest::get()
            .uri("/mond/node1/1/report/node/diagnose")
            .to_request();
        test::call_service(&$app, get).await
    }};
}

#[actix_rt::test]
async fn monitoring_endpoints_and_behaviours() {
    let sim = handle();
    let app = app!(sim);
    let root: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get().uri("/mond/node1/").to_request(),
    )
    .await;
    assert_eq!(root, json!([1]));
    let collectors: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get()
            .uri("/mond/node1/1/list/collectors")
            .to_request(),
    )
    .await;
    assert_eq!(collectors, json!([["diagnose", "node", 1]]));
    let missing = test::TestRequest::get()
        .uri("/mond/node9/1/report/node/diagnose")
        .to_request();
    assert_eq!(test::call_service(&app, missing).await.status(), 404);

    let garbage = diagnose_with!(app, r#"{"behaviour": "garbage", "body": "<html>oops"}"#);
    assert_eq!(&test::read_body(garbage).await[..], b"<html>oops");
    let unreachable = diagnose_with!(app, r#"{"behaviour": "unreachable"}"#);
    assert_eq!(unreachable.status(), 503);
    let status = diagnose_with!(app, r#"{"behaviour": "status", "body": 500}"#);
    assert_eq!(status.status(), 500);

    let invalid = test::TestRequest::put()
        .uri("/sim/nodes/node1/monitoring")
        .set_payload(r#"{"behaviour": "sometimes"}"#)
        .to_request();
    assert_eq!(test::call_service(&app, invalid).await.status(), 400);
}

#[actix_rt::test]
async fn jobs_faults_tags_and_repairs() {
    let sim = handle();
    let app = app!(sim);
    let now = sim.now();
    let ops = vec![
        maintd::model::opcode::OpBody::tag_node("node2", "maintd:repairready:1")
            .with_reason("incident 1".into(), 5),
        maintd::model::opcode::OpBody::repair_command(
            "node2",
            "swap-dimm",
            "{\"status\":\"live-repair\"}".into(),
        )
        .with_reason("incident 1".into(), 5),
    ];
    let id = sim.lock().submit_job(ops, now).expect("accepted");

    let job: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get()
            .uri(&format!("/sim/jobs/{id}"))
            .to_request(),
    )
    .await;
    assert_eq!(job["status"], "success");
    assert_eq!(job["opstatus"], json!(["success", "success"]));
    assert_eq!(job["ops"][0]["reason"][0][1], "incident 1");
    assert_eq!(job["ops"][1]["reason"][1][0], "gnt:opcode:repair_command");
    let jobs: Value =
        test::call_and_read_body_json(&app, test::TestRequest::get().uri("/sim/jobs").to_request())
            .await;
    assert_eq!(jobs.as_array().map(Vec::len), Some(1));
    assert_eq!(
        test::call_service(
            &app,
            test::TestRequest::get().uri("/sim/jobs/42").to_request()
        )
        .await
        .status(),
        404
    );

    let repairs: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get()
            .uri("/sim/nodes/node2/repairs")
            .to_request(),
    )
    .await;
    assert_eq!(repairs[0]["command"], "swap-dimm");
    assert_eq!(repairs[0]["input"], "{\"status\":\"live-repair\"}");

    let delete = test::TestRequest::delete()
        .uri("/sim/nodes/node2/tags/maintd:repairready:1")
        .to_request();
    let body: Value = test::call_and_read_body_json(&app, delete).await;
    assert_eq!(body["tags"], json!([]));
    let again = test::TestRequest::delete()
        .uri("/sim/nodes/node2/tags/maintd:repairready:1")
        .to_request();
    assert_eq!(test::call_service(&app, again).await.status(), 404);

    let fault = test::TestRequest::post()
        .uri("/sim/faults")
        .set_payload(r#"{"opcode": "OP_INSTANCE_MIGRATE", "count": 1}"#)
        .to_request();
    assert_eq!(test::call_service(&app, fault).await.status(), 200);
    assert_eq!(sim.lock().pending_faults()["OP_INSTANCE_MIGRATE"], 1);
    let bogus = test::TestRequest::post()
        .uri("/sim/faults")
        .set_payload(r#"{"opcode": "OP_NOPE", "count": 1}"#)
        .to_request();
    assert_eq!(test::call_service(&app, bogus).await.status(), 400);
}

#[actix_rt::test]
async fn hung_jobs_hold_their_nodes_until_released() {
    let sim = handle();
    let app = app!(sim);
    let hang = test::TestRequest::post()
        .uri("/sim/faults")
        .set_payload(r#"{"opcode": "OP_NODE_SET_PARAMS", "hang": true}"#)
        .to_request();
    let body: Value = test::call_and_read_body_json(&app, hang).await;
    assert_eq!(body["hangs"], json!({"OP_NODE_SET_PARAMS": 1}));
    assert_eq!(body["pending"], json!({}));

    let drain = |text: &str| vec![OpBody::drain_node("node2").with_reason(text.into(), 1)];
    let now = sim.now();
    let hung = sim.lock().submit_job(drain("a"), now).expect("accepted");
    let waiting = sim.lock().submit_job(drain("b"), now).expect("accepted");
    // Jobs take no time in this cluster, yet the hung one runs and the other waits.
    let now = sim.now();
    assert_eq!(sim.lock().job_status(hung, now), Some(JobStatus::Running));
    assert_eq!(
        sim.lock().job_status(waiting, now),
        Some(JobStatus::Waiting)
    );
    let faults: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get().uri("/sim/faults").to_request(),
    )
    .await;
    assert_eq!(faults["hung_jobs"], json!([hung]));
    let job: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get()
            .uri(&format!("/sim/jobs/{hung}"))
            .to_request(),
    )
    .await;
    assert_eq!(
        (job["status"].clone(), job["hung"].clone()),
        (json!("running"), json!(true))
    );
    assert_eq!(faults["hangs"], json!({"OP_NODE_SET_PARAMS": 0}));

    let release = test::TestRequest::post()
        .uri("/sim/faults/release")
        .to_request();
    let body: Value = test::call_and_read_body_json(&app, release).await;
    assert_eq!(body["released"], json!([hung]));
    assert_eq!(body["hung_jobs"], json!([]));
    assert_eq!(body["hangs"], json!({}));
    let now = sim.now();
    assert_eq!(sim.lock().job_status(hung, now), Some(JobStatus::Success));
    assert_eq!(
        sim.lock().job_status(waiting, now),
        Some(JobStatus::Success)
    );

    // A failure and a hang can be pending side by side.
    let fail = test::TestRequest::post()
        .uri("/sim/faults")
        .set_payload(r#"{"opcode": "OP_TAGS_SET", "count": 2, "hang": false}"#)
        .to_request();
    let body: Value = test::call_and_read_body_json(&app, fail).await;
    assert_eq!(body["pending"], json!({"OP_TAGS_SET": 2}));
}

#[actix_rt::test]
async fn bad_fault_requests_are_refused_with_a_reason() {
    let sim = handle();
    let app = app!(sim);
    for (payload, why) in [
        ("{", "invalid JSON body"),
        (r#"{"count": 1}"#, "missing field `opcode`"),
        (
            r#"{"opcode": "OP_NOPE", "hang": true}"#,
            "unknown opcode \"OP_NOPE\"",
        ),
        (
            r#"{"opcode": "OP_TAGS_SET", "count": 0}"#,
            "count must be at least 1",
        ),
        (
            r#"{"opcode": "OP_TAGS_SET", "count": -1}"#,
            "invalid JSON body",
        ),
        (
            r#"{"opcode": "OP_TAGS_SET", "hang": "yes"}"#,
            "invalid type",
        ),
        (
            r#"{"opcode": "OP_TAGS_SET", "hangs": true}"#,
            "unknown field `hangs`",
        ),
    ] {
        let request = test::TestRequest::post()
            .uri("/sim/faults")
            .set_payload(payload)
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 400, "{payload}");
        let body: Value = test::read_body_json(response).await;
        let error = body["error"].as_str().expect("an error text");
        assert!(error.contains(why), "{payload}: {error}");
    }
    assert!(sim.lock().pending_faults().is_empty());
    assert!(sim.lock().pending_hangs().is_empty());
    // Nothing hangs: a release releases nothing.
    let release = test::TestRequest::post()
        .uri("/sim/faults/release")
        .to_request();
    let body: Value = test::call_and_read_body_json(&app, release).await;
    assert_eq!(body["released"], json!([]));
}

#[actix_rt::test]
async fn master_failover_and_node_membership() {
    let sim = handle();
    let app = app!(sim);
    let failover = test::TestRequest::post()
        .uri("/sim/master")
        .set_payload(r#"{"node": "node2"}"#)
        .to_request();
    assert_eq!(test::call_service(&app, failover).await.status(), 200);
    assert_eq!(sim.lock().master(sim.now()), "node2");
    let unknown = test::TestRequest::post()
        .uri("/sim/master")
        .set_payload(r#"{"node": "node7"}"#)
        .to_request();
    assert_eq!(test::call_service(&app, unknown).await.status(), 404);

    let add = test::TestRequest::post()
        .uri("/sim/nodes")
        .set_payload(r#"{"name": "node4"}"#)
        .to_request();
    let response = test::call_service(&app, add).await;
    assert_eq!(response.status(), 201);
    let node: Value = test::read_body_json(response).await;
    assert_eq!(node["primary_instances"], json!([]));
    let duplicate = test::TestRequest::post()
        .uri("/sim/nodes")
        .set_payload(r#"{"name": "node4"}"#)
        .to_request();
    assert_eq!(test::call_service(&app, duplicate).await.status(), 409);

    let busy = test::TestRequest::delete()
        .uri("/sim/nodes/node1")
        .to_request();
    assert_eq!(test::call_service(&app, busy).await.status(), 409);
    let remove = test::TestRequest::delete()
        .uri("/sim/nodes/node4")
        .to_request();
    assert_eq!(test::call_service(&app, remove).await.status(), 200);
    let gone = test::TestRequest::delete()
        .uri("/sim/nodes/node4")
        .to_request();
    assert_eq!(test::call_service(&app, gone).await.status(), 404);
}

/// `maintd sim --luxi-socket PATH` serves through `serve::serve`: it never deletes a
/// file that is not a stale socket.
#[actix_rt::test]
async fn the_luxi_socket_path_is_replaced_only_when_stale() {
    use maintd_actors::sim::serve;
    let dir = tempfile::tempdir().unwrap();

    let file = dir.path().join("data");
    std::fs::write(&file, "precious").unwrap();
    let e = serve::serve(handle(), file.clone(), "127.0.0.1:0").unwrap_err();
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");

    let live = dir.path().join("live");
    let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let e = serve::serve(handle(), live.clone(), "127.0.0.1:0").unwrap_err();
    assert!(e.to_string().contains("live socket"), "{e}");

    let stale = dir.path().join("stale");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let endpoints = serve::serve(handle(), stale.clone(), "127.0.0.1:0").unwrap();
    assert_eq!(endpoints.luxi_socket, stale);
    // The new simulator answers there now.
    tokio::net::UnixStream::connect(&stale).await.unwrap();
    // And a second simulator on the same path is refused while it runs.
    let e = serve::serve(handle(), stale, "127.0.0.1:0").unwrap_err();
    assert!(e.to_string().contains("live socket"), "{e}");
}
