//! The web page at `/ui/` against `maintd daemon` (with a users file, plain HTTP) and a
//! simulated cluster: what it shows, to whom it shows buttons, and that it escapes what the
//! cluster reports. The ignored test drives a real headless Chromium through Python's
//! playwright (actors/tests/ui/ui_check.py) and keeps its screenshots.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{json, Value};

mod support;
use support::*;

/// A simulated cluster of four nodes with jobs of `job_seconds`, and a daemon on its
/// master (node1) polling every 0.2 s.
fn start(dir: &Path, job_seconds: f64) -> (Sim, Daemon, String) {
    let sim = Sim::start(
        dir,
        &SimSpec {
            job_seconds,
            ..SimSpec::new(4, 8)
        },
    );
    let mut daemon = Daemon::spawn(&sim, dir, &DaemonSpec::on("node1", "0.5"));
    let api = daemon.wait_serving(within(60));
    (sim, daemon, api)
}

/// Some node other than the master.
fn other_node(sim: &Sim, skip: &[&str]) -> String {
    sim.nodes()
        .iter()
        .filter(|n| n["master"] == false)
        .filter_map(|n| n["name"].as_str())
        .find(|name| !skip.contains(name))
        .expect("a node that is not the master")
        .to_owned()
}

/// An answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then_some(value.trim())
        })
    }
}

/// One HTTP/1.0 request to loopback `addr`, with Basic credentials when given.
fn request(addr: &str, method: &str, path: &str, user: Option<(&str, &str)>) -> Answer {
    request_with(addr, method, path, user, "")
}

/// [`request`] with further header lines (each ending in CRLF).
fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    user: Option<(&str, &str)>,
    headers: &str,
) -> Answer {
    let socket: SocketAddr = addr.parse().expect("address");
    assert!(socket.ip().is_loopback(), "only loopback: {addr}");
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let authorization = user
        .map(|(user, password)| {
            let credentials = maintd::auth::Credentials {
                user: user.into(),
                password: password.into(),
            };
            format!("Authorization: {}\r\n", credentials.basic_header())
        })
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{authorization}{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("end of headers");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

const OPERATOR: Option<(&str, &str)> = Some((API_USER, API_PASSWORD));
const READER: Option<(&str, &str)> = Some(("reader", "reader-secret"));

/// The incident on `node` once `/1/status` shows it.
fn wait_incident(daemon: &mut Daemon, node: &str) -> Value {
    wait_until(within(30), "the incident", || {
        daemon
            .try_incidents()?
            .into_iter()
            .find(|i| i["node"] == node)
    })
}

#[test]
fn the_page_shows_incidents_to_all_and_buttons_only_to_a_write_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, mut daemon, api) = start(dir.path(), 0.3);
    // Paused, so that the incident stays noted and cancelable.
    http_ok(
        &api,
        "POST",
        "/1/pause",
        Some(&json!({"reason": "web page test"})),
    );
    let node = other_node(&sim, &[]);
    sim.report(
        &node,
        &json!({"status": "evacuate", "details": {"disk": "sda"}}),
    );
    let incident = wait_incident(&mut daemon, &node);
    let uuid = incident["uuid"].as_str().expect("uuid");

    let anonymous = request(&api, "GET", "/ui/", None);
    assert_eq!(anonymous.status, 200, "{}", anonymous.body);
    assert!(anonymous
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    let body = &anonymous.body;
    assert!(body.contains(&format!("data-node=\"{node}\"")), "{body}");
    assert!(body.contains(&format!("data-uuid=\"{uuid}\"")), "{body}");
    assert!(body.contains("data-status=\"noted\""), "{body}");
    assert!(body.contains("Paused"), "the safety state: {body}");
    assert!(body.contains("web page test"), "the pause reason: {body}");
    assert!(body.contains("Poll health"), "the nodes: {body}");
    assert!(
        !body.contains("data-action="),
        "no buttons without login: {body}"
    );
    assert!(body.contains("href=\"/login\""), "{body}");

    let reader = request(&api, "GET", "/ui/", READER);
    assert_eq!(reader.status, 200);
    assert!(!reader.body.contains("data-action="), "{}", reader.body);
    assert!(reader.body.contains("read-only"), "{}", reader.body);

    let operator = request(&api, "GET", "/ui/", OPERATOR);
    assert_eq!(operator.status, 200);
    assert!(
        operator
            .body
            .contains(&format!("data-action=\"cancel\" data-uuid=\"{uuid}\"")),
        "{}",
        operator.body
    );
    assert!(operator.body.contains("data-action=\"resume\""));
    assert!(operator.body.contains("Logged in as <b>operator</b>"));

    // The refreshed part carries the same, by the same rules.
    let live = request(&api, "GET", "/ui/live", None);
    assert_eq!(live.status, 200);
    assert!(live.body.contains(&format!("data-node=\"{node}\"")));
    assert!(!live.body.contains("<html"), "only the part: {}", live.body);
    assert!(!live.body.contains("data-action="));
    assert!(request(&api, "GET", "/ui/live", OPERATOR)
        .body
        .contains("data-action=\"cancel\""));

    // Logging in: a challenge in the API's realm until credentials come, then the page.
    // At the top, so that browsers send the credentials to /1/ too.
    let beside_the_page = request(&api, "GET", "/ui/login", None);
    assert_eq!(beside_the_page.status, 303);
    assert_eq!(beside_the_page.header("location"), Some("/login"));
    let login = request(&api, "GET", "/login", None);
    assert_eq!(login.status, 401);
    assert_eq!(
        login.header("www-authenticate"),
        Some("Basic realm=\"Ganeti Remote API\"")
    );
    let wrong = request(&api, "GET", "/login", Some((API_USER, "wrong")));
    assert_eq!(wrong.status, 401, "a wrong password is refused");
    let logged_in = request(&api, "GET", "/login", OPERATOR);
    assert_eq!(logged_in.status, 303);
    assert_eq!(logged_in.header("location"), Some("/ui/"));

    // The buttons' requests: refused without a write user, served with one. The page's
    // script gets its 401 without a challenge (no password prompt hides the refusal).
    let cancel = format!("/1/incidents/{uuid}/cancel");
    let plain = request(&api, "POST", &cancel, None);
    assert_eq!(plain.status, 401);
    assert!(plain.header("www-authenticate").is_some());
    let from_page = request_with(
        &api,
        "POST",
        &cancel,
        None,
        "X-Requested-With: maintd-page\r\n",
    );
    assert_eq!(from_page.status, 401);
    assert_eq!(from_page.header("www-authenticate"), None);
    assert_eq!(request(&api, "POST", &cancel, READER).status, 403);
    assert_eq!(request(&api, "POST", &cancel, OPERATOR).status, 200);
    let after = request(&api, "GET", "/ui/", OPERATOR);
    assert!(
        after.body.contains("data-status=\"canceled\""),
        "{}",
        after.body
    );
    assert!(
        !after.body.contains("data-action=\"cancel\""),
        "a canceled incident has no cancel button: {}",
        after.body
    );

    // The page's own files, and the way to it.
    let style = request(&api, "GET", "/ui/style.css", None);
    assert_eq!(style.status, 200);
    assert!(style
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/css")));
    let script = request(&api, "GET", "/ui/ui.js", None);
    assert_eq!(script.status, 200);
    assert!(script.body.contains("/ui/live"));
    let bare = request(&api, "GET", "/ui", None);
    assert_eq!(bare.status, 308);
    assert_eq!(bare.header("location"), Some("/ui/"));
}

#[test]
fn what_a_node_reports_is_escaped_on_the_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, mut daemon, api) = start(dir.path(), 0.3);
    http_ok(
        &api,
        "POST",
        "/1/pause",
        Some(&json!({"reason": "<b>reason</b>"})),
    );
    let node = other_node(&sim, &[]);
    sim.report(
        &node,
        &json!({"status": "evacuate", "details": {"disk": "<script>alert('sda')</script>"}}),
    );
    wait_incident(&mut daemon, &node);
    let page = request(&api, "GET", "/ui/", OPERATOR);
    assert_eq!(page.status, 200);
    // The page's own script element is the only one.
    assert_eq!(page.body.matches("<script").count(), 1, "{}", page.body);
    assert!(!page.body.contains("<b>reason</b>"), "{}", page.body);
    assert!(
        page.body.contains("&lt;b&gt;reason&lt;/b&gt;"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("&lt;script&gt;alert('sda')&lt;/script&gt;"),
        "the report, escaped: {}",
        page.body
    );
    assert_eq!(
        page.header("content-security-policy"),
        Some("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    );
}

#[test]
fn under_maintd_sim_the_page_says_the_api_is_open_and_shows_the_buttons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = SimWithMaintd::start(dir.path(), &["--nodes", "3", "--instances", "3"]);
    let api = sim.api.clone();
    let page = wait_until(within(30), "the page", || {
        let answer = request(&api, "GET", "/ui/", None);
        (answer.status == 200).then_some(answer)
    });
    assert!(page.body.contains("API open"), "{}", page.body);
    assert!(page.body.contains("data-action=\"pause\""), "{}", page.body);
    assert!(!page.body.contains("href=\"/login\""), "{}", page.body);
}

/// Where the browser test keeps its screenshots: `MAINTD_UI_ARTIFACTS`, else under the
/// cargo target directory.
fn artifacts_dir() -> PathBuf {
    std::env::var_os("MAINTD_UI_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-ui"))
}

#[test]
#[ignore = "needs chromium and python playwright"]
fn a_browser_sees_incidents_live_and_cancels_only_when_logged_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Jobs of two seconds, so that the browser sees an incident pending.
    let (sim, _daemon, api) = start(dir.path(), 2.0);
    let first = other_node(&sim, &[]);
    let second = other_node(&sim, &[&first]);
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/ui_check.py");
    let python = std::env::var("MAINTD_UI_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut check = Proc::spawn_program(
        "ui_check.py",
        Path::new(&python),
        &[path(&script)],
        &[
            ("MAINTD_UI_URL", format!("http://{api}")),
            ("MAINTD_UI_SIM_URL", format!("http://{}", sim.http)),
            ("MAINTD_UI_USER", API_USER.to_owned()),
            ("MAINTD_UI_PASSWORD", API_PASSWORD.to_owned()),
            ("MAINTD_UI_NODES", format!("{first} {second}")),
            ("MAINTD_UI_ARTIFACTS", path(&artifacts)),
        ],
        &dir.path().join("ui_check.log"),
    );
    // Its progress lines are read as they come, so that a failure shows how far it got.
    let status = wait_until(within(240), "ui_check.py to exit", || {
        check.try_line("ui_check: FAILED");
        check.child.try_wait().expect("try_wait")
    });
    let stdout = check.all_stdout();
    println!("{stdout}");
    println!("ui_check.py's log:\n{}", check.log_text());
    println!("screenshots in {}", artifacts.display());
    assert!(status.success(), "ui_check.py failed ({status}): {stdout}");
    for shot in ["ui-1280-logged-out.png", "ui-1280.png", "ui-390.png"] {
        let file = artifacts.join(shot);
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 1000,
            "screenshot {} missing or empty",
            file.display()
        );
    }
}
