//! The simulator's Luxi socket: a Unix-socket server that behaves like `ganeti-luxid` on
//! the wire and answers every request with [`SimCluster::handle_luxi`](super::SimCluster::handle_luxi).
//!
//! Connections are served by `tokio::task::spawn_local` tasks, so [`serve`] must run inside
//! a tokio `LocalSet` or the actix runtime. Each connection carries any number of
//! request/answer pairs, one at a time, each message terminated by 0x03.
//!
//! `WaitForJobChange` is the only call that blocks in luxid. The simulator's dispatcher
//! answers at once with the current values, so the waiting happens here: the request is
//! re-issued every [`WAIT_POLL_INTERVAL`] until the values differ from `prev_job_info`, new
//! log entries appear, the job is finalized, or the requested timeout (capped like luxid's
//! at [`MAX_WAIT_SECONDS`]) runs out.

use std::{future::Future, path::Path, time::Duration};

use serde_json::{json, Value};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::watch,
    time::Instant,
};

use super::{lock_sim, SimHandle};
use crate::{
    model::job::JobStatus,
    protocol::luxi::{write_message, FrameError, MessageReader},
};

/// Default limit on one request: opcode batches are small, 16 MiB is plenty.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// How often a waiting `WaitForJobChange` looks at the job again.
pub const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// luxid's cap on the `WaitForJobChange` timeout: `(180 - 1) div 2` seconds.
pub const MAX_WAIT_SECONDS: f64 = 89.0;

/// Make `path` free for a new Luxi socket, removing only what is safe to remove: nothing
/// there is fine; a socket nobody listens on (left by a simulator that died) is removed;
/// anything else is refused with an error naming the path: a file or directory that is
/// not a socket (it may be someone's data), or a socket that accepts connections (a
/// running simulator or luxid, which would lose its clients).
pub fn prepare_socket_path(path: &Path) -> std::io::Result<()> {
    use std::{io::ErrorKind, os::unix::fs::FileTypeExt};
    let shown = path.display();
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(std::io::Error::new(e.kind(), format!("{shown}: {e}"))),
    };
    if !metadata.file_type().is_socket() {
        return Err(std::io::Error::new(
            ErrorKind::AlreadyExists,
            format!("{shown} exists and is not a socket; not replacing it (choose another --luxi-socket or remove it)"),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(std::io::Error::new(
            ErrorKind::AddrInUse,
            format!("{shown} is a live socket: something is listening on it (another simulator or ganeti-luxid?); not replacing it"),
        )),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(target: "maintd::sim", socket = %shown, "removing a stale Luxi socket");
            std::fs::remove_file(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot remove the stale socket {shown}: {e}")))
        }
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("cannot tell whether {shown} is in use ({e}); not replacing it"),
        )),
    }
}

/// Serve Luxi on `listener` until `shutdown` completes, with the default request limit.
pub async fn serve(listener: UnixListener, sim: SimHandle, shutdown: impl Future<Output = ()>) {
    serve_with_limit(listener, sim, shutdown, DEFAULT_MAX_REQUEST_BYTES).await;
}

/// Serve Luxi on `listener` until `shutdown` completes. A request over `max_request_bytes`
/// gets an error answer and its connection is closed. When `shutdown` completes, open
/// connections are closed too (a pending `WaitForJobChange` is abandoned).
pub async fn serve_with_limit(
    listener: UnixListener,
    sim: SimHandle,
    shutdown: impl Future<Output = ()>,
    max_request_bytes: usize,
) {
    // Dropping the sender at the end of this function tells every connection to close.
    let (_stop_connections, stopped) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let connection = serve_connection(stream, sim.clone(), max_request_bytes);
                    let mut stopped = stopped.clone();
                    tokio::task::spawn_local(async move {
                        tokio::select! {
                            () = connection => {}
                            _ = stopped.changed() => {}
                        }
                    });
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(target: "maintd::sim", error = %e, "Luxi accept failed");
                    tokio::time::sleep(WAIT_POLL_INTERVAL).await;
                }
            },
        }
    }
    tracing::debug!(target: "maintd::sim", "Luxi server stopped");
}

/// Answer requests on one connection until the client closes it.
async fn serve_connection(mut stream: UnixStream, sim: SimHandle, max_request_bytes: usize) {
    let mut reader = MessageReader::new(max_request_bytes);
    loop {
        let request = match reader.read_message(&mut stream).await {
            Ok(request) => request,
            Err(FrameError::TooLarge { limit }) => {
                // The rest of the oversized request is still in flight: answer, then close.
                let refusal = json!({
                    "success": false,
                    "result": format!("Failed to parse request: request exceeds {limit} bytes"),
                });
                let _ = write_message(&mut stream, refusal.to_string().as_bytes()).await;
                return;
            }
            Err(FrameError::Closed { received }) => {
                if received > 0 {
                    tracing::debug!(target: "maintd::sim", received, "Luxi client left mid-request");
                }
                return;
            }
            Err(FrameError::Io(e)) => {
                tracing::debug!(target: "maintd::sim", error = %e, "Luxi connection failed");
                return;
            }
        };
        let answer = answer(&sim, &request).await;
        if write_message(&mut stream, &answer).await.is_err() {
            return;
        }
    }
}

/// One call into the simulator, with the current time.
fn dispatch(sim: &SimHandle, request: &[u8]) -> Vec<u8> {
    let now = sim.clock.now();
    lock_sim(&sim.sim).handle_luxi(request, now)
}

/// The answer to one request; `WaitForJobChange` waits as described in the module docs.
async fn answer(sim: &SimHandle, request: &[u8]) -> Vec<u8> {
    let Some(wait) = WaitRequest::parse(request) else {
        return dispatch(sim, request);
    };
    let deadline = Instant::now() + wait.timeout;
    loop {
        let answer = dispatch(sim, request);
        if wait.is_satisfied_by(&answer)
            || Instant::now() >= deadline
            || job_is_final(sim, &wait.job)
        {
            return answer;
        }
        tokio::time::sleep_until((Instant::now() + WAIT_POLL_INTERVAL).min(deadline)).await;
    }
}

/// The parts of a `WaitForJobChange` request the waiting depends on.
struct WaitRequest {
    /// The job id exactly as the client sent it.
    job: Value,
    /// `prev_job_info`: the values the client already knows (`null`: none).
    previous_values: Value,
    /// How long to wait for a change.
    timeout: Duration,
}

impl WaitRequest {
    /// `Some` for a `WaitForJobChange` request; malformed ones are left to the dispatcher.
    fn parse(request: &[u8]) -> Option<Self> {
        let request: Value = serde_json::from_slice(request).ok()?;
        if request.get("method")?.as_str()? != "WaitForJobChange" {
            return None;
        }
        let args = request.get("args")?.as_array()?;
        let seconds = args
            .get(4)
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite())
            .unwrap_or(0.0)
            .clamp(0.0, MAX_WAIT_SECONDS);
        Some(WaitRequest {
            job: args.first()?.clone(),
            previous_values: args.get(2).cloned().unwrap_or(Value::Null),
            timeout: Duration::from_secs_f64(seconds),
        })
    }

    /// The answer reports something new: an error, changed values or new log entries.
    fn is_satisfied_by(&self, answer: &[u8]) -> bool {
        let Ok(answer) = serde_json::from_slice::<Value>(answer) else {
            return true;
        };
        if answer.get("success") != Some(&Value::Bool(true)) {
            return true;
        }
        let values = answer.pointer("/result/0").unwrap_or(&Value::Null);
        let has_new_log = answer
            .pointer("/result/1")
            .and_then(Value::as_array)
            .is_some_and(|log| !log.is_empty());
        *values != self.previous_values || has_new_log
    }
}

/// The job has finished (or cannot be found), so waiting longer cannot change anything.
fn job_is_final(sim: &SimHandle, job: &Value) -> bool {
    let query = json!({"method": "QueryJobs", "args": [[job], ["status"]]});
    let answer = dispatch(sim, query.to_string().as_bytes());
    let Ok(answer) = serde_json::from_slice::<Value>(&answer) else {
        return true;
    };
    match answer.pointer("/result/0/0") {
        Some(status) => serde_json::from_value::<JobStatus>(status.clone())
            .map(JobStatus::is_finalized)
            .unwrap_or(true),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_nothing_there_is_free() {
        let dir = tempfile::tempdir().unwrap();
        prepare_socket_path(&dir.path().join("ganeti-query")).unwrap();
    }

    #[test]
    fn socket_path_a_regular_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ganeti-query");
        std::fs::write(&path, "precious").unwrap();
        let e = prepare_socket_path(&path).unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        // A directory is no socket either.
        let e = prepare_socket_path(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert!(dir.path().is_dir());
    }

    #[test]
    fn socket_path_a_live_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ganeti-query");
        let _live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let e = prepare_socket_path(&path).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("live socket"), "{e}");
        assert!(path.exists());
    }

    #[test]
    fn socket_path_a_stale_socket_is_removed_and_can_be_bound_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ganeti-query");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "a closed listener leaves its socket file");
        prepare_socket_path(&path).unwrap();
        assert!(!path.exists());
        std::os::unix::net::UnixListener::bind(&path).unwrap();
    }

    fn wait_request(args: Value) -> Vec<u8> {
        json!({"method": "WaitForJobChange", "args": args})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn parses_wait_requests_and_caps_the_timeout() {
        let wait = WaitRequest::parse(&wait_request(json!([7, ["status"], ["running"], 3, 600])))
            .expect("a wait request");
        assert_eq!(wait.job, json!(7));
        assert_eq!(wait.previous_values, json!(["running"]));
        assert_eq!(wait.timeout, Duration::from_secs(89));
        let wait = WaitRequest::parse(&wait_request(json!([7, ["status"]]))).expect("short args");
        assert_eq!(wait.timeout, Duration::ZERO);
        assert!(WaitRequest::parse(br#"{"method":"QueryJobs","args":[]}"#).is_none());
        assert!(WaitRequest::parse(b"\xff").is_none());
    }

    #[test]
    fn change_detection_compares_values_and_log() {
        let wait = WaitRequest::parse(&wait_request(json!([7, ["status"], ["running"], 3, 5])))
            .expect("a wait request");
        let same = br#"{"success":true,"result":[["running"],[]]}"#;
        let changed = br#"{"success":true,"result":[["success"],[]]}"#;
        let logged = br#"{"success":true,"result":[["running"],[[4,[1,0],"message","x"]]]}"#;
        let failed = br#"{"success":false,"result":["JobLost",["gone"]]}"#;
        assert!(!wait.is_satisfied_by(same));
        assert!(wait.is_satisfied_by(changed));
        assert!(wait.is_satisfied_by(logged));
        assert!(wait.is_satisfied_by(failed));
    }
}
