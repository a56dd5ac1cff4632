//! Node evacuation exactly as `hail`'s `node-evacuate` request (htools'
//! `Cluster/Evacuate.hs` `tryNodeEvac`).
//!
//! [`evacuate`] relocates the given instances one after the other, in request order, on
//! an evolving copy of the cluster (an earlier success changes what a later instance
//! sees; a failure changes nothing), exactly as hail 3.0.2 does:
//!
//! - `plain` and `file` instances cannot be relocated;
//! - externally mirrored and diskless instances fail over to the best node of their
//!   group (`fa:T`), except in mode secondary-only, where they fail;
//! - DRBD instances: primary-only fails over to the current secondary (no search);
//!   secondary-only replaces the secondary with the best node (`r:T`); all tries every
//!   ordered (primary, secondary) pair of available nodes (`r:p`, failover, `r:s`,
//!   preceded by a failover when the primary is offline).
//!
//! "Best" is the lowest score (`compCV`) of the instance's group after the move; on equal
//! scores the **later** candidate wins (the opposite of balancing). The candidates are the
//! nodes of the instance's group in index order minus every *evacuated* node (the
//! primaries and, for DRBD, the secondaries of **all** listed instances, depending on the
//! mode), minus the offline nodes, minus the instance's own primary.
//!
//! The result has hail's shape: moved instances with their group and new nodes, failed
//! instances with hail's message, and one opcode list per moved instance
//! ([`EvacResult::to_json`] renders it as hail does).

use std::fmt;
use std::str::FromStr;

use serde_json::{json, Map, Value};

use crate::htools::balance::{BalanceOptions, MoveEstimates};
use crate::htools::model::{Cluster, DiskTemplate, FailMode, Instance, MirrorType, Move, Node};
use crate::htools::score;
use crate::model::opcode::{OpBody, Opcode, ReplaceDisksMode};

/// What to move off the evacuated nodes (hail's `evac_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvacMode {
    /// `primary-only`: give every listed instance a new primary.
    PrimaryOnly,
    /// `secondary-only`: give every listed (DRBD) instance a new secondary.
    SecondaryOnly,
    /// `all`: give every listed instance new primary and secondary nodes.
    All,
}

impl EvacMode {
    /// hail's name of the mode (`primary-only`, `secondary-only`, `all`).
    pub fn name(self) -> &'static str {
        match self {
            EvacMode::PrimaryOnly => "primary-only",
            EvacMode::SecondaryOnly => "secondary-only",
            EvacMode::All => "all",
        }
    }

    /// Whether the instances' primaries are being evacuated.
    fn moves_primary(self) -> bool {
        self != EvacMode::SecondaryOnly
    }

    /// Whether the instances' secondaries are being evacuated.
    fn moves_secondary(self) -> bool {
        self != EvacMode::PrimaryOnly
    }
}

impl fmt::Display for EvacMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EvacMode {
    type Err = EvacError;

    /// Accepts hail's names and the short `primary` / `secondary`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "primary" | "primary-only" => Ok(EvacMode::PrimaryOnly),
            "secondary" | "secondary-only" => Ok(EvacMode::SecondaryOnly),
            "all" => Ok(EvacMode::All),
            other => Err(EvacError::UnknownMode(other.to_owned())),
        }
    }
}

/// Why an evacuation request could not be run at all (per-instance failures are part of
/// the [`EvacResult`] instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvacError {
    /// No node has this name.
    #[error("unknown node {0:?}")]
    UnknownNode(String),
    /// No instance has this name.
    #[error("unknown instance {0:?}")]
    UnknownInstance(String),
    /// An instance index out of range.
    #[error("instance index {0} out of range")]
    InstanceIndex(usize),
    /// A node index out of range.
    #[error("node index {0} out of range")]
    NodeIndex(usize),
    /// Not an evacuation mode.
    #[error("unknown evacuation mode {0:?} (primary, secondary or all)")]
    UnknownMode(String),
}

/// The outcome of an evacuation, in hail's shape and processing order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvacResult {
    /// Moved instances: (instance, group of its new primary, new nodes: primary first,
    /// then the secondary for DRBD).
    pub moved: Vec<(String, String, Vec<String>)>,
    /// Instances that could not be moved, with hail's reason.
    pub failed: Vec<(String, String)>,
    /// One job (opcode list) per moved instance, in the order of `moved`. The opcodes
    /// carry no reason trail; the submitter adds its own.
    pub jobs: Vec<Vec<Opcode>>,
}

impl EvacResult {
    /// hail's summary line: `<n> instances failed to move and <m> were moved
    /// successfully`.
    pub fn info(&self) -> String {
        format!(
            "{} instances failed to move and {} were moved successfully",
            self.failed.len(),
            self.moved.len()
        )
    }

    /// The result as hail prints it inside its answer's `result`, keyed:
    /// `{"moved": [[instance, group, [nodes]]], "failed": [[instance, reason]],
    /// "jobs": [[opcode, ...], ...]}`, every opcode with exactly hail's fields.
    pub fn to_json(&self) -> Value {
        json!({
            "moved": self
                .moved
                .iter()
                .map(|(inst, group, nodes)| json!([inst, group, nodes]))
                .collect::<Vec<_>>(),
            "failed": self
                .failed
                .iter()
                .map(|(inst, reason)| json!([inst, reason]))
                .collect::<Vec<_>>(),
            "jobs": self
                .jobs
                .iter()
                .map(|job| job.iter().map(hail_opcode_json).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        })
    }

    /// A human-readable report: one line per moved instance with its opcodes, one per
    /// failure, then hail's summary line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for ((inst, group, nodes), job) in self.moved.iter().zip(&self.jobs) {
            out.push_str(&format!("{inst} => {} (group {group})\n", nodes.join(":")));
            for op in job {
                out.push_str(&format!("    {}\n", describe_opcode(op)));
            }
        }
        for (inst, reason) in &self.failed {
            out.push_str(&format!("{inst} failed: {reason}\n"));
        }
        out.push_str(&self.info());
        out.push('\n');
        out
    }
}

/// An opcode as hail writes it: `OP_ID`, the instance and every parameter hail sets
/// (`OP_INSTANCE_MIGRATE`: `target_node` for `fa`, `allow_runtime_changes`,
/// `ignore_ipolicy`, `cleanup`, `allow_failover`, `ignore_hvversions`;
/// `OP_INSTANCE_REPLACE_DISKS`: `mode`, `remote_node`, `disks`, `early_release`,
/// `ignore_ipolicy`), without a reason trail. Other opcodes are written as maintd
/// submits them, minus the reason trail.
pub fn hail_opcode_json(op: &Opcode) -> Value {
    match &op.body {
        OpBody::InstanceMigrate {
            instance_name,
            mode,
            target_node,
            allow_failover,
            ignore_hvversions,
            allow_runtime_changes,
            cleanup,
        } => {
            let mut m = Map::new();
            m.insert("OP_ID".into(), json!(op.body.op_id()));
            m.insert("instance_name".into(), json!(instance_name));
            if let Some(mode) = mode {
                m.insert("mode".into(), json!(mode));
            }
            if let Some(target) = target_node {
                m.insert("target_node".into(), json!(target));
            }
            m.insert("allow_runtime_changes".into(), json!(allow_runtime_changes));
            m.insert("ignore_ipolicy".into(), json!(false));
            m.insert("cleanup".into(), json!(cleanup));
            m.insert("allow_failover".into(), json!(allow_failover));
            m.insert("ignore_hvversions".into(), json!(ignore_hvversions));
            Value::Object(m)
        }
        OpBody::InstanceReplaceDisks {
            instance_name,
            mode,
            remote_node,
            disks,
            early_release,
            ..
        } => {
            let mut m = Map::new();
            m.insert("OP_ID".into(), json!(op.body.op_id()));
            m.insert("instance_name".into(), json!(instance_name));
            m.insert("early_release".into(), json!(early_release));
            m.insert("ignore_ipolicy".into(), json!(false));
            m.insert("mode".into(), json!(mode));
            m.insert("disks".into(), json!(disks));
            if let Some(node) = remote_node {
                m.insert("remote_node".into(), json!(node));
            }
            Value::Object(m)
        }
        other => {
            let mut v = serde_json::to_value(other).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.remove("reason");
            }
            v
        }
    }
}

/// One line describing an evacuation opcode (`migrate inst`, `migrate inst to node`,
/// `replace-disks inst new secondary node`).
fn describe_opcode(op: &Opcode) -> String {
    match &op.body {
        OpBody::InstanceMigrate {
            instance_name,
            target_node: Some(target),
            ..
        } => format!("migrate {instance_name} to {target}"),
        OpBody::InstanceMigrate { instance_name, .. } => format!("migrate {instance_name}"),
        OpBody::InstanceReplaceDisks {
            instance_name,
            remote_node: Some(node),
            ..
        } => format!("replace-disks {instance_name} new secondary {node}"),
        other => other.op_id().to_owned(),
    }
}

/// The instances a `node-evacuate` of `nodes` in `mode` moves, in index order (the order
/// of Ganeti's request): those whose primary is one of `nodes` (modes primary-only and
/// all) or whose secondary is (modes secondary-only and all).
pub fn instances_on_nodes(cluster: &Cluster, nodes: &[usize], mode: EvacMode) -> Vec<usize> {
    cluster
        .instances
        .iter()
        .enumerate()
        .filter(|(_, inst)| {
            (mode.moves_primary() && nodes.contains(&inst.pnode))
                || (mode.moves_secondary() && inst.snode.is_some_and(|s| nodes.contains(&s)))
        })
        .map(|(idx, _)| idx)
        .collect()
}

/// Evacuates the nodes called `node_names` in `mode`: selects their instances with
/// [`instances_on_nodes`] and runs [`evacuate`]. `force` ignores the soft checks (hail's
/// `--ignore-soft-errors`; maintd's own evacuation always forces).
pub fn evacuate_nodes(
    cluster: &Cluster,
    node_names: &[&str],
    mode: EvacMode,
    force: bool,
) -> Result<EvacResult, EvacError> {
    let nodes = node_names
        .iter()
        .map(|name| {
            cluster
                .node_index(name)
                .ok_or_else(|| EvacError::UnknownNode((*name).to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let instances = instances_on_nodes(cluster, &nodes, mode);
    evacuate(cluster, &instances, mode, force)
}

/// Evacuates `instances` (indices, in request order) in `mode` on a copy of `cluster`;
/// see [`evacuate_in_place`].
pub fn evacuate(
    cluster: &Cluster,
    instances: &[usize],
    mode: EvacMode,
    force: bool,
) -> Result<EvacResult, EvacError> {
    let mut work = cluster.clone();
    evacuate_in_place(&mut work, instances, mode, force)
}

/// Evacuates `instances` (indices, in request order) in `mode`, hail's `tryNodeEvac`,
/// leaving `cluster` in the state after the successful moves. `force` ignores the soft
/// checks. An index out of range is an error and changes nothing.
pub fn evacuate_in_place(
    cluster: &mut Cluster,
    instances: &[usize],
    mode: EvacMode,
    force: bool,
) -> Result<EvacResult, EvacError> {
    evacuate_in_place_excluding(cluster, instances, mode, force, &[])
}

/// [`evacuate_in_place`] with the nodes `unusable` (indices) also kept out of every
/// target search, as if they were evacuated too. The scores are unchanged (the nodes keep
/// their state); a DRBD failover in mode primary-only still goes to the secondary, whatever
/// it is: callers check it. An index out of range is an error and changes nothing.
pub fn evacuate_in_place_excluding(
    cluster: &mut Cluster,
    instances: &[usize],
    mode: EvacMode,
    force: bool,
    unusable: &[usize],
) -> Result<EvacResult, EvacError> {
    evacuate_with(cluster, instances, mode, force, unusable, true)
}

/// [`evacuate_in_place_excluding`], scoring every target exactly (no screen): the
/// reference the tests hold the screened search to.
#[cfg(test)]
fn evacuate_unscreened(
    cluster: &mut Cluster,
    instances: &[usize],
    mode: EvacMode,
    force: bool,
) -> Result<EvacResult, EvacError> {
    evacuate_with(cluster, instances, mode, force, &[], false)
}

/// [`evacuate_in_place_excluding`], the target searches screened by estimates or not
/// (`screen`; the same decisions either way).
fn evacuate_with(
    cluster: &mut Cluster,
    instances: &[usize],
    mode: EvacMode,
    force: bool,
    unusable: &[usize],
    screen: bool,
) -> Result<EvacResult, EvacError> {
    if let Some(&bad) = instances.iter().find(|&&i| i >= cluster.instances.len()) {
        return Err(EvacError::InstanceIndex(bad));
    }
    if let Some(&bad) = unusable.iter().find(|&&n| n >= cluster.nodes.len()) {
        return Err(EvacError::NodeIndex(bad));
    }
    // hail evacuates every instance as it was in the request, even one listed twice.
    let initial: Vec<Instance> = instances
        .iter()
        .map(|&i| cluster.instances[i].clone())
        .collect();
    let mut excluded = vec![false; cluster.nodes.len()];
    for inst in &initial {
        if mode.moves_primary() {
            excluded[inst.pnode] = true;
        }
        if mode.moves_secondary() && inst.dt == DiskTemplate::Drbd {
            if let Some(s) = inst.snode {
                excluded[s] = true;
            }
        }
    }
    for (idx, node) in cluster.nodes.iter().enumerate() {
        if node.offline() {
            excluded[idx] = true;
        }
    }
    for &n in unusable {
        excluded[n] = true;
    }
    let groups: Vec<Vec<usize>> = (0..cluster.groups.len())
        .map(|g| cluster.group_nodes(g))
        .collect();
    let mut result = EvacResult::default();
    for (&idx, inst) in instances.iter().zip(&initial) {
        let group = cluster.nodes[inst.pnode].data.group;
        let group_nodes = &groups[group];
        let avail: Vec<usize> = group_nodes
            .iter()
            .copied()
            .filter(|&n| !excluded[n] && n != inst.pnode)
            .collect();
        let current = std::mem::replace(&mut cluster.instances[idx], inst.clone());
        let mut evac = Evacuator {
            cluster: &mut *cluster,
            idx,
            group,
            group_nodes,
            force,
            screen,
        };
        match evac.relocate(mode, &avail) {
            Ok(moves) => {
                let moved = &cluster.instances[idx];
                let new_group = cluster.nodes[moved.pnode].data.group;
                result.moved.push((
                    moved.name.clone(),
                    cluster.groups[new_group].name.clone(),
                    moved
                        .all_nodes()
                        .map(|n| cluster.nodes[n].name().to_owned())
                        .collect(),
                ));
                result.jobs.push(
                    moves
                        .iter()
                        .map(|step| step.opcode(cluster, &moved.name))
                        .collect(),
                );
            }
            Err(reason) => {
                cluster.instances[idx] = current;
                result.failed.push((inst.name.clone(), reason));
            }
        }
    }
    Ok(result)
}

/// The three moves evacuation is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `f`: fail over to the secondary.
    Failover,
    /// `fa:T`: fail over to node T (externally mirrored and diskless).
    FailoverTo(usize),
    /// `r:T`: new secondary T (DRBD).
    NewSecondary(usize),
}

impl Step {
    /// The model's move.
    fn to_move(self) -> Move {
        match self {
            Step::Failover => Move::Failover,
            Step::FailoverTo(t) => Move::FailoverToAny(t),
            Step::NewSecondary(t) => Move::ReplaceSecondary(t),
        }
    }

    /// Its opcode (as htools' `iMoveToJob`): a migration (`target_node` for `fa:T`) or a
    /// replacement of the secondary.
    fn opcode(self, cluster: &Cluster, instance: &str) -> Opcode {
        let node_name = |n: usize| cluster.nodes[n].name().to_owned();
        let body = match self {
            Step::Failover => migrate(instance, None),
            Step::FailoverTo(t) => migrate(instance, Some(node_name(t))),
            Step::NewSecondary(t) => OpBody::InstanceReplaceDisks {
                instance_name: instance.to_owned(),
                mode: ReplaceDisksMode::ReplaceNewSecondary,
                remote_node: Some(node_name(t)),
                disks: Vec::new(),
                early_release: false,
                iallocator: None,
            },
        };
        Opcode {
            body,
            reason: Vec::new(),
        }
    }
}

/// hail's `OP_INSTANCE_MIGRATE`: cluster-default mode, failover allowed.
fn migrate(instance: &str, target_node: Option<String>) -> OpBody {
    OpBody::InstanceMigrate {
        instance_name: instance.to_owned(),
        mode: None,
        target_node,
        allow_failover: true,
        ignore_hvversions: true,
        allow_runtime_changes: false,
        cleanup: false,
    }
}

/// The relocation of one instance on the evolving cluster.
struct Evacuator<'a> {
    cluster: &'a mut Cluster,
    /// The instance.
    idx: usize,
    /// The group of its primary before the evacuation, whose score decides, and its
    /// nodes.
    group: usize,
    group_nodes: &'a [usize],
    /// Ignore soft checks.
    force: bool,
    /// Whether target searches screen the targets by estimated score first (the same
    /// choice as scoring every one exactly, see [`Evacuator::one_node`]).
    screen: bool,
}

/// The nodes and instance placement a trial changed, to undo it.
struct Undo {
    nodes: Vec<(usize, Node)>,
    placement: (usize, Option<usize>, i64),
}

impl Evacuator<'_> {
    /// Relocates the instance in `mode` to nodes among `avail`; on success the moves are
    /// applied and returned, on failure the cluster is unchanged and hail's message
    /// returned.
    fn relocate(&mut self, mode: EvacMode, avail: &[usize]) -> Result<Vec<Step>, String> {
        let dt = self.cluster.instances[self.idx].dt;
        match (dt.mirror(), mode) {
            (MirrorType::None, _) => Err(format!(
                "Instances of type {} cannot be relocated",
                dt.name()
            )),
            (MirrorType::External, EvacMode::SecondaryOnly) => Err(format!(
                "Instances with disk template '{}' can't execute change secondary",
                dt.name()
            )),
            (MirrorType::External, _) => self.one_node(avail, Step::FailoverTo),
            (MirrorType::Internal, EvacMode::PrimaryOnly) => {
                let outcome = self
                    .cluster
                    .simulate_move(self.idx, Move::Failover, self.force)
                    .map_err(|fm| fm.to_string())?;
                self.cluster.apply_move(outcome);
                Ok(vec![Step::Failover])
            }
            (MirrorType::Internal, EvacMode::SecondaryOnly) => {
                self.one_node(avail, Step::NewSecondary)
            }
            (MirrorType::Internal, EvacMode::All) => self.pair(avail),
        }
    }

    /// Tries `make(T)` for every T of `avail` and keeps the best (the later on equal
    /// scores); hail's `evacOneNodeOnly`.
    ///
    /// Scoring the whole group for each of 1,000 targets is most of an evacuation's time,
    /// so the targets are first screened by estimated score ([`MoveEstimates`]): only
    /// those within the estimates' window of the lowest are scored exactly, which always
    /// includes every target with the lowest exact score. The choice, the failures listed
    /// and the order are the same as scoring every target.
    fn one_node(&mut self, avail: &[usize], make: fn(usize) -> Step) -> Result<Vec<Step>, String> {
        let opts = BalanceOptions::default();
        let screened = if self.screen {
            let cluster: &Cluster = self.cluster;
            MoveEstimates::new(cluster, self.group, &opts).map(|estimates| {
                let mut failures = String::new();
                let mut fits: Vec<(f64, usize)> = Vec::new();
                for &target in avail {
                    match cluster.simulate_move(self.idx, make(target).to_move(), self.force) {
                        Ok(outcome) => fits.push((estimates.estimate(&outcome), target)),
                        Err(fm) => {
                            if fits.is_empty() {
                                failures.push_str(&failure_note(cluster, target, fm));
                            }
                        }
                    }
                }
                let lowest = fits.iter().map(|f| f.0).fold(f64::INFINITY, f64::min);
                let limit = lowest + estimates.window();
                // NaN estimates are scored exactly too.
                let shortlist: Vec<usize> = fits
                    .iter()
                    .filter(|f| f.0.is_nan() || f.0 <= limit)
                    .map(|f| f.1)
                    .collect();
                (shortlist, failures)
            })
        } else {
            None
        };
        let (targets, screened_failures) = match screened {
            Some((shortlist, failures)) => (shortlist, Some(failures)),
            None => (avail.to_vec(), None),
        };
        let mut best: Option<(f64, usize)> = None;
        let mut failures = String::new();
        for &target in &targets {
            match self.trial(&[make(target)]) {
                Ok(score) => {
                    if best.is_none_or(|(old, _)| replaces(old, score)) {
                        best = Some((score, target));
                    }
                }
                Err((_, fm)) => {
                    if best.is_none() {
                        failures.push_str(&failure_note(self.cluster, target, fm));
                    }
                }
            }
        }
        let failures = screened_failures.unwrap_or(failures);
        match best {
            Some((_, target)) => {
                let moves = vec![make(target)];
                self.apply(&moves).map_err(|(_, fm)| fm.to_string())?;
                Ok(moves)
            }
            None => Err(format!("Can't find any good node: {failures}")),
        }
    }

    /// Tries every ordered pair (p, s) of distinct nodes of `avail` (p outer) with the
    /// moves [failover if the primary is offline], `r:p`, failover, `r:s`, and keeps the
    /// best (the later on equal scores); hail's ChangeAll for DRBD.
    fn pair(&mut self, avail: &[usize]) -> Result<Vec<Step>, String> {
        let primary = self.cluster.instances[self.idx].pnode;
        let lead = if self.cluster.nodes[primary].offline() {
            vec![Step::Failover]
        } else {
            Vec::new()
        };
        let plan = |p: usize, s: usize| {
            let mut moves = lead.clone();
            moves.extend([Step::NewSecondary(p), Step::Failover, Step::NewSecondary(s)]);
            moves
        };
        let mut best: Option<(f64, usize, usize)> = None;
        let mut last_failure: Option<String> = None;
        for &p in avail {
            for &s in avail {
                if p == s {
                    continue;
                }
                match self.trial(&plan(p, s)) {
                    Ok(score) => {
                        if best.is_none_or(|(old, _, _)| replaces(old, score)) {
                            best = Some((score, p, s));
                        }
                    }
                    Err((step, fm)) => {
                        last_failure = Some(format!("{}: {fm}", step_label(lead.len(), step)));
                    }
                }
            }
        }
        const PREFIX: &str = "Can't find any good nodes for relocation";
        match (best, last_failure) {
            (Some((_, p, s)), _) => {
                let moves = plan(p, s);
                self.apply(&moves).map_err(|(step, fm)| {
                    format!("{PREFIX}: {}: {fm}", step_label(lead.len(), step))
                })?;
                Ok(moves)
            }
            (None, Some(failure)) => Err(format!("{PREFIX}: Allocation failed: {failure}")),
            (None, None) => Err(format!("{PREFIX}: no nodes available")),
        }
    }

    /// Applies `moves` in sequence, scores the group and undoes them: the score, or the
    /// index of the failing move and why.
    fn trial(&mut self, moves: &[Step]) -> Result<f64, (usize, FailMode)> {
        let mut undo = Vec::with_capacity(moves.len());
        let outcome = self.apply_recording(moves, &mut undo);
        let score = outcome.map(|()| score::score(self.cluster, self.group_nodes));
        for step in undo.into_iter().rev() {
            self.revert(step);
        }
        score
    }

    /// Applies `moves` in sequence for good; on a failure the cluster is unchanged.
    fn apply(&mut self, moves: &[Step]) -> Result<(), (usize, FailMode)> {
        let mut undo = Vec::with_capacity(moves.len());
        let outcome = self.apply_recording(moves, &mut undo);
        if outcome.is_err() {
            for step in undo.into_iter().rev() {
                self.revert(step);
            }
        }
        outcome
    }

    /// Applies `moves` until one fails, recording how to undo each applied one.
    fn apply_recording(
        &mut self,
        moves: &[Step],
        undo: &mut Vec<Undo>,
    ) -> Result<(), (usize, FailMode)> {
        for (step, mv) in moves.iter().enumerate() {
            let outcome = self
                .cluster
                .simulate_move(self.idx, mv.to_move(), self.force)
                .map_err(|fm| (step, fm))?;
            let inst = &self.cluster.instances[self.idx];
            undo.push(Undo {
                nodes: outcome
                    .nodes
                    .iter()
                    .map(|(n, _)| (*n, self.cluster.nodes[*n].clone()))
                    .collect(),
                placement: (inst.pnode, inst.snode, inst.loc_score),
            });
            self.cluster.apply_move(outcome);
        }
        Ok(())
    }

    fn revert(&mut self, undo: Undo) {
        for (n, node) in undo.nodes {
            self.cluster.nodes[n] = node;
        }
        let inst = &mut self.cluster.instances[self.idx];
        (inst.pnode, inst.snode, inst.loc_score) = undo.placement;
    }
}

/// hail's note of a target that failed a single-node search.
fn failure_note(cluster: &Cluster, target: usize, fm: FailMode) -> String {
    format!(" Node {} failed: {fm};", cluster.nodes[target].name())
}

/// Whether a candidate scoring `new` replaces the best so far scoring `old`: unless the
/// old one is strictly lower, so the later of equal candidates wins (and a NaN score,
/// comparing false, always replaces), as in hail's evacuation.
fn replaces(old: f64, new: f64) -> bool {
    old.partial_cmp(&new) != Some(std::cmp::Ordering::Less)
}

/// hail's annotation of step `step` of a ChangeAll plan whose first `lead` steps are the
/// failover off an offline primary.
fn step_label(lead: usize, step: usize) -> &'static str {
    match step.checked_sub(lead) {
        None => "Failing over to the secondary",
        Some(0) => "Changing secondary to new primary",
        Some(1) => "Failing over to new primary",
        _ => "Changing secondary to final secondary",
    }
}

#[cfg(test)]
mod tests;
