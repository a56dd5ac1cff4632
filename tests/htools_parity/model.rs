//! The little htools knowledge the harness needs to read a plan independently of any
//! implementation: which move turns (pri, sec) into (pri', sec'), how hbal `-C` spells a
//! move (htools' `Cluster.computeMoves`), how a plan splits into job sets
//! (`Cluster.splitJobs`, scanned backwards), and how Haskell's `printf "%.8f"` rounds a
//! score.

use std::collections::HashMap;

use super::cluster::Placement;
use super::hbal::join_nodes;

/// The move code (`f`, `fa:T`, `r:T`, `r:T f`, `f r:T f`, `f r:T`) that takes an instance
/// from `(p, s)` to `(np, ns)`; `None` if no single htools move does that.
pub fn move_code(p: &str, s: Option<&str>, np: &str, ns: Option<&str>) -> Option<String> {
    match (s, ns) {
        (_, None) if np != p => Some(format!("fa:{np}")),
        (Some(s), Some(ns)) => {
            if np == s && ns == p {
                Some("f".into())
            } else if np == p && ns != s && ns != p {
                Some(format!("r:{ns}"))
            } else if ns == p && np != s && np != p {
                Some(format!("r:{np} f"))
            } else if ns == s && np != p && np != s {
                Some(format!("f r:{np} f"))
            } else if np == s && ns != p && ns != s {
                Some(format!("f r:{ns}"))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The commands hbal `-C` prints for `instance` making `moves` (htools'
/// `Cluster.computeMoves`): a running instance is migrated, a stopped one failed over.
pub fn commands(instance: &str, moves: &str, running: bool) -> Vec<String> {
    let migrate = if running {
        format!("gnt-instance migrate -f {instance}")
    } else {
        format!("gnt-instance failover -f {instance}")
    };
    let verb = if running { "migrate" } else { "failover" };
    let replace = |target: &str| format!("gnt-instance replace-disks -n {target} {instance}");
    let words: Vec<&str> = moves.split(' ').collect();
    match words.as_slice() {
        ["f"] => vec![migrate],
        [fa] if fa.starts_with("fa:") => {
            vec![format!("gnt-instance {verb} -f -n {} {instance}", &fa[3..])]
        }
        [r] if r.starts_with("r:") => vec![replace(&r[2..])],
        ["f", r, "f"] => vec![migrate.clone(), replace(&r[2..]), migrate],
        [r, "f"] => vec![replace(&r[2..]), migrate],
        ["f", r] => vec![migrate, replace(&r[2..])],
        _ => vec![format!("<unknown move {moves:?}>")],
    }
}

/// One step of a plan in node terms: the instance and its placement before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStep {
    pub instance: String,
    pub old: (String, Option<String>),
    pub new: (String, Option<String>),
}

impl NodeStep {
    /// Involved nodes: new primary, new secondary, old primary, old secondary, de-duplicated.
    pub fn nodes(&self) -> Vec<&str> {
        let mut nodes: Vec<&str> = Vec::new();
        for node in [
            Some(self.new.0.as_str()),
            self.new.1.as_deref(),
            Some(self.old.0.as_str()),
            self.old.1.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
        nodes
    }

    /// `inst old => new` as in hbal's solution lines.
    pub fn describe(&self) -> String {
        format!(
            "{} {} => {}",
            self.instance,
            join_nodes(&self.old.0, self.old.1.as_deref()),
            join_nodes(&self.new.0, self.new.1.as_deref())
        )
    }

    /// The move code taking `old` to `new`, or `?` when no single move does.
    pub fn move_code(&self) -> String {
        move_code(
            &self.old.0,
            self.old.1.as_deref(),
            &self.new.0,
            self.new.1.as_deref(),
        )
        .unwrap_or_else(|| "?".into())
    }
}

/// Replays steps given as (instance, new primary, new secondary) on the initial
/// placement, recording each step's old nodes. Unknown instances are an error.
pub fn replay<'a>(
    initial: &HashMap<String, Placement>,
    steps: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>)>,
) -> Result<Vec<NodeStep>, String> {
    let mut placement: HashMap<&str, (String, Option<String>)> = initial
        .iter()
        .map(|(name, p)| (name.as_str(), (p.primary.clone(), p.secondary.clone())))
        .collect();
    steps
        .into_iter()
        .enumerate()
        .map(|(index, (instance, primary, secondary))| {
            let current = placement
                .get_mut(instance)
                .ok_or_else(|| format!("step {}: unknown instance {instance:?}", index + 1))?;
            let new = (primary.to_string(), secondary.map(str::to_string));
            let old = std::mem::replace(current, new.clone());
            Ok(NodeStep {
                instance: instance.to_string(),
                old,
                new,
            })
        })
        .collect()
}

/// Splits a plan into job sets the htools way (`Cluster.splitJobs`, a left fold of
/// `mergeJobs` over the move list that hbal's `iterateDepth` keeps newest first, with
/// the nodes of `Cluster.involvedNodes`): scanning from the last step to the first, a
/// step joins the set opened most recently while its nodes are disjoint from the nodes
/// collected for that set, else it opens a new set. Returns step indices.
pub fn job_sets(steps: &[NodeStep]) -> Vec<Vec<usize>> {
    let mut sets: Vec<Vec<usize>> = Vec::new(); // front = latest created
    let mut buffer: Vec<&str> = Vec::new();
    for (index, step) in steps.iter().enumerate().rev() {
        let nodes = step.nodes();
        match sets.first_mut() {
            Some(set) if nodes.iter().all(|n| !buffer.contains(n)) => {
                set.insert(0, index);
                buffer.extend(nodes);
            }
            _ => {
                sets.insert(0, vec![index]);
                buffer = nodes;
            }
        }
    }
    sets
}

/// Formats `x` like Haskell's `printf "%.*f" decimals x` (GHC `showFFloat`): the
/// shortest decimal digits that identify `x` are rounded to `decimals` places, half to
/// even on those digits. Rust's `{:.8}` rounds the exact binary value instead, which
/// differs on rare ties, and score equality must be judged on hbal's own text.
pub fn haskell_fixed(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let sign = if x.is_sign_negative() && x != 0.0 {
        "-"
    } else {
        ""
    };
    // Shortest round-trip digits d1 d2 ... dn and exponent e with |x| = 0.d1...dn × 10^e.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exponent) = sci.split_once('e').expect("LowerExp has an exponent");
    let mut digits: Vec<u8> = mantissa
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    let mut e: i64 = exponent.parse::<i64>().expect("integer exponent") + 1;
    if digits.iter().all(|&d| d == 0) {
        digits = vec![0];
        e = 0;
    }
    let (int_digits, frac_digits) = if e >= 0 {
        let keep = decimals + e as usize;
        let (carry, mut rounded) = round_to(keep, &digits);
        let split = e as usize + carry;
        let frac = rounded.split_off(split);
        (rounded, frac)
    } else {
        let mut padded = vec![0; (-e) as usize];
        padded.extend(&digits);
        let (carry, rounded) = round_to(decimals, &padded);
        if carry > 0 {
            (vec![rounded[0]], rounded[1..].to_vec())
        } else {
            (vec![0], rounded)
        }
    };
    let to_text = |ds: &[u8]| ds.iter().map(|d| char::from(b'0' + d)).collect::<String>();
    let int_text = if int_digits.is_empty() {
        "0".to_string()
    } else {
        to_text(&int_digits)
    };
    if frac_digits.is_empty() {
        format!("{sign}{int_text}")
    } else {
        format!("{sign}{int_text}.{}", to_text(&frac_digits))
    }
}

/// GHC's `roundTo 10 n digits`: `n` digits rounded half-to-even, plus a carry (0 or 1);
/// with a carry the returned digits are `1` followed by `n` digits.
fn round_to(n: usize, digits: &[u8]) -> (usize, Vec<u8>) {
    fn go(n: usize, previous_even: bool, digits: &[u8]) -> (u8, Vec<u8>) {
        match (n, digits) {
            (_, []) => (0, vec![0; n]),
            (0, [first, rest @ ..]) => {
                let exactly_half = *first == 5 && previous_even && rest.iter().all(|&d| d == 0);
                (u8::from(!exactly_half && *first >= 5), Vec::new())
            }
            (_, [first, rest @ ..]) => {
                let (carry, mut tail) = go(n - 1, first % 2 == 0, rest);
                let digit = carry + first;
                if digit == 10 {
                    tail.insert(0, 0);
                    (1, tail)
                } else {
                    tail.insert(0, digit);
                    (0, tail)
                }
            }
        }
    }
    let (carry, mut rounded) = go(n, true, digits);
    if carry == 1 {
        rounded.insert(0, 1);
    }
    (usize::from(carry), rounded)
}
