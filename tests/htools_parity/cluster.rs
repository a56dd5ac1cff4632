//! Generated test clusters: the generator parameters of one cluster
//! (`maintd::htools::generate`), generation into a temporary directory at test time
//! (nothing is cached in the repository), and the few facts of the text file the harness
//! needs (instance placement, status, node roles).

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

use maintd::htools::{
    evacuate::EvacMode,
    generate::{Generated, Spec},
};

/// The parameters of one generated cluster, spelled as the flags of the generator's
/// example binary. The same spec always yields byte-identical files, so a spec *is* the
/// reproduction of a cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub instances: usize,
    pub seed: u64,
    /// `--mix` (disk template weights); `None` = the generator's default
    /// (`drbd=0.6,plain=0.25,diskless=0.15`).
    pub mix: Option<&'static str>,
    pub groups: usize,
    pub offline: usize,
    pub drained: usize,
    pub location_tags: bool,
    pub exclusion_tags: bool,
    pub mem_noise: u32,
}

impl ClusterSpec {
    /// A single-group cluster with the generator's defaults.
    pub fn new(nodes: usize, instances: usize, seed: u64) -> ClusterSpec {
        ClusterSpec {
            nodes,
            instances,
            seed,
            mix: None,
            groups: 1,
            offline: 0,
            drained: 0,
            location_tags: false,
            exclusion_tags: true,
            mem_noise: 0,
        }
    }

    pub fn mix(mut self, mix: &'static str) -> ClusterSpec {
        self.mix = Some(mix);
        self
    }

    pub fn groups(mut self, groups: usize) -> ClusterSpec {
        self.groups = groups;
        self
    }

    pub fn offline(mut self, offline: usize, drained: usize) -> ClusterSpec {
        self.offline = offline;
        self.drained = drained;
        self
    }

    pub fn location_tags(mut self) -> ClusterSpec {
        self.location_tags = true;
        self
    }

    pub fn no_exclusion_tags(mut self) -> ClusterSpec {
        self.exclusion_tags = false;
        self
    }

    pub fn mem_noise(mut self, mib: u32) -> ClusterSpec {
        self.mem_noise = mib;
        self
    }

    /// The generator flags (without `-o` and the evacuation request options).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--nodes".to_string(),
            self.nodes.to_string(),
            "--instances".into(),
            self.instances.to_string(),
            "--seed".into(),
            self.seed.to_string(),
        ];
        if let Some(mix) = self.mix {
            args.extend(["--mix".into(), mix.into()]);
        }
        if self.groups != 1 {
            args.extend(["--groups".into(), self.groups.to_string()]);
        }
        if self.offline > 0 {
            args.extend(["--offline".into(), self.offline.to_string()]);
        }
        if self.drained > 0 {
            args.extend(["--drained".into(), self.drained.to_string()]);
        }
        if self.location_tags {
            args.push("--location-tags".into());
        }
        if !self.exclusion_tags {
            args.push("--no-exclusion-tags".into());
        }
        if self.mem_noise > 0 {
            args.extend(["--mem-noise".into(), self.mem_noise.to_string()]);
        }
        args
    }

    /// The generator's spec, read from [`ClusterSpec::args`] exactly as the example binary
    /// reads its command line, so that [`ClusterSpec::command`] regenerates the same bytes.
    pub fn generator(&self) -> Result<Spec, String> {
        Spec::from_args(self.args()).map_err(|e| format!("{self}: {e}"))
    }

    /// Generates the cluster in memory.
    pub fn generated(&self) -> Result<Generated, String> {
        self.generator()?
            .generate()
            .map_err(|e| format!("{self}: {e}"))
    }

    /// A short file-name-friendly label, unique per spec.
    pub fn label(&self) -> String {
        self.args()
            .join("_")
            .replace("--", "")
            .replace(['=', ',', '.'], "")
    }

    /// Writes the cluster to `dir/<label>.txt`.
    pub fn generate(&self, dir: &Path) -> Result<Cluster, String> {
        let generated = self.generated()?;
        self.write(dir, &generated, "")
    }

    /// Writes the cluster and a hail node-evacuate request for `nodes` (one or several)
    /// in `mode` (`primary`, `secondary` or `all`), returning the cluster and the request
    /// path. Each (nodes, mode) gets files of its own, so cases can run in parallel.
    pub fn generate_evacuation(
        &self,
        dir: &Path,
        nodes: &[String],
        mode: &str,
    ) -> Result<(Cluster, PathBuf), String> {
        let generated = self.generated()?;
        let suffix = format!("-evac-{}-{mode}", nodes.join("-"));
        let evac_mode: EvacMode = mode.parse().map_err(|e| format!("{e}"))?;
        let request = generated
            .evacuation_request(nodes, evac_mode)
            .map_err(|e| format!("{self}: {e}"))?;
        let request_path = dir.join(format!("{}{suffix}.json", self.label()));
        std::fs::write(&request_path, request)
            .map_err(|e| format!("writing {}: {e}", request_path.display()))?;
        let cluster = self.write(dir, &generated, &suffix)?;
        Ok((cluster, request_path))
    }

    fn write(&self, dir: &Path, generated: &Generated, suffix: &str) -> Result<Cluster, String> {
        let text = generated.text().map_err(|e| format!("{self}: {e}"))?;
        let path = dir.join(format!("{}{suffix}.txt", self.label()));
        std::fs::write(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Cluster::parse(self.clone(), path, &text)
    }

    /// The command, run from the repository, that regenerates this cluster as `FILE`.
    pub fn command(&self, file: &str) -> String {
        format!(
            "cargo run --example gen_cluster -- {} -o {file}",
            self.args().join(" ")
        )
    }

    /// The command that regenerates this cluster as `FILE` and the hail request for
    /// `nodes` (comma-separated) in `mode` as `REQUEST`.
    pub fn evacuation_command(&self, file: &str, request: &str, nodes: &str, mode: &str) -> String {
        format!(
            "{} --evac-request {request} --evac-node {nodes} --evac-mode {mode}",
            self.command(file)
        )
    }
}

impl fmt::Display for ClusterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.args().join(" "))
    }
}

/// Where an instance lives, whether it runs, and what it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub primary: String,
    pub secondary: Option<String>,
    /// `running` or `ERROR_up`: hbal's `-C` migrates these and fails the others over.
    pub running: bool,
    pub disk_template: String,
    /// Memory, MiB.
    pub mem: i64,
    /// Disk, MiB.
    pub dsk: i64,
}

impl Placement {
    /// Whether the instance's disk is in the nodes' LVM (counted in `f_dsk`).
    pub fn uses_local_disk(&self) -> bool {
        matches!(self.disk_template.as_str(), "drbd" | "plain")
    }
}

/// A node line: name, role (`M`, `N`, `Y`), free memory and free disk (MiB), group uuid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLine {
    pub name: String,
    pub role: String,
    pub f_mem: i64,
    pub f_dsk: i64,
    pub group: String,
}

/// A generated cluster on disk and what the harness reads back from it.
#[derive(Debug)]
pub struct Cluster {
    pub spec: ClusterSpec,
    pub path: PathBuf,
    /// The nodes in file order.
    pub nodes: Vec<NodeLine>,
    pub placement: HashMap<String, Placement>,
    /// The instance names in file order (htools' index order).
    pub instances: Vec<String>,
}

impl Cluster {
    /// Reads sections 2 (nodes) and 3 (instances) of the text format.
    pub fn parse(spec: ClusterSpec, path: PathBuf, text: &str) -> Result<Cluster, String> {
        let sections: Vec<&str> = text.split("\n\n").collect();
        if sections.len() < 4 {
            return Err(format!("{}: fewer than 4 sections", path.display()));
        }
        let number = |field: &str, line: &str| {
            field
                .parse::<i64>()
                .map_err(|e| format!("{}: {e} in {line:?}", path.display()))
        };
        let nodes = sections[1]
            .lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split('|').collect();
                match fields.as_slice() {
                    [name, _, _, f_mem, _, f_dsk, _, role, group, ..] => Ok(NodeLine {
                        name: name.to_string(),
                        role: role.to_string(),
                        f_mem: number(f_mem, line)?,
                        f_dsk: number(f_dsk, line)?,
                        group: group.to_string(),
                    }),
                    _ => Err(format!("{}: bad node line {line:?}", path.display())),
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut placement = HashMap::new();
        let mut instances = Vec::new();
        for line in sections[2].lines().filter(|l| !l.is_empty()) {
            let fields: Vec<&str> = line.split('|').collect();
            let [name, mem, dsk, _, status, _, pnode, snode, template, ..] = fields.as_slice()
            else {
                return Err(format!("{}: bad instance line {line:?}", path.display()));
            };
            instances.push(name.to_string());
            placement.insert(
                name.to_string(),
                Placement {
                    primary: pnode.to_string(),
                    secondary: (!snode.is_empty()).then(|| snode.to_string()),
                    running: matches!(*status, "running" | "ERROR_up"),
                    disk_template: template.to_string(),
                    mem: number(mem, line)?,
                    dsk: number(dsk, line)?,
                },
            );
        }
        Ok(Cluster {
            spec,
            path,
            nodes,
            placement,
            instances,
        })
    }

    /// Names of the nodes htools treats as offline (role `Y`: offline or drained).
    pub fn offline_nodes(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.role == "Y")
            .map(|n| n.name.as_str())
            .collect()
    }

    pub fn node(&self, name: &str) -> Option<&NodeLine> {
        self.nodes.iter().find(|n| n.name == name)
    }
}
