//! Bound-driven search for the best move of a balancing step.
//!
//! A candidate move changes at most three nodes: the instance's old primary and
//! secondary (the *side* of the move, which depends on the instance and the move kind)
//! and the target (which, for a given instance class, depends only on the target). So
//! its change of every score component is the sum of a side part and a target part.
//! For the sums that is exactly linear. For a standard deviation lane with current
//! variance `V` the candidate's variance is `V + Π − a²/n²`, where
//! `Π = Σ ((x' − m)² − (x − m)²)/n` over the changed nodes (`m` the mean) is again a
//! sum of a side and a target part, and `a` the change of the lane's sum. A second-order
//! expansion of `√` with a rigorous curvature bound (or, where the variance is too small
//! for that, a chord of `√`), together with `(Πs + Πt)² ≤ 2Πs² + 2Πt²`, gives a lower
//! bound of the candidate's score that is a constant plus a side term plus a target term.
//!
//! Side terms are computed per instance and move kind from cached per-node feature
//! changes (recomputed only for instances on nodes a step touched), target terms per
//! instance class and target (recomputed only for touched targets); each step only
//! re-weights them with that step's coefficients. Candidates whose bound exceeds the
//! best estimate so far (plus the screening margin) cannot be kept by the screen and are
//! skipped; the rest are simulated with the model's primitives and estimated exactly as
//! the exhaustive screen does, and the kept candidates are confirmed with exact scores in
//! hbal's order. The set of candidates confirmed is therefore the exhaustive screen's,
//! and so are the decisions.

use std::collections::HashMap;

use super::{
    fill_scratch, screen_disk_move, Candidate, Delta, Scratch, Screen, StepContext, SCREEN_EPSILON,
    SD, SUMS,
};
use crate::htools::model::{
    Cluster, DiskTemplate, Instance, InstanceStatus, MirrorType, Move, NodeState, PrimaryContext,
};
use crate::htools::score::{self, COMPONENTS};

use super::BalanceOptions;

const LANES: usize = SD.len();
const NSUMS: usize = SUMS.len();
/// The standard-deviation lane of `reserved_mem_cv`: the only lane whose value depends on
/// the peers entry a node holds for the instance's (new) primary.
const PREM: usize = 2;
/// Slots of a DRBD instance: failover, then the four disk moves in hbal's order.
const DRBD_SLOTS: usize = 5;
/// Above this many instance classes the per-class target tables cost more than they
/// save; the exhaustive screen is used instead.
const MAX_CLASSES: usize = 512;

/// Change of the per-node values that enter the score, summed over the nodes a part of
/// a move changes: per standard-deviation lane Σ(x' − x) and Σ(x'² − x²), per sum the
/// change of the sum, and a lower bound of the change of the location-exclusion
/// component.
#[derive(Debug, Clone, Copy)]
struct Feat {
    dx: [f64; LANES],
    dx2: [f64; LANES],
    sums: [f64; NSUMS],
    map: f64,
}

impl Feat {
    const ZERO: Feat = Feat {
        dx: [0.0; LANES],
        dx2: [0.0; LANES],
        sums: [0.0; NSUMS],
        map: 0.0,
    };

    /// Adds the change of a node from values `old` to state `new`.
    fn add_node(&mut self, old: &[f64; COMPONENTS], online: bool, new: &NodeState) {
        let new = score::node_values(new);
        if !online {
            self.sums[4] += new[4] - old[4];
            self.sums[5] += new[5] - old[5];
            return;
        }
        for (k, &c) in SD.iter().enumerate() {
            let d = new[c] - old[c];
            self.dx[k] += d;
            self.dx2[k] += d * (new[c] + old[c]);
        }
        for (k, &c) in SUMS[..4].iter().enumerate() {
            self.sums[k] += new[c] - old[c];
        }
    }
}

/// The values `[lo, hi]` a node's `p_rem` may take when a peers entry of unknown size
/// (0 when the features were computed) adds to its reservation.
type Relax = Option<(f64, f64)>;

/// The `p_rem` range of a node that gets a secondary with reservation `need` on top of
/// reservation `r_mem`, given a peers entry between 0 and `r_mem`.
fn prem_relax(n: &NodeState, need: i64, online: bool) -> Relax {
    if !online || need <= 0 {
        return None;
    }
    let lo = n.r_mem.max(need) as f64 / n.t_mem;
    let hi = (n.r_mem + need) as f64 / n.t_mem;
    (hi > lo).then_some((lo, hi))
}

/// One side of one instance's moves.
#[derive(Debug, Clone, Copy)]
struct Side {
    feat: Feat,
    relax: Relax,
    ok: bool,
}

impl Side {
    const NONE: Side = Side {
        feat: Feat::ZERO,
        relax: None,
        ok: false,
    };
}

/// What kind of target a slot's moves need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    /// No target (failover).
    None,
    /// The target gets the instance as primary (with this `force`).
    Primary(bool),
    /// The target gets the instance as secondary (with this `force`).
    Secondary(bool),
}

/// The cached sides of one instance.
#[derive(Debug, Clone, Copy)]
struct InstSides {
    /// Index of the first slot in [`Engine::sides`].
    first: usize,
    /// Number of slots: 0 (never moved), 1 (`fa:T`) or [`DRBD_SLOTS`].
    count: usize,
    /// Primary-add class.
    pri_class: usize,
    /// Secondary-add class (DRBD only).
    sec_class: usize,
    /// The target kind of each slot (refreshed with the sides).
    kinds: [TargetKind; DRBD_SLOTS],
}

/// One target's entry in a class table.
#[derive(Debug, Clone, Copy)]
struct TargetEntry {
    feat: Feat,
    relax: Relax,
    ok_strict: bool,
    ok_force: bool,
}

/// A class of instances that every target treats alike: the same inputs to
/// `add_primary` (or `add_secondary`) apart from tags and location.
struct Class {
    /// An instance of the class.
    rep: usize,
    secondary: bool,
    /// Per target position.
    entries: Vec<TargetEntry>,
    /// This step's target terms, strict and forced (infinite where the add fails).
    lb: [Vec<f64>; 2],
    /// The three smallest terms and their target positions, strict and forced.
    best: [[(f64, usize); 3]; 2],
}

/// The inputs of `NodeState::add_primary` an instance contributes (tags and location
/// aside), as a hashable key.
fn primary_key(inst: &Instance) -> (bool, u8, i64, i64, i64, i64, [u64; 4]) {
    (
        inst.dt.local_storage(),
        status_code(inst.status),
        inst.mem,
        inst.dsk,
        inst.spindle_use,
        inst.vcpus,
        inst.util.map(f64::to_bits),
    )
}

/// The inputs of `NodeState::add_secondary` an instance contributes.
fn secondary_key(inst: &Instance) -> (bool, bool, bool, i64, i64, i64, u64) {
    (
        inst.dt == DiskTemplate::Drbd,
        inst.dt.local_storage(),
        inst.uses_sec_mem(),
        inst.mem,
        inst.dsk,
        inst.spindle_use,
        inst.util[2].to_bits(),
    )
}

fn status_code(s: InstanceStatus) -> u8 {
    match s {
        InstanceStatus::Running => 0,
        InstanceStatus::ErrorUp => 1,
        InstanceStatus::AdminDown => 2,
        InstanceStatus::ErrorDown => 3,
        InstanceStatus::UserDown => 4,
        InstanceStatus::AdminOffline => 5,
        InstanceStatus::ErrorNodeDown => 6,
        InstanceStatus::ErrorNodeOffline => 7,
        InstanceStatus::ErrorWrongNode => 8,
    }
}

/// This step's coefficients of the lower bound and of the surrogate estimate.
struct Bounds {
    /// Lane means.
    m: [f64; LANES],
    /// Lane variances (as the estimate computes them for an unchanged cluster).
    v0: [f64; LANES],
    inv_n: f64,
    /// Lane weights.
    w: [f64; LANES],
    /// A side or target term of lane `k` is `Π·(a1 − a2·Π)`.
    a1: [f64; LANES],
    a2: [f64; LANES],
    sum_w: [f64; NSUMS],
    sum_base: [f64; NSUMS],
    map_w: f64,
    map_value: f64,
    /// The constant part of the bound.
    base: f64,
    /// Allowance for rounding in the bound and the surrogate.
    margin: f64,
}

impl Bounds {
    /// The coefficients for the cluster of `ctx`, where `unit[k]` bounds the change of a
    /// lane's value on one node by one move. `None` when the lanes are not all finite.
    fn new(ctx: &StepContext, unit: &[f64; LANES]) -> Option<Bounds> {
        let inv_n = ctx.inv_online;
        if !inv_n.is_finite() {
            return None;
        }
        let online: Vec<usize> = ctx
            .group_nodes
            .iter()
            .copied()
            .filter(|&i| ctx.in_group_online[i])
            .collect();
        let mut b = Bounds {
            m: [0.0; LANES],
            v0: [0.0; LANES],
            inv_n,
            w: ctx.sd_weight,
            a1: [0.0; LANES],
            a2: [0.0; LANES],
            sum_w: ctx.sum_weight,
            sum_base: ctx.sum_base,
            map_w: ctx.map_weight,
            map_value: ctx.map_value,
            base: 0.0,
            margin: 0.0,
        };
        let mut base = ctx.map_weight * ctx.map_value;
        for j in 0..NSUMS {
            base += ctx.sum_weight[j] * ctx.sum_base[j];
        }
        for (k, &c) in SD.iter().enumerate() {
            let dev = ctx.sd_s1[k] * inv_n;
            let m = ctx.center[c] + dev;
            let v0 = ctx.sd_s2[k] * inv_n - dev * dev;
            let r = online
                .iter()
                .map(|&i| (ctx.values[i][c] - m).abs())
                .fold(0.0f64, f64::max);
            if !(m.is_finite() && v0.is_finite() && r.is_finite() && unit[k].is_finite()) {
                return None;
            }
            b.m[k] = m;
            b.v0[k] = v0;
            let w = ctx.sd_weight[k];
            // One node changes by at most δ, all of a move's nodes by at most 2δ
            // together (a move relocates one primary and/or one secondary).
            let delta = unit[k] * (1.0 + 1e-6);
            let total = 2.0 * delta;
            // |Π| ≤ Σ|x' − x|·(|x' − m| + |x − m|)/n, and |a| ≤ total.
            let d = total * (2.0 * r + delta) * inv_n * (1.0 + 1e-6);
            let e = total * total * inv_n * inv_n;
            let v = v0.max(0.0);
            if d == 0.0 {
                // No move changes this lane.
                base += w * v.sqrt();
            } else if v > 4.0 * (d + e) {
                // √(v + Π − a²/n²) ≥ √(v + Π) − e/(2√(v − d − e)), and
                // √(v + Π) ≥ √v + Π/(2√v) − Π²/(8(v − d)^1.5) for |Π| ≤ d.
                let gamma = 1.0 / (8.0 * (v - d).powf(1.5));
                base += w * (v.sqrt() - e / (2.0 * (v - d - e).sqrt()));
                b.a1[k] = w / (2.0 * v.sqrt());
                b.a2[k] = 2.0 * w * gamma;
            } else {
                // The chord of √ over [lo, hi] lies below it there.
                let lo = (v - d - e).max(0.0);
                let hi = v + d;
                let beta = (hi.sqrt() - lo.sqrt()) / (hi - lo);
                let alpha = lo.sqrt() - beta * lo;
                base += w * (alpha + beta * (v - e));
                b.a1[k] = w * beta;
            }
        }
        if !base.is_finite() {
            return None;
        }
        b.base = base;
        b.margin = 1e-9 * (1.0 + ctx.cur.abs() + base.abs());
        Some(b)
    }

    #[inline(always)]
    fn pi(&self, k: usize, dx: f64, dx2: f64) -> f64 {
        (dx2 - 2.0 * self.m[k] * dx) * self.inv_n
    }

    #[inline(always)]
    fn h(&self, k: usize, p: f64) -> f64 {
        p * (self.a1[k] - self.a2[k] * p)
    }

    /// The term of a side or a target in the lower bound.
    #[allow(clippy::needless_range_loop)]
    fn term(&self, f: &Feat, relax: Relax) -> f64 {
        let mut lanes = [0.0; LANES];
        for k in 0..LANES {
            lanes[k] = self.h(k, self.pi(k, f.dx[k], f.dx2[k]));
        }
        let mut total = self.map_w * f.map;
        for j in 0..NSUMS {
            total += self.sum_w[j] * f.sums[j];
        }
        total += lanes.iter().sum::<f64>();
        if let Some((lo, hi)) = relax {
            // The node's p_rem is anywhere in [lo, hi] (the features hold lo); the term
            // is concave in Π, so its minimum is at an end of Π's range.
            let k = PREM;
            let p = self.pi(k, f.dx[k], f.dx2[k]);
            let m = self.m[k];
            let g = |x: f64| (x - m) * (x - m);
            let g_lo = g(lo);
            let p_min = p + (g(m.clamp(lo, hi)) - g_lo) * self.inv_n;
            let p_max = p + (g_lo.max(g(hi)) - g_lo) * self.inv_n;
            total += self.h(k, p_min).min(self.h(k, p_max)) - lanes[k];
        }
        total
    }

    /// The estimated score of the candidate made of side `s` and target `t` (or no
    /// target), computed like [`StepContext::estimate`] from the features: exact up to
    /// rounding when neither part depends on a peers entry, and otherwise a lower bound
    /// (tags, location and the location-exclusion map only raise the score).
    #[allow(clippy::needless_range_loop)]
    fn surrogate(&self, s: &Feat, t: Option<&Feat>) -> f64 {
        let t = t.unwrap_or(&Feat::ZERO);
        let mut sd = [0.0; LANES];
        for k in 0..LANES {
            let a = s.dx[k] + t.dx[k];
            let p = self.pi(k, a, s.dx2[k] + t.dx2[k]);
            let var = self.v0[k] + p - a * a * self.inv_n * self.inv_n;
            sd[k] = var.max(0.0).sqrt() * self.w[k];
        }
        let mut total = self.map_w * (self.map_value + s.map + t.map);
        for j in 0..NSUMS {
            total += self.sum_w[j] * (self.sum_base[j] + s.sums[j] + t.sums[j]);
        }
        total + sd.iter().sum::<f64>()
    }
}

impl Class {
    /// Recomputes the entry of target position `pos` (node `t`).
    fn refresh_target(&mut self, cluster: &Cluster, pos: usize, t: usize) {
        let inst = &cluster.instances[self.rep];
        let node = &cluster.nodes[t];
        let old = score::node_values(&node.state);
        let mut entry = TargetEntry {
            feat: Feat::ZERO,
            relax: None,
            ok_strict: false,
            ok_force: false,
        };
        let new = if self.secondary {
            entry.ok_strict = node.state.add_secondary(inst, 0, false, false).is_ok();
            let need = if inst.uses_sec_mem() { inst.mem } else { 0 };
            entry.relax = prem_relax(&node.state, need, true);
            node.state.add_secondary(inst, 0, true, false)
        } else {
            let ctx = PrimaryContext::default();
            entry.ok_strict = node.state.add_primary(inst, ctx, false).is_ok();
            node.state.add_primary(inst, ctx, true)
        };
        if let Ok(new) = new {
            entry.ok_force = true;
            entry.feat.add_node(&old, true, &new);
        }
        self.entries[pos] = entry;
    }

    /// This step's target terms and their three smallest values.
    fn refresh_terms(&mut self, b: &Bounds) {
        let mut best = [[(f64::INFINITY, usize::MAX); 3]; 2];
        for (pos, e) in self.entries.iter().enumerate() {
            let term = if e.ok_force {
                b.term(&e.feat, e.relax)
            } else {
                f64::INFINITY
            };
            let term = if term.is_nan() {
                f64::NEG_INFINITY
            } else {
                term
            };
            let strict = if e.ok_strict { term } else { f64::INFINITY };
            self.lb[0][pos] = strict;
            self.lb[1][pos] = term;
            for (f, v) in [strict, term].into_iter().enumerate() {
                let top = &mut best[f];
                if v < top[2].0 {
                    top[2] = (v, pos);
                    if top[2].0 < top[1].0 {
                        top.swap(1, 2);
                        if top[1].0 < top[0].0 {
                            top.swap(0, 1);
                        }
                    }
                }
            }
        }
        self.best = best;
    }

    /// The smallest target term with `force` over targets other than `p` and `s`.
    fn min_term(&self, force: bool, targets: &[usize], p: usize, s: Option<usize>) -> f64 {
        self.best[usize::from(force)]
            .iter()
            .find(|(_, pos)| *pos == usize::MAX || (targets[*pos] != p && Some(targets[*pos]) != s))
            .map_or(f64::INFINITY, |(v, _)| *v)
    }
}

/// A side whose bound does not rule its moves out.
#[derive(Debug, Clone, Copy)]
struct Live {
    bound: f64,
    term: f64,
    instance: usize,
    slot: usize,
}

/// The balancing engine of one group: the cached sides and class tables, kept in step
/// with the cluster by [`Engine::update`] after every applied move.
pub(super) struct Engine {
    group: usize,
    /// Online nodes of the group that may receive instances, ascending.
    targets: Vec<usize>,
    /// Position of each node in `targets`.
    target_pos: Vec<Option<usize>>,
    in_group_online: Vec<bool>,
    allowed: Vec<bool>,
    insts: Vec<InstSides>,
    sides: Vec<Side>,
    classes: Vec<Class>,
    /// Bound of the change of each lane's value on one node by one move.
    unit: [f64; LANES],
    scratch: Scratch,
    has_location: bool,
}

impl Engine {
    /// The engine for `group`, or `None` when the bounds cannot be used (non-finite
    /// values, too many instance classes): then the exhaustive screen decides.
    pub(super) fn new(cluster: &Cluster, group: usize, opts: &BalanceOptions) -> Option<Engine> {
        let n = cluster.nodes.len();
        let mut allowed = vec![opts.allowed_nodes.is_none(); n];
        for &a in opts.allowed_nodes.iter().flatten() {
            if a < n {
                allowed[a] = true;
            }
        }
        let mut in_group_online = vec![false; n];
        let mut targets = Vec::new();
        let mut target_pos = vec![None; n];
        for (i, node) in cluster.nodes.iter().enumerate() {
            if node.data.group == group && !node.offline() {
                in_group_online[i] = true;
                if allowed[i] {
                    target_pos[i] = Some(targets.len());
                    targets.push(i);
                }
            }
        }
        let mut engine = Engine {
            group,
            targets,
            target_pos,
            in_group_online,
            allowed,
            insts: Vec::with_capacity(cluster.instances.len()),
            sides: Vec::new(),
            classes: Vec::new(),
            unit: [0.0; LANES],
            scratch: Scratch::new(n),
            has_location: !cluster.tags.location_prefixes.is_empty(),
        };
        // Instance classes and side slots.
        let mut pri_classes: HashMap<_, usize> = HashMap::new();
        let mut sec_classes: HashMap<_, usize> = HashMap::new();
        let (mut max_mem, mut max_dsk, mut max_cpu, mut max_su) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        let mut max_util = [0.0f64; 4];
        for (idx, inst) in cluster.instances.iter().enumerate() {
            let mirror = inst.dt.mirror();
            let candidate = inst.movable
                && inst.auto_balance
                && mirror != MirrorType::None
                && cluster.nodes[inst.pnode].data.group == group
                && (mirror == MirrorType::External || inst.snode.is_some());
            let mut rec = InstSides {
                first: engine.sides.len(),
                count: 0,
                pri_class: 0,
                sec_class: 0,
                kinds: [TargetKind::None; DRBD_SLOTS],
            };
            if candidate {
                max_mem = max_mem.max((inst.mem as f64).abs());
                max_dsk = max_dsk.max((inst.dsk as f64).abs());
                max_cpu = max_cpu.max((inst.vcpus as f64).abs());
                max_su = max_su.max((inst.spindle_use as f64).abs());
                for (m, u) in max_util.iter_mut().zip(inst.util) {
                    *m = m.max(u.abs());
                }
                let next = engine.classes.len();
                rec.pri_class = *pri_classes.entry(primary_key(inst)).or_insert_with(|| {
                    engine
                        .classes
                        .push(Class::new(idx, false, engine.targets.len()));
                    next
                });
                rec.count = 1;
                if mirror == MirrorType::Internal {
                    let next = engine.classes.len();
                    rec.sec_class = *sec_classes.entry(secondary_key(inst)).or_insert_with(|| {
                        engine
                            .classes
                            .push(Class::new(idx, true, engine.targets.len()));
                        next
                    });
                    rec.count = DRBD_SLOTS;
                }
                if engine.classes.len() > MAX_CLASSES {
                    return None;
                }
                engine
                    .sides
                    .extend(std::iter::repeat_n(Side::NONE, rec.count));
            }
            engine.insts.push(rec);
        }
        // Per-node bounds of a lane's change: resource over the smallest denominator.
        let (mut min_mem, mut min_dsk, mut min_cpu, mut min_spindles) =
            (f64::INFINITY, f64::INFINITY, f64::INFINITY, f64::INFINITY);
        for (i, node) in cluster.nodes.iter().enumerate() {
            if !engine.in_group_online[i] {
                continue;
            }
            let st = &node.state;
            if st.t_dsk < 0.0 {
                return None;
            }
            min_mem = min_mem.min(st.t_mem);
            if st.t_dsk > 0.0 {
                min_dsk = min_dsk.min(st.t_dsk);
            }
            min_cpu = min_cpu.min(st.t_cpu * st.cpu_speed);
            min_spindles = min_spindles.min(st.hi_spindles);
        }
        let ratio = |num: f64, den: f64| if num == 0.0 { 0.0 } else { num / den };
        let mem = ratio(max_mem, min_mem);
        let dsk = ratio(max_dsk, min_dsk);
        let cpu = ratio(max_cpu, min_cpu);
        let spindles = ratio(max_su, min_spindles);
        engine.unit = [
            mem,
            dsk,
            mem,
            cpu,
            max_util[0],
            max_util[1],
            max_util[2],
            max_util[3],
            spindles,
            mem,
            dsk,
            cpu,
            spindles,
        ];
        if engine.unit.iter().any(|u| !u.is_finite() || *u < 0.0) {
            return None;
        }
        for c in 0..engine.classes.len() {
            for pos in 0..engine.targets.len() {
                let t = engine.targets[pos];
                engine.classes[c].refresh_target(cluster, pos, t);
            }
        }
        for idx in 0..cluster.instances.len() {
            engine.refresh_sides(cluster, idx, opts);
        }
        Some(engine)
    }

    /// Keeps the caches in step after a move changed nodes `touched`.
    pub(super) fn update(&mut self, cluster: &Cluster, touched: &[usize], opts: &BalanceOptions) {
        let mut instances = Vec::new();
        for &u in touched {
            if let Some(pos) = self.target_pos[u] {
                for class in &mut self.classes {
                    class.refresh_target(cluster, pos, u);
                }
            }
            instances.extend(cluster.nodes[u].primaries());
            instances.extend(cluster.nodes[u].secondaries());
        }
        instances.sort_unstable();
        instances.dedup();
        for idx in instances {
            self.refresh_sides(cluster, idx, opts);
        }
    }

    /// Whether instance `idx` is a balancing candidate now (as `StepContext::movable`).
    fn movable(&self, cluster: &Cluster, idx: usize, opts: &BalanceOptions) -> bool {
        let inst = &cluster.instances[idx];
        if !inst.movable || !inst.auto_balance || cluster.nodes[inst.pnode].data.group != self.group
        {
            return false;
        }
        if opts.evac_mode && !inst.all_nodes().any(|n| cluster.nodes[n].offline()) {
            return false;
        }
        inst.all_nodes().all(|n| self.allowed[n])
    }

    fn migration_ok(cluster: &Cluster, from: usize, to: usize) -> bool {
        cluster.tags.migration_prefixes.is_empty() || cluster.migration_allowed(from, to)
    }

    /// Recomputes the sides of instance `idx` from the current node states.
    fn refresh_sides(&mut self, cluster: &Cluster, idx: usize, opts: &BalanceOptions) {
        let rec = self.insts[idx];
        if rec.count == 0 {
            return;
        }
        let slots = rec.first..rec.first + rec.count;
        self.sides[slots.clone()].fill(Side::NONE);
        let mut kinds = [TargetKind::None; DRBD_SLOTS];
        if !self.movable(cluster, idx, opts) {
            self.insts[idx].kinds = kinds;
            return;
        }
        let inst = &cluster.instances[idx];
        let p = inst.pnode;
        let pn = &cluster.nodes[p];
        let p_on = self.in_group_online[p];
        let vp = score::node_values(&pn.state);
        let f_p = pn.offline() || opts.force;
        let p_minus = pn
            .state
            .remove_primary(inst, pn.primary_context(inst, inst.loc_score, false));
        // Each key of the location-exclusion map the instance leaves loses at most one.
        let map_leave = if self.has_location && p_on {
            -((pn.loc.len() * inst.excl.len()) as f64)
        } else {
            0.0
        };
        let mut out = [Side::NONE; DRBD_SLOTS];
        if inst.dt.mirror() == MirrorType::External {
            if opts.instance_moves {
                let mut feat = Feat::ZERO;
                feat.add_node(&vp, p_on, &p_minus);
                feat.map = map_leave;
                out[0] = Side {
                    feat,
                    relax: None,
                    ok: true,
                };
                kinds[0] = TargetKind::Primary(f_p);
            }
            self.sides[rec.first] = out[0];
            self.insts[idx].kinds = kinds;
            return;
        }
        let Some(s) = inst.snode else { return };
        let sn = &cluster.nodes[s];
        let s_on = self.in_group_online[s];
        let vs = score::node_values(&sn.state);
        let f_s = sn.offline() || opts.force;
        let use_sec = s_on && opts.instance_moves;
        let need = if inst.uses_sec_mem() { inst.mem } else { 0 };
        let s_minus = sn.state.remove_secondary(inst, sn.r_mem_without(inst, p));
        let side = |parts: &[(&[f64; COMPONENTS], bool, &NodeState)], relax: Relax, map: f64| {
            let mut feat = Feat::ZERO;
            for (old, online, new) in parts {
                feat.add_node(old, *online, new);
            }
            feat.map = map;
            Side {
                feat,
                relax,
                ok: true,
            }
        };
        let mig_ps = Self::migration_ok(cluster, p, s);
        // Failover: no target, fully determined.
        if use_sec && mig_ps {
            let s_ctx = sn.primary_context(inst, inst.loc_score, true);
            let failover = s_minus.add_primary(inst, s_ctx, f_p).and_then(|s_new| {
                p_minus
                    .add_secondary(inst, pn.peer_mem(s), f_p, pn.offline())
                    .map(|p_new| (s_new, p_new))
            });
            if let Ok((s_new, p_new)) = failover {
                out[0] = side(&[(&vs, s_on, &s_new), (&vp, p_on, &p_new)], None, map_leave);
            }
        }
        let disk_kinds: &[usize] = if !opts.disk_moves {
            &[]
        } else if !opts.instance_moves || (opts.restricted_migration && !pn.offline()) {
            &[0]
        } else if use_sec && !opts.restricted_migration {
            &[0, 1, 2, 3]
        } else if use_sec {
            &[0, 1, 3]
        } else {
            &[0, 1]
        };
        for &kind in disk_kinds {
            let slot = kind + 1;
            match kind {
                0 => {
                    // r:T — the primary re-added (its location score only raises it).
                    kinds[slot] = TargetKind::Secondary(f_s);
                    let readd = pn.primary_context(inst, 0, false);
                    if let Ok(p_new) = p_minus.add_primary(inst, readd, true) {
                        out[slot] = side(&[(&vs, s_on, &s_minus), (&vp, p_on, &p_new)], None, 0.0);
                    }
                }
                1 => {
                    // r:T f — the old primary becomes the secondary of T.
                    kinds[slot] = TargetKind::Primary(opts.force);
                    if let Ok(p_new) = p_minus.add_secondary(inst, 0, f_s, false) {
                        out[slot] = side(
                            &[(&vs, s_on, &s_minus), (&vp, p_on, &p_new)],
                            prem_relax(&p_minus, need, p_on),
                            map_leave,
                        );
                    }
                }
                2 => {
                    // f r:T f — the secondary hosts the instance in transit, then
                    // becomes T's secondary.
                    kinds[slot] = TargetKind::Primary(f_p);
                    if mig_ps {
                        let s_ctx = sn.primary_context(inst, 0, true);
                        let transit = s_minus
                            .add_primary(inst, s_ctx, f_p)
                            .map(|x| x.remove_primary(inst, s_ctx));
                        if let Ok(transit) = transit {
                            if let Ok(s_new) = transit.add_secondary(inst, 0, f_p, false) {
                                out[slot] = side(
                                    &[(&vp, p_on, &p_minus), (&vs, s_on, &s_new)],
                                    prem_relax(&transit, need, s_on),
                                    map_leave,
                                );
                            }
                        }
                    }
                }
                _ => {
                    // f r:T — the secondary becomes the primary.
                    kinds[slot] = TargetKind::Secondary(f_p);
                    if mig_ps {
                        let s_ctx = sn.primary_context(inst, 0, true);
                        if let Ok(s_new) = s_minus.add_primary(inst, s_ctx, f_p) {
                            out[slot] = side(
                                &[(&vp, p_on, &p_minus), (&vs, s_on, &s_new)],
                                None,
                                map_leave,
                            );
                        }
                    }
                }
            }
        }
        self.sides[slots].copy_from_slice(&out);
        self.insts[idx].kinds = kinds;
    }

    /// One balancing step from score `cur`: the screen's kept candidates (every candidate
    /// within [`SCREEN_EPSILON`] of the best estimate), or `None` when the bounds cannot
    /// be used for this cluster state.
    pub(super) fn screen(&mut self, ctx: &StepContext) -> Option<Vec<Candidate>> {
        let cluster = ctx.cluster;
        let b = Bounds::new(ctx, &self.unit)?;
        for class in &mut self.classes {
            class.refresh_terms(&b);
        }
        let mut screen = Screen {
            best: ctx.cur,
            kept: Vec::new(),
        };
        let limit = |screen: &Screen| screen.best + SCREEN_EPSILON + b.margin;
        let mut live: Vec<Live> = Vec::new();
        for (idx, rec) in self.insts.iter().enumerate() {
            if rec.count == 0 {
                continue;
            }
            let inst = &cluster.instances[idx];
            let (p, s) = (inst.pnode, inst.snode);
            for slot in 0..rec.count {
                let side = &self.sides[rec.first + slot];
                if !side.ok {
                    continue;
                }
                let term = b.term(&side.feat, side.relax);
                let target = match rec.kinds[slot] {
                    TargetKind::None => 0.0,
                    TargetKind::Primary(force) => {
                        self.classes[rec.pri_class].min_term(force, &self.targets, p, s)
                    }
                    TargetKind::Secondary(force) => {
                        self.classes[rec.sec_class].min_term(force, &self.targets, p, s)
                    }
                };
                let bound = b.base + term + target;
                let bound = if bound.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    bound
                };
                if bound <= limit(&screen) {
                    live.push(Live {
                        bound,
                        term,
                        instance: idx,
                        slot,
                    });
                }
            }
        }
        // The most promising first, so that the limit falls early.
        const FIRST: usize = 32;
        let by_bound = |a: &Live, b: &Live| a.bound.total_cmp(&b.bound);
        if live.len() > FIRST {
            live.select_nth_unstable_by(FIRST - 1, by_bound);
            live[..FIRST].sort_unstable_by(by_bound);
        } else {
            live.sort_unstable_by(by_bound);
        }
        for l in &live {
            if l.bound <= limit(&screen) {
                self.expand(ctx, &b, l, &mut screen);
            }
        }
        let best = screen.best;
        let mut kept: Vec<Candidate> = screen
            .kept
            .into_iter()
            .filter(|c| c.estimate <= best + SCREEN_EPSILON)
            .collect();
        // hbal's order: instances, then failover, then targets, then kinds.
        let pos = |t: usize| self.target_pos[t].unwrap_or(usize::MAX);
        kept.sort_by_key(|c| {
            let within = match c.mv {
                Move::Failover => 0,
                Move::FailoverToAny(t) => 1 + pos(t),
                Move::ReplaceSecondary(t) => 1 + 4 * pos(t),
                Move::ReplaceAndFailover(t) => 2 + 4 * pos(t),
                Move::ReplacePrimary(t) => 3 + 4 * pos(t),
                Move::FailoverAndReplace(t) => 4 + 4 * pos(t),
            };
            (c.instance, within)
        });
        Some(kept)
    }

    /// Simulates and offers every move of a live side whose bound stays within the limit.
    fn expand(&mut self, ctx: &StepContext, b: &Bounds, l: &Live, screen: &mut Screen) {
        let cluster = ctx.cluster;
        let opts = ctx.opts;
        let idx = l.instance;
        let inst = &cluster.instances[idx];
        let rec = self.insts[idx];
        let side = self.sides[rec.first + l.slot];
        let p = inst.pnode;
        let pn = &cluster.nodes[p];
        let f_p = pn.offline() || opts.force;
        let limit = |screen: &Screen| screen.best + SCREEN_EPSILON + b.margin;
        let remove_ctx = pn.primary_context(inst, inst.loc_score, false);
        let p_minus = pn.state.remove_primary(inst, remove_ctx);
        let mut d_p_minus = Delta::ZERO;
        ctx.add_change(&mut d_p_minus, p, &p_minus);
        let (class, force) = match rec.kinds[l.slot] {
            TargetKind::None => (None, false),
            TargetKind::Primary(f) => (Some(&self.classes[rec.pri_class]), f),
            TargetKind::Secondary(f) => (Some(&self.classes[rec.sec_class]), f),
        };
        if inst.dt.mirror() == MirrorType::External {
            let Some(class) = class else { return };
            let lb = &class.lb[usize::from(force)];
            for (pos, &t) in self.targets.iter().enumerate() {
                if b.base + l.term + lb[pos] > limit(screen)
                    || t == p
                    || Some(t) == inst.snode
                    || b.surrogate(&side.feat, Some(&class.entries[pos].feat)) - b.margin
                        > limit(screen)
                    || !ctx.migration_ok(p, t)
                {
                    continue;
                }
                let tn = &cluster.nodes[t];
                let Ok(t_new) =
                    tn.state
                        .add_primary(inst, tn.primary_context(inst, inst.loc_score, true), f_p)
                else {
                    continue;
                };
                let mut d = d_p_minus;
                ctx.add_change(&mut d, t, &t_new);
                d.map += ctx.map_delta(idx, p, t);
                screen.offer(ctx.estimate(&d), idx, Move::FailoverToAny(t));
            }
            return;
        }
        let Some(s) = inst.snode else { return };
        let sn = &cluster.nodes[s];
        let f_s = sn.offline() || opts.force;
        let s_minus = sn.state.remove_secondary(inst, sn.r_mem_without(inst, p));
        let mut d_s_minus = Delta::ZERO;
        ctx.add_change(&mut d_s_minus, s, &s_minus);
        let scratch = &mut self.scratch;
        fill_scratch(cluster, scratch, p, Some(s), false);
        match class {
            None => {
                // Failover.
                let s_ctx = sn.primary_context(inst, inst.loc_score, true);
                let failover = s_minus.add_primary(inst, s_ctx, f_p).and_then(|s_new| {
                    p_minus
                        .add_secondary(inst, scratch.p_peers[s], f_p, pn.offline())
                        .map(|p_new| (s_new, p_new))
                });
                if let Ok((s_new, p_new)) = failover {
                    let mut d = Delta::ZERO;
                    ctx.add_change(&mut d, s, &s_new);
                    ctx.add_change(&mut d, p, &p_new);
                    d.map += ctx.map_delta(idx, p, s);
                    screen.offer(ctx.estimate(&d), idx, Move::Failover);
                }
            }
            Some(class) => {
                let kind = (l.slot - 1) as u8;
                let lb = &class.lb[usize::from(force)];
                for (pos, &t) in self.targets.iter().enumerate() {
                    if b.base + l.term + lb[pos] > limit(screen) || t == p || t == s {
                        continue;
                    }
                    let peers = match kind {
                        0 => scratch.target_peer_p[t],
                        1 => scratch.p_peers[t],
                        2 => scratch.s_peers[t],
                        _ => scratch.target_peer_s[t],
                    };
                    if peers == 0
                        && b.surrogate(&side.feat, Some(&class.entries[pos].feat)) - b.margin
                            > limit(screen)
                    {
                        continue;
                    }
                    if let Ok((mv, d)) = screen_disk_move(
                        ctx, idx, kind, t, scratch, &p_minus, &s_minus, &d_p_minus, &d_s_minus,
                        f_p, f_s,
                    ) {
                        screen.offer(ctx.estimate(&d), idx, mv);
                    }
                }
            }
        }
        fill_scratch(cluster, scratch, p, Some(s), true);
    }
}

impl Class {
    fn new(rep: usize, secondary: bool, targets: usize) -> Class {
        Class {
            rep,
            secondary,
            entries: vec![
                TargetEntry {
                    feat: Feat::ZERO,
                    relax: None,
                    ok_strict: false,
                    ok_force: false,
                };
                targets
            ],
            lb: [vec![f64::INFINITY; targets], vec![f64::INFINITY; targets]],
            best: [[(f64::INFINITY, usize::MAX); 3]; 2],
        }
    }
}
