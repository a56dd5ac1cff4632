//! Helpers shared by the process tests: child processes with logs, polling with
//! deadlines, and a minimal HTTP/1.0 client for loopback.

#![allow(dead_code)]

use std::{
    fs::OpenOptions,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod daemon;
pub mod sim;

// Not every test uses them.
#[allow(unused_imports)]
pub use daemon::{Daemon, DaemonSpec};
#[allow(unused_imports)]
pub use sim::{MaintdJob, Sim, SimSpec, SimWithMaintd};

pub const BIN: &str = env!("CARGO_BIN_EXE_maintd");
/// Interval of every polling loop.
pub const POLL: Duration = Duration::from_millis(100);
/// Reason-trail source of maintd's jobs.
pub const MAINTD_SOURCE: &str = "gnt:daemon:maintd";
pub const SIGKILL: i32 = 9;
/// The API user every test daemon knows (with the write option), and its password.
pub const API_USER: &str = "operator";
pub const API_PASSWORD: &str = "maintd-test-secret";

/// A users file naming [`API_USER`] with the write option, next to `log`; its path.
pub fn api_users_file(log: &Path) -> PathBuf {
    let users = log.with_file_name("api-users");
    std::fs::write(
        &users,
        format!("{API_USER} {API_PASSWORD} write\nreader reader-secret read\n"),
    )
    .expect("users file");
    users
}

/// A file holding [`API_PASSWORD`], for the clients' `--password-file`; its path.
pub fn api_password_file(dir: &Path) -> PathBuf {
    let file = dir.join("api-password");
    std::fs::write(&file, format!("{API_PASSWORD}\n")).expect("password file");
    file
}

// ----- waiting -----

/// Poll `check` every [`POLL`] until it yields a value; panic at `deadline`.
pub fn wait_until<T>(deadline: Instant, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(POLL);
    }
}

pub fn within(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

// ----- child processes -----

/// A `maintd` child: stdout read line by line on a thread, stderr (the log) appended to a
/// file. Dropping it kills (SIGKILL) and reaps the process.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub lines: Receiver<String>,
    pub stdout: Vec<String>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, args: &[String], log: &Path) -> Proc {
        Self::spawn_with_env(name, args, &[], log)
    }

    /// Like [`Proc::spawn`], with extra environment variables.
    pub fn spawn_with_env(name: &str, args: &[String], env: &[(&str, String)], log: &Path) -> Proc {
        Self::spawn_program(name, Path::new(BIN), args, env, log)
    }

    /// `program` with `args` (for example a wrapper that runs maintd elsewhere).
    pub fn spawn_program(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        log: &Path,
    ) -> Proc {
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            // Never pick up a Ganeti HMAC key or ssconf (the master candidates) of the
            // machine running the tests.
            .env("MAINTD__CLUSTER__HMAC_KEY", "")
            .env(
                "MAINTD__CLUSTER__SSCONF_DIR",
                "/nonexistent/maintd-tests/ssconf",
            )
            // The API over plain HTTP on loopback, with a users file of the test's own
            // (a test that wants HTTPS or other users overrides these).
            .env("MAINTD__API__SSL", "false")
            .env("MAINTD__API__USERS_FILE", api_users_file(log))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            // Keep draining even if nobody listens any more, so the child never blocks.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        Proc {
            name: name.to_owned(),
            child,
            lines,
            stdout: Vec::new(),
            log: log.to_owned(),
        }
    }

    /// What follows `label` on the first stdout line containing it, if printed yet.
    pub fn try_line(&mut self, label: &str) -> Option<String> {
        while let Ok(line) = self.lines.try_recv() {
            self.stdout.push(line);
        }
        self.stdout.iter().find_map(|line| {
            line.split_once(label)
                .map(|(_, rest)| rest.trim().to_owned())
        })
    }

    /// Wait for a stdout line containing `label`; panic if the process exits first.
    pub fn line(&mut self, label: &str, deadline: Instant) -> String {
        let what = format!("{} to print {label:?}", self.name);
        wait_until(deadline, &what, || {
            if let Some(rest) = self.try_line(label) {
                return Some(rest);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before printing {label:?}; stdout {:?}",
                    self.name, self.stdout
                );
            }
            None
        })
    }

    /// SIGKILL the process, which must still have been running.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill");
        let status = self.child.wait().expect("wait");
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "{} had already exited ({status}) when killed",
            self.name
        );
    }

    /// Send `signal` (a `kill` name such as `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}: {status}", self.name);
    }

    /// Wait for the process to exit by itself.
    pub fn wait_exit(&mut self, deadline: Instant) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        wait_until(deadline, &what, || self.child.try_wait().expect("try_wait"))
    }

    /// Every stdout line, once the process has exited.
    pub fn all_stdout(&mut self) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(line) => self.stdout.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("stdout of {} not closed", self.name),
            }
        }
        self.stdout.iter().map(|line| format!("{line}\n")).collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!(
                "----- {} (stdout {:?}); last log lines:\n{tail}",
                self.name, self.stdout
            );
        }
    }
}

/// Run a short-lived `maintd` command to its end (bounded): (status, stdout, stderr).
pub fn run(dir: &Path, name: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let mut proc = Proc::spawn(name, &args, &dir.join(format!("{name}.log")));
    let status = proc.wait_exit(within(60));
    let stdout = proc.all_stdout();
    (status, stdout, proc.log_text())
}

// ----- HTTP -----

/// One HTTP/1.0 request to a loopback address: (status, JSON body or Null).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let body = body.map(Value::to_string);
    let (status, payload) = http_text(addr, method, path, body.as_deref())?;
    let value = if payload.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&payload)
            .map_err(|_| std::io::Error::other(format!("not JSON: {payload:?}")))?
    };
    Ok((status, value))
}

/// A request that must succeed with 200.
pub fn http_ok(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    match http(addr, method, path, body) {
        Ok((200, value)) => value,
        other => panic!("{method} http://{addr}{path}: {other:?}"),
    }
}

/// `maintd daemon` without a cluster (its Luxi socket `dir/no-socket` does not exist)
/// on loopback `port`, its state in `state`, the master check skipped: it serves its API
/// all the same, which is all some tests need.
pub fn clusterless_daemon_args(dir: &Path, port: &str, state: &Path) -> Vec<String> {
    [
        "daemon",
        "-f",
        "--no-voting",
        "--yes-do-it",
        "-b",
        "127.0.0.1",
        "-p",
        port,
        "--luxi-socket",
        &path(&dir.join("no-socket")),
        "--state-dir",
        &path(state),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A path as a command-line argument.
pub fn path(p: &Path) -> String {
    p.display().to_string()
}

/// One HTTP/1.0 request to a loopback address with a raw body: (status, body text).
pub fn http_text(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let socket: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    assert!(socket.ip().is_loopback(), "only loopback: {addr}");
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or_default();
    let credentials = maintd::auth::Credentials {
        user: API_USER.into(),
        password: API_PASSWORD.into(),
    };
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        credentials.basic_header(),
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let bad = |why: &str| std::io::Error::other(format!("{why}: {text:?}"));
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(bad("chunked answer to HTTP/1.0"));
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    Ok((status, payload.to_owned()))
}
