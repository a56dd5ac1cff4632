//! Ganeti's query language over the simulated cluster: field definitions, `[status, value]`
//! result cells and filters (`Query`), plus the classic queries (`QueryNodes`,
//! `QueryJobs`, ...) that return plain values.

use std::cmp::Ordering;

use serde_json::{json, Value};

use super::placement::Placement;
use super::queue::{log_entry, SimJob};
use super::{ganeti_timestamp, SimCluster, SimGroup, SimInstance, SimNode};

/// What a query is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// Nodes.
    Node,
    /// Instances.
    Instance,
    /// Node groups.
    Group,
    /// Jobs.
    Job,
}

impl QueryKind {
    /// Parse Luxi's `what`.
    pub fn parse(what: &str) -> Option<Self> {
        match what {
            "node" => Some(QueryKind::Node),
            "instance" => Some(QueryKind::Instance),
            "group" => Some(QueryKind::Group),
            "job" => Some(QueryKind::Job),
            _ => None,
        }
    }

    fn fields(self) -> &'static [FieldDef] {
        match self {
            QueryKind::Node => NODE_FIELDS,
            QueryKind::Instance => INSTANCE_FIELDS,
            QueryKind::Group => GROUP_FIELDS,
            QueryKind::Job => JOB_FIELDS,
        }
    }
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// The request itself is malformed (luxid reports these as parse failures).
    Malformed(String),
    /// The handler refused it: `OpPrereqError` with this message and error code.
    Prereq(String, &'static str),
}

/// One field definition: name, title, kind and documentation.
type FieldDef = (&'static str, &'static str, &'static str, &'static str);

const NODE_FIELDS: &[FieldDef] = &[
    ("name", "Node", "text", "Node name"),
    ("uuid", "UUID", "text", "Node UUID"),
    ("group", "Group", "text", "Node group"),
    ("group.uuid", "GroupUUID", "text", "UUID of node group"),
    ("mtotal", "MTotal", "unit", "Total amount of memory of physical machine"),
    ("mnode", "MNode", "unit", "Amount of memory used by node (dom0 for Xen)"),
    ("mfree", "MFree", "unit", "Memory available for instance allocations"),
    ("dtotal", "DTotal", "unit", "Total disk space in volume group used for instance disk allocation"),
    ("dfree", "DFree", "unit", "Available disk space in volume group"),
    ("sptotal", "SpTotal", "number", "Total amount of spindles in physical volumes"),
    ("spfree", "SpFree", "number", "Available spindles in volume group"),
    ("ctotal", "CTotal", "number", "Number of logical processors"),
    ("cnos", "CNOs", "number", "Number of logical processors used by the node OS"),
    ("cnodes", "CNodes", "number", "Number of NUMA domains of node"),
    ("csockets", "CSockets", "number", "Number of physical CPU sockets"),
    ("bootid", "BootID", "text", "Random UUID renewed for each system reboot"),
    ("offline", "Offline", "bool", "Whether node is marked offline"),
    ("drained", "Drained", "bool", "Whether node is drained"),
    ("master_candidate", "MasterC", "bool", "Whether node is a master candidate"),
    ("master", "IsMaster", "bool", "Whether node is master"),
    ("master_capable", "MasterCapable", "bool", "Whether node can become a master candidate"),
    ("vm_capable", "VMCapable", "bool", "Whether node can host instances"),
    ("powered", "Powered", "bool", "Whether node is thought to be powered on"),
    ("role", "Role", "text", "Node role; \"M\" for master, \"C\" for master candidate, \"R\" for regular, \"D\" for drained, \"O\" for offline"),
    ("pinst_cnt", "Pinst", "number", "Number of instances with this node as primary"),
    ("sinst_cnt", "Sinst", "number", "Number of instances with this node as secondary"),
    ("pinst_list", "PriInstances", "other", "List of instances with this node as primary"),
    ("sinst_list", "SecInstances", "other", "List of instances with this node as secondary"),
    ("pip", "PrimaryIP", "text", "Primary IP address"),
    ("sip", "SecondaryIP", "text", "Secondary IP address"),
    ("tags", "Tags", "other", "Tags"),
    ("ndparams", "NodeParameters", "other", "Node parameters"),
    ("ndp/spindle_count", "NodeSpindleCount", "number", "The number of spindles on this node"),
    ("ndp/exclusive_storage", "ExclusiveStorage", "bool", "Whether exclusive storage is enabled"),
    ("ndp/cpu_speed", "CPUSpeed", "float", "Relative CPU speed"),
    ("hv_state", "HypervisorState", "other", "Hypervisor state"),
    ("disk_state", "DiskState", "other", "Disk state"),
    ("serial_no", "SerialNo", "number", "Node object serial number, incremented on each modification"),
];

/// Node fields that luxid fills by asking the node itself: unavailable when it is offline.
const LIVE_NODE_FIELDS: &[&str] = &[
    "mtotal", "mnode", "mfree", "dtotal", "dfree", "sptotal", "spfree", "ctotal", "cnos", "cnodes",
    "csockets", "bootid",
];

const INSTANCE_FIELDS: &[FieldDef] = &[
    ("name", "Instance", "text", "Instance name"),
    ("uuid", "UUID", "text", "Instance UUID"),
    ("pnode", "Primary_node", "text", "Primary node"),
    ("snodes", "Secondary_Nodes", "other", "Secondary nodes; usually this will just be one node"),
    ("pnode.group", "PrimaryNodeGroup", "text", "Primary node's group"),
    ("snodes.group", "SecondaryNodesGroups", "other", "Node groups of secondary nodes"),
    ("admin_state", "InstanceState", "text", "Desired state of the instance"),
    ("admin_up", "Autostart", "bool", "Desired state of the instance"),
    ("oper_state", "Running", "bool", "Actual state of instance"),
    ("status", "Status", "text", "Instance status; \"running\" if instance is set to be running and actually is, \"ADMIN_down\" if instance is stopped and is not running, \"ERROR_wrongnode\" if instance running, but not on its designated primary node, \"ERROR_up\" if instance should be stopped, but is actually running, \"ERROR_down\" if instance should run, but doesn't, \"ERROR_nodedown\" if instance's primary node is down, \"ERROR_nodeoffline\" if instance's primary node is marked offline, \"ADMIN_offline\" if instance is offline and does not use dynamic resources"),
    ("disk_template", "Disk_template", "text", "Instance disk template"),
    ("disk_usage", "DiskUsage", "unit", "Total disk space used by instance on each of its nodes; this is not the disk size visible to the instance, but the usage on the node"),
    ("disk.sizes", "Disk_sizes", "other", "List of disk sizes"),
    ("disk.spindles", "Disk_spindles", "other", "List of disk spindles"),
    ("disk.count", "Disks", "number", "Number of disks"),
    ("hypervisor", "Hypervisor", "text", "Hypervisor name"),
    ("os", "OS", "text", "Operating system"),
    ("be/maxmem", "ConfigMaxMem", "unit", "The maximum memory size of the instance"),
    ("be/minmem", "ConfigMinMem", "unit", "The minimum memory size of the instance"),
    ("be/memory", "ConfigMemory", "unit", "The \"maxmem\" backend parameter"),
    ("be/vcpus", "ConfigVCPUs", "number", "The number of virtual CPUs"),
    ("vcpus", "ConfigVCPUs", "number", "The \"vcpus\" backend parameter"),
    ("be/auto_balance", "Auto_balance", "bool", "Whether the instance is considered in N+1 checks"),
    ("be/spindle_use", "ConfigSpindleUse", "number", "The number of spindles used by the instance"),
    ("beparams", "BackendParameters", "other", "Backend parameters (merged)"),
    ("oper_ram", "Memory", "unit", "Actual memory usage as seen by hypervisor"),
    ("oper_vcpus", "VCPUs", "number", "Actual number of VCPUs as seen by hypervisor"),
    ("tags", "Tags", "other", "Tags"),
    ("forthcoming", "Forthcoming", "bool", "Whether the instance is forthcoming"),
    ("serial_no", "SerialNo", "number", "Instance object serial number, incremented on each modification"),
];

const GROUP_FIELDS: &[FieldDef] = &[
    ("name", "Group", "text", "Group name"),
    ("uuid", "UUID", "text", "Group UUID"),
    (
        "alloc_policy",
        "AllocPolicy",
        "text",
        "Allocation policy for group",
    ),
    ("tags", "Tags", "other", "Tags"),
    ("node_cnt", "Nodes", "number", "Number of nodes"),
    ("node_list", "NodeList", "other", "List of nodes"),
    (
        "pinst_cnt",
        "Instances",
        "number",
        "Number of primary instances",
    ),
    (
        "pinst_list",
        "InstanceList",
        "other",
        "List of primary instances",
    ),
    (
        "ipolicy",
        "InstancePolicy",
        "other",
        "Instance policy limitations (merged)",
    ),
    (
        "custom_ipolicy",
        "CustomInstancePolicy",
        "other",
        "Custom instance policy limitations",
    ),
    ("ndparams", "NDParams", "other", "Node parameters"),
    (
        "diskparams",
        "DiskParameters",
        "other",
        "Disk parameters (merged)",
    ),
    (
        "serial_no",
        "SerialNo",
        "number",
        "Group object serial number, incremented on each modification",
    ),
];

const JOB_FIELDS: &[FieldDef] = &[
    ("id", "ID", "number", "Job ID"),
    ("status", "Status", "text", "Job status"),
    (
        "priority",
        "Priority",
        "number",
        "Current job priority (19 to -20)",
    ),
    ("archived", "Archived", "bool", "Whether job is archived"),
    ("ops", "OpCodes", "other", "List of all opcodes"),
    (
        "opresult",
        "OpCode_result",
        "other",
        "List of opcodes results",
    ),
    (
        "opstatus",
        "OpCode_status",
        "other",
        "List of opcodes status",
    ),
    ("oplog", "OpCode_log", "other", "List of opcode output logs"),
    (
        "opstart",
        "OpCode_start",
        "other",
        "List of opcode start timestamps (before acquiring locks)",
    ),
    (
        "opexec",
        "OpCode_exec",
        "other",
        "List of opcode execution start timestamps (after acquiring locks)",
    ),
    (
        "opend",
        "OpCode_end",
        "other",
        "List of opcode execution end timestamps",
    ),
    (
        "oppriority",
        "OpCode_prio",
        "other",
        "List of opcode priorities",
    ),
    (
        "summary",
        "Summary",
        "other",
        "List of per-opcode summaries",
    ),
    (
        "received_ts",
        "Received",
        "other",
        "Timestamp of when job was received (tuple containing seconds and microseconds)",
    ),
    (
        "start_ts",
        "Start",
        "other",
        "Timestamp of job start (tuple containing seconds and microseconds)",
    ),
    (
        "end_ts",
        "End",
        "other",
        "Timestamp of job end (tuple containing seconds and microseconds)",
    ),
];

/// One result cell: Ganeti's status code with its value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Status 0.
    Normal(Value),
    /// Status 1: the field does not exist.
    Unknown,
    /// Status 2: no data.
    NoData,
    /// Status 3: unavailable.
    Unavailable,
    /// Status 4: the node is offline.
    Offline,
}

impl Cell {
    /// `[status, value]`.
    pub fn to_json(&self) -> Value {
        match self {
            Cell::Normal(value) => json!([0, value]),
            Cell::Unknown => json!([1, null]),
            Cell::NoData => json!([2, null]),
            Cell::Unavailable => json!([3, null]),
            Cell::Offline => json!([4, null]),
        }
    }

    /// The plain value of classic queries (null unless normal).
    pub fn into_value(self) -> Value {
        match self {
            Cell::Normal(value) => value,
            _ => Value::Null,
        }
    }

    fn normal(&self) -> Option<&Value> {
        match self {
            Cell::Normal(value) => Some(value),
            _ => None,
        }
    }
}

/// The field definition as Luxi sends it; unknown fields get kind `unknown`.
pub fn field_definition(kind: QueryKind, name: &str) -> Value {
    match kind.fields().iter().find(|f| f.0 == name) {
        Some((name, title, kind, doc)) => {
            json!({"name": name, "title": title, "kind": kind, "doc": doc})
        }
        None => json!({
            "name": name,
            "title": name,
            "kind": "unknown",
            "doc": format!("Unknown field '{name}'"),
        }),
    }
}

fn is_known(kind: QueryKind, name: &str) -> bool {
    kind.fields().iter().any(|f| f.0 == name)
}

/// All field definitions of a kind (for `QueryFields` with `null`).
pub fn all_field_definitions(kind: QueryKind) -> Vec<Value> {
    kind.fields()
        .iter()
        .map(|f| field_definition(kind, f.0))
        .collect()
}

/// One queried object.
#[derive(Debug, Clone, Copy)]
enum Item<'a> {
    Node(&'a SimNode),
    Instance(&'a SimInstance),
    Group(&'a SimGroup),
    Job(&'a SimJob),
    /// A job id that was asked for but is not in the queue.
    MissingJob(u64),
}

fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(items.into_iter().map(|s| json!(s)).collect())
}

/// The cluster's [`Placement`], computed at most once per query and only when a field
/// needs it.
type LazyPlacement<'a> = std::cell::OnceCell<Placement<'a>>;

impl SimCluster {
    fn cell<'a>(&'a self, lazy: &LazyPlacement<'a>, item: Item<'_>, field: &str) -> Cell {
        match item {
            Item::Node(node) => self.node_cell(lazy.get_or_init(|| self.placement()), node, field),
            Item::Instance(instance) => {
                self.instance_cell(lazy.get_or_init(|| self.placement()), instance, field)
            }
            Item::Group(group) => self.group_cell(group, field),
            Item::Job(job) => job_cell(job, field),
            Item::MissingJob(id) => match field {
                "id" => Cell::Normal(json!(id)),
                _ if is_known(QueryKind::Job, field) => Cell::Unavailable,
                _ => Cell::Unknown,
            },
        }
    }

    fn node_cell(&self, placement: &Placement<'_>, node: &SimNode, field: &str) -> Cell {
        if node.offline && LIVE_NODE_FIELDS.contains(&field) {
            return Cell::Offline;
        }
        let name = &node.name;
        let usage = placement.usage(name);
        let value = match field {
            "name" => json!(name),
            "uuid" => json!(node.uuid),
            "group" => json!(self.group_name(&node.group_uuid)),
            "group.uuid" => json!(node.group_uuid),
            "mtotal" => json!(node.memory_total),
            // Memory accounting leaves nothing to the node OS: mfree is mtotal minus the
            // running instances.
            "mnode" => json!(0),
            "mfree" => json!(node.memory_total.saturating_sub(usage.memory_used)),
            "dtotal" => json!(node.disk_total),
            "dfree" => json!(node.disk_total.saturating_sub(usage.disk_used)),
            "sptotal" | "spfree" => json!(0),
            "ctotal" => json!(node.cpus),
            "cnos" | "cnodes" | "csockets" => json!(1),
            "bootid" => json!(node.uuid),
            "offline" => json!(node.offline),
            "drained" => json!(node.drained),
            "master_candidate" => json!(node.master_candidate),
            "master" => json!(self.master_name() == name),
            "master_capable" => json!(node.master_capable),
            "vm_capable" => json!(node.vm_capable),
            "powered" => json!(true),
            "role" => json!(self.node_role(node)),
            "pinst_cnt" => json!(usage.primaries.len()),
            "sinst_cnt" => json!(usage.secondaries.len()),
            "pinst_list" => json!(usage.primaries),
            "sinst_list" => json!(usage.secondaries),
            "pip" | "sip" => json!(node_address(placement, name)),
            "tags" => strings(&node.tags),
            "ndparams" => json!({"spindle_count": 1, "exclusive_storage": false, "cpu_speed": 1.0}),
            "ndp/spindle_count" => json!(1),
            "ndp/exclusive_storage" => json!(false),
            "ndp/cpu_speed" => json!(1.0),
            "hv_state" | "disk_state" => return Cell::Unavailable,
            "serial_no" => json!(1),
            _ => return Cell::Unknown,
        };
        Cell::Normal(value)
    }

    fn instance_cell(
        &self,
        placement: &Placement<'_>,
        instance: &SimInstance,
        field: &str,
    ) -> Cell {
        let primary_offline = placement.node(&instance.primary).is_none_or(|n| n.offline);
        let running = instance.uses_memory() && !primary_offline;
        let group_of = |node: &str| {
            placement
                .node(node)
                .and_then(|n| self.group_name(&n.group_uuid))
                .map(str::to_owned)
        };
        let value = match field {
            "name" => json!(instance.name),
            "uuid" => json!(instance.uuid),
            "pnode" => json!(instance.primary),
            "snodes" => strings(&instance.secondaries),
            "pnode.group" => json!(group_of(&instance.primary)),
            "snodes.group" => json!(instance
                .secondaries
                .iter()
                .map(|s| group_of(s))
                .collect::<Vec<_>>()),
            "admin_state" => json!(instance.admin_state.as_str()),
            "admin_up" => json!(instance.admin_state == super::AdminState::Up),
            "oper_state" | "oper_ram" | "oper_vcpus" if primary_offline => return Cell::Offline,
            "oper_state" => json!(running),
            "status" => json!(self.status_given(instance, primary_offline).name()),
            "disk_template" => json!(instance.disk_template),
            "disk_usage" => json!(if instance.uses_local_disk() {
                instance.disk
            } else {
                0
            }),
            "disk.sizes" => json!(if instance.disk_template
                == crate::model::cluster::DiskTemplate::Diskless
            {
                vec![]
            } else {
                vec![instance.disk]
            }),
            "disk.spindles" => json!(if instance.disk > 0 {
                vec![Value::Null]
            } else {
                vec![]
            }),
            "disk.count" => json!(usize::from(instance.disk > 0)),
            "hypervisor" => json!("kvm"),
            "os" => json!("debootstrap+default"),
            "be/maxmem" | "be/minmem" | "be/memory" => json!(instance.memory),
            "be/vcpus" | "vcpus" => json!(instance.vcpus),
            "be/auto_balance" => json!(true),
            "be/spindle_use" => json!(1),
            "beparams" => json!({
                "maxmem": instance.memory,
                "minmem": instance.memory,
                "vcpus": instance.vcpus,
                "auto_balance": true,
                "spindle_use": 1,
                "always_failover": false,
            }),
            "oper_ram" | "oper_vcpus" if !running => return Cell::NoData,
            "oper_ram" => json!(instance.memory),
            "oper_vcpus" => json!(instance.vcpus),
            "tags" => strings(&instance.tags),
            "forthcoming" => json!(false),
            "serial_no" => json!(1),
            _ => return Cell::Unknown,
        };
        Cell::Normal(value)
    }

    fn group_cell(&self, group: &SimGroup, field: &str) -> Cell {
        // Members and their primaries only for the fields that need them: a group query
        // of a large cluster asks for names and policies.
        let members = || -> Vec<&SimNode> {
            self.nodes_slice()
                .iter()
                .filter(|n| n.group_uuid == group.uuid)
                .collect()
        };
        let primaries = || -> Vec<&String> {
            let members: std::collections::HashSet<&str> =
                members().iter().map(|n| n.name.as_str()).collect();
            self.instances_slice()
                .iter()
                .filter(|i| members.contains(i.primary.as_str()))
                .map(|i| &i.name)
                .collect()
        };
        let value = match field {
            "name" => json!(group.name),
            "uuid" => json!(group.uuid),
            "alloc_policy" => json!(group.alloc_policy),
            "tags" => strings(&group.tags),
            "node_cnt" => json!(members().len()),
            "node_list" => strings(members().iter().map(|n| &n.name)),
            "pinst_cnt" => json!(primaries().len()),
            "pinst_list" => strings(primaries()),
            "ipolicy" => json!({
                "minmax": [{
                    "min": {"cpu-count": 1, "disk-count": 1, "disk-size": 1024, "memory-size": 128, "nic-count": 1, "spindle-use": 1},
                    "max": {"cpu-count": 8, "disk-count": 16, "disk-size": 1048576, "memory-size": 32768, "nic-count": 8, "spindle-use": 12},
                }],
                "std": {"cpu-count": 1, "disk-count": 1, "disk-size": 1024, "memory-size": 128, "nic-count": 1, "spindle-use": 1},
                "disk-templates": ["drbd", "plain", "diskless", "file", "sharedfile", "blockdev", "rbd", "ext"],
                "vcpu-ratio": 4.0,
                "spindle-ratio": 32.0,
            }),
            "custom_ipolicy" | "ndparams" | "diskparams" => json!({}),
            "serial_no" => json!(1),
            _ => return Cell::Unknown,
        };
        Cell::Normal(value)
    }

    fn items(&self, kind: QueryKind) -> Vec<Item<'_>> {
        match kind {
            QueryKind::Node => self.nodes_slice().iter().map(Item::Node).collect(),
            QueryKind::Instance => self.instances_slice().iter().map(Item::Instance).collect(),
            QueryKind::Group => self.groups_slice().iter().map(Item::Group).collect(),
            QueryKind::Job => self
                .queue_jobs()
                .filter(|job| !job.archived)
                .map(Item::Job)
                .collect(),
        }
    }

    /// Luxi `Query`: field definitions and `[status, value]` rows of matching items.
    pub fn query(
        &mut self,
        kind: QueryKind,
        fields: &[String],
        filter: &Value,
        now: f64,
    ) -> Result<Value, QueryError> {
        self.tick(now);
        let filter = Filter::parse(filter)?;
        filter.check_fields(kind)?;
        let mut data = Vec::new();
        let lazy = LazyPlacement::new();
        for item in self.items(kind) {
            if filter.matches(&|field| self.cell(&lazy, item, field))? {
                let row: Vec<Value> = fields
                    .iter()
                    .map(|field| self.cell(&lazy, item, field).to_json())
                    .collect();
                data.push(Value::Array(row));
            }
        }
        let definitions: Vec<Value> = fields
            .iter()
            .map(|field| field_definition(kind, field))
            .collect();
        Ok(json!({"fields": definitions, "data": data}))
    }

    /// The classic queries (`QueryNodes`, `QueryInstances`, `QueryGroups`): plain values;
    /// an empty `names` means all; unknown fields or names fail the whole call.
    pub fn classic_query(
        &mut self,
        kind: QueryKind,
        names: &[String],
        fields: &[String],
        now: f64,
    ) -> Result<Vec<Value>, QueryError> {
        self.tick(now);
        check_output_fields(kind, fields)?;
        let items = self.items(kind);
        let lazy = LazyPlacement::new();
        let selected: Vec<Item<'_>> = if names.is_empty() {
            items
        } else {
            let mut selected = Vec::new();
            for name in names {
                let found = items
                    .iter()
                    .find(|item| self.cell(&lazy, **item, "name").normal() == Some(&json!(name)));
                match found {
                    Some(item) => selected.push(*item),
                    None => {
                        let what = match kind {
                            QueryKind::Node => "Node",
                            QueryKind::Instance => "Instance",
                            _ => "Group",
                        };
                        return Err(QueryError::Prereq(
                            format!("{what} '{name}' not known"),
                            "unknown_entity",
                        ));
                    }
                }
            }
            selected
        };
        Ok(selected
            .into_iter()
            .map(|item| self.plain_row(&lazy, item, fields))
            .collect())
    }

    /// Luxi `QueryJobs`: one row of plain values per job; `None` means every job that is
    /// not archived. A job id the queue does not know gives its id and nulls, like luxid.
    pub fn query_jobs(
        &mut self,
        ids: Option<&[u64]>,
        fields: &[String],
        now: f64,
    ) -> Result<Vec<Value>, QueryError> {
        self.tick(now);
        check_output_fields(QueryKind::Job, fields)?;
        let items: Vec<Item<'_>> = match ids {
            None => self.items(QueryKind::Job),
            Some(ids) => ids
                .iter()
                .map(|id| match self.queue_job(*id) {
                    Some(job) => Item::Job(job),
                    None => Item::MissingJob(*id),
                })
                .collect(),
        };
        let lazy = LazyPlacement::new();
        Ok(items
            .into_iter()
            .map(|item| self.plain_row(&lazy, item, fields))
            .collect())
    }

    fn plain_row<'a>(
        &'a self,
        lazy: &LazyPlacement<'a>,
        item: Item<'_>,
        fields: &[String],
    ) -> Value {
        Value::Array(
            fields
                .iter()
                .map(|field| self.cell(lazy, item, field).into_value())
                .collect(),
        )
    }
}

fn check_output_fields(kind: QueryKind, fields: &[String]) -> Result<(), QueryError> {
    let unknown: Vec<&str> = fields
        .iter()
        .map(String::as_str)
        .filter(|f| !is_known(kind, f))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(QueryError::Prereq(
            format!("Unknown output fields selected: {}", unknown.join(", ")),
            "wrong_input",
        ))
    }
}

/// A made-up but stable primary address per node: 192.0.2.<position>.
fn node_address(placement: &Placement<'_>, name: &str) -> String {
    let position = placement.position(name).unwrap_or(0);
    format!("192.0.2.{}", position + 1)
}

fn job_cell(job: &SimJob, field: &str) -> Cell {
    let per_op = |f: &dyn Fn(&super::queue::QueuedOp) -> Value| {
        Value::Array(job.ops.iter().map(f).collect())
    };
    let timestamp = |t: Option<f64>| t.map(ganeti_timestamp);
    let value = match field {
        "id" => json!(job.id.0),
        "status" => json!(job.status()),
        "priority" => json!(0),
        "oppriority" => per_op(&|_| json!(0)),
        "archived" => json!(job.archived),
        "ops" => per_op(&|op| op.input.clone()),
        "opresult" => per_op(&|op| op.result.clone()),
        "opstatus" => per_op(&|op| json!(op.status)),
        "oplog" => per_op(&|op| Value::Array(op.log.iter().map(log_entry).collect())),
        "opstart" | "opexec" => per_op(&|op| json!(timestamp(op.started))),
        "opend" => per_op(&|op| json!(timestamp(op.ended))),
        "summary" => json!(job.summaries()),
        "received_ts" => ganeti_timestamp(job.received),
        "start_ts" => match job.started {
            Some(t) => ganeti_timestamp(t),
            None => return Cell::Unavailable,
        },
        "end_ts" => match job.ended {
            Some(t) => ganeti_timestamp(t),
            None => return Cell::Unavailable,
        },
        _ => return Cell::Unknown,
    };
    Cell::Normal(value)
}

/// A parsed query filter.
#[derive(Debug, Clone, PartialEq)]
enum Filter {
    All,
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Truthy(String),
    Compare(Comparison, String, Value),
    Contains(String, Value),
    Regex(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Equal,
    NotEqual,
    Less,
    Greater,
    LessEqual,
    GreaterEqual,
}

impl Filter {
    fn parse(filter: &Value) -> Result<Filter, QueryError> {
        let malformed = |why: &str| QueryError::Malformed(format!("Invalid query filter: {why}"));
        let items = match filter {
            Value::Null => return Ok(Filter::All),
            Value::Array(items) => items,
            _ => return Err(malformed(&format!("expected a list, got {filter}"))),
        };
        let Some((Value::String(operator), operands)) = items.split_first() else {
            return Err(malformed("a filter starts with its operator"));
        };
        let field = |index: usize| match operands.get(index) {
            Some(Value::String(name)) => Ok(name.clone()),
            _ => Err(malformed(&format!("'{operator}' needs a field name"))),
        };
        // Ganeti's filter values are strings or integers only.
        let operand = |index: usize| match operands.get(index) {
            Some(value @ Value::String(_)) => Ok(value.clone()),
            Some(value @ Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(value.clone()),
            _ => Err(malformed(&format!(
                "'{operator}' needs a string or integer value"
            ))),
        };
        let exact = |count: usize| {
            if operands.len() == count {
                Ok(())
            } else {
                Err(malformed(&format!("'{operator}' takes {count} arguments")))
            }
        };
        let comparison = |kind: Comparison| -> Result<Filter, QueryError> {
            exact(2)?;
            Ok(Filter::Compare(kind, field(0)?, operand(1)?))
        };
        match operator.as_str() {
            "&" => Ok(Filter::And(
                operands
                    .iter()
                    .map(Filter::parse)
                    .collect::<Result<_, _>>()?,
            )),
            "|" => Ok(Filter::Or(
                operands
                    .iter()
                    .map(Filter::parse)
                    .collect::<Result<_, _>>()?,
            )),
            "!" => {
                exact(1)?;
                Ok(Filter::Not(Box::new(Filter::parse(&operands[0])?)))
            }
            "?" => {
                exact(1)?;
                Ok(Filter::Truthy(field(0)?))
            }
            "==" | "=" => comparison(Comparison::Equal),
            "!=" => comparison(Comparison::NotEqual),
            "<" => comparison(Comparison::Less),
            ">" => comparison(Comparison::Greater),
            "<=" => comparison(Comparison::LessEqual),
            ">=" => comparison(Comparison::GreaterEqual),
            "=[]" => {
                exact(2)?;
                Ok(Filter::Contains(field(0)?, operand(1)?))
            }
            "=~" => {
                exact(2)?;
                field(0).map(Filter::Regex)
            }
            other => Err(malformed(&format!("unknown operator '{other}'"))),
        }
    }

    fn check_fields(&self, kind: QueryKind) -> Result<(), QueryError> {
        match self {
            Filter::All => Ok(()),
            Filter::And(parts) | Filter::Or(parts) => {
                parts.iter().try_for_each(|p| p.check_fields(kind))
            }
            Filter::Not(inner) => inner.check_fields(kind),
            Filter::Truthy(field) | Filter::Compare(_, field, _) | Filter::Contains(field, _) => {
                if is_known(kind, field) {
                    Ok(())
                } else {
                    Err(QueryError::Prereq(
                        format!("Filter refers to unknown field '{field}'"),
                        "wrong_input",
                    ))
                }
            }
            Filter::Regex(_) => Err(QueryError::Prereq(
                "Regular expression filters are not supported by the simulator".to_owned(),
                "wrong_input",
            )),
        }
    }

    /// Evaluate against one item; cells that are not normal never match.
    fn matches(&self, cell: &dyn Fn(&str) -> Cell) -> Result<bool, QueryError> {
        Ok(match self {
            Filter::All => true,
            Filter::And(parts) => {
                for part in parts {
                    if !part.matches(cell)? {
                        return Ok(false);
                    }
                }
                true
            }
            Filter::Or(parts) => {
                for part in parts {
                    if part.matches(cell)? {
                        return Ok(true);
                    }
                }
                false
            }
            Filter::Not(inner) => !inner.matches(cell)?,
            Filter::Truthy(field) => cell(field).normal().is_some_and(truthy),
            Filter::Compare(kind, field, expected) => {
                let actual = cell(field);
                let Some(actual) = actual.normal() else {
                    return Ok(false);
                };
                let order = compare(actual, expected);
                match kind {
                    Comparison::Equal => order == Some(Ordering::Equal),
                    Comparison::NotEqual => order != Some(Ordering::Equal),
                    Comparison::Less => order == Some(Ordering::Less),
                    Comparison::Greater => order == Some(Ordering::Greater),
                    Comparison::LessEqual => {
                        matches!(order, Some(Ordering::Less | Ordering::Equal))
                    }
                    Comparison::GreaterEqual => {
                        matches!(order, Some(Ordering::Greater | Ordering::Equal))
                    }
                }
            }
            Filter::Contains(field, expected) => match cell(field).normal() {
                Some(Value::Array(values)) => values
                    .iter()
                    .any(|v| compare(v, expected) == Some(Ordering::Equal)),
                _ => false,
            },
            Filter::Regex(_) => false,
        })
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Order strings with strings and numbers with numbers; anything else is incomparable.
fn compare(actual: &Value, expected: &Value) -> Option<Ordering> {
    match (actual, expected) {
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimSpec;

    fn sim() -> SimCluster {
        SimCluster::generate(
            &SimSpec {
                nodes: 3,
                instances: 9,
                seed: 2,
                ..SimSpec::default()
            },
            0.0,
        )
    }

    fn names(result: &Value) -> Vec<String> {
        result["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row[0][1].as_str().map(str::to_owned))
            .collect()
    }

    fn fields(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_field_gets_status_one_and_kind_unknown() {
        let mut sim = sim();
        let result = sim
            .query(
                QueryKind::Node,
                &fields(&["name", "bogus"]),
                &Value::Null,
                0.0,
            )
            .expect("query works");
        assert_eq!(result["fields"][1]["kind"], "unknown");
        assert_eq!(result["data"][0][1], json!([1, null]));
        assert_eq!(result["data"][0][0], json!([0, "node1"]));
        assert_eq!(result["fields"][0]["title"], "Node");
    }

    #[test]
    fn filters_select_items() {
        let mut sim = sim();
        let by_name = json!(["|", ["==", "name", "node1"], ["==", "name", "node3"]]);
        let result = sim
            .query(QueryKind::Node, &fields(&["name"]), &by_name, 0.0)
            .expect("valid");
        assert_eq!(names(&result), ["node1", "node3"]);

        let not_master = json!(["!", ["?", "master"]]);
        let result = sim
            .query(QueryKind::Node, &fields(&["name"]), &not_master, 0.0)
            .expect("valid");
        assert_eq!(names(&result), ["node2", "node3"]);

        let on_node2 = json!(["&", ["=[]", "snodes", "node2"], ["!=", "pnode", "node2"]]);
        let result = sim
            .query(
                QueryKind::Instance,
                &fields(&["name", "snodes"]),
                &on_node2,
                0.0,
            )
            .expect("valid");
        let rows = result["data"].as_array().expect("rows").clone();
        assert!(!rows.is_empty());
        for row in rows {
            assert!(row[1][1]
                .as_array()
                .expect("list")
                .contains(&json!("node2")));
        }

        let big = json!([">=", "be/maxmem", 4096]);
        let result = sim
            .query(QueryKind::Instance, &fields(&["be/maxmem"]), &big, 0.0)
            .expect("valid");
        for row in result["data"].as_array().expect("rows") {
            assert!(row[0][1].as_u64().expect("number") >= 4096);
        }
    }

    #[test]
    fn bad_filters_are_refused() {
        let mut sim = sim();
        let f = fields(&["name"]);
        assert!(matches!(
            sim.query(QueryKind::Node, &f, &json!(["~~", "name", "x"]), 0.0),
            Err(QueryError::Malformed(_))
        ));
        assert!(matches!(
            sim.query(QueryKind::Node, &f, &json!(["==", "name", true]), 0.0),
            Err(QueryError::Malformed(_))
        ));
        assert!(matches!(
            sim.query(QueryKind::Node, &f, &json!(["==", "nope", "x"]), 0.0),
            Err(QueryError::Prereq(_, "wrong_input"))
        ));
        assert!(matches!(
            sim.query(QueryKind::Node, &f, &json!([]), 0.0),
            Err(QueryError::Malformed(_))
        ));
    }

    #[test]
    fn offline_nodes_hide_live_fields() {
        let mut sim = sim();
        sim.node_mut("node3").expect("exists").offline = true;
        let result = sim
            .query(
                QueryKind::Node,
                &fields(&["mfree", "offline"]),
                &json!(["==", "name", "node3"]),
                0.0,
            )
            .expect("valid");
        assert_eq!(result["data"][0], json!([[4, null], [0, true]]));
    }

    #[test]
    fn classic_queries_return_plain_values() {
        let mut sim = sim();
        let rows = sim
            .classic_query(
                QueryKind::Node,
                &fields(&["node2"]),
                &fields(&["name", "role"]),
                0.0,
            )
            .expect("valid");
        assert_eq!(rows, [json!(["node2", "C"])]);
        assert!(matches!(
            sim.classic_query(QueryKind::Node, &[], &fields(&["bogus"]), 0.0),
            Err(QueryError::Prereq(_, "wrong_input"))
        ));
        assert!(matches!(
            sim.classic_query(
                QueryKind::Node,
                &fields(&["node9"]),
                &fields(&["name"]),
                0.0
            ),
            Err(QueryError::Prereq(_, "unknown_entity"))
        ));
    }

    #[test]
    fn group_query_lists_members() {
        let mut sim = sim();
        let result = sim
            .query(
                QueryKind::Group,
                &fields(&["name", "node_cnt", "alloc_policy"]),
                &Value::Null,
                0.0,
            )
            .expect("valid");
        assert_eq!(
            result["data"][0],
            json!([[0, "default"], [0, 3], [0, "preferred"]])
        );
    }
}
