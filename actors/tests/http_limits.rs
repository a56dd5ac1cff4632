//! The HTTP API's connection cap, over real sockets: clients beyond the cap wait in the
//! listen backlog instead of costing descriptors, idle clients are dropped, and a fresh
//! request is answered once a slot frees.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{net::SocketAddr, time::Duration};

use actix::Actor;
use maintd::clock::Clock;
use maintd_actors::{
    daemon::api,
    http_server::{HttpLimits, Listeners},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Far longer than any answer takes; reaching it means the request was never served.
const GENEROUS: Duration = Duration::from_secs(30);

/// `GET /` on a fresh connection: the whole answer.
async fn get_root(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: maintd\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}

async fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut idle = Vec::new();
    for _ in 0..n {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    idle
}

/// maintd's API, open to all, on a free loopback port within `limits`: its address, and
/// the server (stopped when dropped).
fn serve_open_api(limits: HttpLimits) -> (SocketAddr, actix::Addr<api::WebActor>) {
    let server = api::serve(
        Listeners::bind("127.0.0.1:0").expect("a free port"),
        api::RegistryLink::default(),
        Clock::new(),
        limits,
        std::sync::Arc::new(maintd_actors::daemon::access::ApiAccess::open()),
        std::sync::Arc::new(maintd::metrics::Metrics::new()),
    )
    .expect("bind");
    let addr = server.addrs[0];
    (addr, server.start())
}

#[actix_rt::test]
async fn clients_beyond_the_cap_wait_for_a_free_slot() {
    // Idle clients are never timed out here: only freeing a slot can let a request in.
    let limits = HttpLimits {
        max_connections: 3,
        client_request_timeout: Duration::from_secs(600),
        keep_alive: Duration::from_secs(600),
    };
    let (addr, _server) = serve_open_api(limits);

    let mut idle = idle_connections(addr, 3).await;
    let request = get_root(addr);
    tokio::pin!(request);
    // The cap is taken: the request waits in the backlog (a served request would end
    // well within this).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut request)
            .await
            .is_err(),
        "a request beyond the cap was served"
    );
    // One idle client leaves: the waiting request gets its slot and its answer.
    drop(idle.pop());
    let answer = tokio::time::timeout(GENEROUS, request)
        .await
        .expect("served once a slot freed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("[1]"), "{answer}");
}

#[actix_rt::test]
async fn idle_clients_over_the_cap_do_not_lock_out_a_fresh_request() {
    let limits = HttpLimits {
        max_connections: 4,
        client_request_timeout: Duration::from_secs(1),
        keep_alive: Duration::from_secs(1),
    };
    let (addr, _server) = serve_open_api(limits);

    // Three times the cap in clients that connect and say nothing.
    let _idle = idle_connections(addr, 12).await;
    let answer = tokio::time::timeout(GENEROUS, get_root(addr))
        .await
        .expect("a fresh request is answered while idle clients hog the cap");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Not master: the status endpoint answers 503 at once rather than hanging.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /1/status HTTP/1.1\r\nHost: maintd\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut status = String::new();
    tokio::time::timeout(GENEROUS, stream.read_to_string(&mut status))
        .await
        .expect("answered")
        .expect("read");
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
}
