//! Outbound HTTP: each result POSTed to `webhookURL`, each image PUT to
//! `uploadEndpoint`, retried with exponential backoff on failure (bounded).

use super::state::Shared;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Attempts per delivery.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(10);

enum Body {
    Json(Arc<str>),
    Bytes(Bytes, &'static str),
}

async fn send(shared: Arc<Shared>, url: String, body: Body) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let req = match &body {
            Body::Json(json) => {
                shared.http.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json").body(json.to_string())
            }
            Body::Bytes(bytes, mime) => {
                shared.http.put(&url).header(reqwest::header::CONTENT_TYPE, *mime).body(bytes.clone())
            }
        };
        match req.timeout(TIMEOUT).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::debug!(%url, attempt, status = %r.status(), "delivery refused"),
            Err(e) => tracing::debug!(%url, attempt, error = %e, "delivery failed"),
        }
        if attempt == ATTEMPTS {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.shutdown_signal() => return,
        }
        backoff *= 2;
    }
    tracing::warn!(%url, "giving up after {ATTEMPTS} attempts");
}

/// POSTs a result item (flat JSON) to a webhook, in the background.
pub(crate) fn post_item(shared: &Arc<Shared>, url: &str, item: Arc<str>) {
    tokio::spawn(send(shared.clone(), url.to_string(), Body::Json(item)));
}

/// PUTs image bytes to an upload endpoint, in the background.
pub(crate) fn put_bytes(shared: &Arc<Shared>, url: &str, bytes: Bytes, mime: &'static str) {
    tokio::spawn(send(shared.clone(), url.to_string(), Body::Bytes(bytes, mime)));
}
