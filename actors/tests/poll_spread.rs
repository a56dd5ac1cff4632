//! The node pollers poll each node at its own fixed place in the poll interval (from its
//! name, so that other nodes joining move nothing), and never have more polls in flight
//! than `monitoring.max_concurrent_polls`; in virtual time.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod harness;

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    rc::Rc,
    time::Duration,
};

use futures_util::future::LocalBoxFuture;
use harness::{advance, run_paused};
use maintd::{
    backend::{
        sim::{SimBackend, SimDiagnose},
        DiagnoseSource, FetchError,
    },
    clock::Clock,
    config::{Settings, SIM_TOML},
    daemon::polling::poll_offset,
    model::diagnose::Diagnose,
    sim::{SimHandle, SimSpec},
};
use maintd_actors::{
    daemon::app::{self, Daemon, Wiring},
    daemon::election::MasterCheck,
    daemon::messages::Shutdown,
};

/// The simulator's reports, each fetch taking `delay`: records the Unix time (on the
/// daemon's clock) of every fetch per node, and the most fetches ever in flight at once.
struct Recording {
    inner: SimDiagnose,
    clock: Clock,
    delay: Duration,
    fetches: Rc<RefCell<BTreeMap<String, Vec<f64>>>>,
    in_flight: Rc<Cell<usize>>,
    most_in_flight: Rc<Cell<usize>>,
}

impl DiagnoseSource for Recording {
    fn fetch(&self, node: &str) -> LocalBoxFuture<'static, Result<Diagnose, FetchError>> {
        self.fetches
            .borrow_mut()
            .entry(node.to_owned())
            .or_default()
            .push(self.clock.now());
        let (in_flight, most) = (self.in_flight.clone(), self.most_in_flight.clone());
        in_flight.set(in_flight.get() + 1);
        most.set(most.get().max(in_flight.get()));
        let (inner, node, delay) = (self.inner.clone(), node.to_owned(), self.delay);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let report = inner.fetch(&node).await;
            in_flight.set(in_flight.get() - 1);
            report
        })
    }
}

/// A daemon over a simulated cluster of `nodes` nodes in virtual time, its fetches
/// recorded, each taking `delay`.
struct Setup {
    sim: SimHandle,
    clock: Clock,
    daemon: Daemon,
    fetches: Rc<RefCell<BTreeMap<String, Vec<f64>>>>,
    most_in_flight: Rc<Cell<usize>>,
    _dir: tempfile::TempDir,
}

fn start(nodes: usize, delay: Duration, configure: impl FnOnce(&mut Settings)) -> Setup {
    let clock = Clock::starting_at(1_800_000_000.0);
    let spec = SimSpec {
        nodes,
        instances: nodes,
        seed: 1,
        job_seconds: 0.0,
        ..SimSpec::default()
    };
    let sim = SimHandle::generate(&spec, clock);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::load_layered(&[SIM_TOML], None).expect("settings");
    settings.daemon.state_dir = dir.path().display().to_string();
    configure(&mut settings);
    let fetches = Rc::new(RefCell::new(BTreeMap::new()));
    let most_in_flight = Rc::new(Cell::new(0));
    let wiring = Wiring {
        backend: Rc::new(SimBackend::new(sim.sim.clone(), clock)),
        replication: None,
        diagnose: Rc::new(Recording {
            inner: SimDiagnose::new(sim.sim.clone(), clock),
            clock,
            delay,
            fetches: fetches.clone(),
            in_flight: Rc::new(Cell::new(0)),
            most_in_flight: most_in_flight.clone(),
        }),
        load: None,
        master_check: MasterCheck::AskCluster {
            node_name: "node1".into(),
            ssconf_dir: None,
            vote: None,
        },
        exit_if_not_master: false,
        clock,
        planner: None,
    };
    let daemon = app::start(&settings, wiring).expect("daemon starts");
    Setup {
        sim,
        clock,
        daemon,
        fetches,
        most_in_flight,
        _dir: dir,
    }
}

/// How far `at` (Unix seconds) lies from `node`'s slots: the instants `poll_offset`
/// past a multiple of `interval` since the epoch.
fn off_slot(interval: Duration, node: &str, at: f64) -> Duration {
    let period = interval.as_secs_f64();
    let phase = (at - poll_offset(interval, node).as_secs_f64()).rem_euclid(period);
    Duration::from_secs_f64(phase.min(period - phase))
}

#[test]
fn every_poll_of_a_node_keeps_its_place_in_the_interval() {
    run_paused(|| async {
        let interval = Duration::from_secs(8);
        let setup = start(8, Duration::ZERO, |settings| {
            settings.monitoring.poll_interval = interval;
            settings.cluster.node_refresh_interval = Duration::from_secs(3);
        });
        advance(2.5 * interval.as_secs_f64()).await;
        // Two nodes join: the others' polls stay where they were, and the newcomers poll
        // at their own places, not at a place given by the size of the cluster.
        let now = setup.clock.now();
        for node in ["node9", "node10"] {
            setup.sim.lock().add_node(node, now).expect("node added");
        }
        advance(3.0 * interval.as_secs_f64()).await;
        setup.daemon.election.do_send(Shutdown);

        let fetches = setup.fetches.borrow();
        assert_eq!(fetches.len(), 10, "every node polled: {fetches:?}");
        for (node, times) in fetches.iter() {
            let expected = if node == "node9" || node == "node10" {
                2
            } else {
                5
            };
            assert!(times.len() >= expected, "{node} polled {times:?}");
            for at in times {
                let off = off_slot(interval, node, *at);
                assert!(
                    off <= Duration::from_millis(5),
                    "{node} polled {off:?} off its slot, at {at}"
                );
            }
            // One poll per slot: consecutive polls one interval apart.
            for pair in times.windows(2) {
                let gap = pair[1] - pair[0];
                assert!(
                    (gap - interval.as_secs_f64()).abs() < 0.01,
                    "{node}: {gap} s between polls"
                );
            }
        }
        // The places are spread: not all in one part of the interval.
        let mut offsets: Vec<Duration> = fetches
            .keys()
            .map(|node| poll_offset(interval, node))
            .collect();
        offsets.sort();
        assert!(offsets[offsets.len() - 1] - offsets[0] > interval / 2);
    });
}

#[test]
fn polls_in_flight_never_pass_the_cap() {
    run_paused(|| async {
        const NODES: usize = 20;
        const CAP: usize = 4;
        let interval = Duration::from_secs(2);
        // Each fetch takes longer than the interval: uncapped, all 20 nodes would have a
        // poll in flight at once.
        let setup = start(NODES, Duration::from_secs(3), |settings| {
            settings.monitoring.poll_interval = interval;
            settings.monitoring.max_concurrent_polls = CAP;
            settings.cluster.node_refresh_interval = Duration::from_secs(3600);
        });
        advance(40.0).await;
        setup.daemon.election.do_send(Shutdown);

        assert_eq!(
            setup.most_in_flight.get(),
            CAP,
            "in flight at most, and at times"
        );
        let fetches = setup.fetches.borrow();
        assert_eq!(fetches.len(), NODES, "every node polled: {fetches:?}");
        // The waiting polls are late, not failed: every node is polled again and again.
        for (node, times) in fetches.iter() {
            assert!(times.len() >= 2, "{node} polled {times:?}");
        }
    });
}
