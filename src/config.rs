//! Settings. `config/default.toml` is the documented reference and is compiled in as the
//! base layer, so the documented defaults are the defaults. Durations are
//! [`Duration`]s, written as seconds or with a unit (see [`duration`]).

pub mod duration;

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
    /// `[api]`: who may use maintd's HTTP API, and how it is served.
    pub api: ApiSettings,
    /// `[notify]`: webhook notifications of incident transitions.
    pub notify: NotifySettings,
}

/// `[notify]`: where and how each incident transition is POSTed (see [`crate::notify`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// The receiver, `http://` or `https://`; empty: no notifications.
    pub webhook_url: String,
    /// The file holding the shared secret that signs each notification.
    pub secret_file: String,
    /// Time limit of one delivery: connecting, sending, the answer.
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// Notifications kept while the receiver does not take them; beyond, the oldest are
    /// dropped.
    pub queue_limit: usize,
    /// Wait after the first failed delivery; doubled after each further one.
    #[serde(deserialize_with = "duration::deserialize")]
    pub retry_initial: Duration,
    /// Longest wait between deliveries of the same notification.
    #[serde(deserialize_with = "duration::deserialize")]
    pub retry_max: Duration,
    /// CA certificates (PEM) that vouch for an `https://` receiver.
    pub ca_file: String,
}

impl NotifySettings {
    /// Notifications are on.
    pub fn enabled(&self) -> bool {
        !self.webhook_url.is_empty()
    }

    /// The retry delays as a [`crate::backoff::Backoff`].
    pub fn backoff(&self) -> crate::backoff::Backoff {
        crate::backoff::Backoff::new(self.retry_initial, self.retry_max)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_durations(
            &[
                ("notify.timeout", self.timeout),
                ("notify.retry_initial", self.retry_initial),
                ("notify.retry_max", self.retry_max),
            ],
            &[],
        )?;
        if self.queue_limit == 0 {
            return Err(ConfigError::Invalid(
                "notify.queue_limit must be at least 1".into(),
            ));
        }
        if !self.enabled() {
            return Ok(());
        }
        let uri: Option<awc::http::Uri> = self.webhook_url.parse().ok();
        let usable = uri.as_ref().is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
        });
        if !usable {
            return Err(ConfigError::Invalid(format!(
                "notify.webhook_url must be an http:// or https:// URL, not {:?}",
                self.webhook_url
            )));
        }
        if self.secret_file.is_empty() {
            return Err(ConfigError::Invalid(
                "notify.secret_file is needed with notify.webhook_url: notifications are always signed".into(),
            ));
        }
        Ok(())
    }
}

/// `[api]`: authentication and TLS of maintd's HTTP API, the way ganeti-rapi does them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Ganeti's RAPI users file: the users who may write (and, with
    /// `require_authentication`, read).
    pub users_file: String,
    /// Reads need a user too (ganeti-rapi's `--require-authentication`).
    pub require_authentication: bool,
    /// Serve HTTPS (ganeti-rapi's default; `--no-ssl` turns it off).
    pub ssl: bool,
    /// Key and certificate in one PEM file, as Ganeti keeps `rapi.pem`.
    pub certificate: String,
    /// Host names a browser may use to reach the API besides this node's names and
    /// `localhost` (IP addresses are always allowed): the cluster name, a DNS alias.
    pub allowed_hosts: Vec<String>,
}

/// `[replication]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSettings {
    /// Keep copies of the state on the master candidates' agents.
    pub enabled: bool,
    /// The master candidates; empty: Ganeti's `ssconf_master_candidates`.
    pub candidates: Vec<String>,
    /// Time limit of one push or fetch to one agent.
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// How long a planned round waits for its state to reach a majority before its jobs
    /// are dropped unsubmitted.
    #[serde(deserialize_with = "duration::deserialize")]
    pub wait: Duration,
    /// Time between pushes to candidates that lag behind.
    #[serde(deserialize_with = "duration::deserialize")]
    pub retry_interval: Duration,
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
    /// Time between diagnose runs.
    #[serde(deserialize_with = "duration::deserialize")]
    pub interval: Duration,
    /// Time limit of one diagnose run.
    #[serde(deserialize_with = "duration::deserialize")]
    pub diagnose_timeout: Duration,
    /// Whitelist directory of repair commands.
    pub repair_dir: String,
    /// Time limit of one repair command.
    #[serde(deserialize_with = "duration::deserialize")]
    pub repair_timeout: Duration,
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
        check_durations(
            &[
                ("agent.interval", self.interval),
                ("agent.diagnose_timeout", self.diagnose_timeout),
                ("agent.repair_timeout", self.repair_timeout),
            ],
            &[],
        )?;
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
    /// Time limit of one request to an agent.
    #[serde(deserialize_with = "duration::deserialize")]
    pub agent_timeout: Duration,
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
    /// Time between master checks.
    #[serde(deserialize_with = "duration::deserialize")]
    pub master_check_interval: Duration,
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
    /// Time limit of one noded request.
    #[serde(deserialize_with = "duration::deserialize")]
    pub noded_timeout: Duration,
    /// Ganeti's HMAC key file; empty or missing: none.
    pub hmac_key: String,
    /// Time limit of one Luxi request.
    #[serde(deserialize_with = "duration::deserialize")]
    pub luxi_timeout: Duration,
    /// Time between node-list refreshes.
    #[serde(deserialize_with = "duration::deserialize")]
    pub node_refresh_interval: Duration,
    /// RAPI base URL (`https://host:5080`).
    pub rapi_url: String,
    /// File with the RAPI `user password`.
    pub rapi_credentials: String,
    /// PEM file with the pinned RAPI certificate; empty: none.
    pub rapi_certificate: String,
    /// PEM file with the CA certificates for the RAPI; empty: none.
    pub rapi_ca: String,
    /// Time limit of one RAPI request.
    #[serde(deserialize_with = "duration::deserialize")]
    pub rapi_timeout: Duration,
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
        if planner.harep && !planner.harep_job_delay.is_zero() {
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
    /// Time between polls of one node.
    #[serde(deserialize_with = "duration::deserialize")]
    pub poll_interval: Duration,
    /// Time limit of one report request.
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// Report size limit in bytes.
    pub max_report_bytes: usize,
    /// First restart backoff.
    #[serde(deserialize_with = "duration::deserialize")]
    pub backoff_initial: Duration,
    /// Backoff cap.
    #[serde(deserialize_with = "duration::deserialize")]
    pub backoff_max: Duration,
    /// Age of the oldest signed report accepted.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_report_age: Duration,
    /// Most polls in flight at once, over all nodes.
    pub max_concurrent_polls: usize,
}

/// `[rounds]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoundSettings {
    /// Time between round starts.
    #[serde(deserialize_with = "duration::deserialize")]
    pub round_delay: Duration,
    /// Time between job status queries.
    #[serde(deserialize_with = "duration::deserialize")]
    pub job_poll_interval: Duration,
    /// Extra wait after a failed round.
    #[serde(deserialize_with = "duration::deserialize")]
    pub error_backoff: Duration,
    /// How long a job may wait or run before maintd cancels it (queued, waiting) or
    /// marks its incident stuck (running).
    #[serde(deserialize_with = "duration::deserialize")]
    pub job_timeout: Duration,
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
    /// Delay (`OP_TEST_DELAY`) before each harep repair.
    #[serde(deserialize_with = "duration::deserialize")]
    pub harep_job_delay: Duration,
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
            harep_job_delay: self.harep_job_delay.as_secs_f64(),
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
        Self::load_with_environment(layers, file, None)
    }

    /// The layers, then `environment` (`MAINTD__...` names and their values) in place of
    /// the process's environment when given, so that tests need not change the latter.
    fn load_with_environment(
        layers: &[&str],
        file: Option<&Path>,
        environment: Option<config::Map<String, String>>,
    ) -> Result<Self, ConfigError> {
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
                    // Numbers, booleans and lists; a duration with a unit stays a string.
                    .try_parsing(true)
                    .source(environment),
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
        // Zero is meaningful here: no pause between rounds, no harep delay.
        let zero_allowed = [
            ("rounds.round_delay", self.rounds.round_delay),
            ("rounds.error_backoff", self.rounds.error_backoff),
            ("planner.harep_job_delay", self.planner.harep_job_delay),
        ];
        check_durations(&positive, &zero_allowed)?;
        let threshold = self.planner.balance_threshold;
        if !(threshold.is_finite() && threshold >= 0.0) {
            return Err(ConfigError::Invalid(format!(
                "planner.balance_threshold must be a score gain of zero or more, not {threshold}"
            )));
        }
        if !self.monitoring.diagnose_url.contains("{node}") {
            return Err(ConfigError::Invalid(format!(
                "monitoring.diagnose_url must contain {{node}}: {:?}",
                self.monitoring.diagnose_url
            )));
        }
        if self.monitoring.max_concurrent_polls == 0 {
            return Err(ConfigError::Invalid(
                "monitoring.max_concurrent_polls must be at least 1".into(),
            ));
        }
        if self.monitoring.max_report_bytes == 0 {
            return Err(ConfigError::Invalid(
                "monitoring.max_report_bytes must be positive".into(),
            ));
        }
        self.cluster.validate_rapi(&self.planner)?;
        self.agent.validate()?;
        self.safety.validate()?;
        self.notify.validate()?;
        Ok(())
    }
}

/// Check durations set after loading (flags, code): `positive` ones must be above zero,
/// and none may pass [`duration::MAX`]. Loading itself refuses negative, NaN and
/// malformed values, naming the key.
fn check_durations(
    positive: &[(&str, Duration)],
    zero_allowed: &[(&str, Duration)],
) -> Result<(), ConfigError> {
    for &(name, value) in positive {
        if value.is_zero() {
            return Err(ConfigError::Invalid(format!(
                "{name} must be longer than zero, not {}",
                humantime::format_duration(value)
            )));
        }
    }
    for &(name, value) in positive.iter().chain(zero_allowed) {
        if value > duration::MAX {
            return Err(ConfigError::Invalid(format!(
                "{name} must be at most {}, not {}",
                humantime::format_duration(duration::MAX),
                humantime::format_duration(value)
            )));
        }
    }
    Ok(())
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
        assert_eq!(settings.rounds.round_delay, Duration::from_secs(300));
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
        assert_eq!(settings.rounds.round_delay, Duration::from_secs(7));
        assert_eq!(settings.daemon.port, 1816);

        let mut bad = tempfile::NamedTempFile::new().unwrap();
        writeln!(bad, "[rounds]\nround_dleay = 7").unwrap();
        assert!(Settings::load(Some(bad.path())).is_err());
    }

    #[test]
    fn sim_layer_overrides_defaults() {
        let settings = Settings::load_layered(&[SIM_TOML], None).unwrap();
        assert_eq!(settings.monitoring.poll_interval, Duration::from_secs(1));
        assert_eq!(settings.daemon.port, 1816);
    }

    #[test]
    fn rapi_settings_are_checked_when_chosen() {
        let defaults = Settings::defaults();
        assert_eq!(defaults.cluster.backend, BackendKind::Luxi);
        assert_eq!(defaults.cluster.rapi_timeout, Duration::from_secs(60));

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
        assert!(refused(&|s| s.cluster.rapi_timeout = Duration::ZERO).contains("rapi_timeout"));
        assert!(refused(&|s| s.planner.harep = true).contains("harep_job_delay"));
        let mut harep = settings.clone();
        harep.planner.harep = true;
        harep.planner.harep_job_delay = Duration::ZERO;
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
        assert_eq!(defaults.agent.interval, Duration::from_secs(10));
        assert_eq!(defaults.agent.repair_timeout, Duration::from_secs(300));
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
        assert_eq!(settings.agent.interval, Duration::from_secs(3));
        let refused = |change: &dyn Fn(&mut Settings)| {
            let mut s = Settings::defaults();
            change(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert!(refused(&|s| s.agent.listen = "1817".into()).contains("agent.listen"));
        assert!(refused(&|s| s.agent.interval = Duration::ZERO).contains("agent.interval"));
        assert!(refused(&|s| s.agent.diagnose_command = "../sh".into()).contains("slash"));
        assert!(refused(&|s| s.agent.keep_executions = 0).contains("keep_executions"));
    }

    #[test]
    fn invalid_values_are_refused() {
        let mut settings = Settings::defaults();
        settings.monitoring.diagnose_url = "http://x/".into();
        assert!(settings.validate().is_err());
        let mut settings = Settings::defaults();
        settings.monitoring.poll_interval = Duration::ZERO;
        assert!(settings.validate().is_err());
        assert_eq!(
            Settings::defaults().monitoring.max_concurrent_polls,
            crate::daemon::polling::DEFAULT_MAX_CONCURRENT_POLLS
        );
        let mut settings = Settings::defaults();
        settings.monitoring.max_concurrent_polls = 0;
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("monitoring.max_concurrent_polls"), "{err}");
    }

    #[test]
    fn notify_settings() {
        let defaults = Settings::defaults();
        assert!(!defaults.notify.enabled(), "off by default");
        assert_eq!(defaults.notify.queue_limit, 1000);
        let settings = load(
            "[notify]\nwebhook_url = \"https://hooks.example.com/maintd\"\nretry_max = \"2m\"",
            &[("MAINTD__NOTIFY__QUEUE_LIMIT", "50")],
        )
        .unwrap();
        assert!(settings.notify.enabled());
        assert_eq!(settings.notify.queue_limit, 50);
        assert_eq!(
            settings.notify.backoff().delay(20),
            Duration::from_secs(120)
        );
        for (toml, named) in [
            ("webhook_url = \"hooks.example.com\"", "notify.webhook_url"),
            (
                "webhook_url = \"ftp://hooks.example.com/\"",
                "notify.webhook_url",
            ),
            ("webhook_url = \"http:///x\"", "notify.webhook_url"),
            (
                "webhook_url = \"http://h/\"\nsecret_file = \"\"",
                "notify.secret_file",
            ),
            ("queue_limit = 0", "notify.queue_limit"),
            ("timeout = 0", "notify.timeout"),
            ("retry_initial = 0", "notify.retry_initial"),
        ] {
            let err = load(&format!("[notify]\n{toml}"), &[]).unwrap_err();
            assert!(err.contains(named), "{toml}: {err}");
        }
    }

    /// The settings from a config file holding `toml` and the environment `env`.
    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Settings, String> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "{toml}").unwrap();
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load_with_environment(&[], Some(file.path()), Some(env))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations_are_seconds_or_carry_a_unit() {
        let settings = load(
            "[rounds]\nround_delay = 0.5\njob_timeout = \"2h\"\nerror_backoff = 0\n\
             [monitoring]\npoll_interval = \"500ms\"\ntimeout = \"3\"\n\
             [replication]\nwait = \"5m\"",
            &[],
        )
        .unwrap();
        assert_eq!(settings.rounds.round_delay, Duration::from_millis(500));
        assert_eq!(settings.rounds.job_timeout, Duration::from_secs(7200));
        assert_eq!(settings.rounds.error_backoff, Duration::ZERO);
        assert_eq!(
            settings.monitoring.poll_interval,
            Duration::from_millis(500)
        );
        assert_eq!(settings.monitoring.timeout, Duration::from_secs(3));
        assert_eq!(settings.replication.wait, Duration::from_secs(300));
        assert_eq!(
            settings.planner.htools().harep_job_delay,
            10.0,
            "the planner still takes seconds"
        );
    }

    #[test]
    fn environment_durations_are_numbers_or_carry_a_unit() {
        let settings = load(
            "[rounds]\nround_delay = 7",
            &[
                ("MAINTD__ROUNDS__ROUND_DELAY", "5"),
                ("MAINTD__ROUNDS__JOB_POLL_INTERVAL", "0.25"),
                ("MAINTD__MONITORING__BACKOFF_MAX", "2m"),
                ("MAINTD__AGENT__REPAIR_TIMEOUT", "90s"),
            ],
        )
        .unwrap();
        assert_eq!(settings.rounds.round_delay, Duration::from_secs(5));
        assert_eq!(
            settings.rounds.job_poll_interval,
            Duration::from_millis(250)
        );
        assert_eq!(settings.monitoring.backoff_max, Duration::from_secs(120));
        assert_eq!(settings.agent.repair_timeout, Duration::from_secs(90));
        let why = load("", &[("MAINTD__ROUNDS__JOB_TIMEOUT", "-5")]).unwrap_err();
        assert!(
            why.contains("rounds.job_timeout") && why.contains("negative"),
            "{why}"
        );
        let why = load("", &[("MAINTD__REPLICATION__WAIT", "later")]).unwrap_err();
        assert!(
            why.contains("replication.wait") && why.contains("not a duration"),
            "{why}"
        );
    }

    #[test]
    fn bad_durations_are_refused_naming_the_key() {
        for (toml, key, why) in [
            (
                "[rounds]\nround_delay = -1",
                "rounds.round_delay",
                "negative",
            ),
            (
                "[rounds]\nerror_backoff = -0.5",
                "rounds.error_backoff",
                "negative",
            ),
            ("[monitoring]\ntimeout = nan", "monitoring.timeout", "NaN"),
            ("[agent]\ninterval = inf", "agent.interval", "too long"),
            (
                "[cluster]\nluxi_timeout = \"5 fortnights\"",
                "cluster.luxi_timeout",
                "not a duration",
            ),
            (
                "[planner]\nharep_job_delay = true",
                "planner.harep_job_delay",
                "seconds",
            ),
            (
                "[rounds]\njob_timeout = 0",
                "rounds.job_timeout",
                "longer than zero",
            ),
            (
                "[agent]\ndiagnose_timeout = \"0s\"",
                "agent.diagnose_timeout",
                "longer than zero",
            ),
        ] {
            let error = load(toml, &[]).unwrap_err();
            assert!(
                error.contains(key) && error.contains(why),
                "{toml}: {error}"
            );
        }
        // Set after loading (flags, code), the range is checked by validate.
        let mut settings = Settings::defaults();
        settings.rounds.round_delay = duration::MAX + Duration::from_secs(1);
        let why = settings.validate().unwrap_err().to_string();
        assert!(why.contains("rounds.round_delay"), "{why}");
        let mut settings = Settings::defaults();
        settings.planner.balance_threshold = -0.1;
        let why = settings.validate().unwrap_err().to_string();
        assert!(why.contains("planner.balance_threshold"), "{why}");
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
