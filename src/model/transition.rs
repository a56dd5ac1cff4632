//! Incident status changes between two looks at the state: what the registry logs at the
//! level an operator expects (a failure as a warning) once the change is saved.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{
    diagnose::RepairAction,
    incident::{Incident, MaintenanceState, RepairStatus},
};

/// The status of every open incident at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusBook(BTreeMap<Uuid, RepairStatus>);

impl StatusBook {
    /// The statuses of `state`'s open (not forgotten) incidents.
    pub fn of(state: &MaintenanceState) -> StatusBook {
        StatusBook(
            state
                .incidents
                .iter()
                .map(|incident| (incident.uuid, incident.status))
                .collect(),
        )
    }

    /// What changed from this book to `state`: incidents that are new or whose status
    /// differs, oldest first. Forgotten incidents are not changes of status.
    pub fn changes(&self, state: &MaintenanceState) -> Vec<StatusChange> {
        state
            .incidents
            .iter()
            .filter_map(|incident| {
                let from = self.0.get(&incident.uuid).copied();
                (from != Some(incident.status)).then(|| StatusChange::of(incident, from))
            })
            .collect()
    }
}

/// One incident's change of status.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    /// The incident.
    pub uuid: Uuid,
    /// Its node.
    pub node: String,
    /// What maintd does about it.
    pub action: RepairAction,
    /// The status before; `None` for a new incident.
    pub from: Option<RepairStatus>,
    /// The status now.
    pub to: RepairStatus,
    /// Why it failed, why it waits, how it ended.
    pub message: Option<String>,
    /// The node tag it sets when it ends.
    pub tag: String,
}

impl StatusChange {
    fn of(incident: &Incident, from: Option<RepairStatus>) -> StatusChange {
        StatusChange {
            uuid: incident.uuid,
            node: incident.node.clone(),
            action: incident.action,
            from,
            to: incident.status,
            message: incident.message.clone(),
            tag: incident.tag.clone(),
        }
    }

    /// A change an operator must look at: the incident failed.
    pub fn is_failure(&self) -> bool {
        self.to == RepairStatus::Failed
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{diagnose::parse_diagnose, incident::Observed};

    fn noted(state: &mut MaintenanceState, node: &str) -> Uuid {
        let report = json!({"status": "evacuate", "details": {"disk": node}});
        let diagnose = parse_diagnose(report).expect("a valid report");
        match state.observe(node, &diagnose, 100.0) {
            Observed::NewIncident(uuid) => uuid,
            other => panic!("a new incident, not {other:?}"),
        }
    }

    #[test]
    fn new_incidents_and_changed_statuses_are_changes_and_nothing_else_is() {
        let mut state = MaintenanceState::new();
        let book = StatusBook::of(&state);
        let first = noted(&mut state, "node3");
        let second = noted(&mut state, "node5");
        let changes = book.changes(&state);
        assert_eq!(
            changes
                .iter()
                .map(|c| (c.uuid, c.from, c.to))
                .collect::<Vec<_>>(),
            [
                (first, None, RepairStatus::Noted),
                (second, None, RepairStatus::Noted)
            ]
        );
        let book = StatusBook::of(&state);
        assert!(book.changes(&state).is_empty(), "nothing changed");

        state.incidents[1].status = RepairStatus::Failed;
        state.incidents[1].message = Some("job 17 failed".into());
        let changes = book.changes(&state);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let change = &changes[0];
        assert_eq!(
            (change.uuid, change.from, change.to),
            (second, Some(RepairStatus::Noted), RepairStatus::Failed)
        );
        assert_eq!(change.node, "node5");
        assert_eq!(change.message.as_deref(), Some("job 17 failed"));
        assert!(change.is_failure());
        assert_eq!(change.to.to_string(), "failed");
    }
}
