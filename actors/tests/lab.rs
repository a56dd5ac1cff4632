//! maintd against a live Ganeti 3 cluster: the lab of `lab/up.sh` (four nodes in `.ci/run`,
//! at least three assumed, fake hypervisor, diskless instances, in network namespaces of
//! this machine; `lab/README.md` describes it).
//!
//! The tests are ignored unless asked for (`-- --include-ignored` or `--ignored`), and
//! then need `MAINTD_LAB` to name the lab's state directory (`.ci/run` brings the lab up
//! and sets it); without it they fail. They share one cluster, so they take a lock and
//! each starts by putting the cluster back into its initial shape.
//!
//! maintd runs as `maintd daemon` on this host, as it would on the master: Luxi through the
//! lab's socket (a path-named socket reaches into node1's namespace), ssconf from node1's
//! copy, diagnose reports from a small HTTP server of the test on loopback.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

mod support;
use support::*;

const MASTER: &str = "node1.ganeti.test";
/// The cluster tag that pauses maintd.
const PAUSE_TAG: &str = "maintd:paused";
/// A hook that makes every instance migration fail (Ganeti aborts an opcode whose pre-hook
/// fails).
const FAILING_HOOK: &str = "hooks/instance-migrate-pre.d/00-maintd-lab-fail";

static LAB_LOCK: Mutex<()> = Mutex::new(());

/// The lab, locked for one test.
struct Lab {
    dir: PathBuf,
    _lock: MutexGuard<'static, ()>,
}

impl Lab {
    /// The lab named by `MAINTD_LAB`, reset to its initial shape. Without it the test
    /// fails: these tests are ignored unless asked for, and one that ran without a lab
    /// must not pass.
    fn get() -> Lab {
        let dir = std::env::var_os("MAINTD_LAB").unwrap_or_else(|| {
            panic!("MAINTD_LAB must name an up lab (lab/up.sh); see the README's Live lab")
        });
        let lab = Lab {
            dir: PathBuf::from(dir),
            _lock: LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner()),
        };
        assert!(
            lab.dir.join("bin/gx").exists(),
            "MAINTD_LAB={} is not an up lab",
            lab.dir.display()
        );
        lab.reset();
        lab
    }

    /// Run a Ganeti command on `node` (`None`: the master): (success, stdout, stderr).
    fn try_gx(&self, node: Option<&str>, args: &[&str]) -> (bool, String, String) {
        let mut command = Command::new(self.dir.join("bin/gx"));
        if let Some(node) = node {
            command.args(["-n", node.split('.').next().unwrap_or(node)]);
        }
        let out = command.args(args).output().expect("gx runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Run a Ganeti command on the master; it must succeed.
    fn gx(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.try_gx(None, args);
        assert!(ok, "gx {args:?} failed: {stdout}{stderr}");
        stdout
    }

    /// The lab's nodes (`nodeN.ganeti.test`), from its state directory, so also when the
    /// cluster does not answer.
    fn node_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("nodes"))
            .expect("the lab's nodes directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("node"))
            .map(|n| format!("{n}.ganeti.test"))
            .collect();
        names.sort();
        names
    }

    /// Every node: name → (drained, primaries, tags).
    fn nodes(&self) -> BTreeMap<String, NodeRow> {
        let out = self.gx(&[
            "gnt-node",
            "list",
            "--no-headers",
            "--separator=|",
            "-o",
            "name,drained,pinst_list,tags",
        ]);
        let list = |field: &str| -> Vec<String> {
            field
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        out.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split('|').collect();
                let [name, drained, primaries, tags] = f.as_slice() else {
                    return None;
                };
                Some((
                    (*name).to_owned(),
                    NodeRow {
                        drained: *drained == "Y",
                        primaries: list(primaries),
                        tags: list(tags),
                    },
                ))
            })
            .collect()
    }

    /// `gnt-job info` of job `id`.
    fn job_info(&self, id: u64) -> String {
        self.gx(&["gnt-job", "info", &id.to_string()])
    }

    /// The non-master node with the most primary instances.
    fn busiest_node(&self) -> String {
        self.nodes()
            .into_iter()
            .filter(|(name, _)| name != MASTER)
            .max_by_key(|(name, row)| (row.primaries.len(), std::cmp::Reverse(name.clone())))
            .map(|(name, _)| name)
            .expect("a non-master node")
    }

    fn hook_path(&self, node: &str) -> PathBuf {
        let short = node.split('.').next().unwrap_or(node);
        self.dir
            .join("nodes")
            .join(short)
            .join("etc-ganeti")
            .join(FAILING_HOOK)
    }

    /// Make every instance migration fail (a failing pre-hook on every node).
    fn break_migrations(&self) {
        for node in self.node_names() {
            let path = self.hook_path(&node);
            std::fs::create_dir_all(path.parent().expect("hooks dir")).expect("hooks dir");
            std::fs::write(
                &path,
                "#!/bin/sh\necho 'maintd lab test: migrations fail' >&2\nexit 1\n",
            )
            .expect("hook");
            let status = Command::new("chmod").arg("0755").arg(&path).status();
            assert!(status.is_ok_and(|s| s.success()));
        }
    }

    /// `maintd` with `args` and `env` inside `node`'s namespaces, as if installed there: its
    /// log goes to `log`.
    fn maintd_on_node(
        &self,
        node: &str,
        args: &[&str],
        env: &[(&str, String)],
        log: &Path,
    ) -> Proc {
        // gx clears the environment, so variables are passed through env(1). The API is
        // plain HTTP on the node's loopback, with the test's own users file.
        let mut command: Vec<String> = vec![
            "-n".into(),
            node.split('.').next().unwrap_or(node).to_owned(),
            "env".into(),
            "RUST_LOG=info".into(),
            "MAINTD__API__SSL=false".into(),
            format!("MAINTD__API__USERS_FILE={}", path(&api_users_file(log))),
        ];
        command.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        command.push(BIN.into());
        command.extend(args.iter().map(|a| (*a).to_owned()));
        Proc::spawn_program(
            &format!("maintd on {node}"),
            &self.dir.join("bin/gx"),
            &command,
            &[],
            log,
        )
    }

    /// `maintd daemon` inside `node` as installed there (Ganeti's default paths), its
    /// state in `dir/state`, its API on a free loopback port of the node, its log in
    /// `dir/maintd.log`; `extra` flags and `env` added.
    fn daemon_on_node(
        &self,
        node: &str,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Proc {
        let state = path(&dir.join("state"));
        let mut args = vec![
            "daemon",
            "-f",
            "--state-dir",
            &state,
            "-p",
            "0",
            "-b",
            "127.0.0.1",
        ];
        args.extend_from_slice(extra);
        self.maintd_on_node(node, &args, env, &dir.join("maintd.log"))
    }

    /// Back to the lab's shape: node1 is master, no node drained, no maintd tag (on nodes
    /// or the cluster), no failing hook.
    fn reset(&self) {
        for node in self.node_names() {
            let _ = std::fs::remove_file(self.hook_path(&node));
        }
        let master = std::fs::read_to_string(
            self.dir
                .join("nodes/node1/var-lib-ganeti/ssconf_master_node"),
        )
        .unwrap_or_default();
        if master.trim() != MASTER {
            let (ok, out, err) = self.try_gx(Some(MASTER), &["gnt-cluster", "master-failover"]);
            assert!(ok, "master failover back to node1: {out}{err}");
        }
        for (name, row) in self.nodes() {
            let tags: Vec<&str> = row
                .tags
                .iter()
                .map(String::as_str)
                .filter(|t| t.starts_with("maintd:"))
                .collect();
            if !tags.is_empty() {
                let mut args = vec!["gnt-node", "remove-tags", name.as_str()];
                args.extend(tags);
                self.gx(&args);
            }
            if row.drained {
                self.gx(&["gnt-node", "modify", "--force", "--drained=no", &name]);
            }
        }
        if self.cluster_tags().iter().any(|t| t == PAUSE_TAG) {
            self.gx(&["gnt-cluster", "remove-tags", PAUSE_TAG]);
        }
    }

    /// The cluster's tags.
    fn cluster_tags(&self) -> Vec<String> {
        self.gx(&["gnt-cluster", "list-tags"])
            .lines()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Every job in the queue: (id, status).
    fn jobs(&self) -> Vec<(u64, String)> {
        self.gx(&["gnt-job", "list", "--no-headers", "-o", "id,status"])
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                Some((f.next()?.parse().ok()?, f.next()?.to_owned()))
            })
            .collect()
    }

    /// The highest job id in the queue (0 if empty).
    fn last_job_id(&self) -> u64 {
        self.jobs().into_iter().map(|(id, _)| id).max().unwrap_or(0)
    }

    /// Jobs after `after` submitted by maintd (its reason trail): (id, status).
    fn maintd_jobs_since(&self, after: u64) -> Vec<(u64, String)> {
        self.jobs()
            .into_iter()
            .filter(|(id, _)| *id > after)
            .filter(|(id, _)| self.job_info(*id).contains("gnt:daemon:maintd"))
            .collect()
    }

    /// Give `node` a primary instance if it has none (earlier tests may have emptied it):
    /// one from another node, not from `keep`, live-migrated.
    fn ensure_primary(&self, node: &str, keep: &[&str]) {
        self.ensure_primaries(node, keep, 1);
    }

    /// Give `node` at least `count` primary instances, as [`Lab::ensure_primary`] does.
    fn ensure_primaries(&self, node: &str, keep: &[&str], count: usize) {
        loop {
            let rows = self.nodes();
            if rows[node].primaries.len() >= count {
                return;
            }
            let instance = rows
                .iter()
                .filter(|(name, _)| name.as_str() != node && !keep.contains(&name.as_str()))
                .max_by_key(|(_, row)| row.primaries.len())
                .and_then(|(_, row)| row.primaries.first())
                .expect("an instance to move")
                .clone();
            self.gx(&["gnt-instance", "migrate", "-f", "-n", node, &instance]);
        }
    }
}

/// One row of `gnt-node list`.
#[derive(Debug, Clone)]
struct NodeRow {
    drained: bool,
    primaries: Vec<String>,
    tags: Vec<String>,
}

/// A fake monitoring daemon on loopback: `GET /<node>/...` answers that node's diagnose
/// report (default `Ok`) in mond's envelope.
struct DiagnoseServer {
    addr: String,
    reports: Arc<Mutex<BTreeMap<String, Value>>>,
}

impl DiagnoseServer {
    fn start() -> DiagnoseServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("address").to_string();
        let reports: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
        let shared = reports.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                let node = request
                    .split_whitespace()
                    .nth(1)
                    .and_then(|path| path.trim_start_matches('/').split('/').next())
                    .unwrap_or_default()
                    .to_owned();
                // Drain the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let data = shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&node)
                    .cloned()
                    .unwrap_or_else(|| json!({"status": "Ok"}));
                let body = json!({
                    "name": "diagnose", "version": "lab", "format_version": 1,
                    "timestamp": 0, "category": "node", "kind": 1, "data": data,
                })
                .to_string();
                let mut stream = &stream;
                let _ = write!(
                    stream,
                    "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        DiagnoseServer { addr, reports }
    }

    fn report(&self, node: &str, diagnose: Value) {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_owned(), diagnose);
    }
}

/// `maintd daemon` on this host as the lab master's daemon.
struct Maintd {
    proc: Proc,
    api: String,
}

impl Maintd {
    fn start(lab: &Lab, diagnose: &DiagnoseServer, dir: &Path) -> Maintd {
        Maintd::start_with(lab, diagnose, dir, &[])
    }

    /// [`Maintd::start`] with `extra` environment (settings such as
    /// `MAINTD__SAFETY__MAX_NODES_IN_REPAIR`).
    fn start_with(
        lab: &Lab,
        diagnose: &DiagnoseServer,
        dir: &Path,
        extra: &[(&str, String)],
    ) -> Maintd {
        let args: Vec<String> = vec![
            "daemon".into(),
            "-f".into(),
            "--luxi-socket".into(),
            path(&lab.dir.join("luxi.sock")),
            "--diagnose-url".into(),
            format!("http://{}/{{node}}/1/report/node/diagnose", diagnose.addr),
            "--node-name".into(),
            MASTER.into(),
            "--state-dir".into(),
            path(&dir.join("state")),
            "-p".into(),
            "0".into(),
            "-b".into(),
            "127.0.0.1".into(),
            "--round-delay".into(),
            "1".into(),
            "--poll-interval".into(),
            "0.5".into(),
        ];
        let mut env = vec![
            (
                "MAINTD__CLUSTER__SSCONF_DIR",
                path(&lab.dir.join("nodes/node1/var-lib-ganeti")),
            ),
            ("MAINTD__DAEMON__MASTER_CHECK_INTERVAL", "1".to_owned()),
            ("MAINTD__ROUNDS__JOB_POLL_INTERVAL", "0.5".to_owned()),
            // noded listens only inside the lab's namespaces, out of this host's reach;
            // the vote is tested from inside the nodes (lab_popular_vote_*).
            ("MAINTD__CLUSTER__VOTING", "false".to_owned()),
            // So do the agents that keep the state's copies: replication is tested from
            // inside the nodes (lab_agents_*, lab_master_failover_mid_evacuation_*).
            ("MAINTD__REPLICATION__ENABLED", "false".to_owned()),
        ];
        env.extend(extra.iter().cloned());
        let mut proc =
            Proc::spawn_with_env("maintd on the lab", &args, &env, &dir.join("maintd.log"));
        let api = proc.line("maintd API:", within(60));
        let api = api.trim_start_matches("http://").to_owned();
        let maintd = Maintd { proc, api };
        maintd.wait_status_code(200, within(60));
        maintd
    }

    fn status(&self) -> (u16, Value) {
        http(&self.api, "GET", "/1/status", None).expect("maintd answers")
    }

    /// GET `path` from maintd's API; it must answer 200.
    fn get(&self, path: &str) -> Value {
        let (code, body) = http(&self.api, "GET", path, None).expect("maintd answers");
        assert_eq!(code, 200, "{path}: {body}");
        body
    }

    fn wait_status_code(&self, code: u16, deadline: Instant) {
        wait_until(deadline, &format!("/1/status answering {code}"), || {
            (self.status().0 == code).then_some(())
        });
    }

    fn incidents(&self) -> Vec<Value> {
        let (code, body) = self.status();
        assert_eq!(code, 200, "{body}");
        body.as_array().cloned().expect("a list of incidents")
    }

    /// The incident on `node` once it is in `status`.
    fn wait_incident(&self, node: &str, status: &str, deadline: Instant) -> Value {
        wait_until(deadline, &format!("an incident on {node} {status}"), || {
            self.incidents()
                .into_iter()
                .find(|i| i["node"] == node && i["repair-status"] == status)
        })
    }

    fn wait_forgotten(&self, uuid: &str, deadline: Instant) {
        wait_until(deadline, &format!("incident {uuid} forgotten"), || {
            (!self.incidents().iter().any(|i| i["uuid"] == uuid)).then_some(())
        });
    }
}

fn job_ids(incident: &Value) -> Vec<u64> {
    incident["jobs"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn uuid(incident: &Value) -> String {
    incident["uuid"].as_str().expect("uuid").to_owned()
}

/// Every job of the incident succeeded and carries maintd's reason and the uuid; returns
/// their `gnt-job info` texts.
fn successful_jobs(lab: &Lab, incident: &Value) -> Vec<String> {
    let uuid = uuid(incident);
    job_ids(incident)
        .into_iter()
        .map(|id| {
            let info = lab.job_info(id);
            assert!(info.contains("Status: success"), "job {id}: {info}");
            assert!(info.contains("gnt:daemon:maintd"), "job {id}: {info}");
            assert!(info.contains(&uuid), "job {id}: {info}");
            info
        })
        .collect()
}

/// What [`evacuate_busiest`] saw.
struct Evacuation {
    node: String,
    before: NodeRow,
    uuid: String,
    tag: String,
    done: Value,
}

/// Report `report` (an evacuation) for the busiest non-master node and wait until its
/// incident completes; the node must then be drained, empty and tagged ready.
fn evacuate_busiest(
    lab: &Lab,
    maintd: &Maintd,
    diagnose: &DiagnoseServer,
    report: Value,
) -> Evacuation {
    let node = lab.busiest_node();
    let before = lab.nodes()[&node].clone();
    assert!(!before.primaries.is_empty(), "{node} hosts instances");

    diagnose.report(&node, report);
    let noted = maintd.wait_incident(&node, "pending", within(60));
    let uuid = uuid(&noted);
    let done = maintd.wait_incident(&node, "completed", within(240));

    let after = lab.nodes()[&node].clone();
    assert!(after.drained, "{node} drained");
    assert!(
        after.primaries.is_empty(),
        "{node} still hosts {:?}",
        after.primaries
    );
    let tag = format!("maintd:repairready:{uuid}");
    assert!(after.tags.contains(&tag), "{:?}", after.tags);
    Evacuation {
        node,
        before,
        uuid,
        tag,
        done,
    }
}

#[test]
#[ignore = "needs the live Ganeti lab: lab/up.sh, then MAINTD_LAB=/tmp/ganeti-lab cargo test -p maintd-actors --test lab -- --include-ignored"]
fn lab_evacuate_drains_migrates_tags_ready_and_forgets() {
    let lab = Lab::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let diagnose = DiagnoseServer::start();
    let maintd = Maintd::start(&lab, &diagnose, dir.path());
    let evacuation = evacuate_busiest(
        &lab,
        &maintd,
        &diagnose,
        json!({"status": "evacuate", "details": {"disk": "sda"}}),
    );
    let Evacuation {
        node,
        before,
        uuid,
        tag,
        done,
    } = evacuation;
    let infos = successful_jobs(&lab, &done);
    // Drain, one live migration per instance, the tag.
    assert_eq!(infos.len(), 1 + before.primaries.len() + 1, "{infos:#?}");
    let migrations = infos
        .iter()
        .filter(|i| i.contains("OP_INSTANCE_MIGRATE"))
        .count();
    assert_eq!(migrations, before.primaries.len());
    assert!(infos.iter().any(|i| i.contains("OP_NODE_SET_PARAMS")));

    // The operator takes the node back: healthy report, tag removed → forgotten.
    diagnose.report(&node, json!({"status": "Ok"}));
    lab.gx(&["gnt-node", "remove-tags", &node, &tag]);
    maintd.wait_forgotten(&uuid, within(60));
    lab.reset();
}

#[test]
#[ignore = "needs the live Ganeti lab: lab/up.sh, then MAINTD_LAB=/tmp/ganeti-lab cargo test -p maintd-actors --test lab -- --include-ignored"]
fn lab_evacuate_failover_fails_instances_over() {
    let lab = Lab::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let diagnose = DiagnoseServer::start();
    let maintd = Maintd::start(&lab, &diagnose, dir.path());
    let node = lab.busiest_node();
    let before = lab.nodes()[&node].clone();
    assert!(!before.primaries.is_empty(), "{node} hosts instances");

    diagnose.report(&node, json!({"status": "evacuate-failover"}));
    let done = maintd.wait_incident(&node, "completed", within(240));
    let infos = successful_jobs(&lab, &done);
    let failovers = infos
        .iter()
        .filter(|i| i.contains("OP_INSTANCE_FAILOVER"))
        .count();
    assert_eq!(failovers, before.primaries.len(), "{infos:#?}");
    assert!(!infos.iter().any(|i| i.contains("OP_INSTANCE_MIGRATE")));
    assert!(lab.nodes()[&node].primaries.is_empty());
    diagnose.report(&node, json!({"status": "Ok"}));
    lab.reset();
}

#[test]
#[ignore = "needs the live Ganeti lab: lab/up.sh, then MAINTD_LAB=/tmp/ganeti-lab cargo test -p maintd-actors --test lab -- --include-ignored"]
fn lab_failed_job_tags_repairfailed_and_stops() {
    let lab = Lab::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let diagnose = DiagnoseServer::start();
    let maintd = Maintd::start(&lab, &diagnose, dir.path());
    let node = lab.busiest_node();
    let instances = lab.nodes()[&node].primaries.clone();
    lab.break_migrations();

    diagnose.report(&node, json!({"status": "evacuate"}));
    let failed = maintd.wait_incident(&node, "failed", within(240));
    let uuid = uuid(&failed);
    // The message says which migration failed and why: Ganeti's hook failure, with the
    // hook's name and output.
    let message = failed["message"].as_str().expect("a message");
    eprintln!("failed incident's message: {message}");
    assert!(
        instances
            .iter()
            .any(|i| message.contains(&format!("OP_INSTANCE_MIGRATE {i}: "))),
        "{message}"
    );
    let hook = FAILING_HOOK.rsplit('/').next().expect("hook name");
    assert!(message.contains("HooksAbort"), "{message}");
    assert!(message.contains(hook), "{message}");
    assert!(
        message.contains("maintd lab test: migrations fail"),
        "{message}"
    );
    let tag = format!("maintd:repairfailed:{uuid}");
    wait_until(within(60), "the repairfailed tag", || {
        lab.nodes()[&node].tags.contains(&tag).then_some(())
    });
    // The failed migration is in the queue, with maintd's reason trail.
    let ids = job_ids(&failed);
    let failed_job = ids
        .iter()
        .map(|id| lab.job_info(*id))
        .find(|info| info.contains("Status: error"))
        .expect("a failed job");
    assert!(failed_job.contains("OP_INSTANCE_MIGRATE"), "{failed_job}");
    assert!(failed_job.contains(&uuid), "{failed_job}");
    // Nothing more is done for it: no job beyond the tag, over several round delays.
    let settled = maintd.wait_incident(&node, "failed", within(10));
    let count = job_ids(&settled).len();
    let quiet_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < quiet_until {
        let now = maintd.wait_incident(&node, "failed", within(10));
        assert_eq!(
            job_ids(&now).len(),
            count,
            "no job after the failure: {now}"
        );
        thread::sleep(Duration::from_millis(500));
    }

    // Removing the tag forgets it at once.
    diagnose.report(&node, json!({"status": "Ok"}));
    lab.gx(&["gnt-node", "remove-tags", &node, &tag]);
    maintd.wait_forgotten(&uuid, within(60));
    lab.reset();
}

#[test]
#[ignore = "needs the live Ganeti lab: lab/up.sh, then MAINTD_LAB=/tmp/ganeti-lab cargo test -p maintd-actors --test lab -- --include-ignored"]
fn lab_master_failover_stops_maintd_on_the_old_master() {
    let lab = Lab::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let diagnose = DiagnoseServer::start();
    let maintd = Maintd::start(&lab, &diagnose, dir.path());
    // node2 takes the master role (the command runs on the new master).
    let (ok, out, err) = lab.try_gx(Some("node2"), &["gnt-cluster", "master-failover"]);
    assert!(ok, "master failover: {out}{err}");
    maintd.wait_status_code(503, within(30));
    let (_, body) = maintd.status();
    assert!(body.to_string().contains("master"), "{body}");
    // And back: maintd resumes.
    let (ok, out, err) = lab.try_gx(Some("node1"), &["gnt-cluster", "master-failover"]);
    assert!(ok, "master failover back: {out}{err}");
    maintd.wait_status_code(200, within(60));
    assert!(maintd.proc.log_text().contains("no longer master"));
    lab.reset();
}

/// maintd off the cluster: the RAPI backend (https://127.0.0.1:15080, the lab's write
/// user, the cluster's rapi.pem pinned) and no node name, so no master check. The node is
/// drained, its instances migrated and the ready tag set, each job through RAPI with
/// maintd's reason text under `gnt:user`.
#[test]
#[ignore = "needs the live Ganeti lab: lab/up.sh, then MAINTD_LAB=/tmp/ganeti-lab cargo test -p maintd-actors --test lab -- --include-ignored"]
fn lab_rapi_backend_evacuates_a_node() {
    let lab = Lab::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let credentials = dir.path().join("rapi-credentials");
    std::fs::write(&credentials, "maintd maintd-secret\n").expect("credentials");
    let diagnose = DiagnoseServer::start();
    let args: Vec<String> = vec![
        "daemon".into(),
        "-f".into(),
        "--rapi-url".into(),
        "https://127.0.0.1:15080".into(),
        "--diagnose-url".into(),
        format!("http://{}/{{node}}/1/report/node/diagnose", diagnose.addr),
        "--state-dir".into(),
        path(&dir.path().join("state")),
        "-p".into(),
        "0".into(),
        "-b".into(),
        "127.0.0.1".into(),
        "--round-delay".into(),
        "1".into(),
        "--poll-interval".into(),
        "0.5".into(),
    ];
    let env = [
        ("MAINTD__CLUSTER__RAPI_CREDENTIALS", path(&credentials)),
        (
            "MAINTD__CLUSTER__RAPI_CERTIFICATE",
            path(&lab.dir.join("nodes/node1/var-lib-ganeti/rapi.pem")),
        ),
        ("MAINTD__ROUNDS__JOB_POLL_INTERVAL", "0.5".to_owned()),
    ];
    let mut proc = Proc::spawn_with_env(
        "maintd with RAPI on the lab",
        &args,
        &env,
        &dir.path().join("maintd.log"),
    );
    let api = proc.line("maintd API:", within(60));
    let maintd = Maintd {
        proc,
        api: api.trim_start_matches("http://").to_owned(),
    };
    maintd.wait_status_code(200, within(60));
    let Evacuation {
        node,
        before,
        uuid,
        tag,
        done,
    } = evacuate_busiest(&lab, &maintd, &diagnose, json!({"status": "evacuate"}));
    // Each job succeeded, carries maintd's source and the incident in its reason text
    // (RAPI records it under gnt:user), and went through RAPI.
    let infos = successful_jobs(&lab, &done);
    assert_eq!(infos.len(), 1 + before.primaries.len() + 1, "{infos:#?}");
    for info in &infos {
        assert!(info.contains("gnt:user"), "{info}");
        assert!(info.contains("gnt:library:rlib2"), "{info}");
    }
    let migrations = infos
        .iter()
        .filter(|i| i.contains("OP_INSTANCE_MIGRATE"))
        .count();
    assert_eq!(migrations, before.primaries.len());
    assert!(infos.iter().any(|i| i.contains("OP_NODE_SET_PARAMS")));
    assert!(infos.iter().any(|i| i.contains("OP_TAGS_SET")));
    assert!(maintd.proc.log_text().contains("cluster backend: RAPI"));

    diagnose.report(&node, json!({"status": "Ok"}));
    lab.gx(&["gnt-node", "remove-tags", &node, &tag]);
    maintd.wait_forgotten(&uuid, within(60));
    drop(maintd);

    // A job of several opcodes becomes a chain of RAPI jobs, each depending on the
    // previous one; a failure fails the rest, and the last job stands for the whole.
    let rapi = maintd::backend::rapi::RapiConfig {
        pinned_certificate: Some(lab.dir.join("nodes/node1/var-lib-ganeti/rapi.pem")),
        ..maintd::backend::rapi::RapiConfig::new("https://127.0.0.1:15080", &credentials)
    };
    // Unique per run: earlier runs' jobs stay in the queue.
    let marker = format!("submission lab-rapi-chain-{uuid})");
    let (last, statuses, found, failure) = actix_rt::System::new().block_on(async {
        use maintd::{
            backend::{rapi::RapiBackend, ClusterBackend},
            model::{
                job::JobId,
                opcode::{OpBody, TagKind},
            },
        };
        let backend = RapiBackend::new(&rapi).expect("RAPI backend");
        let tags = |tag: &str| vec![tag.to_owned()];
        let del = OpBody::TagsDel {
            kind: TagKind::Node,
            name: Some(node.clone()),
            tags: tags("maintd:lab-chain"),
        };
        // Set, remove, remove again (fails: no such tag), set (never runs).
        let ops = [
            OpBody::tag_node(&node, "maintd:lab-chain"),
            del.clone(),
            del,
            OpBody::tag_node(&node, "maintd:lab-chain-never"),
        ]
        .into_iter()
        .map(|op| op.with_reason(format!("lab chain ({marker}"), 0))
        .collect();
        let submitted = backend.submit_jobs(vec![ops]).await.expect("submitted");
        let last = submitted[0].clone().expect("the chain's last job");
        let ids: Vec<JobId> = (last.0 - 3..=last.0).map(JobId).collect();
        let deadline = within(120);
        let statuses = loop {
            let statuses = backend.job_statuses(ids.clone()).await.expect("statuses");
            if statuses.iter().all(|s| s.is_some_and(|s| s.is_finalized())) {
                break statuses;
            }
            assert!(
                Instant::now() < deadline,
                "chain not finished: {statuses:?}"
            );
            actix_rt::time::sleep(Duration::from_millis(300)).await;
        };
        let found = backend
            .find_jobs_by_reason(marker.clone())
            .await
            .expect("lookup");
        let failure = backend.job_failure(last).await.expect("asked");
        (last, statuses, found, failure)
    });
    // Why the chain failed: its third job (the last only depended on it).
    let failure = failure.expect("a failure").summary();
    eprintln!("failed chain: {failure}");
    assert!(
        failure.starts_with(&format!("OP_TAGS_DEL {node}: OpPrereqError: ")),
        "{failure}"
    );
    assert!(failure.contains("maintd:lab-chain"), "{failure}");
    let statuses: Vec<String> = statuses
        .iter()
        .map(|s| s.map(|s| s.to_string()).unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["success", "success", "error", "error"]);
    assert_eq!(found, vec![last]);
    let info = lab.job_info(last.0);
    assert!(info.contains("Dependency job"), "{info}");
    assert!(!lab.nodes()[&node]
        .tags
        .iter()
        .any(|t| t.starts_with("maintd:lab-chain")));
    lab.reset();
}

/// Restarts a node's noded when dropped, whatever the test did.
struct NodedStopped<'a> {
    lab: &'a Lab,
    node: &'static str,
}

impl<'a> NodedStopped<'a> {
    fn stop(lab: &'a Lab, node: &'static str) -> Self {
        let (ok, out, err) = lab.try_gx(
            Some(node),
            &["/usr/lib/ganeti/daemon-util", "stop", "ganeti-noded"],
        );
        assert!(ok, "stopping noded on {node}: {out}{err}");
        NodedStopped { lab, node }
    }
}

impl Drop for NodedStopped<'_> {
    fn drop(&mut self) {
        let (ok, out, err) = self.lab.try_gx(
            Some(self.node),
            &["/usr/lib/ganeti/daemon-util", "start", "ganeti-noded"],
        );
        assert!(
            ok || thread::panicking(),
            "restarting noded on {}: {out}{err}",
            self.node
        );
    }
}

/// maintd installed on the master (node1): Luxi at Ganeti's default socket, Ganeti's data
/// directory as it is. It holds the popular vote over noded with the cluster's client
/// certificate and wins it with node3's noded down (the other nodes, a majority, name node1),
/// noting node3's missing vote; then it starts work.
#[test]
#[ignore = "needs the live Ganeti lab: lab/up.sh, then MAINTD_LAB=/tmp/ganeti-lab cargo test -p maintd-actors --test lab -- --include-ignored"]
fn lab_popular_vote_on_the_master_wins_without_one_node() {
    let lab = Lab::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let noded = NodedStopped::stop(&lab, "node3.ganeti.test");
    // No agents run here to keep the state's copies: the vote alone is under test.
    let mut maintd = lab.daemon_on_node(
        MASTER,
        dir.path(),
        &["--diagnose-url", "http://127.0.0.1:9/{node}"],
        &[("MAINTD__REPLICATION__ENABLED", "false".to_owned())],
    );
    maintd.line("maintd API:", within(60));
    wait_working(&maintd);
    let log = maintd.log_text();
    assert!(log.contains("holding the popular vote"), "{log}");
    assert!(log.contains("won the popular vote"), "{log}");
    let missing = log
        .lines()
        .find(|l| l.contains("no vote from node"))
        .unwrap_or_else(|| panic!("node3's missing vote not logged: {log}"));
    assert!(missing.contains("node3.ganeti.test"), "{missing}");
    maintd.kill9();
    drop(noded);
}

/// A node whose ssconf copy claims the master role while the cluster knows better: node2
/// with a copy of its data directory saying it is master. The vote is lost (every node
/// names node1), and maintd exits with Ganeti's code 1 without doing anything.
#[test]
#[ignore = "needs the live Ganeti lab: lab/up.sh, then MAINTD_LAB=/tmp/ganeti-lab cargo test -p maintd-actors --test lab -- --include-ignored"]
fn lab_popular_vote_lost_exits_with_code_1() {
    let lab = Lab::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("var-lib-ganeti");
    std::fs::create_dir(&data).expect("data dir");
    let node2 = lab.dir.join("nodes/node2/var-lib-ganeti");
    for file in ["config.data", "server.pem", "client.pem"] {
        std::fs::copy(node2.join(file), data.join(file)).expect("copy");
    }
    std::fs::write(data.join("ssconf_master_node"), "node2.ganeti.test\n").expect("ssconf");
    let mut maintd = lab.daemon_on_node(
        "node2.ganeti.test",
        dir.path(),
        &[
            "--node-name",
            "node2.ganeti.test",
            "--diagnose-url",
            "http://127.0.0.1:9/{node}",
        ],
        &[("MAINTD__CLUSTER__SSCONF_DIR", path(&data))],
    );
    let status = maintd.wait_exit(within(60));
    let log = maintd.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("cannot be won by node2.ganeti.test"), "{log}");
    assert!(log.contains("node1.ganeti.test"), "{log}");
    assert!(!log.contains("starting work"), "{log}");
}

/// The diagnose and repair commands the agent test installs on every node, removed again
/// when dropped.
struct AgentCommands<'a> {
    lab: &'a Lab,
}

/// Prints the node's diagnose file, or Ok.
const LAB_DIAGNOSE: &str =
    "#!/bin/sh\ncat /etc/ganeti/lab-diagnose.json 2>/dev/null || echo '{\"status\": \"Ok\"}'\n";
/// Keeps what it was given on stdin.
const LAB_FIX: &str = "#!/bin/sh\ncat > /var/log/ganeti/lab-fix.stdin\necho fixed\n";
/// A repair that does not work.
const LAB_BROKEN_FIX: &str = "#!/bin/sh\necho 'controller not responding' >&2\nexit 2\n";

impl<'a> AgentCommands<'a> {
    fn install(lab: &'a Lab) -> Self {
        use std::os::unix::fs::PermissionsExt;
        for node in lab.node_names() {
            let etc = lab.node_dir(&node, "etc-ganeti");
            for (dir, name, text) in [
                ("node-diagnose-commands", "lab-diagnose", LAB_DIAGNOSE),
                ("node-repair-commands", "lab-fix", LAB_FIX),
                ("node-repair-commands", "lab-broken-fix", LAB_BROKEN_FIX),
            ] {
                let dir = etc.join(dir);
                std::fs::create_dir_all(&dir).expect("command dir");
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                    .expect("dir mode");
                std::fs::write(dir.join(name), text).expect("command");
                std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o755))
                    .expect("command mode");
            }
        }
        let commands = AgentCommands { lab };
        for node in lab.node_names() {
            commands.report(&node, None);
        }
        commands
    }

    /// What `node`'s diagnose command prints from now on (`None`: Ok).
    fn report(&self, node: &str, diagnose: Option<&Value>) {
        let file = self
            .lab
            .node_dir(node, "etc-ganeti")
            .join("lab-diagnose.json");
        match diagnose {
            Some(diagnose) => std::fs::write(file, diagnose.to_string()).expect("diagnose"),
            None => {
                let _ = std::fs::remove_file(file);
            }
        }
    }

    fn set_diagnose_mode(&self, node: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let file = self
            .lab
            .node_dir(node, "etc-ganeti")
            .join("node-diagnose-commands/lab-diagnose");
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).expect("mode");
    }
}

impl Drop for AgentCommands<'_> {
    fn drop(&mut self) {
        for node in self.lab.node_names() {
            let etc = self.lab.node_dir(&node, "etc-ganeti");
            let _ = std::fs::remove_dir_all(etc.join("node-diagnose-commands"));
            let _ = std::fs::remove_dir_all(etc.join("node-repair-commands"));
            let _ = std::fs::remove_file(etc.join("lab-diagnose.json"));
            let _ = std::fs::remove_file(
                self.lab
                    .node_dir(&node, "var-log-ganeti")
                    .join("lab-fix.stdin"),
            );
        }
    }
}

impl Lab {
    /// The host directory bound over a node's `what` (`etc-ganeti` is its /etc/ganeti).
    fn node_dir(&self, node: &str, what: &str) -> PathBuf {
        self.dir
            .join("nodes")
            .join(node.split('.').next().unwrap_or(node))
            .join(what)
    }

    /// `maintd agent` inside `node`, as installed there, with `extra` flags.
    fn agent_on_node(&self, node: &str, dir: &Path, extra: &[&str]) -> Proc {
        let short = node.split('.').next().unwrap_or(node);
        let state = path(&dir.join(format!("agent-{short}")));
        let mut args = vec![
            "agent",
            "--listen",
            "0.0.0.0:1817",
            "--diagnose-command",
            "lab-diagnose",
            "--interval",
            "0.5",
            "--state-dir",
            &state,
        ];
        args.extend_from_slice(extra);
        let log = dir.join(format!("agent-{short}.log"));
        let agent = self.maintd_on_node(node, &args, &[], &log);
        // Listening once the node answers on the agent's port.
        let url = format!("http://{node}:1817/1/list/collectors");
        wait_until(within(60), "the agent to listen", || {
            let (ok, out, _) = self.try_gx(Some(MASTER), &["curl", "-sf", &url]);
            (ok && out.contains("diagnose")).then_some(())
        });
        agent
    }

    /// GET `path` from maintd's API at `api` inside the master's namespace.
    fn api_get(&self, api: &str, path: &str) -> Value {
        let url = format!("{api}{path}");
        let out = self.gx(&["curl", "-sf", &url]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{url}: {e}: {out}"))
    }
}

/// Wait until maintd (its log) says it won mastership and started work.
fn wait_working(maintd: &Proc) {
    wait_until(within(60), "maintd to start work", || {
        maintd
            .log_text()
            .contains("this node is master; starting work")
            .then_some(())
    });
}

fn incident_of(status: &Value, node: &str) -> Option<Value> {
    status
        .as_array()?
        .iter()
        .find(|i| i["node"] == node)
        .cloned()
}

/// Ganeti 3 nodes with `maintd agent` on each, and maintd on the master, all running inside
/// the lab's namespaces as installed (the cluster's hmac.key signs reports and repair
/// requests). A diagnose script in the whitelist drives a real live repair: the
/// whitelisted repair command runs on that node with the diagnose JSON on stdin, and the
/// incident completes. A script with mode 0777 and a forged report lead to no incident,
/// with a clear log line. Then a real evacuation.
#[test]
#[ignore = "needs the live Ganeti lab: lab/up.sh, then MAINTD_LAB=/tmp/ganeti-lab cargo test -p maintd-actors --test lab -- --include-ignored"]
fn lab_agents_drive_a_live_repair_and_an_evacuation() {
    let lab = Lab::get();
    // Earlier tests may have emptied node3: give it an instance to move at the end.
    let node3 = "node3.ganeti.test";
    let rows = lab.nodes();
    if rows[node3].primaries.is_empty() {
        let instance = rows
            .iter()
            .filter(|(name, _)| name.as_str() != node3)
            .flat_map(|(_, row)| row.primaries.iter())
            .next()
            .expect("an instance")
            .clone();
        lab.gx(&["gnt-instance", "migrate", "-f", "-n", node3, &instance]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let commands = AgentCommands::install(&lab);
    let nodes = lab.node_names();
    let mut agents: BTreeMap<&str, Proc> = nodes
        .iter()
        .map(|node| (node.as_str(), lab.agent_on_node(node, dir.path(), &[])))
        .collect();
    let mut maintd = lab.daemon_on_node(
        MASTER,
        dir.path(),
        &["--round-delay", "1", "--poll-interval", "0.5"],
        &[("MAINTD__ROUNDS__JOB_POLL_INTERVAL", "0.5".to_owned())],
    );
    let api = maintd.line("maintd API:", within(60));
    wait_working(&maintd);
    assert!(
        maintd.log_text().contains("must be signed"),
        "maintd uses the node's hmac.key"
    );

    // A live repair on node2.
    let node2 = "node2.ganeti.test";
    let diagnose =
        json!({"status": "live-repair", "command": "lab-fix", "details": {"disk": "sdb"}});
    commands.report(node2, Some(&diagnose));
    let incident = wait_until(within(90), "the live repair to complete", || {
        let status = lab.api_get(&api, "/1/status");
        incident_of(&status, node2).filter(|i| i["repair-status"] == "completed")
    });
    let stdin =
        std::fs::read_to_string(lab.node_dir(node2, "var-log-ganeti").join("lab-fix.stdin"))
            .expect("the repair command ran on node2");
    assert_eq!(
        serde_json::from_str::<Value>(&stdin).expect("stdin is the diagnose JSON"),
        diagnose
    );
    let repaired = uuid(&incident);
    let rows = lab.nodes();
    assert!(
        rows[node2]
            .tags
            .contains(&format!("maintd:repairready:{repaired}")),
        "{rows:?}"
    );
    assert!(!rows[node2].drained, "a live repair does not drain");

    // A repair command that fails: the incident fails and the node is tagged so.
    let broken =
        json!({"status": "live-repair", "command": "lab-broken-fix", "details": {"disk": "sdc"}});
    commands.report(node2, Some(&broken));
    let failed = wait_until(within(90), "the failing repair to end", || {
        let status = lab.api_get(&api, "/1/status");
        status
            .as_array()?
            .iter()
            .find(|i| {
                i["node"] == node2 && i["original"] == broken && i["repair-status"] == "failed"
            })
            .cloned()
    });
    wait_until(within(60), "the repairfailed tag", || {
        lab.nodes()[node2]
            .tags
            .contains(&format!("maintd:repairfailed:{}", uuid(&failed)))
            .then_some(())
    });
    let log = maintd.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("repair command failed") && l.contains("controller not responding")),
        "the agent's output reaches maintd's log"
    );
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("repair command lab-broken-fix on node2.ganeti.test failed")
            && message.contains("controller not responding"),
        "the incident says why: {failed}"
    );
    commands.report(node2, None);

    // node3: a diagnose script anyone may write is refused by its agent.
    commands.set_diagnose_mode(node3, 0o777);
    commands.report(node3, Some(&json!({"status": "evacuate"})));
    let agent3 = agents.get_mut(node3).expect("agent");
    wait_until(within(30), "node3's agent to refuse the script", || {
        let log = agent3.log_text();
        log.lines()
            .find(|l| l.contains("lab-diagnose") && l.contains("777"))
            .map(str::to_owned)
    });
    // A forged report: node3's agent signing with another key.
    commands.set_diagnose_mode(node3, 0o755);
    let forged_key = dir.path().join("forged.key");
    std::fs::write(&forged_key, "0123456789abcdef0123456789abcdef01234567\n").expect("key");
    drop(agents.remove(node3));
    let forger = lab.agent_on_node(node3, dir.path(), &["--hmac-key", &path(&forged_key)]);
    wait_until(within(30), "maintd to refuse node3's forged report", || {
        let log = maintd.log_text();
        log.lines()
            .find(|l| {
                l.contains(node3) && l.contains("report refused") && l.contains("does not match")
            })
            .map(str::to_owned)
    });
    let status = lab.api_get(&api, "/1/status");
    assert!(incident_of(&status, node3).is_none(), "{status}");
    assert!(!lab.nodes()[node3].drained);

    // The real agent again: node3 is evacuated.
    drop(forger);
    agents.insert(node3, lab.agent_on_node(node3, dir.path(), &[]));
    let before = lab.nodes()[node3].clone();
    assert!(!before.primaries.is_empty(), "{before:?}");
    let incident = wait_until(within(180), "node3's evacuation to complete", || {
        let status = lab.api_get(&api, "/1/status");
        incident_of(&status, node3).filter(|i| i["repair-status"] == "completed")
    });
    let after = lab.nodes()[node3].clone();
    assert!(after.drained && after.primaries.is_empty(), "{after:?}");
    assert!(after
        .tags
        .contains(&format!("maintd:repairready:{}", uuid(&incident))));
    commands.report(node3, None);
    maintd.kill9();
    drop(agents);
    drop(commands);
    lab.reset();
}

/// Two non-master nodes go bad at once and maintd may have both in repair
/// (`max_nodes_in_repair = 2`, the per-group share raised to match, the breaker at 100 %
/// since two of four nodes are 50 %). Both are evacuated in parallel, onto the other two
/// nodes: their jobs interleave (each incident's drain comes before the other's last job,
/// which the default cap of one would forbid), both incidents complete, no maintd job
/// fails, and both nodes end drained, empty and tagged ready.
///
/// The lab's instances are diskless (the lab's kernel has no DRBD), so the two nodes
/// cannot share a DRBD instance here; what is exercised is two evacuations whose targets
/// compete for the same two remaining nodes.
#[test]
#[ignore = "needs the live Ganeti lab: lab/up.sh, then MAINTD_LAB=/tmp/ganeti-lab cargo test -p maintd-actors --test lab -- --include-ignored"]
fn lab_two_nodes_evacuated_at_once_both_complete() {
    let lab = Lab::get();
    let names = lab.node_names();
    assert!(names.len() >= 4, "needs a lab of four nodes: {names:?}");
    let (a, b) = ("node3.ganeti.test", "node4.ganeti.test");
    lab.ensure_primary(a, &[b]);
    lab.ensure_primary(b, &[a]);
    let before = lab.nodes();
    let moved = before[a].primaries.len() + before[b].primaries.len();

    let dir = tempfile::tempdir().expect("tempdir");
    let diagnose = DiagnoseServer::start();
    let maintd = Maintd::start_with(
        &lab,
        &diagnose,
        dir.path(),
        &[
            ("MAINTD__SAFETY__MAX_NODES_IN_REPAIR", "2".to_owned()),
            ("MAINTD__SAFETY__MAX_PERCENT_IN_REPAIR", "50".to_owned()),
            ("MAINTD__SAFETY__BREAKER_PERCENT", "100".to_owned()),
        ],
    );
    let safety = maintd.get("/1/safety");
    assert_eq!(safety["limit"], 2, "{safety}");
    let first_job = lab.last_job_id();

    for node in [a, b] {
        diagnose.report(
            node,
            json!({"status": "evacuate", "details": {"disk": "sda"}}),
        );
    }
    let done_a = maintd.wait_incident(a, "completed", within(240));
    let done_b = maintd.wait_incident(b, "completed", within(240));

    // Both went ahead at once: each incident's first job precedes the other's last.
    let (jobs_a, jobs_b) = (job_ids(&done_a), job_ids(&done_b));
    let first = |jobs: &[u64]| jobs.iter().min().copied().expect("jobs");
    let last = |jobs: &[u64]| jobs.iter().max().copied().expect("jobs");
    assert!(
        first(&jobs_a) < last(&jobs_b) && first(&jobs_b) < last(&jobs_a),
        "evacuated one after the other: {a} {jobs_a:?}, {b} {jobs_b:?}"
    );
    let infos: Vec<String> = [&done_a, &done_b]
        .into_iter()
        .flat_map(|done| successful_jobs(&lab, done))
        .collect();
    let migrations = infos
        .iter()
        .filter(|i| i.contains("OP_INSTANCE_MIGRATE"))
        .count();
    assert_eq!(migrations, moved, "{infos:#?}");
    // Nothing of maintd's failed in the queue, its own jobs or any other.
    let failed: Vec<(u64, String)> = lab
        .maintd_jobs_since(first_job)
        .into_iter()
        .filter(|(_, status)| status != "success")
        .collect();
    assert!(failed.is_empty(), "maintd jobs not successful: {failed:?}");

    let after = lab.nodes();
    for (node, done) in [(a, &done_a), (b, &done_b)] {
        let row = &after[node];
        assert!(row.drained, "{node} drained: {row:?}");
        assert!(row.primaries.is_empty(), "{node} still hosts {row:?}");
        let tag = format!("maintd:repairready:{}", uuid(done));
        assert!(row.tags.contains(&tag), "{node}: {row:?}");
    }
    // The instances went to the other two nodes.
    let total: usize = before.values().map(|r| r.primaries.len()).sum();
    let elsewhere: usize = after
        .iter()
        .filter(|(name, _)| name.as_str() != a && name.as_str() != b)
        .map(|(_, r)| r.primaries.len())
        .sum();
    assert_eq!(elsewhere, total, "{after:?}");

    // Taken back: healthy reports, tags removed, then undrained by the reset.
    for (node, done) in [(a, &done_a), (b, &done_b)] {
        diagnose.report(node, json!({"status": "Ok"}));
        lab.gx(&[
            "gnt-node",
            "remove-tags",
            node,
            &format!("maintd:repairready:{}", uuid(done)),
        ]);
        maintd.wait_forgotten(&uuid(done), within(60));
    }
    lab.reset();
    // Later tests expect instances on the nodes they evacuate: one back on each.
    lab.ensure_primary(a, &[b]);
    lab.ensure_primary(b, &[a]);
}

/// The cluster tag `maintd:paused` stops every new job: once maintd has seen it, a node
/// reporting `evacuate` gets an incident and a plan, but the plan is held, no maintd job
/// reaches the queue and the node is not drained, for 20 seconds. When the tag is removed
/// the incident proceeds and completes.
#[test]
#[ignore = "needs the live Ganeti lab: lab/up.sh, then MAINTD_LAB=/tmp/ganeti-lab cargo test -p maintd-actors --test lab -- --include-ignored"]
fn lab_cluster_pause_tag_stops_all_new_jobs() {
    let lab = Lab::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let diagnose = DiagnoseServer::start();
    let maintd = Maintd::start(&lab, &diagnose, dir.path());
    let node = lab.busiest_node();
    assert!(
        !lab.nodes()[&node].primaries.is_empty(),
        "{node} hosts instances"
    );

    lab.gx(&["gnt-cluster", "add-tags", PAUSE_TAG]);
    wait_until(within(60), "/1/safety to show the pause tag", || {
        let safety = maintd.get("/1/safety");
        (safety["paused_by_tag"] == true && safety["paused"] == true).then_some(safety)
    });
    let first_job = lab.last_job_id();

    diagnose.report(&node, json!({"status": "evacuate"}));
    let noted = wait_until(within(60), "an incident on the paused cluster", || {
        maintd.incidents().into_iter().find(|i| i["node"] == node)
    });
    let uuid = uuid(&noted);
    // maintd plans the evacuation but holds it back, naming the tag.
    let plan = wait_until(within(60), "a held plan with the drain", || {
        let plan = maintd.get("/1/plan");
        let held = plan["mode"] == "held"
            && plan["jobs"]
                .as_array()
                .is_some_and(|jobs| jobs.iter().any(|j| j["incident"] == uuid.as_str()));
        held.then_some(plan)
    });
    assert!(
        plan["held_by"]
            .as_str()
            .is_some_and(|h| h.contains(PAUSE_TAG)),
        "{plan}"
    );
    // For 20 seconds (some twenty rounds): nothing submitted, nothing drained.
    let quiet_until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < quiet_until {
        let incident = maintd
            .incidents()
            .into_iter()
            .find(|i| i["uuid"] == uuid.as_str())
            .expect("the incident stays");
        assert!(
            job_ids(&incident).is_empty(),
            "job while paused: {incident}"
        );
        let plan = maintd.get("/1/plan");
        assert_eq!(plan["mode"], "held", "{plan}");
        assert!(!lab.nodes()[&node].drained, "{node} drained while paused");
        thread::sleep(Duration::from_secs(1));
    }
    let submitted = lab.maintd_jobs_since(first_job);
    assert!(
        submitted.is_empty(),
        "maintd jobs while paused: {submitted:?}"
    );

    // The tag removed: the incident goes ahead, drain first, and completes.
    lab.gx(&["gnt-cluster", "remove-tags", PAUSE_TAG]);
    wait_until(within(60), "/1/safety to show the tag gone", || {
        let safety = maintd.get("/1/safety");
        (safety["paused_by_tag"] == false).then_some(())
    });
    let done = maintd.wait_incident(&node, "completed", within(240));
    let infos = successful_jobs(&lab, &done);
    assert!(
        infos
            .first()
            .is_some_and(|i| i.contains("OP_NODE_SET_PARAMS")),
        "the drain first: {infos:#?}"
    );
    let row = lab.nodes()[&node].clone();
    assert!(row.drained && row.primaries.is_empty(), "{row:?}");
    assert_eq!(maintd.get("/1/plan")["mode"], "submitted");

    diagnose.report(&node, json!({"status": "Ok"}));
    lab.gx(&[
        "gnt-node",
        "remove-tags",
        &node,
        &format!("maintd:repairready:{uuid}"),
    ]);
    maintd.wait_forgotten(&uuid, within(60));
    lab.reset();
}

/// `maintd daemon` inside `node` as systemd runs it there: started again a second after
/// it exits with code 11 (not the master), so it takes over when the node becomes master.
/// Its state in `dir/state`, its API on `127.0.0.1:port` of the node. Dropping it ends the
/// loop and the daemon.
struct RestartLoop<'a> {
    lab: &'a Lab,
    node: String,
    proc: Proc,
    state: String,
    api: String,
}

impl<'a> RestartLoop<'a> {
    fn start(lab: &'a Lab, node: &str, dir: &Path, port: u16) -> RestartLoop<'a> {
        std::fs::create_dir_all(dir).expect("daemon dir");
        let state = path(&dir.join("state"));
        let users = path(&api_users_file(&dir.join("maintd.log")));
        let script = format!(
            "while :; do RUST_LOG=info MAINTD__ROUNDS__JOB_POLL_INTERVAL=0.5 \
             MAINTD__API__SSL=false MAINTD__API__USERS_FILE={users} \
             MAINTD__DAEMON__MASTER_CHECK_INTERVAL=1 {BIN} daemon -f --state-dir {state} \
             -b 127.0.0.1 -p {port} --round-delay 15 --poll-interval 0.5; code=$?; \
             echo \"maintd exited with code $code\" >&2; \
             [ \"$code\" -eq 11 ] || exit \"$code\"; sleep 1; done"
        );
        let short = node.split('.').next().unwrap_or(node);
        let args: Vec<String> = vec!["-n".into(), short.into(), "sh".into(), "-c".into(), script];
        let proc = Proc::spawn_program(
            &format!("maintd loop on {node}"),
            &lab.dir.join("bin/gx"),
            &args,
            &[],
            &dir.join("maintd.log"),
        );
        RestartLoop {
            lab,
            node: node.to_owned(),
            proc,
            state,
            api: format!("http://127.0.0.1:{port}"),
        }
    }

    /// `GET path` of this daemon's API, from inside its node; `None` unless 200.
    fn get(&self, path: &str) -> Option<Value> {
        let url = format!("{}{path}", self.api);
        let (ok, out, _) = self.lab.try_gx(Some(&self.node), &["curl", "-sf", &url]);
        ok.then(|| serde_json::from_str(&out).ok()).flatten()
    }

    /// `POST path` with `body` as the test's write user, from inside its node; `None`
    /// unless 200.
    fn post(&self, path: &str, body: &str) -> Option<Value> {
        let url = format!("{}{path}", self.api);
        let user = format!("{API_USER}:{API_PASSWORD}");
        let (ok, out, _) = self.lab.try_gx(
            Some(&self.node),
            &["curl", "-sf", "-u", &user, "-X", "POST", "-d", body, &url],
        );
        ok.then(|| serde_json::from_str(&out).ok()).flatten()
    }
}

impl Drop for RestartLoop<'_> {
    fn drop(&mut self) {
        // The loop's shell first, then the daemon it started (found by its state dir).
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        let _ = self
            .lab
            .try_gx(Some(&self.node), &["pkill", "-KILL", "-f", &self.state]);
    }
}

/// A master failover in the middle of an evacuation, on Ganeti itself. Agents on every
/// node keep the state's copies; maintd runs on node1 (the master) and on node2 (a
/// candidate, which exits with code 11 and is started again by a loop, as systemd would).
/// Once the drain is done and before the instances move, `gnt-cluster master-failover`
/// makes node2 master (maintd paused meanwhile, so that nothing runs while the master
/// changes): its maintd takes over the copies, still paused, and once resumed finishes the
/// same incident, with the same UUID. No job is submitted twice (the queue's jobs for the incident, by
/// the submission keys and opcodes of their reason trails and summaries), none fails, and
/// the node ends drained, empty and tagged ready.
#[test]
#[ignore = "needs the live Ganeti lab: lab/up.sh, then MAINTD_LAB=/tmp/ganeti-lab cargo test -p maintd-actors --test lab -- --include-ignored"]
fn lab_master_failover_mid_evacuation_keeps_the_incident_and_submits_nothing_twice() {
    let lab = Lab::get();
    let node = "node3.ganeti.test";
    let new_master = "node2.ganeti.test";
    lab.ensure_primaries(node, &[], 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let commands = AgentCommands::install(&lab);
    let agents: Vec<Proc> = lab
        .node_names()
        .iter()
        .map(|n| lab.agent_on_node(n, dir.path(), &[]))
        .collect();
    let first = RestartLoop::start(&lab, MASTER, &dir.path().join("node1"), 18161);
    let second = RestartLoop::start(&lab, new_master, &dir.path().join("node2"), 18162);
    wait_working(&first.proc);
    wait_until(within(60), "node2's maintd to exit with code 11", || {
        second
            .proc
            .log_text()
            .contains("maintd exited with code 11")
            .then_some(())
    });

    let last = lab.last_job_id();
    let report = json!({"status": "evacuate", "details": {"lab": "master failover"}});
    commands.report(node, Some(&report));
    // Half done: the drain succeeded, nothing of maintd's is queued or running, and the
    // instances have not moved yet.
    let id = wait_until(within(180), "the drain done, the moves not begun", || {
        let incident = incident_of(&first.get("/1/status")?, node)?;
        let jobs = lab.maintd_jobs_since(last);
        let settled = jobs.iter().all(|(_, status)| status == "success");
        let rows = lab.nodes();
        (incident["repair-status"] == "pending"
            && !jobs.is_empty()
            && settled
            && rows[node].drained
            && !rows[node].primaries.is_empty())
        .then(|| uuid(&incident))
    });
    // Held still across the failover: the next round could otherwise submit the moves
    // just before it, and Ganeti itself ends an opcode running while the master changes
    // (NoMasterError), which this test is not about. The pause is part of the state, so
    // the new master must keep it until an operator resumes.
    let paused = first
        .post("/1/pause", r#"{"reason": "lab: master failover"}"#)
        .expect("pause on node1");
    assert_eq!(paused["paused"], true, "{paused}");
    wait_until(within(180), "maintd's jobs settled while paused", || {
        let jobs = lab.maintd_jobs_since(last);
        jobs.iter()
            .all(|(_, status)| status == "success")
            .then_some(())
    });
    let (ok, out, err) = lab.try_gx(Some(new_master), &["gnt-cluster", "master-failover"]);
    assert!(ok, "master failover: {out}{err}");
    let kept = wait_until(within(120), "node2's maintd to take over, paused", || {
        second
            .get("/1/safety")
            .filter(|safety| safety["paused"] == true)
    });
    assert_eq!(kept["pause_reason"], "lab: master failover", "{kept}");
    second.post("/1/resume", "").expect("resume on node2");

    let done = wait_until(
        within(240),
        "node2's maintd to complete the incident",
        || {
            incident_of(&second.get("/1/status")?, node)
                .filter(|i| i["repair-status"] == "completed")
        },
    );
    assert_eq!(uuid(&done), id, "the same incident: {done}");
    let log = second.proc.log_text();
    assert!(log.contains("took over the state of serial"), "{log}");
    assert!(
        first.proc.log_text().contains("no longer master"),
        "node1's maintd stopped work"
    );
    let status = second.get("/1/status").expect("status");
    let on_node: Vec<&Value> = status
        .as_array()
        .expect("incidents")
        .iter()
        .filter(|i| i["node"] == node)
        .collect();
    assert_eq!(on_node.len(), 1, "one incident for {node}: {status}");

    // The queue, on the new master: each job of the incident once, all successful.
    let rows = lab.gx(&["gnt-job", "list", "--no-headers", "-o", "id,status,summary"]);
    let mut keys = std::collections::BTreeSet::new();
    let mut summaries = std::collections::BTreeSet::new();
    let mut count = 0;
    for line in rows.lines() {
        let mut fields = line.split_whitespace();
        let (Some(job), Some(status)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(job) = job.parse::<u64>() else {
            continue;
        };
        if job <= last {
            continue;
        }
        let info = lab.job_info(job);
        if !info.contains(&format!("incident {id}")) {
            continue;
        }
        count += 1;
        assert_eq!(status, "success", "job {job}: {info}");
        let key = info
            .split_once("submission ")
            .and_then(|(_, rest)| rest.split(')').next())
            .unwrap_or_else(|| panic!("job {job} has no submission key: {info}"))
            .to_owned();
        assert!(keys.insert(key.clone()), "key {key} used twice (job {job})");
        let summary: Vec<&str> = fields.collect();
        assert!(
            summaries.insert(summary.join(" ")),
            "the same opcodes twice: job {job} {summary:?}\n{rows}"
        );
    }
    assert!(count >= 3, "drain, moves and tag: {count} jobs\n{rows}");
    let row = &lab.nodes()[node];
    assert!(row.drained && row.primaries.is_empty(), "{row:?}");
    assert!(
        row.tags.contains(&format!("maintd:repairready:{id}")),
        "{row:?}"
    );
    commands.report(node, None);
    drop(second);
    drop(first);
    drop(agents);
    drop(commands);
    lab.reset();
}
