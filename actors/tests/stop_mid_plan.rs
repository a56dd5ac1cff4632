//! SIGTERM ends maintd within 5 s even in the middle of a plan: the plan runs on a thread
//! of its own, which the process does not wait for. Both `maintd daemon` (against
//! `maintd sim --cluster-only`) and `maintd sim` with its own maintd balance a cluster
//! big enough that one plan takes far longer than the test.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use support::{
    http_text, path, wait_until, within, Daemon, DaemonSpec, Proc, Sim, SimSpec, SimWithMaintd,
};

/// Big enough that one balancing plan takes seconds (its steps scan every instance
/// against every node), small enough that the simulator starts quickly in a debug build
/// (`maintd sim` serves its cluster from the thread maintd's actors run on).
const NODES: usize = 400;
const INSTANCES: usize = 8_000;

/// How long maintd may take to stop after SIGTERM (systemd's stop timeout is far longer;
/// this is the promise of the README).
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Whether process `pid` runs a thread named `name`.
fn has_thread(pid: u32, name: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|task| {
        std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
    })
}

/// How many plans maintd on `api` has finished, from its `/metrics`.
fn plans_finished(api: &str) -> Option<f64> {
    let (status, text) = http_text(api, "GET", "/metrics", None).ok()?;
    if status != 200 {
        return None;
    }
    let samples = maintd::metrics::parse_exposition(&text).ok()?;
    samples
        .iter()
        .find(|s| s.name == "maintd_plan_duration_seconds_count")
        .map(|s| s.value)
}

/// Wait until maintd (`proc`, API on `api`) is computing its first plan: the planner thread
/// runs, and no plan has finished.
fn wait_mid_plan(proc: &mut Proc, api: &str) {
    let pid = proc.child.id();
    wait_until(within(120), "the first plan to start", || {
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("{} exited ({status}) before planning", proc.name);
        }
        has_thread(pid, maintd::planner::THREAD_NAME).then_some(())
    });
    assert_eq!(
        plans_finished(api),
        Some(0.0),
        "the first plan must still be running for this test to mean anything"
    );
}

/// SIGTERM `proc`; it must exit with status 0 within [`STOP_LIMIT`], without having
/// submitted a round.
fn stops_at_once(proc: &mut Proc) {
    let sent = Instant::now();
    proc.signal("TERM");
    let status = proc.wait_exit(sent + STOP_LIMIT);
    assert_eq!(
        status.code(),
        Some(0),
        "{} after SIGTERM: {status}",
        proc.name
    );
    let log = proc.log_text();
    assert!(log.contains("signal received"), "{log}");
    assert!(
        !log.contains("submitting round"),
        "the plan ended before the signal: {log}"
    );
}

#[test]
fn a_daemon_in_the_middle_of_a_plan_stops_within_5_s_of_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &SimSpec::new(NODES, INSTANCES));
    let mut spec = DaemonSpec::on("node1", "1");
    spec.env.push(("MAINTD__PLANNER__BALANCE", "true".into()));
    let mut daemon = Daemon::spawn(&sim, dir.path(), &spec);
    let api = daemon.wait_serving(within(120));
    wait_mid_plan(&mut daemon.proc, &api);
    stops_at_once(&mut daemon.proc);
}

#[test]
fn maintd_sim_in_the_middle_of_a_plan_stops_within_5_s_of_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("balance.toml");
    std::fs::write(&config, "[planner]\nbalance = true\n").unwrap();
    let (nodes, instances) = (NODES.to_string(), INSTANCES.to_string());
    let mut sim = SimWithMaintd::start(
        dir.path(),
        &[
            "--nodes",
            &nodes,
            "--instances",
            &instances,
            "--config",
            &path(&config),
        ],
    );
    let api = sim.api.clone();
    wait_mid_plan(&mut sim.proc, &api);
    stops_at_once(&mut sim.proc);
}
