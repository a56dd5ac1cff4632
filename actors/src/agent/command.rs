//! `maintd agent`: the settings from the flags, the cluster key, then the agent until a
//! signal.

use maintd::{clock::Clock, signing::KeySource};
use tracing::{info, warn};

use super::app;
use crate::{
    cli::AgentArgs,
    service_manager,
    startup::{self, say},
    telemetry,
};

/// Run `maintd agent`.
pub fn run(args: AgentArgs) -> Result<u8, String> {
    telemetry::init(args.debug, args.log_format);
    telemetry::exit_on_panic();
    let settings = args.settings()?;
    startup::raise_open_file_limit(settings.agent.max_connections);
    let agent = settings.agent;
    let key = match startup::cluster_key(&agent.hmac_key, args.hmac_key.is_some())? {
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
    let node_name = startup::node_name(&agent.node_name);
    if node_name.is_empty() {
        return Err("cannot tell this node's name; give --node-name".into());
    }
    let code = startup::run_system(
        move || {
            let started = app::start(&agent, node_name.clone(), key, Clock::new())?;
            say(format_args!(
                "maintd agent for node {node_name} listening on http://{}",
                started
                    .addrs
                    .first()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            ));
            service_manager::ready();
            service_manager::start_watchdog();
            Ok(started)
        },
        |agent| {
            service_manager::stopping();
            drop(agent.web);
        },
    );
    service_manager::stopping();
    code
}
