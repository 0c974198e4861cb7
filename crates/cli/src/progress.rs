//! Batch progress on stderr: an indicatif bar on a terminal (done, failed, in
//! flight, images/s, ETA), plain periodic lines otherwise, nothing with `-q`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// How often the bar's message is refreshed.
const BAR_EVERY: Duration = Duration::from_millis(200);

/// Counters of a batch run, and their display.
#[derive(Debug)]
pub struct Progress {
    total: u64,
    started: Instant,
    ok: AtomicU64,
    failed: AtomicU64,
    pending: AtomicU64,
    retries: AtomicU64,
    in_flight: AtomicU64,
    images: AtomicU64,
    cost_micros: AtomicU64,
    cap: AtomicU64,
    max_cap: AtomicU64,
    outage: Mutex<Option<Outage>>,
    /// Each line's latency, µs.
    latencies_us: Mutex<Vec<u64>>,
    bar: Option<ProgressBar>,
    plain: bool,
}

/// The server cannot be reached: since when, and what the reconnect loop is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    /// When the connection was lost.
    pub since: Instant,
    /// The reconnect attempt under way.
    pub attempt: u32,
    /// When that attempt connects, when known.
    pub next_at: Option<Instant>,
}

/// `waiting for the server since 00:42 (for 12.0 s), attempt 9, next in 5.0 s`: since
/// when on the run's clock (minutes:seconds from its start), for how long, and what
/// the reconnect loop does next.
pub fn describe_outage(o: &Outage, run_started: Instant, now: Instant) -> String {
    let at = o.since.saturating_duration_since(run_started).as_secs();
    let lasted = now.saturating_duration_since(o.since);
    let mut s = format!(
        "waiting for the server since {:02}:{:02} (for {}), attempt {}",
        at / 60,
        at % 60,
        super::output::human_duration(lasted),
        o.attempt
    );
    if let Some(at) = o.next_at.filter(|at| *at > now) {
        s.push_str(&format!(", next in {}", super::output::human_duration(at - now)));
    }
    s
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Median, ms (to the microsecond).
    pub p50: f64,
    /// 95th percentile, ms.
    pub p95: f64,
    /// 99th percentile, ms.
    pub p99: f64,
}

impl Progress {
    /// Progress over `total` lines to run; a bar when stderr is a terminal.
    pub fn new(total: u64, quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner:.green} {elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len}\n  {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            total,
            started: Instant::now(),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            images: AtomicU64::new(0),
            cost_micros: AtomicU64::new(0),
            cap: AtomicU64::new(0),
            max_cap: AtomicU64::new(0),
            outage: Mutex::new(None),
            latencies_us: Mutex::new(Vec::new()),
            bar,
            plain: !quiet && !terminal,
        }
    }

    /// A message (a bad line, a warning) that must not garble the bar.
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// An attempt was sent.
    pub fn submitted(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// A sent attempt ended (all its results, or a failure).
    pub fn attempt_ended(&self) {
        let _ = self.in_flight.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// An image was saved (or, without downloads, received), at `cost` USD.
    pub fn image(&self, cost: Option<f64>) {
        self.images.fetch_add(1, Relaxed);
        if let Some(c) = cost.filter(|c| *c > 0.0) {
            self.cost_micros.fetch_add((c * 1e6).round() as u64, Relaxed);
        }
    }

    /// A line will be tried again under a new taskUUID.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// A line ended: `ok`, or failed.
    pub fn line_done(&self, ok: bool, latency: Option<Duration>) {
        self.record(ok, latency);
    }

    /// A line's outcome is not known yet: it stays pending in the journal.
    pub fn line_pending(&self) {
        self.pending.fetch_add(1, Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// A line failed before it was submitted.
    pub fn rejected(&self) {
        self.record(false, None);
    }

    /// The in-flight cap now, and its maximum.
    pub fn set_cap(&self, cap: usize, max: usize) {
        self.cap.store(cap as u64, Relaxed);
        self.max_cap.store(max as u64, Relaxed);
    }

    /// The server is unreachable (`Some`), or reachable again (`None`).
    pub fn set_outage(&self, outage: Option<Outage>) {
        *self.outage.lock().unwrap_or_else(|p| p.into_inner()) = outage;
    }

    fn record(&self, ok: bool, latency: Option<Duration>) {
        if ok {
            self.ok.fetch_add(1, Relaxed);
        } else {
            self.failed.fetch_add(1, Relaxed);
        }
        if let Some(l) = latency {
            let mut v = self.latencies_us.lock().unwrap_or_else(|p| p.into_inner());
            v.push(u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Tasks that ended well.
    pub fn ok(&self) -> u64 {
        self.ok.load(Relaxed)
    }
    /// Tasks and lines that failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Relaxed)
    }
    /// Attempts in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }
    /// Lines left pending (outcome unknown, or the run stopped).
    pub fn pending(&self) -> u64 {
        self.pending.load(Relaxed)
    }
    /// New attempts made after a failure the server reported.
    pub fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }
    /// Images saved (or, without downloads, received).
    pub fn images(&self) -> u64 {
        self.images.load(Relaxed)
    }
    /// Total cost reported by the server, USD.
    pub fn cost(&self) -> f64 {
        self.cost_micros.load(Relaxed) as f64 / 1e6
    }
    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Latency percentiles of the tasks that ended (submit → last result).
    pub fn percentiles(&self) -> Percentiles {
        let mut v = self.latencies_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_unstable();
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0;
        Percentiles { p50: at(0.50), p95: at(0.95), p99: at(0.99) }
    }

    /// `ok 12 · failed 1 · retries 2 · in flight 32 (cap 32) · 8.4 img/s · ETA 42 s`, and
    /// `· waiting for the server since 00:42, attempt 9, next in 5 s` during an outage.
    pub fn status_line(&self) -> String {
        let secs = self.elapsed().as_secs_f64().max(1e-3);
        let done = self.ok() + self.failed() + self.pending();
        let remaining = self.total.saturating_sub(done);
        let eta = if done == 0 {
            "?".to_string()
        } else {
            super::output::human_duration(Duration::from_secs_f64(remaining as f64 * secs / done as f64))
        };
        let (cap, max) = (self.cap.load(Relaxed), self.max_cap.load(Relaxed));
        let cap = if cap < max { format!(" (cap {cap} of {max})") } else { String::new() };
        let mut line = format!(
            "ok {} · failed {} · retries {} · in flight {}{cap} · {:.1} img/s · ETA {eta}",
            self.ok(),
            self.failed(),
            self.retries(),
            self.in_flight(),
            self.images() as f64 / secs
        );
        if self.pending() > 0 {
            line.push_str(&format!(" · pending {}", self.pending()));
        }
        if self.cost() > 0.0 {
            line.push_str(&format!(" · billed {}", super::output::dollars(self.cost())));
        }
        let outage = *self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = outage {
            line.push_str(&format!(" · {}", describe_outage(&o, self.started, Instant::now())));
        }
        line
    }

    /// Refreshes the display until `stop` is notified.
    pub async fn run_display(&self, stop: &tokio::sync::Notify) {
        if self.bar.is_none() && !self.plain {
            stop.notified().await;
            return;
        }
        let every = if self.bar.is_some() { BAR_EVERY } else { PLAIN_EVERY };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let stopped = stop.notified();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tick.tick() => {
                    match &self.bar {
                        Some(bar) => bar.set_message(self.status_line()),
                        None => eprintln!(
                            "[{}] {}/{} done · {}",
                            super::output::human_duration(self.elapsed()),
                            self.ok() + self.failed(),
                            self.total,
                            self.status_line()
                        ),
                    }
                }
            }
        }
    }

    /// Removes the bar.
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_counts() {
        let p = Progress::new(100, true);
        for ms in 1..=100 {
            p.submitted();
            p.image(Some(0.02));
            p.image(Some(0.02));
            p.attempt_ended();
            p.line_done(ms % 10 != 0, Some(Duration::from_millis(ms)));
        }
        p.rejected();
        p.line_pending();
        assert_eq!((p.ok(), p.failed(), p.in_flight(), p.pending(), p.images()), (90, 11, 0, 1, 200));
        assert!((p.cost() - 4.0).abs() < 1e-9);
        assert_eq!(p.percentiles(), Percentiles { p50: 50.0, p95: 95.0, p99: 99.0 });
        // Below a millisecond, to the microsecond.
        let fast = Progress::new(2, true);
        fast.line_done(true, Some(Duration::from_micros(412)));
        fast.line_done(true, Some(Duration::from_micros(87)));
        assert_eq!(fast.percentiles(), Percentiles { p50: 0.087, p95: 0.412, p99: 0.412 });
    }

    #[test]
    fn the_status_line_shows_the_cap_and_an_outage() {
        let p = Progress::new(10, true);
        p.set_cap(4, 32);
        assert!(p.status_line().contains("(cap 4 of 32)"), "{}", p.status_line());
        p.set_cap(32, 32);
        assert!(!p.status_line().contains("cap"), "{}", p.status_line());
        let start = Instant::now();
        let next_at = Some(start + Duration::from_secs(59));
        let o = Outage { since: start + Duration::from_secs(42), attempt: 9, next_at };
        let text = describe_outage(&o, start, start + Duration::from_secs(54));
        assert_eq!(text, "waiting for the server since 00:42 (for 12.0 s), attempt 9, next in 5.0 s");
        p.set_outage(Some(o));
        assert!(p.status_line().contains("attempt 9"), "{}", p.status_line());
        p.set_outage(None);
        assert!(!p.status_line().contains("waiting"));
    }
}
