//! The Luxi client against a scripted fake luxid on a Unix socket.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use maintd::{
    backend::{
        luxi::{LuxiBackend, LuxiClient, LuxiConfig, LuxiError},
        BackendError, CancelOutcome, ClusterBackend,
    },
    model::{
        cluster::DiskTemplate,
        job::{JobId, JobStatus},
        opcode::OpBody,
    },
    protocol::luxi::END_OF_MESSAGE,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
};

/// What the fake luxid does with one request.
enum Reply {
    /// `{"success": true, "result": value}`.
    Ok(Value),
    /// `{"success": false, "result": value}`.
    Fail(Value),
    /// These bytes, then the terminator.
    Raw(Vec<u8>),
    /// A success answer dribbled out a few bytes per write.
    Split(Value),
    /// These bytes, no terminator, then close.
    HangUpMidway(Vec<u8>),
    /// A success answer, then close the connection.
    OkThenClose(Value),
    /// Never answer.
    Silence,
}

type Script = Arc<dyn Fn(&str, &Value) -> Reply + Send + Sync>;

/// A fake luxid: records requests and counts connections.
struct FakeLuxid {
    _dir: tempfile::TempDir,
    path: PathBuf,
    requests: Arc<Mutex<Vec<Value>>>,
    connections: Arc<AtomicUsize>,
}

impl FakeLuxid {
    fn start(script: impl Fn(&str, &Value) -> Reply + Send + Sync + 'static) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ganeti-query");
        let listener = UnixListener::bind(&path).expect("bind");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let script: Script = Arc::new(script);
        let (log, count) = (requests.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_connection(stream, script.clone(), log.clone()));
            }
        });
        FakeLuxid {
            _dir: dir,
            path,
            requests,
            connections,
        }
    }

    fn config(&self) -> LuxiConfig {
        let mut config = LuxiConfig::new(&self.path);
        config.request_timeout = Duration::from_secs(60);
        config.max_response_bytes = 64 * 1024;
        config
    }

    fn client(&self) -> LuxiClient {
        LuxiClient::new(self.config())
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("log").clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve_connection(mut stream: UnixStream, script: Script, log: Arc<Mutex<Vec<Value>>>) {
    let mut buffer = Vec::new();
    loop {
        let request = loop {
            if let Some(end) = buffer.iter().position(|&b| b == END_OF_MESSAGE) {
                let message: Vec<u8> = buffer.drain(..=end).collect();
                break message;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let request: Value =
            serde_json::from_slice(&request[..request.len() - 1]).expect("request is JSON");
        log.lock().expect("log").push(request.clone());
        let method = request["method"].as_str().unwrap_or_default().to_owned();
        let frame = |v: Value| {
            let mut bytes = serde_json::to_vec(&v).expect("encode");
            bytes.push(END_OF_MESSAGE);
            bytes
        };
        match script(&method, &request["args"]) {
            Reply::Ok(result) => {
                let bytes = frame(json!({"success": true, "result": result}));
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Fail(result) => {
                let bytes = frame(json!({"success": false, "result": result}));
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Raw(mut bytes) => {
                bytes.push(END_OF_MESSAGE);
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Split(result) => {
                let bytes = frame(json!({"success": true, "result": result}));
                for piece in bytes.chunks(3) {
                    if stream.write_all(piece).await.is_err() {
                        return;
                    }
                    // Let the client run, so that it sees the pieces in separate reads.
                    tokio::task::yield_now().await;
                }
            }
            Reply::HangUpMidway(bytes) => {
                let _ = stream.write_all(&bytes).await;
                return;
            }
            Reply::OkThenClose(result) => {
                let bytes = frame(json!({"success": true, "result": result}));
                let _ = stream.write_all(&bytes).await;
                return;
            }
            Reply::Silence => std::future::pending::<()>().await,
        }
    }
}

#[tokio::test]
async fn round_trip_reuses_one_connection() {
    let luxid = FakeLuxid::start(|method, args| match method {
        "QueryConfigValues" => Reply::Ok(json!(["node1.example.com"])),
        _ => Reply::Ok(json!({"echo": args})),
    });
    let client = luxid.client();
    let answer = client.call("Ping", json!([1, "two"])).await.expect("call");
    assert_eq!(answer, json!({"echo": [1, "two"]}));
    let master = LuxiBackend::with_client(client.clone())
        .master_node()
        .await
        .expect("master");
    assert_eq!(master, "node1.example.com");
    assert_eq!(luxid.connections(), 1);
    let requests = luxid.requests();
    assert_eq!(
        requests[0],
        json!({"method": "Ping", "args": [1, "two"], "version": 3000000})
    );
    assert_eq!(requests[1]["args"], json!([["master_node"]]));
}

#[tokio::test]
async fn both_error_shapes_are_typed() {
    let luxid = FakeLuxid::start(|method, _| match method {
        "NoSuchMethod" => Reply::Fail(json!(
            "Failed to parse request: Unable to parse LUXI request method"
        )),
        _ => Reply::Fail(json!([
            "OpPrereqError",
            ["Sync queries are not allowed", "wrong_input"]
        ])),
    });
    let client = luxid.client();
    let rejected = client.call("NoSuchMethod", json!([])).await.unwrap_err();
    assert_eq!(
        rejected,
        LuxiError::RequestRejected(
            "Failed to parse request: Unable to parse LUXI request method".into()
        )
    );
    let raised = client
        .call("QueryNodes", json!([[], ["name"], true]))
        .await
        .unwrap_err();
    match &raised {
        LuxiError::Exception {
            name,
            message,
            args,
        } => {
            assert_eq!(name, "OpPrereqError");
            assert_eq!(message, "Sync queries are not allowed (wrong_input)");
            assert_eq!(args[1], "wrong_input");
        }
        other => panic!("expected an exception, got {other:?}"),
    }
    assert!(matches!(
        BackendError::from(raised),
        BackendError::Refused(_)
    ));
    // Error answers are complete messages: the connection stays usable.
    assert_eq!(luxid.connections(), 1);
}

#[tokio::test]
async fn answer_split_across_reads_is_reassembled() {
    let big: Vec<String> = (0..500).map(|i| format!("tag-{i}")).collect();
    let expected = json!(big);
    let luxid = FakeLuxid::start(move |_, _| Reply::Split(json!(big)));
    let answer = luxid
        .client()
        .call("QueryTags", json!(["cluster", ""]))
        .await;
    assert_eq!(answer, Ok(expected));
}

#[tokio::test]
async fn oversized_answer_is_refused_and_connection_replaced() {
    let luxid = FakeLuxid::start(|method, _| match method {
        "Huge" => Reply::Raw(vec![b' '; 200 * 1024]),
        _ => Reply::Ok(json!(true)),
    });
    let client = luxid.client();
    let error = client.call("Huge", json!([])).await.unwrap_err();
    assert_eq!(error, LuxiError::ResponseTooLarge { limit: 64 * 1024 });
    assert!(matches!(
        BackendError::from(error),
        BackendError::Protocol(_)
    ));
    assert_eq!(client.call("Small", json!([])).await, Ok(json!(true)));
    assert_eq!(luxid.connections(), 2);
}

#[tokio::test]
async fn peer_closing_mid_reply_is_transient() {
    let luxid = FakeLuxid::start(|_, _| Reply::HangUpMidway(br#"{"success": tr"#.to_vec()));
    let error = luxid
        .client()
        .call("SubmitManyJobs", json!([[]]))
        .await
        .unwrap_err();
    assert_eq!(error, LuxiError::ConnectionClosed { received: 14 });
    assert!(BackendError::from(error).is_retryable());
}

#[tokio::test]
async fn garbage_answer_is_a_protocol_error() {
    let luxid = FakeLuxid::start(|_, _| Reply::Raw(b"<html>".to_vec()));
    let error = luxid.client().call("Query", json!([])).await.unwrap_err();
    assert!(matches!(error, LuxiError::Malformed(_)));
    assert!(matches!(
        BackendError::from(error),
        BackendError::Protocol(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn silent_peer_times_out() {
    let luxid = FakeLuxid::start(|_, _| Reply::Silence);
    let mut config = luxid.config();
    config.request_timeout = Duration::from_secs(5);
    let error = LuxiClient::new(config)
        .call("QueryJobs", json!([[1], ["status"]]))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        LuxiError::Timeout {
            phase: "request",
            after: Duration::from_secs(5)
        }
    );
    assert!(BackendError::from(error).is_retryable());
}

#[tokio::test]
async fn closed_idle_connection_is_replaced() {
    let luxid = FakeLuxid::start(|_, _| Reply::OkThenClose(json!("fine")));
    let client = luxid.client();
    for _ in 0..3 {
        assert_eq!(
            client.call("QueryTags", json!(["cluster", ""])).await,
            Ok(json!("fine"))
        );
    }
    // Submissions are not resent either: the stale connection is noticed before sending.
    assert_eq!(
        client.call("SubmitManyJobs", json!([[]])).await,
        Ok(json!("fine"))
    );
    assert_eq!(luxid.connections(), 4);
    assert_eq!(luxid.requests().len(), 4);
}

#[tokio::test]
async fn missing_socket_is_transient() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = LuxiClient::new(LuxiConfig::new(dir.path().join("nobody-here")));
    let error = client.call("QueryJobs", json!([])).await.unwrap_err();
    assert!(matches!(error, LuxiError::Connect { .. }), "{error:?}");
    assert!(BackendError::from(error).is_retryable());
}

fn cell(value: Value) -> Value {
    json!([0, value])
}

fn node_row(name: &str, offline: bool) -> Value {
    let live = |v: Value| if offline { json!([4, null]) } else { cell(v) };
    json!([
        cell(json!(name)),
        cell(json!(format!("uuid-{name}"))),
        cell(json!("group-uuid")),
        live(json!(16384)),
        live(json!(8192)),
        live(json!(500000)),
        live(json!(250000)),
        live(json!(16)),
        cell(json!(offline)),
        cell(json!(false)),
        cell(json!(true)),
        cell(json!(["rack:a"])),
        live(json!(1024)),
        live(json!(1)),
        cell(json!(2)),
    ])
}

#[tokio::test]
async fn backend_decodes_a_snapshot() {
    let luxid = FakeLuxid::start(|method, args| match (method, args[0].as_str()) {
        ("Query", Some("node")) => Reply::Ok(json!({"fields": [], "data": [
            node_row("node1", false), node_row("node2", true)
        ]})),
        ("Query", Some("instance")) => Reply::Ok(json!({"fields": [], "data": [[
            cell(json!("inst1")), cell(json!("i-uuid")), cell(json!("node1")),
            cell(json!(["node2"])), cell(json!("drbd")), cell(json!(2048)),
            cell(json!(10240)), cell(json!(2)), cell(json!("running")), cell(json!([])),
            cell(json!(false)), cell(json!(3))
        ]]})),
        ("Query", Some("group")) => Reply::Ok(json!({"fields": [], "data": [[
            cell(json!("default")), cell(json!("group-uuid")), [1, null],
            cell(json!(["ganeti:watcher:autorepair:failover"])),
            cell(json!({"vcpu-ratio": 2.5, "spindle-ratio": 16}))
        ]]})),
        ("QueryTags", _) => Reply::Ok(json!(["maintd:enabled"])),
        ("QueryConfigValues", _) => Reply::Ok(json!(["node1"])),
        _ => Reply::Fail(json!("unexpected")),
    });
    let snapshot = LuxiBackend::new(luxid.config())
        .snapshot()
        .await
        .expect("snapshot");
    assert_eq!(snapshot.master, "node1");
    assert!(snapshot.cluster_tags.contains("maintd:enabled"));
    assert_eq!(snapshot.nodes.len(), 2);
    assert_eq!(snapshot.nodes[0].memory_free, 8192);
    assert_eq!(snapshot.nodes[0].cpus, 16);
    assert!(snapshot.nodes[1].offline);
    assert_eq!(snapshot.nodes[1].memory_free, 0);
    assert_eq!(snapshot.instances[0].disk_template, DiskTemplate::Drbd);
    assert_eq!(snapshot.instances[0].secondaries, vec!["node2".to_owned()]);
    assert_eq!(snapshot.groups[0].alloc_policy, "preferred");
    // The fields htools needs.
    assert_eq!(
        (snapshot.nodes[0].memory_node, snapshot.nodes[0].spindles),
        (1024, 2)
    );
    assert_eq!(snapshot.nodes[1].memory_node, 0);
    assert!(!snapshot.instances[0].auto_balance);
    assert_eq!(snapshot.instances[0].spindle_use, 3);
    assert!(snapshot.groups[0]
        .tags
        .contains("ganeti:watcher:autorepair:failover"));
    assert_eq!(snapshot.groups[0].vcpu_ratio, Some(2.5));
    assert_eq!(snapshot.groups[0].spindle_ratio, Some(16.0));
    let node_query = &luxid.requests()[0]["args"];
    assert_eq!(node_query[0], "node");
    assert_eq!(node_query[1][2], "group.uuid");
    assert_eq!(node_query[2], Value::Null);
}

#[tokio::test]
async fn online_nodes_come_from_a_query_of_the_nodes_alone() {
    let luxid = FakeLuxid::start(|method, args| match (method, args[0].as_str()) {
        ("Query", Some("node")) => Reply::Ok(json!({"fields": [], "data": [
            [cell(json!("node1")), cell(json!(false))],
            [cell(json!("node2")), cell(json!(true))],
            [cell(json!("node3")), cell(json!(false))]
        ]})),
        _ => Reply::Fail(json!("unexpected")),
    });
    let nodes = LuxiBackend::new(luxid.config())
        .online_nodes()
        .await
        .expect("online nodes");
    assert_eq!(nodes, ["node1", "node3"]);
    let requests = luxid.requests();
    assert_eq!(requests.len(), 1, "no instance query: {requests:?}");
    assert_eq!(requests[0]["args"][1], json!(["name", "offline"]));
}

#[tokio::test]
async fn backend_submits_and_follows_jobs() {
    let luxid = FakeLuxid::start(|method, args| match method {
        "SubmitManyJobs" => Reply::Ok(json!([[true, 31], [false, "Queue drained"]])),
        // A lost job makes the whole batch fail; single lookups tell which one.
        "QueryJobs" if args[0].as_array().is_some_and(|ids| ids.len() > 1) => {
            Reply::Fail(json!(["JobLost", ["job 99 lost"]]))
        }
        "QueryJobs" if args[0] == json!([31]) => Reply::Ok(json!([["running"]])),
        "QueryJobs" if args[0] == json!([32]) => Reply::Ok(json!([null])),
        "QueryJobs" if args[0] == json!([99]) => Reply::Fail(json!(["JobLost", ["gone"]])),
        "QueryJobs" => Reply::Ok(json!([
            [40, [{"OP_ID": "OP_TEST_DELAY", "reason": [["gnt:daemon:maintd", "incident 7a", 1]]}]],
            null,
            [41, [{"OP_ID": "OP_TEST_DELAY", "reason": [["gnt:user", "other", 1]]},
                  {"OP_ID": "OP_TEST_DELAY", "reason": [["x", "incident 7a step 2", 1]]}]],
            [42, [{"OP_ID": "OP_TEST_DELAY"}]]
        ])),
        _ => Reply::Fail(json!("unexpected")),
    });
    let backend = LuxiBackend::new(luxid.config());
    let op = OpBody::drain_node("node3").with_reason("incident 7a".into(), 5);
    let submitted = backend
        .submit_jobs(vec![vec![op.clone()], vec![op]])
        .await
        .expect("submit");
    assert_eq!(submitted, vec![Ok(JobId(31)), Err("Queue drained".into())]);
    assert_eq!(
        luxid.requests()[0]["args"][0][0][0]["OP_ID"],
        "OP_NODE_SET_PARAMS"
    );

    let statuses = backend
        .job_statuses(vec![JobId(31), JobId(32), JobId(99)])
        .await
        .expect("statuses");
    assert_eq!(statuses, vec![Some(JobStatus::Running), None, None]);

    let found = backend
        .find_jobs_by_reason("incident 7a".into())
        .await
        .expect("find");
    assert_eq!(found, vec![JobId(40), JobId(41)]);
    assert!(backend
        .submit_jobs(Vec::new())
        .await
        .expect("empty")
        .is_empty());
}

#[tokio::test]
async fn cancel_sends_the_id_without_kill_and_reads_both_answers() {
    let luxid = FakeLuxid::start(|method, args| match (method, args[0].as_u64()) {
        ("CancelJob", Some(5)) => Reply::Ok(json!([true, "Job successfully cancelled"])),
        ("CancelJob", Some(6)) => Reply::Ok(json!([
            false,
            "Job no longer waiting, can't cancel (informed it anyway)"
        ])),
        ("CancelJob", Some(7)) => Reply::Ok(json!({"canceled": true})),
        _ => Reply::Fail(json!(["GenericError", ["Can't load job file"]])),
    });
    let backend = LuxiBackend::new(luxid.config());
    assert_eq!(
        backend.cancel_job(JobId(5)).await,
        Ok(CancelOutcome::Canceled)
    );
    assert_eq!(
        backend.cancel_job(JobId(6)).await,
        Ok(CancelOutcome::NotCancelable(
            "Job no longer waiting, can't cancel (informed it anyway)".into()
        ))
    );
    assert!(matches!(
        backend.cancel_job(JobId(7)).await,
        Err(BackendError::Protocol(_))
    ));
    assert!(matches!(
        backend.cancel_job(JobId(8)).await,
        Err(BackendError::Refused(why)) if why.contains("Can't load job file")
    ));
    // Never `kill = true`: a running job must not be killed midway.
    let requests = luxid.requests();
    assert_eq!(requests[0]["method"], "CancelJob");
    assert_eq!(requests[0]["args"], json!([5, false]));
}

#[tokio::test]
async fn backend_reports_refusals_and_bad_shapes() {
    let luxid = FakeLuxid::start(|method, _| match method {
        "SubmitManyJobs" => Reply::Fail(json!(["GenericError", ["Queue drained"]])),
        "QueryJobs" => Reply::Ok(json!([["exploded"]])),
        _ => Reply::Ok(json!(42)),
    });
    let backend = LuxiBackend::new(luxid.config());
    let op = OpBody::drain_node("node3").with_reason("x".into(), 5);
    assert_eq!(
        backend.submit_jobs(vec![vec![op]]).await,
        Err(BackendError::Refused(
            "luxid raised GenericError: Queue drained".into()
        ))
    );
    assert!(matches!(
        backend.job_statuses(vec![JobId(1)]).await,
        Err(BackendError::Protocol(_))
    ));
    assert!(matches!(
        backend.master_node().await,
        Err(BackendError::Protocol(_))
    ));
}

// ---------------------------------------------------------------------------------------
// LuxiBackend ↔ luxi_server ↔ SimCluster

mod against_the_simulator {
    use std::time::Duration;

    use maintd::{
        backend::{
            luxi::{LuxiBackend, LuxiClient, LuxiConfig, LuxiError},
            CancelOutcome, ClusterBackend,
        },
        clock::Clock,
        model::{
            job::{JobId, JobStatus},
            opcode::OpBody,
        },
        protocol::luxi::END_OF_MESSAGE,
        sim::{luxi_server, SimHandle, SimSpec},
    };
    use serde_json::{json, Value};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{UnixListener, UnixStream},
        sync::oneshot,
        task::LocalSet,
    };

    struct SimLuxid {
        _dir: tempfile::TempDir,
        config: LuxiConfig,
        sim: SimHandle,
        stop: Option<oneshot::Sender<()>>,
        server: tokio::task::JoinHandle<()>,
    }

    /// Serve a generated cluster on a socket in a temporary directory. Call inside a LocalSet.
    fn start(max_request_bytes: usize) -> SimLuxid {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ganeti-query");
        let listener = UnixListener::bind(&path).expect("bind");
        let sim = SimHandle::generate(&SimSpec::default(), Clock::starting_at(1_700_000_000.0));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::task::spawn_local(luxi_server::serve_with_limit(
            listener,
            sim.clone(),
            async move {
                let _ = stopped.await;
            },
            max_request_bytes,
        ));
        let mut config = LuxiConfig::new(path);
        config.request_timeout = Duration::from_secs(120);
        SimLuxid {
            _dir: dir,
            config,
            sim,
            stop: Some(stop),
            server,
        }
    }

    impl SimLuxid {
        async fn shut_down(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            (&mut self.server).await.expect("server task");
        }
    }

    /// Wait for the job like the 2.17 maintd: `WaitForJobChange` on `status` until final.
    async fn wait_until_final(client: &LuxiClient, job: JobId) -> (JobStatus, usize) {
        let mut previous = Value::Null;
        let mut calls = 0;
        loop {
            calls += 1;
            let answer = client
                .call(
                    "WaitForJobChange",
                    json!([job, ["status"], previous, 0, 30]),
                )
                .await
                .expect("WaitForJobChange");
            let values = answer[0].clone();
            let status: JobStatus = serde_json::from_value(values[0].clone()).expect("status");
            if status.is_finalized() {
                return (status, calls);
            }
            previous = values;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn job_round_trip() {
        LocalSet::new()
            .run_until(async {
                let luxid = start(luxi_server::DEFAULT_MAX_REQUEST_BYTES);
                let backend = LuxiBackend::new(luxid.config.clone());
                let before = backend.snapshot().await.expect("snapshot");
                assert_eq!(before.master, "node1");
                assert_eq!(before.nodes.len(), 4);
                assert!(!before.nodes[1].drained);
                assert_eq!(backend.master_node().await.expect("master"), "node1");

                let marker = "round-trip marker 42";
                let job = vec![
                    OpBody::tag_node("node2", "maintd:round-trip")
                        .with_reason(format!("{marker}: tag"), 1),
                    OpBody::drain_node("node2").with_reason(format!("{marker}: drain"), 1),
                ];
                let submitted = backend.submit_jobs(vec![job]).await.expect("submit");
                let id = match submitted.as_slice() {
                    [Ok(id)] => *id,
                    other => panic!("submission failed: {other:?}"),
                };
                let (status, calls) = wait_until_final(backend.client(), id).await;
                assert_eq!(status, JobStatus::Success);
                // The server waited instead of answering each call at once.
                assert!(calls <= 4, "{calls} WaitForJobChange calls");

                assert_eq!(
                    backend
                        .job_statuses(vec![id, JobId(9999)])
                        .await
                        .expect("statuses"),
                    vec![Some(JobStatus::Success), None]
                );
                let after = backend.snapshot().await.expect("snapshot");
                let node2 = after.node("node2").expect("node2");
                assert!(node2.drained);
                assert!(node2.tags.contains("maintd:round-trip"));
                assert_eq!(
                    backend
                        .find_jobs_by_reason(marker.into())
                        .await
                        .expect("find"),
                    vec![id]
                );
                assert!(backend
                    .find_jobs_by_reason("no such marker".into())
                    .await
                    .expect("find")
                    .is_empty());
                luxid.shut_down().await;
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_unchanged_job_times_out_with_current_values() {
        LocalSet::new()
            .run_until(async {
                let luxid = start(luxi_server::DEFAULT_MAX_REQUEST_BYTES);
                let client = LuxiClient::new(luxid.config.clone());
                let now = luxid.sim.now();
                luxid.sim.lock().set_job_seconds(3600.0, now);
                let slow = vec![OpBody::TestDelay {
                    duration: 1.0,
                    on_master: true,
                }
                .with_reason("slow".into(), 1)];
                let backend = LuxiBackend::with_client(client.clone());
                let id = match backend
                    .submit_jobs(vec![slow])
                    .await
                    .expect("submit")
                    .as_slice()
                {
                    [Ok(id)] => *id,
                    other => panic!("submission failed: {other:?}"),
                };
                let first = client
                    .call("WaitForJobChange", json!([id, ["status"], null, 0, 5]))
                    .await
                    .expect("first wait");
                let started = tokio::time::Instant::now();
                let second = client
                    .call("WaitForJobChange", json!([id, ["status"], first[0], 0, 5]))
                    .await
                    .expect("second wait");
                assert_eq!(second[0], first[0]);
                assert!(started.elapsed() >= Duration::from_secs(5));
                let lost = client
                    .call("WaitForJobChange", json!([424242, ["status"], null, 0, 5]))
                    .await
                    .unwrap_err();
                assert_eq!(lost.exception_name(), Some("JobLost"));
                luxid.shut_down().await;
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_job_over_the_socket() {
        LocalSet::new()
            .run_until(async {
                let luxid = start(luxi_server::DEFAULT_MAX_REQUEST_BYTES);
                let now = luxid.sim.now();
                luxid.sim.lock().set_job_seconds(10.0, now);
                luxid.sim.lock().inject_hang("OP_NODE_SET_PARAMS", 1);
                let backend = LuxiBackend::new(luxid.config.clone());
                let drain =
                    |text: &str| vec![OpBody::drain_node("node2").with_reason(text.to_owned(), 1)];
                let submitted = backend
                    .submit_jobs(vec![drain("hangs"), drain("waits"), drain("also waits")])
                    .await
                    .expect("submit");
                let [Ok(hung), Ok(waiting), Ok(other)] = submitted.as_slice() else {
                    panic!("submission failed: {submitted:?}");
                };
                tokio::time::advance(Duration::from_secs(3600)).await;

                // The running job stays; the waiting one is canceled and frees its place.
                assert_eq!(
                    backend.cancel_job(*hung).await,
                    Ok(CancelOutcome::NotCancelable(
                        "Job no longer waiting, can't cancel (informed it anyway)".into()
                    ))
                );
                assert_eq!(
                    backend.cancel_job(*waiting).await,
                    Ok(CancelOutcome::Canceled)
                );
                assert_eq!(
                    backend.cancel_job(*waiting).await,
                    Ok(CancelOutcome::NotCancelable(format!(
                        "Job {waiting} not found in queue"
                    )))
                );
                assert_eq!(
                    backend
                        .job_statuses(vec![*hung, *waiting, *other])
                        .await
                        .expect("statuses"),
                    vec![
                        Some(JobStatus::Running),
                        Some(JobStatus::Canceled),
                        Some(JobStatus::Waiting)
                    ]
                );
                // Once released, the hung job ends and the remaining one runs.
                let now = luxid.sim.now();
                assert_eq!(luxid.sim.lock().release_hung_jobs(now), vec![*hung]);
                tokio::time::advance(Duration::from_secs(10)).await;
                assert_eq!(
                    backend
                        .job_statuses(vec![*hung, *other])
                        .await
                        .expect("statuses"),
                    vec![Some(JobStatus::Success), Some(JobStatus::Success)]
                );
                assert_eq!(
                    backend.cancel_job(JobId(4242)).await,
                    Ok(CancelOutcome::NotCancelable(
                        "Job 4242 not found in queue".into()
                    ))
                );

                // The raw exchange: `[id]` alone is accepted, a bad id is a parse error.
                let client = backend.client();
                let answer = client.call("CancelJob", json!([*other])).await;
                assert_eq!(
                    answer,
                    Ok(json!([false, format!("Job {other} not found in queue")]))
                );
                let rejected = client.call("CancelJob", json!(["x"])).await.unwrap_err();
                assert!(
                    matches!(rejected, LuxiError::RequestRejected(_)),
                    "{rejected:?}"
                );
                luxid.shut_down().await;
            })
            .await;
    }

    #[tokio::test]
    async fn oversized_request_is_answered_and_closed() {
        LocalSet::new()
            .run_until(async {
                let luxid = start(1024);
                let mut stream = UnixStream::connect(&luxid.config.socket_path)
                    .await
                    .expect("connect");
                let huge = json!({"method": "QueryTags", "args": ["cluster", "x".repeat(4096)]});
                let mut bytes = huge.to_string().into_bytes();
                bytes.push(END_OF_MESSAGE);
                // The server may close before reading everything; a failed write is fine.
                let _ = stream.write_all(&bytes).await;
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer).await;
                assert_eq!(answer.last(), Some(&END_OF_MESSAGE));
                let answer: Value =
                    serde_json::from_slice(&answer[..answer.len() - 1]).expect("JSON");
                assert_eq!(answer["success"], false);
                assert!(answer["result"].as_str().expect("text").contains("exceeds"));

                // Normal requests still work on a new connection, several per connection.
                let client = LuxiClient::new(luxid.config.clone());
                for _ in 0..3 {
                    assert_eq!(
                        client
                            .call("QueryConfigValues", json!([["master_node"]]))
                            .await,
                        Ok(json!(["node1"]))
                    );
                }
                let rejected = client.call("NoSuchMethod", json!([])).await.unwrap_err();
                assert!(
                    matches!(rejected, LuxiError::RequestRejected(_)),
                    "{rejected:?}"
                );
                luxid.shut_down().await;
            })
            .await;
    }
}
