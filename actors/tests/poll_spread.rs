//! The node pollers spread their first polls over the poll interval instead of all
//! connecting at once, in virtual time.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod harness;

use std::{cell::RefCell, collections::BTreeMap, rc::Rc, time::Duration};

use futures_util::future::LocalBoxFuture;
use harness::{advance, run_paused};
use maintd::{
    backend::{
        sim::{SimBackend, SimDiagnose},
        DiagnoseSource, FetchError,
    },
    clock::Clock,
    config::{Settings, SIM_TOML},
    model::diagnose::Diagnose,
    sim::{SimHandle, SimSpec},
};
use maintd_actors::{
    daemon::app::{self, Wiring},
    daemon::election::MasterCheck,
    daemon::messages::Shutdown,
};
use tokio::time::Instant;

/// The simulator's reports, with the virtual time of every fetch per node.
struct Recording {
    inner: SimDiagnose,
    fetches: Rc<RefCell<BTreeMap<String, Vec<Instant>>>>,
}

impl DiagnoseSource for Recording {
    fn fetch(&self, node: &str) -> LocalBoxFuture<'static, Result<Diagnose, FetchError>> {
        self.fetches
            .borrow_mut()
            .entry(node.to_owned())
            .or_default()
            .push(Instant::now());
        self.inner.fetch(node)
    }
}

#[test]
fn first_polls_are_spread_evenly_over_the_interval() {
    run_paused(|| async {
        const NODES: usize = 8;
        let interval = Duration::from_secs(8);
        let clock = Clock::starting_at(1_800_000_000.0);
        let spec = SimSpec {
            nodes: NODES,
            instances: 8,
            seed: 1,
            job_seconds: 0.0,
            ..SimSpec::default()
        };
        let sim = SimHandle::generate(&spec, clock);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::load_layered(&[SIM_TOML], None).expect("settings");
        settings.daemon.state_dir = dir.path().display().to_string();
        settings.monitoring.poll_interval = interval;
        // No refresh adds pollers later in this test.
        settings.cluster.node_refresh_interval = Duration::from_secs(3600);
        let fetches = Rc::new(RefCell::new(BTreeMap::new()));
        let wiring = Wiring {
            backend: Rc::new(SimBackend::new(sim.sim.clone(), clock)),
            replication: None,
            diagnose: Rc::new(Recording {
                inner: SimDiagnose::new(sim.sim.clone(), clock),
                fetches: fetches.clone(),
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
        advance(3.0 * interval.as_secs_f64()).await;
        daemon.election.do_send(Shutdown);

        let fetches = fetches.borrow();
        assert_eq!(fetches.len(), NODES, "every node polled: {fetches:?}");
        let mut firsts: Vec<(Instant, &String)> =
            fetches.iter().map(|(node, at)| (at[0], node)).collect();
        firsts.sort();
        let start = firsts[0].0;
        let step = interval / NODES as u32;
        for (i, (at, node)) in firsts.iter().enumerate() {
            // Node i in name order polls first at start + i × interval / N: within one
            // interval, one step apart, never two at once.
            let expected = start + step * i as u32;
            let off = if *at > expected {
                *at - expected
            } else {
                expected - *at
            };
            assert!(
                off <= Duration::from_millis(5),
                "{node}: first poll at +{:?}, expected +{:?}",
                *at - start,
                expected - start
            );
        }
        assert!(firsts[NODES - 1].0 - start < interval);
        // Each poller then keeps its pace: its second poll one interval (and the time of
        // the instant fetch) after its first.
        for (node, at) in fetches.iter() {
            assert!(at.len() >= 2, "{node} polled again");
            assert!(at[1] - at[0] >= interval, "{node}: {:?}", at[1] - at[0]);
        }
    });
}
