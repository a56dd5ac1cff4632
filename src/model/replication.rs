//! Replication of maintd's state to the master candidates, in plain Rust: which serial
//! each candidate's agent holds, whether the newest save is durable (held by the agents
//! of a strict majority of the master candidates), and since when it is not.
//!
//! A save is durable once a majority holds it because any later master reads the copies
//! of a majority before it takes over (see [`crate::backend::replica::take_over`]): two
//! majorities share a candidate, so the new master sees every durable save. The master's
//! own agent is one of the candidates like any other: the maintd that takes over after a
//! failover cannot read the old master's disk, but it can ask the agent beside it.
//! A master that is the only candidate (or has no list, as on the simulator) is alone:
//! its disk is the whole story and every save is durable at once.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::agent::replica::PushAck;

/// The serial of the next save after `previous`, at `now` (Unix seconds): the Unix time in
/// milliseconds, or `previous + 1` if that is not higher. Serials grow with every save
/// and, across masters and resets, with time: a state written later (an empty one from
/// `maintd state reset`, say) outranks older copies kept by the agents.
pub fn next_serial(previous: u64, now: f64) -> u64 {
    let millis = if now.is_finite() && now > 0.0 {
        (now * 1000.0).min(u64::MAX as f64 / 2.0) as u64
    } else {
        0
    };
    previous.saturating_add(1).max(millis)
}

/// Whether `acks` holders of a state are a strict majority of the `candidates` master
/// candidates. Convention: `candidates` counts every master candidate, the master
/// included (Ganeti's master is always one); `acks` counts the candidates holding the
/// state, the master included once its own save is done, and the agents whose
/// [`PushAck::holds`] the serial. No candidates: no majority.
pub fn majority(acks: usize, candidates: usize) -> bool {
    candidates > 0 && acks.min(candidates) * 2 > candidates
}

/// What one candidate's agent holds, as far as maintd knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CandidateCopy {
    /// The candidate.
    pub node: String,
    /// The serial its agent acknowledged last (from this maintd's pushes).
    pub serial: Option<u64>,
    /// Why the last push to it failed, if it did.
    pub error: Option<String>,
    /// When it last answered or failed (Unix seconds).
    pub updated_at: Option<f64>,
}

/// Replication as `/1/safety` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplicationView {
    /// This node (the master).
    pub master: String,
    /// The serial of the newest save.
    pub serial: u64,
    /// The newest serial held by a majority of the master candidates.
    pub durable_serial: u64,
    /// How many candidates' agents hold the newest save (1 when alone: this node's disk).
    pub holders: usize,
    /// How many it takes: a strict majority of the candidates.
    pub needed: usize,
    /// The master candidates, this node among them, with what each one's agent holds;
    /// empty when this node is alone.
    pub candidates: Vec<CandidateCopy>,
    /// Since when (Unix seconds) a save has failed to reach a majority; while set, no
    /// new round is planned and no job is submitted.
    pub majority_lost_since: Option<f64>,
    /// Why the candidate list could not be read, if it could not.
    pub candidates_error: Option<String>,
}

impl ReplicationView {
    /// The reason to hold new work, while the majority is lost.
    pub fn halt_reason(&self) -> Option<String> {
        self.majority_lost_since.map(|_| {
            format!(
                "the state is not on a majority of the master candidates: {} of {} hold serial {} ({} needed){}",
                self.holders,
                self.candidates.len().max(1),
                self.serial,
                self.needed,
                self.candidates_error
                    .as_deref()
                    .map(|e| format!("; {e}"))
                    .unwrap_or_default()
            )
        })
    }
}

/// A push's answer from a candidate that contradicts this maintd: its agent holds a newer
/// state than this maintd ever saved, so another maintd has been master since.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{node}'s agent holds serial {held}, newer than this maintd's {ours}: another maintd has saved state since")]
pub struct NewerElsewhere {
    /// The candidate.
    pub node: String,
    /// What it holds.
    pub held: u64,
    /// The newest serial saved here.
    pub ours: u64,
}

/// What maintd knows of the copies: the domain of the state replicator.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationTracker {
    me: String,
    /// A candidate list has been read.
    listed: bool,
    copies: BTreeMap<String, CandidateCopy>,
    candidates_error: Option<String>,
    saved: u64,
    durable: u64,
    lost_since: Option<f64>,
}

impl ReplicationTracker {
    /// A tracker for the master `me`. Nothing is durable until the candidates are known
    /// ([`ReplicationTracker::set_candidates`]).
    pub fn new(me: impl Into<String>) -> Self {
        ReplicationTracker {
            me: me.into(),
            listed: false,
            copies: BTreeMap::new(),
            candidates_error: None,
            saved: 0,
            durable: 0,
            lost_since: None,
        }
    }

    /// The master candidates are now `all` (this node among them, normally). None but
    /// this node: alone. What is known of those that stay is kept.
    pub fn set_candidates(&mut self, all: &[String]) {
        self.candidates_error = None;
        self.listed = true;
        let alone = all.iter().all(|node| *node == self.me);
        let wanted: BTreeMap<String, CandidateCopy> = all
            .iter()
            .filter(|_| !alone)
            .map(|node| {
                let copy = self.copies.remove(node).unwrap_or_else(|| CandidateCopy {
                    node: node.clone(),
                    ..CandidateCopy::default()
                });
                (node.clone(), copy)
            })
            .collect();
        self.copies = wanted;
        self.update_durable();
    }

    /// The candidate list could not be read: the last one known stays in use.
    pub fn candidates_unknown(&mut self, why: String) {
        self.candidates_error = Some(why);
    }

    /// The candidates whose agents get copies (none when alone).
    pub fn candidates(&self) -> impl Iterator<Item = &str> {
        self.copies.keys().map(String::as_str)
    }

    /// This node saved `serial`.
    pub fn saved(&mut self, serial: u64) {
        self.saved = self.saved.max(serial);
        self.update_durable();
    }

    /// The newest serial saved here.
    pub fn latest(&self) -> u64 {
        self.saved
    }

    /// The newest durable serial.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// Whether the save of `serial` is durable (it or a newer save is on a majority).
    pub fn is_durable(&self, serial: u64) -> bool {
        serial <= self.durable
    }

    /// Candidates whose agent is not known to hold the newest save.
    pub fn lagging(&self) -> Vec<String> {
        self.copies
            .values()
            .filter(|c| c.serial.is_none_or(|s| s < self.saved))
            .map(|c| c.node.clone())
            .collect()
    }

    /// `node`'s agent answered a push with `ack` at `at`.
    pub fn acked(&mut self, node: &str, ack: PushAck, at: f64) -> Result<(), NewerElsewhere> {
        let ours = self.saved;
        let Some(copy) = self.copies.get_mut(node) else {
            return Ok(());
        };
        copy.updated_at = Some(at);
        if ack.serial > ours {
            let conflict = NewerElsewhere {
                node: node.to_owned(),
                held: ack.serial,
                ours,
            };
            copy.error = Some(conflict.to_string());
            return Err(conflict);
        }
        copy.error = None;
        copy.serial = Some(copy.serial.unwrap_or(0).max(ack.serial));
        self.update_durable();
        Ok(())
    }

    /// A push to `node` failed at `at`.
    pub fn failed(&mut self, node: &str, why: String, at: f64) {
        if let Some(copy) = self.copies.get_mut(node) {
            copy.error = Some(why);
            copy.updated_at = Some(at);
        }
    }

    /// A round of pushes of the save `pushed` ended at `at`: if it is not durable, the
    /// majority is lost (from now, or since earlier); if it is, it is back. Saves made
    /// while the pushes were under way are judged by their own round.
    pub fn pushes_done(&mut self, pushed: u64, at: f64) {
        if self.is_durable(pushed) {
            self.lost_since = None;
        } else if self.lost_since.is_none() {
            self.lost_since = Some(at);
        }
    }

    /// Whether the majority is lost.
    pub fn majority_lost(&self) -> bool {
        self.lost_since.is_some()
    }

    fn alone(&self) -> bool {
        self.listed && self.copies.is_empty()
    }

    /// How many candidates hold `serial` (when alone: this node's disk, 1).
    fn holders(&self, serial: u64) -> usize {
        if self.alone() {
            return 1;
        }
        if !self.listed {
            return 0;
        }
        self.copies
            .values()
            .filter(|c| c.serial.is_some_and(|s| s >= serial))
            .count()
    }

    fn total(&self) -> usize {
        self.copies.len().max(1)
    }

    fn update_durable(&mut self) {
        if self.alone() {
            self.durable = self.saved;
        } else {
            // The newest serial a majority holds: the (needed)-th highest held.
            let mut held: Vec<u64> = self.copies.values().filter_map(|c| c.serial).collect();
            held.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(&serial) = held.get(self.total() / 2) {
                debug_assert!(majority(self.holders(serial), self.total()));
                self.durable = self.durable.max(serial);
            }
        }
        if self.is_durable(self.saved) {
            self.lost_since = None;
        }
    }

    /// The view for `/1/safety`.
    pub fn view(&self) -> ReplicationView {
        let total = self.total();
        ReplicationView {
            master: self.me.clone(),
            serial: self.saved,
            durable_serial: self.durable,
            holders: self.holders(self.saved),
            needed: total / 2 + 1,
            candidates: self.copies.values().cloned().collect(),
            majority_lost_since: self.lost_since,
            candidates_error: self.candidates_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(serial: u64) -> PushAck {
        PushAck {
            serial,
            accepted: true,
        }
    }

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn serials_grow_with_every_save_and_with_time() {
        assert_eq!(next_serial(0, 0.0), 1);
        assert_eq!(next_serial(5, f64::NAN), 6);
        assert_eq!(next_serial(5, -3.0), 6);
        assert_eq!(next_serial(0, 1_700_000_000.5), 1_700_000_000_500);
        // Faster than a millisecond, or behind a clock set back: one more.
        assert_eq!(
            next_serial(1_700_000_000_500, 1_700_000_000.5),
            1_700_000_000_501
        );
        assert_eq!(
            next_serial(1_800_000_000_000, 1_700_000_000.0),
            1_800_000_000_001
        );
        assert_eq!(next_serial(u64::MAX, 1.0), u64::MAX);
        assert_eq!(next_serial(0, f64::INFINITY), 1);
    }

    #[test]
    fn alone_every_save_is_durable_but_nothing_is_before_the_list_is_known() {
        let mut tracker = ReplicationTracker::new("node1");
        tracker.saved(7);
        assert!(!tracker.is_durable(7), "no candidate list yet");
        tracker.candidates_unknown("ssconf unreadable".into());
        tracker.pushes_done(tracker.latest(), 1.0);
        let reason = tracker.view().halt_reason().unwrap();
        assert!(reason.contains("ssconf unreadable"), "{reason}");
        tracker.set_candidates(&nodes(&["node1"]));
        assert!(tracker.is_durable(7));
        assert!(tracker.lagging().is_empty(), "no push to its own agent");
        tracker.pushes_done(tracker.latest(), 2.0);
        assert!(!tracker.majority_lost());
        assert_eq!((tracker.view().needed, tracker.view().holders), (1, 1));
        tracker.set_candidates(&[]);
        tracker.saved(8);
        assert!(tracker.is_durable(8), "no list at all: alone too");
    }

    #[test]
    fn a_save_is_durable_once_the_agents_of_a_majority_hold_it() {
        let mut tracker = ReplicationTracker::new("node1");
        tracker.set_candidates(&nodes(&["node1", "node2", "node3", "node4", "node5"]));
        tracker.saved(11);
        assert!(!tracker.is_durable(11));
        // The master's own agent gets a copy too: after a failover the old master's
        // disk is out of reach, its agent is not.
        assert_eq!(tracker.lagging().len(), 5);
        tracker.acked("node1", ack(11), 1.0).unwrap();
        tracker.acked("node2", ack(11), 1.0).unwrap();
        assert!(!tracker.is_durable(11), "2 of 5");
        tracker.failed("node3", "unreachable".into(), 1.0);
        tracker.acked("node4", ack(11), 1.0).unwrap();
        assert!(tracker.is_durable(11), "3 of 5");
        assert_eq!(tracker.lagging(), nodes(&["node3", "node5"]));
        let view = tracker.view();
        assert_eq!((view.holders, view.needed, view.durable_serial), (3, 3, 11));
        assert_eq!(view.candidates[2].error.as_deref(), Some("unreachable"));
        // A newer save held by a majority makes the older ones durable too.
        tracker.saved(12);
        tracker.saved(13);
        for node in ["node1", "node3", "node5"] {
            tracker.acked(node, ack(13), 2.0).unwrap();
        }
        assert!(tracker.is_durable(12) && tracker.is_durable(13));
        // Acks never lower what a candidate is known to hold.
        tracker.acked("node3", ack(12), 3.0).unwrap();
        assert_eq!(tracker.view().candidates[2].serial, Some(13));
    }

    #[test]
    fn a_lost_majority_is_reported_from_the_first_failed_push_round_until_it_is_back() {
        let mut tracker = ReplicationTracker::new("node1");
        tracker.set_candidates(&nodes(&["node1", "node2", "node3"]));
        tracker.saved(1);
        tracker.acked("node1", ack(1), 5.0).unwrap();
        tracker.failed("node2", "down".into(), 5.0);
        tracker.failed("node3", "down".into(), 5.0);
        tracker.pushes_done(tracker.latest(), 5.0);
        assert_eq!(tracker.view().majority_lost_since, Some(5.0));
        tracker.saved(2);
        tracker.acked("node1", ack(2), 9.0).unwrap();
        tracker.pushes_done(tracker.latest(), 9.0);
        let view = tracker.view();
        assert_eq!(view.majority_lost_since, Some(5.0), "since the first");
        let reason = view.halt_reason().unwrap();
        assert!(
            reason.contains("1 of 3 hold serial 2 (2 needed)"),
            "{reason}"
        );
        tracker.acked("node3", ack(2), 10.0).unwrap();
        assert!(!tracker.majority_lost());
        assert_eq!(tracker.view().halt_reason(), None);
    }

    #[test]
    fn a_save_made_while_pushing_is_not_a_lost_majority() {
        let mut tracker = ReplicationTracker::new("node1");
        tracker.set_candidates(&nodes(&["node1", "node2", "node3"]));
        tracker.saved(10);
        // Saved again while 10 was being pushed; 10 reached everyone.
        tracker.saved(11);
        for node in ["node1", "node2", "node3"] {
            tracker.acked(node, ack(10), 1.0).unwrap();
        }
        tracker.pushes_done(10, 1.0);
        assert!(!tracker.majority_lost(), "11 is pushed next, not lost");
        assert_eq!(tracker.view().halt_reason(), None);
        assert!(tracker.is_durable(10) && !tracker.is_durable(11));
        assert_eq!(tracker.lagging().len(), 3);
    }

    #[test]
    fn a_newer_copy_elsewhere_is_a_conflict_and_never_counts() {
        let mut tracker = ReplicationTracker::new("node1");
        tracker.set_candidates(&nodes(&["node1", "node2", "node3"]));
        tracker.saved(5);
        tracker.acked("node1", ack(5), 1.0).unwrap();
        let conflict = tracker.acked("node2", ack(9), 1.0).unwrap_err();
        assert_eq!((conflict.held, conflict.ours), (9, 5));
        assert!(!tracker.is_durable(5));
        assert!(tracker.view().candidates[1]
            .error
            .as_deref()
            .unwrap()
            .contains("another maintd"));
    }

    #[test]
    fn candidate_changes_keep_what_is_known() {
        let mut tracker = ReplicationTracker::new("node1");
        tracker.set_candidates(&nodes(&["node1", "node2", "node3"]));
        tracker.saved(3);
        tracker.acked("node1", ack(3), 1.0).unwrap();
        tracker.acked("node2", ack(3), 1.0).unwrap();
        assert!(tracker.is_durable(3));
        tracker.saved(4);
        tracker.acked("node1", ack(4), 1.0).unwrap();
        // node3 demoted, node4 promoted: node2 still holds 3, node4 nothing.
        tracker.set_candidates(&nodes(&["node1", "node2", "node4"]));
        assert_eq!(
            tracker.candidates().collect::<Vec<_>>(),
            ["node1", "node2", "node4"]
        );
        assert_eq!(tracker.view().candidates[1].serial, Some(3));
        assert!(!tracker.is_durable(4));
        tracker.candidates_unknown("ssconf unreadable".into());
        assert_eq!(
            tracker.view().candidates_error.as_deref(),
            Some("ssconf unreadable")
        );
        // Acks from nodes that are no longer candidates are ignored.
        tracker.acked("node3", ack(4), 2.0).unwrap();
        assert!(!tracker.is_durable(4));
        tracker.acked("node4", ack(4), 2.0).unwrap();
        assert!(tracker.is_durable(4));
    }
}
