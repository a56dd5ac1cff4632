//! The working state of one round shared by the planners: incidents chosen per node,
//! failure and ready tags, live repairs, jobs with their reason trails, and the nodes
//! the round touches already.

use std::collections::{BTreeMap, BTreeSet};

use super::PlanInput;
use crate::model::{
    cluster::Node,
    diagnose::RepairAction,
    incident::{submission_marker, Incident, JobPurpose, PlannedJob, RepairStatus, RoundPlan},
    opcode::OpBody,
};

/// Working state while planning one round; shared by the planners.
pub(super) struct Round<'a> {
    pub(super) input: PlanInput<'a>,
    /// Free memory and disk per node, updated as moves are planned.
    pub(super) free: BTreeMap<&'a str, (u64, u64)>,
    /// Nodes some job of this round touches already.
    pub(super) touched: BTreeSet<String>,
    /// Nodes with an open evacuation: never a target.
    pub(super) evacuating: BTreeSet<&'a str>,
    pub(super) plan: RoundPlan,
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
            touched: BTreeSet::new(),
            evacuating,
            plan: RoundPlan::default(),
        }
    }

    /// The plan so far.
    pub(super) fn finish(self) -> RoundPlan {
        self.plan
    }

    /// Record a problem of the round that no incident owns.
    pub(super) fn warn(&mut self, message: String) {
        self.plan.warnings.push(message);
    }

    /// Add a job that serves no incident (harep, balancing); it touches `nodes`.
    pub(super) fn add_maintenance_job(
        &mut self,
        purpose: JobPurpose,
        ops: Vec<OpBody>,
        nodes: BTreeSet<String>,
        what: &str,
    ) {
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
    }

    /// Tag failed incidents, then handle the chosen incident of each node: evacuations
    /// through `evacuate`, live repairs here.
    pub(super) fn handle_incidents(&mut self, evacuate: &mut dyn FnMut(&mut Self, &'a Incident)) {
        // Failed incidents whose failure tag is not yet set get it first: cheap, and
        // the only job a failed incident may still have.
        for incident in self.input.incidents {
            if incident.status == RepairStatus::Failed
                && !incident.tagged
                && self.input.cluster.node(&incident.node).is_some()
            {
                self.tag_failed(incident);
            }
        }
        let mut chosen = self.chosen_incidents();
        // Evacuations before live repairs; most invasive first, then oldest.
        chosen.sort_by(|a, b| {
            b.action
                .cmp(&a.action)
                .then(a.ctime.total_cmp(&b.ctime))
                .then(a.node.cmp(&b.node))
        });
        for incident in chosen {
            if self.touched.contains(&incident.node) {
                continue;
            }
            match incident.action {
                RepairAction::Evacuate | RepairAction::EvacuateFailover => evacuate(self, incident),
                RepairAction::LiveRepair => self.live_repair_step(incident),
                RepairAction::Ok => {}
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

    /// The first step of every evacuation: refuse the master node, drain the node. Returns
    /// the node once it is drained (or offline) and its instances may move.
    pub(super) fn drained_node(&mut self, incident: &'a Incident) -> Option<&'a Node> {
        let cluster = self.input.cluster;
        let node = cluster.node(&incident.node)?;
        if node.name == cluster.master {
            // Ganeti refuses to drain the master; only a master failover moves that role.
            self.fail(
                incident,
                format!("{} is the master node; fail the master role over (gnt-cluster master-failover) before it can be evacuated", node.name),
            );
            return None;
        }
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

    pub(super) fn add_job(
        &mut self,
        incident: &Incident,
        purpose: JobPurpose,
        ops: Vec<OpBody>,
        targets: &[String],
        what: &str,
    ) {
        let key = format!("{}-{}", self.input.key_prefix, self.plan.jobs.len());
        let text = format!(
            "{what} (incident {}, {}",
            incident.uuid,
            submission_marker(&key)
        );
        let mut nodes: BTreeSet<String> = targets.iter().cloned().collect();
        nodes.insert(incident.node.clone());
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
    }
}
