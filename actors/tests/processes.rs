//! The real `maintd` binary as separate processes: a simulated cluster (`maintd sim
//! --cluster-only`) and daemons (`maintd daemon`) talking to it over its Luxi socket and
//! HTTP, killed with SIGKILL at varied instants; a daemon whose state directory is made
//! read-only underneath it (root only: a bind mount in a mount namespace of the daemon's
//! own; skipped with a printed reason elsewhere); the command-line clients; exit codes.
//!
//! Everything waits by polling a condition with a deadline; children are killed and reaped
//! when their guard drops, so a failing test leaves no process behind (and prints the tail
//! of each child's log).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    collections::BTreeSet,
    net::TcpListener,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

mod support;
use support::*;

// ----- the simulated cluster and daemons -----

/// Eight nodes, 24 instances, quick jobs.
fn start_sim(dir: &Path) -> Sim {
    Sim::start(dir, &SimSpec::new(8, 24))
}

/// The non-master node with the most primaries (then secondaries): (name, primaries, secondaries).
fn busiest_node(sim: &Sim) -> (String, usize, usize) {
    let count = |n: &Value, key: &str| n[key].as_array().map_or(0, Vec::len);
    sim.nodes()
        .iter()
        .filter(|n| n["master"] == false)
        .map(|n| {
            (
                n["name"].as_str().expect("name").to_owned(),
                count(n, "primary_instances"),
                count(n, "secondary_instances"),
            )
        })
        .max_by_key(|(name, p, s)| (*p, *s, std::cmp::Reverse(name.clone())))
        .expect("a non-master node")
}

/// `maintd daemon` on `node` against `sim`, rounds every `round_delay` seconds, with
/// `extra` flags.
fn spawn_daemon(sim: &Sim, dir: &Path, node: &str, round_delay: &str, extra: &[&str]) -> Daemon {
    let spec = DaemonSpec {
        extra_args: extra.iter().map(|a| (*a).to_owned()).collect(),
        ..DaemonSpec::on(node, round_delay)
    };
    Daemon::spawn(sim, dir, &spec)
}

/// When to SIGKILL the running daemon.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Once the queue holds this many of maintd's jobs (likely between submission and
    /// recording the job id, or while the job runs).
    AfterJobs(usize),
    /// This long after the daemon was started (possibly before it serves, or mid-recovery).
    AfterDelay(Duration),
}

/// How many jobs maintd submits to evacuate `node`: drain, one per instance, tag. As
/// hail evacuates, a DRBD primary fails over to its secondary and leaves a secondary
/// behind, moved by a job of its own.
fn expected_evacuation_jobs(sim: &Sim, node: &str) -> usize {
    let count = |key: &str| sim.node(node)[key].as_array().map_or(0, Vec::len);
    let (primaries, secondaries) = (count("primary_instances"), count("secondary_instances"));
    assert!(primaries > 0, "{node} hosts instances");
    let drbd_primaries = sim
        .get("/sim/instances")
        .as_array()
        .expect("instance list")
        .iter()
        .filter(|i| i["primary"] == node && i["disk_template"] == "drbd")
        .count();
    1 + primaries + secondaries + drbd_primaries + 1
}

/// `incident` (as `/1/status` shows it, completed) evacuated `node`: the node is drained,
/// empty and tagged; the queue holds exactly `expected_jobs` of maintd's jobs, all for the
/// incident, all successful, no submission key twice; the incident records exactly them.
fn assert_evacuated_exactly_once(sim: &Sim, node: &str, incident: &Value, expected_jobs: usize) {
    let uuid = incident["uuid"].as_str().expect("uuid").to_owned();
    assert_eq!(incident["repair-status"], "completed", "{incident}");
    // The node is drained, empty and tagged.
    let tag = format!("maintd:repairready:{uuid}");
    assert_eq!(incident["tag"], tag.as_str());
    let after = sim.node(node);
    assert_eq!(after["drained"], true, "{after}");
    assert_eq!(after["primary_instances"], json!([]), "{after}");
    assert_eq!(after["secondary_instances"], json!([]), "{after}");
    assert!(
        after["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .any(|t| *t == tag.as_str()),
        "{after}"
    );

    // One job per submission key: nothing was submitted twice.
    let jobs = sim.maintd_jobs();
    let mut keys = BTreeSet::new();
    for job in &jobs {
        assert_eq!(
            job.texts.len(),
            1,
            "the opcodes of job {} share one reason text: {:?}",
            job.id,
            job.texts
        );
        let text = job.texts.first().expect("a text");
        assert!(
            text.contains(&uuid),
            "job {} serves the incident: {text}",
            job.id
        );
        let key = text
            .split_once("submission ")
            .map(|(_, rest)| rest.trim_end_matches(')'))
            .unwrap_or_else(|| panic!("job {} has no submission key: {text}", job.id));
        assert!(
            keys.insert(key.to_owned()),
            "submission {key} is in the queue twice: {jobs:?}"
        );
        assert_eq!(job.status, "success", "job {}: {text}", job.id);
    }
    assert_eq!(jobs.len(), expected_jobs, "{jobs:?}");

    // The incident knows exactly the jobs maintd has in the queue, each once.
    let recorded: Vec<u64> = incident["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let recorded_set: BTreeSet<u64> = recorded.iter().copied().collect();
    assert_eq!(
        recorded_set.len(),
        recorded.len(),
        "a job recorded twice: {recorded:?}"
    );
    let queued: BTreeSet<u64> = jobs.iter().map(|j| j.id).collect();
    assert_eq!(
        recorded_set, queued,
        "incident jobs vs maintd's jobs in the queue"
    );
}

// ----- the tests -----

#[test]
fn kill_9_at_any_instant_loses_nothing_and_submits_nothing_twice() {
    let begun = Instant::now();
    let deadline = begun + Duration::from_secs(120);
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start_sim(dir.path());
    let (node, _, _) = busiest_node(&sim);
    let expected_jobs = expected_evacuation_jobs(&sim, &node);

    let mut daemon = spawn_daemon(&sim, dir.path(), "node1", "0.3", &[]);
    daemon.wait_serving(deadline);
    sim.report(&node, &json!({"status": "evacuate"}));
    let first = wait_until(deadline, "the incident", || {
        daemon
            .try_incidents()?
            .into_iter()
            .find(|i| i["node"] == node.as_str())
    });
    let uuid = first["uuid"].as_str().expect("uuid").to_owned();

    // Every view of the daemon's state, whichever process serves it: the one incident.
    let check = |daemon: &mut Daemon| -> Option<String> {
        let incidents = daemon.try_incidents()?;
        assert_eq!(incidents.len(), 1, "exactly one incident: {incidents:?}");
        assert_eq!(
            incidents[0]["uuid"],
            uuid.as_str(),
            "the same incident across restarts: {incidents:?}"
        );
        Some(
            incidents[0]["repair-status"]
                .as_str()
                .expect("status")
                .to_owned(),
        )
    };

    // Seeded: the same kill instants every run.
    let mut rng = StdRng::seed_from_u64(0x6d61_696e_7464_0001);
    let plan = [
        Kill::AfterJobs(1),
        Kill::AfterDelay(Duration::from_millis(rng.gen_range(0..1500))),
        Kill::AfterJobs(3),
        Kill::AfterJobs(4),
        Kill::AfterDelay(Duration::from_millis(rng.gen_range(0..1500))),
        Kill::AfterDelay(Duration::from_millis(rng.gen_range(0..300))),
        Kill::AfterJobs(expected_jobs - 2),
        // Right after the tagging job appears: completion is recorded only after a restart.
        Kill::AfterJobs(expected_jobs),
    ];
    let mut kills = Vec::new();
    for kill in plan {
        let completed_first = match kill {
            Kill::AfterJobs(count) => {
                wait_until(deadline, &format!("{count} jobs of maintd"), || {
                    if check(&mut daemon).as_deref() == Some("completed") {
                        return Some(true);
                    }
                    (sim.maintd_jobs().len() >= count).then_some(false)
                })
            }
            Kill::AfterDelay(delay) => loop {
                let elapsed = daemon.started.elapsed();
                if elapsed >= delay {
                    break false;
                }
                if check(&mut daemon).as_deref() == Some("completed") {
                    break true;
                }
                assert!(Instant::now() < deadline, "timed out before killing");
                thread::sleep(POLL.min(delay - elapsed));
            },
        };
        if completed_first {
            break;
        }
        daemon.proc.kill9();
        kills.push((kill, sim.maintd_jobs().len()));
        daemon = spawn_daemon(&sim, dir.path(), "node1", "0.3", &[]);
    }
    wait_until(deadline, "the incident completed", || {
        (check(&mut daemon).as_deref() == Some("completed")).then_some(())
    });
    let incident = daemon.try_incidents().expect("serving").remove(0);
    eprintln!(
        "{} kills (trigger, maintd jobs in the queue at the kill): {kills:?}",
        kills.len()
    );

    assert_evacuated_exactly_once(&sim, &node, &incident, expected_jobs);
    // Which recovery paths the kills exercised (timing-dependent, so only reported).
    let log = daemon.proc.log_text();
    eprintln!(
        "kill -9 test took {:?}; recoveries that adopted a job submitted before the kill: {}, \
         planned jobs dropped as never submitted: {}",
        begun.elapsed(),
        log.matches("adopted jobs submitted before a restart")
            .count(),
        log.matches("never reached the queue").count()
    );
}

/// A taken port stops the daemon, the agent and the simulator at once: exit code 1, one
/// line naming the setting and the address, no panic, and neither maintd's work nor the agent's started
/// before it (the simulator serves its simulated cluster first).
#[test]
fn a_taken_port_exits_1_with_one_line_and_nothing_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port");
    let at = format!("127.0.0.1:{}", taken.local_addr().expect("address").port());
    let port = at
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default();
    let base = dir.path();
    let state = |name: &str| path(&base.join(name));
    let commands: [(&str, &str, Vec<String>); 3] = [
        (
            "daemon",
            "daemon.bind, daemon.port: ",
            clusterless_daemon_args(base, &port, &base.join("daemon")),
        ),
        (
            "agent",
            "agent.listen: ",
            [
                "agent",
                "--listen",
                &at,
                "--node-name",
                "node1",
                "--state-dir",
                &state("agent"),
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        (
            "sim",
            "--listen: ",
            [
                "sim",
                "--listen",
                &at,
                "--sim-listen",
                "127.0.0.1:0",
                "--state-dir",
                &state("sim"),
                "--luxi-socket",
                &state("sim.sock"),
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
    ];
    for (name, setting, args) in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, _, log) = run(base, name, &args);
        assert_eq!(status.code(), Some(1), "{name}: {status}; log:\n{log}");
        let lines: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("cannot listen on"))
            .collect();
        assert_eq!(lines.len(), 1, "{name}: one line names the address: {log}");
        assert!(lines[0].contains(&at), "{name}: {log}");
        assert!(
            lines[0].contains(&format!("{setting}cannot listen on {at}")),
            "{name}: the line names the setting {setting:?}: {log}"
        );
        assert!(!log.contains("panic"), "{name} panicked: {log}");
        for started in ["starting maintenance work", "diagnose result"] {
            assert!(
                !log.contains(started),
                "{name} started before listening ({started:?}): {log}"
            );
        }
    }
    assert!(
        !base.join("daemon").join("state.json").exists(),
        "the daemon wrote no state"
    );
    drop(taken);
}

/// `--log-format json` writes one JSON object per line; with stderr going to the stream
/// that `JOURNAL_STREAM` names (as systemd sets it), text lines carry the journal's
/// priority prefix and no timestamp; a `JOURNAL_STREAM` naming another stream changes
/// nothing.
#[test]
fn log_formats_json_and_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // A daemon without a cluster: it serves, warns that it has no HMAC key, and logs its
    // failing polls until it is killed.
    let run_daemon = |name: &str, extra: &[&str], journal: Option<&str>| {
        let log = dir.path().join(format!("{name}.log"));
        std::fs::write(&log, "").expect("log file");
        let meta = std::fs::metadata(&log).expect("log file");
        let mut args: Vec<String> =
            clusterless_daemon_args(dir.path(), "0", &dir.path().join(name));
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let env: Vec<(&str, String)> = match journal {
            Some("this") => vec![("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))],
            Some(other) => vec![("JOURNAL_STREAM", other.to_owned())],
            None => Vec::new(),
        };
        let mut proc = Proc::spawn_with_env(name, &args, &env, &log);
        proc.line("maintd API:", within(30));
        wait_until(within(30), "a warning and an info line", || {
            let text = proc.log_text();
            (text.contains("WARN") && text.contains("INFO")).then_some(())
        });
        proc.kill9();
        let text = proc.log_text();
        text.lines().map(str::to_owned).collect::<Vec<_>>()
    };

    for line in run_daemon("json", &["--log-format", "json"], None) {
        let object: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(
            object["level"].is_string() && object["fields"].is_object(),
            "{line}"
        );
    }
    let journal = run_daemon("journal", &[], Some("this"));
    for line in &journal {
        assert!(line.starts_with('<'), "a priority: {line}");
    }
    assert!(
        journal.iter().any(|l| l.starts_with("<6> INFO maintd")),
        "{journal:?}"
    );
    assert!(
        journal.iter().any(|l| l.starts_with("<4> WARN maintd")),
        "{journal:?}"
    );
    for line in run_daemon("not-journal", &[], Some("1:2")) {
        assert!(!line.starts_with('<') && line.starts_with("20"), "{line}");
    }
}

/// Key and X.509 version 1 certificate in one PEM file, as Ganeti makes `rapi.pem`.
const RAPI_PEM: &str = include_str!("../../src/backend/testdata/ganeti-v1.pem");

/// Over HTTPS with Ganeti's kind of `rapi.pem` and a users file, through the real
/// clients (which pin the certificate): a cancel without a user gets 401, with a read
/// user 403, with a write user 200; reads stay open; a wrong certificate is refused by
/// the client.
#[test]
fn cancel_over_https_needs_a_write_user() {
    let deadline = within(60);
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("rapi.pem");
    std::fs::write(&pem, RAPI_PEM).expect("pem");
    let sim = start_sim(dir.path());
    let spec = DaemonSpec {
        env: vec![
            ("MAINTD__API__SSL", "true".to_owned()),
            ("MAINTD__API__CERTIFICATE", path(&pem)),
        ],
        ..DaemonSpec::on("node1", "1000")
    };
    let mut daemon = Daemon::spawn(&sim, dir.path(), &spec);
    let api = daemon
        .proc
        .line("maintd API:", deadline)
        .trim_start_matches("https://")
        .to_owned();
    let url = format!("https://{api}");
    let (node, _, _) = busiest_node(&sim);
    sim.report(&node, &json!({"status": "evacuate"}));
    let certificate = path(&pem);
    let client = |name: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--url", &url, "--certificate", &certificate]);
        run(dir.path(), name, &all)
    };
    let uuid = wait_until(deadline, "the incident listed over HTTPS", || {
        let (status, stdout, _) = client("status", &["status", "-o", "uuid", "--no-headers"]);
        status
            .success()
            .then(|| stdout.trim().to_owned())
            .filter(|uuid| !uuid.is_empty())
    });

    let (status, _, stderr) = client("cancel-anonymous", &["cancel", &uuid]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    let reader = dir.path().join("reader-password");
    std::fs::write(&reader, "reader-secret\n").expect("password");
    let (status, _, stderr) = client(
        "cancel-reader",
        &[
            "cancel",
            &uuid,
            "--user",
            "reader",
            "--password-file",
            &path(&reader),
        ],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("403"), "{stderr}");
    let password = path(&api_password_file(dir.path()));
    let (status, stdout, stderr) = client(
        "cancel-writer",
        &[
            "cancel",
            &uuid,
            "--user",
            API_USER,
            "--password-file",
            &password,
        ],
    );
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout, format!("incident {uuid} canceled\n"));
    // The history names the user who canceled.
    let (status, stdout, stderr) = client("info", &["info", &uuid, "--json"]);
    assert!(status.success(), "{status}: {stderr}");
    let detail: Value = serde_json::from_str(&stdout).expect("JSON");
    let canceled_by = detail["history"]
        .as_array()
        .expect("history")
        .iter()
        .find(|entry| entry["event"] == "canceled")
        .map(|entry| entry["by"].clone());
    assert!(
        canceled_by
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|by| by.starts_with(&format!("user {API_USER} (api client 127.0.0.1"))),
        "{detail:#}"
    );

    // A client pinning another certificate does not talk to this maintd.
    let other = dir.path().join("other.pem");
    let made = rcgen::generate_simple_self_signed(vec!["node1".to_owned()]).expect("a certificate");
    std::fs::write(&other, made.cert.pem()).expect("pem");
    let (status, _, stderr) = run(
        dir.path(),
        "status-wrong-certificate",
        &["status", "--url", &url, "--certificate", &path(&other)],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach maintd"), "{stderr}");
}

/// A missing users file or an unusable certificate stops the daemon at start: exit 1,
/// one line naming the setting, no panic.
#[test]
fn a_missing_users_file_or_a_bad_certificate_exits_1_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_pem = dir.path().join("not-a.pem");
    std::fs::write(&not_a_pem, "garbage").expect("file");
    let cases = [
        (
            "missing-users",
            vec![(
                "MAINTD__API__USERS_FILE",
                path(&dir.path().join("no-such-users")),
            )],
            "api.users_file",
        ),
        (
            "bad-certificate",
            vec![
                ("MAINTD__API__SSL", "true".to_owned()),
                ("MAINTD__API__CERTIFICATE", path(&not_a_pem)),
            ],
            "api.certificate",
        ),
    ];
    for (name, env, setting) in cases {
        let args: Vec<String> = clusterless_daemon_args(dir.path(), "0", &dir.path().join(name));
        let mut proc =
            Proc::spawn_with_env(name, &args, &env, &dir.path().join(format!("{name}.log")));
        let status = proc.wait_exit(within(60));
        let log = proc.log_text();
        assert_eq!(status.code(), Some(1), "{name}: {log}");
        let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("maintd: ")).collect();
        assert_eq!(lines.len(), 1, "{name}: {log}");
        assert!(lines[0].contains(setting), "{name}: {log}");
        assert!(
            !log.contains("panic") && !log.contains("starting maintenance work"),
            "{log}"
        );
    }
}

#[test]
fn daemon_exits_11_when_not_master() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start_sim(dir.path());
    assert_eq!(
        sim.nodes()
            .iter()
            .find(|n| n["master"] == true)
            .map(|n| n["name"].clone()),
        Some(json!("node1"))
    );
    let mut daemon = spawn_daemon(&sim, dir.path(), "node2", "0.3", &[]);
    let status = daemon.proc.wait_exit(within(30));
    assert_eq!(status.code(), Some(11), "{status}");
    assert!(
        daemon.proc.log_text().contains("not the master"),
        "{}",
        daemon.proc.log_text()
    );
}

#[test]
fn no_voting_needs_yes_do_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = path(&dir.path().join("state"));
    let missing_socket = path(&dir.path().join("no-such-socket"));
    let (status, stdout, stderr) = run(
        dir.path(),
        "no-voting",
        &[
            "daemon",
            "-f",
            "--no-voting",
            "--node-name",
            "node2",
            "--state-dir",
            &state,
            "--luxi-socket",
            &missing_socket,
            "-p",
            "0",
            "-b",
            "127.0.0.1",
        ],
    );
    assert!(!status.success(), "{status}; stdout {stdout:?}");
    assert!(stderr.contains("--yes-do-it"), "stderr: {stderr:?}");
    assert!(
        !stdout.contains("maintd API:"),
        "nothing started: {stdout:?}"
    );

    // Confirmed, the master check is skipped: node2 is not the master, yet maintd works.
    let sim = start_sim(dir.path());
    let mut daemon = spawn_daemon(
        &sim,
        dir.path(),
        "node2",
        "0.3",
        &["--no-voting", "--yes-do-it"],
    );
    let api = daemon.wait_serving(within(30));
    assert_eq!(http_ok(&api, "GET", "/1/status", None), json!([]));
    assert!(
        daemon.proc.child.try_wait().expect("try_wait").is_none(),
        "still running"
    );
}

#[test]
fn status_and_cancel_commands_talk_to_the_running_daemon() {
    let deadline = within(60);
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start_sim(dir.path());
    let mut daemon = spawn_daemon(&sim, dir.path(), "node1", "1000", &[]);
    let api = daemon.wait_serving(deadline);
    let url = format!("http://{api}");
    let password = path(&api_password_file(dir.path()));
    // Every round persists the state, the first (empty) one too; the next is 1000 s away,
    // so an incident opened now stays noted.
    let state_file = dir.path().join("state").join("state.json");
    wait_until(deadline, "the first round", || {
        state_file.exists().then_some(())
    });

    let (status, stdout, stderr) = run(dir.path(), "status-empty", &["status", "--url", &url]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout, "UUID Node Action Status Age Tag Message\n");

    let (node, _, _) = busiest_node(&sim);
    sim.report(&node, &json!({"status": "evacuate"}));
    let incident = wait_until(deadline, "the incident", || {
        daemon
            .try_incidents()?
            .into_iter()
            .find(|i| i["node"] == node.as_str())
    });
    let uuid = incident["uuid"].as_str().expect("uuid").to_owned();
    assert_eq!(incident["repair-status"], "noted", "{incident}");

    let (status, stdout, stderr) = run(dir.path(), "status", &["status", "--url", &url]);
    assert!(status.success(), "{status}: {stderr}");
    let row = stdout
        .lines()
        .find(|l| l.contains(&uuid))
        .unwrap_or_else(|| panic!("{uuid} not listed: {stdout}"));
    assert!(
        row.contains(&node) && row.contains("evacuate") && row.contains("noted"),
        "{row}"
    );
    // As gnt-* lists: chosen fields, no title line, a separator for scripts.
    let (status, stdout, stderr) = run(
        dir.path(),
        "status-fields",
        &[
            "status",
            "-o",
            "node,status,uuid",
            "--no-headers",
            "--separator",
            "|",
            "--url",
            &url,
        ],
    );
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout, format!("{node}|noted|{uuid}\n"));
    let (status, _, stderr) = run(
        dir.path(),
        "status-bad-field",
        &["status", "-o", "node,colour", "--url", &url],
    );
    assert_eq!(status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("unknown field \"colour\""), "{stderr}");
    let (status, stdout, stderr) = run(dir.path(), "info", &["info", &uuid, "--url", &url]);
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stdout.contains(&uuid) && stdout.contains("History:") && stdout.contains("noted"),
        "{stdout}"
    );
    let (status, stdout, _) = run(
        dir.path(),
        "status-json",
        &["status", "--json", "--url", &url],
    );
    assert!(status.success());
    let listed: Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    assert_eq!(listed[0]["uuid"], uuid.as_str(), "{listed}");

    let (status, stdout, stderr) = run(
        dir.path(),
        "cancel",
        &[
            "cancel",
            &uuid,
            "--url",
            &url,
            "--user",
            API_USER,
            "--password-file",
            &password,
        ],
    );
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout, format!("incident {uuid} canceled\n"));
    let canceled = wait_until(deadline, "the incident canceled", || {
        daemon
            .try_incidents()?
            .into_iter()
            .find(|i| i["uuid"] == uuid.as_str() && i["repair-status"] == "canceled")
    });
    assert_eq!(canceled["jobs"], json!([]), "{canceled}");
    let (status, stdout, _) = run(dir.path(), "status-canceled", &["status", "--url", &url]);
    assert!(status.success());
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(&uuid) && l.contains("canceled")),
        "{stdout}"
    );
    // Canceling again is harmless.
    let (status, _, stderr) = run(
        dir.path(),
        "cancel-again",
        &[
            "cancel",
            &uuid,
            "--url",
            &url,
            "--user",
            API_USER,
            "--password-file",
            &password,
        ],
    );
    assert!(status.success(), "{status}: {stderr}");

    let unknown = "5f0c9a1e-2b3c-4d5e-8f90-a1b2c3d4e5f6";
    let (status, stdout, stderr) = run(
        dir.path(),
        "cancel-unknown",
        &[
            "cancel",
            unknown,
            "--url",
            &url,
            "--user",
            API_USER,
            "--password-file",
            &password,
        ],
    );
    assert!(!status.success(), "{status}; stdout {stdout:?}");
    assert!(
        stderr.contains("404") && stderr.contains(&format!("no incident {unknown}")),
        "stderr: {stderr:?}"
    );
    let (status, _, stderr) = run(
        dir.path(),
        "cancel-garbage",
        &[
            "cancel",
            "not-a-uuid",
            "--url",
            &url,
            "--user",
            API_USER,
            "--password-file",
            &password,
        ],
    );
    assert!(!status.success());
    assert!(
        stderr.contains("400") && stderr.contains("not an incident uuid"),
        "stderr: {stderr:?}"
    );

    // Nobody listens: the client says so and fails.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (status, _, stderr) = run(
        dir.path(),
        "status-unreachable",
        &["status", "--url", &format!("http://{closed}")],
    );
    assert!(!status.success());
    assert!(stderr.contains("cannot reach maintd"), "stderr: {stderr:?}");

    // The incident is kept (still reported) and nothing was ever submitted.
    let incidents = daemon.try_incidents().expect("serving");
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(sim.get("/sim/jobs"), json!([]));
}

/// Send `signal` (a `kill` name such as `TERM`) to the process.
fn signal(proc: &Proc, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), proc.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal}: {status}");
}

#[test]
fn sigterm_and_sigint_stop_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = start_sim(dir.path());
    let mut daemon = spawn_daemon(&sim, dir.path(), "node1", "0.3", &[]);
    daemon.proc.line("maintd API:", within(30));
    signal(&daemon.proc, "INT");
    let status = daemon.proc.wait_exit(within(30));
    assert_eq!(status.code(), Some(0), "daemon after SIGINT: {status}");
    assert!(daemon.proc.log_text().contains("signal received"));

    signal(&sim.proc, "TERM");
    let status = sim.proc.wait_exit(within(30));
    assert_eq!(status.code(), Some(0), "simulator after SIGTERM: {status}");
}

/// `maintd daemon` on `state_dir`, needing no cluster: it must stop before any work.
fn daemon_on_state(dir: &Path, state_dir: &Path) -> (std::process::ExitStatus, String) {
    let socket = path(&dir.join("no-such-socket"));
    let state = path(state_dir);
    let args = [
        "daemon",
        "-f",
        "--no-voting",
        "--yes-do-it",
        "--luxi-socket",
        &socket,
        "--state-dir",
        &state,
        "-b",
        "127.0.0.1",
        "-p",
        "0",
    ];
    let (status, _, log) = run(dir, "daemon", &args);
    (status, log)
}

#[test]
fn an_unusable_state_directory_or_a_corrupt_state_file_stops_the_daemon_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");

    // /proc/self takes no files, even for root.
    let (status, log) = daemon_on_state(dir.path(), Path::new("/proc/self"));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("/proc/self")
            && log.contains("daemon.state_dir")
            && log.contains("--state-dir"),
        "{log}"
    );

    // A corrupt state file: exit 1 naming it and what to do; the file is kept as it was.
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    let file = state_dir.join("state.json");
    std::fs::write(&file, b"{\"incidents\": [tor").unwrap();
    let (status, log) = daemon_on_state(dir.path(), &state_dir);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&path(&file)), "{log}");
    assert!(
        log.contains("maintd state check") && log.contains("maintd state reset"),
        "{log}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"{\"incidents\": [tor");

    // The operator's tools: check names the problem, reset archives the file.
    let state = path(&state_dir);
    let (status, _, log) = run(
        dir.path(),
        "check",
        &["state", "check", "--state-dir", &state],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("not a valid state file"), "{log}");
    let (status, out, log) = run(
        dir.path(),
        "reset",
        &["state", "reset", "--state-dir", &state],
    );
    assert!(status.success(), "{log}");
    assert!(out.contains("archived as"), "{out}");
    // In its place an empty state, newer than any copy kept by the master candidates.
    let empty: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("an empty state")).expect("json");
    assert_eq!(empty["incidents"], serde_json::json!([]), "{empty}");
    assert!(
        empty["serial"].as_u64().unwrap_or(0) > 1_700_000_000_000,
        "{empty}"
    );
    let archived: Vec<_> = std::fs::read_dir(&state_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.reset-"))
        .collect();
    assert_eq!(archived.len(), 1, "{archived:?}");
    let (status, out, log) = run(
        dir.path(),
        "check2",
        &["state", "check", "--state-dir", &state],
    );
    assert!(status.success(), "{log}");
    assert!(
        out.contains("valid") && out.contains("incidents: 0 (0 open)"),
        "{out}"
    );
    let archived = std::fs::read(state_dir.join(&archived[0])).expect("archive");
    assert_eq!(
        archived, b"{\"incidents\": [tor",
        "the archive keeps the file as it was"
    );
}

#[test]
fn a_full_or_closed_log_and_stdout_never_crash_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    /// Kills the daemon however the test ends.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reaped(
        Command::new(BIN)
            .args([
                "daemon",
                "-f",
                "--no-voting",
                "--yes-do-it",
                "-b",
                "127.0.0.1",
            ])
            .args(["-p", &port.to_string(), "--state-dir", &path(dir.path())])
            .args(["--luxi-socket", &path(&dir.path().join("no-socket"))])
            .env("RUST_LOG", "debug")
            .env("MAINTD__CLUSTER__HMAC_KEY", "")
            .env("MAINTD__API__SSL", "false")
            .env(
                "MAINTD__API__USERS_FILE",
                api_users_file(&dir.path().join("log")),
            )
            .stdin(std::process::Stdio::null())
            .stdout(full.try_clone().expect("dup"))
            .stderr(full)
            .spawn()
            .expect("spawn"),
    );
    let addr = format!("127.0.0.1:{port}");
    let answers = || matches!(http(&addr, "GET", "/1/status", None), Ok((200, _)));
    wait_until(within(30), "the API to answer", || answers().then_some(()));
    // Every refresh of the node list logs (and fails to); the daemon must stay up. What
    // is checked is that an exit does not happen, so there is no event to wait for.
    thread::sleep(Duration::from_secs(3));
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "the daemon died"
    );
    assert!(answers());
}

// ----- a state directory made read-only under the running daemon -----

/// Set (to anything) where the read-only state directory test must run, not be skipped:
/// a machine that cannot make the mounts then fails it.
const REQUIRE_MOUNTS: &str = "MAINTD_TEST_REQUIRE_MOUNTS";

/// Why this machine cannot make a daemon's state directory read-only underneath it, if
/// it cannot: that takes root (mounts, in a mount namespace of the daemon's own) and
/// util-linux's `unshare` and `nsenter`. Tried out on a scratch directory in `dir`.
fn read_only_state_mounts_unavailable(dir: &Path) -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    match uid {
        Ok(uid) if uid == "0" => {}
        Ok(uid) => return Some(format!("not root (uid {uid}), and mounts need root")),
        Err(e) => return Some(format!("cannot run `id -u`: {e}")),
    }
    for tool in ["unshare", "nsenter"] {
        match Command::new(tool).arg("--version").output() {
            Ok(out) if out.status.success() => {}
            other => return Some(format!("no usable `{tool}` (util-linux): {other:?}")),
        }
    }
    let scratch = dir.join("mount-probe");
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 1
            if touch "$1/written" 2>/dev/null; then echo "a read-only bind mount took a file"; exit 1; fi"#,
        )
        .arg("sh")
        .arg(&scratch)
        .output();
    let _ = std::fs::remove_dir_all(&scratch);
    match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "cannot make a read-only bind mount in a mount namespace of its own ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Some(format!("cannot run unshare: {e}")),
    }
}

/// Remount `state_dir` read-only (`ro`) or writable (`rw`) in the mount namespace of
/// `daemon` (started by [`Daemon::spawn_with_own_state_mount`]); nothing changes outside it.
fn remount_state_dir(daemon: &Daemon, state_dir: &Path, mode: &str) {
    let output = Command::new("nsenter")
        .args([
            "-t",
            &daemon.proc.child.id().to_string(),
            "-m",
            "mount",
            "-o",
        ])
        .arg(format!("remount,bind,{mode}"))
        .arg(state_dir)
        .output()
        .expect("nsenter runs");
    assert!(
        output.status.success(),
        "remount {mode} of {}: {}; {}",
        state_dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_state_directory_made_read_only_while_running_stops_all_submissions() {
    let begun = Instant::now();
    let deadline = begun + Duration::from_secs(120);
    let dir = tempfile::tempdir().expect("tempdir");
    if let Some(why) = read_only_state_mounts_unavailable(dir.path()) {
        assert!(
            std::env::var_os(REQUIRE_MOUNTS).is_none(),
            "{REQUIRE_MOUNTS} is set, but: {why}"
        );
        eprintln!("SKIPPED: the read-only state directory test cannot run here: {why}");
        return;
    }
    let sim = start_sim(dir.path());
    let (node, _, _) = busiest_node(&sim);
    let expected_jobs = expected_evacuation_jobs(&sim, &node);
    let state_dir = dir.path().join("state");
    let state_file = state_dir.join("state.json");
    let mut daemon =
        Daemon::spawn_with_own_state_mount(&sim, dir.path(), &DaemonSpec::on("node1", "0.3"));
    let api = daemon.wait_serving(deadline);
    let url = format!("http://{api}");
    let password = path(&api_password_file(dir.path()));
    let get = |path: &str| http_ok(&api, "GET", path, None);
    // Every round saves the state, the first (empty) one too.
    wait_until(deadline, "the first round saved", || {
        state_file.exists().then_some(())
    });

    remount_state_dir(&daemon, &state_dir, "ro");
    // The next round cannot be saved: it is held, and the error is shown.
    let (error, held) = wait_until(deadline, "a round held by the save error", || {
        let error = get("/1/safety")["state_error"].as_str()?.to_owned();
        let plan = get("/1/plan");
        (plan["mode"] == "held").then_some((error, plan))
    });
    assert!(
        error.contains(&path(&state_file)) && error.contains("Read-only file system"),
        "{error}"
    );
    assert_eq!(
        held["held_by"],
        format!("state could not be saved: {error}").as_str(),
        "{held}"
    );
    // Outside the daemon's mount namespace the directory is writable as ever: whatever
    // the file holds now is what the daemon last saved.
    let saved = std::fs::read(&state_file).expect("state file");

    sim.report(&node, &json!({"status": "evacuate"}));
    // Observed and confirmed (in memory: observations are not held back).
    let incident = wait_until(deadline, "the incident confirmed", || {
        daemon
            .try_incidents()?
            .into_iter()
            .find(|i| i["node"] == node.as_str() && i["confirmed"] == true)
    });
    let uuid = incident["uuid"].as_str().expect("uuid").to_owned();

    // Over 15 more polls of the node (3 s: ten round delays, three save retries) the
    // daemon runs on, submits nothing, starts no round and writes nothing.
    let mut polls = 0;
    let mut last_report = None;
    wait_until(deadline, "15 polls of the node while read-only", || {
        assert!(
            daemon.proc.child.try_wait().expect("try_wait").is_none(),
            "the daemon keeps running"
        );
        assert_eq!(
            sim.get("/sim/jobs"),
            json!([]),
            "no job while the state cannot be saved"
        );
        let incidents = get("/1/status");
        assert_eq!(incidents.as_array().map(Vec::len), Some(1), "{incidents}");
        assert_eq!(incidents[0]["uuid"], uuid.as_str(), "{incidents}");
        assert_eq!(incidents[0]["repair-status"], "noted", "{incidents}");
        assert_eq!(incidents[0]["jobs"], json!([]), "{incidents}");
        assert_eq!(get("/1/jobs"), json!([]));
        assert_eq!(get("/1/safety")["state_error"], error.as_str());
        assert_eq!(get("/1/plan"), held, "no new round planned");
        assert!(
            std::fs::read(&state_file).expect("state file") == saved,
            "the state file is unchanged"
        );
        let at = get("/1/nodes")
            .as_array()
            .expect("node list")
            .iter()
            .find(|n| n["node"] == node.as_str())
            .and_then(|n| n["last_report_at"].as_f64());
        if at.is_some() && at != last_report {
            polls += 1;
            last_report = at;
        }
        (polls > 15).then_some(())
    });

    // Operator requests are refused with 503, not acknowledged and then lost.
    let refused = |method: &str, path: &str| {
        let (status, body) = http(&api, method, path, None).expect("an answer");
        assert_eq!(status, 503, "{method} {path}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert_eq!(
            message,
            format!("state could not be saved: {error}"),
            "{method} {path}"
        );
    };
    refused("POST", &format!("/1/incidents/{uuid}/cancel"));
    refused("POST", "/1/pause");
    refused("POST", "/1/resume");
    let (status, _, stderr) = run(
        dir.path(),
        "cancel-read-only",
        &[
            "cancel",
            &uuid,
            "--url",
            &url,
            "--user",
            API_USER,
            "--password-file",
            &password,
        ],
    );
    assert!(!status.success(), "{status}");
    assert!(
        stderr.contains("503") && stderr.contains("state could not be saved"),
        "stderr: {stderr:?}"
    );
    let safety = get("/1/safety");
    assert_eq!(safety["paused"], false, "{safety}");
    assert_eq!(
        daemon.try_incidents().expect("serving")[0]["repair-status"],
        "noted"
    );
    assert_eq!(sim.get("/sim/jobs"), json!([]));

    // Writable again: the state is saved by the next retry, and the work goes on.
    remount_state_dir(&daemon, &state_dir, "rw");
    wait_until(deadline, "the state saved again", || {
        get("/1/safety")["state_error"].is_null().then_some(())
    });
    assert!(
        std::fs::read_to_string(&state_file)
            .expect("state file")
            .contains(&uuid),
        "the incident is on disk"
    );
    let done = wait_until(deadline, "the incident completed", || {
        let incidents = daemon.try_incidents()?;
        assert_eq!(incidents.len(), 1, "exactly one incident: {incidents:?}");
        (incidents[0]["repair-status"] == "completed").then(|| incidents[0].clone())
    });
    assert_eq!(done["uuid"], uuid.as_str(), "{done}");
    assert_evacuated_exactly_once(&sim, &node, &done, expected_jobs);
    let queued = sim.get("/sim/jobs");
    assert_eq!(
        queued.as_array().map(Vec::len),
        Some(expected_jobs),
        "no job but maintd's evacuation: {queued}"
    );
    assert!(
        daemon.proc.child.try_wait().expect("try_wait").is_none(),
        "the daemon is still running"
    );
    let log = daemon.proc.log_text();
    assert!(
        log.contains("could not save the maintenance state")
            && log.contains("the maintenance state is saved again"),
        "{log}"
    );
    eprintln!(
        "read-only state directory test took {:?}; save errors logged: {}",
        begun.elapsed(),
        log.matches("could not save the maintenance state").count()
    );
}
