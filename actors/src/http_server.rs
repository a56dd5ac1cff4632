//! An actix-web server run on the actor system and stopped with the actor that holds it:
//! the shell shared by maintd's HTTP API and the node agent's.

use std::{fmt, net::SocketAddr};

use actix::prelude::*;
use actix_http::{body::MessageBody, Request, Response};
use actix_service::{IntoServiceFactory, Service, ServiceFactory};
use actix_web::{
    dev::{AppConfig, ServerHandle},
    HttpServer,
};
use tracing::{info, warn};

/// A running HTTP server; stopping the actor stops the server gracefully.
pub struct HttpServerActor {
    handle: ServerHandle,
    /// Where it listens (the port is known after binding, e.g. for port 0).
    pub addrs: Vec<SocketAddr>,
}

impl HttpServerActor {
    /// Bind `addr` and serve the apps `factory` makes (one worker, no signal handling of
    /// its own: the process handles signals); `what` names the server in the log.
    pub fn bind<F, I, S, B>(addr: &str, what: &'static str, factory: F) -> std::io::Result<Self>
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
        let server = HttpServer::new(factory)
            .workers(1)
            .disable_signals()
            .shutdown_timeout(5)
            .bind(addr)?;
        let addrs = server.addrs();
        let server = server.run();
        let handle = server.handle();
        actix::spawn(async move {
            if let Err(e) = server.await {
                warn!(target: "maintd::http", server = what, error = %e, "HTTP server ended");
            }
        });
        info!(target: "maintd::http", server = what, ?addrs, "listening");
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
