//! The round built on the htools engines, in the 2.17 maintd's order
//! (`src/Ganeti/MaintD/Server.hs` `maintenance`): evacuation steps decided as hail decides
//! them, then harep's repairs, then an hbal balancing step on the nodes nobody else
//! touches.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::round::{NoMove, Round};
use super::{PlanInput, Planner, EXCLUDE_TAG};
use crate::htools::{
    balance::{self, BalanceOptions},
    harep::{
        HarepCluster, HarepRound, InstanceView, NodeView, RepairAction as HarepAction,
        RepairRecord, RepairType, TagChanges,
    },
    load,
    model::Cluster,
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
        let mut admission = work.as_ref().map(|initial| Admission {
            initial: initial.clone(),
            projected: None,
        });
        round.handle_incidents(&mut |round, incident| {
            match (work.as_mut(), admission.as_mut()) {
                (Some(cluster), Some(admission)) => {
                    evacuation_step(round, cluster, admission, incident)
                }
                // Evacuations go on without hail rather than stall.
                _ => round.evacuation_step(incident),
            }
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

/// Nodes harep and balancing leave alone: those with open or failed incidents and those
/// tagged [`EXCLUDE_TAG`].
fn hands_off_nodes(input: &PlanInput<'_>) -> BTreeSet<String> {
    let incidents = input
        .incidents
        .iter()
        .filter(|i| i.status.is_open() || i.status == RepairStatus::Failed)
        .map(|i| i.node.clone());
    let excluded = input
        .cluster
        .nodes
        .iter()
        .filter(|n| n.tags.contains(EXCLUDE_TAG))
        .map(|n| n.name.clone());
    incidents.chain(excluded).collect()
}

/// Whether the snapshot's instance `name` is tagged [`EXCLUDE_TAG`].
fn instance_excluded(cluster: &ClusterSnapshot, name: &str) -> bool {
    cluster
        .instances
        .iter()
        .any(|i| i.name == name && i.tags.contains(EXCLUDE_TAG))
}

/// The model of the cluster as the open evacuations will leave it, for the admission of
/// new ones (N+1).
struct Admission {
    /// The cluster as loaded, whose N+1 failures do not hold new evacuations back.
    initial: Cluster,
    /// The cluster after every evacuation in progress or admitted this round.
    projected: Option<Cluster>,
}

/// 2.17's `handleEvacuation` (`MaintD/HandleIncidents.hs`): drain (once the evacuation is
/// admitted), then one instance per round: the node's first primary (htools' list order),
/// else its first secondary, else the node is empty and gets its tag. No job moves
/// anything onto a node the round may not use.
fn evacuation_step<'a>(
    round: &mut Round<'a>,
    work: &mut Cluster,
    admission: &mut Admission,
    incident: &'a Incident,
) {
    let cluster = round.input.cluster;
    let Some(node) = cluster.node(&incident.node) else {
        return;
    };
    let unstarted = incident.status == RepairStatus::Noted && incident.jobs.is_empty();
    if !node.drained && !node.offline && unstarted {
        if let Err(why) = admit(round, admission, incident) {
            if incident.action == RepairAction::EvacuateFailover {
                // Urgent: it goes ahead, and says what it costs.
                round.plan.notes.push((
                    incident.uuid,
                    format!("evacuating anyway (evacuate-failover): {why}"),
                ));
            } else {
                round
                    .plan
                    .notes
                    .push((incident.uuid, format!("waiting: {why}")));
                return;
            }
        }
    }
    let Some(node) = round.drained_node(incident) else {
        return;
    };
    let Some(idx) = work.node_index(&node.name) else {
        return;
    };
    let Some(inst) = evac::next_instance(work, idx) else {
        round.tag_ready(incident);
        return;
    };
    let name = work.instances[inst].name.clone();
    let tags = &cluster
        .instances
        .iter()
        .find(|i| i.name == name)
        .map(|i| i.tags.clone())
        .unwrap_or_default();
    if let Some(why) = Round::pinned(&name, tags) {
        round.blocked(incident, why);
        return;
    }
    let ex = exclusions(round, work);
    let mut trial = work.clone();
    let step = match evac::next_step(&mut trial, inst, idx, &ex) {
        Ok(step) => step,
        Err(why) => {
            round.blocked(incident, NoMove::Wait(why.note()));
            return;
        }
    };
    let failover =
        incident.action == RepairAction::EvacuateFailover || must_fail_over(incident, &name);
    let ops = if failover {
        step.ops.into_iter().map(migration_to_failover).collect()
    } else {
        step.ops
    };
    let (purpose, text) = match step.kind {
        evac::StepKind::Primary => (
            JobPurpose::MovePrimary {
                instance: name.clone(),
            },
            format!("Evacuating {name} from {}", node.name),
        ),
        evac::StepKind::Secondary if work.instances[inst].pnode == idx => (
            JobPurpose::MoveSecondary {
                instance: name.clone(),
            },
            format!(
                "Giving {name} a usable secondary before moving it off {}",
                node.name
            ),
        ),
        evac::StepKind::Secondary => (
            JobPurpose::MoveSecondary {
                instance: name.clone(),
            },
            format!("Moving secondary of {name} away from {}", node.name),
        ),
    };
    if round.add_job_with_targets(incident, purpose, ops, &step.touched, &step.targets, &text) {
        *work = trial;
    }
}

/// Whether `instance` must be failed over rather than live-migrated for `incident` even
/// though its action allows migration: the instances whose live migration already failed
/// (escalation, `rounds.escalate_to_failover`).
fn must_fail_over(incident: &Incident, instance: &str) -> bool {
    incident.failover_instances.contains(instance)
}

/// The nodes of `work` the round may not use as targets.
fn exclusions(round: &Round<'_>, work: &Cluster) -> evac::Exclusions {
    evac::Exclusions {
        unusable: work
            .nodes
            .iter()
            .map(|n| round.unusable_node(n.name()))
            .collect(),
        busy: work
            .nodes
            .iter()
            .map(|n| round.touched.contains(n.name()))
            .collect(),
    }
}

/// Why an evacuation is not admitted before its drain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum AdmissionRefusal {
    /// The node's instances cannot all be moved elsewhere.
    #[error("the instances of {node} do not fit elsewhere: {why}")]
    DoesNotFit {
        /// The node to evacuate.
        node: String,
        /// Why its evacuation, played out, stops.
        why: evac::StepError,
    },
    /// Afterwards a node of the group would newly fail N+1.
    #[error(
        "evacuating {node} would leave group {group} without N+1 redundancy ({})",
        n1_detail(.failing, .peer.as_deref())
    )]
    BreaksN1 {
        /// The node to evacuate.
        node: String,
        /// Its group.
        group: String,
        /// The node that would fail N+1.
        failing: String,
        /// The primary node whose failover `failing` could not absorb.
        peer: Option<String>,
    },
}

fn n1_detail(failing: &str, peer: Option<&str>) -> String {
    match peer {
        Some(peer) => format!("{failing} could not absorb {peer}'s failover"),
        None => format!("{failing} fails N+1"),
    }
}

/// N+1 admission of an evacuation before its drain: the whole evacuation of the node
/// fits (played as the rounds will play it, on top of the evacuations in progress and
/// those admitted this round) and no node of its group newly fails N+1 afterwards. On
/// success the projection includes this evacuation.
fn admit(
    round: &Round<'_>,
    admission: &mut Admission,
    incident: &Incident,
) -> Result<(), AdmissionRefusal> {
    let unusable: Vec<bool> = admission
        .initial
        .nodes
        .iter()
        .map(|n| round.unusable_node(n.name()))
        .collect();
    let projected = admission.projected.get_or_insert_with(|| {
        // Evacuations already under way (their nodes drained) will empty their nodes.
        let mut projected = admission.initial.clone();
        for other in round.input.incidents {
            if !(other.status.is_open() && other.action.is_evacuation()) {
                continue;
            }
            let drained = round
                .input
                .cluster
                .node(&other.node)
                .is_some_and(|n| n.drained || n.offline);
            if let (true, Some(idx)) = (drained, projected.node_index(&other.node)) {
                let mut trial = projected.clone();
                if evac::simulate_evacuation(&mut trial, idx, &unusable).is_ok() {
                    projected = trial;
                }
            }
        }
        projected
    });
    let Some(idx) = projected.node_index(&incident.node) else {
        return Ok(());
    };
    let mut after = projected.clone();
    evac::mark_drained(&mut after, idx);
    evac::simulate_evacuation(&mut after, idx, &unusable).map_err(|why| {
        AdmissionRefusal::DoesNotFit {
            node: incident.node.clone(),
            why,
        }
    })?;
    let group = after.nodes[idx].data.group;
    if let Some((failing, peer)) = evac::new_n1_failure(&admission.initial, &after, group) {
        return Err(AdmissionRefusal::BreaksN1 {
            node: incident.node.clone(),
            group: after.groups[group].name.clone(),
            failing,
            peer,
        });
    }
    *projected = after;
    Ok(())
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

/// 2.17's `harepTasks` (`MaintD/Autorepairs.hs`) on the round: settle finished repairs,
/// refuse or submit new ones. Instances on nodes with incidents or touched by the round
/// are left for a later round.
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
    let mut excluded = hands_off_nodes(&input);
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
                if job.touched_nodes.iter().any(|n| excluded.contains(n))
                    || instance_excluded(input.cluster, &job.instance)
                {
                    continue;
                }
                // A migration or failover puts the instance on its secondary: that node
                // must be a usable target. Other repairs stay on their nodes or let
                // Ganeti's allocator choose.
                let targets: Vec<String> = match job.repair {
                    RepairType::Migrate | RepairType::Failover => {
                        job.touched_nodes.iter().skip(1).cloned().collect()
                    }
                    RepairType::FixStorage | RepairType::Reinstall => Vec::new(),
                };
                let nodes: BTreeSet<String> = job.touched_nodes.iter().cloned().collect();
                if round.check_job(&nodes, &targets).is_err() {
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
                excluded.extend(nodes.iter().cloned());
                let what = format!("harep: {} of {}", job.repair.as_str(), job.instance);
                round.add_maintenance_job(purpose, job.opcodes, nodes, &targets, &what);
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
    round.add_maintenance_job(purpose, changes.opcodes(), BTreeSet::new(), &[], &what);
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

/// 2.17's `balanceTask` (`MaintD/Balance.hs`) on the round: balance each group over the
/// nodes nobody else touches, and submit the plan's first job set (computed alone:
/// [`balance::balance_first_job_set`]).
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
    let mut excluded = hands_off_nodes(&round.input);
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
    // Instances tagged maintd:exclude stay where they are.
    let mut pinned = work.clone();
    for inst in &mut pinned.instances {
        if inst.tags.iter().any(|t| t == EXCLUDE_TAG) {
            inst.movable = false;
        }
    }
    let work = &pinned;
    for group in 0..work.groups.len() {
        let mut cluster = work.clone();
        // Only the first job set is submitted: steps beyond it are not computed.
        let plan = balance::balance_first_job_set(&mut cluster, group, &opts);
        for step in &plan.steps {
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
            let old = [Some(step.old_pnode), step.old_snode];
            let mut targets = Vec::new();
            if step.pnode != step.old_pnode {
                targets.push(step.pnode);
            }
            targets.extend(step.snode.filter(|s| !old.contains(&Some(*s))));
            let targets: Vec<String> = targets
                .into_iter()
                .map(|n| cluster.nodes[n].name().to_owned())
                .collect();
            let purpose = JobPurpose::Balance { instance };
            round.add_maintenance_job(purpose, ops, nodes, &targets, &what);
        }
    }
}

mod evac;

#[cfg(test)]
mod tests;
