//! Writes a generated Ganeti cluster in the htools text format and, on request, a hail
//! `node-evacuate` request over the same data (see `maintd::htools::generate`).
//!
//! ```text
//! cargo run --example gen_cluster -- --nodes 12 --instances 150 --seed 7 -o c.txt
//! hbal -t c.txt -C -v -v -v
//! cargo run --example gen_cluster -- --nodes 12 --instances 150 --seed 7 -o c.txt \
//!     --evac-request r.json --evac-node node-0003,node-0004 --evac-mode all
//! hail -t c.txt r.json
//! ```

use std::process::ExitCode;
use std::str::FromStr;

use maintd::htools::evacuate::EvacMode;
use maintd::htools::generate::Spec;

const USAGE: &str = "\
usage: gen_cluster [CLUSTER FLAGS] [-o FILE] [--evac-request FILE [--evac-node NODE[,NODE...]] [--evac-mode MODE]]

cluster flags (defaults in parentheses):
  --nodes N              nodes, at least two per group (20)
  --instances N          instances to place (200)
  --groups N             node groups (1)
  --seed N               random seed; the same flags give the same files (42)
  --mix T=W,...          disk template weights among drbd, plain, diskless, file
                         (drbd=0.6,plain=0.25,diskless=0.15)
  --offline N            non-master nodes taken offline after placement (0)
  --drained N            non-master nodes drained after placement (0)
  --empty-fraction X     share of nodes left empty (0.1)
  --skew X               Pareto shape of node popularity, smaller is more uneven (1.5)
  --mem-headroom MIB     free memory a primary keeps during placement (2048)
  --max-vcpu-ratio X     vCPUs placed per physical CPU at most (3.5)
  --no-exclusion-tags    no service tags and no htools:iextags cluster tag
  --location-tags        rack tags on nodes and the htools:nlocation cluster tag
  --rack-size N          nodes per rack (4)
  --mem-noise MIB        unaccounted memory per node, drawn up to MIB (0)

output:
  -o, --output FILE      the cluster in the htools text format (standard output)
  --evac-request FILE    also write a hail node-evacuate request for this cluster
  --evac-node NODES      the node(s) to evacuate, comma-separated (node-0002)
  --evac-mode MODE       primary, secondary or all (all)
";

struct Options {
    cluster: Vec<String>,
    output: Option<String>,
    request: Option<String>,
    evac_nodes: String,
    evac_mode: String,
}

fn parse(args: Vec<String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        cluster: Vec::new(),
        output: None,
        request: None,
        evac_nodes: "node-0002".to_owned(),
        evac_mode: "all".to_owned(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "-o" | "--output" => &mut options.output,
            "--evac-request" => &mut options.request,
            "--evac-node" | "--evac-mode" => {
                let value = match inline {
                    Some(value) => value.to_owned(),
                    None => args.next().ok_or(format!("{flag} needs a value"))?,
                };
                if flag == "--evac-node" {
                    options.evac_nodes = value;
                } else {
                    options.evac_mode = value;
                }
                continue;
            }
            _ => {
                options.cluster.push(arg.clone());
                continue;
            }
        };
        let value = match inline {
            Some(value) => value.to_owned(),
            None => args.next().ok_or(format!("{flag} needs a value"))?,
        };
        *slot = Some(value);
    }
    Ok(Some(options))
}

fn run(args: Vec<String>) -> Result<(), String> {
    let Some(options) = parse(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let spec = Spec::from_args(&options.cluster).map_err(|e| e.to_string())?;
    let generated = spec.generate().map_err(|e| e.to_string())?;
    let text = generated.text().map_err(|e| e.to_string())?;
    match &options.output {
        None => print!("{text}"),
        Some(path) => std::fs::write(path, &text).map_err(|e| format!("writing {path}: {e}"))?,
    }
    if generated.skipped > 0 {
        eprintln!(
            "gen_cluster: {} of {} instances found no room and were left out",
            generated.skipped, spec.instances
        );
    }
    if let Some(path) = &options.request {
        let mode = EvacMode::from_str(&options.evac_mode).map_err(|e| e.to_string())?;
        let nodes: Vec<&str> = options.evac_nodes.split(',').collect();
        let request = generated
            .evacuation_request(&nodes, mode)
            .map_err(|e| e.to_string())?;
        std::fs::write(path, request).map_err(|e| format!("writing {path}: {e}"))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_cluster: {e} (--help lists the flags)");
            ExitCode::from(2)
        }
    }
}
