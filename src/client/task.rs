//! What a caller holds while its task runs: a [`TaskStream`] of raw result items,
//! or a [`KontextStream`] of typed images. Dropping either cancels the task
//! locally and frees its in-flight slot.

use super::Client;
use super::error::{ClientError, PartialFailure};
use super::mailbox::{Event, Mailbox};
use crate::protocol::{ResultItem, SharedStr};
use base64::Engine as _;
use futures::Stream;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use uuid::Uuid;

/// The results of one task as they arrive; ends after the last one, or with an error.
///
/// Each result is yielded once (duplicates are dropped by the dispatcher).
#[must_use = "a task is cancelled when its stream is dropped"]
pub struct TaskStream {
    pub(crate) client: Client,
    pub(crate) uuid: Uuid,
    pub(crate) expected: u32,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) done: bool,
}

impl std::fmt::Debug for TaskStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskStream").field("task_uuid", &self.uuid).field("expected", &self.expected).finish()
    }
}

impl TaskStream {
    /// The task's UUID.
    pub fn task_uuid(&self) -> Uuid {
        self.uuid
    }

    /// How many results complete the task.
    pub fn expected(&self) -> u32 {
        self.expected
    }

    /// Waits for every result (what awaiting the stream does). A failure keeps the
    /// results received before it.
    pub fn collect_all(self) -> Collect<ResultItem> {
        Collect::new(self, Ok)
    }

    /// The same task's results as typed Kontext images.
    pub fn images(self) -> KontextStream {
        KontextStream { inner: self }
    }

    /// The next result, straight from the mailbox (what `poll_next` yields, without
    /// the stream adapters' layers, each of which would move the item again).
    pub(crate) async fn next_result(&mut self) -> Option<Result<ResultItem, ClientError>> {
        if self.done {
            return None;
        }
        let event = std::future::poll_fn(|cx| self.mailbox.poll_pop(cx)).await;
        self.on_event(event)
    }

    fn on_event(&mut self, event: Event) -> Option<Result<ResultItem, ClientError>> {
        match event {
            Event::Result(item) => Some(Ok(item)),
            Event::Done => {
                self.done = true;
                None
            }
            Event::Failed(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl Stream for TaskStream {
    type Item = Result<ResultItem, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(event) = self.mailbox.poll_pop(cx) {
            return Poll::Ready(self.on_event(event));
        }
        // The deadline keeper fails the task through the mailbox when it is overdue.
        Poll::Pending
    }
}

impl IntoFuture for TaskStream {
    type Output = Result<Vec<ResultItem>, PartialFailure<ResultItem>>;
    type IntoFuture = Collect<ResultItem>;

    /// Awaiting a `TaskStream` waits for all its results.
    fn into_future(self) -> Collect<ResultItem> {
        self.collect_all()
    }
}

/// Every result of a task, awaited: a [`TaskStream`] or [`KontextStream`] `.await`ed
/// (or `collect_all()`). A failure keeps the results received before it
/// ([`PartialFailure`]). Dropping it cancels the task.
#[must_use = "futures do nothing unless polled"]
pub struct Collect<T> {
    stream: TaskStream,
    out: Vec<T>,
    decode: fn(ResultItem) -> Result<T, ClientError>,
}

impl<T> std::fmt::Debug for Collect<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collect").field("task_uuid", &self.stream.uuid).field("received", &self.out.len()).finish()
    }
}

// Nothing in a `Collect` is pinned: its results are plain values it moves out.
impl<T> Unpin for Collect<T> {}

impl<T> Collect<T> {
    fn new(stream: TaskStream, decode: fn(ResultItem) -> Result<T, ClientError>) -> Collect<T> {
        Collect { out: Vec::with_capacity(stream.expected as usize), stream, decode }
    }
}

impl<T> Future for Collect<T> {
    type Output = Result<Vec<T>, PartialFailure<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            if this.stream.done {
                return Poll::Ready(Ok(std::mem::take(&mut this.out)));
            }
            let event = std::task::ready!(this.stream.mailbox.poll_pop(cx));
            let error = match this.stream.on_event(event) {
                None => return Poll::Ready(Ok(std::mem::take(&mut this.out))),
                Some(Ok(item)) => match (this.decode)(item) {
                    Ok(v) => {
                        this.out.push(v);
                        continue;
                    }
                    Err(error) => error,
                },
                Some(Err(error)) => error,
            };
            return Poll::Ready(Err(PartialFailure { received: std::mem::take(&mut this.out), error }));
        }
    }
}

impl Drop for TaskStream {
    fn drop(&mut self) {
        if !self.done {
            self.client.inner.shared.cancel(&self.uuid);
        }
    }
}

/// Where an image is.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageOutput {
    /// `imageURL`
    Url(SharedStr),
    /// `imageBase64Data`
    Base64(SharedStr),
    /// `imageDataURI`
    DataUri(SharedStr),
}

impl ImageOutput {
    /// The image bytes, for base64 and data-URI outputs (`None` for URLs).
    pub fn decode(&self) -> Option<Result<Vec<u8>, base64::DecodeError>> {
        let b64 = match self {
            ImageOutput::Url(_) => return None,
            ImageOutput::Base64(s) => s.as_str(),
            ImageOutput::DataUri(s) => s.split_once(',').map(|(_, d)| d).unwrap_or(""),
        };
        Some(base64::engine::general_purpose::STANDARD.decode(b64))
    }
}

/// One image of a Kontext task.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageResult {
    /// The task.
    pub task_uuid: Uuid,
    /// The image.
    pub image_uuid: SharedStr,
    /// URL, base64 data or data URI.
    pub output: ImageOutput,
    /// The seed used.
    pub seed: Option<u64>,
    /// Cost in USD, when `includeCost` was set.
    pub cost: Option<f64>,
    /// NSFW flag.
    pub nsfw_content: Option<bool>,
    /// The item as received, with any field this type does not model.
    pub item: ResultItem,
}

impl TryFrom<ResultItem> for ImageResult {
    type Error = ClientError;
    fn try_from(item: ResultItem) -> Result<Self, ClientError> {
        let output = if let Some(u) = &item.image_url {
            ImageOutput::Url(u.clone())
        } else if let Some(b) = &item.image_base64_data {
            ImageOutput::Base64(b.clone())
        } else if let Some(d) = &item.image_data_uri {
            ImageOutput::DataUri(d.clone())
        } else {
            return Err(ClientError::Protocol("image result without imageURL, imageBase64Data or imageDataURI".into()));
        };
        let (Some(task_uuid), Some(image_uuid)) = (item.task_uuid, item.image_uuid.clone()) else {
            return Err(ClientError::Protocol("image result without taskUUID or imageUUID".into()));
        };
        Ok(ImageResult {
            task_uuid,
            image_uuid,
            output,
            seed: item.seed,
            cost: item.cost,
            nsfw_content: item.nsfw_content,
            item,
        })
    }
}

/// The images of one Kontext task as they arrive.
#[must_use = "a task is cancelled when its stream is dropped"]
#[derive(Debug)]
pub struct KontextStream {
    pub(crate) inner: TaskStream,
}

impl KontextStream {
    /// The task's UUID.
    pub fn task_uuid(&self) -> Uuid {
        self.inner.uuid
    }

    /// How many images complete the task.
    pub fn expected(&self) -> u32 {
        self.inner.expected
    }

    /// Waits for every image (what awaiting the stream does). A failure keeps the
    /// images received before it.
    pub fn collect_all(self) -> Collect<ImageResult> {
        Collect::new(self.inner, ImageResult::try_from)
    }
}

impl IntoFuture for KontextStream {
    type Output = Result<Vec<ImageResult>, PartialFailure<ImageResult>>;
    type IntoFuture = Collect<ImageResult>;

    /// Awaiting a `KontextStream` waits for all its images.
    fn into_future(self) -> Collect<ImageResult> {
        self.collect_all()
    }
}

impl Stream for KontextStream {
    type Item = Result<ImageResult, ClientError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|o| o.map(|r| r.and_then(ImageResult::try_from)))
    }
}
