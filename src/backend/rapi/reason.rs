//! The `?reason=` text maintd sends with each RAPI job, and what it tells when read back
//! from the job list: the submission a job belongs to and its place in its chain.

use serde_json::Value;

use crate::model::opcode::{Opcode, REASON_SOURCE};

/// Suffix marking position `index` (0-based) in a chain of `len` RAPI jobs.
fn chain_suffix(index: usize, len: usize) -> String {
    format!(" [RAPI job {} of {len}]", index + 1)
}

/// The `?reason=` text of `op`: maintd's reason source, then the texts of its trail, then
/// its place in the chain if the job has several opcodes.
pub fn reason_text(op: &Opcode, index: usize, len: usize) -> String {
    let mut text = REASON_SOURCE.to_owned();
    for entry in op.reason.iter().filter(|e| !e.1.is_empty()) {
        text.push(' ');
        text.push_str(&entry.1);
    }
    if len > 1 {
        text.push_str(&chain_suffix(index, len));
    }
    text
}

/// Where a reason text puts its job in a chain: `(position, length)`, 1-based.
pub(super) fn chain_position(text: &str) -> Option<(usize, usize)> {
    let start = text.rfind(" [RAPI job ")? + " [RAPI job ".len();
    let rest = text[start..].strip_suffix(']')?;
    let (position, len) = rest.split_once(" of ")?;
    Some((position.parse().ok()?, len.parse().ok()?))
}

/// The reason texts of a job's opcodes (from a `/2/jobs` entry).
pub(super) fn reason_texts(job: &Value) -> impl Iterator<Item = &str> {
    job.get("ops")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|op| op.get("reason")?.as_array())
        .flatten()
        .filter_map(|entry| entry.get(1)?.as_str())
}

/// Whether a job (a `/2/jobs?bulk=1` entry) mentions `marker` in a reason text and is the
/// last job of its chain. An earlier job of a chain is left out: the last one stands for
/// the maintd job. A chain whose last job never reached the queue is left out altogether
/// (the maintd job was not submitted as a whole).
pub(super) fn is_marked_chain_end(job: &Value, marker: &str) -> bool {
    let mut marked = reason_texts(job)
        .filter(|text| text.contains(marker))
        .peekable();
    if marked.peek().is_none() {
        return false;
    }
    marked.all(|text| chain_position(text).is_none_or(|(position, len)| position >= len))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::opcode::{OpBody, ReasonEntry};

    #[test]
    fn reason_texts_carry_the_source_and_the_chain_position() {
        let op = OpBody::drain_node("n1").with_reason("Draining n1 (submission k)".into(), 1);
        assert_eq!(
            reason_text(&op, 0, 1),
            "gnt:daemon:maintd Draining n1 (submission k)"
        );
        let chained = reason_text(&op, 1, 3);
        assert_eq!(
            chained,
            "gnt:daemon:maintd Draining n1 (submission k) [RAPI job 2 of 3]"
        );
        assert_eq!(chain_position(&chained), Some((2, 3)));
        assert_eq!(chain_position("gnt:daemon:maintd x"), None);
        let bare = Opcode {
            body: OpBody::drain_node("n1"),
            reason: vec![ReasonEntry("x".into(), String::new(), 0)],
        };
        assert_eq!(reason_text(&bare, 0, 1), "gnt:daemon:maintd");
    }

    #[test]
    fn chain_ends_stand_for_their_jobs() {
        let job = |text: &str| json!({"id": 1, "ops": [{"reason": [["gnt:user", text, 1]]}]});
        let marker = "submission k)";
        assert!(is_marked_chain_end(&job("m (submission k)"), marker));
        assert!(is_marked_chain_end(
            &job("m (submission k) [RAPI job 2 of 2]"),
            marker
        ));
        assert!(!is_marked_chain_end(
            &job("m (submission k) [RAPI job 1 of 2]"),
            marker
        ));
        assert!(!is_marked_chain_end(&job("m (submission k2)"), marker));
        assert!(!is_marked_chain_end(&json!({"id": 1}), marker));
        assert!(!is_marked_chain_end(&json!("garbage"), marker));
    }
}
