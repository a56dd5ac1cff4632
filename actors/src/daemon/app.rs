//! The single place that wires the daemon's actor graph: from the settings ([`serve`],
//! for `maintd daemon` and `maintd sim`) or from parts the tests provide ([`start`]).

use std::{path::PathBuf, rc::Rc, sync::Arc};

use actix::prelude::*;
use maintd::{
    backend::{
        agent_repair::{self, AgentRepairSettings, AgentRepairs},
        http_diagnose::{HttpDiagnose, HttpLoad},
        luxi::{LuxiBackend, LuxiConfig},
        rapi::{RapiBackend, RapiConfig},
        replica::{CandidateSource, ReplicaClient},
        ClusterBackend, DiagnoseSource, LoadSource,
    },
    backoff::Backoff,
    clock::Clock,
    config::{BackendKind, PlannerEngine, RepairMethod, Settings},
    metrics::{Metrics, TimedPlanner},
    model::incident::{MaintenanceState, StatePolicy},
    notify::QUEUE_FILE,
    planner::{HtoolsPlanner, Planner, PlannerThread, SimplePlanner},
    signing::KeySource,
    store::{JsonStore, StoreError},
};
use tracing::{info, warn};

use super::{
    api::{self, RegistryLink, WebActor},
    election::{MasterCheck, MasterElection},
    notifier::NotifyDeps,
    poller::PollTiming,
    registry::{RegistryConfig, STATE_FILE},
    round_planner::RoundTiming,
    state_replicator::ReplicationDeps,
    supervisor::SupervisorDeps,
};
use crate::{
    daemon::access::{AllowedHosts, ApiAccess, UsersFile, UsersSource},
    http_server::{HttpLimits, ListenAddress, Listeners},
    startup,
};

/// What the daemon needs besides its settings.
pub struct Wiring {
    /// Job queue and configuration.
    pub backend: Rc<dyn ClusterBackend>,
    /// Diagnose reports.
    pub diagnose: Rc<dyn DiagnoseSource>,
    /// CPU load reports (used only when balancing by CPU load).
    pub load: Option<Rc<dyn LoadSource>>,
    /// How mastership is established.
    pub master_check: MasterCheck,
    /// Exit with code 11 if the first check says this node is not master.
    pub exit_if_not_master: bool,
    /// Time source.
    pub clock: Clock,
    /// Copies of the state on the master candidates; `None`: off.
    pub replication: Option<ReplicationDeps>,
    /// The planner; `None`: the one `[planner]` describes (tests bring their own).
    pub planner: Option<Arc<dyn Planner>>,
}

/// Handles to the running daemon.
pub struct Daemon {
    /// The gate; send it `Shutdown` to stop all work.
    pub election: Addr<MasterElection>,
    /// Where the HTTP API finds the registry.
    pub link: RegistryLink,
    /// While on, every save of the state fails (fault drills and tests).
    pub save_faults: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The metrics `GET /metrics` serves, shared with the actors that count events.
    pub metrics: Arc<Metrics>,
}

/// The supervisor's dependencies from settings; events are counted in `metrics`.
pub fn supervisor_deps(
    settings: &Settings,
    wiring: &Wiring,
    link: RegistryLink,
    metrics: Arc<Metrics>,
) -> Result<SupervisorDeps, StoreError> {
    let store = JsonStore::open(&PathBuf::from(&settings.daemon.state_dir), STATE_FILE)?;
    let planner: Arc<dyn Planner> = match (&wiring.planner, settings.planner.engine) {
        (Some(planner), _) => planner.clone(),
        (None, PlannerEngine::Htools) => Arc::new(HtoolsPlanner::new(settings.planner.htools())),
        (None, PlannerEngine::Simple) => Arc::new(SimplePlanner),
    };
    // One planner thread for the life of the daemon, whichever master term plans on it.
    let planner = PlannerThread::new(Arc::new(TimedPlanner::new(planner, metrics.clone())));
    Ok(SupervisorDeps {
        backend: wiring.backend.clone(),
        diagnose: wiring.diagnose.clone(),
        load: wiring
            .load
            .clone()
            .filter(|_| settings.planner.balance && settings.planner.balance_by_cpu_load),
        planner,
        store,
        link,
        poll: PollTiming {
            interval: settings.monitoring.poll_interval,
            backoff: Backoff::new(
                settings.monitoring.backoff_initial,
                settings.monitoring.backoff_max,
            ),
        },
        max_concurrent_polls: settings.monitoring.max_concurrent_polls,
        rounds: RoundTiming {
            round_delay: settings.rounds.round_delay,
            error_backoff: settings.rounds.error_backoff,
        },
        job_poll_interval: settings.rounds.job_poll_interval,
        node_refresh_interval: settings.cluster.node_refresh_interval,
        clock: wiring.clock,
        registry: registry_config(settings),
        replication: wiring.replication.clone(),
        metrics,
        notify: None,
    })
}

/// The notifier's dependencies from `[notify]`; `None` when it is off. The errors name
/// the setting at fault, so that maintd stops at start with one clear line rather than
/// run without the notifications it was asked for.
pub fn notify_deps(settings: &Settings, clock: Clock) -> Result<Option<NotifyDeps>, String> {
    let notify = &settings.notify;
    if !notify.enabled() {
        return Ok(None);
    }
    let secret = maintd::notify::load_secret(std::path::Path::new(&notify.secret_file))
        .map_err(|e| format!("notify.secret_file: {e}"))?;
    let client = if notify.webhook_url.starts_with("https://") {
        let ca = std::path::Path::new(&notify.ca_file);
        let tls = maintd::backend::tls::pem_certificates(ca)
            .and_then(|certificates| {
                maintd::backend::tls::client_config(Vec::new(), Some(certificates), None)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("notify.ca_file: {}: {e}", ca.display()))?;
        maintd::backend::tls::https_client(tls, notify.timeout)
    } else {
        awc::Client::builder()
            .timeout(notify.timeout)
            .disable_redirects()
            .finish()
    };
    let store = JsonStore::open(&PathBuf::from(&settings.daemon.state_dir), QUEUE_FILE)
        .map_err(|e| format!("daemon.state_dir: {e}"))?;
    info!(target: "maintd", url = %notify.webhook_url, "incident transitions are posted to the webhook");
    Ok(Some(NotifyDeps {
        url: notify.webhook_url.clone(),
        client,
        secret,
        store,
        queue_limit: notify.queue_limit,
        timeout: notify.timeout,
        backoff: notify.backoff(),
        clock,
    }))
}

/// The registry's settings: the brakes and the job timeout.
pub fn registry_config(settings: &Settings) -> RegistryConfig {
    RegistryConfig {
        limits: settings.safety.limits(),
        policy: StatePolicy {
            confirm_polls: settings.safety.confirm_polls,
            flap_budget: Some(settings.safety.max_incidents_per_node_per_hour),
            escalate_to_failover: settings.rounds.escalate_to_failover,
            forgotten_kept: settings.safety.history_size,
        },
        dry_run: settings.safety.dry_run,
        job_timeout: settings.rounds.job_timeout,
    }
}

/// Why the daemon cannot start on its state directory.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The directory cannot be created or written.
    #[error("the state directory {dir} (setting daemon.state_dir, flag --state-dir) is not usable: {source}")]
    StateDir {
        /// The directory.
        dir: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The state file cannot be read or is not valid; it is left untouched.
    #[error("{0}")]
    StateFile(#[source] StoreError),
    /// `[notify]` asks for notifications that cannot be made (the message names the
    /// setting).
    #[error("{0}")]
    Notify(String),
}

/// Check, before any work, that the state directory takes files and that the state file,
/// if any, is valid: maintd never works on state it could not save or read.
pub fn check_state(store: &JsonStore, dir: &str) -> Result<(), StartError> {
    store
        .check_writable()
        .map_err(|source| StartError::StateDir {
            dir: dir.to_owned(),
            source,
        })?;
    store
        .load::<MaintenanceState>()
        .map_err(StartError::StateFile)?;
    Ok(())
}

/// Start the daemon's actors (not the web server; see [`crate::daemon::api::WebActor`]), after
/// [`check_state`].
pub fn start(settings: &Settings, wiring: Wiring) -> Result<Daemon, StartError> {
    let link = RegistryLink::default();
    let metrics = Arc::new(Metrics::new());
    let dir = &settings.daemon.state_dir;
    let mut deps =
        supervisor_deps(settings, &wiring, link.clone(), metrics.clone()).map_err(|source| {
            StartError::StateDir {
                dir: dir.clone(),
                source,
            }
        })?;
    check_state(&deps.store, dir)?;
    deps.notify = notify_deps(settings, wiring.clock).map_err(StartError::Notify)?;
    let save_faults = deps.store.save_fault_switch();
    let interval = settings.daemon.master_check_interval;
    let election = MasterElection::new(
        wiring.backend.clone(),
        wiring.master_check.clone(),
        interval,
        deps,
        wiring.exit_if_not_master,
    )
    .start();
    Ok(Daemon {
        election,
        link,
        save_faults,
        metrics,
    })
}

/// Who this daemon is among the cluster's nodes.
pub struct Identity {
    /// How mastership is established.
    pub master_check: MasterCheck,
    /// This node's name, as the master candidates are named.
    pub node_name: String,
    /// Where the list of master candidates comes from.
    pub candidates: CandidateSource,
    /// Who may use the API.
    pub api: ApiMode,
}

/// Who may use the API, and how it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiMode {
    /// As `[api]` says: users from Ganeti's RAPI users file, HTTPS with its certificate.
    Configured,
    /// Everyone, over plain HTTP: `maintd sim`, which listens on loopback.
    Open,
}

/// The access rules and listening sockets of the API under `mode`: the errors name the
/// setting at fault, so that maintd stops at start with one clear line.
fn api_access(
    settings: &Settings,
    mode: ApiMode,
    node_name: &str,
    listeners: Listeners,
) -> Result<(ApiAccess, Listeners), String> {
    if mode == ApiMode::Open {
        return Ok((ApiAccess::open(), listeners));
    }
    let api = &settings.api;
    let users = UsersFile::open(std::path::Path::new(&api.users_file))
        .map_err(|e| format!("api.users_file: {e}"))?;
    // This node's names and the cluster's (a browser reaches the master by either).
    let short = node_name.split('.').next().unwrap_or(node_name).to_owned();
    let cluster =
        maintd::backend::ssconf::cluster_name(std::path::Path::new(&settings.cluster.ssconf_dir));
    let hosts = AllowedHosts::new(
        api.allowed_hosts
            .iter()
            .cloned()
            .chain([node_name.to_owned(), short])
            .chain(cluster),
    );
    let listeners = if api.ssl {
        let tls = maintd::backend::tls::server_config(std::path::Path::new(&api.certificate))
            .map_err(|e| format!("api.certificate: {e}"))?;
        listeners.with_tls(tls)
    } else {
        listeners
    };
    let access = ApiAccess::new(
        UsersSource::File(users),
        api.require_authentication,
        Some(hosts),
    );
    Ok((access, listeners))
}

/// The daemon and its HTTP API, running.
pub struct Serving {
    /// The gate; send it `Shutdown` to stop all work.
    pub election: Addr<MasterElection>,
    /// The HTTP API.
    pub api: Addr<WebActor>,
}

/// Build everything the settings describe (the cluster backend, live repairs through the
/// agents, signed diagnose reports, replication), start the daemon and its HTTP API on
/// `listen`. The one place that turns settings into a running daemon, for `maintd daemon`
/// and `maintd sim`.
pub fn serve(
    settings: &Settings,
    identity: Identity,
    listen: &ListenAddress,
    clock: Clock,
) -> Result<Serving, String> {
    // First: a taken port, a missing users file or an unusable certificate stops maintd
    // before it acts on the cluster.
    let listeners = Listeners::bind_setting(listen)?;
    let (access, listeners) = api_access(settings, identity.api, &identity.node_name, listeners)?;
    let scheme = if listeners.is_tls() { "https" } else { "http" };
    let backend: Rc<dyn ClusterBackend> = match settings.cluster.backend {
        BackendKind::Luxi => {
            let luxi = LuxiConfig {
                request_timeout: settings.cluster.luxi_timeout,
                ..LuxiConfig::new(PathBuf::from(&settings.cluster.luxi_socket))
            };
            info!(target: "maintd", socket = %settings.cluster.luxi_socket, "cluster backend: Luxi");
            Rc::new(LuxiBackend::new(luxi))
        }
        BackendKind::Rapi => {
            let rapi = RapiBackend::new(&RapiConfig::from_settings(&settings.cluster))
                .map_err(|e| e.to_string())?;
            info!(target: "maintd", url = %settings.cluster.rapi_url, "cluster backend: RAPI");
            Rc::new(rapi)
        }
    };
    let key = match startup::cluster_key(&settings.cluster.hmac_key, false)? {
        KeySource::Loaded(key) => Some(key),
        KeySource::NotConfigured => {
            warn!(target: "maintd", "no HMAC key configured: diagnose reports are accepted unsigned");
            None
        }
        KeySource::DefaultMissing => {
            warn!(target: "maintd", key = %settings.cluster.hmac_key, "HMAC key file missing: diagnose reports are accepted unsigned");
            None
        }
    };
    let replication = settings.replication.enabled.then(|| ReplicationDeps {
        client: key.clone().map(|key| {
            ReplicaClient::new(
                settings.repair.agent_url.clone(),
                key,
                settings.replication.timeout,
                clock,
            )
        }),
        candidates: identity.candidates,
        me: identity.node_name,
        wait: settings.replication.wait,
        retry: settings.replication.retry_interval,
        clock,
    });
    let backend: Rc<dyn ClusterBackend> = match settings.repair.method {
        RepairMethod::Opcode => backend,
        RepairMethod::Agent => {
            if key.is_none() {
                warn!(target: "maintd", "repair.method = \"agent\" without an HMAC key: live repairs will fail, no repair request can be signed");
            }
            let repairs = AgentRepairs::new(
                backend,
                AgentRepairSettings {
                    url_template: settings.repair.agent_url.clone(),
                    key: key.clone(),
                    timeout: settings.repair.agent_timeout,
                    state_file: PathBuf::from(&settings.daemon.state_dir)
                        .join(agent_repair::STATE_FILE),
                },
                clock,
            )?;
            Rc::new(repairs)
        }
    };
    // One client and connection pool for every poller, for both reports; the pollers
    // never hold more connections than they have permits.
    let mut diagnose = HttpDiagnose::new(
        &settings.monitoring.diagnose_url,
        settings.monitoring.timeout,
        settings.monitoring.max_report_bytes,
    )
    .map_err(|e| e.to_string())?
    .with_connection_limit(settings.monitoring.max_concurrent_polls);
    let load = http_load_source(settings, &diagnose)?;
    if let Some(key) = key {
        info!(target: "maintd", key = %settings.cluster.hmac_key, "diagnose reports must be signed with the cluster's HMAC key");
        diagnose = diagnose.verified_with(key, settings.monitoring.max_report_age, clock);
    }
    let wiring = Wiring {
        backend,
        diagnose: Rc::new(diagnose),
        load: Some(load),
        master_check: identity.master_check,
        exit_if_not_master: true,
        clock,
        replication,
        planner: None,
    };
    let daemon = start(settings, wiring).map_err(|e| e.to_string())?;
    let limits = HttpLimits::new(settings.daemon.max_connections);
    let web = api::serve(
        listeners,
        daemon.link.clone(),
        clock,
        limits,
        std::sync::Arc::new(access),
        daemon.metrics.clone(),
    )
    .map_err(|e| format!("cannot serve on {}: {e}", listen.address))?;
    startup::say(format_args!(
        "maintd API:       {scheme}://{}",
        web.addrs.first().map(|a| a.to_string()).unwrap_or_default()
    ));
    Ok(Serving {
        election: daemon.election,
        api: web.start(),
    })
}

/// The `cpu-avg-load` source of the settings (`monitoring.load_url`), on the client and
/// connection pool of `diagnose`.
pub fn http_load_source(
    settings: &Settings,
    diagnose: &HttpDiagnose,
) -> Result<Rc<dyn LoadSource>, String> {
    let source = HttpLoad::sharing(diagnose, &settings.monitoring.load_url)
        .map_err(|e| format!("monitoring.load_url: {e}"))?;
    Ok(Rc::new(source))
}
