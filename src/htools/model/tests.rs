use super::*;
use crate::htools::text::parse;

const EXAMPLE: &str = include_str!("../testdata/example.txt");
const C12: &str = include_str!("../testdata/c12.txt");

fn example() -> Cluster {
    parse(EXAMPLE).unwrap()
}

#[test]
fn removing_and_re_adding_a_primary_restores_the_node() {
    let mut c = example();
    let before = c.nodes[0].clone();
    let inst = c.instances[2].clone();
    c.nodes[0].remove_primary(2, &inst);
    assert_eq!(c.nodes[0].state.i_mem, before.state.i_mem - inst.mem);
    assert_eq!(c.nodes[0].state.f_dsk, before.state.f_dsk + inst.dsk);
    c.nodes[0].add_primary(2, &inst, false).unwrap();
    // Only the order of plist changes (re-added instances go to the front).
    assert_eq!(c.nodes[0].state, before.state);
    assert_eq!(c.nodes[0].primaries().next(), Some(2));
}

#[test]
fn exclusion_tags_fail_soft_and_pass_forced() {
    let mut c = example();
    let web1 = c.instances[0].clone();
    let web2 = c.instances[1].clone();
    // web2 is on alpha with web1; adding web2 to delta after web1 conflicts.
    c.nodes[3].add_primary(0, &web1, false).unwrap();
    assert_eq!(
        c.nodes[3].add_primary(1, &web2, false),
        Err(FailMode::FailTags)
    );
    c.nodes[3].add_primary(1, &web2, true).unwrap();
    assert_eq!(c.nodes[3].state.pri_tags_score, 1);
}

#[test]
fn add_primary_checks_run_in_order() {
    let c = example();
    let mut big = c.instances[2].clone();
    big.mem = 70000;
    let ctx = PrimaryContext::default();
    // Hard: no memory left, even forced.
    assert_eq!(
        c.nodes[3].state.add_primary(&big, ctx, true),
        Err(FailMode::FailMem)
    );
    // Hard disk check comes after memory.
    let mut disky = c.instances[2].clone();
    disky.dsk = 600_000;
    assert_eq!(
        c.nodes[3].state.add_primary(&disky, ctx, true),
        Err(FailMode::FailDisk)
    );
    // Soft CPU ratio.
    let mut cpu = c.instances[2].clone();
    cpu.vcpus = 64;
    assert_eq!(
        c.nodes[3].state.add_primary(&cpu, ctx, false),
        Err(FailMode::FailCPU)
    );
    assert!(c.nodes[3].state.add_primary(&cpu, ctx, true).is_ok());
}

#[test]
fn stopped_instance_needs_forthcoming_memory() {
    // Trap 5: a stopped instance uses no memory but the soft check 9 needs f_mem_f - mem > 0.
    let mut c = example();
    let mut stopped = c.instances[6].clone();
    stopped.mem = 63488;
    assert_eq!(stopped.status, InstanceStatus::AdminDown);
    let st = c.nodes[3].state;
    let ctx = PrimaryContext::default();
    assert_eq!(st.add_primary(&stopped, ctx, false), Err(FailMode::FailMem));
    let after = st.add_primary(&stopped, ctx, true).unwrap();
    assert_eq!(after.i_mem, 0);
    assert_eq!(after.u_cpu, st.u_cpu + stopped.vcpus);
    c.nodes[3].state = after;
}

#[test]
fn secondaries_must_be_drbd() {
    let c = example();
    let plain = &c.instances[3];
    assert_eq!(
        c.nodes[3].state.add_secondary(plain, 0, true, false),
        Err(FailMode::FailDisk)
    );
}

#[test]
fn n1_uses_strict_less_at_load_and_less_equal_after_changes() {
    // Trap 3: a node whose free memory equals r_mem passes N+1 at load but fails it
    // once anything is recomputed.
    let input = EXAMPLE.replace("gamma|65536|2048|63488", "gamma|65536|2048|8192");
    let c = parse(&input).unwrap();
    let gamma = &c.nodes[2];
    assert_eq!(gamma.state.r_mem, 8192);
    assert!(!gamma.state.fail_n1, "load-time check is f_mem < r_mem");
    // With positive unaccounted memory, unalloc = reported free memory; removing db1's
    // reservation recomputes N+1 with unalloc <= r_mem.
    let input = EXAMPLE.replace("gamma|65536|2048|63488", "gamma|65536|2048|8193");
    let c = parse(&input).unwrap();
    let g = &c.nodes[2];
    assert_eq!(g.state.x_mem, 63488 - 8193);
    assert_eq!(g.state.unalloc(), 8193);
    let db1 = &c.instances[2];
    let r_after = g.r_mem_without(db1, db1.pnode);
    let removed = g.state.remove_secondary(db1, r_after);
    assert!(!removed.fail_n1);
    assert_eq!(removed.r_mem, 0);
}

#[test]
fn remove_secondary_drops_the_peer_entry() {
    let mut c = example();
    let db1 = c.instances[2].clone();
    assert_eq!(c.nodes[2].peer_mem(0), 8192);
    c.nodes[2].remove_secondary(2, &db1);
    assert_eq!(c.nodes[2].peer_mem(0), 0);
    assert!(c.nodes[2].peers().is_empty());
    assert_eq!(c.nodes[2].state.r_mem, 0);
    assert_eq!(c.nodes[2].secondaries().count(), 0);
}

#[test]
fn example_moves_reach_the_recorded_placements() {
    // The three steps hbal 3.0.2 takes on the example (see
    // `balance::tests::example_takes_hbals_three_steps`).
    let mut c = example();
    c.try_move(0, Move::ReplacePrimary(3), false).unwrap();
    c.try_move(2, Move::FailoverAndReplace(3), false).unwrap();
    c.try_move(1, Move::FailoverAndReplace(2), false).unwrap();
    let used: Vec<(i64, i64, usize, usize)> = c
        .nodes
        .iter()
        .map(|n| {
            (
                n.state.i_mem,
                n.state.f_dsk / 1024,
                n.primaries().len(),
                n.secondaries().len(),
            )
        })
        .collect();
    assert_eq!(
        used,
        vec![
            (9216, 490, 3, 0),
            (4096, 410, 2, 1),
            (8192, 380, 1, 1),
            (4096, 380, 1, 1)
        ]
    );
    assert_eq!(c.nodes[1].state.r_mem, 4096);
    assert_eq!(c.nodes[3].state.r_mem, 8192);
}

#[test]
fn location_and_migration_tags_are_derived() {
    let c = parse(C12).unwrap();
    assert!(c.nodes.iter().all(|n| n.loc.len() == 1));
    let with_secondary = c.instances.iter().find(|i| {
        i.snode
            .is_some_and(|s| c.nodes[s].loc == c.nodes[i.pnode].loc)
    });
    if let Some(i) = with_secondary {
        assert_eq!(i.loc_score, 1);
    }
    let tags = ["htools:migration:hv", "htools:allowmigration:hv:a::hv:b"];
    let mut input = EXAMPLE.replace("htools:iextags:service", &tags.join("\n"));
    input = input.replace("|4||N|0|1|1.0\nbeta", "|4|hv:a|N|0|1|1.0\nbeta");
    input = input.replace("|4||N|0|1|1.0\ngamma", "|4|hv:b|N|0|1|1.0\ngamma");
    let c = parse(&input).unwrap();
    assert!(c.migration_allowed(0, 1), "hv:b accepts hv:a");
    assert!(!c.migration_allowed(1, 0));
    assert!(
        !c.migration_allowed(0, 2),
        "untagged gamma accepts nothing from hv:a"
    );
    assert!(c.migration_allowed(2, 0));
}
