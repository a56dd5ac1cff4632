//! Process resource limits: the open-file limit.
//!
//! The usual soft limit of 1024 descriptors is meant for programs that use `select(2)`;
//! maintd never does, and it holds one connection per polled node, the API's clients,
//! the Luxi connection and the state files at once, so it raises the soft limit to the
//! hard one at start (`LimitNOFILE=` in the systemd unit sets the hard one).

use rustix::io::Errno;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The open-file limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit before the change.
    pub before: Option<u64>,
    /// The soft limit in force now.
    pub soft: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
}

/// The kernel refused to raise the soft open-file limit; the limits are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot raise the open-file limit from {} to {}: {source}", show(*.soft), show(*.hard))]
pub struct RaiseNofileError {
    /// The soft limit, still in force.
    pub soft: Option<u64>,
    /// The hard limit it was to be raised to.
    pub hard: Option<u64>,
    /// Why `setrlimit(2)` failed.
    pub source: Errno,
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit. On failure the limits are unchanged
/// and the error says what they are.
pub fn raise_nofile_limit() -> Result<NofileLimit, RaiseNofileError> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current == maximum {
        return Ok(NofileLimit {
            before: current,
            soft: current,
            hard: maximum,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: maximum,
            maximum,
        },
    )
    .map_err(|source| RaiseNofileError {
        soft: current,
        hard: maximum,
        source,
    })?;
    Ok(NofileLimit {
        before: current,
        soft: getrlimit(Resource::Nofile).current,
        hard: maximum,
    })
}

/// A limit for the log: a number or "unlimited".
pub fn show(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limit = raise_nofile_limit().expect("raising the soft limit to the hard one");
        assert_eq!(limit.soft, limit.hard);
        assert_eq!(getrlimit(Resource::Nofile).current, limit.hard);
        // A second call changes nothing.
        let again = raise_nofile_limit().expect("idempotent");
        assert_eq!(again.before, again.soft);
    }

    #[test]
    fn a_refusal_names_both_limits_and_the_reason() {
        let err = RaiseNofileError {
            soft: Some(1024),
            hard: None,
            source: Errno::PERM,
        };
        let text = err.to_string();
        assert!(
            text.starts_with("cannot raise the open-file limit from 1024 to unlimited: "),
            "{text}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
