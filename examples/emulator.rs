//! Runs the local Runware emulator until Ctrl-C (or until stdin closes, with
//! `--exit-on-stdin-close`).
//!
//! ```text
//! cargo run --example emulator -- --port 0 --api-key test-key --latency-ms 50..200
//! cargo run --example emulator -- --fail-rate 0.1 --fail-code timeoutProvider --nsfw-rate 0.05 --render-divisor 8
//! ```
//!
//! Prints the WebSocket URL on the first line of stdout, the HTTP URL on the second.

use runware_emulator::{Emulator, FailMatch, FailRule, Fault, Latency};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: emulator [--port N] [--api-key KEY]... [--latency-ms MIN[..MAX]] [--seed N] \
[--fail-rate P] [--fail-code CODE] [--nsfw-rate P] [--render-divisor N] [--exit-on-stdin-close]";

struct Args {
    port: u16,
    keys: Vec<String>,
    latency: Option<Latency>,
    seed: Option<u64>,
    fail_rate: Option<f64>,
    fail_code: String,
    nsfw_rate: Option<f64>,
    render_divisor: Option<u32>,
    stdin_close: bool,
}

fn probability(name: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{name}: {v:?} is not a probability from 0 to 1")),
    }
}

fn parse_latency(s: &str) -> Option<Latency> {
    let ms = |t: &str| t.trim().parse::<u64>().ok().map(Duration::from_millis);
    match s.split_once("..") {
        Some((a, b)) => Some(Latency::Range(ms(a)?, ms(b.trim_start_matches('='))?)),
        None => Some(Latency::Fixed(ms(s)?)),
    }
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        keys: Vec::new(),
        latency: None,
        seed: None,
        fail_rate: None,
        fail_code: "serviceUnavailable".to_string(),
        nsfw_rate: None,
        render_divisor: None,
        stdin_close: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--port" => args.port = value("--port")?.parse().map_err(|e| format!("--port: {e}"))?,
            "--api-key" => args.keys.push(value("--api-key")?),
            "--latency-ms" => {
                let v = value("--latency-ms")?;
                args.latency = Some(parse_latency(&v).ok_or_else(|| format!("--latency-ms: bad value {v:?}"))?);
            }
            "--seed" => args.seed = Some(value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--fail-rate" => args.fail_rate = Some(probability("--fail-rate", &value("--fail-rate")?)?),
            "--fail-code" => args.fail_code = value("--fail-code")?,
            "--nsfw-rate" => args.nsfw_rate = Some(probability("--nsfw-rate", &value("--nsfw-rate")?)?),
            "--render-divisor" => {
                let v = value("--render-divisor")?;
                let n = v.parse::<u32>().ok().filter(|n| *n >= 1);
                args.render_divisor =
                    Some(n.ok_or_else(|| format!("--render-divisor: {v:?} is not a whole number >= 1"))?);
            }
            "--exit-on-stdin-close" => args.stdin_close = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Emulator::builder().bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)));
    for k in args.keys {
        builder = builder.api_key(k);
    }
    if let Some(l) = args.latency {
        builder = builder.latency(l);
    }
    if let Some(s) = args.seed {
        builder = builder.seed(s);
    }
    if let Some(n) = args.render_divisor {
        builder = builder.render_divisor(n);
    }
    let emu = match builder.start().await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot start the emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(p) = args.fail_rate {
        emu.inject(Fault::FailTasks(FailRule::new(args.fail_code.clone(), FailMatch::Probability(p))));
    }
    if let Some(p) = args.nsfw_rate {
        emu.inject(Fault::Nsfw(p));
    }
    println!("{}", emu.ws_url());
    println!("{}", emu.http_url());
    let stdin_closed = async {
        if args.stdin_close {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 256];
            let mut stdin = tokio::io::stdin();
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = stdin_closed => {}
    }
    emu.shutdown().await;
    ExitCode::SUCCESS
}
