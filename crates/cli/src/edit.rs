//! `runware edit`: one Kontext \[pro\] task, built with `Kontext::builder()`.

use super::EXIT_OK;
use super::args::{ApiArgs, EditArgs};
use super::batch::journal::ImageRecord;
use super::download::{Saver, file_safe, short_uuid};
use super::embedded::Endpoint;
use super::error::CliError;
use super::output::{Output, dollars};
use runware_ws::client::{ImageResult, PartialFailure};
use runware_ws::protocol::{ClientTask, Kontext, KontextSize, KontextTask, encode_frame};
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

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
    if args.cost {
        b = b.include_cost(true);
    }
    if args.prompt_upsampling {
        b = b.prompt_upsampling(true);
    }
    if let Some(t) = args.safety_tolerance {
        b = b.safety_tolerance(t);
    }
    b.build()
}

/// URLs, data URIs and image UUIDs go to the API as they are; anything else is a local file.
pub fn is_remote_or_inline(image: &str) -> bool {
    let t = image.trim();
    let lower = t.get(..8).unwrap_or(t).to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("data:")
        || (t.len() == 36 && Uuid::parse_str(t).is_ok())
}

/// Saves a task's images as `DIR/PREFIX-IMAGEUUID.EXT`, concurrently.
pub async fn save_images(
    saver: &Saver,
    images: Vec<ImageResult>,
    dir: &Path,
    prefix: &str,
    fallback_ext: &str,
) -> Result<Vec<ImageRecord>, CliError> {
    let jobs = images.into_iter().map(|img| async move {
        let stem = format!("{prefix}-{}", file_safe(img.image_uuid.as_str()));
        let saved = saver.save(&img.output, dir, &stem, fallback_ext).await?;
        Ok::<_, CliError>(ImageRecord::new(&img, saved.path.as_deref()))
    });
    futures::future::join_all(jobs).await.into_iter().collect()
}

/// One line per image (or one JSON document).
pub fn report(out: &Output, task_uuid: Uuid, images: &[ImageRecord]) {
    if out.json {
        out.json_value(&serde_json::json!({ "taskUUID": task_uuid, "images": images }));
        return;
    }
    for img in images {
        let place = img.path.as_deref().or(img.image_url.as_deref()).unwrap_or("(no file)");
        let mut line = format!("{place}  imageUUID {}", img.image_uuid);
        if let Some(seed) = img.seed {
            line.push_str(&format!("  seed {seed}"));
        }
        if let Some(cost) = img.cost {
            line.push_str(&format!("  cost {}", dollars(cost)));
        }
        out.line(&line);
    }
}
