//! WebActor: maintd's HTTP API (actix-web). Read-only status in Ganeti 2.17's shapes plus
//! incident cancellation. Handlers reach the event registry through a [`RegistryLink`] that
//! the cluster supervisor sets while this node is master; otherwise they answer 503.

use std::sync::{Arc, RwLock};

use actix::{prelude::*, WeakAddr};
use actix_web::{
    http::StatusCode,
    web::{self, Bytes, Data, Path, Query},
    App, HttpMessage, HttpRequest, HttpResponse,
};
use maintd::{
    clock::Clock,
    metrics::{Exposition, Metrics},
    model::incident::{CancelError, Incident},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

// The scrape's state gauges (GET /metrics).
use crate::daemon::messages::GetMetricsState;
use crate::{
    daemon::access::{check_access, ApiAccess, ApiUserName},
    daemon::messages::{
        CancelIncident, CancelRefused, GetHistory, GetIncident, GetPlan, GetSafety, GetStatus,
        Pause, Resume, StatusView,
    },
    daemon::registry::EventRegistry,
    http_server::{log_refusals, HttpLimits, HttpServerActor, Listeners, PeerLog},
};

/// Where HTTP handlers find the registry; empty while this node is not master.
#[derive(Clone, Default)]
pub struct RegistryLink(Arc<RwLock<Option<WeakAddr<EventRegistry>>>>);

impl RegistryLink {
    /// Point handlers at `registry` (weakly: the supervisor owns it).
    pub fn attach(&self, registry: &Addr<EventRegistry>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(registry.downgrade());
        }
    }

    /// Handlers answer 503 from now on.
    pub fn detach(&self) {
        if let Ok(mut slot) = self.0.write() {
            *slot = None;
        }
    }

    /// Send `msg` to the registry and wait for its answer.
    pub(crate) async fn ask<M>(&self, msg: M) -> Result<M::Result, ApiError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        EventRegistry: Handler<M>,
    {
        self.registry()?
            .send(msg)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    fn registry(&self) -> Result<Addr<EventRegistry>, ApiError> {
        self.0
            .read()
            .ok()
            .and_then(|slot| slot.as_ref().and_then(WeakAddr::upgrade))
            .ok_or(ApiError::NotMaster)
    }
}

/// Errors of the HTTP API, rendered as `{"error": ..., "message": ...}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// This node is not master, so maintd is idle.
    #[error("maintd is idle: this node is not the master")]
    NotMaster,
    /// The registry did not answer.
    #[error("internal error: {0}")]
    Internal(String),
    /// Malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// No such incident.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the incident's state.
    #[error("{0}")]
    Conflict(String),
    /// The change could not be made durable, so it was not made.
    #[error("{0}")]
    Unavailable(String),
}

impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotMaster => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = self.status_code();
        HttpResponse::build(code).json(json!({
            "error": code.canonical_reason().unwrap_or("error"),
            "message": self.to_string(),
        }))
    }
}

/// An incident as `/1/status` shows it (Ganeti 2.17's keys, plus `message` and `command`).
#[derive(Debug, Serialize)]
pub struct IncidentView<'a> {
    uuid: Uuid,
    node: &'a str,
    original: &'a serde_json::Value,
    action: &'a str,
    command: Option<&'a str>,
    #[serde(rename = "repair-status")]
    repair_status: maintd::model::incident::RepairStatus,
    jobs: &'a [maintd::model::job::JobId],
    tag: &'a str,
    message: Option<&'a str>,
    ctime: f64,
    mtime: f64,
    /// Seen in enough consecutive polls to be acted upon.
    confirmed: bool,
    /// Held by the flap budget.
    flapping: bool,
    /// A job of it runs past `rounds.job_timeout`.
    stuck: bool,
}

impl<'a> From<&'a Incident> for IncidentView<'a> {
    fn from(i: &'a Incident) -> Self {
        IncidentView {
            uuid: i.uuid,
            node: &i.node,
            original: &i.original,
            action: i.action.as_str(),
            command: i.command.as_deref(),
            repair_status: i.status,
            jobs: &i.jobs,
            tag: &i.tag,
            message: i.message.as_deref(),
            ctime: i.ctime,
            mtime: i.mtime,
            confirmed: i.confirmed,
            flapping: i.flapping,
            stuck: i.stuck_job.is_some(),
        }
    }
}

async fn status_view(link: &RegistryLink) -> Result<StatusView, ApiError> {
    link.ask(GetStatus).await
}

async fn versions() -> HttpResponse {
    HttpResponse::Ok().json([1])
}

async fn version_root() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::Value::Null)
}

async fn status(link: Data<RegistryLink>) -> Result<HttpResponse, ApiError> {
    let view = status_view(&link).await?;
    let incidents: Vec<IncidentView<'_>> = view.incidents.iter().map(IncidentView::from).collect();
    Ok(HttpResponse::Ok().json(incidents))
}

/// One incident with its history.
#[derive(Serialize)]
struct IncidentDetail<'a> {
    #[serde(flatten)]
    view: IncidentView<'a>,
    /// No longer tracked: found in the history of forgotten incidents.
    forgotten: bool,
    history: &'a [maintd::model::incident::HistoryEntry],
}

async fn incident(link: Data<RegistryLink>, uuid: Path<String>) -> Result<HttpResponse, ApiError> {
    let uuid = parse_uuid(&uuid)?;
    let (found, forgotten) = link
        .ask(GetIncident { uuid })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no incident {uuid}")))?;
    Ok(HttpResponse::Ok().json(IncidentDetail {
        view: IncidentView::from(&found),
        forgotten,
        history: &found.history,
    }))
}

/// Who made an API request, for history entries: the user (when authenticated) and the
/// client's address.
fn client_of(request: &HttpRequest) -> String {
    let address = match request.peer_addr() {
        Some(addr) => format!("api client {}", addr.ip()),
        None => "api client (unknown address)".into(),
    };
    match request.extensions().get::<ApiUserName>() {
        Some(ApiUserName(user)) => format!("user {user} ({address})"),
        None => address,
    }
}

/// The body of `POST /1/pause`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseRequest {
    reason: Option<String>,
}

/// Longest pause reason accepted.
const MAX_REASON_CHARS: usize = 1000;

async fn pause(
    request: HttpRequest,
    link: Data<RegistryLink>,
    clock: Data<Clock>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let parsed: PauseRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "the body must be a JSON object {{\"reason\": \"...\"}} (or empty): {e}"
            ))
        })?;
        parsed.reason
    };
    if let Some(reason) = &reason {
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(ApiError::BadRequest(format!(
                "the reason is longer than {MAX_REASON_CHARS} characters"
            )));
        }
    }
    let view = link
        .ask(Pause {
            reason,
            by: client_of(&request),
            at: clock.now(),
        })
        .await?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(view))
}

async fn resume(
    request: HttpRequest,
    link: Data<RegistryLink>,
    clock: Data<Clock>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let empty_object = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
        .is_ok_and(|m| m.is_empty());
    if !(body.iter().all(u8::is_ascii_whitespace) || empty_object) {
        return Err(ApiError::BadRequest(
            "resume takes no body (or an empty JSON object)".into(),
        ));
    }
    let view = link
        .ask(Resume {
            by: client_of(&request),
            at: clock.now(),
        })
        .await?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(view))
}

async fn safety(link: Data<RegistryLink>) -> Result<HttpResponse, ApiError> {
    let view = link.ask(GetSafety).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn plan(link: Data<RegistryLink>) -> Result<HttpResponse, ApiError> {
    let view = link.ask(GetPlan).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// The query of `GET /1/history`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<String>,
}

/// Most forgotten incidents one `/1/history` answer holds.
const MAX_HISTORY_LIMIT: usize = 10_000;

async fn history(
    link: Data<RegistryLink>,
    query: Result<Query<HistoryQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let query = query.map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?;
    let limit = match &query.limit {
        None => 100,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_HISTORY_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit must be a whole number from 1 to {MAX_HISTORY_LIMIT}, not {text:?}"
                ))
            })?,
    };
    let forgotten = link.ask(GetHistory { limit }).await?;
    let entries: Vec<_> = forgotten
        .iter()
        .map(|i| IncidentDetail {
            view: IncidentView::from(i),
            forgotten: true,
            history: &i.history,
        })
        .collect();
    Ok(HttpResponse::Ok().json(entries))
}

async fn jobs(link: Data<RegistryLink>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(status_view(&link).await?.jobs))
}

async fn evacuated(link: Data<RegistryLink>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(status_view(&link).await?.evacuated))
}

async fn nodes(link: Data<RegistryLink>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(status_view(&link).await?.nodes))
}

async fn cancel(
    request: HttpRequest,
    link: Data<RegistryLink>,
    clock: Data<Clock>,
    uuid: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uuid = parse_uuid(&uuid)?;
    let answer = link
        .ask(CancelIncident {
            uuid,
            by: client_of(&request),
            at: clock.now(),
        })
        .await?;
    match answer {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({"uuid": uuid, "repair-status": "canceled"}))),
        Err(CancelRefused::Refused(e @ CancelError::NotFound(_))) => {
            Err(ApiError::NotFound(e.to_string()))
        }
        Err(CancelRefused::Refused(e @ CancelError::Finished(..))) => {
            Err(ApiError::Conflict(e.to_string()))
        }
        Err(CancelRefused::NotDurable(e)) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// `GET /metrics`: Prometheus' scrape, in the format the client asks for; the state
/// gauges come from the registry at each scrape, and only while this node is master.
async fn metrics(
    request: HttpRequest,
    link: Data<RegistryLink>,
    metrics: Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let state = match link.ask(GetMetricsState).await {
        Ok(state) => Some(state),
        Err(ApiError::NotMaster) => None,
        Err(e) => return Err(e),
    };
    let accept = request
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Exposition::from_accept(accept);
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .body(metrics.encode(state.as_ref(), format)))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such resource".into()))
}

fn parse_uuid(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::BadRequest(format!("{text:?} is not an incident uuid")))
}

/// The API's routes; `link`, `clock` and the [`Metrics`] must be registered as app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(versions))
        .route("/1", web::get().to(version_root))
        .route("/metrics", web::get().to(metrics))
        .route("/1/status", web::get().to(status))
        .route("/1/jobs", web::get().to(jobs))
        .route("/1/evacuated", web::get().to(evacuated))
        .route("/1/nodes", web::get().to(nodes))
        .route("/1/incidents/{uuid}", web::get().to(incident))
        .route("/1/incidents/{uuid}/cancel", web::post().to(cancel))
        .route("/1/safety", web::get().to(safety))
        .route("/1/plan", web::get().to(plan))
        .route("/1/history", web::get().to(history))
        .route("/1/pause", web::post().to(pause))
        .route("/1/resume", web::post().to(resume));
    // The web page, behind the same access checks.
    crate::daemon::web_ui::configure(cfg);
}

/// The app as served, for the server and for tests: every request passes `access`;
/// `/metrics` serves `metrics`.
pub fn app(
    link: RegistryLink,
    clock: Clock,
    access: Arc<ApiAccess>,
    metrics: Arc<Metrics>,
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
        .app_data(Data::new(link))
        .app_data(Data::new(clock))
        .app_data(Data::new(PeerLog::new("maintd API")))
        .app_data(
            web::JsonConfig::default()
                .error_handler(|e, _| ApiError::BadRequest(e.to_string()).into()),
        )
        .app_data(Data::from(access))
        .app_data(Data::from(metrics))
        .configure(configure)
        .default_service(web::to(not_found))
        // Inside the refusal log, so that refused logins are logged with the client.
        .wrap(actix_web::middleware::from_fn(check_access))
        .wrap(actix_web::middleware::from_fn(log_refusals))
}

/// The web actor: owns the HTTP server and stops it when stopped.
pub type WebActor = HttpServerActor;

/// Start serving on `listeners` within `limits`.
pub fn serve(
    listeners: Listeners,
    link: RegistryLink,
    clock: Clock,
    limits: HttpLimits,
    access: Arc<ApiAccess>,
    metrics: Arc<Metrics>,
) -> std::io::Result<WebActor> {
    HttpServerActor::serve(listeners, "maintd API", limits, move || {
        app(link.clone(), clock, access.clone(), metrics.clone())
    })
}
