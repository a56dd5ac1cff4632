//! maintd's opcodes as RAPI requests: the endpoint each goes to and its parameters, or why
//! RAPI cannot express it. The reason and `depends` are added when the job chain is
//! submitted (see the `jobs` module).

use awc::http::Method;
use serde_json::{json, Map, Value};

use crate::model::{
    job::JobId,
    opcode::{OpBody, Opcode, TagKind},
};

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode everything but RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

/// One opcode as a RAPI request (before the reason and `depends` are added).
#[derive(Debug, Clone, PartialEq)]
pub struct OpRequest {
    /// HTTP method.
    pub method: Method,
    /// Path, percent-encoded.
    pub path: String,
    /// Query arguments other than `reason` (the tags of a tag request), not yet encoded.
    pub query: Vec<(String, String)>,
    /// Body parameters (`None`: the endpoint takes its parameters from the URL; a body is
    /// then sent only to carry `depends`).
    pub body: Option<Map<String, Value>>,
}

impl OpRequest {
    /// Path and query with `reason` appended.
    pub fn path_and_query(&self, reason: &str) -> String {
        let mut out = self.path.clone();
        let arguments = self
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(std::iter::once(("reason", reason)));
        for (i, (key, value)) in arguments.enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(&percent_encode(key));
            out.push('=');
            out.push_str(&percent_encode(value));
        }
        out
    }

    /// The JSON body, with `depends` on `previous` succeeding if given.
    pub fn body_with_depends(&self, previous: Option<JobId>) -> Option<Value> {
        let depends = previous.map(|id| json!([[id, ["success"]]]));
        match (&self.body, depends) {
            (Some(body), depends) => {
                let mut body = body.clone();
                if let Some(depends) = depends {
                    body.insert("depends".into(), depends);
                }
                Some(Value::Object(body))
            }
            (None, Some(depends)) => Some(json!({ "depends": depends })),
            (None, None) => None,
        }
    }
}

/// The opcode's parameters without `OP_ID` and the name that goes into the URL.
fn body_params(body: &OpBody, name_key: &str) -> Result<Map<String, Value>, String> {
    match serde_json::to_value(body) {
        Ok(Value::Object(mut fields)) => {
            fields.remove("OP_ID");
            fields.remove(name_key);
            Ok(fields)
        }
        Ok(other) => Err(format!("{} encodes as {other}", body.op_id())),
        Err(e) => Err(format!("cannot encode {}: {e}", body.op_id())),
    }
}

fn tags_request(
    method: Method,
    kind: TagKind,
    name: Option<&str>,
    tags: &[String],
) -> Result<OpRequest, String> {
    let named = |collection: &str| match name {
        Some(name) if !name.is_empty() => {
            Ok(format!("/2/{collection}/{}/tags", percent_encode(name)))
        }
        _ => Err(format!("tags of a {kind:?} need the object's name").to_lowercase()),
    };
    let path = match kind {
        TagKind::Cluster => "/2/tags".to_owned(),
        TagKind::Node => named("nodes")?,
        TagKind::Instance => named("instances")?,
        TagKind::Nodegroup => named("groups")?,
        TagKind::Network => named("networks")?,
    };
    Ok(OpRequest {
        method,
        path,
        // RAPI reads the tags from `tag=` arguments only; a body is ignored.
        query: tags.iter().map(|t| ("tag".to_owned(), t.clone())).collect(),
        body: None,
    })
}

/// The RAPI request for one opcode, or why RAPI cannot express it.
pub fn op_request(body: &OpBody) -> Result<OpRequest, String> {
    let instance = |method: Method, action: &str, name: &str| -> Result<OpRequest, String> {
        Ok(OpRequest {
            method,
            path: format!("/2/instances/{}/{action}", percent_encode(name)),
            query: Vec::new(),
            body: Some(body_params(body, "instance_name")?),
        })
    };
    match body {
        OpBody::NodeSetParams { node_name, .. } => Ok(OpRequest {
            method: Method::POST,
            path: format!("/2/nodes/{}/modify", percent_encode(node_name)),
            query: Vec::new(),
            body: Some(body_params(body, "node_name")?),
        }),
        OpBody::InstanceMigrate { instance_name, .. } => {
            instance(Method::PUT, "migrate", instance_name)
        }
        OpBody::InstanceFailover { instance_name, .. } => {
            instance(Method::PUT, "failover", instance_name)
        }
        OpBody::InstanceReplaceDisks { instance_name, .. } => {
            instance(Method::POST, "replace-disks", instance_name)
        }
        OpBody::InstanceRecreateDisks { instance_name, .. } => {
            instance(Method::POST, "recreate-disks", instance_name)
        }
        OpBody::TagsSet { kind, name, tags } => {
            tags_request(Method::PUT, *kind, name.as_deref(), tags)
        }
        OpBody::TagsDel { kind, name, tags } => {
            tags_request(Method::DELETE, *kind, name.as_deref(), tags)
        }
        OpBody::InstanceMove { .. } => Err(
            "OP_INSTANCE_MOVE has no RAPI endpoint; moving a non-mirrored instance needs the \
             Luxi backend"
                .into(),
        ),
        OpBody::TestDelay { .. } => Err(
            "OP_TEST_DELAY has no RAPI endpoint; with the RAPI backend set \
             planner.harep_job_delay = 0"
                .into(),
        ),
        OpBody::RepairCommand { .. } => {
            Err("OP_REPAIR_COMMAND exists only in Ganeti 2.17 and has no RAPI endpoint".into())
        }
        OpBody::InstanceReinstall { .. } => Err(
            "OP_INSTANCE_REINSTALL cannot be sent through RAPI as maintd means it: the \
             reinstall endpoint adds a shutdown and a startup and accepts neither depends \
             nor a reason"
                .into(),
        ),
    }
}

/// The requests of one maintd job, or why the job cannot go through RAPI.
pub fn job_requests(ops: &[Opcode]) -> Result<Vec<OpRequest>, String> {
    if ops.is_empty() {
        return Err("a job needs at least one opcode".into());
    }
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            op_request(&op.body).map_err(|e| {
                if ops.len() == 1 {
                    e
                } else {
                    format!("opcode {} of {}: {e}", i + 1, ops.len())
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(
            percent_encode("ganeti:watcher:autorepair:pending:migrate:u:1:4+5 x/é"),
            "ganeti%3Awatcher%3Aautorepair%3Apending%3Amigrate%3Au%3A1%3A4%2B5%20x%2F%C3%A9"
        );
        assert_eq!(
            percent_encode("node1.ganeti-test_x~"),
            "node1.ganeti-test_x~"
        );
    }

    #[test]
    fn inexpressible_opcodes_are_refused_with_a_reason() {
        for body in [
            OpBody::instance_move("i1", "n2"),
            OpBody::TestDelay {
                duration: 1.0,
                on_master: true,
            },
            OpBody::repair_command("n1", "c", "{}".into()),
            OpBody::InstanceReinstall {
                instance_name: "i1".into(),
                os_type: None,
                force_variant: false,
            },
        ] {
            let why = op_request(&body).unwrap_err();
            assert!(why.contains(body.op_id()), "{why}");
        }
        let ops = vec![
            OpBody::drain_node("n1").with_reason("x".into(), 1),
            OpBody::instance_move("i1", "n2").with_reason("x".into(), 1),
        ];
        assert!(job_requests(&ops)
            .unwrap_err()
            .starts_with("opcode 2 of 2: OP_INSTANCE_MOVE"));
        assert!(job_requests(&[]).is_err());
        let nameless = OpBody::TagsSet {
            kind: TagKind::Node,
            name: None,
            tags: vec!["t".into()],
        };
        assert!(op_request(&nameless).is_err());
    }
}
