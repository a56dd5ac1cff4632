//! The service manager's notification protocol (systemd's `sd_notify`): `READY=1` once a
//! long-running subcommand serves, `STOPPING=1` when it begins to stop, and `WATCHDOG=1`
//! pings while its actix system runs.
//!
//! Everything here is a no-op unless systemd asked for it (`NOTIFY_SOCKET`, and
//! `WATCHDOG_USEC` for the watchdog), so maintd runs the same by hand, in tests and under
//! other service managers. A notification that cannot be sent is a warning, never an
//! error: the unit's own timeouts then tell the operator.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use sd_notify::NotifyState;
use tracing::{debug, info, warn};

/// Set after the first failed notification, so that a broken socket costs one warning
/// rather than one per watchdog ping.
static WARNED: AtomicBool = AtomicBool::new(false);
/// `STOPPING=1` is sent once, whichever way the process stops.
static STOPPING_SENT: AtomicBool = AtomicBool::new(false);

/// Tell the service manager that maintd is up (its HTTP API listens).
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// Tell the service manager that maintd is stopping; only the first call sends.
pub fn stopping() {
    if !STOPPING_SENT.swap(true, Ordering::SeqCst) {
        send(&[NotifyState::Stopping]);
    }
}

/// When systemd watches this process (`WatchdogSec=`), ping it at half the interval from
/// a task on the current actix system, so that a stuck event loop stops the pings and
/// systemd restarts maintd. Must be called inside a running actix system.
pub fn start_watchdog() {
    let Some(timeout) = watchdog_timeout() else {
        return;
    };
    let period = timeout / 2;
    info!(target: "maintd", timeout = ?timeout, period = ?period, "systemd watchdog enabled");
    actix::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        // After a stall, one ping rather than a burst: the stall itself is what systemd
        // must see.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}

/// The watchdog timeout systemd asked for: `WATCHDOG_USEC`, if `WATCHDOG_PID` is unset or
/// names this process (as libsystemd's `sd_watchdog_enabled` decides), and only when
/// there is a socket to ping.
fn watchdog_timeout() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let Ok(usec) = usec.trim().parse::<u64>() else {
        warn!(target: "maintd", value = %usec, "WATCHDOG_USEC is not a number of microseconds: no watchdog pings");
        return None;
    };
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            debug!(target: "maintd", pid = %pid, "the watchdog is meant for another process");
            return None;
        }
    }
    // Below a few milliseconds the pings would only load the event loop.
    (usec >= 2_000).then(|| Duration::from_micros(usec))
}

fn send(states: &[NotifyState<'_>]) {
    // Without NOTIFY_SOCKET this sends nothing and succeeds. The environment is kept
    // (`false`): the watchdog task needs it after READY=1.
    if let Err(e) = sd_notify::notify(false, states) {
        let what = states
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        if WARNED.swap(true, Ordering::SeqCst) {
            debug!(target: "maintd", notification = %what, error = %e, "cannot notify the service manager");
        } else {
            warn!(target: "maintd", notification = %what, error = %e, "cannot notify the service manager (NOTIFY_SOCKET); further failures are logged at debug level");
        }
    }
}
