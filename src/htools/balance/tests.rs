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
            let (mut a, mut b) = (base.clone(), base.clone());
            let fast = balance_group_with(&mut a, group, &opts, &mut |_| {}, true);
            let slow = balance_group_with(&mut b, group, &opts, &mut |_| {}, false);
            let key = |p: &Plan| {
                p.steps
                    .iter()
                    .map(|s| (s.instance, s.mv, s.pnode, s.snode, s.score.to_bits()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(key(&fast), key(&slow), "seed {seed}, group {group}\n{text}");
            assert_eq!(fast.stop, slow.stop, "seed {seed}");
            steps += fast.steps.len();
        }
    }
    assert!(steps > 5000, "only {steps} steps compared");
    assert!(engines > 400, "bounds used for only {engines} plans");
}
