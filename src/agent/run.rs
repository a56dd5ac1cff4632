//! Running one whitelisted command: no arguments, the given bytes on stdin, a cleared
//! environment, a time limit, and capped output.
//!
//! The command runs in a process group of its own. The run follows the command's own
//! exit, not the end of its output: a process it started in the background may inherit
//! its stdout and stderr and keep them open long after the command is done. When the
//! command exits (or is killed at its time limit), its whole process group is killed,
//! what is still readable on its output is drained, and the run is over. A process that
//! left the group (`setsid`) and still holds the output open is not waited for; it is
//! noted in [`RunOutcome::note`] and left running.

use std::{
    future::Future,
    os::{fd::AsRawFd, unix::process::ExitStatusExt},
    path::{Path, PathBuf},
    pin::{pin, Pin},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use rustix::process::{kill_process_group, Pid, Signal};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::Command,
    time::Instant,
};
use tracing::warn;

/// The only environment variable a command gets.
pub const SAFE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// How long to wait for a killed process group to be reaped, and for its members to
/// let go of the command's output.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// Once the command has ended and no member of its process group is left alive, how
/// long end-of-output may still take before whoever holds the output open is taken to
/// have left the group. Everything the group wrote is in the pipe by then; this only
/// covers our own reads reaching end of file.
const DRAIN_GRACE: Duration = Duration::from_millis(100);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The executable (already checked against the whitelist).
    pub program: PathBuf,
    /// Written to the command's stdin, which is then closed.
    pub stdin: Vec<u8>,
    /// Time limit for the command itself (not for processes it leaves behind).
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
    /// It ran past the time limit; its process group was killed.
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
    /// maintd's own remark on the run, one line without a newline: set when a process
    /// still held the command's output open after the command ended.
    pub note: Option<String>,
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

/// Run `spec` to the command's end (or its time limit).
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
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    // Our ends of the output pipes as /proc names them, to find who else holds them.
    let pipes: Vec<String> = [
        stdout.as_ref().map(AsRawFd::as_raw_fd),
        stderr.as_ref().map(AsRawFd::as_raw_fd),
    ]
    .into_iter()
    .flatten()
    .filter_map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
    .map(|link| link.to_string_lossy().into_owned())
    .collect();
    let mut out = Capture::new(spec.max_output);
    let mut err = Capture::new(spec.max_output);
    let input = &spec.stdin;
    let mut feed = Box::pin(async move {
        if let Some(mut pipe) = stdin {
            // A command that does not read its input closes the pipe early; that is its
            // business, not an error.
            let _ = pipe.write_all(input).await;
            let _ = pipe.shutdown().await;
        }
    });
    let (end, held) = {
        let mut readers = pin!(async {
            tokio::join!(out.read_all(stdout), err.read_all(stderr));
        });
        let mut read = false;
        let mut fed = false;
        let mut limit = pin!(tokio::time::sleep(spec.timeout));
        // Feed stdin and read the output while waiting for the command itself; neither
        // the end of its output nor of its input decides when it is done.
        let waited = loop {
            tokio::select! {
                status = child.wait() => break Some(status),
                () = &mut feed, if !fed => fed = true,
                () = &mut readers, if !read => read = true,
                () = &mut limit => break None,
            }
        };
        // Whatever still holds stdin open gets no more of it.
        drop(feed);
        let end = match waited {
            Some(Ok(status)) => {
                // The command is gone; whatever it left running in its group goes too.
                // (Its pid, the group's id, cannot be taken by another process while the
                // group has members; killing an empty group finds nothing.)
                kill_group(guard.group.take(), &spec.program);
                end_of(status)
            }
            Some(Err(source)) => return Err(spawn_error(source)),
            None => {
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
        let held = if read {
            None
        } else {
            drain(readers.as_mut(), group).await
        };
        (end, held)
    };
    let note = held.map(|held| {
        let holders = holders_of(&pipes);
        warn!(target: "maintd::agent", program = %spec.program.display(), ?held, holders = %holders, "a process started by the command still holds its output open");
        held.note(end, &holders)
    });
    Ok(RunOutcome {
        end,
        stdout: out.kept,
        stderr: err.kept,
        stdout_dropped: out.dropped,
        stderr_dropped: err.dropped,
        note,
    })
}

/// Why the command's output was still open when the run stopped reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// No member of the command's process group was left: a process that left the group
    /// holds it.
    OutsideGroup,
    /// Members of the killed group were still alive after [`REAP_LIMIT`].
    ByUndeadGroup,
}

impl Held {
    fn note(self, end: RunEnd, holders: &str) -> String {
        let ended = match end {
            RunEnd::TimedOut => "was killed",
            RunEnd::Exited(_) | RunEnd::Signalled(_) => "exited",
        };
        let mut note = match self {
            Held::OutsideGroup => format!(
                "maintd agent: a process started by the command still held its output open \
                 after it {ended}; it was left running (it left the command's process group)"
            ),
            Held::ByUndeadGroup => format!(
                "maintd agent: a process started by the command still held its output open \
                 after it {ended}; its process group was killed but had not died {} s later",
                REAP_LIMIT.as_secs()
            ),
        };
        if !holders.is_empty() {
            note.push_str(": ");
            note.push_str(holders);
        }
        note
    }
}

/// Keep reading the output after the command ended and its group was killed, until end
/// of file, or until no member of the group is alive and [`DRAIN_GRACE`] has passed
/// without end of file (given up after [`REAP_LIMIT`] in any case). Returns why the
/// output is still open, if it is.
async fn drain(
    mut readers: Pin<&mut impl Future<Output = ()>>,
    group: Option<i32>,
) -> Option<Held> {
    let give_up = Instant::now() + REAP_LIMIT;
    loop {
        tokio::select! {
            () = &mut readers => return None,
            () = tokio::time::sleep(DRAIN_GRACE) => {}
        }
        if !group.is_some_and(group_has_live_members) {
            return Some(Held::OutsideGroup);
        }
        if Instant::now() >= give_up {
            return Some(Held::ByUndeadGroup);
        }
    }
}

/// Whether process group `group` has a member that is not a zombie (a killed process
/// lets go of its files before it becomes one). Reads /proc; without it, says no.
fn group_has_live_members(group: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(is_pid))
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .any(|stat| {
            // After the command name: state, ppid, pgrp, ...
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let mut fields = rest.split(' ');
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
            pgrp == Some(group) && !matches!(state, Some("Z" | "X" | "x"))
        })
}

/// The processes other than this one that hold any of `pipes` (as /proc names them, like
/// `pipe:[1234]`), as `name (pid N), ...`; empty when none can be seen.
fn holders_of(pipes: &[String]) -> String {
    const MOST: usize = 5;
    if pipes.is_empty() {
        return String::new();
    }
    let own = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return String::new();
    };
    let mut found: Vec<(u32, String)> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| is_pid(pid) && *pid != own)
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|link| pipes.iter().any(|p| link.as_os_str() == p.as_str()))
                })
            })
        })
        .filter_map(|pid| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            Some((pid.parse().ok()?, name.trim().to_owned()))
        })
        .collect();
    found.sort();
    let mut text = found
        .iter()
        .take(MOST)
        .map(|(pid, name)| format!("{name} (pid {pid})"))
        .collect::<Vec<_>>()
        .join(", ");
    if found.len() > MOST {
        text.push_str(&format!(" and {} more", found.len() - MOST));
    }
    text
}

fn is_pid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
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

fn kill_group(group: Option<i32>, program: &Path) {
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
    program: &'a Path,
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
        assert_eq!(outcome.note, None);
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
    async fn the_run_ends_when_the_command_exits_and_its_group_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("background.pid");
        let stdin_pid_file = dir.path().join("reader.pid");
        // Background children holding stdout and stderr open, and one holding stdin
        // without reading it; each would keep a run that waits for them going for two
        // minutes, far past the time limit.
        let detach = script(
            dir.path(),
            "detach",
            &format!(
                "sleep 120 & echo $! > {}; sleep 120 <&0 & echo $! > {}; \
                 echo before; echo warning >&2; exit 0",
                pid_file.display(),
                stdin_pid_file.display()
            ),
        );
        let big = "x".repeat(1 << 20);
        let outcome = run(&RunSpec {
            timeout: Duration::from_secs(30),
            ..spec(detach, &big)
        })
        .await
        .unwrap();
        assert_eq!(outcome.end, RunEnd::Exited(0));
        assert_eq!(outcome.stdout, b"before\n");
        assert_eq!(outcome.stderr, b"warning\n");
        // The background children were in the command's group: killed, not noted.
        assert_eq!(outcome.note, None);
        for file in [&pid_file, &stdin_pid_file] {
            wait_gone(fs::read_to_string(file).unwrap().trim()).await;
        }
        // Other exit codes and output written before the exit are kept as well.
        let three = script(
            dir.path(),
            "three",
            "echo kept; echo also kept >&2; sleep 120 & exit 3",
        );
        let outcome = run(&RunSpec {
            timeout: Duration::from_secs(30),
            ..spec(three, "")
        })
        .await
        .unwrap();
        assert_eq!(outcome.end, RunEnd::Exited(3));
        assert_eq!(outcome.stdout, b"kept\n");
        assert_eq!(outcome.stderr, b"also kept\n");
        assert_eq!(outcome.note, None);
    }

    /// Kills a process group when dropped, so that a failed test leaves nothing running.
    struct KillOnDrop(i32);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(pid) = Pid::from_raw(self.0) {
                let _ = kill_process_group(pid, Signal::KILL);
            }
        }
    }

    #[tokio::test]
    async fn a_process_that_left_the_group_is_noted_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("escaped.pid");
        // setsid puts the background child in a session (and group) of its own, out of
        // reach of the kill of the command's group; it still holds stdout and stderr. The
        // command exits once it has left (were it killed with the group before setsid,
        // nothing would be left behind).
        let escape = script(
            dir.path(),
            "escape",
            &format!(
                "setsid sh -c 'echo $$ > {0}.tmp; mv {0}.tmp {0}; exec sleep 120' & \
                 while [ ! -e {0} ]; do sleep 0.01; done; echo before; exit 0",
                pid_file.display()
            ),
        );
        let outcome = run(&RunSpec {
            timeout: Duration::from_secs(30),
            ..spec(escape, "")
        })
        .await
        .unwrap();
        let pid = fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        let escaped = KillOnDrop(pid.parse().unwrap());
        assert_eq!(outcome.end, RunEnd::Exited(0));
        assert_eq!(outcome.stdout, b"before\n");
        let note = outcome.note.expect("no note");
        assert!(
            note.starts_with(
                "maintd agent: a process started by the command still held its output open \
                 after it exited; it was left running (it left the command's process group)"
            ),
            "{note}"
        );
        // It is named, by what /proc tells.
        assert!(note.contains(&format!("(pid {pid})")), "{note}");
        drop(escaped);
        wait_gone(&pid).await;
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
