//! Writes maintd's manual pages and shell completions, generated from the binary's own
//! command line (`maintd_actors::cli::Cli`), into a directory:
//!
//! ```sh
//! cargo run -p maintd-actors --example gen_docs -- DIR
//! ```
//!
//! `DIR/man/` gets `maintd.8` and one page per subcommand (`maintd-daemon.8`,
//! `maintd-state-check.8`, ...); `DIR/completions/` gets `maintd.bash`, `_maintd` (zsh)
//! and `maintd.fish`. `packaging/build-deb.sh` runs it before `cargo deb`.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::{
    roff::{bold, italic, roman, Roff},
    Man,
};
use maintd_actors::cli::Cli;

/// The section of every page: maintd is a system daemon and its administration tool.
const SECTION: &str = "8";

/// The top page's description, after the one-line summary.
const MAINTD: &str = "\
maintd runs on the master node of a Ganeti cluster and does, by itself and safely, what an \
operator does when a node's hardware or software goes bad: it notices the node's \
self-diagnose report, drains the node, moves its instances away (live migration or \
failover, decided as Ganeti's hail decides), runs repair commands, and tags the node \
maintd:repairready:UUID for the hardware team (maintd:repairfailed:UUID when a step \
fails). Every job it submits carries gnt:daemon:maintd and the incident's UUID in its \
reason trail.

maintd daemon is the daemon itself, on the master node and the master candidates; maintd \
agent runs on every node and serves the self-diagnose report and signed repair commands. \
The other subcommands talk to a running maintd over its HTTP API (status, info, cancel, \
pause, resume, safety), work on its state file (state), plan offline at htools parity \
(plan), or run everything on a built-in simulated cluster (sim).

Settings come from the compiled-in defaults, the configuration file, environment variables \
MAINTD__SECTION__KEY, then the command-line flags, later ones winning.";

/// Longer descriptions of the subcommands, by name.
const SUBCOMMANDS: &[(&str, &str)] = &[
    (
        "daemon",
        "\
Runs maintd for a real Ganeti cluster. maintd works only while this node is the master: it \
checks this node's ssconf, asks the cluster, and holds Ganeti's popular vote among the \
nodes (skipped with --no-voting --yes-do-it). On another node it exits with code 11, like \
Ganeti's master-only daemons, and it stops all work the moment this node loses the master \
role. It polls every node's diagnose report, keeps its incidents in the state directory \
(saved before any change takes effect), submits rounds of non-conflicting jobs through \
luxid (or RAPI), and serves its HTTP API on port 1816.

Under systemd (the unit maintd.service) it reports readiness once its API listens, \
reports when it stops, and pings the watchdog when WatchdogSec= is set. The packaged unit \
runs maintd daemon -f --config /etc/maintd/maintd.toml.",
    ),
    (
        "agent",
        "\
Runs the node agent, on every node of the cluster: it runs the node's whitelisted diagnose \
command on a schedule and serves the result in the monitoring daemon's report format on \
port 1817, signed with the cluster's HMAC key, and it runs whitelisted repair commands \
when maintd asks with a signed request. Each flag overrides one key of the [agent] section \
of the configuration file. The packaged unit maintd-agent.service runs maintd agent -c \
/etc/maintd/maintd.toml.",
    ),
    (
        "sim",
        "\
Runs maintd on a built-in simulated cluster (Luxi socket, job queue and monitoring \
endpoints), with a control API to inject diagnose reports and faults, for rehearsing \
runbooks. With --cluster-only it runs the simulated cluster alone, for a separately \
started maintd daemon.",
    ),
    (
        "state",
        "\
Inspects or resets maintd's state file, state.json in the state directory \
(daemon.state_dir). Stop maintd first.",
    ),
];

/// Exit codes of `maintd` (top page) and `maintd daemon`.
const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "Success; for the daemon and the agent, stopped by SIGTERM or SIGINT.",
    ),
    (
        "1",
        "An error: invalid settings or flags, a taken port, an unusable state directory or \
         state file, a lost popular vote, an API that cannot be reached.",
    ),
    (
        "11",
        "maintd daemon only: this node is not the master (as Ganeti's master daemons). The \
         unit treats it as success and does not restart.",
    ),
];

/// Files of maintd (top page, daemon and agent).
const FILES: &[(&str, &str)] = &[
    (
        "/etc/maintd/maintd.toml",
        "The configuration file of the packaged units (every setting with its default).",
    ),
    (
        "/var/lib/ganeti/maintd/",
        "The daemon's state directory (daemon.state_dir): state.json with the incidents and \
         the current round.",
    ),
    (
        "/var/lib/ganeti/maintd-agent/",
        "The agent's state directory (agent.state_dir): repair executions and the copy of \
         the master's state.",
    ),
    (
        "/var/lib/ganeti/hmac.key",
        "The cluster's HMAC key, signing diagnose reports and repair requests.",
    ),
    (
        "/etc/ganeti/node-diagnose-commands/, /etc/ganeti/node-repair-commands/",
        "The agent's whitelists of diagnose and repair commands.",
    ),
];

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        let _ = writeln!(std::io::stderr(), "usage: gen_docs DIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&dir)) {
        Ok(written) => {
            let mut out = std::io::stdout().lock();
            for file in written {
                let _ = writeln!(out, "{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "gen_docs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Write every page and completion under `dir`; the files written.
fn generate(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    // The binary's --help shows the crate's description; the page's NAME line says what
    // maintd is.
    let mut cmd = Cli::command()
        .about("the Ganeti maintenance daemon")
        .long_about(MAINTD)
        .disable_help_subcommand(true);
    for (name, text) in SUBCOMMANDS {
        cmd = cmd.mut_subcommand(*name, |sub| sub.long_about(*text));
    }
    cmd.build();

    let man_dir = dir.join("man");
    let completion_dir = dir.join("completions");
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&completion_dir)?;
    let mut written = Vec::new();
    let pages = all_commands(&cmd);
    let names: Vec<String> = pages.iter().map(page_name).collect();
    for page in &pages {
        written.push(write_page(page, &names, &man_dir)?);
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        written.push(clap_complete::generate_to(
            shell,
            &mut cmd,
            "maintd",
            &completion_dir,
        )?);
    }
    Ok(written)
}

/// `cmd` and all its visible subcommands, depth first.
fn all_commands(cmd: &clap::Command) -> Vec<clap::Command> {
    let mut found = vec![cmd.clone()];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        found.extend(all_commands(sub));
    }
    found
}

/// A page's name: `maintd`, `maintd-daemon`, `maintd-state-check`.
fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned()
}

/// Write `cmd`'s page: clap's sections, then exit status, files and cross-references.
fn write_page(cmd: &clap::Command, all: &[String], dir: &Path) -> std::io::Result<PathBuf> {
    let name = page_name(cmd);
    let man = Man::new(cmd.clone())
        .section(SECTION)
        .manual("maintd")
        .source(format!("maintd {}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut out = BufWriter::new(File::create(&path)?);
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }

    let mut extra = Roff::new();
    let top = name == "maintd";
    if top || name == "maintd-daemon" {
        definitions(&mut extra, "EXIT STATUS", EXIT_STATUS);
    }
    if top || name == "maintd-daemon" || name == "maintd-agent" {
        definitions(&mut extra, "FILES", FILES);
    }
    extra.control("SH", ["SEE ALSO"]);
    let mut see_also = Vec::new();
    let others = all.iter().filter(|other| **other != name);
    for (i, other) in others.enumerate() {
        if i > 0 {
            see_also.push(roman(", "));
        }
        see_also.push(bold(other.clone()));
        see_also.push(roman(format!("({SECTION})")));
    }
    see_also.push(roman(", "));
    see_also.push(bold("gnt-cluster"));
    see_also.push(roman("(8), "));
    see_also.push(bold("systemd.service"));
    see_also.push(roman(
        "(5). maintd's README describes its design and HTTP API; ",
    ));
    see_also.push(italic("/etc/maintd/maintd.toml"));
    see_also.push(roman(" documents every setting with its default."));
    extra.text(see_also);
    extra.to_writer(&mut out)?;

    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    out.flush()?;
    Ok(path)
}

/// A section of tagged paragraphs: the term in bold, then its text.
fn definitions(roff: &mut Roff, title: &str, items: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (term, text) in items {
        roff.control("TP", []);
        roff.text([bold(*term)]);
        roff.text([roman(*text)]);
    }
}
