//! `maintd status` and `maintd info` output, the way Ganeti's `gnt-* list` commands print:
//! columns as wide as their widest value, `-o` to choose fields, `--no-headers` and
//! `--separator` for scripts.

use std::{fmt::Write as _, str::FromStr};

use maintd::model::job_failure::one_line;
use serde_json::Value;

/// A column of `maintd status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentField {
    /// The incident's UUID.
    Uuid,
    /// The node it is about.
    Node,
    /// What maintd does about it (live-repair, evacuate, evacuate-failover).
    Action,
    /// noted, pending, canceled, failed, completed.
    Status,
    /// Time since it was noted.
    Age,
    /// The node tag set when it ended.
    Tag,
    /// Why it waits, or how it ended.
    Message,
    /// Its Ganeti job ids.
    Jobs,
    /// The repair command, for live repairs.
    Command,
    /// When it was noted (Unix seconds).
    Ctime,
    /// When it last changed (Unix seconds).
    Mtime,
    /// Seen in enough consecutive polls to be acted upon.
    Confirmed,
    /// Held by the flap budget.
    Flapping,
    /// A job of it runs past `rounds.job_timeout`.
    Stuck,
}

impl IncidentField {
    /// Every field, in the order `--help` lists them.
    pub const ALL: [IncidentField; 14] = [
        IncidentField::Uuid,
        IncidentField::Node,
        IncidentField::Action,
        IncidentField::Status,
        IncidentField::Age,
        IncidentField::Tag,
        IncidentField::Message,
        IncidentField::Jobs,
        IncidentField::Command,
        IncidentField::Ctime,
        IncidentField::Mtime,
        IncidentField::Confirmed,
        IncidentField::Flapping,
        IncidentField::Stuck,
    ];

    /// The fields shown without `-o`.
    pub const DEFAULT: [IncidentField; 7] = [
        IncidentField::Uuid,
        IncidentField::Node,
        IncidentField::Action,
        IncidentField::Status,
        IncidentField::Age,
        IncidentField::Tag,
        IncidentField::Message,
    ];

    /// The name `-o` takes.
    pub fn name(self) -> &'static str {
        match self {
            IncidentField::Uuid => "uuid",
            IncidentField::Node => "node",
            IncidentField::Action => "action",
            IncidentField::Status => "status",
            IncidentField::Age => "age",
            IncidentField::Tag => "tag",
            IncidentField::Message => "message",
            IncidentField::Jobs => "jobs",
            IncidentField::Command => "command",
            IncidentField::Ctime => "ctime",
            IncidentField::Mtime => "mtime",
            IncidentField::Confirmed => "confirmed",
            IncidentField::Flapping => "flapping",
            IncidentField::Stuck => "stuck",
        }
    }

    /// The column title.
    pub fn title(self) -> &'static str {
        match self {
            IncidentField::Uuid => "UUID",
            IncidentField::Node => "Node",
            IncidentField::Action => "Action",
            IncidentField::Status => "Status",
            IncidentField::Age => "Age",
            IncidentField::Tag => "Tag",
            IncidentField::Message => "Message",
            IncidentField::Jobs => "Jobs",
            IncidentField::Command => "Command",
            IncidentField::Ctime => "Created",
            IncidentField::Mtime => "Modified",
            IncidentField::Confirmed => "Confirmed",
            IncidentField::Flapping => "Flapping",
            IncidentField::Stuck => "Stuck",
        }
    }

    /// This field of `incident` (as `/1/status` shows it) as text; `-` when absent.
    pub fn value(self, incident: &Value, now: f64) -> String {
        let text = |key: &str| match incident.get(key) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => "-".to_owned(),
        };
        let flag = |key: &str| match incident.get(key).and_then(Value::as_bool) {
            Some(true) => "Y".to_owned(),
            Some(false) => "N".to_owned(),
            None => "-".to_owned(),
        };
        let time = |key: &str| {
            incident
                .get(key)
                .and_then(Value::as_f64)
                .map_or_else(|| "-".to_owned(), |t| format!("{t:.0}"))
        };
        match self {
            IncidentField::Uuid => text("uuid"),
            IncidentField::Node => text("node"),
            IncidentField::Action => text("action"),
            IncidentField::Status => text("repair-status"),
            IncidentField::Age => incident
                .get("ctime")
                .and_then(Value::as_f64)
                .map_or_else(|| "-".to_owned(), |ctime| format_age(now - ctime)),
            IncidentField::Tag => text("tag"),
            // One line per incident: a message's own line breaks would break the table.
            IncidentField::Message => text("message").replace(['\n', '\r'], " "),
            IncidentField::Jobs => {
                let jobs: Vec<String> = incident
                    .get("jobs")
                    .and_then(Value::as_array)
                    .map(|jobs| jobs.iter().map(Value::to_string).collect())
                    .unwrap_or_default();
                if jobs.is_empty() {
                    "-".to_owned()
                } else {
                    jobs.join(",")
                }
            }
            IncidentField::Command => text("command"),
            IncidentField::Ctime => time("ctime"),
            IncidentField::Mtime => time("mtime"),
            IncidentField::Confirmed => flag("confirmed"),
            IncidentField::Flapping => flag("flapping"),
            IncidentField::Stuck => flag("stuck"),
        }
    }
}

impl FromStr for IncidentField {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        IncidentField::ALL
            .into_iter()
            .find(|field| field.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = IncidentField::ALL.iter().map(|f| f.name()).collect();
                format!("unknown field {name:?}; known: {}", known.join(", "))
            })
    }
}

/// The fields of a list, as `-o` names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldList(pub Vec<IncidentField>);

/// A field list as `-o` takes it: names separated by commas; a leading `+` adds to the
/// default fields, as in Ganeti's list commands.
pub fn parse_field_list(spec: &str) -> Result<FieldList, String> {
    parse_fields(spec).map(FieldList)
}

/// See [`parse_field_list`].
pub fn parse_fields(spec: &str) -> Result<Vec<IncidentField>, String> {
    let (mut fields, names) = match spec.strip_prefix('+') {
        Some(rest) => (IncidentField::DEFAULT.to_vec(), rest),
        None => (Vec::new(), spec),
    };
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        fields.push(name.parse()?);
    }
    if fields.is_empty() {
        return Err("no field named".into());
    }
    Ok(fields)
}

/// How a list is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListStyle {
    /// Print the title line.
    pub headers: bool,
    /// Separate columns with this instead of aligning them with spaces.
    pub separator: Option<String>,
}

impl Default for ListStyle {
    fn default() -> Self {
        ListStyle {
            headers: true,
            separator: None,
        }
    }
}

/// `rows` under `titles`: each column as wide as its widest cell (the last one not
/// padded), or joined by the separator.
pub fn render_table(titles: &[&str], rows: &[Vec<String>], style: &ListStyle) -> String {
    let mut lines: Vec<Vec<&str>> = Vec::with_capacity(rows.len() + 1);
    if style.headers {
        lines.push(titles.to_vec());
    }
    lines.extend(
        rows.iter()
            .map(|row| row.iter().map(String::as_str).collect()),
    );
    let mut out = String::new();
    if let Some(separator) = &style.separator {
        for line in &lines {
            out.push_str(&line.join(separator));
            out.push('\n');
        }
        return out;
    }
    let columns = titles.len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .filter_map(|line| line.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in &lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            if c + 1 == line.len() {
                text.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count());
                let _ = write!(text, "{cell}{:pad$} ", "");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// Longest message in an aligned list; `maintd info`, `--json` and `--separator` show it
/// whole. A failed job's account is long enough to push any column after it off screen.
pub const TABLE_MESSAGE_CHARS: usize = 100;

/// The incidents of `/1/status` as a list of `fields`, their ages taken at `now` (Unix
/// seconds). Aligned, messages are cut to [`TABLE_MESSAGE_CHARS`].
pub fn render_incidents(
    incidents: &[Value],
    fields: &[IncidentField],
    style: &ListStyle,
    now: f64,
) -> String {
    let titles: Vec<&str> = fields.iter().map(|f| f.title()).collect();
    let cell = |field: &IncidentField, incident: &Value| {
        let value = field.value(incident, now);
        match field {
            IncidentField::Message if style.separator.is_none() => {
                one_line(&value, TABLE_MESSAGE_CHARS)
            }
            _ => value,
        }
    };
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|incident| fields.iter().map(|f| cell(f, incident)).collect())
        .collect();
    render_table(&titles, &rows, style)
}

/// A duration in seconds as Ganeti-style short text: `45s`, `12m`, `3h05m`, `2d04h`.
pub fn format_age(seconds: f64) -> String {
    // A clock a little behind the daemon's shows "0s", not a negative age.
    let total = seconds.max(0.0) as u64;
    let (days, hours, minutes) = (total / 86_400, total / 3600 % 24, total / 60 % 60);
    if days > 0 {
        format!("{days}d{hours:02}h")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m")
    } else {
        format!("{total}s")
    }
}

/// One incident of `/1/incidents/<uuid>` with its history, for `maintd info`.
pub fn render_incident(detail: &Value, now: f64) -> String {
    let mut out = String::new();
    let width = IncidentField::ALL
        .iter()
        .map(|f| f.title().len())
        .max()
        .unwrap_or(0);
    for field in IncidentField::ALL {
        let _ = writeln!(
            out,
            "{:width$}  {}",
            format!("{}:", field.title()),
            field.value(detail, now),
            width = width + 1
        );
    }
    if detail.get("forgotten").and_then(Value::as_bool) == Some(true) {
        out.push_str("(forgotten: its tag was removed or its node reports Ok again)\n");
    }
    if let Some(report) = detail.get("original") {
        let _ = writeln!(out, "{:width$}  {report}", "Report:", width = width + 1);
    }
    let history = detail
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    out.push_str("History:\n");
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|entry| {
            let text = |key: &str| {
                entry
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .replace(['\n', '\r'], " ")
            };
            let ago = entry.get("time").and_then(Value::as_f64).map_or_else(
                || "-".to_owned(),
                |t| format!("{} ago", format_age(now - t)),
            );
            vec![
                format!("  {ago}"),
                text("event"),
                text("by"),
                text("detail"),
            ]
        })
        .collect();
    out.push_str(&render_table(
        &["  When", "Event", "By", "Detail"],
        &rows,
        &ListStyle::default(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn incident(node: &str, status: &str, message: Option<&str>) -> Value {
        json!({
            "uuid": "0b8f1a52-3f6e-4c1e-9d7a-1c2b3d4e5f60", "node": node, "action": "evacuate",
            "repair-status": status, "jobs": [4, 5], "tag": "", "message": message,
            "ctime": 1000.0, "mtime": 1100.0, "confirmed": true, "flapping": false,
            "stuck": false
        })
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_value_so_long_node_names_keep_them_aligned() {
        let incidents = [
            incident("node3", "pending", Some("waiting for a slot")),
            incident("node12.rack-a4.example.org", "completed", Some("evacuated")),
        ];
        let text = render_incidents(
            &incidents,
            &IncidentField::DEFAULT,
            &ListStyle::default(),
            1000.0 + 3.0 * 3600.0 + 5.0 * 60.0,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        // Every column starts at the same offset on every line.
        for title in ["Node", "Action", "Status", "Age", "Tag", "Message"] {
            let at = lines[0].find(title).expect(title);
            for line in &lines[1..] {
                assert_eq!(&line[at - 1..at], " ", "column {title} shifted: {text}");
                assert_ne!(&line[at..=at], " ", "column {title} shifted: {text}");
            }
        }
        assert!(lines[2].contains("node12.rack-a4.example.org"), "{text}");
        assert!(lines[1].contains("3h05m"), "{text}");
        assert!(lines[1].ends_with("waiting for a slot"), "{text}");
        // An empty tag shows as "-".
        assert!(lines[1].contains(" - "), "{text}");
    }

    #[test]
    fn long_messages_are_cut_in_the_table_and_whole_elsewhere() {
        let long = format!(
            "job 17 ended error: OP_INSTANCE_MIGRATE inst3: HooksAbort: {}done",
            "hook output ".repeat(40)
        );
        let incidents = [
            incident("node3", "failed", Some(&long)),
            incident("node4", "pending", Some("waiting for a slot")),
        ];
        let fields = parse_fields("message,node,status").expect("fields");
        let text = render_incidents(&incidents, &fields, &ListStyle::default(), 1000.0);
        let lines: Vec<&str> = text.lines().collect();
        // The columns after the message stay in reach and aligned.
        let at = lines[0].find("Node").expect("Node");
        assert!(at <= TABLE_MESSAGE_CHARS + 1, "{text}");
        assert_eq!(&lines[1][at..at + 5], "node3", "{text}");
        assert_eq!(&lines[2][at..at + 5], "node4", "{text}");
        assert!(lines[1].starts_with("job 17 ended error: OP_INSTANCE_MIGRATE inst3"));
        assert!(lines[1].contains("... node3"), "{text}");
        // With a separator, for scripts, and in `maintd info`, the message is whole.
        let style = ListStyle {
            headers: false,
            separator: Some("|".into()),
        };
        let scripted = render_incidents(&incidents, &fields, &style, 1000.0);
        assert!(scripted.starts_with(&format!("{long}|node3|failed\n")));
        let info = render_incident(&incidents[0], 1000.0);
        assert!(info.contains(&long), "{info}");
    }

    #[test]
    fn fields_headers_and_separator_follow_gnt_list_options() {
        let incidents = [incident("node3", "pending", Some("a\nb"))];
        let style = ListStyle {
            headers: false,
            separator: Some("|".into()),
        };
        let fields = parse_fields("node,status,jobs,message").expect("fields");
        assert_eq!(
            render_incidents(&incidents, &fields, &style, 1000.0),
            "node3|pending|4,5|a b\n"
        );
        let fields = parse_fields("+jobs").expect("fields");
        assert_eq!(fields.len(), IncidentField::DEFAULT.len() + 1);
        assert_eq!(fields.last(), Some(&IncidentField::Jobs));
        let error = parse_fields("node,colour").expect_err("an unknown field");
        assert!(
            error.contains("\"colour\"") && error.contains("uuid"),
            "{error}"
        );
        assert!(parse_fields("").is_err());
        // Without incidents: the title line alone, as gnt-* lists print it.
        let empty = render_incidents(&[], &IncidentField::DEFAULT, &ListStyle::default(), 0.0);
        assert_eq!(empty, "UUID Node Action Status Age Tag Message\n");
    }

    #[test]
    fn ages_read_at_a_glance() {
        let cases = [
            (-5.0, "0s"),
            (45.0, "45s"),
            (12.0 * 60.0 + 3.0, "12m"),
            (3.0 * 3600.0 + 5.0 * 60.0, "3h05m"),
            (2.0 * 86_400.0 + 4.0 * 3600.0, "2d04h"),
        ];
        for (seconds, text) in cases {
            assert_eq!(format_age(seconds), text, "{seconds}");
        }
    }

    #[test]
    fn info_shows_every_field_and_the_history() {
        let mut detail = incident("node3", "failed", Some("job 17 failed"));
        detail["history"] = json!([
            {"time": 1000.0, "event": "noted", "by": "node3"},
            {"time": 1060.0, "event": "failed", "by": "maintd", "detail": "job 17 ended error"}
        ]);
        detail["forgotten"] = json!(false);
        let text = render_incident(&detail, 1120.0);
        for needle in [
            "Node:",
            "node3",
            "Status:",
            "failed",
            "job 17 failed",
            "History:",
            "2m ago",
            "noted",
            "1m ago",
            "job 17 ended error",
        ] {
            assert!(text.contains(needle), "{needle:?} in {text}");
        }
        assert!(!text.contains("forgotten:"), "{text}");
    }
}
