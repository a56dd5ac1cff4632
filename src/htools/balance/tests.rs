use super::*;
use crate::htools::text::parse;

const EXAMPLE: &str = include_str!("../testdata/example.txt");

#[test]
fn example_takes_hbals_three_steps() {
    let mut c = parse(EXAMPLE).unwrap();
    let plan = balance_group(&mut c, 0, &BalanceOptions::default(), &mut |_| {});
    assert_eq!(format!("{:.8}", plan.initial_score), "12.47728348");
    let lines: Vec<String> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| solution_line(&c, s, i + 1))
        .collect();
    assert_eq!(
        lines,
        vec![
            "    1. web1   alpha:beta  => delta:beta    7.97930060 a=f r:delta f",
            "    2. db1    alpha:gamma => gamma:delta   5.36057290 a=f r:delta",
            "    3. web2   alpha:beta  => beta:gamma    3.27660968 a=f r:gamma",
        ]
    );
    assert_eq!(job_sets(&plan.steps), vec![vec![0], vec![1], vec![2]]);
}
