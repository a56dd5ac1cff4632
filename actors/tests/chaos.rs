//! Chaos, measured: `maintd daemon` killed with SIGKILL at hundreds of random instants
//! (startup included) while a simulated cluster (`maintd sim --cluster-only`, a separate
//! process that keeps running) has three nodes sharing DRBD instances evacuated at once, a
//! live repair, a live repair whose job fails, and an incident canceled through the API.
//! Afterwards the simulator's job queue and maintd's API are compared with what must have
//! happened: no incident lost or forked, no job submitted twice, the same end states as a
//! run of the same scenario without kills, and no failed job but the injected one.
//!
//! `MAINTD_CHAOS_KILLS` (default 200) sets the number of kills, `MAINTD_CHAOS_SEED` the seed
//! of the kill instants. Every wait polls a condition with a deadline; the random pauses
//! between kills are the chaos itself. Children are killed and reaped when their guard
//! drops, so a failing test leaves no process behind (and prints the tail of each log).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::TcpListener,
    os::unix::fs::{chown, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use maintd::signing::{verify, HmacKey, SignedMessage};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

mod support;
use support::*;

/// Kills when `MAINTD_CHAOS_KILLS` is not set.
const DEFAULT_KILLS: usize = 200;
/// Seed of the kill instants when `MAINTD_CHAOS_SEED` is not set.
const DEFAULT_SEED: u64 = 0x6d61_696e_7464_c4a0;
/// Longest pause between a spawn and its kill.
const MAX_LIFETIME_MS: u64 = 1500;

// ----- the simulated cluster and the daemon -----

/// The simulated cluster of these tests: seed 2, jobs of 1.5 s (long enough to be killed
/// mid-job), with `extra` flags.
fn cluster(nodes: usize, instances: usize, extra: &[String]) -> SimSpec {
    SimSpec {
        seed: 2,
        job_seconds: 1.5,
        extra: extra.to_vec(),
        ..SimSpec::new(nodes, instances)
    }
}

/// Eight nodes, 24 instances: among them three nodes pairwise sharing DRBD instances.
fn start_sim(dir: &Path) -> Sim {
    Sim::start(dir, &cluster(8, 24, &[]))
}

/// `maintd daemon` on node1 with the brakes opened wide enough for the scenario and fast
/// rounds; with this diagnose URL template (the simulator's if `None`) and extra
/// environment.
fn spawn_daemon(
    sim: &Sim,
    dir: &Path,
    diagnose_url: Option<&str>,
    extra_env: &[(&'static str, String)],
) -> Daemon {
    let mut env = vec![
        // Notice finished jobs soon (the default, 1 s, is longer than most lifetimes).
        ("MAINTD__ROUNDS__JOB_POLL_INTERVAL", "0.2".to_owned()),
        ("MAINTD__SAFETY__MAX_NODES_IN_REPAIR", "5".to_owned()),
        ("MAINTD__SAFETY__MAX_PERCENT_IN_REPAIR", "100".to_owned()),
        ("MAINTD__SAFETY__BREAKER_NODES", "20".to_owned()),
        ("MAINTD__SAFETY__BREAKER_PERCENT", "100".to_owned()),
    ];
    env.extend(extra_env.iter().cloned());
    let spec = DaemonSpec {
        poll_interval: "0.5".into(),
        diagnose_url: diagnose_url.map(str::to_owned),
        env,
        ..DaemonSpec::on("node1", "0.5")
    };
    Daemon::spawn(sim, dir, &spec)
}

/// The simulated scenario's daemon: the simulator runs live repairs as OP_REPAIR_COMMAND
/// jobs.
fn spawn_scenario_daemon(sim: &Sim, dir: &Path) -> Daemon {
    spawn_daemon(
        sim,
        dir,
        None,
        &[("MAINTD__REPAIR__METHOD", "opcode".to_owned())],
    )
}

// ----- the scenario -----

/// What happens to which node.
#[derive(Debug, Clone)]
struct Roles {
    /// Three non-master nodes pairwise sharing DRBD instances, evacuated at once.
    evacuated: [String; 3],
    /// A live repair that succeeds.
    repaired: String,
    /// A live repair whose job fails (an injected fault).
    failing: String,
    /// A live repair canceled through the API.
    canceled: String,
}

impl Roles {
    fn find(sim: &Sim) -> Roles {
        let nodes = sim.list("/sim/nodes");
        let master: BTreeSet<String> = nodes
            .iter()
            .filter(|n| n["master"] == true)
            .filter_map(|n| n["name"].as_str().map(str::to_owned))
            .collect();
        let mut pairs = BTreeSet::new();
        for instance in sim.list("/sim/instances") {
            if instance["disk_template"] != "drbd" {
                continue;
            }
            let primary = instance["primary"].as_str().expect("primary").to_owned();
            let secondary = instance["secondaries"][0]
                .as_str()
                .expect("a DRBD secondary")
                .to_owned();
            if !master.contains(&primary) && !master.contains(&secondary) {
                pairs.insert((primary.clone(), secondary.clone()));
                pairs.insert((secondary, primary));
            }
        }
        let mut names: Vec<String> = nodes
            .iter()
            .filter_map(|n| n["name"].as_str().map(str::to_owned))
            .filter(|n| !master.contains(n))
            .collect();
        names.sort();
        let shares = |a: &String, b: &String| pairs.contains(&(a.clone(), b.clone()));
        let triangle = names
            .iter()
            .flat_map(|a| names.iter().map(move |b| (a, b)))
            .filter(|(a, b)| a < b && shares(a, b))
            .flat_map(|(a, b)| names.iter().map(move |c| (a, b, c)))
            .find(|(a, b, c)| b < c && shares(a, c) && shares(b, c))
            .map(|(a, b, c)| [a.clone(), b.clone(), c.clone()])
            .expect("three non-master nodes pairwise sharing DRBD instances");
        let rest: Vec<String> = names
            .into_iter()
            .filter(|n| !triangle.contains(n))
            .collect();
        assert!(rest.len() >= 3, "nodes left for the live repairs: {rest:?}");
        Roles {
            evacuated: triangle,
            repaired: rest[0].clone(),
            failing: rest[1].clone(),
            canceled: rest[2].clone(),
        }
    }

    /// (node, report, expected end states) for every node given a report.
    fn reports(&self) -> Vec<(String, Value, &'static [&'static str])> {
        let evacuate = json!({"status": "evacuate", "details": {"disk": "sda"}});
        let live = |case: &str| json!({"status": "live-repair", "command": "fix", "details": {"case": case}});
        let mut all: Vec<(String, Value, &'static [&'static str])> = self
            .evacuated
            .iter()
            .map(|n| (n.clone(), evacuate.clone(), &["completed"][..]))
            .collect();
        all.push((self.repaired.clone(), live("repaired"), &["completed"]));
        all.push((self.failing.clone(), live("failing"), &["failed"]));
        all.push((
            self.canceled.clone(),
            live("canceled"),
            &["canceled", "forgotten"],
        ));
        all
    }

    fn report(&self, node: &str) -> Value {
        self.reports()
            .into_iter()
            .find(|(n, _, _)| n == node)
            .map(|(_, report, _)| report)
            .expect("a node of the scenario")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing done yet.
    Start,
    /// The fault is injected and the failing node reports; waiting for its job to fail,
    /// so that the fault cannot hit another live repair.
    FailingRuns,
    /// The evacuations and the good live repair are reported; the cancel needs the
    /// daemon up.
    Cancel,
    /// Everything is set in motion.
    Done,
}

/// The scenario's steps, taken whenever their condition holds.
struct Scenario<'a> {
    sim: &'a Sim,
    roles: &'a Roles,
    phase: Phase,
    canceled_at: Option<Instant>,
}

impl Scenario<'_> {
    /// Take every step whose condition holds; the cancel waits (bounded) for the daemon to
    /// serve and to have noted the incident.
    fn advance(&mut self, daemon: &mut Daemon) {
        loop {
            match self.phase {
                Phase::Start => {
                    http_ok(
                        &self.sim.http,
                        "POST",
                        "/sim/faults",
                        Some(&json!({"opcode": "OP_REPAIR_COMMAND", "count": 1})),
                    );
                    let node = &self.roles.failing;
                    self.sim.report(node, &self.roles.report(node));
                    self.phase = Phase::FailingRuns;
                }
                Phase::FailingRuns => {
                    let failed = self.sim.maintd_jobs().iter().any(|j| {
                        j.status == "error"
                            && j.opcodes == ["OP_REPAIR_COMMAND"]
                            && j.bodies[0]["node_name"] == self.roles.failing.as_str()
                    });
                    if !failed {
                        return;
                    }
                    for node in self.roles.evacuated.iter().chain([&self.roles.repaired]) {
                        self.sim.report(node, &self.roles.report(node));
                    }
                    self.phase = Phase::Cancel;
                }
                Phase::Cancel => {
                    let deadline = within(60);
                    let api = daemon.wait_serving(deadline);
                    let node = &self.roles.canceled;
                    let report = self.roles.report(node);
                    self.sim.report(node, &report);
                    let uuid = wait_until(deadline, "the incident to cancel", || {
                        let open = daemon.try_get("/1/status")?;
                        open.as_array()?
                            .iter()
                            .find(|i| i["node"] == node.as_str() && i["original"] == report)
                            .and_then(|i| i["uuid"].as_str().map(str::to_owned))
                    });
                    let answer = http(&api, "POST", &format!("/1/incidents/{uuid}/cancel"), None);
                    assert!(
                        matches!(answer, Ok((200, _))),
                        "cancel {uuid} on {node}: {answer:?}"
                    );
                    self.canceled_at = Some(Instant::now());
                    self.phase = Phase::Done;
                }
                Phase::Done => return,
            }
        }
    }
}

/// How a run ended.
#[derive(Debug, Default)]
struct Outcome {
    kills: usize,
    /// Kills before the daemon had printed its API address.
    kills_before_api: usize,
    /// Kills less than 250 ms after the spawn (while starting and recovering).
    kills_in_startup: usize,
    /// Kills while at least one of maintd's jobs was not finalized in the queue.
    kills_with_jobs_in_flight: usize,
    /// maintd's jobs in the queue at each kill.
    jobs_at_kill: Vec<usize>,
    /// Kills before maintd's last job was submitted (while the scenario was under way).
    kills_mid_scenario: usize,
    /// End state per node of the scenario.
    end_states: BTreeMap<String, String>,
    lost: usize,
    forked: usize,
    duplicate_jobs: usize,
    wrong_end_states: usize,
    failed_jobs: usize,
    /// Failed jobs other than the injected failure.
    unexpected_failed_jobs: usize,
    jobs: usize,
    elapsed: Duration,
    /// Recoveries that adopted jobs submitted before a kill, from the daemon's log.
    adopted: usize,
    /// Planned jobs dropped after a kill as never submitted, from the daemon's log.
    never_submitted: usize,
    problems: Vec<String>,
}

/// The end state of `node`'s incident for `report`, if it has reached one.
fn end_state(incidents: &[Value], node: &str, report: &Value) -> Option<String> {
    let mine: Vec<&Value> = incidents
        .iter()
        .filter(|i| i["node"] == node && i["original"] == *report)
        .collect();
    // An open incident wins over a forgotten one of the same report.
    let open = mine.iter().find(|i| i["forgotten"] != true);
    match open {
        Some(i) => {
            let status = i["repair-status"].as_str().unwrap_or_default();
            matches!(status, "completed" | "failed" | "canceled").then(|| status.to_owned())
        }
        None => (!mine.is_empty()).then(|| "forgotten".to_owned()),
    }
}

/// Every incident of the scenario has reached an end state, its node carries the matching
/// tag, and every job of maintd is finalized: (incidents, jobs).
fn settled(sim: &Sim, daemon: &mut Daemon, roles: &Roles) -> Option<(Vec<Value>, Vec<MaintdJob>)> {
    let incidents = daemon.try_all_incidents()?;
    if daemon.try_get("/1/jobs")? != json!([]) {
        return None;
    }
    for (node, report, _) in roles.reports() {
        let state = end_state(&incidents, &node, &report)?;
        let uuid = incidents
            .iter()
            .find(|i| i["node"] == node.as_str() && i["original"] == report)
            .and_then(|i| i["uuid"].as_str())?;
        let tag = match state.as_str() {
            "completed" => format!("maintd:repairready:{uuid}"),
            "failed" => format!("maintd:repairfailed:{uuid}"),
            _ => continue,
        };
        if !sim.tags(&node).contains(&tag) {
            return None;
        }
    }
    let jobs = sim.maintd_jobs();
    jobs.iter()
        .all(MaintdJob::finalized)
        .then_some((incidents, jobs))
}

/// Count what went wrong, from the queue's jobs and maintd's incidents.
fn judge(roles: &Roles, incidents: &[Value], jobs: &[MaintdJob], outcome: &mut Outcome) {
    let node_of: BTreeMap<&str, &str> = incidents
        .iter()
        .filter_map(|i| Some((i["uuid"].as_str()?, i["node"].as_str()?)))
        .collect();
    for (node, report, expected) in roles.reports() {
        let uuids: BTreeSet<&str> = incidents
            .iter()
            .filter(|i| i["node"] == node.as_str() && i["original"] == report)
            .filter_map(|i| i["uuid"].as_str())
            .chain(
                jobs.iter()
                    .map(|j| j.incident.as_str())
                    .filter(|u| node_of.get(u) == Some(&node.as_str())),
            )
            .collect();
        if uuids.is_empty() {
            outcome.lost += 1;
            outcome.problems.push(format!("{node}: no incident"));
        }
        if uuids.len() > 1 {
            outcome.forked += uuids.len() - 1;
            outcome
                .problems
                .push(format!("{node}: several incidents {uuids:?}"));
        }
        let state = end_state(incidents, &node, &report).unwrap_or_else(|| "none".into());
        if !expected.contains(&state.as_str()) {
            outcome.wrong_end_states += 1;
            outcome
                .problems
                .push(format!("{node}: ended {state}, expected {expected:?}"));
        }
        outcome.end_states.insert(node, state);
    }
    // A job naming an incident maintd does not know: an incident lost on the way.
    for job in jobs {
        if !node_of.contains_key(job.incident.as_str()) {
            outcome.forked += 1;
            outcome.problems.push(format!(
                "job {} names unknown incident {}",
                job.id, job.incident
            ));
        }
    }
    let mut by_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut by_body: BTreeMap<(&str, String), Vec<u64>> = BTreeMap::new();
    for job in jobs {
        by_key.entry(&job.key).or_default().push(job.id);
        let body = Value::Array(job.bodies.clone()).to_string();
        by_body
            .entry((&job.incident, body))
            .or_default()
            .push(job.id);
    }
    for (key, ids) in &by_key {
        if ids.len() > 1 {
            outcome.duplicate_jobs += ids.len() - 1;
            outcome
                .problems
                .push(format!("submission {key} in jobs {ids:?}"));
        }
    }
    for ((incident, body), ids) in &by_body {
        if ids.len() > 1 {
            outcome.duplicate_jobs += ids.len() - 1;
            outcome.problems.push(format!(
                "incident {incident}: jobs {ids:?} have the same opcodes {body}"
            ));
        }
    }
    for job in jobs.iter().filter(|j| j.status != "success") {
        outcome.failed_jobs += 1;
        let injected = job.opcodes == ["OP_REPAIR_COMMAND"]
            && job.bodies[0]["node_name"] == roles.failing.as_str();
        if !injected {
            outcome.unexpected_failed_jobs += 1;
            outcome.problems.push(format!(
                "job {} ({:?}, incident {}) ended {}",
                job.id, job.opcodes, job.incident, job.status
            ));
        }
    }
    outcome.jobs = jobs.len();
}

/// The scenario on a fresh simulated cluster, with `kills` SIGKILLs of the daemon at
/// instants drawn from `rng`, then run to its end.
fn run_scenario(name: &str, kills: usize, rng: &mut StdRng) -> Outcome {
    let begun = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = start_sim(dir.path());
    let roles = Roles::find(&sim);
    let mut scenario = Scenario {
        sim: &sim,
        roles: &roles,
        phase: Phase::Start,
        canceled_at: None,
    };
    let mut outcome = Outcome {
        kills,
        ..Outcome::default()
    };
    let mut daemon = spawn_scenario_daemon(&sim, dir.path());
    for kill in 0..kills {
        let lifetime = Duration::from_millis(rng.gen_range(0..=MAX_LIFETIME_MS));
        loop {
            scenario.advance(&mut daemon);
            let elapsed = daemon.started.elapsed();
            if elapsed >= lifetime {
                break;
            }
            thread::sleep(POLL.min(lifetime - elapsed));
        }
        if let Some(status) = daemon.proc.child.try_wait().expect("try_wait") {
            panic!("{name}: the daemon exited by itself ({status}) before kill {kill}");
        }
        if daemon.try_api().is_none() {
            outcome.kills_before_api += 1;
        }
        if lifetime < Duration::from_millis(250) {
            outcome.kills_in_startup += 1;
        }
        let queued = sim.maintd_jobs();
        if !queued.iter().all(MaintdJob::finalized) {
            outcome.kills_with_jobs_in_flight += 1;
        }
        outcome.jobs_at_kill.push(queued.len());
        daemon.proc.kill9();
        daemon = spawn_scenario_daemon(&sim, dir.path());
    }
    let deadline = within(300);
    let (incidents, jobs) = wait_until(deadline, &format!("{name}: the scenario's end"), || {
        scenario.advance(&mut daemon);
        settled(&sim, &mut daemon, &roles)
    });
    judge(&roles, &incidents, &jobs, &mut outcome);
    outcome.kills_mid_scenario = outcome
        .jobs_at_kill
        .iter()
        .filter(|queued| **queued < jobs.len())
        .count();
    assert!(
        sim.proc.child.try_wait().expect("try_wait").is_none(),
        "{name}: the simulated cluster kept running"
    );
    let log = daemon.proc.log_text();
    outcome.adopted = log
        .matches("adopted jobs submitted before a restart")
        .count();
    outcome.never_submitted = log.matches("never reached the queue").count();
    outcome.elapsed = begun.elapsed();
    eprintln!(
        "{name}: roles {roles:?}; {} jobs; kills {} ({} before the API address was printed, \
         {} within 250 ms of the spawn, {} with jobs in flight, {} before the last job); \
         recoveries adopting submitted jobs {}, planned jobs dropped as never submitted {}; \
         end states {:?}; took {:?}",
        outcome.jobs,
        outcome.kills,
        outcome.kills_before_api,
        outcome.kills_in_startup,
        outcome.kills_with_jobs_in_flight,
        outcome.kills_mid_scenario,
        outcome.adopted,
        outcome.never_submitted,
        outcome.end_states,
        outcome.elapsed
    );
    for problem in &outcome.problems {
        eprintln!("{name}: PROBLEM {problem}");
    }
    outcome
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

// ----- the tests -----

#[test]
fn sigkill_at_random_instants_loses_nothing_and_duplicates_nothing() {
    let kills = env_number("MAINTD_CHAOS_KILLS", DEFAULT_KILLS);
    let seed = env_number("MAINTD_CHAOS_SEED", DEFAULT_SEED);
    let mut rng = StdRng::seed_from_u64(seed);
    let calm = run_scenario("without kills", 0, &mut rng);
    let chaos = run_scenario("chaos", kills, &mut rng);
    println!(
        "chaos: kills={} lost={} forked={} duplicate_jobs={} wrong_end_states={} \
         failed_jobs={}(expected 1) seed={seed:#x} took={:.1?} (without kills {:.1?})",
        chaos.kills,
        chaos.lost,
        chaos.forked,
        chaos.duplicate_jobs,
        chaos.wrong_end_states,
        chaos.failed_jobs,
        chaos.elapsed,
        calm.elapsed,
    );
    for outcome in [&calm, &chaos] {
        assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
        assert_eq!(outcome.failed_jobs, 1, "{outcome:?}");
    }
    assert_eq!(
        chaos.end_states, calm.end_states,
        "end states with and without kills"
    );
}

// ----- the node agent killed mid-repair -----

const AGENT_KEY: &[u8] = b"0123456789abcdef0123456789abcdef01234567\n";

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A root-owned file of `mode` (the whitelist checks need root; tests run as root).
fn root_owned(path: &Path, mode: u32) {
    chown(path, Some(0), Some(0)).expect("chown (tests run as root)");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `maintd agent` for node `node` on `port`, with whitelists and key under `dir`.
fn spawn_agent(dir: &Path, node: &str, port: u16) -> Proc {
    let args: Vec<String> = vec![
        "agent".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--node-name".into(),
        node.into(),
        "--diagnose-dir".into(),
        path(&dir.join("diagnose")),
        "--diagnose-command".into(),
        "hw-check".into(),
        "--repair-dir".into(),
        path(&dir.join("repair")),
        "--state-dir".into(),
        path(&dir.join("agent-state")),
        "--interval".into(),
        "0.5".into(),
        "--hmac-key".into(),
        path(&dir.join("hmac.key")),
    ];
    let mut agent = Proc::spawn("agent", &args, &dir.join("agent.log"));
    agent.line("listening on http://", within(30));
    agent
}

/// The agent's execution for `incident`, its signature checked.
fn execution(port: u16, incident: &str) -> Option<Value> {
    let addr = format!("127.0.0.1:{port}");
    let (status, body) = http_text(
        &addr,
        "GET",
        &format!("/1/repair/{incident}?salt=chaos-1"),
        None,
    )
    .ok()?;
    if status != 200 {
        return None;
    }
    let signed: SignedMessage = serde_json::from_str(&body).expect("a signed answer");
    assert_eq!(signed.salt, "chaos-1");
    let key = HmacKey::from_bytes(AGENT_KEY.to_vec()).expect("key");
    verify(&key, &signed).expect("signed with the cluster key");
    Some(serde_json::from_str(&signed.msg).expect("an execution"))
}

/// Wait until maintd's view of the nodes (`/1/nodes`, with each report's time) has changed
/// `count` times: that many more polls of the node.
fn wait_polls(daemon: &mut Daemon, count: usize, deadline: Instant) {
    let mut last = wait_until(deadline, "/1/nodes", || daemon.try_get("/1/nodes"));
    for _ in 0..count {
        last = wait_until(deadline, "another poll", || {
            daemon.try_get("/1/nodes").filter(|now| *now != last)
        });
    }
}

#[test]
fn agent_killed_mid_repair_fails_the_execution_and_never_runs_it_twice() {
    let deadline = within(180);
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    for list in ["diagnose", "repair"] {
        fs::create_dir(base.join(list)).expect("whitelist dir");
        root_owned(&base.join(list), 0o755);
    }
    fs::write(base.join("hmac.key"), AGENT_KEY).expect("key file");
    let script = |list: &str, name: &str, body: String| {
        let file = base.join(list).join(name);
        fs::write(&file, format!("#!/bin/sh\n{body}\n")).expect("script");
        root_owned(&file, 0o755);
    };
    let report =
        json!({"status": "live-repair", "command": "slow-fix", "details": {"raid": "md0"}});
    script("diagnose", "hw-check", format!("echo '{report}'"));
    let runs = base.join("runs");
    let pid_file = base.join("slow.pid");
    script(
        "repair",
        "slow-fix",
        format!(
            "{{ cat; echo; }} >> {}; echo $$ > {}; exec sleep 120",
            runs.display(),
            pid_file.display()
        ),
    );
    let run_count = || {
        fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };

    // A one-node cluster: node1, the master, is the node whose agent reports and repairs.
    let sim = Sim::start(base, &cluster(1, 0, &[]));
    let port = free_port();
    let mut agent = spawn_agent(base, "node1", port);
    let diagnose_url = format!("http://127.0.0.1:{port}/1/report/node/diagnose?node={{node}}");
    let env = [
        ("MAINTD__REPAIR__METHOD", "agent".to_owned()),
        (
            "MAINTD__REPAIR__AGENT_URL",
            format!("http://127.0.0.1:{port}"),
        ),
        ("MAINTD__CLUSTER__HMAC_KEY", path(&base.join("hmac.key"))),
    ];
    let mut daemon = spawn_daemon(&sim, base, Some(&diagnose_url), &env);
    daemon.wait_serving(deadline);

    // The repair runs (its command sleeps): kill the agent, and maintd too.
    wait_until(deadline, "the repair command to run", || {
        (run_count() == 1 && pid_file.exists()).then_some(())
    });
    let incident = wait_until(deadline, "the incident", || {
        daemon
            .try_get("/1/status")?
            .as_array()?
            .iter()
            .find(|i| i["node"] == "node1" && i["original"] == report)
            .cloned()
    });
    let uuid = incident["uuid"].as_str().expect("uuid").to_owned();
    let running = wait_until(deadline, "the execution running", || {
        execution(port, &uuid).filter(|e| e["state"] == "running")
    });
    assert_eq!(running["command"], "slow-fix", "{running}");
    agent.kill9();
    daemon.proc.kill9();
    // The command outlives its agent (it runs in a process group of its own); end it.
    let pid = fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .to_owned();
    let _ = Command::new("kill").args(["-KILL", &pid]).status();

    let mut agent = spawn_agent(base, "node1", port);
    let mut daemon = spawn_daemon(&sim, base, Some(&diagnose_url), &env);
    daemon.wait_serving(deadline);
    let failed = wait_until(deadline, "the incident failed", || {
        daemon
            .try_get("/1/status")?
            .as_array()?
            .iter()
            .find(|i| i["uuid"] == uuid.as_str() && i["repair-status"] == "failed")
            .cloned()
    });
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("agent restarted during execution"),
        "{failed}"
    );
    let after = execution(port, &uuid).expect("the execution is kept");
    assert_eq!(after["state"], "failed", "{after}");
    assert_eq!(
        after["message"], "agent restarted during execution",
        "{after}"
    );
    let tag = format!("maintd:repairfailed:{uuid}");
    wait_until(deadline, "the failure tag", || {
        sim.tags("node1").contains(&tag).then_some(())
    });

    // Several polls later, and after one more restart of each, nothing ran again.
    wait_polls(&mut daemon, 4, deadline);
    agent.kill9();
    daemon.proc.kill9();
    let _agent = spawn_agent(base, "node1", port);
    let mut daemon = spawn_daemon(&sim, base, Some(&diagnose_url), &env);
    daemon.wait_serving(deadline);
    wait_polls(&mut daemon, 4, deadline);
    assert_eq!(run_count(), 1, "the repair command ran once");
    let last = execution(port, &uuid).expect("the execution is kept");
    assert_eq!(last, after, "the failed execution is left as it was");
    let detail = daemon
        .try_get(&format!("/1/incidents/{uuid}"))
        .expect("the incident");
    assert_eq!(detail["repair-status"], "failed", "{detail}");
    assert_eq!(
        sim.maintd_jobs().len(),
        1,
        "only the failure tag job: {:?}",
        sim.maintd_jobs()
    );
}

// ----- master failover: the state's copies on the master candidates' agents -----

/// Three agents standing for the master candidates (loopback ports, their names), each
/// in a directory of its own under `base` with the cluster key.
struct Candidates {
    base: PathBuf,
    ports: Vec<u16>,
    agents: Vec<Option<Proc>>,
}

impl Candidates {
    fn start(base: &Path, count: usize) -> Candidates {
        let mut candidates = Candidates {
            base: base.to_owned(),
            ports: (0..count).map(|_| free_port()).collect(),
            agents: (0..count).map(|_| None).collect(),
        };
        for i in 0..count {
            let dir = candidates.dir(i);
            for list in ["diagnose", "repair"] {
                fs::create_dir_all(dir.join(list)).expect("whitelist dir");
                root_owned(&dir.join(list), 0o755);
            }
            fs::write(dir.join("hmac.key"), AGENT_KEY).expect("key file");
            let script = dir.join("diagnose/hw-check");
            fs::write(&script, "#!/bin/sh\necho '{\"status\": \"Ok\"}'\n").expect("script");
            root_owned(&script, 0o755);
            candidates.up(i);
        }
        candidates
    }

    fn dir(&self, i: usize) -> PathBuf {
        self.base.join(format!("candidate{i}"))
    }

    /// The candidates' names: where their agents listen.
    fn names(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    fn up(&mut self, i: usize) {
        let name = self.names()[i].clone();
        self.agents[i] = Some(spawn_agent(&self.dir(i), &name, self.ports[i]));
    }

    fn down(&mut self, i: usize) {
        if let Some(mut agent) = self.agents[i].take() {
            agent.kill9();
        }
    }

    /// The serial of the copy agent `i` holds on disk.
    fn held_serial(&self, i: usize) -> Option<u64> {
        let text = fs::read_to_string(self.dir(i).join("agent-state/maintd-state.json")).ok()?;
        serde_json::from_str::<Value>(&text).ok()?["serial"].as_u64()
    }

    /// The environment of a daemon replicating to these candidates: signed reports, the
    /// agents reached at `http://{node}`, quick retries.
    fn daemon_env(&self, key: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("MAINTD__REPAIR__METHOD", "opcode".to_owned()),
            ("MAINTD__CLUSTER__HMAC_KEY", path(key)),
            ("MAINTD__REPAIR__AGENT_URL", "http://{node}".to_owned()),
            ("MAINTD__REPLICATION__CANDIDATES", self.names().join(",")),
            ("MAINTD__REPLICATION__TIMEOUT", "2".to_owned()),
            ("MAINTD__REPLICATION__RETRY_INTERVAL", "0.5".to_owned()),
            ("MAINTD__REPLICATION__WAIT", "5".to_owned()),
            ("MAINTD__DAEMON__MASTER_CHECK_INTERVAL", "0.5".to_owned()),
        ]
    }
}

/// The incident of `node` with this report, among open and forgotten ones.
fn incident_on(daemon: &mut Daemon, node: &str, report: &Value) -> Option<Value> {
    daemon
        .try_all_incidents()?
        .into_iter()
        .find(|i| i["node"] == node && i["original"] == *report)
}

/// The jobs of incident `uuid`: keys never reused, no opcode list submitted twice, all
/// successful, the last one tagging the node ready.
fn assert_jobs_once_and_successful(sim: &Sim, uuid: &str) -> Vec<MaintdJob> {
    let jobs: Vec<MaintdJob> = sim
        .maintd_jobs()
        .into_iter()
        .filter(|j| j.incident == uuid)
        .collect();
    assert!(!jobs.is_empty(), "incident {uuid} has jobs");
    let keys: BTreeSet<&str> = jobs.iter().map(|j| j.key.as_str()).collect();
    assert_eq!(
        keys.len(),
        jobs.len(),
        "a submission key used twice: {jobs:#?}"
    );
    let bodies: BTreeSet<String> = jobs
        .iter()
        .map(|j| serde_json::to_string(&j.bodies).expect("json"))
        .collect();
    assert_eq!(
        bodies.len(),
        jobs.len(),
        "the same opcodes submitted twice: {jobs:#?}"
    );
    assert!(
        jobs.iter().all(|j| j.status == "success"),
        "every job succeeds: {jobs:#?}"
    );
    jobs
}

/// A busy non-master node of the simulated cluster, other than `not`.
fn node_with_instances(sim: &Sim, not: &[&str]) -> String {
    let nodes = sim.list("/sim/nodes");
    let master = nodes
        .iter()
        .find(|n| n["master"] == true)
        .and_then(|n| n["name"].as_str())
        .expect("a master")
        .to_owned();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for instance in sim.list("/sim/instances") {
        let primary = instance["primary"].as_str().expect("primary").to_owned();
        *counts.entry(primary).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(node, _)| *node != master && !not.contains(&node.as_str()))
        .max_by_key(|(node, count)| (*count, std::cmp::Reverse(node.clone())))
        .map(|(node, _)| node)
        .expect("a node with instances")
}

/// A master failover in the middle of an evacuation: the maintd of the new master, on a
/// disk that never held the state, takes over the copies of the candidates' agents and
/// finishes the same incident (same UUID), submitting no job twice. Then the brakes of
/// replication itself: with the agents of a majority down, nothing is submitted and
/// `/1/safety` says why; a maintd that becomes master then waits for a majority before
/// it works at all.
#[test]
fn a_new_master_takes_over_the_state_from_the_candidates_and_submits_nothing_twice() {
    let deadline = within(300);
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    let key = base.join("hmac.key");
    fs::write(&key, AGENT_KEY).expect("key file");
    let sim = Sim::start(
        base,
        &cluster(6, 18, &["--sign-reports".into(), path(&key)]),
    );
    let mut candidates = Candidates::start(base, 3);
    let env = candidates.daemon_env(&key);
    let spawn = |name: &str| {
        let home = base.join(name);
        fs::create_dir_all(&home).expect("daemon dir");
        spawn_daemon(&sim, &home, None, &env)
    };

    // 1. An evacuation, its state on the candidates: kill the master's maintd half way.
    let mut first = spawn("master1");
    first.wait_serving(deadline);
    let node = node_with_instances(&sim, &[]);
    let evacuate = json!({"status": "evacuate", "details": {"psu": "failed"}});
    sim.report(&node, &evacuate);
    let incident = wait_until(deadline, "the evacuation half done", || {
        let incident = incident_on(&mut first, &node, &evacuate)?;
        let id = incident["uuid"].as_str()?.to_owned();
        let done = sim
            .maintd_jobs()
            .iter()
            .filter(|j| j.incident == id && j.finalized())
            .count();
        (done >= 2 && incident["repair-status"] == "pending").then_some(incident)
    });
    let uuid = incident["uuid"].as_str().expect("uuid").to_owned();
    let durable = first.try_get("/1/safety").expect("safety")["replication"].clone();
    assert_eq!(durable["needed"], 2, "{durable}");
    first.proc.kill9();
    let jobs_before = sim.maintd_jobs().len();
    let held: Vec<Option<u64>> = (0..3).map(|i| candidates.held_serial(i)).collect();
    assert!(
        held.iter().flatten().count() >= 2,
        "a majority of the agents hold a copy: {held:?}"
    );

    // 2. The new master's maintd, on a disk without state, finishes the same incident.
    let mut second = spawn("master2");
    second.wait_serving(deadline);
    assert!(
        second
            .proc
            .log_text()
            .contains("took over the state of serial"),
        "the copy was taken over"
    );
    let done = wait_until(deadline, "the incident completed", || {
        incident_on(&mut second, &node, &evacuate).filter(|i| i["repair-status"] == "completed")
    });
    assert_eq!(done["uuid"], uuid.as_str(), "the same incident: {done}");
    let incidents = second.try_all_incidents().expect("incidents");
    assert_eq!(
        incidents
            .iter()
            .filter(|i| i["node"] == node.as_str())
            .count(),
        1,
        "no second incident for {node}: {incidents:#?}"
    );
    assert_jobs_once_and_successful(&sim, &uuid);
    assert!(
        sim.maintd_jobs().len() > jobs_before,
        "the new master submitted the rest"
    );
    let ready = format!("maintd:repairready:{uuid}");
    wait_until(deadline, "the ready tag", || {
        sim.tags(&node).contains(&ready).then_some(())
    });

    // 3. The agents of two candidates of three go down: a new incident is noted but
    // nothing is submitted for it, and /1/safety says why.
    candidates.down(1);
    candidates.down(2);
    let other = node_with_instances(&sim, &[&node]);
    sim.report(&other, &evacuate);
    let safety = wait_until(deadline, "the lost majority on /1/safety", || {
        second
            .try_get("/1/safety")
            .filter(|s| !s["replication"]["majority_lost_since"].is_null())
    });
    let halted = safety["halted"].as_str().unwrap_or_default().to_owned();
    assert!(
        halted.contains("not on a majority of the master candidates"),
        "{safety}"
    );
    let before = sim.maintd_jobs().len();
    wait_polls(&mut second, 6, deadline);
    let held_back = incident_on(&mut second, &other, &evacuate).expect("the incident is noted");
    assert_eq!(held_back["repair-status"], "noted", "{held_back}");
    assert_eq!(
        sim.maintd_jobs().len(),
        before,
        "no job while the majority is lost"
    );

    // 4. One agent back: a majority again, the evacuation runs.
    candidates.up(1);
    let second_uuid = held_back["uuid"].as_str().expect("uuid").to_owned();
    wait_until(deadline, "the second incident completed", || {
        incident_on(&mut second, &other, &evacuate).filter(|i| i["repair-status"] == "completed")
    });
    assert_jobs_once_and_successful(&sim, &second_uuid);
    wait_until(deadline, "the majority back on /1/safety", || {
        second
            .try_get("/1/safety")
            .filter(|s| s["replication"]["majority_lost_since"].is_null())
    });

    // 5. Another failover while only one agent of three answers: the new maintd does not
    // work until a majority answers, then takes over with both incidents as they were.
    second.proc.kill9();
    candidates.down(1);
    let jobs_then = sim.maintd_jobs().len();
    let mut third = spawn("master3");
    let api = third
        .proc
        .line("maintd API:", deadline)
        .trim_start_matches("http://")
        .to_owned();
    wait_until(deadline, "the take-over refused", || {
        third
            .proc
            .log_text()
            .contains("cannot take over maintd's state yet")
            .then_some(())
    });
    let (status, _) = http(&api, "GET", "/1/status", None).expect("answers");
    assert_eq!(status, 503, "no work without a majority");
    candidates.up(2);
    third.wait_serving(deadline);
    let incidents = third.try_all_incidents().expect("incidents");
    for (node, uuid) in [(&node, &uuid), (&other, &second_uuid)] {
        let found: Vec<&Value> = incidents
            .iter()
            .filter(|i| i["node"] == node.as_str())
            .collect();
        assert_eq!(found.len(), 1, "{incidents:#?}");
        assert_eq!(found[0]["uuid"], uuid.as_str());
        assert_eq!(found[0]["repair-status"], "completed");
    }
    wait_polls(&mut third, 4, deadline);
    assert_eq!(
        sim.maintd_jobs().len(),
        jobs_then,
        "nothing submitted again"
    );
}
