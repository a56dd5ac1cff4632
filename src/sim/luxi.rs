//! One Luxi request in, one Luxi response out, as luxid answers (Ganeti's
//! `src/Ganeti/UDSServer.hs` `handleRawMessage`, `src/Ganeti/Query/Server.hs`
//! `handleCall`).
//!
//! Two failure shapes, as luxid has them: a request that cannot be parsed (bad JSON, an
//! unknown method, malformed arguments, an unknown or malformed opcode) gets
//! `{"success": false, "result": "Failed to parse request: ..."}`; a handler that refuses
//! gets an encoded exception such as `["OpPrereqError", [message, code]]`.

use serde_json::{json, Map, Value};

use super::query::{all_field_definitions, field_definition, QueryError, QueryKind};
use super::{SimCluster, SimError};
use crate::model::job::JobId;
use crate::model::opcode::{OpBody, Opcode};

/// Keys every opcode accepts (Ganeti's common opcode parameters).
const COMMON_KEYS: &[&str] = &[
    "OP_ID",
    "dry_run",
    "debug_level",
    "priority",
    "depends",
    "comment",
    "reason",
];

/// The opcodes the simulator runs, each with the keys Ganeti 3.x accepts for it
/// (luxid refuses superfluous keys; `OP_REPAIR_COMMAND` is the 2.17 definition).
pub const SUPPORTED_OPCODES: &[(&str, &[&str])] = &[
    (
        "OP_NODE_SET_PARAMS",
        &[
            "node_name",
            "node_uuid",
            "force",
            "auto_promote",
            "master_candidate",
            "offline",
            "drained",
            "master_capable",
            "vm_capable",
            "secondary_ip",
            "ndparams",
            "hv_state",
            "disk_state",
            "powered",
        ],
    ),
    (
        "OP_INSTANCE_MIGRATE",
        &[
            "instance_name",
            "instance_uuid",
            "mode",
            "live",
            "target_node",
            "target_node_uuid",
            "allow_runtime_changes",
            "ignore_ipolicy",
            "cleanup",
            "iallocator",
            "allow_failover",
            "ignore_hvversions",
        ],
    ),
    (
        "OP_INSTANCE_FAILOVER",
        &[
            "instance_name",
            "instance_uuid",
            "shutdown_timeout",
            "ignore_consistency",
            "target_node",
            "target_node_uuid",
            "ignore_ipolicy",
            "cleanup",
            "iallocator",
        ],
    ),
    (
        "OP_INSTANCE_REPLACE_DISKS",
        &[
            "instance_name",
            "instance_uuid",
            "mode",
            "disks",
            "remote_node",
            "remote_node_uuid",
            "iallocator",
            "early_release",
            "ignore_ipolicy",
        ],
    ),
    (
        "OP_INSTANCE_MOVE",
        &[
            "instance_name",
            "instance_uuid",
            "shutdown_timeout",
            "ignore_ipolicy",
            "target_node",
            "target_node_uuid",
            "compress",
            "ignore_consistency",
        ],
    ),
    ("OP_TAGS_SET", &["kind", "name", "tags"]),
    ("OP_TAGS_DEL", &["kind", "name", "tags"]),
    ("OP_REPAIR_COMMAND", &["node_name", "command", "input"]),
    (
        "OP_TEST_DELAY",
        &[
            "duration",
            "on_master",
            "on_nodes",
            "on_node_uuids",
            "repeat",
            "interruptible",
            "no_locks",
        ],
    ),
];

/// Luxi methods that exist but that the simulator does not implement.
const UNIMPLEMENTED_METHODS: &[&str] = &[
    "SetWatcherPause",
    "QueryFilters",
    "ReplaceFilter",
    "DeleteFilter",
    "ChangeJobPriority",
    "PickupJob",
    "QueryNetworks",
    "QueryExports",
    "AutoArchiveJobs",
];

/// Why a request failed, in one of luxid's two shapes.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    /// The request could not be parsed: `result` is a plain string.
    Parse(String),
    /// The handler failed: `result` is an encoded exception.
    Exception(Value),
}

fn prereq(message: impl Into<String>, code: &str) -> Failure {
    Failure::Exception(json!(["OpPrereqError", [message.into(), code]]))
}

fn generic(message: impl Into<String>) -> Failure {
    Failure::Exception(json!(["GenericError", [message.into()]]))
}

impl From<QueryError> for Failure {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::Malformed(message) => Failure::Parse(message),
            QueryError::Prereq(message, code) => prereq(message, code),
        }
    }
}

type Handled = Result<Value, Failure>;

/// Positional arguments of one method, with luxid-style parse errors.
struct Args<'a> {
    method: &'a str,
    values: &'a [Value],
}

impl<'a> Args<'a> {
    fn parse_error(&self, detail: impl std::fmt::Display) -> Failure {
        Failure::Parse(format!("{}: {detail}", self.method))
    }

    fn get(&self, index: usize) -> Result<&'a Value, Failure> {
        self.values
            .get(index)
            .ok_or_else(|| self.parse_error(format!("missing argument {index}")))
    }

    fn string(&self, index: usize) -> Result<&'a str, Failure> {
        self.get(index)?
            .as_str()
            .ok_or_else(|| self.parse_error(format!("argument {index} must be a string")))
    }

    fn list(&self, index: usize) -> Result<&'a [Value], Failure> {
        self.get(index)?
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| self.parse_error(format!("argument {index} must be a list")))
    }

    fn strings(&self, index: usize) -> Result<Vec<String>, Failure> {
        self.list(index)?
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    self.parse_error(format!("argument {index} must be a list of strings"))
                })
            })
            .collect()
    }

    fn job_id(&self, value: &Value) -> Result<JobId, Failure> {
        serde_json::from_value(value.clone()).map_err(|e| self.parse_error(e))
    }

    fn bool_or(&self, index: usize, default: bool) -> Result<bool, Failure> {
        match self.values.get(index) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.parse_error(format!("argument {index} must be a boolean"))),
        }
    }
}

impl SimCluster {
    /// Answer one Luxi request (JSON, without the 0x03 terminator) exactly like luxid.
    /// Never panics, whatever the input.
    pub fn handle_luxi(&mut self, request: &[u8], now: f64) -> Vec<u8> {
        let response = match self.dispatch_luxi(request, now) {
            Ok(result) => json!({"success": true, "result": result}),
            Err(Failure::Parse(message)) => json!({
                "success": false,
                "result": format!("Failed to parse request: {message}"),
            }),
            Err(Failure::Exception(exception)) => json!({"success": false, "result": exception}),
        };
        serde_json::to_vec(&response).unwrap_or_else(|_| {
            br#"{"success":false,"result":"Failed to encode the response"}"#.to_vec()
        })
    }

    fn dispatch_luxi(&mut self, request: &[u8], now: f64) -> Handled {
        let request: Value = serde_json::from_slice(request)
            .map_err(|e| Failure::Parse(format!("Unable to parse JSON: {e}")))?;
        let Value::Object(envelope) = request else {
            return Err(Failure::Parse("request is not a JSON object".to_owned()));
        };
        let method = match envelope.get("method") {
            Some(Value::String(method)) => method.as_str(),
            _ => {
                return Err(Failure::Parse(
                    "key 'method' not found or not a string".to_owned(),
                ))
            }
        };
        let values = match envelope.get("args") {
            Some(Value::Array(values)) => values.as_slice(),
            _ => {
                return Err(Failure::Parse(format!(
                    "{method}: key 'args' not found or not a list"
                )))
            }
        };
        let args = Args { method, values };
        match method {
            "SubmitJob" => self.luxi_submit_job(&args, now, false),
            "SubmitJobToDrainedQueue" => self.luxi_submit_job(&args, now, true),
            "SubmitManyJobs" => self.luxi_submit_many(&args, now),
            "QueryJobs" => self.luxi_query_jobs(&args, now),
            "WaitForJobChange" => self.luxi_wait_for_job_change(&args, now),
            "CancelJob" => {
                // `[id, kill]`, or `[id]` meaning `kill = false`, as luxid parses it.
                let id = args.job_id(args.get(0)?)?;
                let _kill = args.bool_or(1, false)?;
                let (canceled, message) = self.cancel_job(id, now);
                Ok(json!([canceled, message]))
            }
            "ArchiveJob" => {
                let id = args.job_id(args.get(0)?)?;
                Ok(json!(self.archive_job(id, now)))
            }
            "Query" => {
                let kind = query_kind(&args, args.string(0)?)?;
                let fields = args.strings(1)?;
                let filter = args.values.get(2).cloned().unwrap_or(Value::Null);
                Ok(self.query(kind, &fields, &filter, now)?)
            }
            "QueryFields" => {
                let kind = query_kind(&args, args.string(0)?)?;
                let definitions = match args.get(1) {
                    Ok(Value::Null) | Err(_) => all_field_definitions(kind),
                    Ok(_) => args
                        .strings(1)?
                        .iter()
                        .map(|f| field_definition(kind, f))
                        .collect(),
                };
                Ok(json!({"fields": definitions}))
            }
            "QueryNodes" => self.luxi_classic(&args, QueryKind::Node, now),
            "QueryInstances" => self.luxi_classic(&args, QueryKind::Instance, now),
            "QueryGroups" => self.luxi_classic(&args, QueryKind::Group, now),
            "QueryTags" => self.luxi_query_tags(&args, now),
            "QueryClusterInfo" => Ok(self.cluster_info(now)),
            "QueryConfigValues" => {
                let names = args.strings(0)?;
                let values: Vec<Value> = names
                    .iter()
                    .map(|name| self.config_value(name, now))
                    .collect();
                Ok(Value::Array(values))
            }
            "SetDrainFlag" => {
                let drained = args
                    .get(0)?
                    .as_bool()
                    .ok_or_else(|| args.parse_error("argument 0 must be a boolean"))?;
                self.set_drain_flag(drained);
                Ok(json!(true))
            }
            other if UNIMPLEMENTED_METHODS.contains(&other) => Err(generic(format!(
                "{other} is not implemented by the simulator"
            ))),
            other => Err(Failure::Parse(format!(
                "Unable to parse LUXI request method: Invalid string value for type LuxiReq: {}",
                Value::String(other.to_owned())
            ))),
        }
    }

    fn luxi_submit_job(&mut self, args: &Args<'_>, now: f64, bypass_drain: bool) -> Handled {
        let ops = parse_job(args, args.get(0)?)?;
        let was_drained = self.drain_flag();
        if bypass_drain {
            self.set_drain_flag(false);
        }
        let submitted = self.submit_inputs(ops, now);
        self.set_drain_flag(was_drained);
        match submitted {
            Ok(id) => Ok(json!(id.0)),
            Err(SimError::QueueDrained) => Err(generic("Queue drained")),
            Err(other) => Err(prereq(other.to_string(), "wrong_input")),
        }
    }

    fn luxi_submit_many(&mut self, args: &Args<'_>, now: f64) -> Handled {
        // Every job must parse before any is queued, as luxid decodes the whole request.
        let jobs = args
            .list(0)?
            .iter()
            .map(|job| parse_job(args, job))
            .collect::<Result<Vec<_>, _>>()?;
        if self.drain_flag() {
            return Err(generic("Queue drained"));
        }
        let results: Vec<Value> = jobs
            .into_iter()
            .map(|ops| match self.submit_inputs(ops, now) {
                Ok(id) => json!([true, id.0]),
                Err(error) => json!([false, error.to_string()]),
            })
            .collect();
        Ok(Value::Array(results))
    }

    fn luxi_query_jobs(&mut self, args: &Args<'_>, now: f64) -> Handled {
        let ids = match args.get(0)? {
            Value::Null => None,
            Value::Array(ids) => Some(
                ids.iter()
                    .map(|id| args.job_id(id).map(|id| id.0))
                    .collect::<Result<Vec<u64>, _>>()?,
            ),
            _ => return Err(args.parse_error("argument 0 must be a list of job ids or null")),
        };
        let fields = args.strings(1)?;
        Ok(Value::Array(self.query_jobs(
            ids.as_deref(),
            &fields,
            now,
        )?))
    }

    /// Answer at once with the current values (the simulator never blocks) and the log
    /// entries newer than `prev_log_serial`.
    fn luxi_wait_for_job_change(&mut self, args: &Args<'_>, now: f64) -> Handled {
        let id = args.job_id(args.get(0)?)?;
        let fields = args.strings(1)?;
        let after_serial = args.values.get(3).and_then(Value::as_u64).unwrap_or(0);
        if self.job(id, now).is_none() {
            return Err(Failure::Exception(json!([
                "JobLost",
                [format!("Job {id} not found")]
            ])));
        }
        let mut rows = self.query_jobs(Some(&[id.0]), &fields, now)?;
        let values = rows.pop().unwrap_or_else(|| json!([]));
        let log: Vec<Value> = self
            .job(id, now)
            .map(|job| {
                job.log_entries()
                    .into_iter()
                    .filter(|entry| entry[0].as_u64().is_some_and(|s| s > after_serial))
                    .collect()
            })
            .unwrap_or_default();
        Ok(json!([values, log]))
    }

    fn luxi_classic(&mut self, args: &Args<'_>, kind: QueryKind, now: f64) -> Handled {
        let names = args.strings(0)?;
        let fields = args.strings(1)?;
        if args.bool_or(2, false)? {
            return Err(prereq("Sync queries are not allowed", "wrong_input"));
        }
        Ok(Value::Array(
            self.classic_query(kind, &names, &fields, now)?,
        ))
    }

    fn luxi_query_tags(&mut self, args: &Args<'_>, now: f64) -> Handled {
        self.tick(now);
        let kind = args.string(0)?;
        let name = args
            .values
            .get(1)
            .and_then(Value::as_str)
            .unwrap_or_default();
        let tags = match kind {
            "cluster" => Some(self.cluster_tags()),
            "node" => self.node(name).map(|n| &n.tags),
            "instance" => self.instance(name).map(|i| &i.tags),
            "nodegroup" => self
                .groups_slice()
                .iter()
                .find(|g| g.name == name || g.uuid == name)
                .map(|g| &g.tags),
            "network" => None,
            other => return Err(args.parse_error(format!("invalid tag kind '{other}'"))),
        };
        match tags {
            Some(tags) => Ok(json!(tags)),
            None => {
                let what = match kind {
                    "node" => "Node",
                    "instance" => "Instance",
                    "nodegroup" => "Group",
                    _ => "Network",
                };
                Err(prereq(
                    format!("{what} '{name}' not known"),
                    "unknown_entity",
                ))
            }
        }
    }

    /// `QueryClusterInfo`: the subset of `/2/info` a maintenance daemon looks at.
    pub fn cluster_info(&mut self, now: f64) -> Value {
        self.tick(now);
        json!({
            "software_version": "3.0.2",
            "protocol_version": 3000000,
            "config_version": 3000000,
            "os_api_version": 20,
            "export_version": 0,
            "vcs_version": "(ganeti) version 3.0.2 (maintd simulator)",
            "architecture": ["64bits", "x86_64"],
            "name": self.cluster_name(),
            "uuid": self.cluster_uuid(),
            "master": self.master_name(),
            "tags": self.cluster_tags(),
            "default_hypervisor": "kvm",
            "enabled_hypervisors": ["kvm"],
            "enabled_disk_templates": ["drbd", "plain", "diskless"],
            "candidate_pool_size": super::CANDIDATE_POOL_SIZE,
            "default_iallocator": "hail",
            "maintain_node_health": false,
            "volume_group_name": "xenvg",
            "master_netdev": "eth0",
            "ctime": 0,
            "mtime": 0,
            "serial_no": 1,
        })
    }

    fn config_value(&mut self, name: &str, now: f64) -> Value {
        self.tick(now);
        match name {
            "cluster_name" => json!(self.cluster_name()),
            "master_node" => json!(self.master_name()),
            "drain_flag" => json!(self.drain_flag()),
            "watcher_pause" => Value::Null,
            "modify_ssh_setup" => json!(true),
            "ssh_key_type" => json!("rsa"),
            "ssh_key_bits" => json!(2048),
            _ => Value::Null,
        }
    }
}

fn query_kind(args: &Args<'_>, what: &str) -> Result<QueryKind, Failure> {
    match QueryKind::parse(what) {
        Some(kind) => Ok(kind),
        None if ["lock", "network", "export", "filter"].contains(&what) => Err(prereq(
            format!("Queries for '{what}' are not supported by the simulator"),
            "wrong_input",
        )),
        None => Err(args.parse_error(format!("Invalid string value for type ItemType: {what:?}"))),
    }
}

/// Decode one job (a list of opcodes) like luxid, keeping each opcode's submitted JSON.
fn parse_job(args: &Args<'_>, job: &Value) -> Result<Vec<(Value, OpBody)>, Failure> {
    let Value::Array(ops) = job else {
        return Err(args.parse_error("a job must be a list of opcodes"));
    };
    ops.iter().map(|op| parse_opcode(args, op)).collect()
}

fn parse_opcode(args: &Args<'_>, op: &Value) -> Result<(Value, OpBody), Failure> {
    let Value::Object(fields) = op else {
        return Err(args.parse_error(format!("an opcode must be a JSON object, got {op}")));
    };
    let missing = |key: &str| {
        let keys: Vec<&String> = fields.keys().collect();
        args.parse_error(format!(
            "key '{key}' not found, object contains only {}",
            json!(keys)
        ))
    };
    // luxid's decoder looks at the common parameters first, so `reason` is reported first.
    if !fields.contains_key("reason") {
        return Err(missing("reason"));
    }
    let op_id = match fields.get("OP_ID") {
        Some(Value::String(op_id)) => op_id.as_str(),
        _ => return Err(missing("OP_ID")),
    };
    let Some((_, allowed)) = SUPPORTED_OPCODES.iter().find(|(id, _)| *id == op_id) else {
        return Err(args.parse_error(format!("Unknown opcode {op_id}")));
    };
    check_superfluous(args, fields, allowed)?;
    if let Some(priority) = fields.get("priority") {
        if ![json!(-10), json!(0), json!(10)].contains(priority) {
            return Err(args.parse_error(format!("invalid priority {priority}")));
        }
    }
    let decoded: Opcode = serde_json::from_value(op.clone())
        .map_err(|e| args.parse_error(format!("{op_id}: {e}")))?;
    Ok((op.clone(), decoded.body))
}

fn check_superfluous(
    args: &Args<'_>,
    fields: &Map<String, Value>,
    allowed: &[&str],
) -> Result<(), Failure> {
    let extra: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|key| !COMMON_KEYS.contains(key) && !allowed.contains(key))
        .collect();
    if extra.is_empty() {
        Ok(())
    } else {
        Err(args.parse_error(format!("Superfluous dictionary keys: {}", extra.join(", "))))
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
                instances: 6,
                seed: 9,
                job_seconds: 4.0,
                ..SimSpec::default()
            },
            1000.0,
        )
    }

    fn call(sim: &mut SimCluster, request: Value, now: f64) -> Value {
        let bytes = serde_json::to_vec(&request).expect("serializable");
        serde_json::from_slice(&sim.handle_luxi(&bytes, now)).expect("response is JSON")
    }

    fn drain_op(node: &str) -> Value {
        json!({"OP_ID": "OP_NODE_SET_PARAMS", "node_name": node, "drained": true, "force": true,
               "reason": [["gnt:daemon:maintd", "Draining", 1]]})
    }

    #[test]
    fn unknown_method_is_a_parse_error_like_luxid() {
        let mut sim = sim();
        let response = call(
            &mut sim,
            json!({"method": "NoSuchMethod", "args": [], "version": 3000000}),
            1000.0,
        );
        assert_eq!(
            response,
            json!({"success": false, "result": "Failed to parse request: Unable to parse LUXI request method: Invalid string value for type LuxiReq: \"NoSuchMethod\""})
        );
    }

    #[test]
    fn opcode_without_reason_or_unknown_is_a_parse_error() {
        let mut sim = sim();
        let response = call(
            &mut sim,
            json!({"method": "SubmitJob", "args": [[{"OP_ID": "OP_NO_SUCH_OPCODE"}]]}),
            1000.0,
        );
        assert_eq!(
            response["result"],
            "Failed to parse request: SubmitJob: key 'reason' not found, object contains only [\"OP_ID\"]"
        );
        let response = call(
            &mut sim,
            json!({"method": "SubmitJob", "args": [[{"OP_ID": "OP_NODE_EVACUATE", "reason": []}]]}),
            1000.0,
        );
        assert_eq!(
            response["result"],
            "Failed to parse request: SubmitJob: Unknown opcode OP_NODE_EVACUATE"
        );
        let mut verbose = drain_op("node2");
        verbose["verbose"] = json!(false);
        let response = call(
            &mut sim,
            json!({"method": "SubmitJob", "args": [[verbose]]}),
            1000.0,
        );
        assert_eq!(response["success"], false);
        assert!(response["result"]
            .as_str()
            .is_some_and(|r| r.contains("Superfluous dictionary keys: verbose")));
    }

    #[test]
    fn garbage_never_panics() {
        let mut sim = sim();
        for request in [
            &b""[..],
            b"\xff\xfe",
            b"[]",
            b"{}",
            b"{\"method\": 3}",
            b"{\"method\": \"SubmitJob\", \"args\": 5}",
            b"{\"method\": \"SubmitJob\", \"args\": [5]}",
            b"{\"method\": \"SubmitJob\", \"args\": [[5]]}",
            b"{\"method\": \"QueryJobs\", \"args\": [[\"x\"], [\"id\"]]}",
            b"{\"method\": \"Query\", \"args\": [\"node\", [1], null]}",
            b"{\"method\": \"Query\", \"args\": [\"node\", [\"name\"], [\"&\", 5]]}",
            b"{\"method\": \"WaitForJobChange\", \"args\": []}",
            b"{\"method\": \"CancelJob\", \"args\": [-1]}",
        ] {
            let response: Value =
                serde_json::from_slice(&sim.handle_luxi(request, 1000.0)).expect("JSON");
            assert_eq!(
                response["success"],
                false,
                "{}",
                String::from_utf8_lossy(request)
            );
            assert!(response["result"].is_string());
        }
    }

    #[test]
    fn submit_query_and_wait_for_a_job() {
        let mut sim = sim();
        let response = call(
            &mut sim,
            json!({"method": "SubmitJob", "args": [[drain_op("node3")]]}),
            1000.0,
        );
        assert_eq!(response, json!({"success": true, "result": 1}));
        let fields = json!([
            "id",
            "status",
            "ops",
            "opstatus",
            "opresult",
            "summary",
            "received_ts",
            "start_ts",
            "end_ts",
            "oplog"
        ]);
        let response = call(
            &mut sim,
            json!({"method": "QueryJobs", "args": [[1, "2"], fields]}),
            1001.0,
        );
        let row = &response["result"][0];
        assert_eq!(row[1], "running");
        assert_eq!(
            row[2][0]["reason"][1],
            json!([
                "gnt:opcode:node_set_params",
                "job=1;index=0",
                1_000_000_000_000i64
            ])
        );
        assert_eq!(row[5], json!(["NODE_SET_PARAMS(node3)"]));
        assert_eq!(row[6], json!([1000, 0]));
        assert_eq!(row[8], Value::Null);
        // Unknown job: its id, then nulls.
        assert_eq!(
            response["result"][1],
            json!([2, null, null, null, null, null, null, null, null, null])
        );

        let response = call(
            &mut sim,
            json!({"method": "WaitForJobChange", "args": [1, ["status"], null, null, 5]}),
            1004.0,
        );
        assert_eq!(
            response,
            json!({"success": true, "result": [["success"], []]})
        );
        let response = call(
            &mut sim,
            json!({"method": "QueryJobs", "args": [[1], ["opresult", "end_ts"]]}),
            1005.0,
        );
        assert_eq!(
            response["result"][0],
            json!([
                [[["master_candidate", "False"], ["drained", "True"]]],
                [1004, 0]
            ])
        );
        let response = call(
            &mut sim,
            json!({"method": "WaitForJobChange", "args": [77, ["status"], null, null, 5]}),
            1005.0,
        );
        assert_eq!(response["result"][0], "JobLost");
    }

    #[test]
    fn failed_opcode_records_encoded_exception() {
        let mut sim = sim();
        let op = json!({"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "ghost", "reason": []});
        call(
            &mut sim,
            json!({"method": "SubmitJob", "args": [[op, drain_op("node2")]]}),
            1000.0,
        );
        let response = call(
            &mut sim,
            json!({"method": "QueryJobs", "args": [[1], ["status", "opstatus", "opresult"]]}),
            1010.0,
        );
        assert_eq!(
            response["result"][0],
            json!([
                "error",
                ["error", "error"],
                [
                    [
                        "OpPrereqError",
                        ["Instance 'ghost' not known", "unknown_entity"]
                    ],
                    ["OpExecError", ["Preceding opcode failed"]]
                ]
            ])
        );
    }

    #[test]
    fn submit_many_cancel_and_drain() {
        let mut sim = sim();
        let response = call(
            &mut sim,
            json!({"method": "SubmitManyJobs", "args": [[[drain_op("node2")], [drain_op("node2")]]]}),
            1000.0,
        );
        assert_eq!(response["result"], json!([[true, 1], [true, 2]]));
        let response = call(
            &mut sim,
            json!({"method": "CancelJob", "args": [2, false]}),
            1000.0,
        );
        assert_eq!(
            response["result"],
            json!([true, "Job successfully cancelled"])
        );
        let response = call(
            &mut sim,
            json!({"method": "CancelJob", "args": [1]}),
            1000.0,
        );
        assert_eq!(
            response["result"],
            json!([
                false,
                "Job no longer waiting, can't cancel (informed it anyway)"
            ])
        );
        // A canceled (finished) or unknown job is no longer in luxid's queue.
        for id in [2, 404] {
            let response = call(
                &mut sim,
                json!({"method": "CancelJob", "args": [id]}),
                1000.0,
            );
            assert_eq!(
                response["result"],
                json!([false, format!("Job {id} not found in queue")])
            );
        }
        let response = call(
            &mut sim,
            json!({"method": "CancelJob", "args": [1, "yes"]}),
            1000.0,
        );
        assert_eq!(response["success"], false);
        call(
            &mut sim,
            json!({"method": "SetDrainFlag", "args": [true]}),
            1000.0,
        );
        let response = call(
            &mut sim,
            json!({"method": "SubmitJob", "args": [[drain_op("node2")]]}),
            1000.0,
        );
        assert_eq!(
            response["result"],
            json!(["GenericError", ["Queue drained"]])
        );
    }

    #[test]
    fn query_methods_answer_like_luxid() {
        let mut sim = sim();
        let response = call(
            &mut sim,
            json!({"method": "Query", "args": ["node", ["name", "drained", "offline", "master_candidate", "tags"], ["==", "name", "node2"]]}),
            1000.0,
        );
        assert_eq!(
            response["result"]["data"],
            json!([[[0, "node2"], [0, false], [0, false], [0, true], [0, []]]])
        );
        assert_eq!(response["result"]["fields"][3]["title"], "MasterC");
        let response = call(
            &mut sim,
            json!({"method": "QueryNodes", "args": [[], ["name"], true]}),
            1000.0,
        );
        assert_eq!(
            response["result"],
            json!([
                "OpPrereqError",
                ["Sync queries are not allowed", "wrong_input"]
            ])
        );
        let response = call(
            &mut sim,
            json!({"method": "QueryTags", "args": ["node", "node1"]}),
            1000.0,
        );
        assert_eq!(response, json!({"success": true, "result": []}));
        let response = call(
            &mut sim,
            json!({"method": "QueryTags", "args": ["node", "nodeX"]}),
            1000.0,
        );
        assert_eq!(response["result"][1][1], "unknown_entity");
        let response = call(
            &mut sim,
            json!({"method": "QueryClusterInfo", "args": []}),
            1000.0,
        );
        assert_eq!(response["result"]["master"], "node1");
        assert_eq!(response["result"]["name"], "cluster.sim");
        let response = call(
            &mut sim,
            json!({"method": "QueryConfigValues", "args": [["cluster_name", "master_node", "nope"]]}),
            1000.0,
        );
        assert_eq!(response["result"], json!(["cluster.sim", "node1", null]));
        let response = call(
            &mut sim,
            json!({"method": "Query", "args": ["job", ["id", "status"], ["==", "status", "running"]]}),
            1000.0,
        );
        assert_eq!(response["result"]["data"], json!([]));
    }
}
