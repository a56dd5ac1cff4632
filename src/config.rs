//! Settings. `config/default.toml` is the documented reference and is compiled in as the
//! base layer, so the documented defaults are the defaults.

use std::{path::Path, time::Duration};

use serde::Deserialize;
use thiserror::Error;

/// The documented defaults.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Faster timings for the built-in simulated cluster, layered over the defaults.
pub const SIM_TOML: &str = include_str!("../config/sim.toml");

/// Why settings could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A source could not be read or parsed.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("configuration: {0}")]
    Invalid(String),
}

/// All settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Process-level settings.
    pub daemon: DaemonSettings,
    /// How to reach the cluster.
    pub cluster: ClusterSettings,
    /// Diagnose polling.
    pub monitoring: MonitoringSettings,
    /// Round timing.
    pub rounds: RoundSettings,
    /// `[planner]`.
    pub planner: PlannerSettings,
    /// How live repairs run.
    pub repair: RepairSettings,
    /// `[agent]`: the node agent (`maintd agent`).
    pub agent: AgentSettings,
    /// `[safety]`: the brakes.
    pub safety: SafetySettings,
    /// `[replication]`: copies of the state on the master candidates.
    pub replication: ReplicationSettings,
}

/// `[replication]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSettings {
    /// Keep copies of the state on the master candidates' agents.
    pub enabled: bool,
    /// The master candidates; empty: Ganeti's `ssconf_master_candidates`.
    pub candidates: Vec<String>,
    /// Seconds per push or fetch to one agent.
    pub timeout: f64,
    /// Seconds a planned round waits for its state to reach a majority before its jobs
    /// are dropped unsubmitted.
    pub wait: f64,
    /// Seconds between pushes to candidates that lag behind.
    pub retry_interval: f64,
}

/// `[safety]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SafetySettings {
    /// Nodes in repair at once, cluster-wide (at least 1).
    pub max_nodes_in_repair: usize,
    /// Nodes in repair at once per node group, percent of the group, rounded up.
    pub max_percent_in_repair: f64,
    /// The breaker trips when more nodes than this have open incidents.
    pub breaker_nodes: usize,
    /// The breaker trips when more than this percentage of a group (at least two nodes)
    /// have open incidents.
    pub breaker_percent: f64,
    /// Observe and plan, submit nothing, set no tag.
    pub dry_run: bool,
    /// Consecutive polls a report must be seen in before maintd acts on it.
    pub confirm_polls: u32,
    /// New incidents per node and hour acted upon; beyond, they wait as flapping.
    pub max_incidents_per_node_per_hour: usize,
    /// Forgotten incidents kept for `/1/history`.
    pub history_size: usize,
}

impl SafetySettings {
    /// The limits as the domain takes them.
    pub fn limits(&self) -> crate::model::safety::SafetyLimits {
        crate::model::safety::SafetyLimits {
            max_nodes_in_repair: self.max_nodes_in_repair,
            max_percent_in_repair: self.max_percent_in_repair,
            breaker_nodes: self.breaker_nodes,
            breaker_percent: self.breaker_percent,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_nodes_in_repair == 0 {
            return Err(ConfigError::Invalid(
                "safety.max_nodes_in_repair must be at least 1".into(),
            ));
        }
        if self.confirm_polls == 0 {
            return Err(ConfigError::Invalid(
                "safety.confirm_polls must be at least 1".into(),
            ));
        }
        if self.max_incidents_per_node_per_hour == 0 {
            return Err(ConfigError::Invalid(
                "safety.max_incidents_per_node_per_hour must be at least 1".into(),
            ));
        }
        for (name, value) in [
            ("safety.max_percent_in_repair", self.max_percent_in_repair),
            ("safety.breaker_percent", self.breaker_percent),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= 100.0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be a percentage above 0 and at most 100, not {value}"
                )));
            }
        }
        Ok(())
    }
}

/// Highest accepted `max_connections`: far above any sane need, and low enough that the
/// descriptors it stands for fit under the usual hard limits.
pub const MAX_CONNECTIONS_LIMIT: usize = 65_536;

fn check_max_connections(name: &str, value: usize) -> Result<(), ConfigError> {
    if (1..=MAX_CONNECTIONS_LIMIT).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{name} must be from 1 to {MAX_CONNECTIONS_LIMIT}, not {value}"
        )))
    }
}

/// Ganeti's HMAC key, the documented default of `agent.hmac_key` and
/// `cluster.hmac_key`: a missing file there means "no key".
pub const DEFAULT_HMAC_KEY: &str = "/var/lib/ganeti/hmac.key";

/// `[agent]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// This node's name; empty: the host name.
    pub node_name: String,
    /// HTTP listen address, `ADDR:PORT`.
    pub listen: String,
    /// The cluster's HMAC key file; empty: none.
    pub hmac_key: String,
    /// Whitelist directory of diagnose commands.
    pub diagnose_dir: String,
    /// Diagnose command name; empty: the built-in diagnose.
    pub diagnose_command: String,
    /// Seconds between diagnose runs.
    pub interval: f64,
    /// Time limit of one diagnose run, seconds.
    pub diagnose_timeout: f64,
    /// Whitelist directory of repair commands.
    pub repair_dir: String,
    /// Time limit of one repair command, seconds.
    pub repair_timeout: f64,
    /// Output bytes kept per repair execution.
    pub max_output_bytes: usize,
    /// Repair executions remembered.
    pub keep_executions: usize,
    /// State directory.
    pub state_dir: String,
    /// Most HTTP connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl AgentSettings {
    /// Check ranges and the listen address.
    fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("agent.interval", self.interval),
            ("agent.diagnose_timeout", self.diagnose_timeout),
            ("agent.repair_timeout", self.repair_timeout),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be a positive number of seconds, not {value}"
                )));
            }
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "agent.listen must be ADDR:PORT (e.g. 0.0.0.0:1817), not {:?}",
                self.listen
            )));
        }
        if self.max_output_bytes == 0 || self.keep_executions == 0 {
            return Err(ConfigError::Invalid(
                "agent.max_output_bytes and agent.keep_executions must be positive".into(),
            ));
        }
        check_max_connections("agent.max_connections", self.max_connections)?;
        if !self.diagnose_command.is_empty() {
            crate::agent::whitelist::check_name(&self.diagnose_command)
                .map_err(|e| ConfigError::Invalid(format!("agent.diagnose_command: {e}")))?;
        }
        Ok(())
    }
}

/// `[repair]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepairSettings {
    /// Where live-repair commands run.
    pub method: RepairMethod,
    /// The node agent's base URL with `{node}`.
    pub agent_url: String,
    /// Seconds per request to an agent.
    pub agent_timeout: f64,
}

/// Where live-repair commands run.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RepairMethod {
    /// The node's maintd agent (Ganeti 3.x).
    Agent,
    /// `OP_REPAIR_COMMAND` in a Ganeti job (Ganeti 2.17, and the simulator).
    Opcode,
}

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonSettings {
    /// This node's name; empty: the host name.
    pub node_name: String,
    /// HTTP bind address.
    pub bind: String,
    /// HTTP port.
    pub port: u16,
    /// State directory.
    pub state_dir: String,
    /// Seconds between master checks.
    pub master_check_interval: f64,
    /// Most API connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Which interface drives the cluster.
    pub backend: BackendKind,
    /// Luxi socket path.
    pub luxi_socket: String,
    /// Ganeti's data directory on this node: ssconf files, `config.data`, certificates.
    pub ssconf_dir: String,
    /// Hold Ganeti's popular vote before working as master.
    pub voting: bool,
    /// noded's port, for the vote.
    pub noded_port: u16,
    /// Seconds per noded request.
    pub noded_timeout: f64,
    /// Ganeti's HMAC key file; empty or missing: none.
    pub hmac_key: String,
    /// Seconds per Luxi request.
    pub luxi_timeout: f64,
    /// Seconds between node-list refreshes.
    pub node_refresh_interval: f64,
    /// RAPI base URL (`https://host:5080`).
    pub rapi_url: String,
    /// File with the RAPI `user password`.
    pub rapi_credentials: String,
    /// PEM file with the pinned RAPI certificate; empty: none.
    pub rapi_certificate: String,
    /// PEM file with the CA certificates for the RAPI; empty: none.
    pub rapi_ca: String,
    /// Seconds per RAPI request.
    pub rapi_timeout: f64,
}

/// How maintd talks to the cluster.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// [`crate::backend::luxi::LuxiBackend`]: luxid's socket, on the master.
    Luxi,
    /// [`crate::backend::rapi::RapiBackend`]: the remote API over HTTPS, from anywhere.
    Rapi,
}

impl ClusterSettings {
    /// Check the RAPI settings when the RAPI backend is chosen (files are read at startup).
    fn validate_rapi(&self, planner: &PlannerSettings) -> Result<(), ConfigError> {
        if self.backend != BackendKind::Rapi {
            return Ok(());
        }
        if self.rapi_url.is_empty() {
            return Err(ConfigError::Invalid(
                "cluster.rapi_url is needed with cluster.backend = \"rapi\"".into(),
            ));
        }
        crate::backend::rapi::validate_url(&self.rapi_url)
            .map_err(|e| ConfigError::Invalid(format!("cluster.rapi_url: {e}")))?;
        if self.rapi_credentials.is_empty() {
            return Err(ConfigError::Invalid(
                "cluster.rapi_credentials (a file with \"user password\") is needed with \
                 cluster.backend = \"rapi\""
                    .into(),
            ));
        }
        if self.rapi_certificate.is_empty() && self.rapi_ca.is_empty() {
            return Err(ConfigError::Invalid(
                "cluster.rapi_certificate (the cluster's rapi.pem) or cluster.rapi_ca is \
                 needed with cluster.backend = \"rapi\""
                    .into(),
            ));
        }
        if planner.harep && planner.harep_job_delay > 0.0 {
            return Err(ConfigError::Invalid(
                "RAPI has no OP_TEST_DELAY: with cluster.backend = \"rapi\" and planner.harep, \
                 set planner.harep_job_delay = 0"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// `[monitoring]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonitoringSettings {
    /// Report URL template with `{node}`.
    pub diagnose_url: String,
    /// URL of each node's `cpu-avg-load` report, with `{node}`.
    pub load_url: String,
    /// Seconds between polls of one node.
    pub poll_interval: f64,
    /// Seconds per request.
    pub timeout: f64,
    /// Report size limit in bytes.
    pub max_report_bytes: usize,
    /// First restart backoff, seconds.
    pub backoff_initial: f64,
    /// Backoff cap, seconds.
    pub backoff_max: f64,
    /// Oldest signed report accepted, seconds.
    pub max_report_age: f64,
}

/// `[rounds]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoundSettings {
    /// Seconds between round starts.
    pub round_delay: f64,
    /// Seconds between job status queries.
    pub job_poll_interval: f64,
    /// Extra seconds after a failed round.
    pub error_backoff: f64,
    /// Seconds a job may wait or run before maintd cancels it (queued, waiting) or
    /// marks its incident stuck (running).
    pub job_timeout: f64,
    /// Retry an `evacuate` incident's failed live migration as a failover.
    pub escalate_to_failover: bool,
}

/// `[planner]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlannerSettings {
    /// `htools` or `simple`.
    pub engine: PlannerEngine,
    /// Do harep's work.
    pub harep: bool,
    /// Seconds of delay before each harep repair.
    pub harep_job_delay: f64,
    /// Balance untouched nodes.
    pub balance: bool,
    /// Minimum gain of a balancing step.
    pub balance_threshold: f64,
    /// Most steps of one balancing plan (0: no limit).
    pub balance_max_steps: usize,
    /// Allow disk moves when balancing.
    pub balance_disk_moves: bool,
    /// Balance on measured CPU load.
    pub balance_by_cpu_load: bool,
}

/// Which planner decides the rounds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlannerEngine {
    /// [`crate::planner::HtoolsPlanner`].
    Htools,
    /// [`crate::planner::SimplePlanner`].
    Simple,
}

impl PlannerSettings {
    /// The htools planner's settings.
    pub fn htools(&self) -> crate::planner::HtoolsSettings {
        crate::planner::HtoolsSettings {
            harep: self.harep,
            harep_job_delay: self.harep_job_delay,
            balance: self.balance,
            balance_threshold: self.balance_threshold,
            balance_max_steps: (self.balance_max_steps > 0).then_some(self.balance_max_steps),
            balance_disk_moves: self.balance_disk_moves,
            balance_by_cpu_load: self.balance_by_cpu_load,
        }
    }
}

impl Settings {
    /// Defaults, then `file` if given, then `MAINTD__SECTION__KEY` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_layered(&[], file)
    }

    /// Like [`Settings::load`] with extra built-in layers (e.g. [`SIM_TOML`]) over the defaults.
    pub fn load_layered(layers: &[&str], file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        for layer in layers {
            builder = builder.add_source(config::File::from_str(layer, config::FileFormat::Toml));
        }
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("MAINTD")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("replication.candidates")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The documented defaults alone.
    pub fn defaults() -> Self {
        let settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("config/default.toml is valid (checked by tests)");
        settings
    }

    /// Check ranges once, at startup.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_max_connections("daemon.max_connections", self.daemon.max_connections)?;
        let positive = [
            (
                "daemon.master_check_interval",
                self.daemon.master_check_interval,
            ),
            ("cluster.luxi_timeout", self.cluster.luxi_timeout),
            ("cluster.rapi_timeout", self.cluster.rapi_timeout),
            ("cluster.noded_timeout", self.cluster.noded_timeout),
            ("repair.agent_timeout", self.repair.agent_timeout),
            ("monitoring.max_report_age", self.monitoring.max_report_age),
            (
                "cluster.node_refresh_interval",
                self.cluster.node_refresh_interval,
            ),
            ("monitoring.poll_interval", self.monitoring.poll_interval),
            ("monitoring.timeout", self.monitoring.timeout),
            (
                "monitoring.backoff_initial",
                self.monitoring.backoff_initial,
            ),
            ("monitoring.backoff_max", self.monitoring.backoff_max),
            ("rounds.job_poll_interval", self.rounds.job_poll_interval),
            ("rounds.job_timeout", self.rounds.job_timeout),
            ("replication.timeout", self.replication.timeout),
            ("replication.wait", self.replication.wait),
            (
                "replication.retry_interval",
                self.replication.retry_interval,
            ),
        ];
        for (name, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be a positive number of seconds, not {value}"
                )));
            }
        }
        for (name, value) in [
            ("rounds.round_delay", self.rounds.round_delay),
            ("rounds.error_backoff", self.rounds.error_backoff),
            ("planner.harep_job_delay", self.planner.harep_job_delay),
            ("planner.balance_threshold", self.planner.balance_threshold),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be zero or more seconds, not {value}"
                )));
            }
        }
        if !self.monitoring.diagnose_url.contains("{node}") {
            return Err(ConfigError::Invalid(format!(
                "monitoring.diagnose_url must contain {{node}}: {:?}",
                self.monitoring.diagnose_url
            )));
        }
        if self.monitoring.max_report_bytes == 0 {
            return Err(ConfigError::Invalid(
                "monitoring.max_report_bytes must be positive".into(),
            ));
        }
        self.cluster.validate_rapi(&self.planner)?;
        self.agent.validate()?;
        self.safety.validate()?;
        Ok(())
    }
}

/// Seconds (as configured) to a `Duration`; callers validated the value.
pub fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn documented_defaults_load_and_validate() {
        let settings = Settings::defaults();
        settings.validate().unwrap();
        assert_eq!(settings.daemon.port, 1816);
        assert_eq!(settings.rounds.round_delay, 300.0);
        assert_eq!(
            settings.cluster.luxi_socket,
            "/var/run/ganeti/socket/ganeti-query"
        );
    }

    #[test]
    fn file_overrides_defaults_and_unknown_keys_are_refused() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[rounds]\nround_delay = 7").unwrap();
        let settings = Settings::load(Some(file.path())).unwrap();
        assert_eq!(settings.rounds.round_delay, 7.0);
        assert_eq!(settings.daemon.port, 1816);

        let mut bad = tempfile::NamedTempFile::new().unwrap();
        writeln!(bad, "[rounds]\nround_dleay = 7").unwrap();
        assert!(Settings::load(Some(bad.path())).is_err());
    }

    #[test]
    fn sim_layer_overrides_defaults() {
        let settings = Settings::load_layered(&[SIM_TOML], None).unwrap();
        assert_eq!(settings.monitoring.poll_interval, 1.0);
        assert_eq!(settings.daemon.port, 1816);
    }

    #[test]
    fn rapi_settings_are_checked_when_chosen() {
        let defaults = Settings::defaults();
        assert_eq!(defaults.cluster.backend, BackendKind::Luxi);
        assert_eq!(defaults.cluster.rapi_timeout, 60.0);

        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[cluster]\nbackend = \"rapi\"\nrapi_url = \"https://cluster.example.com:5080\"\n\
             rapi_credentials = \"/etc/maintd/rapi-credentials\"\n\
             rapi_certificate = \"/etc/maintd/rapi.pem\"\nrapi_timeout = 20"
        )
        .unwrap();
        let settings = Settings::load(Some(file.path())).unwrap();
        let rapi = crate::backend::rapi::RapiConfig::from_settings(&settings.cluster);
        assert_eq!(rapi.url, "https://cluster.example.com:5080");
        assert_eq!(
            rapi.pinned_certificate.as_deref(),
            Some(Path::new("/etc/maintd/rapi.pem"))
        );
        assert_eq!(rapi.ca, None);
        assert_eq!(rapi.timeout, Duration::from_secs(20));

        let refused = |change: &dyn Fn(&mut Settings)| {
            let mut s = settings.clone();
            change(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert!(refused(&|s| s.cluster.rapi_url.clear()).contains("rapi_url"));
        assert!(refused(&|s| s.cluster.rapi_url = "http://c:5080".into()).contains("https"));
        assert!(refused(&|s| s.cluster.rapi_credentials.clear()).contains("rapi_credentials"));
        assert!(refused(&|s| s.cluster.rapi_certificate.clear()).contains("rapi_ca"));
        assert!(refused(&|s| s.cluster.rapi_timeout = 0.0).contains("rapi_timeout"));
        assert!(refused(&|s| s.planner.harep = true).contains("harep_job_delay"));
        let mut harep = settings.clone();
        harep.planner.harep = true;
        harep.planner.harep_job_delay = 0.0;
        harep.validate().unwrap();
        // With Luxi, the RAPI keys are not needed.
        let mut luxi = settings.clone();
        luxi.cluster.backend = BackendKind::Luxi;
        luxi.cluster.rapi_url.clear();
        luxi.validate().unwrap();
    }

    #[test]
    fn agent_settings() {
        let defaults = Settings::defaults();
        assert_eq!(defaults.agent.listen, "0.0.0.0:1817");
        assert_eq!(defaults.agent.hmac_key, DEFAULT_HMAC_KEY);
        assert_eq!(defaults.agent.interval, 10.0);
        assert_eq!(defaults.agent.repair_timeout, 300.0);
        assert_eq!(defaults.agent.max_output_bytes, 65536);
        assert_eq!(defaults.agent.state_dir, "/var/lib/ganeti/maintd-agent");
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[agent]\ndiagnose_command = \"hw-check\"\ninterval = 3"
        )
        .unwrap();
        let settings = Settings::load(Some(file.path())).unwrap();
        assert_eq!(settings.agent.diagnose_command, "hw-check");
        assert_eq!(settings.agent.interval, 3.0);
        let refused = |change: &dyn Fn(&mut Settings)| {
            let mut s = Settings::defaults();
            change(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert!(refused(&|s| s.agent.listen = "1817".into()).contains("agent.listen"));
        assert!(refused(&|s| s.agent.interval = 0.0).contains("agent.interval"));
        assert!(refused(&|s| s.agent.diagnose_command = "../sh".into()).contains("slash"));
        assert!(refused(&|s| s.agent.keep_executions = 0).contains("keep_executions"));
    }

    #[test]
    fn invalid_values_are_refused() {
        let mut settings = Settings::defaults();
        settings.monitoring.diagnose_url = "http://x/".into();
        assert!(settings.validate().is_err());
        let mut settings = Settings::defaults();
        settings.monitoring.poll_interval = 0.0;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn connection_caps_are_bounded() {
        let defaults = Settings::defaults();
        assert_eq!(defaults.daemon.max_connections, 256);
        assert_eq!(defaults.agent.max_connections, 256);
        for value in [0, MAX_CONNECTIONS_LIMIT + 1] {
            let mut settings = Settings::defaults();
            settings.daemon.max_connections = value;
            assert!(settings.validate().is_err(), "daemon {value}");
            let mut settings = Settings::defaults();
            settings.agent.max_connections = value;
            assert!(settings.validate().is_err(), "agent {value}");
        }
        let mut settings = Settings::defaults();
        settings.daemon.max_connections = 1;
        settings.agent.max_connections = MAX_CONNECTIONS_LIMIT;
        settings.validate().unwrap();
    }
}
