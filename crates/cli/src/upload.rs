//! `runware upload PATH|URL`: imageUpload; prints the imageUUID and imageURL.

use super::EXIT_OK;
use super::args::{ApiArgs, UploadArgs};
use super::embedded::Endpoint;
use super::error::CliError;
use super::input::is_remote_or_inline;
use super::output::Output;
use runware_ws::protocol::ReferenceImage;
use std::time::Duration;

pub async fn run(api: ApiArgs, args: UploadArgs, out: &Output) -> Result<u8, CliError> {
    // A local file becomes a data URI (read off the runtime) before connecting.
    let image = if is_remote_or_inline(&args.image) {
        args.image.clone()
    } else {
        let path = args.image.clone();
        tokio::task::spawn_blocking(move || ReferenceImage::from_path(&path, "image"))
            .await
            .map_err(|e| CliError::Other(format!("reading the image failed: {e}")))?
            .map_err(|v| CliError::Invalid(v.into()))?
            .as_wire()
            .into_owned()
    };
    let endpoint = Endpoint::resolve(&api, out).await?;
    let result = upload(&endpoint, image, out).await;
    endpoint.shutdown().await;
    result
}

async fn upload(endpoint: &Endpoint, image: String, out: &Output) -> Result<u8, CliError> {
    let client = endpoint.connect(|b| b.max_in_flight(1)).await?;
    let item = client.upload_image(image).await;
    client.close(Duration::from_secs(1)).await;
    let item = item.map_err(|e| CliError::from_client(e, &endpoint.url))?;
    let image_uuid = item.image_uuid.as_ref().map(ToString::to_string);
    let image_url = item.image_url.as_ref().map(ToString::to_string);
    let Some(image_uuid) = image_uuid else {
        return Err(CliError::Other("the upload's reply has no imageUUID".into()));
    };
    if out.json {
        out.json_value(&serde_json::json!({ "imageUUID": image_uuid, "imageURL": image_url }));
    } else {
        out.line(&format!("imageUUID {image_uuid}"));
        if let Some(url) = image_url {
            out.line(&format!("imageURL  {url}"));
        }
    }
    Ok(EXIT_OK)
}
