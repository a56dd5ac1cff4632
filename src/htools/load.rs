//! Dynamic CPU load for balancing, as the 2.17 maintd uses it
//! (`src/Ganeti/MaintD/Balance.hs` `updateCPULoad`): every instance's utilisation becomes
//! `(cpu_load, 0, 0, 0)`, and its primary node's load moves by the difference. Without
//! per-instance figures (non-Xen hypervisors) an instance's `cpu_load` is its node's
//! measured load shared by vCPU: `node_load × vcpus / u_cpu`. Secondaries keep the disk
//! load they were given at loading (2.17 never removes it).

use crate::htools::model::Cluster;

/// An online node that hosts primaries has reported no CPU load, so no instance's share
/// can be known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no cpu-avg-load figure for {node}")]
pub struct MissingCpuLoad {
    /// The node without a figure.
    pub node: String,
}

/// Replace instance utilisations by their share of their primary node's measured CPU
/// load. `node_load(n)` is node `n`'s `cpu-avg-load` total; an offline node counts 0.
/// Fails, changing nothing, when an online node that hosts primaries has no figure.
pub fn apply_cpu_loads(
    cluster: &mut Cluster,
    node_load: impl Fn(&str) -> Option<f64>,
) -> Result<(), MissingCpuLoad> {
    let mut loads = Vec::with_capacity(cluster.nodes.len());
    for node in &cluster.nodes {
        let load = if node.offline() {
            0.0
        } else if node.primaries().len() == 0 {
            node_load(node.name()).unwrap_or(0.0)
        } else {
            node_load(node.name()).ok_or_else(|| MissingCpuLoad {
                node: node.name().to_owned(),
            })?
        };
        loads.push(load);
    }
    for idx in 0..cluster.instances.len() {
        let pnode = cluster.instances[idx].pnode;
        let used_cpus = cluster.nodes[pnode].state.u_cpu;
        let cpu_load = if used_cpus > 0 {
            loads[pnode] * cluster.instances[idx].vcpus as f64 / used_cpus as f64
        } else {
            0.0
        };
        let new = [cpu_load, 0.0, 0.0, 0.0];
        let old = std::mem::replace(&mut cluster.instances[idx].util, new);
        let state = &mut cluster.nodes[pnode].state;
        for k in 0..4 {
            state.load[k] += new[k] - old[k];
            state.load_f[k] += new[k] - old[k];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::htools::snapshot;
    use crate::model::cluster::{ClusterSnapshot, DiskTemplate, Group, Instance, Node};

    fn cluster() -> Cluster {
        let node = |name: &str| Node {
            name: name.into(),
            group: "g".into(),
            memory_total: 8192,
            memory_free: 4096,
            disk_total: 100_000,
            disk_free: 100_000,
            cpus: 8,
            ..Node::default()
        };
        let instance = |name: &str, primary: &str, vcpus: u32| Instance {
            name: name.into(),
            primary: primary.into(),
            secondaries: vec!["n2".into()],
            disk_template: DiskTemplate::Drbd,
            memory: 1024,
            disk: 1000,
            vcpus,
            ..Instance::default()
        };
        snapshot::load(&ClusterSnapshot {
            master: "n1".into(),
            groups: vec![Group {
                name: "default".into(),
                uuid: "g".into(),
                alloc_policy: "preferred".into(),
                ..Group::default()
            }],
            nodes: vec![node("n1"), node("n2")],
            instances: vec![instance("a", "n1", 1), instance("b", "n1", 3)],
            ..ClusterSnapshot::default()
        })
        .unwrap()
    }

    #[test]
    fn shares_the_node_load_by_vcpus() {
        let mut c = cluster();
        // n1 runs 4 vCPUs of instances plus the node's own CPU.
        let used = c.nodes[0].state.u_cpu as f64;
        apply_cpu_loads(&mut c, |n| (n == "n1").then_some(2.0)).unwrap();
        assert_eq!(c.instances[0].util, [2.0 / used, 0.0, 0.0, 0.0]);
        assert_eq!(c.instances[1].util, [6.0 / used, 0.0, 0.0, 0.0]);
        // n1's cpu load is now the instances' share, the other components are gone.
        let n1 = c.nodes[0].state.load;
        assert!((n1[0] - 8.0 / used).abs() < 1e-12, "{n1:?}");
        assert_eq!((n1[1], n1[2], n1[3]), (0.0, 0.0, 0.0));
        // n2 keeps the disk load of the two secondaries.
        assert_eq!(c.nodes[1].state.load[2], 2.0);
    }

    #[test]
    fn a_missing_figure_changes_nothing() {
        let mut c = cluster();
        let before = c.clone();
        let err = apply_cpu_loads(&mut c, |_| None).unwrap_err();
        assert!(err.to_string().contains("n1"), "{err}");
        assert_eq!(err.node, "n1");
        assert_eq!(c, before);
    }
}
