//! Times one full balance of an htools text cluster on one thread and on every core,
//! side by side in one process, and checks that both take the same steps.
//!
//! ```text
//! cargo run --release --example gen_cluster -- --nodes 1000 --instances 20000 --seed 1 -o c.txt
//! cargo run --release --example balance_bench -- c.txt [--max-steps N] [--threads N]
//! ```

use std::process::ExitCode;
use std::time::Instant;

use maintd::htools::balance::{self, BalanceOptions, Plan};
use maintd::htools::text;

fn run(cluster: &maintd::htools::model::Cluster, opts: &BalanceOptions) -> (Plan, f64) {
    let mut c = cluster.clone();
    let start = Instant::now();
    let plan = balance::balance_group(&mut c, 0, opts, &mut |_| {});
    (plan, start.elapsed().as_secs_f64())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: balance_bench FILE [--max-steps N] [--threads N] [--only seq|par]");
        return ExitCode::from(2);
    };
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let max_steps = flag("--max-steps").and_then(|v| v.parse().ok());
    let threads: usize = flag("--threads").and_then(|v| v.parse().ok()).unwrap_or(0);
    let only = flag("--only");
    let input = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(1);
        }
    };
    let cluster = match text::parse(&input) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(1);
        }
    };
    let base = BalanceOptions {
        max_steps,
        ..BalanceOptions::default()
    };
    let mut results = Vec::new();
    for (name, t) in [("sequential", 1), ("parallel", threads)] {
        if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        let opts = BalanceOptions {
            threads: t,
            ..base.clone()
        };
        let (plan, secs) = run(&cluster, &opts);
        println!(
            "{name:<10} threads={t} steps={} time={secs:.3}s final={:.8}",
            plan.steps.len(),
            plan.final_score
        );
        results.push(plan);
    }
    if results.len() == 2 && results[0] != results[1] {
        println!("DIFFERENT steps");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
