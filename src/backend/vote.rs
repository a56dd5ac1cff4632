//! Ganeti's popular vote for the master role, as its master-only daemons hold it at start:
//! every node of the configuration is asked who the master is; this node is the master
//! when a strict majority of all nodes names it. Missing answers may still turn the vote,
//! so the caller asks again a few times before giving up.

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
}
