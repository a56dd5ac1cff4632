//! A client sending garbage over fresh connections must not flood the log: actix logs one
//! ERROR line per malformed request, which maintd cuts to a burst and then counts. Over
//! real sockets, in process (with a clock moved by hand, to see the count once the window
//! ends) and with the `maintd` binary (its logging as installed by `telemetry::init`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use actix::Actor;
use maintd::{
    clock::Clock,
    ratelimit::{DEFAULT_BURST, DEFAULT_WINDOW},
};
use maintd_actors::{
    daemon::api,
    http_server::{HttpLimits, Listeners},
    telemetry::{self, ActixLogLimit},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::EnvFilter;

#[path = "common/captured_log.rs"]
mod captured_log;
mod support;
use captured_log::Captured;
use support::*;

/// Not HTTP at all: actix answers 400 and logs "stream error: request parse error: …".
const GARBAGE: &[u8] = b"\x00\x01garbage\r\n\r\n";
/// Malformed requests sent by the flooding client.
const FLOOD: usize = 500;
/// Most log lines the whole flood may cost.
const BOUND: usize = 50;
/// The line actix logs for each malformed request.
const ACTIX_LINE: &str = "ERROR actix_http::h1::dispatcher: stream error";

/// `request` on a fresh connection; the whole answer. actix logs about a malformed
/// request before it closes the connection, so the answer's end means the line is out.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

#[actix_rt::test]
async fn a_garbage_flood_costs_a_few_lines_and_a_count() {
    // The window only ends when the test moves this clock.
    let (base, elapsed) = (Instant::now(), Arc::new(AtomicU64::new(0)));
    let limit = {
        let elapsed = elapsed.clone();
        ActixLogLimit::new(DEFAULT_BURST, DEFAULT_WINDOW, move || {
            base + Duration::from_secs(elapsed.load(Ordering::SeqCst))
        })
    };
    let captured = Captured::default();
    let writer = captured.clone();
    // Global: the server's worker runs on a thread of its own.
    tracing::subscriber::set_global_default(telemetry::subscriber(
        EnvFilter::new("info"),
        telemetry::LogStyle::default(),
        move || writer.clone(),
        limit.clone(),
    ))
    .expect("the only subscriber of this test binary");

    let server = api::serve(
        Listeners::bind("127.0.0.1:0").expect("a free port"),
        api::RegistryLink::default(),
        Clock::new(),
        HttpLimits::new(16),
        std::sync::Arc::new(maintd_actors::daemon::access::ApiAccess::open()),
        std::sync::Arc::new(maintd::metrics::Metrics::new()),
    )
    .expect("bind");
    let addr = server.addrs[0];
    let _server = server.start();

    let before = captured.lines().len();
    for _ in 0..FLOOD {
        let answer = exchange(addr, GARBAGE).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    let flood = captured.lines()[before..].to_vec();
    let logged = count(&flood, ACTIX_LINE);
    assert!(
        (1..=DEFAULT_BURST as usize).contains(&logged),
        "{logged} lines of actix: {flood:#?}"
    );
    assert!(flood.len() < BOUND, "{} lines: {flood:#?}", flood.len());
    assert_eq!(count(&flood, "suppressed"), 0, "not before the window ends");

    // The window ends: one line counts every malformed request that was not logged.
    elapsed.fetch_add(DEFAULT_WINDOW.as_secs(), Ordering::SeqCst);
    limit.flush();
    let summary = format!(
        "WARN maintd::log: suppressed {} similar messages from actix_http::h1::dispatcher",
        FLOOD - logged
    );
    let lines = captured.lines();
    assert_eq!(count(&lines, &summary), 1, "{:#?}", &lines[before..]);

    // A normal request is answered, and maintd's own lines pass: a refusal is logged with
    // the peer that flooded (its allowance is a separate one).
    let answer = exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: maintd\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = exchange(
        addr,
        b"GET /no/such/path HTTP/1.1\r\nHost: maintd\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let lines = captured.lines();
    assert_eq!(
        count(
            &lines,
            "request refused server=\"maintd API\" peer=127.0.0.1"
        ),
        1,
        "{:#?}",
        &lines[before..]
    );
    // The new window logs actix's line again.
    let answer = exchange(addr, GARBAGE).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(count(&captured.lines(), ACTIX_LINE), logged + 1);
}

/// A garbage request to `addr` with blocking I/O; the whole answer.
fn garbage(addr: &str) -> String {
    let socket: SocketAddr = addr.parse().expect("address");
    assert!(socket.ip().is_loopback(), "only loopback: {addr}");
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(GARBAGE).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn the_maintd_binary_cuts_a_garbage_flood() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing else to log during the flood.
    let sim = SimWithMaintd::start(
        dir.path(),
        &["--poll-interval", "3600", "--round-delay", "3600"],
    );
    let api = sim.api.clone();

    let before = sim.proc.log_text().lines().count();
    for _ in 0..FLOOD {
        let answer = garbage(&api);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    // Answered normally afterwards, and the refusal is logged before it is answered.
    http_ok(&api, "GET", "/", None);
    let refused = http(&api, "GET", "/no/such/path", None).expect("answered");
    assert_eq!(refused.0, 404, "{refused:?}");

    let log = sim.proc.log_text();
    let grown: Vec<&str> = log.lines().skip(before).collect();
    let actix = grown.iter().filter(|l| l.contains(ACTIX_LINE)).count();
    assert!(
        (1..=DEFAULT_BURST as usize).contains(&actix),
        "{actix} lines of actix: {grown:#?}"
    );
    assert!(grown.len() < BOUND, "{} lines: {grown:#?}", grown.len());
    assert!(
        grown
            .iter()
            .any(|l| l.contains("request refused") && l.contains("peer=127.0.0.1")),
        "{grown:#?}"
    );
}
