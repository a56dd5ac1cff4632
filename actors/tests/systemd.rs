//! maintd under systemd: the notification protocol (`READY=1` once the API answers,
//! `WATCHDOG=1` pings, `STOPPING=1` on SIGTERM) against a socket of the test's own, and
//! `systemd-analyze verify` of the shipped units (ignored: it needs systemd's tools).

mod support;

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use support::{clusterless_daemon_args, http, path, within, Proc};

/// The test's end of `NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        NotifySocket { socket, path }
    }

    /// The next notification, or `None` at `deadline`.
    fn next(&self, deadline: Instant) -> Option<String> {
        let mut buffer = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buffer) {
                return Some(String::from_utf8_lossy(&buffer[..n]).trim().to_owned());
            }
        }
        None
    }

    /// Notifications until one equals `wanted` (which is included), panicking at
    /// `deadline`.
    fn until(&self, wanted: &str, deadline: Instant) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.next(deadline) {
                Some(message) => {
                    let done = message == wanted;
                    seen.push(message);
                    if done {
                        return seen;
                    }
                }
                None => panic!("no {wanted} before the deadline; got {seen:?}"),
            }
        }
    }
}

/// Send `signal` (a `kill` name such as `TERM`) to the process.
fn signal(proc: &Proc, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), proc.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal}: {status}");
}

/// A daemon that needs no cluster: it serves its API on a free loopback port.
fn daemon_args(dir: &Path) -> Vec<String> {
    clusterless_daemon_args(dir, "0", &dir.join("state"))
}

/// Run `args` with a notify socket and a 300 ms watchdog; check READY=1 (once `label`'s
/// address answers `GET /`), watchdog pings, then STOPPING=1 and exit 0 on SIGTERM.
fn notifies(name: &str, args: &[String], label: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind(dir.path());
    let env = [
        ("NOTIFY_SOCKET", path(&notify.path)),
        ("WATCHDOG_USEC", "300000".to_owned()),
    ];
    let mut proc = Proc::spawn_with_env(name, args, &env, &dir.path().join("log"));

    let first = notify.until("READY=1", within(30));
    assert_eq!(first, ["READY=1"], "READY=1 comes first");
    // READY=1 means the API listens: the address is printed and answers at once.
    let addr = proc.line(label, within(1));
    let addr = addr
        .trim_start_matches("http://")
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let answer = http(&addr, "GET", "/", None).expect("the API answers once READY=1 is sent");
    assert_eq!(answer.0, 200, "GET /: {answer:?}");

    // Pings every 150 ms: three arrive well within a few seconds.
    for _ in 0..3 {
        let message = notify.next(within(10));
        assert_eq!(message.as_deref(), Some("WATCHDOG=1"));
    }

    signal(&proc, "TERM");
    notify.until("STOPPING=1", within(30));
    let status = proc.wait_exit(within(30));
    assert_eq!(status.code(), Some(0), "{name} after SIGTERM: {status}");
    let log = proc.log_text();
    assert!(log.contains("systemd watchdog enabled"), "{log}");
    assert!(!log.contains("panic"), "{log}");
}

#[test]
fn daemon_notifies_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    notifies("daemon", &daemon_args(dir.path()), "maintd API:");
}

#[test]
fn agent_notifies_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "agent",
        "--listen",
        "127.0.0.1:0",
        "--node-name",
        "node1",
        "--state-dir",
        &path(&dir.path().join("agent")),
    ]
    .map(str::to_owned)
    .to_vec();
    notifies("agent", &args, "listening on");
}

#[test]
fn an_unusable_notify_socket_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("NOTIFY_SOCKET", path(&dir.path().join("nobody-listens"))),
        ("WATCHDOG_USEC", "300000".to_owned()),
    ];
    let mut proc = Proc::spawn_with_env(
        "daemon",
        &daemon_args(dir.path()),
        &env,
        &dir.path().join("log"),
    );
    let addr = proc.line("maintd API:", within(30));
    let addr = addr.trim_start_matches("http://").to_owned();
    support::wait_until(within(30), "the warning", || {
        proc.log_text()
            .contains("cannot notify the service manager")
            .then_some(())
    });
    // Still serving, and stops cleanly.
    assert!(matches!(http(&addr, "GET", "/", None), Ok((200, _))));
    signal(&proc, "TERM");
    let status = proc.wait_exit(within(30));
    assert_eq!(status.code(), Some(0), "{status}");
    let log = proc.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("cannot notify"))
            .count(),
        1,
        "one warning, however many pings failed: {log}"
    );
    assert!(!log.contains("panic"), "{log}");
}

/// The repository's `config/` directory.
fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

#[test]
#[ignore = "needs systemd-analyze: apt-get install systemd"]
fn units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The units name /usr/sbin/maintd, which need not exist here: verify copies whose
    // ExecStart names the binary under test, with the rest of each unit unchanged.
    for unit in ["maintd.service", "maintd-agent.service"] {
        let text = std::fs::read_to_string(config_dir().join(unit)).expect("unit file");
        assert!(text.contains("ExecStart=/usr/sbin/maintd "), "{unit}");
        let text = text.replace(
            "ExecStart=/usr/sbin/maintd ",
            &format!("ExecStart={} ", support::BIN),
        );
        std::fs::write(dir.path().join(unit), text).expect("write the unit");
    }
    let units: Vec<String> = ["maintd.service", "maintd-agent.service"]
        .iter()
        .map(|unit| path(&dir.path().join(unit)))
        .collect();
    let output = Command::new("systemd-analyze")
        // The man pages of Documentation= belong to the package, not to this tree.
        .args(["verify", "--man=no"])
        .args(&units)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("systemd-analyze runs (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Units these depend on (Ganeti's targets and services) are not installed here; verify
    // reports them, and nothing else may be reported.
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| !line.contains("ganeti"))
        .collect();
    assert!(
        output.status.success() && problems.is_empty(),
        "systemd-analyze verify: {}; {problems:?}\n{stderr}",
        output.status
    );
}
