//! `maintd daemon` as a separate process against a [`Sim`], and reading its API.

use std::{path::Path, time::Instant};

use serde_json::Value;

use super::{http, path, sim::Sim, wait_until, Proc, BIN};

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    /// The node it believes it runs on.
    pub node: String,
    /// `--round-delay`, seconds.
    pub round_delay: String,
    /// `--poll-interval`, seconds.
    pub poll_interval: String,
    /// The diagnose URL template; the simulator's when `None`.
    pub diagnose_url: Option<String>,
    /// Further flags.
    pub extra_args: Vec<String>,
    /// Extra environment (settings overrides).
    pub env: Vec<(&'static str, String)>,
}

impl DaemonSpec {
    /// On `node`, rounds every `round_delay` seconds, polls every 0.2 s.
    pub fn on(node: &str, round_delay: &str) -> DaemonSpec {
        DaemonSpec {
            node: node.to_owned(),
            round_delay: round_delay.to_owned(),
            poll_interval: "0.2".to_owned(),
            diagnose_url: None,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The arguments of `maintd` for this daemon against `sim`, its state in `dir/state`.
    pub fn args(&self, sim: &Sim, dir: &Path) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "daemon".into(),
            "-f".into(),
            "--luxi-socket".into(),
            path(&sim.luxi_socket),
            "--diagnose-url".into(),
            self.diagnose_url
                .clone()
                .unwrap_or_else(|| sim.diagnose_url.clone()),
            "--node-name".into(),
            self.node.clone(),
            "--state-dir".into(),
            path(&dir.join("state")),
            "-b".into(),
            "127.0.0.1".into(),
            "-p".into(),
            "0".into(),
            "--round-delay".into(),
            self.round_delay.clone(),
            "--poll-interval".into(),
            self.poll_interval.clone(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// A running `maintd daemon`; its API address once printed (killed on drop).
pub struct Daemon {
    pub proc: Proc,
    pub api: Option<String>,
    pub started: Instant,
}

impl Daemon {
    /// Start `spec` against `sim`, its state and log under `dir`.
    pub fn spawn(sim: &Sim, dir: &Path, spec: &DaemonSpec) -> Daemon {
        Daemon {
            proc: Proc::spawn_with_env(
                &format!("daemon on {}", spec.node),
                &spec.args(sim, dir),
                &spec.env,
                &dir.join("daemon.log"),
            ),
            api: None,
            started: Instant::now(),
        }
    }

    /// Like [`Daemon::spawn`], in a mount namespace of its own in which its state
    /// directory (`dir/state`) is a bind mount onto itself, which can then be made
    /// read-only underneath the running daemon. `unshare` and `sh` exec, so the child's
    /// pid is maintd's.
    pub fn spawn_with_own_state_mount(sim: &Sim, dir: &Path, spec: &DaemonSpec) -> Daemon {
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir).expect("state dir");
        let mut args: Vec<String> = [
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount --bind "$1" "$1" && shift && exec "$@""#,
            "sh",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        args.push(path(&state_dir));
        args.push(BIN.to_owned());
        args.extend(spec.args(sim, dir));
        Daemon {
            proc: Proc::spawn_program(
                &format!("daemon on {} (own mount namespace)", spec.node),
                Path::new("unshare"),
                &args,
                &spec.env,
                &dir.join("daemon.log"),
            ),
            api: None,
            started: Instant::now(),
        }
    }

    /// The API address, if printed yet.
    pub fn try_api(&mut self) -> Option<String> {
        if self.api.is_none() {
            self.api = self
                .proc
                .try_line("maintd API:")
                .map(|url| url.trim_start_matches("http://").to_owned());
        }
        self.api.clone()
    }

    /// `GET path` if the daemon answers it with 200 now.
    pub fn try_get(&mut self, path: &str) -> Option<Value> {
        let api = self.try_api()?;
        match http(&api, "GET", path, None) {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }

    /// Wait until the API answers `/1/status` with 200 (this node is master); its address.
    pub fn wait_serving(&mut self, deadline: Instant) -> String {
        let api = self
            .proc
            .line("maintd API:", deadline)
            .trim_start_matches("http://")
            .to_owned();
        self.api = Some(api.clone());
        wait_until(deadline, "/1/status to answer 200", || {
            matches!(http(&api, "GET", "/1/status", None), Ok((200, _))).then_some(())
        });
        api
    }

    /// `/1/status` if the daemon serves it now (not while starting, dying or idle).
    pub fn try_incidents(&mut self) -> Option<Vec<Value>> {
        self.try_get("/1/status")
            .map(|body| body.as_array().cloned().expect("incident list"))
    }

    /// Open and forgotten incidents, if the daemon serves now.
    pub fn try_all_incidents(&mut self) -> Option<Vec<Value>> {
        let mut all = self.try_incidents()?;
        let forgotten = self.try_get("/1/history?limit=1000")?;
        all.extend(forgotten.as_array().cloned().expect("history list"));
        Some(all)
    }
}
