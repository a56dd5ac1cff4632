//! Comparing maintd's answers with the oracle's, producing a readable reproduction for the
//! first difference of each kind.

use super::{
    cluster::Cluster,
    hail::Evacuation,
    hbal::{self, BalanceOptions, HbalOutput},
    maintd::{self, BalancePlan},
    model,
};

/// The comparison of one balancing run.
pub struct BalanceCase<'a> {
    pub cluster: &'a Cluster,
    pub options: BalanceOptions,
}

impl BalanceCase<'_> {
    /// How to reproduce this case by hand, from the repository root.
    pub fn reproduction(&self) -> String {
        format!(
            "  {}\n  hbal {}\n  maintd {}",
            self.cluster.spec.command("c.txt"),
            hbal::args("c.txt", &self.options).join(" "),
            maintd::balance_args("c.txt", &self.options).join(" ")
        )
    }

    /// Every difference between hbal's plan and maintd's; empty when they agree on the
    /// initial score, every step (instance, nodes, implied move, score to 8 decimals),
    /// the final score and the job sets.
    pub fn differences(&self, hbal: &HbalOutput, plan: &BalancePlan) -> Vec<String> {
        let mut diffs = Vec::new();
        let initial = model::haskell_fixed(plan.initial_score, 8);
        if let Some(expected) = &hbal.initial_score {
            if *expected != initial {
                diffs.push(format!(
                    "initial score: hbal {expected}, maintd {initial} ({:?})",
                    plan.initial_score
                ));
            }
        }
        let replayed = model::replay(
            &self.cluster.placement,
            plan.steps.iter().map(|s| {
                (
                    s.instance.as_str(),
                    s.primary.as_str(),
                    s.secondary.as_deref(),
                )
            }),
        );
        let maintd_steps = match replayed {
            Ok(steps) => steps,
            Err(e) => {
                diffs.push(format!("maintd's plan does not replay on the cluster: {e}"));
                return diffs;
            }
        };
        let first_difference = hbal
            .steps
            .iter()
            .zip(plan.steps.iter().zip(&maintd_steps))
            .position(|(h, (m, replay))| {
                h.instance != m.instance
                    || h.new_primary != m.primary
                    || h.new_secondary != m.secondary
                    || h.moves != replay.move_code()
                    || m.moves.as_ref().is_some_and(|code| *code != h.moves)
                    || h.score != model::haskell_fixed(m.score, 8)
            });
        if let Some(index) = first_difference {
            let (step, replay) = (&plan.steps[index], &maintd_steps[index]);
            let reported = match &step.moves {
                Some(code) if *code != replay.move_code() => format!(", reported move {code:?}"),
                _ => String::new(),
            };
            diffs.push(format!(
                "step {} differs (earlier steps agree):\n    hbal:   {}\n    maintd: {:3}. {} {} a={}   (score {:?}{reported})",
                index + 1,
                hbal.steps[index].line(),
                index + 1,
                replay.describe(),
                model::haskell_fixed(step.score, 8),
                replay.move_code(),
                step.score
            ));
        } else if hbal.steps.len() != plan.steps.len() {
            let (longer, who) = if hbal.steps.len() > plan.steps.len() {
                (hbal.steps[plan.steps.len()].line(), "hbal")
            } else {
                let next = plan.steps.len().min(hbal.steps.len());
                let (step, replay) = (&plan.steps[next], &maintd_steps[next]);
                (
                    format!(
                        "{:3}. {} {} a={}",
                        next + 1,
                        replay.describe(),
                        model::haskell_fixed(step.score, 8),
                        replay.move_code()
                    ),
                    "maintd",
                )
            };
            diffs.push(format!(
                "hbal takes {} steps, maintd {} (all common steps agree); {who} continues with:\n    {longer}",
                hbal.steps.len(),
                plan.steps.len()
            ));
        }
        if diffs.is_empty() {
            if let Some(expected) = &hbal.final_score {
                let last = plan.steps.last().map_or(plan.initial_score, |s| s.score);
                for (what, value) in [("final_score", plan.final_score), ("last step", last)] {
                    let got = model::haskell_fixed(value, 8);
                    if *expected != got {
                        diffs.push(format!("final score: hbal {expected}, maintd {what} {got}"));
                    }
                }
            }
            let expected_sets = hbal.job_set_instances();
            if expected_sets != plan.job_sets {
                let index = expected_sets
                    .iter()
                    .zip(&plan.job_sets)
                    .position(|(h, m)| h != m)
                    .unwrap_or(expected_sets.len().min(plan.job_sets.len()));
                diffs.push(format!(
                    "job sets differ ({} in hbal -C, {} in maintd); first difference at set {}:\n    hbal:   {:?}\n    maintd: {:?}",
                    expected_sets.len(),
                    plan.job_sets.len(),
                    index + 1,
                    expected_sets.get(index),
                    plan.job_sets.get(index)
                ));
            }
        }
        diffs
    }
}

/// The comparison of one node evacuation.
pub struct EvacuationCase<'a> {
    pub cluster: &'a Cluster,
    pub node: String,
    pub mode: &'static str,
}

impl EvacuationCase<'_> {
    /// How to reproduce this case by hand, from the repository root.
    pub fn reproduction(&self) -> String {
        format!(
            "  {}\n  hail -t c.txt r.json\n  maintd {}",
            self.cluster
                .spec
                .evacuation_command("c.txt", "r.json", &self.node, self.mode),
            maintd::evacuate_args("c.txt", &self.node, self.mode).join(" ")
        )
    }

    /// Differences in moved instances (with group and nodes), failures (with reasons) and
    /// jobs (opcodes compared as JSON values, so key order does not matter).
    pub fn differences(&self, hail: &Evacuation, maintd: &Evacuation) -> Vec<String> {
        let mut diffs = Vec::new();
        if hail.moved != maintd.moved {
            diffs.push(first_difference("moved", &hail.moved, &maintd.moved));
        }
        if hail.failed != maintd.failed {
            diffs.push(first_difference("failed", &hail.failed, &maintd.failed));
        }
        if hail.jobs != maintd.jobs {
            diffs.push(first_difference("jobs", &hail.jobs, &maintd.jobs));
        }
        diffs
    }
}

fn first_difference<T: PartialEq + std::fmt::Debug>(
    what: &str,
    hail: &[T],
    maintd: &[T],
) -> String {
    let index = hail
        .iter()
        .zip(maintd)
        .position(|(h, m)| h != m)
        .unwrap_or(hail.len().min(maintd.len()));
    format!(
        "{what} differ ({} in hail, {} in maintd); first difference at entry {}:\n    hail:   {:?}\n    maintd: {:?}",
        hail.len(),
        maintd.len(),
        index + 1,
        hail.get(index),
        maintd.get(index)
    )
}
