//! `runware serve`: the Runware emulator as a standalone server, until Ctrl-C,
//! with optional periodic faults.

use super::EXIT_OK;
use super::args::{ApiArgs, LatencyArg, ServeArgs};
use super::error::CliError;
use super::output::Output;
use crate::emulator::{Emulator, EmulatorError, Fault, Latency};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The shortest period of a periodic fault.
const MIN_PERIOD: Duration = Duration::from_millis(10);

pub async fn run(top: ApiArgs, args: ServeArgs, out: &Output) -> Result<u8, CliError> {
    let mut keys = args.api_keys.clone();
    if keys.is_empty()
        && let Some(k) = top.api_key
    {
        keys.push(k);
    }
    let default_key = keys.is_empty();
    let latency = match args.latency {
        LatencyArg::Fixed(d) => Latency::Fixed(d),
        LatencyArg::Range(a, b) => Latency::Range(a, b),
    };
    let mut builder = Emulator::builder().latency(latency).bind(SocketAddr::new(args.host, args.port));
    for k in keys {
        builder = builder.api_key(k);
    }
    if let Some(seed) = args.seed {
        builder = builder.seed(seed);
    }
    let handle = builder.start().await.map_err(|e| match e {
        EmulatorError::Bind { .. } | EmulatorError::Config(_) => CliError::Usage(e.to_string()),
        other => CliError::Other(other.to_string()),
    })?;
    let handle = Arc::new(handle);
    // Ctrl-C is ours from before the URL is printed: a caller may stop us right after.
    let ctrl_c = tokio::signal::ctrl_c();

    if out.json {
        out.json_value(&serde_json::json!({
            "wsUrl": handle.ws_url(),
            "httpUrl": handle.http_url(),
            "defaultApiKey": default_key.then_some("test-key"),
        }));
    } else {
        out.line(&format!("Runware emulator listening on {}", handle.addr()));
        out.line(&format!("  WebSocket  {}", handle.ws_url()));
        out.line(&format!("  HTTP       {}  (images, /stats)", handle.http_url()));
        if default_key {
            out.line("  API key    test-key (the default; choose keys with --api-key)");
        } else {
            out.line("  API keys   as given with --api-key");
        }
        out.notice("Press Ctrl-C to stop.");
    }

    for (n, fault) in [
        (args.duplicate_results, Fault::DuplicateResults as fn(u32) -> Fault),
        (args.refuse_handshakes, Fault::RefuseHandshakes),
        (args.refuse_auth, Fault::RefuseAuth),
    ] {
        if let Some(n) = n.filter(|n| *n > 0) {
            handle.inject(fault(n));
        }
    }
    let mut periodic = tokio::task::JoinSet::new();
    for (every, fault) in [
        (args.drop_every, Fault::Drop),
        (args.close_every, Fault::Close),
        (args.half_open_every, Fault::HalfOpen),
        (args.restart_every, Fault::Restart),
        (args.drop_mid_task_every, Fault::DropMidTask),
        (args.stray_error_every, Fault::StrayError),
        (args.garbage_every, Fault::Garbage),
    ] {
        let Some(every) = every else { continue };
        let every = every.max(MIN_PERIOD);
        let handle = handle.clone();
        periodic.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                tracing::info!(?fault, "injecting a fault");
                handle.inject(fault.clone());
            }
        });
    }

    if let Err(e) = ctrl_c.await {
        out.error(&format!("cannot wait for Ctrl-C: {e}"));
    }
    periodic.abort_all();
    let stats = handle.stats();
    handle.shutdown().await;
    if out.json {
        out.json_value(&serde_json::json!({ "stats": stats }));
    } else {
        out.notice(&format!(
            "Stopped: {} connection(s), {} task(s) executed, {} executed twice, {} conflict(s), {} fault(s) injected",
            stats.connections, stats.executions_total, stats.double_executed, stats.conflicts, stats.faults_injected
        ));
    }
    Ok(EXIT_OK)
}
