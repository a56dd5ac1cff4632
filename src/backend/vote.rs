//! Ganeti's popular vote for the master role, as its master-only daemons hold it at start:
//! every node of the configuration is asked who the master is; this node is the master
//! when a strict majority of all nodes names it. Missing answers may still turn the vote,
//! so the caller asks again a few times before giving up.

use std::{future::Future, path::Path, time::Duration};

use futures_util::future::join_all;
use serde_json::Value;
use tracing::warn;

/// A node entitled to vote: every node of the cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    /// The node's name.
    pub name: String,
    /// Its primary IP address, where its noded listens.
    pub address: String,
    /// Offline nodes are not asked (Ganeti's RPC never contacts them): they count as
    /// missing answers.
    pub offline: bool,
}

/// The cluster configuration file in Ganeti's data directory; only master candidates
/// have it.
pub const CONFIG_FILE: &str = "config.data";

/// Every node of the cluster configuration `config.data` (Ganeti asks them all).
pub fn voters_from_config(path: &Path) -> Result<Vec<Voter>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config: Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let Some(nodes) = config.get("nodes").and_then(Value::as_object) else {
        return Err(format!("{} has no \"nodes\" object", path.display()));
    };
    let mut voters = Vec::with_capacity(nodes.len());
    for (key, node) in nodes {
        let text = |field: &str| node.get(field).and_then(Value::as_str).map(str::to_owned);
        let (Some(name), Some(address)) = (text("name"), text("primary_ip")) else {
            return Err(format!(
                "{}: node {key} lacks a name or primary_ip",
                path.display()
            ));
        };
        let offline = node
            .get("offline")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        voters.push(Voter {
            name,
            address,
            offline,
        });
    }
    voters.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(voters)
}

/// One round of the vote: ask every online voter at once with `ask` (address → the master
/// it names), and count. Failed answers are logged and count as missing.
pub async fn hold_vote<F, Fut>(me: &str, voters: &[Voter], ask: &F) -> VoteOutcome
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let questions = voters.iter().map(|voter| {
        let answer = (!voter.offline).then(|| ask(voter.address.clone()));
        async move {
            let named = match answer {
                Some(answer) => match answer.await {
                    Ok(master) => Some(master),
                    Err(e) => {
                        warn!(target: "maintd::election", node = %voter.name, error = %e, "no vote from node");
                        None
                    }
                },
                None => None,
            };
            (voter.name.clone(), named)
        }
    });
    let answers = join_all(questions).await;
    tally(me, &answers)
}

/// Ganeti's `verifyMaster`: vote rounds until the vote is won (`Ok`), lost, or still
/// undecided after [`VOTING_RETRIES`] more rounds `retry_delay` apart (`Err` with why).
pub async fn verify_master<F, Fut>(
    me: &str,
    voters: &[Voter],
    ask: F,
    retry_delay: Duration,
) -> Result<(), String>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let mut attempt = 0;
    loop {
        match hold_vote(me, voters, &ask).await {
            VoteOutcome::Won => return Ok(()),
            VoteOutcome::Lost { named } => {
                return Err(format!(
                    "the vote cannot be won by {me}: of {} nodes, the answers named {named:?}",
                    voters.len()
                ))
            }
            VoteOutcome::Undecided { missing } if attempt < VOTING_RETRIES => {
                warn!(target: "maintd::election", ?missing, retry_in = ?retry_delay, "vote not decided for want of answers; asking again");
                attempt += 1;
                tokio::time::sleep(retry_delay).await;
            }
            VoteOutcome::Undecided { missing } => {
                return Err(format!(
                    "could not gather the votes of enough nodes; no answer from {missing:?}"
                ))
            }
        }
    }
}

/// Rounds of asking again while the outcome depends on missing answers (Ganeti's
/// `masterVotingRetries`).
pub const VOTING_RETRIES: u32 = 6;

/// Seconds between those rounds (Ganeti's `masterVotingRetryIntervall`).
pub const VOTING_RETRY_SECONDS: u64 = 10;

/// The outcome of one round of votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// A strict majority of all nodes names this node.
    Won,
    /// Not yet a majority, but the missing answers could still make one: ask again.
    Undecided {
        /// Nodes that did not answer.
        missing: Vec<String>,
    },
    /// The vote cannot be won.
    Lost {
        /// Who the answering nodes named, with their counts.
        named: Vec<(String, usize)>,
    },
}

/// Count the answers of every node (`None`: no valid answer) for `me` among `voters`
/// nodes in all.
pub fn tally(me: &str, answers: &[(String, Option<String>)]) -> VoteOutcome {
    let voters = answers.len();
    let in_favor = answers
        .iter()
        .filter(|(_, named)| named.as_deref() == Some(me))
        .count();
    let missing: Vec<String> = answers
        .iter()
        .filter(|(_, named)| named.is_none())
        .map(|(node, _)| node.clone())
        .collect();
    if 2 * in_favor > voters {
        return VoteOutcome::Won;
    }
    if 2 * (in_favor + missing.len()) > voters {
        return VoteOutcome::Undecided { missing };
    }
    let mut named: Vec<(String, usize)> = Vec::new();
    for name in answers.iter().filter_map(|(_, n)| n.as_deref()) {
        match named.iter_mut().find(|(n, _)| n == name) {
            Some((_, count)) => *count += 1,
            None => named.push((name.to_owned(), 1)),
        }
    }
    VoteOutcome::Lost { named }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        list.iter()
            .map(|(n, a)| ((*n).to_owned(), a.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn a_strict_majority_of_all_nodes_wins() {
        let all = answers(&[("n1", Some("n1")), ("n2", Some("n1")), ("n3", Some("n2"))]);
        assert_eq!(tally("n1", &all), VoteOutcome::Won);
        // Half is not a majority; the silent node could still decide.
        let half = answers(&[("n1", Some("n1")), ("n2", None)]);
        assert_eq!(
            tally("n1", &half),
            VoteOutcome::Undecided {
                missing: vec!["n2".into()]
            }
        );
        // Two of four name another node: this node can no longer win.
        let lost = answers(&[
            ("n1", Some("n1")),
            ("n2", Some("n2")),
            ("n3", Some("n2")),
            ("n4", None),
        ]);
        assert_eq!(
            tally("n1", &lost),
            VoteOutcome::Lost {
                named: vec![("n1".into(), 1), ("n2".into(), 2)]
            }
        );
    }

    #[test]
    fn nobody_answering_is_undecided_and_no_nodes_is_lost() {
        let silent = answers(&[("n1", None), ("n2", None), ("n3", None)]);
        assert!(matches!(
            tally("n1", &silent),
            VoteOutcome::Undecided { .. }
        ));
        assert_eq!(tally("n1", &[]), VoteOutcome::Lost { named: vec![] });
    }

    fn voter(name: &str, offline: bool) -> Voter {
        Voter {
            name: name.into(),
            address: format!("ip-of-{name}"),
            offline,
        }
    }

    #[actix_rt::test]
    async fn a_vote_asks_online_nodes_only_and_counts_failures_as_missing() {
        let voters = [voter("n1", false), voter("n2", false), voter("n3", true)];
        let asked = std::cell::RefCell::new(Vec::new());
        let outcome = hold_vote("n1", &voters, &|address: String| {
            asked.borrow_mut().push(address.clone());
            async move {
                match address.as_str() {
                    "ip-of-n1" => Ok("n1".to_owned()),
                    _ => Err("connection refused".to_owned()),
                }
            }
        })
        .await;
        assert_eq!(*asked.borrow(), ["ip-of-n1", "ip-of-n2"]);
        assert_eq!(
            outcome,
            VoteOutcome::Undecided {
                missing: vec!["n2".into(), "n3".into()]
            }
        );
        let outcome = hold_vote("n1", &voters, &|_| async { Ok("n1".to_owned()) }).await;
        assert_eq!(outcome, VoteOutcome::Won);
    }

    #[test]
    fn voters_come_from_every_node_of_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(
            &path,
            r#"{"nodes": {
                "u2": {"name": "node2.example.com", "primary_ip": "192.0.2.12", "offline": true},
                "u1": {"name": "node1.example.com", "primary_ip": "192.0.2.11", "offline": false}
            }}"#,
        )
        .unwrap();
        assert_eq!(
            voters_from_config(&path).unwrap(),
            vec![
                Voter {
                    name: "node1.example.com".into(),
                    address: "192.0.2.11".into(),
                    offline: false
                },
                Voter {
                    name: "node2.example.com".into(),
                    address: "192.0.2.12".into(),
                    offline: true
                },
            ]
        );
        std::fs::write(&path, r#"{"nodes": {"u1": {"name": "n1"}}}"#).unwrap();
        assert!(voters_from_config(&path)
            .unwrap_err()
            .contains("lacks a name or primary_ip"));
        std::fs::write(&path, "{").unwrap();
        assert!(voters_from_config(&path).unwrap_err().contains("not JSON"));
        assert!(voters_from_config(&dir.path().join("missing"))
            .unwrap_err()
            .contains("cannot read"));
    }

    #[tokio::test(start_paused = true)]
    async fn undecided_votes_are_held_again_ten_seconds_apart_then_given_up() {
        let voters = [voter("n1", false), voter("n2", false), voter("n3", false)];
        let delay = Duration::from_secs(VOTING_RETRY_SECONDS);
        // n2 and n3 answer from the third round on.
        let rounds = std::cell::Cell::new(0);
        let started = tokio::time::Instant::now();
        let late = verify_master(
            "n1",
            &voters,
            |address| {
                if address == "ip-of-n1" {
                    rounds.set(rounds.get() + 1);
                }
                let answering = address == "ip-of-n1" || rounds.get() >= 3;
                async move {
                    if answering {
                        Ok("n1".to_owned())
                    } else {
                        Err("connection refused".to_owned())
                    }
                }
            },
            delay,
        )
        .await;
        assert_eq!(late, Ok(()));
        assert_eq!(rounds.get(), 3);
        assert_eq!(started.elapsed(), 2 * delay);

        // Nobody else ever answers: the first round and 6 retries, then the end.
        let started = tokio::time::Instant::now();
        let silent = verify_master(
            "n1",
            &voters,
            |address| async move {
                match address.as_str() {
                    "ip-of-n1" => Ok("n1".to_owned()),
                    _ => Err("connection refused".to_owned()),
                }
            },
            delay,
        )
        .await;
        assert!(silent.unwrap_err().contains("no answer from"));
        assert_eq!(started.elapsed(), VOTING_RETRIES * delay);

        // A majority for another node ends it at once.
        let lost = verify_master("n1", &voters, |_| async { Ok("n2".to_owned()) }, delay).await;
        assert!(lost.unwrap_err().contains("cannot be won by n1"));
    }
}
