//! The node's diagnose report, as maintd reads it off the network: the monitoring
//! daemon's envelope (`parse_report`, `report_data`, `parse_diagnose`) and the signed
//! answer of a maintd agent (`open_signed_report`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use maintd::{
    model::diagnose::{
        open_signed_report, parse_diagnose, parse_report, report_data, report_envelope,
        RepairAction, DEFAULT_MAX_REPORT_BYTES,
    },
    signing::{sign, HmacKey},
};

/// The salt maintd sent with its request, and the clock it checks the report's age with
/// (the seeds carry timestamps around this time).
const SALT: &str = "6f1c2a9e-5b7d-4c3e-9a0f-2d8e7b6c5a41";
const NOW_NS: i64 = 1_700_000_000_000_000_000;
const MAX_AGE_NS: i64 = 300 * 1_000_000_000;

fn key() -> HmacKey {
    HmacKey::from_bytes(&b"fuzz-cluster-hmac-key\n"[..]).unwrap()
}

fuzz_target!(|data: &[u8]| {
    // The monitoring daemon's report, unsigned.
    let parsed = parse_report(data, DEFAULT_MAX_REPORT_BYTES);
    let stepwise = report_data(data, DEFAULT_MAX_REPORT_BYTES, "diagnose").and_then(parse_diagnose);
    assert_eq!(parsed, stepwise);
    if let Ok(diagnose) = &parsed {
        assert_eq!(
            RepairAction::parse(diagnose.action.as_str()),
            Some(diagnose.action)
        );
        assert_ne!(diagnose.command.as_deref(), Some(""));
        // The object identifies the incident: wrapped again, it must read back the same.
        let body = serde_json::to_vec(&report_envelope(&diagnose.original, NOW_NS)).unwrap();
        assert_eq!(parse_report(&body, usize::MAX).as_ref(), Ok(diagnose));
    }

    let key = key();
    // The bytes as an agent's signed answer (the fuzzer cannot forge the HMAC, so this
    // exercises the refusals).
    let _ = open_signed_report(
        data,
        DEFAULT_MAX_REPORT_BYTES,
        &key,
        SALT,
        NOW_NS,
        MAX_AGE_NS,
    );

    // The bytes as the payload of an answer signed with the cluster's key for this
    // request: past the signature into the freshness checks and the report parser.
    if let Ok(msg) = std::str::from_utf8(data) {
        let body = serde_json::to_vec(&sign(&key, SALT, msg)).unwrap();
        if let Ok(report) = open_signed_report(&body, usize::MAX, &key, SALT, NOW_NS, MAX_AGE_NS) {
            assert_eq!(report, data);
            let _ = parse_report(&report, DEFAULT_MAX_REPORT_BYTES);
        }
        // A recorded answer played back for another request is always refused.
        assert!(
            open_signed_report(&body, usize::MAX, &key, "another-salt", NOW_NS, MAX_AGE_NS)
                .is_err()
        );
    }
});
