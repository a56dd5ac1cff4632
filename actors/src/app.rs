//! The single place that wires the actor graph, used by `main` and by the tests.

use std::{path::PathBuf, rc::Rc, time::Duration};

use actix::prelude::*;
use maintd::{
    backend::{http_diagnose::HttpLoad, ClusterBackend, DiagnoseSource, LoadSource},
    clock::Clock,
    config::PlannerEngine,
    config::{seconds, Settings},
    model::incident::{MaintenanceState, StatePolicy},
    planner::{HtoolsPlanner, Planner, SimplePlanner},
    store::{JsonStore, StoreError},
};

use crate::{
    election::{MasterCheck, MasterElection},
    planner::RoundTiming,
    poller::PollTiming,
    registry::{RegistryConfig, STATE_FILE},
    replicator::ReplicationDeps,
    supervisor::SupervisorDeps,
    web::RegistryLink,
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
}

/// Handles to the running daemon.
pub struct Daemon {
    /// The gate; send it `Shutdown` to stop all work.
    pub election: Addr<MasterElection>,
    /// Where the HTTP API finds the registry.
    pub link: RegistryLink,
    /// While on, every save of the state fails (fault drills and tests).
    pub save_faults: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The supervisor's dependencies from settings.
pub fn supervisor_deps(
    settings: &Settings,
    wiring: &Wiring,
    link: RegistryLink,
) -> Result<SupervisorDeps, StoreError> {
    let store = JsonStore::open(&PathBuf::from(&settings.daemon.state_dir), STATE_FILE)?;
    let planner: Rc<dyn Planner> = match settings.planner.engine {
        PlannerEngine::Htools => Rc::new(HtoolsPlanner::new(settings.planner.htools())),
        PlannerEngine::Simple => Rc::new(SimplePlanner),
    };
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
            interval: seconds(settings.monitoring.poll_interval),
            backoff_initial: seconds(settings.monitoring.backoff_initial),
            backoff_max: seconds(settings.monitoring.backoff_max),
        },
        rounds: RoundTiming {
            round_delay: seconds(settings.rounds.round_delay),
            error_backoff: seconds(settings.rounds.error_backoff),
        },
        job_poll_interval: seconds(settings.rounds.job_poll_interval),
        node_refresh_interval: seconds(settings.cluster.node_refresh_interval),
        clock: wiring.clock,
        registry: registry_config(settings),
        replication: wiring.replication.clone(),
    })
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

/// Start the daemon's actors (not the web server; see [`crate::web::WebActor`]), after
/// [`check_state`].
pub fn start(settings: &Settings, wiring: Wiring) -> Result<Daemon, StartError> {
    let link = RegistryLink::default();
    let dir = &settings.daemon.state_dir;
    let deps = supervisor_deps(settings, &wiring, link.clone()).map_err(|source| {
        StartError::StateDir {
            dir: dir.clone(),
            source,
        }
    })?;
    check_state(&deps.store, dir)?;
    let save_faults = deps.store.save_fault_switch();
    let interval: Duration = seconds(settings.daemon.master_check_interval);
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
    })
}

/// The `cpu-avg-load` source of the settings (`monitoring.load_url`). Must be called
/// inside the actix runtime.
pub fn http_load_source(settings: &Settings) -> Result<Rc<dyn LoadSource>, String> {
    let source = HttpLoad::new(
        &settings.monitoring.load_url,
        seconds(settings.monitoring.timeout),
        settings.monitoring.max_report_bytes,
    )
    .map_err(|e| format!("monitoring.load_url: {e}"))?;
    Ok(Rc::new(source))
}
