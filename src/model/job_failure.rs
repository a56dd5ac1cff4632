//! Why a Ganeti job failed, read from its per-opcode fields (`ops`, `opstatus`,
//! `opresult`), and told in one short line for an incident's message.
//!
//! Ganeti records a failed opcode's exception in `opresult` as `[class, args]`, the
//! exception's class name and its arguments: `["OpPrereqError", [message, error_code]]`,
//! `["OpExecError", [message]]`, `["HooksAbort", [[[node, script, output], ...]]]`. The
//! opcodes after a failed one end in error too, with `"Preceding opcode failed"`; the
//! failure that matters is the first.

use serde_json::Value;

/// Longest summary, in characters; longer ones end in an ellipsis.
pub const MAX_SUMMARY_CHARS: usize = 300;

/// Why a job failed: the failed opcode, what it acted on, and the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    /// The failed opcode's `OP_ID`, e.g. `OP_INSTANCE_MIGRATE`, when known.
    pub opcode: Option<String>,
    /// What the opcode acted on: its instance, else its node, else its group, else (tag
    /// opcodes) its `name`.
    pub target: Option<String>,
    /// The error: Ganeti's exception class and message, or another party's account.
    pub error: String,
}

impl JobFailure {
    /// A failure told by something other than Ganeti's job queue (a node agent), as is.
    pub fn told(text: impl Into<String>) -> Self {
        JobFailure {
            opcode: None,
            target: None,
            error: text.into(),
        }
    }

    /// The failure of a job from its `ops`, `opstatus` and `opresult` fields (one entry per
    /// opcode): the first opcode whose status is `error`. `None` when no opcode failed or
    /// the fields are not lists.
    pub fn from_job_fields(ops: &Value, opstatus: &Value, opresult: &Value) -> Option<Self> {
        let statuses = opstatus.as_array()?;
        let index = statuses.iter().position(|s| s.as_str() == Some("error"))?;
        let op = ops.as_array().and_then(|ops| ops.get(index));
        let result = opresult
            .as_array()
            .and_then(|results| results.get(index))
            .unwrap_or(&Value::Null);
        Some(JobFailure {
            opcode: op
                .and_then(|op| op.get("OP_ID"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            target: op.and_then(opcode_target),
            error: describe_error(result),
        })
    }

    /// One line of at most [`MAX_SUMMARY_CHARS`] characters:
    /// `OP_INSTANCE_MIGRATE inst3: OpPrereqError: Can't use drained node node6 (wrong_state)`.
    pub fn summary(&self) -> String {
        let subject = [self.opcode.as_deref(), self.target.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let text = if subject.is_empty() {
            self.error.clone()
        } else {
            format!("{subject}: {}", self.error)
        };
        one_line(&text, MAX_SUMMARY_CHARS)
    }
}

/// What an opcode (a JSON object as Ganeti records it) acts on; tag opcodes name it `name`.
fn opcode_target(op: &Value) -> Option<String> {
    ["instance_name", "node_name", "group_name", "name"]
        .iter()
        .find_map(|field| op.get(field)?.as_str().filter(|name| !name.is_empty()))
        .map(str::to_owned)
}

/// A failed opcode's `opresult` entry as text: `Class: message` for an encoded exception,
/// the value itself otherwise.
pub fn describe_error(result: &Value) -> String {
    match result.as_array().map(Vec::as_slice) {
        Some([Value::String(class), args]) if looks_like_class(class) => {
            let message = describe_args(class, args);
            if message.is_empty() {
                class.clone()
            } else {
                format!("{class}: {message}")
            }
        }
        _ => match result {
            Value::Null => "no error recorded".to_owned(),
            other => value_as_text(other),
        },
    }
}

/// A Ganeti exception class name: one word of letters, digits and underscores.
fn looks_like_class(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The arguments of an encoded exception as text. `OpPrereqError`'s `[message, code]`
/// becomes `message (code)`; `HooksAbort`'s list of `(node, script, output)` names each
/// failed hook; a single string is taken as is.
pub fn describe_args(class: &str, args: &Value) -> String {
    let Value::Array(items) = args else {
        return value_as_text(args);
    };
    if class == "HooksAbort" {
        if let Some(hooks) = describe_hooks(items) {
            return hooks;
        }
    }
    let texts: Vec<String> = items.iter().map(value_as_text).collect();
    match texts.split_first() {
        Some((first, rest)) if !rest.is_empty() => format!("{first} ({})", rest.join(", ")),
        Some((first, _)) => first.clone(),
        None => String::new(),
    }
}

/// `HooksAbort`'s only argument, `[[node, script, output], ...]`, as
/// `hook SCRIPT failed on NODES: OUTPUT; ...`, one entry per script and output. Ganeti 3
/// names the nodes by UUID, which says nothing in a message: those are counted instead.
fn describe_hooks(items: &[Value]) -> Option<String> {
    let [Value::Array(failures)] = items else {
        return None;
    };
    // (script, output) → nodes, in the order Ganeti lists them.
    let mut groups: Vec<((String, String), Vec<String>)> = Vec::new();
    let mut odd = Vec::new();
    for failure in failures {
        let Some([node, script, output]) = failure.as_array().map(Vec::as_slice) else {
            odd.push(value_as_text(failure));
            continue;
        };
        let output = value_as_text(output).trim().to_owned();
        let key = (value_as_text(script), output);
        let node = value_as_text(node);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, nodes)) => nodes.push(node),
            None => groups.push((key, vec![node])),
        }
    }
    let described = groups.into_iter().map(|((script, output), nodes)| {
        let output = if output.is_empty() {
            "(no output)".to_owned()
        } else {
            output
        };
        let on = if nodes.iter().all(|n| looks_like_uuid(n)) {
            match nodes.len() {
                1 => "1 node".to_owned(),
                n => format!("{n} nodes"),
            }
        } else {
            nodes.join(", ")
        };
        format!("hook {script} failed on {on}: {output}")
    });
    let described: Vec<String> = described.chain(odd).collect();
    (!described.is_empty()).then(|| described.join("; "))
}

/// A UUID as Ganeti writes them: 8-4-4-4-12 hexadecimal digits.
fn looks_like_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A JSON value as text, without quotes around strings.
fn value_as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `text` on one line of at most `max_chars` characters: every run of whitespace or
/// control characters becomes one space, and a longer text is cut, ending in `...`.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let mut line = String::with_capacity(text.len().min(max_chars * 4));
    let mut chars = 0;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = chars > 0;
            continue;
        }
        let needed = usize::from(pending_space) + 1;
        if chars + needed > max_chars {
            return cut(line, max_chars);
        }
        if pending_space {
            line.push(' ');
            chars += 1;
            pending_space = false;
        }
        line.push(c);
        chars += 1;
    }
    line
}

/// `line` (of `max_chars` characters or fewer, with more to come) cut to end in `...`
/// within `max_chars`.
fn cut(line: String, max_chars: usize) -> String {
    const ELLIPSIS: &str = "...";
    let keep = max_chars.saturating_sub(ELLIPSIS.len());
    let mut cut: String = line.chars().take(keep).collect();
    let trimmed = cut.trim_end().len();
    cut.truncate(trimmed);
    if max_chars >= ELLIPSIS.len() {
        cut.push_str(ELLIPSIS);
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn migrate(instance: &str) -> Value {
        json!({"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": instance, "depends": null})
    }

    #[test]
    fn the_first_failed_opcode_is_the_failure() {
        let ops = json!([
            {"OP_ID": "OP_TAGS_SET", "kind": "node", "name": "node6"},
            migrate("inst3"),
            {"OP_ID": "OP_TAGS_DEL", "kind": "node", "name": "node6"},
        ]);
        let failure = JobFailure::from_job_fields(
            &ops,
            &json!(["success", "error", "error"]),
            &json!([
                null,
                [
                    "OpPrereqError",
                    ["Can't use drained node node6", "wrong_state"]
                ],
                ["OpExecError", ["Preceding opcode failed"]]
            ]),
        )
        .expect("failed");
        assert_eq!(failure.opcode.as_deref(), Some("OP_INSTANCE_MIGRATE"));
        assert_eq!(failure.target.as_deref(), Some("inst3"));
        assert_eq!(
            failure.summary(),
            "OP_INSTANCE_MIGRATE inst3: OpPrereqError: Can't use drained node node6 (wrong_state)"
        );
    }

    #[test]
    fn a_job_without_a_failed_opcode_has_no_failure() {
        for opstatus in [
            json!(["success", "canceled"]),
            json!([]),
            json!(null),
            json!("error"),
        ] {
            assert_eq!(
                JobFailure::from_job_fields(&json!([migrate("i")]), &opstatus, &json!([null])),
                None,
                "{opstatus}"
            );
        }
    }

    #[test]
    fn a_real_ganeti_answer_decodes() {
        // GET /2/jobs/26 of a Ganeti 3.0 cluster, refusing to drain the master.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ganeti-3.0/rapi-57-node1-drain-master-final.json");
        let sample: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let job = &sample["response"]["body"];
        let failure = JobFailure::from_job_fields(&job["ops"], &job["opstatus"], &job["opresult"])
            .expect("failed");
        assert_eq!(
            failure.summary(),
            "OP_NODE_SET_PARAMS node1.ganeti.test: OpPrereqError: \
             The master role can be changed only via master-failover (wrong_input)"
        );
    }

    #[test]
    fn encoded_errors_of_each_shape_are_described() {
        let table = [
            (
                json!(["OpExecError", ["Disk sync failed"]]),
                "OpExecError: Disk sync failed",
            ),
            (
                json!(["OpExecError", "bare message"]),
                "OpExecError: bare message",
            ),
            (json!(["OpExecError", []]), "OpExecError"),
            (
                json!(["OpPrereqError", ["gone", "unknown_entity"]]),
                "OpPrereqError: gone (unknown_entity)",
            ),
            (
                json!(["HooksFailure", ["Communication Failure"]]),
                "HooksFailure: Communication Failure",
            ),
            (
                json!([
                    "HooksAbort",
                    [[["node2.ganeti.test", "50-fail", "no migration today\n"]]]
                ]),
                "HooksAbort: hook 50-fail failed on node2.ganeti.test: no migration today",
            ),
            (
                json!([
                    "HooksAbort",
                    [[["n1", "a", ""], ["n2", "b", "out"], ["n3", "b", "out"]]]
                ]),
                "HooksAbort: hook a failed on n1: (no output); hook b failed on n2, n3: out",
            ),
            // Ganeti 3.0 names the nodes by UUID: counted.
            (
                json!([
                    "HooksAbort",
                    [[
                        [
                            "6959e113-e2ad-402b-8ccb-2f7cf72364a1",
                            "instance-migrate-pre.d/00-x",
                            "no\n"
                        ],
                        [
                            "f5ebc338-cf78-4691-a10e-acf2ee7a988e",
                            "instance-migrate-pre.d/00-x",
                            "no\n"
                        ],
                        [
                            "f5ebc338-cf78-4691-a10e-acf2ee7a988e",
                            "instance-migrate-pre.d/01-y",
                            ""
                        ]
                    ]]
                ]),
                "HooksAbort: hook instance-migrate-pre.d/00-x failed on 2 nodes: no; \
                 hook instance-migrate-pre.d/01-y failed on 1 node: (no output)",
            ),
            (json!(["HooksAbort", [[["n1"]]]]), "HooksAbort: [\"n1\"]"),
            (json!(["OpExecError", [7, null]]), "OpExecError: 7 (null)"),
            (json!("Job canceled by request"), "Job canceled by request"),
            (json!(null), "no error recorded"),
            (json!(["not a class", ["x"]]), "[\"not a class\",[\"x\"]]"),
            (json!({"weird": true}), "{\"weird\":true}"),
        ];
        for (result, expected) in table {
            assert_eq!(describe_error(&result), expected, "{result}");
        }
    }

    #[test]
    fn summaries_name_what_is_known() {
        let mut failure = JobFailure::told("repair command fix on n1 failed");
        assert_eq!(failure.summary(), "repair command fix on n1 failed");
        failure.opcode = Some("OP_TEST_DELAY".into());
        assert_eq!(
            failure.summary(),
            "OP_TEST_DELAY: repair command fix on n1 failed"
        );
        failure.target = Some("n1".into());
        assert_eq!(
            failure.summary(),
            "OP_TEST_DELAY n1: repair command fix on n1 failed"
        );
        // Node and group opcodes are named by their node or group.
        let op =
            json!({"OP_ID": "OP_GROUP_ASSIGN_NODES", "group_name": "default", "instance_name": ""});
        assert_eq!(opcode_target(&op).as_deref(), Some("default"));
        let op = json!({"OP_ID": "OP_TAGS_DEL", "kind": "node", "name": "node2", "tags": ["a"]});
        assert_eq!(opcode_target(&op).as_deref(), Some("node2"));
    }

    #[test]
    fn summaries_are_one_bounded_line() {
        assert_eq!(one_line("  a\n\n b\t\r c  ", 80), "a b c");
        assert_eq!(one_line("abc\u{1b}[0mdef\0", 80), "abc [0mdef");
        assert_eq!(one_line("abcdef", 6), "abcdef");
        assert_eq!(one_line("abcdefg", 6), "abc...");
        assert_eq!(one_line("ab   cdefg", 6), "ab...");
        assert_eq!(one_line("ééééééé", 5), "éé...");
        assert_eq!(one_line("abcdef", 2), "");
        assert_eq!(one_line("", 10), "");
        let long = JobFailure::told(format!("{}\nsecond line", "x".repeat(1000)));
        let summary = long.summary();
        assert_eq!(summary.chars().count(), MAX_SUMMARY_CHARS);
        assert!(summary.ends_with("..."));
    }

    /// Arbitrary JSON values, nested a few levels.
    fn arbitrary_json(seed: &mut u64, depth: u32) -> Value {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pick = (*seed >> 33) % if depth == 0 { 5 } else { 7 };
        let texts = [
            "",
            "error",
            "OpPrereqError",
            "HooksAbort",
            "é\n\u{0}x",
            "  ",
        ];
        match pick {
            0 => Value::Null,
            1 => json!((*seed >> 40) % 3 == 0),
            2 => json!((*seed >> 20) as i64 - 1_000_000),
            3 => json!(-0.5e300),
            4 => json!(texts[(*seed >> 35) as usize % texts.len()]),
            5 => Value::Array(
                (0..(*seed >> 50) % 4)
                    .map(|_| arbitrary_json(seed, depth - 1))
                    .collect(),
            ),
            _ => {
                let mut object = serde_json::Map::new();
                for key in ["OP_ID", "instance_name", "node_name"] {
                    if (*seed >> 45) % 2 == 0 {
                        object.insert(key.into(), arbitrary_json(seed, depth - 1));
                    }
                }
                Value::Object(object)
            }
        }
    }

    #[test]
    fn arbitrary_answers_never_panic_and_stay_bounded() {
        let mut seed = 7;
        for _ in 0..5000 {
            let ops = arbitrary_json(&mut seed, 3);
            let opresult = arbitrary_json(&mut seed, 4);
            let opstatus = json!(["success", "error"]);
            let ops = json!([ops.clone(), ops]);
            let opresult = json!([null, opresult]);
            let failure = JobFailure::from_job_fields(&ops, &opstatus, &opresult).expect("failed");
            let summary = failure.summary();
            assert!(summary.chars().count() <= MAX_SUMMARY_CHARS, "{summary}");
            assert!(!summary.contains('\n'), "{summary}");
        }
    }
}
