//! Logging setup, the rate limit of actix's own log lines, and the crash-only panic policy.

use std::{
    fmt::{self, Write as _},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use maintd::ratelimit::{LogLimiter, Source, Suppressed, DEFAULT_BURST, DEFAULT_WINDOW};
use tracing::{
    field::{Field, Visit},
    warn, Event, Level, Subscriber,
};
use tracing_subscriber::{
    fmt::{
        format::{FormatEvent, FormatFields, Writer},
        FmtContext, MakeWriter,
    },
    layer::{Context, SubscriberExt},
    registry::LookupSpan,
    util::SubscriberInitExt,
    EnvFilter, Layer,
};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text lines. When stderr is the systemd journal: without timestamps (the journal
    /// keeps them) and with the syslog priority prefix (`<4>` for a warning) that the
    /// journal reads, so `journalctl -p warning` shows maintd's warnings.
    #[default]
    Text,
    /// One JSON object per line (level, target, fields), for log collectors.
    Json,
}

/// How a subscriber writes its lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStyle {
    /// Text or JSON.
    pub format: LogFormat,
    /// Colours (text, not for the journal).
    pub ansi: bool,
    /// The lines go to the systemd journal.
    pub journal: bool,
}

/// Log to stderr in `format`; `RUST_LOG` wins over `debug` (the `-d` flag). The warnings
/// and errors of actix's HTTP stack are rate-limited (see [`ActixLogLimit`]).
pub fn init(debug: bool, format: LogFormat) {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let journal = stderr_is_journal();
    let style = LogStyle {
        format,
        ansi: !journal && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        journal,
    };
    let limit = ActixLogLimit::default();
    if subscriber(filter, style, std::io::stderr, limit.clone())
        .try_init()
        .is_ok()
    {
        limit.spawn_flusher();
    }
}

/// Whether stderr is a stream to the systemd journal: systemd says which one in
/// `JOURNAL_STREAM` (`device:inode`), and a child that inherited the variable but not
/// the stream must not take it for the journal.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    device.parse() == Ok(stderr.dev()) && inode.parse() == Ok(stderr.ino())
}

/// The subscriber that [`init`] installs, writing to `writer` in `style` and limiting
/// actix's lines with `limit`.
pub fn subscriber<W>(
    filter: EnvFilter,
    style: LogStyle,
    writer: W,
    limit: ActixLogLimit,
) -> Box<dyn Subscriber + Send + Sync + 'static>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // A log that cannot be written (a full disk, a closed pipe) must not take maintd
        // down: by default the subscriber reports its own write errors with `eprintln!`,
        // which panics when stderr is the problem.
        .log_internal_errors(false);
    match style {
        LogStyle {
            format: LogFormat::Json,
            ..
        } => Box::new(builder.json().finish().with(limit)),
        LogStyle { journal: true, .. } => Box::new(
            builder
                .with_ansi(false)
                .event_format(JournalPriority(
                    tracing_subscriber::fmt::format().without_time(),
                ))
                .finish()
                .with(limit),
        ),
        LogStyle { ansi, .. } => Box::new(builder.with_ansi(ansi).finish().with(limit)),
    }
}

/// Text lines with the syslog priority prefix the journal reads (`<3>` error, `<4>`
/// warning, `<6>` info, `<7>` debug).
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(context, writer, event)
    }
}

/// Crates whose warnings and errors a client can trigger at will: actix-http logs one
/// ERROR line per malformed request ("stream error: request parse error: …"), actix-server
/// one per failed accept, actix-web (through the `log` bridge) its own.
const LIMITED_TARGETS: [&str; 3] = ["actix_http", "actix_server", "actix_web"];

/// Kinds of line tracked one by one; the rest share one allowance.
const MAX_KINDS: usize = 64;

/// The length of a kind, at most (in characters).
const MAX_KIND_CHARS: usize = 64;

/// Target of the summary lines.
const SUMMARY_TARGET: &str = "maintd::log";

/// Rate limit of the WARN and ERROR lines of actix-http, actix-server and actix-web: at
/// most a burst per kind of line and window (the policy of [`maintd::ratelimit`]), then
/// one summary line with the count of the suppressed ones. Other lines, and actix's INFO
/// and below, pass unchanged.
///
/// The kind is the target and the message up to its first `:` (the fixed part of actix's
/// messages, before the error text). Per kind rather than per client, because actix's
/// lines carry no peer address (nor a span with one), and a layer is robust to actix's
/// internals: it needs neither a server of our own around actix's dispatcher nor the
/// exact wording of a message, and whatever line actix adds is limited too.
#[derive(Clone)]
pub struct ActixLogLimit {
    shared: Arc<Shared>,
}

struct Shared {
    window: Duration,
    clock: Box<dyn Fn() -> Instant + Send + Sync>,
    state: Mutex<State>,
}

struct State {
    limiter: LogLimiter<LineKind>,
    /// Counts that [`LogLimiter::admit`] returned, reported at the next flush: they are
    /// not logged from inside the subscriber, which is busy with the line being limited.
    due: Vec<Suppressed<LineKind>>,
}

/// What actix's lines are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LineKind {
    target: String,
    kind: String,
}

impl Default for ActixLogLimit {
    fn default() -> Self {
        ActixLogLimit::new(DEFAULT_BURST, DEFAULT_WINDOW, Instant::now)
    }
}

impl ActixLogLimit {
    /// At most `burst` lines of each kind per `window`, as told by `clock`.
    pub fn new(
        burst: u32,
        window: Duration,
        clock: impl Fn() -> Instant + Send + Sync + 'static,
    ) -> Self {
        ActixLogLimit {
            shared: Arc::new(Shared {
                window,
                clock: Box::new(clock),
                state: Mutex::new(State {
                    limiter: LogLimiter::new(burst, window, MAX_KINDS),
                    due: Vec::new(),
                }),
            }),
        }
    }

    /// Log one summary line for each kind whose window ended with lines suppressed. Must
    /// not be called while a line is being logged (the summary would be lost).
    pub fn flush(&self) {
        let now = (self.shared.clock)();
        let due = {
            let mut state = self.lock();
            let mut due = std::mem::take(&mut state.due);
            for s in state.limiter.flush(now) {
                merge(&mut due, s);
            }
            due
        };
        for s in due {
            match s.source {
                Source::One(LineKind { target, kind }) => {
                    warn!(target: SUMMARY_TARGET, source = %target, %kind, suppressed = s.count, "suppressed {} similar messages from {}", s.count, target);
                }
                Source::Others => {
                    warn!(target: SUMMARY_TARGET, suppressed = s.count, "suppressed {} similar messages of other kinds", s.count);
                }
            }
        }
    }

    /// Flush every window on a thread of its own, so that the count of a flood that
    /// stopped is logged even when nothing else is (a thread: logging is set up before
    /// any runtime).
    fn spawn_flusher(&self) {
        let limit = self.clone();
        let period = self.shared.window.max(Duration::from_secs(1));
        let spawned = std::thread::Builder::new()
            .name("maintd-log-limit".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                limit.flush();
            });
        if let Err(e) = spawned {
            warn!(target: SUMMARY_TARGET, error = %e, "cannot start the thread that logs counts of suppressed lines");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another line panicked; the counts are still usable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self, kind: LineKind) -> bool {
        let now = (self.shared.clock)();
        let mut state = self.lock();
        let admission = state.limiter.admit(Some(kind), now);
        for s in admission.suppressed {
            merge(&mut state.due, s);
        }
        admission.log
    }
}

/// Add `s` to `due`, one entry per kind, so that `due` stays as small as the limiter.
fn merge(due: &mut Vec<Suppressed<LineKind>>, s: Suppressed<LineKind>) {
    match due.iter_mut().find(|d| d.source == s.source) {
        Some(d) => d.count = d.count.saturating_add(s.count),
        None => due.push(s),
    }
}

fn is_limited(target: &str) -> bool {
    LIMITED_TARGETS.iter().any(|crate_name| {
        target
            .strip_prefix(crate_name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

impl<S: Subscriber> Layer<S> for ActixLogLimit {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        // More verbose than WARN: lines an operator asked for with RUST_LOG or -d.
        if *metadata.level() > Level::WARN {
            return true;
        }
        // Lines of the `log` crate (actix-web's) come with the target "log" and the real
        // one in a field.
        let bridged = metadata.target() == "log";
        if !bridged && !is_limited(metadata.target()) {
            return true;
        }
        let mut fields = LineFields::default();
        event.record(&mut fields);
        let target = if bridged {
            match fields.log_target {
                Some(target) if is_limited(&target) => target,
                _ => return true,
            }
        } else {
            metadata.target().to_owned()
        };
        self.admit(LineKind {
            target,
            kind: fields.kind.text,
        })
    }
}

/// The fields of an event that say what kind of line it is.
#[derive(Default)]
struct LineFields {
    log_target: Option<String>,
    kind: KindWriter,
}

impl Visit for LineFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "log.target" => self.log_target = Some(value.to_owned()),
            "message" => {
                let _ = self.kind.write_str(value);
            }
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            // Stops at the first `:`, so a long error text is never formatted whole.
            let _ = write!(self.kind, "{value:?}");
        }
    }
}

/// Keeps a message up to its first `:`, at most [`MAX_KIND_CHARS`] characters.
#[derive(Default)]
struct KindWriter {
    text: String,
    chars: usize,
    done: bool,
}

impl fmt::Write for KindWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.done || c == ':' || self.chars == MAX_KIND_CHARS {
                self.done = true;
                return Err(fmt::Error);
            }
            self.text.push(c);
            self.chars += 1;
        }
        Ok(())
    }
}

/// actix does not restart an actor that panicked; a daemon with half of its actor graph
/// gone is worse than a restart, so log the panic and exit for the service manager to
/// restart maintd (state is on disk; the election runs again).
pub fn exit_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(target: "maintd", panic = %info, "panic; exiting");
        default_hook(info);
        std::process::exit(70);
    }));
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tracing::{error, event, info};

    use super::*;
    use crate::captured_log::Captured;

    /// A clock moved by hand, in seconds.
    #[derive(Clone)]
    struct Clock(Instant, Arc<AtomicU64>);

    impl Clock {
        fn new() -> Self {
            Clock(Instant::now(), Arc::default())
        }
        fn advance(&self, seconds: u64) {
            self.1.fetch_add(seconds, Ordering::SeqCst);
        }
        fn now(&self) -> Instant {
            self.0 + Duration::from_secs(self.1.load(Ordering::SeqCst))
        }
    }

    /// Run `body` with the subscriber of [`init`] writing to memory, with a burst of 5 per
    /// 10 s; the log it wrote.
    fn logged(body: impl FnOnce(&ActixLogLimit, &Clock, &Captured)) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let clock = Clock::new();
        let limit = {
            let clock = clock.clone();
            ActixLogLimit::new(5, Duration::from_secs(10), move || clock.now())
        };
        let subscriber = subscriber(
            EnvFilter::new("info"),
            LogStyle::default(),
            move || writer.clone(),
            limit.clone(),
        );
        tracing::subscriber::with_default(subscriber, || body(&limit, &clock, &captured));
        captured.text()
    }

    fn count(log: &str, needle: &str) -> usize {
        log.lines().filter(|l| l.contains(needle)).count()
    }

    #[test]
    fn a_flood_of_one_actix_error_is_cut_to_the_burst_then_counted() {
        let log = logged(|limit, clock, captured| {
            for _ in 0..100 {
                error!(target: "actix_http::h1::dispatcher", "stream error: {}", "request parse error: invalid Header provided");
            }
            limit.flush();
            clock.advance(9);
            limit.flush();
            // Not before the window ends.
            assert_eq!(count(&captured.text(), "suppressed"), 0);
            clock.advance(1);
            limit.flush();
            // Reported once.
            clock.advance(30);
            limit.flush();
        });
        assert_eq!(count(&log, "dispatcher: stream error"), 5, "{log}");
        assert_eq!(count(&log, "suppressed"), 1, "{log}");
        assert!(
            log.contains("WARN maintd::log: suppressed 95 similar messages from actix_http::h1::dispatcher source=actix_http::h1::dispatcher kind=stream error suppressed=95"),
            "{log}"
        );
    }

    #[test]
    fn other_lines_pass_unchanged_during_a_flood() {
        let log = logged(|_, _, _| {
            for n in 0..50 {
                error!(target: "actix_http::h1::dispatcher", "stream error: request parse error: invalid Header provided");
                warn!(target: "maintd::http", n, "request refused");
                info!(target: "actix_server::builder", "starting 1 workers");
                warn!(target: "actix_httpd", "a crate that only looks like actix-http");
            }
            // Another kind of line of the same target has its own allowance.
            error!(target: "actix_http::h1::dispatcher", "write zero; closing");
        });
        assert_eq!(count(&log, "dispatcher: stream error"), 5, "{log}");
        assert_eq!(count(&log, "request refused"), 50, "{log}");
        assert_eq!(count(&log, "starting 1 workers"), 50, "{log}");
        assert_eq!(count(&log, "only looks like"), 50, "{log}");
        assert_eq!(count(&log, "write zero; closing"), 1, "{log}");
    }

    #[test]
    fn actix_web_lines_through_the_log_bridge_are_limited_by_their_real_target() {
        let log = logged(|limit, clock, _| {
            for _ in 0..20 {
                event!(target: "log", Level::WARN, log.target = "actix_web::info", "Missing peer address.");
                event!(target: "log", Level::WARN, log.target = "some_crate", "other: line");
            }
            clock.advance(10);
            limit.flush();
        });
        assert_eq!(count(&log, "log: Missing peer address."), 5, "{log}");
        assert_eq!(count(&log, "other: line"), 20, "{log}");
        assert!(
            log.contains("suppressed 15 similar messages from actix_web::info"),
            "{log}"
        );
    }

    #[test]
    fn a_kind_is_the_message_up_to_its_first_colon_and_bounded() {
        let mut fields = LineFields::default();
        let _ = write!(
            fields.kind,
            "{:?}",
            format_args!("stream error: {}", "x: y")
        );
        assert_eq!(fields.kind.text, "stream error");
        let mut long = KindWriter::default();
        let _ = long.write_str(&"é".repeat(1000));
        assert_eq!(long.text.chars().count(), MAX_KIND_CHARS);
    }

    /// What `style` writes for one warning and one info line (limit wide open).
    fn written(style: LogStyle) -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let limit = ActixLogLimit::new(100, Duration::from_secs(10), Instant::now);
        let subscriber = subscriber(EnvFilter::new("info"), style, move || writer.clone(), limit);
        tracing::subscriber::with_default(subscriber, || {
            warn!(target: "maintd::registry", uuid = "u1", "incident failed");
            info!(target: "maintd::registry", job = 17, "job succeeded");
        });
        captured.text().lines().map(str::to_owned).collect()
    }

    #[test]
    fn json_lines_are_one_object_each_with_level_target_and_fields() {
        let lines = written(LogStyle {
            format: LogFormat::Json,
            ..LogStyle::default()
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
        assert_eq!(first["level"], "WARN");
        assert_eq!(first["target"], "maintd::registry");
        assert_eq!(first["fields"]["message"], "incident failed");
        assert_eq!(first["fields"]["uuid"], "u1");
        let second: serde_json::Value = serde_json::from_str(&lines[1]).expect("JSON");
        assert_eq!(second["fields"]["job"], 17);
    }

    #[test]
    fn journal_lines_carry_the_priority_and_no_timestamp() {
        let lines = written(LogStyle {
            journal: true,
            ..LogStyle::default()
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("<4> WARN maintd::registry: incident failed"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("<6> INFO maintd::registry: job succeeded"),
            "{lines:?}"
        );
        // Text to a terminal or file keeps its timestamp.
        let text = written(LogStyle::default());
        assert!(text[0].starts_with("20"), "{text:?}");
        assert!(!text[0].starts_with('<'), "{text:?}");
    }
}
