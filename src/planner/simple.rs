//! A capacity-respecting placement that evacuates one instance per node and round.

use super::{
    round::{NoMove, Round},
    PlanInput, Planner,
};
use crate::model::{
    cluster::{ClusterSnapshot, DiskTemplate, Instance, Node},
    diagnose::RepairAction,
    incident::{Incident, JobPurpose, RoundPlan},
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

impl<'a> Round<'a> {
    /// The simple evacuation step: drain, then one instance per round to the node with
    /// the most free memory.
    pub(super) fn evacuation_step(&mut self, incident: &'a Incident) {
        let cluster = self.input.cluster;
        let Some(node) = self.drained_node(incident) else {
            return;
        };
        if let Some(instance) = first_by_name(cluster.primaries_of(&node.name)) {
            // Escalated instances (their live migration failed) are failed over.
            let failover = incident.action == RepairAction::EvacuateFailover
                || incident.failover_instances.contains(&instance.name);
            if let Some(why) = Round::pinned(&instance.name, &instance.tags) {
                self.blocked(incident, why);
                return;
            }
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
            if let Some(why) = Round::pinned(&instance.name, &instance.tags) {
                self.blocked(incident, why);
                return;
            }
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
                    let touched = [target, instance.primary.clone()];
                    self.add_job_with_targets(
                        incident,
                        purpose,
                        vec![op],
                        &touched,
                        &touched[..1],
                        &text,
                    );
                }
                Err(why) => self.blocked(incident, why),
            }
            return;
        }
        self.tag_ready(incident);
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
        self.target_refusal(&node.name).is_none()
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
            .filter(|n| !self.unusable_node(&n.name))
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
}

fn first_by_name<'a>(instances: impl Iterator<Item = &'a Instance>) -> Option<&'a Instance> {
    instances.min_by(|a, b| a.name.cmp(&b.name))
}

#[cfg(test)]
mod tests;
