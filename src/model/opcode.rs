//! The Ganeti opcodes maintd submits, in their Luxi JSON form.
//!
//! Field names and defaults follow Ganeti 3.x (`OP_NODE_SET_PARAMS` must not carry the
//! 2.17-only `verbose`/`debug` keys). `OP_REPAIR_COMMAND` exists only in 2.17 and in the
//! built-in simulator.

use serde::{Deserialize, Serialize};

/// Reason-trail source of every opcode maintd submits.
pub const REASON_SOURCE: &str = "gnt:daemon:maintd";

/// One reason-trail entry: `[source, text, timestamp in nanoseconds]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonEntry(pub String, pub String, pub i64);

/// An opcode with the parameters common to all opcodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opcode {
    /// The opcode proper, tagged by `OP_ID`.
    #[serde(flatten)]
    pub body: OpBody,
    /// The reason trail; luxid has no default for it, so it is always sent.
    #[serde(default)]
    pub reason: Vec<ReasonEntry>,
}

/// Live or non-live migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationMode {
    /// Live migration.
    Live,
    /// Suspend, copy, resume.
    NonLive,
}

/// Modes of `OP_INSTANCE_REPLACE_DISKS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplaceDisksMode {
    /// Recreate the disks on the primary.
    ReplaceOnPrimary,
    /// Recreate the disks on the secondary.
    ReplaceOnSecondary,
    /// Move the secondary to `remote_node`.
    ReplaceNewSecondary,
    /// Let Ganeti decide.
    ReplaceAuto,
}

/// Kinds of taggable objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagKind {
    /// The cluster itself (no name).
    Cluster,
    /// A node.
    Node,
    /// An instance.
    Instance,
    /// A node group.
    Nodegroup,
    /// A network.
    Network,
}

fn default_true() -> bool {
    true
}

fn default_shutdown_timeout() -> u64 {
    120
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The opcodes maintd knows, tagged with Ganeti's `OP_ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "OP_ID")]
pub enum OpBody {
    /// Change node flags (maintd uses it to drain).
    #[serde(rename = "OP_NODE_SET_PARAMS")]
    NodeSetParams {
        /// The node.
        node_name: String,
        /// New drained flag.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drained: Option<bool>,
        /// New offline flag.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offline: Option<bool>,
        /// New master-candidate flag.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        master_candidate: Option<bool>,
        /// Force the change.
        #[serde(default)]
        force: bool,
        /// Promote other nodes to master candidates if needed.
        #[serde(default)]
        auto_promote: bool,
    },
    /// Migrate an instance to another node.
    #[serde(rename = "OP_INSTANCE_MIGRATE")]
    InstanceMigrate {
        /// The instance.
        instance_name: String,
        /// Live or non-live.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<MigrationMode>,
        /// Target node (needed for externally mirrored templates, ignored by DRBD).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_node: Option<String>,
        /// Fall back to failover when migration is impossible.
        #[serde(default)]
        allow_failover: bool,
        /// Ignore hypervisor version differences.
        #[serde(default)]
        ignore_hvversions: bool,
        /// Allow changes of runtime parameters (memory ballooning).
        #[serde(default = "default_true")]
        allow_runtime_changes: bool,
        /// Only clean up after a failed migration.
        #[serde(default, skip_serializing_if = "is_false")]
        cleanup: bool,
    },
    /// Fail an instance over to another node (shutdown, start elsewhere).
    #[serde(rename = "OP_INSTANCE_FAILOVER")]
    InstanceFailover {
        /// The instance.
        instance_name: String,
        /// Target node.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_node: Option<String>,
        /// Ignore the disks' consistency on the target.
        #[serde(default)]
        ignore_consistency: bool,
        /// Seconds to wait for a clean shutdown.
        #[serde(default = "default_shutdown_timeout")]
        shutdown_timeout: u64,
    },
    /// Replace the disks of a mirrored instance.
    #[serde(rename = "OP_INSTANCE_REPLACE_DISKS")]
    InstanceReplaceDisks {
        /// The instance.
        instance_name: String,
        /// What to replace.
        mode: ReplaceDisksMode,
        /// New secondary for `replace_new_secondary`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote_node: Option<String>,
        /// Disk indices (empty: all).
        #[serde(default)]
        disks: Vec<u32>,
        /// Release locks early.
        #[serde(default)]
        early_release: bool,
        /// Let this iallocator choose the new secondary (instead of `remote_node`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iallocator: Option<String>,
    },
    /// Copy a non-mirrored instance to another node (the instance is shut down meanwhile).
    #[serde(rename = "OP_INSTANCE_MOVE")]
    InstanceMove {
        /// The instance.
        instance_name: String,
        /// Target node.
        target_node: String,
        /// Seconds to wait for a clean shutdown.
        #[serde(default = "default_shutdown_timeout")]
        shutdown_timeout: u64,
        /// Ignore the disks' consistency.
        #[serde(default)]
        ignore_consistency: bool,
    },
    /// Recreate an instance's disks, on new nodes if `nodes` or `iallocator` say so
    /// (harep's `reinstall` repair).
    #[serde(rename = "OP_INSTANCE_RECREATE_DISKS")]
    InstanceRecreateDisks {
        /// The instance.
        instance_name: String,
        /// Disk indices (empty: all).
        #[serde(default)]
        disks: Vec<u32>,
        /// New nodes for the instance (empty: keep them, or ask `iallocator`).
        #[serde(default)]
        nodes: Vec<String>,
        /// Iallocator choosing the new nodes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iallocator: Option<String>,
    },
    /// Reinstall an instance's operating system (harep's `reinstall` repair).
    #[serde(rename = "OP_INSTANCE_REINSTALL")]
    InstanceReinstall {
        /// The instance.
        instance_name: String,
        /// OS to install instead of the current one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        os_type: Option<String>,
        /// Accept an OS variant that is not declared.
        #[serde(default)]
        force_variant: bool,
    },
    /// Add tags to an object.
    #[serde(rename = "OP_TAGS_SET")]
    TagsSet {
        /// Kind of object.
        kind: TagKind,
        /// Object name (not for the cluster).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Tags to add.
        tags: Vec<String>,
    },
    /// Remove tags from an object.
    #[serde(rename = "OP_TAGS_DEL")]
    TagsDel {
        /// Kind of object.
        kind: TagKind,
        /// Object name (not for the cluster).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Tags to remove.
        tags: Vec<String>,
    },
    /// Run a whitelisted repair command on a node, the diagnose JSON on stdin
    /// (Ganeti 2.17 and the simulator).
    #[serde(rename = "OP_REPAIR_COMMAND")]
    RepairCommand {
        /// The node.
        node_name: String,
        /// Command name inside the node's repair-command directory.
        command: String,
        /// Standard input for the command.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// Sleep; Ganeti's test opcode.
    #[serde(rename = "OP_TEST_DELAY")]
    TestDelay {
        /// Seconds (> 0).
        duration: f64,
        /// Sleep on the master.
        #[serde(default = "default_true")]
        on_master: bool,
    },
}

impl OpBody {
    /// Ganeti's `OP_ID` of this opcode.
    pub fn op_id(&self) -> &'static str {
        match self {
            OpBody::NodeSetParams { .. } => "OP_NODE_SET_PARAMS",
            OpBody::InstanceMigrate { .. } => "OP_INSTANCE_MIGRATE",
            OpBody::InstanceFailover { .. } => "OP_INSTANCE_FAILOVER",
            OpBody::InstanceReplaceDisks { .. } => "OP_INSTANCE_REPLACE_DISKS",
            OpBody::InstanceMove { .. } => "OP_INSTANCE_MOVE",
            OpBody::InstanceRecreateDisks { .. } => "OP_INSTANCE_RECREATE_DISKS",
            OpBody::InstanceReinstall { .. } => "OP_INSTANCE_REINSTALL",
            OpBody::TagsSet { .. } => "OP_TAGS_SET",
            OpBody::TagsDel { .. } => "OP_TAGS_DEL",
            OpBody::RepairCommand { .. } => "OP_REPAIR_COMMAND",
            OpBody::TestDelay { .. } => "OP_TEST_DELAY",
        }
    }

    /// Drain a node, as the 2.17 maintd does (`force`, no auto-promotion).
    pub fn drain_node(node: &str) -> Self {
        OpBody::NodeSetParams {
            node_name: node.to_owned(),
            drained: Some(true),
            offline: None,
            master_candidate: None,
            force: true,
            auto_promote: false,
        }
    }

    /// Live-migrate an instance away from its primary.
    pub fn migrate(instance: &str, target: Option<&str>) -> Self {
        OpBody::InstanceMigrate {
            instance_name: instance.to_owned(),
            mode: Some(MigrationMode::Live),
            target_node: target.map(str::to_owned),
            allow_failover: true,
            ignore_hvversions: true,
            allow_runtime_changes: false,
            cleanup: false,
        }
    }

    /// Fail an instance over, ignoring the consistency of a broken node.
    pub fn failover(instance: &str, target: Option<&str>) -> Self {
        OpBody::InstanceFailover {
            instance_name: instance.to_owned(),
            target_node: target.map(str::to_owned),
            ignore_consistency: true,
            shutdown_timeout: default_shutdown_timeout(),
        }
    }

    /// Move the secondary of a DRBD instance to `remote_node`.
    pub fn new_secondary(instance: &str, remote_node: &str) -> Self {
        OpBody::InstanceReplaceDisks {
            instance_name: instance.to_owned(),
            mode: ReplaceDisksMode::ReplaceNewSecondary,
            remote_node: Some(remote_node.to_owned()),
            disks: Vec::new(),
            early_release: false,
            iallocator: None,
        }
    }

    /// Copy a non-mirrored instance to `target` (downtime while its disks are copied).
    pub fn instance_move(instance: &str, target: &str) -> Self {
        OpBody::InstanceMove {
            instance_name: instance.to_owned(),
            target_node: target.to_owned(),
            shutdown_timeout: default_shutdown_timeout(),
            ignore_consistency: false,
        }
    }

    /// Add one tag to a node.
    pub fn tag_node(node: &str, tag: &str) -> Self {
        OpBody::TagsSet {
            kind: TagKind::Node,
            name: Some(node.to_owned()),
            tags: vec![tag.to_owned()],
        }
    }

    /// Run a repair command on a node.
    pub fn repair_command(node: &str, command: &str, input: String) -> Self {
        OpBody::RepairCommand {
            node_name: node.to_owned(),
            command: command.to_owned(),
            input: Some(input),
        }
    }

    /// Attach a reason trail entry from maintd.
    pub fn with_reason(self, text: String, timestamp_ns: i64) -> Opcode {
        Opcode {
            body: self,
            reason: vec![ReasonEntry(REASON_SOURCE.to_owned(), text, timestamp_ns)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_serializes_with_op_id_and_reason() {
        let op = OpBody::drain_node("node3").with_reason("Draining node3".into(), 5);
        let v = serde_json::to_value(&op).unwrap();
        assert_eq!(v["OP_ID"], "OP_NODE_SET_PARAMS");
        assert_eq!(v["drained"], true);
        assert!(v.get("offline").is_none());
        assert_eq!(v["reason"][0][0], REASON_SOURCE);
        let back: Opcode = serde_json::from_value(v).unwrap();
        assert_eq!(back, op);
    }

    #[test]
    fn recreate_disks_and_reinstall_round_trip() {
        let recreate = OpBody::InstanceRecreateDisks {
            instance_name: "i1".into(),
            disks: Vec::new(),
            nodes: Vec::new(),
            iallocator: Some("hail".into()),
        };
        let v = serde_json::to_value(&recreate).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"OP_ID": "OP_INSTANCE_RECREATE_DISKS", "instance_name": "i1",
                               "disks": [], "nodes": [], "iallocator": "hail"})
        );
        assert_eq!(serde_json::from_value::<OpBody>(v).unwrap(), recreate);
        let reinstall: OpBody =
            serde_json::from_str(r#"{"OP_ID":"OP_INSTANCE_REINSTALL","instance_name":"i1"}"#)
                .unwrap();
        assert_eq!(reinstall.op_id(), "OP_INSTANCE_REINSTALL");
        assert_eq!(
            serde_json::to_value(&reinstall).unwrap(),
            serde_json::json!({"OP_ID": "OP_INSTANCE_REINSTALL", "instance_name": "i1",
                               "force_variant": false})
        );
    }

    #[test]
    fn unknown_opcode_is_rejected() {
        let err = serde_json::from_str::<Opcode>(r#"{"OP_ID":"OP_NOPE","reason":[]}"#);
        assert!(err.is_err());
    }

    #[test]
    fn defaults_fill_missing_keys() {
        let op: Opcode = serde_json::from_str(
            r#"{"OP_ID":"OP_INSTANCE_FAILOVER","instance_name":"i1","reason":[]}"#,
        )
        .unwrap();
        match op.body {
            OpBody::InstanceFailover {
                shutdown_timeout, ..
            } => assert_eq!(shutdown_timeout, 120),
            other => panic!("unexpected {other:?}"),
        }
    }
}
