//! What every long-running subcommand (`daemon`, `agent`, `sim`) does around its actors:
//! the open-file limit, this node's name, the cluster key, lines on stdout, and an actix
//! system that stops cleanly on SIGTERM or SIGINT.

use std::future::Future;

use actix::prelude::*;
use maintd::{
    config::DEFAULT_HMAC_KEY,
    limits::{raise_nofile_limit, show},
    signing::{load_key, KeySource},
};
use tracing::{error, info, warn};

/// Print a line on stdout. A closed or full stdout must never crash maintd (`println!`
/// panics when it cannot write).
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Raise the open-file soft limit to the hard one (see [`maintd::limits`]) and warn when
/// `max_connections` API clients could take more than half of it. A failure only costs
/// headroom, so it is a warning.
pub fn raise_open_file_limit(max_connections: usize) {
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

/// `configured`, or else this host's name (empty if it cannot be read).
pub fn node_name(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The cluster's HMAC key from the setting `path`. Only the documented default file may
/// be missing (this node is then probably not in a cluster yet); a key named on purpose
/// (another path, or `named` on the command line) must load, since a key asked for and
/// silently not used would turn signing off without anyone noticing.
pub fn cluster_key(path: &str, named: bool) -> Result<KeySource, String> {
    load_key(path, named || path != DEFAULT_HMAC_KEY).map_err(|e| e.to_string())
}

/// Run an actix system: `setup` starts the pieces; on SIGINT/SIGTERM, `shutdown` gets
/// what `setup` returned, then the system stops. The exit code is the system's.
pub fn run_system<R: 'static>(
    setup: impl FnOnce() -> Result<R, String>,
    shutdown: impl FnOnce(R) + 'static,
) -> Result<u8, String> {
    let system = System::new();
    // Listen for signals before anything starts, so that a signal arriving during startup
    // shuts down cleanly instead of killing the process.
    let signals = system.block_on(async { listen_for_signals() });
    let running = match system.block_on(async { setup() }) {
        Ok(running) => running,
        Err(why) => {
            // Whatever setup started must stop inside the running system: dropped outside
            // it, actix's timers panic ("there is no reactor running").
            system.block_on(async { System::current().stop_with_code(1) });
            let _ = system.run_with_code();
            return Err(why);
        }
    };
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

/// Run one request of a client subcommand to its end and print its answer.
pub fn run_client<E: std::fmt::Display>(
    request: impl Future<Output = Result<String, E>>,
) -> Result<u8, String> {
    let text = System::new().block_on(request).map_err(|e| e.to_string())?;
    use std::io::Write as _;
    let _ = write!(std::io::stdout(), "{text}");
    Ok(0)
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
