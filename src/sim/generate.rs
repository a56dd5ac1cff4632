//! Building a simulated cluster from a [`SimSpec`]: same spec, same cluster.

use std::collections::BTreeSet;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{
    healthy_diagnose, queue::JobQueue, sanitize_seconds, AdminState, MonitoringBehaviour,
    SimCluster, SimGroup, SimInstance, SimNode, CANDIDATE_POOL_SIZE,
};
use crate::model::cluster::DiskTemplate;

/// Smallest node memory, MiB (64 GiB).
const MIN_NODE_MEMORY: u64 = 64 * 1024;
/// Smallest node disk, MiB (1 TiB).
const MIN_NODE_DISK: u64 = 1024 * 1024;
/// CPUs of every node.
const NODE_CPUS: u32 = 16;
/// Resources kept free beyond the busiest node's load, MiB.
const MEMORY_HEADROOM: u64 = 8 * 1024;
const DISK_HEADROOM: u64 = 100 * 1024;

/// The instance sizes a generated cluster uses: (memory MiB, vCPUs, disk MiB). Real
/// clusters run a few standard sizes, and the balancer's bound-driven search works per
/// size: one random size per instance would leave thousands of sizes at 20,000 instances.
const FLAVORS: [(u64, u32, u64); 6] = [
    (1024, 1, 10 * 1024),
    (2048, 1, 20 * 1024),
    (2048, 2, 40 * 1024),
    (4096, 2, 50 * 1024),
    (8192, 4, 80 * 1024),
    (8192, 4, 100 * 1024),
];

/// What cluster to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSpec {
    /// Number of nodes, `node1..nodeN` (at least one; node1 is the master).
    pub nodes: usize,
    /// Number of instances, `inst1..instM`.
    pub instances: usize,
    /// Seed of every random choice, UUIDs included.
    pub seed: u64,
    /// Seconds a job takes from start to end (may be 0).
    pub job_seconds: f64,
    /// The cluster's name.
    pub cluster_name: String,
}

impl Default for SimSpec {
    fn default() -> Self {
        SimSpec {
            nodes: 4,
            instances: 12,
            seed: 1,
            job_seconds: 2.0,
            cluster_name: "cluster.sim".to_owned(),
        }
    }
}

/// A version-4 UUID drawn from the seeded generator.
pub(crate) fn next_uuid(rng: &mut SmallRng) -> String {
    uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .to_string()
}

/// Build the cluster. Node sizes are chosen after placement so that any single node can
/// be evacuated: every node keeps free at least the busiest node's load plus headroom.
pub(crate) fn generate(spec: &SimSpec, now: f64) -> SimCluster {
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let node_count = spec.nodes.max(1);
    let cluster_uuid = next_uuid(&mut rng);
    let group = SimGroup {
        name: "default".to_owned(),
        uuid: next_uuid(&mut rng),
        alloc_policy: "preferred".to_owned(),
        tags: BTreeSet::new(),
    };

    let mut nodes: Vec<SimNode> = (1..=node_count)
        .map(|index| SimNode {
            name: format!("node{index}"),
            uuid: next_uuid(&mut rng),
            group_uuid: group.uuid.clone(),
            memory_total: MIN_NODE_MEMORY,
            disk_total: MIN_NODE_DISK,
            cpus: NODE_CPUS,
            offline: false,
            drained: false,
            master_candidate: index <= CANDIDATE_POOL_SIZE,
            master_capable: true,
            vm_capable: true,
            tags: BTreeSet::new(),
            diagnose: healthy_diagnose(),
            monitoring: MonitoringBehaviour::Normal,
            repairs: Vec::new(),
        })
        .collect();

    // Round-robin primaries from a random starting node; DRBD secondaries anywhere else.
    let offset = rng.gen_range(0..node_count);
    let instances: Vec<SimInstance> = (1..=spec.instances)
        .map(|index| {
            let primary_index = (offset + index - 1) % node_count;
            let roll: u32 = rng.gen_range(0..100);
            let disk_template = match roll {
                _ if node_count < 2 && roll < 70 => DiskTemplate::Plain,
                0..=69 => DiskTemplate::Drbd,
                70..=84 => DiskTemplate::Plain,
                _ => DiskTemplate::Diskless,
            };
            let secondaries = if disk_template == DiskTemplate::Drbd {
                let step = rng.gen_range(1..node_count);
                vec![nodes[(primary_index + step) % node_count].name.clone()]
            } else {
                Vec::new()
            };
            let (memory, vcpus, flavor_disk) = FLAVORS[rng.gen_range(0..FLAVORS.len())];
            let disk = if disk_template == DiskTemplate::Diskless {
                0
            } else {
                flavor_disk
            };
            let admin_state = if rng.gen_range(0..10) == 0 {
                AdminState::Down
            } else {
                AdminState::Up
            };
            SimInstance {
                name: format!("inst{index}"),
                uuid: next_uuid(&mut rng),
                primary: nodes[primary_index].name.clone(),
                secondaries,
                disk_template,
                memory,
                disk,
                vcpus,
                admin_state,
                tags: BTreeSet::new(),
            }
        })
        .collect();

    let busiest = |used: &dyn Fn(&SimNode) -> u64| nodes.iter().map(used).max().unwrap_or(0);
    // Memory counts every instance (even stopped ones may be started or failed over).
    let peak_memory = busiest(&|n| {
        instances
            .iter()
            .filter(|i| i.primary == n.name || i.secondaries.contains(&n.name))
            .map(|i| i.memory)
            .sum()
    });
    let peak_disk = busiest(&|n| {
        instances
            .iter()
            .filter(|i| i.disk_nodes().any(|d| *d == n.name))
            .map(|i| i.disk)
            .sum()
    });
    let memory_total = round_up_gib(MIN_NODE_MEMORY.max(2 * peak_memory + MEMORY_HEADROOM));
    let disk_total = round_up_gib(MIN_NODE_DISK.max(2 * peak_disk + DISK_HEADROOM));
    for node in &mut nodes {
        node.memory_total = memory_total;
        node.disk_total = disk_total;
    }

    SimCluster {
        cluster_name: spec.cluster_name.clone(),
        cluster_uuid,
        master: nodes[0].name.clone(),
        cluster_tags: BTreeSet::new(),
        groups: vec![group],
        nodes,
        instances,
        new_node_memory: memory_total,
        new_node_disk: disk_total,
        new_node_cpus: NODE_CPUS,
        queue: JobQueue::new(sanitize_seconds(spec.job_seconds), now),
        rng,
    }
}

fn round_up_gib(mib: u64) -> u64 {
    mib.div_ceil(1024) * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> SimSpec {
        SimSpec {
            nodes: 5,
            instances: 40,
            seed,
            ..SimSpec::default()
        }
    }

    #[test]
    fn same_seed_same_cluster() {
        let a = SimCluster::generate(&spec(42), 0.0).snapshot(0.0);
        let b = SimCluster::generate(&spec(42), 0.0).snapshot(0.0);
        assert_eq!(a, b);
        let c = SimCluster::generate(&spec(43), 0.0).snapshot(0.0);
        assert_ne!(a, c);
    }

    #[test]
    fn names_master_and_mix() {
        let snap = SimCluster::generate(&spec(3), 0.0).snapshot(0.0);
        assert_eq!(snap.master, "node1");
        let names: Vec<_> = snap.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node1", "node2", "node3", "node4", "node5"]);
        assert_eq!(snap.instances.len(), 40);
        assert_eq!(snap.instances[39].name, "inst40");
        assert!(snap.groups.iter().all(|g| g.name == "default"));
        let drbd = snap
            .instances
            .iter()
            .filter(|i| i.disk_template == DiskTemplate::Drbd)
            .count();
        assert!(drbd > 20, "mostly drbd, got {drbd}");
        for inst in &snap.instances {
            assert!((1024..=8 * 1024).contains(&inst.memory));
            match inst.disk_template {
                DiskTemplate::Drbd => {
                    assert_eq!(inst.secondaries.len(), 1);
                    assert_ne!(inst.secondaries[0], inst.primary);
                }
                _ => assert!(inst.secondaries.is_empty()),
            }
        }
    }

    #[test]
    fn evacuating_any_node_fits_on_any_other() {
        for seed in 0..20 {
            let snap = SimCluster::generate(&spec(seed), 0.0).snapshot(0.0);
            for node in &snap.nodes {
                let load: u64 = snap.primaries_of(&node.name).map(|i| i.memory).sum();
                for other in snap.nodes.iter().filter(|o| o.name != node.name) {
                    assert!(other.memory_free >= load, "seed {seed}");
                }
            }
        }
    }

    #[test]
    fn single_node_cluster_has_no_drbd() {
        let snap = SimCluster::generate(
            &SimSpec {
                nodes: 1,
                instances: 10,
                ..SimSpec::default()
            },
            0.0,
        )
        .snapshot(0.0);
        assert!(snap
            .instances
            .iter()
            .all(|i| i.disk_template != DiskTemplate::Drbd));
    }
}
