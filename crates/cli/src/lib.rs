//! `runware`: the command-line tool of runware-ws (the binary is `src/main.rs`;
//! everything else is this library, which only the binary and the benches use).
//!
//! One file per subcommand (`edit`, `batch`, `result_cmd`, `upload`, `media`, `ping`,
//! `serve`, `conformance`) and the pieces they share: `args` (the clap definitions), `embedded`
//! (where to connect: the API, or the embedded emulator when there is no key),
//! `input` (batch lines → validated tasks), `journal` (the results file that makes a
//! batch resumable), `download` (saving images), `progress`, `output` and `error`.

mod args;
mod auth;
mod batch;
#[doc(hidden)]
pub mod bench_support;
mod ca;
mod conformance;
#[cfg(feature = "fleet")]
mod conninfo;
mod download;
mod edit;
mod embedded;
mod error;
#[cfg(feature = "fleet")]
mod fleet;
mod input;
mod media;
mod metrics_http;
mod output;
mod ping;
mod progress;
mod reader;
mod result_cmd;
mod serve;
mod settings;
mod signals;
mod upload;

use args::{Cli, Command};
use error::CliError;
use output::Output;
use runware_ws::redact::Redactor;
use std::process::ExitCode;

/// Exit code: every task succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit code: some tasks failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage or input errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: authentication or connection failure.
pub const EXIT_CONNECTION: u8 = 3;
/// Exit code: the account cannot pay for more work (insufficient credits, quota).
pub const EXIT_ACCOUNT: u8 = 4;
/// Exit code: `--max-cost` stopped the batch (the rest is pending in the journal).
pub const EXIT_BUDGET: u8 = 5;
/// Exit code: interrupted (Ctrl-C) before the work was done.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit code: stopped by SIGTERM before the work was done (after draining what was in flight).
pub const EXIT_TERMINATED: u8 = 143;

/// Runs the `runware` tool with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let mut cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let settings = match settings::Settings::load() {
        Ok(s) => s,
        Err(e) => {
            // No key is known yet, so nothing to redact; the message names the file.
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    flags_over_environment(&mut cli, &matches);
    apply_file_defaults(&mut cli, &matches, &settings.file);
    let mut secrets = cli.secrets();
    secrets.extend(settings.api_key.clone());
    let redactor = Redactor::new(secrets);
    output::set_redactor(redactor.clone());
    init_tracing(cli.verbose, cli.quiet, redactor);
    // reqwest and tokio-tungstenite use rustls without a built-in provider choice.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let out = Output::new(cli.json, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            out.error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = runtime.block_on(async move {
        match run(cli, &settings, &out).await {
            Ok(code) => code,
            Err(e) => {
                out.error(&e.to_string());
                e.exit_code()
            }
        }
    });
    // Background tasks (the emulator, the client) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    ExitCode::from(code)
}

async fn run(mut cli: Cli, settings: &settings::Settings, out: &Output) -> Result<u8, CliError> {
    // Flags and environment first (clap), then the config directory.
    let given = cli.api;
    let stored = args::ApiArgs {
        url: settings.file.url.clone(),
        api_key: settings.api_key.clone(),
        connect_timeout: None,
        ca_cert: None,
    };
    let top = given.or(&stored);
    // Extra CA certificates, once, before any connection or download.
    let effective = cli.command.api_mut().map(|a| a.or(&top)).unwrap_or_else(|| top.clone());
    if let Some(path) = &effective.ca_cert {
        ca::load(path)?;
    }
    // Up before any work, down when the command ends.
    let _metrics = match cli.command.metrics_addr() {
        Some(addr) => Some(metrics_http::start(addr, out).await?),
        None => None,
    };
    match cli.command {
        Command::Edit(a) => edit::run(a.api.or(&top), a, out).await,
        #[cfg(feature = "fleet")]
        Command::Batch(args::BatchArgs { fleet: Some(f), .. }) => fleet::admin::dispatch(f, &top, out).await,
        Command::Batch(a) => batch::run(a.api.or(&top), a, out).await,
        #[cfg(feature = "fleet")]
        Command::Worker(a) => fleet::worker::run(a.api.or(&top), a, out).await,
        Command::Result(a) => result_cmd::run(a.api.or(&top), a, out).await,
        Command::Upload(a) => upload::run(a.api.or(&top), a, out).await,
        Command::Media(a) => media::run(a.api.or(&top), a, out).await,
        Command::Completions(a) => Ok(completions(a.shell)),
        Command::Ping(a) => ping::run(a.api.or(&top), a, out).await,
        // The emulator accepts the keys given to it, never the stored one.
        Command::Serve(a) => serve::run(given, a, out).await,
        // Only the flags and environment: auth shows and replaces the stored key itself.
        Command::Auth(a) => auth::run(a, auth::Sources { given: &given, settings }, out).await,
        Command::Conformance(a) => conformance::run(a.api.or(&top), a, out).await,
        Command::Gallery(a) => batch::gallery_command(a, out).await,
    }
}

/// `--url`, `--api-key` and `--connect-timeout` exist before and after the subcommand, and
/// both read the environment: a flag given before the subcommand must still beat the
/// subcommand's copy filled from the environment (`runware --url X ping` with
/// `RUNWARE_URL` set uses X).
fn flags_over_environment(cli: &mut Cli, matches: &clap::ArgMatches) {
    use clap::parser::ValueSource;
    let Some((_, sub)) = matches.subcommand() else { return };
    let Some(api) = cli.command.api_mut() else { return };
    let from_env = |id: &str| sub.try_get_raw(id).is_ok() && sub.value_source(id) == Some(ValueSource::EnvVariable);
    let on_line = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    if from_env("url") && on_line("url") {
        api.url = None;
    }
    if from_env("api_key") && on_line("api_key") {
        api.api_key = None;
    }
}

/// `config.toml`'s `out` and `concurrency` replace the built-in defaults of `runware batch`
/// (a flag or its environment variable still wins).
fn apply_file_defaults(cli: &mut Cli, matches: &clap::ArgMatches, file: &settings::FileConfig) {
    let Command::Batch(batch) = &mut cli.command else { return };
    let Some(m) = matches.subcommand_matches("batch") else { return };
    let defaulted = |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::DefaultValue);
    if let Some(n) = file.concurrency.filter(|_| defaulted("concurrency")) {
        batch.concurrency = n;
    }
    if let Some(dir) = file.out.clone().filter(|_| defaulted("out")) {
        batch.out = dir;
    }
}

/// Writes the completion script of `shell` on stdout.
fn completions(shell: clap_complete::Shell) -> u8 {
    use clap::CommandFactory;
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "runware", &mut std::io::stdout());
    EXIT_OK
}

/// Logs on stderr, every line through the redactor: at `trace` tungstenite logs
/// raw frames (the authentication frame among them), and `RUNWARE_LOG` may turn
/// any target up, so the key is removed from whatever is written.
fn init_tracing(verbose: u8, quiet: bool, redactor: Redactor) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warn,runware_ws=info",
        (false, 2) => "warn,runware_ws=debug",
        (false, _) => "warn,runware_ws=trace",
    };
    let filter = EnvFilter::try_from_env("RUNWARE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || redactor.writer(std::io::stderr()))
        .with_target(false)
        .try_init();
}
