//! Running the implementation under test through its public contract:
//! `maintd plan --text FILE --balance [--max-steps N] --json` and
//! `maintd plan --text FILE --evacuate NODE --mode primary|secondary|all --json`.

use std::path::Path;

use serde_json::Value;

use super::{hail::Evacuation, hbal::BalanceOptions, tools};

/// One step of `maintd plan --balance --json`.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanStep {
    pub instance: String,
    pub primary: String,
    pub secondary: Option<String>,
    /// The move code (`f`, `r:T f`, ...) if maintd reports it (beyond the shape).
    pub moves: Option<String>,
    pub score: f64,
}

/// `maintd plan --balance --json`.
#[derive(Clone, Debug, PartialEq)]
pub struct BalancePlan {
    pub initial_score: f64,
    pub final_score: f64,
    pub steps: Vec<PlanStep>,
    pub job_sets: Vec<Vec<String>>,
}

fn field<'a>(value: &'a Value, key: &str) -> Result<&'a Value, String> {
    value
        .get(key)
        .ok_or_else(|| format!("missing {key:?} in {value}"))
}

fn number(value: &Value, key: &str) -> Result<f64, String> {
    field(value, key)?
        .as_f64()
        .ok_or_else(|| format!("{key:?} is not a number in {value}"))
}

fn text(value: &Value, key: &str) -> Result<String, String> {
    field(value, key)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{key:?} is not a string in {value}"))
}

impl BalancePlan {
    /// Parses the JSON object. A step without a secondary may say `null`, `""` or omit it.
    pub fn parse(json: &str) -> Result<BalancePlan, String> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| format!("maintd plan --json output is not JSON: {e}"))?;
        let steps = field(&value, "steps")?
            .as_array()
            .ok_or("\"steps\" is not an array")?
            .iter()
            .map(|step| {
                let secondary = match step.get("secondary") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.is_empty() => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(other) => return Err(format!("bad secondary {other}")),
                };
                Ok(PlanStep {
                    instance: text(step, "instance")?,
                    primary: text(step, "primary")?,
                    secondary,
                    moves: step.get("move").and_then(Value::as_str).map(str::to_string),
                    score: number(step, "score")?,
                })
            })
            .collect::<Result<_, String>>()?;
        let job_sets = field(&value, "job_sets")?
            .as_array()
            .ok_or("\"job_sets\" is not an array")?
            .iter()
            .map(|set| {
                set.as_array()
                    .ok_or_else(|| format!("job set {set} is not an array"))?
                    .iter()
                    .map(|name| {
                        name.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| format!("job set entry {name} is not a string"))
                    })
                    .collect()
            })
            .collect::<Result<_, String>>()?;
        Ok(BalancePlan {
            initial_score: number(&value, "initial_score")?,
            final_score: number(&value, "final_score")?,
            steps,
            job_sets,
        })
    }
}

/// The `maintd` arguments of a balancing run on `file` (printed in reproductions).
pub fn balance_args(file: &str, options: &BalanceOptions) -> Vec<String> {
    let mut args = vec![
        "plan".to_string(),
        "--text".into(),
        file.to_string(),
        "--balance".into(),
    ];
    args.extend(options.maintd_args());
    args.push("--json".into());
    args
}

/// The `maintd` arguments of an evacuation of `node` on `file`.
pub fn evacuate_args(file: &str, node: &str, mode: &str) -> Vec<String> {
    [
        "plan",
        "--text",
        file,
        "--evacuate",
        node,
        "--mode",
        mode,
        "--json",
    ]
    .map(str::to_string)
    .to_vec()
}

fn run_maintd(args: Vec<String>) -> Result<String, String> {
    let output = tools::run(&tools::maintd()?, args)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `maintd plan --balance --json` on `file`.
pub fn balance(file: &Path, options: &BalanceOptions) -> Result<BalancePlan, String> {
    BalancePlan::parse(&run_maintd(balance_args(
        &file.display().to_string(),
        options,
    ))?)
}

/// `maintd plan --evacuate NODE --mode MODE --json` on `file`.
pub fn evacuate(file: &Path, node: &str, mode: &str) -> Result<Evacuation, String> {
    Evacuation::from_maintd(&run_maintd(evacuate_args(
        &file.display().to_string(),
        node,
        mode,
    ))?)
}
