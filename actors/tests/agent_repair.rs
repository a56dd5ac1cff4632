//! maintd's side of live repairs through node agents (`AgentRepairs`), against a real
//! `maintd agent` process on loopback: repair jobs go to the agent as signed requests and
//! are followed like jobs; everything else goes to the cluster's job queue.
//!
//! The agent's whitelist needs root-owned files: these tests run as root (as CI does).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    cell::RefCell,
    fs,
    os::unix::fs::{chown, PermissionsExt},
    path::PathBuf,
    rc::Rc,
    time::Duration,
};

use futures_util::future::{FutureExt, LocalBoxFuture};
use maintd::{
    backend::{
        agent_repair::{AgentRepairSettings, AgentRepairs, AGENT_JOB_ID_BASE},
        BackendError, ClusterBackend, Submission,
    },
    clock::Clock,
    model::{
        cluster::ClusterSnapshot,
        job::{JobId, JobStatus},
        opcode::{OpBody, Opcode},
    },
    signing::HmacKey,
};
use uuid::Uuid;

mod support;
use support::*;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef01234567\n";
const NODE: &str = "node1.example.com";

/// The job queue: records what reaches it, every job succeeds at once.
#[derive(Default, Clone)]
struct Queue {
    submitted: Rc<RefCell<Vec<Vec<Opcode>>>>,
}

impl ClusterBackend for Queue {
    fn snapshot(&self) -> LocalBoxFuture<'static, Result<ClusterSnapshot, BackendError>> {
        async { Err(BackendError::Transient("not needed".into())) }.boxed_local()
    }

    fn master_node(&self) -> LocalBoxFuture<'static, Result<String, BackendError>> {
        async { Ok(NODE.to_owned()) }.boxed_local()
    }

    fn submit_jobs(
        &self,
        jobs: Vec<Vec<Opcode>>,
    ) -> LocalBoxFuture<'static, Result<Vec<Submission>, BackendError>> {
        let ids = (0..jobs.len()).map(|i| Ok(JobId(7 + i as u64))).collect();
        self.submitted.borrow_mut().extend(jobs);
        async move { Ok(ids) }.boxed_local()
    }

    fn job_statuses(
        &self,
        ids: Vec<JobId>,
    ) -> LocalBoxFuture<'static, Result<Vec<Option<JobStatus>>, BackendError>> {
        let statuses = ids
            .iter()
            .map(|id| (id.0 < AGENT_JOB_ID_BASE).then_some(JobStatus::Success))
            .collect();
        async move { Ok(statuses) }.boxed_local()
    }

    fn find_jobs_by_reason(
        &self,
        _: String,
    ) -> LocalBoxFuture<'static, Result<Vec<JobId>, BackendError>> {
        async { Ok(Vec::new()) }.boxed_local()
    }
}

/// One node: whitelists, key, an agent process on loopback.
struct Node {
    dir: tempfile::TempDir,
    agent: Option<Proc>,
    url: String,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        for list in ["diagnose", "repair"] {
            let path = dir.path().join(list);
            fs::create_dir(&path).expect("whitelist");
            chown(&path, Some(0), Some(0)).expect("chown (run as root)");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("mode");
        }
        fs::write(dir.path().join("hmac.key"), KEY).expect("key");
        let mut node = Node {
            dir,
            agent: None,
            url: String::new(),
        };
        // Appends its stdin and a newline to a file; fails when asked to.
        node.script(
            "fix",
            &format!(
                "cat >> {out}; echo >> {out}; grep -q fail-please {out} && exit 3; echo fixed",
                out = path(&node.path("stdin.log"))
            ),
        );
        node.restart_agent();
        node
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn script(&self, name: &str, body: &str) {
        let file = self.path("repair").join(name);
        fs::write(&file, format!("#!/bin/sh\n{body}\n")).expect("script");
        chown(&file, Some(0), Some(0)).expect("chown");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).expect("mode");
    }

    fn restart_agent(&mut self) {
        self.agent = None;
        let args: Vec<String> = [
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--node-name",
            NODE,
            "--diagnose-dir",
            &path(&self.path("diagnose")),
            "--repair-dir",
            &path(&self.path("repair")),
            "--state-dir",
            &path(&self.path("agent-state")),
            "--hmac-key",
            &path(&self.path("hmac.key")),
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        let mut agent = Proc::spawn("maintd agent", &args, &self.path("agent.log"));
        let addr = agent.line("listening on http://", within(30));
        self.url = format!("http://{}", addr.trim());
        self.agent = Some(agent);
    }

    /// maintd's repair routing with `key`, its id record in this node's directory.
    fn repairs(&self, queue: &Queue, key: Option<&[u8]>) -> AgentRepairs {
        self.repairs_at(queue, key, Clock::new())
    }

    /// Like [`Node::repairs`], dating its requests by `clock`.
    fn repairs_at(&self, queue: &Queue, key: Option<&[u8]>, clock: Clock) -> AgentRepairs {
        AgentRepairs::new(
            Rc::new(queue.clone()),
            AgentRepairSettings {
                // No {node}: every node name leads to this one agent.
                url_template: self.url.clone(),
                key: key.map(|k| HmacKey::from_bytes(k.to_vec()).expect("key")),
                timeout: Duration::from_secs(30),
                state_file: self.path("agent-repairs.json"),
            },
            clock,
        )
        .expect("repairs")
    }

    fn stdin_log(&self) -> String {
        fs::read_to_string(self.path("stdin.log")).unwrap_or_default()
    }
}

fn repair_job(incident: Uuid, command: &str, input: &str) -> Vec<Opcode> {
    vec![
        OpBody::repair_command(NODE, command, input.to_owned()).with_reason(
            format!("repair command requested by node (incident {incident}, submission r1-0)"),
            1,
        ),
    ]
}

/// Ask for the status of `id` until it is final.
async fn final_status(repairs: &AgentRepairs, id: JobId) -> Option<JobStatus> {
    for _ in 0..300 {
        let status = repairs.job_statuses(vec![id]).await.expect("statuses")[0];
        if status.is_none_or(JobStatus::is_finalized) {
            return status;
        }
        actix_rt::time::sleep(POLL).await;
    }
    panic!("job {id} never finished");
}

#[actix_rt::test]
async fn a_repair_runs_on_the_agent_with_its_input_and_is_followed_like_a_job() {
    let mut node = Node::start();
    let queue = Queue::default();
    let repairs = node.repairs(&queue, Some(KEY));
    let incident = Uuid::new_v4();
    let tag = vec![OpBody::tag_node(NODE, "x").with_reason("tag".into(), 1)];
    let input = r#"{"status":"live-repair","command":"fix","details":{"disk":"sdb"}}"#;
    let submitted = repairs
        .submit_jobs(vec![
            tag.clone(),
            repair_job(incident, "fix", input),
            tag.clone(),
        ])
        .await
        .expect("submitted");
    // The queue got the two other jobs, in order, and their ids came back in place.
    assert_eq!(*queue.submitted.borrow(), vec![tag.clone(), tag]);
    assert_eq!(submitted[0], Ok(JobId(7)));
    assert_eq!(submitted[2], Ok(JobId(8)));
    let id = submitted[1].clone().expect("the agent took the repair");
    assert!(id.0 >= AGENT_JOB_ID_BASE, "{id}");
    assert_eq!(final_status(&repairs, id).await, Some(JobStatus::Success));
    assert_eq!(node.stdin_log(), format!("{input}\n"));
    // Queue jobs and agent jobs are asked of their own sources, in order.
    assert_eq!(
        repairs
            .job_statuses(vec![JobId(7), id])
            .await
            .expect("statuses"),
        vec![Some(JobStatus::Success), Some(JobStatus::Success)]
    );

    // A restarted maintd (and agent) still knows the execution; sending the request
    // again runs nothing.
    node.restart_agent();
    let again = node.repairs(&queue, Some(KEY));
    assert_eq!(final_status(&again, id).await, Some(JobStatus::Success));
    let resubmitted = again
        .submit_jobs(vec![repair_job(incident, "fix", input)])
        .await
        .expect("submitted");
    assert_eq!(resubmitted, vec![Ok(id)]);
    assert_eq!(node.stdin_log(), format!("{input}\n"), "ran once");
    // The submission marker of the reason finds it too.
    assert_eq!(
        again
            .find_jobs_by_reason("submission r1-0)".into())
            .await
            .expect("found"),
        vec![id]
    );
}

#[actix_rt::test]
async fn failing_and_unlisted_commands_end_the_job_in_error() {
    let node = Node::start();
    let queue = Queue::default();
    let repairs = node.repairs(&queue, Some(KEY));
    let submitted = repairs
        .submit_jobs(vec![
            repair_job(Uuid::new_v4(), "fix", "fail-please"),
            repair_job(Uuid::new_v4(), "not-in-the-whitelist", "{}"),
        ])
        .await
        .expect("submitted");
    let mut details = Vec::new();
    for submission in submitted {
        let id = submission.expect("accepted, to fail when run");
        assert_eq!(final_status(&repairs, id).await, Some(JobStatus::Error));
        let failure = repairs.job_failure(id).await.expect("answered");
        details.push(failure.expect("why it failed").summary());
    }
    // Why each failed, for the incident's message.
    assert!(details[0].starts_with("repair command fix on node1.example.com failed"));
    assert!(details[0].contains("exited with code 3"), "{}", details[0]);
    assert!(
        details[1].contains("not-in-the-whitelist"),
        "{}",
        details[1]
    );
    // A queue job: the queue is asked (this one cannot tell).
    assert_eq!(repairs.job_failure(JobId(7)).await, Ok(None));
    assert!(queue.submitted.borrow().is_empty());
}

#[actix_rt::test]
async fn without_the_right_key_no_repair_is_sent() {
    let node = Node::start();
    let queue = Queue::default();
    let job = || repair_job(Uuid::new_v4(), "fix", "{}");
    let unsigned = node.repairs(&queue, None).submit_jobs(vec![job()]).await;
    let refusal = unsigned.expect("answered")[0].clone().expect_err("refused");
    assert!(refusal.contains("HMAC key"), "{refusal}");
    let forged = node
        .repairs(&queue, Some(b"another cluster's key\n"))
        .submit_jobs(vec![job()])
        .await;
    let refusal = forged.expect("answered")[0].clone().expect_err("refused");
    assert!(refusal.contains("refused the repair (403"), "{refusal}");
    assert_eq!(node.stdin_log(), "", "nothing ran");
}

#[actix_rt::test]
async fn a_request_dated_by_a_clock_far_from_the_agent_s_is_refused() {
    let node = Node::start();
    let queue = Queue::default();
    let now = Clock::new().now();
    // The request's salt is maintd's clock's time; the agent allows 300 s of skew.
    for (clock, why) in [
        (Clock::starting_at(now - 3600.0), "stale request"),
        (Clock::starting_at(now + 3600.0), "from the future"),
    ] {
        let answer = node
            .repairs_at(&queue, Some(KEY), clock)
            .submit_jobs(vec![repair_job(Uuid::new_v4(), "fix", "{}")])
            .await;
        let refusal = answer.expect("answered")[0].clone().expect_err("refused");
        assert!(
            refusal.contains("refused the repair (403") && refusal.contains(why),
            "{refusal}"
        );
    }
    assert_eq!(node.stdin_log(), "", "nothing ran");
}
