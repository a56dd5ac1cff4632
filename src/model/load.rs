//! Node CPU load from the monitoring daemon's `cpu-avg-load` collector, for load-aware
//! balancing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::diagnose::{report_data, ReportError};

/// The collector's name.
pub const CPU_AVG_LOAD: &str = "cpu-avg-load";

/// A node's average CPU load over the collector's window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuLoad {
    /// Load summed over the CPUs (0 to `cpu_number`).
    pub cpu_total: f64,
    /// Number of CPUs.
    pub cpu_number: u32,
}

/// Parse a `cpu-avg-load` report (`{"name": "cpu-avg-load", ..., "data": {"cpu_number",
/// "cpus", "cpu_total"}}`). A collector without enough samples yet answers
/// `{"error": ...}`, which is refused like any other invalid report.
pub fn parse_cpu_load(body: &[u8], max_bytes: usize) -> Result<CpuLoad, ReportError> {
    let data = report_data(body, max_bytes, CPU_AVG_LOAD)?;
    let bad = |why: String| ReportError::BadEnvelope(format!("cpu-avg-load data: {why}"));
    if let Some(error) = data.get("error") {
        return Err(bad(format!("collector error {error}")));
    }
    let cpu_total = data
        .get("cpu_total")
        .and_then(Value::as_f64)
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| bad(format!("no valid cpu_total in {data}")))?;
    let cpu_number = data
        .get("cpu_number")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| bad(format!("no valid cpu_number in {data}")))?;
    Ok(CpuLoad {
        cpu_total,
        cpu_number,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_real_collector_and_refuses_the_rest() {
        // As node2's mond answered in the lab.
        let real = br#"{"name":"cpu-avg-load","version":"B","format_version":1,"timestamp":1795618366667939000,"category":null,"kind":0,"data":{"cpu_number":2,"cpus":[0.963640629360196,0.9355437511831695],"cpu_total":1.899301940703102}}"#;
        let load = parse_cpu_load(real, 4096).expect("valid");
        assert_eq!(load.cpu_number, 2);
        assert!((load.cpu_total - 1.899301940703102).abs() < 1e-12);
        for bad in [
            &br#"{"name":"cpu-avg-load","data":{"error":"not enough data"}}"#[..],
            br#"{"name":"diagnose","data":{"cpu_total":1,"cpu_number":1}}"#,
            br#"{"name":"cpu-avg-load","data":{"cpu_total":-1,"cpu_number":1}}"#,
            br#"{"name":"cpu-avg-load","data":{"cpu_total":"x","cpu_number":1}}"#,
            br#"{"name":"cpu-avg-load"}"#,
            b"not json",
        ] {
            assert!(
                parse_cpu_load(bad, 4096).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_cpu_load(real, 10),
            Err(ReportError::TooLarge { .. })
        ));
    }
}
