//! Balancing at hbal 3.0.2 parity (htools' `Cluster.hs` `tryBalance` and `splitJobs`,
//! `Cluster/Utils.hs` `iMoveToJob`, `Program/Hbal.hs` `iterateDepth`).
//!
//! hbal scores every candidate move by recomputing the whole group's score:
//! O(instances × nodes² ) per step. Here a candidate touches at most three nodes, so its
//! score is estimated in O(components) from running sums of every component, centred on
//! the current means so the one-pass variance stays accurate. The estimate only
//! *screens*: every candidate within the step's window ([`screen_window`]) of the best
//! estimate is then re-simulated with the model's move primitives and scored exactly in
//! hbal's summation order, and hbal's rule (first strictly better candidate, in instance
//! then move order) is applied to the exact scores.
//!
//! Most candidates are never estimated: the `bound` module keeps, across steps, rigorous
//! lower bounds of every candidate's score split into a part of the instance's old nodes
//! and a part of the target, and simulates only the candidates whose bound could reach
//! the screen's limit; the screen keeps exactly the candidates the exhaustive screen
//! (still used when the bounds do not apply) would keep. Decisions therefore equal hbal's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::helpers::{with_helpers, Helpers};
use super::model::{
    Cluster, DiskTemplate, FailMode, Instance, MirrorType, Move, MoveOutcome, NodeState,
    PrimaryContext,
};
use super::score::{self, Aggregation, AGGREGATION, COMPONENTS, WEIGHTS};
use crate::model::opcode::OpBody;

/// How far above the best estimate a candidate's estimate may lie and still be scored
/// exactly, for a group of `nodes` online nodes at score `cur`.
///
/// A sum of n terms rounds by at most about n·ε of its size, and every part of the score
/// is such a sum (a deviation's error is relative to the variance, the √ halves it), so
/// the estimate and hbal's exact score each err by at most about n·ε·|score|, and the
/// best candidate's estimate lies within twice that of the best estimate. The window,
/// 64·(n + 1)·ε·(1 + |score|), is 32 times that: at 1000 nodes, at least 130 times the
/// largest difference between an estimate and its exact score seen in a full balance. A
/// narrower window scores fewer near-ties exactly.
pub fn screen_window(nodes: usize, cur: f64) -> f64 {
    64.0 * (nodes as f64 + 1.0) * f64::EPSILON * (1.0 + cur.abs())
}

/// Balancing options (hbal's flags; defaults are hbal's).
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceOptions {
    /// Allow moves that replace disks (`--no-disk-moves` clears it).
    pub disk_moves: bool,
    /// Allow moves that change the primary (`--no-instance-moves` clears it).
    pub instance_moves: bool,
    /// `--restricted-migration`.
    pub restricted_migration: bool,
    /// Ignore soft errors (`--ignore-soft-errors`).
    pub force: bool,
    /// Move only instances with a node that is offline (`--evac-mode`).
    pub evac_mode: bool,
    /// Minimum gain of a step once the score is at most `min_gain_limit` (`-g`).
    pub min_gain: f64,
    /// Below this score, steps must gain at least `min_gain` (`--min-gain-limit`).
    pub min_gain_limit: f64,
    /// Maximum number of steps (`-l`).
    pub max_steps: Option<usize>,
    /// Stop when the score is within this of the optimal score (`-e`).
    pub min_score: f64,
    /// maintd's allowed nodes: only these are targets, and only instances whose nodes
    /// are all allowed move. `None`: every node.
    pub allowed_nodes: Option<Vec<usize>>,
    /// Threads that evaluate a step's candidate moves (0: all available cores; 1: the
    /// sequential scan). The decisions are the same for every count.
    pub threads: usize,
}

impl Default for BalanceOptions {
    fn default() -> Self {
        BalanceOptions {
            disk_moves: true,
            instance_moves: true,
            restricted_migration: false,
            force: false,
            evac_mode: false,
            min_gain: 0.01,
            min_gain_limit: 0.1,
            max_steps: None,
            min_score: 1e-9,
            allowed_nodes: None,
            threads: 0,
        }
    }
}

/// One balancing step: an instance's move and the group's score after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The instance.
    pub instance: usize,
    /// The move.
    pub mv: Move,
    /// Primary before the step.
    pub old_pnode: usize,
    /// Secondary before the step.
    pub old_snode: Option<usize>,
    /// Primary after the step.
    pub pnode: usize,
    /// Secondary after the step.
    pub snode: Option<usize>,
    /// The group's score after the step.
    pub score: f64,
}

impl Step {
    /// The nodes the step involves (htools' `involvedNodes`): new primary, new secondary,
    /// old primary, old secondary, without repetitions.
    pub fn involved_nodes(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(4);
        for n in [
            Some(self.pnode),
            self.snode,
            Some(self.old_pnode),
            self.old_snode,
        ]
        .into_iter()
        .flatten()
        {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }
}

/// Why balancing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The score was already within `min_score` of the optimum.
    AlreadyBalanced,
    /// The score reached the optimum.
    Optimal,
    /// The step limit was reached.
    StepLimit,
    /// No move improves the score enough.
    NoImprovement,
    /// The first job set was complete: the next step would touch one of its nodes
    /// ([`balance_first_job_set`]).
    JobSetComplete,
}

/// A balancing plan for one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The group balanced.
    pub group: usize,
    /// Score before the first step.
    pub initial_score: f64,
    /// Score after the last step.
    pub final_score: f64,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Why it stopped.
    pub stop: StopReason,
}

/// A candidate move found by the screening pass.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    estimate: f64,
    instance: usize,
    mv: Move,
}

/// Change of the component sums caused by one candidate: for the standard deviations
/// (in [`SD`] order) the change of Σ(x − centre) and Σ(x − centre)², for the sums (in
/// [`SUMS`] order) the change of the sum, and the change of the map component.
#[derive(Debug, Clone, Copy)]
struct Delta {
    d1: [f64; SD.len()],
    d2: [f64; SD.len()],
    sums: [f64; SUMS.len()],
    map: f64,
}

impl Delta {
    const ZERO: Delta = Delta {
        d1: [0.0; SD.len()],
        d2: [0.0; SD.len()],
        sums: [0.0; SUMS.len()],
        map: 0.0,
    };

    #[allow(clippy::needless_range_loop)]
    fn plus(&self, other: &Delta) -> Delta {
        let mut d = *self;
        for k in 0..SD.len() {
            d.d1[k] += other.d1[k];
            d.d2[k] += other.d2[k];
        }
        for k in 0..SUMS.len() {
            d.sums[k] += other.sums[k];
        }
        d.map += other.map;
        d
    }
}

/// Indices of the standard-deviation components.
const SD: [usize; 13] = [0, 1, 3, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16];
/// Indices of the online sums, then the two offline sums.
const SUMS: [usize; 6] = [2, 11, 17, 19, 4, 5];

/// Everything one balancing step reads, computed once per step.
struct StepContext<'a> {
    cluster: &'a Cluster,
    opts: &'a BalanceOptions,
    group_nodes: Vec<usize>,
    in_group_online: Vec<bool>,
    targets: Vec<usize>,
    values: Vec<[f64; COMPONENTS]>,
    center: [f64; COMPONENTS],
    sd_s1: [f64; SD.len()],
    sd_s2: [f64; SD.len()],
    sd_weight: [f64; SD.len()],
    sum_base: [f64; SUMS.len()],
    sum_weight: [f64; SUMS.len()],
    map_weight: f64,
    inv_online: f64,
    map_counts: HashMap<(u32, u32), u32>,
    map_value: f64,
    has_location: bool,
    has_migration: bool,
    cur: f64,
    /// The screen's window: [`screen_window`].
    window: f64,
    /// Per SD lane, the lowest and highest value of an online node.
    sd_lowest: [f64; SD.len()],
    sd_highest: [f64; SD.len()],
    /// Per SD lane, the interval [lo, hi] of variances around the current one on which
    /// the weighted chord `a + b·var` bounds the weighted standard deviation from
    /// below (√ is concave); NaN bounds disable it for the lane.
    chord_lo: [f64; SD.len()],
    chord_hi: [f64; SD.len()],
    chord_a: [f64; SD.len()],
    chord_b: [f64; SD.len()],
}

/// Half-width, relative to the current variance, of the chord interval.
const CHORD_SPAN: f64 = 0.05;

impl<'a> StepContext<'a> {
    fn new(cluster: &'a Cluster, group: usize, opts: &'a BalanceOptions, cur: f64) -> Self {
        let n = cluster.nodes.len();
        let group_nodes = cluster.group_nodes(group);
        let mut allowed = vec![opts.allowed_nodes.is_none(); n];
        for &a in opts.allowed_nodes.iter().flatten() {
            if a < n {
                allowed[a] = true;
            }
        }
        let mut in_group_online = vec![false; n];
        let mut targets = Vec::new();
        for &i in &group_nodes {
            if !cluster.nodes[i].offline() {
                in_group_online[i] = true;
                if allowed[i] {
                    targets.push(i);
                }
            }
        }
        let values: Vec<[f64; COMPONENTS]> = cluster
            .nodes
            .iter()
            .map(|node| score::node_values(&node.state))
            .collect();
        // Two passes over the nodes, every component side by side: each component's sums
        // still run in node order, as one pass per component would sum them.
        let mut count = 0usize;
        let mut online_sum = [-0.0f64; COMPONENTS];
        let mut offline_sum = [-0.0f64; COMPONENTS];
        let mut lowest = [f64::INFINITY; COMPONENTS];
        let mut highest = [f64::NEG_INFINITY; COMPONENTS];
        for &i in &group_nodes {
            let v = &values[i];
            if in_group_online[i] {
                count += 1;
                for c in 0..COMPONENTS {
                    online_sum[c] += v[c];
                    lowest[c] = lowest[c].min(v[c]);
                    highest[c] = highest[c].max(v[c]);
                }
            } else {
                for c in 0..COMPONENTS {
                    offline_sum[c] += v[c];
                }
            }
        }
        let count_f = count as f64;
        let center: [f64; COMPONENTS] = std::array::from_fn(|c| {
            let mean = online_sum[c] / count_f;
            if AGGREGATION[c] == Aggregation::StdDev && mean.is_finite() {
                mean
            } else {
                0.0
            }
        });
        let mut dev_sum = [0.0f64; COMPONENTS];
        let mut dev_squares = [0.0f64; COMPONENTS];
        for &i in &group_nodes {
            if in_group_online[i] {
                let v = &values[i];
                for c in 0..COMPONENTS {
                    let d = v[c] - center[c];
                    dev_sum[c] += d;
                    dev_squares[c] += d * d;
                }
            }
        }
        let mut s1 = [0.0; COMPONENTS];
        let mut s2 = [0.0; COMPONENTS];
        for c in 0..COMPONENTS {
            match AGGREGATION[c] {
                Aggregation::StdDev => {
                    s1[c] = dev_sum[c];
                    s2[c] = dev_squares[c];
                }
                Aggregation::SumOnline => s1[c] = online_sum[c],
                Aggregation::SumOffline => s1[c] = offline_sum[c],
                Aggregation::Map => {}
            }
        }
        let mut map_counts = HashMap::new();
        for &i in group_nodes.iter().filter(|&&i| in_group_online[i]) {
            for &(k, c) in cluster.nodes[i].location_exclusion_pairs() {
                *map_counts.entry(k).or_insert(0) += c;
            }
        }
        let map_value = map_counts.values().map(|&c| f64::from(c) - 1.0).sum();
        let inv_online = 1.0 / count_f;
        let mut chord_lo = [f64::NAN; SD.len()];
        let mut chord_hi = [f64::NAN; SD.len()];
        let mut chord_a = [0.0; SD.len()];
        let mut chord_b = [0.0; SD.len()];
        for (k, &c) in SD.iter().enumerate() {
            let m = s1[c] * inv_online;
            let var = s2[c] * inv_online - m * m;
            if var.is_finite() && var > 1e-12 {
                let (lo, hi) = (var * (1.0 - CHORD_SPAN), var * (1.0 + CHORD_SPAN));
                let b = (hi.sqrt() - lo.sqrt()) / (hi - lo);
                chord_lo[k] = lo;
                chord_hi[k] = hi;
                chord_a[k] = (lo.sqrt() - b * lo) * WEIGHTS[c];
                chord_b[k] = b * WEIGHTS[c];
            }
        }
        StepContext {
            cluster,
            opts,
            group_nodes,
            in_group_online,
            targets,
            values,
            center,
            sd_s1: SD.map(|c| s1[c]),
            sd_s2: SD.map(|c| s2[c]),
            sd_weight: SD.map(|c| WEIGHTS[c]),
            sum_base: SUMS.map(|c| s1[c]),
            sum_weight: SUMS.map(|c| WEIGHTS[c]),
            map_weight: WEIGHTS[score::MAP_COMPONENT],
            inv_online,
            map_counts,
            map_value,
            has_location: !cluster.tags.location_prefixes.is_empty(),
            has_migration: !cluster.tags.migration_prefixes.is_empty(),
            cur,
            window: screen_window(count, cur),
            sd_lowest: SD.map(|c| lowest[c]),
            sd_highest: SD.map(|c| highest[c]),
            chord_lo,
            chord_hi,
            chord_a,
            chord_b,
        }
    }

    /// Adds the change of node `idx` to `new` into `delta`.
    fn add_change(&self, delta: &mut Delta, idx: usize, new: &NodeState) {
        let old = &self.values[idx];
        let new = score::node_values(new);
        if !self.in_group_online[idx] {
            delta.sums[4] += new[4] - old[4];
            delta.sums[5] += new[5] - old[5];
            return;
        }
        for (k, &c) in SD.iter().enumerate() {
            let (a, b) = (old[c] - self.center[c], new[c] - self.center[c]);
            delta.d1[k] += b - a;
            delta.d2[k] += b * b - a * a;
        }
        for (k, &c) in SUMS[..4].iter().enumerate() {
            delta.sums[k] += new[c] - old[c];
        }
    }

    /// Adds the change of one SD lane `k` (component `c`) from `old` to `new`.
    #[inline(always)]
    fn lane(&self, delta: &mut Delta, k: usize, c: usize, old: f64, new: f64) {
        let (a, b) = (old - self.center[c], new - self.center[c]);
        delta.d1[k] += b - a;
        delta.d2[k] += b * b - a * a;
    }

    /// [`NodeState::add_secondary`] on online target `t` (never ignoring disks), adding
    /// only the components it changes into `delta`: the same values, bit for bit, as
    /// [`Self::add_change`] on the new state, without building it. False when the add
    /// fails.
    #[inline]
    fn add_secondary_change(
        &self,
        delta: &mut Delta,
        t: usize,
        n: &NodeState,
        inst: &Instance,
        peer_mem: i64,
        force: bool,
    ) -> bool {
        let local = inst.dt.local_storage();
        let need = if inst.uses_sec_mem() { inst.mem } else { 0 };
        let peem = peer_mem + need;
        let old = n.unalloc();
        let dsk = n.f_dsk - inst.dsk;
        let su = if local { inst.spindle_use as f64 } else { 0.0 };
        let isp = n.inst_spindles + su;
        let r = n.r_mem.max(peem);
        let n1 = old <= r;
        let dskf = n.f_dsk_f - inst.dsk;
        let ispf = n.inst_spindles_f + su;
        if inst.dt != DiskTemplate::Drbd || dsk <= 0 {
            return false;
        }
        if !force
            && (dsk < n.lo_dsk
                || isp > n.hi_spindles
                || need >= old
                || (n1 && !n.fail_n1)
                || dskf <= 0
                || dskf < n.lo_dsk
                || ispf > n.hi_spindles
                || need >= n.f_mem_f)
        {
            return false;
        }
        let v = &self.values[t];
        let p_dsk = disk_ratio(dsk, n.t_dsk);
        let p_rem = r as f64 / n.t_mem;
        let load_dsk = (n.load[2] + inst.util[2]) / 1.0;
        // SD lanes: 1 p_dsk, 2 p_rem, 6 disk load, 8 spindles, 10 p_dsk_f, 12 spindles_f.
        self.lane(delta, 1, 1, v[1], p_dsk);
        self.lane(delta, 2, 3, v[3], p_rem);
        self.lane(delta, 6, 9, v[9], load_dsk);
        self.lane(delta, 8, 12, v[12], isp / n.hi_spindles);
        self.lane(delta, 10, 14, v[14], disk_ratio(dskf, n.t_dsk));
        self.lane(delta, 12, 16, v[16], ispf / n.hi_spindles);
        let count = f64::from(n.n_pri + n.n_sec + 1);
        delta.sums[0] += (if n1 { count } else { 0.0 }) - v[2];
        delta.sums[3] += p_rem - v[19];
        true
    }

    /// [`NodeState::add_primary`] on online target `t`, adding its change into `delta`
    /// exactly as [`Self::add_change`] would. False when the add fails.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn add_primary_change(
        &self,
        delta: &mut Delta,
        t: usize,
        n: &NodeState,
        inst: &Instance,
        pctx: PrimaryContext,
        force: bool,
    ) -> bool {
        let strict = !force;
        let local = inst.dt.local_storage();
        let i_mem = n.i_mem + if inst.uses_memory() { inst.mem } else { 0 };
        let free = n.unalloc_with(i_mem);
        let n1 = free <= n.r_mem;
        let dsk = if local { n.f_dsk - inst.dsk } else { n.f_dsk };
        let su = if local { inst.spindle_use as f64 } else { 0.0 };
        let isp = n.inst_spindles + su;
        let vcpus = if inst.not_offline() { inst.vcpus } else { 0 };
        let ucpu = n.u_cpu + vcpus;
        let pcpu = ucpu as f64 / n.t_cpu;
        let memf = n.f_mem_f - inst.mem;
        let dskf = if local {
            n.f_dsk_f - inst.dsk
        } else {
            n.f_dsk_f
        };
        let ispf = n.inst_spindles_f + su;
        let ucpuf = n.u_cpu_f + vcpus;
        let pcpuf = ucpuf as f64 / n.t_cpu;
        if free <= 0 || (local && dsk <= 0) {
            return false;
        }
        if strict
            && ((local && (dsk < n.lo_dsk || isp > n.hi_spindles))
                || (n1 && !n.fail_n1)
                || (n.vcpu_ratio >= 0.0 && pcpu > n.vcpu_ratio)
                || pctx.tag_overlap > 0
                || memf <= 0
                || (local && (dskf <= 0 || dskf < n.lo_dsk))
                || (local && ispf > n.hi_spindles)
                || pcpuf > n.vcpu_ratio)
        {
            return false;
        }
        let v = &self.values[t];
        self.lane(delta, 0, 0, v[0], free as f64 / n.t_mem);
        self.lane(delta, 1, 1, v[1], disk_ratio(dsk, n.t_dsk));
        self.lane(delta, 3, 6, v[6], pcpu / n.cpu_speed);
        for l in 0..4 {
            self.lane(
                delta,
                4 + l,
                7 + l,
                v[7 + l],
                (n.load[l] + inst.util[l]) / 1.0,
            );
        }
        self.lane(delta, 8, 12, v[12], isp / n.hi_spindles);
        self.lane(delta, 9, 13, v[13], memf as f64 / n.t_mem);
        self.lane(delta, 10, 14, v[14], disk_ratio(dskf, n.t_dsk));
        self.lane(delta, 11, 15, v[15], pcpuf / n.cpu_speed);
        self.lane(delta, 12, 16, v[16], ispf / n.hi_spindles);
        let count = f64::from(n.n_pri + 1 + n.n_sec);
        delta.sums[0] += (if n1 { count } else { 0.0 }) - v[2];
        delta.sums[1] += (n.pri_tags_score + pctx.tag_overlap) as f64 - v[11];
        delta.sums[2] +=
            (n.loc_score + pctx.inst_loc_score + pctx.unsatisfied_desired) as f64 - v[17];
        true
    }

    /// A lower bound of [`Self::estimate`] without square roots on the lanes whose new
    /// variance stays near the current one (chords of the concave √), less a margin
    /// far above the rounding error.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    fn lower_bound(&self, delta: &Delta) -> f64 {
        let mut sd = [0.0; SD.len()];
        let mut exact = false;
        for k in 0..SD.len() {
            let m = (self.sd_s1[k] + delta.d1[k]) * self.inv_online;
            let var = (self.sd_s2[k] + delta.d2[k]) * self.inv_online - m * m;
            let inside = var >= self.chord_lo[k] && var <= self.chord_hi[k];
            exact |= !inside;
            sd[k] = self.chord_a[k] + self.chord_b[k] * var;
        }
        if exact {
            return f64::NEG_INFINITY;
        }
        let mut total = self.map_weight * (self.map_value + delta.map);
        for k in 0..SUMS.len() {
            total += self.sum_weight[k] * (self.sum_base[k] + delta.sums[k]);
        }
        let total = total + sd.iter().sum::<f64>();
        total - 1e-10 * (1.0 + total.abs())
    }

    /// Offers the candidate with change `delta` to `screen`, skipping the square roots
    /// when its lower bound already rules it out.
    #[inline]
    fn offer(&self, screen: &mut Screen, delta: &Delta, instance: usize, mv: Move) {
        if self.lower_bound(delta) > screen.best + screen.window {
            return;
        }
        screen.offer(self.estimate(delta), instance, mv);
    }

    /// The estimated score after a change.
    // Indexing parallel arrays by lane is the clearest form of this hot loop.
    #[allow(clippy::needless_range_loop)]
    fn estimate(&self, delta: &Delta) -> f64 {
        // Independent lanes (no branch, no serial chain) so the compiler vectorises.
        let mut sd = [0.0; SD.len()];
        for k in 0..SD.len() {
            let m = (self.sd_s1[k] + delta.d1[k]) * self.inv_online;
            let var = (self.sd_s2[k] + delta.d2[k]) * self.inv_online - m * m;
            sd[k] = var.max(0.0).sqrt() * self.sd_weight[k];
        }
        let mut total = self.map_weight * (self.map_value + delta.map);
        for k in 0..SUMS.len() {
            total += self.sum_weight[k] * (self.sum_base[k] + delta.sums[k]);
        }
        total + sd.iter().sum::<f64>()
    }

    /// Change of the location-exclusion component when `inst` leaves primary `from`
    /// for primary `to`.
    fn map_delta(&self, inst: usize, from: usize, to: usize) -> f64 {
        let i = &self.cluster.instances[inst];
        if !self.has_location || i.excl.is_empty() || from == to {
            return 0.0;
        }
        let mut changes: Vec<((u32, u32), i64)> = Vec::new();
        let mut bump = |node: usize, by: i64| {
            if !self.in_group_online[node] {
                return;
            }
            for &l in &self.cluster.nodes[node].loc {
                for &t in &i.excl {
                    match changes.iter_mut().find(|(k, _)| *k == (l, t)) {
                        Some((_, c)) => *c += by,
                        None => changes.push(((l, t), by)),
                    }
                }
            }
        };
        bump(from, -1);
        bump(to, 1);
        let contribution = |c: i64| if c > 0 { (c - 1) as f64 } else { 0.0 };
        changes
            .iter()
            .map(|(k, d)| {
                let c = i64::from(self.map_counts.get(k).copied().unwrap_or(0));
                contribution(c + d) - contribution(c)
            })
            .sum()
    }

    fn migration_ok(&self, from: usize, to: usize) -> bool {
        !self.has_migration || self.cluster.migration_allowed(from, to)
    }

    fn location(&self, a: usize, b: usize) -> i64 {
        if self.has_location {
            let (la, lb) = (&self.cluster.nodes[a].loc, &self.cluster.nodes[b].loc);
            la.iter().filter(|x| lb.binary_search(x).is_ok()).count() as i64
        } else {
            0
        }
    }

    /// Whether instance `idx` is a balancing candidate (`tryBalance`'s `movable` and
    /// `autoBalance` filter, plus maintd's allowed nodes).
    fn movable(&self, idx: usize) -> bool {
        let inst = &self.cluster.instances[idx];
        if !inst.movable || !inst.auto_balance {
            return false;
        }
        if self.cluster.nodes[inst.pnode].data.group
            != self.cluster.nodes[self.group_nodes[0]].data.group
        {
            return false;
        }
        if self.opts.evac_mode && !inst.all_nodes().any(|n| self.cluster.nodes[n].offline()) {
            return false;
        }
        if let Some(allowed) = &self.opts.allowed_nodes {
            if !inst.all_nodes().all(|n| allowed.contains(&n)) {
                return false;
            }
        }
        true
    }
}

fn disk_ratio(f_dsk: i64, t_dsk: f64) -> f64 {
    if t_dsk == 0.0 {
        1.0
    } else {
        f_dsk as f64 / t_dsk
    }
}

/// Per-thread scratch: dense per-node lookups filled for one instance at a time.
struct Scratch {
    /// peers[P] of each node (its reservation for the instance's primary).
    target_peer_p: Vec<i64>,
    /// peers[S] of each node.
    target_peer_s: Vec<i64>,
    /// The primary's own peers entries, by node.
    p_peers: Vec<i64>,
    /// The secondary's own peers entries, by node.
    s_peers: Vec<i64>,
}

impl Scratch {
    fn new(n: usize) -> Self {
        Scratch {
            target_peer_p: vec![0; n],
            target_peer_s: vec![0; n],
            p_peers: vec![0; n],
            s_peers: vec![0; n],
        }
    }
}

/// Fills (or, with `clear`, resets) the dense lookups for primary `p`, secondary `s`.
fn fill_scratch(cluster: &Cluster, scratch: &mut Scratch, p: usize, s: Option<usize>, clear: bool) {
    let need = |j: usize| {
        let inst = &cluster.instances[j];
        if inst.uses_sec_mem() {
            inst.mem
        } else {
            0
        }
    };
    for j in cluster.nodes[p].primaries() {
        if let Some(t) = cluster.instances[j].snode {
            scratch.target_peer_p[t] = if clear {
                0
            } else {
                scratch.target_peer_p[t] + need(j)
            };
        }
    }
    for &(k, m) in cluster.nodes[p].peers() {
        scratch.p_peers[k] = if clear { 0 } else { m };
    }
    if let Some(s) = s {
        for j in cluster.nodes[s].primaries() {
            if let Some(t) = cluster.instances[j].snode {
                scratch.target_peer_s[t] = if clear {
                    0
                } else {
                    scratch.target_peer_s[t] + need(j)
                };
            }
        }
        for &(k, m) in cluster.nodes[s].peers() {
            scratch.s_peers[k] = if clear { 0 } else { m };
        }
    }
}

/// Screening state of one thread.
struct Screen {
    best: f64,
    /// [`StepContext::window`].
    window: f64,
    kept: Vec<Candidate>,
}

impl Screen {
    fn offer(&mut self, estimate: f64, instance: usize, mv: Move) {
        if estimate.is_nan() || estimate > self.best + self.window {
            return;
        }
        if estimate < self.best {
            self.best = estimate;
            let limit = self.best + self.window;
            self.kept.retain(|c| c.estimate <= limit);
        }
        self.kept.push(Candidate {
            estimate,
            instance,
            mv,
        });
    }
}

/// Screens every move of instance `idx`.
fn screen_instance(ctx: &StepContext, idx: usize, scratch: &mut Scratch, screen: &mut Screen) {
    let cluster = ctx.cluster;
    let opts = ctx.opts;
    let inst = &cluster.instances[idx];
    let p = inst.pnode;
    let pn = &cluster.nodes[p];
    let f_p = pn.offline() || opts.force;
    let mirror = inst.dt.mirror();
    if mirror == MirrorType::None {
        return;
    }
    let remove_ctx = pn.primary_context(inst, inst.loc_score, false);
    let p_minus = pn.state.remove_primary(inst, remove_ctx);
    let mut d_p_minus = Delta::ZERO;
    ctx.add_change(&mut d_p_minus, p, &p_minus);

    if mirror == MirrorType::External {
        if !opts.instance_moves {
            return;
        }
        for &t in &ctx.targets {
            if t == p || Some(t) == inst.snode || !ctx.migration_ok(p, t) {
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
            ctx.offer(screen, &d, idx, Move::FailoverToAny(t));
        }
        return;
    }

    // Internal mirror (DRBD); movable instances always have a secondary.
    let Some(s) = inst.snode else { return };
    let sn = &cluster.nodes[s];
    let f_s = sn.offline() || opts.force;
    let use_sec = ctx.in_group_online[s] && opts.instance_moves;
    let s_minus = sn.state.remove_secondary(inst, sn.r_mem_without(inst, p));
    let mut d_s_minus = Delta::ZERO;
    ctx.add_change(&mut d_s_minus, s, &s_minus);
    fill_scratch(cluster, scratch, p, Some(s), false);

    if use_sec && ctx.migration_ok(p, s) {
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
            ctx.offer(screen, &d, idx, Move::Failover);
        }
    }

    let kinds: &[u8] = if !opts.disk_moves {
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
    if !kinds.is_empty() {
        if ctx.has_location {
            // Location scores depend on the target: simulate every move in full.
            for &t in &ctx.targets {
                if t == p || t == s {
                    continue;
                }
                for &kind in kinds {
                    if let Ok((mv, d)) = screen_disk_move(
                        ctx, idx, kind, t, scratch, &p_minus, &s_minus, &d_p_minus, &d_s_minus,
                        f_p, f_s,
                    ) {
                        ctx.offer(screen, &d, idx, mv);
                    }
                }
            }
        } else {
            let sides = DiskMoveSides::new(
                ctx, idx, &p_minus, &s_minus, &d_p_minus, &d_s_minus, f_p, f_s,
            );
            for &t in &ctx.targets {
                if t == p || t == s {
                    continue;
                }
                sides.screen_target(ctx, idx, t, kinds, scratch, screen);
            }
        }
    }
    fill_scratch(cluster, scratch, p, Some(s), true);
}

/// The primary's and secondary's side of a DRBD instance's disk moves, computed once
/// per instance: without location tags they do not depend on the target, except
/// through a peers entry the old node may hold for the target (rare; then recomputed).
struct DiskMoveSides<'c> {
    p_minus: &'c NodeState,
    /// The secondary once the transitional primary of `f r:T f` is added and removed.
    s_transit: Option<NodeState>,
    /// `r:T`: the secondary removed and the primary re-added.
    replace_secondary: Option<Delta>,
    /// `r:T f`: the secondary removed and the old primary as secondary (no peers entry
    /// for the target).
    replace_and_failover: Option<Delta>,
    /// `f r:T f`: the old primary removed and the old secondary back as secondary.
    replace_primary: Option<Delta>,
    /// `f r:T`: the old primary removed and the old secondary as primary.
    failover_and_replace: Option<Delta>,
    d_p_minus: &'c Delta,
    d_s_minus: &'c Delta,
    f_p: bool,
    f_s: bool,
}

impl<'c> DiskMoveSides<'c> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &StepContext,
        idx: usize,
        p_minus: &'c NodeState,
        s_minus: &'c NodeState,
        d_p_minus: &'c Delta,
        d_s_minus: &'c Delta,
        f_p: bool,
        f_s: bool,
    ) -> Self {
        let cluster = ctx.cluster;
        let inst = &cluster.instances[idx];
        let (p, s) = (inst.pnode, inst.snode.unwrap_or(inst.pnode));
        let (pn, sn) = (&cluster.nodes[p], &cluster.nodes[s]);
        let with = |base: &Delta, node: usize, new: &NodeState| {
            let mut d = *base;
            ctx.add_change(&mut d, node, new);
            d
        };
        let readd = pn.primary_context(inst, 0, false);
        let replace_secondary = p_minus
            .add_primary(inst, readd, true)
            .ok()
            .map(|p_new| with(d_s_minus, p, &p_new));
        let replace_and_failover = p_minus
            .add_secondary(inst, 0, f_s, false)
            .ok()
            .map(|p_new| with(d_s_minus, p, &p_new));
        let s_ctx = sn.primary_context(inst, 0, true);
        let s_transit = s_minus
            .add_primary(inst, s_ctx, f_p)
            .ok()
            .map(|x| x.remove_primary(inst, s_ctx));
        let replace_primary = s_transit
            .and_then(|x| x.add_secondary(inst, 0, f_p, false).ok())
            .map(|s_new| with(d_p_minus, s, &s_new));
        let failover_and_replace = s_minus
            .add_primary(inst, s_ctx, f_p)
            .ok()
            .map(|s_new| with(d_p_minus, s, &s_new));
        DiskMoveSides {
            p_minus,
            s_transit,
            replace_secondary,
            replace_and_failover,
            replace_primary,
            failover_and_replace,
            d_p_minus,
            d_s_minus,
            f_p,
            f_s,
        }
    }

    /// Screens the moves `kinds` (see [`screen_disk_move`]) to target `t`.
    fn screen_target(
        &self,
        ctx: &StepContext,
        idx: usize,
        t: usize,
        kinds: &[u8],
        scratch: &Scratch,
        screen: &mut Screen,
    ) {
        let cluster = ctx.cluster;
        let inst = &cluster.instances[idx];
        let (p, s) = (inst.pnode, inst.snode.unwrap_or(inst.pnode));
        let tn = &cluster.nodes[t];
        let force = ctx.opts.force;
        let t_ctx = tn.primary_context(inst, 0, true);
        // The target's new states, each computed at most once.
        let mut t_pri_force: Option<Result<Delta, FailMode>> = None;
        let mut t_pri_fp: Option<Result<Delta, FailMode>> = None;
        let t_delta = |force: bool| {
            let mut d = Delta::ZERO;
            if ctx.add_primary_change(&mut d, t, &tn.state, inst, t_ctx, force) {
                Ok(d)
            } else {
                Err(FailMode::FailMem)
            }
        };
        let combine = |a: &Delta, b: &Delta| a.plus(b);
        for &kind in kinds {
            let result: Option<(Move, Delta)> = match kind {
                0 => {
                    if let Some(base) = self.replace_secondary.as_ref() {
                        let mut d = *base;
                        if ctx.add_secondary_change(
                            &mut d,
                            t,
                            &tn.state,
                            inst,
                            scratch.target_peer_p[t],
                            self.f_s,
                        ) {
                            ctx.offer(screen, &d, idx, Move::ReplaceSecondary(t));
                        }
                    }
                    continue;
                }
                1 => {
                    if !ctx.migration_ok(p, t) {
                        None
                    } else {
                        let td = t_pri_force.get_or_insert_with(|| t_delta(force));
                        match td {
                            Err(_) => None,
                            Ok(td) => {
                                if scratch.p_peers[t] == 0 {
                                    if let Some(b) = self.replace_and_failover.as_ref() {
                                        ctx.offer(
                                            screen,
                                            &combine(b, td),
                                            idx,
                                            Move::ReplaceAndFailover(t),
                                        );
                                    }
                                    continue;
                                }
                                let base = {
                                    self.p_minus
                                        .add_secondary(inst, scratch.p_peers[t], self.f_s, false)
                                        .ok()
                                        .map(|p_new| {
                                            let mut d = *self.d_s_minus;
                                            ctx.add_change(&mut d, p, &p_new);
                                            d
                                        })
                                };
                                base.map(|b| (Move::ReplaceAndFailover(t), combine(&b, td)))
                            }
                        }
                    }
                }
                2 => {
                    if !ctx.migration_ok(p, s) || !ctx.migration_ok(s, t) {
                        None
                    } else {
                        let td = if self.f_p == force {
                            t_pri_force.get_or_insert_with(|| t_delta(force))
                        } else {
                            t_pri_fp.get_or_insert_with(|| t_delta(self.f_p))
                        };
                        match td {
                            Err(_) => None,
                            Ok(td) => {
                                if scratch.s_peers[t] == 0 {
                                    if let Some(b) = self.replace_primary.as_ref() {
                                        ctx.offer(
                                            screen,
                                            &combine(b, td),
                                            idx,
                                            Move::ReplacePrimary(t),
                                        );
                                    }
                                    continue;
                                }
                                let base = {
                                    self.s_transit.and_then(|x| {
                                        x.add_secondary(inst, scratch.s_peers[t], self.f_p, false)
                                            .ok()
                                            .map(|s_new| {
                                                let mut d = *self.d_p_minus;
                                                ctx.add_change(&mut d, s, &s_new);
                                                d
                                            })
                                    })
                                };
                                base.map(|b| (Move::ReplacePrimary(t), combine(&b, td)))
                            }
                        }
                    }
                }
                _ => {
                    if !ctx.migration_ok(p, s) {
                        None
                    } else {
                        {
                            if let Some(base) = self.failover_and_replace.as_ref() {
                                let mut d = *base;
                                if ctx.add_secondary_change(
                                    &mut d,
                                    t,
                                    &tn.state,
                                    inst,
                                    scratch.target_peer_s[t],
                                    self.f_p,
                                ) {
                                    ctx.offer(screen, &d, idx, Move::FailoverAndReplace(t));
                                }
                            }
                            continue;
                        }
                    }
                }
            };
            if let Some((mv, d)) = result {
                ctx.offer(screen, &d, idx, mv);
            }
        }
    }
}

/// One disk move of a DRBD instance to target `t`: 0 = `r:T`, 1 = `r:T f`,
/// 2 = `f r:T f`, 3 = `f r:T`; the same simulation as [`Cluster::simulate_move`] on
/// node states only.
#[allow(clippy::too_many_arguments)]
fn screen_disk_move(
    ctx: &StepContext,
    idx: usize,
    kind: u8,
    t: usize,
    scratch: &Scratch,
    p_minus: &NodeState,
    s_minus: &NodeState,
    d_p_minus: &Delta,
    d_s_minus: &Delta,
    f_p: bool,
    f_s: bool,
) -> Result<(Move, Delta), FailMode> {
    let cluster = ctx.cluster;
    let inst = &cluster.instances[idx];
    let (p, s) = (inst.pnode, inst.snode.unwrap_or(inst.pnode));
    let (pn, sn, tn) = (&cluster.nodes[p], &cluster.nodes[s], &cluster.nodes[t]);
    match kind {
        0 => {
            let loc = ctx.location(p, t);
            let t_new = tn
                .state
                .add_secondary(inst, scratch.target_peer_p[t], f_s, false)?;
            let mut readd = pn.primary_context(inst, loc, false);
            readd.inst_loc_score = loc;
            let p_new = p_minus.add_primary(inst, readd, true)?;
            let mut d = *d_s_minus;
            ctx.add_change(&mut d, t, &t_new);
            ctx.add_change(&mut d, p, &p_new);
            Ok((Move::ReplaceSecondary(t), d))
        }
        1 => {
            let loc = ctx.location(t, p);
            if !ctx.migration_ok(p, t) {
                return Err(FailMode::FailMig);
            }
            let t_new =
                tn.state
                    .add_primary(inst, tn.primary_context(inst, loc, true), ctx.opts.force)?;
            let p_new = p_minus.add_secondary(inst, scratch.p_peers[t], f_s, false)?;
            let mut d = *d_s_minus;
            ctx.add_change(&mut d, t, &t_new);
            ctx.add_change(&mut d, p, &p_new);
            d.map += ctx.map_delta(idx, p, t);
            Ok((Move::ReplaceAndFailover(t), d))
        }
        2 => {
            let loc = ctx.location(t, s);
            if !ctx.migration_ok(p, s) || !ctx.migration_ok(s, t) {
                return Err(FailMode::FailMig);
            }
            let s_ctx = sn.primary_context(inst, loc, true);
            let x = s_minus.add_primary(inst, s_ctx, f_p)?;
            let x = x.remove_primary(inst, s_ctx);
            let t_new = tn
                .state
                .add_primary(inst, tn.primary_context(inst, loc, true), f_p)?;
            let s_new = x.add_secondary(inst, scratch.s_peers[t], f_p, false)?;
            let mut d = *d_p_minus;
            ctx.add_change(&mut d, t, &t_new);
            ctx.add_change(&mut d, s, &s_new);
            d.map += ctx.map_delta(idx, p, t);
            Ok((Move::ReplacePrimary(t), d))
        }
        _ => {
            let loc = ctx.location(s, t);
            if !ctx.migration_ok(p, s) {
                return Err(FailMode::FailMig);
            }
            let s_new = s_minus.add_primary(inst, sn.primary_context(inst, loc, true), f_p)?;
            let t_new = tn
                .state
                .add_secondary(inst, scratch.target_peer_s[t], f_p, false)?;
            let mut d = *d_p_minus;
            ctx.add_change(&mut d, s, &s_new);
            ctx.add_change(&mut d, t, &t_new);
            d.map += ctx.map_delta(idx, p, s);
            Ok((Move::FailoverAndReplace(t), d))
        }
    }
}

/// The exact score of the group after a simulated move: hbal's summation orders on the
/// step's node values with the changed nodes substituted.
///
/// Bit for bit [`score::components_from_values`] (which the tests check): every
/// component's sums run in node order as there, but side by side, in one pass over the
/// nodes per sum instead of one per component.
#[allow(clippy::needless_range_loop)]
fn exact_score(ctx: &StepContext, outcome: &MoveOutcome) -> f64 {
    let cluster = ctx.cluster;
    let map = if ctx.has_location {
        exact_map(ctx, outcome)
    } else {
        0.0
    };
    let changed = changed_values(outcome);
    let node = |i: usize| match changed.iter().find(|(j, _, _)| *j == i) {
        Some((_, off, v)) => (*off, v),
        None => (cluster.nodes[i].state.offline, &ctx.values[i]),
    };
    let mut online = 0usize;
    let mut sum = [0.0f64; COMPONENTS];
    let mut offline_sum = [0.0f64; COMPONENTS];
    for &i in &ctx.group_nodes {
        let (off, v) = node(i);
        let acc = if off {
            &mut offline_sum
        } else {
            online += 1;
            &mut sum
        };
        for (a, x) in acc.iter_mut().zip(v) {
            *a += x;
        }
    }
    let count = online as f64;
    let mean = sum.map(|s| s / count);
    let mut squares = [0.0f64; COMPONENTS];
    for &i in &ctx.group_nodes {
        let (off, v) = node(i);
        if !off {
            for c in 0..COMPONENTS {
                let d = v[c] - mean[c];
                squares[c] += d * d;
            }
        }
    }
    let components: [f64; COMPONENTS] = std::array::from_fn(|c| match AGGREGATION[c] {
        Aggregation::StdDev => (squares[c] / count).sqrt(),
        Aggregation::SumOnline => sum[c],
        Aggregation::SumOffline => offline_sum[c],
        Aggregation::Map => map,
    });
    score::weighted(&components)
}

/// The location-exclusion component after a simulated move.
fn exact_map(ctx: &StepContext, outcome: &MoveOutcome) -> f64 {
    let cluster = ctx.cluster;
    let node = |i: usize| {
        outcome
            .nodes
            .iter()
            .find(|(j, _)| *j == i)
            .map_or(&cluster.nodes[i], |(_, n)| n)
    };
    score::location_exclusion_score(
        ctx.group_nodes
            .iter()
            .filter(|&&i| !node(i).offline())
            .map(|&i| node(i).location_exclusion_pairs()),
    )
}

/// Estimates of a group's score after single moves, to screen many candidate targets
/// before scoring only the best few exactly (the evacuation's target searches, which
/// otherwise score the whole group for every target).
pub(crate) struct MoveEstimates<'a> {
    ctx: StepContext<'a>,
}

impl<'a> MoveEstimates<'a> {
    /// The estimates for group `group` of `cluster` as it is now; `None` when they do not
    /// cover every component of the score (location tags: the map component) or the
    /// group has no online node.
    pub(crate) fn new(
        cluster: &'a Cluster,
        group: usize,
        opts: &'a BalanceOptions,
    ) -> Option<MoveEstimates<'a>> {
        if !cluster.tags.location_prefixes.is_empty() {
            return None;
        }
        let cur = score::score(cluster, &cluster.group_nodes(group));
        let ctx = StepContext::new(cluster, group, opts, cur);
        (ctx.inv_online.is_finite() && cur.is_finite()).then_some(MoveEstimates { ctx })
    }

    /// The estimated score after `outcome`: within [`Self::window`] / 2 of the exact
    /// score (hbal's summation) of the cluster with the move applied.
    pub(crate) fn estimate(&self, outcome: &MoveOutcome) -> f64 {
        let mut delta = Delta::ZERO;
        for (idx, node) in &outcome.nodes {
            self.ctx.add_change(&mut delta, *idx, &node.state);
        }
        self.ctx.estimate(&delta)
    }

    /// How far above the lowest estimate a candidate's estimate may lie and still have
    /// the lowest exact score ([`screen_window`]).
    pub(crate) fn window(&self) -> f64 {
        self.ctx.window
    }
}

/// The nodes a move changed: index, offline, and their score values.
fn changed_values(outcome: &MoveOutcome) -> Vec<(usize, bool, [f64; COMPONENTS])> {
    outcome
        .nodes
        .iter()
        .map(|(i, n)| (*i, n.state.offline, score::node_values(&n.state)))
        .collect()
}

/// [`exact_score`] as hbal sums it, one component at a time: the reference the tests
/// hold the fast version to.
#[cfg(test)]
fn exact_score_reference(ctx: &StepContext, outcome: &MoveOutcome) -> f64 {
    let cluster = ctx.cluster;
    let map = if ctx.has_location {
        exact_map(ctx, outcome)
    } else {
        0.0
    };
    let changed = changed_values(outcome);
    score::weighted(&score::components_from_values(
        &ctx.group_nodes,
        |i| match changed.iter().find(|(j, _, _)| *j == i) {
            Some((_, off, v)) => (*off, v),
            None => (cluster.nodes[i].state.offline, &ctx.values[i]),
        },
        map,
    ))
}

/// One balancing step (htools' `tryBalance`): the best move of group `group` from score
/// `cur`, if it is accepted by the gain rules.
pub fn try_balance(
    cluster: &Cluster,
    group: usize,
    cur: f64,
    opts: &BalanceOptions,
) -> Option<(Step, MoveOutcome)> {
    let mut engine = bound::Engine::new(cluster, group, opts);
    with_helpers(worker_threads(opts), |helpers| {
        step(cluster, group, cur, opts, engine.as_mut(), helpers)
    })
}

/// One balancing step, screened with `engine`'s bounds when there is one (and they apply
/// to this cluster state), else exhaustively; then confirmed exactly.
fn step(
    cluster: &Cluster,
    group: usize,
    cur: f64,
    opts: &BalanceOptions,
    engine: Option<&mut bound::Engine>,
    helpers: &Helpers,
) -> Option<(Step, MoveOutcome)> {
    let ctx = StepContext::new(cluster, group, opts, cur);
    if ctx.group_nodes.is_empty() {
        return None;
    }
    let kept = match engine.and_then(|e| e.screen(&ctx, helpers)) {
        Some(kept) => kept,
        None => exhaustive_screen(&ctx),
    };
    confirm(&ctx, &kept, helpers)
}

/// The threads `opts` asks for (0: every available core).
fn worker_threads(opts: &BalanceOptions) -> usize {
    // Asked once: the answer reads the cgroup's CPU quota, and every step needs it.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match opts.threads {
        0 => *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        n => n,
    }
}

/// Screens every candidate move (on `opts.threads` threads): the candidates within
/// the step's window of the best estimate, in hbal's order.
fn exhaustive_screen(ctx: &StepContext) -> Vec<Candidate> {
    let cluster = ctx.cluster;
    let opts = ctx.opts;
    let instances: Vec<usize> = (0..cluster.instances.len())
        .filter(|&i| ctx.movable(i))
        .collect();
    let threads = worker_threads(opts).clamp(1, instances.len().max(1));
    let screen_chunk = |chunk: &[usize]| {
        let mut scratch = Scratch::new(cluster.nodes.len());
        let mut screen = Screen {
            best: ctx.cur,
            window: ctx.window,
            kept: Vec::new(),
        };
        for &i in chunk {
            screen_instance(ctx, i, &mut scratch, &mut screen);
        }
        screen
    };
    let screens: Vec<Screen> = if threads == 1 || instances.len() < 64 {
        vec![screen_chunk(&instances)]
    } else {
        // Contiguous chunks keep candidate order when concatenated.
        let size = instances.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = instances
                .chunks(size)
                .map(|chunk| scope.spawn(|| screen_chunk(chunk)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let best_estimate = screens.iter().map(|s| s.best).fold(f64::INFINITY, f64::min);
    screens
        .into_iter()
        .flat_map(|s| s.kept)
        .filter(|c| c.estimate <= best_estimate + ctx.window)
        .collect()
}

/// hbal's choice among the screened candidates `kept` (in hbal's order): the first with
/// the strictly lowest exact score, if the gain rules accept it.
fn confirm(
    ctx: &StepContext,
    kept: &[Candidate],
    helpers: &Helpers,
) -> Option<(Step, MoveOutcome)> {
    let cluster = ctx.cluster;
    let opts = ctx.opts;
    let cur = ctx.cur;
    // Each candidate is simulated and scored on its own (on every thread when there are
    // several); the choice is then made in hbal's order, as one scan would make it.
    // Only scores cross threads, so the threads free what they allocate.
    let score = |cand: &Candidate| -> Option<f64> {
        let Ok(outcome) = cluster.simulate_move(cand.instance, cand.mv, opts.force) else {
            debug_assert!(false, "screened move {cand:?} fails in the model");
            return None;
        };
        let exact = exact_score(ctx, &outcome);
        #[cfg(test)]
        assert_eq!(
            exact.to_bits(),
            exact_score_reference(ctx, &outcome).to_bits(),
            "{cand:?}"
        );
        Some(exact)
    };
    let scores: Vec<OnceLock<Option<f64>>> = kept.iter().map(|_| OnceLock::new()).collect();
    let next = AtomicUsize::new(0);
    let score_some = |_: usize| loop {
        let at = next.fetch_add(1, Ordering::Relaxed);
        let Some(cand) = kept.get(at) else { break };
        // Each index is taken once, so the cell is still empty.
        let _ = scores[at].set(score(cand));
    };
    if kept.len() > 1 {
        helpers.run(&score_some);
    } else {
        score_some(0);
    }
    let mut best: Option<(f64, &Candidate)> = None;
    let mut best_score = cur;
    for (cand, exact) in kept.iter().zip(scores) {
        if let Some(exact) = exact.into_inner().flatten().filter(|&e| e < best_score) {
            best_score = exact;
            best = Some((exact, cand));
        }
    }
    let (new, cand) = best?;
    let outcome = cluster
        .simulate_move(cand.instance, cand.mv, opts.force)
        .ok()?;
    if !(new < cur && (cur > opts.min_gain_limit || cur - new >= opts.min_gain)) {
        return None;
    }
    let inst = &cluster.instances[outcome.instance];
    let step = Step {
        instance: outcome.instance,
        mv: outcome.mv,
        old_pnode: inst.pnode,
        old_snode: inst.snode,
        pnode: outcome.pnode,
        snode: outcome.snode,
        score: new,
    };
    Some((step, outcome))
}

/// Balances group `group` (hbal's `iterateDepth`), applying each step to `cluster`;
/// `on_step` sees each step as it is taken (for progress reports).
pub fn balance_group(
    cluster: &mut Cluster,
    group: usize,
    opts: &BalanceOptions,
    on_step: &mut dyn FnMut(&Step),
) -> Plan {
    balance_group_with(cluster, group, opts, on_step, true)
}

/// [`balance_group`], screening with the bounds when `bounds` (and they apply), else
/// exhaustively; the decisions are the same either way.
fn balance_group_with(
    cluster: &mut Cluster,
    group: usize,
    opts: &BalanceOptions,
    on_step: &mut dyn FnMut(&Step),
    bounds: bool,
) -> Plan {
    balance_group_until(cluster, group, opts, on_step, bounds, &mut |_, _| false)
}

/// Balances group `group` like [`balance_group`] but only up to its first job set: the
/// steps from the first on that touch pairwise disjoint node sets (hbal's job sets,
/// `involved_nodes`). The step that would touch a node of the set again is computed,
/// not taken (neither applied nor returned), and no step after it is computed: the
/// daemon submits only the first job set and plans again from the new state.
///
/// The steps are bit for bit the full plan's first steps. hbal splits a whole plan into
/// job sets from its last step back, so its first set can end earlier, when later
/// steps chain differently; it is always a prefix of this one, and every step of this
/// one is independent of the others.
pub fn balance_first_job_set(cluster: &mut Cluster, group: usize, opts: &BalanceOptions) -> Plan {
    let mut busy: Vec<usize> = Vec::new();
    balance_group_until(cluster, group, opts, &mut |_| {}, true, &mut |_, step| {
        let nodes = step.involved_nodes();
        if nodes.iter().any(|n| busy.contains(n)) {
            return true;
        }
        busy.extend(nodes);
        false
    })
}

/// [`balance_group_with`], stopping (with [`StopReason::JobSetComplete`]) before the
/// first step for which `stop_before(steps so far, step)` is true.
fn balance_group_until(
    cluster: &mut Cluster,
    group: usize,
    opts: &BalanceOptions,
    on_step: &mut dyn FnMut(&Step),
    bounds: bool,
    stop_before: &mut dyn FnMut(&[Step], &Step) -> bool,
) -> Plan {
    let nodes = cluster.group_nodes(group);
    let initial = score::score(cluster, &nodes);
    let opt = score::optimal_score(cluster, &nodes);
    let mut plan = Plan {
        group,
        initial_score: initial,
        final_score: initial,
        steps: Vec::new(),
        stop: StopReason::NoImprovement,
    };
    if initial - opt < opts.min_score {
        plan.stop = StopReason::AlreadyBalanced;
        return plan;
    }
    let mut engine = if bounds {
        bound::Engine::new(cluster, group, opts)
    } else {
        None
    };
    let mut cur = initial;
    with_helpers(worker_threads(opts), |helpers| loop {
        if opts.max_steps.is_some_and(|m| plan.steps.len() >= m) {
            plan.stop = StopReason::StepLimit;
            break;
        }
        if cur <= opt + opts.min_score {
            plan.stop = StopReason::Optimal;
            break;
        }
        let Some((step, outcome)) = step(cluster, group, cur, opts, engine.as_mut(), helpers)
        else {
            plan.stop = StopReason::NoImprovement;
            break;
        };
        if stop_before(&plan.steps, &step) {
            plan.stop = StopReason::JobSetComplete;
            break;
        }
        let touched: Vec<usize> = outcome.nodes.iter().map(|(i, _)| *i).collect();
        cluster.apply_move(outcome);
        if let Some(engine) = engine.as_mut() {
            engine.update(cluster, &touched, opts, helpers);
        }
        cur = step.score;
        on_step(&step);
        plan.steps.push(step);
    });
    plan.final_score = cur;
    plan
}

/// Splits a plan into job sets (htools' `splitJobs`), scanning it from the last step back
/// as htools does. Returns step indices: sets in execution order, steps in plan order.
pub fn job_sets(steps: &[Step]) -> Vec<Vec<usize>> {
    let mut sets: Vec<Vec<usize>> = Vec::new();
    let mut busy: Vec<usize> = Vec::new();
    for (i, step) in steps.iter().enumerate().rev() {
        let nodes = step.involved_nodes();
        match sets.first_mut() {
            Some(first) if !nodes.iter().any(|n| busy.contains(n)) => {
                first.insert(0, i);
                busy.extend(nodes);
            }
            _ => {
                sets.insert(0, vec![i]);
                busy = nodes;
            }
        }
    }
    sets
}

/// hbal's short name of a move (`f`, `fa:T`, `r:T`, `f r:T f`, `r:T f`, `f r:T`).
pub fn move_name(cluster: &Cluster, mv: Move) -> String {
    let name = |n: usize| cluster.nodes[n].name().to_owned();
    match mv {
        Move::Failover => "f".to_owned(),
        Move::FailoverToAny(t) => format!("fa:{}", name(t)),
        Move::ReplaceSecondary(t) => format!("r:{}", name(t)),
        Move::ReplacePrimary(t) => format!("f r:{} f", name(t)),
        Move::ReplaceAndFailover(t) => format!("r:{} f", name(t)),
        Move::FailoverAndReplace(t) => format!("f r:{}", name(t)),
    }
}

/// The opcodes of one step's job (htools' `iMoveToJob`), without reason trails.
pub fn step_opcodes(cluster: &Cluster, step: &Step) -> Vec<OpBody> {
    let inst = cluster.instances[step.instance].name.as_str();
    let migrate = |target: Option<usize>| OpBody::InstanceMigrate {
        instance_name: inst.to_owned(),
        mode: None,
        target_node: target.map(|t| cluster.nodes[t].name().to_owned()),
        allow_failover: true,
        ignore_hvversions: true,
        allow_runtime_changes: false,
        cleanup: false,
    };
    let replace = |t: usize| OpBody::new_secondary(inst, cluster.nodes[t].name());
    match step.mv {
        Move::Failover => vec![migrate(None)],
        Move::FailoverToAny(t) => vec![migrate(Some(t))],
        Move::ReplaceSecondary(t) => vec![replace(t)],
        Move::ReplacePrimary(t) => vec![migrate(None), replace(t), migrate(None)],
        Move::ReplaceAndFailover(t) => vec![replace(t), migrate(None)],
        Move::FailoverAndReplace(t) => vec![migrate(None), replace(t)],
    }
}

/// hbal's solution line for step number `pos` (1-based), e.g.
/// `    1. web1   alpha:beta  => delta:beta    7.97930060 a=f r:delta f`.
pub fn solution_line(cluster: &Cluster, step: &Step, pos: usize) -> String {
    let node_len = cluster
        .nodes
        .iter()
        .map(|n| n.name().len())
        .max()
        .unwrap_or(0);
    let inst_len = cluster
        .instances
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(0);
    let pair = |p: usize, s: Option<usize>| match s {
        Some(s) => format!("{}:{}", cluster.nodes[p].name(), cluster.nodes[s].name()),
        None => cluster.nodes[p].name().to_owned(),
    };
    let width = 2 * node_len + 1;
    format!(
        "  {pos:3}. {:<inst_len$} {:<width$} => {:<width$} {:12.8} a={}",
        cluster.instances[step.instance].name,
        pair(step.old_pnode, step.old_snode),
        pair(step.pnode, step.snode),
        step.score,
        move_name(cluster, step.mv)
    )
}

/// Whether an instance's disk template can be moved by balancing at all.
pub fn balanceable_template(dt: DiskTemplate) -> bool {
    dt.movable()
}

mod bound;

#[cfg(test)]
mod tests;
