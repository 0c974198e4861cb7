//! `runware edit`: one Kontext \[pro\] task, built with `Kontext::builder()`.

use super::EXIT_OK;
use super::args::{ApiArgs, EditArgs};
use super::download::{Saver, save_images, short_uuid};
use super::embedded::Endpoint;
use super::error::CliError;
use super::input::is_remote_or_inline;
use super::output::{Output, report};
use runware_ws::client::PartialFailure;
use runware_ws::protocol::{ClientTask, Kontext, KontextSize, KontextTask, encode_frame};
use std::time::Duration;

/// Concurrent downloads of one task's images.
const DOWNLOADS: usize = 4;

pub async fn run(api: ApiArgs, args: EditArgs, out: &Output) -> Result<u8, CliError> {
    // Reading reference image files is blocking work: off the runtime.
    let task = {
        let args = args.clone();
        tokio::task::spawn_blocking(move || build_task(&args))
            .await
            .map_err(|e| CliError::Other(format!("building the task failed: {e}")))?
            .map_err(CliError::Invalid)?
    };
    if args.dry_run {
        let frame = encode_frame(&[ClientTask::from(task)])
            .map_err(|e| CliError::Other(format!("cannot encode the task: {e}")))?;
        out.line(&frame);
        return Ok(EXIT_OK);
    }
    let endpoint = Endpoint::resolve(&api, out).await?;
    let result = submit(&endpoint, args, task, out).await;
    endpoint.shutdown().await;
    result
}

async fn submit(endpoint: &Endpoint, args: EditArgs, task: KontextTask, out: &Output) -> Result<u8, CliError> {
    let client = endpoint.connect(|b| b.task_timeout(args.timeout).max_in_flight(1)).await?;
    let saver = Saver::new(DOWNLOADS, !args.no_download)?;
    let task_uuid = task.task_uuid();
    let fallback = task.output_format().extension();
    let images = match client.kontext_stream(task).await {
        Ok(stream) => stream.await,
        Err(e) => Err(PartialFailure::new(e)),
    };
    let images = match images {
        Ok(images) => images,
        Err(PartialFailure { received, error }) => {
            // Images that arrived before the failure are paid for: keep them.
            if !received.is_empty() {
                let saved = save_images(&saver, received, &args.out, &short_uuid(&task_uuid), fallback).await;
                if let Ok(saved) = &saved {
                    report(out, task_uuid, saved);
                }
            }
            client.close(Duration::ZERO).await;
            return Err(CliError::from_client(error, &endpoint.url));
        }
    };
    let saved = save_images(&saver, images, &args.out, &short_uuid(&task_uuid), fallback).await;
    client.close(Duration::from_secs(1)).await;
    let saved = saved?;
    report(out, task_uuid, &saved);
    Ok(EXIT_OK)
}

/// The task the flags describe (reads local reference images: blocking).
pub fn build_task(args: &EditArgs) -> Result<KontextTask, runware_ws::ValidationError> {
    let mut b = Kontext::builder().prompt(args.prompt.clone());
    if let Some(u) = args.task_uuid {
        b = b.task_uuid(u);
    }
    b = match (&args.size, &args.aspect) {
        (Some(s), _) | (None, Some(s)) => b.size_str(s.clone()),
        (None, None) => b.size(KontextSize::R1x1),
    };
    for image in &args.images {
        b = if is_remote_or_inline(image) { b.reference_image(image.clone()) } else { b.reference_image_file(image) };
    }
    if let Some(seed) = args.seed {
        b = b.seed(seed);
    }
    if let Some(n) = args.count {
        b = b.number_results(n);
    }
    if let Some(f) = args.format {
        b = b.output_format(f.into());
    }
    if let Some(q) = args.quality {
        b = b.output_quality(q);
    }
    if let Some(o) = args.output {
        b = b.output_type(o.into());
    }
    if let Some(d) = args.delivery() {
        b = b.delivery_method(d);
    }
    if let Some(w) = &args.webhook {
        b = b.webhook_url(w.clone());
    }
    if let Some(u) = &args.upload_endpoint {
        b = b.upload_endpoint(u.clone());
    }
    if let Some(t) = args.ttl {
        b = b.ttl(t);
    }
    // The cost of each image is asked for unless --no-cost.
    b = b.include_cost(!args.no_cost);
    if args.check_content {
        b = b.check_content(true);
    }
    if let Some(m) = args.safety_mode {
        b = b.safety_mode(m.into());
    }
    if args.prompt_upsampling {
        b = b.prompt_upsampling(true);
    }
    if let Some(t) = args.safety_tolerance {
        b = b.safety_tolerance(t);
    }
    b.build()
}
