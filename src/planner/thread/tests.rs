use std::{sync::mpsc::Sender, time::Duration};

use futures_util::FutureExt;
use tokio::time::Instant;

use super::*;

fn request(key_prefix: &str) -> PlanRequest {
    PlanRequest {
        cluster: Arc::new(ClusterSnapshot::default()),
        incidents: Vec::new(),
        key_prefix: key_prefix.into(),
        now_ns: 0,
        job_statuses: BTreeMap::new(),
        node_loads: BTreeMap::new(),
        gate: SafetyGate::open(),
    }
}

/// What the planner reports as it starts a plan: the request's key prefix and the
/// thread's name.
type Entered = (String, Option<String>);

/// A planner that tells `entered` which request it plans (by key prefix) and on which
/// thread, then waits for `release` (when given) before answering; it panics on the
/// prefix `panic`.
struct Gated {
    entered: Mutex<Sender<Entered>>,
    release: Option<Mutex<mpsc::Receiver<()>>>,
}

impl Planner for Gated {
    fn plan(&self, input: PlanInput<'_>) -> RoundPlan {
        let thread = std::thread::current().name().map(str::to_owned);
        let _ = self
            .entered
            .lock()
            .expect("not poisoned")
            .send((input.key_prefix.to_owned(), thread));
        if input.key_prefix == "panic" {
            panic!("no plan for {}", input.key_prefix);
        }
        if let Some(release) = &self.release {
            let _ = release.lock().expect("not poisoned").recv();
        }
        RoundPlan {
            warnings: vec![format!("plan {}", input.key_prefix)],
            ..RoundPlan::default()
        }
    }
}

/// A planner answering at once, and what it reports.
fn free() -> (PlannerThread, mpsc::Receiver<Entered>) {
    let (entered, plans) = mpsc::channel();
    let planner = Gated {
        entered: Mutex::new(entered),
        release: None,
    };
    (PlannerThread::new(Arc::new(planner)), plans)
}

/// A planner answering only when released, what it reports, and its release.
fn gated() -> (PlannerThread, mpsc::Receiver<Entered>, Sender<()>) {
    let (entered, plans) = mpsc::channel();
    let (release, released) = mpsc::channel();
    let planner = Gated {
        entered: Mutex::new(entered),
        release: Some(Mutex::new(released)),
    };
    (PlannerThread::new(Arc::new(planner)), plans, release)
}

#[tokio::test]
async fn plans_on_the_planner_thread() {
    let (thread, plans) = free();
    let plan = thread.plan(request("r1")).await.expect("a plan");
    assert_eq!(plan.warnings, ["plan r1"]);
    let (prefix, name) = plans.try_recv().expect("planned");
    assert_eq!(prefix, "r1");
    assert_eq!(name.as_deref(), Some(THREAD_NAME));
    // Clones share the thread; plans come back to whoever asked.
    let clone = thread.clone();
    let plan = clone.plan(request("r2")).await.expect("a plan");
    assert_eq!(plan.warnings, ["plan r2"]);
}

/// A planner reporting its thread's nice value.
struct Niceness(Mutex<Sender<i32>>);

impl Planner for Niceness {
    fn plan(&self, _: PlanInput<'_>) -> RoundPlan {
        let nice = rustix::process::getpriority_process(None).expect("nice value");
        let _ = self.0.lock().expect("not poisoned").send(nice);
        RoundPlan::default()
    }
}

#[tokio::test]
async fn the_planner_thread_is_nicer_than_the_daemon() {
    let (niceness, reported) = mpsc::channel();
    let thread = PlannerThread::new(Arc::new(Niceness(Mutex::new(niceness))));
    thread.plan(request("r1")).await.expect("a plan");
    let ours = rustix::process::getpriority_process(None).expect("nice value");
    let theirs = reported.try_recv().expect("planned");
    assert_eq!(theirs, (ours + NICENESS).min(19));
}

#[tokio::test]
async fn a_panicking_planner_fails_its_round_only() {
    let (thread, plans) = free();
    let failed = thread.plan(request("panic")).await;
    assert_eq!(
        failed.map(|p| p.warnings),
        Err(PlanError::Panicked("no plan for panic".into()))
    );
    let plan = thread.plan(request("r2")).await.expect("a plan");
    assert_eq!(plan.warnings, ["plan r2"]);
    let entered: Vec<String> = plans.try_iter().map(|(prefix, _)| prefix).collect();
    assert_eq!(entered, ["panic", "r2"]);
}

#[tokio::test]
async fn an_abandoned_request_is_not_planned() {
    let (thread, plans, release) = gated();
    // The first plan blocks the thread; the second queues behind it and is abandoned.
    let mut first = Box::pin(thread.plan(request("r1")));
    assert!((&mut first).now_or_never().is_none());
    assert_eq!(plans.recv().expect("the first plan starts").0, "r1");
    let mut second = Box::pin(thread.plan(request("r2")));
    assert!((&mut second).now_or_never().is_none());
    drop(second);
    release.send(()).expect("released");
    assert_eq!(
        first.await.map(|p| p.warnings),
        Ok(vec!["plan r1".to_owned()])
    );
    release.send(()).expect("released");
    let plan = thread.plan(request("r3")).await.expect("a plan");
    assert_eq!(plan.warnings, ["plan r3"]);
    let entered: Vec<String> = plans.try_iter().map(|(prefix, _)| prefix).collect();
    assert_eq!(entered, ["r3"], "r2 was abandoned before it started");
}

#[tokio::test(start_paused = true)]
async fn virtual_time_stands_still_while_a_plan_is_computed() {
    let (thread, _plans, release) = gated();
    // A timer is pending: were the runtime to count as idle while it awaits the plan,
    // tokio would jump the paused clock to it.
    let timer = tokio::spawn(tokio::time::sleep(Duration::from_secs(60)));
    let started = Instant::now();
    // Released from another thread whenever that runs: the plan's real duration does not
    // matter, only that the runtime waits for it.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        let _ = release.send(());
    });
    let plan = thread.plan(request("r1")).await.expect("a plan");
    assert_eq!(plan.warnings, ["plan r1"]);
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(!timer.is_finished());
    timer.abort();
}
