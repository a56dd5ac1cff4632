//! AgentWeb: the node agent's HTTP server (actix-web). mond's paths for the diagnose
//! report, plus the repair endpoints; the protocol is documented in
//! [`maintd::agent`]. Handlers ask the collector and the executor by message; answers
//! are signed with the cluster key when the agent has one.

use std::sync::{Arc, Mutex};

use actix::prelude::*;
use actix_web::{
    http::StatusCode,
    web::{self, Bytes, Data, Path},
    App, HttpRequest, HttpResponse,
};
use maintd::{
    agent::{
        collectors,
        repair::{authenticate, Submission},
        replica::{authenticate_push, ReplicaStore, MAX_PUSH_BYTES},
        MAX_REQUEST_BYTES,
    },
    clock::Clock,
    signing::{salt_is_valid, sign, unix_salt, HmacKey},
};
use serde::{Deserialize, Serialize};
use tracing::info;
use uuid::Uuid;

use crate::{
    agent::diagnose_collector::{DiagnoseCollector, GetDiagnoseReport},
    agent::repair_executor::{GetExecution, RepairExecutor, SubmitRepair},
    http_server::{log_refusals, HttpLimits, HttpServerActor, Listeners, PeerLog, Refusal},
};

/// What the handlers need.
#[derive(Clone)]
pub struct AgentContext {
    /// The diagnose collector.
    pub collector: Addr<DiagnoseCollector>,
    /// The repair executor.
    pub repairs: Addr<RepairExecutor>,
    /// The copy of maintd's state pushed by the master.
    pub replica: Arc<Mutex<ReplicaStore>>,
    /// The cluster key; `None`: unsigned reports, repairs refused.
    pub key: Option<Arc<HmacKey>>,
    /// This node's name.
    pub node_name: String,
    /// Time source.
    pub clock: Clock,
}

impl AgentContext {
    fn now_secs(&self) -> u64 {
        // The clock never goes before 1970 on a real node; clamp rather than wrap if so.
        self.clock.now().max(0.0) as u64
    }

    /// `value` as the body: signed with `salt` when there is a key.
    fn answer(&self, status: StatusCode, value: &impl Serialize, salt: &str) -> HttpResponse {
        let text = match serde_json::to_string(value) {
            Ok(text) => text,
            Err(e) => return text_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        let body = match &self.key {
            Some(key) => match serde_json::to_string(&sign(key, salt, &text)) {
                Ok(signed) => signed,
                Err(e) => return text_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            None => text,
        };
        HttpResponse::build(status)
            .content_type("application/json")
            .body(body)
    }

    /// The salt to sign a GET answer with: the query's, or the current Unix time; a
    /// 400 answer if the query's is invalid.
    fn reply_salt(&self, req: &HttpRequest) -> Result<String, Box<HttpResponse>> {
        let bad = |why: String| Box::new(text_response(StatusCode::BAD_REQUEST, &why));
        let query = web::Query::<SaltQuery>::from_query(req.query_string())
            .map_err(|e| bad(format!("bad query string: {e}")))?;
        match &query.salt {
            Some(salt) if salt_is_valid(salt) => Ok(salt.clone()),
            Some(salt) => Err(bad(format!(
                "salt {salt:?} is invalid: 1 to 64 characters of letters, digits and '-'"
            ))),
            None => Ok(unix_salt(self.now_secs())),
        }
    }
}

#[derive(Deserialize)]
struct SaltQuery {
    salt: Option<String>,
}

/// A plain-text answer; a refusal (4xx) carries its reason for the log of refusals.
fn text_response(status: StatusCode, text: &str) -> HttpResponse {
    let mut response = HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(format!("{text}\n"));
    if status.is_client_error() {
        response.extensions_mut().insert(Refusal(text.to_owned()));
    }
    response
}

async fn versions() -> HttpResponse {
    HttpResponse::Ok().json([1])
}

async fn version_root() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::Value::Null)
}

async fn list_collectors() -> HttpResponse {
    HttpResponse::Ok().json(collectors())
}

async fn diagnose_report(agent: Data<AgentContext>, req: HttpRequest) -> HttpResponse {
    let salt = match agent.reply_salt(&req) {
        Ok(salt) => salt,
        Err(response) => return *response,
    };
    match agent.collector.send(GetDiagnoseReport).await {
        Ok(Some(report)) => agent.answer(StatusCode::OK, &report, &salt),
        Ok(None) => text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the first diagnose run has not finished yet",
        ),
        Err(e) => text_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn submit_repair(agent: Data<AgentContext>, body: Bytes) -> HttpResponse {
    let accepted = match authenticate(
        agent.key.as_deref(),
        &body,
        &agent.node_name,
        agent.now_secs(),
    ) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            // Logged with the client's address by log_refusals, rate-limited per client:
            // a stream of forged requests must not flood the log.
            let status =
                StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return text_response(status, &refusal.to_string());
        }
    };
    let salt = accepted.salt.clone();
    match agent.repairs.send(SubmitRepair(accepted)).await {
        Ok(Ok(Submission::Queued(execution))) => {
            agent.answer(StatusCode::ACCEPTED, &execution, &salt)
        }
        Ok(Ok(Submission::Existing(execution))) => {
            info!(target: "maintd::agent", incident = %execution.incident, "repair request resubmitted; nothing new runs");
            agent.answer(StatusCode::OK, &execution, &salt)
        }
        Ok(Err(e)) => text_response(StatusCode::INTERNAL_SERVER_ERROR, &e),
        Err(e) => text_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn get_repair(
    agent: Data<AgentContext>,
    req: HttpRequest,
    incident: Path<String>,
) -> HttpResponse {
    let salt = match agent.reply_salt(&req) {
        Ok(salt) => salt,
        Err(response) => return *response,
    };
    let Ok(incident) = Uuid::parse_str(&incident) else {
        return text_response(
            StatusCode::BAD_REQUEST,
            &format!("{:?} is not an incident uuid", incident.as_str()),
        );
    };
    match agent.repairs.send(GetExecution(incident)).await {
        Ok(Some(execution)) => agent.answer(StatusCode::OK, &execution, &salt),
        Ok(None) => text_response(
            StatusCode::NOT_FOUND,
            &format!("no repair execution for incident {incident}"),
        ),
        Err(e) => text_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn put_maintd_state(agent: Data<AgentContext>, body: Bytes) -> HttpResponse {
    let accepted = match authenticate_push(agent.key.as_deref(), &body, agent.now_secs()) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            // Logged with the client's address by log_refusals, rate-limited per client.
            let status =
                StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return text_response(status, &refusal.to_string());
        }
    };
    drop(body);
    let salt = accepted.salt;
    let push = accepted.push;
    let (serial, master) = (push.serial, push.master.clone());
    let replica = agent.replica.clone();
    let now = agent.clock.now();
    // Writing a few MB and syncing them: off the server's threads.
    let offered = web::block(move || {
        let mut replica = replica.lock().unwrap_or_else(|e| e.into_inner());
        replica.offer(push.serial, push.master, push.state, now)
    })
    .await;
    match offered {
        Ok(Ok(outcome)) => {
            let ack = outcome.ack();
            info!(target: "maintd::agent", serial, %master, held = ack.serial, accepted = ack.accepted, "maintd state pushed");
            agent.answer(StatusCode::OK, &ack, &salt)
        }
        Ok(Err(e)) => {
            tracing::error!(target: "maintd::agent", serial, %master, error = %e, "cannot write the copy of maintd's state");
            text_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
        Err(e) => text_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn get_maintd_state(agent: Data<AgentContext>, req: HttpRequest) -> HttpResponse {
    if agent.key.is_none() {
        return text_response(
            StatusCode::FORBIDDEN,
            "the copy of maintd's state is served signed only: the agent has no cluster HMAC key",
        );
    }
    let salt = match agent.reply_salt(&req) {
        Ok(salt) => salt,
        Err(response) => return *response,
    };
    let replica = agent.replica.clone();
    let latest = web::block(move || replica.lock().unwrap_or_else(|e| e.into_inner()).latest());
    match latest.await {
        Ok(Some(latest)) => agent.answer(StatusCode::OK, &*latest, &salt),
        Ok(None) => text_response(StatusCode::NOT_FOUND, "no copy of maintd's state held"),
        Err(e) => text_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn not_found() -> HttpResponse {
    text_response(StatusCode::NOT_FOUND, "not found")
}

async fn method_not_allowed() -> HttpResponse {
    text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// The agent's routes; an [`AgentContext`] must be registered as app data. Each path
/// answers one method; others get 405.
pub fn configure(cfg: &mut web::ServiceConfig) {
    fn one<F, Args>(path: &str, method: actix_web::Route, handler: F) -> actix_web::Resource
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        web::resource(path)
            .route(method.to(handler))
            .default_service(web::to(method_not_allowed))
    }
    cfg.service(one("/", web::get(), versions))
        .service(one("/1", web::get(), version_root))
        .service(one("/1/list/collectors", web::get(), list_collectors))
        .service(one("/1/report/node/diagnose", web::get(), diagnose_report))
        .service(one("/1/repair", web::post(), submit_repair))
        .service(one("/1/repair/{incident}", web::get(), get_repair))
        .service(
            web::resource("/1/maintd-state")
                .app_data(web::PayloadConfig::new(MAX_PUSH_BYTES))
                .route(web::put().to(put_maintd_state))
                .route(web::get().to(get_maintd_state))
                .default_service(web::to(method_not_allowed)),
        );
}

/// The app as served.
pub fn app(
    agent: AgentContext,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(Data::new(agent))
        .app_data(web::PayloadConfig::new(MAX_REQUEST_BYTES))
        .app_data(Data::new(PeerLog::new("node agent")))
        .configure(configure)
        .default_service(web::to(not_found))
        .wrap(actix_web::middleware::from_fn(log_refusals))
}

/// The web actor: owns the HTTP server and stops it when stopped.
pub type AgentWeb = HttpServerActor;

/// Start serving on `listeners` within `limits`.
pub fn serve(
    listeners: Listeners,
    limits: HttpLimits,
    agent: AgentContext,
) -> std::io::Result<AgentWeb> {
    HttpServerActor::serve(listeners, "node agent", limits, move || app(agent.clone()))
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        os::unix::fs::{chown, PermissionsExt},
        time::Duration,
    };

    use actix_web::test;
    use maintd::{
        agent::{repair::RepairBook, whitelist::Whitelist},
        store::JsonStore,
    };

    use super::*;
    use crate::{
        agent::diagnose_collector::CollectorConfig,
        agent::repair_executor::{RepairConfig, EXECUTIONS_FILE},
    };

    /// An agent context whose diagnose command takes far longer than any test, so the
    /// first run never finishes while the test runs.
    fn context(dir: &std::path::Path) -> AgentContext {
        let list = dir.join("diagnose");
        fs::create_dir(&list).unwrap();
        chown(&list, Some(0), Some(0)).unwrap();
        fs::set_permissions(&list, fs::Permissions::from_mode(0o755)).unwrap();
        let slow = list.join("slow");
        fs::write(&slow, "#!/bin/sh\nexec sleep 600\n").unwrap();
        chown(&slow, Some(0), Some(0)).unwrap();
        fs::set_permissions(&slow, fs::Permissions::from_mode(0o755)).unwrap();
        let clock = Clock::new();
        let collector = DiagnoseCollector::new(
            CollectorConfig {
                whitelist: Whitelist::new(&list),
                command: "slow".into(),
                interval: Duration::from_secs(600),
                timeout: Duration::from_secs(600),
            },
            clock,
        )
        .start();
        let repairs = RepairExecutor::new(
            RepairBook::new(10),
            JsonStore::open(&dir.join("state"), EXECUTIONS_FILE).unwrap(),
            RepairConfig {
                whitelist: Whitelist::new(dir.join("repair")),
                timeout: Duration::from_secs(10),
                max_output: 100,
            },
            clock,
        )
        .start();
        AgentContext {
            collector,
            repairs,
            replica: Arc::new(Mutex::new(
                ReplicaStore::open(&dir.join("state"), clock.now()).unwrap(),
            )),
            key: Some(Arc::new(
                HmacKey::from_bytes(b"0123456789abcdef0123456789abcdef01234567\n".to_vec())
                    .unwrap(),
            )),
            node_name: "node1".into(),
            clock,
        }
    }

    #[actix::test]
    async fn the_report_is_503_until_the_first_diagnose_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let service = test::init_service(app(context(dir.path()))).await;
        let response = test::call_service(
            &service,
            test::TestRequest::get()
                .uri("/1/report/node/diagnose")
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = test::read_body(response).await;
        assert!(String::from_utf8_lossy(&body).contains("first diagnose"));
    }

    #[actix::test]
    async fn oversized_repair_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let service = test::init_service(app(context(dir.path()))).await;
        let response = test::call_service(
            &service,
            test::TestRequest::post()
                .uri("/1/repair")
                .set_payload(vec![b' '; MAX_REQUEST_BYTES + 1])
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // Just under the limit, the body is read and judged on its content.
        let response = test::call_service(
            &service,
            test::TestRequest::post()
                .uri("/1/repair")
                .set_payload(vec![b' '; MAX_REQUEST_BYTES])
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
