//! `maintd daemon`: the settings from the flags, this node's identity (how mastership is
//! established, where the master candidates are listed), then the daemon until a signal.

use maintd::{backend::replica::CandidateSource, clock::Clock, config::BackendKind};
use tracing::warn;

use super::{
    app::{self, ApiMode, Identity},
    election::{MasterCheck, VoteSettings},
    messages::Shutdown,
};
use crate::{cli::DaemonArgs, http_server::ListenAddress, service_manager, startup, telemetry};

/// Run `maintd daemon`; the exit code (11: not the master, as Ganeti's daemons).
pub fn run(args: DaemonArgs) -> Result<u8, String> {
    telemetry::init(args.common.debug, args.common.log_format);
    telemetry::exit_on_panic();
    if args.no_voting && !args.yes_do_it {
        return Err("--no-voting is dangerous; confirm it with --yes-do-it".into());
    }
    let settings = args.settings()?;
    startup::raise_open_file_limit(settings.daemon.max_connections);
    let node_name = startup::node_name(&settings.daemon.node_name);
    let off_cluster =
        settings.cluster.backend == BackendKind::Rapi && settings.daemon.node_name.is_empty();
    let candidates = if settings.replication.candidates.is_empty() {
        CandidateSource::Ssconf(settings.cluster.ssconf_dir.clone().into())
    } else {
        CandidateSource::Listed(settings.replication.candidates.clone())
    };
    let master_check = if args.no_voting {
        MasterCheck::Assume
    } else if off_cluster {
        // RAPI always reaches the master, wherever maintd runs; there is no local role to
        // lose, and keeping to a single maintd is the deployment's business.
        warn!(target: "maintd", url = %settings.cluster.rapi_url, "RAPI backend without daemon.node_name: no master check, run a single maintd for this cluster");
        MasterCheck::Assume
    } else {
        MasterCheck::AskCluster {
            node_name: node_name.clone(),
            ssconf_dir: Some(settings.cluster.ssconf_dir.clone().into()),
            vote: settings.cluster.voting.then(|| VoteSettings {
                data_dir: settings.cluster.ssconf_dir.clone().into(),
                port: settings.cluster.noded_port,
                timeout: settings.cluster.noded_timeout,
            }),
        }
    };
    let identity = Identity {
        master_check,
        node_name,
        candidates,
        api: ApiMode::Configured,
    };
    let code = startup::run_system(
        move || {
            let listen = ListenAddress::new(
                format!("{}:{}", settings.daemon.bind, settings.daemon.port),
                "daemon.bind, daemon.port",
            );
            let serving = app::serve(&settings, identity, &listen, Clock::new())?;
            // The API listens: systemd may start what comes after maintd.
            service_manager::ready();
            service_manager::start_watchdog();
            Ok(serving)
        },
        |serving| {
            service_manager::stopping();
            serving.election.do_send(Shutdown);
            drop(serving.api);
        },
    );
    // Also when maintd stops by itself (not the master: 11, a fatal error: 1).
    service_manager::stopping();
    code
}
