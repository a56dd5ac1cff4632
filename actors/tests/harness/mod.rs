//! Shared harness: the whole daemon on the in-process simulated cluster, in virtual time.

#![allow(dead_code)]

#[path = "../common/captured_log.rs"]
pub mod captured_log;

use std::{future::Future, rc::Rc, time::Duration};

use actix_web::{body::to_bytes, http::StatusCode, test as web_test};
use maintd::{
    backend::sim::{SimBackend, SimDiagnose},
    clock::Clock,
    config::{Settings, SIM_TOML},
    model::opcode::{OpBody, Opcode, ReasonEntry, TagKind},
    sim::{views::JobView, SimHandle, SimSpec},
};
use maintd_actors::{
    daemon::api,
    daemon::app::{self, Daemon, Wiring},
    daemon::election::MasterCheck,
    daemon::messages::Shutdown,
};
use serde_json::Value;

/// Run `test` on an actix system whose clock is paused: timers fire in virtual time,
/// instantly and deterministically.
pub fn run_paused<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
    });
    system.block_on(test());
}

/// Let `seconds` of virtual time pass.
pub async fn advance(seconds: f64) {
    actix::clock::sleep(Duration::from_secs_f64(seconds)).await;
}

/// The daemon under test with its simulated cluster.
pub struct Harness {
    /// The simulated cluster.
    pub sim: SimHandle,
    /// Daemon settings (state dir inside `dir`).
    pub settings: Settings,
    /// Running daemon, if started.
    pub daemon: Option<Daemon>,
    /// The clock shared by daemon and simulator.
    pub clock: Clock,
    /// Holds the state directory.
    pub dir: tempfile::TempDir,
    /// The ssconf directory the daemon reads, if any.
    pub ssconf_dir: Option<std::path::PathBuf>,
    /// The daemon's planner; `None`: the one the settings describe.
    pub planner: Option<std::sync::Arc<dyn maintd::planner::Planner>>,
}

impl Harness {
    /// A simulated cluster (`job_seconds` per job) and a daemon on it, round delay 1 s.
    pub async fn start(nodes: usize, instances: usize, job_seconds: f64) -> Harness {
        Self::start_with(nodes, instances, job_seconds, |_| {}).await
    }

    /// Like [`Harness::start`], with `configure` applied to the daemon's settings first.
    pub async fn start_with(
        nodes: usize,
        instances: usize,
        job_seconds: f64,
        configure: impl FnOnce(&mut Settings),
    ) -> Harness {
        let spec = SimSpec {
            nodes,
            instances,
            seed: 1,
            job_seconds,
            ..SimSpec::default()
        };
        Self::start_spec(spec, configure).await
    }

    /// A simulated cluster generated from `spec` and a daemon on it, configured by
    /// `configure`.
    pub async fn start_spec(spec: SimSpec, configure: impl FnOnce(&mut Settings)) -> Harness {
        Self::start_planning_with(spec, configure, None).await
    }

    /// Like [`Harness::start_spec`], the daemon planning with `planner` (when `Some`)
    /// instead of the planner its settings describe.
    pub async fn start_planning_with(
        spec: SimSpec,
        configure: impl FnOnce(&mut Settings),
        planner: Option<std::sync::Arc<dyn maintd::planner::Planner>>,
    ) -> Harness {
        let clock = Clock::starting_at(1_800_000_000.0);
        let sim = SimHandle::generate(&spec, clock);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::load_layered(&[SIM_TOML], None).expect("settings");
        settings.daemon.state_dir = dir.path().display().to_string();
        settings.rounds.round_delay = Duration::from_secs(1);
        configure(&mut settings);
        let mut harness = Harness {
            sim,
            settings,
            daemon: None,
            clock,
            dir,
            ssconf_dir: None,
            planner,
        };
        harness.start_daemon().await;
        harness
    }

    /// (Re)start the daemon over the same state directory and cluster; returns once it
    /// has established mastership and serves its API.
    pub async fn start_daemon(&mut self) {
        let wiring = Wiring {
            backend: Rc::new(SimBackend::new(self.sim.sim.clone(), self.clock)),
            replication: None,
            diagnose: Rc::new(SimDiagnose::new(self.sim.sim.clone(), self.clock)),
            load: Some(Rc::new(SimDiagnose::new(self.sim.sim.clone(), self.clock))),
            master_check: MasterCheck::AskCluster {
                node_name: "node1".into(),
                ssconf_dir: self.ssconf_dir.clone(),
                vote: None,
            },
            exit_if_not_master: false,
            clock: self.clock,
            planner: self.planner.clone(),
        };
        self.daemon = Some(app::start(&self.settings, wiring).expect("daemon starts"));
        self.wait_for(10.0, "mastership", async |h: &Harness| {
            (h.api("GET", "/1/status").await.0 == StatusCode::OK).then_some(())
        })
        .await;
    }

    /// Stop the daemon (all actors).
    pub async fn stop_daemon(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.election.do_send(Shutdown);
        }
        advance(0.5).await;
    }

    /// Call maintd's HTTP API: (status, JSON body).
    pub async fn api(&self, method: &str, path: &str) -> (StatusCode, Value) {
        self.api_with_body(method, path, "").await
    }

    /// Send `request` to maintd's HTTP API (open access), from a fixed client address.
    async fn call_api(&self, request: web_test::TestRequest) -> actix_web::dev::ServiceResponse {
        let daemon = self.daemon.as_ref().expect("daemon running");
        let app = web_test::init_service(api::app(
            daemon.link.clone(),
            self.clock,
            std::sync::Arc::new(maintd_actors::daemon::access::ApiAccess::open()),
            daemon.metrics.clone(),
        ))
        .await;
        let request = request.peer_addr("127.0.0.9:40000".parse().expect("address"));
        web_test::call_service(&app, request.to_request()).await
    }

    /// Call maintd's HTTP API with a request body: (status, JSON body).
    pub async fn api_with_body(&self, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
        let request = match method {
            "GET" => web_test::TestRequest::get(),
            "POST" => web_test::TestRequest::post(),
            other => panic!("method {other}"),
        };
        let response = self
            .call_api(request.uri(path).set_payload(body.to_owned()))
            .await;
        let status = response.status();
        let body = to_bytes(response.into_body()).await.unwrap_or_default();
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, value)
    }

    /// `GET /metrics` with `accept` as the Accept header: (status, content type, body).
    pub async fn scrape(&self, accept: Option<&str>) -> (StatusCode, String, String) {
        let mut request = web_test::TestRequest::get().uri("/metrics");
        if let Some(accept) = accept {
            request = request.insert_header(("Accept", accept));
        }
        let response = self.call_api(request).await;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = to_bytes(response.into_body()).await.unwrap_or_default();
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// The samples of `GET /metrics` (OpenMetrics, as Prometheus asks).
    pub async fn metrics(&self) -> Vec<maintd::metrics::Sample> {
        let (status, _, body) = self
            .scrape(Some("application/openmetrics-text; version=1.0.0"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        maintd::metrics::parse_exposition(&body).expect("a valid exposition")
    }

    /// `/1/status`, or `None` while maintd is idle (not master).
    pub async fn try_incidents(&self) -> Option<Vec<Value>> {
        let (status, body) = self.api("GET", "/1/status").await;
        (status == StatusCode::OK).then(|| body.as_array().cloned().unwrap_or_default())
    }

    /// `/1/status`.
    pub async fn incidents(&self) -> Vec<Value> {
        let (status, body) = self.api("GET", "/1/status").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array().cloned().unwrap_or_default()
    }

    /// Advance virtual time in small steps until `check` holds; panic after `limit` seconds.
    pub async fn wait_for<T>(
        &self,
        limit: f64,
        what: &str,
        mut check: impl AsyncFnMut(&Harness) -> Option<T>,
    ) -> T {
        let mut waited = 0.0;
        loop {
            if let Some(found) = check(self).await {
                return found;
            }
            assert!(
                waited < limit,
                "timed out after {limit} virtual seconds waiting for {what}"
            );
            advance(0.25).await;
            waited += 0.25;
        }
    }

    /// The incident with `uuid` reaches `status`.
    pub async fn wait_status(&self, uuid: &str, status: &str, limit: f64) -> Value {
        self.wait_for(
            limit,
            &format!("incident {uuid} {status}"),
            async |h: &Harness| {
                h.try_incidents()
                    .await?
                    .into_iter()
                    .find(|i| i["uuid"] == uuid && i["repair-status"] == status)
            },
        )
        .await
    }

    /// Wait for the first incident on `node` and return it.
    pub async fn wait_incident_on(&self, node: &str, limit: f64) -> Value {
        self.wait_for(
            limit,
            &format!("an incident on {node}"),
            async |h: &Harness| {
                h.try_incidents()
                    .await?
                    .into_iter()
                    .find(|i| i["node"] == node)
            },
        )
        .await
    }

    /// Wait until no incident is left.
    pub async fn wait_no_incidents(&self, limit: f64) {
        self.wait_for(limit, "no incidents", async |h: &Harness| {
            h.try_incidents().await?.is_empty().then_some(())
        })
        .await
    }

    /// Set the diagnose a node reports from now on.
    pub fn report(&self, node: &str, diagnose: Value) {
        let now = self.clock.now();
        self.sim
            .lock()
            .set_diagnose(node, diagnose, now)
            .expect("known node");
    }

    /// The simulator's node view.
    pub fn node(&self, node: &str) -> maintd::sim::views::NodeView {
        let now = self.clock.now();
        self.sim.lock().node_view(node, now).expect("known node")
    }

    /// Run `ops` as an operator's job (not maintd's) and return its id.
    pub fn operator_job(&self, ops: Vec<OpBody>) -> u64 {
        let now = self.clock.now();
        let ops = ops
            .into_iter()
            .map(|body| Opcode {
                body,
                reason: vec![ReasonEntry(
                    "gnt:client:gnt-debug".into(),
                    "operator".into(),
                    0,
                )],
            })
            .collect();
        let id = self.sim.lock().submit_job(ops, now).expect("job accepted");
        id.0
    }

    /// Add a tag to the cluster (`None`), a node or an instance as an operator would
    /// (`gnt-cluster add-tags` and friends), and return at once.
    pub fn add_tag(&self, kind: TagKind, name: Option<&str>, tag: &str) -> u64 {
        self.operator_job(vec![OpBody::TagsSet {
            kind,
            name: name.map(str::to_owned),
            tags: vec![tag.to_owned()],
        }])
    }

    /// Remove a tag as an operator would.
    pub fn remove_tag(&self, kind: TagKind, name: Option<&str>, tag: &str) -> u64 {
        self.operator_job(vec![OpBody::TagsDel {
            kind,
            name: name.map(str::to_owned),
            tags: vec![tag.to_owned()],
        }])
    }

    /// The simulator's cluster as the daemon would see it.
    pub fn snapshot(&self) -> maintd::model::cluster::ClusterSnapshot {
        let now = self.clock.now();
        self.sim.lock().snapshot(now)
    }

    /// Every job in the simulated queue.
    pub fn jobs(&self) -> Vec<JobView> {
        let now = self.clock.now();
        self.sim.lock().job_views(now)
    }

    /// The node hosting the most primary instances (and secondaries), not the master.
    pub fn busiest_node(&self) -> String {
        self.busiest_node_except(&[])
    }

    /// The busiest non-master node other than those in `except`.
    pub fn busiest_node_except(&self, except: &[&str]) -> String {
        let now = self.clock.now();
        let views = self.sim.lock().node_views(now);
        views
            .into_iter()
            .filter(|n| !n.master && !except.contains(&n.name.as_str()))
            .max_by_key(|n| {
                (
                    n.primary_instances.len(),
                    n.secondary_instances.len(),
                    std::cmp::Reverse(n.name.clone()),
                )
            })
            .map(|n| n.name)
            .expect("a non-master node")
    }
}

/// The reason-trail texts of every opcode of a job with maintd's source.
pub fn maintd_reasons(job: &JobView) -> Vec<String> {
    job.ops
        .iter()
        .flat_map(|op| op["reason"].as_array().cloned().unwrap_or_default())
        .filter(|entry| entry[0] == "gnt:daemon:maintd")
        .filter_map(|entry| entry[1].as_str().map(str::to_owned))
        .collect()
}
