//! `GET /metrics` and `config/maintd-alerts.yml` against Prometheus' own tools: promtool's
//! linter on a real scrape of `maintd sim`, promtool's rule tests, and a Prometheus
//! server scraping `maintd sim` every second until maintd's incident shows in a query.
//!
//! Ignored by default: they need Debian's `prometheus` package (`prometheus` and
//! `promtool`); `.ci/run` installs it and runs them.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::{
    collections::BTreeSet,
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use maintd::metrics::{parse_exposition, sample_value};
use serde_json::{json, Value};
use support::{http_ok, http_text, path, wait_until, within, SimWithMaintd};

const NEEDS: &str = "needs promtool and prometheus (Debian's prometheus package)";

/// The repository's `config/` directory.
fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// `maintd sim` (the daemon on a simulated cluster), polling every half second.
struct SimDaemon(SimWithMaintd);

impl std::ops::Deref for SimDaemon {
    type Target = SimWithMaintd;

    fn deref(&self) -> &SimWithMaintd {
        &self.0
    }
}

impl SimDaemon {
    fn start(dir: &Path) -> SimDaemon {
        SimDaemon(SimWithMaintd::start(
            dir,
            &[
                "--nodes",
                "4",
                "--instances",
                "8",
                "--job-seconds",
                "0.2",
                "--round-delay",
                "0.5",
                "--poll-interval",
                "0.5",
            ],
        ))
    }

    /// `GET /metrics` as curl asks it (no Accept header: the text format).
    fn scrape(&self) -> String {
        let (status, body) = http_text(&self.api, "GET", "/metrics", None).unwrap();
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Make `node` report an evacuation and wait for maintd's incident.
    fn incident_on(&self, node: &str) {
        let diagnose = json!({"status": "evacuate", "details": {"disk": "sdb"}});
        http_ok(
            &self.control,
            "PUT",
            &format!("/sim/nodes/{node}/diagnose"),
            Some(&diagnose),
        );
        wait_until(within(60), "maintd's incident", || {
            let (status, body) = support::http(&self.api, "GET", "/1/status", None).ok()?;
            (status == 200 && body.as_array().is_some_and(|a| !a.is_empty())).then_some(())
        });
        assert!(self.proc.log_text().contains("new incident"));
    }
}

/// `program args`, with `input` on its standard input: (success, stdout and stderr).
fn run_tool(program: &str, args: &[&str], dir: &Path, input: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({NEEDS}): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The metric names `config/maintd-alerts.yml` uses.
fn names_in_alert_rules() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(config_dir().join("maintd-alerts.yml")).unwrap();
    let mut names = BTreeSet::new();
    for expr in rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")) {
        let mut rest = expr;
        while let Some(at) = rest.find("maintd_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

#[test]
#[ignore = "needs promtool and prometheus (Debian's prometheus package)"]
fn promtool_finds_no_problem_in_a_real_scrape_and_the_alerts_name_real_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimDaemon::start(dir.path());
    sim.incident_on("node2");
    let body = sim.scrape();
    let (ok, problems) = run_tool("promtool", &["check", "metrics"], dir.path(), &body);
    assert!(ok && problems.trim().is_empty(), "{problems}\n{body}");

    let samples = parse_exposition(&body).unwrap();
    assert_eq!(sample_value(&samples, "maintd_is_master", &[]), Some(1.0));
    let scraped: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    let used = names_in_alert_rules();
    assert!(used.len() >= 6, "{used:?}");
    for name in &used {
        assert!(
            scraped.contains(name.as_str()),
            "config/maintd-alerts.yml uses {name}, which maintd does not export: {scraped:?}"
        );
    }
}

#[test]
#[ignore = "needs promtool and prometheus (Debian's prometheus package)"]
fn promtool_checks_the_alert_rules_and_their_tests_fire_each_alert() {
    let config = config_dir();
    let (ok, out) = run_tool(
        "promtool",
        &["check", "rules", "maintd-alerts.yml"],
        &config,
        "",
    );
    assert!(ok && out.contains("SUCCESS: 6 rules found"), "{out}");
    let (ok, out) = run_tool(
        "promtool",
        &["test", "rules", "maintd-alerts.test.yml"],
        &config,
        "",
    );
    assert!(ok && out.contains("SUCCESS"), "{out}");
    // Every alert has a test.
    let tests = std::fs::read_to_string(config.join("maintd-alerts.test.yml")).unwrap();
    let rules = std::fs::read_to_string(config.join("maintd-alerts.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
    {
        let alert = alert.trim();
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "no test fires {alert}"
        );
    }
}

/// A Prometheus server of the test's own, killed when dropped.
struct Prometheus {
    child: Child,
    /// Its HTTP API.
    address: String,
    log: PathBuf,
}

impl Prometheus {
    /// Scrape `target` every second, with maintd's alert rules loaded; storage and
    /// configuration under `dir`.
    fn start(dir: &Path, target: &str) -> Prometheus {
        let address = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().to_string()
        };
        let rules = config_dir().join("maintd-alerts.yml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: maintd\n    static_configs:\n      - targets: ['{target}']\n",
                path(&rules)
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let output = std::fs::File::create(&log).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", path(&config)))
            .arg(format!("--storage.tsdb.path={}", path(&dir.join("tsdb"))))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run prometheus ({NEEDS}): {e}"));
        Prometheus {
            child,
            address,
            log,
        }
    }

    /// The result of an instant query, once Prometheus answers it.
    fn query(&self, query: &str) -> Option<Vec<Value>> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        let (status, body) = support::http(
            &self.address,
            "GET",
            &format!("/api/v1/query?query={encoded}"),
            None,
        )
        .ok()?;
        (status == 200 && body["status"] == "success")
            .then(|| body["data"]["result"].as_array().cloned())
            .flatten()
    }

    /// The single value of `query`'s result, if it has exactly one.
    fn value(&self, query: &str) -> Option<f64> {
        let result = self.query(query)?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs promtool and prometheus (Debian's prometheus package)"]
fn a_prometheus_server_scraping_maintd_sim_sees_its_incident_and_loads_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimDaemon::start(dir.path());
    let prometheus = Prometheus::start(dir.path(), &sim.api);
    let up = wait_until(within(60), "Prometheus scraping maintd", || {
        prometheus
            .value("up{job=\"maintd\"}")
            .filter(|up| *up == 1.0)
    });
    assert_eq!(up, 1.0, "{}", prometheus.log_text());
    assert_eq!(prometheus.value("sum(maintd_incidents)"), Some(0.0));

    sim.incident_on("node3");
    wait_until(within(60), "maintd's incident in Prometheus", || {
        prometheus
            .value("sum(maintd_incidents{action=\"evacuate\"})")
            .filter(|count| *count == 1.0)
    });
    assert_eq!(prometheus.value("maintd_is_master"), Some(1.0));
    assert!(
        prometheus
            .value("maintd_polls_total{node=\"node3\"}")
            .unwrap()
            >= 1.0
    );

    // The alert rules loaded and evaluate without error.
    let (status, rules) = support::http(&prometheus.address, "GET", "/api/v1/rules", None).unwrap();
    assert_eq!(status, 200, "{rules}");
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), 6, "{rules}");
    wait_until(within(30), "every rule evaluated", || {
        let (_, rules) = support::http(&prometheus.address, "GET", "/api/v1/rules", None).ok()?;
        let groups = rules["data"]["groups"].as_array()?.clone();
        let all_ok = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .all(|r| r["health"] == "ok");
        all_ok.then_some(())
    });
}
