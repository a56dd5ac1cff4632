//! The simulator's HTTP control API and its per-node monitoring endpoints.
//!
//! Control routes live under `/sim`; errors are `{"error": "..."}` with a fitting status.
//! The monitoring daemon of node `N` is served under `/mond/N/` in mond's own shapes, so
//! maintd's report URL template for the simulator is
//! `http://ADDR/mond/{node}/1/report/node/diagnose`.
//!
//! Over HTTP a node cannot refuse a connection on one path only, so an `unreachable`
//! monitoring behaviour is served as `503 Service Unavailable`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maintd::model::job::JobId;
use maintd::signing::{salt_is_valid, sign, unix_salt, HmacKey};
use maintd::sim::luxi::SUPPORTED_OPCODES;
use maintd::sim::{MonitoringBehaviour, MonitoringReply, SimError, SimHandle};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// The key the nodes' diagnose reports are signed with, if any (`maintd sim
/// --sign-reports`).
#[derive(Clone, Default)]
pub struct ReportKey(pub Option<HmacKey>);

/// The query of a signed report request.
#[derive(Deserialize)]
struct SaltQuery {
    salt: Option<String>,
}

/// Register the control and monitoring routes; expects `web::Data<SimHandle>` (and
/// `web::Data<ReportKey>` to sign reports).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/sim")
            .route("/nodes", web::get().to(list_nodes))
            .route("/nodes", web::post().to(add_node))
            .route("/nodes/{node}", web::delete().to(remove_node))
            .route("/nodes/{node}/diagnose", web::put().to(set_diagnose))
            .route("/nodes/{node}/monitoring", web::put().to(set_monitoring))
            .route(
                "/nodes/{node}/tags/{tag}",
                web::delete().to(delete_node_tag),
            )
            .route("/nodes/{node}/repairs", web::get().to(node_repairs))
            .route("/instances", web::get().to(list_instances))
            .route("/jobs", web::get().to(list_jobs))
            .route("/jobs/{id}", web::get().to(show_job))
            .route("/faults", web::get().to(show_faults))
            .route("/faults", web::post().to(inject_fault))
            .route("/faults/release", web::post().to(release_hung_jobs))
            .route("/master", web::post().to(set_master)),
    )
    .service(
        web::scope("/mond/{node}")
            .route("", web::get().to(mond_root))
            .route("/", web::get().to(mond_root))
            .route("/1", web::get().to(mond_version_one))
            .route("/1/list/collectors", web::get().to(mond_collectors))
            .route("/1/report/node/diagnose", web::get().to(mond_diagnose))
            .route(
                "/1/report/default/cpu-avg-load",
                web::get().to(mond_cpu_load),
            ),
    );
}

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message.into()}))
}

/// HTTP status of each refusal: unknown things are 404, conflicts with the cluster's
/// state are 409, bad input is 400.
fn sim_error(err: SimError) -> HttpResponse {
    let status = match &err {
        SimError::UnknownNode(_) | SimError::NoSuchTag { .. } => StatusCode::NOT_FOUND,
        SimError::InvalidName(_) | SimError::EmptyJob => StatusCode::BAD_REQUEST,
        SimError::NodeExists(_)
        | SimError::NodeInUse(_)
        | SimError::IsMaster(_)
        | SimError::NodeOffline(_)
        | SimError::QueueDrained => StatusCode::CONFLICT,
    };
    error(status, err.to_string())
}

/// Parse a JSON body ourselves, so that bad input gets our error shape.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

async fn list_nodes(sim: web::Data<SimHandle>) -> HttpResponse {
    let now = sim.now();
    HttpResponse::Ok().json(sim.lock().node_views(now))
}

#[derive(Deserialize)]
struct NewNode {
    name: String,
}

async fn add_node(sim: web::Data<SimHandle>, body: web::Bytes) -> HttpResponse {
    let request: NewNode = match parse_body(&body) {
        Ok(request) => request,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let now = sim.now();
    let mut cluster = sim.lock();
    match cluster.add_node(&request.name, now) {
        Ok(()) => match cluster.node_view(&request.name, now) {
            Some(view) => HttpResponse::Created().json(view),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "added node vanished"),
        },
        Err(err) => sim_error(err),
    }
}

async fn remove_node(sim: web::Data<SimHandle>, node: web::Path<String>) -> HttpResponse {
    let now = sim.now();
    match sim.lock().remove_node(&node, now) {
        Ok(()) => HttpResponse::Ok().json(json!({"removed": node.as_str()})),
        Err(err) => sim_error(err),
    }
}

async fn set_diagnose(
    sim: web::Data<SimHandle>,
    node: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let diagnose: Value = match parse_body(&body) {
        Ok(value) => value,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let now = sim.now();
    match sim.lock().set_diagnose(&node, diagnose.clone(), now) {
        Ok(()) => HttpResponse::Ok().json(json!({"node": node.as_str(), "diagnose": diagnose})),
        Err(err) => sim_error(err),
    }
}

async fn set_monitoring(
    sim: web::Data<SimHandle>,
    node: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let behaviour: MonitoringBehaviour = match parse_body(&body) {
        Ok(value) => value,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let now = sim.now();
    match sim.lock().set_monitoring(&node, behaviour.clone(), now) {
        Ok(()) => HttpResponse::Ok().json(json!({"node": node.as_str(), "monitoring": behaviour})),
        Err(err) => sim_error(err),
    }
}

async fn delete_node_tag(
    sim: web::Data<SimHandle>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (node, tag) = path.into_inner();
    let now = sim.now();
    let mut cluster = sim.lock();
    match cluster.remove_node_tag(&node, &tag, now) {
        Ok(()) => {
            let tags = cluster
                .node_view(&node, now)
                .map(|view| view.tags)
                .unwrap_or_default();
            HttpResponse::Ok().json(json!({"node": node, "tags": tags}))
        }
        Err(err) => sim_error(err),
    }
}

async fn node_repairs(sim: web::Data<SimHandle>, node: web::Path<String>) -> HttpResponse {
    let now = sim.now();
    match sim.lock().repairs(&node, now) {
        Ok(repairs) => HttpResponse::Ok().json(repairs),
        Err(err) => sim_error(err),
    }
}

async fn list_instances(sim: web::Data<SimHandle>) -> HttpResponse {
    let now = sim.now();
    HttpResponse::Ok().json(sim.lock().instance_views(now))
}

async fn list_jobs(sim: web::Data<SimHandle>) -> HttpResponse {
    let now = sim.now();
    HttpResponse::Ok().json(sim.lock().job_views(now))
}

async fn show_job(sim: web::Data<SimHandle>, id: web::Path<String>) -> HttpResponse {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid job id {:?}", id.as_str()),
        );
    };
    let now = sim.now();
    match sim.lock().job_view(JobId(id), now) {
        Some(view) => HttpResponse::Ok().json(view),
        None => error(StatusCode::NOT_FOUND, format!("job {id} does not exist")),
    }
}

/// `POST /sim/faults`: the next `count` jobs containing `opcode` fail, or with
/// `"hang": true` stay running (holding their nodes) until `POST /sim/faults/release`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    opcode: String,
    #[serde(default = "one")]
    count: u32,
    #[serde(default)]
    hang: bool,
}

fn one() -> u32 {
    1
}

/// Pending faults and hangs per opcode, and the jobs hanging now.
fn faults_view(cluster: &mut maintd::sim::SimCluster, now: f64) -> Value {
    json!({
        "pending": cluster.pending_faults(),
        "hangs": cluster.pending_hangs(),
        "hung_jobs": cluster.hung_jobs(now),
    })
}

async fn show_faults(sim: web::Data<SimHandle>) -> HttpResponse {
    let now = sim.now();
    HttpResponse::Ok().json(faults_view(&mut sim.lock(), now))
}

async fn inject_fault(sim: web::Data<SimHandle>, body: web::Bytes) -> HttpResponse {
    let request: FaultRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    if !SUPPORTED_OPCODES
        .iter()
        .any(|(id, _)| *id == request.opcode)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown opcode {:?}", request.opcode),
        );
    }
    if request.count == 0 {
        return error(StatusCode::BAD_REQUEST, "count must be at least 1");
    }
    let now = sim.now();
    let mut cluster = sim.lock();
    if request.hang {
        cluster.inject_hang(&request.opcode, request.count);
    } else {
        cluster.inject_fault(&request.opcode, request.count);
    }
    HttpResponse::Ok().json(faults_view(&mut cluster, now))
}

/// Let every hung job finish (successfully, unless a failure is injected too) and drop
/// the pending hangs.
async fn release_hung_jobs(sim: web::Data<SimHandle>) -> HttpResponse {
    let now = sim.now();
    let mut cluster = sim.lock();
    let released = cluster.release_hung_jobs(now);
    let mut view = faults_view(&mut cluster, now);
    view["released"] = json!(released);
    HttpResponse::Ok().json(view)
}

#[derive(Deserialize)]
struct MasterRequest {
    node: String,
}

async fn set_master(sim: web::Data<SimHandle>, body: web::Bytes) -> HttpResponse {
    let request: MasterRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let now = sim.now();
    match sim.lock().set_master(&request.node, now) {
        Ok(()) => HttpResponse::Ok().json(json!({"master": request.node})),
        Err(err) => sim_error(err),
    }
}

// ----- the per-node monitoring daemons -----

/// mond answers unknown paths with 404 and plain text; an unknown node does the same.
fn mond_not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain")
        .body("Unable to produce a report for the requested resource")
}

fn node_exists(sim: &SimHandle, node: &str) -> bool {
    let now = sim.now();
    sim.lock().node_view(node, now).is_some()
}

async fn mond_root(sim: web::Data<SimHandle>, node: web::Path<String>) -> HttpResponse {
    if !node_exists(&sim, &node) {
        return mond_not_found();
    }
    HttpResponse::Ok().json(json!([1]))
}

async fn mond_version_one(sim: web::Data<SimHandle>, node: web::Path<String>) -> HttpResponse {
    if !node_exists(&sim, &node) {
        return mond_not_found();
    }
    HttpResponse::Ok().json(Value::Null)
}

async fn mond_collectors(sim: web::Data<SimHandle>, node: web::Path<String>) -> HttpResponse {
    if !node_exists(&sim, &node) {
        return mond_not_found();
    }
    // `[name, category, kind]`, as mond sends it (kind 1 = status collector).
    HttpResponse::Ok().json(json!([["diagnose", "node", 1]]))
}

async fn mond_cpu_load(sim: web::Data<SimHandle>, node: web::Path<String>) -> HttpResponse {
    let now = sim.now();
    match sim.lock().cpu_load_report(&node, now) {
        Some(report) => HttpResponse::Ok().json(report),
        None => mond_not_found(),
    }
}

async fn mond_diagnose(
    sim: web::Data<SimHandle>,
    key: Option<web::Data<ReportKey>>,
    node: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    let now = sim.now();
    let reply = sim.lock().monitoring_reply(&node, now);
    match reply {
        None => mond_not_found(),
        Some(MonitoringReply::Report(report)) => match key.as_ref().and_then(|k| k.0.as_ref()) {
            None => HttpResponse::Ok().json(report),
            // Signed as the node agent signs it: the report's text, salted with the
            // request's salt (or the time).
            Some(key) => {
                let query = web::Query::<SaltQuery>::from_query(req.query_string())
                    .map(|q| q.into_inner().salt)
                    .unwrap_or(None);
                let salt = match query {
                    Some(salt) if salt_is_valid(&salt) => salt,
                    Some(salt) => {
                        return error(StatusCode::BAD_REQUEST, format!("invalid salt {salt:?}"))
                    }
                    None => unix_salt(now.max(0.0) as u64),
                };
                HttpResponse::Ok().json(sign(key, &salt, &report.to_string()))
            }
        },
        Some(MonitoringReply::Raw(body)) => HttpResponse::Ok().body(body),
        Some(MonitoringReply::Unreachable) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "monitoring daemon of {} is unreachable (simulated)",
                node.as_str()
            ),
        ),
        Some(MonitoringReply::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            HttpResponse::build(status)
                .content_type("text/plain")
                .body(format!("simulated HTTP status {code}"))
        }
    }
}
