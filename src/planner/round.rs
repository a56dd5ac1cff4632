//! The working state of one round shared by the planners: incidents chosen per node,
//! failure and ready tags, live repairs, jobs with their reason trails, and the nodes
//! the round touches already.

use std::collections::{BTreeMap, BTreeSet};

use super::{PlanInput, EXCLUDE_TAG};
use crate::model::{
    cluster::Node,
    diagnose::RepairAction,
    incident::{submission_marker, Incident, JobPurpose, PlannedJob, RepairStatus, RoundPlan},
    opcode::OpBody,
    safety::RepairSlots,
};

/// Working state while planning one round; shared by the planners.
pub(super) struct Round<'a> {
    pub(super) input: PlanInput<'a>,
    /// Free memory and disk per node, updated as moves are planned.
    pub(super) free: BTreeMap<&'a str, (u64, u64)>,
    /// Nodes some job of this round touches already, and those of still-running jobs of
    /// earlier rounds (the gate's busy nodes).
    pub(super) touched: BTreeSet<String>,
    /// Nodes with an open evacuation (held ones included): never a target.
    pub(super) evacuating: BTreeSet<&'a str>,
    /// Repair slots left; taken as incidents start this round.
    pub(super) slots: RepairSlots,
    pub(super) plan: RoundPlan,
}

/// Why a job may not join the round; it waits for a later one. Its text is the waiting
/// note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum JobRefusal {
    /// A node the job touches is used by another job of this round, or by a job of an
    /// earlier round that still runs.
    #[error("waiting: {node} is busy ({})", busy_reason(*.earlier_round))]
    Busy {
        /// The busy node.
        node: String,
        /// A job of an earlier round (not of this round) uses it.
        earlier_round: bool,
    },
    /// A target may not receive anything: why ([`Round::target_refusal`]).
    #[error("waiting: cannot move onto {0}")]
    Target(String),
}

fn busy_reason(earlier_round: bool) -> &'static str {
    if earlier_round {
        "a job of an earlier round still runs there"
    } else {
        "another job of this round uses it"
    }
}

/// Why an instance cannot be moved this round.
pub(super) enum NoMove {
    /// Retry later (targets busy or full).
    Wait(String),
    /// Will never work; fail the incident.
    Impossible(String),
}

impl<'a> Round<'a> {
    pub(super) fn new(input: PlanInput<'a>) -> Self {
        let free = input
            .cluster
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), (n.memory_free, n.disk_free)))
            .collect();
        let evacuating = input
            .incidents
            .iter()
            .filter(|i| i.status.is_open() && i.action.is_evacuation())
            .map(|i| i.node.as_str())
            .collect();
        Round {
            input,
            free,
            touched: input.gate.busy_nodes.clone(),
            evacuating,
            slots: input.gate.slots.clone(),
            plan: RoundPlan::default(),
        }
    }

    /// Why no job of this round may put an instance (or one of its roles) on `node`, or
    /// `None` when it may: the node must accept instances (online, not drained,
    /// vm-capable), not be under evacuation, not be tagged [`EXCLUDE_TAG`], and not be
    /// used by another job of this round or a running one of an earlier round.
    pub(super) fn target_refusal(&self, node: &str) -> Option<String> {
        let Some(n) = self.input.cluster.node(node) else {
            return Some(format!("{node} is not in the cluster"));
        };
        let why = if n.offline {
            "is offline"
        } else if n.drained {
            "is drained"
        } else if !n.vm_capable {
            "is not vm_capable"
        } else if self.evacuating.contains(node) {
            "is under evacuation"
        } else if n.tags.contains(EXCLUDE_TAG) {
            "is tagged maintd:exclude"
        } else if self.input.gate.busy_nodes.contains(node) {
            "is busy with a job of an earlier round"
        } else if self.touched.contains(node) {
            "is used by another job of this round"
        } else {
            return None;
        };
        Some(format!("{node} {why}"))
    }

    /// The waiting message for an evacuation that must move an instance tagged
    /// [`EXCLUDE_TAG`], or `None` when the instance may move.
    pub(super) fn pinned(instance: &str, tags: &BTreeSet<String>) -> Option<NoMove> {
        tags.contains(EXCLUDE_TAG).then(|| {
            NoMove::Wait(format!(
                "waiting: instance {instance} is tagged {EXCLUDE_TAG}"
            ))
        })
    }

    /// Whether `node` may never be a target while its state lasts (as opposed to a node
    /// busy this round only): offline, drained, not vm_capable, under evacuation or
    /// excluded.
    pub(super) fn unusable_node(&self, node: &str) -> bool {
        self.input.cluster.node(node).is_none_or(|n| {
            !n.accepts_instances() || self.evacuating.contains(node) || n.tags.contains(EXCLUDE_TAG)
        })
    }

    /// The one check every job passes before joining the round: no node it touches is
    /// used by another job of the round or by a running job of an earlier round, and
    /// every target (a node receiving an instance or a new role of one) is a usable
    /// target (see [`Round::target_refusal`]).
    pub(super) fn check_job(
        &self,
        nodes: &BTreeSet<String>,
        targets: &[String],
    ) -> Result<(), JobRefusal> {
        if let Some(node) = nodes.iter().find(|n| self.touched.contains(*n)) {
            return Err(JobRefusal::Busy {
                node: node.clone(),
                earlier_round: self.input.gate.busy_nodes.contains(node),
            });
        }
        for target in targets {
            if let Some(why) = self.target_refusal(target) {
                return Err(JobRefusal::Target(why));
            }
        }
        Ok(())
    }

    /// The plan so far.
    pub(super) fn finish(self) -> RoundPlan {
        self.plan
    }

    /// Record a problem of the round that no incident owns.
    pub(super) fn warn(&mut self, message: String) {
        self.plan.warnings.push(message);
    }

    /// Add a job that serves no incident (harep, balancing); it touches `nodes` and moves
    /// instances (or roles) onto `targets`. A job failing [`Round::check_job`] is left out
    /// with a warning; returns whether it was added.
    pub(super) fn add_maintenance_job(
        &mut self,
        purpose: JobPurpose,
        ops: Vec<OpBody>,
        nodes: BTreeSet<String>,
        targets: &[String],
        what: &str,
    ) -> bool {
        if let Err(why) = self.check_job(&nodes, targets) {
            self.warn(format!("{what}: left for a later round ({why})"));
            return false;
        }
        let key = format!("{}-{}", self.input.key_prefix, self.plan.jobs.len());
        let text = format!("{what} ({}", submission_marker(&key));
        self.touched.extend(nodes.iter().cloned());
        let ops = ops
            .into_iter()
            .map(|op| op.with_reason(text.clone(), self.input.now_ns))
            .collect();
        self.plan.jobs.push(PlannedJob {
            key,
            incident: None,
            purpose,
            nodes,
            ops,
        });
        true
    }

    /// Tag failed incidents, then handle the chosen incident of each node: evacuations
    /// through `evacuate`, live repairs here. The safety gate applies first: held
    /// incidents and incidents of nodes tagged [`EXCLUDE_TAG`] get no job; the master
    /// cannot be evacuated; an incident that has not started needs a repair slot, taken
    /// when it gets its first job.
    pub(super) fn handle_incidents(&mut self, evacuate: &mut dyn FnMut(&mut Self, &'a Incident)) {
        let cluster = self.input.cluster;
        // Failed incidents whose failure tag is not yet set get it first: cheap, and
        // the only job a failed incident may still have.
        for incident in self.input.incidents {
            let excluded = cluster
                .node(&incident.node)
                .is_some_and(|n| n.tags.contains(EXCLUDE_TAG));
            if incident.status == RepairStatus::Failed
                && !incident.tagged
                && cluster.node(&incident.node).is_some()
                && !excluded
                && !self.touched.contains(&incident.node)
            {
                self.tag_failed(incident);
            }
        }
        let mut chosen = self.chosen_incidents();
        // Evacuations before live repairs; most invasive first, then oldest: also the
        // order in which waiting incidents get free repair slots.
        chosen.sort_by(|a, b| {
            b.action
                .cmp(&a.action)
                .then(a.ctime.total_cmp(&b.ctime))
                .then(a.node.cmp(&b.node))
        });
        for incident in chosen {
            let Some(node) = cluster.node(&incident.node) else {
                continue;
            };
            if let Some(message) = self.input.gate.held.get(&incident.uuid) {
                self.plan.notes.push((incident.uuid, message.clone()));
                continue;
            }
            if node.tags.contains(EXCLUDE_TAG) {
                let message = format!("waiting: node {} is tagged {EXCLUDE_TAG}", node.name);
                self.plan.notes.push((incident.uuid, message));
                continue;
            }
            if self.touched.contains(&incident.node) {
                if self.input.gate.busy_nodes.contains(&incident.node) {
                    let message = format!(
                        "waiting: a job of an earlier round still runs on {}",
                        node.name
                    );
                    self.plan.notes.push((incident.uuid, message));
                }
                continue;
            }
            if incident.action.is_evacuation() && node.name == cluster.master {
                // Ganeti refuses to drain the master; only a master failover moves that
                // role. Failing needs no repair slot.
                self.fail(
                    incident,
                    format!("{} is the master node; fail the master role over (gnt-cluster master-failover) before it can be evacuated", node.name),
                );
                continue;
            }
            let unstarted = incident.status == RepairStatus::Noted && !incident.started();
            if unstarted {
                if let Err(refusal) = self.slots.check(&node.group) {
                    self.plan.notes.push((incident.uuid, refusal.to_string()));
                    continue;
                }
            }
            let before = self.plan.jobs.len();
            match incident.action {
                RepairAction::Evacuate | RepairAction::EvacuateFailover => evacuate(self, incident),
                RepairAction::LiveRepair => self.live_repair_step(incident),
                RepairAction::Ok => {}
            }
            let started = self.plan.jobs[before..]
                .iter()
                .any(|j| j.incident == Some(incident.uuid) && j.purpose != JobPurpose::TagFailed);
            if unstarted && started {
                // Checked above and nothing else takes slots meanwhile.
                let _ = self.slots.take(&node.group);
            }
        }
    }

    /// Per node, the most invasive open incident; older first among equals.
    pub(super) fn chosen_incidents(&self) -> Vec<&'a Incident> {
        let mut per_node: BTreeMap<&str, &'a Incident> = BTreeMap::new();
        for incident in self.input.incidents.iter().filter(|i| i.status.is_open()) {
            if self.input.cluster.node(&incident.node).is_none() {
                continue;
            }
            per_node
                .entry(incident.node.as_str())
                .and_modify(|best| {
                    let better = incident.action > best.action
                        || (incident.action == best.action && incident.ctime < best.ctime);
                    if better {
                        *best = incident;
                    }
                })
                .or_insert(incident);
        }
        per_node.into_values().collect()
    }

    /// The first step of every evacuation: drain the node. Returns the node once it is
    /// drained (or offline) and its instances may move.
    pub(super) fn drained_node(&mut self, incident: &'a Incident) -> Option<&'a Node> {
        let cluster = self.input.cluster;
        let node = cluster.node(&incident.node)?;
        if !node.drained && !node.offline {
            let op = OpBody::drain_node(&node.name);
            self.add_job(
                incident,
                JobPurpose::Drain,
                vec![op],
                &[],
                &format!("Draining {}", node.name),
            );
            return None;
        }
        Some(node)
    }

    pub(super) fn live_repair_step(&mut self, incident: &'a Incident) {
        if incident.repair_done {
            self.tag_ready(incident);
            return;
        }
        // Rounds wait for every job, so an open incident without `repair_done` has no
        // repair job in flight and none that succeeded: (re)submit it.
        let Some(command) = &incident.command else {
            self.fail(
                incident,
                "live-repair requested without a repair command".into(),
            );
            return;
        };
        let input = incident.original.to_string();
        let op = OpBody::repair_command(&incident.node, command, input);
        self.add_job(
            incident,
            JobPurpose::RepairCommand,
            vec![op],
            &[],
            "repair command requested by node",
        );
    }

    pub(super) fn tag_ready(&mut self, incident: &'a Incident) {
        let op = OpBody::tag_node(&incident.node, &incident.tag);
        self.add_job(
            incident,
            JobPurpose::TagReady,
            vec![op],
            &[],
            &format!("{} of {} done", incident.action, incident.node),
        );
    }

    pub(super) fn blocked(&mut self, incident: &Incident, why: NoMove) {
        match why {
            NoMove::Wait(message) => self.plan.notes.push((incident.uuid, message)),
            NoMove::Impossible(message) => self.fail(incident, message),
        }
    }

    /// Fail an open incident now and tag its node in the same round.
    pub(super) fn fail(&mut self, incident: &Incident, why: String) {
        self.plan.failures.push((incident.uuid, why));
        self.tag_failed(incident);
    }

    pub(super) fn tag_failed(&mut self, incident: &Incident) {
        let op = OpBody::tag_node(&incident.node, &incident.failed_tag());
        self.add_job(
            incident,
            JobPurpose::TagFailed,
            vec![op],
            &[],
            "marking incident handling as failed",
        );
    }

    /// Add a job for `incident`; it touches the incident's node and `touched`, and moves
    /// instances (or roles) onto `targets` (a subset of `touched`). A job failing
    /// [`Round::check_job`] is left out and the incident notes why; returns whether it
    /// was added.
    pub(super) fn add_job(
        &mut self,
        incident: &Incident,
        purpose: JobPurpose,
        ops: Vec<OpBody>,
        touched: &[String],
        what: &str,
    ) -> bool {
        self.add_job_with_targets(incident, purpose, ops, touched, touched, what)
    }

    /// [`Round::add_job`] for a job that touches nodes it does not move anything onto
    /// (the old secondary of a replaced mirror, an instance's primary whose secondary
    /// moves).
    pub(super) fn add_job_with_targets(
        &mut self,
        incident: &Incident,
        purpose: JobPurpose,
        ops: Vec<OpBody>,
        touched: &[String],
        targets: &[String],
        what: &str,
    ) -> bool {
        let mut nodes: BTreeSet<String> = touched.iter().cloned().collect();
        nodes.insert(incident.node.clone());
        let targets: Vec<String> = targets
            .iter()
            .filter(|t| **t != incident.node)
            .cloned()
            .collect();
        if let Err(why) = self.check_job(&nodes, &targets) {
            if incident.status.is_open() {
                self.plan.notes.push((incident.uuid, why.to_string()));
            }
            return false;
        }
        let key = format!("{}-{}", self.input.key_prefix, self.plan.jobs.len());
        let text = format!(
            "{what} (incident {}, {}",
            incident.uuid,
            submission_marker(&key)
        );
        self.touched.extend(nodes.iter().cloned());
        let ops = ops
            .into_iter()
            .map(|op| op.with_reason(text.clone(), self.input.now_ns))
            .collect();
        self.plan.jobs.push(PlannedJob {
            key,
            incident: Some(incident.uuid),
            purpose,
            nodes,
            ops,
        });
        true
    }
}
