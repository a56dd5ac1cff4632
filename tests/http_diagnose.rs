//! `HttpDiagnose` against an actix-web server on loopback.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use actix_web::{dev::ServerHandle, web, App, HttpResponse, HttpServer};
use maintd::{
    backend::{
        http_diagnose::{HttpDiagnose, TemplateError},
        DiagnoseSource, FetchError,
    },
    clock::Clock,
    model::diagnose::{report_envelope, RepairAction, ReportError},
    signing::{self, HmacKey},
};
use serde_json::json;

const CAP: usize = 4096;
/// Long enough never to fire on a healthy answer, however slow the machine.
const GENEROUS: Duration = Duration::from_secs(60);

async fn good(node: web::Path<String>) -> HttpResponse {
    let data = json!({"status": "evacuate", "command": "", "details": {"node": *node}});
    HttpResponse::Ok().json(report_envelope(&data, 1_700_000_000_000_000_000))
}

async fn not_json() -> HttpResponse {
    HttpResponse::Ok().body("Ganeti monitoring daemon says hello")
}

async fn without_status() -> HttpResponse {
    HttpResponse::Ok().json(report_envelope(&json!({"details": "?"}), 1))
}

async fn failing() -> HttpResponse {
    HttpResponse::InternalServerError().body("boom")
}

/// An endless body without a length: only a reader that stops at the cap gets through.
async fn endless() -> HttpResponse {
    let chunk = web::Bytes::from(vec![b' '; 1024]);
    HttpResponse::Ok().streaming(futures_util::stream::repeat_with(move || {
        Ok::<_, actix_web::Error>(chunk.clone())
    }))
}

/// A body whose announced length exceeds the cap.
async fn announced_huge() -> HttpResponse {
    HttpResponse::Ok().body(vec![b' '; 4 * CAP])
}

fn test_key() -> HmacKey {
    HmacKey::from_bytes(b"0123456789abcdef0123456789abcdef01234567\n".to_vec()).expect("key")
}

fn now_ns() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_nanos()).expect("fits")
}

#[derive(serde::Deserialize)]
struct SaltQuery {
    salt: Option<String>,
    node: Option<String>,
}

/// A maintd agent's signed answer, salted with the request's salt.
async fn signed(query: web::Query<SaltQuery>) -> HttpResponse {
    let data = json!({"status": "live-repair", "command": "fix", "details": query.node});
    let report = report_envelope(&data, now_ns()).to_string();
    let salt = query.salt.clone().unwrap_or_default();
    HttpResponse::Ok().json(signing::sign(&test_key(), &salt, &report))
}

/// When [`signed_at_a_fixed_time`] made its report, Unix seconds.
const FIXED_TIME: i64 = 1_750_000_000;

/// A maintd agent's signed answer, made at [`FIXED_TIME`] whenever it is asked.
async fn signed_at_a_fixed_time(query: web::Query<SaltQuery>) -> HttpResponse {
    let data = json!({"status": "evacuate", "details": query.node});
    let report = report_envelope(&data, FIXED_TIME * 1_000_000_000).to_string();
    let salt = query.salt.clone().unwrap_or_default();
    HttpResponse::Ok().json(signing::sign(&test_key(), &salt, &report))
}

/// A signed answer recorded earlier: right key, wrong salt.
async fn replayed() -> HttpResponse {
    let report = report_envelope(&json!({"status": "evacuate"}), now_ns()).to_string();
    HttpResponse::Ok().json(signing::sign(&test_key(), "an-earlier-salt", &report))
}

/// Never answers.
async fn stalled() -> HttpResponse {
    std::future::pending::<()>().await;
    HttpResponse::Ok().finish()
}

struct Server {
    port: u16,
    handle: ServerHandle,
}

impl Server {
    fn start() -> Self {
        let server = HttpServer::new(|| {
            App::new()
                .route("/good/{node}", web::get().to(good))
                .route("/not-json/{node}", web::get().to(not_json))
                .route("/without-status/{node}", web::get().to(without_status))
                .route("/failing/{node}", web::get().to(failing))
                .route("/endless/{node}", web::get().to(endless))
                .route("/announced-huge/{node}", web::get().to(announced_huge))
                .route("/stalled/{node}", web::get().to(stalled))
                .route("/signed", web::get().to(signed))
                .route(
                    "/signed-at-a-fixed-time",
                    web::get().to(signed_at_a_fixed_time),
                )
                .route("/replayed/{node}", web::get().to(replayed))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("bind loopback");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Server { port, handle }
    }

    fn source(&self, route: &str, timeout: Duration) -> HttpDiagnose {
        let template = format!("http://127.0.0.1:{}/{route}/{{node}}", self.port);
        HttpDiagnose::new(&template, timeout, CAP).expect("valid template")
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

#[actix_rt::test]
async fn good_report_is_parsed() {
    let server = Server::start();
    let report = server
        .source("good", GENEROUS)
        .fetch("node3.example.com")
        .await
        .expect("report");
    assert_eq!(report.action, RepairAction::Evacuate);
    assert_eq!(report.command, None);
    assert_eq!(report.original["details"]["node"], "node3.example.com");
    server.stop().await;
}

#[actix_rt::test]
async fn bad_bodies_are_report_errors() {
    let server = Server::start();
    let not_json = server.source("not-json", GENEROUS).fetch("node1").await;
    assert!(matches!(
        not_json,
        Err(FetchError::Report(ReportError::NotJson(_)))
    ));
    let without_status = server
        .source("without-status", GENEROUS)
        .fetch("node1")
        .await;
    assert!(matches!(
        without_status,
        Err(FetchError::Report(ReportError::BadDiagnose(_)))
    ));
    server.stop().await;
}

#[actix_rt::test]
async fn server_error_is_a_status() {
    let server = Server::start();
    let answer = server.source("failing", GENEROUS).fetch("node1").await;
    assert_eq!(answer, Err(FetchError::Status(500)));
    server.stop().await;
}

#[actix_rt::test]
async fn huge_bodies_are_cut_at_the_cap() {
    let server = Server::start();
    let endless = server.source("endless", GENEROUS).fetch("node1").await;
    assert_eq!(
        endless,
        Err(FetchError::Report(ReportError::TooLarge {
            size: CAP + 1,
            limit: CAP
        }))
    );
    let announced = server
        .source("announced-huge", GENEROUS)
        .fetch("node1")
        .await;
    assert_eq!(
        announced,
        Err(FetchError::Report(ReportError::TooLarge {
            size: 4 * CAP,
            limit: CAP
        }))
    );
    server.stop().await;
}

#[actix_rt::test]
async fn stalled_server_times_out() {
    let server = Server::start();
    let answer = server
        .source("stalled", Duration::from_millis(200))
        .fetch("node1")
        .await;
    assert!(
        matches!(&answer, Err(FetchError::Unreachable(reason)) if reason.contains("timed out")),
        "{answer:?}"
    );
    server.stop().await;
}

#[actix_rt::test]
async fn closed_port_is_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let template = format!("http://127.0.0.1:{port}/1/report/node/diagnose?node={{node}}");
    let source = HttpDiagnose::new(&template, GENEROUS, CAP).expect("valid template");
    let answer = source.fetch("node1").await;
    assert!(
        matches!(answer, Err(FetchError::Unreachable(_))),
        "{answer:?}"
    );
}

#[actix_rt::test]
async fn bad_templates_are_refused_at_construction() {
    assert!(matches!(
        HttpDiagnose::new("http://127.0.0.1:1815/", GENEROUS, CAP),
        Err(TemplateError::NoPlaceholder(_))
    ));
    assert!(matches!(
        HttpDiagnose::new("gopher://{node}/", GENEROUS, CAP),
        Err(TemplateError::UnsupportedScheme(_))
    ));
}

#[actix_rt::test]
async fn with_a_key_only_signed_answers_to_this_request_are_accepted() {
    let server = Server::start();
    let source = |path: &str, key: HmacKey| {
        HttpDiagnose::new(
            &format!("http://127.0.0.1:{}{path}", server.port),
            GENEROUS,
            CAP,
        )
        .expect("template")
        .verified_with(key, Duration::from_secs(300), Clock::new())
    };
    // The salt is added to a template that already has a query.
    let diagnose = source("/signed?node={node}", test_key())
        .fetch("node1")
        .await
        .expect("signed report accepted");
    assert_eq!(diagnose.action, RepairAction::LiveRepair);
    assert_eq!(diagnose.original["details"], json!("node1"));

    let refused = |result: Result<_, FetchError>| match result {
        Err(FetchError::Report(ReportError::Signature(why))) => why,
        other => panic!("expected a refused signature, got {other:?}"),
    };
    let why = refused(source("/good/{node}", test_key()).fetch("node1").await);
    assert!(why.contains("unsigned"), "{why}");
    let why = refused(source("/replayed/{node}", test_key()).fetch("node1").await);
    assert!(why.contains("replayed"), "{why}");
    let other_key = HmacKey::from_bytes(b"another cluster\n".to_vec()).expect("key");
    let why = refused(
        source("/signed?node={node}", other_key)
            .fetch("node1")
            .await,
    );
    assert!(why.contains("does not match"), "{why}");
    server.handle.stop(false).await;
}

#[actix_rt::test]
async fn a_report_s_age_is_judged_by_the_injected_clock() {
    let server = Server::start();
    let at = |now: i64| {
        HttpDiagnose::new(
            &format!(
                "http://127.0.0.1:{}/signed-at-a-fixed-time?node={{node}}",
                server.port
            ),
            GENEROUS,
            CAP,
        )
        .expect("template")
        .verified_with(
            test_key(),
            Duration::from_secs(300),
            Clock::starting_at(now as f64),
        )
    };
    // Made 100 s before the clock's now: fresh, whatever the machine's time.
    let diagnose = at(FIXED_TIME + 100)
        .fetch("node1")
        .await
        .expect("a fresh report is accepted");
    assert_eq!(diagnose.action, RepairAction::Evacuate);
    let refused = |result: Result<_, FetchError>| match result {
        Err(FetchError::Report(ReportError::Signature(why))) => why,
        other => panic!("expected a refused report, got {other:?}"),
    };
    // The same report, judged an hour later or an hour earlier.
    let why = refused(at(FIXED_TIME + 3600).fetch("node1").await);
    assert!(why.contains("stale") && why.contains("3600 s ago"), "{why}");
    let why = refused(at(FIXED_TIME - 3600).fetch("node1").await);
    assert!(why.contains("from the future"), "{why}");
    server.stop().await;
}
