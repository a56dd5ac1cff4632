//! One evacuation step per incident and round, decided on the htools model as hail decides
//! it, but never onto a node the round may not use; and the admission check that a node's
//! whole evacuation fits and keeps N+1 before it is drained.
//!
//! hail's primary-only evacuation of a DRBD instance is a plain failover to its current
//! secondary, with no search and, with force, no check that the secondary is online or
//! drained. When that secondary cannot take the instance (drained, offline, under
//! evacuation, excluded) the step is instead hail's change-secondary (`r:T`) onto a node
//! that can also take the failover that follows in a later round: the same moves as hail's
//! `all` mode, one per round.

use crate::htools::{
    evacuate::{evacuate_in_place_excluding, EvacError, EvacMode},
    model::{Cluster, MirrorType, Move},
};
use crate::model::opcode::OpBody;

/// Why the next step of an instance's evacuation cannot be taken, or why a whole
/// evacuation does not play out. [`StepError::note`] is the incident's note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum StepError {
    /// The instance's other node is used by another job of this round.
    #[error("the {role} {node} of {instance} is busy this round")]
    Busy {
        /// `primary` or `secondary`.
        role: &'static str,
        /// The busy node.
        node: String,
        /// The instance.
        instance: String,
    },
    /// No usable node of the group has room for a copy of an unmirrored instance.
    #[error("no node of its group has room for {instance} ({memory} MiB memory, {disk} MiB disk)")]
    NoRoom {
        /// The instance.
        instance: String,
        /// Its memory, MiB.
        memory: i64,
        /// Its disk, MiB.
        disk: i64,
    },
    /// A DRBD instance without a secondary node.
    #[error("{instance} has no secondary node")]
    NoSecondary {
        /// The instance.
        instance: String,
    },
    /// The instance has neither role on the evacuated node.
    #[error("{instance} has no role on {node}")]
    NoRole {
        /// The instance.
        instance: String,
        /// The evacuated node.
        node: String,
    },
    /// The DRBD secondary may not receive the instance (offline, drained, under
    /// evacuation, excluded).
    #[error("its secondary {node} cannot take it")]
    SecondaryUnusable {
        /// The secondary.
        node: String,
    },
    /// hail refuses the move, with its reason.
    #[error("hail cannot move {instance}: {reason}")]
    Hail {
        /// The instance.
        instance: String,
        /// hail's reason.
        reason: String,
    },
    /// hail's evacuation could not be run at all.
    #[error(transparent)]
    Evacuation(#[from] EvacError),
    /// A DRBD instance can neither fail over to its secondary nor get a new secondary
    /// that could take the failover later.
    #[error("{failover}; {new_secondary} (no node can take its secondary, then its primary)")]
    Stranded {
        /// Why it cannot fail over.
        failover: Box<StepError>,
        /// Why no new secondary.
        new_secondary: Box<StepError>,
    },
    /// A played-out evacuation still finds the instance on the node after every step it
    /// could need.
    #[error("{instance} does not leave the node")]
    Stuck {
        /// The instance.
        instance: String,
    },
}

impl StepError {
    /// Whether the step only waits for this round's other jobs or for room, rather than
    /// being refused.
    fn waits(&self) -> bool {
        matches!(self, StepError::Busy { .. } | StepError::NoRoom { .. })
    }

    /// The incident's note: "waiting: " before the steps that wait for other jobs or for
    /// room.
    pub(super) fn note(&self) -> String {
        if self.waits() {
            format!("waiting: {self}")
        } else {
            self.to_string()
        }
    }
}

/// Nodes (by index in the model) that may not receive anything.
#[derive(Debug, Clone)]
pub(super) struct Exclusions {
    /// Not while their state lasts: offline, drained, under evacuation, excluded.
    pub(super) unusable: Vec<bool>,
    /// Used by another job of this round (or a running one of an earlier round).
    pub(super) busy: Vec<bool>,
}

impl Exclusions {
    /// Every node index that may not be a target.
    fn targets_excluded(&self) -> Vec<usize> {
        (0..self.unusable.len())
            .filter(|&n| self.unusable[n] || self.busy[n])
            .collect()
    }

    fn excluded(&self, n: usize) -> bool {
        self.unusable.get(n).copied().unwrap_or(true) || self.busy.get(n).copied().unwrap_or(true)
    }
}

/// What the instance's job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StepKind {
    /// Moves the primary away (migration, failover or copy).
    Primary,
    /// Gives the instance a new secondary: the evacuated node's mirror moves away, or a
    /// DRBD instance gets a usable secondary to fail over to later.
    Secondary,
}

/// The next job for an instance on an evacuated node.
#[derive(Debug, Clone)]
pub(super) struct EvacStep {
    /// Its opcodes (hail's; migrations are still migrations).
    pub(super) ops: Vec<OpBody>,
    /// Every node the job touches besides the evacuated one.
    pub(super) touched: Vec<String>,
    /// The nodes receiving the instance or a new role of it.
    pub(super) targets: Vec<String>,
    /// What it moves.
    pub(super) kind: StepKind,
}

/// The nodes of the instance `inst` (primary, secondary) in `work`.
fn placement(work: &Cluster, inst: usize) -> (usize, Option<usize>) {
    let i = &work.instances[inst];
    (i.pnode, i.snode)
}

/// The nodes that receive the instance or a new role of it between `old` and `new`: a
/// changed primary (even the old secondary: a failover onto it counts), and a secondary
/// that held no role before.
fn new_roles(old: (usize, Option<usize>), new: (usize, Option<usize>)) -> Vec<usize> {
    let mut out = Vec::new();
    if new.0 != old.0 {
        out.push(new.0);
    }
    if let Some(s) = new.1 {
        if s != old.0 && Some(s) != old.1 {
            out.push(s);
        }
    }
    out
}

/// hail's evacuation of the single instance `inst` in `mode`, targets kept out of
/// `excluded`; `work` holds the state after the move on success.
fn hail_one(
    work: &mut Cluster,
    inst: usize,
    mode: EvacMode,
    excluded: &[usize],
) -> Result<Vec<OpBody>, StepError> {
    // In place: an instance that cannot be relocated leaves the cluster as it was (a
    // copy of a 20,000-instance cluster per step took longer than the step).
    let result = evacuate_in_place_excluding(work, &[inst], mode, true, excluded)?;
    if let Some((_, reason)) = result.failed.first() {
        return Err(StepError::Hail {
            instance: work.instances[inst].name.clone(),
            reason: reason.clone(),
        });
    }
    Ok(result
        .jobs
        .into_iter()
        .flatten()
        .map(|op| op.body)
        .collect())
}

/// Decides the next job for instance `inst`, which has a role on the evacuated node
/// `node`, with targets kept out of `ex`. On success `work` holds the state after the
/// job; on failure it is unchanged and the error says why the step waits.
pub(super) fn next_step(
    work: &mut Cluster,
    inst: usize,
    node: usize,
    ex: &Exclusions,
) -> Result<EvacStep, StepError> {
    let old = placement(work, inst);
    let name = work.instances[inst].name.clone();
    let node_name = |w: &Cluster, n: usize| w.nodes[n].name().to_owned();
    let (ops, kind, also_touched) = if old.0 == node {
        match work.instances[inst].dt.mirror() {
            // hail never relocates plain or file instances; a copy with downtime
            // (gnt-instance move) still empties the node.
            MirrorType::None => (plain_move(work, inst, ex)?, StepKind::Primary, None),
            MirrorType::External => (
                hail_one(work, inst, EvacMode::PrimaryOnly, &ex.targets_excluded())?,
                StepKind::Primary,
                None,
            ),
            MirrorType::Internal => {
                let Some(secondary) = old.1 else {
                    return Err(StepError::NoSecondary { instance: name });
                };
                if ex.busy.get(secondary).copied().unwrap_or(true) {
                    return Err(StepError::Busy {
                        role: "secondary",
                        node: node_name(work, secondary),
                        instance: name,
                    });
                }
                let failover = if ex.unusable.get(secondary).copied().unwrap_or(true) {
                    Err(StepError::SecondaryUnusable {
                        node: node_name(work, secondary),
                    })
                } else {
                    hail_one(work, inst, EvacMode::PrimaryOnly, &[])
                };
                match failover {
                    Ok(ops) => (ops, StepKind::Primary, None),
                    Err(why) => (
                        new_secondary_first(work, inst, ex).map_err(|more| {
                            StepError::Stranded {
                                failover: Box::new(why),
                                new_secondary: Box::new(more),
                            }
                        })?,
                        StepKind::Secondary,
                        Some(secondary),
                    ),
                }
            }
        }
    } else if old.1 == Some(node) {
        if ex.busy.get(old.0).copied().unwrap_or(true) {
            return Err(StepError::Busy {
                role: "primary",
                node: node_name(work, old.0),
                instance: name,
            });
        }
        (
            hail_one(work, inst, EvacMode::SecondaryOnly, &ex.targets_excluded())?,
            StepKind::Secondary,
            Some(old.0),
        )
    } else {
        return Err(StepError::NoRole {
            instance: name,
            node: node_name(work, node),
        });
    };
    let new = placement(work, inst);
    let targets: Vec<String> = new_roles(old, new)
        .into_iter()
        .filter(|&n| n != node)
        .map(|n| node_name(work, n))
        .collect();
    let mut touched = targets.clone();
    for n in [Some(new.0), new.1, also_touched].into_iter().flatten() {
        let n = node_name(work, n);
        if n != work.nodes[node].name() && !touched.contains(&n) {
            touched.push(n);
        }
    }
    Ok(EvacStep {
        ops,
        touched,
        targets,
        kind,
    })
}

/// A DRBD instance whose secondary cannot take it gets a new secondary first: hail's
/// change-secondary (`r:T`, its scoring), among the nodes that could then also take the
/// failover (memory), so that the next round can fail over onto it.
fn new_secondary_first(
    work: &mut Cluster,
    inst: usize,
    ex: &Exclusions,
) -> Result<Vec<OpBody>, StepError> {
    let (primary, secondary) = placement(work, inst);
    let group = work.nodes[primary].data.group;
    let mut excluded = ex.targets_excluded();
    for t in work.group_nodes(group) {
        if t == primary || Some(t) == secondary || ex.excluded(t) {
            continue;
        }
        if !secondary_then_failover_fits(work, inst, t) {
            excluded.push(t);
        }
    }
    hail_one(work, inst, EvacMode::SecondaryOnly, &excluded)
}

/// Whether instance `inst` can take node `t` as its new secondary and then fail over to
/// it. `work` is changed for the check and put back: a copy of the whole cluster per
/// candidate node took seconds at 1,000 nodes.
fn secondary_then_failover_fits(work: &mut Cluster, inst: usize, t: usize) -> bool {
    let Ok(replaced) = work.simulate_move(inst, Move::ReplaceSecondary(t), true) else {
        return false;
    };
    let saved_nodes: Vec<_> = replaced
        .nodes
        .iter()
        .map(|(n, _)| (*n, work.nodes[*n].clone()))
        .collect();
    let i = &work.instances[inst];
    let saved_placement = (i.pnode, i.snode, i.loc_score);
    work.apply_move(replaced);
    let fits = work.simulate_move(inst, Move::Failover, true).is_ok();
    for (n, node) in saved_nodes {
        work.nodes[n] = node;
    }
    let i = &mut work.instances[inst];
    (i.pnode, i.snode, i.loc_score) = saved_placement;
    fits
}

/// The `OP_INSTANCE_MOVE` fallback: the usable node of the instance's group with the most
/// free memory (then disk) that can take it; ties go to the first.
fn plain_move(work: &mut Cluster, inst: usize, ex: &Exclusions) -> Result<Vec<OpBody>, StepError> {
    let (primary, _) = placement(work, inst);
    let group = work.nodes[primary].data.group;
    let mut best: Option<((i64, i64), usize, crate::htools::model::MoveOutcome)> = None;
    for t in work.group_nodes(group) {
        if t == primary || ex.excluded(t) {
            continue;
        }
        let Ok(outcome) = work.simulate_move(inst, Move::FailoverToAny(t), true) else {
            continue;
        };
        let state = &work.nodes[t].state;
        let rank = (state.unalloc(), state.f_dsk);
        if best.as_ref().is_none_or(|(r, _, _)| rank > *r) {
            best = Some((rank, t, outcome));
        }
    }
    let inst_ref = &work.instances[inst];
    let Some((_, target, outcome)) = best else {
        return Err(StepError::NoRoom {
            instance: inst_ref.name.clone(),
            memory: inst_ref.mem,
            disk: inst_ref.dsk,
        });
    };
    let op = OpBody::instance_move(&inst_ref.name, work.nodes[target].name());
    work.apply_move(outcome);
    Ok(vec![op])
}

/// The instance the next step of an evacuation of `node` moves: its first primary
/// (htools' list order), else its first secondary.
pub(super) fn next_instance(work: &Cluster, node: usize) -> Option<usize> {
    let n = &work.nodes[node];
    n.primaries().next().or_else(|| n.secondaries().next())
}

/// Plays the whole evacuation of `node` on `work` as the rounds will do it, every
/// instance moved in turn with targets kept out of `unusable`. On failure, why and
/// `work` is left part-way.
pub(super) fn simulate_evacuation(
    work: &mut Cluster,
    node: usize,
    unusable: &[bool],
) -> Result<(), StepError> {
    let ex = Exclusions {
        unusable: unusable.to_vec(),
        busy: vec![false; unusable.len()],
    };
    // Each instance needs at most two steps (new secondary, then failover), and its
    // secondary one more.
    let mut budget = 3 * work.instances.len() + 1;
    while let Some(inst) = next_instance(work, node) {
        if budget == 0 {
            return Err(StepError::Stuck {
                instance: work.instances[inst].name.clone(),
            });
        }
        budget -= 1;
        next_step(work, inst, node, &ex)?;
    }
    Ok(())
}

/// The first node of `group` that fails N+1 in `after` but not in `before`, with the
/// primary node whose failover it could not absorb: `(node, peer)` names.
pub(super) fn new_n1_failure(
    before: &Cluster,
    after: &Cluster,
    group: usize,
) -> Option<(String, Option<String>)> {
    after.group_nodes(group).into_iter().find_map(|n| {
        let node = &after.nodes[n];
        if node.offline() || !node.state.fail_n1 || before.nodes[n].state.fail_n1 {
            return None;
        }
        let peer = node
            .peers()
            .iter()
            .max_by_key(|(_, mem)| *mem)
            .map(|(p, _)| after.nodes[*p].name().to_owned());
        Some((node.name().to_owned(), peer))
    })
}

/// Marks `node` drained in the model (htools-offline, resources kept).
pub(super) fn mark_drained(work: &mut Cluster, node: usize) {
    work.nodes[node].data.offline = true;
    work.nodes[node].state.offline = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_check_puts_the_cluster_back_and_agrees_with_trying_on_a_copy() {
        let spec = crate::htools::generate::Spec::new(12, 120, 5);
        let generated = spec.generate().expect("generated cluster");
        let mut work = generated.cluster().expect("its model");
        let before = work.clone();
        let (mut fits, mut misfits) = (0, 0);
        for inst in 0..work.instances.len() {
            if work.instances[inst].dt.mirror() != MirrorType::Internal {
                continue;
            }
            for t in 0..work.nodes.len() {
                let mut copy = before.clone();
                let on_copy = copy
                    .try_move(inst, Move::ReplaceSecondary(t), true)
                    .and_then(|()| copy.try_move(inst, Move::Failover, true))
                    .is_ok();
                assert_eq!(secondary_then_failover_fits(&mut work, inst, t), on_copy);
                assert!(
                    work == before,
                    "instance {inst}, node {t}: the cluster changed"
                );
                if on_copy {
                    fits += 1;
                } else {
                    misfits += 1;
                }
            }
        }
        assert!(fits > 0 && misfits > 0, "{fits} fits, {misfits} misfits");
    }

    #[test]
    fn a_failover_onto_the_secondary_gives_it_a_new_role() {
        assert_eq!(new_roles((1, Some(2)), (2, Some(1))), vec![2]);
        assert_eq!(new_roles((1, Some(2)), (1, Some(3))), vec![3]);
        assert_eq!(new_roles((1, None), (4, None)), vec![4]);
        assert!(new_roles((1, Some(2)), (1, Some(2))).is_empty());
    }

    #[test]
    fn only_busy_nodes_and_lack_of_room_are_waiting_notes() {
        let busy = StepError::Busy {
            role: "secondary",
            node: "n2".into(),
            instance: "i1".into(),
        };
        assert_eq!(
            busy.note(),
            "waiting: the secondary n2 of i1 is busy this round"
        );
        let room = StepError::NoRoom {
            instance: "i1".into(),
            memory: 512,
            disk: 1024,
        };
        assert_eq!(
            room.note(),
            "waiting: no node of its group has room for i1 (512 MiB memory, 1024 MiB disk)"
        );
        let stranded = StepError::Stranded {
            failover: Box::new(StepError::SecondaryUnusable { node: "n2".into() }),
            new_secondary: Box::new(StepError::Hail {
                instance: "i1".into(),
                reason: "no nodes".into(),
            }),
        };
        assert_eq!(
            stranded.note(),
            "its secondary n2 cannot take it; hail cannot move i1: no nodes \
             (no node can take its secondary, then its primary)"
        );
    }
}
