//! The node agent (`maintd agent`) as a separate process on a loopback port: mond-style
//! reports (unsigned and signed), the diagnose whitelist, and signed repair requests
//! (authentication, freshness, idempotence, persistence across restarts), and the copy
//! of maintd's state the agent keeps for the master (with maintd's client).
//!
//! The whitelist checks need root-owned files: these tests run as root (as CI does).
//! Every wait polls the agent's HTTP API with a deadline.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    fs,
    os::unix::fs::{chown, PermissionsExt},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use maintd::{
    agent::replica::{MAX_PUSH_BYTES, REPLICA_FILE},
    backend::replica::{majority, newest, PushAck, ReplicaClient, ReplicaError},
    signing::{sign, verify, HmacKey, SignedMessage},
};
use serde_json::{json, Value};

mod support;
use support::*;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef01234567\n";
const NODE: &str = "node1.example.com";

fn key() -> HmacKey {
    HmacKey::from_bytes(KEY.to_vec()).unwrap()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A test's directories: whitelists (root-owned, 0755), state, key.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        for list in ["diagnose", "repair"] {
            let path = dir.path().join(list);
            fs::create_dir(&path).unwrap();
            chown(&path, Some(0), Some(0)).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::write(dir.path().join("hmac.key"), KEY).unwrap();
        Node { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A root-owned script in a whitelist directory.
    fn script(&self, list: &str, name: &str, body: &str, mode: u32) {
        let path = self.path(list).join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        chown(&path, Some(0), Some(0)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Start an agent; `signed` chooses whether it gets the key.
    fn agent(&self, name: &str, signed: bool, extra: &[&str], env: &[(&str, String)]) -> Agent {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--node-name".into(),
            NODE.into(),
            "--diagnose-dir".into(),
            path(&self.path("diagnose")),
            "--repair-dir".into(),
            path(&self.path("repair")),
            "--state-dir".into(),
            path(&self.path("state")),
            "--interval".into(),
            "0.5".into(),
            "--hmac-key".into(),
            if signed {
                path(&self.path("hmac.key"))
            } else {
                String::new()
            },
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut proc = Proc::spawn_with_env(name, &args, env, &self.path(&format!("{name}.log")));
        let line = proc.line("listening on http://", within(30));
        Agent {
            addr: line.trim().to_owned(),
            proc,
        }
    }
}

struct Agent {
    addr: String,
    proc: Proc,
}

impl Agent {
    fn get(&self, path: &str) -> (u16, String) {
        http_text(&self.addr, "GET", path, None)
            .unwrap_or_else(|e| panic!("GET {path}: {e}; log:\n{}", self.proc.log_text()))
    }

    fn post(&self, path: &str, body: &str) -> (u16, String) {
        http_text(&self.addr, "POST", path, Some(body))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// The report once the first diagnose has finished (the raw body).
    fn report(&self, query: &str) -> String {
        wait_until(within(30), "the first diagnose report", || {
            match self.get(&format!("/1/report/node/diagnose{query}")) {
                (200, body) => Some(body),
                (503, _) => None,
                other => panic!("report: {other:?}"),
            }
        })
    }

    /// The execution of `incident`, verified and unwrapped, once `done` holds for it.
    fn execution_when(&self, incident: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_until(within(60), "the repair execution", || {
            let (status, body) = self.get(&format!("/1/repair/{incident}?salt=poll-1"));
            assert_eq!(status, 200, "{body}");
            let execution = open(&body, "poll-1");
            done(&execution).then_some(execution)
        })
    }
}

/// Verify a signed answer with the key and the expected salt; its message as JSON.
fn open(body: &str, salt: &str) -> Value {
    let signed: SignedMessage =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not signed ({e}): {body}"));
    verify(&key(), &signed).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(signed.salt, salt);
    serde_json::from_str(&signed.msg).unwrap()
}

fn repair_body(key: &HmacKey, salt: &str, node: &str, incident: &str, command: &str) -> String {
    let msg = json!({"node": node, "incident": incident, "command": command, "input": "{\"status\":\"live-repair\"}"});
    serde_json::to_string(&sign(key, salt, &msg.to_string())).unwrap()
}

fn finished(execution: &Value) -> bool {
    matches!(execution["state"].as_str(), Some("succeeded" | "failed"))
}

#[test]
fn unsigned_report_envelope_and_paths() {
    let node = Node::new();
    node.script(
        "diagnose",
        "hw-check",
        r#"echo '{"status":"evacuate","command":"","details":{"disk":"sda"}}'"#,
        0o755,
    );
    let agent = node.agent("agent", false, &["--diagnose-command", "hw-check"], &[]);
    let body = agent.report("?salt=ignored-without-key");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["name"], "diagnose");
    assert_eq!(report["version"], "B");
    assert_eq!(report["format_version"], 1);
    assert_eq!(report["category"], "node");
    assert_eq!(report["kind"], 1);
    assert_eq!(
        report["data"],
        json!({"status": "evacuate", "command": "", "details": {"disk": "sda"}})
    );
    let timestamp = report["timestamp"].as_i64().unwrap();
    let age_ns = i128::from(now_secs()) * 1_000_000_000 - i128::from(timestamp);
    assert!(age_ns.abs() < 120 * 1_000_000_000, "timestamp {timestamp}");
    // The same object is what maintd's poller parses.
    let parsed = maintd::model::diagnose::parse_report(body.as_bytes(), 65536).unwrap();
    assert_eq!(parsed.action.as_str(), "evacuate");

    assert_eq!(agent.get("/"), (200, "[1]".into()));
    assert_eq!(agent.get("/1"), (200, "null".into()));
    assert_eq!(
        agent.get("/1/list/collectors"),
        (200, r#"[["diagnose","node",1]]"#.into())
    );
    let (status, text) = agent.get("/1/report/default/cpu-avg-load");
    assert_eq!((status, text.trim()), (404, "not found"));
    assert_eq!(agent.post("/1/report/node/diagnose", "").0, 405);
    assert_eq!(agent.get("/1/repair").0, 405);
}

#[test]
fn signed_report_echoes_the_salt() {
    let node = Node::new();
    let agent = node.agent("agent", true, &[], &[]);
    let body = agent.report("?salt=5e0b6f2a-1c1d-4d3e-9a70-3b3f0c2d9e11");
    let report = open(&body, "5e0b6f2a-1c1d-4d3e-9a70-3b3f0c2d9e11");
    assert_eq!(report["name"], "diagnose");
    // No diagnose command: the built-in answer of Ganeti's collector.
    assert_eq!(
        report["data"],
        json!({"status": "Ok", "details": "No file specified for diagnose data collector"})
    );
    // Without a salt, the current time is the salt.
    let (status, body) = agent.get("/1/report/node/diagnose");
    assert_eq!(status, 200);
    let signed: SignedMessage = serde_json::from_str(&body).unwrap();
    verify(&key(), &signed).unwrap();
    let salt: u64 = signed.salt.parse().unwrap();
    assert!(salt.abs_diff(now_secs()) < 120, "{salt}");
    // Salts that could smuggle anything are refused.
    for bad in ["a%20b", "a.b", &"x".repeat(65), ""] {
        let (status, text) = agent.get(&format!("/1/report/node/diagnose?salt={bad}"));
        assert_eq!(status, 400, "{bad:?}: {text}");
        assert!(text.contains("salt"), "{text}");
    }
}

#[test]
fn a_loose_diagnose_script_reports_ok_with_the_reason() {
    let node = Node::new();
    node.script(
        "diagnose",
        "hw-check",
        r#"echo '{"status":"evacuate"}'"#,
        0o777,
    );
    let agent = node.agent("agent", false, &["--diagnose-command", "hw-check"], &[]);
    let report: Value = serde_json::from_str(&agent.report("")).unwrap();
    assert_eq!(report["data"]["status"], "Ok");
    let details = report["data"]["details"].as_str().unwrap();
    assert!(
        details.contains("0777") && details.contains("hw-check"),
        "{details}"
    );
}

#[test]
fn an_unsigned_agent_refuses_repairs() {
    let node = Node::new();
    let ran = node.path("ran");
    node.script("repair", "fix", &format!("touch {}", ran.display()), 0o755);
    let agent = node.agent("agent", false, &[], &[]);
    let incident = "6a0e54a4-8f7e-4b1f-9a8e-0c3e2f0b9d11";
    let body = repair_body(&key(), &now_secs().to_string(), NODE, incident, "fix");
    let (status, text) = agent.post("/1/repair", &body);
    assert_eq!(
        (status, text.trim()),
        (403, "repair requests need the cluster HMAC key")
    );
    assert_eq!(agent.get(&format!("/1/repair/{incident}")).0, 404);
    assert!(!ran.exists());
}

#[test]
fn signed_repairs_run_once_and_survive_restarts() {
    let node = Node::new();
    let log = node.path("repairs.log");
    node.script(
        "repair",
        "fix-raid",
        &format!(
            "{{ cat; echo; }} >> {}; echo repaired; echo 'note on stderr' >&2",
            log.display()
        ),
        0o755,
    );
    node.script("repair", "loose", "echo should not run", 0o775);
    let slow_pid = node.path("slow.pid");
    node.script(
        "repair",
        "slow",
        &format!("echo $$ > {}; exec sleep 30", slow_pid.display()),
        0o755,
    );
    let agent = node.agent("agent", true, &[], &[]);
    let lines = || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    // A signed, fresh request runs the command with the input on stdin.
    let incident = "0b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a10";
    let salt = now_secs().to_string();
    let body = repair_body(&key(), &salt, NODE, incident, "fix-raid");
    let (status, answer) = agent.post("/1/repair", &body);
    assert_eq!(status, 202, "{answer}");
    let queued = open(&answer, &salt);
    assert_eq!(queued["incident"], incident);
    assert_eq!(queued["node"], NODE);
    assert_eq!(queued["command"], "fix-raid");
    assert_eq!(queued["state"], "queued");
    let done = agent.execution_when(incident, finished);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["exit_code"], 0);
    assert_eq!(done["output"], "repaired\nnote on stderr\n");
    assert_eq!(done["message"], Value::Null);
    for field in ["submitted", "started", "finished"] {
        assert!(done[field].as_f64().is_some(), "{field}: {done}");
    }
    assert_eq!(lines(), [r#"{"status":"live-repair"}"#]);

    // Replaying the same request answers the existing execution and runs nothing.
    let (status, answer) = agent.post("/1/repair", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(open(&answer, &salt), done);
    assert_eq!(lines().len(), 1);

    // Refusals: forged, stale, from the future, for another node, not a uuid.
    let other = "1b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a10";
    let mut forged: SignedMessage =
        serde_json::from_str(&repair_body(&key(), &salt, NODE, other, "fix-raid")).unwrap();
    forged.hmac = forged.hmac.chars().rev().collect();
    let (status, text) = agent.post("/1/repair", &serde_json::to_string(&forged).unwrap());
    assert_eq!(status, 403, "{text}");
    let wrong_key = HmacKey::from_bytes(b"not the cluster key\n".to_vec()).unwrap();
    let (status, _) = agent.post(
        "/1/repair",
        &repair_body(&wrong_key, &salt, NODE, other, "fix-raid"),
    );
    assert_eq!(status, 403);
    for old in [now_secs() - 3600, now_secs() + 3600] {
        let (status, text) = agent.post(
            "/1/repair",
            &repair_body(&key(), &old.to_string(), NODE, other, "fix-raid"),
        );
        assert_eq!(status, 403, "{text}");
        assert!(text.starts_with("stale or future request"), "{text}");
    }
    let (status, text) = agent.post(
        "/1/repair",
        &repair_body(&key(), &salt, "node2.example.com", other, "fix-raid"),
    );
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("node2.example.com"), "{text}");
    let (status, text) = agent.post(
        "/1/repair",
        &repair_body(&key(), &salt, NODE, "not-a-uuid", "fix-raid"),
    );
    assert_eq!(status, 400, "{text}");
    assert_eq!(agent.post("/1/repair", "not json").0, 400);
    assert_eq!(agent.get(&format!("/1/repair/{other}")).0, 404);
    assert_eq!(lines().len(), 1, "a refused request ran the command");

    // A command the whitelist refuses fails without running.
    let refused = "2b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a10";
    let (status, _) = agent.post(
        "/1/repair",
        &repair_body(&key(), &salt, NODE, refused, "loose"),
    );
    assert_eq!(status, 202);
    let failed = agent.execution_when(refused, finished);
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["started"], Value::Null);
    assert_eq!(failed["output"], "");
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("0775"), "{message}");

    // A command still running when the agent dies is failed at the restart, not re-run.
    let interrupted = "3b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a10";
    let (status, _) = agent.post(
        "/1/repair",
        &repair_body(&key(), &salt, NODE, interrupted, "slow"),
    );
    assert_eq!(status, 202);
    agent.execution_when(interrupted, |e| e["state"] == "running");
    // "running" is recorded as the command starts; its pid file follows a moment later.
    let pid = wait_until(within(10), "the slow command's pid file", || {
        fs::read_to_string(&slow_pid)
            .ok()
            .filter(|pid| pid.ends_with('\n'))
    });
    let mut agent = agent;
    agent.proc.kill9();
    drop(agent);
    // SIGKILL gave the agent no chance to stop its command: end it here, by its pid.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status();

    let agent = node.agent("agent-2", true, &[], &[]);
    let (status, body) = agent.get(&format!("/1/repair/{incident}?salt=after"));
    assert_eq!(status, 200);
    assert_eq!(open(&body, "after"), done);
    let (_, body) = agent.get(&format!("/1/repair/{refused}?salt=after"));
    assert_eq!(open(&body, "after"), failed);
    let (_, body) = agent.get(&format!("/1/repair/{interrupted}?salt=after"));
    let after = open(&body, "after");
    assert_eq!(after["state"], "failed");
    assert_eq!(after["message"], "agent restarted during execution");
    // And a replay after the restart still runs nothing.
    let (status, _) = agent.post(
        "/1/repair",
        &repair_body(&key(), &salt, NODE, incident, "fix-raid"),
    );
    assert_eq!(status, 200);
    assert_eq!(lines().len(), 1);
}

#[test]
fn a_repair_past_its_time_limit_is_killed() {
    let node = Node::new();
    node.script("repair", "hang", "echo begun; sleep 30", 0o755);
    let agent = node.agent(
        "agent",
        true,
        &[],
        &[("MAINTD__AGENT__REPAIR_TIMEOUT", "1".into())],
    );
    let incident = "4b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a10";
    let salt = now_secs().to_string();
    let (status, _) = agent.post(
        "/1/repair",
        &repair_body(&key(), &salt, NODE, incident, "hang"),
    );
    assert_eq!(status, 202);
    let done = agent.execution_when(incident, finished);
    assert_eq!(done["state"], "failed");
    assert_eq!(done["exit_code"], Value::Null);
    assert_eq!(done["output"], "begun\n");
    let message = done["message"].as_str().unwrap();
    assert!(message.contains("timed out after 1 s"), "{message}");
}

#[test]
fn an_explicit_unreadable_key_stops_the_agent() {
    let node = Node::new();
    let missing = node.path("no-such.key");
    let (status, _, log) = run(
        node.dir.path(),
        "agent",
        &[
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--node-name",
            NODE,
            "--state-dir",
            &path(&node.path("state")),
            "--hmac-key",
            &path(&missing),
        ],
    );
    assert!(!status.success());
    assert!(log.contains("no-such.key"), "{log}");
}

/// Wait (bounded) until process `pid` is gone or a zombie.
fn wait_gone(pid: &str) {
    wait_until(within(10), &format!("process {pid} to end"), || {
        let state = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.chars().next()))
            .flatten();
        matches!(state, None | Some('Z') | Some('X')).then_some(())
    })
}

#[test]
fn sigterm_stops_the_agent_and_its_running_command() {
    let node = Node::new();
    let pid_file = node.path("background.pid");
    node.script(
        "repair",
        "slow",
        &format!(
            "sleep 60 & echo $! > {0}.tmp; mv {0}.tmp {0}; sleep 60",
            pid_file.display()
        ),
        0o755,
    );
    let mut agent = node.agent("agent", true, &[], &[]);
    let incident = "5b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a10";
    let (status, _) = agent.post(
        "/1/repair",
        &repair_body(&key(), &now_secs().to_string(), NODE, incident, "slow"),
    );
    assert_eq!(status, 202);
    wait_until(within(30), "the command to start", || {
        pid_file.exists().then_some(())
    });
    let status = std::process::Command::new("kill")
        .args(["-TERM".to_owned(), agent.proc.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let status = agent.proc.wait_exit(within(30));
    assert_eq!(status.code(), Some(0), "agent after SIGTERM: {status}");
    assert!(agent.proc.log_text().contains("signal received"));
    // The command's whole group went with the agent.
    wait_gone(fs::read_to_string(&pid_file).unwrap().trim());
    drop(agent);

    let agent = node.agent("agent-2", true, &[], &[]);
    let (_, body) = agent.get(&format!("/1/repair/{incident}?salt=x"));
    let after = open(&body, "x");
    assert_eq!(after["state"], "failed");
    assert_eq!(after["message"], "agent restarted during execution");
}

#[test]
fn a_repair_that_leaves_a_process_behind_succeeds_when_it_exits() {
    let node = Node::new();
    let in_group = node.path("in-group.pid");
    let escaped = node.path("escaped.pid");
    // Both background processes inherit the command's stdout and stderr; the second
    // leaves the command's process group (setsid), and the command exits once it has.
    node.script(
        "repair",
        "restart-daemon",
        &format!(
            "sleep 120 & echo $! > {0}; \
             setsid sh -c 'echo $$ > {1}.tmp; mv {1}.tmp {1}; exec sleep 120' & \
             while [ ! -e {1} ]; do sleep 0.01; done; echo restarted; exit 0",
            in_group.display(),
            escaped.display()
        ),
        0o755,
    );
    // A limit far below the background sleeps: a run that waited for them would end
    // as timed out.
    let agent = node.agent(
        "agent",
        true,
        &[],
        &[("MAINTD__AGENT__REPAIR_TIMEOUT", "30".into())],
    );
    let incident = "6b5b7d0e-55a4-4f0b-9a57-7c0e1f7d2a10";
    let (status, _) = agent.post(
        "/1/repair",
        &repair_body(
            &key(),
            &now_secs().to_string(),
            NODE,
            incident,
            "restart-daemon",
        ),
    );
    assert_eq!(status, 202);
    let done = agent.execution_when(incident, finished);
    let escaped_pid = fs::read_to_string(&escaped).unwrap().trim().to_owned();
    // Leave nothing running: the escaped process is out of the agent's reach.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &escaped_pid])
        .status();
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["exit_code"], 0);
    assert_eq!(done["message"], Value::Null);
    let output = done["output"].as_str().unwrap();
    assert!(
        output.starts_with(
            "restarted\nmaintd agent: a process started by the command still held its output \
             open after it exited; it was left running (it left the command's process group)"
        ),
        "{output}"
    );
    // The process that stayed in the group was killed with it.
    wait_gone(fs::read_to_string(&in_group).unwrap().trim());
    wait_gone(&escaped_pid);
}

// ----- the copy of maintd's state -----

fn push_body(key: &HmacKey, salt: &str, serial: u64, state: &Value) -> String {
    let msg = json!({"serial": serial, "master": "node0.example.com", "state": state});
    serde_json::to_string(&sign(key, salt, &msg.to_string())).unwrap()
}

fn replica_client(agent: &Agent) -> ReplicaClient {
    ReplicaClient::new(
        format!("http://{}", agent.addr),
        key(),
        Duration::from_secs(10),
        maintd::clock::Clock::new(),
    )
}

/// Run `work` on a fresh actix system (the client is awc, which needs one).
fn on_actix<T>(work: impl std::future::Future<Output = T>) -> T {
    actix_rt::System::new().block_on(work)
}

#[test]
fn the_agent_keeps_the_newest_signed_copy_of_maintds_state() {
    let node = Node::new();
    let agent = node.agent("agent", true, &[], &[]);
    let state = |n: u64| json!({"incidents": [{"id": n}], "round": {"n": n}, "brakes": []});
    let client = replica_client(&agent);

    // Nothing held yet.
    assert_eq!(on_actix(client.fetch("ignored")), Ok(None));
    let (status, _) = agent.get("/1/maintd-state?salt=x");
    assert_eq!(status, 404);

    // A push is written and acknowledged; older and equal serials change nothing.
    let ack = on_actix(client.push("n1", 5, "node0.example.com", &state(5))).unwrap();
    assert_eq!(
        ack,
        PushAck {
            serial: 5,
            accepted: true
        }
    );
    let ack = on_actix(client.push("n1", 4, "node2.example.com", &state(4))).unwrap();
    assert_eq!(
        ack,
        PushAck {
            serial: 5,
            accepted: false
        }
    );
    assert!(!ack.holds(4));
    let ack = on_actix(client.push("n1", 5, "node0.example.com", &state(5))).unwrap();
    assert!(!ack.accepted && ack.holds(5));
    let held = on_actix(client.fetch("n1")).unwrap().unwrap();
    assert_eq!(
        (held.serial, held.master.as_str(), &held.state),
        (5, "node0.example.com", &state(5))
    );
    assert!((held.received - now_secs() as f64).abs() < 120.0);
    let file = node.path("state").join(REPLICA_FILE);
    let mode = fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // The answer to a GET is signed with the salt asked for.
    let (status, body) = agent.get("/1/maintd-state?salt=fetch-1");
    assert_eq!(status, 200);
    let served = open(&body, "fetch-1");
    assert_eq!(served["serial"], 5);
    assert_eq!(served["state"], state(5));

    // Refusals: forged, wrong key, stale, from the future, unsigned, not a state.
    let salt = now_secs().to_string();
    let mut forged: SignedMessage =
        serde_json::from_str(&push_body(&key(), &salt, 9, &state(9))).unwrap();
    forged.msg = forged.msg.replace("\"serial\":9", "\"serial\":10");
    let put = |body: &str| {
        http_text(&agent.addr, "PUT", "/1/maintd-state", Some(body))
            .unwrap_or_else(|e| panic!("PUT: {e}"))
    };
    let (status, text) = put(&serde_json::to_string(&forged).unwrap());
    assert_eq!(status, 403, "{text}");
    assert!(text.starts_with("bad signature"), "{text}");
    let wrong_key = HmacKey::from_bytes(b"not the cluster key\n".to_vec()).unwrap();
    assert_eq!(put(&push_body(&wrong_key, &salt, 9, &state(9))).0, 403);
    for when in [now_secs() - 3600, now_secs() + 3600] {
        let (status, text) = put(&push_body(&key(), &when.to_string(), 9, &state(9)));
        assert_eq!(status, 403, "{text}");
        assert!(text.starts_with("stale or future request"), "{text}");
    }
    let (status, text) = put(&json!({"serial": 9, "master": "x", "state": {}}).to_string());
    assert_eq!(status, 400, "{text}");
    let (status, text) = put(&push_body(&key(), &salt, 9, &json!([1, 2])));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not a maintd state push"), "{text}");
    assert_eq!(agent.post("/1/maintd-state", "").0, 405);
    // None of them changed the copy.
    assert_eq!(on_actix(client.fetch("n1")).unwrap().unwrap(), held);

    // An answer signed for another request is not believed.
    let replayed = agent.get("/1/maintd-state?salt=fetch-1").1;
    assert!(matches!(
        maintd::backend::replica::open_answer(&key(), replayed.as_bytes(), "fetch-2"),
        Err(ReplicaError::BadAnswer(why)) if why.contains("another request")
    ));

    // The copy survives a restart of the agent, and a newer push still replaces it.
    drop(agent);
    let agent = node.agent("agent-2", true, &[], &[]);
    let client = replica_client(&agent);
    assert_eq!(on_actix(client.fetch("n1")).unwrap().unwrap(), held);
    let ack = on_actix(client.push("n1", 6, "node2.example.com", &state(6))).unwrap();
    assert!(ack.accepted && ack.holds(6));
    let newer = on_actix(client.fetch("n1")).unwrap().unwrap();
    assert_eq!((newer.serial, newer.state), (6, state(6)));
    drop(agent);

    // A corrupt file is moved aside at start: nothing held, the next push taken.
    fs::write(&file, b"{\"serial\": 99, torn").unwrap();
    let agent = node.agent("agent-3", true, &[], &[]);
    let client = replica_client(&agent);
    assert_eq!(on_actix(client.fetch("n1")), Ok(None));
    let aside: Vec<_> = fs::read_dir(node.path("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("{REPLICA_FILE}.corrupt-")))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(agent.proc.log_text().contains("moved aside"));
    let ack = on_actix(client.push("n1", 1, "node0.example.com", &state(1))).unwrap();
    assert!(ack.accepted);

    // The newest of what the candidates hold, and whether enough hold it.
    let fetched = vec![
        ("n1".to_owned(), on_actix(client.fetch("n1"))),
        (
            "gone".to_owned(),
            on_actix(
                ReplicaClient::new(
                    "http://127.0.0.1:1",
                    key(),
                    Duration::from_secs(2),
                    maintd::clock::Clock::new(),
                )
                .fetch("gone"),
            ),
        ),
    ];
    assert!(matches!(fetched[1].1, Err(ReplicaError::Unreachable(_))));
    assert_eq!(newest(Some((0, json!({}))), &fetched).unwrap().serial(), 1);
    assert!(majority(2, 3));
}

#[test]
fn an_agent_without_the_key_neither_takes_nor_serves_the_state() {
    let node = Node::new();
    let agent = node.agent("agent", false, &[], &[]);
    let client = replica_client(&agent);
    let refused = on_actix(client.push("n1", 1, "node0.example.com", &json!({})));
    assert!(
        matches!(&refused, Err(ReplicaError::Refused { status: 403, text }) if text.contains("HMAC key")),
        "{refused:?}"
    );
    assert!(matches!(
        on_actix(client.fetch("n1")),
        Err(ReplicaError::Refused { status: 403, .. })
    ));
    assert!(!node.path("state").join(REPLICA_FILE).exists());
}

/// The agent's app in-process, with the key.
async fn agent_service(
    dir: &std::path::Path,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse,
    Error = actix_web::Error,
> {
    use actix::Actor;
    use maintd::{
        agent::{repair::RepairBook, replica::ReplicaStore, whitelist::Whitelist},
        store::JsonStore,
    };
    use maintd_actors::{
        agent::api::{app, AgentContext},
        agent::diagnose_collector::{CollectorConfig, DiagnoseCollector},
        agent::repair_executor::{RepairConfig, RepairExecutor, EXECUTIONS_FILE},
    };
    let clock = maintd::clock::Clock::new();
    let collector = DiagnoseCollector::new(
        CollectorConfig {
            whitelist: Whitelist::new(dir.join("diagnose")),
            command: String::new(),
            interval: Duration::from_secs(600),
            timeout: Duration::from_secs(600),
        },
        clock,
    )
    .start();
    let repairs = RepairExecutor::new(
        RepairBook::new(10),
        JsonStore::open(&dir.join("state"), EXECUTIONS_FILE).unwrap(),
        RepairConfig {
            whitelist: Whitelist::new(dir.join("repair")),
            timeout: Duration::from_secs(10),
            max_output: 100,
        },
        clock,
    )
    .start();
    let context = AgentContext {
        collector,
        repairs,
        replica: Arc::new(Mutex::new(
            ReplicaStore::open(&dir.join("state"), clock.now()).unwrap(),
        )),
        key: Some(Arc::new(key())),
        node_name: NODE.into(),
        clock,
    };
    actix_web::test::init_service(app(context)).await
}

#[actix_rt::test]
async fn pushes_over_32_mib_are_refused_and_big_ones_taken() {
    use actix_web::test::{call_service, read_body, TestRequest};
    let dir = tempfile::tempdir().unwrap();
    let service = agent_service(dir.path()).await;
    let put = |payload: Vec<u8>| {
        TestRequest::put()
            .uri("/1/maintd-state")
            .set_payload(payload)
            .to_request()
    };
    let response = call_service(&service, put(vec![b' '; MAX_PUSH_BYTES + 1])).await;
    assert_eq!(response.status(), 413);
    // At the limit, the body is read and judged on its content.
    let response = call_service(&service, put(vec![b' '; MAX_PUSH_BYTES])).await;
    assert_eq!(response.status(), 400);
    // A state of several MB (far over the 1 MiB of repair requests) is taken.
    let salt = now_secs().to_string();
    let state = json!({"history": "h".repeat(8 << 20)});
    let body = push_body(&key(), &salt, 3, &state);
    let response = call_service(&service, put(body.into_bytes())).await;
    assert_eq!(response.status(), 200);
    let ack = open(
        std::str::from_utf8(&read_body(response).await).unwrap(),
        &salt,
    );
    assert_eq!(ack, json!({"serial": 3, "accepted": true}));
    let response = call_service(
        &service,
        TestRequest::get()
            .uri("/1/maintd-state?salt=big")
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let held = open(
        std::str::from_utf8(&read_body(response).await).unwrap(),
        "big",
    );
    assert_eq!(held["state"], state);
}
