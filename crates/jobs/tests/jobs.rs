//! The job runner through its public API only, against the emulator: every job
//! ends ok or with a failure retrying cannot fix, no taskUUID runs twice, every
//! image billed reaches the caller, and a runner restarted on the same store (the
//! old one dropped, or its process killed) finishes what the old one started.

use runware_emulator::{Emulator, EmulatorHandle, FailMatch, FailRule, Fault, Latency};
use runware_jobs::{Halt, Job, JobErrorKind, JournalStore, RetryPolicy, Runner, Store};
use runware_ws::{Client, Kontext, KontextSize, KontextTask, ReconnectPolicy};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "jobs-test-key";

async fn emulator(latency: Latency, seed: u64) -> EmulatorHandle {
    Emulator::builder().api_key(KEY).latency(latency).seed(seed).start().await.expect("emulator")
}

/// A client that gives up on an outage after a few seconds (the runner must wait
/// it out all the same).
async fn client(emu: &EmulatorHandle, in_flight: usize) -> Client {
    Client::builder()
        .url(emu.ws_url())
        .api_key(KEY)
        .max_in_flight(in_flight)
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            max_attempts: Some(4),
            ..ReconnectPolicy::default()
        })
        .task_timeout(Duration::from_secs(120))
        .connect()
        .await
        .expect("client")
}

fn edit(i: usize, n: u32) -> KontextTask {
    Kontext::builder()
        .prompt(format!("job {i}: make it snow"))
        .size(KontextSize::ALL[i % 9])
        .number_results(n)
        .seed(1000 + i as u64)
        .build()
        .expect("a valid edit")
}

/// Retries enough that a job failing every attempt on a 10 % failure rate is not
/// a thing a test run meets (10 % to the power 11).
fn patient() -> RetryPolicy {
    RetryPolicy { retries: 10, backoff: Duration::from_millis(50), ..RetryPolicy::default() }
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("runware-jobs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Every image of `out` is new to `returned` (none reached a caller twice).
fn take_images(returned: &mut HashSet<String>, images: Vec<runware_jobs::JobImage>) {
    for img in images {
        assert!(returned.insert(img.record.image_uuid), "an image reached the caller twice");
    }
}

/// The end of a test on a journal store: its records written, the books checked,
/// the client and the emulator closed, the folder removed.
async fn finish(store: &JournalStore, emu: &EmulatorHandle, client: Client, returned: &HashSet<String>, dir: &Path) {
    store.finish().await.expect("journal written");
    assert_books(emu, returned);
    client.close(Duration::from_secs(1)).await;
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Checks the emulator's books: nothing ran twice, and every image billed is one
/// a job returned.
fn assert_books(emu: &EmulatorHandle, returned: &HashSet<String>) {
    let stats = emu.stats();
    assert_eq!(stats.double_executed, 0, "a taskUUID ran twice: {stats:?}");
    assert!(stats.max_executions_per_task <= 1, "{stats:?}");
    assert_eq!(stats.images_billed, returned.len() as u64, "images billed == images returned: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_jobs_through_faults_drops_and_an_outage_each_end_once() {
    let emu = Arc::new(emulator(Latency::Range(Duration::from_millis(20), Duration::from_millis(200)), 7).await);
    // 10 % of accepted tasks fail with a retryable code, 2 % are rate-limited, 1 %
    // fail after their first image.
    emu.inject(Fault::FailTasks(FailRule::new("timeoutProvider", FailMatch::Probability(0.10))));
    emu.inject(Fault::FailTasks(FailRule::new("requestRateLimitExceeded", FailMatch::Probability(0.02 / 0.9))));
    emu.inject(Fault::FailTasks(FailRule::new("serviceUnavailable", FailMatch::Probability(0.01 / 0.88)).after(1)));
    let client = client(&emu, 128).await;
    let policy = RetryPolicy {
        retries: 12,
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        ..RetryPolicy::default()
    };
    let runner = Runner::builder(client.clone()).policy(policy).keep_outputs(false).build();
    const JOBS: usize = 2000;
    let mut handles = Vec::with_capacity(JOBS);
    let mut wanted = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let n = 1 + (i % 4) as u32;
        wanted.push(n);
        let runner = runner.clone();
        handles.push(tokio::spawn(async move { runner.run(Job::new(format!("job-{i}"), edit(i, n))).await }));
    }
    // Drops every 2 s; a 20 s outage once a quarter of the jobs are done.
    let faults = {
        let (emu_inject, runner) = (emu.clone(), runner.clone());
        tokio::spawn(async move {
            let mut outage_done = false;
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.tick().await;
            loop {
                tick.tick().await;
                if !outage_done && runner.status().ok >= (JOBS / 4) as u64 {
                    emu_inject.inject(Fault::Outage(Duration::from_secs(20)));
                    outage_done = true;
                } else {
                    emu_inject.inject(Fault::Drop);
                }
                if runner.status().ok + runner.status().failed >= JOBS as u64 {
                    return outage_done;
                }
            }
        })
    };
    let mut returned = HashSet::new();
    let (mut ok, mut failed) = (0, 0);
    for (i, h) in handles.into_iter().enumerate() {
        match h.await.expect("joined") {
            Ok(out) => {
                assert_eq!(out.images.len(), wanted[i] as usize, "job {i} got every image");
                take_images(&mut returned, out.images);
                ok += 1;
            }
            Err(e) => {
                match e.kind.as_ref() {
                    JobErrorKind::Failed { is_final: true, .. } => {}
                    other => panic!("job {i} ended with a retryable or unknown outcome: {other}"),
                }
                take_images(&mut returned, e.images);
                failed += 1;
            }
        }
    }
    let outage_happened = faults.await.expect("fault injector");
    assert!(outage_happened, "the outage was injected mid-run");
    let status = runner.status();
    println!("jobs: {ok} ok, {failed} failed; {status:?}; emulator {:?}", emu.stats());
    assert_eq!(ok + failed, JOBS);
    assert!(status.retries > 100, "server-reported failures were retried: {status:?}");
    assert!(emu.stats().tasks_failed_injected > 200);
    assert_books(&emu, &returned);
    client.close(Duration::from_secs(1)).await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_dropped_mid_run_is_finished_by_a_new_one_on_the_same_store() {
    let emu = emulator(Latency::Range(Duration::from_millis(50), Duration::from_millis(300)), 11).await;
    emu.inject(Fault::FailTasks(FailRule::new("timeoutProvider", FailMatch::Probability(0.1)).after(1)));
    let dir = temp_dir();
    let path = dir.join("jobs.jsonl");
    const JOBS: usize = 300;
    let first_images = {
        let client = client(&emu, 64).await;
        let store = Arc::new(JournalStore::open(&path, "emulator").await.expect("store"));
        let runner = Runner::builder(client.clone()).store(store.clone()).policy(patient()).build();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..JOBS {
            let runner = runner.clone();
            set.spawn(async move { runner.run(Job::new(format!("job-{i}"), edit(i, 1 + (i % 3) as u32))).await });
        }
        // Dropped once some jobs are done and many are in flight.
        while runner.status().ok < (JOBS / 3) as u64 {
            set.join_next().await;
        }
        set.abort_all();
        while set.join_next().await.is_some() {}
        let images = runner.status().images;
        drop(runner);
        store.finish().await.expect("journal written");
        client.close(Duration::from_millis(100)).await;
        images
    };
    assert!(first_images > 0);
    let client = client(&emu, 64).await;
    let store = Arc::new(JournalStore::open(&path, "emulator").await.expect("store reopened"));
    assert!(!store.unfinished().is_empty(), "the first runner left jobs open");
    let runner = Runner::builder(client.clone()).store(store.clone()).policy(patient()).build();
    let mut returned = HashSet::new();
    let mut earlier = 0;
    let handles: Vec<_> = (0..JOBS)
        .map(|i| {
            let runner = runner.clone();
            tokio::spawn(async move { runner.run(Job::new(format!("job-{i}"), edit(i, 1 + (i % 3) as u32))).await })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.await.expect("joined").unwrap_or_else(|e| panic!("job {i}: {e}"));
        assert_eq!(out.images.len(), 1 + i % 3);
        earlier += usize::from(out.earlier);
        take_images(&mut returned, out.images);
    }
    assert!(earlier >= JOBS / 3, "jobs the first runner finished were not sent again ({earlier})");
    finish(&store, &emu, client, &returned, &dir).await;
}

/// The child process of the SIGKILL test: runs the jobs on the store at
/// `RUNWARE_JOBS_STORE` against `RUNWARE_JOBS_URL` until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_killed_process_is_finished_by_the_next_one as its child"]
async fn child_runs_jobs_until_killed() {
    let (Ok(url), Ok(path)) = (std::env::var("RUNWARE_JOBS_URL"), std::env::var("RUNWARE_JOBS_STORE")) else {
        return;
    };
    let client = Client::builder().url(url).api_key(KEY).max_in_flight(64).connect().await.expect("client");
    let store = Arc::new(JournalStore::open(&path, "emulator").await.expect("store"));
    let runner = Runner::builder(client).store(store).build();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..KILLED_JOBS {
        let runner = runner.clone();
        set.spawn(async move { runner.run(Job::new(format!("job-{i}"), edit(i, 2))).await });
    }
    while set.join_next().await.is_some() {}
}

const KILLED_JOBS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_finished_by_the_next_one() {
    let emu = emulator(Latency::Range(Duration::from_millis(100), Duration::from_millis(400)), 13).await;
    let dir = temp_dir();
    let path = dir.join("jobs.jsonl");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_runs_jobs_until_killed", "--ignored", "--nocapture"])
        .env("RUNWARE_JOBS_URL", emu.ws_url())
        .env("RUNWARE_JOBS_STORE", &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("child started");
    // Killed once a third of the images are journaled: many attempts are open then.
    let images_in =
        |p: &std::path::Path| std::fs::read_to_string(p).map(|t| t.matches("\"type\":\"image\"").count()).unwrap_or(0);
    let mut waited = 0;
    while images_in(&path) < KILLED_JOBS * 2 / 3 {
        assert!(child.try_wait().expect("child status").is_none(), "the child ended before it was killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
        assert!(waited < 3000, "the child journaled too few images in 60 s");
    }
    // SAFETY: sends SIGKILL to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let before = emu.stats().executions_total;
    assert!(before > 0);

    let client = client(&emu, 64).await;
    let store = Arc::new(JournalStore::open(&path, "emulator").await.expect("store reopened"));
    let runner = Runner::builder(client.clone()).store(store.clone()).build();
    let mut handles = Vec::new();
    for i in 0..KILLED_JOBS {
        let runner = runner.clone();
        handles.push(tokio::spawn(async move { runner.run(Job::new(format!("job-{i}"), edit(i, 2))).await }));
    }
    let mut returned = HashSet::new();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.await.expect("joined").unwrap_or_else(|e| panic!("job {i}: {e}"));
        assert_eq!(out.images.len(), 2);
        take_images(&mut returned, out.images);
    }
    finish(&store, &emu, client, &returned, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_failure_halts_every_job_with_one_error_and_nothing_runs_after() {
    let emu = emulator(Latency::Fixed(Duration::from_millis(50)), 17).await;
    let client = client(&emu, 8).await;
    let runner = Runner::builder(client.clone()).max_in_flight(4).build();
    emu.inject(Fault::FailTasks(FailRule::new("insufficientCredits", FailMatch::Every)));
    let mut handles = Vec::new();
    for i in 0..40 {
        let runner = runner.clone();
        handles.push(tokio::spawn(async move { runner.run(Job::new(format!("job-{i}"), edit(i, 1))).await }));
    }
    for h in handles {
        let e = h.await.expect("joined").expect_err("no job can succeed");
        assert!(e.is_pending(), "an account failure leaves jobs pending: {e}");
        assert!(matches!(*e.kind, JobErrorKind::Halted(Halt::Account(_))), "{e}");
    }
    assert!(matches!(runner.halted(), Some(Halt::Account(m)) if m.contains("insufficientCredits")));
    assert!(emu.stats().executions_total <= 8, "jobs stopped being sent at the first failure: {:?}", emu.stats());
    client.close(Duration::from_secs(1)).await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spend_cap_refuses_an_attempt_before_it_is_sent() {
    let emu = emulator(Latency::Fixed(Duration::from_millis(20)), 19).await;
    let client = client(&emu, 8).await;
    // $0.04 an image: 2 jobs of 2 images fit in $0.17, the third does not.
    let runner = Runner::builder(client.clone()).max_in_flight(1).max_cost(0.17).build();
    for i in 0..2 {
        runner.run(Job::new(format!("job-{i}"), edit(i, 2))).await.expect("within the cap");
    }
    let e = runner.run(Job::new("job-2", edit(2, 2))).await.expect_err("over the cap");
    assert!(matches!(*e.kind, JobErrorKind::Halted(Halt::Budget { .. })), "{e}");
    assert_eq!(emu.stats().images_billed, 4);
    assert!((runner.status().billed_usd - 0.16).abs() < 1e-9);
    client.close(Duration::from_secs(1)).await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_finished_earlier_returns_its_images_and_sends_nothing() {
    let emu = emulator(Latency::Fixed(Duration::from_millis(10)), 23).await;
    let client = client(&emu, 8).await;
    let runner = Runner::builder(client.clone()).build();
    let first = runner.run(Job::new("same", edit(1, 3))).await.expect("ok");
    let sent = emu.stats().tasks_received;
    let again = runner.run(Job::new("same", edit(1, 3))).await.expect("ok");
    assert!(again.earlier && !first.earlier);
    assert_eq!(emu.stats().tasks_received, sent, "nothing sent for a finished job");
    let uuids = |o: &runware_jobs::JobOutput| o.images.iter().map(|i| i.record.image_uuid.clone()).collect::<Vec<_>>();
    assert_eq!(uuids(&first), uuids(&again));
    // A refusal for good is final and not retried.
    let bad = Kontext::builder().prompt("a refused edit").size(KontextSize::R1x1).build().expect("valid");
    emu.inject(Fault::FailTasks(FailRule::new("contentPolicyViolation", FailMatch::Every).times(1)));
    let e = runner.run(Job::new("refused", bad)).await.expect_err("refused");
    assert!(
        matches!(e.kind.as_ref(), JobErrorKind::Failed { is_final: true, code, .. } if code == "contentPolicyViolation")
    );
    client.close(Duration::from_secs(1)).await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_job_run_twice_at_once_runs_once_and_both_get_its_images() {
    let emu = emulator(Latency::Fixed(Duration::from_millis(100)), 29).await;
    let client = client(&emu, 8).await;
    let runner = Runner::builder(client.clone()).build();
    // A service receiving one request twice (a client's retry) with one idempotency key.
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let runner = runner.clone();
            tokio::spawn(async move { runner.run(Job::new("order-7", edit(7, 2))).await })
        })
        .collect();
    let mut outs = Vec::new();
    for r in runs {
        outs.push(r.await.expect("joined").unwrap_or_else(|e| panic!("both runs end ok: {e}")));
    }
    let uuids = |o: &runware_jobs::JobOutput| o.images.iter().map(|i| i.record.image_uuid.clone()).collect::<Vec<_>>();
    assert_eq!(uuids(&outs[0]), uuids(&outs[1]), "the same images");
    assert_eq!(outs.iter().filter(|o| o.earlier).count(), 1, "the second found the first's outcome");
    assert_eq!(emu.stats().executions_total, 1, "one execution: {:?}", emu.stats());
    assert_eq!(emu.stats().images_billed, 2);
    client.close(Duration::from_secs(1)).await;
    emu.shutdown().await;
}
