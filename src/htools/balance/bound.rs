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
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{screen_disk_move, Candidate, Delta, Scratch, Screen, StepContext, SD, SUMS};
use crate::htools::helpers::{lock, Helpers};
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

/// An instance's sides as computed now, to store into the engine.
struct NewSides {
    /// Primary and secondary (`u32::MAX`: none).
    nodes: (u32, u32),
    sides: [Side; DRBD_SLOTS],
    /// The slots' target kinds (`None`: left as they were).
    kinds: Option<[TargetKind; DRBD_SLOTS]>,
    /// Whether the slots are published (else they stay unusable).
    publish: bool,
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
///
/// Target terms are cached like side terms: `key[pos]` is the term when last computed
/// plus the accumulated drift then, so `key − drift` bounds the term now from below;
/// `order` lists the positions by ascending key, and each step computes exactly only the
/// entries at its front, until the three smallest terms are known.
struct Class {
    /// An instance of the class.
    rep: usize,
    secondary: bool,
    /// Per target position.
    entries: Vec<TargetEntry>,
    /// Per target position: the cached key (−∞: features changed, +∞: the add fails).
    key: Vec<f64>,
    /// Per target position: the step whose coefficients computed the key.
    stamp: Vec<u32>,
    /// Target positions by ascending key, each with its key when the order was built
    /// (at most its key now, so still a bound).
    order: Vec<(f64, u32)>,
    /// Positions whose key changed since the order was built (may repeat).
    moved: Vec<u32>,
    /// The buffer the next repair builds its order in.
    spare: Vec<(f64, u32)>,
    /// The three smallest terms and their target nodes, strict and forced (among the
    /// entries computed this step).
    best: [[(f64, u32); 3]; 2],
    /// A bound below the terms of the entries not computed this step.
    rest: f64,
    /// The deepest bound of a target term the last step's expansions walked to: this
    /// step computes the entries up to it (plus the drift since) exactly, so that the
    /// walks meet exact keys and stop where the real terms do.
    depth: f64,
    /// Per lane, a range holding every feasible target's change of the lane's sum.
    range: ARange,
    /// The range widened since the last step.
    range_moved: bool,
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
///
/// A standard-deviation lane's variance after a candidate is `V + ΔV` with
/// `ΔV = Xs + Xt − 2·as·at/n²`, where for each part `X = Π − a²/n²` (`Π` as in the module
/// documentation, `a` the part's change of the lane's sum). The lane is bounded below by
/// `w·(√V + β·ΔV − γ·ΔV²)` (or a chord, `γ = 0`), the cross term by the range of `at`
/// over the targets of the side's class, and `ΔV² ≤ 2(|Xs| + |cross|)² + 2Xt²`.
struct Bounds {
    /// Lane means.
    m: [f64; LANES],
    /// Lane variances (as the estimate computes them for an unchanged cluster).
    v0: [f64; LANES],
    inv_n: f64,
    inv_n2: f64,
    /// Lane weights.
    w: [f64; LANES],
    /// `w·β` and `2·w·γ` of each lane.
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
    /// Per lane: the bound `d` of |ΔV| and of any part's |X|, the largest deviation of a
    /// node's value from the mean, and the bound of one node's change.
    d: [f64; LANES],
    r: [f64; LANES],
    delta: [f64; LANES],
}

/// Per lane, the range of a target part's change of the lane's sum over a class.
type ARange = [(f64, f64); LANES];

/// The range `[lo, hi]` of `X = Π − a²/n²` of one lane and the range of its `a`, for a
/// part whose `p_rem` (lane [`PREM`]) may lie anywhere in `relax` (the features hold
/// its lower end) and otherwise is as the features say.
struct LaneRange {
    x: (f64, f64),
    a: (f64, f64),
}

impl Bounds {
    /// The coefficients for the cluster of `ctx`, where `unit[k]` bounds the change of a
    /// lane's value on one node by one move. `None` when the lanes are not all finite.
    fn new(ctx: &StepContext, unit: &[f64; LANES]) -> Option<Bounds> {
        let inv_n = ctx.inv_online;
        if !inv_n.is_finite() {
            return None;
        }
        let mut b = Bounds {
            m: [0.0; LANES],
            v0: [0.0; LANES],
            inv_n,
            inv_n2: inv_n * inv_n,
            w: ctx.sd_weight,
            a1: [0.0; LANES],
            a2: [0.0; LANES],
            sum_w: ctx.sum_weight,
            sum_base: ctx.sum_base,
            map_w: ctx.map_weight,
            map_value: ctx.map_value,
            base: 0.0,
            margin: 0.0,
            d: [0.0; LANES],
            r: [0.0; LANES],
            delta: [0.0; LANES],
        };
        let mut base = ctx.map_weight * ctx.map_value;
        for j in 0..NSUMS {
            base += ctx.sum_weight[j] * ctx.sum_base[j];
        }
        for (k, &c) in SD.iter().enumerate() {
            let dev = ctx.sd_s1[k] * inv_n;
            let m = ctx.center[c] + dev;
            let v0 = ctx.sd_s2[k] * inv_n - dev * dev;
            // The largest |value − m|: rounding is monotonic, so the extremes give it.
            let r = (ctx.sd_highest[k] - m).max(m - ctx.sd_lowest[k]).max(0.0);
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
            // |Π| ≤ Σ|x' − x|·(|x' − m| + |x − m|)/n, |a| ≤ total: |ΔV| ≤ d.
            let d = (total * (2.0 * r + delta) * inv_n + total * total * b.inv_n2) * (1.0 + 1e-6);
            b.d[k] = d;
            b.r[k] = r;
            b.delta[k] = delta;
            let v = v0.max(0.0);
            if d == 0.0 {
                // No move changes this lane.
                base += w * v.sqrt();
            } else if v > 4.0 * d {
                // √(v + ΔV) ≥ √v + ΔV/(2√v) − ΔV²/(8(v − d)^1.5) for |ΔV| ≤ d.
                let gamma = 1.0 / (8.0 * (v - d).powf(1.5));
                base += w * v.sqrt();
                b.a1[k] = w / (2.0 * v.sqrt());
                b.a2[k] = 2.0 * w * gamma;
            } else {
                // The chord of √ over [lo, hi] lies below it there.
                let lo = (v - d).max(0.0);
                let hi = v + d;
                let beta = (hi.sqrt() - lo.sqrt()) / (hi - lo);
                let alpha = lo.sqrt() - beta * lo;
                base += w * (alpha + beta * v);
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

    /// `X = Π − a²/n²` of lane `k` of a part.
    #[inline(always)]
    fn x(&self, k: usize, dx: f64, dx2: f64) -> f64 {
        self.pi(k, dx, dx2) - dx * dx * self.inv_n2
    }

    /// The ranges of lane [`PREM`] of a part whose varying node's `p_rem` lies in
    /// `[lo, hi]` (the features holding `lo`).
    fn prem_range(&self, f: &Feat, (lo, hi): (f64, f64)) -> LaneRange {
        let k = PREM;
        let p = self.pi(k, f.dx[k], f.dx2[k]);
        let m = self.m[k];
        let g = |x: f64| (x - m) * (x - m);
        let g_lo = g(lo);
        let p_min = p + (g(m.clamp(lo, hi)) - g_lo) * self.inv_n;
        let p_max = p + (g_lo.max(g(hi)) - g_lo) * self.inv_n;
        let a = (f.dx[k], f.dx[k] + (hi - lo));
        let a2_max = (a.0 * a.0).max(a.1 * a.1);
        let a2_min = if a.0 <= 0.0 && a.1 >= 0.0 {
            0.0
        } else {
            (a.0 * a.0).min(a.1 * a.1)
        };
        LaneRange {
            x: (p_min - a2_max * self.inv_n2, p_max - a2_min * self.inv_n2),
            a,
        }
    }

    /// The sums' and map's part of a term.
    #[inline(always)]
    fn linear(&self, f: &Feat) -> f64 {
        let mut total = self.map_w * f.map;
        for j in 0..NSUMS {
            total += self.sum_w[j] * f.sums[j];
        }
        total
    }

    /// The term of a side in the lower bound, for targets whose parts' changes of the
    /// lane sums lie in `targets` (`None`: the side is the whole move).
    #[allow(clippy::needless_range_loop)]
    fn side_term(&self, f: &Feat, relax: Relax, targets: Option<&ARange>) -> f64 {
        let mut lanes = [0.0; LANES];
        match targets {
            None => {
                for k in 0..LANES {
                    let x = self.x(k, f.dx[k], f.dx2[k]);
                    lanes[k] = x * (self.a1[k] - 0.5 * self.a2[k] * x);
                }
            }
            Some(range) => {
                for k in 0..LANES {
                    let a = f.dx[k];
                    let x = self.x(k, a, f.dx2[k]);
                    let (c1, c2) = (a * range[k].0, a * range[k].1);
                    let cross_lo = -2.0 * c1.max(c2) * self.inv_n2;
                    let cross_abs = 2.0 * c1.abs().max(c2.abs()) * self.inv_n2;
                    let q = x.abs() + cross_abs;
                    lanes[k] = self.a1[k] * (x + cross_lo) - self.a2[k] * q * q;
                }
            }
        }
        if let Some(relax) = relax {
            let k = PREM;
            let r = self.prem_range(f, relax);
            let (t_lo, t_hi) = targets.map_or((0.0, 0.0), |t| t[k]);
            let corners = [r.a.0 * t_lo, r.a.0 * t_hi, r.a.1 * t_lo, r.a.1 * t_hi];
            let c_max = corners.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let c_abs = corners.iter().fold(0.0f64, |m, c| m.max(c.abs()));
            let cross_lo = -2.0 * c_max * self.inv_n2;
            let cross_abs = 2.0 * c_abs * self.inv_n2;
            let q = r.x.0.abs().max(r.x.1.abs()) + cross_abs;
            let factor = if targets.is_some() { 1.0 } else { 0.5 };
            lanes[k] = self.a1[k] * (r.x.0 + cross_lo) - factor * self.a2[k] * q * q;
        }
        self.linear(f) + lanes.iter().sum::<f64>()
    }

    /// The term of a target in the lower bound.
    #[allow(clippy::needless_range_loop)]
    fn target_term(&self, f: &Feat, relax: Relax) -> f64 {
        let mut lanes = [0.0; LANES];
        for k in 0..LANES {
            let x = self.x(k, f.dx[k], f.dx2[k]);
            lanes[k] = x * (self.a1[k] - self.a2[k] * x);
        }
        if let Some(relax) = relax {
            // Concave in X: the minimum is at an end of X's range.
            let k = PREM;
            let r = self.prem_range(f, relax);
            let h = |x: f64| x * (self.a1[k] - self.a2[k] * x);
            lanes[k] = h(r.x.0).min(h(r.x.1));
        }
        self.linear(f) + lanes.iter().sum::<f64>()
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

/// What the drift bound needs of a step's coefficients.
#[derive(Debug, Clone, Copy)]
struct LaneParams {
    a1: [f64; LANES],
    a2: [f64; LANES],
    m: [f64; LANES],
    d: [f64; LANES],
    r: [f64; LANES],
    delta: [f64; LANES],
}

impl LaneParams {
    fn of(b: &Bounds) -> LaneParams {
        LaneParams {
            a1: b.a1,
            a2: b.a2,
            m: b.m,
            d: b.d,
            r: b.r,
            delta: b.delta,
        }
    }

    /// A bound of how much any side term can change from coefficients `self` to `b`
    /// while the side's features stay the same (`ranges`: whether a class's range of
    /// target changes moved, which moves the cross terms).
    fn drift(&self, b: &Bounds, ranges: bool) -> f64 {
        let mut total = 0.0;
        for k in 0..LANES {
            let delta = self.delta[k].max(b.delta[k]);
            let a = 2.0 * delta;
            let r = self.r[k].max(b.r[k]);
            // Every part's |X| (also at the ends of a relaxed range) is at most d, the
            // cross terms at most c.
            let c = 2.0 * a * delta * b.inv_n2;
            let x = self.d[k].max(b.d[k]) + c;
            let dm = (b.m[k] - self.m[k]).abs();
            // X moves with the mean: Π by 2·|Δm|·|a|/n, a relaxed range's ends by at
            // most 4·|Δm|·(r + δ + |Δm|)/n more.
            let dx = dm * (2.0 * a + 4.0 * (r + delta + dm)) * b.inv_n;
            let dc = if ranges { 2.0 * c } else { 0.0 };
            let a1 = self.a1[k].max(b.a1[k]);
            let a2 = self.a2[k].max(b.a2[k]);
            total += (b.a1[k] - self.a1[k]).abs() * x
                + a1 * (dx + dc)
                + (b.a2[k] - self.a2[k]).abs() * x * x
                + a2 * 2.0 * x * (dx + dc);
        }
        total * (1.0 + 1e-6)
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
            for (k, r) in self.range.iter_mut().enumerate() {
                let mut hi = entry.feat.dx[k];
                if k == PREM {
                    if let Some((lo, top)) = entry.relax {
                        hi += top - lo;
                    }
                }
                if entry.feat.dx[k] < r.0 || hi > r.1 {
                    r.0 = r.0.min(entry.feat.dx[k]);
                    r.1 = r.1.max(hi);
                    self.range_moved = true;
                }
            }
        }
        self.key[pos] = if entry.ok_force {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        self.moved.push(pos as u32);
        self.entries[pos] = entry;
    }

    /// Entry `pos`'s key with this step's coefficients, and whether it had to be computed
    /// now (it is not stored: [`Self::compute`] stores it).
    fn key_now(&self, b: &Bounds, drift: f64, step: u32, pos: usize) -> (f64, bool) {
        if self.stamp[pos] != step && self.key[pos] != f64::INFINITY {
            let e = &self.entries[pos];
            let term = b.target_term(&e.feat, e.relax);
            let term = if term.is_nan() {
                f64::NEG_INFINITY
            } else {
                term
            };
            (term + drift, true)
        } else {
            (self.key[pos], false)
        }
    }

    /// Computes entry `pos`'s term with this step's coefficients unless done already.
    fn compute(&mut self, b: &Bounds, drift: f64, step: u32, pos: usize) {
        if let (key, true) = self.key_now(b, drift, step, pos) {
            self.store(pos, key, step);
        }
    }

    /// Stores entry `pos`'s key computed with step `step`'s coefficients, unless stored
    /// already (two threads may have computed it).
    fn store(&mut self, pos: usize, key: f64, step: u32) {
        if self.stamp[pos] != step {
            self.key[pos] = key;
            self.stamp[pos] = step;
            self.moved.push(pos as u32);
        }
    }

    /// Puts the moved positions back in order (by their keys now).
    fn repair(&mut self, mark: &mut [bool]) {
        if self.moved.is_empty() {
            return;
        }
        let mut moved = std::mem::take(&mut self.moved);
        moved.retain(|&pos| !std::mem::replace(&mut mark[pos as usize], true));
        let key = &self.key;
        moved.sort_unstable_by(|a, b| key[*a as usize].total_cmp(&key[*b as usize]));
        let mut merged = std::mem::take(&mut self.spare);
        merged.clear();
        let mut rest = self
            .order
            .iter()
            .filter(|(_, pos)| !mark[*pos as usize])
            .peekable();
        for &pos in &moved {
            let k = key[pos as usize];
            while let Some(&&(o, p)) = rest.peek() {
                if o < k {
                    merged.push((o, p));
                    rest.next();
                } else {
                    break;
                }
            }
            merged.push((k, pos));
        }
        merged.extend(rest);
        for &pos in &moved {
            mark[pos as usize] = false;
        }
        self.spare = std::mem::replace(&mut self.order, merged);
        self.moved = moved;
        self.moved.clear();
    }

    /// Computes the entries at the front of the order exactly until the three smallest
    /// terms (strict and forced) are known, then repairs the order.
    fn refresh_terms(
        &mut self,
        b: &Bounds,
        drift: f64,
        step: u32,
        targets: &[usize],
        mark: &mut [bool],
    ) {
        self.repair(mark);
        let mut best = [[(f64::INFINITY, u32::MAX); 3]; 2];
        let mut done = 0;
        while done < self.order.len() {
            let pos = self.order[done].1 as usize;
            let lb = self.key[pos] - drift;
            // The three smallest strict terms are wanted too (most slots may only pair
            // with strict targets), but not at any price when few targets are strict.
            let strict_known = lb >= best[0][2].0;
            let forced_known = lb >= best[1][2].0;
            let walked = lb > self.depth || done >= DEPTH_SEARCH;
            if (strict_known || (forced_known && done >= STRICT_SEARCH)) && walked
                || lb == f64::INFINITY
            {
                break;
            }
            self.compute(b, drift, step, pos);
            let term = self.key[pos] - drift;
            let node = targets[pos] as u32;
            let lists: &mut [[(f64, u32); 3]] = if self.entries[pos].ok_strict {
                &mut best[..]
            } else {
                &mut best[1..]
            };
            for top in lists {
                if term < top[2].0 {
                    top[2] = (term, node);
                    if top[2].0 < top[1].0 {
                        top.swap(1, 2);
                        if top[1].0 < top[0].0 {
                            top.swap(0, 1);
                        }
                    }
                }
            }
            done += 1;
        }
        self.rest = self
            .order
            .get(done)
            .map_or(f64::INFINITY, |&(_, pos)| self.key[pos as usize] - drift);
        self.best = best;
        // Used up: this step's walks set it again.
        self.depth = f64::NEG_INFINITY;
        self.repair_front(done);
    }

    /// Puts the first `done` positions of the order, the only ones computed since the
    /// last repair, back in order: their keys only rose, so they merge into the rest, and
    /// the rest past the last of them stays where it is.
    fn repair_front(&mut self, done: usize) {
        if self.moved.is_empty() {
            return;
        }
        self.moved.clear();
        let key = &self.key;
        let mut front = std::mem::take(&mut self.spare);
        front.clear();
        front.extend(
            self.order[..done]
                .iter()
                .map(|&(_, pos)| (key[pos as usize], pos)),
        );
        front.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let order = &mut self.order;
        let (mut next, mut write) = (done, 0);
        for &entry in &front {
            while next < order.len() && order[next].0 < entry.0 {
                order[write] = order[next];
                next += 1;
                write += 1;
            }
            order[write] = entry;
            write += 1;
        }
        self.spare = front;
    }

    /// The range of the targets' changes of the lane sums (an empty lane as 0).
    fn range(&self) -> ARange {
        self.range
            .map(|(lo, hi)| if lo > hi { (0.0, 0.0) } else { (lo, hi) })
    }

    /// The smallest target term with `force` over targets other than `p` and `s` (a
    /// bound below it when the entries computed this step do not decide it).
    fn min_term(&self, force: bool, p: u32, s: u32) -> f64 {
        self.best[usize::from(force)]
            .iter()
            .find(|(_, t)| *t != p && *t != s)
            .map_or(self.rest, |(v, _)| v.min(self.rest))
    }
}

/// How many entries a class computes at most per step while looking for its smallest
/// strict terms once its smallest forced terms are known.
const STRICT_SEARCH: usize = 256;

/// How many entries a class computes at most per step to reach the depth the last
/// step's expansions walked to.
const DEPTH_SEARCH: usize = 512;

/// A side whose bound does not rule its moves out.
#[derive(Debug, Clone, Copy)]
struct Live {
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
    /// One scratch per scanning thread.
    scratches: Vec<Scratch>,
    /// The target terms each scanning thread computed this step.
    fresh: Vec<FreshTerms>,
    /// The side slots that offered candidates in the last step, visited first.
    hints: Vec<u32>,
    has_location: bool,
    /// Per side slot, its term when last computed plus `drift` then: the term now is at
    /// least `key − drift` (−∞: not computed since the side changed). The bits of an
    /// `f64`: the scanning threads write the keys of the slots they visit.
    key: Vec<AtomicU64>,
    /// The accumulated drift bound of side terms.
    drift: f64,
    /// The previous step's coefficients.
    prev: Option<LaneParams>,
    /// Per side slot, the step in which it was last visited.
    expanded: Vec<AtomicU32>,
    steps: u32,
    /// Per side slot: its instance, and its target class with `force` in the top bit
    /// ([`NO_TARGET`] for failover).
    slot_inst: Vec<u32>,
    slot_class: Vec<u32>,
    /// Per instance: primary and secondary (`u32::MAX` if none).
    inst_nodes: Vec<(u32, u32)>,
    /// Scratch marks, one per target position, for each thread.
    marks: Vec<Mutex<Vec<bool>>>,
}

/// How many instances a thread takes at a time when refreshing sides after a move.
const UPDATE_CHUNK: usize = 8;

/// Below this many side slots a step scans them on one thread: starting threads would
/// cost more than it saves. (The tests scan every cluster in parallel.)
const MIN_PARALLEL_SLOTS: usize = if cfg!(test) { 1 } else { 4096 };

/// What one scanning thread writes: its lookups, its screen, and the target terms it
/// computed, stored into the classes after the scan.
struct ScanOut<'a> {
    scratch: &'a mut Scratch,
    screen: &'a mut Screen,
    computed: &'a mut FreshTerms,
}

/// The target terms one scanning thread computed this step. The classes are shared
/// read-only during a scan, so without this every side that reaches a stale target
/// would compute its term again.
struct FreshTerms {
    /// Target positions per class.
    stride: usize,
    /// Per (class, position): the step whose coefficients computed `key` (0: none).
    stamp: Vec<u32>,
    key: Vec<f64>,
    /// Per (class, position) of a class with a relaxed reservation: the step whose
    /// coefficients computed `term0`, and the term for a peers entry of 0.
    stamp0: Vec<u32>,
    term0: Vec<f64>,
    /// The (class, position) pairs computed, each once.
    computed: Vec<(u32, u32)>,
    /// The side slots whose expansion offered a candidate.
    hits: Vec<u32>,
    /// Per class: the deepest target-term bound an expansion walked to.
    depth: Vec<f64>,
}

impl FreshTerms {
    fn new(classes: usize, targets: usize) -> FreshTerms {
        FreshTerms {
            stride: targets,
            stamp: vec![0; classes * targets],
            key: vec![0.0; classes * targets],
            stamp0: vec![0; classes * targets],
            term0: vec![0.0; classes * targets],
            computed: Vec::new(),
            hits: Vec::new(),
            depth: vec![f64::NEG_INFINITY; classes],
        }
    }

    /// Entry `pos` of class `class` (number `index`): its key with this step's
    /// coefficients, computed at most once per step and thread.
    fn key(
        &mut self,
        class: &Class,
        index: u32,
        pos: usize,
        b: &Bounds,
        drift: f64,
        step: u32,
    ) -> f64 {
        let at = index as usize * self.stride + pos;
        if self.stamp[at] == step {
            return self.key[at];
        }
        let (key, fresh) = class.key_now(b, drift, step, pos);
        if fresh {
            self.stamp[at] = step;
            self.key[at] = key;
            self.computed.push((index, pos as u32));
        }
        key
    }

    /// The term of entry `pos` of class `class` (number `index`) when the target holds
    /// no peers entry for the new primary (the lower end of its relaxed range): exact
    /// for most targets, where the key bounds every entry.
    fn term0(&mut self, class: &Class, index: u32, pos: usize, b: &Bounds, step: u32) -> f64 {
        let at = index as usize * self.stride + pos;
        if self.stamp0[at] != step {
            let term = b.target_term(&class.entries[pos].feat, None);
            self.stamp0[at] = step;
            self.term0[at] = if term.is_nan() {
                f64::NEG_INFINITY
            } else {
                term
            };
        }
        self.term0[at]
    }
}

/// At most this many side slots are remembered as hints for the next step.
const HINTS: usize = 64;

/// Hints a scanning thread takes at a time.
const HINT_CHUNK: usize = 4;

/// Side slots a scanning thread takes at a time.
const SCAN_CHUNK: usize = 2048;

/// The best estimate the scanning threads have found so far. Scores are never negative,
/// and the bits of non-negative floats order as the floats do.
struct SharedBest(AtomicU64);

impl SharedBest {
    fn new(best: f64) -> SharedBest {
        SharedBest(AtomicU64::new(Self::bits(best)))
    }

    fn bits(value: f64) -> u64 {
        if value >= 0.0 {
            value.to_bits()
        } else {
            // Negative or NaN: shares nothing, so no thread prunes by it.
            f64::INFINITY.to_bits()
        }
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn lower(&self, best: f64) {
        self.0.fetch_min(Self::bits(best), Ordering::Relaxed);
    }
}

/// A bound below the target terms of slot class code `code`, from each class's smallest
/// term (strict, then forced) in `class_min`.
#[inline(always)]
fn cheap_target(class_min: &[f64], code: u32) -> f64 {
    if code == NO_TARGET {
        0.0
    } else {
        class_min[2 * (code & !(1 << 31)) as usize + (code >> 31) as usize]
    }
}

/// [`Engine::slot_class`] of a slot without targets.
const NO_TARGET: u32 = u32::MAX;

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
            // Reserved whole: growing it would hold the old and the new buffer at once.
            sides: Vec::with_capacity(cluster.instances.len() * DRBD_SLOTS),
            classes: Vec::new(),
            unit: [0.0; LANES],
            scratches: vec![Scratch::new(n)],
            fresh: Vec::new(),
            hints: Vec::new(),
            has_location: !cluster.tags.location_prefixes.is_empty(),
            key: Vec::new(),
            drift: 0.0,
            prev: None,
            expanded: Vec::new(),
            steps: 0,
            slot_inst: Vec::new(),
            slot_class: Vec::new(),
            inst_nodes: vec![(u32::MAX, u32::MAX); cluster.instances.len()],
            marks: Vec::new(),
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
        engine.fresh = vec![FreshTerms::new(engine.classes.len(), engine.targets.len())];
        engine.key = (0..engine.sides.len())
            .map(|_| AtomicU64::new(f64::INFINITY.to_bits()))
            .collect();
        engine.expanded = (0..engine.sides.len()).map(|_| AtomicU32::new(0)).collect();
        engine.slot_class = vec![NO_TARGET; engine.sides.len()];
        engine.slot_inst = vec![0; engine.sides.len()];
        for (idx, rec) in engine.insts.iter().enumerate() {
            engine.slot_inst[rec.first..rec.first + rec.count].fill(idx as u32);
        }
        for idx in 0..cluster.instances.len() {
            engine.refresh_sides(cluster, idx, opts);
        }
        Some(engine)
    }

    /// Keeps the caches in step after a move changed nodes `touched`.
    pub(super) fn update(
        &mut self,
        cluster: &Cluster,
        touched: &[usize],
        opts: &BalanceOptions,
        helpers: &Helpers,
    ) {
        let moved: Vec<(usize, usize)> = touched
            .iter()
            .filter_map(|&u| self.target_pos[u].map(|pos| (pos, u)))
            .collect();
        if !moved.is_empty() {
            // Each class on one thread at a time, its targets in the order touched.
            let classes: Vec<Mutex<&mut Class>> = self.classes.iter_mut().map(Mutex::new).collect();
            let next_class = AtomicUsize::new(0);
            let refresh = |_: usize| {
                while let Some(class) = classes.get(next_class.fetch_add(1, Ordering::Relaxed)) {
                    let mut class = lock(class);
                    for &(pos, u) in &moved {
                        class.refresh_target(cluster, pos, u);
                    }
                }
            };
            if classes.len() > 1 {
                helpers.run(&refresh);
            } else {
                refresh(0);
            }
        }
        let mut instances = Vec::new();
        for &u in touched {
            instances.extend(cluster.nodes[u].primaries());
            instances.extend(cluster.nodes[u].secondaries());
        }
        instances.sort_unstable();
        instances.dedup();
        // Computed on every thread, stored on this one.
        let next = AtomicUsize::new(0);
        let computed: Vec<Mutex<Vec<(usize, NewSides)>>> = (0..helpers.threads())
            .map(|_| Mutex::new(Vec::new()))
            .collect();
        let this = &*self;
        let compute = |t: usize| {
            let mut mine = lock(&computed[t]);
            loop {
                let at = next.fetch_add(UPDATE_CHUNK, Ordering::Relaxed);
                let Some(chunk) = instances.get(at..(at + UPDATE_CHUNK).min(instances.len()))
                else {
                    break;
                };
                if chunk.is_empty() {
                    break;
                }
                for &idx in chunk {
                    if let Some(sides) = this.sides_of(cluster, idx, opts) {
                        mine.push((idx, sides));
                    }
                }
            }
        };
        if instances.len() > UPDATE_CHUNK {
            helpers.run(&compute);
        } else {
            compute(0);
        }
        for part in computed {
            for (idx, sides) in std::mem::take(&mut *lock(&part)) {
                self.store_sides(idx, &sides);
            }
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
        if let Some(sides) = self.sides_of(cluster, idx, opts) {
            self.store_sides(idx, &sides);
        }
    }

    /// Stores instance `idx`'s sides computed by [`Self::sides_of`].
    fn store_sides(&mut self, idx: usize, sides: &NewSides) {
        let rec = self.insts[idx];
        let slots = rec.first..rec.first + rec.count;
        self.sides[slots.clone()].copy_from_slice(&sides.sides[..rec.count]);
        for i in slots.clone() {
            self.set_slot_key(i, f64::INFINITY);
        }
        self.slot_class[slots].fill(NO_TARGET);
        self.inst_nodes[idx] = sides.nodes;
        if let Some(kinds) = sides.kinds {
            self.insts[idx].kinds = kinds;
        }
        if sides.publish {
            self.publish(idx);
        }
    }

    /// Instance `idx`'s sides now (`None`: it has no slots).
    fn sides_of(&self, cluster: &Cluster, idx: usize, opts: &BalanceOptions) -> Option<NewSides> {
        let rec = self.insts[idx];
        if rec.count == 0 {
            return None;
        }
        let inst = &cluster.instances[idx];
        let nodes = (inst.pnode as u32, inst.snode.map_or(u32::MAX, |s| s as u32));
        let mut kinds = [TargetKind::None; DRBD_SLOTS];
        if !self.movable(cluster, idx, opts) {
            return Some(NewSides {
                nodes,
                sides: [Side::NONE; DRBD_SLOTS],
                kinds: Some(kinds),
                publish: false,
            });
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
            return Some(NewSides {
                nodes,
                sides: out,
                kinds: Some(kinds),
                publish: true,
            });
        }
        let Some(s) = inst.snode else {
            return Some(NewSides {
                nodes,
                sides: out,
                kinds: None,
                publish: false,
            });
        };
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
        Some(NewSides {
            nodes,
            sides: out,
            kinds: Some(kinds),
            publish: true,
        })
    }

    /// Publishes instance `idx`'s refreshed sides to the per-slot arrays.
    fn publish(&mut self, idx: usize) {
        let rec = self.insts[idx];
        for slot in 0..rec.count {
            let i = rec.first + slot;
            let ok = self.sides[i].ok;
            self.set_slot_key(i, if ok { f64::NEG_INFINITY } else { f64::INFINITY });
            self.slot_class[i] = match rec.kinds[slot] {
                TargetKind::None => NO_TARGET,
                TargetKind::Primary(f) => rec.pri_class as u32 | (u32::from(f) << 31),
                TargetKind::Secondary(f) => rec.sec_class as u32 | (u32::from(f) << 31),
            };
        }
    }

    /// One balancing step from score `cur`: the screen's kept candidates (every candidate
    /// within the step's window of the best estimate), or `None` when the bounds cannot
    /// be used for this cluster state.
    pub(super) fn screen(
        &mut self,
        ctx: &StepContext,
        helpers: &Helpers,
    ) -> Option<Vec<Candidate>> {
        let b = Bounds::new(ctx, &self.unit)?;
        let ranges = self.classes.iter().any(|c| c.range_moved);
        match self.prev.map(|p| p.drift(&b, ranges)) {
            Some(e) if e.is_finite() => self.drift += e,
            _ => {
                for class in &mut self.classes {
                    class.moved.extend(0..class.key.len() as u32);
                }
                for key in self.classes.iter_mut().flat_map(|c| c.key.iter_mut()) {
                    if *key != f64::INFINITY {
                        *key = f64::NEG_INFINITY;
                    }
                }
                for i in 0..self.key.len() {
                    if self.slot_key(i) != f64::INFINITY {
                        self.set_slot_key(i, f64::NEG_INFINITY);
                    }
                }
            }
        }
        self.prev = Some(LaneParams::of(&b));
        self.steps += 1;
        // The classes are independent: the threads take them one at a time, each with
        // its own marks.
        let target_count = self.targets.len();
        self.marks
            .resize_with(helpers.threads(), || Mutex::new(vec![false; target_count]));
        let (drift, steps, targets, marks) = (self.drift, self.steps, &self.targets, &self.marks);
        let classes: Vec<Mutex<&mut Class>> = self.classes.iter_mut().map(Mutex::new).collect();
        let next_class = AtomicUsize::new(0);
        let refresh = |t: usize| {
            let Some(mark) = marks.get(t) else { return };
            let mut mark = lock(mark);
            while let Some(class) = classes.get(next_class.fetch_add(1, Ordering::Relaxed)) {
                let mut class = lock(class);
                class.range_moved = false;
                class.refresh_terms(&b, drift, steps, targets, &mut mark);
            }
        };
        if classes.len() > 1 {
            helpers.run(&refresh);
        } else {
            refresh(0);
        }
        drop(classes);
        // Each class's smallest target term, a bound below any slot's own minimum.
        let class_min: Vec<f64> = self
            .classes
            .iter()
            .flat_map(|c| [c.best[0][0].0.min(c.rest), c.best[1][0].0.min(c.rest)])
            .collect();
        let cheap = |code: u32| cheap_target(&class_min, code);
        // First the sides that offered candidates in the last step, lowest bound first:
        // the best move now is most often one of them, so the limit falls early.
        let mut first: Vec<(f64, usize)> = std::mem::take(&mut self.hints)
            .into_iter()
            .map(|i| i as usize)
            .filter(|&i| self.slot_key(i) != f64::INFINITY)
            .map(|i| {
                (
                    b.base + (self.slot_key(i) - self.drift) + cheap(self.slot_class[i]),
                    i,
                )
            })
            .collect();
        first.sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
        // The threads take the hints, then the slots, in chunks (the costly slots
        // cluster), every thread pruning with the best estimate any has found. Each keeps
        // every candidate within the margin of its own best, which is never better than
        // the overall best: the filter below keeps exactly what one scan would keep.
        // The slots' keys and marks are atomics, each slot visited once; everything else
        // is read only, and the target terms the threads compute are stored afterwards.
        let threads = if self.key.len() < MIN_PARALLEL_SLOTS.max(2) {
            1
        } else {
            helpers.threads()
        };
        let n = ctx.cluster.nodes.len();
        let (classes, targets) = (self.classes.len(), self.targets.len());
        let mut scratches = std::mem::take(&mut self.scratches);
        let mut fresh = std::mem::take(&mut self.fresh);
        scratches.resize_with(threads, || Scratch::new(n));
        fresh.resize_with(threads, || FreshTerms::new(classes, targets));
        // One workspace per thread, each locked only by its own thread.
        let workspaces: Vec<Mutex<(Scratch, FreshTerms, Option<Screen>)>> = scratches
            .into_iter()
            .zip(fresh)
            .map(|(scratch, computed)| Mutex::new((scratch, computed, None)))
            .collect();
        let next_hint = AtomicUsize::new(0);
        let next_chunk = AtomicUsize::new(0);
        let chunks = self.key.len().div_ceil(SCAN_CHUNK);
        let shared = SharedBest::new(ctx.cur);
        let this = &*self;
        let b = &b;
        let class_min = &class_min;
        let first = &first;
        let work = |scratch: &mut Scratch, computed: &mut FreshTerms| {
            let mut screen = Screen {
                best: ctx.cur,
                window: ctx.window,
                kept: Vec::new(),
            };
            let mut out = ScanOut {
                scratch,
                screen: &mut screen,
                computed,
            };
            loop {
                let at = next_hint.fetch_add(HINT_CHUNK, Ordering::Relaxed);
                if at >= first.len() {
                    break;
                }
                out.screen.best = out.screen.best.min(shared.get());
                for &(bound, i) in &first[at..(at + HINT_CHUNK).min(first.len())] {
                    if bound <= out.screen.best + ctx.window + b.margin && this.claim(i) {
                        this.visit(ctx, b, i, &mut out);
                    }
                }
                shared.lower(out.screen.best);
            }
            loop {
                let chunk = next_chunk.fetch_add(1, Ordering::Relaxed);
                if chunk >= chunks {
                    break;
                }
                out.screen.best = out.screen.best.min(shared.get());
                let slots = chunk * SCAN_CHUNK..((chunk + 1) * SCAN_CHUNK).min(this.key.len());
                this.scan(ctx, b, class_min, slots, &mut out);
                shared.lower(out.screen.best);
            }
            screen
        };
        let scan_part = |t: usize| {
            // Helpers beyond this scan's threads take no part.
            if let Some(workspace) = workspaces.get(t) {
                let mut guard = lock(workspace);
                let (scratch, computed, screen) = &mut *guard;
                *screen = Some(work(scratch, computed));
            }
        };
        if threads > 1 {
            helpers.run(&scan_part);
        } else {
            scan_part(0);
        }
        let mut screen = Screen {
            best: ctx.cur,
            window: ctx.window,
            kept: Vec::new(),
        };
        let mut scratches = Vec::with_capacity(threads);
        let mut fresh = Vec::with_capacity(threads);
        for workspace in workspaces {
            let (scratch, computed, part) =
                workspace.into_inner().unwrap_or_else(|e| e.into_inner());
            if let Some(part) = part {
                screen.best = screen.best.min(part.best);
                screen.kept.extend(part.kept);
            }
            scratches.push(scratch);
            fresh.push(computed);
        }
        self.scratches = scratches;
        let mut hints = Vec::new();
        for computed in &mut fresh {
            self.store_terms(computed);
            hints.append(&mut computed.hits);
        }
        self.fresh = fresh;
        hints.sort_unstable();
        hints.dedup();
        if hints.len() > HINTS {
            let this = &*self;
            hints.select_nth_unstable_by(HINTS, |x, y| {
                this.slot_key(*x as usize)
                    .total_cmp(&this.slot_key(*y as usize))
            });
            hints.truncate(HINTS);
        }
        self.hints = hints;
        let best = screen.best;
        let mut kept: Vec<Candidate> = screen
            .kept
            .into_iter()
            .filter(|c| c.estimate <= best + ctx.window)
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

    /// The class and `force` of side slot `i`'s targets.
    fn slot_target(&self, i: usize) -> Option<(&Class, bool)> {
        let code = self.slot_class[i];
        (code != NO_TARGET).then(|| (&self.classes[(code & !(1 << 31)) as usize], code >> 31 == 1))
    }

    /// The smallest target term side slot `i` can pair with (0 without targets).
    fn slot_min_target(&self, i: usize) -> f64 {
        let code = self.slot_class[i];
        if code == NO_TARGET {
            return 0.0;
        }
        let (p, s) = self.inst_nodes[self.slot_inst[i] as usize];
        self.classes[(code & !(1 << 31)) as usize].min_term(code >> 31 == 1, p, s)
    }

    /// Stores the target terms a scanning thread computed.
    fn store_terms(&mut self, fresh: &mut FreshTerms) {
        for (class, depth) in self.classes.iter_mut().zip(&mut fresh.depth) {
            class.depth = class.depth.max(std::mem::replace(depth, f64::NEG_INFINITY));
        }
        for (class, pos) in fresh.computed.drain(..) {
            let key = fresh.key[class as usize * fresh.stride + pos as usize];
            self.classes[class as usize].store(pos as usize, key, self.steps);
        }
    }

    /// Visits the slots in `slots` whose cached bounds stay within the limit.
    fn scan(
        &self,
        ctx: &StepContext,
        b: &Bounds,
        class_min: &[f64],
        slots: std::ops::Range<usize>,
        out: &mut ScanOut,
    ) {
        for i in slots {
            let key = self.slot_key(i);
            if key == f64::INFINITY {
                continue;
            }
            let limit = out.screen.best + ctx.window + b.margin;
            let partial = b.base + (key - self.drift);
            if partial + cheap_target(class_min, self.slot_class[i]) > limit
                || partial + self.slot_min_target(i) > limit
                || !self.claim(i)
            {
                continue;
            }
            self.visit(ctx, b, i, out);
        }
    }

    /// Side slot `i`'s cached key.
    #[inline(always)]
    fn slot_key(&self, i: usize) -> f64 {
        f64::from_bits(self.key[i].load(Ordering::Relaxed))
    }

    fn set_slot_key(&self, i: usize, key: f64) {
        self.key[i].store(key.to_bits(), Ordering::Relaxed);
    }

    /// Marks side slot `i` visited in this step; false when it was already.
    #[inline(always)]
    fn claim(&self, i: usize) -> bool {
        self.expanded[i].load(Ordering::Relaxed) != self.steps
            && self.expanded[i].swap(self.steps, Ordering::Relaxed) != self.steps
    }

    /// Computes side slot `i`'s term exactly (refreshing its cached key) and expands it
    /// if its bound stays within the limit.
    fn visit(&self, ctx: &StepContext, b: &Bounds, i: usize, out: &mut ScanOut) {
        let idx = self.slot_inst[i] as usize;
        let slot = i - self.insts[idx].first;
        let side = &self.sides[i];
        if !side.ok {
            self.set_slot_key(i, f64::INFINITY);
            return;
        }
        let term = b.side_term(
            &side.feat,
            side.relax,
            self.slot_target(i).map(|(c, _)| c.range()).as_ref(),
        );
        let term = if term.is_nan() {
            f64::NEG_INFINITY
        } else {
            term
        };
        self.set_slot_key(i, term + self.drift);
        let bound = b.base + term + self.slot_min_target(i);
        if bound <= out.screen.best + ctx.window + b.margin {
            let l = Live {
                term,
                instance: idx,
                slot,
            };
            let offered = out.screen.kept.len();
            self.expand(ctx, b, &l, out);
            if out.screen.kept.len() > offered {
                out.computed.hits.push(i as u32);
            }
        }
    }

    /// Simulates and offers every move of a live side whose bound stays within the limit.
    fn expand(&self, ctx: &StepContext, b: &Bounds, l: &Live, out: &mut ScanOut) {
        let ScanOut {
            scratch,
            screen,
            computed,
        } = out;
        let cluster = ctx.cluster;
        let opts = ctx.opts;
        let idx = l.instance;
        let inst = &cluster.instances[idx];
        let rec = self.insts[idx];
        let side = &self.sides[rec.first + l.slot];
        let p = inst.pnode;
        let pn = &cluster.nodes[p];
        let f_p = pn.offline() || opts.force;
        let limit = |screen: &Screen| screen.best + ctx.window + b.margin;
        let remove_ctx = pn.primary_context(inst, inst.loc_score, false);
        let p_minus = pn.state.remove_primary(inst, remove_ctx);
        let mut d_p_minus = Delta::ZERO;
        ctx.add_change(&mut d_p_minus, p, &p_minus);
        let (drift, step) = (self.drift, self.steps);
        let (class, force) = match rec.kinds[l.slot] {
            TargetKind::None => (None, false),
            TargetKind::Primary(f) => (Some(rec.pri_class), f),
            TargetKind::Secondary(f) => (Some(rec.sec_class), f),
        };
        let class_index = class.unwrap_or(0) as u32;
        let class = class.map(|c| &self.classes[c]);
        if class.is_some() {
            let walk = limit(screen) - b.base - l.term;
            let depth = &mut computed.depth[class_index as usize];
            *depth = depth.max(walk);
        }
        // A target passes when its cached bound (the order's key) and then its term
        // (computed now if stale, and stored after the scan) stay within the limit; the
        // order's keys ascend.
        let passes = |class: &Class,
                      oi: usize,
                      screen: &Screen,
                      computed: &mut FreshTerms|
         -> Option<(usize, f64)> {
            let (okey, pos) = class.order[oi];
            let pos = pos as usize;
            if b.base + l.term + (okey - drift) > limit(screen) {
                return None;
            }
            let term = computed.key(class, class_index, pos, b, drift, step) - drift;
            Some((pos, term)).filter(|_| b.base + l.term + term <= limit(screen))
        };
        if inst.dt.mirror() == MirrorType::External {
            let Some(class) = class else { return };
            for oi in 0..class.order.len() {
                if b.base + l.term + (class.order[oi].0 - drift) > limit(screen) {
                    break;
                }
                let Some((pos, _)) = passes(class, oi, screen, computed) else {
                    continue;
                };
                let t = self.targets[pos];
                if (!force && !class.entries[pos].ok_strict)
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
        let Some(class) = class else {
            // Failover.
            let s_ctx = sn.primary_context(inst, inst.loc_score, true);
            let failover = s_minus.add_primary(inst, s_ctx, f_p).and_then(|s_new| {
                p_minus
                    .add_secondary(inst, pn.peer_mem(s), f_p, pn.offline())
                    .map(|p_new| (s_new, p_new))
            });
            if let Ok((s_new, p_new)) = failover {
                let mut d = Delta::ZERO;
                ctx.add_change(&mut d, s, &s_new);
                ctx.add_change(&mut d, p, &p_new);
                d.map += ctx.map_delta(idx, p, s);
                screen.offer(ctx.estimate(&d), idx, Move::Failover);
            }
            return;
        };
        let kind = (l.slot - 1) as u8;
        let need = if inst.uses_sec_mem() { inst.mem } else { 0 };
        // The node that gets the instance as secondary with a peers entry the features
        // took as 0: the target (r:T, f r:T), the old primary (r:T f) or the old
        // secondary in transit (f r:T f); `None` for a target, whose state is read below.
        let varying: Option<(NodeState, bool)> = match kind {
            1 => Some((p_minus, self.in_group_online[p])),
            2 => {
                let s_ctx = sn.primary_context(inst, 0, true);
                s_minus
                    .add_primary(inst, s_ctx, f_p)
                    .ok()
                    .map(|x| (x.remove_primary(inst, s_ctx), self.in_group_online[s]))
            }
            _ => None,
        };
        // The side's term for a peers entry of 0 where its reservation is relaxed (the
        // old primary or secondary getting the instance back as secondary): exact for
        // the targets its node holds no entry for, where its key bounds every entry.
        let side0 = side.relax.map(|_| {
            let term = b.side_term(&side.feat, None, Some(&class.range()));
            if term.is_nan() {
                f64::NEG_INFINITY
            } else {
                term
            }
        });
        // Filled when the first target passes: most expanded sides have none.
        let mut filled = false;
        for oi in 0..class.order.len() {
            if b.base + l.term + (class.order[oi].0 - drift) > limit(screen) {
                break;
            }
            let Some((pos, term)) = passes(class, oi, screen, computed) else {
                continue;
            };
            let t = self.targets[pos];
            if (!force && !class.entries[pos].ok_strict) || t == p || t == s {
                continue;
            }
            if !filled {
                fill_lookup(cluster, scratch, kind, p, s, false);
                filled = true;
            }
            let entry = &class.entries[pos].feat;
            let estimate = match kind {
                0 | 3 => {
                    let peer = if kind == 0 {
                        scratch.target_peer_p[t]
                    } else {
                        scratch.target_peer_s[t]
                    };
                    if peer == 0
                        && class.entries[pos].relax.is_some()
                        && b.base + l.term + computed.term0(class, class_index, pos, b, step)
                            > limit(screen)
                    {
                        continue;
                    }
                    let t_feat = with_peer(entry, &cluster.nodes[t].state, need, peer);
                    b.surrogate(&side.feat, Some(&t_feat))
                }
                _ => {
                    let peer = if kind == 1 {
                        scratch.p_peers[t]
                    } else {
                        scratch.s_peers[t]
                    };
                    if let Some(side0) = side0.filter(|_| peer == 0) {
                        if b.base + side0 + term > limit(screen) {
                            continue;
                        }
                    }
                    match &varying {
                        Some((n, true)) if peer != 0 => {
                            b.surrogate(&with_peer(&side.feat, n, need, peer), Some(entry))
                        }
                        _ => b.surrogate(&side.feat, Some(entry)),
                    }
                }
            };
            if estimate - b.margin > limit(screen) {
                continue;
            }
            if let Ok((mv, d)) = screen_disk_move(
                ctx, idx, kind, t, scratch, &p_minus, &s_minus, &d_p_minus, &d_s_minus, f_p, f_s,
            ) {
                screen.offer(ctx.estimate(&d), idx, mv);
            }
        }
        if filled {
            fill_lookup(cluster, scratch, kind, p, s, true);
        }
    }
}

/// The features of a part that adds a secondary to online node state `n` with peers
/// entry `peer` for its new primary, from features `f` computed with the entry 0: only
/// the reservation (`p_rem`, its total) and the N+1 count can differ.
fn with_peer(f: &Feat, n: &NodeState, need: i64, peer: i64) -> Feat {
    let r_lo = n.r_mem.max(need);
    let r = n.r_mem.max(peer + need);
    if r == r_lo {
        return *f;
    }
    let mut g = *f;
    let (lo, hi) = (r_lo as f64 / n.t_mem, r as f64 / n.t_mem);
    let d = hi - lo;
    g.dx[PREM] += d;
    g.dx2[PREM] += d * (hi + lo);
    g.sums[3] += d;
    let old = n.unalloc();
    let count = f64::from(n.n_pri + n.n_sec + 1);
    let n1 = |r: i64| if old <= r { count } else { 0.0 };
    g.sums[0] += n1(r) - n1(r_lo);
    g
}

/// Fills (or, with `clear`, resets) the one lookup of `scratch` that disk move `kind`
/// of an instance with primary `p` and secondary `s` reads.
fn fill_lookup(
    cluster: &Cluster,
    scratch: &mut Scratch,
    kind: u8,
    p: usize,
    s: usize,
    clear: bool,
) {
    let need = |j: usize| {
        let inst = &cluster.instances[j];
        if inst.uses_sec_mem() {
            inst.mem
        } else {
            0
        }
    };
    match kind {
        0 | 3 => {
            let (node, table) = if kind == 0 {
                (p, &mut scratch.target_peer_p)
            } else {
                (s, &mut scratch.target_peer_s)
            };
            for j in cluster.nodes[node].primaries() {
                if let Some(t) = cluster.instances[j].snode {
                    table[t] = if clear { 0 } else { table[t] + need(j) };
                }
            }
        }
        _ => {
            let (node, table) = if kind == 1 {
                (p, &mut scratch.p_peers)
            } else {
                (s, &mut scratch.s_peers)
            };
            for &(k, m) in cluster.nodes[node].peers() {
                table[k] = if clear { 0 } else { m };
            }
        }
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
            key: vec![f64::INFINITY; targets],
            stamp: vec![0; targets],
            order: (0..targets as u32)
                .map(|pos| (f64::INFINITY, pos))
                .collect(),
            moved: Vec::new(),
            spare: Vec::new(),
            best: [[(f64::INFINITY, u32::MAX); 3]; 2],
            rest: f64::INFINITY,
            depth: f64::NEG_INFINITY,
            range: [(f64::INFINITY, f64::NEG_INFINITY); LANES],
            range_moved: false,
        }
    }
}
