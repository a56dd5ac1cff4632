//! Wall-clock time that follows tokio's clock, so that paused (virtual) time in tests also
//! moves timestamps, job durations and round delays.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Unix time in seconds, anchored once and then advanced by tokio's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor: Instant,
    anchor_unix: f64,
}

impl Clock {
    /// Anchor at the current instant. Call inside the runtime whose time should be followed.
    pub fn new() -> Self {
        let anchor_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Clock {
            anchor: Instant::now(),
            anchor_unix,
        }
    }

    /// Anchor at a fixed Unix time (deterministic tests).
    pub fn starting_at(unix_seconds: f64) -> Self {
        Clock {
            anchor: Instant::now(),
            anchor_unix: unix_seconds,
        }
    }

    /// Current Unix time in seconds.
    pub fn now(&self) -> f64 {
        self.anchor_unix + self.anchor.elapsed().as_secs_f64()
    }

    /// Current Unix time in nanoseconds, as Ganeti's reason trail wants it.
    pub fn now_ns(&self) -> i64 {
        (self.now() * 1e9) as i64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
