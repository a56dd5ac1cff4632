//! `maintd sim --cluster-only` as a separate process, and maintd's jobs as its queue shows
//! them; `maintd sim` with its own maintd.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{http_ok, path, within, Proc, MAINTD_SOURCE};

/// The simulated cluster to start.
#[derive(Debug, Clone)]
pub struct SimSpec {
    pub nodes: usize,
    pub instances: usize,
    pub seed: u64,
    /// How long each simulated job runs, seconds.
    pub job_seconds: f64,
    /// Further `maintd sim` flags.
    pub extra: Vec<String>,
}

impl SimSpec {
    /// `nodes` nodes and `instances` instances, seed 1, jobs of 0.3 s.
    pub fn new(nodes: usize, instances: usize) -> SimSpec {
        SimSpec {
            nodes,
            instances,
            seed: 1,
            job_seconds: 0.3,
            extra: Vec::new(),
        }
    }
}

/// `maintd sim --cluster-only` on loopback port 0 (killed on drop).
pub struct Sim {
    pub proc: Proc,
    /// Address of its control API.
    pub http: String,
    /// Diagnose URL template (with `{node}`).
    pub diagnose_url: String,
    pub luxi_socket: PathBuf,
}

impl Sim {
    /// Start `spec` with its sockets and state under `dir`; wait for its control API.
    pub fn start(dir: &Path, spec: &SimSpec) -> Sim {
        let luxi_socket = dir.join("q");
        let mut args: Vec<String> = vec![
            "sim".into(),
            "--cluster-only".into(),
            "--nodes".into(),
            spec.nodes.to_string(),
            "--instances".into(),
            spec.instances.to_string(),
            "--seed".into(),
            spec.seed.to_string(),
            "--job-seconds".into(),
            spec.job_seconds.to_string(),
            "--sim-listen".into(),
            "127.0.0.1:0".into(),
            "--luxi-socket".into(),
            path(&luxi_socket),
            "--state-dir".into(),
            path(&dir.join("sim")),
        ];
        args.extend(spec.extra.iter().cloned());
        let mut proc = Proc::spawn("sim", &args, &dir.join("sim.log"));
        let deadline = within(30);
        let control = proc.line("control API:", deadline);
        let http = control
            .strip_prefix("http://")
            .and_then(|rest| rest.split_once('/'))
            .map(|(addr, _)| addr.to_owned())
            .unwrap_or_else(|| panic!("control API line: {control:?}"));
        let diagnose_url = proc.line("diagnose URL:", deadline);
        assert!(diagnose_url.contains("{node}"), "{diagnose_url}");
        Sim {
            proc,
            http,
            diagnose_url,
            luxi_socket,
        }
    }

    /// `GET path` on the control API, which must answer 200.
    pub fn get(&self, path: &str) -> Value {
        http_ok(&self.http, "GET", path, None)
    }

    /// `GET path`, a JSON list.
    pub fn list(&self, path: &str) -> Vec<Value> {
        self.get(path).as_array().cloned().expect("a list")
    }

    /// Every node as the simulator shows it.
    pub fn nodes(&self) -> Vec<Value> {
        self.list("/sim/nodes")
    }

    /// Node `name`.
    pub fn node(&self, name: &str) -> Value {
        self.nodes()
            .into_iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The tags of node `name`.
    pub fn tags(&self, name: &str) -> Vec<String> {
        serde_json::from_value(self.node(name)["tags"].clone())
            .unwrap_or_else(|e| panic!("tags of {name}: {e}"))
    }

    /// Make `node`'s self-diagnose report `diagnose`.
    pub fn report(&self, node: &str, diagnose: &Value) {
        http_ok(
            &self.http,
            "PUT",
            &format!("/sim/nodes/{node}/diagnose"),
            Some(diagnose),
        );
    }

    /// Every job of the queue that carries maintd's reason trail.
    pub fn maintd_jobs(&self) -> Vec<MaintdJob> {
        self.list("/sim/jobs")
            .iter()
            .filter_map(MaintdJob::parse)
            .collect()
    }
}

/// One of maintd's jobs in the simulated queue.
#[derive(Debug)]
pub struct MaintdJob {
    pub id: u64,
    pub status: String,
    /// maintd's distinct reason texts over the job's opcodes (one, if all is well).
    pub texts: BTreeSet<String>,
    /// The incident named by the (first) reason text.
    pub incident: String,
    /// The submission key named by the (first) reason text.
    pub key: String,
    /// `OP_ID` of each opcode.
    pub opcodes: Vec<String>,
    /// The opcodes without their reason trails.
    pub bodies: Vec<Value>,
}

impl MaintdJob {
    /// The job if maintd submitted it (one of its opcodes has maintd's reason entry).
    pub fn parse(job: &Value) -> Option<MaintdJob> {
        let ops = job["ops"].as_array()?;
        let texts: BTreeSet<String> = ops
            .iter()
            .flat_map(|op| op["reason"].as_array().into_iter().flatten())
            .filter(|entry| entry[0] == MAINTD_SOURCE)
            .filter_map(|entry| entry[1].as_str().map(str::to_owned))
            .collect();
        let text = texts.first()?.clone();
        assert_eq!(texts.len(), 1, "one reason text per job: {job}");
        let after = |marker: &str, end: char| {
            text.split_once(marker)
                .and_then(|(_, rest)| rest.split(end).next())
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no {marker:?} in {text:?}"))
        };
        let bodies = ops
            .iter()
            .map(|op| {
                let mut op = op.clone();
                op.as_object_mut()
                    .expect("an opcode object")
                    .remove("reason");
                op
            })
            .collect();
        Some(MaintdJob {
            id: job["id"].as_u64().expect("job id"),
            status: job["status"].as_str().unwrap_or_default().to_owned(),
            incident: after("(incident ", ','),
            key: after("submission ", ')'),
            texts,
            opcodes: ops
                .iter()
                .map(|op| op["OP_ID"].as_str().unwrap_or_default().to_owned())
                .collect(),
            bodies,
        })
    }

    /// Whether the job has ended (successfully or not).
    pub fn finalized(&self) -> bool {
        matches!(self.status.as_str(), "success" | "error" | "canceled")
    }
}

/// `maintd sim`: maintd on its own simulated cluster, both on loopback ports chosen at
/// start (killed on drop).
pub struct SimWithMaintd {
    /// The process.
    pub proc: Proc,
    /// maintd's API, `host:port`.
    pub api: String,
    /// The simulator's control API, `host:port`.
    pub control: String,
}

impl SimWithMaintd {
    /// Start it with its state in `dir` and `options` (e.g. `--nodes 4`).
    pub fn start(dir: &Path, options: &[&str]) -> SimWithMaintd {
        let mut args: Vec<String> = [
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--sim-listen",
            "127.0.0.1:0",
            "--state-dir",
            &path(&dir.join("state")),
            "--luxi-socket",
            &path(&dir.join("luxi.sock")),
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(options.iter().map(|option| (*option).to_owned()));
        let mut proc = Proc::spawn("maintd sim", &args, &dir.join("sim.log"));
        let deadline = within(30);
        let address = |line: String| {
            line.strip_prefix("http://")
                .map(|rest| rest.split('/').next().unwrap_or_default().to_owned())
                .unwrap_or_else(|| panic!("not an http address: {line:?}"))
        };
        let control = address(proc.line("control API:", deadline));
        let api = address(proc.line("maintd API:", deadline));
        SimWithMaintd { proc, api, control }
    }
}
