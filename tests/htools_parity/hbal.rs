//! Running `hbal -t FILE -C -v -v -v` and parsing what it prints on stdout: the initial
//! and final scores, one solution line per step and the `-C` command list grouped into
//! job sets. (`-p` tables go to stderr and are not needed.)
//!
//! A solution line is `  %3d. <inst> <opri>[:<osec>] => <npri>[:<nsec>] %12.8f a=<move>`
//! with `<move>` one of `f`, `fa:T`, `r:T`, `r:T f`, `f r:T f`, `f r:T`; names are padded
//! to a common width, so the parser splits on whitespace.

use std::path::Path;

use super::tools;

/// One balancing step as hbal prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HbalStep {
    /// The step number hbal printed (1-based).
    pub number: usize,
    pub instance: String,
    pub old_primary: String,
    pub old_secondary: Option<String>,
    pub new_primary: String,
    pub new_secondary: Option<String>,
    /// The cluster score after the step, exactly as printed (8 decimals).
    pub score: String,
    /// The move code after `a=`, e.g. `f r:node-0003 f`.
    pub moves: String,
}

impl HbalStep {
    /// The step in hbal's own format (without the padding).
    pub fn line(&self) -> String {
        format!(
            "{:3}. {} {} => {} {} a={}",
            self.number,
            self.instance,
            join_nodes(&self.old_primary, self.old_secondary.as_deref()),
            join_nodes(&self.new_primary, self.new_secondary.as_deref()),
            self.score,
            self.moves
        )
    }
}

/// `pri` or `pri:sec`, as in hbal's solution lines.
pub fn join_nodes(primary: &str, secondary: Option<&str>) -> String {
    match secondary {
        Some(secondary) => format!("{primary}:{secondary}"),
        None => primary.to_string(),
    }
}

fn split_nodes(text: &str) -> (String, Option<String>) {
    match text.split_once(':') {
        Some((primary, secondary)) => (primary.to_string(), Some(secondary.to_string())),
        None => (text.to_string(), None),
    }
}

/// One job of the `-C` output: the `gnt-instance` commands of one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HbalJob {
    pub commands: Vec<String>,
}

impl HbalJob {
    /// The instance the job acts on (the last word of its commands).
    pub fn instance(&self) -> Option<&str> {
        self.commands.first()?.split_whitespace().last()
    }
}

/// Everything the harness reads from one hbal run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HbalOutput {
    /// `Initial coefficients: overall X` (absent for an empty cluster).
    pub initial_score: Option<String>,
    /// `Final coefficients: overall X`.
    pub final_score: Option<String>,
    /// hbal printed `Cluster is already well balanced` and stopped before balancing.
    pub already_balanced: bool,
    pub steps: Vec<HbalStep>,
    /// The `-C` job sets, each a list of parallel jobs, in the printed order.
    pub job_sets: Vec<Vec<HbalJob>>,
}

impl HbalOutput {
    /// The instance names of each job set, the shape of `maintd plan --json`'s `job_sets`.
    pub fn job_set_instances(&self) -> Vec<Vec<String>> {
        self.job_sets
            .iter()
            .map(|set| {
                set.iter()
                    .map(|job| job.instance().unwrap_or_default().to_string())
                    .collect()
            })
            .collect()
    }
}

/// Parses one solution line; `None` for any other line.
pub fn parse_step_line(line: &str) -> Option<HbalStep> {
    let mut words = line.split_whitespace();
    let number = words.next()?.strip_suffix('.')?.parse().ok()?;
    let instance = words.next()?.to_string();
    let old = words.next()?;
    if words.next()? != "=>" {
        return None;
    }
    let new = words.next()?;
    let score = words.next()?;
    score.parse::<f64>().ok()?;
    let first_move = words.next()?.strip_prefix("a=")?;
    let moves = std::iter::once(first_move)
        .chain(words)
        .collect::<Vec<_>>()
        .join(" ");
    let (old_primary, old_secondary) = split_nodes(old);
    let (new_primary, new_secondary) = split_nodes(new);
    Some(HbalStep {
        number,
        instance,
        old_primary,
        old_secondary,
        new_primary,
        new_secondary,
        score: score.to_string(),
        moves,
    })
}

/// Parses hbal's stdout. Checks the structure it relies on (consecutive step numbers,
/// the announced job counts, `Solution length`), so that a format change fails loudly
/// instead of silently dropping steps.
pub fn parse(stdout: &str) -> Result<HbalOutput, String> {
    let mut out = HbalOutput::default();
    let mut lines = stdout.lines();
    let mut solution_length = None;
    // (set number, announced job count)
    let mut announced: Vec<(usize, usize)> = Vec::new();
    let mut in_commands = false;
    for line in lines.by_ref() {
        let trimmed = line.trim();
        if let Some(score) = trimmed.strip_prefix("Initial coefficients: overall ") {
            out.initial_score = Some(score.trim().to_string());
        } else if let Some(score) = trimmed.strip_prefix("Final coefficients:") {
            let score = score.trim().strip_prefix("overall ").unwrap_or_default();
            out.final_score = Some(score.trim().to_string());
        } else if trimmed.starts_with("Cluster is already well balanced") {
            out.already_balanced = true;
        } else if let Some(n) = trimmed.strip_prefix("Solution length=") {
            solution_length = Some(n.parse::<usize>().map_err(|e| format!("{line:?}: {e}"))?);
        } else if trimmed == "Commands to run to reach the above solution:" {
            in_commands = true;
        } else if in_commands && !trimmed.is_empty() {
            if let Some(rest) = trimmed.strip_prefix("echo jobset ") {
                let (set, jobs) = rest
                    .strip_suffix(" jobs")
                    .and_then(|r| r.split_once(", "))
                    .ok_or_else(|| format!("bad job set header {line:?}"))?;
                let set = set.parse().map_err(|_| format!("bad job set {line:?}"))?;
                let jobs = jobs
                    .parse()
                    .map_err(|_| format!("bad job count {line:?}"))?;
                announced.push((set, jobs));
                out.job_sets.push(Vec::new());
            } else if trimmed.starts_with("echo job ") {
                out.job_sets
                    .last_mut()
                    .ok_or_else(|| format!("job before any job set: {line:?}"))?
                    .push(HbalJob {
                        commands: Vec::new(),
                    });
            } else if trimmed.starts_with("gnt-instance ") {
                out.job_sets
                    .last_mut()
                    .and_then(|set| set.last_mut())
                    .ok_or_else(|| format!("command outside a job: {line:?}"))?
                    .commands
                    .push(trimmed.to_string());
            } else {
                in_commands = false;
            }
        } else if let Some(step) = parse_step_line(line) {
            if step.number != out.steps.len() + 1 {
                return Err(format!(
                    "step {} follows step {}: {line:?}",
                    step.number,
                    out.steps.len()
                ));
            }
            out.steps.push(step);
        }
    }
    if let Some(n) = solution_length {
        if n != out.steps.len() {
            return Err(format!(
                "hbal announced a solution of length {n} but {} step lines were parsed",
                out.steps.len()
            ));
        }
    }
    for (index, ((set, jobs), parsed)) in announced.iter().zip(&out.job_sets).enumerate() {
        if *set != index + 1 || *jobs != parsed.len() {
            return Err(format!(
                "job set {set} announces {jobs} jobs; parsed set {} with {} jobs",
                index + 1,
                parsed.len()
            ));
        }
        if let Some(job) = parsed.iter().find(|j| j.commands.is_empty()) {
            return Err(format!("job set {set} has a job without commands: {job:?}"));
        }
    }
    let jobs: usize = out.job_sets.iter().map(Vec::len).sum();
    if jobs != out.steps.len() {
        return Err(format!(
            "{} steps but {jobs} jobs in the -C output",
            out.steps.len()
        ));
    }
    Ok(out)
}

/// Options of one balancing run, understood by both hbal and `maintd plan --balance`
/// (hbal's flag first, maintd's second).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BalanceOptions {
    /// `-l N` / `--max-steps N`.
    pub max_steps: Option<usize>,
    /// `-G NAME` / `--group NAME` (required with several groups).
    pub group: Option<&'static str>,
    /// `--no-disk-moves` (both).
    pub no_disk_moves: bool,
    /// `--no-instance-moves` (both).
    pub no_instance_moves: bool,
    /// `-E` / `--evac-mode`: only instances on offline nodes move.
    pub evac_mode: bool,
    /// `--ignore-soft-errors` (both).
    pub ignore_soft_errors: bool,
    /// `-g X` / `--min-gain X`.
    pub min_gain: Option<f64>,
    /// `--min-gain-limit X` (both).
    pub min_gain_limit: Option<f64>,
}

impl BalanceOptions {
    /// A plan of at most `n` steps.
    pub fn first(n: usize) -> BalanceOptions {
        BalanceOptions {
            max_steps: Some(n),
            ..BalanceOptions::default()
        }
    }

    fn args(&self, hbal: bool) -> Vec<String> {
        let pick = |hbal_flag: &str, maintd_flag: &str| {
            if hbal {
                hbal_flag.to_string()
            } else {
                maintd_flag.to_string()
            }
        };
        let mut args = Vec::new();
        if let Some(n) = self.max_steps {
            args.extend([pick("-l", "--max-steps"), n.to_string()]);
        }
        if let Some(group) = self.group {
            args.extend([pick("-G", "--group"), group.to_string()]);
        }
        if self.no_disk_moves {
            args.push("--no-disk-moves".into());
        }
        if self.no_instance_moves {
            args.push("--no-instance-moves".into());
        }
        if self.evac_mode {
            args.push(pick("-E", "--evac-mode"));
        }
        if self.ignore_soft_errors {
            args.push("--ignore-soft-errors".into());
        }
        if let Some(gain) = self.min_gain {
            args.extend([pick("-g", "--min-gain"), gain.to_string()]);
        }
        if let Some(limit) = self.min_gain_limit {
            args.extend(["--min-gain-limit".to_string(), limit.to_string()]);
        }
        args
    }

    pub fn hbal_args(&self) -> Vec<String> {
        self.args(true)
    }

    pub fn maintd_args(&self) -> Vec<String> {
        self.args(false)
    }
}

/// The hbal arguments for `file` (printed in reproductions).
pub fn args(file: &str, options: &BalanceOptions) -> Vec<String> {
    let mut args = vec![
        "-t".to_string(),
        file.to_string(),
        "-C".into(),
        "-v".into(),
        "-v".into(),
        "-v".into(),
    ];
    args.extend(options.hbal_args());
    args
}

/// Runs hbal on `file` and parses its answer.
pub fn run(file: &Path, options: &BalanceOptions) -> Result<HbalOutput, String> {
    let output = tools::run(&tools::hbal()?, args(&file.display().to_string(), options))?;
    parse(&String::from_utf8_lossy(&output.stdout))
        .map_err(|e| format!("hbal on {}: {e}", file.display()))
}
