//! Proof of parity with Ganeti's htools.
//!
//! The real Debian binaries are the oracle: `hbal -t FILE -C` for balancing and
//! `hail -t FILE REQUEST` for node evacuation. On clusters generated at test time by
//! maintd's own generator, `maintd::htools::generate` (seeds × sizes × disk-template
//! mixes × offline and drained nodes, location and exclusion tags, unaccounted memory),
//! `maintd plan` must take the same decisions:
//!
//! * balancing: the same initial score, the same steps (instance, new nodes, the move they
//!   imply, score equal to 8 decimals as hbal prints it), the same final score and the
//!   same job sets as `hbal -C`; whole plans up to 12 nodes / 200 instances (20/400 with
//!   `HTOOLS_PARITY_FULL=1`), the first steps (`--max-steps`) at 20/400 and 50/1000,
//!   with every hbal option maintd shares (`-G`, `--no-disk-moves`, `-E`, ...);
//! * soundness of every maintd plan, also beyond hbal's reach (200/4000): one htools move
//!   per step onto online nodes of the group, within free memory and disk, honouring the
//!   options, strictly lowering the score, job sets split as htools' `Cluster.splitJobs`
//!   does;
//! * evacuation: the same moved instances (group, nodes), failures (reasons) and jobs
//!   (opcodes) as hail, in every mode, for normal, master, offline and drained nodes,
//!   and for two and three nodes evacuated at once (DRBD pairs spanning them; the
//!   request lists the instances of all the nodes in index order).
//!
//! The oracle side is also checked on its own (parsers, the recorded reference example,
//! internal consistency of hbal's output), so a broken harness cannot pass as parity.
//!
//! # Running
//!
//! The tests that run hbal or hail are `#[ignore]`d, so that a plain `cargo test` passes
//! on a machine without Ganeti; the parsers, the recorded example, the generator checks
//! and the soundness of maintd's plans run always. With Debian's htools installed
//! (`apt-get install ganeti-htools-3.0`), run everything with
//! `cargo test --test htools_parity -- --include-ignored` (three to four minutes on two
//! cores); an ignored test run without the oracle fails with instructions. `maintd` is
//! the workspace binary, built on demand.
//!
//! Every failure prints its reproduction from the repository root: the generator's
//! example binary writes the cluster (and the hail request) of a case,
//! `cargo run --example gen_cluster -- --nodes 12 --instances 200 --seed 7 -o c.txt
//! [--evac-request r.json --evac-node node-0002[,node-0003] --evac-mode all]`, then the
//! printed `hbal`/`hail` and `maintd plan` command lines run on `c.txt`.
//!
//! Knobs (environment): `HTOOLS_PARITY_SEED=N` shifts every seed by N, to check clusters
//! no run has seen before; `HTOOLS_PARITY_FULL=1` adds full balances at 16/300 and 20/400
//! and more first steps at 50/1000 (about ten more minutes of hbal time).
//! Run with `cargo test --test htools_parity -- --include-ignored --nocapture` to see
//! every case.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "htools_parity/cluster.rs"]
mod cluster;
#[path = "htools_parity/compare.rs"]
mod compare;
#[path = "htools_parity/hail.rs"]
mod hail;
#[path = "htools_parity/hbal.rs"]
mod hbal;
#[path = "htools_parity/invariants.rs"]
mod invariants;
#[path = "htools_parity/maintd.rs"]
mod maintd;
#[path = "htools_parity/model.rs"]
mod model;
#[path = "htools_parity/tools.rs"]
mod tools;

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use cluster::{Cluster, ClusterSpec, Placement};
use compare::{BalanceCase, EvacuationCase};
use hail::Evacuation;
use hbal::{BalanceOptions, HbalOutput};

/// The mix with every template the generator knows (file disks are invisible to the
/// disk model, plain/file never move, diskless only evacuates).
const ALL_TEMPLATES: &str = "drbd=0.5,plain=0.2,diskless=0.2,file=0.1";

/// `HTOOLS_PARITY_SEED`: added to every seed.
fn seed_shift() -> u64 {
    std::env::var("HTOOLS_PARITY_SEED")
        .ok()
        .map(|s| s.parse().expect("HTOOLS_PARITY_SEED must be an integer"))
        .unwrap_or(0)
}

fn full_sweep() -> bool {
    std::env::var("HTOOLS_PARITY_FULL").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn spec(nodes: usize, instances: usize, seed: u64) -> ClusterSpec {
    ClusterSpec::new(nodes, instances, seed + seed_shift())
}

/// The balancing cases, most expensive first (so that the parallel workers finish
/// together). hbal needs ~0.2 s for 6/60, ~7 s for 12/200 (whole plans), ~0.5 s per step
/// at 20/400 (whole plans: 150 s and more, so only with `HTOOLS_PARITY_FULL`) and ~9 s
/// per step at 50/1000.
fn balance_cases() -> Vec<(ClusterSpec, BalanceOptions)> {
    let whole = BalanceOptions::default();
    let first = BalanceOptions::first;
    let with = |f: fn(&mut BalanceOptions)| {
        let mut options = BalanceOptions::default();
        f(&mut options);
        options
    };
    let mut cases = vec![
        (spec(50, 1000, 13), first(3)),
        (spec(20, 400, 11), first(40)),
        (spec(20, 400, 12).mix("drbd=1").offline(1, 1), first(12)),
        (spec(12, 200, 7).no_exclusion_tags(), whole),
        (spec(10, 200, 5).location_tags(), whole),
        (spec(10, 200, 6).mem_noise(2048), whole),
        (spec(10, 150, 4).offline(1, 1), whole),
        (spec(10, 160, 14).mix(ALL_TEMPLATES), whole),
        (spec(8, 120, 3).mix(ALL_TEMPLATES).offline(0, 1), whole),
        (spec(8, 100, 2).mix("drbd=1"), whole),
        (spec(8, 100, 15).location_tags().offline(1, 0), whole),
        (spec(6, 60, 1), whole),
        (spec(6, 80, 16).mix("drbd=1").mem_noise(4096), whole),
        (spec(4, 40, 9).mix("drbd=1"), whole),
        (spec(3, 30, 17).mix("drbd=0.5,plain=0.5"), whole),
        (spec(5, 40, 8).mix("diskless=1"), whole),
        (spec(10, 200, 18), first(1)),
        // hbal's options that maintd plan shares
        (
            spec(12, 200, 19).groups(2),
            with(|o| o.group = Some("group-01")),
        ),
        (
            spec(12, 200, 19).groups(2),
            with(|o| o.group = Some("group-02")),
        ),
        (spec(10, 200, 20), with(|o| o.no_disk_moves = true)),
        (spec(10, 200, 20), with(|o| o.no_instance_moves = true)),
        (spec(10, 150, 4).offline(1, 1), with(|o| o.evac_mode = true)),
        (
            spec(10, 150, 4).offline(1, 1),
            with(|o| {
                o.evac_mode = true;
                o.no_instance_moves = true;
            }),
        ),
        (spec(8, 120, 28), with(|o| o.ignore_soft_errors = true)),
        (
            spec(8, 120, 28),
            with(|o| {
                o.min_gain = Some(0.5);
                o.min_gain_limit = Some(30.0);
            }),
        ),
    ];
    if full_sweep() {
        cases.splice(
            0..0,
            [
                (spec(20, 400, 31), whole),
                (spec(16, 300, 32).mix(ALL_TEMPLATES), whole),
                (spec(50, 1000, 33).mix("drbd=1").offline(1, 1), first(3)),
                (spec(50, 1000, 34).location_tags(), first(3)),
            ],
        );
    }
    cases
}

/// The evacuation clusters; each is evacuated node by node in every mode.
fn evacuation_specs() -> Vec<ClusterSpec> {
    let mut specs = vec![
        spec(8, 80, 21).offline(1, 1),
        spec(12, 150, 22).groups(2).mix("drbd=1"),
        spec(10, 120, 23)
            .mix(ALL_TEMPLATES)
            .location_tags()
            .offline(1, 1),
        spec(20, 400, 24),
        spec(6, 60, 25).mix("drbd=0.7,diskless=0.3").mem_noise(2048),
        spec(3, 40, 26).mix("drbd=1").offline(0, 1),
    ];
    if full_sweep() {
        specs.push(spec(50, 1000, 27).groups(2).offline(2, 2));
    }
    specs
}

/// The nodes to evacuate: the master, node-0002, every offline/drained node, the node
/// holding the most instances and the last node (in the last group when there are several).
fn evacuation_nodes(cluster: &Cluster) -> Vec<String> {
    let load = |name: &str| {
        cluster
            .placement
            .values()
            .filter(|p| p.primary == name || p.secondary.as_deref() == Some(name))
            .count()
    };
    let busiest = cluster.nodes.iter().max_by_key(|n| load(&n.name));
    let mut nodes: Vec<String> = vec!["node-0001".into(), "node-0002".into()];
    nodes.extend(cluster.offline_nodes().into_iter().map(str::to_string));
    nodes.extend(busiest.map(|n| n.name.clone()));
    nodes.extend(cluster.nodes.last().map(|n| n.name.clone()));
    let mut seen = Vec::new();
    nodes.retain(|n| {
        let fresh = !seen.contains(n);
        seen.push(n.clone());
        fresh
    });
    nodes
}

const MODES: [&str; 3] = ["primary", "secondary", "all"];

/// Runs `work` on every item with one worker per core; results in item order.
fn run_parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(index) else { break };
                let result = work(item);
                results.lock().expect("no worker panics holding the lock")[index] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .expect("no worker panics holding the lock")
        .into_iter()
        .map(|r| r.expect("every item was processed"))
        .collect()
}

/// Checks hbal's output against itself and the cluster it ran on: the printed old nodes
/// follow from replaying the earlier steps, each printed move is the one the nodes imply,
/// the `-C` commands are the move's commands, the `-C` job sets are the backward split
/// of the plan (htools' `Cluster.splitJobs`), and scores strictly decrease. Returns the
/// problems.
fn oracle_inconsistencies(cluster: &Cluster, out: &HbalOutput) -> Vec<String> {
    let mut problems = Vec::new();
    let replayed = match model::replay(
        &cluster.placement,
        out.steps.iter().map(|s| {
            (
                s.instance.as_str(),
                s.new_primary.as_str(),
                s.new_secondary.as_deref(),
            )
        }),
    ) {
        Ok(steps) => steps,
        Err(e) => return vec![e],
    };
    let mut previous: Option<f64> = out.initial_score.as_deref().map(|s| s.parse().unwrap());
    for (step, replay) in out.steps.iter().zip(&replayed) {
        let printed_old = (step.old_primary.clone(), step.old_secondary.clone());
        if printed_old != replay.old {
            problems.push(format!(
                "{}: old nodes are {:?} by replay",
                step.line(),
                replay.old
            ));
        }
        if step.moves != replay.move_code() {
            problems.push(format!(
                "{}: nodes imply {}",
                step.line(),
                replay.move_code()
            ));
        }
        let score: f64 = step.score.parse().unwrap();
        if previous.is_some_and(|p| score >= p) || score < 0.0 {
            problems.push(format!("{}: score does not decrease", step.line()));
        }
        previous = Some(score);
    }
    let expected_sets: Vec<Vec<String>> = model::job_sets(&replayed)
        .into_iter()
        .map(|set| {
            set.into_iter()
                .map(|i| out.steps[i].instance.clone())
                .collect()
        })
        .collect();
    if expected_sets != out.job_set_instances() {
        problems.push(format!(
            "-C job sets {:?} are not the backward split {expected_sets:?}",
            out.job_set_instances()
        ));
    } else {
        // Same grouping, so jobs line up with steps in order.
        let jobs = out.job_sets.iter().flatten();
        let order = model::job_sets(&replayed).into_iter().flatten();
        for (job, index) in jobs.zip(order) {
            let step = &out.steps[index];
            let running = cluster.placement[&step.instance].running;
            let expected = model::commands(&step.instance, &step.moves, running);
            if job.commands != expected {
                problems.push(format!(
                    "{}: -C job {:?}, expected {expected:?}",
                    step.line(),
                    job.commands
                ));
            }
        }
    }
    if let (Some(last), Some(final_score)) = (out.steps.last(), &out.final_score) {
        if last.score != *final_score {
            problems.push(format!(
                "last step {} but final score {final_score}",
                last.score
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------
// The generated clusters (no oracle needed).

/// Every cluster of the suite, each once.
fn all_specs() -> Vec<ClusterSpec> {
    let mut specs: Vec<ClusterSpec> = balance_cases().into_iter().map(|(s, _)| s).collect();
    specs.extend(evacuation_specs());
    specs.extend(multi_node_specs());
    specs.extend(soundness_cases().into_iter().map(|(s, _)| s));
    let mut seen = Vec::new();
    specs.retain(|s| {
        let fresh = !seen.contains(s);
        seen.push(s.clone());
        fresh
    });
    specs
}

#[test]
fn generated_clusters_are_what_the_cases_expect() {
    let dir = tempfile::tempdir().expect("tempdir");
    for spec in all_specs() {
        let generator = spec.generator().unwrap();
        assert_eq!(generator.args(), spec.args(), "the flags name the spec");
        let cluster = spec.generate(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&cluster.path).unwrap();
        let again = spec.generated().unwrap().text().unwrap();
        assert_eq!(text, again, "{spec}: the same bytes every time");
        let model = ::maintd::htools::text::parse(&text).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(model.groups.len(), spec.groups, "{spec}");
        assert_eq!(cluster.nodes.len(), spec.nodes, "{spec}");
        let names: Vec<&str> = model.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            cluster.instances, names,
            "{spec}: the harness reads the file"
        );
        assert!(
            cluster.instances.len() * 100 >= spec.instances * 98,
            "{spec}: {} of {} instances placed",
            cluster.instances.len(),
            spec.instances
        );
        assert_eq!(
            cluster.offline_nodes().len(),
            spec.offline + spec.drained,
            "{spec}"
        );
        assert_eq!(
            cluster.node("node-0001").map(|n| n.role.as_str()),
            Some("M")
        );
        if spec.groups > 1 {
            for group in ["group-01", "group-02"] {
                assert!(model.group_index(group).is_some(), "{spec}: {group}");
            }
        }
    }
}

#[test]
fn generated_requests_list_the_instances_of_the_evacuated_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    for spec in multi_node_specs() {
        let cluster = spec.generate(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let sets = multi_node_sets(&cluster);
        assert!(
            sets.iter().any(|s| s.len() == 3),
            "{spec}: a three-node set sharing DRBD pairs"
        );
        let singles = evacuation_nodes(&cluster).into_iter().map(|n| vec![n]);
        for nodes in sets.into_iter().chain(singles) {
            for mode in MODES {
                let (cluster, request) = spec
                    .generate_evacuation(dir.path(), &nodes, mode)
                    .unwrap_or_else(|e| panic!("{e}"));
                let requested = hail::requested_instances(&request).unwrap();
                assert_eq!(
                    requested,
                    multi_node_instances(&cluster, &nodes, mode),
                    "{spec}: {nodes:?} {mode}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The oracle on its own.

#[test]
#[ignore = "needs Ganeti's htools (hbal, hail): apt-get install ganeti-htools-3.0, then cargo test --test htools_parity -- --include-ignored"]
fn the_oracle_is_installed() {
    tools::require_oracle();
}

/// A four-node cluster in htools' text format (`Backend/Text.hs`: groups, nodes,
/// instances, cluster tags, policies) with every disk template and an exclusion tag.
const EXAMPLE_TXT: &str = "\
default|6f1c2d9e-0000-4000-8000-000000000001|preferred||

alpha|65536|2048|37888|512000|358400|16|M|6f1c2d9e-0000-4000-8000-000000000001|4||N|0|1|1.0
beta|65536|2048|63488|512000|419840|16|N|6f1c2d9e-0000-4000-8000-000000000001|4||N|0|1|1.0
gamma|65536|2048|63488|512000|409600|16|N|6f1c2d9e-0000-4000-8000-000000000001|4||N|0|1|1.0
delta|65536|2048|63488|512000|512000|16|N|6f1c2d9e-0000-4000-8000-000000000001|4||N|0|1|1.0

web1|4096|20480|2|running|Y|alpha|beta|drbd|service:web|1|-|N
web2|4096|20480|2|running|Y|alpha|beta|drbd|service:web|1|-|N
db1|8192|102400|4|running|Y|alpha|gamma|drbd||1|-|N
cache1|2048|10240|1|running|Y|alpha||plain||1|-|N
edge1|1024|0|1|running|Y|alpha||diskless||1|-|N
logs1|6144|40960|2|running|Y|alpha||file||1|-|N
batch1|2048|51200|2|ADMIN_down|Y|beta||plain||1|-|N

htools:iextags:service

|1024,1,10240,1,1,1|128,1,1024,1,1,1;65536,16,1048576,16,8,12|drbd,plain,diskless,file|4.0|32.0
default|1024,1,10240,1,1,1|128,1,1024,1,1,1;65536,16,1048576,16,8,12|drbd,plain,diskless,file|4.0|32.0
";

/// The stdout part of `hbal -t example.txt -C -p -v -v -v` as recorded from Debian's
/// hbal 3.0.2 (component table shortened; the final node table goes to stderr).
const EXAMPLE_HBAL_STDOUT: &str = "\
Loaded cluster tags: htools:iextags:service
Loaded 4 nodes, 7 instances
Group size 4 nodes, 7 instances
Selected node group: default
Initial check done: 0 bad nodes, 0 bad instances.
Initial coefficients: overall 12.47728348
   Field                         Value Weight
   free_mem_cv              0.16914559  x0.50
   reserved_mem_rtotal      0.25000000  x0.25
Trying to minimize the CV...
    1. web1   alpha:beta  => delta:beta    7.97930060 a=f r:delta f
    2. db1    alpha:gamma => gamma:delta   5.36057290 a=f r:delta
    3. web2   alpha:beta  => beta:gamma    3.27660968 a=f r:gamma
Final coefficients:   overall 3.27660968
   Field                         Value Weight
   free_mem_cv              0.16914559  x0.50
Solution length=3

Commands to run to reach the above solution:

  echo jobset 1, 1 jobs
    echo job 1/1
    gnt-instance migrate -f web1
    gnt-instance replace-disks -n delta web1
    gnt-instance migrate -f web1

  echo jobset 2, 1 jobs
    echo job 2/1
    gnt-instance migrate -f db1
    gnt-instance replace-disks -n delta db1

  echo jobset 3, 1 jobs
    echo job 3/1
    gnt-instance migrate -f web2
    gnt-instance replace-disks -n gamma web2
";

fn example_cluster(dir: &Path) -> Cluster {
    let path = dir.join("example.txt");
    std::fs::write(&path, EXAMPLE_TXT).expect("write example.txt");
    Cluster::parse(ClusterSpec::new(4, 7, 0), path, EXAMPLE_TXT).expect("example parses")
}

#[test]
fn hbal_parser_reads_the_recorded_example() {
    let out = hbal::parse(EXAMPLE_HBAL_STDOUT).expect("parses");
    assert_eq!(out.initial_score.as_deref(), Some("12.47728348"));
    assert_eq!(out.final_score.as_deref(), Some("3.27660968"));
    let lines: Vec<String> = out.steps.iter().map(|s| s.line()).collect();
    assert_eq!(
        lines,
        [
            "  1. web1 alpha:beta => delta:beta 7.97930060 a=f r:delta f",
            "  2. db1 alpha:gamma => gamma:delta 5.36057290 a=f r:delta",
            "  3. web2 alpha:beta => beta:gamma 3.27660968 a=f r:gamma",
        ]
    );
    assert_eq!(out.steps[1].old_secondary.as_deref(), Some("gamma"));
    assert_eq!(out.job_set_instances(), [["web1"], ["db1"], ["web2"]]);
    assert_eq!(
        out.job_sets[0][0].commands,
        [
            "gnt-instance migrate -f web1",
            "gnt-instance replace-disks -n delta web1",
            "gnt-instance migrate -f web1",
        ]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let problems = oracle_inconsistencies(&example_cluster(dir.path()), &out);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn hbal_parser_rejects_truncated_output() {
    let without_step = EXAMPLE_HBAL_STDOUT.replace(
        "    2. db1    alpha:gamma => gamma:delta   5.36057290 a=f r:delta\n",
        "",
    );
    assert!(hbal::parse(&without_step).is_err());
    let without_job = EXAMPLE_HBAL_STDOUT.replace("    echo job 3/1\n", "");
    assert!(hbal::parse(&without_job).is_err());
    assert!(hbal::parse_step_line("   free_mem_cv   0.16914559  x0.50").is_none());
    let fa = hbal::parse_step_line("   12. edge1 alpha => delta  1.00000000 a=fa:delta").unwrap();
    assert_eq!((fa.new_primary.as_str(), fa.new_secondary), ("delta", None));
}

#[test]
#[ignore = "needs Ganeti's htools (hbal, hail): apt-get install ganeti-htools-3.0, then cargo test --test htools_parity -- --include-ignored"]
fn hbal_reproduces_the_recorded_example() {
    tools::require_oracle();
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = example_cluster(dir.path());
    let out =
        hbal::run(&cluster.path, &BalanceOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let recorded = hbal::parse(EXAMPLE_HBAL_STDOUT).unwrap();
    assert_eq!(out.steps, recorded.steps);
    assert_eq!(out.job_sets, recorded.job_sets);
    assert_eq!(out.initial_score, recorded.initial_score);
    assert_eq!(out.final_score, recorded.final_score);
}

#[test]
#[ignore = "needs Ganeti's htools (hbal, hail): apt-get install ganeti-htools-3.0, then cargo test --test htools_parity -- --include-ignored"]
fn hbal_output_is_self_consistent_on_generated_clusters() {
    tools::require_oracle();
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (spec(6, 60, 1), BalanceOptions::default()),
        (spec(8, 100, 2).mix("drbd=1"), BalanceOptions::default()),
        (
            spec(8, 120, 3).mix(ALL_TEMPLATES).offline(1, 1),
            BalanceOptions::default(),
        ),
        (spec(10, 200, 5).location_tags(), BalanceOptions::first(20)),
        (spec(5, 40, 8).mix("diskless=1"), BalanceOptions::default()),
    ];
    let results = run_parallel(&cases, |(spec, options)| {
        let cluster = spec.generate(dir.path())?;
        let out = hbal::run(&cluster.path, options)?;
        let problems = oracle_inconsistencies(&cluster, &out);
        if let Some(limit) = options.max_steps {
            if out.steps.len() > limit {
                return Err(format!(
                    "{spec}: {} steps despite -l {limit}",
                    out.steps.len()
                ));
            }
        }
        if problems.is_empty() {
            Ok(out.steps.len())
        } else {
            Err(format!("{spec}:\n  {}", problems.join("\n  ")))
        }
    });
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        errors.is_empty(),
        "hbal's output is not understood:\n{errors:#?}"
    );
    let steps: Vec<usize> = results.into_iter().map(Result::unwrap).collect();
    eprintln!("hbal steps per cluster: {steps:?}");
    assert!(
        steps.iter().filter(|&&n| n > 0).count() >= 4,
        "the clusters must need balancing"
    );
}

#[test]
#[ignore = "needs Ganeti's htools (hbal, hail): apt-get install ganeti-htools-3.0, then cargo test --test htools_parity -- --include-ignored"]
fn hail_answers_are_consistent_with_their_requests() {
    tools::require_oracle();
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec(8, 80, 21).offline(1, 1);
    let mut outcomes = (0, 0);
    for mode in MODES {
        for node in ["node-0002", "node-0003"] {
            let (cluster, request) = spec
                .generate_evacuation(dir.path(), &[node.to_string()], mode)
                .unwrap_or_else(|e| panic!("{e}"));
            let requested = hail::requested_instances(&request).unwrap();
            let (answer, info) =
                hail::run(&cluster.path, &request).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(info, answer.info(), "{node} {mode}");
            let mut answered: Vec<&String> = answer
                .moved
                .iter()
                .map(|m| &m.0)
                .chain(answer.failed.iter().map(|f| &f.0))
                .collect();
            answered.sort();
            let mut expected: Vec<&String> = requested.iter().collect();
            expected.sort();
            assert_eq!(
                answered, expected,
                "{node} {mode}: every instance moved or failed"
            );
            assert_eq!(
                answer.jobs.len(),
                answer.moved.len(),
                "{node} {mode}: a job per move"
            );
            for (job, moved) in answer.jobs.iter().zip(&answer.moved) {
                assert!(
                    job.iter().all(|op| op["instance_name"] == moved.0.as_str()),
                    "{node} {mode}: {job:?} is not about {}",
                    moved.0
                );
            }
            outcomes.0 += answer.moved.len();
            outcomes.1 += answer.failed.len();
        }
    }
    assert!(
        outcomes.0 > 0 && outcomes.1 > 0,
        "moves and failures: {outcomes:?}"
    );
}

#[test]
fn haskell_fixed_formats_like_ghc_printf() {
    let cases: [(f64, usize, &str); 10] = [
        (7.979_300_6, 8, "7.97930060"),
        (12.477_283_48, 8, "12.47728348"),
        (462.498_142_19, 8, "462.49814219"),
        (0.0, 8, "0.00000000"),
        (1e-9, 8, "0.00000000"),
        (6e-9, 8, "0.00000001"),
        // half-to-even on the shortest decimal digits, unlike Rust's exact rounding
        (0.125, 2, "0.12"),
        (0.375, 2, "0.38"),
        (2.675, 2, "2.68"), // 2.67499999... in binary, "2.675" in shortest digits
        (99.999_999_995, 8, "100.00000000"),
    ];
    for (x, decimals, expected) in cases {
        assert_eq!(
            model::haskell_fixed(x, decimals),
            expected,
            "{x:?} with {decimals}"
        );
    }
    assert_eq!(
        format!("{:.2}", 2.675),
        "2.67",
        "Rust rounds the binary value"
    );
}

#[test]
fn move_codes_and_backward_job_sets() {
    let code = |p, s, np, ns| model::move_code(p, Some(s), np, ns);
    assert_eq!(code("a", "b", "b", Some("a")).as_deref(), Some("f"));
    assert_eq!(code("a", "b", "a", Some("c")).as_deref(), Some("r:c"));
    assert_eq!(code("a", "b", "c", Some("a")).as_deref(), Some("r:c f"));
    assert_eq!(code("a", "b", "c", Some("b")).as_deref(), Some("f r:c f"));
    assert_eq!(code("a", "b", "b", Some("c")).as_deref(), Some("f r:c"));
    assert_eq!(code("a", "b", "c", Some("d")), None);
    assert_eq!(
        model::move_code("a", None, "c", None).as_deref(),
        Some("fa:c")
    );
    // Backward scan: step 1 (a,b) and step 3 (e,f) are disjoint but step 2 (b,c)
    // separates them; scanning from the end, 3 and 2 share nothing, 1 shares b with 2.
    let placement: HashMap<String, Placement> = ["i1", "i2", "i3"]
        .iter()
        .zip([("a", "b"), ("b", "c"), ("e", "f")])
        .map(|(name, (p, s))| {
            let placement = Placement {
                primary: p.into(),
                secondary: Some(s.into()),
                running: true,
                disk_template: "drbd".into(),
                mem: 1024,
                dsk: 10240,
            };
            (name.to_string(), placement)
        })
        .collect();
    let steps = model::replay(
        &placement,
        [
            ("i1", "b", Some("a")),
            ("i2", "c", Some("b")),
            ("i3", "f", Some("e")),
        ],
    )
    .unwrap();
    assert_eq!(model::job_sets(&steps), [vec![0], vec![1, 2]]);
}

// ---------------------------------------------------------------------------------------
// Parity of maintd with the oracle.

/// One case's verdict: `Ok(summary)` when maintd passes (agrees with the oracle, or
/// its plan is sound), else the report with a reproduction.
type Verdict = Result<String, String>;

fn summarize(kind: &str, verdicts: &[Verdict]) {
    let agree = verdicts.iter().filter(|v| v.is_ok()).count();
    let disagree: Vec<&String> = verdicts.iter().filter_map(|v| v.as_ref().err()).collect();
    for verdict in verdicts.iter().flatten() {
        eprintln!("pass: {verdict}");
    }
    eprintln!(
        "{kind}: {agree} of {} cases pass, {} fail",
        verdicts.len(),
        disagree.len()
    );
    assert!(
        disagree.is_empty(),
        "{kind}: {} of {} cases fail:\n\n{}",
        disagree.len(),
        verdicts.len(),
        disagree
            .iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

#[test]
#[ignore = "needs Ganeti's htools (hbal, hail): apt-get install ganeti-htools-3.0, then cargo test --test htools_parity -- --include-ignored"]
fn balancing_matches_hbal() {
    tools::require_oracle();
    tools::require_maintd_plan("--balance");
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = balance_cases();
    let verdicts = run_parallel(&cases, |(spec, options)| -> Verdict {
        let title = format!("{spec}, hbal {}", options.hbal_args().join(" "));
        let cluster = spec.generate(dir.path())?;
        let case = BalanceCase {
            cluster: &cluster,
            options: *options,
        };
        let reproduce =
            |what: String| format!("{title}: {what}\n reproduce:\n{}", case.reproduction());
        let oracle = hbal::run(&cluster.path, options).map_err(reproduce)?;
        let problems = oracle_inconsistencies(&cluster, &oracle);
        if !problems.is_empty() {
            return Err(reproduce(format!(
                "hbal's output is not understood: {problems:#?}"
            )));
        }
        let plan = maintd::balance(&cluster.path, options).map_err(reproduce)?;
        let mut diffs = case.differences(&oracle, &plan);
        diffs.extend(invariants::violations(&cluster, options, &plan));
        if diffs.is_empty() {
            Ok(format!(
                "{title}: {} steps, {} job sets",
                oracle.steps.len(),
                oracle.job_sets.len()
            ))
        } else {
            Err(reproduce(diffs.join("\n  ")))
        }
    });
    summarize("balancing", &verdicts);
}

#[test]
#[ignore = "needs Ganeti's htools (hbal, hail): apt-get install ganeti-htools-3.0, then cargo test --test htools_parity -- --include-ignored"]
fn evacuation_matches_hail() {
    tools::require_oracle();
    tools::require_maintd_plan("--evacuate");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cases: Vec<(ClusterSpec, String, &'static str)> = Vec::new();
    for spec in evacuation_specs() {
        let cluster = spec.generate(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        for node in evacuation_nodes(&cluster) {
            for mode in MODES {
                cases.push((spec.clone(), node.clone(), mode));
            }
        }
    }
    let verdicts = run_parallel(&cases, |(spec, node, mode)| -> Verdict {
        let title = format!("{spec}: evacuate {node} {mode}");
        let (cluster, request) =
            spec.generate_evacuation(dir.path(), std::slice::from_ref(node), mode)?;
        let case = EvacuationCase {
            cluster: &cluster,
            node: node.clone(),
            mode,
        };
        let reproduce =
            |what: String| format!("{title}: {what}\n reproduce:\n{}", case.reproduction());
        let (oracle, _) = hail::run(&cluster.path, &request).map_err(reproduce)?;
        let answer: Evacuation = maintd::evacuate(&cluster.path, node, mode).map_err(reproduce)?;
        let diffs = case.differences(&oracle, &answer);
        if diffs.is_empty() {
            Ok(format!(
                "{title}: {} moved, {} failed",
                oracle.moved.len(),
                oracle.failed.len()
            ))
        } else {
            Err(reproduce(diffs.join("\n  ")))
        }
    });
    summarize("evacuation", &verdicts);
}

/// Clusters whose DRBD pairs span several nodes, for evacuations of two and three nodes
/// at once (what maintd does when several nodes are evacuated at the same time).
fn multi_node_specs() -> Vec<ClusterSpec> {
    vec![
        spec(8, 80, 21).offline(1, 1),
        spec(12, 150, 22).groups(2).mix("drbd=1"),
        spec(10, 120, 23)
            .mix(ALL_TEMPLATES)
            .location_tags()
            .offline(1, 1),
        spec(6, 60, 25).mix("drbd=0.7,diskless=0.3").mem_noise(2048),
        spec(12, 100, 29).mix("drbd=1"),
    ]
}

/// How many DRBD instances have one node in `a` and the other in `b`.
fn shared_drbd(cluster: &Cluster, a: &str, b: &str) -> usize {
    cluster
        .placement
        .values()
        .filter(|p| p.disk_template == "drbd")
        .filter(|p| {
            let s = p.secondary.as_deref();
            (p.primary == a && s == Some(b)) || (p.primary == b && s == Some(a))
        })
        .count()
}

/// Node sets evacuated together: the two nodes sharing the most DRBD instances, those
/// two with the node sharing the most with both, and every offline/drained node with
/// its closest DRBD partner.
fn multi_node_sets(cluster: &Cluster) -> Vec<Vec<String>> {
    let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut pairs: Vec<(usize, &str, &str)> = Vec::new();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            pairs.push((shared_drbd(cluster, a, b), a, b));
        }
    }
    pairs.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(y.1)).then(x.2.cmp(y.2)));
    let mut sets = Vec::new();
    if let Some(&(count, a, b)) = pairs.first() {
        if count > 0 {
            sets.push(vec![a.to_string(), b.to_string()]);
            let third = names
                .iter()
                .filter(|c| **c != a && **c != b)
                .max_by_key(|c| {
                    let (x, y) = (shared_drbd(cluster, a, c), shared_drbd(cluster, b, c));
                    ((x > 0) as usize + (y > 0) as usize, x + y)
                });
            if let Some(c) = third {
                sets.push(vec![a.to_string(), b.to_string(), c.to_string()]);
            }
        }
    }
    for offline in cluster.offline_nodes() {
        let partner = names
            .iter()
            .filter(|n| **n != offline)
            .max_by_key(|n| shared_drbd(cluster, offline, n));
        if let Some(partner) = partner {
            let mut set = vec![offline.to_string(), partner.to_string()];
            set.sort();
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
    }
    sets
}

/// The instances a node-evacuate of `nodes` in `mode` asks for: those whose primary
/// (modes primary, all) or secondary (modes secondary, all) is one of them, in the
/// cluster's index order, as `maintd plan --evacuate` selects them and as the generator
/// lists them in its request.
fn multi_node_instances(cluster: &Cluster, nodes: &[String], mode: &str) -> Vec<String> {
    cluster
        .instances
        .iter()
        .filter(|name| {
            let p = &cluster.placement[*name];
            let on = |n: &String| nodes.contains(n);
            (mode != "secondary" && on(&p.primary))
                || (mode != "primary" && p.secondary.as_ref().is_some_and(on))
        })
        .cloned()
        .collect()
}

#[test]
#[ignore = "needs Ganeti's htools (hbal, hail): apt-get install ganeti-htools-3.0, then cargo test --test htools_parity -- --include-ignored"]
fn multi_node_evacuation_matches_hail() {
    tools::require_oracle();
    tools::require_maintd_plan("--evacuate");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cases: Vec<(ClusterSpec, Vec<String>, &'static str)> = Vec::new();
    for spec in multi_node_specs() {
        let cluster = spec.generate(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let sets = multi_node_sets(&cluster);
        assert!(
            sets.iter().any(|s| s.len() == 3),
            "{spec}: a three-node set sharing DRBD pairs"
        );
        for set in sets {
            for mode in MODES {
                cases.push((spec.clone(), set.clone(), mode));
            }
        }
    }
    let verdicts = run_parallel(&cases, |(spec, nodes, mode)| -> Verdict {
        let joined = nodes.join(",");
        let title = format!("{spec}: evacuate {joined} {mode}");
        let (cluster, request) = spec.generate_evacuation(dir.path(), nodes, mode)?;
        let instances = multi_node_instances(&cluster, nodes, mode);
        let spanning = instances
            .iter()
            .filter(|i| {
                let p = &cluster.placement[*i];
                nodes.contains(&p.primary)
                    && p.secondary.as_ref().is_some_and(|s| nodes.contains(s))
            })
            .count();
        let case = EvacuationCase {
            cluster: &cluster,
            node: joined.clone(),
            mode,
        };
        let reproduce =
            |what: String| format!("{title}: {what}\n reproduce:\n{}", case.reproduction());
        let requested = hail::requested_instances(&request)?;
        if requested != instances {
            return Err(reproduce(format!(
                "the generated request lists {requested:?}, not the instances of the nodes \
                 {instances:?}"
            )));
        }
        let (oracle, info) = hail::run(&cluster.path, &request).map_err(reproduce)?;
        if info != oracle.info() || oracle.moved.len() + oracle.failed.len() != instances.len() {
            return Err(reproduce(format!(
                "hail did not answer for the {} requested instances: {info}",
                instances.len()
            )));
        }
        let answer = maintd::evacuate(&cluster.path, &joined, mode).map_err(reproduce)?;
        let diffs = case.differences(&oracle, &answer);
        if diffs.is_empty() {
            Ok(format!(
                "{title}: {} moved, {} failed, {spanning} spanning the nodes",
                oracle.moved.len(),
                oracle.failed.len()
            ))
        } else {
            Err(reproduce(diffs.join("\n  ")))
        }
    });
    summarize("multi-node evacuation", &verdicts);
}

/// Clusters beyond hbal's reach in a test run: maintd alone, checked for soundness.
fn soundness_cases() -> Vec<(ClusterSpec, BalanceOptions)> {
    let first = BalanceOptions::first;
    vec![
        (spec(200, 4000, 41).offline(2, 2), first(1)),
        (spec(50, 1000, 42).mix(ALL_TEMPLATES), first(15)),
        (
            spec(50, 1000, 43).groups(2).location_tags(),
            BalanceOptions {
                group: Some("group-02"),
                ..first(15)
            },
        ),
        (
            spec(30, 600, 44).offline(1, 2),
            BalanceOptions {
                evac_mode: true,
                ..BalanceOptions::default()
            },
        ),
        (
            spec(30, 600, 45).mix("drbd=1"),
            BalanceOptions {
                no_disk_moves: true,
                ..BalanceOptions::default()
            },
        ),
    ]
}

#[test]
fn maintd_plans_are_sound_beyond_hbal_sizes() {
    tools::require_maintd_plan("--balance");
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = soundness_cases();
    let verdicts = run_parallel(&cases, |(spec, options)| -> Verdict {
        let title = format!("{spec}, maintd {}", options.maintd_args().join(" "));
        let cluster = spec.generate(dir.path())?;
        let plan = maintd::balance(&cluster.path, options).map_err(|e| format!("{title}: {e}"))?;
        let problems = invariants::violations(&cluster, options, &plan);
        if problems.is_empty() {
            Ok(format!("{title}: {} sound steps", plan.steps.len()))
        } else {
            let file = "c.txt";
            Err(format!(
                "{title}:\n  {}\n reproduce:\n  {}\n  maintd {}",
                problems.join("\n  "),
                spec.command(file),
                maintd::balance_args(file, options).join(" ")
            ))
        }
    });
    summarize("soundness", &verdicts);
}
