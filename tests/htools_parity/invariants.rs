//! Properties every balancing plan must have, checked on maintd's plans without the
//! oracle (so also on clusters too large for hbal): each step is one htools move of a
//! DRBD instance onto online nodes of its group that stays within the nodes' free memory
//! and disk, honours the move restrictions of the options, and strictly lowers the score;
//! the job sets are the backward split of the plan (htools' `Cluster.splitJobs`).

use std::collections::HashMap;

use super::{cluster::Cluster, hbal::BalanceOptions, maintd::BalancePlan, model};

/// Every violated property, as readable lines (empty when the plan is sound).
pub fn violations(cluster: &Cluster, options: &BalanceOptions, plan: &BalancePlan) -> Vec<String> {
    let mut problems = Vec::new();
    let steps = match model::replay(
        &cluster.placement,
        plan.steps.iter().map(|s| {
            (
                s.instance.as_str(),
                s.primary.as_str(),
                s.secondary.as_deref(),
            )
        }),
    ) {
        Ok(steps) => steps,
        Err(e) => return vec![e],
    };
    if let Some(limit) = options.max_steps {
        if steps.len() > limit {
            problems.push(format!("{} steps despite a limit of {limit}", steps.len()));
        }
    }
    let mut free_mem: HashMap<&str, i64> = cluster
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.f_mem))
        .collect();
    let mut free_dsk: HashMap<&str, i64> = cluster
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.f_dsk))
        .collect();
    let mut previous = plan.initial_score;
    for (index, (step, planned)) in steps.iter().zip(&plan.steps).enumerate() {
        let at = format!(
            "step {} ({} a={})",
            index + 1,
            step.describe(),
            step.move_code()
        );
        let instance = &cluster.placement[&step.instance];
        let code = step.move_code();
        if code == "?" {
            problems.push(format!("{at}: not a single htools move"));
        }
        if instance.disk_template != "drbd" {
            problems.push(format!(
                "{at}: {} instances are not moved by balancing",
                instance.disk_template
            ));
        }
        // Nodes the instance newly occupies must be online (an old node may stay, e.g. the
        // offline primary becoming the secondary in `r:T f`).
        let old_group = cluster.node(&step.old.0).map(|n| n.group.as_str());
        let old_nodes = [Some(&step.old.0), step.old.1.as_ref()];
        let gained = [Some(&step.new.0), step.new.1.as_ref()]
            .into_iter()
            .flatten()
            .filter(|n| !old_nodes.contains(&Some(n)));
        for node in gained {
            match cluster.node(node) {
                None => problems.push(format!("{at}: unknown node {node}")),
                Some(n) if n.role == "Y" => problems.push(format!("{at}: {node} is offline")),
                Some(n) if Some(n.group.as_str()) != old_group => {
                    problems.push(format!("{at}: {node} is in another group"))
                }
                Some(_) => {}
            }
        }
        if step.new.1.as_ref() == Some(&step.new.0) {
            problems.push(format!("{at}: primary and secondary are the same node"));
        }
        if options.no_disk_moves && code != "f" {
            problems.push(format!("{at}: a disk move despite --no-disk-moves"));
        }
        let replaces_secondary_only = code.starts_with("r:") && !code.contains(' ');
        if options.no_instance_moves && !replaces_secondary_only {
            problems.push(format!(
                "{at}: a primary change despite --no-instance-moves"
            ));
        }
        if options.evac_mode {
            let on_offline = [Some(&step.old.0), step.old.1.as_ref()]
                .into_iter()
                .flatten()
                .any(|n| cluster.node(n).is_some_and(|n| n.role == "Y"));
            if !on_offline {
                problems.push(format!(
                    "{at}: --evac-mode moves only instances on offline nodes"
                ));
            }
        }
        // Resources: the primary needs the memory of a running instance, every node of a
        // local-disk instance its disk.
        if instance.running && step.old.0 != step.new.0 {
            *free_mem.entry(step.old.0.as_str()).or_default() += instance.mem;
            let left = free_mem.entry(step.new.0.as_str()).or_default();
            *left -= instance.mem;
            if *left < 0 {
                problems.push(format!(
                    "{at}: {} lacks {} MiB of memory",
                    step.new.0, -*left
                ));
            }
        }
        if instance.uses_local_disk() {
            let old = [Some(&step.old.0), step.old.1.as_ref()];
            let new = [Some(&step.new.0), step.new.1.as_ref()];
            for node in old.iter().flatten().filter(|n| !new.contains(&Some(n))) {
                *free_dsk.entry(node.as_str()).or_default() += instance.dsk;
            }
            for node in new.iter().flatten().filter(|n| !old.contains(&Some(n))) {
                let left = free_dsk.entry(node.as_str()).or_default();
                *left -= instance.dsk;
                if *left < 0 {
                    problems.push(format!("{at}: {node} lacks {} MiB of disk", -*left));
                }
            }
        }
        // `>=` alone would let a NaN score through.
        let lowers = planned.score < previous;
        if !lowers || planned.score < 0.0 {
            problems.push(format!("{at}: score {} after {previous}", planned.score));
        }
        previous = planned.score;
    }
    if plan.final_score != previous {
        problems.push(format!(
            "final_score {} but the plan ends at {previous}",
            plan.final_score
        ));
    }
    let expected_sets: Vec<Vec<String>> = model::job_sets(&steps)
        .into_iter()
        .map(|set| set.into_iter().map(|i| steps[i].instance.clone()).collect())
        .collect();
    if expected_sets != plan.job_sets {
        problems.push(format!(
            "job sets {:?} are not the backward split {expected_sets:?}",
            plan.job_sets
        ));
    }
    problems
}
