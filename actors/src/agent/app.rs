//! The single place that wires the node agent's actors (`maintd agent`):
//!
//! ```text
//! AgentWeb ──GetDiagnoseReport──▶ DiagnoseCollector (runs the diagnose every interval)
//!     ├─────SubmitRepair / GetExecution──▶ RepairExecutor (one command at a time, persisted)
//!     └─────ReplicaStore (the copy of maintd's state, shared with the handlers)
//! ```

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use actix::prelude::*;
use maintd::{
    agent::{repair::RepairBook, replica::ReplicaStore, whitelist::Whitelist},
    clock::Clock,
    config::AgentSettings,
    signing::HmacKey,
    store::JsonStore,
};
use tracing::warn;

use crate::{
    agent::api::{AgentContext, AgentWeb},
    agent::diagnose_collector::{CollectorConfig, DiagnoseCollector},
    agent::repair_executor::{RepairConfig, RepairExecutor, EXECUTIONS_FILE},
    http_server::{HttpLimits, ListenAddress, Listeners},
};

/// The running agent.
pub struct Agent {
    /// The diagnose collector.
    pub collector: Addr<DiagnoseCollector>,
    /// The repair executor.
    pub repairs: Addr<RepairExecutor>,
    /// The web server's actor; dropping it stops the server.
    pub web: Addr<AgentWeb>,
    /// Where the server listens.
    pub addrs: Vec<SocketAddr>,
}

/// Start the agent's actors and its HTTP server. Must run inside an actix system.
pub fn start(
    settings: &AgentSettings,
    node_name: String,
    key: Option<HmacKey>,
    clock: Clock,
) -> Result<Agent, String> {
    // First: a taken port stops the agent before it restores or runs anything.
    let listeners = Listeners::bind_setting(&ListenAddress::new(&settings.listen, "agent.listen"))?;
    let store = JsonStore::open(&PathBuf::from(&settings.state_dir), EXECUTIONS_FILE)
        .map_err(|e| e.to_string())?;
    let document = store.load().map_err(|e| e.to_string())?;
    let book = match document {
        Some(document) => {
            let (book, interrupted) =
                RepairBook::restore(document, settings.keep_executions, clock.now());
            for incident in &interrupted {
                warn!(target: "maintd::agent", %incident, "repair execution interrupted by a restart; marked failed, not run again");
            }
            if !interrupted.is_empty() {
                store.save(&book.document()).map_err(|e| e.to_string())?;
            }
            book
        }
        None => RepairBook::new(settings.keep_executions),
    };
    let replica = ReplicaStore::open(&PathBuf::from(&settings.state_dir), clock.now())
        .map_err(|e| e.to_string())?;
    let collector = DiagnoseCollector::new(
        CollectorConfig {
            whitelist: Whitelist::new(&settings.diagnose_dir),
            command: settings.diagnose_command.clone(),
            interval: settings.interval,
            timeout: settings.diagnose_timeout,
        },
        clock,
    )
    .start();
    let repairs = RepairExecutor::new(
        book,
        store,
        RepairConfig {
            whitelist: Whitelist::new(&settings.repair_dir),
            timeout: settings.repair_timeout,
            max_output: settings.max_output_bytes,
        },
        clock,
    )
    .start();
    let context = AgentContext {
        collector: collector.clone(),
        repairs: repairs.clone(),
        replica: Arc::new(Mutex::new(replica)),
        key: key.map(Arc::new),
        node_name,
        clock,
    };
    let limits = HttpLimits::new(settings.max_connections);
    let web = crate::agent::api::serve(listeners, limits, context)
        .map_err(|e| format!("cannot serve on {}: {e}", settings.listen))?;
    let addrs = web.addrs.clone();
    Ok(Agent {
        collector,
        repairs,
        web: web.start(),
        addrs,
    })
}
