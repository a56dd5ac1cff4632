//! The htools text backend (Ganeti's `src/Ganeti/HTools/Backend/Text.hs`): what
//! `hbal -t FILE` reads and `hbal -S` writes.
//!
//! Sections are separated by exactly one empty line; records are `|`-separated fields;
//! numbers follow Haskell's `read` (leading spaces tolerated, trailing ones not). Every
//! malformed input is a [`TextError`] naming its 1-based line; nothing here panics.

use std::collections::HashMap;
use std::fmt;

use super::model::{
    AllocPolicy, Cluster, DiskTemplate, Group, IPolicy, ISpec, Instance, InstanceStatus, NodeData,
};

/// A malformed text file: the 1-based line (0 when the problem is the file as a whole)
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError {
    /// 1-based line number, 0 for the whole file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for TextError {}

/// One line of a section, with its 1-based number.
struct Line<'a> {
    number: usize,
    text: &'a str,
}

impl Line<'_> {
    fn error(&self, message: impl Into<String>) -> TextError {
        TextError {
            line: self.number,
            message: message.into(),
        }
    }

    fn fields(&self, min: usize, what: &str) -> Result<Vec<&str>, TextError> {
        let fields: Vec<&str> = self.text.split('|').collect();
        if fields.len() < min {
            return Err(self.error(format!(
                "{what} line has {} fields, at least {min} needed",
                fields.len()
            )));
        }
        Ok(fields)
    }
}

/// Parses an integer like Haskell's `read`: leading spaces, optional `-`, digits.
fn parse_int(text: &str) -> Option<i64> {
    let t = text.trim_start_matches([' ', '\t']);
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// Parses a float like Haskell's `read`: an integer, a decimal with digits on both
/// sides of the point, optionally an exponent. A value too large for a double is
/// refused rather than read as infinity, which `write` could not write back.
fn parse_float(text: &str) -> Option<f64> {
    let t = text.trim_start_matches([' ', '\t']);
    let body = t.strip_prefix('-').unwrap_or(t);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(pos) => (&body[..pos], Some(&body[pos + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    if let Some(e) = exponent {
        let e = e.strip_prefix('-').unwrap_or(e);
        if !all_digits(e) {
            return None;
        }
    }
    t.parse().ok().filter(|x: &f64| x.is_finite())
}

fn int_field(line: &Line, value: &str, name: &str) -> Result<i64, TextError> {
    parse_int(value).ok_or_else(|| line.error(format!("{name}: not an integer: {value:?}")))
}

fn float_field(line: &Line, value: &str, name: &str) -> Result<f64, TextError> {
    parse_float(value).ok_or_else(|| line.error(format!("{name}: not a number: {value:?}")))
}

fn yes_no(line: &Line, value: &str, name: &str) -> Result<bool, TextError> {
    match value {
        "Y" => Ok(true),
        "N" => Ok(false),
        _ => Err(line.error(format!("{name}: expected Y or N, not {value:?}"))),
    }
}

fn tag_list(value: &str) -> Vec<String> {
    if value.is_empty() {
        Vec::new()
    } else {
        value.split(',').map(str::to_owned).collect()
    }
}

/// Splits the file into sections of lines (one empty line separates two sections).
fn sections(input: &str) -> Vec<Vec<Line<'_>>> {
    // Haskell's `lines`: a final newline does not start another line.
    let body = input.strip_suffix('\n').unwrap_or(input);
    let mut out = vec![Vec::new()];
    if input.is_empty() {
        return out;
    }
    for (i, text) in body.split('\n').enumerate() {
        if text.is_empty() {
            out.push(Vec::new());
        } else if let Some(last) = out.last_mut() {
            last.push(Line {
                number: i + 1,
                text,
            });
        }
    }
    out
}

fn parse_group(line: &Line) -> Result<Group, TextError> {
    let f = line.fields(4, "group")?;
    let alloc_policy = AllocPolicy::parse(f[2])
        .ok_or_else(|| line.error(format!("unknown allocation policy {:?}", f[2])))?;
    Ok(Group {
        name: f[0].to_owned(),
        uuid: f[1].to_owned(),
        alloc_policy,
        tags: tag_list(f[3]),
        networks: f.get(4).map_or_else(Vec::new, |n| tag_list(n)),
        ipolicy: None,
    })
}

fn parse_node(line: &Line, groups: &[Group]) -> Result<NodeData, TextError> {
    let f = line.fields(9, "node")?;
    let group = groups
        .iter()
        .position(|g| g.uuid == f[8])
        .ok_or_else(|| line.error(format!("unknown group uuid {:?}", f[8])))?;
    if f[1..7].contains(&"?") {
        // No runtime data: an offline node with nothing.
        return Ok(NodeData {
            name: f[0].to_owned(),
            t_mem: 0.0,
            n_mem: 0,
            f_mem: 0,
            t_dsk: 0.0,
            f_dsk: 0,
            t_cpu: 0.0,
            offline: true,
            master: false,
            group,
            spindles: 0,
            tags: Vec::new(),
            excl_storage: false,
            free_spindles: 0,
            n_cpu: 0,
            cpu_speed: 1.0,
        });
    }
    let opt = |i: usize| f.get(i).copied();
    Ok(NodeData {
        name: f[0].to_owned(),
        t_mem: float_field(line, f[1], "total memory")?,
        n_mem: int_field(line, f[2], "node memory")?,
        f_mem: int_field(line, f[3], "free memory")?,
        t_dsk: float_field(line, f[4], "total disk")?,
        f_dsk: int_field(line, f[5], "free disk")?,
        t_cpu: float_field(line, f[6], "total cpus")?,
        offline: f[7] == "Y",
        master: f[7] == "M",
        group,
        spindles: opt(9).map_or(Ok(1), |v| int_field(line, v, "spindles"))?,
        tags: opt(10).map_or_else(Vec::new, tag_list),
        excl_storage: opt(11).map_or(Ok(false), |v| yes_no(line, v, "exclusive storage"))?,
        free_spindles: opt(12).map_or(Ok(0), |v| int_field(line, v, "free spindles"))?,
        n_cpu: opt(13).map_or(Ok(1), |v| int_field(line, v, "reserved cpus"))?,
        cpu_speed: opt(14).map_or(Ok(1.0), |v| float_field(line, v, "cpu speed"))?,
    })
}

fn parse_instance(line: &Line, nodes: &HashMap<String, usize>) -> Result<Instance, TextError> {
    let f = line.fields(10, "instance")?;
    let node = |name: &str| nodes.get(name).copied();
    let status = InstanceStatus::parse(f[4])
        .ok_or_else(|| line.error(format!("unknown instance status {:?}", f[4])))?;
    let pnode = node(f[6]).ok_or_else(|| line.error(format!("unknown primary node {:?}", f[6])))?;
    let snode = if f[7].is_empty() {
        None
    } else {
        Some(node(f[7]).ok_or_else(|| line.error(format!("unknown secondary node {:?}", f[7])))?)
    };
    let dt = DiskTemplate::parse(f[8])
        .ok_or_else(|| line.error(format!("unknown disk template {:?}", f[8])))?;
    if dt == DiskTemplate::Drbd && snode == Some(pnode) {
        return Err(line.error("secondary node is the primary node"));
    }
    let opt = |i: usize| f.get(i).copied();
    let spindles = match opt(11) {
        None | Some("-") => None,
        Some(v) => Some(int_field(line, v, "spindles")?),
    };
    Ok(Instance {
        name: f[0].to_owned(),
        mem: int_field(line, f[1], "memory")?,
        dsk: int_field(line, f[2], "disk")?,
        vcpus: int_field(line, f[3], "vcpus")?,
        status,
        auto_balance: yes_no(line, f[5], "auto_balance")?,
        pnode,
        snode,
        dt,
        tags: tag_list(f[9]),
        spindle_use: opt(10).map_or(Ok(1), |v| int_field(line, v, "spindle use"))?,
        spindles,
        forthcoming: opt(12).map_or(Ok(false), |v| yes_no(line, v, "forthcoming"))?,
        util: [1.0; 4],
        movable: false,
        excl: Vec::new(),
        dsrd: Vec::new(),
        loc_score: 0,
    })
}

fn parse_spec(line: &Line, text: &str) -> Result<ISpec, TextError> {
    let v: Vec<&str> = text.split(',').collect();
    if v.len() != 6 {
        return Err(line.error(format!("instance spec {text:?} needs 6 values")));
    }
    let n = |i: usize| int_field(line, v[i], "instance spec");
    Ok(ISpec {
        memory: n(0)?,
        cpus: n(1)?,
        disk_size: n(2)?,
        disk_count: n(3)?,
        nic_count: n(4)?,
        spindle_use: n(5)?,
    })
}

fn parse_policy(line: &Line) -> Result<(String, IPolicy), TextError> {
    let f = line.fields(6, "policy")?;
    let std = parse_spec(line, f[1])?;
    let specs = f[2]
        .split(';')
        .map(|s| parse_spec(line, s))
        .collect::<Result<Vec<_>, _>>()?;
    if specs.len() % 2 != 0 {
        return Err(line.error("min/max specs must come in pairs"));
    }
    let minmax = specs.chunks(2).map(|c| (c[0], c[1])).collect();
    let disk_templates = tag_list(f[3])
        .iter()
        .map(|t| {
            DiskTemplate::parse(t).ok_or_else(|| line.error(format!("unknown disk template {t:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        f[0].to_owned(),
        IPolicy {
            std,
            minmax,
            disk_templates,
            vcpu_ratio: float_field(line, f[4], "vcpu ratio")?,
            spindle_ratio: float_field(line, f[5], "spindle ratio")?,
        },
    ))
}

/// Reads a cluster in the text format.
pub fn parse(input: &str) -> Result<Cluster, TextError> {
    let sects = sections(input);
    if sects.len() < 4 {
        return Err(TextError {
            line: 0,
            message: format!(
                "Invalid format of the input file: {} sections instead of 4 or more",
                sects.len()
            ),
        });
    }
    let mut groups = sects[0]
        .iter()
        .map(parse_group)
        .collect::<Result<Vec<_>, _>>()?;
    let mut nodes = Vec::with_capacity(sects[1].len());
    // Node names to indices: a search of the list per instance is quadratic.
    let mut node_index = HashMap::with_capacity(sects[1].len());
    for line in &sects[1] {
        let node = parse_node(line, &groups)?;
        if node_index.insert(node.name.clone(), nodes.len()).is_some() {
            return Err(line.error(format!("duplicate node {:?}", node.name)));
        }
        nodes.push(node);
    }
    let mut instances = Vec::with_capacity(sects[2].len());
    for line in &sects[2] {
        let inst = parse_instance(line, &node_index)?;
        instances.push(inst);
    }
    let cluster_tags = sects[3].iter().map(|l| l.text.to_owned()).collect();
    let mut cluster_ipolicy = None;
    if let Some(policies) = sects.get(4) {
        for line in policies {
            let (owner, policy) = parse_policy(line)?;
            if owner.is_empty() {
                cluster_ipolicy = Some(policy);
            } else {
                let g = groups
                    .iter_mut()
                    .find(|g| g.name == owner)
                    .ok_or_else(|| line.error(format!("policy for unknown group {owner:?}")))?;
                g.ipolicy = Some(policy);
            }
        }
    }
    Cluster::new(groups, nodes, instances, cluster_tags, cluster_ipolicy).map_err(|e| TextError {
        line: 0,
        message: e.to_string(),
    })
}

/// Haskell's `show` for a double, as htools writes policy ratios (`4.0`, `0.25`,
/// `1.0e-2`).
pub fn haskell_show_double(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x:?}");
    }
    let a = x.abs();
    if (0.1..1e7).contains(&a) {
        return format!("{x:?}");
    }
    let sci = format!("{x:e}");
    match sci.split_once('e') {
        Some((m, e)) if !m.contains('.') => format!("{m}.0e{e}"),
        _ => sci,
    }
}

fn spec_text(s: &ISpec) -> String {
    format!(
        "{},{},{},{},{},{}",
        s.memory, s.cpus, s.disk_size, s.disk_count, s.nic_count, s.spindle_use
    )
}

fn policy_text(owner: &str, p: &IPolicy) -> String {
    let minmax: Vec<String> = p
        .minmax
        .iter()
        .map(|(a, b)| format!("{};{}", spec_text(a), spec_text(b)))
        .collect();
    let dts: Vec<&str> = p.disk_templates.iter().map(|d| d.name()).collect();
    format!(
        "{owner}|{}|{}|{}|{}|{}",
        spec_text(&p.std),
        minmax.join(";"),
        dts.join(","),
        haskell_show_double(p.vcpu_ratio),
        haskell_show_double(p.spindle_ratio)
    )
}

/// Writes the cluster as htools does (`hbal -S`): current placements and free disk, the
/// reported free memory.
pub fn write(cluster: &Cluster) -> String {
    let mut out = String::new();
    for g in &cluster.groups {
        out.push_str(&format!(
            "{}|{}|{}|{}|{}\n",
            g.name,
            g.uuid,
            g.alloc_policy.name(),
            g.tags.join(","),
            g.networks.join(",")
        ));
    }
    out.push('\n');
    for n in &cluster.nodes {
        let d = &n.data;
        let role = if d.offline {
            "Y"
        } else if d.master {
            "M"
        } else {
            "N"
        };
        out.push_str(&format!(
            "{}|{:.0}|{}|{}|{:.0}|{}|{:.0}|{}|{}|{}|{}|{}|{}|{}|{:?}\n",
            d.name,
            d.t_mem,
            d.n_mem,
            d.f_mem,
            d.t_dsk,
            n.state.f_dsk,
            d.t_cpu,
            role,
            cluster.groups[d.group].uuid,
            d.spindles,
            d.tags.join(","),
            if d.excl_storage { "Y" } else { "N" },
            d.free_spindles,
            d.n_cpu,
            d.cpu_speed
        ));
    }
    out.push('\n');
    for i in &cluster.instances {
        out.push_str(&format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}\n",
            i.name,
            i.mem,
            i.dsk,
            i.vcpus,
            i.status.name(),
            if i.auto_balance { "Y" } else { "N" },
            cluster.nodes[i.pnode].data.name,
            i.snode.map_or("", |s| cluster.nodes[s].data.name.as_str()),
            i.dt.name(),
            i.tags.join(","),
            i.spindle_use,
            i.spindles.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            if i.forthcoming { "Y" } else { "N" }
        ));
    }
    out.push('\n');
    for t in &cluster.cluster_tags {
        out.push_str(t);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&policy_text(
        "",
        &cluster.cluster_ipolicy.clone().unwrap_or_default(),
    ));
    out.push('\n');
    for g in &cluster.groups {
        out.push_str(&policy_text(&g.name, &g.effective_ipolicy()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
