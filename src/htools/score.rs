//! The cluster score (htools' `Cluster/Metrics.hs` `compCV`, Ganeti 3.0.2): a weighted sum
//! of 20 components, computed exactly as hbal does (two-pass standard deviations,
//! left-to-right sums in ascending node index, components summed in table order), so that
//! scores agree bit for bit and ties break the same way.

use std::collections::HashMap;

use super::model::{Cluster, NodeState};

/// Number of score components.
pub const COMPONENTS: usize = 20;

/// hbal's names of the components, in summation order.
pub const NAMES: [&str; COMPONENTS] = [
    "free_mem_cv",
    "free_disk_cv",
    "n1_cnt",
    "reserved_mem_cv",
    "offline_all_cnt",
    "offline_pri_cnt",
    "vcpu_ratio_cv",
    "cpu_load_cv",
    "mem_load_cv",
    "disk_load_cv",
    "net_load_cv",
    "pri_tags_score",
    "spindles_cv",
    "free_mem_cv_forth",
    "free_disk_cv_forth",
    "vcpu_ratio_cv_forth",
    "spindles_cv_forth",
    "location_score",
    "location_exclusion_score",
    "reserved_mem_rtotal",
];

/// The weights, in summation order.
pub const WEIGHTS: [f64; COMPONENTS] = [
    0.5, 0.5, 1.0, 1.0, 4.0, 16.0, 0.5, 1.0, 1.0, 1.0, 1.0, 2.0, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0,
    0.25,
];

/// How a component aggregates its per-node values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// Population standard deviation over online nodes.
    StdDev,
    /// Sum over online nodes.
    SumOnline,
    /// Sum over offline nodes.
    SumOffline,
    /// The merged location/exclusion multiset (component 18).
    Map,
}

/// The aggregation of each component.
pub const AGGREGATION: [Aggregation; COMPONENTS] = {
    use Aggregation::*;
    [
        StdDev, StdDev, SumOnline, StdDev, SumOffline, SumOffline, StdDev, StdDev, StdDev, StdDev,
        StdDev, SumOnline, StdDev, StdDev, StdDev, StdDev, StdDev, SumOnline, Map, SumOnline,
    ]
};

/// Index of the map component.
pub const MAP_COMPONENT: usize = 18;

/// The per-node value of every component (the map component's slot is 0: it is not a
/// per-node number). Offline components read the node as offline; the others as online.
pub fn node_values(n: &NodeState) -> [f64; COMPONENTS] {
    let count = f64::from(n.n_pri + n.n_sec);
    [
        n.p_mem,
        n.p_dsk,
        if n.fail_n1 { count } else { 0.0 },
        n.p_rem,
        count,
        f64::from(n.n_pri),
        n.p_cpu / n.cpu_speed,
        n.load[0] / 1.0,
        n.load[1] / 1.0,
        n.load[2] / 1.0,
        n.load[3] / 1.0,
        n.pri_tags_score as f64,
        n.inst_spindles / n.hi_spindles,
        n.p_mem_f,
        n.p_dsk_f,
        n.p_cpu_f / n.cpu_speed,
        n.inst_spindles_f / n.hi_spindles,
        n.loc_score as f64,
        0.0,
        n.p_rem,
    ]
}

/// htools' two-pass population standard deviation.
pub fn std_dev(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let (n, sum) = values
        .clone()
        .fold((0usize, 0.0f64), |(n, s), x| (n + 1, s + x));
    let mean = sum / n as f64;
    let var = values.fold(0.0f64, |acc, x| {
        let d = x - mean;
        acc + d * d
    });
    (var / n as f64).sqrt()
}

/// Component 18 over the given online nodes: Σ (count − 1) of the merged multiset.
pub fn location_exclusion_score<'a>(imaps: impl Iterator<Item = &'a [((u32, u32), u32)]>) -> f64 {
    let mut merged: HashMap<(u32, u32), u32> = HashMap::new();
    for imap in imaps {
        for &(k, c) in imap {
            *merged.entry(k).or_insert(0) += c;
        }
    }
    merged.values().map(|&c| i64::from(c) - 1).sum::<i64>() as f64
}

/// Every component over the nodes `nodes` (ascending index), where `state(i)` gives
/// node `i`'s state and `map_value` is component 18.
pub fn components_with<'a>(
    nodes: &[usize],
    state: impl Fn(usize) -> &'a NodeState,
    map_value: f64,
) -> [f64; COMPONENTS] {
    let values: Vec<(bool, [f64; COMPONENTS])> = nodes
        .iter()
        .map(|&i| {
            let s = state(i);
            (s.offline, node_values(s))
        })
        .collect();
    let mut out = [0.0; COMPONENTS];
    for (c, slot) in out.iter_mut().enumerate() {
        let online = values.iter().filter(|(off, _)| !off).map(|(_, v)| v[c]);
        *slot = match AGGREGATION[c] {
            Aggregation::StdDev => std_dev(online),
            Aggregation::SumOnline => online.fold(0.0, |a, x| a + x),
            Aggregation::SumOffline => values
                .iter()
                .filter(|(off, _)| *off)
                .fold(0.0, |a, (_, v)| a + v[c]),
            Aggregation::Map => map_value,
        };
    }
    out
}

/// [`components_with`] from per-node values already computed: `value(i)` gives node
/// `i`'s offline flag and [`node_values`]. The same operations in the same order, so the
/// result is bit for bit the same.
pub fn components_from_values<'a>(
    nodes: &[usize],
    value: impl Fn(usize) -> (bool, &'a [f64; COMPONENTS]),
    map_value: f64,
) -> [f64; COMPONENTS] {
    let mut out = [0.0; COMPONENTS];
    for (c, slot) in out.iter_mut().enumerate() {
        let online = nodes
            .iter()
            .map(|&i| value(i))
            .filter(|(off, _)| !off)
            .map(|(_, v)| v[c]);
        *slot = match AGGREGATION[c] {
            Aggregation::StdDev => std_dev(online),
            Aggregation::SumOnline => online.fold(0.0, |a, x| a + x),
            Aggregation::SumOffline => nodes
                .iter()
                .map(|&i| value(i))
                .filter(|(off, _)| *off)
                .fold(0.0, |a, (_, v)| a + v[c]),
            Aggregation::Map => map_value,
        };
    }
    out
}

/// The weighted sum of components, in hbal's order.
pub fn weighted(components: &[f64; COMPONENTS]) -> f64 {
    components
        .iter()
        .zip(WEIGHTS)
        .fold(0.0, |acc, (v, w)| acc + w * v)
}

/// Every component of the score of `nodes` (ascending indices) in the cluster.
pub fn components(cluster: &Cluster, nodes: &[usize]) -> [f64; COMPONENTS] {
    let map = location_exclusion_score(
        nodes
            .iter()
            .filter(|&&i| !cluster.nodes[i].offline())
            .map(|&i| cluster.nodes[i].location_exclusion_pairs()),
    );
    components_with(nodes, |i| &cluster.nodes[i].state, map)
}

/// The score of `nodes` (a node group, ascending indices).
pub fn score(cluster: &Cluster, nodes: &[usize]) -> f64 {
    weighted(&components(cluster, nodes))
}

/// The optimal score used by hbal's stop threshold (htools' `optimalCVScore`).
pub fn optimal_score(cluster: &Cluster, nodes: &[usize]) -> f64 {
    if nodes.len() < 2 {
        return 0.0;
    }
    let total: f64 = nodes.iter().map(|&i| cluster.nodes[i].data.t_mem).sum();
    let max = nodes
        .iter()
        .map(|&i| cluster.nodes[i].data.t_mem)
        .fold(f64::NEG_INFINITY, f64::max);
    if total - max <= 0.0 {
        return 0.0;
    }
    let reserved: i64 = nodes
        .iter()
        .flat_map(|&i| cluster.nodes[i].peers().iter().map(|(_, m)| *m))
        .sum();
    let d = reserved as f64;
    0.25 * (d / (total - max) - d / total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::htools::text::parse;

    #[test]
    fn example_components_match_hbal() {
        let c = parse(include_str!("testdata/example.txt")).unwrap();
        let nodes = c.group_nodes(0);
        let comps = components(&c, &nodes);
        let expected = [
            0.16914559, 0.10816654, 0.0, 0.0625, 0.0, 0.0, 0.31093357, 2.48746859, 2.48746859,
            2.29128785, 2.48746859, 1.0, 0.01235265, 0.16512860, 0.10816654, 0.31093357,
            0.01235265, 0.0, 0.0, 0.25,
        ];
        for (i, (got, want)) in comps.iter().zip(expected).enumerate() {
            assert!((got - want).abs() < 5e-9, "{}: {got} vs {want}", NAMES[i]);
        }
        assert_eq!(format!("{:.8}", weighted(&comps)), "12.47728348");
    }
}
