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
    in_flight: AtomicU64,
    saving: AtomicU64,
    images: AtomicU64,
    cost_micros: AtomicU64,
    latencies_ms: Mutex<Vec<u64>>,
    bar: Option<ProgressBar>,
    plain: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
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
            in_flight: AtomicU64::new(0),
            saving: AtomicU64::new(0),
            images: AtomicU64::new(0),
            cost_micros: AtomicU64::new(0),
            latencies_ms: Mutex::new(Vec::new()),
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

    /// A task was submitted.
    pub fn submitted(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// A submitted task's results are all in (or it failed): it is no longer in
    /// flight, and its images are being saved.
    pub fn arrived(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
        self.saving.fetch_add(1, Relaxed);
    }

    /// A task that [arrived](Progress::arrived) ended.
    pub fn finished(&self, ok: bool, images: u64, cost: f64, latency: Option<Duration>) {
        self.saving.fetch_sub(1, Relaxed);
        self.record(ok, images, cost, latency);
    }

    /// A line failed before it was submitted.
    pub fn rejected(&self) {
        self.record(false, 0, 0.0, None);
    }

    fn record(&self, ok: bool, images: u64, cost: f64, latency: Option<Duration>) {
        if ok {
            self.ok.fetch_add(1, Relaxed);
        } else {
            self.failed.fetch_add(1, Relaxed);
        }
        self.images.fetch_add(images, Relaxed);
        if cost > 0.0 {
            self.cost_micros.fetch_add((cost * 1e6).round() as u64, Relaxed);
        }
        if let Some(l) = latency
            && let Ok(mut v) = self.latencies_ms.lock()
        {
            v.push(u64::try_from(l.as_millis()).unwrap_or(u64::MAX));
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
    /// Tasks in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }
    /// Tasks whose images are being saved now.
    pub fn saving(&self) -> u64 {
        self.saving.load(Relaxed)
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
        let mut v = self.latencies_ms.lock().map(|v| v.clone()).unwrap_or_default();
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_unstable();
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Percentiles { p50: at(0.50), p95: at(0.95), p99: at(0.99) }
    }

    /// `ok 12 · failed 1 · in flight 32 · saving 3 · 8.4 img/s · ETA 42 s`
    pub fn status_line(&self) -> String {
        let secs = self.elapsed().as_secs_f64().max(1e-3);
        let done = self.ok() + self.failed();
        let remaining = self.total.saturating_sub(done);
        let eta = if done == 0 {
            "?".to_string()
        } else {
            super::output::human_duration(Duration::from_secs_f64(remaining as f64 * secs / done as f64))
        };
        format!(
            "ok {} · failed {} · in flight {} · saving {} · {:.1} img/s · ETA {eta}",
            self.ok(),
            self.failed(),
            self.in_flight(),
            self.saving(),
            self.images() as f64 / secs
        )
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
            p.arrived();
            p.finished(ms % 10 != 0, 2, 0.04, Some(Duration::from_millis(ms)));
        }
        p.rejected();
        assert_eq!((p.ok(), p.failed(), p.in_flight(), p.saving(), p.images()), (90, 11, 0, 0, 200));
        assert!((p.cost() - 4.0).abs() < 1e-9);
        assert_eq!(p.percentiles(), Percentiles { p50: 50, p95: 95, p99: 99 });
    }
}
