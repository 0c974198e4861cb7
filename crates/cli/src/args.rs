//! The command line, as clap sees it.

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use runware_ws::protocol::{DeliveryMethod, OutputFormat, OutputType};
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

const ABOUT: &str = "Edit images with FLUX.1 Kontext [pro] over Runware's WebSocket API.";

const AFTER_HELP: &str = "\
Without RUNWARE_API_KEY (or --api-key) and without --url, commands that need the API
run against an embedded Runware emulator on 127.0.0.1 (synthetic images).

Exit codes: 0 all ok, 1 some tasks failed or are still pending, 2 usage or input
errors, 3 authentication or connection failure, 4 the account cannot pay (insufficient
credits or quota), 5 --max-cost stopped the batch, 130 interrupted.";

/// `runware`
#[derive(Parser, Debug)]
#[command(name = "runware", version, about = ABOUT, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Where to connect, given before the subcommand (the subcommand's own flags win).
    #[command(flatten)]
    pub api: ApiArgs,
    /// More log output on stderr (repeat for more).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr: no progress, no notices.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Every secret this run knows (API keys from flags and the environment, the
    /// keys `serve` accepts), for the redaction of all output.
    pub fn secrets(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.api.api_key.iter().cloned().collect();
        keys.extend(std::env::var("RUNWARE_API_KEY").ok());
        // Proxy passwords from the environment are secrets too.
        for var in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
            if let Some(proxy) = std::env::var(var).ok().and_then(|url| runware_ws::Proxy::http(url.trim()).ok()) {
                keys.extend(proxy.password().filter(|p| !p.is_empty()).map(str::to_string));
            }
        }
        match &self.command {
            Command::Edit(a) => keys.extend(a.api.api_key.clone()),
            Command::Batch(a) => {
                keys.extend(a.api.api_key.clone());
                #[cfg(feature = "fleet")]
                if let Some(f) = &a.fleet {
                    keys.extend(f.secrets());
                }
            }
            #[cfg(feature = "fleet")]
            Command::Worker(a) => {
                keys.extend(a.api.api_key.clone());
                keys.extend(crate::conninfo::password(&a.queue.queue));
            }
            Command::Result(a) => keys.extend(a.api.api_key.clone()),
            Command::Upload(a) => keys.extend(a.api.api_key.clone()),
            Command::Media(a) => keys.extend(a.api.api_key.clone()),
            Command::Ping(a) => keys.extend(a.api.api_key.clone()),
            Command::Conformance(a) => keys.extend(a.api.api_key.clone()),
            Command::Serve(a) => keys.extend(a.api_keys.iter().cloned()),
            Command::Gallery(_) | Command::Completions(_) | Command::Auth(_) => {}
        }
        keys
    }
}

impl Command {
    /// `--metrics-addr`, for the commands that take it.
    pub fn metrics_addr(&self) -> Option<&str> {
        match self {
            Command::Batch(a) => a.metrics.metrics_addr.as_deref(),
            #[cfg(feature = "fleet")]
            Command::Worker(a) => a.metrics.metrics_addr.as_deref(),
            Command::Serve(a) => a.metrics.metrics_addr.as_deref(),
            _ => None,
        }
    }

    /// The subcommand's own `--url` / `--api-key` / `--connect-timeout`, when it has them.
    pub fn api_mut(&mut self) -> Option<&mut ApiArgs> {
        match self {
            Command::Edit(a) => Some(&mut a.api),
            Command::Batch(a) => Some(&mut a.api),
            #[cfg(feature = "fleet")]
            Command::Worker(a) => Some(&mut a.api),
            Command::Result(a) => Some(&mut a.api),
            Command::Upload(a) => Some(&mut a.api),
            Command::Media(a) => Some(&mut a.api),
            Command::Ping(a) => Some(&mut a.api),
            Command::Conformance(a) => Some(&mut a.api),
            Command::Serve(_) | Command::Gallery(_) | Command::Auth(_) | Command::Completions(_) => None,
        }
    }
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Edit an image with one Kontext \[pro\] task and save the results.
    Edit(EditArgs),
    /// Run a JSONL file of tasks over one connection; resumable.
    Batch(BatchArgs),
    /// Fetch the results of a task by its taskUUID (getResponse) and save them.
    Result(ResultArgs),
    /// Upload an image (imageUpload); prints its imageUUID and imageURL.
    Upload(UploadArgs),
    /// Store or delete media (mediaStorage), with the fields Runware's SDKs send.
    Media(MediaArgs),
    /// Connect, authenticate and ping; prints round-trip times.
    Ping(PingArgs),
    /// Run the Runware emulator until Ctrl-C.
    Serve(ServeArgs),
    /// Check, with a short fixed script of real tasks, the server behaviours the
    /// client's guarantees rest on (asks before spending).
    Conformance(ConformanceArgs),
    /// Write a self-contained index.html to review a batch's results.
    Gallery(GalleryArgs),
    /// Store the API key in the config directory (login), show it masked (status), remove it (logout).
    Auth(AuthArgs),
    /// Print a shell completion script (e.g. `runware completions bash > /etc/bash_completion.d/runware`).
    Completions(CompletionsArgs),
    /// Run tasks of fleet batches from a PostgreSQL queue until stopped.
    #[cfg(feature = "fleet")]
    Worker(WorkerArgs),
}

/// Where to connect and with which key.
#[derive(Args, Debug, Clone, Default)]
pub struct ApiArgs {
    /// WebSocket URL of the Runware API [default: wss://ws-api.runware.ai/v1].
    #[arg(long, env = "RUNWARE_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Runware API key (never printed).
    #[arg(long, env = "RUNWARE_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Give up when no authenticated connection is made within this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// Also trust the CA certificate(s) in FILE (PEM or DER), for the WebSocket and downloads.
    #[arg(long, env = "RUNWARE_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl ApiArgs {
    /// These flags, completed with those given before the subcommand.
    pub fn or(&self, top: &ApiArgs) -> ApiArgs {
        ApiArgs {
            url: non_empty(self.url.clone()).or_else(|| non_empty(top.url.clone())),
            api_key: non_empty(self.api_key.clone()).or_else(|| non_empty(top.api_key.clone())),
            connect_timeout: self.connect_timeout.or(top.connect_timeout),
            ca_cert: self.ca_cert.clone().or_else(|| top.ca_cert.clone()),
        }
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// `safety.mode`
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SafetyModeArg {
    /// No check.
    None,
    /// A single check.
    Fast,
}

impl From<SafetyModeArg> for runware_ws::protocol::SafetyMode {
    fn from(m: SafetyModeArg) -> Self {
        match m {
            SafetyModeArg::None => runware_ws::protocol::SafetyMode::None,
            SafetyModeArg::Fast => runware_ws::protocol::SafetyMode::Fast,
        }
    }
}

/// `outputFormat`
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// JPEG
    #[value(alias = "jpeg")]
    Jpg,
    /// PNG
    Png,
    /// WebP
    Webp,
}

impl From<FormatArg> for OutputFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Jpg => OutputFormat::Jpg,
            FormatArg::Png => OutputFormat::Png,
            FormatArg::Webp => OutputFormat::Webp,
        }
    }
}

/// `outputType`
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputArg {
    /// A URL the server hosts (downloaded into --out).
    Url,
    /// Base64 data in the reply.
    Base64,
    /// A data URI in the reply.
    Datauri,
}

impl From<OutputArg> for OutputType {
    fn from(o: OutputArg) -> Self {
        match o {
            OutputArg::Url => OutputType::Url,
            OutputArg::Base64 => OutputType::Base64Data,
            OutputArg::Datauri => OutputType::DataUri,
        }
    }
}

/// `runware edit`
#[derive(Args, Debug, Clone)]
pub struct EditArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// What to change (positivePrompt, 2–3000 characters).
    #[arg(long, short = 'p')]
    pub prompt: String,
    /// A reference image: a local file, an http(s) URL, a data URI or an imageUUID (repeatable).
    #[arg(long = "image", short = 'i', value_name = "PATH|URL|UUID")]
    pub images: Vec<String>,
    /// Output size, one of the nine Kontext sizes, e.g. 1248x832 [default: 1024x1024].
    #[arg(long, value_name = "WxH", conflicts_with = "aspect")]
    pub size: Option<String>,
    /// Output aspect ratio: 21:9, 16:9, 4:3, 3:2, 1:1, 2:3, 3:4, 9:16, 9:21.
    #[arg(long, value_name = "W:H")]
    pub aspect: Option<String>,
    /// Seed (0 to 9223372036854775807).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of images (numberResults, 1–20).
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u32>,
    /// Image file format.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Output quality (20–99).
    #[arg(long, value_name = "Q")]
    pub quality: Option<u32>,
    /// How the server returns images.
    #[arg(long, value_enum)]
    pub output: Option<OutputArg>,
    /// Asynchronous delivery (deliveryMethod async; results are polled with getResponse).
    #[arg(long = "async")]
    pub async_delivery: bool,
    /// webhookURL: the server POSTs each result there.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// uploadEndpoint: the server PUTs each image there.
    #[arg(long, value_name = "URL")]
    pub upload_endpoint: Option<String>,
    /// Seconds the image URLs stay up (≥ 60).
    #[arg(long, value_name = "S")]
    pub ttl: Option<u64>,
    /// Ask for the cost of each image (includeCost; the default: kept for scripts).
    #[arg(long, conflicts_with = "no_cost")]
    pub cost: bool,
    /// Do not ask for the cost of each image (includeCost: false).
    #[arg(long)]
    pub no_cost: bool,
    /// safety.checkContent: have the server check the content.
    #[arg(long)]
    pub check_content: bool,
    /// safety.mode.
    #[arg(long, value_enum, value_name = "MODE")]
    pub safety_mode: Option<SafetyModeArg>,
    /// providerSettings.bfl.promptUpsampling
    #[arg(long)]
    pub prompt_upsampling: bool,
    /// providerSettings.bfl.safetyTolerance (0–6).
    #[arg(long, value_name = "N")]
    pub safety_tolerance: Option<u32>,
    /// Use this taskUUID instead of a new one.
    #[arg(long, value_name = "UUID")]
    pub task_uuid: Option<Uuid>,
    /// Directory for the images.
    #[arg(long, short = 'o', default_value = "outputs", value_name = "DIR")]
    pub out: PathBuf,
    /// Do not download URL results; just print the URLs.
    #[arg(long)]
    pub no_download: bool,
    /// Print the exact JSON frame that would be sent, and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Give up on the task after this long.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl EditArgs {
    /// The delivery method asked for.
    pub fn delivery(&self) -> Option<DeliveryMethod> {
        self.async_delivery.then_some(DeliveryMethod::Async)
    }
}

/// `runware batch`
#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BatchArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// The tasks: one JSON object per line, in the wire format's field names.
    #[arg(value_name = "FILE.jsonl", required = true)]
    pub file: Option<PathBuf>,
    /// A batch shared by a fleet of workers through PostgreSQL.
    #[cfg(feature = "fleet")]
    #[command(subcommand)]
    pub fleet: Option<FleetCommand>,
    /// Most tasks in flight at once.
    #[arg(long, short = 'c', default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Directory for the images.
    #[arg(long, short = 'o', default_value = "outputs", value_name = "DIR")]
    pub out: PathBuf,
    /// The results journal [default: FILE.results.jsonl beside the input, or
    /// FILE.emulator.results.jsonl on the embedded emulator].
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// Start a new journal (the old one is kept beside it as `FILE.<time>.old`).
    #[arg(long)]
    pub fresh: bool,
    /// New attempts (under new taskUUIDs) for a line the server failed with a
    /// retryable error: provider, server-side timeout, server error, rate limit.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: u32,
    /// The wait before a line's first retry; doubled each time, ±50 % jitter, at most 1 min.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse_duration)]
    pub retry_backoff: Duration,
    /// Stop waiting for an unreachable server after this long [default: wait for ever].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub give_up_after: Option<Duration>,
    /// When the batch ends, write a gallery (index.html) to review it into the output folder.
    #[arg(long)]
    pub gallery: bool,
    /// Send local reference images inline in every task (as data URIs) instead of
    /// uploading each once and referencing its imageUUID.
    #[arg(long)]
    pub inline_references: bool,
    /// Never submit an attempt whose estimated cost would take the batch's billed
    /// plus in-flight spend over USD (earlier runs count; exit 5 when it stops).
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    pub max_cost: Option<f64>,
    /// Check every line and referenced file and print what the batch would run and
    /// its estimated cost; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Send again a task first sent longer ago than the server is known to remember
    /// taskUUIDs, when the server no longer knows it (it may then run twice).
    #[arg(long)]
    pub resubmit_stale: bool,
    /// Do not download URL results (base64 and data URI results are still written).
    #[arg(long)]
    pub no_download: bool,
    /// Most downloads at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub downloads: u32,
    /// On Ctrl-C, wait this long for the tasks in flight.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub grace: Duration,
    /// Stop waiting for one attempt's results after this long; the task is then
    /// recovered under the same taskUUID, never sent under a new one.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The PostgreSQL database the fleet shares.
#[cfg(feature = "fleet")]
#[derive(Args, Debug, Clone)]
pub struct QueueArgs {
    /// PostgreSQL connection string (URL or key=value; its password is never printed).
    #[arg(long, env = "RUNWARE_QUEUE", hide_env_values = true, value_name = "POSTGRES_URL")]
    pub queue: String,
}

#[cfg(feature = "fleet")]
impl FleetCommand {
    /// The secrets these flags carry (the queue's password, the API key).
    pub fn secrets(&self) -> Vec<String> {
        let queue = match self {
            FleetCommand::Submit(a) => &a.queue,
            FleetCommand::Status(a) => &a.batch.queue,
            FleetCommand::Results(a) | FleetCommand::Cancel(a) | FleetCommand::Resume(a) => &a.queue,
            FleetCommand::Retry(a) => &a.batch.queue,
            FleetCommand::List(a) => &a.queue,
        };
        let mut keys: Vec<String> = crate::conninfo::password(&queue.queue).into_iter().collect();
        if let FleetCommand::Submit(a) = self {
            keys.extend(a.api.api_key.clone());
        }
        keys
    }
}

/// `runware batch <fleet command>`
#[cfg(feature = "fleet")]
#[derive(Subcommand, Debug, Clone)]
pub enum FleetCommand {
    /// Queue a JSONL file's lines for a fleet of workers (idempotent; prints the batch id).
    Submit(SubmitArgs),
    /// Counts by state, rate, ETA, billed cost and live workers.
    Status(StatusArgs),
    /// The batch's results as JSONL (the local batch's result records), in line order.
    Results(BatchIdArgs),
    /// Queue the batch's dead tasks again (under their taskUUIDs: their outcome is
    /// unknown) or its parked ones (a new attempt, under a new taskUUID).
    Retry(RetryArgs),
    /// Cancel the batch: its queued tasks are never sent; tasks in flight finish.
    Cancel(BatchIdArgs),
    /// Resume a paused batch (after fixing the key or adding credits).
    Resume(BatchIdArgs),
    /// The batches in the queue.
    List(ListArgs),
}

/// `runware batch submit`
#[cfg(feature = "fleet")]
#[derive(Args, Debug, Clone)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    /// The tasks: one JSON object per line, in the wire format's field names.
    #[arg(value_name = "FILE.jsonl")]
    pub file: PathBuf,
    /// The batch's name [default: the file's stem]; the same name on the same
    /// endpoint is the same batch.
    #[arg(long)]
    pub name: Option<String>,
    /// Most tasks of this batch in flight at once, over the whole fleet.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,
    /// New attempts (under new taskUUIDs) for a task the server failed with a
    /// retryable error; then the task is parked.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: u32,
    /// A task handed out this many times without an outcome goes to `dead`.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_deliveries: u32,
    /// Workers claim nothing more of this batch once its billed cost reaches USD.
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    pub max_cost: Option<f64>,
    /// Workers keep URL results as URLs.
    #[arg(long)]
    pub no_download: bool,
}

/// A batch by id.
#[cfg(feature = "fleet")]
#[derive(Args, Debug, Clone)]
pub struct BatchIdArgs {
    #[command(flatten)]
    pub queue: QueueArgs,
    /// The batch id (as `batch submit` printed it).
    #[arg(value_name = "BATCH_ID")]
    pub id: Uuid,
}

/// `runware batch status`
#[cfg(feature = "fleet")]
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub batch: BatchIdArgs,
    /// Keep showing it (a progress bar) until the batch has nothing left to run.
    #[arg(long)]
    pub watch: bool,
}

/// `runware batch retry`
#[cfg(feature = "fleet")]
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["dead", "parked"])))]
pub struct RetryArgs {
    #[command(flatten)]
    pub batch: BatchIdArgs,
    /// Tasks delivered too often without an outcome (resent under the same taskUUID).
    #[arg(long)]
    pub dead: bool,
    /// Tasks whose retries ran out (a new attempt under a new taskUUID).
    #[arg(long)]
    pub parked: bool,
}

/// `runware batch list`
#[cfg(feature = "fleet")]
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub queue: QueueArgs,
}

/// `runware worker`
#[cfg(feature = "fleet")]
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Most tasks this worker runs at once.
    #[arg(long, short = 'c', default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Directory for the images (one all workers share).
    #[arg(long, short = 'o', default_value = "outputs", value_name = "DIR")]
    pub out: PathBuf,
    /// Keep URL results as URLs.
    #[arg(long)]
    pub no_download: bool,
    /// A worker silent this long loses its leases to the others.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub lease: Duration,
    /// Stop waiting for one attempt's results after this long; the task is then
    /// handed back and resent under the same taskUUID.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Exit once the queue has nothing left to run for this endpoint.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// On SIGTERM or Ctrl-C, wait this long for the tasks in flight, then hand the rest back.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub grace: Duration,
    /// The wait before a task's retry; doubled each time, ±50 % jitter, at most 1 min.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse_duration)]
    pub retry_backoff: Duration,
}

/// `runware result`
#[derive(Args, Debug, Clone)]
pub struct ResultArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The task's taskUUID.
    #[arg(value_name = "TASK_UUID")]
    pub task_uuid: Uuid,
    /// Wait for this many results (numberResults, or promptVersions). Without it,
    /// every result the server has is returned.
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u32).range(1..=20))]
    pub count: Option<u32>,
    /// Directory for the images.
    #[arg(long, short = 'o', default_value = "outputs", value_name = "DIR")]
    pub out: PathBuf,
    /// Do not download URL results; just print the URLs.
    #[arg(long)]
    pub no_download: bool,
    /// Give up when the server has not answered (or, with --count, not every
    /// result is there) after this long.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `runware upload`
#[derive(Args, Debug, Clone)]
pub struct UploadArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// A local image file, an http(s) URL or a data URI.
    #[arg(value_name = "PATH|URL")]
    pub image: String,
}

/// `runware media`
#[derive(Args, Debug, Clone)]
pub struct MediaArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// upload or delete.
    #[command(subcommand)]
    pub command: MediaCommand,
}

/// `runware media upload|delete`
#[derive(Subcommand, Debug, Clone)]
pub enum MediaCommand {
    /// Store media (`"operation":"upload"`); prints its mediaUUID and mediaURL.
    Upload(MediaUploadArgs),
    /// Delete stored media (`"operation":"delete"`, the mediaUUID sent as `media`).
    Delete(MediaDeleteArgs),
}

/// `runware media upload`
#[derive(Args, Debug, Clone)]
pub struct MediaUploadArgs {
    /// A local file, an http(s) URL or a data URI.
    #[arg(value_name = "PATH|URL")]
    pub media: String,
}

/// `runware media delete`
#[derive(Args, Debug, Clone)]
pub struct MediaDeleteArgs {
    /// The mediaUUID to delete.
    #[arg(value_name = "MEDIA_UUID")]
    pub media_uuid: String,
}

/// `--metrics-addr`
#[derive(Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics (every name starts with runware_) at http://HOST:PORT/metrics
    /// while this runs; port 0 picks a free one (the address is printed).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
}

/// `runware auth`
#[derive(Args, Debug, Clone)]
pub struct AuthArgs {
    /// login, status or logout.
    #[command(subcommand)]
    pub command: AuthCommand,
}

/// `runware auth login|status|logout`
#[derive(Subcommand, Debug, Clone)]
pub enum AuthCommand {
    /// Read the key (a prompt that does not echo, or stdin's first line), check it with an
    /// authentication round trip, and store it readable by you only.
    Login,
    /// Show the key in use (masked), where it and the endpoint come from.
    Status,
    /// Remove the stored key.
    Logout,
}

/// `runware completions`
#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `runware ping`
#[derive(Args, Debug, Clone)]
pub struct PingArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// How many pings to send after authenticating.
    #[arg(long, short = 'n', default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
}

/// `runware conformance`
#[derive(Args, Debug, Clone)]
pub struct ConformanceArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Spend without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Ask getResponse for the finished task once more after this much longer
    /// (for retention windows longer than the script).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Also measure how long the server keeps a silent socket open, waiting at
    /// most this long [default when given without a value: 10m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, num_args = 0..=1, default_missing_value = "10m")]
    pub idle: Option<Duration>,
    /// How long to wait for any one task's answer.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2m")]
    pub task_timeout: Duration,
    /// Write the report here [default: runware-conformance-UNIX_MS.json].
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// `runware gallery`
#[derive(Args, Debug, Clone)]
pub struct GalleryArgs {
    /// The batch's results journal (FILE.results.jsonl or FILE.emulator.results.jsonl).
    pub results: PathBuf,
    /// The batch's input file [default: the journal's name without `.results` (and `.emulator`)].
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Where to write index.html (the batch's output folder).
    #[arg(long, short = 'o', default_value = "outputs", value_name = "DIR")]
    pub out: PathBuf,
}

/// `runware serve`
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Accept this API key (repeatable) [default: test-key].
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,
    /// Task latency: a duration ("0", "300ms") or a range ("2s..5s").
    #[arg(long, default_value = "2s..5s", value_parser = parse_latency)]
    pub latency: LatencyArg,
    /// Seed for the emulator's random numbers (seeds, latencies, UUIDs).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Drop every connection abruptly, this often.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub drop_every: Option<Duration>,
    /// Close every connection cleanly, this often.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub close_every: Option<Duration>,
    /// Make every connection half-open (silent), this often.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub half_open_every: Option<Duration>,
    /// Restart (forget sessions and drop connections), this often.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub restart_every: Option<Duration>,
    /// Drop a connection in the middle of a multi-result task, this often.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub drop_mid_task_every: Option<Duration>,
    /// Send stray errors (unknown or no taskUUID), this often.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stray_error_every: Option<Duration>,
    /// Send malformed frames, this often.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub garbage_every: Option<Duration>,
    /// Send each of the next N result items twice.
    #[arg(long, value_name = "N")]
    pub duplicate_results: Option<u32>,
    /// Refuse the next N WebSocket handshakes with HTTP 503.
    #[arg(long, value_name = "N")]
    pub refuse_handshakes: Option<u32>,
    /// Refuse the next N authentications.
    #[arg(long, value_name = "N")]
    pub refuse_auth: Option<u32>,
    /// The error code of injected task failures (with --fail-rate, --fail-prompt,
    /// --fail-task or --fail-every).
    #[arg(long, value_name = "CODE", default_value = "serviceUnavailable", value_parser = parse_fail_code)]
    pub fail_code: String,
    /// Fail each accepted task with probability P (0 to 1).
    #[arg(
        long,
        value_name = "P",
        group = "fail_match",
        value_parser = parse_probability,
        allow_negative_numbers = true
    )]
    pub fail_rate: Option<f64>,
    /// Fail tasks whose prompt contains TEXT (with --fail-times N: the first N tasks of
    /// each distinct prompt).
    #[arg(long, value_name = "TEXT", group = "fail_match")]
    pub fail_prompt: Option<String>,
    /// Fail the task with this taskUUID.
    #[arg(long, value_name = "UUID", group = "fail_match")]
    pub fail_task: Option<Uuid>,
    /// Fail every accepted task (with --fail-times N: the next N).
    #[arg(long, group = "fail_match")]
    pub fail_every: bool,
    /// Fail at most N tasks (per distinct prompt with --fail-prompt).
    #[arg(long, value_name = "N", requires = "fail_match")]
    pub fail_times: Option<u32>,
    /// Deliver K results of a failing task before its error.
    #[arg(long, value_name = "K", requires = "fail_match")]
    pub fail_after: Option<u32>,
    /// Matching tasks never end instead of failing: no error, no more results (a lost
    /// task, or a request that wedges the server). --fail-code is not used.
    #[arg(long, requires = "fail_match")]
    pub fail_stall: bool,
    /// Flag each image result NSFWContent:true with probability P (0 to 1).
    #[arg(long, value_name = "P", value_parser = parse_probability, allow_negative_numbers = true)]
    pub nsfw_rate: Option<f64>,
    /// Start one outage (every connection dropped, upgrades refused with 503) this
    /// long after start.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "outage_for")]
    pub outage_after: Option<Duration>,
    /// How long the outage of --outage-after lasts.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "outage_after")]
    pub outage_for: Option<Duration>,
    /// Render images at width/N × height/N (faster; the images are smaller than asked).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub render_divisor: Option<u32>,
    /// Depart from a server behaviour the client's guarantees rest on (repeatable),
    /// for `runware conformance` or your own tests: no-resume, no-replay,
    /// no-cross-session-conflict, no-sync-get-response, no-pong, errors-without-task-uuid.
    #[arg(long = "quirk", value_name = "NAME", value_parser = parse_quirk)]
    pub quirks: Vec<runware_emulator::Quirk>,
}

fn parse_quirk(s: &str) -> Result<runware_emulator::Quirk, String> {
    s.parse().map_err(|e: runware_emulator::EmulatorError| e.to_string())
}

/// `--latency` of `serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyArg {
    /// Always this long.
    Fixed(Duration),
    /// Uniform in this range.
    Range(Duration, Duration),
}

/// Parses `0`, `250ms`, `2s`, `1.5s`, `3m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("not a duration: {s:?} (try 500ms, 10s, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a probability: a number from 0 to 1.
pub fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.trim().parse().map_err(|_| format!("not a probability: {s:?} (a number from 0 to 1)"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("probability out of range: {s:?} (must be from 0 to 1)"));
    }
    Ok(p)
}

/// Parses an error code: a non-empty word of ASCII letters and digits.
pub fn parse_fail_code(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("not an error code: {s:?} (e.g. serviceUnavailable, timeoutProvider)"));
    }
    Ok(t.to_string())
}

/// Parses `0`, `5ms`, or `2s..5s`.
pub fn parse_latency(s: &str) -> Result<LatencyArg, String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse_duration(a)?, parse_duration(b)?);
            if a > b {
                return Err(format!("empty latency range {s:?}"));
            }
            Ok(LatencyArg::Range(a, b))
        }
        None => parse_duration(s).map(LatencyArg::Fixed),
    }
}

/// A positive amount of US dollars: `1`, `0.50`, `$2.5`.
pub fn parse_usd(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_start_matches('$');
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("must be a positive amount of US dollars, like 1.50 (got {s:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_and_latencies_parse() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_latency("2s..5s"), Ok(LatencyArg::Range(Duration::from_secs(2), Duration::from_secs(5))));
        assert_eq!(parse_latency("0"), Ok(LatencyArg::Fixed(Duration::ZERO)));
        assert!(parse_latency("5s..2s").is_err());
    }

    #[test]
    fn api_flags_after_the_subcommand_win() {
        let cli = Cli::try_parse_from(["runware", "--url", "ws://a/v1", "ping", "--url", "ws://b/v1"]).unwrap();
        let Command::Ping(p) = cli.command else { panic!("ping") };
        let merged = p.api.or(&cli.api);
        assert_eq!(merged.url.as_deref(), Some("ws://b/v1"));
    }
}
