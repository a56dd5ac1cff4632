//! The RAPI backend against a fake RAPI over real TLS on loopback: an actix-web server
//! with a certificate made by rcgen at test time, replaying RAPI answers captured from a
//! real Ganeti 3.0 cluster (`tests/fixtures/ganeti-3.0/rapi-*.json`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use actix_web::{dev::ServerHandle, web, App, HttpRequest, HttpResponse, HttpServer};
use maintd::{
    backend::{
        rapi::{self, Credentials, RapiBackend, RapiClient, RapiConfig, RapiError, RapiSetupError},
        BackendError, CancelOutcome, ClusterBackend,
    },
    model::{
        cluster::DiskTemplate,
        job::{JobId, JobStatus},
        opcode::{OpBody, Opcode, ReplaceDisksMode, TagKind},
    },
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedKey, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

/// `Basic base64("maintd:maintd-secret")`, the lab's write user.
const AUTHORIZATION: &str = "Basic bWFpbnRkOm1haW50ZC1zZWNyZXQ=";
const USER: &str = "maintd";
const PASSWORD: &str = "maintd-secret";
/// Long enough never to fire on a healthy answer, however slow the machine.
const GENEROUS: Duration = Duration::from_secs(60);

// ----- exchanges captured from a real Ganeti 3.0 cluster -----

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ganeti-3.0")
}

/// A captured exchange: `{"request": {...}, "response": {"status", "body"}}`.
fn sample(name: &str) -> Value {
    let path = samples_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("sample is JSON")
}

fn sample_body(name: &str) -> Value {
    sample(name)["response"]["body"].clone()
}

/// The sample's answer, as the fake sends it.
fn replay(name: &str) -> Reply {
    let s = sample(name);
    let status = s["response"]["status"].as_u64().expect("status") as u16;
    Reply::Json(status, s["response"]["body"].clone())
}

// ----- certificates -----

struct Pki {
    /// The server's certificate chain and key.
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
    /// PEM of the server certificate (what a pin file holds).
    cert_pem: String,
    /// PEM of the server's key.
    key_pem: String,
    /// PEM of the CA, when the certificate is CA-signed.
    ca_pem: Option<String>,
}

/// A self-signed certificate for the cluster name, like Ganeti's `rapi.pem`.
fn self_signed(name: &str) -> Pki {
    let CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("certificate");
    Pki {
        chain: vec![cert.der().clone()],
        key: key_pair.serialize_der(),
        cert_pem: cert.pem(),
        key_pem: key_pair.serialize_pem(),
        ca_pem: None,
    }
}

/// A CA and a server certificate it signed for `names` (IP addresses become IP SANs).
fn ca_signed(names: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "maintd test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("server params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("signed");
    Pki {
        chain: vec![cert.der().clone()],
        key: key.serialize_der(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem: Some(ca.pem()),
    }
}

/// A certificate made as Ganeti makes `rapi.pem`: X.509 version 1 (no extensions), RSA,
/// self-signed for `ganeti.example.com`, key and certificate in one file. webpki cannot
/// parse version 1 certificates, so this checks that pinning does without it. Made with
/// `openssl req -new -newkey rsa:2048 -nodes` and `openssl x509 -req -signkey` (test only).
const GANETI_STYLE_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDfwiH/FEQMfuK3
GGJj3fXWyY8g0AnF6KAxo0xpzEjv8KYREBxlEU6b6R+uS7ruLUeWxzsVtGdq3ltW
jhETaSjcWQtfByMY+GFzRCo6HnXCGr/OsQ+t04Mh4MHwJ2WXM7kuujmcNvLoIhrT
WQHWlciw0fTVZu9y+t4PsgNq9cAfWiHSfqNc7hYqye33WLW2bEw7EKtnlN/IgVmW
T6Vp2E/MUwFkoynHDqJuykh0wnjyECvaXzhNrYwmWLM1ztwnC6Um6YEqRPd8B/HO
hrnzoIxSgPHt5qs0VBlfH9+RJxXL/DSs9hNviQ9k5NON1WAAlBErAuNnoxdczAhl
42dbRdO1AgMBAAECgf8bmu0WyylEtrgXCVXE0bLCt5sw288DhkTn2tL9OnbFI1YE
ROM76iazQCTocUSz8wzMop0SJcTx1PzvxhcqjeQR9epb5EWFjx8hWVzcTrsNzL8H
1lBY4aoL7plT8jMBCcs5jeq4RbncvwMQOqrqDmX0FUhfYOj/BnQ0UNdFxYvY/Mqf
Zm9ZSNuzUAGpBZXon8di9qWj4lT5uvyJ7H8hS0xox2giZjBz52jhlfOdPWumfCjG
x92r40MWp93q2TpNSaLXdU2u7w4OZenfz+ACouiBZikPdvPjxV8cWK/pvey5/xEl
RRIO0IXvTqrUkce/54IKfdz7v6vqW98oxuE3A5ECgYEA8y16mUGjNyz2zQDEfN2d
Y0MsZ29AInF7bGCLv9W1zq/DUdoZ5va1kzjtmMKnnM3x9zhbsmtQVf8bCA0y/URS
IZG52uXyRQETgsq/yYA/LZxYUsqmLPIvHbSh8C/UWHSuvWGH8sRcTMvFezzmCWB4
lGQ3Zyezft6baXvRWIN3IeUCgYEA646F78XBbPWvra4TPiNvgC9Xfz8AiHDcWyeh
1kgnIuymypY9sBaEDZMc3AGbl3VDjFmM1qbk18f93Izbieit27IkV3EBvLFfZrpZ
hSRCSJ9ncjXTozz0QjKE+hxTYQ7+FY2Y9M869p0yyACpi21NaPS6syoW3hXsGQaW
IdKXDZECgYEA4GnX+hbYyNJ18DoFGjZqSHB1Sf8g8KhJfnqafS572YHafm8H+F00
s+iVW6RHii2EXuFjvgPK35HNIGEN7SxfnxscqSYLriKQHuN8mjgAFddyqvTY5iGZ
2ZAY4c9B51/G4n5fN2p+w2BJnrFUmNKudEMH3eqFe09znKTnTQgFqQECgYEAj0j1
zgE0BIx6XaKKz/yMIaQqjBuNvnEwiT5VYlwnekYLuyWixo8bqoo3Pti3hWzuNtxu
IFAK2fssP9Fq5bukrgPxuULjdJ1MU9e9BpEkxLo6Ga4GW8CDMBU88Er0qRCOnBuy
1A+OZV7/+cr1VvuY3+QmAT/0AwnAwQRRpKdN/RECgYAtmYFHnoHXCOSd02Jt+tJ3
7GZJFqGjLgM/UdwUuWEVJmP0zQ6XP1iv0ldGXTVaRW0DQYVsZRD0SSrJpZOD5X0B
R48Zr7zLzWEJwblnvOmsr6K+DKGLqqG8A9r+w4w7pBw5A9BykkzDw79j1wyPh1EP
gcfNQF9dn7B9cubxhFtlLA==
-----END PRIVATE KEY-----
-----BEGIN CERTIFICATE-----
MIICwzCCAasCFGqsJMbsXDc/q4uB+9M8BlxgzSWAMA0GCSqGSIb3DQEBCwUAMB0x
GzAZBgNVBAMMEmdhbmV0aS5leGFtcGxlLmNvbTAgFw0yNjExMjUyMDA5MDhaGA8y
MTI2MTEwMTIwMDkwOFowHTEbMBkGA1UEAwwSZ2FuZXRpLmV4YW1wbGUuY29tMIIB
IjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA38Ih/xREDH7itxhiY9311smP
INAJxeigMaNMacxI7/CmERAcZRFOm+kfrku67i1Hlsc7FbRnat5bVo4RE2ko3FkL
XwcjGPhhc0QqOh51whq/zrEPrdODIeDB8CdllzO5Lro5nDby6CIa01kB1pXIsNH0
1WbvcvreD7IDavXAH1oh0n6jXO4WKsnt91i1tmxMOxCrZ5TfyIFZlk+ladhPzFMB
ZKMpxw6ibspIdMJ48hAr2l84Ta2MJlizNc7cJwulJumBKkT3fAfxzoa586CMUoDx
7earNFQZXx/fkScVy/w0rPYTb4kPZOTTjdVgAJQRKwLjZ6MXXMwIZeNnW0XTtQID
AQABMA0GCSqGSIb3DQEBCwUAA4IBAQA/DjQeKMa/gPMtWFayeBmI6TRS/9LDO5tl
XEvTCZvcpXA1Zy1rZpV2OxQd/UvUgZqQGq9xlaNiGJt3FExqNVzg6dmSnR2oRIhc
vHUllF40y3svBrhGShECMiwifKJ4x9+FCA2j81n07U5JOsX4oroVA3zAkWyGTKgL
nz0P0g+S0DpLfkTtcEhSAw1/inTY0hCwFJvgaGJ1GlY2WqewMKB0yEEGqDFMACKT
CH12MONzi+t9zSCcCig9mQwO/QVLhD8avgJhsabA1YIAsoFaCFqA1nBvGevtlk6t
Oj9aLGxC+lISM9ZlGRA2shqwjy18CcI8UVWPbPQBm/6ydPlP7Nq4
-----END CERTIFICATE-----
";

fn ganeti_style() -> Pki {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(GANETI_STYLE_PEM.as_bytes())
            .collect::<Result<_, _>>()
            .expect("certificate");
    let key = PrivatePkcs8KeyDer::from_pem_slice(GANETI_STYLE_PEM.as_bytes()).expect("key");
    Pki {
        chain,
        key: key.secret_pkcs8_der().to_vec(),
        cert_pem: GANETI_STYLE_PEM.to_owned(),
        key_pem: String::new(),
        ca_pem: None,
    }
}

fn server_tls(pki: &Pki) -> rustls::ServerConfig {
    server_tls_versions(pki, rustls::DEFAULT_VERSIONS)
}

fn server_tls_versions(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            pki.key.clone(),
        )))
        .expect("server key");
    // A resolver rather than `with_single_cert`, which parses the certificate with webpki
    // and so refuses version 1 certificates.
    let certified = rustls::sign::CertifiedKey::new(pki.chain.clone(), key);
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)))
}

// ----- the fake RAPI -----

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query, as sent.
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    /// The JSON body, `Null` without a body.
    body: Value,
}

impl Seen {
    /// The decoded `reason` query argument.
    fn reason(&self) -> Option<String> {
        query_args(&self.path)
            .into_iter()
            .find(|(k, _)| k == "reason")
            .map(|(_, v)| v)
    }

    fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// Decoded query arguments (RAPI decodes them with Python's `parse_qs`).
fn query_args(path: &str) -> Vec<(String, String)> {
    let Some((_, query)) = path.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

/// What the fake answers.
#[derive(Clone)]
enum Reply {
    /// A JSON body with a status.
    Json(u16, Value),
    /// Raw bytes with a status.
    Raw(u16, &'static str),
    /// An endless body without a length.
    Endless,
    /// A body announced (and sent) larger than any small limit.
    Huge,
    /// Never answer.
    Stall,
}

type Script = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

#[derive(Clone)]
struct State {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Script,
}

async fn handle(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let seen = Seen {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_default(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| json!({"unparsable": true}))
        },
    };
    state.seen.lock().unwrap().push(seen.clone());
    // RAPI with --require-authentication: wrong or missing credentials get 401.
    let reply = if seen.authorization.as_deref() != Some(AUTHORIZATION) {
        replay("rapi-02-info-noauth-401.json")
    } else {
        (state.script)(&seen)
    };
    let status = |code: u16| {
        HttpResponse::build(actix_web::http::StatusCode::from_u16(code).expect("status code"))
    };
    match reply {
        Reply::Json(code, value) => status(code)
            .content_type("application/json")
            .body(value.to_string()),
        Reply::Raw(code, text) => status(code).content_type("text/html").body(text),
        Reply::Endless => {
            let chunk = web::Bytes::from(vec![b' '; 1024]);
            HttpResponse::Ok().streaming(futures_util::stream::repeat_with(move || {
                Ok::<_, actix_web::Error>(chunk.clone())
            }))
        }
        Reply::Huge => HttpResponse::Ok().body(vec![b' '; 64 * 1024]),
        Reply::Stall => {
            std::future::pending::<()>().await;
            HttpResponse::Ok().finish()
        }
    }
}

struct FakeRapi {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    handle: ServerHandle,
    dir: tempfile::TempDir,
    pki: Pki,
}

impl FakeRapi {
    /// A fake with a self-signed certificate for `cluster.ganeti.test`.
    fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with(self_signed("cluster.ganeti.test"), script)
    }

    fn start_with(pki: Pki, script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let tls = server_tls(&pki);
        Self::start_tls(pki, tls, script)
    }

    fn start_tls(
        pki: Pki,
        tls: rustls::ServerConfig,
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let state = State {
            seen: Arc::default(),
            script: Arc::new(script),
        };
        let seen = state.seen.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .bind_rustls_0_23(("127.0.0.1", 0), tls)
        .expect("bind loopback");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        let dir = tempfile::tempdir().expect("temp dir");
        write(&dir, "credentials", &format!("{USER} {PASSWORD}\n"));
        write(&dir, "rapi.pem", &pki.cert_pem);
        if let Some(ca) = &pki.ca_pem {
            write(&dir, "ca.pem", ca);
        }
        FakeRapi {
            port,
            seen,
            handle,
            dir,
            pki,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Settings pinning the server's certificate.
    fn config(&self) -> RapiConfig {
        RapiConfig {
            pinned_certificate: Some(self.file("rapi.pem")),
            timeout: GENEROUS,
            ..RapiConfig::new(self.url(), self.file("credentials"))
        }
    }

    fn backend(&self) -> RapiBackend {
        RapiBackend::new(&self.config()).expect("backend")
    }

    /// A client with other limits.
    fn client(&self, timeout: Duration, max_response_bytes: usize) -> RapiClient {
        let pinned = rapi::load_certificates(&self.file("rapi.pem")).expect("pin");
        RapiClient::with_tls(
            self.url(),
            Credentials::new(USER, PASSWORD),
            rapi::tls_config(pinned, None).expect("tls"),
            timeout,
            max_response_bytes,
        )
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) {
    let mut file = std::fs::File::create(dir.path().join(name)).expect("create");
    file.write_all(text.as_bytes()).expect("write");
}

/// The fake answering the snapshot requests from the samples.
fn snapshot_script(seen: &Seen) -> Reply {
    match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", "/2/nodes?bulk=1") => replay("rapi-06-nodes-bulk.json"),
        ("GET", "/2/instances?bulk=1") => replay("rapi-09-instances-bulk.json"),
        ("GET", "/2/groups?bulk=1") => replay("rapi-10-groups-bulk.json"),
        ("GET", "/2/info") => replay("rapi-03-info.json"),
        ("GET", "/2/tags") => Reply::Json(200, json!(["maintd:balance", "other"])),
        _ => Reply::Json(
            404,
            json!({"code": 404, "message": "Not Found", "explain": ""}),
        ),
    }
}

fn with_reason(body: OpBody, text: &str) -> Opcode {
    body.with_reason(text.to_owned(), 1_700_000_000_000_000_000)
}

// ----- snapshot -----

#[actix_rt::test]
async fn snapshot_decodes_the_lab_samples() {
    let fake = FakeRapi::start(snapshot_script);
    let backend = fake.backend();
    let snapshot = backend.snapshot().await.expect("snapshot");

    assert_eq!(snapshot.master, "node1.ganeti.test");
    assert_eq!(
        snapshot.cluster_tags.iter().collect::<Vec<_>>(),
        ["maintd:balance", "other"]
    );
    let names: Vec<_> = snapshot.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "node1.ganeti.test",
            "node2.ganeti.test",
            "node3.ganeti.test"
        ]
    );
    let node2 = snapshot.node("node2.ganeti.test").expect("node2");
    assert_eq!(node2.uuid, "18efdbac-46ec-4bb0-ab62-5301935f724e");
    assert_eq!(node2.group, "dacfcd64-ca94-41ac-a792-ec87900392ff");
    assert_eq!((node2.memory_total, node2.memory_free), (24105, 23358));
    assert_eq!(
        (node2.memory_node, node2.cpus, node2.cpus_node),
        (113, 2, 2)
    );
    // The lab has no volume group: no disk figures.
    assert_eq!((node2.disk_total, node2.disk_free), (0, 0));
    assert_eq!(node2.spindles, 1);
    assert!(!node2.offline && !node2.drained && node2.vm_capable);

    assert_eq!(snapshot.instances.len(), 4);
    let inst1 = snapshot
        .instances
        .iter()
        .find(|i| i.name == "inst1.ganeti.test")
        .expect("inst1");
    assert_eq!(inst1.primary, "node2.ganeti.test");
    assert!(inst1.secondaries.is_empty());
    assert_eq!(inst1.disk_template, DiskTemplate::Diskless);
    assert_eq!((inst1.memory, inst1.vcpus, inst1.disk), (128, 1, 0));
    assert!(inst1.auto_balance);
    assert_eq!(inst1.spindle_use, 1);
    assert!(inst1.is_running());
    assert_eq!(inst1.uuid, "6ea1bc7e-6474-4f71-97e1-cab022702922");

    assert_eq!(snapshot.groups.len(), 1);
    let group = &snapshot.groups[0];
    assert_eq!(group.name, "default");
    assert_eq!(group.uuid, node2.group);
    assert_eq!(group.alloc_policy, "preferred");
    assert_eq!(group.vcpu_ratio, Some(4.0));
    assert_eq!(group.spindle_ratio, Some(32.0));

    assert_eq!(
        backend.master_node().await.expect("master"),
        "node1.ganeti.test"
    );
    for seen in fake.seen() {
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.authorization.as_deref(), Some(AUTHORIZATION));
    }
    fake.stop().await;
}

#[actix_rt::test]
async fn offline_nodes_have_no_resources_and_odd_answers_fail_cleanly() {
    let fake = FakeRapi::start(|seen| match seen.path.as_str() {
        "/2/nodes?bulk=1" => {
            let mut nodes = sample_body("rapi-06-nodes-bulk.json");
            let node3 = &mut nodes[2];
            node3["offline"] = json!(true);
            for live in [
                "mtotal", "mnode", "mfree", "ctotal", "cnos", "dtotal", "dfree",
            ] {
                node3[live] = Value::Null;
            }
            node3["ndparams"]["spindle_count"] = json!(4);
            node3["tags"] = json!(["maintd:repairready:x"]);
            Reply::Json(200, nodes)
        }
        _ => snapshot_script(seen),
    });
    let snapshot = fake.backend().snapshot().await.expect("snapshot");
    let node3 = snapshot.node("node3.ganeti.test").expect("node3");
    assert!(node3.offline);
    assert_eq!(
        (node3.memory_total, node3.memory_free, node3.cpus),
        (0, 0, 0)
    );
    assert_eq!(
        (node3.memory_node, node3.cpus_node, node3.spindles),
        (0, 1, 4)
    );
    assert!(node3.tags.contains("maintd:repairready:x"));
    fake.stop().await;

    // An instance without a primary node, a list that is an object: protocol errors.
    for broken in ["instance", "nodes"] {
        let fake = FakeRapi::start(move |seen| match (broken, seen.path.as_str()) {
            ("instance", "/2/instances?bulk=1") => {
                Reply::Json(200, json!([{"name": "i1", "disk_template": "plain"}]))
            }
            ("nodes", "/2/nodes?bulk=1") => Reply::Json(200, json!({"nodes": []})),
            _ => snapshot_script(seen),
        });
        let error = fake.backend().snapshot().await.unwrap_err();
        assert!(matches!(error, BackendError::Protocol(_)), "{error}");
        fake.stop().await;
    }
}

// ----- submissions -----

/// The fake's answer to submissions: consecutive job ids from 100; DELETE of a job
/// answers as Ganeti's CancelJob does.
fn submission_script(next: Arc<AtomicU64>) -> impl Fn(&Seen) -> Reply + Send + Sync {
    move |seen| match seen.method.as_str() {
        "DELETE" if seen.path.starts_with("/2/jobs/") => {
            Reply::Json(200, json!([true, "Job canceled"]))
        }
        "PUT" | "POST" | "DELETE" => Reply::Json(200, json!(next.fetch_add(1, Ordering::SeqCst))),
        _ => snapshot_script(seen),
    }
}

#[actix_rt::test]
async fn each_opcode_goes_to_its_endpoint_with_the_reason() {
    let fake = FakeRapi::start(submission_script(Arc::new(AtomicU64::new(100))));
    let text = "Draining node2.ganeti.test (incident 7f0c, submission r1-0)";
    let jobs = vec![
        vec![with_reason(OpBody::drain_node("node2.ganeti.test"), text)],
        vec![with_reason(
            OpBody::migrate("inst1.ganeti.test", None),
            "Evacuating (submission r1-1)",
        )],
        vec![with_reason(
            OpBody::failover("inst2.ganeti.test", Some("node3.ganeti.test")),
            "Failover (submission r1-2)",
        )],
        vec![with_reason(
            OpBody::new_secondary("inst3.ganeti.test", "node1.ganeti.test"),
            "Secondary (submission r1-3)",
        )],
        vec![with_reason(
            OpBody::tag_node("node2.ganeti.test", "maintd:repairready:7f0c"),
            "Ready (submission r1-4)",
        )],
        vec![with_reason(
            OpBody::TagsDel {
                kind: TagKind::Instance,
                name: Some("inst1.ganeti.test".into()),
                tags: vec![
                    "ganeti:watcher:autorepair:pending:migrate:u:1:4+5".into(),
                    "b".into(),
                ],
            },
            "harep tags (submission r1-5)",
        )],
        vec![with_reason(
            OpBody::TagsSet {
                kind: TagKind::Cluster,
                name: None,
                tags: vec!["maintd:x".into()],
            },
            "cluster (submission r1-6)",
        )],
        vec![with_reason(
            OpBody::InstanceRecreateDisks {
                instance_name: "inst4.ganeti.test".into(),
                disks: Vec::new(),
                nodes: Vec::new(),
                iallocator: Some("hail".into()),
            },
            "recreate (submission r1-7)",
        )],
        // RAPI cannot move instances: refused for this job alone, nothing sent.
        vec![with_reason(
            OpBody::instance_move("inst4.ganeti.test", "node2.ganeti.test"),
            "move (submission r1-8)",
        )],
    ];
    let results = fake.backend().submit_jobs(jobs).await.expect("submitted");
    let ids: Vec<_> = results.iter().take(8).map(|r| r.clone().unwrap()).collect();
    assert_eq!(ids, (100..108).map(JobId).collect::<Vec<_>>());
    let refused = results[8].clone().unwrap_err();
    assert!(refused.contains("OP_INSTANCE_MOVE"), "{refused}");

    let seen = fake.seen();
    assert_eq!(seen.len(), 8, "{seen:#?}");
    let expect = |i: usize, method: &str, path: &str, body: Value| {
        assert_eq!(seen[i].method, method, "request {i}");
        assert_eq!(seen[i].path_only(), path, "request {i}");
        assert_eq!(seen[i].body, body, "request {i}");
        assert_eq!(seen[i].authorization.as_deref(), Some(AUTHORIZATION));
        if !body.is_null() {
            assert_eq!(seen[i].content_type.as_deref(), Some("application/json"));
        }
    };
    // Same endpoints and body shapes as the captured requests (rapi-36, -49, -52, -17).
    assert_eq!(
        sample("rapi-36-node2-modify-drained.json")["request"]["path"]
            .as_str()
            .unwrap()
            .split('?')
            .next(),
        Some("/2/nodes/node2.ganeti.test/modify")
    );
    expect(
        0,
        "POST",
        "/2/nodes/node2.ganeti.test/modify",
        json!({"drained": true, "force": true, "auto_promote": false}),
    );
    expect(
        1,
        "PUT",
        "/2/instances/inst1.ganeti.test/migrate",
        json!({"mode": "live", "allow_failover": true, "ignore_hvversions": true,
               "allow_runtime_changes": false}),
    );
    expect(
        2,
        "PUT",
        "/2/instances/inst2.ganeti.test/failover",
        json!({"target_node": "node3.ganeti.test", "ignore_consistency": true,
               "shutdown_timeout": 120}),
    );
    expect(
        3,
        "POST",
        "/2/instances/inst3.ganeti.test/replace-disks",
        json!({"mode": "replace_new_secondary", "remote_node": "node1.ganeti.test",
               "disks": [], "early_release": false}),
    );
    expect(4, "PUT", "/2/nodes/node2.ganeti.test/tags", Value::Null);
    expect(
        5,
        "DELETE",
        "/2/instances/inst1.ganeti.test/tags",
        Value::Null,
    );
    expect(6, "PUT", "/2/tags", Value::Null);
    expect(
        7,
        "POST",
        "/2/instances/inst4.ganeti.test/recreate-disks",
        json!({"disks": [], "nodes": [], "iallocator": "hail"}),
    );

    // The reason: maintd's source, then the opcode's own text (incident and key).
    assert_eq!(
        seen[0].reason().as_deref(),
        Some("gnt:daemon:maintd Draining node2.ganeti.test (incident 7f0c, submission r1-0)")
    );
    // Tags travel as tag= arguments, '+' and ':' intact.
    let tags: Vec<_> = query_args(&seen[5].path)
        .into_iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        tags,
        ["ganeti:watcher:autorepair:pending:migrate:u:1:4+5", "b"]
    );
    let sample_tag = &sample("rapi-17-node2-add-tag.json")["request"]["path"];
    assert!(sample_tag
        .as_str()
        .unwrap()
        .starts_with("/2/nodes/node2.ganeti.test/tags?tag="));
    assert_eq!(
        query_args(&seen[4].path)[0],
        ("tag".to_owned(), "maintd:repairready:7f0c".to_owned())
    );
    fake.stop().await;
}

#[actix_rt::test]
async fn a_job_of_several_opcodes_becomes_a_chain_of_dependent_jobs() {
    let fake = FakeRapi::start(submission_script(Arc::new(AtomicU64::new(40))));
    let text = "harep: repair (submission r2-0)";
    let job = vec![
        with_reason(
            OpBody::TagsSet {
                kind: TagKind::Instance,
                name: Some("inst1.ganeti.test".into()),
                tags: vec!["new".into()],
            },
            text,
        ),
        with_reason(
            OpBody::TagsDel {
                kind: TagKind::Instance,
                name: Some("inst1.ganeti.test".into()),
                tags: vec!["old".into()],
            },
            text,
        ),
        with_reason(
            OpBody::InstanceReplaceDisks {
                instance_name: "inst1.ganeti.test".into(),
                mode: ReplaceDisksMode::ReplaceAuto,
                remote_node: None,
                disks: Vec::new(),
                early_release: false,
                iallocator: None,
            },
            text,
        ),
    ];
    let single = vec![with_reason(
        OpBody::drain_node("node3.ganeti.test"),
        "drain (submission r2-1)",
    )];
    let results = fake
        .backend()
        .submit_jobs(vec![job, single])
        .await
        .expect("submitted");
    // The maintd job is recorded as the last job of its chain.
    assert_eq!(results, vec![Ok(JobId(42)), Ok(JobId(43))]);

    let seen = fake.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path_only()),
        ("PUT", "/2/instances/inst1.ganeti.test/tags")
    );
    assert_eq!(seen[0].body, Value::Null);
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path_only()),
        ("DELETE", "/2/instances/inst1.ganeti.test/tags")
    );
    // A tag request carries `depends` in a body of its own (RAPI merges it in).
    assert_eq!(seen[1].body, json!({"depends": [[40, ["success"]]]}));
    assert_eq!(
        seen[2].path_only(),
        "/2/instances/inst1.ganeti.test/replace-disks"
    );
    assert_eq!(
        seen[2].body,
        json!({"mode": "replace_auto", "disks": [], "early_release": false,
               "depends": [[41, ["success"]]]})
    );
    for (i, seen) in seen.iter().take(3).enumerate() {
        assert_eq!(
            seen.reason().unwrap(),
            format!(
                "gnt:daemon:maintd harep: repair (submission r2-0) [RAPI job {} of 3]",
                i + 1
            )
        );
    }
    // A single opcode: no depends, no chain mark.
    assert_eq!(
        seen[3].body,
        json!({"drained": true, "force": true, "auto_promote": false})
    );
    assert_eq!(
        seen[3].reason().as_deref(),
        Some("gnt:daemon:maintd drain (submission r2-1)")
    );
    fake.stop().await;
}

#[actix_rt::test]
async fn a_refused_link_fails_its_job_and_cancels_the_chain_so_far() {
    let next = Arc::new(AtomicU64::new(60));
    let accept = submission_script(next);
    let fake = FakeRapi::start(move |seen| {
        if seen.path_only().ends_with("/failover") {
            Reply::Json(
                400,
                json!({"code": 400, "message":
                       "Invalid body parameters: Parameter 'OP_INSTANCE_FAILOVER.x' fails validation",
                       "explain": ""}),
            )
        } else {
            accept(seen)
        }
    });
    let chain = vec![
        with_reason(OpBody::drain_node("node2.ganeti.test"), "(submission r3-0)"),
        with_reason(
            OpBody::failover("inst1.ganeti.test", None),
            "(submission r3-0)",
        ),
    ];
    let next_job = vec![with_reason(
        OpBody::tag_node("node3.ganeti.test", "t"),
        "(submission r3-1)",
    )];
    let results = fake
        .backend()
        .submit_jobs(vec![chain, next_job])
        .await
        .expect("answered");
    let why = results[0].clone().unwrap_err();
    assert!(why.contains("opcode 2 of 2"), "{why}");
    assert!(why.contains("fails validation"), "{why}");
    assert!(why.contains("canceled job 60"), "{why}");
    // The other job goes on.
    assert_eq!(results[1], Ok(JobId(61)));
    let seen = fake.seen();
    let cancel = seen
        .iter()
        .find(|s| s.method == "DELETE" && s.path == "/2/jobs/60")
        .expect("the chain's first job canceled");
    assert_eq!(cancel.body, Value::Null);
    fake.stop().await;
}

#[actix_rt::test]
async fn an_interrupted_submission_is_transient_for_the_batch() {
    for reply in [
        Reply::Json(
            502,
            json!({"code": 502, "message": "Can't connect to master daemon", "explain": ""}),
        ),
        Reply::Json(200, json!({"not": "a job id"})),
        Reply::Raw(200, "<html>proxy</html>"),
    ] {
        let next = Arc::new(AtomicU64::new(70));
        let accept = submission_script(next);
        let fake = FakeRapi::start(move |seen| {
            if seen.path_only().ends_with("/migrate") {
                reply.clone()
            } else {
                accept(seen)
            }
        });
        let jobs = vec![
            vec![with_reason(OpBody::drain_node("n1"), "(submission r4-0)")],
            vec![with_reason(
                OpBody::migrate("i1", None),
                "(submission r4-1)",
            )],
            vec![with_reason(OpBody::drain_node("n2"), "(submission r4-2)")],
        ];
        let error = fake.backend().submit_jobs(jobs).await.unwrap_err();
        // Unknown outcome: the watcher looks the jobs up by their keys.
        assert!(error.is_retryable(), "{error}");
        // Nothing after the interrupted job was sent.
        assert_eq!(fake.seen().len(), 2);
        fake.stop().await;
    }
}

// ----- canceling -----

/// A small job queue behind the fake: submissions get ids from `first`, jobs are shown
/// with their `depends` and reason trail as Ganeti shows them, and DELETE answers like
/// Ganeti 3.0's CancelJob (queued or waiting jobs are canceled, others are not).
#[derive(Clone, Default)]
struct MiniQueue {
    jobs: Arc<Mutex<std::collections::BTreeMap<u64, MiniJob>>>,
}

/// A job of the [`MiniQueue`]: (status, depends, reason text).
type MiniJob = (String, Value, String);

impl MiniQueue {
    fn set(&self, id: u64, status: &str) {
        self.jobs.lock().unwrap().get_mut(&id).expect("job").0 = status.to_owned();
    }

    fn status(&self, id: u64) -> String {
        self.jobs.lock().unwrap()[&id].0.clone()
    }

    fn script(&self, first: u64) -> impl Fn(&Seen) -> Reply + Send + Sync {
        let queue = self.clone();
        let next = Arc::new(AtomicU64::new(first));
        move |seen| {
            let mut jobs = queue.jobs.lock().unwrap();
            let job_id = seen
                .path_only()
                .strip_prefix("/2/jobs/")
                .and_then(|id| id.parse::<u64>().ok());
            match (seen.method.as_str(), job_id) {
                ("GET", Some(id)) => match jobs.get(&id) {
                    Some((status, depends, reason)) => Reply::Json(
                        200,
                        json!({"id": id, "status": status, "ops": [{
                            "OP_ID": "OP_NODE_SET_PARAMS", "depends": depends,
                            "reason": [["gnt:user", reason, 1_700_000_000_000_000_000i64],
                                       ["gnt:library:rlib2:nodes_name_modify", "",
                                        1_700_000_000_000_000_000i64]]}]}),
                    ),
                    // What Ganeti 3.0's RAPI answers for a job luxid does not know.
                    None => Reply::Json(200, json!({"id": id, "status": null, "ops": null})),
                },
                ("DELETE", Some(id)) => Reply::Json(
                    200,
                    match jobs.get_mut(&id) {
                        Some((status, _, _)) if status == "queued" || status == "waiting" => {
                            *status = "canceled".into();
                            json!([true, "Job successfully cancelled"])
                        }
                        Some((status, _, _)) if status == "running" => json!([
                            false,
                            "Job no longer waiting, can't cancel (informed it anyway)"
                        ]),
                        _ => json!([false, format!("Job {id} not found in queue")]),
                    },
                ),
                ("PUT" | "POST", None) => {
                    let id = next.fetch_add(1, Ordering::SeqCst);
                    let depends = seen.body.get("depends").cloned().unwrap_or(Value::Null);
                    let reason = seen.reason().unwrap_or_default();
                    jobs.insert(id, ("queued".into(), depends, reason));
                    Reply::Json(200, json!(id))
                }
                _ => Reply::Json(
                    404,
                    json!({"code": 404, "message": "Not Found", "explain": ""}),
                ),
            }
        }
    }
}

/// A maintd job of three opcodes, submitted as a chain of three RAPI jobs; the id of its
/// last job.
async fn submit_three(backend: &RapiBackend, key: &str) -> JobId {
    let ops = ["node1", "node2", "node3"]
        .map(|node| with_reason(OpBody::drain_node(node), &format!("(submission {key})")))
        .to_vec();
    match backend
        .submit_jobs(vec![ops])
        .await
        .expect("answered")
        .as_slice()
    {
        [Ok(id)] => *id,
        other => panic!("submission failed: {other:?}"),
    }
}

fn deletes(fake: &FakeRapi) -> Vec<String> {
    fake.seen()
        .into_iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.path)
        .collect()
}

#[actix_rt::test]
async fn cancel_stops_a_chain_at_its_first_unfinished_job() {
    let queue = MiniQueue::default();
    let fake = FakeRapi::start(queue.script(10));
    let backend = fake.backend();
    let last = submit_three(&backend, "c1").await;
    assert_eq!(last, JobId(12));
    // The first link is done, the second waits for locks: the rest of the chain goes.
    queue.set(10, "success");
    queue.set(11, "waiting");
    assert_eq!(backend.cancel_job(last).await, Ok(CancelOutcome::Canceled));
    assert_eq!(deletes(&fake), ["/2/jobs/11", "/2/jobs/12"]);
    assert_eq!(
        [10, 11, 12].map(|id| queue.status(id)),
        ["success", "canceled", "canceled"]
    );
    // Asked again: the first unfinished job is now canceled, nothing is sent.
    assert_eq!(
        backend.cancel_job(last).await,
        Ok(CancelOutcome::NotCancelable("job 11 is canceled".into()))
    );
    assert_eq!(deletes(&fake).len(), 2);
    fake.stop().await;
}

#[actix_rt::test]
async fn a_running_or_finished_chain_is_left_alone() {
    let queue = MiniQueue::default();
    let fake = FakeRapi::start(queue.script(20));
    let backend = fake.backend();
    let last = submit_three(&backend, "c2").await;
    queue.set(20, "running");
    assert_eq!(
        backend.cancel_job(last).await,
        Ok(CancelOutcome::NotCancelable("job 20 is running".into()))
    );
    for id in [20, 21, 22] {
        queue.set(id, "success");
    }
    assert_eq!(
        backend.cancel_job(last).await,
        Ok(CancelOutcome::NotCancelable(
            "job 22 has already succeeded".into()
        ))
    );
    assert_eq!(
        backend.cancel_job(JobId(4711)).await,
        Ok(CancelOutcome::NotCancelable(
            "job 4711 is not known to the cluster".into()
        ))
    );
    assert!(deletes(&fake).is_empty(), "{:?}", deletes(&fake));
    fake.stop().await;
}

#[actix_rt::test]
async fn a_job_that_starts_before_the_cancel_arrives_goes_on() {
    let queue = MiniQueue::default();
    let script = queue.script(30);
    let racing = queue.clone();
    // The first job starts between the look at it and the DELETE.
    let fake = FakeRapi::start(move |seen| {
        if seen.method == "DELETE" && seen.path == "/2/jobs/30" {
            racing.set(30, "running");
        }
        script(seen)
    });
    let backend = fake.backend();
    let last = submit_three(&backend, "c3").await;
    assert_eq!(
        backend.cancel_job(last).await,
        Ok(CancelOutcome::NotCancelable(
            "Job no longer waiting, can't cancel (informed it anyway)".into()
        ))
    );
    // The later jobs are left to run after it.
    assert_eq!(deletes(&fake), ["/2/jobs/30"]);
    assert_eq!(queue.status(32), "queued");
    fake.stop().await;
}

#[actix_rt::test]
async fn a_single_job_is_canceled_and_odd_answers_are_errors() {
    let queue = MiniQueue::default();
    let script = queue.script(40);
    let fake = FakeRapi::start(
        move |seen| match (seen.method.as_str(), seen.path.as_str()) {
            ("DELETE", "/2/jobs/41") => Reply::Json(200, json!({"canceled": true})),
            ("DELETE", "/2/jobs/42") => Reply::Json(
                403,
                json!({"code": 403, "message": "Forbidden", "explain": "write access needed"}),
            ),
            _ => script(seen),
        },
    );
    let backend = fake.backend();
    let mut ids = Vec::new();
    for key in ["s1", "s2", "s3"] {
        let op = with_reason(OpBody::drain_node("node2"), &format!("(submission {key})"));
        let submitted = backend.submit_jobs(vec![vec![op]]).await.expect("answered");
        ids.push(submitted[0].clone().expect("submitted"));
    }
    assert_eq!(ids, [JobId(40), JobId(41), JobId(42)]);
    assert_eq!(
        backend.cancel_job(ids[0]).await,
        Ok(CancelOutcome::Canceled)
    );
    assert_eq!(deletes(&fake), ["/2/jobs/40"]);
    assert!(matches!(
        backend.cancel_job(ids[1]).await,
        Err(BackendError::Protocol(why)) if why.contains("[success, message]")
    ));
    assert!(matches!(
        backend.cancel_job(ids[2]).await,
        Err(BackendError::Refused(why)) if why.contains("403")
    ));
    fake.stop().await;
}

// ----- jobs -----

#[actix_rt::test]
async fn job_statuses_follow_the_captured_jobs_and_unknown_jobs_are_none() {
    let fake = FakeRapi::start(|seen| match seen.path.as_str() {
        "/2/jobs/13" => replay("rapi-19-node2-add-tag-final.json"),
        "/2/jobs/14" => replay("rapi-22-node2-role-drained-poll.json"),
        "/2/jobs/16" => replay("rapi-28-node2-evacuate-subjob-poll.json"),
        "/2/jobs/26" => replay("rapi-57-node1-drain-master-final.json"),
        "/2/jobs/77" => Reply::Json(200, json!({"id": 77, "status": "waiting"})),
        "/2/jobs/78" => Reply::Json(200, json!({"id": 78, "status": "canceled"})),
        "/2/jobs/99" => Reply::Json(200, json!({"id": 99, "status": "exploded"})),
        "/2/jobs/98" => Reply::Json(200, json!({"id": 98})),
        // What Ganeti 3.0's RAPI really answers for a job luxid does not know.
        "/2/jobs/999999" => Reply::Json(
            200,
            json!({"end_ts": null, "id": 999999, "oplog": null, "opresult": null, "ops": null,
                   "opstatus": null, "received_ts": null, "start_ts": null, "status": null,
                   "summary": null}),
        ),
        _ => Reply::Json(
            404,
            json!({"code": 404, "message": "Not Found", "explain": ""}),
        ),
    });
    let backend = fake.backend();
    let statuses = backend
        .job_statuses([13, 14, 16, 26, 77, 78, 4711, 999999].map(JobId).to_vec())
        .await
        .expect("statuses");
    assert_eq!(
        statuses,
        vec![
            Some(JobStatus::Success),
            Some(JobStatus::Queued),
            Some(JobStatus::Running),
            Some(JobStatus::Error),
            Some(JobStatus::Waiting),
            Some(JobStatus::Canceled),
            None,
            None,
        ]
    );
    assert!(backend.job_statuses(Vec::new()).await.unwrap().is_empty());
    for garbled in [99, 98] {
        let error = backend
            .job_statuses(vec![JobId(garbled)])
            .await
            .unwrap_err();
        assert!(matches!(error, BackendError::Protocol(_)), "{error}");
    }
    fake.stop().await;
}

#[actix_rt::test]
async fn jobs_are_found_by_reason_and_chains_by_their_last_job() {
    let mut jobs: Vec<Value> = [
        "rapi-19-node2-add-tag-final.json",
        "rapi-27-node2-evacuate-final.json",
        "rapi-29-node2-evacuate-subjob-final.json",
        "rapi-31-node2-evacuate-subjob-final.json",
        "rapi-60-node2-del-tag-final.json",
    ]
    .iter()
    .map(|name| sample_body(name))
    .collect();
    jobs.extend(
        sample_body("rapi-12-jobs-bulk.json")
            .as_array()
            .unwrap()
            .clone(),
    );
    let user = |id: u64, text: &str| {
        json!({"id": id, "status": "success", "ops": [{"OP_ID": "OP_TAGS_SET",
               "reason": [["gnt:user", text, 1], ["gnt:library:rlib2:nodes_name_tags", "", 2]]}]})
    };
    let key = "(incident u, submission r9-1)";
    jobs.push(user(
        80,
        &format!("gnt:daemon:maintd a {key} [RAPI job 1 of 2]"),
    ));
    jobs.push(user(
        81,
        &format!("gnt:daemon:maintd a {key} [RAPI job 2 of 2]"),
    ));
    // Another key whose marker has r9-1 as a prefix, and an unfinished chain.
    jobs.push(user(
        82,
        "gnt:daemon:maintd b (incident u, submission r9-10)",
    ));
    jobs.push(user(
        90,
        "gnt:daemon:maintd c (submission r9-2) [RAPI job 1 of 2]",
    ));
    let listing = Value::Array(jobs);
    let fake = FakeRapi::start(move |seen| match seen.path.as_str() {
        "/2/jobs?bulk=1" => Reply::Json(200, listing.clone()),
        _ => Reply::Json(404, json!({"code": 404, "message": "Not Found"})),
    });
    let backend = fake.backend();
    let find = |marker: &str| backend.find_jobs_by_reason(marker.to_owned());
    // The captured jobs: the user text, and the evacuation's child jobs inherit it.
    assert_eq!(find("maintd incident 42").await.unwrap(), vec![JobId(13)]);
    assert_eq!(
        find("maintd evacuate").await.unwrap(),
        [15, 16, 17].map(JobId).to_vec()
    );
    assert!(find("nothing like it").await.unwrap().is_empty());
    // maintd's markers: the chain's last job stands for it; a chain whose end never
    // reached the queue is not found (the job counts as never submitted).
    assert_eq!(find("submission r9-1)").await.unwrap(), vec![JobId(81)]);
    assert_eq!(find("submission r9-10)").await.unwrap(), vec![JobId(82)]);
    assert!(find("submission r9-2)").await.unwrap().is_empty());
    assert_eq!(fake.seen()[0].path, "/2/jobs?bulk=1");
    fake.stop().await;
}

// ----- failures -----

#[actix_rt::test]
async fn error_answers_map_to_backend_errors() {
    let fake = FakeRapi::start(|seen| match seen.path.as_str() {
        "/2/forbidden" => replay("rapi-15-tags-readonly-user-403.json"),
        "/2/not-allowed" => Reply::Json(
            501,
            json!({"code": 501, "message": "Method PUT is unsupported", "explain": ""}),
        ),
        "/2/server-error" => Reply::Json(
            500,
            json!({"code": 500, "message": "Error: Queue drained", "explain": ""}),
        ),
        "/2/gateway" => Reply::Raw(502, "<html>bad gateway</html>"),
        "/2/garbage" => Reply::Raw(200, "this is not JSON"),
        "/2/endless" => Reply::Endless,
        "/2/huge" => Reply::Huge,
        "/2/stall" => Reply::Stall,
        _ => Reply::Json(404, json!({"code": 404, "message": "Not Found"})),
    });
    let client = fake.client(Duration::from_secs(2), 16 * 1024);
    let outcome = |path: &'static str| {
        let client = client.clone();
        async move {
            let error = client.get(path).await.unwrap_err();
            (error.clone(), BackendError::from(error))
        }
    };

    let (raw, mapped) = outcome("/2/forbidden").await;
    assert_eq!(raw.status(), Some(403));
    assert!(
        matches!(mapped, BackendError::Refused(ref m) if m.contains("Forbidden")),
        "{mapped}"
    );
    // 501: the method is not supported on the resource; retrying cannot help.
    let (_, mapped) = outcome("/2/not-allowed").await;
    assert!(matches!(mapped, BackendError::Refused(_)), "{mapped}");
    for transient in ["/2/server-error", "/2/gateway"] {
        let (_, mapped) = outcome(transient).await;
        assert!(mapped.is_retryable(), "{transient}: {mapped}");
    }
    let (_, mapped) = outcome("/2/server-error").await;
    assert!(mapped.to_string().contains("Queue drained"), "{mapped}");
    for protocol in ["/2/garbage", "/2/endless", "/2/huge"] {
        let (raw, mapped) = outcome(protocol).await;
        assert!(
            matches!(mapped, BackendError::Protocol(_)),
            "{protocol}: {mapped}"
        );
        if protocol != "/2/garbage" {
            assert!(matches!(raw, RapiError::TooLarge { .. }), "{raw}");
        }
    }
    let started = std::time::Instant::now();
    let (raw, mapped) = outcome("/2/stall").await;
    assert!(matches!(raw, RapiError::Timeout { .. }), "{raw}");
    assert!(mapped.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(20));

    // The backend's calls surface the same classes.
    let backend = RapiBackend::with_client(fake.client(Duration::from_secs(2), 16 * 1024));
    assert!(matches!(
        backend.master_node().await,
        Err(BackendError::Refused(_))
    ));
    fake.stop().await;
}

#[actix_rt::test]
async fn wrong_credentials_are_refused_with_401() {
    let fake = FakeRapi::start(snapshot_script);
    write(&fake.dir, "credentials", "maintd wrong-password\n");
    let error = fake.backend().snapshot().await.unwrap_err();
    match &error {
        BackendError::Refused(text) => {
            assert!(
                text.contains("401") && text.contains("Unauthorized"),
                "{text}"
            )
        }
        other => panic!("expected a refusal, got {other}"),
    }
    let submitted = fake
        .backend()
        .submit_jobs(vec![vec![with_reason(OpBody::drain_node("n1"), "x")]])
        .await
        .expect("answered");
    assert!(submitted[0].as_ref().unwrap_err().contains("401"));
    fake.stop().await;
}

#[actix_rt::test]
async fn nothing_listening_is_transient() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fake = FakeRapi::start(snapshot_script);
    let config = RapiConfig {
        url: format!("https://127.0.0.1:{port}"),
        ..fake.config()
    };
    let error = RapiBackend::new(&config)
        .unwrap()
        .master_node()
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    fake.stop().await;
}

// ----- certificates -----

#[actix_rt::test]
async fn a_certificate_other_than_the_pinned_one_is_refused() {
    let fake = FakeRapi::start(snapshot_script);
    // Pin a different certificate carrying the very same name.
    let other = self_signed("cluster.ganeti.test");
    write(&fake.dir, "rapi.pem", &other.cert_pem);
    let error = fake.backend().master_node().await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("pinned"), "{error}");
    assert!(fake.seen().is_empty(), "no request got through");

    // The right pin works, although the name (cluster.ganeti.test) is not the URL's host;
    // a key in the pin file, as in Ganeti's rapi.pem, is ignored.
    write(
        &fake.dir,
        "rapi.pem",
        &format!("{}{}", fake.pki.key_pem, fake.pki.cert_pem),
    );
    assert_eq!(
        fake.backend().master_node().await.unwrap(),
        "node1.ganeti.test"
    );
    fake.stop().await;
}

#[actix_rt::test]
async fn a_ca_verified_connection_checks_the_name() {
    let fake = FakeRapi::start_with(ca_signed(&["127.0.0.1", "localhost"]), snapshot_script);
    let config = RapiConfig {
        pinned_certificate: None,
        ca: Some(fake.file("ca.pem")),
        ..fake.config()
    };
    let backend = RapiBackend::new(&config).expect("backend");
    assert_eq!(backend.master_node().await.unwrap(), "node1.ganeti.test");
    let by_name = RapiConfig {
        url: format!("https://localhost:{}", fake.port),
        ..config.clone()
    };
    assert_eq!(
        RapiBackend::new(&by_name)
            .unwrap()
            .master_node()
            .await
            .unwrap(),
        "node1.ganeti.test"
    );
    fake.stop().await;

    // Signed by the CA but for another name: refused; a CA that signed nothing here too.
    let fake = FakeRapi::start_with(ca_signed(&["rapi.example.com"]), snapshot_script);
    let config = RapiConfig {
        pinned_certificate: None,
        ca: Some(fake.file("ca.pem")),
        ..fake.config()
    };
    let error = RapiBackend::new(&config)
        .unwrap()
        .master_node()
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    let stranger = ca_signed(&["127.0.0.1"]);
    write(
        &fake.dir,
        "other-ca.pem",
        stranger.ca_pem.as_deref().unwrap(),
    );
    let config = RapiConfig {
        ca: Some(fake.file("other-ca.pem")),
        url: fake.url(),
        ..config
    };
    assert!(RapiBackend::new(&config)
        .unwrap()
        .master_node()
        .await
        .is_err());
    assert!(fake.seen().is_empty());
    fake.stop().await;
}

#[actix_rt::test]
async fn bad_settings_are_refused_at_startup_with_clear_errors() {
    let fake = FakeRapi::start(snapshot_script);
    let setup = |config: RapiConfig| RapiBackend::new(&config).unwrap_err();

    let error = setup(RapiConfig {
        credentials: fake.file("missing"),
        ..fake.config()
    });
    assert!(
        matches!(error, RapiSetupError::Credentials { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("missing"), "{error}");
    write(&fake.dir, "malformed", "maintd\n");
    let error = setup(RapiConfig {
        credentials: fake.file("malformed"),
        ..fake.config()
    });
    assert!(error.to_string().contains("no password"), "{error}");

    let error = setup(RapiConfig {
        pinned_certificate: None,
        ca: None,
        ..fake.config()
    });
    assert_eq!(error, RapiSetupError::NoTrust);
    write(&fake.dir, "not-a-cert.pem", "hello\n");
    let error = setup(RapiConfig {
        pinned_certificate: Some(fake.file("not-a-cert.pem")),
        ..fake.config()
    });
    assert!(
        matches!(error, RapiSetupError::Certificate { .. }),
        "{error}"
    );
    let error = setup(RapiConfig {
        url: fake.url().replace("https", "http"),
        ..fake.config()
    });
    assert!(matches!(error, RapiSetupError::Url { .. }), "{error}");
    assert!(fake.seen().is_empty());
    fake.stop().await;
}

#[actix_rt::test]
async fn ganeti_style_version_1_certificates_can_be_pinned_over_tls_1_2_and_1_3() {
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let pki = ganeti_style();
        let tls = server_tls_versions(&pki, versions);
        let fake = FakeRapi::start_tls(pki, tls, snapshot_script);
        // The pin file holds the key and the certificate, as Ganeti's rapi.pem does.
        assert_eq!(
            fake.backend()
                .master_node()
                .await
                .expect("pinned v1 certificate"),
            "node1.ganeti.test"
        );
        // Another key under the same certificate name does not pass.
        write(
            &fake.dir,
            "rapi.pem",
            &self_signed("ganeti.example.com").cert_pem,
        );
        assert!(fake.backend().master_node().await.is_err());
        fake.stop().await;
    }
}
