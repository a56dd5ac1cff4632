//! Helper threads for the balancer's short parallel phases.
//!
//! A balancing step at 1,000 nodes has several phases of a few hundred microseconds
//! each. Waking a sleeping thread (a futex wake, on a virtual machine an interrupt to an
//! idle virtual CPU) can take 100 µs, and starting one 50 µs: measured on a 2-core VM,
//! phases handed to sleeping or new threads ran no faster than on one thread. So these
//! helpers spin between phases, and sleep only after 2 ms without work: a long
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
    /// The current job (`None` between jobs).
    job: Mutex<Option<JobPtr>>,
    /// The current job's number (the high bits, from [`SEAT_BITS`]) and its seats still
    /// free for helpers (the low bits): a helper takes a seat to join the job.
    open: AtomicU64,
    /// Helpers that have finished their part of the current job.
    done: AtomicUsize,
    stop: AtomicBool,
    /// The first panic of a helper's part of the current job.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// Bits of [`Shared::open`] that count free seats.
const SEAT_BITS: u32 = 16;
const SEAT_MASK: u64 = (1 << SEAT_BITS) - 1;

/// Locks `m`, also after a panic elsewhere poisoned it: a part's panic is raised by
/// [`Helpers::run`] anyway, and every critical section here is a single store or take.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Threads that run jobs beside the calling thread: see [`with_helpers`].
pub struct Helpers<'s> {
    shared: &'s Shared,
    threads: Vec<Thread>,
    /// The number of the last job.
    jobs: std::cell::Cell<u64>,
}

/// What a helper needs to know: the shared state and how long to spin.
#[derive(Clone, Copy)]
struct Seat<'s> {
    shared: &'s Shared,
    spin_for: Duration,
}

impl Helpers<'_> {
    /// How many threads may run each job, the calling thread included.
    pub fn threads(&self) -> usize {
        self.threads.len() + 1
    }

    /// Runs `job(0)` on the calling thread and `job(i)`, each `i` in `1..self.threads()`
    /// at most once, on the helpers that join before the caller's part ends; returns once
    /// every part has returned. A helper that is not running then (the machine is busy)
    /// does not hold the job up, so a job must share its work dynamically, the caller's
    /// part doing whatever no helper took. A panic in any part is raised here, after
    /// every part has ended.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        if self.threads.is_empty() {
            job(0);
            return;
        }
        let ptr: *const (dyn Fn(usize) + Sync + '_) = job;
        // SAFETY: only the borrow's lifetime changes. A helper dereferences the pointer
        // only after taking a seat of this job and before counting itself `done`, and
        // `Finish` closes the seats and waits for every helper that took one before this
        // function returns or a panic leaves it; it then clears the slot. So every use
        // ends while `job` is borrowed.
        let ptr = unsafe {
            std::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const (dyn Fn(usize) + Sync + 'static),
            >(ptr)
        };
        let number = self.jobs.get() + 1;
        self.jobs.set(number);
        *lock(&self.shared.job) = Some(JobPtr(ptr));
        self.shared.done.store(0, Ordering::Relaxed);
        self.shared.open.store(
            number << SEAT_BITS | self.threads.len() as u64,
            Ordering::Release,
        );
        for thread in &self.threads {
            // A spinning helper only has a token set; a sleeping one wakes.
            thread.unpark();
        }

        /// Closes the seats and waits for the helpers that took one, also when the
        /// caller's part panics.
        struct Finish<'a> {
            shared: &'a Shared,
            number: u64,
            helpers: usize,
        }
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                let left = self
                    .shared
                    .open
                    .swap(self.number << SEAT_BITS, Ordering::AcqRel)
                    & SEAT_MASK;
                let joined = self.helpers - left as usize;
                let mut spins = 0u32;
                while self.shared.done.load(Ordering::Acquire) != joined {
                    spins = spins.wrapping_add(1);
                    if spins % 64 == 0 {
                        // A helper sharing this CPU (a busy machine) gets to finish.
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
                *lock(&self.shared.job) = None;
            }
        }
        let finish = Finish {
            shared: self.shared,
            number,
            helpers: self.threads.len(),
        };
        job(0);
        drop(finish);
        if let Some(panic) = lock(&self.shared.panic).take() {
            resume_unwind(panic);
        }
    }
}

/// A helper's loop: joins each new job that still has a free seat.
fn helper(seat: Seat) {
    let shared = seat.shared;
    let mut seen = 0;
    loop {
        let number = next_job(shared, seen, seat.spin_for);
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        seen = number;
        let mut open = shared.open.load(Ordering::Acquire);
        let index = loop {
            if open >> SEAT_BITS != number || open & SEAT_MASK == 0 {
                break None;
            }
            match shared
                .open
                .compare_exchange(open, open - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                // The free seats are numbered 1 to their count: take the highest.
                Ok(_) => break Some((open & SEAT_MASK) as usize),
                Err(now) => open = now,
            }
        };
        let Some(index) = index else { continue };
        let job = *lock(&shared.job);
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: `run` keeps the job borrowed until every seated helper is done.
            let job = unsafe { &*ptr };
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| job(index))) {
                lock(&shared.panic).get_or_insert(panic);
            }
        }
        shared.done.fetch_add(1, Ordering::AcqRel);
    }
}

/// Waits until a job numbered other than `seen` is open (or the helpers stop), and
/// returns its number: spinning for `spin_for`, then sleeping until [`Helpers::run`]
/// wakes the thread.
fn next_job(shared: &Shared, seen: u64, spin_for: Duration) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let number = shared.open.load(Ordering::Acquire) >> SEAT_BITS;
        if number != seen || shared.stop.load(Ordering::Acquire) {
            return number;
        }
        spins = spins.wrapping_add(1);
        if spins % 512 != 0 {
            std::hint::spin_loop();
        } else if start.elapsed() < spin_for {
            // Leaves the CPU to any other thread that wants it (a busy machine).
            std::thread::yield_now();
        } else {
            // An unpark between the check above and this park leaves a token: no wake
            // is lost.
            std::thread::park();
        }
    }
}

/// Runs `body` with `threads − 1` helper threads (none for 0 or 1), which end when it
/// returns. A helper that cannot be started is left out.
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
        open: AtomicU64::new(0),
        done: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        panic: Mutex::new(None),
    };
    // At most as many helpers as there are seat numbers.
    let helpers = threads.saturating_sub(1).min(SEAT_MASK as usize);
    std::thread::scope(|scope| {
        let mut started: Vec<std::thread::ScopedJoinHandle<()>> = Vec::new();
        for _ in 0..helpers {
            let seat = Seat {
                shared: &shared,
                spin_for,
            };
            let spawned = std::thread::Builder::new()
                .name("maintd-balance".into())
                .spawn_scoped(scope, move || helper(seat));
            match spawned {
                Ok(handle) => started.push(handle),
                Err(_) => break,
            }
        }
        let helpers = Helpers {
            shared: &shared,
            threads: started.iter().map(|h| h.thread().clone()).collect(),
            jobs: std::cell::Cell::new(0),
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

    /// Spins until `flag` is set, failing after a generous deadline.
    fn wait_for(flag: &AtomicBool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !flag.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "no helper joined");
            std::thread::yield_now();
        }
    }

    #[test]
    fn the_caller_runs_each_job_once_and_helpers_at_most_once_each() {
        for threads in [0, 1, 2, 4] {
            with_helpers(threads, |helpers| {
                assert_eq!(helpers.threads(), threads.max(1));
                for _ in 0..200 {
                    let runs: Vec<AtomicU32> =
                        (0..helpers.threads()).map(|_| AtomicU32::new(0)).collect();
                    helpers.run(&|i| {
                        runs[i].fetch_add(1, Ordering::Relaxed);
                    });
                    assert_eq!(runs[0].load(Ordering::Relaxed), 1);
                    for r in &runs[1..] {
                        assert!(r.load(Ordering::Relaxed) <= 1);
                    }
                }
            });
        }
    }

    #[test]
    fn jobs_borrow_the_callers_data_and_share_work() {
        let items: Vec<u64> = (1..=10_000).collect();
        let total = with_helpers(3, |helpers| {
            let mut total = 0;
            for _ in 0..50 {
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
                total += sum.into_inner();
            }
            total
        });
        assert_eq!(total, 50 * 10_000 * 10_001 / 2);
    }

    #[test]
    fn a_helpers_panic_is_raised_by_run_and_the_helpers_go_on() {
        with_helpers(2, |helpers| {
            let joined = AtomicBool::new(false);
            let caught = catch_unwind(AssertUnwindSafe(|| {
                helpers.run(&|i| {
                    if i == 0 {
                        wait_for(&joined);
                    } else {
                        joined.store(true, Ordering::Release);
                        panic!("part 1 fails");
                    }
                })
            }));
            let panic = caught.expect_err("the helper's panic reaches the caller");
            assert_eq!(panic.downcast_ref::<&str>(), Some(&"part 1 fails"));
            let joined = AtomicBool::new(false);
            helpers.run(&|i| {
                if i == 0 {
                    wait_for(&joined);
                } else {
                    joined.store(true, Ordering::Release);
                }
            });
        });
    }

    #[test]
    fn the_callers_panic_waits_for_the_helpers_and_ends_them() {
        let done = AtomicU32::new(0);
        let joined = AtomicBool::new(false);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            with_helpers(2, |helpers| {
                helpers.run(&|i| {
                    if i == 0 {
                        wait_for(&joined);
                        panic!("caller fails");
                    }
                    joined.store(true, Ordering::Release);
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
            for _ in 0..300 {
                let joined = [AtomicBool::new(false), AtomicBool::new(false)];
                helpers.run(&|i| {
                    if i == 0 {
                        joined.iter().for_each(wait_for);
                    } else {
                        joined[i - 1].store(true, Ordering::Release);
                    }
                });
            }
        });
    }
}
