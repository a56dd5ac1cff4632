//! `GET /metrics` on the in-process simulated cluster in virtual time: the state gauges
//! agree with `/1/status`, and polls, jobs, rounds, timeouts and failed saves are counted.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod harness;

use std::time::Duration;

use actix_web::http::StatusCode;
use harness::{maintd_reasons, run_paused, Harness};
use maintd::{
    config::Settings,
    metrics::{sample_value, Sample},
    model::job::JobStatus,
    sim::MonitoringBehaviour,
};
use maintd_actors::daemon::messages::Shutdown;
use serde_json::json;

/// Brakes loose enough that one incident is never held back.
fn loose(settings: &mut Settings) {
    settings.safety.max_nodes_in_repair = 20;
    settings.safety.max_percent_in_repair = 100.0;
    settings.safety.breaker_nodes = 50;
    settings.safety.breaker_percent = 100.0;
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    sample_value(samples, name, labels)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?} in {samples:#?}"))
}

/// `maintd_incidents` summed over the series whose labels include `labels`.
fn incidents(samples: &[Sample], labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == "maintd_incidents")
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Jobs maintd submitted, as the simulated queue shows them.
fn maintd_jobs(h: &Harness) -> Vec<maintd::sim::views::JobView> {
    h.jobs()
        .into_iter()
        .filter(|j| !maintd_reasons(j).is_empty())
        .collect()
}

#[test]
fn an_incident_shows_in_the_gauges_and_its_work_in_the_counters() {
    run_paused(|| async {
        let h = Harness::start_with(4, 8, 0.5, loose).await;
        let poll_interval = h.settings.monitoring.poll_interval.as_secs_f64();
        harness::advance(poll_interval * 2.0).await;
        let quiet = h.metrics().await;
        assert_eq!(value(&quiet, "maintd_is_master", &[]), 1.0);
        assert_eq!(incidents(&quiet, &[]), 0.0);
        assert_eq!(value(&quiet, "maintd_paused", &[]), 0.0);
        assert_eq!(value(&quiet, "maintd_breaker_tripped", &[]), 0.0);
        for node in ["node1", "node2", "node3", "node4"] {
            assert!(value(&quiet, "maintd_polls_total", &[("node", node)]) >= 1.0);
            assert_eq!(
                sample_value(&quiet, "maintd_poll_failures_total", &[("node", node)]),
                None
            );
            let age = value(
                &quiet,
                "maintd_node_last_good_report_age_seconds",
                &[("node", node)],
            );
            assert!((0.0..=poll_interval).contains(&age), "{node}: {age}");
        }
        assert_eq!(value(&quiet, "maintd_jobs_submitted_total", &[]), 0.0);

        let node = h.busiest_node();
        h.report(
            &node,
            json!({"status": "evacuate", "details": {"disk": "sdb"}}),
        );
        let incident = h.wait_incident_on(&node, 30.0).await;
        let uuid = incident["uuid"].as_str().unwrap().to_owned();
        harness::advance(1.0).await;
        let open = h.metrics().await;
        let status = h.incidents().await[0]["repair-status"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(status == "noted" || status == "pending", "{status}");
        assert_eq!(
            incidents(&open, &[("status", &status), ("action", "evacuate")]),
            1.0
        );
        assert_eq!(incidents(&open, &[]), 1.0);
        let age = value(&open, "maintd_oldest_open_incident_age_seconds", &[]);
        let expected = h.clock.now() - incident["ctime"].as_f64().unwrap();
        assert!((age - expected).abs() < 0.01, "{age} vs {expected}");

        h.wait_status(&uuid, "completed", 900.0).await;
        let done = h.metrics().await;
        assert_eq!(
            incidents(&done, &[("status", "completed"), ("action", "evacuate")]),
            1.0
        );
        assert_eq!(incidents(&done, &[]), 1.0);
        assert_eq!(
            value(&done, "maintd_oldest_open_incident_age_seconds", &[]),
            0.0
        );
        let submitted = maintd_jobs(&h).len();
        assert!(submitted >= 2, "drain, migrations, tag: {submitted}");
        assert_eq!(
            value(&done, "maintd_jobs_submitted_total", &[]),
            submitted as f64
        );
        assert_eq!(value(&done, "maintd_jobs_failed_total", &[]), 0.0);
        assert_eq!(value(&done, "maintd_jobs_timed_out_total", &[]), 0.0);
        assert!(value(&done, "maintd_round_duration_seconds_count", &[]) >= 1.0);
        assert!(value(&done, "maintd_round_duration_seconds_sum", &[]) > 0.0);
        assert!(value(&done, "maintd_plan_duration_seconds_count", &[]) >= 1.0);
        assert_eq!(value(&done, "maintd_state_save_failures_total", &[]), 0.0);
        assert_eq!(value(&done, "maintd_state_save_failing", &[]), 0.0);
    });
}

#[test]
fn failed_polls_jobs_and_saves_are_counted_and_the_brakes_shown() {
    run_paused(|| async {
        let h = Harness::start_with(4, 8, 0.5, loose).await;
        let poll_interval = h.settings.monitoring.poll_interval.as_secs_f64();
        let now = h.clock.now();
        h.sim
            .lock()
            .set_monitoring("node3", MonitoringBehaviour::Unreachable, now)
            .unwrap();
        harness::advance(poll_interval * 4.0).await;
        let unreachable = h.metrics().await;
        assert!(
            value(
                &unreachable,
                "maintd_poll_failures_total",
                &[("node", "node3")]
            ) >= 1.0
        );
        let age = value(
            &unreachable,
            "maintd_node_last_good_report_age_seconds",
            &[("node", "node3")],
        );
        assert!(age > poll_interval, "{age}");

        // The drain of the next evacuation fails.
        h.sim.lock().inject_fault("OP_NODE_SET_PARAMS", 1);
        h.report("node2", json!({"status": "evacuate", "details": {}}));
        let uuid = h.wait_incident_on("node2", 30.0).await["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        h.wait_status(&uuid, "failed", 300.0).await;
        let failed = h.metrics().await;
        assert_eq!(value(&failed, "maintd_jobs_failed_total", &[]), 1.0);
        assert_eq!(
            incidents(&failed, &[("status", "failed"), ("action", "evacuate")]),
            1.0
        );

        let faults = h.daemon.as_ref().unwrap().save_faults.clone();
        faults.store(true, std::sync::atomic::Ordering::Relaxed);
        h.report("node4", json!({"status": "live-repair", "command": "fix"}));
        let failing = h
            .wait_for(30.0, "a failed save", async |h: &Harness| {
                let samples = h.metrics().await;
                (value(&samples, "maintd_state_save_failing", &[]) == 1.0).then_some(samples)
            })
            .await;
        assert!(value(&failing, "maintd_state_save_failures_total", &[]) >= 1.0);
        faults.store(false, std::sync::atomic::Ordering::Relaxed);
        harness::advance(2.0).await;
        let saved = h.metrics().await;
        assert_eq!(value(&saved, "maintd_state_save_failing", &[]), 0.0);

        let (status, body) = h.api("POST", "/1/pause").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(value(&h.metrics().await, "maintd_paused", &[]), 1.0);
    });
}

#[test]
fn a_job_waiting_past_the_timeout_is_counted() {
    run_paused(|| async {
        let h = Harness::start_with(4, 8, 0.2, |s| {
            loose(s);
            s.rounds.job_timeout = Duration::from_secs(30);
        })
        .await;
        // An operator's job holds node3, so that maintd's job on it waits.
        h.sim.lock().inject_hang("OP_TAGS_SET", 1);
        h.add_tag(
            maintd::model::opcode::TagKind::Node,
            Some("node3"),
            "rack:a4",
        );
        h.report("node3", json!({"status": "live-repair", "command": "fix"}));
        h.wait_for(200.0, "maintd's job canceled", async |h: &Harness| {
            maintd_jobs(h)
                .into_iter()
                .find(|j| j.status == JobStatus::Canceled)
        })
        .await;
        let samples = h.metrics().await;
        assert_eq!(value(&samples, "maintd_jobs_timed_out_total", &[]), 1.0);
        // Canceled by maintd for its timeout: not a failed job.
        assert_eq!(value(&samples, "maintd_jobs_failed_total", &[]), 0.0);
    });
}

#[test]
fn an_idle_daemon_says_it_is_not_master_and_keeps_its_counters() {
    run_paused(|| async {
        let h = Harness::start(3, 3, 0.5).await;
        harness::advance(h.settings.monitoring.poll_interval.as_secs_f64() * 2.0).await;
        h.daemon.as_ref().unwrap().election.do_send(Shutdown);
        harness::advance(0.5).await;
        let (status, content_type, body) = h.scrape(None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let samples = maintd::metrics::parse_exposition(&body).unwrap();
        assert_eq!(value(&samples, "maintd_is_master", &[]), 0.0);
        assert!(value(&samples, "maintd_polls_total", &[("node", "node1")]) >= 1.0);
        assert!(
            !samples.iter().any(|s| s.name == "maintd_incidents"),
            "{body}"
        );
        assert_eq!(sample_value(&samples, "maintd_paused", &[]), None);
    });
}

#[test]
fn prometheus_gets_openmetrics() {
    run_paused(|| async {
        let h = Harness::start(3, 3, 0.5).await;
        // Each node is polled once within a poll interval (sim.toml: 1 s), at its place.
        harness::advance(1.0).await;
        let (status, content_type, body) = h
            .scrape(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(body.contains("# TYPE maintd_polls counter"), "{body}");
    });
}

#[actix_rt::test]
async fn with_required_authentication_a_scrape_needs_a_user() {
    use actix_web::test as web_test;
    use maintd_actors::daemon::{
        access::{ApiAccess, UsersFile, UsersSource},
        api,
    };

    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "prometheus scrape-secret read\n").unwrap();
    let access = ApiAccess::new(
        UsersSource::File(UsersFile::open(&users).unwrap()),
        true,
        None,
    );
    let app = web_test::init_service(api::app(
        api::RegistryLink::default(),
        maintd::clock::Clock::new(),
        std::sync::Arc::new(access),
        std::sync::Arc::new(maintd::metrics::Metrics::new()),
    ))
    .await;
    let scrape = |authorization: Option<String>| {
        let mut request = web_test::TestRequest::get()
            .uri("/metrics")
            .peer_addr("127.0.0.9:40000".parse().unwrap());
        if let Some(value) = authorization {
            request = request.insert_header(("Authorization", value));
        }
        request.to_request()
    };
    let refused = web_test::call_service(&app, scrape(None)).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let credentials = maintd::auth::Credentials {
        user: "prometheus".into(),
        password: "scrape-secret".into(),
    };
    let served = web_test::call_service(&app, scrape(Some(credentials.basic_header()))).await;
    assert_eq!(served.status(), StatusCode::OK);
    let body = actix_web::body::to_bytes(served.into_body()).await.unwrap();
    let samples = maintd::metrics::parse_exposition(&String::from_utf8_lossy(&body)).unwrap();
    // Not master: the registry is not there.
    assert_eq!(value(&samples, "maintd_is_master", &[]), 0.0);
}
