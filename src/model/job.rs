//! Ganeti job identifiers and statuses.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Ganeti job id. luxid sends integers; decimal strings are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(JobId(n)),
            Raw::Text(s) => s
                .trim()
                .parse()
                .map(JobId)
                .map_err(|_| serde::de::Error::custom(format!("invalid job id {s:?}"))),
        }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Status of a Ganeti job or opcode, in the order Ganeti compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted, not yet started.
    Queued,
    /// Waiting for locks or dependencies.
    Waiting,
    /// Cancel requested, not yet effective.
    Canceling,
    /// Executing.
    Running,
    /// Canceled before completion (final).
    Canceled,
    /// Every opcode succeeded (final).
    Success,
    /// An opcode failed (final).
    Error,
}

impl JobStatus {
    /// A job is finalized once its status sorts after `running`.
    pub fn is_finalized(self) -> bool {
        self > JobStatus::Running
    }

    /// The Ganeti spelling of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Waiting => "waiting",
            JobStatus::Canceling => "canceling",
            JobStatus::Running => "running",
            JobStatus::Canceled => "canceled",
            JobStatus::Success => "success",
            JobStatus::Error => "error",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalized_means_after_running() {
        assert!(!JobStatus::Canceling.is_finalized());
        assert!(!JobStatus::Running.is_finalized());
        assert!(JobStatus::Canceled.is_finalized());
        assert!(JobStatus::Error.is_finalized());
    }

    #[test]
    fn job_id_accepts_numbers_and_strings() {
        let a: JobId = serde_json::from_str("4711").unwrap();
        let b: JobId = serde_json::from_str("\"4711\"").unwrap();
        assert_eq!(a, b);
        assert!(serde_json::from_str::<JobId>("\"x1\"").is_err());
    }
}
