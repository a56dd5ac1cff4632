//! Per-node figures derived from where the instances are, computed in one pass over the
//! instances: a query over thousands of nodes and a hundred thousand instances then
//! costs one pass, not one pass per node and field.

use std::collections::HashMap;

use super::{SimCluster, SimNode};

/// What one node carries.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct NodeUsage<'a> {
    /// Memory of the running primaries, MiB.
    pub memory_used: u64,
    /// Disk of the local disks of the primaries and secondaries, MiB.
    pub disk_used: u64,
    /// Primary instances, in the cluster's order.
    pub primaries: Vec<&'a str>,
    /// Secondary instances, in the cluster's order.
    pub secondaries: Vec<&'a str>,
}

/// Every node by name, and what it carries; a view of the cluster at one moment.
#[derive(Debug)]
pub(crate) struct Placement<'a> {
    nodes: &'a [SimNode],
    position: HashMap<&'a str, usize>,
    usage: Vec<NodeUsage<'a>>,
    /// What an unknown node carries: nothing.
    nothing: NodeUsage<'a>,
}

impl<'a> Placement<'a> {
    /// The node named `name` (the first, as [`SimCluster::node`] finds it).
    pub fn node(&self, name: &str) -> Option<&'a SimNode> {
        self.position(name).map(|i| &self.nodes[i])
    }

    /// The place of node `name` in the cluster's node list.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.position.get(name).copied()
    }

    /// What node `name` carries (nothing for an unknown node).
    pub fn usage(&self, name: &str) -> &NodeUsage<'a> {
        self.position(name)
            .map_or(&self.nothing, |i| &self.usage[i])
    }
}

impl SimCluster {
    /// The placement of every instance, as the per-node figures ([`SimCluster::memory_free`]
    /// and the like) would give it node by node.
    pub(crate) fn placement(&self) -> Placement<'_> {
        let nodes = self.nodes_slice();
        let mut position = HashMap::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            position.entry(node.name.as_str()).or_insert(i);
        }
        let mut usage = vec![NodeUsage::default(); nodes.len()];
        for instance in self.instances_slice() {
            if let Some(&i) = position.get(instance.primary.as_str()) {
                let carried = &mut usage[i];
                carried.primaries.push(instance.name.as_str());
                if instance.uses_memory() {
                    carried.memory_used += instance.memory;
                }
            }
            let mut secondaries_seen: Vec<usize> = Vec::new();
            for secondary in &instance.secondaries {
                if let Some(&i) = position.get(secondary.as_str()) {
                    if !secondaries_seen.contains(&i) {
                        secondaries_seen.push(i);
                        usage[i].secondaries.push(instance.name.as_str());
                    }
                }
            }
            // Disk counts once per node, however often the node is named.
            let mut disk_seen: Vec<usize> = Vec::new();
            for node in instance.disk_nodes() {
                if let Some(&i) = position.get(node.as_str()) {
                    if !disk_seen.contains(&i) {
                        disk_seen.push(i);
                        usage[i].disk_used += instance.disk;
                    }
                }
            }
        }
        Placement {
            nodes,
            position,
            usage,
            nothing: NodeUsage::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::sim::{SimCluster, SimSpec};

    #[test]
    fn placement_agrees_with_the_per_node_figures() {
        let spec = SimSpec {
            nodes: 12,
            instances: 60,
            seed: 7,
            ..SimSpec::default()
        };
        let sim = SimCluster::generate(&spec, 1000.0);
        let placement = sim.placement();
        for node in sim.nodes_slice() {
            let usage = placement.usage(&node.name);
            assert_eq!(
                usage.memory_used,
                sim.memory_used(&node.name),
                "{}",
                node.name
            );
            assert_eq!(usage.disk_used, sim.disk_used(&node.name), "{}", node.name);
            assert_eq!(
                usage.primaries,
                sim.primaries_of(&node.name),
                "{}",
                node.name
            );
            assert_eq!(
                usage.secondaries,
                sim.secondaries_of(&node.name),
                "{}",
                node.name
            );
            assert_eq!(placement.node(&node.name), sim.node(&node.name));
        }
        assert!(sim
            .nodes_slice()
            .iter()
            .any(|n| !placement.usage(&n.name).secondaries.is_empty()));
        assert_eq!(placement.usage("no-such-node").primaries.len(), 0);
        assert!(placement.node("no-such-node").is_none());
    }
}
