//! `runware result TASK_UUID`: fetch a task's results with getResponse and save
//! them: every result the server has, or (with `--count N`) wait for N.

use super::args::{ApiArgs, ResultArgs};
use super::download::save_images;
use super::download::{Saver, short_uuid};
use super::embedded::Endpoint;
use super::error::CliError;
use super::output::report;
use super::output::{Output, human_duration};
use super::{EXIT_FAILED, EXIT_OK};
use runware_ws::client::{ImageResult, Lookup};
use std::time::Duration;

pub async fn run(api: ApiArgs, args: ResultArgs, out: &Output) -> Result<u8, CliError> {
    let endpoint = Endpoint::resolve(&api, out).await?;
    let result = fetch(&endpoint, &args, out).await;
    endpoint.shutdown().await;
    result
}

async fn fetch(endpoint: &Endpoint, args: &ResultArgs, out: &Output) -> Result<u8, CliError> {
    let client = endpoint.connect(|b| b.max_in_flight(1)).await?;
    let looked_up = client.lookup(args.task_uuid, args.count, args.timeout).await;
    let (items, error) = match looked_up {
        Ok(Lookup::Known { items, finished, error }) => {
            if let (Some(n), false, None) = (args.count, finished, &error) {
                out.notice(&format!(
                    "only {} of {n} result(s) for task {} within {} (still running? see --timeout)",
                    items.len(),
                    args.task_uuid,
                    human_duration(args.timeout)
                ));
            }
            (items, error)
        }
        Ok(_unknown) => {
            client.close(Duration::ZERO).await;
            return Err(CliError::Other(format!(
                "the server knows no task {} (never sent, or its results expired: they are kept for at least an hour)",
                args.task_uuid
            )));
        }
        Err(e) => {
            client.close(Duration::ZERO).await;
            return Err(CliError::from_client(e, &endpoint.url));
        }
    };
    let (mut images, mut others) = (Vec::new(), 0usize);
    for item in items {
        match ImageResult::try_from(item.clone()) {
            Ok(img) => images.push(img),
            // Not an image (another task type): print the item as it came.
            Err(_) => {
                others += 1;
                out.line(&serde_json::to_string(&item).unwrap_or_default());
            }
        }
    }
    let saver = Saver::new(4, !args.no_download)?;
    let saved = save_images(&saver, images, &args.out, &short_uuid(&args.task_uuid), "jpg").await;
    client.close(Duration::from_secs(1)).await;
    let saved = saved?;
    report(out, args.task_uuid, &saved);
    if let Some(e) = error {
        out.error(&format!("task {} failed: {e}", args.task_uuid));
        return Ok(EXIT_FAILED);
    }
    Ok(if saved.is_empty() && others == 0 { EXIT_FAILED } else { EXIT_OK })
}
