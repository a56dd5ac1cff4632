//! `maintd sim`: a generated cluster served on a Luxi socket and an HTTP control API, and
//! (unless `--cluster-only`) the daemon running against it.

use maintd::{
    backend::replica::CandidateSource,
    clock::Clock,
    config::{BackendKind, SIM_TOML},
    signing::KeySource,
    sim::{SimHandle, SimSpec},
};

use super::serve;
use crate::{
    cli::SimArgs,
    daemon::{
        app::{self, ApiMode, Identity},
        election::MasterCheck,
        messages::Shutdown,
    },
    http_server::ListenAddress,
    startup::{self, say},
    telemetry,
};

/// Run `maintd sim`.
pub fn run(args: SimArgs) -> Result<u8, String> {
    telemetry::init(args.common.debug, args.common.log_format);
    telemetry::exit_on_panic();
    let mut settings = args.common.settings(&[SIM_TOML])?;
    startup::raise_open_file_limit(settings.daemon.max_connections);
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
        Some(file) => match startup::cluster_key(&file.display().to_string(), true)? {
            KeySource::Loaded(key) => Some(key),
            KeySource::NotConfigured | KeySource::DefaultMissing => None,
        },
        None => None,
    };
    startup::run_system(
        move || {
            let clock = Clock::new();
            let sim = SimHandle::generate(&spec, clock);
            let master = sim.lock().master(clock.now());
            let endpoints = serve::serve_signed(sim, luxi_socket, &args.sim_listen, report_key)
                .map_err(|e| format!("simulator: {e}"))?;
            say(format_args!(
                "simulated cluster: {} nodes, {} instances, master {master}",
                spec.nodes, spec.instances
            ));
            say(format_args!(
                "  luxi socket:    {}",
                endpoints.luxi_socket.display()
            ));
            say(format_args!(
                "  control API:    http://{}/sim/nodes",
                endpoints.http
            ));
            say(format_args!(
                "  diagnose URL:   {}",
                endpoints.diagnose_url()
            ));
            if args.cluster_only {
                say(format_args!(
                    "run maintd against it with:\n  maintd daemon -f --luxi-socket {} --diagnose-url '{}' --node-name {master} --state-dir DIR",
                    endpoints.luxi_socket.display(),
                    endpoints.diagnose_url()
                ));
                return Ok(None);
            }
            settings.cluster.backend = BackendKind::Luxi;
            settings.cluster.luxi_socket = endpoints.luxi_socket.display().to_string();
            settings.monitoring.diagnose_url = endpoints.diagnose_url();
            settings.monitoring.load_url = endpoints.load_url();
            let identity = Identity {
                master_check: MasterCheck::AskCluster {
                    node_name: master.clone(),
                    ssconf_dir: None,
                    vote: None,
                },
                node_name: master,
                // The simulator's nodes have no agents: copies only where the settings
                // list them.
                candidates: CandidateSource::Listed(settings.replication.candidates.clone()),
                // The simulator listens on loopback: rehearsals stay one command.
                api: ApiMode::Open,
            };
            let serving = app::serve(
                &settings,
                identity,
                &ListenAddress::new(&args.listen, "--listen"),
                clock,
            )?;
            say(format_args!(
                "  (maintd's API is open and plain HTTP here: no users, no TLS, loopback only)"
            ));
            say(format_args!(
                "  state dir:      {}",
                settings.daemon.state_dir
            ));
            Ok(Some(serving))
        },
        |serving| {
            if let Some(serving) = serving {
                serving.election.do_send(Shutdown);
                drop(serving.api);
            }
        },
    )
}
