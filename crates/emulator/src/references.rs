//! Turns a reference image (or an upload's `image`) into bytes: data URI, bare
//! base64, the UUID of an upload or a generated image, or an http(s) URL.

use super::imaging;
use super::state::Shared;
use base64::Engine as _;
use bytes::Bytes;
use runware_ws::protocol::ReferenceImage;
use std::time::Duration;

/// The largest file fetched from a URL.
const MAX_FETCH: usize = 64 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Decodes base64 in any of the usual alphabets, padded or not.
pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let s = s.trim();
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD].iter().find_map(|e| e.decode(s).ok())
}

/// The bytes of a data URI (`data:…;base64,…`).
pub(crate) fn data_uri_bytes(uri: &str) -> Option<Vec<u8>> {
    let (meta, data) = uri.trim().strip_prefix("data:")?.split_once(',')?;
    meta.ends_with(";base64").then(|| decode_base64(data))?
}

/// Fetches a URL, bounded in time and size.
async fn fetch_url(shared: &Shared, url: &str) -> Result<Bytes, String> {
    let mut resp =
        shared.http.get(url).timeout(FETCH_TIMEOUT).send().await.map_err(|e| format!("cannot fetch {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("fetching {url} answered HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("cannot read {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_FETCH {
            return Err(format!("{url} is larger than {MAX_FETCH} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// The bytes of a reference image.
pub(crate) async fn resolve(shared: &Shared, r: &ReferenceImage) -> Result<Bytes, String> {
    match r {
        ReferenceImage::DataUri(s) => data_uri_bytes(s).map(Bytes::from).ok_or_else(|| "undecodable data URI".into()),
        ReferenceImage::Base64(s) => decode_base64(s).map(Bytes::from).ok_or_else(|| "undecodable base64".into()),
        ReferenceImage::Url(u) => fetch_url(shared, u).await,
        ReferenceImage::Uuid(id) => match imaging::fetch(shared, *id).await {
            Some(Ok((bytes, _))) => Ok(bytes),
            Some(Err(e)) => Err(e.to_string()),
            None => Err(format!("no uploaded or generated image has the UUID {id}")),
        },
    }
}

/// The bytes of an upload's `image`/`media` field, in any of the four forms.
pub(crate) async fn resolve_text(shared: &Shared, text: &str, parameter: &str) -> Result<Bytes, String> {
    match ReferenceImage::parse(text, parameter) {
        Ok(r) => resolve(shared, &r).await,
        // Not an image by its header: plain base64 of other media is still storable.
        Err(v) => decode_base64(text).filter(|b| !b.is_empty()).map(Bytes::from).ok_or_else(|| v.to_string()),
    }
}
