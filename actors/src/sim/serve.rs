//! Serving the built-in simulated cluster: its Luxi socket (what maintd's Luxi backend
//! talks to) and its HTTP control API with per-node monitoring endpoints.

use std::{net::SocketAddr, path::PathBuf};

use actix_web::{web::Data, App, HttpServer};
use maintd::{
    signing::HmacKey,
    sim::{luxi_server, SimHandle},
};
use tokio::net::UnixListener;
use tracing::{info, warn};

use super::api;

/// Where the simulated cluster can be reached.
#[derive(Debug, Clone)]
pub struct SimEndpoints {
    /// Its Luxi socket.
    pub luxi_socket: PathBuf,
    /// Its HTTP control API and monitoring endpoints.
    pub http: SocketAddr,
}

impl SimEndpoints {
    /// Diagnose URL template for maintd.
    pub fn diagnose_url(&self) -> String {
        format!("http://{}/mond/{{node}}/1/report/node/diagnose", self.http)
    }

    /// URL template of the nodes' `cpu-avg-load` reports.
    pub fn load_url(&self) -> String {
        format!(
            "http://{}/mond/{{node}}/1/report/default/cpu-avg-load",
            self.http
        )
    }
}

/// Start serving `sim` on `luxi_socket` and `http_listen`. Runs on the current actix
/// system until it stops.
pub fn serve(
    sim: SimHandle,
    luxi_socket: PathBuf,
    http_listen: &str,
) -> std::io::Result<SimEndpoints> {
    serve_signed(sim, luxi_socket, http_listen, None)
}

/// [`serve`], the diagnose reports signed with `key` if given, as node agents sign them.
pub fn serve_signed(
    sim: SimHandle,
    luxi_socket: PathBuf,
    http_listen: &str,
    key: Option<HmacKey>,
) -> std::io::Result<SimEndpoints> {
    // Only a stale socket left by an earlier run is removed; a live one or any other
    // file is refused.
    luxi_server::prepare_socket_path(&luxi_socket)?;
    if let Some(dir) = luxi_socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(&luxi_socket).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", luxi_socket.display()),
        )
    })?;
    actix::spawn(luxi_server::serve(
        listener,
        sim.clone(),
        std::future::pending::<()>(),
    ));

    let data = Data::new(sim);
    let key = Data::new(api::ReportKey(key));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(key.clone())
            .configure(api::configure)
    })
    .workers(2)
    .disable_signals()
    .bind(http_listen)
    .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {http_listen}: {e}")))?;
    let http = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no address bound"))?;
    let running = server.run();
    actix::spawn(async move {
        if let Err(e) = running.await {
            warn!(target: "maintd::sim", error = %e, "simulator HTTP server ended");
        }
    });
    let endpoints = SimEndpoints { luxi_socket, http };
    info!(target: "maintd::sim", luxi = %endpoints.luxi_socket.display(), http = %endpoints.http, "simulated cluster serving");
    Ok(endpoints)
}
