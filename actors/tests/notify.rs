//! Webhook notifications end to end: `maintd daemon` against `maintd sim --cluster-only`
//! posts an incident's transitions to a receiver on loopback that does not answer, then
//! refuses them (503), until the test lets it take them; every transition arrives, in
//! order, signed, also across a restart of the daemon while the receiver is down.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::{
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::{
    clusterless_daemon_args, path, wait_until, within, Daemon, DaemonSpec, Proc, Sim, SimSpec, POLL,
};

const SECRET: &str = "webhook-test-secret";

/// What the receiver answers: an HTTP status, or [`HANG`].
type Mode = Arc<AtomicU16>;

/// Never answer: read the request and hold the connection until the client gives up.
const HANG: u16 = 0;

/// One request the receiver got, and what it answered ([`HANG`]: nothing).
#[derive(Debug, Clone)]
struct Received {
    status: u16,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

/// A webhook receiver on 127.0.0.1, answering as its mode says (503 at first); keeps
/// every request.
struct Receiver {
    addr: String,
    mode: Mode,
    requests: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mode = Arc::new(AtomicU16::new(503));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (serving, log) = (mode.clone(), requests.clone());
        // Serves until the test process ends.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(received) = answer(stream, &serving) {
                    log.lock().unwrap().push(received);
                }
            }
        });
        Receiver {
            addr,
            mode,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/maintd", self.addr)
    }

    /// Answer `status` from now on ([`HANG`]: no answer at all).
    fn answer_with(&self, status: u16) {
        self.mode.store(status, Ordering::SeqCst);
    }

    fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// How many requests got `status`.
    fn answered(&self, status: u16) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.status == status)
            .count()
    }

    /// The bodies it answered with 200, in order.
    fn delivered(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }
}

/// Read one HTTP/1.1 POST from `stream` and answer it as `mode` says, closing the
/// connection; in [`HANG`] mode, hold it unanswered until the client closes it or the
/// mode changes.
fn answer(stream: TcpStream, mode: &Mode) -> Option<Received> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    assert!(
        request_line.starts_with("POST /hooks/maintd "),
        "{request_line:?}"
    );
    let (mut length, mut timestamp, mut signature) = (0, String::new(), String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        let value = value.trim().to_owned();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok()?,
            "x-maintd-timestamp" => timestamp = value,
            "x-maintd-signature" => signature = value,
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let received = Received {
        status: mode.load(Ordering::SeqCst),
        timestamp,
        signature,
        body,
    };
    if received.status == HANG {
        // Until maintd gives up on it (end of stream) or the test changes the mode.
        stream.set_read_timeout(Some(POLL)).ok()?;
        let mut byte = [0; 1];
        while mode.load(Ordering::SeqCst) == HANG {
            match (&stream).read(&mut byte) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        return Some(received);
    }
    let reason = if received.status == 200 {
        "OK"
    } else {
        "Service Unavailable"
    };
    write!(
        &stream,
        "HTTP/1.1 {} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        received.status
    )
    .ok()?;
    Some(received)
}

/// Every request carries a fresh timestamp and the HMAC-SHA256 of `"<timestamp>.<body>"`
/// under the shared secret, computed here independently of maintd.
fn assert_signed(requests: &[Received]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for request in requests {
        let timestamp: u64 = request.timestamp.parse().unwrap();
        assert!(now.abs_diff(timestamp) < 300, "timestamp {timestamp}");
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(request.timestamp.as_bytes());
        mac.update(b".");
        mac.update(&request.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(request.signature, expected, "{request:?}");
    }
}

/// The delivered events are the incident's three transitions, numbered without gaps in
/// one stream (a repeated event, which at-least-once delivery allows, counted once).
fn assert_transitions(delivered: &[Value], uuid: &str, node: &str) -> String {
    let mut events: Vec<Value> = Vec::new();
    for event in delivered {
        if events.last().map(|e| (&e["stream"], &e["seq"]))
            != Some((&event["stream"], &event["seq"]))
        {
            events.push(event.clone());
        }
    }
    let stream = events[0]["stream"].as_str().unwrap().to_owned();
    let numbered: Vec<(String, u64)> = events
        .iter()
        .map(|e| {
            (
                e["stream"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = (1..=events.len() as u64)
        .map(|seq| (stream.clone(), seq))
        .collect();
    assert_eq!(numbered, expected, "{events:#?}");
    let steps: Vec<(Value, Value)> = events
        .iter()
        .map(|e| (e["from"].clone(), e["to"].clone()))
        .collect();
    assert_eq!(
        steps,
        [
            (Value::Null, json!("noted")),
            (json!("noted"), json!("pending")),
            (json!("pending"), json!("completed")),
        ],
        "{events:#?}"
    );
    for event in &events {
        assert_eq!(event["incident"], uuid, "{event}");
        assert_eq!(event["node"], node, "{event}");
        assert_eq!(event["action"], "evacuate", "{event}");
        assert_eq!(event["dropped_before"], 0, "{event}");
        assert!(event["by"].is_string() && event["time"].is_f64(), "{event}");
    }
    stream
}

/// The daemon on node1, notifying `receiver` with quick retries, each delivery within
/// `timeout` seconds.
fn spec(receiver: &Receiver, dir: &Path, timeout: &str) -> DaemonSpec {
    let secret = dir.join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    DaemonSpec {
        env: vec![
            ("MAINTD__ROUNDS__JOB_POLL_INTERVAL", "0.2".into()),
            ("MAINTD__NOTIFY__WEBHOOK_URL", receiver.url()),
            ("MAINTD__NOTIFY__SECRET_FILE", path(&secret)),
            ("MAINTD__NOTIFY__RETRY_INITIAL", "0.1".into()),
            ("MAINTD__NOTIFY__RETRY_MAX", "0.5".into()),
            ("MAINTD__NOTIFY__TIMEOUT", timeout.into()),
        ],
        ..DaemonSpec::on("node1", "0.5")
    }
}

/// Make the last node ask for evacuation and wait until the daemon completed the
/// incident: (its uuid, the node).
fn evacuate_to_completion(sim: &Sim, daemon: &mut Daemon) -> (String, String) {
    let node = sim.nodes().last().unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.report(
        &node,
        &json!({"status": "evacuate", "details": {"disk": "sda"}}),
    );
    let uuid = wait_until(within(120), "the incident to complete", || {
        daemon
            .try_all_incidents()?
            .iter()
            .find(|i| i["node"] == node.as_str() && i["repair-status"] == "completed")
            .map(|i| i["uuid"].as_str().unwrap().to_owned())
    });
    (uuid, node)
}

/// The events in the daemon's queue file.
fn queued(dir: &Path) -> Vec<Value> {
    let text = std::fs::read(dir.join("state/notify-queue.json")).unwrap_or_default();
    serde_json::from_slice::<Value>(&text)
        .ok()
        .and_then(|queue| queue["events"].as_array().cloned())
        .unwrap_or_default()
}

/// Everything `receiver` got once an incident's completion is among it.
fn delivered_through_completion(receiver: &Receiver) -> Vec<Value> {
    wait_until(within(60), "the completion to be delivered", || {
        let delivered = receiver.delivered();
        delivered
            .iter()
            .any(|e| e["to"] == "completed")
            .then_some(delivered)
    })
}

#[test]
fn a_receiver_that_hangs_then_fails_then_recovers_gets_every_transition_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let sim = Sim::start(base, &SimSpec::new(4, 8));
    let receiver = Receiver::start();
    receiver.answer_with(HANG);
    let mut daemon = Daemon::spawn(&sim, base, &spec(&receiver, base, "1"));
    daemon.wait_serving(within(60));

    // The whole incident happens while the receiver never answers: maintd gives up on
    // each request after notify.timeout and tries again, and the repair goes on.
    let (uuid, node) = evacuate_to_completion(&sim, &mut daemon);
    wait_until(within(60), "all three transitions queued", || {
        (queued(base).len() == 3).then_some(())
    });
    wait_until(within(60), "requests to time out", || {
        (receiver.answered(HANG) >= 2).then_some(())
    });
    // Then it answers 503 for a while.
    receiver.answer_with(503);
    wait_until(within(60), "notifications to be refused", || {
        (receiver.answered(503) >= 3).then_some(())
    });
    assert!(receiver.delivered().is_empty());
    assert_eq!(
        queued(base).len(),
        3,
        "nothing leaves the queue undelivered"
    );

    receiver.answer_with(200);
    let delivered = delivered_through_completion(&receiver);
    assert_transitions(&delivered, &uuid, &node);
    assert_signed(&receiver.requests());
    // Delivered means gone from the queue.
    wait_until(within(30), "the queue to empty", || {
        queued(base).is_empty().then_some(())
    });
}

#[test]
fn queued_notifications_survive_a_restart_while_the_receiver_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let sim = Sim::start(base, &SimSpec::new(4, 8));
    let receiver = Receiver::start();
    let spec = spec(&receiver, base, "5");
    let mut daemon = Daemon::spawn(&sim, base, &spec);
    daemon.wait_serving(within(60));
    let (uuid, node) = evacuate_to_completion(&sim, &mut daemon);
    let before = wait_until(within(60), "all three transitions queued", || {
        let events = queued(base);
        (events.len() == 3).then_some(events)
    });
    wait_until(within(60), "notifications to be refused", || {
        (receiver.answered(503) >= 1).then_some(())
    });
    // Killed outright: what was queued is on disk already.
    daemon.proc.kill9();
    drop(daemon);

    let mut daemon = Daemon::spawn(&sim, base, &spec);
    daemon.wait_serving(within(60));
    receiver.answer_with(200);
    let delivered = delivered_through_completion(&receiver);
    let stream = assert_transitions(&delivered, &uuid, &node);
    assert_eq!(before[0]["stream"], stream.as_str(), "the same stream");
    assert_signed(&receiver.requests());
    wait_until(within(30), "the queue to empty", || {
        queued(base).is_empty().then_some(())
    });
    drop(daemon);
}

#[test]
fn unusable_notify_settings_stop_the_daemon_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let secret = base.join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let cases = [
        (
            "http://127.0.0.1:9/hooks/maintd",
            base.join("no-such-secret"),
            base.join("no-such-ca"),
            "maintd: notify.secret_file: cannot read ",
            "no-such-secret",
        ),
        (
            "https://127.0.0.1:9/hooks/maintd",
            secret,
            base.join("no-such-ca"),
            "maintd: notify.ca_file: ",
            "no-such-ca",
        ),
    ];
    for (n, (url, secret, ca, error, named)) in cases.into_iter().enumerate() {
        let args = clusterless_daemon_args(base, "0", &base.join("state"));
        let env = [
            ("MAINTD__NOTIFY__WEBHOOK_URL", url.to_owned()),
            ("MAINTD__NOTIFY__SECRET_FILE", path(&secret)),
            ("MAINTD__NOTIFY__CA_FILE", path(&ca)),
        ];
        let log = base.join(format!("daemon-{n}.log"));
        let mut proc = Proc::spawn_with_env("daemon", &args, &env, &log);
        let status = proc.wait_exit(within(30));
        let log = proc.log_text();
        assert_eq!(status.code(), Some(1), "{log}");
        let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("maintd: ")).collect();
        assert_eq!(errors.len(), 1, "{log}");
        assert!(
            errors[0].starts_with(error) && errors[0].contains(named),
            "{log}"
        );
    }
}
