//! The web page at `/ui/`: incidents, nodes and the brakes, server-rendered and refreshed
//! in place every few seconds. Not an actor: handlers of the API's app that ask the
//! registry as the JSON handlers do.
//!
//! Access is the API's (see [`crate::daemon::access`]): reading needs what `GET /1/status`
//! needs; `/login` asks the browser for Basic credentials, which it then sends with every
//! request to maintd, and the page shows cancel, pause and resume only to a user with the
//! write option (or when the API has no users, as under `maintd sim`). The buttons POST
//! to the API's own endpoints, so they are refused (401) without such a user, and the
//! Origin check keeps other sites from posting.

pub mod page;
pub mod view;

use actix_web::{
    http::{header, StatusCode},
    web::{self, Data},
    HttpMessage, HttpRequest, HttpResponse,
};
use maintd::{auth::REALM, clock::Clock};
use maud::Markup;

use crate::daemon::{
    access::ApiCaller,
    api::{ApiError, RegistryLink},
    messages::{GetHistory, GetSafety, GetStatus},
};
use view::{Live, Viewer};

/// Recently forgotten incidents the page lists.
const FORGOTTEN_SHOWN: usize = 10;

/// The page's routes (part of the API's app, behind its access checks).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(to_page))
        .route("/ui/", web::get().to(full_page))
        .route("/ui/live", web::get().to(live_part))
        .route("/ui/login", web::get().to(to_login))
        .route("/login", web::get().to(login))
        .route("/ui/style.css", web::get().to(style))
        .route("/ui/ui.js", web::get().to(script));
}

fn viewer(request: &HttpRequest) -> Viewer {
    Viewer::of(request.extensions().get::<ApiCaller>())
}

/// The live state, or [`Live::Idle`] while this node is not master.
async fn gather(link: &RegistryLink, now: f64) -> Result<Live, ApiError> {
    let status = match link.ask(GetStatus).await {
        Ok(status) => status,
        Err(ApiError::NotMaster) => return Ok(Live::Idle),
        Err(e) => return Err(e),
    };
    let safety = link.ask(GetSafety).await?;
    let forgotten = link
        .ask(GetHistory {
            limit: FORGOTTEN_SHOWN,
        })
        .await?;
    Ok(view::live(&status, &safety, &forgotten, now))
}

/// An HTML answer that no other site may frame and that loads nothing but this page's
/// own stylesheet and script.
fn html(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ))
        .body(markup.into_string())
}

/// 503 while idle, so that a check of the page sees that this node serves nothing.
fn live_status(live: &Live) -> StatusCode {
    match live {
        Live::Idle => StatusCode::SERVICE_UNAVAILABLE,
        Live::Serving { .. } => StatusCode::OK,
    }
}

async fn to_page() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

/// The page, or only its live part (`render` says which), of the state now.
async fn render_state(
    request: &HttpRequest,
    link: &RegistryLink,
    clock: &Clock,
    render: fn(&Viewer, &Live, &str) -> Markup,
) -> Result<HttpResponse, ApiError> {
    let now = clock.now();
    let live = gather(link, now).await?;
    let markup = render(&viewer(request), &live, &view::utc_time_of_day(now));
    Ok(html(live_status(&live), markup))
}

async fn full_page(
    request: HttpRequest,
    link: Data<RegistryLink>,
    clock: Data<Clock>,
) -> Result<HttpResponse, ApiError> {
    render_state(&request, &link, &clock, page::page).await
}

async fn live_part(
    request: HttpRequest,
    link: Data<RegistryLink>,
    clock: Data<Clock>,
) -> Result<HttpResponse, ApiError> {
    render_state(&request, &link, &clock, page::live_part).await
}

/// Browsers send Basic credentials by themselves only to the directory of the URL that
/// asked for them and below it: asked at the top (`/login`), they come with the page's
/// requests and with its POSTs to `/1/` alike.
async fn to_login() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .finish()
}

/// Ask for credentials until the browser sends valid ones (the access check refuses
/// wrong ones before this runs), then go to the page, which the browser now requests with
/// them.
async fn login(request: HttpRequest) -> HttpResponse {
    match viewer(&request) {
        Viewer::LoggedOut => {
            let mut answer = html(StatusCode::UNAUTHORIZED, page::login_needed());
            // The API's realm, so that the browser offers the same credentials when the
            // buttons' requests to /1/ are challenged.
            if let Ok(challenge) =
                header::HeaderValue::from_str(&format!("Basic realm=\"{REALM}\""))
            {
                answer
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
            answer
        }
        Viewer::Open | Viewer::Reader(_) | Viewer::Writer(_) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/ui/"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
    }
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(page::STYLE)
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(page::SCRIPT)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use actix_web::test;

    use super::*;
    use crate::daemon::{access::ApiAccess, api};

    #[actix_web::test]
    async fn a_node_that_is_not_master_answers_503_with_a_page_that_says_so() {
        // No registry attached: this node is not master.
        let service = test::init_service(api::app(
            RegistryLink::default(),
            Clock::new(),
            Arc::new(ApiAccess::open()),
            Arc::new(maintd::metrics::Metrics::new()),
        ))
        .await;
        for path in ["/ui/", "/ui/live"] {
            let response =
                test::call_service(&service, test::TestRequest::get().uri(path).to_request()).await;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            let body = test::read_body(response).await;
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("not the master"), "{path}: {text}");
        }
        // The API is open: logging in is not needed, so /login goes straight to the page.
        let login = test::call_service(
            &service,
            test::TestRequest::get().uri("/login").to_request(),
        )
        .await;
        assert_eq!(login.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            login.headers().get(header::LOCATION).map(|v| v.as_bytes()),
            Some(&b"/ui/"[..])
        );
    }
}
