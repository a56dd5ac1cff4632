//! A capacity-respecting placement that evacuates one instance per node and round.

use std::collections::{BTreeMap, BTreeSet};

use super::{PlanInput, Planner};
use crate::model::{
    cluster::{ClusterSnapshot, DiskTemplate, Instance, Node},
    diagnose::RepairAction,
    incident::{submission_marker, Incident, JobPurpose, PlannedJob, RepairStatus, RoundPlan},
    opcode::OpBody,
};

/// Evacuates node by node, choosing for each move the target with the most free memory
/// among nodes not yet touched in the round.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimplePlanner;

impl Planner for SimplePlanner {
    fn plan(&self, input: PlanInput<'_>) -> RoundPlan {
        let mut round = Round::new(input);
        round.handle_incidents(&mut |round, incident| round.evacuation_step(incident));
        round.finish()
    }
}

/// Working state while planning one round; shared by the planners.
pub(super) struct Round<'a> {
    pub(super) input: PlanInput<'a>,
    /// Free memory and disk per node, updated as moves are planned.
    free: BTreeMap<&'a str, (u64, u64)>,
    /// Nodes some job of this round touches already.
    pub(super) touched: BTreeSet<String>,
    /// Nodes with an open evacuation: never a target.
    evacuating: BTreeSet<&'a str>,
    plan: RoundPlan,
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
    fn chosen_incidents(&self) -> Vec<&'a Incident> {
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

    /// The simple evacuation step: drain, then one instance per round to the node with
    /// the most free memory.
    pub(super) fn evacuation_step(&mut self, incident: &'a Incident) {
        let cluster = self.input.cluster;
        let Some(node) = self.drained_node(incident) else {
            return;
        };
        let failover = incident.action == RepairAction::EvacuateFailover;
        if let Some(instance) = first_by_name(cluster.primaries_of(&node.name)) {
            match self.move_primary(instance, failover) {
                Ok((ops, targets)) => {
                    let purpose = JobPurpose::MovePrimary {
                        instance: instance.name.clone(),
                    };
                    let text = format!("Evacuating {} from {}", instance.name, node.name);
                    self.add_job(incident, purpose, ops, &targets, &text);
                }
                Err(why) => self.blocked(incident, why),
            }
            return;
        }
        if let Some(instance) = first_by_name(cluster.secondaries_of(&node.name)) {
            match self.move_secondary(instance, &node.name) {
                Ok(target) => {
                    let op = OpBody::new_secondary(&instance.name, &target);
                    let purpose = JobPurpose::MoveSecondary {
                        instance: instance.name.clone(),
                    };
                    let text = format!(
                        "Moving secondary of {} away from {}",
                        instance.name, node.name
                    );
                    self.add_job(incident, purpose, vec![op], &[target], &text);
                }
                Err(why) => self.blocked(incident, why),
            }
            return;
        }
        self.tag_ready(incident);
    }

    fn live_repair_step(&mut self, incident: &'a Incident) {
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

    fn tag_failed(&mut self, incident: &Incident) {
        let op = OpBody::tag_node(&incident.node, &incident.failed_tag());
        self.add_job(
            incident,
            JobPurpose::TagFailed,
            vec![op],
            &[],
            "marking incident handling as failed",
        );
    }

    /// Opcodes moving `instance` off its primary, and the nodes receiving it.
    pub(super) fn move_primary(
        &mut self,
        instance: &Instance,
        failover: bool,
    ) -> Result<(Vec<OpBody>, Vec<String>), NoMove> {
        let cluster = self.input.cluster;
        let memory = if instance.is_running() {
            instance.memory
        } else {
            0
        };
        match instance.disk_template {
            DiskTemplate::Drbd => {
                let Some(secondary) = instance.secondaries.first().and_then(|s| cluster.node(s))
                else {
                    return Err(NoMove::Impossible(format!(
                        "{} has no secondary node",
                        instance.name
                    )));
                };
                let secondary_usable =
                    self.usable_target(secondary) && self.fits(&secondary.name, memory, 0);
                if secondary_usable {
                    self.reserve(&secondary.name, memory, 0);
                    let switch = if failover {
                        OpBody::failover(&instance.name, None)
                    } else {
                        OpBody::migrate(&instance.name, None)
                    };
                    // After the switch the evacuated node is the secondary; move the mirror
                    // away in the same job when a node has room for it (as hail does).
                    let exclude = [instance.primary.as_str(), secondary.name.as_str()];
                    return Ok(
                        match self.pick_target(instance, 0, instance.disk, &exclude) {
                            Ok(mirror) => {
                                self.reserve(&mirror, 0, instance.disk);
                                let replace = OpBody::new_secondary(&instance.name, &mirror);
                                (vec![switch, replace], vec![secondary.name.clone(), mirror])
                            }
                            Err(_) => (vec![switch], vec![secondary.name.clone()]),
                        },
                    );
                }
                // The secondary cannot take the instance: give it a new secondary first;
                // the move itself follows in a later round.
                let exclude = [instance.primary.as_str(), secondary.name.as_str()];
                let target = self.pick_target(instance, memory, instance.disk, &exclude)?;
                self.reserve(&target, 0, instance.disk);
                Ok((
                    vec![OpBody::new_secondary(&instance.name, &target)],
                    vec![target],
                ))
            }
            template if template.is_externally_mirrored() => {
                let target = self.pick_target(instance, memory, 0, &[instance.primary.as_str()])?;
                self.reserve(&target, memory, 0);
                let op = if failover {
                    OpBody::failover(&instance.name, Some(&target))
                } else {
                    OpBody::migrate(&instance.name, Some(&target))
                };
                Ok((vec![op], vec![target]))
            }
            DiskTemplate::Plain | DiskTemplate::File => {
                // Not mirrored: only a copy with downtime (gnt-instance move) empties the node.
                let target = self.pick_target(
                    instance,
                    memory,
                    instance.disk,
                    &[instance.primary.as_str()],
                )?;
                self.reserve(&target, memory, instance.disk);
                Ok((
                    vec![OpBody::instance_move(&instance.name, &target)],
                    vec![target],
                ))
            }
            other => Err(NoMove::Impossible(format!(
                "{} has disk template {:?}, which maintd cannot move",
                instance.name, other
            ))),
        }
    }

    fn move_secondary(&mut self, instance: &Instance, from: &str) -> Result<String, NoMove> {
        let target = self.pick_target(
            instance,
            0,
            instance.disk,
            &[instance.primary.as_str(), from],
        )?;
        self.reserve(&target, 0, instance.disk);
        Ok(target)
    }

    fn usable_target(&self, node: &Node) -> bool {
        node.accepts_instances()
            && !self.touched.contains(&node.name)
            && !self.evacuating.contains(node.name.as_str())
    }

    fn fits(&self, node: &str, memory: u64, disk: u64) -> bool {
        self.free
            .get(node)
            .is_some_and(|&(m, d)| m >= memory && d >= disk)
    }

    fn reserve(&mut self, node: &str, memory: u64, disk: u64) {
        if let Some((m, d)) = self.free.get_mut(node) {
            *m = m.saturating_sub(memory);
            *d = d.saturating_sub(disk);
        }
    }

    /// The usable node of the instance's group with the most of the needed resource free
    /// (memory, else disk); ties go to the first name.
    fn pick_target(
        &self,
        instance: &Instance,
        memory: u64,
        disk: u64,
        exclude: &[&str],
    ) -> Result<String, NoMove> {
        let cluster: &ClusterSnapshot = self.input.cluster;
        let group = cluster.node(&instance.primary).map(|n| n.group.as_str());
        let candidates: Vec<&Node> = cluster
            .nodes
            .iter()
            .filter(|n| Some(n.group.as_str()) == group && !exclude.contains(&n.name.as_str()))
            .filter(|n| n.accepts_instances() && !self.evacuating.contains(n.name.as_str()))
            .filter(|n| self.fits(&n.name, memory, disk))
            .collect();
        if candidates.is_empty() {
            return Err(NoMove::Wait(format!(
                "no node of its group has room for {} ({memory} MiB memory, {disk} MiB disk)",
                instance.name
            )));
        }
        candidates
            .into_iter()
            .filter(|n| !self.touched.contains(&n.name))
            .max_by_key(|n| {
                // Rank by the resource the move consumes: memory for a running instance,
                // disk for a mirror.
                let (free_memory, free_disk) = self.free[n.name.as_str()];
                let rank = if memory > 0 {
                    (free_memory, free_disk)
                } else {
                    (free_disk, free_memory)
                };
                (rank, std::cmp::Reverse(n.name.clone()))
            })
            .map(|n| n.name.clone())
            .ok_or_else(|| {
                NoMove::Wait(format!(
                    "every target for {} is busy this round",
                    instance.name
                ))
            })
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

fn first_by_name<'a>(instances: impl Iterator<Item = &'a Instance>) -> Option<&'a Instance> {
    instances.min_by(|a, b| a.name.cmp(&b.name))
}

#[cfg(test)]
mod tests;
