//! Evacuation tests on hand-built clusters. Every expected answer below is what Debian's
//! `hail` 3.0.2 answered for the same cluster (`hail [--ignore-soft-errors] -t FILE
//! REQUEST.json` with a request mirroring the text file).
//!
//! - `basic.txt`: five roomy nodes; n1 holds DRBD (primary d1, secondary of d2),
//!   diskless, plain and file instances; n3 an rbd instance.
//! - `tight.txt`: n2..n5 almost out of memory, n3/n4 out of disk.
//! - `offline.txt`: n1 drained (real data), n5 offline (zeroed data).
//! - `tags.txt`: migration tags (`rack:a` / `rack:b`) and a second group.
//! - `tie.txt`: two identical empty targets.
//! - `example.txt`: a copy of `src/htools/testdata/example.txt`, the example cluster of
//!   the text backend's tests (exclusion tags).

use super::*;
use crate::htools::text;

const BASIC: &str = include_str!("testdata/basic.txt");
const TIGHT: &str = include_str!("testdata/tight.txt");
const OFFLINE: &str = include_str!("testdata/offline.txt");
const TAGS: &str = include_str!("testdata/tags.txt");
const TIE: &str = include_str!("testdata/tie.txt");
const EXAMPLE: &str = include_str!("testdata/example.txt");

fn load(text: &str) -> Cluster {
    text::parse(text).expect("test cluster parses")
}

fn indices(cluster: &Cluster, names: &[&str]) -> Vec<usize> {
    names
        .iter()
        .map(|n| cluster.instance_index(n).expect("test instance exists"))
        .collect()
}

fn run(text: &str, mode: EvacMode, names: &[&str], force: bool) -> EvacResult {
    let cluster = load(text);
    evacuate(&cluster, &indices(&cluster, names), mode, force).expect("valid request")
}

/// `(instance, group, nodes)` of the moved instances.
fn moved(result: &EvacResult) -> Vec<(&str, &str, Vec<&str>)> {
    result
        .moved
        .iter()
        .map(|(i, g, n)| {
            (
                i.as_str(),
                g.as_str(),
                n.iter().map(String::as_str).collect(),
            )
        })
        .collect()
}

fn failed(result: &EvacResult) -> Vec<(&str, &str)> {
    result
        .failed
        .iter()
        .map(|(i, r)| (i.as_str(), r.as_str()))
        .collect()
}

/// Jobs as short codes: `M` migrate, `M>T` migrate to T, `R>T` new secondary T.
fn jobs(result: &EvacResult) -> Vec<Vec<String>> {
    result
        .jobs
        .iter()
        .map(|job| {
            job.iter()
                .map(|op| match &op.body {
                    OpBody::InstanceMigrate {
                        target_node: None, ..
                    } => "M".to_owned(),
                    OpBody::InstanceMigrate {
                        target_node: Some(t),
                        ..
                    } => format!("M>{t}"),
                    OpBody::InstanceReplaceDisks {
                        remote_node: Some(t),
                        ..
                    } => format!("R>{t}"),
                    other => other.op_id().to_owned(),
                })
                .collect()
        })
        .collect()
}

fn codes(list: &[&[&str]]) -> Vec<Vec<String>> {
    list.iter()
        .map(|job| job.iter().map(|c| (*c).to_owned()).collect())
        .collect()
}

const PLAIN: &str = "Instances of type plain cannot be relocated";
const FILE: &str = "Instances of type file cannot be relocated";
const NO_PAIR: &str = "Can't find any good nodes for relocation: no nodes available";

// --- primary-only ---------------------------------------------------------------------

#[test]
fn primary_only_fails_drbd_over_and_moves_diskless_to_the_best_node() {
    let r = run(
        BASIC,
        EvacMode::PrimaryOnly,
        &["d1", "x1", "p1", "f1"],
        false,
    );
    assert_eq!(
        moved(&r),
        vec![
            ("d1", "default", vec!["n2", "n1"]),
            ("x1", "default", vec!["n5"]),
        ]
    );
    assert_eq!(failed(&r), vec![("p1", PLAIN), ("f1", FILE)]);
    assert_eq!(jobs(&r), codes(&[&["M"], &["M>n5"]]));
}

#[test]
fn primary_only_drbd_failure_is_the_bare_fail_mode() {
    // n2 (d1's secondary) has 1 GiB free for a 4 GiB instance: a hard memory failure.
    let r = run(TIGHT, EvacMode::PrimaryOnly, &["d1"], false);
    assert_eq!(failed(&r), vec![("d1", "FailMem")]);
    assert!(r.moved.is_empty() && r.jobs.is_empty());
}

#[test]
fn primary_only_fails_over_even_to_an_offline_secondary() {
    // d5's secondary n5 is offline with zeroed resources (trap 8).
    let r = run(OFFLINE, EvacMode::PrimaryOnly, &["d5"], false);
    assert_eq!(failed(&r), vec![("d5", "FailMem")]);
    // d1's primary n1 is drained: the failover is forced and succeeds.
    let r = run(OFFLINE, EvacMode::PrimaryOnly, &["d1"], false);
    assert_eq!(moved(&r), vec![("d1", "default", vec!["n2", "n1"])]);
    assert_eq!(jobs(&r), codes(&[&["M"]]));
}

#[test]
fn primary_only_honours_migration_tags() {
    let r = run(TAGS, EvacMode::PrimaryOnly, &["d1"], false);
    assert_eq!(failed(&r), vec![("d1", "FailMig")]);
    // Forcing ignores soft checks only; migration tags are hard.
    let r = run(TAGS, EvacMode::PrimaryOnly, &["d1"], true);
    assert_eq!(failed(&r), vec![("d1", "FailMig")]);
}

#[test]
fn one_node_search_lists_every_failing_node() {
    let r = run(TIGHT, EvacMode::PrimaryOnly, &["x1"], false);
    assert_eq!(
        failed(&r),
        vec![(
            "x1",
            "Can't find any good node:  Node n2 failed: FailMem; Node n3 failed: FailMem; \
             Node n4 failed: FailMem; Node n5 failed: FailMem;"
        )]
    );
}

#[test]
fn one_node_search_without_candidates() {
    // x1 and x2 are the only instances of group "other"; evacuating both primaries
    // leaves no node in the group.
    let r = run(TAGS, EvacMode::PrimaryOnly, &["x1", "x2"], false);
    assert_eq!(
        failed(&r),
        vec![
            ("x1", "Can't find any good node: "),
            ("x2", "Can't find any good node: ")
        ]
    );
}

#[test]
fn moves_stay_in_the_instance_group_and_report_it() {
    let r = run(TAGS, EvacMode::All, &["x1"], false);
    assert_eq!(moved(&r), vec![("x1", "other", vec!["m2"])]);
    assert_eq!(jobs(&r), codes(&[&["M>m2"]]));
}

#[test]
fn evacuation_is_sequential_and_soft_checks_can_be_forced() {
    // web1 moves to beta first; web2 shares its exclusion tag and then fails on beta.
    let all = ["web1", "web2", "db1", "cache1", "edge1", "logs1"];
    let r = run(EXAMPLE, EvacMode::PrimaryOnly, &all, false);
    assert_eq!(
        moved(&r),
        vec![
            ("web1", "default", vec!["beta", "alpha"]),
            ("db1", "default", vec!["gamma", "alpha"]),
            ("edge1", "default", vec!["delta"]),
        ]
    );
    assert_eq!(
        failed(&r),
        vec![("web2", "FailTags"), ("cache1", PLAIN), ("logs1", FILE)]
    );
    assert_eq!(jobs(&r), codes(&[&["M"], &["M"], &["M>delta"]]));
    assert_eq!(
        r.info(),
        "3 instances failed to move and 3 were moved successfully"
    );

    let forced = run(EXAMPLE, EvacMode::PrimaryOnly, &all, true);
    assert_eq!(
        moved(&forced),
        vec![
            ("web1", "default", vec!["beta", "alpha"]),
            ("web2", "default", vec!["beta", "alpha"]),
            ("db1", "default", vec!["gamma", "alpha"]),
            ("edge1", "default", vec!["delta"]),
        ]
    );
    assert_eq!(failed(&forced), vec![("cache1", PLAIN), ("logs1", FILE)]);
}

// --- secondary-only -------------------------------------------------------------------

#[test]
fn secondary_only_replaces_the_secondary_with_the_best_node() {
    let r = run(BASIC, EvacMode::SecondaryOnly, &["d2"], false);
    assert_eq!(moved(&r), vec![("d2", "default", vec!["n4", "n5"])]);
    assert_eq!(jobs(&r), codes(&[&["R>n5"]]));
}

#[test]
fn secondary_only_refuses_other_templates() {
    let r = run(
        BASIC,
        EvacMode::SecondaryOnly,
        &["r1", "x1", "p1", "f1"],
        false,
    );
    assert_eq!(
        failed(&r),
        vec![
            (
                "r1",
                "Instances with disk template 'rbd' can't execute change secondary"
            ),
            (
                "x1",
                "Instances with disk template 'diskless' can't execute change secondary"
            ),
            ("p1", PLAIN),
            ("f1", FILE),
        ]
    );
}

#[test]
fn secondary_only_failures_and_forcing() {
    // n3 and n4 have no disk (hard), n5 too little memory for N+1 (soft).
    let r = run(TIGHT, EvacMode::SecondaryOnly, &["d3"], false);
    assert_eq!(
        failed(&r),
        vec![(
            "d3",
            "Can't find any good node:  Node n3 failed: FailDisk; Node n4 failed: FailDisk; \
             Node n5 failed: FailMem;"
        )]
    );
    let r = run(TIGHT, EvacMode::SecondaryOnly, &["d3"], true);
    assert_eq!(moved(&r), vec![("d3", "default", vec!["n1", "n5"])]);
    assert_eq!(jobs(&r), codes(&[&["R>n5"]]));
}

#[test]
fn equal_scores_go_to_the_later_candidate() {
    let cluster = load(TIE);
    let d1 = indices(&cluster, &["d1"]);
    let nodes = cluster.group_nodes(0);
    let score_with = |target: &str| {
        let mut c = cluster.clone();
        let t = c.node_index(target).expect("node exists");
        c.try_move(d1[0], Move::ReplaceSecondary(t), false)
            .expect("move fits");
        score::score(&c, &nodes)
    };
    assert_eq!(score_with("n3").to_bits(), score_with("n4").to_bits());

    let r = run(TIE, EvacMode::SecondaryOnly, &["d1"], false);
    assert_eq!(moved(&r), vec![("d1", "default", vec!["n2", "n4"])]);
    let r = run(TIE, EvacMode::All, &["d1"], false);
    assert_eq!(moved(&r), vec![("d1", "default", vec!["n4", "n3"])]);
    let r = run(TIE, EvacMode::PrimaryOnly, &["x1"], false);
    assert_eq!(moved(&r), vec![("x1", "default", vec!["n4"])]);
}

// --- all ------------------------------------------------------------------------------

#[test]
fn all_searches_primary_secondary_pairs() {
    let r = run(BASIC, EvacMode::All, &["d1", "d2", "x1", "p1", "f1"], false);
    assert_eq!(
        moved(&r),
        vec![
            ("d1", "default", vec!["n5", "n3"]),
            ("d2", "default", vec!["n3", "n5"]),
            ("x1", "default", vec!["n5"]),
        ]
    );
    assert_eq!(failed(&r), vec![("p1", PLAIN), ("f1", FILE)]);
    assert_eq!(
        jobs(&r),
        codes(&[&["R>n5", "M", "R>n3"], &["R>n3", "M", "R>n5"], &["M>n5"]])
    );
}

#[test]
fn all_fails_over_first_when_the_primary_is_offline() {
    let r = run(OFFLINE, EvacMode::All, &["d1"], false);
    assert_eq!(moved(&r), vec![("d1", "default", vec!["n4", "n3"])]);
    assert_eq!(jobs(&r), codes(&[&["M", "R>n4", "M", "R>n3"]]));
}

#[test]
fn all_excludes_every_listed_instance_s_nodes() {
    let all = ["web1", "web2", "db1", "cache1", "edge1", "logs1"];
    let r = run(EXAMPLE, EvacMode::All, &all, false);
    assert_eq!(moved(&r), vec![("edge1", "default", vec!["delta"])]);
    assert_eq!(
        failed(&r),
        vec![
            ("web1", NO_PAIR),
            ("web2", NO_PAIR),
            ("db1", NO_PAIR),
            ("cache1", PLAIN),
            ("logs1", FILE)
        ]
    );
}

#[test]
fn all_reports_the_last_pair_failure() {
    let prefix = "Can't find any good nodes for relocation: Allocation failed: ";
    // The last pair (n5, n4): n5 cannot reserve the memory for N+1 (soft)...
    let r = run(TIGHT, EvacMode::All, &["d3"], false);
    assert_eq!(
        failed(&r),
        vec![(
            "d3",
            format!("{prefix}Changing secondary to new primary: FailMem").as_str()
        )]
    );
    // ...and, forced, cannot run the instance (hard).
    let r = run(TIGHT, EvacMode::All, &["d3"], true);
    assert_eq!(
        failed(&r),
        vec![(
            "d3",
            format!("{prefix}Failing over to new primary: FailMem").as_str()
        )]
    );
    // The offline primary's failover to a zeroed secondary fails before any pair step.
    let r = run(OFFLINE, EvacMode::All, &["d6"], false);
    assert_eq!(
        failed(&r),
        vec![(
            "d6",
            format!("{prefix}Failing over to the secondary: FailMem").as_str()
        )]
    );
}

#[test]
fn an_instance_listed_twice_is_evacuated_twice_from_its_original_place() {
    let r = run(BASIC, EvacMode::All, &["d1", "d1"], false);
    assert_eq!(
        moved(&r),
        vec![
            ("d1", "default", vec!["n5", "n3"]),
            ("d1", "default", vec!["n4", "n5"]),
        ]
    );
    assert_eq!(
        jobs(&r),
        codes(&[&["R>n5", "M", "R>n3"], &["R>n4", "M", "R>n5"]])
    );
}

// --- selection, state, rendering, errors ------------------------------------------------

#[test]
fn instances_on_nodes_follow_the_mode_in_index_order() {
    let cluster = load(BASIC);
    let n1 = cluster.node_index("n1").expect("n1");
    let names = |mode| {
        instances_on_nodes(&cluster, &[n1], mode)
            .into_iter()
            .map(|i| cluster.instances[i].name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(EvacMode::PrimaryOnly), ["d1", "x1", "p1", "f1"]);
    assert_eq!(names(EvacMode::SecondaryOnly), ["d2"]);
    assert_eq!(names(EvacMode::All), ["d1", "d2", "x1", "p1", "f1"]);
}

#[test]
fn evacuate_nodes_selects_by_name() {
    let cluster = load(BASIC);
    let by_name = evacuate_nodes(&cluster, &["n1"], EvacMode::All, false).expect("n1 exists");
    let direct = run(BASIC, EvacMode::All, &["d1", "d2", "x1", "p1", "f1"], false);
    assert_eq!(by_name, direct);
    assert_eq!(
        evacuate_nodes(&cluster, &["n1", "nope"], EvacMode::All, false),
        Err(EvacError::UnknownNode("nope".into()))
    );
}

#[test]
fn evacuate_in_place_leaves_the_final_state() {
    let original = load(BASIC);
    let mut cluster = original.clone();
    let list = indices(&cluster, &["d1", "x1"]);
    let r = evacuate(&cluster, &list, EvacMode::PrimaryOnly, false).expect("valid");
    assert_eq!(cluster, original, "evacuate works on a copy");
    let r2 = evacuate_in_place(&mut cluster, &list, EvacMode::PrimaryOnly, false).expect("valid");
    assert_eq!(r, r2);
    let node = |name: &str| cluster.node_index(name).expect("node");
    let d1 = &cluster.instances[list[0]];
    assert_eq!((d1.pnode, d1.snode), (node("n2"), Some(node("n1"))));
    assert_eq!(cluster.instances[list[1]].pnode, node("n5"));
    assert_eq!(cluster.nodes[node("n1")].primaries().count(), 2); // p1, f1
}

#[test]
fn failures_change_nothing() {
    let original = load(TIGHT);
    let mut cluster = original.clone();
    let list = indices(&cluster, &["d1", "x1", "d3"]);
    let r = evacuate_in_place(&mut cluster, &list, EvacMode::All, false).expect("valid");
    assert!(r.moved.is_empty());
    assert_eq!(r.failed.len(), 3);
    assert_eq!(cluster, original);
}

#[test]
fn bad_indices_are_errors() {
    let cluster = load(BASIC);
    assert_eq!(
        evacuate(&cluster, &[0, 99], EvacMode::All, false),
        Err(EvacError::InstanceIndex(99))
    );
    assert_eq!(
        evacuate(&cluster, &[], EvacMode::All, false),
        Ok(EvacResult::default())
    );
}

#[test]
fn modes_parse_from_hail_and_short_names() {
    for (text, mode) in [
        ("primary", EvacMode::PrimaryOnly),
        ("primary-only", EvacMode::PrimaryOnly),
        ("secondary", EvacMode::SecondaryOnly),
        ("secondary-only", EvacMode::SecondaryOnly),
        ("all", EvacMode::All),
    ] {
        assert_eq!(text.parse::<EvacMode>(), Ok(mode));
    }
    assert_eq!(EvacMode::SecondaryOnly.to_string(), "secondary-only");
    assert_eq!(
        "both".parse::<EvacMode>(),
        Err(EvacError::UnknownMode("both".into()))
    );
}

#[test]
fn json_is_hail_s_answer() {
    let r = run(
        BASIC,
        EvacMode::PrimaryOnly,
        &["d1", "x1", "p1", "f1"],
        false,
    );
    // hail's `result` for this request, keyed.
    let hail: Value = serde_json::from_str(
        r#"{"moved": [["d1", "default", ["n2", "n1"]], ["x1", "default", ["n5"]]],
            "failed": [["p1", "Instances of type plain cannot be relocated"],
                       ["f1", "Instances of type file cannot be relocated"]],
            "jobs": [[{"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "d1",
                       "allow_runtime_changes": false, "ignore_ipolicy": false,
                       "cleanup": false, "allow_failover": true, "ignore_hvversions": true}],
                     [{"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "x1",
                       "target_node": "n5", "allow_runtime_changes": false,
                       "ignore_ipolicy": false, "cleanup": false, "allow_failover": true,
                       "ignore_hvversions": true}]]}"#,
    )
    .expect("valid JSON");
    assert_eq!(r.to_json(), hail);

    let r = run(BASIC, EvacMode::SecondaryOnly, &["d2"], false);
    assert_eq!(
        r.to_json()["jobs"][0][0],
        serde_json::json!({"OP_ID": "OP_INSTANCE_REPLACE_DISKS", "instance_name": "d2",
                           "early_release": false, "ignore_ipolicy": false,
                           "mode": "replace_new_secondary", "disks": [],
                           "remote_node": "n5"})
    );
}

#[test]
fn jobs_are_submittable_opcodes() {
    let r = run(BASIC, EvacMode::All, &["d1"], false);
    let ops = &r.jobs[0];
    assert!(ops.iter().all(|op| op.reason.is_empty()));
    assert_eq!(
        ops[1].body,
        OpBody::InstanceMigrate {
            instance_name: "d1".into(),
            mode: None,
            target_node: None,
            allow_failover: true,
            ignore_hvversions: true,
            allow_runtime_changes: false,
            cleanup: false,
        }
    );
    assert_eq!(ops[0].body, OpBody::new_secondary("d1", "n5"));
}

#[test]
fn text_report_lists_moves_failures_and_the_summary() {
    let r = run(BASIC, EvacMode::All, &["d1", "p1"], false);
    assert_eq!(
        r.to_text(),
        "d1 => n5:n3 (group default)\n\
         \x20   replace-disks d1 new secondary n5\n\
         \x20   migrate d1\n\
         \x20   replace-disks d1 new secondary n3\n\
         p1 failed: Instances of type plain cannot be relocated\n\
         1 instances failed to move and 1 were moved successfully\n"
    );
}

/// Evacuates every node of generated clusters one at a time, screened and unscreened:
/// the same moves, failures, jobs and final cluster (the screen only skips exact scores
/// that cannot win, ties included: the empty nodes are identical).
#[test]
fn screened_target_searches_decide_as_scoring_every_target() {
    let mut compared = 0;
    for (nodes, instances, seed) in [(8, 60, 1), (12, 150, 2), (20, 300, 3), (30, 500, 4)] {
        let mut spec = crate::htools::generate::Spec::new(nodes, instances, seed);
        spec.empty_fraction = 0.2;
        let generated = spec.generate().expect("generated cluster");
        let cluster = generated.cluster().expect("its model");
        for node in 0..cluster.nodes.len() {
            for mode in [EvacMode::PrimaryOnly, EvacMode::SecondaryOnly] {
                for force in [false, true] {
                    let list = instances_on_nodes(&cluster, &[node], mode);
                    let mut screened = cluster.clone();
                    let mut exact = cluster.clone();
                    let a = evacuate_in_place_excluding(&mut screened, &list, mode, force, &[]);
                    let b = evacuate_unscreened(&mut exact, &list, mode, force);
                    assert_eq!(a, b, "{nodes}/{instances} seed {seed}: node {node} {mode}");
                    assert!(screened == exact, "{nodes}/{instances}: node {node} {mode}");
                    compared += list.len();
                }
            }
        }
    }
    assert!(
        compared > 1000,
        "only {compared} instance evacuations compared"
    );
}
