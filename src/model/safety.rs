//! The brakes: how many nodes may be in repair at once (the blast-radius cap), and which
//! incidents get no new job this round and why.
//!
//! The registry computes a [`SafetyGate`] before every round; the planners obey it. Plain
//! data, no I/O.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// What the safety layer allows one round to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SafetyGate {
    /// Open incidents that get no job this round, with the reason shown as their
    /// `message` (unconfirmed, flapping, node excluded, a job of theirs stuck, ...).
    pub held: BTreeMap<Uuid, String>,
    /// Repair slots left for incidents that have not started yet.
    pub slots: RepairSlots,
    /// Nodes used by jobs of earlier rounds that are still running (a hung job): no job of
    /// this round may touch them.
    pub busy_nodes: BTreeSet<String>,
}

impl SafetyGate {
    /// A gate that holds nothing back: no cap, nothing held, nothing busy.
    pub fn open() -> Self {
        SafetyGate::default()
    }
}

/// The blast-radius cap: how many more nodes may enter repair, overall and per node group.
///
/// A node is in repair while it is drained for an open evacuation incident or a live
/// repair runs on it; an incident that has not started yet needs a slot to start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepairSlots {
    /// Cap over the whole cluster; `None`: unlimited.
    global_limit: Option<usize>,
    /// Nodes in repair now, overall.
    global_used: usize,
    /// Cap per group uuid; a group not listed is unlimited.
    group_limit: BTreeMap<String, usize>,
    /// Nodes in repair now per group uuid.
    group_used: BTreeMap<String, usize>,
}

impl RepairSlots {
    /// No cap at all.
    pub fn unlimited() -> Self {
        RepairSlots::default()
    }

    /// A cap of `global_limit` nodes overall and `group_limit[g]` in group `g`, with the
    /// nodes of `in_repair` (node name, group uuid) already counted.
    pub fn new<'a>(
        global_limit: Option<usize>,
        group_limit: BTreeMap<String, usize>,
        in_repair: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut slots = RepairSlots {
            global_limit,
            global_used: 0,
            group_limit,
            group_used: BTreeMap::new(),
        };
        let mut seen = BTreeSet::new();
        for (node, group) in in_repair {
            if seen.insert(node) {
                slots.count(group);
            }
        }
        slots
    }

    fn count(&mut self, group: &str) {
        self.global_used += 1;
        *self.group_used.entry(group.to_owned()).or_default() += 1;
    }

    /// Whether a node of group `group` may enter repair now; if not, the waiting message
    /// ("waiting: 1 of 1 nodes already in repair").
    pub fn check(&self, group: &str) -> Result<(), String> {
        if let Some(limit) = self.global_limit {
            if self.global_used >= limit {
                return Err(format!(
                    "waiting: {} of {limit} nodes already in repair (safety.max_nodes_in_repair)",
                    self.global_used
                ));
            }
        }
        if let Some(&limit) = self.group_limit.get(group) {
            let used = self.group_used.get(group).copied().unwrap_or(0);
            if used >= limit {
                return Err(format!(
                    "waiting: {used} of {limit} nodes of its group already in repair (safety.max_percent_in_repair)"
                ));
            }
        }
        Ok(())
    }

    /// Take a slot for a node of group `group`; the same refusal as [`RepairSlots::check`].
    pub fn take(&mut self, group: &str) -> Result<(), String> {
        self.check(group)?;
        self.count(group);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_slots_never_refuse() {
        let mut slots = RepairSlots::unlimited();
        for _ in 0..100 {
            slots.take("g").unwrap();
        }
    }

    #[test]
    fn global_and_group_limits_both_hold() {
        let groups = BTreeMap::from([("g1".to_owned(), 1), ("g2".to_owned(), 5)]);
        let mut slots = RepairSlots::new(Some(2), groups, [("node1", "g1")]);
        let refused = slots.take("g1").unwrap_err();
        assert!(refused.contains("1 of 1 nodes of its group"), "{refused}");
        slots.take("g2").unwrap();
        let refused = slots.take("g2").unwrap_err();
        assert!(refused.contains("2 of 2 nodes already in repair"), "{refused}");
    }

    #[test]
    fn a_node_counted_twice_takes_one_slot() {
        let slots = RepairSlots::new(Some(2), BTreeMap::new(), [("a", "g"), ("a", "g")]);
        assert!(slots.check("g").is_ok());
    }
}
