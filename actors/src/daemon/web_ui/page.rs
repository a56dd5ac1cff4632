//! The page's HTML (maud escapes every value: node names, messages and reports come from
//! the cluster).

use maud::{html, Markup, DOCTYPE};

use super::view::{IncidentRow, Live, NodeRow, SafetyPanel, Viewer};

/// Seconds between two refreshes of the live part.
pub const REFRESH_SECONDS: u32 = 2;

/// The whole page: header, the viewer's login state, and the live part.
pub fn page(viewer: &Viewer, live: &Live, updated: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("maintd", true))
            body data-refresh=(REFRESH_SECONDS) {
                header.top {
                    div.brand {
                        span.logo { "maintd" }
                        span.sub { "Ganeti maintenance" }
                    }
                    (login_state(viewer))
                }
                div #notice .notice hidden role="status" aria-live="polite" {}
                main #live { (live_part(viewer, live, updated)) }
                footer.foot {
                    "Refreshes every " (REFRESH_SECONDS) " s. The same data as JSON: "
                    a href="/1/status" { "/1/status" } ", "
                    a href="/1/nodes" { "/1/nodes" } ", "
                    a href="/1/safety" { "/1/safety" } "."
                }
            }
        }
    }
}

fn login_state(viewer: &Viewer) -> Markup {
    html! {
        div.who #who {
            @match viewer {
                Viewer::Open => {
                    span.pill.warn { "API open" }
                    span.whotext { "No users: anyone who reaches this address may act." }
                }
                Viewer::LoggedOut => {
                    span.whotext { "Read-only." }
                    a.button.small href="/login" { "Log in" }
                }
                Viewer::Reader(name) => {
                    span.whotext { "Logged in as " b { (name) } " (read-only: no write option)." }
                }
                Viewer::Writer(name) => {
                    span.whotext { "Logged in as " b { (name) } "." }
                }
            }
        }
    }
}

/// The part the page re-fetches every few seconds (`GET /ui/live`).
pub fn live_part(viewer: &Viewer, live: &Live, updated: &str) -> Markup {
    let act = viewer.may_act();
    html! {
        @match live {
            Live::Idle => {
                section.card {
                    h2 { "Idle" }
                    p { "This node is not the master: maintd is idle here. Open this page on the cluster's master." }
                }
            }
            Live::Serving { safety, incidents, forgotten, nodes, round } => {
                (safety_card(safety, act, *round))
                section.card #incidents {
                    h2 { "Incidents " span.count { (incidents.len()) } }
                    @if incidents.is_empty() {
                        p.empty { "No incidents: every node reports Ok." }
                    } @else {
                        (incident_table(incidents, act))
                    }
                }
                section.card #nodes {
                    h2 { "Nodes " span.count { (nodes.len()) } }
                    @if nodes.is_empty() {
                        p.empty { "No node polled yet." }
                    } @else {
                        (node_table(nodes))
                    }
                }
                @if !forgotten.is_empty() {
                    section.card #forgotten {
                        h2 { "Recently closed" }
                        (incident_table(forgotten, false))
                    }
                }
            }
        }
        p.updated { "Updated " span #updated { (updated) } }
    }
}

fn safety_card(safety: &SafetyPanel, act: bool, round: u64) -> Markup {
    html! {
        section.card #safety {
            div.safety-head {
                h2 { "Safety" }
                span.pill.(safety.tone.class()) #safety-state { (safety.headline) }
                span.round { "round " (round) }
            }
            ul.facts {
                @for fact in &safety.facts { li { (fact) } }
            }
            @if act {
                div.actions {
                    @if safety.resumable {
                        button.button type="button" data-action="resume" { "Resume" }
                    }
                    @if !safety.paused {
                        // The reason field is part of the refreshed part; the script keeps
                        // what was typed across refreshes.
                        input #pause-reason type="text" maxlength="1000"
                            placeholder="Reason for the pause (optional)" aria-label="Pause reason";
                        button.button.warn type="button" data-action="pause" { "Pause" }
                    }
                }
            }
        }
    }
}

fn incident_table(rows: &[IncidentRow], act: bool) -> Markup {
    html! {
        div.scroll {
            table.incidents {
                thead {
                    tr {
                        th { "Node" } th { "Action" } th { "Status" } th { "Age" }
                        th { "Message" } th { "Jobs" }
                        @if act { th { span.sr { "Actions" } } }
                    }
                }
                @for row in rows {
                    tbody.incident data-uuid=(row.uuid) data-node=(row.node) data-status=(row.status) {
                        tr {
                            td.node data-label="Node" { (row.node) }
                            td data-label="Action" {
                                (row.action)
                                @if let Some(command) = &row.command { " " code { (command) } }
                            }
                            td data-label="Status" {
                                span.pill.status.(row.tone.class()) { (row.status) }
                                @for flag in &row.flags { " " span.flag { (flag) } }
                            }
                            td data-label="Age" title={ "changed " (row.changed) } { (row.age) }
                            td.message data-label="Message" {
                                @match &row.message {
                                    Some(message) => { (message) }
                                    None => { span.muted { "—" } }
                                }
                            }
                            td data-label="Jobs" {
                                @if row.jobs.is_empty() { span.muted { "none" } }
                                @else { (row.jobs.join(", ")) }
                            }
                            @if act {
                                td.act {
                                    @if row.cancelable {
                                        button.button.danger.small type="button" data-action="cancel"
                                            data-uuid=(row.uuid) data-node=(row.node) { "Cancel" }
                                    }
                                }
                            }
                        }
                        tr.history {
                            td colspan=(if act { 7 } else { 6 }) {
                                details {
                                    summary { "History (" (row.history.len()) ") and report" }
                                    p.report { "Report: " code { (row.report) } }
                                    ul.events {
                                        @for entry in &row.history {
                                            li {
                                                span.when { (entry.ago) }
                                                " " b { (entry.event) }
                                                " by " (entry.by)
                                                @if let Some(detail) = &entry.detail { ": " (detail) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn node_table(rows: &[NodeRow]) -> Markup {
    html! {
        div.scroll {
            table.nodes {
                thead {
                    tr { th { "Node" } th { "Last report" } th { "Reported" } th { "Poll health" } th.wide { "Failed polls" } }
                }
                tbody {
                    @for row in rows {
                        tr data-node=(row.node) {
                            td.node data-label="Node" { (row.node) }
                            td data-label="Last report" {
                                @match &row.last_status {
                                    Some(status) => { (status) }
                                    None => { span.muted { "—" } }
                                }
                            }
                            td data-label="Reported" { (row.last_report) }
                            td data-label="Poll health" {
                                span.pill.(row.tone.class()) { (row.health) }
                                @if let Some(error) = &row.last_error { div.error { (error) } }
                            }
                            td.wide data-label="Failed polls" { (row.total_failures) }
                        }
                    }
                }
            }
        }
    }
}

/// The `<head>` of every page: `title`, the stylesheet, and the refreshing script if
/// `live`.
fn head(title: &str, live: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) }
            link rel="stylesheet" href="/ui/style.css";
            @if live { script src="/ui/ui.js" defer {} }
        }
    }
}

/// The answer to `/login` until the browser sends credentials.
pub fn login_needed() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("maintd: log in", false))
            body {
                main.card.narrow {
                    h2 { "Log in" }
                    p { "Log in with a user of Ganeti's RAPI users file; the buttons need one with the write option." }
                    p { a href="/ui/" { "Back to the page (read-only)" } }
                }
            }
        }
    }
}

/// The page's stylesheet.
pub const STYLE: &str = include_str!("style.css");
/// The page's script: refreshes the live part and sends the buttons' requests.
pub const SCRIPT: &str = include_str!("ui.js");

#[cfg(test)]
mod tests {
    use super::super::view::{HistoryRow, Tone};
    use super::*;

    fn row(node: &str, message: &str) -> IncidentRow {
        IncidentRow {
            uuid: "6f0c5e0e-4a0e-4c59-9d1e-0e3f2d0b9a11".into(),
            node: node.into(),
            action: "evacuate".into(),
            command: Some("<b>fix</b>".into()),
            status: "noted",
            tone: Tone::Warn,
            age: "3 s".into(),
            changed: "1 s ago".into(),
            message: Some(message.into()),
            jobs: vec![],
            flags: vec![],
            report: r#"{"details":{"disk":"<img src=x onerror=alert(1)>"}}"#.into(),
            history: vec![HistoryRow {
                ago: "3 s ago".into(),
                event: "noted".into(),
                by: "<i>node</i>".into(),
                detail: Some("</td><script>bad()</script>".into()),
            }],
            cancelable: true,
        }
    }

    fn serving(rows: Vec<IncidentRow>) -> Live {
        Live::Serving {
            safety: SafetyPanel {
                headline: "Running".into(),
                tone: Tone::Good,
                paused: false,
                resumable: false,
                facts: vec!["In repair: <none>".into()],
            },
            incidents: rows,
            forgotten: vec![],
            nodes: vec![NodeRow {
                node: "node\"><script>x()</script>".into(),
                last_status: Some("Ok".into()),
                last_report: "1 s ago".into(),
                health: "ok".into(),
                tone: Tone::Good,
                last_error: None,
                total_failures: 0,
            }],
            round: 4,
        }
    }

    #[test]
    fn everything_from_the_cluster_is_escaped() {
        let live = serving(vec![row(
            "node<script>alert(1)</script>",
            "<script>alert('message')</script>",
        )]);
        let html = page(&Viewer::Writer("<u>op</u>".into()), &live, "now").into_string();
        // The only script element is the page's own.
        assert_eq!(html.matches("<script").count(), 1, "{html}");
        for raw in [
            "<b>fix</b>",
            "<img",
            "<i>node</i>",
            "</td><script>",
            "<u>op</u>",
        ] {
            assert!(!html.contains(raw), "{raw} unescaped in {html}");
        }
        assert!(html.contains("node&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;script&gt;alert('message')&lt;/script&gt;"));
        assert!(html.contains("In repair: &lt;none&gt;"));
        assert!(html.contains("data-node=\"node&quot;&gt;&lt;script&gt;x()&lt;/script&gt;\""));
    }

    #[test]
    fn buttons_only_for_viewers_who_may_act() {
        let live = serving(vec![row("node3", "waiting")]);
        for (viewer, buttons) in [
            (Viewer::Open, true),
            (Viewer::Writer("operator".into()), true),
            (Viewer::Reader("reader".into()), false),
            (Viewer::LoggedOut, false),
        ] {
            let html = live_part(&viewer, &live, "now").into_string();
            assert_eq!(
                html.contains("data-action=\"cancel\""),
                buttons,
                "{viewer:?}"
            );
            assert_eq!(
                html.contains("data-action=\"pause\""),
                buttons,
                "{viewer:?}"
            );
        }
        let logged_out = page(&Viewer::LoggedOut, &live, "now").into_string();
        assert!(logged_out.contains("href=\"/login\""));
        let open = page(&Viewer::Open, &live, "now").into_string();
        assert!(open.contains("API open"));
    }

    #[test]
    fn an_idle_node_says_so() {
        let html = live_part(&Viewer::LoggedOut, &Live::Idle, "now").into_string();
        assert!(html.contains("not the master"));
    }
}
