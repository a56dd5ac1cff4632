//! Running one whitelisted command: no arguments, the given bytes on stdin, a cleared
//! environment, a time limit, and capped output.
//!
//! The command runs in a process group of its own, so that on timeout the whole group
//! (the command and whatever it started) is killed, not just the direct child.

use std::{
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use rustix::process::{kill_process_group, Pid, Signal};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::Command,
};
use tracing::warn;

/// The only environment variable a command gets.
pub const SAFE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// How long to wait for a killed process group to be reaped.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The executable (already checked against the whitelist).
    pub program: PathBuf,
    /// Written to the command's stdin, which is then closed.
    pub stdin: Vec<u8>,
    /// Time limit for the command and its output streams.
    pub timeout: Duration,
    /// Most bytes kept of each of stdout and stderr; the rest is read and dropped.
    pub max_output: usize,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signalled(i32),
    /// It (or a process holding its output open) ran past the time limit; its process
    /// group was killed.
    TimedOut,
}

/// What came of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// How it ended.
    pub end: RunEnd,
    /// Up to `max_output` bytes of stdout.
    pub stdout: Vec<u8>,
    /// Up to `max_output` bytes of stderr.
    pub stderr: Vec<u8>,
    /// Bytes of stdout that were dropped.
    pub stdout_dropped: u64,
    /// Bytes of stderr that were dropped.
    pub stderr_dropped: u64,
}

impl RunOutcome {
    /// The exit code, if it exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self.end {
            RunEnd::Exited(code) => Some(code),
            _ => None,
        }
    }
}

/// The command could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot run {program}: {source}")]
pub struct SpawnError {
    /// The executable.
    pub program: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// Run `spec` to its end (or its time limit).
pub async fn run(spec: &RunSpec) -> Result<RunOutcome, SpawnError> {
    let spawn_error = |source| SpawnError {
        program: spec.program.clone(),
        source,
    };
    let mut command = Command::new(&spec.program);
    command
        .env_clear()
        .env("PATH", SAFE_PATH)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Should this future be dropped, the direct child at least does not outlive it.
        .kill_on_drop(true);
    let mut child = spawn(&mut command).await.map_err(spawn_error)?;
    let group = child.id().and_then(|id| i32::try_from(id).ok());
    // Should this future be dropped before the command ends (the agent is shutting down),
    // the guard kills the whole group, not only the direct child.
    let mut guard = GroupGuard {
        group,
        program: &spec.program,
    };
    let (mut stdin, stdout, stderr) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let mut out = Capture::new(spec.max_output);
    let mut err = Capture::new(spec.max_output);
    let input = &spec.stdin;
    let feed = async {
        if let Some(mut pipe) = stdin.take() {
            // A command that does not read its input closes the pipe early; that is its
            // business, not an error.
            let _ = pipe.write_all(input).await;
            let _ = pipe.shutdown().await;
        }
    };
    let work = async {
        let (status, (), (), ()) = tokio::join!(
            child.wait(),
            feed,
            out.read_all(stdout),
            err.read_all(stderr)
        );
        status
    };
    let end = match tokio::time::timeout(spec.timeout, work).await {
        Ok(Ok(status)) => {
            guard.group = None;
            end_of(status)
        }
        Ok(Err(source)) => return Err(spawn_error(source)),
        Err(_) => {
            kill_group(guard.group.take(), &spec.program);
            let _ = child.start_kill();
            if tokio::time::timeout(REAP_LIMIT, child.wait())
                .await
                .is_err()
            {
                warn!(target: "maintd::agent", program = %spec.program.display(), "killed command not reaped in time");
            }
            RunEnd::TimedOut
        }
    };
    Ok(RunOutcome {
        end,
        stdout: out.kept,
        stderr: err.kept,
        stdout_dropped: out.dropped,
        stderr_dropped: err.dropped,
    })
}

/// Spawn, retrying briefly on "text file busy": a command just installed may still be
/// open for writing in some process forked meanwhile (its descriptor closes at exec).
async fn spawn(command: &mut Command) -> std::io::Result<tokio::process::Child> {
    const ETXTBSY: i32 = 26;
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

fn end_of(status: ExitStatus) -> RunEnd {
    match (status.code(), status.signal()) {
        (Some(code), _) => RunEnd::Exited(code),
        (None, Some(signal)) => RunEnd::Signalled(signal),
        // Neither code nor signal does not happen for a reaped child on Unix.
        (None, None) => RunEnd::Signalled(0),
    }
}

fn kill_group(group: Option<i32>, program: &std::path::Path) {
    let Some(pid) = group.and_then(Pid::from_raw) else {
        return;
    };
    if let Err(e) = kill_process_group(pid, Signal::KILL) {
        // ESRCH: the group is already gone.
        if e != rustix::io::Errno::SRCH {
            warn!(target: "maintd::agent", program = %program.display(), error = %e, "cannot kill the command's process group");
        }
    }
}

/// Kills the command's process group when dropped while still armed.
struct GroupGuard<'a> {
    group: Option<i32>,
    program: &'a std::path::Path,
}

impl Drop for GroupGuard<'_> {
    fn drop(&mut self) {
        kill_group(self.group.take(), self.program);
    }
}

/// A stream read to its end, keeping the first `limit` bytes.
struct Capture {
    limit: usize,
    kept: Vec<u8>,
    dropped: u64,
}

impl Capture {
    fn new(limit: usize) -> Self {
        Capture {
            limit,
            kept: Vec::new(),
            dropped: 0,
        }
    }

    /// Read until end of stream; past the limit, keep reading (so that the command never
    /// blocks on a full pipe) but only count.
    async fn read_all(&mut self, stream: Option<impl AsyncRead + Unpin>) {
        let Some(mut stream) = stream else { return };
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let room = self.limit.saturating_sub(self.kept.len()).min(n);
                    self.kept.extend_from_slice(&buf[..room]);
                    self.dropped += (n - room) as u64;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt, path::Path};

    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn spec(program: PathBuf, stdin: &str) -> RunSpec {
        RunSpec {
            program,
            stdin: stdin.as_bytes().to_vec(),
            timeout: Duration::from_secs(20),
            max_output: 1000,
        }
    }

    #[tokio::test]
    async fn exit_status_and_streams() {
        let dir = tempfile::tempdir().unwrap();
        let ok = script(dir.path(), "ok", "echo out; echo err >&2; exit 0");
        let outcome = run(&spec(ok, "")).await.unwrap();
        assert_eq!(outcome.end, RunEnd::Exited(0));
        assert_eq!(outcome.exit_code(), Some(0));
        assert_eq!(outcome.stdout, b"out\n");
        assert_eq!(outcome.stderr, b"err\n");
        let three = script(dir.path(), "three", "exit 3");
        let outcome = run(&spec(three, "")).await.unwrap();
        assert_eq!(outcome.end, RunEnd::Exited(3));
        let killed = script(dir.path(), "killed", "kill -9 $$");
        let outcome = run(&spec(killed, "")).await.unwrap();
        assert_eq!(outcome.end, RunEnd::Signalled(9));
        assert_eq!(outcome.exit_code(), None);
    }

    #[tokio::test]
    async fn stdin_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let cat = script(dir.path(), "cat", "cat");
        let outcome = run(&spec(cat, "{\"status\":\"live-repair\"}\nsecond line"))
            .await
            .unwrap();
        assert_eq!(outcome.stdout, b"{\"status\":\"live-repair\"}\nsecond line");
        // A command that ignores its input still runs to its end.
        let ignore = script(dir.path(), "ignore", "echo done");
        let big = "x".repeat(1 << 20);
        let outcome = run(&spec(ignore, &big)).await.unwrap();
        assert_eq!(outcome.end, RunEnd::Exited(0));
        assert_eq!(outcome.stdout, b"done\n");
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("background.pid");
        // A background child in the command's group, which would outlive a kill of the
        // direct child alone.
        let slow = script(
            dir.path(),
            "slow",
            &format!(
                "sleep 60 & echo $! > {}; echo started; sleep 30",
                pid_file.display()
            ),
        );
        let outcome = run(&RunSpec {
            timeout: Duration::from_secs(1),
            ..spec(slow, "")
        })
        .await
        .unwrap();
        assert_eq!(outcome.end, RunEnd::TimedOut);
        assert_eq!(outcome.exit_code(), None);
        // Output written before the limit is kept.
        assert_eq!(outcome.stdout, b"started\n");
        // The background child dies with its group; a survivor would sleep for a minute.
        let pid = fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        wait_gone(&pid).await;
    }

    /// Wait (bounded) until process `pid` is gone or a zombie.
    async fn wait_gone(pid: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let state = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.chars().next()))
                .flatten();
            if matches!(state, None | Some('Z') | Some('X')) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process {pid} survived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn dropping_a_run_kills_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("background.pid");
        let slow = script(
            dir.path(),
            "slow",
            &format!(
                "sleep 60 & echo $! > {}.tmp; mv {0}.tmp {0}; sleep 60",
                pid_file.display()
            ),
        );
        let spec = spec(slow, "");
        let mut running = Box::pin(run(&spec));
        // Drive the run until the background child is there, then drop it unfinished.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !pid_file.exists() {
            assert!(std::time::Instant::now() < deadline, "script did not start");
            tokio::select! {
                _ = &mut running => panic!("the run ended by itself"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        drop(running);
        let pid = fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        wait_gone(&pid).await;
    }

    #[tokio::test]
    async fn output_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let loud = script(
            dir.path(),
            "loud",
            "head -c 5000 /dev/zero | tr '\\0' a; head -c 300 /dev/zero | tr '\\0' b >&2",
        );
        let outcome = run(&RunSpec {
            max_output: 100,
            ..spec(loud, "")
        })
        .await
        .unwrap();
        assert_eq!(outcome.end, RunEnd::Exited(0));
        assert_eq!(outcome.stdout, vec![b'a'; 100]);
        assert_eq!(outcome.stdout_dropped, 4900);
        assert_eq!(outcome.stderr, vec![b'b'; 100]);
        assert_eq!(outcome.stderr_dropped, 200);
    }

    #[tokio::test]
    async fn environment_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let env = script(dir.path(), "env", "/usr/bin/env");
        let outcome = run(&spec(env, "")).await.unwrap();
        let text = String::from_utf8(outcome.stdout).unwrap();
        let vars: Vec<&str> = text
            .lines()
            // The shell itself may export PWD, SHLVL and `_`.
            .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
            .collect();
        assert_eq!(vars, [format!("PATH={SAFE_PATH}")]);
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(&spec(dir.path().join("nothing"), ""))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nothing"), "{err}");
    }
}
