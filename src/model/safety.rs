//! The brakes: pause, the circuit breaker, how many nodes may be in repair at once (the
//! blast-radius cap), and which incidents get no new job this round and why.
//!
//! The registry computes a [`SafetyGate`] before every round; the planners obey it. Plain
//! data, no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    cluster::ClusterSnapshot,
    incident::{MaintenanceState, BY_MAINTD},
};

/// Cluster tag that pauses maintd: Ganeti's own interface, which works while maintd's API
/// is unreachable and survives a master failover.
pub const PAUSE_TAG: &str = "maintd:paused";

/// Node tag: no action on the node, never a target. Instance tag: never moved by
/// balancing; an evacuation that needs to move it waits.
pub const EXCLUDE_TAG: &str = "maintd:exclude";

/// The limits of `[safety]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyLimits {
    /// Nodes in repair at once, cluster-wide (at least 1).
    pub max_nodes_in_repair: usize,
    /// Nodes in repair at once per node group, in percent of the group, rounded up (so
    /// never less than one node).
    pub max_percent_in_repair: f64,
    /// The breaker trips when more nodes than this have open incidents.
    pub breaker_nodes: usize,
    /// The breaker trips when more than this percentage of a group's nodes (and at least
    /// two) have open incidents.
    pub breaker_percent: f64,
}

impl Default for SafetyLimits {
    fn default() -> Self {
        SafetyLimits {
            max_nodes_in_repair: 1,
            max_percent_in_repair: 10.0,
            breaker_nodes: 3,
            breaker_percent: 30.0,
        }
    }
}

/// A pause ordered by an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    /// Why, as the operator said.
    pub reason: Option<String>,
    /// Who: the API client.
    pub by: String,
    /// Since when (Unix seconds).
    pub since: f64,
}

/// A tripped circuit breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerTrip {
    /// Why it tripped: how many nodes, which.
    pub reason: String,
    /// Since when (Unix seconds).
    pub since: f64,
}

/// The persisted brakes: latched until an operator resumes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SafetyState {
    /// Paused through the API or CLI.
    #[serde(default)]
    pub pause: Option<Pause>,
    /// The breaker, if tripped.
    #[serde(default)]
    pub breaker: Option<BreakerTrip>,
}

impl MaintenanceState {
    /// Pause: no new action of any kind until [`MaintenanceState::resume`]. Open
    /// incidents record it in their history.
    pub fn pause(&mut self, reason: Option<String>, by: &str, now: f64) {
        self.safety.pause = Some(Pause {
            reason: reason.clone(),
            by: by.to_owned(),
            since: now,
        });
        for incident in self.incidents.iter_mut().filter(|i| i.status.is_open()) {
            incident.record(now, "paused", by, reason.clone());
        }
    }

    /// Resume: lift the pause and reset a tripped breaker. The incidents open now are
    /// acknowledged: they no longer count as new for the breaker, and flapping ones are
    /// released; they proceed within the cap.
    pub fn resume(&mut self, by: &str, now: f64) {
        self.safety = SafetyState::default();
        for incident in self.incidents.iter_mut().filter(|i| i.status.is_open()) {
            incident.breaker_acknowledged = true;
            if incident.flapping {
                incident.flapping = false;
                incident.message = None;
            }
            incident.record(now, "resumed", by, None);
        }
    }

    /// Trip the breaker if more nodes than allowed have open, confirmed incidents and at
    /// least one of those incidents is new since the last resume. Returns the reason if
    /// it tripped now; a tripped breaker stays latched.
    pub fn check_breaker(
        &mut self,
        cluster: &ClusterSnapshot,
        limits: &SafetyLimits,
        now: f64,
    ) -> Option<String> {
        if self.safety.breaker.is_some() {
            return None;
        }
        let counted: Vec<_> = self
            .incidents
            .iter()
            .filter(|i| i.status.is_open() && i.confirmed)
            .collect();
        if !counted.iter().any(|i| !i.breaker_acknowledged) {
            return None;
        }
        let nodes: BTreeSet<&str> = counted.iter().map(|i| i.node.as_str()).collect();
        let mut reason = None;
        if nodes.len() > limits.breaker_nodes {
            reason = Some(format!(
                "{} nodes have open incidents, more than safety.breaker_nodes = {}: {}",
                nodes.len(),
                limits.breaker_nodes,
                nodes.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        } else {
            for (group, members) in group_members(cluster) {
                let bad: Vec<&str> = nodes
                    .iter()
                    .copied()
                    .filter(|n| members.contains(n))
                    .collect();
                let percent = 100.0 * bad.len() as f64 / members.len().max(1) as f64;
                if bad.len() >= 2 && percent > limits.breaker_percent {
                    reason = Some(format!(
                        "{} of {} nodes of group {group} ({percent:.0} %) have open incidents, more than safety.breaker_percent = {} %: {}",
                        bad.len(),
                        members.len(),
                        limits.breaker_percent,
                        bad.join(", ")
                    ));
                    break;
                }
            }
        }
        let reason = reason?;
        self.safety.breaker = Some(BreakerTrip {
            reason: reason.clone(),
            since: now,
        });
        for incident in self.incidents.iter_mut().filter(|i| i.status.is_open()) {
            incident.record(now, "breaker-tripped", BY_MAINTD, Some(reason.clone()));
        }
        Some(reason)
    }

    /// Nodes in repair: those of open incidents that have started (drained for an
    /// evacuation, or a live repair under way).
    pub fn in_repair(&self) -> BTreeSet<String> {
        self.incidents
            .iter()
            .filter(|i| i.status.is_open() && i.started())
            .map(|i| i.node.clone())
            .collect()
    }

    /// Why no new action may start, if it may not: paused (by the API or by the cluster
    /// tag), the breaker tripped, or dry-run.
    pub fn halt_reason(&self, paused_by_tag: bool, dry_run: bool) -> Option<String> {
        if let Some(pause) = &self.safety.pause {
            return Some(match &pause.reason {
                Some(reason) => format!("paused by {}: {reason}", pause.by),
                None => format!("paused by {}", pause.by),
            });
        }
        if paused_by_tag {
            return Some(format!("paused by the cluster tag {PAUSE_TAG}"));
        }
        if let Some(trip) = &self.safety.breaker {
            return Some(format!("circuit breaker tripped: {}", trip.reason));
        }
        dry_run.then(|| "dry-run: nothing is submitted".to_owned())
    }

    /// The gate of the next round: unconfirmed, flapping and stuck incidents are held; the cap counts the nodes in repair; stuck jobs' nodes are busy.
    pub fn gate(&self, cluster: &ClusterSnapshot, limits: &SafetyLimits) -> SafetyGate {
        let mut held = BTreeMap::new();
        // Incidents of nodes tagged EXCLUDE_TAG are held by the planner, which also keeps
        // those nodes out of reach as targets.
        for incident in self.incidents.iter().filter(|i| i.status.is_open()) {
            let why = if !incident.confirmed {
                Some(format!(
                    "awaiting confirmation: seen in {} of {} polls",
                    incident.seen_polls,
                    self.policy.confirm_polls.max(1)
                ))
            } else if let Some(job) = incident.stuck_job {
                Some(format!(
                    "stuck: job {job} has been running for more than rounds.job_timeout; no further job for this incident until it ends"
                ))
            } else if incident.flapping {
                incident.message.clone().or(Some("flapping".to_owned()))
            } else {
                None
            };
            if let Some(why) = why {
                held.insert(incident.uuid, why);
            }
        }
        let members = group_members(cluster);
        let group_limit = members
            .iter()
            .map(|(group, nodes)| {
                let share = limits.max_percent_in_repair / 100.0 * nodes.len() as f64;
                // Rounded up, and at least one node: a small group can still be repaired.
                (group.clone(), (share.ceil() as usize).max(1))
            })
            .collect();
        let in_repair = self.in_repair();
        let slots = RepairSlots::new(
            Some(limits.max_nodes_in_repair.max(1)),
            group_limit,
            in_repair.iter().map(|node| {
                let group = cluster.node(node).map_or("", |n| n.group.as_str());
                (node.as_str(), group)
            }),
        );
        let busy_nodes = self
            .stuck_jobs()
            .flat_map(|j| j.nodes.iter().cloned())
            .collect();
        SafetyGate {
            held,
            slots,
            busy_nodes,
        }
    }
}

/// The node names of each group, by group uuid.
fn group_members(cluster: &ClusterSnapshot) -> BTreeMap<String, BTreeSet<&str>> {
    let mut members: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for node in &cluster.nodes {
        members
            .entry(node.group.clone())
            .or_default()
            .insert(node.name.as_str());
    }
    members
}

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

/// Why a node may not enter repair now: a cap is reached. Its text is the incident's
/// waiting note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefusal {
    /// The cluster-wide cap (`safety.max_nodes_in_repair`) is reached.
    #[error("waiting: {used} of {limit} nodes already in repair (safety.max_nodes_in_repair)")]
    Cluster {
        /// Nodes in repair.
        used: usize,
        /// The cap.
        limit: usize,
    },
    /// The node group's cap (`safety.max_percent_in_repair`) is reached.
    #[error("waiting: {used} of {limit} nodes of its group already in repair (safety.max_percent_in_repair)")]
    Group {
        /// Nodes of the group in repair.
        used: usize,
        /// The group's cap.
        limit: usize,
    },
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

    /// Whether a node of group `group` may enter repair now; if not, which cap is reached
    /// (its text is the waiting message, "waiting: 1 of 1 nodes already in repair ...").
    pub fn check(&self, group: &str) -> Result<(), SlotRefusal> {
        if let Some(limit) = self.global_limit {
            if self.global_used >= limit {
                return Err(SlotRefusal::Cluster {
                    used: self.global_used,
                    limit,
                });
            }
        }
        if let Some(&limit) = self.group_limit.get(group) {
            let used = self.group_used.get(group).copied().unwrap_or(0);
            if used >= limit {
                return Err(SlotRefusal::Group { used, limit });
            }
        }
        Ok(())
    }

    /// Take a slot for a node of group `group`; the same refusal as [`RepairSlots::check`].
    pub fn take(&mut self, group: &str) -> Result<(), SlotRefusal> {
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
        assert!(
            refused.to_string().contains("1 of 1 nodes of its group"),
            "{refused}"
        );
        assert_eq!(refused, SlotRefusal::Group { used: 1, limit: 1 });
        slots.take("g2").unwrap();
        let refused = slots.take("g2").unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("2 of 2 nodes already in repair"),
            "{refused}"
        );
        assert_eq!(refused, SlotRefusal::Cluster { used: 2, limit: 2 });
    }

    #[test]
    fn a_node_counted_twice_takes_one_slot() {
        let slots = RepairSlots::new(Some(2), BTreeMap::new(), [("a", "g"), ("a", "g")]);
        assert!(slots.check("g").is_ok());
    }
}

#[cfg(test)]
mod state_tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::model::{
        cluster::{Group, Node},
        diagnose::parse_diagnose,
        incident::{JobPurpose, PlannedJob},
        job::JobId,
    };

    fn cluster(nodes: usize) -> ClusterSnapshot {
        ClusterSnapshot {
            master: "n1".into(),
            groups: vec![Group {
                name: "default".into(),
                uuid: "g1".into(),
                ..Group::default()
            }],
            nodes: (1..=nodes)
                .map(|n| Node {
                    name: format!("n{n}"),
                    group: "g1".into(),
                    ..Node::default()
                })
                .collect(),
            ..ClusterSnapshot::default()
        }
    }

    fn report(state: &mut MaintenanceState, node: &str, detail: &str) -> Uuid {
        let diagnose = parse_diagnose(json!({"status": "evacuate", "details": detail})).unwrap();
        state.observe(node, &diagnose, 0.0);
        state.incidents.last().unwrap().uuid
    }

    fn start(state: &mut MaintenanceState, uuid: Uuid, id: u64) {
        let job = PlannedJob {
            key: format!("k{id}"),
            incident: Some(uuid),
            purpose: JobPurpose::Drain,
            nodes: BTreeSet::new(),
            ops: vec![],
        };
        state.start_round(&[job], 0.0);
        state.record_submission(&format!("k{id}"), Ok(JobId(id)), 0.0);
    }

    #[test]
    fn the_breaker_trips_past_the_threshold_latches_and_rearms_on_new_incidents_only() {
        let limits = SafetyLimits {
            breaker_nodes: 3,
            breaker_percent: 100.0,
            ..SafetyLimits::default()
        };
        let c = cluster(20);
        let mut s = MaintenanceState::new();
        for n in 2..=4 {
            report(&mut s, &format!("n{n}"), "x");
        }
        assert_eq!(
            s.check_breaker(&c, &limits, 1.0),
            None,
            "3 is not more than 3"
        );
        report(&mut s, "n5", "x");
        let reason = s.check_breaker(&c, &limits, 2.0).expect("tripped");
        assert!(
            reason.contains("4 nodes") && reason.contains("n5"),
            "{reason}"
        );
        assert!(s
            .halt_reason(false, false)
            .unwrap()
            .starts_with("circuit breaker tripped"));
        // Latched: a second check changes nothing.
        assert_eq!(s.check_breaker(&c, &limits, 3.0), None);
        assert!(s.safety.breaker.is_some());
        // Resume acknowledges the four: no trip again for them.
        s.resume("operator", 4.0);
        assert!(s.safety.breaker.is_none());
        assert_eq!(s.check_breaker(&c, &limits, 5.0), None);
        // A new incident while the count is past the threshold trips it again.
        report(&mut s, "n6", "x");
        assert!(s.check_breaker(&c, &limits, 6.0).is_some());
    }

    #[test]
    fn the_breaker_counts_a_share_of_a_group_but_never_a_single_node() {
        let limits = SafetyLimits {
            breaker_nodes: 100,
            breaker_percent: 30.0,
            ..SafetyLimits::default()
        };
        let c = cluster(3);
        let mut s = MaintenanceState::new();
        report(&mut s, "n2", "x");
        assert_eq!(s.check_breaker(&c, &limits, 1.0), None, "one node of three");
        report(&mut s, "n3", "x");
        let reason = s.check_breaker(&c, &limits, 2.0).expect("two of three");
        assert!(reason.contains("group"), "{reason}");
    }

    #[test]
    fn the_gate_holds_unconfirmed_ones_the_planner_excluded_ones_and_the_cap_counts_started_ones() {
        let mut c = cluster(10);
        c.nodes[6].tags.insert(EXCLUDE_TAG.to_owned());
        let mut s = MaintenanceState::new();
        s.policy.confirm_polls = 2;
        let unconfirmed = report(&mut s, "n2", "x");
        let started = report(&mut s, "n3", "x");
        report(&mut s, "n3", "x");
        start(&mut s, started, 1);
        let excluded = report(&mut s, "n7", "x");
        report(&mut s, "n7", "x");
        let gate = s.gate(&c, &SafetyLimits::default());
        assert!(gate.held[&unconfirmed].starts_with("awaiting confirmation: seen in 1 of 2"));
        assert!(!gate.held.contains_key(&started));
        // The excluded node's incident is held by the planner, which says why.
        let plan = crate::planner::Planner::plan(
            &crate::planner::HtoolsPlanner::default(),
            crate::planner::PlanInput {
                cluster: &c,
                incidents: &s.incidents,
                key_prefix: "t",
                now_ns: 0,
                job_statuses: &BTreeMap::new(),
                node_loads: &BTreeMap::new(),
                gate: &gate,
            },
        );
        let note = plan
            .notes
            .iter()
            .find(|(u, _)| *u == excluded)
            .expect("noted");
        assert!(note.1.contains(EXCLUDE_TAG), "{note:?}");
        assert!(plan.jobs.iter().all(|j| j.incident != Some(excluded)));
        // n3 is in repair: the one slot is taken.
        assert_eq!(s.in_repair(), BTreeSet::from(["n3".to_owned()]));
        let refused = gate.slots.check("g1").unwrap_err().to_string();
        assert!(
            refused.starts_with("waiting: 1 of 1 nodes already in repair"),
            "{refused}"
        );
    }

    #[test]
    fn the_group_share_of_the_cap_is_rounded_up() {
        let c = cluster(12);
        let limits = SafetyLimits {
            max_nodes_in_repair: 5,
            max_percent_in_repair: 10.0,
            ..SafetyLimits::default()
        };
        let mut slots = MaintenanceState::new().gate(&c, &limits).slots;
        slots.take("g1").unwrap();
        slots.take("g1").unwrap();
        assert!(slots
            .take("g1")
            .unwrap_err()
            .to_string()
            .contains("2 of 2 nodes of its group"));
    }

    #[test]
    fn pause_wins_over_the_tag_the_breaker_and_dry_run_and_resume_lifts_it() {
        let mut s = MaintenanceState::new();
        assert_eq!(s.halt_reason(false, false), None);
        assert!(s.halt_reason(false, true).unwrap().starts_with("dry-run"));
        assert!(s.halt_reason(true, false).unwrap().contains(PAUSE_TAG));
        s.pause(Some("rack work".into()), "api client 10.0.0.1", 1.0);
        assert_eq!(
            s.halt_reason(true, true).unwrap(),
            "paused by api client 10.0.0.1: rack work"
        );
        // It survives a save and a load.
        let text = serde_json::to_string(&s).unwrap();
        let mut back: MaintenanceState = serde_json::from_str(&text).unwrap();
        assert_eq!(back.safety, s.safety);
        back.resume("api client 10.0.0.1", 2.0);
        assert_eq!(back.halt_reason(false, false), None);
    }
}
