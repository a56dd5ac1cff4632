//! Helper threads for the balancer's short parallel phases.
//!
//! A balancing step at 1,000 nodes has several phases of a few hundred microseconds
//! each. Waking a sleeping thread (a futex wake, on a virtual machine an interrupt to an
//! idle virtual CPU) can take 100 µs, and starting one 50 µs: measured on a 2-core VM,
//! phases handed to sleeping or new threads ran no faster than on one thread. So these
//! helpers spin between phases, and sleep only after [`SPIN_FOR`] without work: a long
//! pause (the daemon between rounds) costs no CPU.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle helper spins before it sleeps.
const SPIN_FOR: Duration = Duration::from_millis(2);

/// A job as the helpers hold it, its borrow's lifetime erased (see [`Helpers::run`]).
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the job is `Sync`, so calling it from another thread is sound; the pointer
// itself is only dereferenced while [`Helpers::run`] keeps the borrow alive.
unsafe impl Send for JobPtr {}

/// What the calling thread and its helpers share.
struct Shared {
    /// The job of the current epoch (`None` between jobs).
    job: Mutex<Option<JobPtr>>,
    /// Raised once per job: a helper runs each epoch's job once.
    epoch: AtomicU64,
    /// Helpers that have not finished the current job.
    pending: AtomicUsize,
    stop: AtomicBool,
    /// The first panic of a helper's part of the current job.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// Locks `m`, also after a panic elsewhere poisoned it (the data stays consistent:
/// every critical section here is a single store or take).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Threads that run jobs beside the calling thread: see [`with_helpers`].
pub struct Helpers<'s> {
    shared: &'s Shared,
    threads: Vec<Thread>,
}

/// What a helper needs to know: the shared state, its index and how long to spin.
#[derive(Clone, Copy)]
struct Seat<'s> {
    shared: &'s Shared,
    index: usize,
    spin_for: Duration,
}

impl Helpers<'_> {
    /// How many threads run each job, the calling thread included.
    pub fn threads(&self) -> usize {
        self.threads.len() + 1
    }

    /// Runs `job(i)` for each `i` in `0..self.threads()`, 0 on the calling thread and
    /// the others on the helpers, and returns once all have returned. A panic in any
    /// part is raised here, after every part has ended.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        if self.threads.is_empty() {
            job(0);
            return;
        }
        let ptr: *const (dyn Fn(usize) + Sync + '_) = job;
        // SAFETY: only the borrow's lifetime changes. The helpers dereference the pointer
        // only between seeing this job's epoch and lowering `pending`, and `Finish`
        // neither lets this function return nor lets a panic leave it before `pending`
        // is 0; it then clears the slot. So every use ends while `job` is borrowed.
        let ptr = unsafe {
            std::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const (dyn Fn(usize) + Sync + 'static),
            >(ptr)
        };
        *lock(&self.shared.job) = Some(JobPtr(ptr));
        self.shared
            .pending
            .store(self.threads.len(), Ordering::Release);
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        for thread in &self.threads {
            // A spinning helper only has a token set; a sleeping one wakes.
            thread.unpark();
        }

        /// Waits for the helpers' parts, also when the caller's part panics.
        struct Finish<'a>(&'a Shared);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                while self.0.pending.load(Ordering::Acquire) != 0 {
                    std::hint::spin_loop();
                }
                *lock(&self.0.job) = None;
            }
        }
        let finish = Finish(self.shared);
        job(0);
        drop(finish);
        if let Some(panic) = lock(&self.shared.panic).take() {
            resume_unwind(panic);
        }
    }
}

/// A helper's loop: runs each new epoch's job with its thread index.
fn helper(seat: Seat) {
    let (shared, index) = (seat.shared, seat.index);
    let mut seen = 0;
    loop {
        let epoch = next_epoch(shared, seen, seat.spin_for);
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        seen = epoch;
        let job = *lock(&shared.job);
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: `run` keeps the job borrowed until `pending` reaches 0 (see there).
            let job = unsafe { &*ptr };
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| job(index))) {
                lock(&shared.panic).get_or_insert(panic);
            }
        }
        shared.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits until the epoch differs from `seen` (or the helpers stop): spinning for
/// `spin_for`, then sleeping until [`Helpers::run`] wakes the thread.
fn next_epoch(shared: &Shared, seen: u64, spin_for: Duration) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let epoch = shared.epoch.load(Ordering::Acquire);
        if epoch != seen || shared.stop.load(Ordering::Acquire) {
            return epoch;
        }
        spins = spins.wrapping_add(1);
        if spins % 1024 == 0 && start.elapsed() >= spin_for {
            // An unpark between the check above and this park leaves a token: no wake
            // is lost.
            std::thread::park();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Runs `body` with `threads − 1` helper threads (none for 0 or 1), which end when it
/// returns. A helper that cannot be started is left out: jobs must not depend on the
/// number of threads for their result.
pub fn with_helpers<R>(threads: usize, body: impl FnOnce(&Helpers) -> R) -> R {
    with_helpers_spinning(threads, SPIN_FOR, body)
}

/// [`with_helpers`] with helpers that spin for `spin_for` before they sleep.
fn with_helpers_spinning<R>(
    threads: usize,
    spin_for: Duration,
    body: impl FnOnce(&Helpers) -> R,
) -> R {
    let shared = Shared {
        job: Mutex::new(None),
        epoch: AtomicU64::new(0),
        pending: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        panic: Mutex::new(None),
    };
    std::thread::scope(|scope| {
        let mut threads_started = Vec::new();
        for index in 1..threads.max(1) {
            let seat = Seat {
                shared: &shared,
                index,
                spin_for,
            };
            let started = std::thread::Builder::new()
                .name("maintd-balance".into())
                .spawn_scoped(scope, move || helper(seat));
            match started {
                Ok(handle) => threads_started.push(handle.thread().clone()),
                Err(_) => break,
            }
        }
        let helpers = Helpers {
            shared: &shared,
            threads: threads_started,
        };

        /// Stops the helpers when the body ends, also by a panic (the scope then
        /// joins them).
        struct Stop<'a, 'b>(&'a Helpers<'b>);
        impl Drop for Stop<'_, '_> {
            fn drop(&mut self) {
                self.0.shared.stop.store(true, Ordering::Release);
                for thread in &self.0.threads {
                    thread.unpark();
                }
            }
        }
        let _stop = Stop(&helpers);
        body(&helpers)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_thread_runs_each_job_once() {
        for threads in [0, 1, 2, 4] {
            with_helpers(threads, |helpers| {
                assert_eq!(helpers.threads(), threads.max(1));
                for round in 0..200u32 {
                    let runs: Vec<AtomicU32> =
                        (0..helpers.threads()).map(|_| AtomicU32::new(0)).collect();
                    helpers.run(&|i| {
                        runs[i].fetch_add(round + 1, Ordering::Relaxed);
                    });
                    for r in &runs {
                        assert_eq!(r.load(Ordering::Relaxed), round + 1);
                    }
                }
            });
        }
    }

    #[test]
    fn jobs_borrow_the_callers_data_and_share_work() {
        let items: Vec<u64> = (1..=10_000).collect();
        let total = with_helpers(3, |helpers| {
            let next = AtomicUsize::new(0);
            let sum = AtomicU64::new(0);
            helpers.run(&|_| loop {
                let at = next.fetch_add(100, Ordering::Relaxed);
                if at >= items.len() {
                    break;
                }
                let part: u64 = items[at..(at + 100).min(items.len())].iter().sum();
                sum.fetch_add(part, Ordering::Relaxed);
            });
            sum.into_inner()
        });
        assert_eq!(total, 10_000 * 10_001 / 2);
    }

    #[test]
    fn a_helpers_panic_is_raised_by_run_and_the_helpers_go_on() {
        with_helpers(2, |helpers| {
            let caught = catch_unwind(AssertUnwindSafe(|| {
                helpers.run(&|i| {
                    if i == 1 {
                        panic!("part 1 fails");
                    }
                })
            }));
            let panic = caught.expect_err("the helper's panic reaches the caller");
            assert_eq!(panic.downcast_ref::<&str>(), Some(&"part 1 fails"));
            let runs = AtomicU32::new(0);
            helpers.run(&|_| {
                runs.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(runs.into_inner(), 2);
        });
    }

    #[test]
    fn the_callers_panic_waits_for_the_helpers_and_ends_them() {
        let done = AtomicU32::new(0);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            with_helpers(2, |helpers| {
                helpers.run(&|i| {
                    if i == 0 {
                        panic!("caller fails");
                    }
                    // The caller's unwinding must wait for this part.
                    std::thread::yield_now();
                    done.fetch_add(1, Ordering::Relaxed);
                })
            })
        }));
        assert!(caught.is_err());
        assert_eq!(done.into_inner(), 1);
    }

    #[test]
    fn sleeping_helpers_wake_for_every_job() {
        // Helpers that sleep as soon as they are idle: every job must wake them.
        with_helpers_spinning(3, Duration::ZERO, |helpers| {
            for _ in 0..500 {
                let runs = AtomicU32::new(0);
                helpers.run(&|_| {
                    runs.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(runs.into_inner(), 3);
            }
        });
    }
}
