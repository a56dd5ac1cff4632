//! `maintd plan`: the offline planner on an htools text file.
//!
//! `maintd plan --text FILE --balance` prints the balancing plan as hbal does (one
//! solution line per step); with `--json` it prints
//! `{"initial_score": x, "final_score": y, "steps": [...], "job_sets": [[...], ...]}`
//! where each step is `{"instance", "primary", "secondary", "move", "score"}` (`secondary`
//! is `null` without one) and `job_sets` lists, per set of jobs that may run in parallel
//! (htools' `splitJobs`, in execution order), the instance names of its steps in plan
//! order.
//!
//! `maintd plan --text FILE --evacuate NODE[,NODE...] --mode primary|secondary|all`
//! evacuates the nodes as hail's node-evacuate does (their primary and/or secondary
//! instances, in index order; `--ignore-soft-errors` like hail's) and prints one line per
//! moved instance with its opcodes, one per failure, and hail's summary; with `--json` it
//! prints hail's result keyed: `{"moved": [[instance, group, [nodes]]], "failed":
//! [[instance, reason]], "jobs": [[opcode, ...], ...]}`.

use std::io::Write;
use std::time::Instant;

use clap::Args;
use maintd::htools::{
    balance::{self, BalanceOptions, Plan},
    evacuate::{self, EvacMode},
    model::Cluster,
    text,
};
use serde_json::json;

/// Flags of `maintd plan`.
#[derive(Debug, Args, Clone, Default)]
pub struct PlanArgs {
    /// The cluster, in the htools text format (`hbal -t FILE`).
    #[arg(long, value_name = "FILE")]
    pub text: std::path::PathBuf,
    /// Compute a balancing plan (like `hbal`).
    #[arg(long)]
    pub balance: bool,
    /// Node group to balance (required when the cluster has several groups, like `hbal -G`).
    #[arg(long, short = 'G', value_name = "NAME")]
    pub group: Option<String>,
    /// Stop after this many steps (`hbal -l`).
    #[arg(long, value_name = "N")]
    pub max_steps: Option<usize>,
    /// Minimum gain per step once the score is below --min-gain-limit (`hbal -g`).
    #[arg(long, value_name = "X", default_value_t = 0.01)]
    pub min_gain: f64,
    /// Score below which --min-gain applies.
    #[arg(long, value_name = "X", default_value_t = 0.1)]
    pub min_gain_limit: f64,
    /// Do not move disks (only failovers).
    #[arg(long)]
    pub no_disk_moves: bool,
    /// Do not change primaries (only secondary replacements).
    #[arg(long)]
    pub no_instance_moves: bool,
    /// Only move instances with a node that is offline.
    #[arg(long)]
    pub evac_mode: bool,
    /// Ignore soft errors (N+1, CPU ratio, exclusion tags).
    #[arg(long)]
    pub ignore_soft_errors: bool,
    /// Threads evaluating candidate moves (0: all cores).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Print JSON instead of hbal-style lines.
    #[arg(long)]
    pub json: bool,
    /// Evacuate these nodes (comma-separated), like hail's node-evacuate.
    #[arg(long, value_name = "NODE[,NODE...]", value_delimiter = ',')]
    pub evacuate: Vec<String>,
    /// What --evacuate moves: primary, secondary or all (hail's primary-only,
    /// secondary-only, all).
    #[arg(long, value_enum, value_name = "MODE")]
    pub mode: Option<EvacuationMode>,
}

/// `--mode` of `maintd plan --evacuate`; hail's names are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvacuationMode {
    /// New primaries (hail's `primary-only`).
    #[value(alias = "primary-only")]
    Primary,
    /// New secondaries for DRBD instances (hail's `secondary-only`).
    #[value(alias = "secondary-only")]
    Secondary,
    /// New primaries and secondaries.
    All,
}

impl From<EvacuationMode> for EvacMode {
    fn from(mode: EvacuationMode) -> Self {
        match mode {
            EvacuationMode::Primary => EvacMode::PrimaryOnly,
            EvacuationMode::Secondary => EvacMode::SecondaryOnly,
            EvacuationMode::All => EvacMode::All,
        }
    }
}

/// What `maintd plan` was asked to compute.
enum PlanMode {
    /// hbal-style balancing of one group.
    Balance,
    /// hail-style node evacuation.
    Evacuate(EvacMode),
}

fn load(args: &PlanArgs) -> Result<Cluster, String> {
    let input = std::fs::read_to_string(&args.text)
        .map_err(|e| format!("cannot read {}: {e}", args.text.display()))?;
    text::parse(&input).map_err(|e| format!("{}: {e}", args.text.display()))
}

/// Runs `maintd plan`; returns the exit code.
pub fn run(args: &PlanArgs) -> Result<u8, String> {
    let mode = match (args.balance, args.evacuate.is_empty()) {
        (true, true) => PlanMode::Balance,
        (false, false) => {
            let mode = args
                .mode
                .ok_or("--evacuate needs --mode primary|secondary|all")?;
            PlanMode::Evacuate(mode.into())
        }
        (true, false) => return Err("give either --balance or --evacuate, not both".into()),
        (false, true) => {
            return Err(
                "nothing to plan: give --balance or --evacuate NODE[,NODE...] \
                        --mode primary|secondary|all"
                    .into(),
            )
        }
    };
    let mut cluster = load(args)?;
    match mode {
        PlanMode::Balance => run_balance(args, &mut cluster),
        PlanMode::Evacuate(mode) => run_evacuate(args, &cluster, mode),
    }
}

fn run_evacuate(args: &PlanArgs, cluster: &Cluster, mode: EvacMode) -> Result<u8, String> {
    let nodes: Vec<&str> = args.evacuate.iter().map(String::as_str).collect();
    let start = Instant::now();
    let result = evacuate::evacuate_nodes(cluster, &nodes, mode, args.ignore_soft_errors)
        .map_err(|e| e.to_string())?;
    if start.elapsed().as_secs_f64() >= 2.0 {
        let _ = writeln!(
            std::io::stderr(),
            "maintd plan: evacuation of {} instances in {:.2}s",
            result.moved.len() + result.failed.len(),
            start.elapsed().as_secs_f64()
        );
    }
    if args.json {
        println!("{}", result.to_json());
    } else {
        print!("{}", result.to_text());
    }
    Ok(0)
}

fn run_balance(args: &PlanArgs, cluster: &mut Cluster) -> Result<u8, String> {
    let group = match &args.group {
        Some(name) => cluster
            .group_index(name)
            .ok_or_else(|| format!("unknown node group {name}"))?,
        None if cluster.groups.len() == 1 => 0,
        None => return Err("the cluster has several node groups: choose one with --group".into()),
    };
    let opts = BalanceOptions {
        disk_moves: !args.no_disk_moves,
        instance_moves: !args.no_instance_moves,
        force: args.ignore_soft_errors,
        evac_mode: args.evac_mode,
        min_gain: args.min_gain,
        min_gain_limit: args.min_gain_limit,
        max_steps: args.max_steps,
        threads: args.threads,
        ..BalanceOptions::default()
    };
    let start = Instant::now();
    let snapshot = cluster.clone();
    let mut stderr = std::io::stderr();
    let mut last_report = Instant::now();
    let mut count = 0usize;
    let plan = balance::balance_group(cluster, group, &opts, &mut |step| {
        count += 1;
        if last_report.elapsed().as_secs_f64() >= 2.0 {
            last_report = Instant::now();
            let _ = writeln!(
                stderr,
                "maintd plan: {count} steps in {:.1}s, score {:.8}",
                start.elapsed().as_secs_f64(),
                step.score
            );
        }
    });
    if start.elapsed().as_secs_f64() >= 2.0 {
        let _ = writeln!(
            stderr,
            "maintd plan: {} steps in {:.2}s ({:.2} ms per step)",
            plan.steps.len(),
            start.elapsed().as_secs_f64(),
            1000.0 * start.elapsed().as_secs_f64() / plan.steps.len().max(1) as f64
        );
    }
    // Names and old placements come from the cluster as it was before the plan.
    let out = if args.json {
        balance_json(&snapshot, &plan) + "\n"
    } else {
        balance_text(&snapshot, &plan)
    };
    print!("{out}");
    Ok(0)
}

fn balance_json(cluster: &Cluster, plan: &Plan) -> String {
    let name = |n: usize| cluster.nodes[n].name().to_owned();
    let steps: Vec<_> = plan
        .steps
        .iter()
        .map(|s| {
            json!({
                "instance": cluster.instances[s.instance].name,
                "primary": name(s.pnode),
                "secondary": s.snode.map(name),
                "move": balance::move_name(cluster, s.mv),
                "score": s.score,
            })
        })
        .collect();
    let sets: Vec<Vec<&str>> = balance::job_sets(&plan.steps)
        .into_iter()
        .map(|set| {
            set.into_iter()
                .map(|i| cluster.instances[plan.steps[i].instance].name.as_str())
                .collect()
        })
        .collect();
    json!({
        "initial_score": plan.initial_score,
        "final_score": plan.final_score,
        "steps": steps,
        "job_sets": sets,
    })
    .to_string()
}

fn balance_text(cluster: &Cluster, plan: &Plan) -> String {
    let mut out = format!("Initial score: {:.8}\n", plan.initial_score);
    for (i, step) in plan.steps.iter().enumerate() {
        out.push_str(&balance::solution_line(cluster, step, i + 1));
        out.push('\n');
    }
    out.push_str(&format!(
        "Final score: {:.8} ({} steps)\n",
        plan.final_score,
        plan.steps.len()
    ));
    out
}
