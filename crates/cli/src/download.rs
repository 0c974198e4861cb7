//! Saving images: URL results are downloaded (bounded concurrency, retries with
//! backoff), base64 and data-URI results decoded; every file is written to a
//! temporary file in the target directory and renamed into place, so a file with
//! the final name is always complete.

use super::error::CliError;
use runware_jobs::record::ImageRecord;
use runware_ws::client::ImageOutput;
use runware_ws::client::ImageResult;
use runware_ws::protocol::sniff_image_mime;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Attempts per download.
const ATTEMPTS: u32 = 5;
/// Delay before the first retry; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Per-attempt request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Saves images into a directory.
#[derive(Clone)]
pub struct Saver {
    http: reqwest::Client,
    /// For loopback hosts (the emulator): never through a proxy.
    direct: reqwest::Client,
    permits: Arc<Semaphore>,
    download: bool,
}

impl std::fmt::Debug for Saver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saver").field("download", &self.download).finish_non_exhaustive()
    }
}

/// The outcome of saving one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Saved {
    /// Where the file is (`None` when URL results are not downloaded).
    pub path: Option<PathBuf>,
}

impl Saver {
    /// At most `concurrency` downloads at once; `download: false` skips URL results.
    pub fn new(concurrency: usize, download: bool) -> Result<Saver, CliError> {
        let build = |direct: bool| {
            let mut b = reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(Duration::from_secs(15))
                .user_agent(concat!("runware-ws/", env!("CARGO_PKG_VERSION")));
            if direct {
                b = b.no_proxy();
            }
            for der in super::ca::roots() {
                let cert = reqwest::Certificate::from_der(der)
                    .map_err(|e| CliError::Usage(format!("--ca-cert: a certificate reqwest cannot use: {e}")))?;
                b = b.add_root_certificate(cert);
            }
            b.build().map_err(|e| CliError::Other(format!("cannot build the HTTP client: {e}")))
        };
        Ok(Saver {
            http: build(false)?,
            direct: build(true)?,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            download,
        })
    }

    /// Whether [`Saver::save`] writes a file for `output` (a URL result is only
    /// fetched with downloads on; inline bytes are always written).
    pub fn saves(&self, output: &ImageOutput) -> bool {
        self.download || !matches!(output, ImageOutput::Url(_))
    }

    /// Saves one image as `dir/stem.EXT`, the extension from the image's bytes
    /// (`fallback_ext` when they are not recognised).
    pub async fn save(
        &self,
        output: &ImageOutput,
        dir: &Path,
        stem: &str,
        fallback_ext: &str,
    ) -> Result<Saved, CliError> {
        let bytes = match output {
            ImageOutput::Url(url) => {
                if !self.download {
                    return Ok(Saved { path: None });
                }
                self.fetch(url.as_str()).await?
            }
            inline => {
                let inline = inline.clone();
                tokio::task::spawn_blocking(move || inline.decode())
                    .await
                    .map_err(|e| CliError::Other(format!("decoding task failed: {e}")))?
                    .unwrap_or(Ok(Vec::new()))
                    .map_err(|e| CliError::Other(format!("the image's base64 data is invalid: {e}")))?
            }
        };
        let (dir, stem, fallback) = (dir.to_path_buf(), stem.to_string(), fallback_ext.to_string());
        let path = tokio::task::spawn_blocking(move || write_atomic(&dir, &stem, &bytes, &fallback))
            .await
            .map_err(|e| CliError::Other(format!("writing task failed: {e}")))??;
        Ok(Saved { path: Some(path) })
    }

    /// GETs `url`, retrying transient failures with exponential backoff and jitter.
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, CliError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| CliError::Download { url: url.to_string(), reason: format!("not a URL: {e}") })?;
        let client = if is_loopback(&parsed) { &self.direct } else { &self.http };
        let _permit = self.permits.acquire().await.map_err(|_| CliError::Other("downloads were stopped".into()))?;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                let base = FIRST_BACKOFF * 2u32.pow(attempt - 2);
                let jitter = base.mul_f64(fastrand::f64() * 0.3);
                tokio::time::sleep(base + jitter).await;
            }
            match client.get(parsed.clone()).send().await {
                Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                    Ok(b) => return Ok(b.to_vec()),
                    Err(e) => last = format!("reading the body: {e}"),
                },
                Ok(resp) => {
                    let status = resp.status();
                    last = format!("HTTP {status}");
                    let transient = status.is_server_error()
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                    if !transient {
                        break;
                    }
                }
                Err(e) => last = without_url(&e),
            }
            tracing::debug!(url, attempt, error = %last, "download attempt failed");
        }
        Err(CliError::Download { url: url.to_string(), reason: last })
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// The file extension for image bytes, from their content.
pub fn extension_of(bytes: &[u8]) -> Option<&'static str> {
    Some(match sniff_image_mime(bytes)? {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/bmp" => "bmp",
        _ => return None,
    })
}

/// Writes `bytes` to `dir/stem.EXT` through a temporary file in `dir` and a rename.
pub fn write_atomic(dir: &Path, stem: &str, bytes: &[u8], fallback_ext: &str) -> Result<PathBuf, CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::Write { path: dir.to_path_buf(), source })?;
    let ext = extension_of(bytes).unwrap_or(fallback_ext);
    let path = dir.join(format!("{stem}.{ext}"));
    let tmp = dir.join(format!(".{stem}.{:08x}.part", fastrand::u32(..)));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(CliError::Write { path, source });
    }
    Ok(path)
}

/// Keeps `[A-Za-z0-9_-]`, replaces anything else, at most 64 characters: safe in a file name.
pub fn file_safe(s: &str) -> String {
    s.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// The first 8 hex digits of a UUID.
pub fn short_uuid(u: &uuid::Uuid) -> String {
    u.simple().to_string()[..8].to_string()
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

/// Saves the images of jobs as they arrive: `NNNNN-<task>-<image>.<ext>` in one
/// folder (`NNNNN` the job's line). The job runner's hooks of `runware worker`;
/// `runware batch` wraps them with its progress.
pub struct ImageFiles {
    /// The downloader and writer.
    pub saver: Saver,
    /// Where the files go.
    pub dir: PathBuf,
}

impl runware_jobs::Hooks for ImageFiles {
    fn saves(&self, image: &runware_ws::client::ImageResult) -> bool {
        self.saver.saves(&image.output)
    }

    fn save<'a>(
        &'a self,
        job: &'a runware_jobs::JobInfo<'a>,
        attempt: &'a runware_jobs::record::AttemptRecord,
        image: &'a runware_ws::client::ImageResult,
    ) -> runware_jobs::hooks::SaveFuture<'a> {
        Box::pin(async move {
            let stem =
                format!("{:05}-{}-{}", job.line, short_uuid(&attempt.task_uuid), file_safe(image.image_uuid.as_str()));
            match self.saver.save(&image.output, &self.dir, &stem, job.task.fallback_ext()).await {
                Ok(saved) => Ok(saved.path.map(|p| p.display().to_string())),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_downloads_only_inline_images_are_written() {
        use runware_ws::protocol::SharedStr;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = ImageOutput::Url(SharedStr::from_static("https://im.runware.ai/x.jpg"));
        let inline = ImageOutput::Base64(SharedStr::from_static("aGk="));
        let (off, on) = (Saver::new(1, false).unwrap(), Saver::new(1, true).unwrap());
        assert!(!off.saves(&url) && off.saves(&inline));
        assert!(on.saves(&url) && on.saves(&inline));
    }

    #[test]
    fn names_are_safe_and_files_complete() {
        assert_eq!(file_safe("ab/../c d"), "ab_.._c_d".replace("..", "__"));
        let dir = std::env::temp_dir().join(format!("rw-dl-{}", uuid::Uuid::new_v4()));
        let png = b"\x89PNG\r\n\x1a\nrest";
        let p = write_atomic(&dir, "x", png, "jpg").unwrap();
        assert_eq!(p.extension().unwrap(), "png");
        let q = write_atomic(&dir, "y", b"unknown", "webp").unwrap();
        assert_eq!(q.extension().unwrap(), "webp");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
