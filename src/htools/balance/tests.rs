use super::*;
use crate::htools::text::parse;

const EXAMPLE: &str = include_str!("../testdata/example.txt");

#[test]
fn example_takes_hbals_three_steps() {
    let mut c = parse(EXAMPLE).unwrap();
    let plan = balance_group(&mut c, 0, &BalanceOptions::default(), &mut |_| {});
    assert_eq!(format!("{:.8}", plan.initial_score), "12.47728348");
    let lines: Vec<String> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| solution_line(&c, s, i + 1))
        .collect();
    assert_eq!(
        lines,
        vec![
            "    1. web1   alpha:beta  => delta:beta    7.97930060 a=f r:delta f",
            "    2. db1    alpha:gamma => gamma:delta   5.36057290 a=f r:delta",
            "    3. web2   alpha:beta  => beta:gamma    3.27660968 a=f r:gamma",
        ]
    );
    assert_eq!(job_sets(&plan.steps), vec![vec![0], vec![1], vec![2]]);
}

/// A random cluster in the text format: a few node classes, skewed placement, empty
/// nodes, every disk template, stopped/offline instances, exclusion, location and
/// migration tags, offline (zeroed) and drained nodes, unaccounted memory, two groups.
fn random_cluster(seed: u64) -> (String, usize) {
    use rand::{rngs::SmallRng, Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(seed);
    let groups = if rng.gen_bool(0.2) { 2 } else { 1 };
    let nodes = if seed % 10 == 9 {
        rng.gen_range(20..=40)
    } else {
        rng.gen_range(3..=14)
    };
    let instances = rng.gen_range(nodes * 2..=nodes * 18);
    let location = rng.gen_bool(0.3);
    let exclusion = rng.gen_bool(0.6);
    let migration = rng.gen_bool(0.15);
    let templates = [
        "drbd", "drbd", "drbd", "plain", "diskless", "file", "rbd", "ext",
    ];
    let statuses = [
        "running",
        "running",
        "running",
        "running",
        "ADMIN_down",
        "ERROR_up",
        "ADMIN_offline",
        "ERROR_down",
    ];
    let classes = [(131072, 16, 4194304, 8), (262144, 32, 8388608, 12)];
    let sizes = [
        (1024, 1, 10240),
        (2048, 1, 20480),
        (4096, 2, 40960),
        (8192, 4, 81920),
        (16384, 8, 163840),
    ];
    let mut out = String::new();
    for g in 0..groups {
        out += &format!("g{g}|uuid-{g}|preferred||\n");
    }
    out += "\n";
    struct N {
        mem: i64,
        dsk: i64,
        cpu: i64,
        sp: i64,
        used_mem: i64,
        used_dsk: i64,
        weight: f64,
        group: usize,
    }
    let mut ns: Vec<N> = (0..nodes)
        .map(|i| {
            let (mem, cpu, dsk, sp) = classes[rng.gen_range(0..classes.len())];
            N {
                mem,
                dsk,
                cpu,
                sp,
                used_mem: 0,
                used_dsk: 0,
                weight: if rng.gen_bool(0.15) {
                    0.0
                } else {
                    rng.gen_range(0.1..3.0f64).powi(2)
                },
                group: i * groups / nodes,
            }
        })
        .collect();
    let mut lines = Vec::new();
    for k in 0..instances {
        let dt = templates[rng.gen_range(0..templates.len())];
        let (mem, vcpus, dsk) = sizes[rng.gen_range(0..sizes.len())];
        let dsk = if dt == "diskless" { 0 } else { dsk };
        let status = statuses[rng.gen_range(0..statuses.len())];
        let group = rng.gen_range(0..groups);
        let members: Vec<usize> = (0..nodes).filter(|&i| ns[i].group == group).collect();
        let pick = |rng: &mut SmallRng, ns: &[N]| {
            let total: f64 = members.iter().map(|&i| ns[i].weight + 0.05).sum();
            let mut x = rng.gen_range(0.0..total);
            for &i in &members {
                x -= ns[i].weight + 0.05;
                if x <= 0.0 {
                    return i;
                }
            }
            members[members.len() - 1]
        };
        let p = pick(&mut rng, &ns);
        let s = (dt == "drbd" && members.len() > 1).then(|| loop {
            let s = members[rng.gen_range(0..members.len())];
            if s != p {
                break s;
            }
        });
        if dt == "drbd" && s.is_none() {
            continue;
        }
        let runs = matches!(status, "running" | "ERROR_up");
        if runs && ns[p].mem - 4096 - ns[p].used_mem - mem < 1024 {
            continue;
        }
        let local = matches!(dt, "drbd" | "plain");
        if local {
            ns[p].used_dsk += dsk;
        }
        if runs {
            ns[p].used_mem += mem;
        }
        if let Some(s) = s {
            ns[s].used_dsk += dsk;
        }
        let mut tags = Vec::new();
        if exclusion && rng.gen_bool(0.25) {
            tags.push(format!("service:s{}", rng.gen_range(0..4)));
        }
        let auto = if rng.gen_bool(0.92) { "Y" } else { "N" };
        let su = rng.gen_range(1..=3);
        lines.push(format!(
            "i{k}|{mem}|{dsk}|{vcpus}|{status}|{auto}|n{p}|{}|{dt}|{}|{su}|-|N",
            s.map(|s| format!("n{s}")).unwrap_or_default(),
            tags.join(",")
        ));
    }
    let offline: Vec<bool> = (0..nodes).map(|i| i > 0 && rng.gen_bool(0.08)).collect();
    for (i, n) in ns.iter().enumerate() {
        let zeroed = offline[i] && rng.gen_bool(0.5);
        let noise = if rng.gen_bool(0.3) {
            rng.gen_range(0..3000)
        } else {
            0
        };
        let mut tags = Vec::new();
        if location {
            tags.push(format!("rack:r{}", i / 3));
        }
        if migration {
            tags.push(format!("mig:m{}", i % 2));
        }
        let role = if offline[i] {
            "Y"
        } else if i == 0 {
            "M"
        } else {
            "N"
        };
        let res = if zeroed {
            "0|0|0|0|0|0".to_owned()
        } else {
            format!(
                "{}|4096|{}|{}|{}|{}",
                n.mem,
                n.mem - 4096 - n.used_mem - noise,
                n.dsk,
                n.dsk - n.used_dsk,
                n.cpu
            )
        };
        out += &format!(
            "n{i}|{res}|{role}|uuid-{}|{}|{}|N|0|{}|1.0\n",
            n.group,
            n.sp,
            tags.join(","),
            if zeroed { 0 } else { 1 }
        );
    }
    out += "\n";
    for l in lines {
        out += &l;
        out += "\n";
    }
    out += "\n";
    if exclusion {
        out += "htools:iextags:service\n";
    }
    if location {
        out += "htools:nlocation:rack\n";
    }
    if migration {
        out += "htools:migration:mig\nhtools:allowmigration:mig:m0::mig:m1\n";
    }
    out += "\n";
    let pol = "1024,1,10240,1,1,1|128,1,1024,1,1,1;65536,16,1048576,16,8,12|drbd,plain,diskless,file,rbd,ext|4.0|32.0";
    out += &format!("|{pol}\n");
    for g in 0..groups {
        out += &format!("g{g}|{pol}\n");
    }
    (out, groups)
}

/// The cluster with fractional utilisations (as the daemon sets from monitoring data).
fn with_random_util(c: &Cluster, seed: u64) -> Cluster {
    use rand::{rngs::SmallRng, Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(seed);
    let instances = c
        .instances
        .iter()
        .map(|i| {
            let mut i = i.clone();
            i.util = [
                rng.gen_range(0.0..4.0),
                rng.gen_range(0.0..2.0),
                rng.gen_range(0.0..1.5),
                0.0,
            ];
            i
        })
        .collect();
    Cluster::new(
        c.groups.clone(),
        c.nodes.iter().map(|n| n.data.clone()).collect(),
        instances,
        c.cluster_tags.clone(),
        c.cluster_ipolicy.clone(),
    )
    .unwrap()
}

/// The bounds never change a decision: on 400 random clusters and options, every step
/// (instance, move, nodes, score bit for bit) equals the exhaustive screen's.
#[test]
fn bounded_search_decides_as_the_exhaustive_screen() {
    let (mut steps, mut engines) = (0, 0);
    for seed in 0..400u64 {
        let (text, groups) = random_cluster(seed);
        let mut base = parse(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        if seed % 4 == 3 {
            base = with_random_util(&base, seed);
        }
        let mut opts = BalanceOptions {
            max_steps: Some(80),
            threads: 1,
            ..BalanceOptions::default()
        };
        match seed % 11 {
            1 => opts.disk_moves = false,
            2 => opts.instance_moves = false,
            3 => opts.evac_mode = true,
            4 => opts.force = true,
            5 => opts.restricted_migration = true,
            6 => opts.allowed_nodes = Some((0..base.nodes.len()).filter(|i| i % 3 != 1).collect()),
            7 => {
                opts.min_gain = 0.5;
                opts.min_gain_limit = 30.0;
            }
            _ => {}
        }
        for group in 0..groups {
            engines += usize::from(bound::Engine::new(&base, group, &opts).is_some());
            let (mut a, mut b, mut c) = (base.clone(), base.clone(), base.clone());
            let fast = balance_group_with(&mut a, group, &opts, &mut |_| {}, true);
            let slow = balance_group_with(&mut b, group, &opts, &mut |_| {}, false);
            let two = BalanceOptions {
                threads: 2,
                ..opts.clone()
            };
            let parallel = balance_group_with(&mut c, group, &two, &mut |_| {}, true);
            let key = |p: &Plan| {
                p.steps
                    .iter()
                    .map(|s| (s.instance, s.mv, s.pnode, s.snode, s.score.to_bits()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(key(&fast), key(&slow), "seed {seed}, group {group}\n{text}");
            assert_eq!(
                key(&parallel),
                key(&slow),
                "seed {seed} in parallel\n{text}"
            );
            assert_eq!(parallel.stop, slow.stop, "seed {seed}");
            assert_eq!(fast.stop, slow.stop, "seed {seed}");
            steps += fast.steps.len();
        }
    }
    assert!(steps > 5000, "only {steps} steps compared");
    assert!(engines > 400, "bounds used for only {engines} plans");
}

/// The steps of a plan, scores bit for bit.
fn step_keys(plan: &Plan) -> Vec<(usize, Move, usize, Option<usize>, u64)> {
    plan.steps
        .iter()
        .map(|s| (s.instance, s.mv, s.pnode, s.snode, s.score.to_bits()))
        .collect()
}

/// The scan and the confirmation split over threads decide as one thread does, on
/// generated clusters of a few thousand moves per step, and on one of identical nodes and
/// instances, where many candidates tie and the first in hbal's order must win.
#[test]
fn parallel_steps_equal_the_sequential_ones() {
    use crate::htools::generate::Spec;
    let mut clusters: Vec<(String, Cluster)> = [(30, 500, 1), (40, 700, 2), (24, 400, 3)]
        .into_iter()
        .map(|(n, i, seed)| {
            let c = Spec::new(n, i, seed).generate().unwrap().cluster().unwrap();
            (format!("{n}/{i} seed {seed}"), c)
        })
        .collect();
    // Twelve identical nodes; identical instances, all primaries on three of them.
    let placement: Vec<(usize, usize)> = (0..120).map(|i| (i % 3, 3 + (i * 5) % 9)).collect();
    let mut ties = String::from("g0|uuid-0|preferred||\n\n");
    for n in 0..12 {
        let primaries = placement.iter().filter(|(p, _)| *p == n).count() as i64;
        let disks = placement.iter().filter(|(p, s)| *p == n || *s == n).count() as i64;
        ties += &format!(
            "n{n}|131072|4096|{}|4194304|{}|16|{}|uuid-0|8||N|0|1|1.0\n",
            131072 - 4096 - 2048 * primaries,
            4194304 - 20480 * disks,
            if n == 0 { "M" } else { "N" }
        );
    }
    ties += "\n";
    for (i, (p, s)) in placement.iter().enumerate() {
        ties += &format!("i{i}|2048|20480|1|running|Y|n{p}|n{s}|drbd||1|-|N\n");
    }
    let pol = "1024,1,10240,1,1,1|128,1,1024,1,1,1;65536,16,1048576,16,8,12|drbd,plain|4.0|32.0";
    ties += &format!("\n\n|{pol}\ng0|{pol}\n");
    clusters.push(("ties".to_owned(), parse(&ties).unwrap()));
    for (name, base) in clusters {
        let opts = BalanceOptions {
            max_steps: Some(60),
            threads: 1,
            ..BalanceOptions::default()
        };
        let mut one = base.clone();
        let sequential = balance_group(&mut one, 0, &opts, &mut |_| {});
        assert!(sequential.steps.len() >= 10, "{name}: {sequential:?}");
        for threads in [2, 3] {
            let mut c = base.clone();
            let opts = BalanceOptions {
                threads,
                ..opts.clone()
            };
            let parallel = balance_group(&mut c, 0, &opts, &mut |_| {});
            assert_eq!(
                step_keys(&parallel),
                step_keys(&sequential),
                "{name}, {threads}"
            );
            assert_eq!(parallel.stop, sequential.stop, "{name}");
        }
    }
}

/// The first job set alone: the full plan's first steps, as many as touch disjoint
/// nodes, computing one step beyond them and no more; hbal's first job set of the full
/// plan is a prefix of it.
#[test]
fn the_first_job_set_is_computed_alone() {
    let mut sets = 0;
    for seed in 0..60u64 {
        let (text, groups) = random_cluster(seed);
        let base = parse(&text).unwrap();
        let opts = BalanceOptions::default();
        for group in 0..groups {
            let mut full_cluster = base.clone();
            let full = balance_group(&mut full_cluster, group, &opts, &mut |_| {});
            // The longest prefix of pairwise disjoint steps.
            let mut busy = Vec::new();
            let disjoint = full
                .steps
                .iter()
                .take_while(|s| {
                    let nodes = s.involved_nodes();
                    let free = !nodes.iter().any(|n| busy.contains(n));
                    busy.extend(nodes);
                    free
                })
                .count();
            let mut computed = 0;
            let mut c = base.clone();
            let mut busy = Vec::new();
            let first =
                balance_group_until(&mut c, group, &opts, &mut |_| {}, true, &mut |_, s| {
                    computed += 1;
                    let nodes = s.involved_nodes();
                    let stop = nodes.iter().any(|n| busy.contains(n));
                    busy.extend(nodes);
                    stop
                });
            let mut c = base.clone();
            let public = balance_first_job_set(&mut c, group, &opts);
            assert_eq!(step_keys(&public), step_keys(&first), "seed {seed}");
            assert_eq!(first.steps.len(), disjoint, "seed {seed}");
            assert_eq!(
                step_keys(&first)[..],
                step_keys(&full)[..disjoint],
                "seed {seed}"
            );
            let more = usize::from(full.steps.len() > disjoint);
            assert_eq!(computed, disjoint + more, "seed {seed}: steps computed");
            if more == 1 {
                assert_eq!(first.stop, StopReason::JobSetComplete, "seed {seed}");
            }
            if let Some(hbal_first) = job_sets(&full.steps).first() {
                let prefix: Vec<usize> = (0..hbal_first.len()).collect();
                assert_eq!(hbal_first, &prefix, "seed {seed}");
                assert!(hbal_first.len() <= disjoint, "seed {seed}");
                sets += 1;
            }
        }
    }
    assert!(sets > 30, "only {sets} plans had steps");
}
