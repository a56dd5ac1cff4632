//! An actix-web server run on the actor system and stopped with the actor that holds it:
//! the shell shared by maintd's HTTP API and the node agent's, with its connection limits
//! and the rate-limited log of refused requests.

use std::{
    fmt,
    net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs},
    sync::Mutex,
    time::{Duration, Instant},
};

use actix::prelude::*;
use actix_http::{body::MessageBody, Request, Response};
use actix_service::{IntoServiceFactory, Service, ServiceFactory};
use actix_web::{
    dev::{AppConfig, ServerHandle, ServiceRequest, ServiceResponse},
    middleware::Next,
    web::Data,
    HttpServer,
};
use maintd::ratelimit::PeerLogLimiter;
use tracing::{info, warn};

/// How many connections a server holds and how long it waits for idle clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most connections open at once; further clients wait in the listen backlog, so a
    /// crowd of clients costs the process no more descriptors than this.
    pub max_connections: usize,
    /// Time from connecting to a complete request head; then 408 and the connection closes.
    pub client_request_timeout: Duration,
    /// How long a kept-alive connection may stay idle.
    pub keep_alive: Duration,
}

/// The documented idle timeouts (see `daemon.max_connections` in `config/default.toml`).
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// See [`CLIENT_REQUEST_TIMEOUT`].
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

impl HttpLimits {
    /// `max_connections` with the documented idle timeouts.
    pub fn new(max_connections: usize) -> Self {
        HttpLimits {
            max_connections,
            client_request_timeout: CLIENT_REQUEST_TIMEOUT,
            keep_alive: KEEP_ALIVE,
        }
    }
}

/// Connections a listening socket queues before they are accepted (actix-web's default).
const BACKLOG: i32 = 1024;

/// An address to listen on and the setting that chose it, which a start error names so
/// that the operator knows what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    /// `host:port`.
    pub address: String,
    /// The setting or flag it came from, e.g. `agent.listen`.
    pub setting: &'static str,
}

impl ListenAddress {
    /// `address`, chosen by `setting`.
    pub fn new(address: impl Into<String>, setting: &'static str) -> Self {
        ListenAddress {
            address: address.into(),
            setting,
        }
    }
}

/// The listening sockets of a server, bound before anything else starts: a taken port
/// then stops the program before it has done anything.
#[derive(Debug)]
pub struct Listeners {
    /// What was asked for, for messages.
    pub addr: String,
    sockets: Vec<TcpListener>,
    /// Serve HTTPS with this configuration.
    tls: Option<rustls::ServerConfig>,
}

impl Listeners {
    /// Bind every address `addr` (`host:port`) resolves to; fails if one cannot be bound,
    /// naming it.
    pub fn bind(addr: &str) -> std::io::Result<Listeners> {
        let in_context = |e: std::io::Error, at: &dyn fmt::Display| {
            std::io::Error::new(e.kind(), format!("cannot listen on {at}: {e}"))
        };
        let resolved: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| in_context(e, &addr))?
            .collect();
        if resolved.is_empty() {
            return Err(std::io::Error::other(format!(
                "cannot listen on {addr}: it names no address"
            )));
        }
        let sockets = resolved
            .iter()
            .map(|at| listen(at).map_err(|e| in_context(e, at)))
            .collect::<std::io::Result<_>>()?;
        Ok(Listeners {
            addr: addr.to_owned(),
            sockets,
            tls: None,
        })
    }

    /// Bind `listen`; the error is one line that names its setting and the address.
    pub fn bind_setting(listen: &ListenAddress) -> Result<Listeners, String> {
        Listeners::bind(&listen.address).map_err(|e| format!("{}: {e}", listen.setting))
    }

    /// Serve HTTPS on these sockets with `tls`.
    pub fn with_tls(mut self, tls: rustls::ServerConfig) -> Listeners {
        self.tls = Some(tls);
        self
    }

    /// Whether they serve HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The bound addresses (with the port chosen for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|socket| socket.local_addr().ok())
            .collect()
    }
}

/// One listening socket, as actix-web makes them (address reuse, a deep backlog).
fn listen(at: &SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(*at), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if at.is_ipv6() {
        // `[::]` means IPv6 only, as `0.0.0.0` means IPv4 only.
        socket.set_only_v6(true)?;
    }
    socket.bind(&(*at).into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A running HTTP server; stopping the actor stops the server gracefully.
pub struct HttpServerActor {
    handle: ServerHandle,
    /// Where it listens (the port is known after binding, e.g. for port 0).
    pub addrs: Vec<SocketAddr>,
}

impl HttpServerActor {
    /// Serve on `listeners` the apps `factory` makes (one worker, no signal handling of
    /// its own: the process handles signals) within `limits`; `what` names the server in
    /// the log.
    pub fn serve<F, I, S, B>(
        listeners: Listeners,
        what: &'static str,
        limits: HttpLimits,
        factory: F,
    ) -> std::io::Result<Self>
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: IntoServiceFactory<S, Request>,
        S: ServiceFactory<Request, Config = AppConfig> + 'static,
        S::Error: Into<actix_web::Error> + 'static,
        S::InitError: fmt::Debug,
        S::Response: Into<Response<B>> + 'static,
        <S::Service as Service<Request>>::Future: 'static,
        S::Service: 'static,
        B: MessageBody + 'static,
    {
        let mut server = HttpServer::new(factory)
            .workers(1)
            // Per worker, and there is one worker: this is the process's cap.
            .max_connections(limits.max_connections)
            .client_request_timeout(limits.client_request_timeout)
            .keep_alive(limits.keep_alive)
            .disable_signals()
            .shutdown_timeout(5);
        for socket in listeners.sockets {
            server = match &listeners.tls {
                Some(tls) => server.listen_rustls_0_23(socket, tls.clone())?,
                None => server.listen(socket)?,
            };
        }
        let addrs = server.addrs();
        let server = server.run();
        let handle = server.handle();
        actix::spawn(async move {
            if let Err(e) = server.await {
                warn!(target: "maintd::http", server = what, error = %e, "HTTP server ended");
            }
        });
        info!(target: "maintd::http", server = what, ?addrs, max_connections = limits.max_connections, "listening");
        Ok(HttpServerActor { handle, addrs })
    }
}

impl Actor for HttpServerActor {
    type Context = Context<Self>;

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        let handle = self.handle.clone();
        actix::spawn(async move { handle.stop(true).await });
        Running::Stop
    }
}

/// The log of refused requests of one server, rate-limited per client address so that one
/// client cannot flood the log (see [`maintd::ratelimit`]). Registered as app data and
/// used by [`log_refusals`].
pub struct PeerLog {
    server: &'static str,
    limiter: Mutex<PeerLogLimiter>,
}

impl PeerLog {
    /// The log of `server` (its name in log lines), with the default limits.
    pub fn new(server: &'static str) -> Self {
        PeerLog {
            server,
            limiter: Mutex::new(PeerLogLimiter::default()),
        }
    }

    /// Whether a line about `peer` may be logged now. Logs the suppression counts that
    /// are due itself.
    pub fn admit(&self, peer: Option<IpAddr>) -> bool {
        // A poisoned lock only means another line panicked; the counts are still usable.
        let mut limiter = self
            .limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let admission = limiter.admit(peer, Instant::now());
        drop(limiter);
        for s in admission.suppressed {
            warn!(target: "maintd::http", server = self.server, peer = %s.source, suppressed = s.count, "suppressed {} similar messages from {}", s.count, s.source);
        }
        admission.log
    }
}

/// Why a request was refused, attached to a response that carries no error of its own
/// (plain-text refusals), for [`log_refusals`].
#[derive(Debug, Clone)]
pub struct Refusal(pub String);

/// Middleware: log every answer with a 4xx status (the client's fault), with the client's
/// address and the reason, rate-limited per client by the app's [`PeerLog`].
pub async fn log_refusals(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse, actix_web::Error> {
    let log = req.app_data::<Data<PeerLog>>().cloned();
    let peer = req.peer_addr().map(|a| a.ip());
    let (method, path) = (req.method().clone(), req.path().to_owned());
    let res = next.call(req).await?;
    let status = res.status();
    if status.is_client_error() {
        let reason = match res.response().error() {
            Some(e) => e.to_string(),
            None => res
                .response()
                .extensions()
                .get::<Refusal>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
        };
        let (server, admitted) = match &log {
            Some(log) => (log.server, log.admit(peer)),
            None => ("http", true),
        };
        if admitted {
            let peer = peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
            warn!(target: "maintd::http", server, %peer, %method, %path, status = status.as_u16(), %reason, "request refused");
        }
    }
    Ok(res.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use actix_web::{test, web, App, HttpResponse};

    use super::*;
    use crate::captured_log::Captured;

    #[actix_web::test]
    async fn refusals_are_logged_with_the_peer_and_limited_per_peer() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let service = test::init_service(
            App::new()
                .app_data(Data::new(PeerLog::new("test")))
                .route(
                    "/bad",
                    web::get().to(|| async {
                        let mut response = HttpResponse::Forbidden().finish();
                        response
                            .extensions_mut()
                            .insert(Refusal("bad signature".into()));
                        response
                    }),
                )
                .route("/ok", web::get().to(HttpResponse::Ok))
                .wrap(actix_web::middleware::from_fn(log_refusals)),
        )
        .await;
        let call = |uri: &'static str, peer: &'static str| {
            test::TestRequest::get()
                .uri(uri)
                .peer_addr(peer.parse().unwrap())
                .to_request()
        };
        for _ in 0..100 {
            let response = test::call_service(&service, call("/bad", "192.0.2.1:4000")).await;
            assert_eq!(response.status(), 403);
        }
        test::call_service(&service, call("/bad", "192.0.2.2:4000")).await;
        test::call_service(&service, call("/ok", "192.0.2.3:4000")).await;
        let log = captured.text();
        let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(
            lines("peer=192.0.2.1"),
            maintd::ratelimit::DEFAULT_BURST as usize,
            "{log}"
        );
        assert_eq!(lines("peer=192.0.2.2"), 1, "{log}");
        assert_eq!(lines("192.0.2.3"), 0, "a success is not logged: {log}");
        assert!(log.contains("request refused"), "{log}");
        assert!(log.contains("reason=bad signature"), "{log}");
    }
}
