//! `runware media upload PATH|URL` and `runware media delete MEDIA_UUID`: the
//! `mediaStorage` task, with the field names Runware's SDKs send (`media` for both).

use super::EXIT_OK;
use super::args::{ApiArgs, MediaArgs, MediaCommand};
use super::embedded::Endpoint;
use super::error::CliError;
use super::input::is_remote_or_inline;
use super::output::Output;
use runware_ws::protocol::ReferenceImage;
use std::time::Duration;
use uuid::Uuid;

pub async fn run(api: ApiArgs, args: MediaArgs, out: &Output) -> Result<u8, CliError> {
    let op = match args.command {
        MediaCommand::Upload(a) => Op::Upload(read_media(a.media).await?),
        MediaCommand::Delete(a) => {
            // Checked before connecting: a typo costs no round trip.
            let uuid = Uuid::parse_str(a.media_uuid.trim()).map_err(|e| {
                CliError::Usage(format!("MEDIA_UUID must be a UUID (a mediaUUID from `runware media upload`): {e}"))
            })?;
            Op::Delete(uuid.to_string())
        }
    };
    let endpoint = Endpoint::resolve(&api, out).await?;
    let result = execute(&endpoint, op, out).await;
    endpoint.shutdown().await;
    result
}

enum Op {
    Upload(String),
    Delete(String),
}

/// A local file becomes a data URI (read off the runtime); URLs and data URIs go as given.
async fn read_media(media: String) -> Result<String, CliError> {
    if is_remote_or_inline(&media) {
        return Ok(media);
    }
    tokio::task::spawn_blocking(move || ReferenceImage::from_path(&media, "media"))
        .await
        .map_err(|e| CliError::Other(format!("reading the media failed: {e}")))?
        .map_err(|v| CliError::Invalid(v.into()))
        .map(|r| r.as_wire().into_owned())
}

async fn execute(endpoint: &Endpoint, op: Op, out: &Output) -> Result<u8, CliError> {
    let client = endpoint.connect(|b| b.max_in_flight(1)).await?;
    let (item, deleting) = match op {
        Op::Upload(media) => (client.store_media(media).await, None),
        Op::Delete(uuid) => (client.delete_media(uuid.clone()).await, Some(uuid)),
    };
    client.close(Duration::from_secs(1)).await;
    let item = item.map_err(|e| CliError::from_client(e, &endpoint.url))?;
    let field = |name: &str| item.get(name).and_then(|v| v.as_str().map(str::to_string));
    if let Some(uuid) = deleting {
        if out.json {
            out.json_value(&serde_json::json!({ "operation": "delete", "mediaUUID": uuid }));
        } else {
            out.line(&format!("deleted {uuid}"));
        }
        return Ok(EXIT_OK);
    }
    let Some(media_uuid) = field("mediaUUID") else {
        return Err(CliError::Other("the upload's reply has no mediaUUID".into()));
    };
    let media_url = field("mediaURL");
    if out.json {
        out.json_value(&serde_json::json!({ "mediaUUID": media_uuid, "mediaURL": media_url }));
    } else {
        out.line(&format!("mediaUUID {media_uuid}"));
        if let Some(url) = media_url {
            out.line(&format!("mediaURL  {url}"));
        }
    }
    Ok(EXIT_OK)
}
