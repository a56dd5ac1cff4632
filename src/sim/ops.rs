//! What each opcode checks and does to the simulated cluster.
//!
//! Checks and effects both happen when the opcode finishes, against the cluster as it is
//! then. Failures carry Ganeti's exception class, message and error code.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{SimCluster, SimInstance, CANDIDATE_POOL_SIZE};
use crate::model::cluster::DiskTemplate;
use crate::model::job::JobId;
use crate::model::opcode::{OpBody, ReplaceDisksMode, TagKind};

/// Ganeti's error codes (the second argument of `OpPrereqError`).
pub mod codes {
    /// The named object does not exist.
    pub const UNKNOWN_ENTITY: &str = "unknown_entity";
    /// The object is in the wrong state for the operation.
    pub const WRONG_STATE: &str = "wrong_state";
    /// The arguments are invalid.
    pub const WRONG_INPUT: &str = "wrong_input";
    /// Not enough memory or disk.
    pub const INSUFFICIENT_RESOURCES: &str = "insufficient_resources";
}

/// A successful opcode: its result and log messages.
#[derive(Debug, Clone, PartialEq)]
pub struct OpDone {
    /// The LU's result.
    pub result: Value,
    /// Messages for the job's log.
    pub log: Vec<String>,
}

impl OpDone {
    fn null(log: Vec<String>) -> Self {
        OpDone {
            result: Value::Null,
            log,
        }
    }
}

/// A failed opcode, as a Ganeti exception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpFailure {
    /// Exception class, e.g. `OpPrereqError`.
    pub class: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Error code, for `OpPrereqError`.
    pub code: Option<&'static str>,
}

impl OpFailure {
    /// A failed prerequisite check.
    pub fn prereq(message: impl Into<String>, code: &'static str) -> Self {
        OpFailure {
            class: "OpPrereqError",
            message: message.into(),
            code: Some(code),
        }
    }

    /// A failure while executing.
    pub fn exec(message: impl Into<String>) -> Self {
        OpFailure {
            class: "OpExecError",
            message: message.into(),
            code: None,
        }
    }

    /// The failure injected with [`SimCluster::inject_fault`].
    pub fn injected(op_id: &str) -> Self {
        OpFailure::exec(format!("Injected fault: {op_id} failed (simulated)"))
    }

    /// The encoded exception: `[class, [message, code]]` or `[class, [message]]`.
    pub fn encode(&self) -> Value {
        match self.code {
            Some(code) => json!([self.class, [self.message, code]]),
            None => json!([self.class, [self.message]]),
        }
    }
}

type OpResult = Result<OpDone, OpFailure>;

fn unknown_node(name: &str) -> OpFailure {
    OpFailure::prereq(format!("Node '{name}' not known"), codes::UNKNOWN_ENTITY)
}

fn unknown_instance(name: &str) -> OpFailure {
    OpFailure::prereq(
        format!("Instance '{name}' not known"),
        codes::UNKNOWN_ENTITY,
    )
}

fn python_bool(value: bool) -> &'static str {
    if value {
        "True"
    } else {
        "False"
    }
}

/// Ganeti's tag syntax: `^[\w.+*/:@-]+$`, at most 128 characters.
fn check_tag(tag: &str) -> Result<(), OpFailure> {
    let valid_char = |c: char| c.is_alphanumeric() || "_.+*/:@-".contains(c);
    if tag.is_empty() || tag.chars().count() > 128 || !tag.chars().all(valid_char) {
        return Err(OpFailure {
            class: "TagError",
            message: format!("Invalid tag name '{tag}'"),
            code: None,
        });
    }
    Ok(())
}

impl SimCluster {
    /// The locks an opcode needs, named `node/x`, `instance/y`, `group/z` or `cluster`.
    pub(crate) fn op_locks(&self, body: &OpBody) -> BTreeSet<String> {
        let mut locks = BTreeSet::new();
        let mut instance_locks = |name: &str, extra: Option<&String>| {
            locks.insert(format!("instance/{name}"));
            if let Some(instance) = self.instance(name) {
                for node in std::iter::once(&instance.primary).chain(&instance.secondaries) {
                    locks.insert(format!("node/{node}"));
                }
            }
            if let Some(node) = extra {
                locks.insert(format!("node/{node}"));
            }
        };
        match body {
            OpBody::NodeSetParams { node_name, .. } | OpBody::RepairCommand { node_name, .. } => {
                locks.insert(format!("node/{node_name}"));
            }
            OpBody::InstanceMigrate {
                instance_name,
                target_node,
                ..
            }
            | OpBody::InstanceFailover {
                instance_name,
                target_node,
                ..
            } => instance_locks(instance_name, target_node.as_ref()),
            OpBody::InstanceReplaceDisks {
                instance_name,
                remote_node,
                ..
            } => instance_locks(instance_name, remote_node.as_ref()),
            OpBody::InstanceMove {
                instance_name,
                target_node,
                ..
            } => instance_locks(instance_name, Some(target_node)),
            OpBody::InstanceRecreateDisks { instance_name, .. }
            | OpBody::InstanceReinstall { instance_name, .. } => {
                instance_locks(instance_name, None)
            }
            OpBody::TagsSet { kind, name, .. } | OpBody::TagsDel { kind, name, .. } => {
                let object = name.as_deref().unwrap_or_default();
                locks.insert(match kind {
                    TagKind::Cluster => "cluster".to_owned(),
                    TagKind::Node => format!("node/{object}"),
                    TagKind::Instance => format!("instance/{object}"),
                    TagKind::Nodegroup => format!("group/{object}"),
                    TagKind::Network => format!("network/{object}"),
                });
            }
            // Ganeti's default for OP_TEST_DELAY is `no_locks`.
            OpBody::TestDelay { .. } => {}
        }
        locks
    }

    /// Check and apply one opcode at time `at` on behalf of job `job`.
    pub(crate) fn execute(&mut self, body: &OpBody, job: JobId, at: f64) -> OpResult {
        match body {
            OpBody::NodeSetParams {
                node_name,
                drained,
                offline,
                master_candidate,
                ..
            } => self.node_set_params(node_name, *drained, *offline, *master_candidate),
            OpBody::InstanceMigrate {
                instance_name,
                target_node,
                cleanup,
                allow_failover,
                ..
            } => {
                if *cleanup {
                    return Ok(OpDone::null(vec![format!(
                        "Cleaning up migration of instance {instance_name}"
                    )]));
                }
                self.relocate(
                    instance_name,
                    target_node.as_deref(),
                    Relocation::Migrate {
                        allow_failover: *allow_failover,
                    },
                )
            }
            OpBody::InstanceFailover {
                instance_name,
                target_node,
                ..
            } => self.relocate(instance_name, target_node.as_deref(), Relocation::Failover),
            OpBody::InstanceReplaceDisks {
                instance_name,
                mode,
                remote_node,
                ..
            } => self.replace_disks(instance_name, *mode, remote_node.as_deref()),
            OpBody::InstanceMove {
                instance_name,
                target_node,
                ..
            } => self.move_instance(instance_name, target_node),
            // Not simulated: luxi refuses them at submission (not in SUPPORTED_OPCODES).
            OpBody::InstanceRecreateDisks { .. } | OpBody::InstanceReinstall { .. } => {
                Err(OpFailure::prereq(
                    format!("{} is not supported by the simulator", body.op_id()),
                    codes::WRONG_INPUT,
                ))
            }
            OpBody::TagsSet { kind, name, tags } => {
                self.change_tags(*kind, name.as_deref(), tags, true)
            }
            OpBody::TagsDel { kind, name, tags } => {
                self.change_tags(*kind, name.as_deref(), tags, false)
            }
            OpBody::RepairCommand {
                node_name,
                command,
                input,
            } => self.repair_command(node_name, command, input.as_deref(), job, at),
            OpBody::TestDelay { duration, .. } => {
                if !(duration.is_finite() && *duration > 0.0) {
                    return Err(OpFailure::prereq(
                        "Duration must be positive",
                        codes::WRONG_INPUT,
                    ));
                }
                Ok(OpDone::null(Vec::new()))
            }
        }
    }

    fn node_set_params(
        &mut self,
        name: &str,
        drained: Option<bool>,
        offline: Option<bool>,
        master_candidate: Option<bool>,
    ) -> OpResult {
        let is_master = self.master_name() == name;
        let candidates = self.candidate_count();
        let node = self.node_mut(name).map_err(|_| unknown_node(name))?;
        if drained.is_none() && offline.is_none() && master_candidate.is_none() {
            return Err(OpFailure::prereq(
                "Please pass at least one modification",
                codes::WRONG_INPUT,
            ));
        }
        let set_true = [drained, offline, master_candidate]
            .iter()
            .filter(|flag| **flag == Some(true))
            .count();
        if set_true > 1 {
            return Err(OpFailure::prereq(
                "Can't set the node into more than one state at the same time",
                codes::WRONG_INPUT,
            ));
        }
        let demotes =
            drained == Some(true) || offline == Some(true) || master_candidate == Some(false);
        if is_master && demotes {
            return Err(OpFailure::prereq(
                "The master role can be changed only via master-failover",
                codes::WRONG_INPUT,
            ));
        }
        let mut changes = Vec::new();
        // Draining or offlining a candidate demotes it first, as Ganeti does.
        if demotes && node.master_candidate {
            node.master_candidate = false;
            changes.push(("master_candidate", false));
        }
        if master_candidate == Some(true) && !node.master_candidate {
            node.master_candidate = true;
            node.drained = false;
            node.offline = false;
            changes.push(("master_candidate", true));
        }
        if let Some(value) = drained {
            if node.drained != value {
                node.drained = value;
                changes.push(("drained", value));
            }
        }
        if let Some(value) = offline {
            if node.offline != value {
                node.offline = value;
                changes.push(("offline", value));
            }
        }
        // A node back in service promotes itself while the candidate pool is short.
        let back_in_service = drained == Some(false) || offline == Some(false);
        if back_in_service
            && !node.master_candidate
            && !node.drained
            && !node.offline
            && node.master_capable
            && candidates < CANDIDATE_POOL_SIZE
        {
            node.master_candidate = true;
            changes.push(("master_candidate", true));
        }
        let result = changes
            .iter()
            .map(|(param, value)| json!([param, python_bool(*value)]))
            .collect();
        Ok(OpDone {
            result: Value::Array(result),
            log: Vec::new(),
        })
    }

    fn known_instance(&self, name: &str) -> Result<SimInstance, OpFailure> {
        self.instance(name)
            .cloned()
            .ok_or_else(|| unknown_instance(name))
    }

    /// The target node may receive instances: known, online, not drained, vm-capable.
    fn check_target(&self, target: &str) -> Result<(), OpFailure> {
        let node = self.node(target).ok_or_else(|| unknown_node(target))?;
        if node.offline {
            return Err(OpFailure::prereq(
                format!("Can't use offline node {target}"),
                codes::WRONG_STATE,
            ));
        }
        if node.drained {
            return Err(OpFailure::prereq(
                format!("Can't use drained node {target}"),
                codes::WRONG_STATE,
            ));
        }
        if !node.vm_capable {
            return Err(OpFailure::prereq(
                format!("Can't use non-vm_capable node {target}"),
                codes::WRONG_STATE,
            ));
        }
        Ok(())
    }

    fn check_free_memory(&self, target: &str, instance: &SimInstance) -> Result<(), OpFailure> {
        let free = self.memory_free(target);
        if instance.uses_memory() && free < instance.memory {
            return Err(OpFailure::prereq(
                format!(
                    "Not enough memory on node {target} for starting instance {}: needed {} MiB, available {free} MiB",
                    instance.name, instance.memory
                ),
                codes::INSUFFICIENT_RESOURCES,
            ));
        }
        Ok(())
    }

    fn check_free_disk(&self, target: &str, instance: &SimInstance) -> Result<(), OpFailure> {
        let free = self.disk_free(target);
        if instance.uses_local_disk() && free < instance.disk {
            return Err(OpFailure::prereq(
                format!(
                    "Not enough disk space on target node {target} vg xenvg: required {} MiB, available {free} MiB",
                    instance.disk
                ),
                codes::INSUFFICIENT_RESOURCES,
            ));
        }
        Ok(())
    }

    /// Migration and failover share the placement rules: DRBD swaps primary and
    /// secondary (any target is ignored), externally mirrored templates move to the
    /// required target, everything else is refused.
    fn relocate(&mut self, name: &str, target: Option<&str>, how: Relocation) -> OpResult {
        let instance = self.known_instance(name)?;
        let verb = how.verb();
        let mut failover = matches!(how, Relocation::Failover);
        if let Relocation::Migrate { allow_failover } = how {
            let primary_offline = self.node(&instance.primary).is_none_or(|n| n.offline);
            if !instance.uses_memory() || primary_offline {
                if !allow_failover {
                    return Err(OpFailure::prereq(
                        format!("Can't migrate instance {name}, please use failover"),
                        codes::WRONG_STATE,
                    ));
                }
                failover = true;
            }
        }
        let destination = if instance.disk_template.is_internally_mirrored() {
            match instance.secondaries.first() {
                Some(secondary) => secondary.clone(),
                None => {
                    return Err(OpFailure::prereq(
                        format!("Instance {name} has no secondary node"),
                        codes::WRONG_STATE,
                    ))
                }
            }
        } else if instance.disk_template.is_externally_mirrored() {
            match target {
                Some(node) if node == instance.primary => {
                    return Err(OpFailure::prereq(
                        format!("Instance {name} is already on node {node}"),
                        codes::WRONG_INPUT,
                    ))
                }
                Some(node) => node.to_owned(),
                None => {
                    return Err(OpFailure::prereq(
                        format!(
                            "No target node given for instance {name} (the simulator has no iallocator)"
                        ),
                        codes::WRONG_INPUT,
                    ))
                }
            }
        } else {
            let template = instance.disk_template;
            return Err(OpFailure::prereq(
                format!("Instance's disk layout '{template}' is not mirrored, cannot {verb}"),
                codes::WRONG_STATE,
            ));
        };
        self.check_target(&destination)?;
        self.check_free_memory(&destination, &instance)?;
        let source = instance.primary.clone();
        let Some(entry) = self.instance_mut(name) else {
            return Err(unknown_instance(name));
        };
        if entry.disk_template.is_internally_mirrored() {
            entry.secondaries = vec![source.clone()];
        }
        entry.primary = destination.clone();
        let log = if failover {
            vec![
                format!("Failover instance {name}"),
                "* shutting down instance on source node".to_owned(),
                format!("* starting the instance on the target node {destination}"),
            ]
        } else {
            vec![
                format!("Migrating instance {name}"),
                format!("* migrating instance to {destination}"),
                "* done".to_owned(),
            ]
        };
        Ok(OpDone::null(log))
    }

    fn replace_disks(
        &mut self,
        name: &str,
        mode: ReplaceDisksMode,
        remote: Option<&str>,
    ) -> OpResult {
        let instance = self.known_instance(name)?;
        if instance.disk_template != DiskTemplate::Drbd {
            return Err(OpFailure::prereq(
                "Can only run replace disks for DRBD8-based instances",
                codes::WRONG_INPUT,
            ));
        }
        if mode != ReplaceDisksMode::ReplaceNewSecondary {
            return Ok(OpDone::null(vec![format!("Replacing disks of {name}")]));
        }
        let Some(remote) = remote else {
            return Err(OpFailure::prereq(
                "Replacing the secondary needs a remote node (the simulator has no iallocator)",
                codes::WRONG_INPUT,
            ));
        };
        if self.node(remote).is_none() {
            return Err(unknown_node(remote));
        }
        if remote == instance.primary {
            return Err(OpFailure::prereq(
                "The specified node is the primary node of the instance",
                codes::WRONG_INPUT,
            ));
        }
        if instance.secondaries.iter().any(|s| s == remote) {
            return Err(OpFailure::prereq(
                "The specified node is already the secondary node of the instance",
                codes::WRONG_INPUT,
            ));
        }
        self.check_target(remote)?;
        self.check_free_disk(remote, &instance)?;
        if let Some(entry) = self.instance_mut(name) {
            entry.secondaries = vec![remote.to_owned()];
        }
        Ok(OpDone::null(vec![format!(
            "Replacing the secondary of {name} with {remote}"
        )]))
    }

    fn move_instance(&mut self, name: &str, target: &str) -> OpResult {
        let instance = self.known_instance(name)?;
        if instance.disk_template.is_internally_mirrored() {
            return Err(OpFailure::prereq(
                format!("Instance {name} is mirrored by DRBD; migrate or fail it over instead"),
                codes::WRONG_STATE,
            ));
        }
        if instance.primary == target {
            return Err(OpFailure::prereq(
                format!("Can't move instance to its current primary node {target}"),
                codes::WRONG_INPUT,
            ));
        }
        self.check_target(target)?;
        self.check_free_memory(target, &instance)?;
        self.check_free_disk(target, &instance)?;
        if let Some(entry) = self.instance_mut(name) {
            entry.primary = target.to_owned();
        }
        Ok(OpDone::null(vec![format!(
            "Copying the disks of instance {name} to {target}"
        )]))
    }

    fn change_tags(
        &mut self,
        kind: TagKind,
        name: Option<&str>,
        tags: &[String],
        add: bool,
    ) -> OpResult {
        for tag in tags {
            check_tag(tag)?;
        }
        let object = name.unwrap_or_default();
        let target: &mut BTreeSet<String> = match kind {
            TagKind::Cluster => &mut self.cluster_tags,
            TagKind::Node => {
                &mut self
                    .nodes
                    .iter_mut()
                    .find(|n| n.name == object)
                    .ok_or_else(|| unknown_node(object))?
                    .tags
            }
            TagKind::Instance => {
                &mut self
                    .instance_mut(object)
                    .ok_or_else(|| unknown_instance(object))?
                    .tags
            }
            TagKind::Nodegroup => {
                &mut self
                    .groups
                    .iter_mut()
                    .find(|g| g.name == object || g.uuid == object)
                    .ok_or_else(|| {
                        OpFailure::prereq(
                            format!("Group '{object}' not known"),
                            codes::UNKNOWN_ENTITY,
                        )
                    })?
                    .tags
            }
            TagKind::Network => {
                return Err(OpFailure::prereq(
                    format!("Network '{object}' not known"),
                    codes::UNKNOWN_ENTITY,
                ))
            }
        };
        if add {
            target.extend(tags.iter().cloned());
        } else {
            let missing: Vec<&String> = tags.iter().filter(|t| !target.contains(*t)).collect();
            if !missing.is_empty() {
                let listed: Vec<String> = missing.iter().map(|t| format!("'{t}'")).collect();
                return Err(OpFailure::prereq(
                    format!("Tag(s) {} not found", listed.join(", ")),
                    codes::UNKNOWN_ENTITY,
                ));
            }
            for tag in tags {
                target.remove(tag);
            }
        }
        Ok(OpDone::null(Vec::new()))
    }

    fn repair_command(
        &mut self,
        node_name: &str,
        command: &str,
        input: Option<&str>,
        job: JobId,
        at: f64,
    ) -> OpResult {
        if command.is_empty() {
            return Err(OpFailure::prereq(
                "The repair command must not be empty",
                codes::WRONG_INPUT,
            ));
        }
        let node = self
            .node_mut(node_name)
            .map_err(|_| unknown_node(node_name))?;
        if node.offline {
            return Err(OpFailure::prereq(
                format!("Node {node_name} is offline"),
                codes::WRONG_STATE,
            ));
        }
        node.repairs.push(super::RepairRecord {
            job,
            command: command.to_owned(),
            input: input.map(str::to_owned),
            at,
        });
        Ok(OpDone {
            result: json!(format!(
                "simulated repair command '{command}' ran on {node_name}"
            )),
            log: vec![format!("Running repair command {command} on {node_name}")],
        })
    }
}

/// How an instance changes nodes.
#[derive(Debug, Clone, Copy)]
enum Relocation {
    Migrate { allow_failover: bool },
    Failover,
}

impl Relocation {
    fn verb(self) -> &'static str {
        match self {
            Relocation::Migrate { .. } => "migrate",
            Relocation::Failover => "fail over",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::opcode::OpBody;
    use crate::sim::{AdminState, SimSpec};

    fn sim() -> SimCluster {
        SimCluster::generate(
            &SimSpec {
                nodes: 4,
                instances: 20,
                seed: 5,
                job_seconds: 0.0,
                ..SimSpec::default()
            },
            0.0,
        )
    }

    fn run(sim: &mut SimCluster, body: OpBody) -> OpResult {
        sim.execute(&body, JobId(1), 0.0)
    }

    fn first_with(sim: &SimCluster, template: DiskTemplate) -> SimInstance {
        sim.instances
            .iter()
            .find(|i| i.disk_template == template && i.admin_state == AdminState::Up)
            .cloned()
            .expect("seed 5 has one")
    }

    #[test]
    fn drain_demotes_candidate_and_reports_changes() {
        let mut sim = sim();
        let done = run(&mut sim, OpBody::drain_node("node3")).expect("drains");
        assert_eq!(
            done.result,
            json!([["master_candidate", "False"], ["drained", "True"]])
        );
        let node = sim.node("node3").expect("exists");
        assert!(node.drained && !node.master_candidate);
        let failure = run(&mut sim, OpBody::drain_node("node1")).expect_err("master");
        assert_eq!(failure.code, Some(codes::WRONG_INPUT));
        let failure = run(&mut sim, OpBody::drain_node("node9")).expect_err("unknown");
        assert_eq!(
            failure.encode(),
            json!([
                "OpPrereqError",
                ["Node 'node9' not known", "unknown_entity"]
            ])
        );
    }

    #[test]
    fn migrate_drbd_swaps_primary_and_secondary() {
        let mut sim = sim();
        let inst = first_with(&sim, DiskTemplate::Drbd);
        run(&mut sim, OpBody::migrate(&inst.name, Some("ignored"))).expect("migrates");
        let after = sim.instance(&inst.name).expect("exists");
        assert_eq!(after.primary, inst.secondaries[0]);
        assert_eq!(after.secondaries, vec![inst.primary.clone()]);
    }

    #[test]
    fn failover_of_diskless_needs_and_uses_target() {
        let mut sim = sim();
        let inst = first_with(&sim, DiskTemplate::Diskless);
        let failure = run(&mut sim, OpBody::failover(&inst.name, None)).expect_err("no target");
        assert_eq!(failure.code, Some(codes::WRONG_INPUT));
        let target = if inst.primary == "node4" {
            "node3"
        } else {
            "node4"
        };
        run(&mut sim, OpBody::failover(&inst.name, Some(target))).expect("fails over");
        let after = sim.instance(&inst.name).expect("exists");
        assert_eq!(after.primary, target);
        assert_eq!(sim.instance_status(after).name(), "running");
    }

    #[test]
    fn plain_instances_cannot_migrate() {
        let mut sim = sim();
        let inst = first_with(&sim, DiskTemplate::Plain);
        let failure = run(&mut sim, OpBody::migrate(&inst.name, Some("node2"))).expect_err("plain");
        assert!(
            failure.message.contains("not mirrored"),
            "{}",
            failure.message
        );
        assert_eq!(failure.code, Some(codes::WRONG_STATE));
    }

    #[test]
    fn targets_must_be_usable_and_have_room() {
        let mut sim = sim();
        let inst = first_with(&sim, DiskTemplate::Drbd);
        let secondary = inst.secondaries[0].clone();
        sim.node_mut(&secondary).expect("exists").drained = true;
        let failure = run(&mut sim, OpBody::migrate(&inst.name, None)).expect_err("drained");
        assert_eq!(failure.code, Some(codes::WRONG_STATE));
        sim.node_mut(&secondary).expect("exists").drained = false;
        sim.node_mut(&secondary).expect("exists").memory_total = 0;
        let failure = run(&mut sim, OpBody::migrate(&inst.name, None)).expect_err("full");
        assert_eq!(failure.code, Some(codes::INSUFFICIENT_RESOURCES));
        let failure = run(&mut sim, OpBody::migrate("nope", None)).expect_err("unknown");
        assert_eq!(failure.code, Some(codes::UNKNOWN_ENTITY));
    }

    #[test]
    fn memory_moves_with_the_instance() {
        let mut sim = sim();
        let inst = first_with(&sim, DiskTemplate::Drbd);
        let target = inst.secondaries[0].clone();
        let (source_free, target_free) = (sim.memory_free(&inst.primary), sim.memory_free(&target));
        run(&mut sim, OpBody::migrate(&inst.name, None)).expect("migrates");
        assert_eq!(sim.memory_free(&inst.primary), source_free + inst.memory);
        assert_eq!(sim.memory_free(&target), target_free - inst.memory);
    }

    #[test]
    fn replace_new_secondary_moves_the_disks() {
        let mut sim = sim();
        let inst = first_with(&sim, DiskTemplate::Drbd);
        let other = ["node1", "node2", "node3", "node4"]
            .into_iter()
            .find(|n| *n != inst.primary && *n != inst.secondaries[0])
            .expect("four nodes");
        let before = sim.disk_free(other);
        let failure =
            run(&mut sim, OpBody::new_secondary(&inst.name, &inst.primary)).expect_err("primary");
        assert_eq!(failure.code, Some(codes::WRONG_INPUT));
        run(&mut sim, OpBody::new_secondary(&inst.name, other)).expect("replaces");
        assert_eq!(
            sim.instance(&inst.name).expect("exists").secondaries,
            [other]
        );
        assert_eq!(sim.disk_free(other), before - inst.disk);
        let plain = first_with(&sim, DiskTemplate::Plain);
        assert!(run(&mut sim, OpBody::new_secondary(&plain.name, other)).is_err());
    }

    #[test]
    fn instance_move_relocates_plain_instances() {
        let mut sim = sim();
        let inst = first_with(&sim, DiskTemplate::Plain);
        let target = if inst.primary == "node2" {
            "node3"
        } else {
            "node2"
        };
        run(&mut sim, OpBody::instance_move(&inst.name, target)).expect("moves");
        assert_eq!(sim.instance(&inst.name).expect("exists").primary, target);
        let drbd = first_with(&sim, DiskTemplate::Drbd);
        assert!(run(&mut sim, OpBody::instance_move(&drbd.name, target)).is_err());
    }

    #[test]
    fn tags_are_set_deleted_and_validated() {
        let mut sim = sim();
        let set = OpBody::TagsSet {
            kind: TagKind::Cluster,
            name: None,
            tags: vec!["maintd:x".into()],
        };
        run(&mut sim, set).expect("sets");
        assert!(sim.cluster_tags().contains("maintd:x"));
        let inst = sim.instances[0].name.clone();
        let set = OpBody::TagsSet {
            kind: TagKind::Instance,
            name: Some(inst.clone()),
            tags: vec!["a".into(), "b".into()],
        };
        run(&mut sim, set).expect("sets");
        let del = OpBody::TagsDel {
            kind: TagKind::Instance,
            name: Some(inst.clone()),
            tags: vec!["a".into()],
        };
        run(&mut sim, del.clone()).expect("deletes");
        assert_eq!(sim.instance(&inst).expect("exists").tags.len(), 1);
        let failure = run(&mut sim, del).expect_err("already gone");
        assert_eq!(failure.code, Some(codes::UNKNOWN_ENTITY));
        let bad = OpBody::tag_node("node1", "no spaces");
        assert_eq!(run(&mut sim, bad).expect_err("invalid").class, "TagError");
    }

    #[test]
    fn repair_command_is_logged_per_node() {
        let mut sim = sim();
        let op =
            OpBody::repair_command("node2", "swap-disk", "{\"status\":\"live-repair\"}".into());
        let done = sim.execute(&op, JobId(7), 12.0).expect("runs");
        assert!(done.result.is_string());
        let log = &sim.node("node2").expect("exists").repairs;
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].job, JobId(7));
        assert_eq!(log[0].command, "swap-disk");
        assert_eq!(
            log[0].input.as_deref(),
            Some("{\"status\":\"live-repair\"}")
        );
    }

    #[test]
    fn locks_cover_instance_nodes_and_targets() {
        let sim = sim();
        let inst = first_with(&sim, DiskTemplate::Drbd);
        let locks = sim.op_locks(&OpBody::migrate(&inst.name, None));
        assert!(locks.contains(&format!("instance/{}", inst.name)));
        assert!(locks.contains(&format!("node/{}", inst.primary)));
        assert!(locks.contains(&format!("node/{}", inst.secondaries[0])));
        let delay = OpBody::TestDelay {
            duration: 1.0,
            on_master: true,
        };
        assert!(sim.op_locks(&delay).is_empty());
    }
}
