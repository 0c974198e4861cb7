//! `runware result TASK_UUID`: fetch a task's results with getResponse and save them.

use super::args::{ApiArgs, ResultArgs};
use super::download::{Saver, short_uuid};
use super::edit::{report, save_images};
use super::embedded::Endpoint;
use super::error::CliError;
use super::output::{Output, human_duration};
use super::{EXIT_FAILED, EXIT_OK};
use crate::client::{ClientError, ImageResult};
use std::time::Duration;

pub async fn run(api: ApiArgs, args: ResultArgs, out: &Output) -> Result<u8, CliError> {
    let endpoint = Endpoint::resolve(&api, out).await?;
    let result = fetch(&endpoint, &args, out).await;
    endpoint.shutdown().await;
    result
}

async fn fetch(endpoint: &Endpoint, args: &ResultArgs, out: &Output) -> Result<u8, CliError> {
    let client = endpoint.connect(|b| b.max_in_flight(1)).await?;
    let items = match client.attach(args.task_uuid, args.count, Some(args.timeout)).await {
        Ok(stream) => stream.collect_all().await,
        Err(e) => Err(e),
    };
    let items = match items {
        Ok(items) => items,
        Err(ClientError::Timeout { .. }) => {
            client.close(Duration::ZERO).await;
            return Err(CliError::Other(format!(
                "no {} result(s) for task {} within {} (unknown task, expired, or still running; see --count and --timeout)",
                args.count,
                args.task_uuid,
                human_duration(args.timeout)
            )));
        }
        Err(e) => {
            client.close(Duration::ZERO).await;
            return Err(CliError::from_client(e, &endpoint.url));
        }
    };
    let mut images = Vec::new();
    for item in items {
        match ImageResult::try_from(item.clone()) {
            Ok(img) => images.push(img),
            // Not an image (another task type): print the item as it came.
            Err(_) => out.line(&serde_json::to_string(&item).unwrap_or_default()),
        }
    }
    let saver = Saver::new(4, !args.no_download)?;
    let saved = save_images(&saver, images, &args.out, &short_uuid(&args.task_uuid), "jpg").await;
    client.close(Duration::from_secs(1)).await;
    let saved = saved?;
    report(out, args.task_uuid, &saved);
    Ok(if saved.is_empty() { EXIT_FAILED } else { EXIT_OK })
}
