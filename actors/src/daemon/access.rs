//! Who may use maintd's API, as a middleware in front of every handler: the Host and
//! Origin checks that stop DNS rebinding and cross-site requests from a browser, Basic
//! authentication against Ganeti's RAPI users file (read again whenever it changes), the
//! rules of [`maintd::auth`], and the brake on password guessing.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Instant, SystemTime},
};

use actix_http::body::{BoxBody, MessageBody};
use actix_web::{
    dev::{ServiceRequest, ServiceResponse},
    http::{header, Method, StatusCode},
    middleware::Next,
    web::Data,
    HttpMessage, HttpResponse,
};
use maintd::auth::{
    authorize, Access, Credentials, Decision, LoginGuard, Need, Users, UsersError, REALM,
};
use serde_json::json;
use tracing::warn;

use crate::http_server::Refusal;

/// Ganeti's RAPI users file, read again when its modification time changes: operators
/// edit it while maintd runs, as they do for ganeti-rapi.
#[derive(Debug)]
pub struct UsersFile {
    path: PathBuf,
    cache: Mutex<CachedUsers>,
}

#[derive(Debug)]
struct CachedUsers {
    modified: Option<SystemTime>,
    users: Arc<Users>,
}

impl UsersFile {
    /// Read the file now: a file that cannot be read is an error at start.
    pub fn open(path: &Path) -> Result<UsersFile, UsersError> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let (users, warnings) = Users::load(path)?;
        log_warnings(path, &warnings);
        Ok(UsersFile {
            path: path.to_owned(),
            cache: Mutex::new(CachedUsers {
                modified,
                users: Arc::new(users),
            }),
        })
    }

    /// The users as the file lists them now. If the changed file cannot be read, the
    /// users read last stay in force (with a warning): a half-written file must not lock
    /// every operator out.
    pub fn current(&self) -> Arc<Users> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if modified != cache.modified {
            match Users::load(&self.path) {
                Ok((users, warnings)) => {
                    log_warnings(&self.path, &warnings);
                    cache.users = Arc::new(users);
                }
                Err(e) => {
                    warn!(target: "maintd::http", error = %e, "keeping the users read before");
                }
            }
            cache.modified = modified;
        }
        cache.users.clone()
    }
}

fn log_warnings(path: &Path, warnings: &[String]) {
    for warning in warnings {
        warn!(target: "maintd::http", file = %path.display(), %warning, "users file");
    }
}

/// The host names a browser may use to reach maintd. IP addresses are always allowed: a
/// DNS rebinding attack needs a name of the attacker's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(BTreeSet<String>);

impl AllowedHosts {
    /// `names` (any case) and `localhost`.
    pub fn new(names: impl IntoIterator<Item = String>) -> AllowedHosts {
        let mut set: BTreeSet<String> = names
            .into_iter()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
        set.insert("localhost".into());
        AllowedHosts(set)
    }

    /// Whether a `Host` header value (`name[:port]`, `[v6]:port`) names this maintd.
    pub fn allows(&self, authority: &str) -> bool {
        let host = host_of(authority);
        host.parse::<IpAddr>().is_ok()
            || self
                .0
                .contains(&host.trim_end_matches('.').to_ascii_lowercase())
    }
}

/// The host part of `host[:port]` or `[v6][:port]`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Where the users come from.
#[derive(Debug)]
pub enum UsersSource {
    /// No users: every request is served. For `maintd sim`, which listens on loopback.
    Open,
    /// Ganeti's RAPI users file.
    File(UsersFile),
}

/// The access rules of one API server, shared by its workers.
#[derive(Debug)]
pub struct ApiAccess {
    users: UsersSource,
    require_authentication: bool,
    hosts: Option<AllowedHosts>,
    logins: Mutex<LoginGuard>,
}

impl ApiAccess {
    /// Everything open: the simulator's API.
    pub fn open() -> ApiAccess {
        ApiAccess {
            users: UsersSource::Open,
            require_authentication: false,
            hosts: None,
            logins: Mutex::new(LoginGuard::default()),
        }
    }

    /// Users from `users`; reads need a user too when `require_authentication`; only
    /// `hosts` (and IP addresses) may be named in `Host` when given.
    pub fn new(
        users: UsersSource,
        require_authentication: bool,
        hosts: Option<AllowedHosts>,
    ) -> ApiAccess {
        ApiAccess {
            users,
            require_authentication,
            hosts,
            logins: Mutex::new(LoginGuard::default()),
        }
    }

    /// With this brake on failed logins.
    pub fn with_login_guard(mut self, guard: LoginGuard) -> ApiAccess {
        self.logins = Mutex::new(guard);
        self
    }

    fn logins(&self) -> std::sync::MutexGuard<'_, LoginGuard> {
        self.logins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The verdict on a request: `Ok` with who it is served for, or the refusal.
    fn judge(&self, req: &ServiceRequest) -> Result<ApiCaller, Refused> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        if let (Some(hosts), Some(host)) = (&self.hosts, &host) {
            if !hosts.allows(host) {
                return Err(Refused::forbidden(format!(
                    "host {host:?} does not name this maintd (api.allowed_hosts)"
                )));
            }
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
            let same = host
                .as_deref()
                .is_some_and(|host| authority.eq_ignore_ascii_case(host));
            if !same {
                return Err(Refused::forbidden(format!(
                    "cross-origin request from {origin:?} refused"
                )));
            }
        }
        let UsersSource::File(file) = &self.users else {
            return Ok(ApiCaller::Open);
        };
        let needs = if matches!(*req.method(), Method::GET | Method::HEAD) {
            Need::Nothing
        } else {
            Need::Write
        };
        let credentials = match req.headers().get(header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| Credentials::from_basic_header(v).ok())
                    .ok_or_else(|| Refused::unauthenticated("malformed credentials"))?,
            ),
        };
        let peer = req.peer_addr().map(|a| a.ip());
        if let (Some(_), Some(peer)) = (&credentials, peer) {
            if let Some(wait) = self.logins().blocked(peer, Instant::now()) {
                return Err(Refused {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    why: "too many failed logins from this address".into(),
                    retry_after: Some(wait.as_secs().max(1)),
                });
            }
        }
        let users = file.current();
        match authorize(
            &users,
            credentials.as_ref(),
            needs,
            self.require_authentication,
        ) {
            Decision::Anonymous => Ok(ApiCaller::Anonymous),
            Decision::User(name) => {
                if let Some(peer) = peer {
                    self.logins().succeeded(peer);
                }
                // A read needs no write option, so whether the user has one is asked
                // separately: the web page shows its buttons only to users who do.
                let write = credentials
                    .as_ref()
                    .and_then(|c| users.check(c))
                    .is_some_and(|user| user.may(Access::Write));
                Ok(ApiCaller::User { name, write })
            }
            Decision::Unauthenticated => match credentials {
                Some(credentials) => {
                    if let Some(peer) = peer {
                        self.logins().failed(peer, Instant::now());
                    }
                    Err(Refused::unauthenticated(&format!(
                        "wrong user name or password for {:?}",
                        credentials.user
                    )))
                }
                None => Err(Refused::unauthenticated("authentication required")),
            },
            Decision::Forbidden(name) => Err(Refused::forbidden(format!(
                "user {name:?} may not do this: it needs the write option in the users file"
            ))),
        }
    }
}

/// A refused request.
struct Refused {
    status: StatusCode,
    why: String,
    retry_after: Option<u64>,
}

impl Refused {
    fn forbidden(why: String) -> Refused {
        Refused {
            status: StatusCode::FORBIDDEN,
            why,
            retry_after: None,
        }
    }

    fn unauthenticated(why: &str) -> Refused {
        Refused {
            status: StatusCode::UNAUTHORIZED,
            why: why.to_owned(),
            retry_after: None,
        }
    }

    /// The answer; a 401 challenges for Basic credentials when `challenge`.
    fn response(self, challenge: bool) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED && challenge {
            response.insert_header((header::WWW_AUTHENTICATE, format!("Basic realm=\"{REALM}\"")));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        // The shape of every error of the API.
        let mut response = response.json(json!({
            "error": self.status.canonical_reason().unwrap_or("error"),
            "message": self.why,
        }));
        // For the refusal log (with the client's address, rate-limited per client).
        response.extensions_mut().insert(Refusal(self.why));
        response
    }
}

/// The user a request is served for, for the handlers (history entries name them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUserName(pub String);

/// Who a request is served for and whether they may change anything, for the handlers
/// (the web page shows its buttons by it). Every served request carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCaller {
    /// The API has no users (`maintd sim`, on loopback): everyone may read and act.
    Open,
    /// No credentials: reads only.
    Anonymous,
    /// An authenticated user of the users file.
    User {
        /// The user's name.
        name: String,
        /// The users file gives them the write option.
        write: bool,
    },
}

impl ApiCaller {
    /// Whether this caller's writes (cancel, pause, resume) are served.
    pub fn may_write(&self) -> bool {
        match self {
            ApiCaller::Open => true,
            ApiCaller::Anonymous => false,
            ApiCaller::User { write, .. } => *write,
        }
    }
}

/// Middleware: serve a request only as the app's [`ApiAccess`] allows (everything, when
/// the app has none).
pub async fn check_access(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let verdict = match req.app_data::<Data<ApiAccess>>() {
        Some(access) => access.judge(&req),
        None => Ok(ApiCaller::Open),
    };
    match verdict {
        Ok(caller) => {
            if let ApiCaller::User { name, .. } = &caller {
                req.extensions_mut().insert(ApiUserName(name.clone()));
            }
            req.extensions_mut().insert(caller);
            Ok(next.call(req).await?.map_into_boxed_body())
        }
        Err(refused) => {
            // A script's request (the web page's, which sends `X-Requested-With`) gets
            // its 401 without a challenge: a browser would otherwise hold it behind a
            // password prompt, where the page cannot say what was refused.
            let challenge = !req.headers().contains_key("x-requested-with");
            Ok(req.into_response(refused.response(challenge)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::{test, web, App, HttpRequest};

    use super::*;

    const USERS: &str = "writer w-pass write\nreader r-pass read\n";

    async fn whoami(request: HttpRequest) -> HttpResponse {
        let user = request
            .extensions()
            .get::<ApiUserName>()
            .map(|u| u.0.clone());
        let write = request
            .extensions()
            .get::<ApiCaller>()
            .map(ApiCaller::may_write);
        HttpResponse::Ok().json(json!({ "user": user, "write": write }))
    }

    fn basic(user: &str, password: &str) -> (header::HeaderName, String) {
        let credentials = Credentials {
            user: user.into(),
            password: password.into(),
        };
        (header::AUTHORIZATION, credentials.basic_header())
    }

    fn request(method: Method, host: &str) -> test::TestRequest {
        test::TestRequest::default()
            .method(method)
            .uri("/1/thing")
            .insert_header((header::HOST, host.to_owned()))
            .peer_addr("192.0.2.7:4000".parse().unwrap())
    }

    async fn answer(
        access: ApiAccess,
        requests: Vec<test::TestRequest>,
    ) -> Vec<(StatusCode, serde_json::Value, Option<String>)> {
        let service = test::init_service(
            App::new()
                .app_data(Data::new(access))
                .route("/1/thing", web::get().to(whoami))
                .route("/1/thing", web::post().to(whoami))
                .wrap(actix_web::middleware::from_fn(check_access)),
        )
        .await;
        let mut answers = Vec::new();
        for request in requests {
            let response = test::call_service(&service, request.to_request()).await;
            let status = response.status();
            let challenge = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap().to_owned());
            let body: serde_json::Value = test::read_body_json(response).await;
            answers.push((status, body, challenge));
        }
        answers
    }

    fn users_file(dir: &Path, text: &str) -> UsersFile {
        let path = dir.join("users");
        std::fs::write(&path, text).unwrap();
        UsersFile::open(&path).unwrap()
    }

    #[actix_web::test]
    async fn writes_need_a_write_user_and_reads_are_open() {
        let dir = tempfile::tempdir().unwrap();
        let access = ApiAccess::new(
            UsersSource::File(users_file(dir.path(), USERS)),
            false,
            None,
        );
        let answers = answer(
            access,
            vec![
                request(Method::GET, "node1:1816"),
                request(Method::POST, "node1:1816"),
                request(Method::POST, "node1:1816").insert_header(basic("writer", "w-pass")),
                request(Method::POST, "node1:1816").insert_header(basic("reader", "r-pass")),
                request(Method::POST, "node1:1816").insert_header(basic("writer", "nope")),
                request(Method::GET, "node1:1816").insert_header(basic("reader", "r-pass")),
                request(Method::POST, "node1:1816")
                    .insert_header((header::AUTHORIZATION, "Digest x")),
                request(Method::POST, "node1:1816").insert_header(("X-Requested-With", "fetch")),
            ],
        )
        .await;
        let statuses: Vec<u16> = answers.iter().map(|a| a.0.as_u16()).collect();
        assert_eq!(statuses, [200, 401, 200, 403, 401, 200, 401, 401]);
        assert_eq!(answers[7].2, None, "no challenge to a script's request");
        assert_eq!(answers[0].1["user"], serde_json::Value::Null, "anonymous");
        assert_eq!(answers[2].1["user"], "writer");
        assert_eq!(answers[5].1["user"], "reader");
        let writes: Vec<&serde_json::Value> =
            [0, 2, 5].iter().map(|&i| &answers[i].1["write"]).collect();
        assert_eq!(writes, [false, true, false], "only the write user may act");
        let challenge = format!("Basic realm=\"{REALM}\"");
        assert_eq!(answers[1].2.as_deref(), Some(challenge.as_str()));
        assert_eq!(answers[1].1["error"], "Unauthorized");
        assert!(answers[3].1["message"]
            .as_str()
            .unwrap()
            .contains("write option"));
        assert!(
            !answers[4].1.to_string().contains("nope"),
            "no password echoed"
        );
    }

    #[actix_web::test]
    async fn required_authentication_closes_reads_too() {
        let dir = tempfile::tempdir().unwrap();
        let access = ApiAccess::new(UsersSource::File(users_file(dir.path(), USERS)), true, None);
        let answers = answer(
            access,
            vec![
                request(Method::GET, "node1"),
                request(Method::GET, "node1").insert_header(basic("reader", "r-pass")),
            ],
        )
        .await;
        assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED);
        assert_eq!(answers[1].0, StatusCode::OK);
    }

    #[actix_web::test]
    async fn a_password_guesser_is_held_off_and_the_right_password_waits_too() {
        let dir = tempfile::tempdir().unwrap();
        let access = ApiAccess::new(
            UsersSource::File(users_file(dir.path(), USERS)),
            false,
            None,
        )
        .with_login_guard(LoginGuard::new(3, Duration::from_secs(60), 16));
        let mut requests: Vec<test::TestRequest> = (0..3)
            .map(|i| {
                request(Method::POST, "node1").insert_header(basic("writer", &format!("guess{i}")))
            })
            .collect();
        requests.push(request(Method::POST, "node1").insert_header(basic("writer", "w-pass")));
        requests.push(request(Method::GET, "node1"));
        let answers = answer(access, requests).await;
        let statuses: Vec<u16> = answers.iter().map(|a| a.0.as_u16()).collect();
        assert_eq!(
            statuses,
            [401, 401, 401, 429, 200],
            "anonymous reads still served"
        );
    }

    #[actix_web::test]
    async fn foreign_host_names_and_origins_are_refused() {
        let hosts = AllowedHosts::new(["node1.example.org".to_owned(), "cluster".to_owned()]);
        let answers = answer(
            ApiAccess::new(UsersSource::Open, false, Some(hosts)),
            vec![
                request(Method::GET, "node1.example.org:1816"),
                request(Method::GET, "NODE1.example.org."),
                request(Method::GET, "192.0.2.10:1816"),
                request(Method::GET, "[2001:db8::1]:1816"),
                request(Method::GET, "localhost:1816"),
                request(Method::GET, "attacker.example.com:1816"),
                request(Method::POST, "cluster:1816")
                    .insert_header((header::ORIGIN, "https://cluster:1816")),
                request(Method::POST, "cluster:1816")
                    .insert_header((header::ORIGIN, "https://attacker.example.com")),
            ],
        )
        .await;
        let statuses: Vec<u16> = answers.iter().map(|a| a.0.as_u16()).collect();
        assert_eq!(statuses, [200, 200, 200, 200, 200, 403, 200, 403]);
    }

    #[actix_web::test]
    async fn an_edited_users_file_counts_at_once_and_a_broken_edit_keeps_the_old_users() {
        let dir = tempfile::tempdir().unwrap();
        let file = users_file(dir.path(), USERS);
        let path = dir.path().join("users");
        let touch = |seconds: u64| {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
                .unwrap();
        };
        assert!(file
            .current()
            .check(&Credentials {
                user: "new".into(),
                password: "n".into()
            })
            .is_none());
        std::fs::write(&path, "new n write\n").unwrap();
        touch(1_000);
        assert!(file
            .current()
            .check(&Credentials {
                user: "new".into(),
                password: "n".into()
            })
            .is_some());
        std::fs::remove_file(&path).unwrap();
        assert!(
            file.current()
                .check(&Credentials {
                    user: "new".into(),
                    password: "n".into()
                })
                .is_some(),
            "a file that vanished keeps the users read before"
        );
        assert!(
            UsersFile::open(&path).is_err(),
            "a missing file is an error at start"
        );
    }
}
