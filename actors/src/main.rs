//! The `maintd` binary: parses the command line and starts the pieces; all logic lives in
//! the library crates.

use std::{path::PathBuf, process::ExitCode, rc::Rc};

use actix::prelude::*;
use clap::Parser;
use maintd::{
    backend::{
        agent_repair::{self, AgentRepairSettings, AgentRepairs},
        http_diagnose::HttpDiagnose,
        luxi::{LuxiBackend, LuxiConfig},
        rapi::RapiBackend,
        replica::{CandidateSource, ReplicaClient},
        ClusterBackend,
    },
    clock::Clock,
    config::{seconds, BackendKind, RepairMethod, Settings, DEFAULT_HMAC_KEY, SIM_TOML},
    limits::{raise_nofile_limit, show},
    signing::{load_key, HmacKey, KeySource},
    sim::{SimHandle, SimSpec},
};
use maintd_actors::{
    agent_app,
    app::{self, Wiring},
    cli::{AgentArgs, Cli, Command, CommonArgs, DaemonArgs, SimArgs, StateAction},
    client,
    election::{MasterCheck, VoteSettings},
    http_server::HttpLimits,
    messages::Shutdown,
    replicator::ReplicationDeps,
    simulation, telemetry,
    web::WebActor,
};
use tracing::{error, info, warn};

/// Print a line on stdout. A closed or full stdout must never crash maintd (`println!`
/// panics when it cannot write).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Status(args) => run_client(async move { client::status(&args).await }),
        Command::Cancel { uuid, client } => {
            run_client(async move { client::cancel(&client, &uuid).await })
        }
        Command::Pause { reason, client } => {
            run_client(async move { client::pause(&client, reason).await })
        }
        Command::Resume { client } => run_client(async move { client::resume(&client).await }),
        Command::Safety(client) => run_client(async move { client::safety(&client).await }),
        Command::State {
            action: StateAction::Check(args),
        } => maintd_actors::state_cmd::check(&args),
        Command::State {
            action: StateAction::Reset(args),
        } => maintd_actors::state_cmd::reset(&args),
        Command::Plan(args) => maintd_actors::plan::run(&args),
        Command::Daemon(args) => run_daemon(args),
        Command::Agent(args) => run_agent(args),
        Command::Sim(args) => run_sim(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "maintd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_client(
    request: impl std::future::Future<Output = Result<String, client::ClientError>>,
) -> Result<u8, String> {
    let text = System::new().block_on(request).map_err(|e| e.to_string())?;
    use std::io::Write as _;
    let _ = write!(std::io::stdout(), "{text}");
    Ok(0)
}

/// Settings from the layers, the config file, the environment and the shared flags.
fn settings(layers: &[&str], common: &CommonArgs) -> Result<Settings, String> {
    let mut settings =
        Settings::load_layered(layers, common.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(dir) = &common.state_dir {
        settings.daemon.state_dir = dir.display().to_string();
    }
    if let Some(delay) = common.round_delay {
        settings.rounds.round_delay = delay;
    }
    if let Some(interval) = common.poll_interval {
        settings.monitoring.poll_interval = interval;
    }
    if common.dry_run {
        settings.safety.dry_run = true;
    }
    settings.validate().map_err(|e| e.to_string())?;
    Ok(settings)
}

/// Raise the open-file soft limit to the hard one (see [`maintd::limits`]) and warn when
/// `max_connections` API clients could take more than half of it. A failure only costs
/// headroom, so it is a warning.
fn raise_open_file_limit(max_connections: usize) {
    match raise_nofile_limit() {
        Ok(limit) => {
            info!(target: "maintd", before = %show(limit.before), soft = %show(limit.soft), hard = %show(limit.hard), "open-file limit");
            if let Some(soft) = limit.soft {
                if u64::try_from(max_connections).unwrap_or(u64::MAX) > soft / 2 {
                    warn!(target: "maintd", max_connections, limit = soft, "max_connections is more than half the open-file limit: raise LimitNOFILE= or lower max_connections, or polls and state saves may run out of descriptors");
                }
            }
        }
        Err(e) => warn!(target: "maintd", error = %e, "open-file limit not raised"),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn run_daemon(args: DaemonArgs) -> Result<u8, String> {
    telemetry::init(args.common.debug);
    telemetry::exit_on_panic();
    if args.no_voting && !args.yes_do_it {
        return Err("--no-voting is dangerous; confirm it with --yes-do-it".into());
    }
    let mut settings = settings(&[], &args.common)?;
    if let Some(port) = args.port {
        settings.daemon.port = port;
    }
    if let Some(bind) = args.bind {
        settings.daemon.bind = bind;
    }
    if let Some(socket) = args.luxi_socket {
        settings.cluster.luxi_socket = socket;
    }
    if let Some(url) = args.rapi_url {
        settings.cluster.rapi_url = url;
        settings.cluster.backend = BackendKind::Rapi;
    }
    if let Some(url) = args.diagnose_url {
        settings.monitoring.diagnose_url = url;
    }
    if let Some(name) = args.node_name {
        settings.daemon.node_name = name;
    }
    settings.validate().map_err(|e| e.to_string())?;
    raise_open_file_limit(settings.daemon.max_connections);
    let node_name = if settings.daemon.node_name.is_empty() {
        host_name()
    } else {
        settings.daemon.node_name.clone()
    };
    let off_cluster =
        settings.cluster.backend == BackendKind::Rapi && settings.daemon.node_name.is_empty();
    let candidates = if settings.replication.candidates.is_empty() {
        CandidateSource::Ssconf(settings.cluster.ssconf_dir.clone().into())
    } else {
        CandidateSource::Listed(settings.replication.candidates.clone())
    };
    let me = node_name.clone();
    let master_check = if args.no_voting {
        MasterCheck::Assume
    } else if off_cluster {
        // RAPI always reaches the master, wherever maintd runs; there is no local role to
        // lose, and keeping to a single maintd is the deployment's business.
        warn!(target: "maintd", url = %settings.cluster.rapi_url, "RAPI backend without daemon.node_name: no master check, run a single maintd for this cluster");
        MasterCheck::Assume
    } else {
        MasterCheck::AskCluster {
            node_name,
            ssconf_dir: Some(settings.cluster.ssconf_dir.clone().into()),
            vote: settings.cluster.voting.then(|| VoteSettings {
                data_dir: settings.cluster.ssconf_dir.clone().into(),
                port: settings.cluster.noded_port,
                timeout: seconds(settings.cluster.noded_timeout),
            }),
        }
    };
    run_system(move || {
        let clock = Clock::new();
        let listen = format!("{}:{}", settings.daemon.bind, settings.daemon.port);
        start_daemon(&settings, master_check, (me, candidates), &listen, clock)
    })
}

fn run_sim(args: SimArgs) -> Result<u8, String> {
    telemetry::init(args.common.debug);
    telemetry::exit_on_panic();
    let mut settings = settings(&[SIM_TOML], &args.common)?;
    raise_open_file_limit(settings.daemon.max_connections);
    let state_dir = match &args.common.state_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("maintd-sim-{}", std::process::id())),
    };
    settings.daemon.state_dir = state_dir.display().to_string();
    let luxi_socket = args
        .luxi_socket
        .clone()
        .unwrap_or_else(|| state_dir.join("ganeti-query"));
    if !(args.job_seconds.is_finite() && args.job_seconds >= 0.0) {
        return Err(format!(
            "--job-seconds must be zero or more, not {}",
            args.job_seconds
        ));
    }
    let spec = SimSpec {
        nodes: args.nodes.max(1),
        instances: args.instances,
        seed: args.seed,
        job_seconds: args.job_seconds,
        ..SimSpec::default()
    };
    let report_key = match &args.sign_reports {
        Some(file) => {
            match load_key(&file.display().to_string(), true).map_err(|e| e.to_string())? {
                KeySource::Loaded(key) => Some(key),
                KeySource::NotConfigured | KeySource::DefaultMissing => None,
            }
        }
        None => None,
    };
    run_system(move || {
        let clock = Clock::new();
        let sim = SimHandle::generate(&spec, clock);
        let master = sim.lock().master(clock.now());
        let endpoints = simulation::serve_signed(sim, luxi_socket, &args.sim_listen, report_key)
            .map_err(|e| format!("simulator: {e}"))?;
        say!(
            "simulated cluster: {} nodes, {} instances, master {master}",
            spec.nodes,
            spec.instances
        );
        say!("  luxi socket:    {}", endpoints.luxi_socket.display());
        say!("  control API:    http://{}/sim/nodes", endpoints.http);
        say!("  diagnose URL:   {}", endpoints.diagnose_url());
        if args.cluster_only {
            say!(
                "run maintd against it with:\n  maintd daemon -f --luxi-socket {} --diagnose-url '{}' --node-name {master} --state-dir DIR",
                endpoints.luxi_socket.display(),
                endpoints.diagnose_url()
            );
            return Ok(None);
        }
        settings.cluster.backend = BackendKind::Luxi;
        settings.cluster.luxi_socket = endpoints.luxi_socket.display().to_string();
        settings.monitoring.diagnose_url = endpoints.diagnose_url();
        settings.monitoring.load_url = endpoints.load_url();
        // The simulator's nodes have no agents: copies only where the settings list them.
        let candidates = CandidateSource::Listed(settings.replication.candidates.clone());
        let started = start_daemon(
            &settings,
            MasterCheck::AskCluster {
                node_name: master.clone(),
                ssconf_dir: None,
                vote: None,
            },
            (master, candidates),
            &args.listen,
            clock,
        )?;
        say!("  state dir:      {}", settings.daemon.state_dir);
        Ok(started)
    })
}

/// The running daemon: its gate and its web actor.
type Running = Option<(
    Addr<maintd_actors::election::MasterElection>,
    Addr<WebActor>,
)>;

fn start_daemon(
    settings: &Settings,
    master_check: MasterCheck,
    (me, candidates): (String, CandidateSource),
    listen: &str,
    clock: Clock,
) -> Result<Running, String> {
    let backend: Rc<dyn ClusterBackend> = match settings.cluster.backend {
        BackendKind::Luxi => {
            let luxi = LuxiConfig {
                request_timeout: seconds(settings.cluster.luxi_timeout),
                ..LuxiConfig::new(PathBuf::from(&settings.cluster.luxi_socket))
            };
            info!(target: "maintd", socket = %settings.cluster.luxi_socket, "cluster backend: Luxi");
            Rc::new(LuxiBackend::new(luxi))
        }
        BackendKind::Rapi => {
            let rapi = RapiBackend::new(&settings.cluster.rapi()).map_err(|e| e.to_string())?;
            info!(target: "maintd", url = %settings.cluster.rapi_url, "cluster backend: RAPI");
            Rc::new(rapi)
        }
    };
    let key = hmac_key(&settings.cluster.hmac_key)?;
    let replication = settings.replication.enabled.then(|| ReplicationDeps {
        client: key.clone().map(|key| {
            ReplicaClient::new(
                settings.repair.agent_url.clone(),
                key,
                seconds(settings.replication.timeout),
                clock,
            )
        }),
        candidates,
        me,
        wait: seconds(settings.replication.wait),
        retry: seconds(settings.replication.retry_interval),
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
                    timeout: seconds(settings.repair.agent_timeout),
                    state_file: PathBuf::from(&settings.daemon.state_dir)
                        .join(agent_repair::STATE_FILE),
                },
            )?;
            Rc::new(repairs)
        }
    };
    let mut diagnose = HttpDiagnose::new(
        &settings.monitoring.diagnose_url,
        seconds(settings.monitoring.timeout),
        settings.monitoring.max_report_bytes,
    )
    .map_err(|e| e.to_string())?;
    if let Some(key) = key {
        info!(target: "maintd", key = %settings.cluster.hmac_key, "diagnose reports must be signed with the cluster's HMAC key");
        diagnose = diagnose.verified_with(key, seconds(settings.monitoring.max_report_age));
    }
    let wiring = Wiring {
        backend,
        diagnose: Rc::new(diagnose),
        load: Some(app::http_load_source(settings)?),
        master_check,
        exit_if_not_master: true,
        clock,
        replication,
    };
    let daemon = app::start(settings, wiring).map_err(|e| e.to_string())?;
    let limits = HttpLimits::new(settings.daemon.max_connections);
    let web = maintd_actors::web::bind(listen, daemon.link.clone(), clock, limits)
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    say!(
        "maintd API:       http://{}",
        web.addrs.first().map(|a| a.to_string()).unwrap_or_default()
    );
    Ok(Some((daemon.election, web.start())))
}

/// The cluster's HMAC key from `path`: `None` when the path is empty or the default file
/// is missing (with a warning), an error when a key that was asked for cannot be used.
fn hmac_key(path: &str) -> Result<Option<HmacKey>, String> {
    // As for the agent: only the documented default may be missing.
    let required = path != DEFAULT_HMAC_KEY;
    match load_key(path, required).map_err(|e| e.to_string())? {
        KeySource::Loaded(key) => Ok(Some(key)),
        KeySource::NotConfigured => {
            warn!(target: "maintd", "no HMAC key configured: diagnose reports are accepted unsigned");
            Ok(None)
        }
        KeySource::DefaultMissing => {
            warn!(target: "maintd", key = path, "HMAC key file missing: diagnose reports are accepted unsigned");
            Ok(None)
        }
    }
}

/// Run an actix system: `setup` starts the pieces; SIGINT/SIGTERM stop them.
fn run_system(setup: impl FnOnce() -> Result<Running, String>) -> Result<u8, String> {
    run_system_with(setup, |running| {
        if let Some((election, web)) = running {
            election.do_send(Shutdown);
            drop(web);
        }
    })
}

/// Like [`run_system`] for any set of pieces: on SIGINT/SIGTERM, `shutdown` gets what
/// `setup` returned, then the system stops.
fn run_system_with<R: 'static>(
    setup: impl FnOnce() -> Result<R, String>,
    shutdown: impl FnOnce(R) + 'static,
) -> Result<u8, String> {
    let system = System::new();
    // Listen for signals before anything starts, so that a signal arriving during startup
    // shuts down cleanly instead of killing the process.
    let signals = system.block_on(async { listen_for_signals() });
    let running = system.block_on(async { setup() })?;
    system.block_on(async move {
        actix::spawn(async move {
            wait_for_signal(signals).await;
            info!(target: "maintd", "signal received; shutting down");
            shutdown(running);
            // Every state change was persisted when made: nothing to flush.
            System::current().stop();
        });
    });
    let code = system.run_with_code().map_err(|e| e.to_string())?;
    if code != 0 {
        error!(target: "maintd", code, "exiting");
    }
    Ok(u8::try_from(code).unwrap_or(1))
}

fn run_agent(args: AgentArgs) -> Result<u8, String> {
    telemetry::init(args.debug);
    telemetry::exit_on_panic();
    let mut settings = Settings::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    let agent = &mut settings.agent;
    let key_given = args.hmac_key.is_some();
    for (flag, setting) in [
        (args.listen, &mut agent.listen),
        (args.diagnose_dir, &mut agent.diagnose_dir),
        (args.diagnose_command, &mut agent.diagnose_command),
        (args.repair_dir, &mut agent.repair_dir),
        (args.hmac_key, &mut agent.hmac_key),
        (args.node_name, &mut agent.node_name),
        (args.state_dir, &mut agent.state_dir),
    ] {
        if let Some(value) = flag {
            *setting = value;
        }
    }
    if let Some(interval) = args.interval {
        agent.interval = interval;
    }
    settings.validate().map_err(|e| e.to_string())?;
    raise_open_file_limit(settings.agent.max_connections);
    let agent = settings.agent;
    // Only the documented default may be missing; a key named on purpose must load.
    let required = key_given || agent.hmac_key != DEFAULT_HMAC_KEY;
    let key = match load_key(&agent.hmac_key, required).map_err(|e| e.to_string())? {
        KeySource::Loaded(key) => {
            info!(target: "maintd::agent", file = %agent.hmac_key, "reports are signed with the cluster HMAC key");
            Some(key)
        }
        KeySource::NotConfigured => {
            warn!(target: "maintd::agent", "no HMAC key configured: reports are unsigned and repair requests are refused");
            None
        }
        KeySource::DefaultMissing => {
            warn!(target: "maintd::agent", file = %agent.hmac_key, "no HMAC key file: reports are unsigned and repair requests are refused");
            None
        }
    };
    let node_name = if agent.node_name.is_empty() {
        host_name()
    } else {
        agent.node_name.clone()
    };
    if node_name.is_empty() {
        return Err("cannot tell this node's name; give --node-name".into());
    }
    run_system_with(
        move || {
            let started = agent_app::start(&agent, node_name.clone(), key, Clock::new())?;
            say!(
                "maintd agent for node {node_name} listening on http://{}",
                started
                    .addrs
                    .first()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            );
            Ok(started)
        },
        |agent| drop(agent.web),
    )
}

/// SIGTERM and SIGINT streams, registered at once.
type Signals = (
    Option<tokio::signal::unix::Signal>,
    Option<tokio::signal::unix::Signal>,
);

fn listen_for_signals() -> Signals {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(stream) => Some(stream),
        Err(e) => {
            error!(target: "maintd", signal = name, error = %e, "cannot listen for the signal");
            None
        }
    };
    (
        listen(SignalKind::terminate(), "SIGTERM"),
        listen(SignalKind::interrupt(), "SIGINT"),
    )
}

async fn wait_for_signal(signals: Signals) {
    async fn recv(stream: Option<tokio::signal::unix::Signal>) {
        match stream {
            Some(mut stream) => {
                stream.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let (term, int) = signals;
    tokio::select! {
        _ = recv(term) => {}
        _ = recv(int) => {}
    }
}
