//! Writes the seed corpora of the fuzz targets into `fuzz/corpus/<target>/`, from
//! maintd's own code (reports, signatures, a state file) and the repository's Ganeti
//! test data (htools text files, captured Luxi answers).
//!
//! `cargo run --example make_seeds` (from `fuzz/`).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use maintd::{
    agent::diagnose::ok_with_details,
    model::{
        diagnose::{parse_diagnose, report_envelope},
        incident::{JobPurpose, MaintenanceState, PlannedJob},
        job::{JobId, JobStatus},
        opcode::OpBody,
    },
    signing::{sign, HmacKey},
    store::JsonStore,
};
use serde_json::{json, Value};

/// Must match the targets: the report clock, the request salt and the key.
const NOW_NS: i64 = 1_700_000_000_000_000_000;
const SALT: &str = "6f1c2a9e-5b7d-4c3e-9a0f-2d8e7b6c5a41";
const KEY: &[u8] = b"fuzz-cluster-hmac-key\n";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn put(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = root().join("corpus").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn diagnose_objects() -> Vec<(&'static str, Value)> {
    vec![
        ("ok", ok_with_details("all collectors quiet")),
        (
            "live-repair",
            json!({"status": "live-repair", "command": "fix-raid", "details": "md0 degraded", "disk": {"id": 3, "errors": 1.5e3}}),
        ),
        (
            "evacuate",
            json!({"status": "evacuate", "details": "ECC errors", "dimm": ["A1", "B2"]}),
        ),
        (
            "evacuate-failover",
            json!({"status": "evacuate-failover", "command": null}),
        ),
    ]
}

fn main() {
    let key = HmacKey::from_bytes(KEY).unwrap();

    // diagnose_report: the monitoring daemon's envelopes (also read as signed payloads).
    for (name, data) in diagnose_objects() {
        parse_diagnose(data.clone()).unwrap();
        let report = serde_json::to_string(&report_envelope(&data, NOW_NS)).unwrap();
        put("diagnose_report", &format!("report-{name}.json"), &report);
        if name == "live-repair" {
            let signed = serde_json::to_string(&sign(&key, SALT, &report)).unwrap();
            put("diagnose_report", "signed-live-repair.json", signed);
        }
    }

    // signed_message: confd-style messages with a time salt and a request salt.
    let report = serde_json::to_string(&report_envelope(&diagnose_objects()[2].1, NOW_NS)).unwrap();
    put(
        "signed_message",
        "time-salt.json",
        serde_json::to_string(&sign(&key, "1700000000", "{\"method\": \"repair\"}")).unwrap(),
    );
    put(
        "signed_message",
        "request-salt.json",
        serde_json::to_string(&sign(&key, SALT, &report)).unwrap(),
    );
    put(
        "signed_message",
        "hmac.txt",
        sign(&key, "1700000000", "{}").hmac,
    );
    let mut clock = 1_700_000_000u64.to_le_bytes().to_vec();
    clock.extend(300u64.to_le_bytes());
    clock.extend(b"1700000123");
    put("signed_message", "clock-skew-salt.bin", clock);

    // htools_text: the repository's htools test clusters.
    for name in ["example.txt", "g2.txt", "c12.txt"] {
        let text = fs::read(root().join("../src/htools/testdata").join(name)).unwrap();
        put("htools_text", name, text);
    }

    // luxi_answer: captured luxid answers, framed; the first byte is the reader's limit/16.
    let fixtures = root().join("../tests/fixtures/ganeti-3.0");
    let mut all = vec![0xff];
    for name in [
        "luxi-queryjobs-final",
        "luxi-error-bad-method",
        "luxi-error-bad-opcode",
    ] {
        let text = fs::read_to_string(fixtures.join(format!("{name}.json"))).unwrap();
        let exchange: Value = serde_json::from_str(&text).unwrap();
        let answer = serde_json::to_vec(&exchange["response"]).unwrap();
        let mut seed = vec![0xff];
        seed.extend(&answer);
        seed.push(3);
        put("luxi_answer", &format!("{name}.bin"), seed);
        all.extend(&answer);
        all.push(3);
    }
    for answer in [
        json!({"success": true, "result": [true, "Job 12 canceled"]}),
        json!({"success": true, "result": [false, "Job 12 is running"]}),
        json!({"success": false, "result": "Generic error"}),
        json!({"success": false, "result": ["OpPrereqError", ["Node is the master", "wrong_input"]]}),
    ] {
        all.extend(serde_json::to_vec(&answer).unwrap());
        all.push(3);
    }
    put("luxi_answer", "stream.bin", all);

    // state_file: a state the daemon saved with JsonStore, with incidents, a round and
    // a pause.
    let mut state = MaintenanceState::new();
    state.state_id = "0123456789ab".into();
    let mut uuids = Vec::new();
    for (i, (_, data)) in diagnose_objects().into_iter().enumerate().skip(1) {
        let node = format!("node{i}.ganeti.test");
        let diagnose = parse_diagnose(data).unwrap();
        state.observe(&node, &diagnose, 100.0 + i as f64);
        state.observe(&node, &diagnose, 160.0 + i as f64);
        uuids.push(state.incidents.last().unwrap().uuid);
    }
    let jobs = vec![
        PlannedJob {
            key: "0123456789ab-1-drain".into(),
            incident: Some(uuids[1]),
            purpose: JobPurpose::Drain,
            nodes: BTreeSet::from(["node2.ganeti.test".to_owned()]),
            ops: vec![OpBody::drain_node("node2.ganeti.test")
                .with_reason("maintd:0123456789ab-1-drain".into(), NOW_NS)],
        },
        PlannedJob {
            key: "0123456789ab-1-move".into(),
            incident: Some(uuids[2]),
            purpose: JobPurpose::MovePrimary {
                instance: "inst1.ganeti.test".into(),
            },
            nodes: BTreeSet::from([
                "node3.ganeti.test".to_owned(),
                "node1.ganeti.test".to_owned(),
            ]),
            ops: vec![OpBody::migrate("inst1.ganeti.test", None)
                .with_reason("maintd:0123456789ab-1-move".into(), NOW_NS)],
        },
    ];
    state.start_round(&jobs, 200.0);
    state.record_submission("0123456789ab-1-drain", Ok(JobId(41)), 201.0);
    state.record_submission("0123456789ab-1-move", Ok(JobId(42)), 201.0);
    state.record_job_status(JobId(41), Some(JobStatus::Success), 230.0);
    state.pause(Some("rack work".into()), "api client 10.0.0.1", 240.0);
    let dir = tempfile_dir();
    let store = JsonStore::open(&dir, "state.json").unwrap();
    store.save(&state).unwrap();
    put("state_file", "state.json", fs::read(store.path()).unwrap());
    store.save(&MaintenanceState::new()).unwrap();
    put(
        "state_file",
        "fresh-state.json",
        fs::read(store.path()).unwrap(),
    );
    fs::remove_dir_all(dir).unwrap();
}

fn tempfile_dir() -> PathBuf {
    std::env::temp_dir().join(format!("maintd-fuzz-seeds-{}", std::process::id()))
}
