//! The htools model of a live cluster: a [`ClusterSnapshot`] (Luxi or simulator) loaded the
//! way htools' Luxi backend loads it, so that the daemon's rounds decide as hbal, hail and
//! harep would on the same cluster.

use std::collections::HashMap;

use crate::htools::model::{
    AllocPolicy, Cluster, Group, IPolicy, Instance, InstanceStatus, LoadError, NodeData,
};
use crate::model::cluster::ClusterSnapshot;

/// Loads `snapshot` into the htools model. Groups, nodes and instances keep the snapshot's
/// order (Luxi's, as htools sees it). As htools' Luxi loader does, a node that is offline
/// or not vm_capable has no resources, and offline, drained and non-vm_capable nodes are
/// all htools-offline. An unknown instance status counts as running (its memory stays
/// reserved). Fails on a node of an unknown group or an instance on an unknown node.
pub fn load(snapshot: &ClusterSnapshot) -> Result<Cluster, LoadError> {
    let group_index: HashMap<&str, usize> = snapshot
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.uuid.as_str(), i))
        .collect();
    let groups = snapshot
        .groups
        .iter()
        .map(|g| Group {
            name: g.name.clone(),
            uuid: g.uuid.clone(),
            alloc_policy: AllocPolicy::parse(&g.alloc_policy).unwrap_or(AllocPolicy::Preferred),
            tags: g.tags.iter().cloned().collect(),
            networks: Vec::new(),
            ipolicy: (g.vcpu_ratio.is_some() || g.spindle_ratio.is_some()).then(|| {
                let default = IPolicy::default();
                IPolicy {
                    vcpu_ratio: g.vcpu_ratio.unwrap_or(default.vcpu_ratio),
                    spindle_ratio: g.spindle_ratio.unwrap_or(default.spindle_ratio),
                    ..default
                }
            }),
        })
        .collect();
    let nodes = snapshot
        .nodes
        .iter()
        .map(|n| {
            let Some(&group) = group_index.get(n.group.as_str()) else {
                return Err(LoadError::UnknownGroup {
                    node: n.name.clone(),
                    group: n.group.clone(),
                });
            };
            let live = !n.offline && n.vm_capable;
            let res = |v: u64| if live { v } else { 0 };
            Ok(NodeData {
                name: n.name.clone(),
                t_mem: res(n.memory_total) as f64,
                n_mem: res(n.memory_node) as i64,
                f_mem: res(n.memory_free) as i64,
                t_dsk: res(n.disk_total) as f64,
                f_dsk: res(n.disk_free) as i64,
                t_cpu: res(u64::from(n.cpus)) as f64,
                offline: !live || n.drained,
                master: n.name == snapshot.master,
                group,
                spindles: i64::from(n.spindles),
                tags: n.tags.iter().cloned().collect(),
                excl_storage: false,
                free_spindles: 0,
                n_cpu: res(u64::from(n.cpus_node)) as i64,
                cpu_speed: 1.0,
            })
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
    let node_index: HashMap<&str, usize> = snapshot
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let find_node = |instance: &str, name: &str| {
        node_index
            .get(name)
            .copied()
            .ok_or_else(|| LoadError::UnknownNode {
                instance: instance.to_owned(),
                node: name.to_owned(),
            })
    };
    let instances = snapshot
        .instances
        .iter()
        .map(|i| {
            let pnode = find_node(&i.name, &i.primary)?;
            let snode = match i.secondaries.first() {
                Some(s) => Some(find_node(&i.name, s)?),
                None => None,
            };
            Ok(Instance {
                name: i.name.clone(),
                mem: i.memory as i64,
                dsk: i.disk as i64,
                vcpus: i64::from(i.vcpus),
                status: InstanceStatus::parse(&i.status).unwrap_or(InstanceStatus::Running),
                auto_balance: i.auto_balance,
                pnode,
                snode,
                dt: i.disk_template,
                tags: i.tags.iter().cloned().collect(),
                spindle_use: i64::from(i.spindle_use),
                spindles: None,
                forthcoming: false,
                util: [1.0; 4],
                movable: false,
                excl: Vec::new(),
                dsrd: Vec::new(),
                loc_score: 0,
            })
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
    Cluster::new(
        groups,
        nodes,
        instances,
        snapshot.cluster_tags.iter().cloned().collect(),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::htools::model::DiskTemplate;
    use crate::model::cluster::{Group as SGroup, Instance as SInstance, Node as SNode};

    fn snapshot() -> ClusterSnapshot {
        let node = |name: &str, offline: bool, drained: bool| SNode {
            name: name.into(),
            uuid: format!("{name}-uuid"),
            group: "g1".into(),
            memory_total: 4096,
            memory_free: 3072,
            memory_node: 512,
            disk_total: 100_000,
            disk_free: 80_000,
            cpus: 8,
            offline,
            drained,
            ..SNode::default()
        };
        ClusterSnapshot {
            master: "node1".into(),
            groups: vec![SGroup {
                name: "default".into(),
                uuid: "g1".into(),
                alloc_policy: "preferred".into(),
                vcpu_ratio: Some(2.0),
                ..SGroup::default()
            }],
            nodes: vec![
                node("node1", false, false),
                node("node2", false, true),
                node("node3", true, false),
            ],
            instances: vec![SInstance {
                name: "inst1".into(),
                primary: "node1".into(),
                secondaries: vec!["node2".into()],
                disk_template: DiskTemplate::Drbd,
                memory: 1024,
                disk: 10_000,
                vcpus: 2,
                status: "ADMIN_down".into(),
                ..SInstance::default()
            }],
            ..ClusterSnapshot::default()
        }
    }

    #[test]
    fn loads_nodes_as_the_luxi_loader_does() {
        let cluster = load(&snapshot()).expect("loads");
        let [n1, n2, n3] = [0, 1, 2].map(|i| &cluster.nodes[i].data);
        assert!(n1.master && !n1.offline);
        assert_eq!(
            (n1.t_mem, n1.n_mem, n1.f_mem, n1.t_cpu),
            (4096.0, 512, 3072, 8.0)
        );
        // Drained: htools-offline but keeps its resources.
        assert!(n2.offline);
        assert_eq!(n2.t_mem, 4096.0);
        // Offline: no resources at all.
        assert!(n3.offline);
        assert_eq!((n3.t_mem, n3.f_mem, n3.t_dsk), (0.0, 0, 0.0));
        assert_eq!(cluster.groups[0].effective_ipolicy().vcpu_ratio, 2.0);
        let inst = &cluster.instances[0];
        assert_eq!((inst.pnode, inst.snode), (0, Some(1)));
        assert_eq!(inst.status, InstanceStatus::AdminDown);
        assert_eq!(inst.dt, DiskTemplate::Drbd);
        assert!(inst.movable);
    }

    #[test]
    fn unknown_nodes_and_groups_are_errors() {
        let mut bad = snapshot();
        bad.instances[0].secondaries = vec!["node9".into()];
        let err = load(&bad).unwrap_err();
        assert!(err.to_string().contains("node9"), "{err}");
        assert_eq!(
            err,
            LoadError::UnknownNode {
                instance: "inst1".into(),
                node: "node9".into()
            }
        );
        let mut bad = snapshot();
        bad.nodes[0].group = "nope".into();
        let err = load(&bad).unwrap_err();
        assert!(err.to_string().contains("unknown group"), "{err}");
        assert!(matches!(err, LoadError::UnknownGroup { .. }), "{err:?}");
    }
}
