//! The fleet against a real PostgreSQL: a throwaway cluster (initdb + pg_ctl, as
//! the `postgres` user when run as root) on a free loopback port in a temp dir,
//! three `runware worker` processes, the emulator in this process.
//!
//! Without PostgreSQL's binaries the tests say so and pass, unless
//! `RUNWARE_FLEET_TESTS=required` (set by `.ci/run`, which installs them).
#![cfg(unix)]

mod cli_support;

use cli_support::*;
use runware_emulator::{Emulator, EmulatorHandle, FailMatch, FailRule, Fault, Latency};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A PostgreSQL cluster that lives as long as this value.
struct Pg {
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    /// Only TLS connections are accepted (`hostssl`).
    tls: bool,
}

fn pg_bin(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect();
        versions.sort();
        dirs.extend(versions.into_iter().rev());
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

impl Pg {
    fn start() -> Option<Pg> {
        Pg::boot(None)
    }

    /// A cluster that accepts only TLS, with this certificate and key (PEM).
    fn start_tls(cert_pem: &str, key_pem: &str) -> Option<Pg> {
        Pg::boot(Some((cert_pem, key_pem)))
    }

    fn boot(tls: Option<(&str, &str)>) -> Option<Pg> {
        let (Some(initdb), Some(_)) = (pg_bin("initdb"), pg_bin("pg_ctl")) else {
            if std::env::var("RUNWARE_FLEET_TESTS").as_deref() == Ok("required") {
                panic!("RUNWARE_FLEET_TESTS=required but PostgreSQL's initdb/pg_ctl are not installed");
            }
            eprintln!("skipped: PostgreSQL (initdb, pg_ctl) is not installed; .ci/run installs it");
            return None;
        };
        let as_postgres = unsafe_is_root();
        let dir = scratch("pg");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        if as_postgres {
            let ok = Command::new("chown").args(["-R", "postgres"]).arg(&dir).status().map(|s| s.success());
            assert_eq!(ok.ok(), Some(true), "chown the cluster dir to postgres");
            // Every parent must be traversable by postgres.
            let mut p = dir.parent();
            while let Some(d) = p {
                let _ = Command::new("chmod").arg("o+x").arg(d).status();
                p = d.parent();
            }
        }
        let pg = Pg { dir, port, as_postgres, tls: tls.is_some() };
        let status = pg
            .command(&initdb)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(pg.dir.join("data"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        if let Some((cert, key)) = tls {
            let data = pg.dir.join("data");
            std::fs::write(data.join("server.crt"), cert).expect("write the certificate");
            std::fs::write(data.join("server.key"), key).expect("write the key");
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
            )
            .expect("write pg_hba.conf");
            let conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("postgresql.conf");
            std::fs::write(data.join("postgresql.conf"), conf + "\nssl = on\n").expect("write postgresql.conf");
            if pg.as_postgres {
                let ok = Command::new("chown").args(["-R", "postgres"]).arg(&data).status().map(|s| s.success());
                assert_eq!(ok.ok(), Some(true));
            }
            let ok = Command::new("chmod").arg("600").arg(data.join("server.key")).status().map(|s| s.success());
            assert_eq!(ok.ok(), Some(true));
        }
        pg.ctl(&["start", "-w"]);
        Some(pg)
    }

    fn command(&self, bin: &Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }

    fn ctl(&self, args: &[&str]) {
        let pg_ctl = pg_bin("pg_ctl").expect("pg_ctl");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.dir.display()
        );
        let status = self
            .command(&pg_ctl)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &opts, "-l"])
            .arg(self.dir.join("log"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl {args:?} failed");
    }

    /// Runs `sql` with psql; its unaligned, tuples-only output.
    fn sql(&self, sql: &str) -> String {
        let psql = pg_bin("psql").expect("psql");
        let out = Command::new(psql).args(["-Atq", "-d", &self.url(), "-c", sql]).output().expect("psql runs");
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The URL psql uses (TLS without verification on a TLS-only cluster).
    fn url(&self) -> String {
        let tls = if self.tls { "?sslmode=require" } else { "" };
        format!("postgres://postgres@127.0.0.1:{}/postgres{tls}", self.port)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(pg_ctl) = pg_bin("pg_ctl") {
            let _ =
                self.command(&pg_ctl).arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "stop"]).status();
        }
    }
}

fn unsafe_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn lines(n: usize) -> Vec<Value> {
    let image = example_image("courtyard-tiles.png");
    (0..n)
        .map(|i| {
            json!({
                "positivePrompt": format!("Fleet edit {i}: repaint at golden hour"),
                "width": 1024, "height": 1024, "numberResults": 1 + (i % 2),
                "inputs": {"referenceImages": [image.display().to_string()]},
            })
        })
        .collect()
}

/// The emulator every fleet test runs against: 0.2–1 s per task, small pictures
/// (encoding full-size ones would dominate a 5,000-task run on two cores).
async fn fleet_emulator() -> EmulatorHandle {
    Emulator::builder()
        .api_key(KEY)
        .latency(Latency::Range(Duration::from_millis(200), Duration::from_millis(1000)))
        .render_divisor(16)
        .seed(11)
        .start()
        .await
        .expect("the emulator starts")
}

fn worker(emu: &EmulatorHandle, pg: &Pg, out: &Path) -> tokio::process::Command {
    worker_c(emu, pg, out, 16)
}

/// A worker running up to `c` tasks at once, leases of 3 s, that exits when the
/// queue is empty.
fn worker_c(emu: &EmulatorHandle, pg: &Pg, out: &Path, c: usize) -> tokio::process::Command {
    let mut cmd = runware();
    cmd.arg("worker").args(api(emu)).args(["--queue", &pg.url(), "--lease", "3s", "--exit-when-idle"]);
    cmd.arg("-c").arg(c.to_string()).arg("-o").arg(out);
    cmd
}

/// Three workers with `extra` flags.
fn three_workers(emu: &EmulatorHandle, pg: &Pg, out: &Path, extra: &[&str]) -> Vec<tokio::process::Child> {
    (0..3)
        .map(|_| {
            let mut w = worker(emu, pg, out);
            w.args(extra);
            w.spawn().expect("a worker starts")
        })
        .collect()
}

async fn submit(emu: &EmulatorHandle, pg: &Pg, file: &Path) -> Run {
    let mut cmd = runware();
    cmd.args(["batch", "submit"]).arg(file).args(api(emu)).args(["--queue", &pg.url()]);
    exec(cmd).await
}

async fn results(pg: &Pg, id: &str) -> Vec<Value> {
    let mut cmd = runware();
    cmd.args(["batch", "results", id, "--queue", &pg.url()]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON record")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_tasks_with_a_worker_killed_every_five_seconds_run_once_each() {
    let Some(pg) = Pg::start() else { return };
    let emu = fleet_emulator().await;
    let dir = scratch("fleet");
    let file = dir.join("edits.jsonl");
    let n = 5000;
    write_jsonl(&file, &lines(n));

    let first = submit(&emu, &pg, &file).await;
    assert_eq!(first.code, 0, "{first:?}");
    let id = first.stdout.trim().to_string();
    assert!(first.stderr.contains(&format!("{n} added")), "{first:?}");
    // The same file again adds nothing and names the same batch.
    let again = submit(&emu, &pg, &file).await;
    assert_eq!((again.code, again.stdout.trim()), (0, id.as_str()), "{again:?}");
    assert!(again.stderr.contains("0 added"), "{again:?}");

    let out = dir.join("out");
    let mut steady: Vec<_> = (0..2).map(|_| worker_c(&emu, &pg, &out, 64).spawn().expect("a worker starts")).collect();
    // The third worker is SIGKILLed every 5 s and started again.
    let mut victim = worker_c(&emu, &pg, &out, 64).spawn().expect("a worker starts");
    let mut kills = 0;
    let finished = loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = victim.wait() => {}
        }
        let all_done = {
            let mut done = true;
            for w in steady.iter_mut() {
                done &= w.try_wait().ok().flatten().is_some();
            }
            done
        };
        if all_done {
            break true;
        }
        if kills >= 60 {
            break false;
        }
        let _ = victim.start_kill();
        let _ = victim.wait().await;
        kills += 1;
        victim = worker_c(&emu, &pg, &out, 64).spawn().expect("a worker starts");
    };
    let _ = victim.start_kill();
    assert!(finished, "the steady workers did not finish");
    assert!(kills >= 2, "the victim was killed only {kills} times");

    let records = results(&pg, &id).await;
    assert_eq!(records.len(), n, "one result per line");
    let distinct: HashSet<u64> = records.iter().filter_map(|r| r["line"].as_u64()).collect();
    assert_eq!(distinct.len(), n, "no line twice");
    assert!(records.iter().all(|r| r["status"] == "ok"), "every line succeeded");
    let recorded: usize = records.iter().map(|r| r["images"].as_array().map_or(0, Vec::len)).sum();
    let stats = emu.stats();
    assert_eq!(stats.double_executed, 0, "a taskUUID ran twice");
    assert_eq!(stats.max_executions_per_task, 1);
    assert_eq!(stats.images_billed as usize, recorded, "images billed == images recorded");
    let expected: usize = (0..n).map(|i| 1 + (i % 2)).sum();
    assert_eq!(recorded, expected);
    // The shared reference was uploaded once, by the submit.
    assert_eq!(stats.uploads, 1);
    assert_eq!(successes(&emu), n, "no line succeeded twice on the server");
    println!("fleet: {n} lines, {recorded} images, victim killed {kills} times, {} conflicts", stats.conflicts);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Inference tasks that ended in success on the emulator (uploads, which execute
/// nothing, are not counted).
fn successes(emu: &EmulatorHandle) -> usize {
    emu.task_stats().values().filter(|t| t.status == "success" && t.executions > 0).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_pauses_the_batch_and_a_working_one_resumes_it() {
    let Some(pg) = Pg::start() else { return };
    let emu = fleet_emulator().await;
    let dir = scratch("fleet-auth");
    let file = dir.join("edits.jsonl");
    write_jsonl(&file, &lines(10));
    let first = submit(&emu, &pg, &file).await;
    assert_eq!(first.code, 0, "{first:?}");
    let id = first.stdout.trim().to_string();

    // A worker with a wrong key for the same endpoint.
    let mut bad = runware();
    bad.args(["worker", "--url", &emu.ws_url(), "--api-key", "wrong-key", "--queue", &pg.url(), "--exit-when-idle"]);
    let run = exec(bad).await;
    assert_eq!(run.code, 3, "{run:?}");
    let mut status = runware();
    status.args(["--json", "batch", "status", &id, "--queue", &pg.url()]);
    let s: Value = serde_json::from_str(exec(status).await.stdout.trim()).expect("status JSON");
    assert_eq!(s["state"], "paused", "{s}");
    assert_eq!(s["counts"]["queued"], 10);

    // Three workers with the right key: one of them resumes the batch.
    let out = dir.join("out");
    let runs = futures::future::join_all((0..3).map(|_| exec(worker(&emu, &pg, &out)))).await;
    assert!(runs.iter().all(|r| r.code == 0), "{runs:?}");
    assert!(runs.iter().any(|r| r.stderr.contains("resumed")), "{runs:?}");
    check_once(&pg, &emu, &id, 10).await;
}

/// Checks a finished batch: one result per line, all ok, no taskUUID run twice,
/// images billed == images recorded.
async fn check_once(pg: &Pg, emu: &EmulatorHandle, id: &str, n: usize) {
    let records = results(pg, id).await;
    assert_eq!(records.len(), n, "one result per line");
    assert!(records.iter().all(|r| r["status"] == "ok"), "every line succeeded");
    let recorded: usize = records.iter().map(|r| r["images"].as_array().map_or(0, Vec::len)).sum();
    let stats = emu.stats();
    assert_eq!(stats.double_executed, 0, "a taskUUID ran twice");
    assert_eq!(stats.images_billed as usize, recorded, "images billed == images recorded");
    assert_eq!(successes(emu), n, "no line succeeded twice on the server");
}

async fn wait_all(workers: &mut [tokio::process::Child]) {
    for w in workers.iter_mut() {
        let status =
            tokio::time::timeout(Duration::from_secs(240), w.wait()).await.expect("workers finish").expect("wait");
        assert!(status.success(), "a worker failed: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_past_its_lease_changes_nothing_when_it_resumes() {
    let Some(pg) = Pg::start() else { return };
    let emu = fleet_emulator().await;
    let dir = scratch("fleet-stop");
    let file = dir.join("edits.jsonl");
    let n = 120;
    write_jsonl(&file, &lines(n));
    let first = submit(&emu, &pg, &file).await;
    let id = first.stdout.trim().to_string();
    let out = dir.join("out");
    let mut sleeper = worker(&emu, &pg, &out).spawn().expect("a worker starts");
    // Let it claim, then stop it past its lease (3 s) while others finish its tasks.
    while emu.stats().tasks_received < 8 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = sleeper.id().expect("pid") as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut others: Vec<_> = (0..2).map(|_| worker(&emu, &pg, &out).spawn().expect("a worker starts")).collect();
    wait_all(&mut others).await;
    let before = results(&pg, &id).await;
    assert_eq!(before.len(), n, "the others finished the stopped worker's tasks");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_all(std::slice::from_mut(&mut sleeper)).await;
    let after = results(&pg, &id).await;
    assert_eq!(before, after, "the late completions changed nothing");
    check_once(&pg, &emu, &id, n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_hard_and_restarted_mid_batch() {
    let Some(pg) = Pg::start() else { return };
    let emu = fleet_emulator().await;
    let dir = scratch("fleet-pg");
    let file = dir.join("edits.jsonl");
    let n = 300;
    write_jsonl(&file, &lines(n));
    let first = submit(&emu, &pg, &file).await;
    let id = first.stdout.trim().to_string();
    let out = dir.join("out");
    let mut workers: Vec<_> = (0..3).map(|_| worker(&emu, &pg, &out).spawn().expect("a worker starts")).collect();
    while emu.stats().results_delivered < 60 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.ctl(&["stop", "-m", "immediate"]);
    // Tasks in flight finish while the database is down; their outcomes wait (at
    // most 5 s: under load a worker may have had nothing in flight).
    let delivered = emu.stats().results_delivered;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while emu.stats().results_delivered <= delivered {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    pg.ctl(&["start", "-w"]);
    wait_all(&mut workers).await;
    check_once(&pg, &emu, &id, n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_failures_advance_attempts_or_fail_the_line() {
    let Some(pg) = Pg::start() else { return };
    let emu = fleet_emulator().await;
    // Line 4 fails once after its first result (retryable), line 6 is refused for good.
    emu.inject(Fault::FailTasks(
        FailRule::new("timeoutProvider", FailMatch::PromptContains("Fleet edit 3:".into())).times(1).after(1),
    ));
    emu.inject(Fault::FailTasks(FailRule::new(
        "contentPolicyViolation",
        FailMatch::PromptContains("Fleet edit 5:".into()),
    )));
    let dir = scratch("fleet-fail");
    let file = dir.join("edits.jsonl");
    write_jsonl(&file, &lines(8));
    let id = submit(&emu, &pg, &file).await.stdout.trim().to_string();
    wait_all(&mut three_workers(&emu, &pg, &dir.join("out"), &["--retry-backoff", "50ms"])).await;
    let records = results(&pg, &id).await;
    assert_eq!(records.len(), 8);
    let by_line = |l: u64| records.iter().find(|r| r["line"] == l).expect("a record").clone();
    let retried = by_line(4);
    assert_eq!((retried["status"].as_str(), retried["attempts"].as_u64()), (Some("ok"), Some(2)), "{retried}");
    assert_eq!(
        retried["images"].as_array().map(Vec::len),
        Some(2),
        "the partial image kept, the missing one asked for"
    );
    let refused = by_line(6);
    assert_eq!((refused["status"].as_str(), refused["code"].as_str()), (Some("error"), Some("contentPolicyViolation")));
    let stats = emu.stats();
    assert_eq!(stats.double_executed, 0);
    let recorded: usize = records.iter().map(|r| r["images"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(stats.images_billed as usize, recorded, "images billed == images recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_dead_task_resends_it_under_its_own_task_uuid() {
    let Some(pg) = Pg::start() else { return };
    let emu = fleet_emulator().await;
    let dir = scratch("fleet-dead");
    let file = dir.join("edits.jsonl");
    write_jsonl(&file, &lines(3));
    let id = submit(&emu, &pg, &file).await.stdout.trim().to_string();
    // Line 2 was handed out too often without an outcome: it may have run.
    let uuid = pg.sql(&format!(
        "UPDATE runware_fleet_tasks SET state = 'dead', deliveries = 5 WHERE batch_id = '{id}' AND line_no = 2 RETURNING task_uuid"
    ));
    let mut retry = runware();
    retry.args(["batch", "retry", &id, "--dead", "--queue", &pg.url()]);
    let run = exec(retry).await;
    assert_eq!(run.code, 0, "{run:?}");
    let row = pg.sql(&format!(
        "SELECT state, attempt, task_uuid FROM runware_fleet_tasks WHERE batch_id = '{id}' AND line_no = 2"
    ));
    assert_eq!(row, format!("queued|1|{uuid}"), "a dead task goes back under its own taskUUID");
    wait_all(&mut three_workers(&emu, &pg, &dir.join("out"), &[])).await;
    let records = results(&pg, &id).await;
    let line2 = records.iter().find(|r| r["line"] == 2).expect("line 2");
    assert_eq!((line2["status"].as_str(), line2["taskUUID"].as_str()), (Some("ok"), Some(uuid.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_line_ends_dead_with_its_last_error_and_the_rest_finish() {
    let Some(pg) = Pg::start() else { return };
    let emu = fleet_emulator().await;
    // Line 3's task is accepted and never answered: every delivery ends without an
    // outcome (a task timeout), so it is handed out again under the same taskUUID
    // until it has been delivered too often.
    emu.inject(Fault::FailTasks(FailRule::stall(FailMatch::PromptContains("Fleet edit 2:".into()))));
    let dir = scratch("fleet-poison");
    let file = dir.join("edits.jsonl");
    let n = 30;
    write_jsonl(&file, &lines(n));
    let mut submit_cmd = runware();
    submit_cmd.args(["batch", "submit"]).arg(&file).args(api(&emu)).args([
        "--queue",
        &pg.url(),
        "--max-deliveries",
        "3",
    ]);
    let first = exec(submit_cmd).await;
    assert_eq!(first.code, 0, "{first:?}");
    let id = first.stdout.trim().to_string();
    wait_all(&mut three_workers(&emu, &pg, &dir.join("out"), &["--timeout", "2s"])).await;

    let records = results(&pg, &id).await;
    assert_eq!(records.len(), n, "one result per line");
    let poison = records.iter().find(|r| r["line"] == 3).expect("line 3");
    assert_eq!(
        (poison["status"].as_str(), poison["code"].as_str()),
        (Some("error"), Some("deliveredTooOften")),
        "{poison}"
    );
    let message = poison["message"].as_str().unwrap_or_default();
    assert!(message.contains("3 times") && message.contains("timed out"), "the last error is kept: {message}");
    assert!(records.iter().filter(|r| r["line"] != 3).all(|r| r["status"] == "ok"), "{records:?}");
    let state =
        pg.sql(&format!("SELECT state, deliveries FROM runware_fleet_tasks WHERE batch_id = '{id}' AND line_no = 3"));
    assert_eq!(state, "dead|3");
    // Sent three times under one taskUUID, run once.
    let uuid: uuid::Uuid = poison["taskUUID"].as_str().and_then(|u| u.parse().ok()).expect("a taskUUID");
    assert_eq!(emu.executions(uuid), 1);
    let stats = emu.stats();
    assert_eq!((stats.double_executed, stats.tasks_stalled_injected), (0, 1), "{stats:?}");
    assert!(stats.conflicts >= 2, "the redeliveries were conflicts: {stats:?}");
    let recorded: usize = records.iter().map(|r| r["images"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(stats.images_billed as usize, recorded, "images billed == images recorded");
    assert_eq!(successes(&emu), n - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_second_emulator_outage_is_waited_out() {
    let Some(pg) = Pg::start() else { return };
    let emu = fleet_emulator().await;
    let dir = scratch("fleet-outage");
    let file = dir.join("edits.jsonl");
    let n = 300;
    write_jsonl(&file, &lines(n));
    let id = submit(&emu, &pg, &file).await.stdout.trim().to_string();
    let mut workers = three_workers(&emu, &pg, &dir.join("out"), &[]);
    while emu.stats().results_delivered < 60 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every connection dropped, every upgrade refused with 503 for 60 s.
    emu.inject(Fault::Outage(Duration::from_secs(60)));
    let left = n - results(&pg, &id).await.len();
    assert!(left > 0, "the outage began with work left");
    wait_all(&mut workers).await;
    check_once(&pg, &emu, &id, n).await;
    assert!(emu.stats().connections >= 6, "the workers reconnected after the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_queue_follows_sslmode_and_sslrootcert() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "db.example".to_string()])
        .expect("a certificate");
    let Some(pg) = Pg::start_tls(&certified.cert.pem(), &certified.signing_key.serialize_pem()) else { return };
    let emu = fleet_emulator().await;
    let dir = scratch("fleet-tls");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, certified.cert.pem()).expect("write the CA");
    let file = dir.join("edits.jsonl");
    write_jsonl(&file, &lines(6));
    let at = |host: &str, query: &str| format!("postgres://postgres@{host}:{}/postgres?{query}", pg.port);
    let ca_q = format!("sslrootcert={}", ca.display());
    let status = |queue: String| {
        let mut cmd = runware();
        cmd.args(["batch", "list", "--queue", &queue]);
        exec(cmd)
    };

    // verify-full with the CA, by a name the certificate holds: submit and work.
    let full = at("localhost", &format!("sslmode=verify-full&{ca_q}"));
    let mut cmd = runware();
    cmd.args(["batch", "submit"]).arg(&file).args(api(&emu)).args(["--queue", &full]);
    let first = exec(cmd).await;
    assert_eq!(first.code, 0, "{first:?}");
    let id = first.stdout.trim().to_string();
    let mut w = runware();
    w.arg("worker").args(api(&emu)).args(["--queue", &full, "--exit-when-idle", "-o"]).arg(dir.join("out"));
    let run = exec(w).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        pg.sql(&format!("SELECT count(*) FROM runware_fleet_tasks WHERE batch_id = '{id}' AND state = 'done'")),
        "6"
    );

    // The same in key=value form, the path quoted.
    let kv =
        format!("host=localhost port={} user=postgres sslmode=verify-full sslrootcert='{}'", pg.port, ca.display());
    assert_eq!(status(kv).await.code, 0);
    // verify-ca checks the chain only: an address the certificate does not name is fine…
    assert_eq!(status(at("127.0.0.1", &format!("sslmode=verify-ca&{ca_q}"))).await.code, 0);
    // …verify-full is not.
    let wrong_name = status(at("127.0.0.1", &format!("sslmode=verify-full&{ca_q}"))).await;
    assert_eq!(wrong_name.code, 3, "{wrong_name:?}");
    assert!(wrong_name.stderr.contains("queue database"), "{wrong_name:?}");
    // Without the CA the certificate is not trusted (Mozilla's roots do not hold it).
    let untrusted = status(at("localhost", "sslmode=verify-full")).await;
    assert_eq!(untrusted.code, 3, "{untrusted:?}");
    assert!(untrusted.stderr.to_lowercase().contains("certificate"), "{untrusted:?}");
    // require and prefer encrypt without checking (libpq's meaning); disable is refused
    // by this TLS-only server, which shows the others used TLS.
    assert_eq!(status(at("127.0.0.1", "sslmode=require")).await.code, 0);
    assert_eq!(status(at("127.0.0.1", "sslmode=prefer")).await.code, 0);
    let plain = status(at("127.0.0.1", "sslmode=disable")).await;
    assert_eq!(plain.code, 3, "{plain:?}");
    // A bad sslmode names the key, exit 2.
    let bad = status(at("127.0.0.1", "sslmode=verify")).await;
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("sslmode"), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_file_withdraws_its_unsent_lines_and_runs_only_what_it_says() {
    let Some(pg) = Pg::start() else { return };
    let emu = fleet_emulator().await;
    let dir = scratch("fleet-edit");
    let file = dir.join("edits.jsonl");
    let original = lines(5);
    write_jsonl(&file, &original);
    let id = submit(&emu, &pg, &file).await.stdout.trim().to_string();
    // A worker already sent line 4 (its outcome is unknown: it must stay).
    pg.sql(&format!(
        "UPDATE runware_fleet_tasks SET first_sent_at = now(), deliveries = 1 WHERE batch_id = '{id}' AND line_no = 4"
    ));
    // The edit: a new first line, line 2 reworded, line 4 removed.
    let mut edited = vec![json!({"positivePrompt": "Fleet edit new: a new first line", "width": 1024, "height": 1024})];
    let mut reworded = original[1].clone();
    reworded["positivePrompt"] = json!("Fleet edit 1b: reworded");
    edited.extend([original[0].clone(), reworded, original[2].clone(), original[4].clone()]);
    write_jsonl(&file, &edited);
    let again = submit(&emu, &pg, &file).await;
    assert_eq!((again.code, again.stdout.trim()), (0, id.as_str()), "{again:?}");
    assert!(again.stderr.contains("2 added") && again.stderr.contains("1 withdrawn"), "{again:?}");
    // The old line 2 is gone; line 4 stays; the kept lines carry their new numbers.
    let rows = pg.sql(&format!(
        "SELECT string_agg(line_no::text || ':' || (request->>'positivePrompt'), '|' ORDER BY line_no, request->>'positivePrompt')
         FROM runware_fleet_tasks WHERE batch_id = '{id}'"
    ));
    let prompt = |i: usize| original[i]["positivePrompt"].as_str().unwrap_or_default().to_string();
    let expected = [
        "1:Fleet edit new: a new first line".to_string(),
        format!("2:{}", prompt(0)),
        "3:Fleet edit 1b: reworded".to_string(),
        format!("4:{}", prompt(2)),
        format!("4:{}", prompt(3)),
        format!("5:{}", prompt(4)),
    ];
    assert_eq!(rows, expected.join("|"));

    wait_all(&mut three_workers(&emu, &pg, &dir.join("out"), &[])).await;
    let records = results(&pg, &id).await;
    assert_eq!(records.len(), 6, "{records:?}");
    assert!(records.iter().all(|r| r["status"] == "ok"), "{records:?}");
    // The withdrawn wording never ran: six inference tasks in all.
    assert_eq!(successes(&emu), 6);
    assert_eq!(emu.stats().double_executed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_the_server_forgot_is_uploaded_again_and_the_lines_go_on() {
    let Some(pg) = Pg::start() else { return };
    let emu = fleet_emulator().await;
    let dir = scratch("fleet-forget");
    let file = dir.join("edits.jsonl");
    let n = 200;
    write_jsonl(&file, &lines(n));
    let id = submit(&emu, &pg, &file).await.stdout.trim().to_string();
    assert_eq!(emu.stats().uploads, 1, "submit uploads the shared reference once");
    let mut workers = three_workers(&emu, &pg, &dir.join("out"), &["--retry-backoff", "50ms"]);
    // Mid-batch the server forgets every upload: the tasks sent from then on are
    // refused with invalidReferenceImage.
    while emu.stats().results_delivered < 30 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emu.inject(Fault::ForgetUploads);
    wait_all(&mut workers).await;

    let records = results(&pg, &id).await;
    let failed: Vec<_> = records.iter().filter(|r| r["status"] != "ok").collect();
    assert!(failed.is_empty(), "{failed:?}");
    check_once(&pg, &emu, &id, n).await;
    let again = records.iter().filter(|r| r["attempts"] == 2).count();
    assert!(again > 0, "no line met the forgotten reference: {records:?}");
    assert!(records.iter().all(|r| r["attempts"].as_u64() <= Some(2)), "a line needed more than one new attempt");
    // Uploaded again once for the fleet, or once by each worker that raced for it.
    let uploads = emu.stats().uploads;
    assert!((2..=4).contains(&uploads), "{uploads} uploads");
    println!("forgotten reference: {again} line(s) ran a second attempt, {uploads} uploads");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_exports_its_metrics_while_it_works() {
    let Some(pg) = Pg::start() else { return };
    let emu = fleet_emulator().await;
    let dir = scratch("fleet-metrics");
    let file = dir.join("edits.jsonl");
    let n = 12;
    write_jsonl(&file, &lines(n));
    let id = submit(&emu, &pg, &file).await.stdout.trim().to_string();
    let mut cmd = worker_c(&emu, &pg, &dir.join("out"), 2);
    cmd.args(["--metrics-addr", "127.0.0.1:0"]);
    // 12 tasks, 2 at once, 0.2–1 s each: seconds with tasks done and others in flight.
    let (mut child, seen) = scrape_with_work_done_and_in_flight(cmd, Duration::from_secs(60)).await;
    assert!(sample(&seen, "runware_tasks_in_flight").unwrap_or(0.0) <= 2.0, "{seen}");
    assert!(seen.contains("# TYPE runware_task_duration_seconds histogram"), "{seen}");
    assert!(!seen.contains(KEY), "the key is never exported");

    let status = tokio::time::timeout(Duration::from_secs(120), child.wait()).await.expect("the worker ends").unwrap();
    assert!(status.success(), "{status:?}");
    check_once(&pg, &emu, &id, n).await;
}
