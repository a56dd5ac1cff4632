//! The round built on the htools engines (ALGORITHMS.md §9.1, §10.7, §11): evacuation
//! steps decided as hail decides them, then harep's repairs, then an hbal balancing step on
//! the nodes nobody else touches.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::round::{NoMove, Round};
use super::{PlanInput, Planner};
use crate::htools::{
    balance::{self, BalanceOptions},
    evacuate::{evacuate_in_place, EvacMode, EvacResult},
    harep::{
        HarepCluster, HarepRound, InstanceView, NodeView, RepairAction as HarepAction,
        RepairRecord, RepairType, TagChanges,
    },
    load,
    model::{Cluster, MirrorType},
    snapshot,
};
use crate::model::{
    cluster::ClusterSnapshot,
    diagnose::RepairAction,
    incident::{submission_marker, Incident, JobPurpose, PlannedJob, RepairStatus, RoundPlan},
    job::JobId,
    opcode::OpBody,
};

/// What the htools round does besides evacuating (Ganeti's defaults: neither harep nor
/// balancing).
#[derive(Debug, Clone, PartialEq)]
pub struct HtoolsSettings {
    /// Do harep's work: repair broken instances as their `ganeti:watcher:autorepair:*`
    /// tags allow, tagging them exactly as harep does.
    pub harep: bool,
    /// Seconds of `OP_TEST_DELAY` before each repair (harep's `--job-delay`).
    pub harep_job_delay: f64,
    /// Balance the nodes no incident and no other job of the round touches.
    pub balance: bool,
    /// Minimum gain of a balancing step (2.17's `maint_balance_threshold`); steps must
    /// gain this much once the score is below ten times it.
    pub balance_threshold: f64,
    /// Cap on the steps of a balancing plan (only its first job set is submitted).
    pub balance_max_steps: Option<usize>,
    /// Allow balancing moves that copy disks (replace a secondary).
    pub balance_disk_moves: bool,
    /// Balance on the nodes' measured CPU load (`cpu-avg-load`) instead of htools'
    /// static instance counts.
    pub balance_by_cpu_load: bool,
}

impl Default for HtoolsSettings {
    fn default() -> Self {
        HtoolsSettings {
            harep: false,
            harep_job_delay: 10.0,
            balance: false,
            balance_threshold: 0.1,
            balance_max_steps: None,
            balance_disk_moves: true,
            balance_by_cpu_load: false,
        }
    }
}

/// The daemon's planner: hail's node evacuation one instance per incident and round (with
/// force, as the 2.17 maintd), harep repairs, and the first job set of an hbal plan.
#[derive(Debug, Clone, Default)]
pub struct HtoolsPlanner {
    /// What it does besides evacuating.
    pub settings: HtoolsSettings,
}

impl HtoolsPlanner {
    /// A planner with `settings`.
    pub fn new(settings: HtoolsSettings) -> Self {
        HtoolsPlanner { settings }
    }
}

impl Planner for HtoolsPlanner {
    fn jobs_to_query(&self, cluster: &ClusterSnapshot) -> Vec<JobId> {
        if !self.settings.harep {
            return Vec::new();
        }
        // Pending jobs depend on tags only, not on the time.
        HarepRound::start(&harep_cluster(cluster), 0)
            .map(|round| round.jobs_to_query())
            .unwrap_or_default()
    }

    fn plan(&self, input: PlanInput<'_>) -> RoundPlan {
        let mut round = Round::new(input);
        let mut work = match snapshot::load(input.cluster) {
            Ok(cluster) => Some(cluster),
            Err(e) => {
                round.warn(format!("cannot load the cluster for htools: {e}"));
                None
            }
        };
        round.handle_incidents(&mut |round, incident| match work.as_mut() {
            Some(cluster) => evacuation_step(round, cluster, incident),
            // Evacuations go on without hail rather than stall.
            None => round.evacuation_step(incident),
        });
        if self.settings.harep {
            harep_step(&mut round, &self.settings);
        }
        if let (true, Some(cluster)) = (self.settings.balance, work.as_mut()) {
            balance_step(&mut round, cluster, &self.settings);
        }
        round.finish()
    }
}

/// Nodes whose incidents keep them out of harep and balancing: open and failed ones.
fn incident_nodes(input: &PlanInput<'_>) -> BTreeSet<String> {
    input
        .incidents
        .iter()
        .filter(|i| i.status.is_open() || i.status == RepairStatus::Failed)
        .map(|i| i.node.clone())
        .collect()
}

/// §9.1: drain, then one instance per round: the node's first primary (htools' list
/// order), else its first secondary, else the node is empty and gets its tag.
fn evacuation_step<'a>(round: &mut Round<'a>, work: &mut Cluster, incident: &'a Incident) {
    let Some(node) = round.drained_node(incident) else {
        return;
    };
    let Some(idx) = work.node_index(&node.name) else {
        return;
    };
    let failover = incident.action == RepairAction::EvacuateFailover;
    let first_primary = work.nodes[idx].primaries().next();
    if let Some(inst) = first_primary {
        let name = work.instances[inst].name.clone();
        if work.instances[inst].dt.mirror() == MirrorType::None {
            // hail never moves plain or file instances; a copy with downtime
            // (gnt-instance move) still empties the node.
            plain_move(round, incident, &name, failover);
            return;
        }
        match evacuate_one(work, inst, EvacMode::PrimaryOnly, &round.touched) {
            Ok((ops, targets)) => {
                let ops = if failover {
                    ops.into_iter().map(migration_to_failover).collect()
                } else {
                    ops
                };
                let text = format!("Evacuating {name} from {}", node.name);
                round.add_job(
                    incident,
                    JobPurpose::MovePrimary { instance: name },
                    ops,
                    &targets,
                    &text,
                );
            }
            Err(why) => round.blocked(incident, NoMove::Wait(why)),
        }
        return;
    }
    let first_secondary = work.nodes[idx].secondaries().next();
    if let Some(inst) = first_secondary {
        let name = work.instances[inst].name.clone();
        match evacuate_one(work, inst, EvacMode::SecondaryOnly, &round.touched) {
            Ok((ops, targets)) => {
                let text = format!("Moving secondary of {name} away from {}", node.name);
                round.add_job(
                    incident,
                    JobPurpose::MoveSecondary { instance: name },
                    ops,
                    &targets,
                    &text,
                );
            }
            Err(why) => round.blocked(incident, NoMove::Wait(why)),
        }
        return;
    }
    round.tag_ready(incident);
}

/// The `OP_INSTANCE_MOVE` fallback for an instance hail does not move.
fn plain_move<'a>(round: &mut Round<'a>, incident: &'a Incident, name: &str, failover: bool) {
    let Some(instance) = round
        .input
        .cluster
        .instances
        .iter()
        .find(|i| i.name == name)
    else {
        return;
    };
    match round.move_primary(instance, failover) {
        Ok((ops, targets)) => {
            let text = format!("Evacuating {name} from {}", incident.node);
            let purpose = JobPurpose::MovePrimary {
                instance: name.to_owned(),
            };
            round.add_job(incident, purpose, ops, &targets, &text);
        }
        Err(why) => round.blocked(incident, why),
    }
}

/// hail's evacuation of one instance on `work` (with force, as maintd evacuates). The
/// choice must not touch a node another job of the round touches: if hail's first choice
/// does, it is asked again with those nodes out of reach. On success `work` holds the
/// state after the move; returns the job's opcodes and the instance's new nodes.
fn evacuate_one(
    work: &mut Cluster,
    inst: usize,
    mode: EvacMode,
    busy: &BTreeSet<String>,
) -> Result<(Vec<OpBody>, Vec<String>), String> {
    let name = work.instances[inst].name.clone();
    let attempt = |cluster: &mut Cluster| -> Result<EvacResult, String> {
        let result = evacuate_in_place(cluster, &[inst], mode, true).map_err(|e| e.to_string())?;
        if let Some((_, reason)) = result.failed.first() {
            return Err(format!("hail cannot move {name}: {reason}"));
        }
        Ok(result)
    };
    let conflicts = |result: &EvacResult| {
        result
            .moved
            .iter()
            .flat_map(|(_, _, nodes)| nodes)
            .any(|n| busy.contains(n))
    };
    let mut trial = work.clone();
    let mut result = attempt(&mut trial)?;
    if conflicts(&result) {
        let mut second = work.clone();
        let hidden: Vec<usize> = (0..second.nodes.len())
            .filter(|&n| busy.contains(second.nodes[n].name()) && !second.nodes[n].offline())
            .collect();
        for &n in &hidden {
            second.nodes[n].data.offline = true;
            second.nodes[n].state.offline = true;
        }
        result = attempt(&mut second)
            .map_err(|why| format!("{why} (nodes busy this round excluded)"))?;
        if conflicts(&result) {
            return Err(format!(
                "every target for {name} is busy this round; retrying next round"
            ));
        }
        for &n in &hidden {
            second.nodes[n].data.offline = false;
            second.nodes[n].state.offline = false;
        }
        trial = second;
    }
    *work = trial;
    let targets = result
        .moved
        .first()
        .map(|(_, _, nodes)| nodes.clone())
        .unwrap_or_default();
    let ops = result
        .jobs
        .into_iter()
        .flatten()
        .map(|op| op.body)
        .collect();
    Ok((ops, targets))
}

/// `evacuate-failover`: every live migration becomes a failover (the instance is shut
/// down and started on the target).
fn migration_to_failover(op: OpBody) -> OpBody {
    match op {
        OpBody::InstanceMigrate {
            instance_name,
            target_node,
            ..
        } => OpBody::failover(&instance_name, target_node.as_deref()),
        other => other,
    }
}

/// harep's view of the snapshot.
fn harep_cluster(cluster: &ClusterSnapshot) -> HarepCluster {
    let group_name: BTreeMap<&str, &str> = cluster
        .groups
        .iter()
        .map(|g| (g.uuid.as_str(), g.name.as_str()))
        .collect();
    let node_group: BTreeMap<&str, &str> = cluster
        .nodes
        .iter()
        .map(|n| {
            let group = group_name.get(n.group.as_str()).copied().unwrap_or("");
            (n.name.as_str(), group)
        })
        .collect();
    HarepCluster {
        cluster_tags: cluster.cluster_tags.iter().cloned().collect(),
        group_tags: cluster
            .groups
            .iter()
            .map(|g| (g.name.clone(), g.tags.iter().cloned().collect()))
            .collect(),
        nodes: cluster
            .nodes
            .iter()
            .map(|n| {
                let view = NodeView {
                    offline: n.offline,
                    drained: n.drained,
                    vm_capable: n.vm_capable,
                };
                (n.name.clone(), view)
            })
            .collect(),
        instances: cluster
            .instances
            .iter()
            .map(|i| InstanceView {
                name: i.name.clone(),
                disk_template: i.disk_template,
                primary: i.primary.clone(),
                secondaries: i.secondaries.clone(),
                group: node_group
                    .get(i.primary.as_str())
                    .copied()
                    .unwrap_or("")
                    .to_owned(),
                tags: i.tags.iter().cloned().collect(),
            })
            .collect(),
    }
}

/// §10.7 on the round: settle finished repairs, refuse or submit new ones. Instances on
/// nodes with incidents or touched by the round are left for a later round.
fn harep_step(round: &mut Round<'_>, settings: &HtoolsSettings) {
    let input = round.input;
    let now = input.now_ns.div_euclid(1_000_000_000);
    let mut harep = match HarepRound::start(&harep_cluster(input.cluster), now) {
        Ok(harep) => harep,
        Err(e) => {
            round.warn(format!("harep repairs skipped this round: {e}"));
            return;
        }
    };
    for settled in harep.settle_pending(input.job_statuses, now) {
        match settled {
            Ok(changes) => tag_job(round, &changes, "harep: repair finished"),
            Err(e) => round.warn(format!("harep: {e}")),
        }
    }
    let mut excluded = incident_nodes(&input);
    excluded.extend(round.touched.iter().cloned());
    let key_prefix = input.key_prefix;
    let actions = harep.plan_repairs(now, settings.harep_job_delay, {
        let mut n = 0;
        move || {
            n += 1;
            Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("{key_prefix}/harep/{n}").as_bytes(),
            )
            .to_string()
        }
    });
    for action in actions {
        match action {
            HarepAction::Refuse(changes) => {
                tag_job(round, &changes, "harep: repair not allowed by policy")
            }
            HarepAction::Submit(job) => {
                if job.touched_nodes.iter().any(|n| excluded.contains(n)) {
                    continue;
                }
                // The superseded tags are removed with the `pending` tag, once the job id
                // is known.
                let replaces = harep
                    .record_submission(&job, Vec::new())
                    .map(|changes| changes.remove)
                    .unwrap_or_default();
                let purpose = JobPurpose::HarepRepair {
                    instance: job.instance.clone(),
                    repair: job.repair.as_str().to_owned(),
                    uuid: job.uuid.clone(),
                    timestamp: job.timestamp,
                    replaces,
                };
                let nodes: BTreeSet<String> = job.touched_nodes.iter().cloned().collect();
                excluded.extend(nodes.iter().cloned());
                let what = format!("harep: {} of {}", job.repair.as_str(), job.instance);
                round.add_maintenance_job(purpose, job.opcodes, nodes, &what);
            }
        }
    }
}

fn tag_job(round: &mut Round<'_>, changes: &TagChanges, what: &str) {
    if changes.is_empty() {
        return;
    }
    let purpose = JobPurpose::HarepTags {
        instance: changes.instance.clone(),
    };
    let what = format!("{what} ({})", changes.instance);
    round.add_maintenance_job(purpose, changes.opcodes(), BTreeSet::new(), &what);
}

/// The follow-up jobs adding the `pending` tag of submitted harep repairs, named by their
/// job ids (harep tags right after submitting). `repairs` are the round's repairs still
/// awaiting it: key, purpose and job id. Returns the keys followed up and the jobs.
pub fn pending_tag_jobs(
    repairs: &[(String, JobPurpose, JobId)],
    now_ns: i64,
) -> (Vec<String>, Vec<PlannedJob>) {
    let mut origins = Vec::new();
    let mut jobs = Vec::new();
    for (key, purpose, id) in repairs {
        let JobPurpose::HarepRepair {
            instance,
            repair,
            uuid,
            timestamp,
            replaces,
        } = purpose
        else {
            continue;
        };
        origins.push(key.clone());
        let Some(repair) = RepairType::parse(repair) else {
            continue;
        };
        let record = RepairRecord::new(repair, uuid.clone(), *timestamp, vec![*id], None);
        let changes = TagChanges {
            instance: instance.clone(),
            add: Some(record.format_tag()),
            remove: replaces.clone(),
        };
        let key = format!("{key}-pending");
        let text = format!(
            "harep: repair of {instance} submitted as job {id} ({}",
            submission_marker(&key)
        );
        jobs.push(PlannedJob {
            key,
            incident: None,
            purpose: JobPurpose::HarepTags {
                instance: instance.clone(),
            },
            nodes: BTreeSet::new(),
            ops: changes
                .opcodes()
                .into_iter()
                .map(|op| op.with_reason(text.clone(), now_ns))
                .collect(),
        });
    }
    (origins, jobs)
}

/// §6.2 on the round: balance each group over the nodes nobody else touches, and submit
/// the plan's first job set.
fn balance_step(round: &mut Round<'_>, work: &Cluster, settings: &HtoolsSettings) {
    let loaded;
    let work = if settings.balance_by_cpu_load {
        let mut with_loads = work.clone();
        let loads = round.input.node_loads;
        if let Err(e) = load::apply_cpu_loads(&mut with_loads, |n| loads.get(n).copied()) {
            round.warn(format!("balancing skipped this round: {e}"));
            return;
        }
        loaded = with_loads;
        &loaded
    } else {
        work
    };
    let mut excluded = incident_nodes(&round.input);
    excluded.extend(round.touched.iter().cloned());
    let allowed: Vec<usize> = (0..work.nodes.len())
        .filter(|&n| !excluded.contains(work.nodes[n].name()))
        .collect();
    if allowed.is_empty() {
        return;
    }
    let opts = BalanceOptions {
        disk_moves: settings.balance_disk_moves,
        min_gain: settings.balance_threshold,
        min_gain_limit: 10.0 * settings.balance_threshold,
        max_steps: settings.balance_max_steps,
        // maintd iterates until no step is good enough, without hbal's optimum check.
        min_score: f64::NEG_INFINITY,
        allowed_nodes: Some(allowed),
        ..BalanceOptions::default()
    };
    for group in 0..work.groups.len() {
        let mut cluster = work.clone();
        let plan = balance::balance_group(&mut cluster, group, &opts, &mut |_| {});
        let Some(first) = balance::job_sets(&plan.steps).into_iter().next() else {
            continue;
        };
        for step in first.into_iter().map(|i| &plan.steps[i]) {
            let nodes: BTreeSet<String> = step
                .involved_nodes()
                .into_iter()
                .map(|n| cluster.nodes[n].name().to_owned())
                .collect();
            if nodes.iter().any(|n| round.touched.contains(n)) {
                continue;
            }
            let instance = cluster.instances[step.instance].name.clone();
            let what = format!(
                "balancing: {instance} {} (score {:.8})",
                balance::move_name(&cluster, step.mv),
                step.score
            );
            let ops = balance::step_opcodes(&cluster, step);
            round.add_maintenance_job(JobPurpose::Balance { instance }, ops, nodes, &what);
        }
    }
}

#[cfg(test)]
mod tests;
