//! The popular vote over noded's RPC, against fake nodeds on loopback addresses
//! (127.0.0.1-3) that behave as Ganeti's do: HTTPS with the cluster certificate, a client
//! certificate required and checked against the accepted ones, `POST /master_node_name`
//! answered `[true, name]`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{path::Path, sync::Arc, time::Duration};

use actix_web::{dev::ServerHandle, web, App, HttpRequest, HttpResponse, HttpServer};
use maintd::backend::{
    noded::NodedClient,
    vote::{hold_vote, VoteOutcome, Voter},
};
use rcgen::{CertificateParams, KeyPair};
use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
};

/// One certificate with its key, as Ganeti keeps them: key and certificate in one PEM file.
struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    pem: String,
}

fn identity(name: &str) -> Identity {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec![name.to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    Identity {
        pem: format!("{}{}", key.serialize_pem(), cert.pem()),
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}

/// noded's check: only client certificates it knows (the master candidates' map).
#[derive(Debug)]
struct KnownClients {
    accepted: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for KnownClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self
            .accepted
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::General("unknown client certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A fake noded at `address:port` naming `master`.
fn start_noded(
    address: &str,
    port: u16,
    server: &Identity,
    accepted_client: &Identity,
    master: &'static str,
) -> std::io::Result<ServerHandle> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = KnownClients {
        accepted: vec![accepted_client.cert.clone()],
        provider: provider.clone(),
    };
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            vec![server.cert.clone()],
            PrivateKeyDer::Pkcs8(server.key.clone_key()),
        )
        .expect("server config");
    let app = move || {
        App::new().route(
            "/master_node_name",
            web::post().to(move |_: HttpRequest, body: String| async move {
                if serde_json::from_str::<Vec<serde_json::Value>>(&body).is_err() {
                    return HttpResponse::BadRequest().body("arguments must be a JSON array");
                }
                HttpResponse::Ok().json(serde_json::json!([true, master]))
            }),
        )
    };
    let server = HttpServer::new(app)
        .workers(1)
        .disable_signals()
        .bind_rustls_0_23((address, port), tls)?
        .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}

/// Three fake nodeds on 127.0.0.1-3 sharing one free port, naming `masters` in order.
fn start_cluster(
    server: &Identity,
    client: &Identity,
    masters: [&'static str; 3],
) -> (u16, Vec<ServerHandle>) {
    for _ in 0..20 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let started: Result<Vec<_>, _> = masters
            .iter()
            .enumerate()
            .map(|(i, master)| {
                start_noded(&format!("127.0.0.{}", i + 1), port, server, client, master)
            })
            .collect();
        if let Ok(handles) = started {
            return (port, handles);
        }
    }
    panic!("no port free on 127.0.0.1-3");
}

fn voters() -> Vec<Voter> {
    (1..=3)
        .map(|i| Voter {
            name: format!("node{i}"),
            address: format!("127.0.0.{i}"),
            offline: false,
        })
        .collect()
}

fn data_dir(server: &Identity, client: Option<&Identity>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("server.pem"), &server.pem).expect("server.pem");
    if let Some(client) = client {
        std::fs::write(dir.path().join("client.pem"), &client.pem).expect("client.pem");
    }
    dir
}

async fn vote(dir: &Path, port: u16) -> VoteOutcome {
    let client = NodedClient::from_data_dir(dir, port, Duration::from_secs(20)).expect("client");
    hold_vote("node1", &voters(), &|address: String| {
        let client = client.clone();
        async move { client.master_node_name(&address).await }
    })
    .await
}

#[actix_rt::test]
async fn the_master_wins_with_the_cluster_client_certificate() {
    let server = identity("ganeti.example.com");
    let client = identity("node1");
    let (port, handles) = start_cluster(&server, &client, ["node1", "node1", "node2"]);
    let dir = data_dir(&server, Some(&client));
    assert_eq!(vote(dir.path(), port).await, VoteOutcome::Won);

    // A majority naming another node loses the vote.
    for handle in handles {
        handle.stop(false).await;
    }
    let (port, handles) = start_cluster(&server, &client, ["node1", "node2", "node2"]);
    assert_eq!(
        vote(dir.path(), port).await,
        VoteOutcome::Lost {
            named: vec![("node1".into(), 1), ("node2".into(), 2)]
        }
    );
    for handle in handles {
        handle.stop(false).await;
    }
}

#[actix_rt::test]
async fn pre_client_certificate_clusters_present_server_pem() {
    // Without client.pem, the server certificate doubles as the client's.
    let server = identity("ganeti.example.com");
    let (port, handles) = start_cluster(&server, &server, ["node1", "node1", "node1"]);
    let dir = data_dir(&server, None);
    assert_eq!(vote(dir.path(), port).await, VoteOutcome::Won);
    for handle in handles {
        handle.stop(false).await;
    }
}

#[actix_rt::test]
async fn refused_clients_and_foreign_servers_count_as_missing_votes() {
    let server = identity("ganeti.example.com");
    let client = identity("node1");
    let (port, handles) = start_cluster(&server, &client, ["node1", "node1", "node1"]);
    let all_missing = VoteOutcome::Undecided {
        missing: vec!["node1".into(), "node2".into(), "node3".into()],
    };

    // A client certificate noded does not know.
    let stranger = identity("intruder");
    let dir = data_dir(&server, Some(&stranger));
    assert_eq!(vote(dir.path(), port).await, all_missing);

    // Nodes presenting another certificate than the pinned server.pem.
    let other_cluster = identity("ganeti.example.com");
    let mut dir = data_dir(&other_cluster, Some(&client));
    assert_eq!(vote(dir.path(), port).await, all_missing);

    // Nothing listening.
    for handle in handles {
        handle.stop(false).await;
    }
    dir = data_dir(&server, Some(&client));
    assert_eq!(vote(dir.path(), port).await, all_missing);
}

#[test]
fn unusable_certificate_files_are_reported_at_setup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let system = actix_rt::System::new();
    system.block_on(async {
        let error = NodedClient::from_data_dir(dir.path(), 1811, Duration::from_secs(1))
            .expect_err("no certificates");
        assert!(error.to_string().contains("server.pem"), "{error}");
        let server = identity("ganeti.example.com");
        std::fs::write(dir.path().join("server.pem"), server.cert_pem_only()).unwrap();
        std::fs::write(dir.path().join("client.pem"), server.cert_pem_only()).unwrap();
        let error = NodedClient::from_data_dir(dir.path(), 1811, Duration::from_secs(1))
            .expect_err("no key");
        assert!(error.to_string().contains("private key"), "{error}");
    });
}

impl Identity {
    /// The certificate part of the PEM file only.
    fn cert_pem_only(&self) -> String {
        let start = self
            .pem
            .find("-----BEGIN CERTIFICATE")
            .expect("certificate");
        self.pem[start..].to_owned()
    }
}
