//! Planning off the actor thread: the daemon answers its API while a plan is being
//! computed (in process, in virtual time, with a planner the test holds back).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod harness;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use actix_web::http::StatusCode;
use harness::{run_paused, Harness};
use maintd::{
    model::incident::RoundPlan,
    planner::{HtoolsPlanner, PlanInput, Planner},
    sim::SimSpec,
};
use serde_json::json;

/// The daemon's planner, held back at the first plan that sees a confirmed incident
/// until the test releases it.
struct HeldBack {
    inner: HtoolsPlanner,
    /// Set at the first hold.
    holding: AtomicBool,
    /// Told when a plan is held.
    held: tokio::sync::mpsc::UnboundedSender<()>,
    release: Mutex<mpsc::Receiver<()>>,
    /// Set if a plan went ahead without the test's release: with planning on the actor
    /// thread, the test could never release it (it runs on that thread too).
    gave_up: AtomicBool,
}

/// How long a held plan waits for its release before it goes ahead anyway, so that a
/// daemon planning on its actor thread fails the test instead of hanging it.
const HOLD_LIMIT: Duration = Duration::from_secs(60);

impl Planner for HeldBack {
    fn plan(&self, input: PlanInput<'_>) -> RoundPlan {
        let confirmed = input.incidents.iter().any(|i| i.confirmed);
        if confirmed && !self.holding.swap(true, Ordering::SeqCst) {
            let _ = self.held.send(());
            let release = self.release.lock().unwrap();
            if release.recv_timeout(HOLD_LIMIT).is_err() {
                self.gave_up.store(true, Ordering::SeqCst);
            }
        }
        self.inner.plan(input)
    }
}

#[test]
fn the_api_answers_while_a_round_is_being_planned() {
    run_paused(|| async {
        let (held, mut holds) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = mpsc::channel();
        let planner = Arc::new(HeldBack {
            inner: HtoolsPlanner::default(),
            holding: AtomicBool::new(false),
            held,
            release: Mutex::new(released),
            gave_up: AtomicBool::new(false),
        });
        let spec = SimSpec {
            nodes: 6,
            instances: 12,
            seed: 1,
            job_seconds: 0.2,
            ..SimSpec::default()
        };
        let h = Harness::start_planning_with(spec, |_| {}, Some(planner.clone())).await;
        let node = h.busiest_node();
        h.report(&node, json!({"status": "evacuate"}));
        // The first round that sees the confirmed incident is held.
        holds.recv().await.expect("a plan is held");
        // Meanwhile the API answers: the incident is known, nothing is submitted yet.
        let incidents = h.incidents().await;
        let incident = incidents
            .iter()
            .find(|i| i["node"] == node.as_str())
            .unwrap_or_else(|| panic!("no incident on {node}: {incidents:?}"));
        assert_eq!(incident["repair-status"], "noted", "{incident}");
        assert_eq!(incident["jobs"], json!([]), "{incident}");
        let (status, nodes) = h.api("GET", "/1/nodes").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(nodes.as_array().map(Vec::len), Some(6), "{nodes}");
        let (status, _, _) = h.scrape(None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(h.jobs().is_empty(), "nothing submitted while planning");
        // Released, the round goes on and submits the evacuation's first job.
        release.send(()).unwrap();
        let uuid = incident["uuid"].as_str().unwrap().to_owned();
        h.wait_for(30.0, "the evacuation's first job", async |h: &Harness| {
            let incidents = h.try_incidents().await?;
            let incident = incidents.iter().find(|i| i["uuid"] == uuid.as_str())?;
            (!incident["jobs"].as_array()?.is_empty()).then_some(())
        })
        .await;
        assert!(
            !planner.gave_up.load(Ordering::SeqCst),
            "the plan went ahead without the release"
        );
    });
}
