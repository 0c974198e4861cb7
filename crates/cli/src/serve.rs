//! `runware serve`: the Runware emulator as a standalone server, until Ctrl-C,
//! with optional periodic faults, injected task failures, NSFW flags and one
//! scheduled outage.

use super::EXIT_OK;
use super::args::{ApiArgs, LatencyArg, ServeArgs};
use super::error::CliError;
use super::output::Output;
use runware_emulator::{Emulator, EmulatorError, FailMatch, FailRule, Fault, Latency};
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
    if let Some(n) = args.render_divisor {
        builder = builder.render_divisor(n);
    }
    for q in &args.quirks {
        builder = builder.quirk(*q);
    }
    let handle = builder.start().await.map_err(|e| match e {
        EmulatorError::Bind { .. } | EmulatorError::Config(_) => CliError::Usage(e.to_string()),
        other => CliError::Other(other.to_string()),
    })?;
    let handle = Arc::new(handle);
    let _exporting = args.metrics.metrics_addr.is_some().then(|| {
        let emu = handle.clone();
        super::metrics_http::ExportOnDrop(super::metrics_http::export_emulator_stats(move || emu.stats()))
    });
    // Ctrl-C and SIGTERM are ours from before the URL is printed: a caller may stop us
    // right after.
    let mut signals = super::signals::Signals::new();

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
    for fault in task_faults(&args) {
        handle.inject(fault);
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

    if let (Some(after), Some(length)) = (args.outage_after, args.outage_for) {
        let handle = handle.clone();
        periodic.spawn(async move {
            tokio::time::sleep(after).await;
            handle.inject(Fault::Outage(length));
        });
    }

    signals.next().await;
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

/// The fail rule the `--fail-*` flags describe, if any.
fn fail_rule(args: &ServeArgs) -> Option<FailRule> {
    let matching = if let Some(p) = args.fail_rate {
        FailMatch::Probability(p)
    } else if let Some(text) = &args.fail_prompt {
        FailMatch::PromptContains(text.clone())
    } else if let Some(uuid) = args.fail_task {
        FailMatch::TaskUuid(uuid)
    } else if args.fail_every {
        FailMatch::Every
    } else {
        return None;
    };
    let rule =
        if args.fail_stall { FailRule::stall(matching) } else { FailRule::new(args.fail_code.clone(), matching) };
    let mut rule = rule.after(args.fail_after.unwrap_or(0));
    if let Some(n) = args.fail_times {
        rule = rule.times(n);
    }
    Some(rule)
}

/// The task faults armed at start: the fail rule and the NSFW rate.
fn task_faults(args: &ServeArgs) -> Vec<Fault> {
    let mut faults: Vec<Fault> = fail_rule(args).into_iter().map(Fault::FailTasks).collect();
    if let Some(p) = args.nsfw_rate.filter(|p| *p > 0.0) {
        faults.push(Fault::Nsfw(p));
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn serve(flags: &[&str]) -> Result<ServeArgs, String> {
        let argv = ["runware", "serve"].into_iter().chain(flags.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => match cli.command {
                Command::Serve(s) => Ok(s),
                _ => Err("not serve".into()),
            },
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn no_fail_flags_no_task_faults() {
        let args = serve(&[]).unwrap();
        assert_eq!(args.fail_code, "serviceUnavailable");
        assert!(task_faults(&args).is_empty());
        assert_eq!((args.render_divisor, args.outage_after, args.outage_for), (None, None, None));
    }

    #[test]
    fn fail_flags_build_one_rule() {
        let args = serve(&["--fail-rate", "0.25", "--fail-times", "3", "--fail-after", "1"]).unwrap();
        let rule = FailRule::new("serviceUnavailable", FailMatch::Probability(0.25)).after(1).times(3);
        assert_eq!(task_faults(&args), vec![Fault::FailTasks(rule)]);

        let args = serve(&["--fail-prompt", "sky", "--fail-code", "timeoutProvider", "--fail-times", "1"]).unwrap();
        let rule = fail_rule(&args).unwrap();
        assert_eq!((rule.code.as_str(), rule.times, rule.after_results), ("timeoutProvider", Some(1), 0));
        assert_eq!(rule.matching, FailMatch::PromptContains("sky".into()));

        let id = uuid::Uuid::new_v4();
        let args = serve(&["--fail-task", &id.to_string()]).unwrap();
        assert_eq!(fail_rule(&args).map(|r| r.matching), Some(FailMatch::TaskUuid(id)));
        let args = serve(&["--fail-prompt", "wedge", "--fail-stall"]).unwrap();
        assert_eq!(fail_rule(&args), Some(FailRule::stall(FailMatch::PromptContains("wedge".into()))));
        let args = serve(&["--fail-every", "--nsfw-rate", "1"]).unwrap();
        let faults = task_faults(&args);
        assert!(
            matches!(&faults[..], [Fault::FailTasks(r), Fault::Nsfw(p)] if r.matching == FailMatch::Every && *p == 1.0)
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        for (flags, flag) in [
            (&["--fail-rate", "1.5"][..], "--fail-rate"),
            (&["--fail-rate", "-0.1"][..], "--fail-rate"),
            (&["--fail-rate", "often"][..], "--fail-rate"),
            (&["--nsfw-rate", "2"][..], "--nsfw-rate"),
            (&["--nsfw-rate", "-1"][..], "--nsfw-rate"),
            (&["--fail-task", "not-a-uuid"][..], "--fail-task"),
            (&["--render-divisor", "0"][..], "--render-divisor"),
            (&["--fail-code", "", "--fail-every"][..], "--fail-code"),
            (&["--fail-times", "2"][..], "--fail-times"),
            (&["--fail-after", "2"][..], "--fail-after"),
            (&["--fail-stall"][..], "--fail-stall"),
            (&["--fail-rate", "0.5", "--fail-every"][..], "--fail-every"),
            (&["--outage-after", "1s"][..], "--outage-for"),
            (&["--outage-for", "1s"][..], "--outage-after"),
            (&["--outage-after", "soon", "--outage-for", "1s"][..], "--outage-after"),
        ] {
            let err = serve(flags).err().unwrap_or_else(|| panic!("{flags:?} was accepted"));
            assert!(err.contains(flag), "{flags:?}: {err}");
        }
    }

    #[test]
    fn outage_and_render_divisor_parse() {
        let args = serve(&["--outage-after", "2s", "--outage-for", "500ms", "--render-divisor", "4"]).unwrap();
        assert_eq!(args.outage_after, Some(Duration::from_secs(2)));
        assert_eq!(args.outage_for, Some(Duration::from_millis(500)));
        assert_eq!(args.render_divisor, Some(4));
    }

    #[test]
    fn quirks_parse_by_name_and_unknown_ones_are_refused() {
        let args = serve(&["--quirk", "no-replay", "--quirk", "no-pong"]).unwrap();
        assert_eq!(args.quirks, [runware_emulator::Quirk::NoReplay, runware_emulator::Quirk::NoPong]);
        let err = serve(&["--quirk", "no-such"]).err().unwrap_or_default();
        assert!(err.contains("--quirk") && err.contains("no-cross-session-conflict"), "{err}");
    }
}
