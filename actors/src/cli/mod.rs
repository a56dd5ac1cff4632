//! Command line (clap). `daemon` keeps ganeti-maintd's flags.

pub mod client;
pub mod incident_list;
pub mod plan;
pub mod state;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use maintd::config::{duration, BackendKind, Settings};

use crate::telemetry::LogFormat;

/// maintd: the Ganeti maintenance daemon.
#[derive(Debug, Parser)]
#[command(name = "maintd", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon for a real Ganeti cluster (on the master node).
    Daemon(DaemonArgs),
    /// Run the node agent (on every node): self-diagnose reports and repair commands.
    Agent(AgentArgs),
    /// Run the daemon on the built-in simulated cluster (or the simulated cluster alone).
    Sim(SimArgs),
    /// List the incidents of a running maintd, as gnt-* list commands do.
    Status(StatusArgs),
    /// Show one incident of a running maintd with its history.
    Info {
        /// The incident's uuid.
        uuid: String,
        /// Where maintd is.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Plan offline from an htools text file: balancing like hbal, node evacuation like hail.
    Plan(crate::cli::plan::PlanArgs),
    /// Cancel an incident of a running maintd.
    Cancel {
        /// The incident's uuid.
        uuid: String,
        /// Where maintd is.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pause a running maintd: no new action until `maintd resume` (jobs already running
    /// finish). The cluster tag maintd:paused does the same through Ganeti.
    Pause {
        /// Why, for the other operators (shown by GET /1/safety).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Where maintd is.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resume a paused maintd; also resets a tripped circuit breaker and releases
    /// flapping incidents (the incidents open now are acknowledged).
    Resume {
        /// Where maintd is.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the brakes of a running maintd: pause, circuit breaker, nodes in repair.
    Safety(ClientArgs),
    /// Inspect or reset maintd's state file (with maintd stopped).
    State {
        /// What to do.
        #[command(subcommand)]
        action: StateAction,
    },
}

/// `maintd state ...`.
#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Validate the state file and summarize it; exits 1 if it cannot be used.
    Check(StateArgs),
    /// Archive the state file as `state.json.reset-<unix time>` so that maintd starts
    /// empty (incidents, round and brakes are forgotten; running jobs are not touched).
    Reset(StateArgs),
}

/// Where the state file is.
#[derive(Debug, Args, Clone, Default)]
pub struct StateArgs {
    /// Configuration file whose daemon.state_dir to use.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The state directory (overrides the configuration).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Flags shared by `daemon` and `sim`.
#[derive(Debug, Args, Clone, Default)]
pub struct CommonArgs {
    /// Configuration file (TOML; see config/default.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Debug-level logging.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// How log lines are written.
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Directory of maintd's state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Minimum time between round starts: seconds, or with a unit (`500ms`, `5m`).
    #[arg(long, value_name = "SECONDS", value_parser = duration::parse)]
    pub round_delay: Option<Duration>,
    /// Time between two polls of a node's diagnose report: seconds, or with a unit.
    #[arg(long, value_name = "SECONDS", value_parser = duration::parse)]
    pub poll_interval: Option<Duration>,
    /// Observe and plan, but submit no job and set no tag (GET /1/plan shows the plan).
    #[arg(long)]
    pub dry_run: bool,
}

/// `maintd daemon`.
#[derive(Debug, Args, Clone, Default)]
pub struct DaemonArgs {
    /// Stay in the foreground (maintd never detaches; accepted for compatibility).
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// HTTP port.
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// HTTP bind address.
    #[arg(short = 'b', long)]
    pub bind: Option<String>,
    /// Skip the master check (needs --yes-do-it).
    #[arg(long)]
    pub no_voting: bool,
    /// Confirm --no-voting.
    #[arg(long)]
    pub yes_do_it: bool,
    /// Luxi socket of the master.
    #[arg(long, value_name = "PATH")]
    pub luxi_socket: Option<String>,
    /// Drive the cluster through its RAPI at this URL (https://HOST:5080) instead of Luxi;
    /// credentials and certificate come from the rapi_* settings of the cluster section.
    #[arg(long, value_name = "URL")]
    pub rapi_url: Option<String>,
    /// Diagnose report URL template with {node}.
    #[arg(long, value_name = "TEMPLATE")]
    pub diagnose_url: Option<String>,
    /// This node's name (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Serve plain HTTP instead of HTTPS (api.ssl = false), as ganeti-rapi's --no-ssl.
    #[arg(long)]
    pub no_ssl: bool,
    /// Reads need a user too (api.require_authentication), as ganeti-rapi's flag.
    #[arg(long)]
    pub require_authentication: bool,
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `maintd agent`. Each flag overrides one `[agent]` setting.
#[derive(Debug, Args, Clone, Default)]
pub struct AgentArgs {
    /// Configuration file (TOML; see the agent section of config/default.toml).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stay in the foreground (the agent never detaches; accepted for symmetry).
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Debug-level logging.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// How log lines are written.
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// HTTP listen address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Whitelist directory of diagnose commands.
    #[arg(long, value_name = "DIR")]
    pub diagnose_dir: Option<String>,
    /// Diagnose command (a file name in the diagnose directory; empty: built-in).
    #[arg(long, value_name = "NAME")]
    pub diagnose_command: Option<String>,
    /// Whitelist directory of repair commands.
    #[arg(long, value_name = "DIR")]
    pub repair_dir: Option<String>,
    /// The cluster's HMAC key file (must be readable when given).
    #[arg(long, value_name = "FILE")]
    pub hmac_key: Option<String>,
    /// Time between diagnose runs: seconds, or with a unit (`500ms`, `5m`).
    #[arg(long, value_name = "SECONDS", value_parser = duration::parse)]
    pub interval: Option<Duration>,
    /// This node's name (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Directory of the agent's state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<String>,
}

/// `maintd sim`.
#[derive(Debug, Args, Clone)]
pub struct SimArgs {
    /// maintd's HTTP API.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:1816")]
    pub listen: String,
    /// The simulator's control API and monitoring endpoints.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:1817")]
    pub sim_listen: String,
    /// Path of the simulator's Luxi socket (default: STATE_DIR/ganeti-query).
    #[arg(long, value_name = "PATH")]
    pub luxi_socket: Option<PathBuf>,
    /// Number of nodes.
    #[arg(long, default_value_t = 8)]
    pub nodes: usize,
    /// Number of instances.
    #[arg(long, default_value_t = 24)]
    pub instances: usize,
    /// Seed of the generated cluster.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds each simulated job runs.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub job_seconds: f64,
    /// Run only the simulated cluster, for a separately started `maintd daemon`.
    #[arg(long)]
    pub cluster_only: bool,
    /// Sign the nodes' diagnose reports with the HMAC key in FILE, as maintd's node
    /// agents do, for a daemon whose cluster.hmac_key is that file.
    #[arg(long, value_name = "FILE")]
    pub sign_reports: Option<PathBuf>,
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Where a client finds maintd.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Base URL of maintd's HTTP API (http:// when it runs with --no-ssl or as `maintd sim`).
    #[arg(long, default_value = "https://127.0.0.1:1816")]
    pub url: String,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
    /// User of Ganeti's RAPI users file (cancel, pause and resume need one with the write
    /// option).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// File whose first line is the user's password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The certificate maintd's HTTPS API must present (pinned; Ganeti's by default).
    #[arg(long, value_name = "FILE", default_value = "/var/lib/ganeti/rapi.pem")]
    pub certificate: PathBuf,
}

/// `maintd status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where maintd is.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Fields to show, comma-separated; `+FIELDS` adds to the default ones (uuid, node,
    /// action, status, age, tag, message). Also: jobs, command, ctime, mtime, confirmed,
    /// flapping, stuck.
    #[arg(short = 'o', long = "output", value_name = "FIELDS", value_parser = incident_list::parse_field_list)]
    pub fields: Option<incident_list::FieldList>,
    /// Do not print the title line.
    #[arg(long)]
    pub no_headers: bool,
    /// Separate fields with SEP instead of aligning them.
    #[arg(long, value_name = "SEP")]
    pub separator: Option<String>,
}

impl CommonArgs {
    /// The settings: the defaults, the built-in `layers` (e.g. the simulator's), the
    /// config file, the environment, then these flags; validated.
    pub fn settings(&self, layers: &[&str]) -> Result<Settings, String> {
        let mut settings =
            Settings::load_layered(layers, self.config.as_deref()).map_err(|e| e.to_string())?;
        if let Some(dir) = &self.state_dir {
            settings.daemon.state_dir = dir.display().to_string();
        }
        if let Some(delay) = self.round_delay {
            settings.rounds.round_delay = delay;
        }
        if let Some(interval) = self.poll_interval {
            settings.monitoring.poll_interval = interval;
        }
        if self.dry_run {
            settings.safety.dry_run = true;
        }
        settings.validate().map_err(|e| e.to_string())?;
        Ok(settings)
    }
}

impl DaemonArgs {
    /// The settings with every flag of `maintd daemon` applied; validated.
    pub fn settings(&self) -> Result<Settings, String> {
        let mut settings = self.common.settings(&[])?;
        let daemon = &mut settings.daemon;
        if let Some(port) = self.port {
            daemon.port = port;
        }
        if let Some(bind) = &self.bind {
            daemon.bind.clone_from(bind);
        }
        if let Some(name) = &self.node_name {
            daemon.node_name.clone_from(name);
        }
        if let Some(socket) = &self.luxi_socket {
            settings.cluster.luxi_socket.clone_from(socket);
        }
        if let Some(url) = &self.rapi_url {
            settings.cluster.rapi_url.clone_from(url);
            settings.cluster.backend = BackendKind::Rapi;
        }
        if let Some(url) = &self.diagnose_url {
            settings.monitoring.diagnose_url.clone_from(url);
        }
        if self.no_ssl {
            settings.api.ssl = false;
        }
        if self.require_authentication {
            settings.api.require_authentication = true;
        }
        settings.validate().map_err(|e| e.to_string())?;
        Ok(settings)
    }
}

impl AgentArgs {
    /// The settings with every flag of `maintd agent` applied; validated.
    pub fn settings(&self) -> Result<Settings, String> {
        let mut settings = Settings::load(self.config.as_deref()).map_err(|e| e.to_string())?;
        let agent = &mut settings.agent;
        for (flag, setting) in [
            (&self.listen, &mut agent.listen),
            (&self.diagnose_dir, &mut agent.diagnose_dir),
            (&self.diagnose_command, &mut agent.diagnose_command),
            (&self.repair_dir, &mut agent.repair_dir),
            (&self.hmac_key, &mut agent.hmac_key),
            (&self.node_name, &mut agent.node_name),
            (&self.state_dir, &mut agent.state_dir),
        ] {
            if let Some(value) = flag {
                setting.clone_from(value);
            }
        }
        if let Some(interval) = self.interval {
            agent.interval = interval;
        }
        settings.validate().map_err(|e| e.to_string())?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn ganeti_maintd_flags_parse() {
        let cli = Cli::try_parse_from([
            "maintd",
            "daemon",
            "-f",
            "-d",
            "-p",
            "1900",
            "-b",
            "127.0.0.1",
            "--no-voting",
            "--yes-do-it",
        ])
        .unwrap();
        let Command::Daemon(args) = cli.command else {
            panic!("not daemon")
        };
        assert!(args.foreground && args.common.debug && args.no_voting && args.yes_do_it);
        assert_eq!(args.port, Some(1900));
        assert_eq!(args.bind.as_deref(), Some("127.0.0.1"));
        assert_eq!(args.rapi_url, None);
    }

    #[test]
    fn rapi_url_flag_parses() {
        let cli = Cli::try_parse_from([
            "maintd",
            "daemon",
            "--rapi-url",
            "https://cluster.example.com:5080",
        ])
        .unwrap();
        let Command::Daemon(args) = cli.command else {
            panic!("not daemon")
        };
        assert_eq!(
            args.rapi_url.as_deref(),
            Some("https://cluster.example.com:5080")
        );
    }

    #[test]
    fn agent_flags_parse() {
        let cli = Cli::try_parse_from([
            "maintd",
            "agent",
            "-f",
            "-c",
            "/etc/maintd/agent.toml",
            "--listen",
            "127.0.0.1:0",
            "--diagnose-dir",
            "/d",
            "--diagnose-command",
            "hw",
            "--repair-dir",
            "/r",
            "--hmac-key",
            "/k",
            "--interval",
            "2.5",
            "--node-name",
            "node1",
            "--state-dir",
            "/s",
        ])
        .unwrap();
        let Command::Agent(args) = cli.command else {
            panic!("not agent")
        };
        assert!(args.foreground);
        assert_eq!(
            args.config.as_deref(),
            Some(Path::new("/etc/maintd/agent.toml"))
        );
        assert_eq!(args.listen.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(args.diagnose_command.as_deref(), Some("hw"));
        assert_eq!(args.hmac_key.as_deref(), Some("/k"));
        assert_eq!(args.interval, Some(Duration::from_millis(2500)));
        assert_eq!(args.node_name.as_deref(), Some("node1"));
        assert_eq!(args.state_dir.as_deref(), Some("/s"));
    }

    #[test]
    fn sim_flags_parse() {
        let cli = Cli::try_parse_from([
            "maintd",
            "sim",
            "--nodes",
            "8",
            "--instances",
            "24",
            "--seed",
            "1",
            "--round-delay",
            "1",
            "--job-seconds",
            "0.2",
            "--listen",
            "127.0.0.1:0",
            "--sim-listen",
            "127.0.0.1:0",
            "--state-dir",
            "/tmp/x",
        ])
        .unwrap();
        let Command::Sim(args) = cli.command else {
            panic!("not sim")
        };
        assert_eq!((args.nodes, args.instances, args.seed), (8, 24, 1));
        assert_eq!(args.common.round_delay, Some(Duration::from_secs(1)));
        assert_eq!(args.job_seconds, 0.2);
    }

    #[test]
    fn duration_flags_take_seconds_or_a_unit() {
        let parse = |flag: &str, value: &str| {
            let arg = format!("{flag}={value}");
            Cli::try_parse_from(["maintd", "sim", arg.as_str()]).map(|cli| match cli.command {
                Command::Sim(args) => (args.common.round_delay, args.common.poll_interval),
                _ => (None, None),
            })
        };
        assert_eq!(
            parse("--round-delay", "500ms").unwrap(),
            (Some(Duration::from_millis(500)), None)
        );
        assert_eq!(
            parse("--poll-interval", "2.5").unwrap(),
            (None, Some(Duration::from_millis(2500)))
        );
        assert_eq!(
            parse("--round-delay", "5m").unwrap().0,
            Some(Duration::from_secs(300))
        );
        for bad in ["-1", "NaN", "soon"] {
            let why = parse("--round-delay", bad).unwrap_err().to_string();
            assert!(
                why.contains("--round-delay") && why.contains(bad),
                "{bad}: {why}"
            );
        }
    }
}
