//! The state every part of the emulator shares.

use super::config::{Config, Latency};
use super::faults::FaultState;
use super::link::ConnRegistry;
use super::media::MediaStore;
use super::session::Sessions;
use super::stats::Counters;
use super::sync::lock;
use super::tasks::TaskStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use uuid::Uuid;

/// Everything behind the `Arc` that routes, connections and tasks hold.
pub(crate) struct Shared {
    pub cfg: Config,
    pub stats: Counters,
    pub sessions: Sessions,
    pub tasks: TaskStore,
    pub media: MediaStore,
    pub faults: FaultState,
    pub conns: ConnRegistry,
    /// `http://127.0.0.1:PORT`, for URLs handed out.
    pub http_url: String,
    /// The client for webhooks, upload endpoints and reference URLs.
    pub http: reqwest::Client,
    /// Bounds concurrent image encodes (each runs on the blocking pool).
    pub render_permits: Semaphore,
    /// Becomes `true` at shutdown.
    pub shutdown: watch::Receiver<bool>,
    rng: Mutex<StdRng>,
}

impl Shared {
    pub fn new(cfg: Config, http_url: String, http: reqwest::Client, shutdown: watch::Receiver<bool>) -> Shared {
        let rng = match cfg.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Shared {
            stats: Counters::default(),
            sessions: Sessions::new(cfg.max_sessions),
            tasks: TaskStore::new(cfg.max_retained_tasks, cfg.max_retained_bytes),
            media: MediaStore::default(),
            faults: FaultState::default(),
            conns: ConnRegistry::default(),
            http_url,
            http,
            render_permits: Semaphore::new(cpus * 2),
            shutdown,
            rng: Mutex::new(rng),
            cfg,
        }
    }

    /// Runs `f` with the seeded RNG.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        let mut guard = lock(&self.rng);
        f(&mut guard)
    }

    /// A UUID v4 drawn from the seeded RNG.
    pub fn new_uuid(&self) -> Uuid {
        let bytes: [u8; 16] = self.with_rng(|r| r.random());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// A random seed in the unsigned 32-bit range, as Runware picks them.
    pub fn random_seed(&self) -> u64 {
        u64::from(self.with_rng(|r| r.random::<u32>()))
    }

    /// One task's latency.
    pub fn sample_latency(&self) -> Duration {
        match self.cfg.latency {
            Latency::Fixed(d) => d,
            Latency::Range(min, max) if max > min => {
                let span = (max - min).as_nanos().min(u128::from(u64::MAX)) as u64;
                min + Duration::from_nanos(self.with_rng(|r| r.random_range(0..=span)))
            }
            Latency::Range(min, _) => min,
        }
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves when shutdown begins.
    pub async fn shutdown_signal(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|down| *down).await;
    }
}
