//! Logging setup and the crash-only panic policy.

use tracing_subscriber::EnvFilter;

/// Log to stderr; `RUST_LOG` wins over `debug` (the `-d` flag).
pub fn init(debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // A log that cannot be written (a full disk, a closed pipe) must not take maintd
        // down: by default the subscriber reports its own write errors with `eprintln!`,
        // which panics when stderr is the problem.
        .log_internal_errors(false)
        .try_init();
}

/// actix does not restart an actor that panicked; a daemon with half of its actor graph
/// gone is worse than a restart, so log the panic and exit for the service manager to
/// restart maintd (state is on disk; the election runs again).
pub fn exit_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(target: "maintd", panic = %info, "panic; exiting");
        default_hook(info);
        std::process::exit(70);
    }));
}
