//! Durations in the settings. A value is either a number of seconds (`30`, `0.5`), as
//! every maintd configuration has always written them, or a string with a unit (`"500ms"`,
//! `"30s"`, `"5m"`, `"1h 30m"`), read by `humantime`. An environment variable's value is a
//! string: `MAINTD__ROUNDS__ROUND_DELAY=5` reaches here as a number (the environment
//! source tries numbers first) and `=5m` as a string; a numeric string is seconds too.

use std::time::Duration;

use serde::{de, Deserializer};

/// Longest duration accepted: longer than any sensible setting, and short enough that
/// adding it to the current time never overflows.
pub const MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What a duration value must look like, for error messages.
const EXPECTED: &str =
    "a number of seconds (e.g. 30 or 0.5) or a duration with a unit (e.g. \"500ms\", \"30s\", \"5m\")";

/// A number of seconds, fractional allowed; negative, NaN and out-of-range values are
/// refused with a message saying why.
pub fn from_seconds(seconds: f64) -> Result<Duration, String> {
    if seconds.is_nan() {
        return Err(format!("NaN is not a duration: expected {EXPECTED}"));
    }
    if seconds < 0.0 {
        return Err(format!(
            "{seconds} is negative: a duration is zero or more seconds"
        ));
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration <= MAX => Ok(duration),
        _ => Err(too_long(seconds)),
    }
}

fn too_long(value: impl std::fmt::Display) -> String {
    format!(
        "{value} is too long: at most {} seconds ({})",
        MAX.as_secs(),
        humantime::format_duration(MAX)
    )
}

/// A duration as written in a file, an environment variable or on the command line: a
/// number of seconds, or a number with a unit.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return from_seconds(seconds);
    }
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}): expected {EXPECTED}"))?;
    if duration > MAX {
        return Err(too_long(format!("{text:?}")));
    }
    Ok(duration)
}

/// Serde `deserialize_with` for a duration setting; the configuration names the key in
/// the error.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Duration, E> {
        let duration = Duration::from_secs(seconds);
        if duration > MAX {
            return Err(E::custom(too_long(seconds)));
        }
        Ok(duration)
    }

    fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Duration, E> {
        match u64::try_from(seconds) {
            Ok(seconds) => self.visit_u64(seconds),
            Err(_) => Err(E::custom(format!(
                "{seconds} is negative: a duration is zero or more seconds"
            ))),
        }
    }

    fn visit_f64<E: de::Error>(self, seconds: f64) -> Result<Duration, E> {
        from_seconds(seconds).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "deserialize")]
        d: Duration,
    }

    fn from_json(value: serde_json::Value) -> Result<Duration, String> {
        serde_json::from_value::<Holder>(serde_json::json!({ "d": value }))
            .map(|h| h.d)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_are_seconds() {
        assert_eq!(
            from_json(serde_json::json!(30)),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(from_json(serde_json::json!(0)), Ok(Duration::ZERO));
        assert_eq!(
            from_json(serde_json::json!(0.5)),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(parse("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse(" 7 "), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn strings_may_carry_a_unit() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h 30m", Duration::from_secs(5400)),
            ("5", Duration::from_secs(5)),
            ("0.25", Duration::from_millis(250)),
        ] {
            assert_eq!(from_json(serde_json::json!(text)), Ok(expected), "{text}");
        }
    }

    #[test]
    fn negative_nan_and_huge_values_are_refused() {
        for bad in [
            serde_json::json!(-1),
            serde_json::json!(-0.5),
            serde_json::json!("-3"),
        ] {
            let why = from_json(bad.clone()).unwrap_err();
            assert!(why.contains("negative"), "{bad}: {why}");
        }
        assert!(parse("NaN").unwrap_err().contains("NaN"));
        assert!(parse("inf").unwrap_err().contains("too long"));
        assert!(from_json(serde_json::json!(1e300))
            .unwrap_err()
            .contains("too long"));
        assert!(from_json(serde_json::json!(u64::MAX))
            .unwrap_err()
            .contains("too long"));
        assert!(parse("20 years").unwrap_err().contains("too long"));
        assert_eq!(parse("3650 days"), Ok(MAX));
        assert!(parse("3651 days").unwrap_err().contains("too long"));
        for bad in ["", "soon", "5 parsecs", "30 s s"] {
            let why = parse(bad).unwrap_err();
            assert!(why.contains("not a duration"), "{bad}: {why}");
        }
        let why = from_json(serde_json::json!(true)).unwrap_err();
        assert!(why.contains("a number of seconds"), "{why}");
    }
}
