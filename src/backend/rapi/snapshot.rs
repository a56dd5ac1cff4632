//! The cluster snapshot and the master's name from RAPI's bulk lists (`/2/nodes`,
//! `/2/instances` and `/2/groups` with `?bulk=1`, `/2/tags`, `/2/info`). Decoding is
//! lenient where Ganeti leaves live fields `null`, strict where nothing can stand in.

use serde_json::{Map, Value};

use super::RapiClient;
use crate::{
    backend::BackendError,
    model::cluster::{ClusterSnapshot, DiskTemplate, Group, Instance, Node},
};

fn object<'a>(entry: &'a Value, what: &str) -> Result<&'a Map<String, Value>, BackendError> {
    entry
        .as_object()
        .ok_or_else(|| BackendError::Protocol(format!("{what} entry is not an object: {entry}")))
}

pub(super) fn list<'a>(answer: &'a Value, what: &str) -> Result<&'a Vec<Value>, BackendError> {
    answer
        .as_array()
        .ok_or_else(|| BackendError::Protocol(format!("{what} is not a list: {answer}")))
}

fn text(fields: &Map<String, Value>, key: &str) -> Option<String> {
    fields.get(key)?.as_str().map(str::to_owned)
}

fn flag(fields: &Map<String, Value>, key: &str) -> Option<bool> {
    fields.get(key)?.as_bool()
}

/// A non-negative number (Ganeti sometimes sends floats for sizes), rounded down.
fn count(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

fn small_count(value: Option<&Value>) -> Option<u32> {
    count(value).map(|c| u32::try_from(c).unwrap_or(u32::MAX))
}

fn texts(fields: &Map<String, Value>, key: &str) -> Vec<String> {
    match fields.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// A node from an entry of `/2/nodes?bulk=1`. Live fields (memory, disk, CPUs) are `null`
/// for offline or unreachable nodes and count as 0; an offline node has no resources at
/// all, as with Luxi.
pub fn decode_node(entry: &Value) -> Result<Node, BackendError> {
    let fields = object(entry, "node")?;
    let name = text(fields, "name")
        .ok_or_else(|| BackendError::Protocol(format!("node entry without a name: {entry}")))?;
    let offline = flag(fields, "offline").unwrap_or(false);
    let live = |key: &str| {
        if offline {
            None
        } else {
            fields.get(key)
        }
    };
    Ok(Node {
        uuid: text(fields, "uuid").unwrap_or_default(),
        group: text(fields, "group.uuid").unwrap_or_default(),
        memory_total: count(live("mtotal")).unwrap_or(0),
        memory_free: count(live("mfree")).unwrap_or(0),
        disk_total: count(live("dtotal")).unwrap_or(0),
        disk_free: count(live("dfree")).unwrap_or(0),
        cpus: small_count(live("ctotal")).unwrap_or(0),
        memory_node: count(live("mnode")).unwrap_or(0),
        cpus_node: count(live("cnos"))
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(1),
        spindles: count(fields.get("ndparams").and_then(|p| p.get("spindle_count")))
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(1),
        offline,
        drained: flag(fields, "drained").unwrap_or(false),
        // Ganeti's default for the flag.
        vm_capable: flag(fields, "vm_capable").unwrap_or(true),
        tags: texts(fields, "tags").into_iter().collect(),
        name,
    })
}

/// An instance from an entry of `/2/instances?bulk=1`. Name, primary node and disk
/// template have no sensible default, so their absence fails the snapshot.
pub fn decode_instance(entry: &Value) -> Result<Instance, BackendError> {
    let fields = object(entry, "instance")?;
    let name = text(fields, "name")
        .ok_or_else(|| BackendError::Protocol(format!("instance entry without a name: {entry}")))?;
    let primary = text(fields, "pnode")
        .ok_or_else(|| BackendError::Protocol(format!("instance {name} has no primary node")))?;
    let disk_template = fields
        .get("disk_template")
        .and_then(|v| serde_json::from_value::<DiskTemplate>(v.clone()).ok())
        .ok_or_else(|| {
            BackendError::Protocol(format!(
                "instance {name} has an unknown disk template {:?}",
                fields.get("disk_template")
            ))
        })?;
    let be = |key: &str| fields.get("beparams").and_then(|p| p.get(key));
    Ok(Instance {
        uuid: text(fields, "uuid").unwrap_or_default(),
        primary,
        secondaries: texts(fields, "snodes"),
        disk_template,
        memory: count(be("maxmem")).unwrap_or(0),
        disk: count(fields.get("disk_usage")).unwrap_or(0),
        vcpus: small_count(be("vcpus")).unwrap_or(0),
        status: text(fields, "status").unwrap_or_else(|| "unknown".to_owned()),
        tags: texts(fields, "tags").into_iter().collect(),
        auto_balance: be("auto_balance").and_then(Value::as_bool).unwrap_or(true),
        spindle_use: count(be("spindle_use"))
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(1),
        name,
    })
}

/// A group from an entry of `/2/groups?bulk=1`; `ipolicy` there is the filled policy (the
/// group's own values over the cluster's), as with Luxi.
pub fn decode_group(entry: &Value) -> Result<Group, BackendError> {
    let fields = object(entry, "group")?;
    let name = text(fields, "name")
        .ok_or_else(|| BackendError::Protocol(format!("group entry without a name: {entry}")))?;
    let ratio = |key: &str| {
        fields
            .get("ipolicy")
            .and_then(|p| p.get(key))
            .and_then(Value::as_f64)
    };
    Ok(Group {
        uuid: text(fields, "uuid").unwrap_or_default(),
        alloc_policy: text(fields, "alloc_policy").unwrap_or_else(|| "preferred".to_owned()),
        tags: texts(fields, "tags").into_iter().collect(),
        vcpu_ratio: ratio("vcpu-ratio"),
        spindle_ratio: ratio("spindle-ratio"),
        name,
    })
}

/// The master's name from `/2/info`.
fn decode_master(info: &Value) -> Result<String, BackendError> {
    info.get("master")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| BackendError::Protocol("no master in the RAPI /2/info answer".into()))
}

pub(super) async fn master_node(client: &RapiClient) -> Result<String, BackendError> {
    decode_master(&client.get("/2/info").await?)
}

pub(super) async fn snapshot(client: &RapiClient) -> Result<ClusterSnapshot, BackendError> {
    let (nodes, instances, groups, tags, info) = futures_util::future::try_join5(
        client.get("/2/nodes?bulk=1"),
        client.get("/2/instances?bulk=1"),
        client.get("/2/groups?bulk=1"),
        client.get("/2/tags"),
        client.get("/2/info"),
    )
    .await?;
    Ok(ClusterSnapshot {
        master: decode_master(&info)?,
        cluster_tags: list(&tags, "the cluster tags")?
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        nodes: list(&nodes, "the node list")?
            .iter()
            .map(decode_node)
            .collect::<Result<_, _>>()?,
        instances: list(&instances, "the instance list")?
            .iter()
            .map(decode_instance)
            .collect::<Result<_, _>>()?,
        groups: list(&groups, "the group list")?
            .iter()
            .map(decode_group)
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decoding_never_panics_on_odd_entries() {
        for entry in [
            json!(null),
            json!(1),
            json!("x"),
            json!([]),
            json!({}),
            json!({"name": 5}),
            json!({"name": "x", "pnode": null}),
            json!({"name": "x", "pnode": "n", "disk_template": "floppy"}),
        ] {
            let _ = decode_node(&entry);
            let _ = decode_instance(&entry);
            let _ = decode_group(&entry);
            assert!(decode_instance(&entry).is_err());
        }
        let node = decode_node(&json!({
            "name": "n", "mtotal": -5, "mfree": 1e300, "ctotal": 1e12, "cnos": "x",
            "ndparams": {"spindle_count": 7.9}, "tags": ["a", 3, null]
        }))
        .unwrap();
        assert_eq!(node.memory_total, 0);
        assert_eq!(node.cpus, u32::MAX);
        assert_eq!(node.cpus_node, 1);
        assert_eq!(node.spindles, 7);
        assert_eq!(node.tags.len(), 1);
    }
}
