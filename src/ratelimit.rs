//! Rate limiting of log lines, so that one misbehaving client cannot flood the log: at most
//! `burst` lines per key (a client's address, or a kind of line when the line names no
//! client) and window, then silence, then one line saying how many were suppressed. Plain
//! Rust with the time passed in, so it is tested without a clock or a runtime.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    time::{Duration, Instant},
};

/// What a log line is counted against: one key tracked on its own, or every key beyond the
/// map's capacity (and lines of no known key) counted together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source<K> {
    /// A key tracked on its own, e.g. a client's IP address (ports change with every
    /// connection, so they are ignored).
    One(K),
    /// Keys not tracked one by one: the map was full, or the key is unknown.
    Others,
}

/// A client, as the per-client refusal log counts it.
pub type Peer = Source<IpAddr>;

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::One(ip) => write!(f, "{ip}"),
            Source::Others => f.write_str("other peers"),
        }
    }
}

/// Lines that were not logged for one key during one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed<K = IpAddr> {
    /// Whose lines.
    pub source: Source<K>,
    /// How many.
    pub count: u64,
}

/// Whether to log a line, and the suppression counts that are now due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission<K = IpAddr> {
    /// Log this line.
    pub log: bool,
    /// Windows that ended with lines suppressed: log one summary line for each.
    pub suppressed: Vec<Suppressed<K>>,
}

/// One key's current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            start: now,
            logged: 0,
            suppressed: 0,
        }
    }
}

/// The limiter, keyed by `K`. Memory is bounded by `max_peers` entries whatever the
/// traffic.
#[derive(Debug)]
pub struct LogLimiter<K> {
    burst: u32,
    window: Duration,
    max_peers: usize,
    peers: HashMap<K, Window>,
    others: Option<Window>,
    last_sweep: Option<Instant>,
}

/// The limiter of the per-client refusal log, keyed by client address.
pub type PeerLogLimiter = LogLimiter<IpAddr>;

/// Default lines per peer and window.
pub const DEFAULT_BURST: u32 = 5;
/// Default window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Default number of peers tracked one by one.
pub const DEFAULT_MAX_PEERS: usize = 1024;

impl<K: Eq + Hash + Clone> Default for LogLimiter<K> {
    fn default() -> Self {
        LogLimiter::new(DEFAULT_BURST, DEFAULT_WINDOW, DEFAULT_MAX_PEERS)
    }
}

impl<K: Eq + Hash + Clone> LogLimiter<K> {
    /// At most `burst` lines per peer per `window`, tracking at most `max_peers` peers
    /// one by one (the rest share one allowance).
    pub fn new(burst: u32, window: Duration, max_peers: usize) -> Self {
        LogLimiter {
            burst,
            window,
            max_peers,
            peers: HashMap::new(),
            others: None,
            last_sweep: None,
        }
    }

    /// How many peers are tracked one by one.
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }

    /// A line about `peer` (`None`: unknown address or key) at `now`: log it or not. Also returns
    /// the counts of windows that ended with suppressed lines, this peer's and, at most
    /// once per window, every other peer's, so that a client that stops sending still gets
    /// its summary (as soon as anyone's next line comes, or at the next [`flush`]).
    ///
    /// [`flush`]: LogLimiter::flush
    pub fn admit(&mut self, peer: Option<K>, now: Instant) -> Admission<K> {
        let mut suppressed = Vec::new();
        if self
            .last_sweep
            .is_none_or(|last| now.saturating_duration_since(last) >= self.window)
        {
            self.sweep(now, &mut suppressed);
            self.last_sweep = Some(now);
        }
        let key = match peer {
            Some(ip) if self.peers.contains_key(&ip) || self.peers.len() < self.max_peers => {
                Source::One(ip)
            }
            _ => Source::Others,
        };
        let (burst, window_length) = (self.burst, self.window);
        let window = match &key {
            Source::One(ip) => self
                .peers
                .entry(ip.clone())
                .or_insert_with(|| Window::new(now)),
            Source::Others => self.others.get_or_insert_with(|| Window::new(now)),
        };
        if now.saturating_duration_since(window.start) >= window_length {
            if window.suppressed > 0 {
                suppressed.push(Suppressed {
                    source: key,
                    count: window.suppressed,
                });
            }
            *window = Window::new(now);
        }
        let log = window.logged < burst;
        if log {
            window.logged += 1;
        } else {
            window.suppressed = window.suppressed.saturating_add(1);
        }
        Admission { log, suppressed }
    }

    /// The counts of every window that ended by `now` with lines suppressed, for a caller
    /// that reports on a timer rather than waiting for the next line; each count is
    /// reported once, here or by [`admit`](LogLimiter::admit).
    pub fn flush(&mut self, now: Instant) -> Vec<Suppressed<K>> {
        let mut suppressed = Vec::new();
        self.sweep(now, &mut suppressed);
        self.last_sweep = Some(now);
        suppressed
    }

    /// Forget the peers whose window ended, collecting their suppression counts.
    fn sweep(&mut self, now: Instant, out: &mut Vec<Suppressed<K>>) {
        let window = self.window;
        let ended = |w: &Window| now.saturating_duration_since(w.start) >= window;
        self.peers.retain(|ip, w| {
            if !ended(w) {
                return true;
            }
            if w.suppressed > 0 {
                out.push(Suppressed {
                    source: Source::One(ip.clone()),
                    count: w.suppressed,
                });
            }
            false
        });
        if let Some(w) = self.others.filter(ended) {
            if w.suppressed > 0 {
                out.push(Suppressed {
                    source: Source::Others,
                    count: w.suppressed,
                });
            }
            self.others = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    fn logged(limiter: &mut PeerLogLimiter, peer: Option<IpAddr>, now: Instant, n: u32) -> u32 {
        (0..n).filter(|_| limiter.admit(peer, now).log).count() as u32
    }

    #[test]
    fn a_flood_from_one_peer_is_cut_to_the_burst_and_counted() {
        let t0 = Instant::now();
        let mut limiter = PeerLogLimiter::new(3, Duration::from_secs(10), 16);
        assert_eq!(logged(&mut limiter, ip(1), t0, 1000), 3);
        // Another peer is not silenced by the first one's flood.
        assert_eq!(logged(&mut limiter, ip(2), t0, 2), 2);
        // Still inside the window: nothing more, and no summary yet.
        let during = limiter.admit(ip(1), t0 + Duration::from_secs(9));
        assert_eq!(
            during,
            Admission {
                log: false,
                suppressed: vec![]
            }
        );
        // The next window logs again and reports the count of the previous one.
        let after = limiter.admit(ip(1), t0 + Duration::from_secs(10));
        assert!(after.log);
        assert!(after.suppressed.contains(&Suppressed {
            source: Source::One(IpAddr::from([192, 0, 2, 1])),
            count: 998,
        }));
    }

    #[test]
    fn a_peer_that_stops_gets_its_summary_at_the_next_line_from_anyone() {
        let t0 = Instant::now();
        let mut limiter = PeerLogLimiter::new(1, Duration::from_secs(10), 16);
        assert_eq!(logged(&mut limiter, ip(1), t0, 5), 1);
        let later = limiter.admit(ip(2), t0 + Duration::from_secs(30));
        assert!(later.log);
        assert_eq!(
            later.suppressed,
            vec![Suppressed {
                source: Source::One(IpAddr::from([192, 0, 2, 1])),
                count: 4,
            }]
        );
        // Reported once only.
        let again = limiter.admit(ip(1), t0 + Duration::from_secs(45));
        assert!(again.log);
        assert!(again.suppressed.is_empty());
    }

    #[test]
    fn many_distinct_peers_cannot_grow_the_map_past_its_bound() {
        let t0 = Instant::now();
        let mut limiter = PeerLogLimiter::new(2, Duration::from_secs(10), 8);
        let mut logged = 0;
        for n in 0..10_000u32 {
            let peer = Some(IpAddr::from(n.to_be_bytes()));
            logged += u32::from(limiter.admit(peer, t0).log);
        }
        assert_eq!(limiter.tracked(), 8);
        // One line from each of the eight tracked peers, two for all the others together.
        assert_eq!(logged, 8 + 2);
        // Once the window is over, the entries are dropped and the others' count reported.
        let later = limiter.admit(ip(1), t0 + Duration::from_secs(10));
        assert!(later.suppressed.contains(&Suppressed {
            source: Source::Others,
            count: 10_000 - 8 - 2,
        }));
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn unknown_addresses_share_one_allowance() {
        let t0 = Instant::now();
        let mut limiter = PeerLogLimiter::new(2, Duration::from_secs(10), 8);
        assert_eq!(logged(&mut limiter, None, t0, 50), 2);
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn time_going_backwards_does_not_panic_or_reopen_the_window() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut limiter = PeerLogLimiter::new(1, Duration::from_secs(10), 8);
        assert!(limiter.admit(ip(1), t0).log);
        assert!(!limiter.admit(ip(1), t0 - Duration::from_secs(50)).log);
    }

    #[test]
    fn flush_reports_ended_windows_once_without_waiting_for_a_line() {
        let t0 = Instant::now();
        let mut limiter = PeerLogLimiter::new(2, Duration::from_secs(10), 8);
        assert_eq!(logged(&mut limiter, ip(1), t0, 7), 2);
        assert!(limiter.flush(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(
            limiter.flush(t0 + Duration::from_secs(10)),
            vec![Suppressed {
                source: Source::One(IpAddr::from([192, 0, 2, 1])),
                count: 5,
            }]
        );
        assert!(limiter.flush(t0 + Duration::from_secs(30)).is_empty());
        // Not reported a second time by the peer's next line either.
        let next = limiter.admit(ip(1), t0 + Duration::from_secs(31));
        assert!(next.log);
        assert!(next.suppressed.is_empty());
    }

    #[test]
    fn any_key_can_be_limited_such_as_a_kind_of_line() {
        let t0 = Instant::now();
        let mut limiter: LogLimiter<&str> = LogLimiter::new(1, Duration::from_secs(10), 8);
        assert!(limiter.admit(Some("stream error"), t0).log);
        assert!(!limiter.admit(Some("stream error"), t0).log);
        assert!(limiter.admit(Some("write zero"), t0).log);
        assert_eq!(
            limiter.flush(t0 + Duration::from_secs(10)),
            vec![Suppressed {
                source: Source::One("stream error"),
                count: 1,
            }]
        );
    }
}
