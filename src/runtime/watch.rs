//! The watch behind every cache: a kind's objects in one scope as kube watcher
//! events (list, then watch from the list's version; resumed from the newest version
//! seen, listed again when the API server no longer holds it), so kube's backoff,
//! slimming and stores sit on it unchanged.
//!
//! It replaces kube's `watcher` for what a quiet watch holds, since the operator keeps
//! one open per kind per scope (some 7,000 with 500 busy namespaces): kube's holds an
//! 8 KiB line buffer for each, and its task keeps the list request's state inline,
//! about 6 KiB more. Here a quiet watch holds its version, the open response and the
//! unfinished tail of a line, if any; a list or a watch being opened is boxed only
//! while it runs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, stream::BoxStream};
use http_body_util::BodyExt;
use hyper::{body::Bytes, http};
use kube::{
    Client, ResourceExt,
    api::{ListParams, ObjectList, WatchEvent, WatchParams},
    client::Body,
    core::{Request, Status},
    runtime::watcher::{self, Event},
};
use serde::de::DeserializeOwned;

/// How long a watch may stay silent past the server-side timeout it asked for before
/// it is taken for dead and opened again (bookmarks arrive about once a minute).
const SILENCE_MARGIN: Duration = Duration::from_secs(30);

/// The longest watch event line accepted: well past the API server's own limit on an
/// object (about 3 MiB as JSON); a longer line ends the watch, which is opened again.
const MAX_LINE: usize = 16 << 20;

/// The events of the objects at `url` (a kind's path in one scope) that `config`
/// selects, as kube's `watcher` yields them. Errors are yielded too, and the stream
/// goes on after each: wrap it in a backoff.
/// `client` and `config` are shared (by every watch on a connection, by a kind's
/// watches): thousands of watches hold a pointer each, not a copy.
pub fn events<K>(client: Arc<Client>, url: String, config: Arc<watcher::Config>) -> impl Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: kube::Resource + Clone + DeserializeOwned + Send + 'static,
{
    let watch = Watch { source: Source { client, url, config }, queued: VecDeque::new(), phase: Phase::List };
    futures::stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await;
        Some((event, watch))
    })
}

struct Watch<K> {
    source: Source,
    /// A list's events, yielded one at a time.
    queued: VecDeque<Event<K>>,
    phase: Phase<K>,
}

/// What is watched, and where.
struct Source {
    client: Arc<Client>,
    url: String,
    config: Arc<watcher::Config>,
}

enum Phase<K> {
    /// Everything must be listed (first, or the version watched from is gone).
    List,
    /// Listed or watched up to this version; the watch must be opened.
    Open(String),
    /// Watching, last seen this version.
    Watching(String, BoxStream<'static, kube::Result<WatchEvent<K>>>),
}

impl<K> Watch<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Send + 'static,
{
    async fn next(&mut self) -> watcher::Result<Event<K>> {
        loop {
            if let Some(event) = pop_releasing(&mut self.queued) {
                return Ok(event);
            }
            match std::mem::replace(&mut self.phase, Phase::List) {
                Phase::List => {
                    let (objects, version) = Box::pin(self.source.list()).await?;
                    self.queued = std::iter::once(Event::Init)
                        .chain(objects.into_iter().map(Event::InitApply))
                        .chain(std::iter::once(Event::InitDone))
                        .collect();
                    self.phase = Phase::Open(version);
                }
                Phase::Open(version) => match Box::pin(self.source.open(&version)).await {
                    Ok(stream) => self.phase = Phase::Watching(version, stream),
                    Err(kube::Error::Api(status)) if status.code == 410 => return Err(watcher::Error::WatchError(status)),
                    Err(e) => {
                        self.phase = Phase::Open(version);
                        return Err(watcher::Error::WatchStartFailed(e));
                    }
                },
                Phase::Watching(version, mut stream) => {
                    let silence = Duration::from_secs(self.source.config.timeout.unwrap_or(290).into()) + SILENCE_MARGIN;
                    let (next, event) = match tokio::time::timeout(silence, stream.next()).await {
                        // Ended (the server-side timeout) or silent for too long: open it again.
                        Ok(None) | Err(_) => (Phase::Open(version), None),
                        Ok(Some(Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)))) => {
                            (Phase::Watching(object.resource_version().unwrap_or(version), stream), Some(Ok(Event::Apply(object))))
                        }
                        Ok(Some(Ok(WatchEvent::Deleted(object)))) => {
                            (Phase::Watching(object.resource_version().unwrap_or(version), stream), Some(Ok(Event::Delete(object))))
                        }
                        Ok(Some(Ok(WatchEvent::Bookmark(mark)))) => (Phase::Watching(mark.metadata.resource_version, stream), None),
                        // Gone: the version is older than the server keeps; list again.
                        Ok(Some(Ok(WatchEvent::Error(status)))) if status.code == 410 => {
                            (Phase::List, Some(Err(watcher::Error::WatchError(status))))
                        }
                        Ok(Some(Ok(WatchEvent::Error(status)))) => {
                            (Phase::Watching(version, stream), Some(Err(watcher::Error::WatchError(status))))
                        }
                        Ok(Some(Err(e))) => (Phase::Watching(version, stream), Some(Err(watcher::Error::WatchFailed(e)))),
                    };
                    self.phase = next;
                    if let Some(event) = event {
                        return event;
                    }
                }
            }
        }
    }
}

impl Source {
    /// Every object, page by page, and the version the list was read at.
    async fn list<K: DeserializeOwned + Clone>(&self) -> watcher::Result<(Vec<K>, String)> {
        let mut params = ListParams {
            label_selector: self.config.label_selector.clone(),
            field_selector: self.config.field_selector.clone(),
            ..Default::default()
        };
        if self.config.list_semantic == watcher::ListSemantic::Any {
            params = params.match_any();
        }
        params.limit = self.config.page_size;
        let (mut objects, mut version) = (Vec::new(), None);
        loop {
            let request =
                Request::new(&self.url).list(&params).map_err(|e| watcher::Error::InitialListFailed(kube::Error::BuildRequest(e)))?;
            let page: ObjectList<K> = self.client.request(request).await.map_err(watcher::Error::InitialListFailed)?;
            version = page.metadata.resource_version.filter(|v| !v.is_empty()).or(version);
            objects.extend(page.items);
            match page.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => params.continue_token = Some(token),
                None => break,
            }
        }
        Ok((objects, version.ok_or(watcher::Error::NoResourceVersion)?))
    }

    /// The watch from `version`, its events decoded line by line as they arrive.
    async fn open<K: DeserializeOwned + Send + 'static>(
        &self,
        version: &str,
    ) -> kube::Result<BoxStream<'static, kube::Result<WatchEvent<K>>>> {
        let params = WatchParams {
            label_selector: self.config.label_selector.clone(),
            field_selector: self.config.field_selector.clone(),
            timeout: self.config.timeout,
            bookmarks: self.config.bookmarks,
            send_initial_events: false,
        };
        let mut request = Request::new(&self.url).watch(&params, version).map_err(kube::Error::BuildRequest)?;
        // Some API servers compress a watch one gzip member per event, which the
        // client's decompression does not follow: ask for it plain.
        request.headers_mut().insert(http::header::ACCEPT_ENCODING, http::HeaderValue::from_static("identity"));
        let response = self.client.send(request.map(Body::from)).await?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        Ok(decoded(response.into_body().into_data_stream()).boxed())
    }
}

/// The API server's refusal to open a watch, as kube reports any refused request.
async fn refusal(response: http::Response<Body>) -> kube::Error {
    let code = response.status().as_u16();
    let body: Bytes = match response.into_body().collect_bytes().await {
        Ok(body) => body,
        Err(e) => return e,
    };
    let status = serde_json::from_slice::<Status>(&body)
        .unwrap_or_else(|_| Status::failure(String::from_utf8_lossy(&body).trim(), "Failed to parse error data").with_code(code));
    kube::Error::Api(Box::new(status))
}

/// The watch events in a response body: one JSON object per line, a line split over
/// chunks or a chunk holding several.
fn decoded<K: DeserializeOwned + Send + 'static>(
    chunks: impl Stream<Item = kube::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = kube::Result<WatchEvent<K>>> + Send + 'static {
    let state = (chunks.boxed(), Lines::default(), VecDeque::new());
    futures::stream::unfold(state, |(mut chunks, mut lines, mut ready)| async move {
        loop {
            if let Some(event) = pop_releasing(&mut ready) {
                return Some((event, (chunks, lines, ready)));
            }
            let chunk = match chunks.next().await? {
                Ok(chunk) => chunk,
                // The connection broke: the watch ends here and is opened again (a
                // broken body may never end, or fail again, if read on).
                Err(e) => return Some((Err(e), (futures::stream::empty().boxed(), lines, ready))),
            };
            let fed = lines.feed(&chunk, |line| ready.push_back(serde_json::from_slice(line).map_err(kube::Error::SerdeError)));
            if fed.is_err() {
                let too_long = std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a watch event line over {MAX_LINE} bytes"));
                return Some((Err(kube::Error::ReadEvents(too_long)), (futures::stream::empty().boxed(), lines, ready)));
            }
        }
    })
}

/// The front of `queue`, its allocation given back once it is empty: a queue that
/// held a list or a chunk's events would otherwise keep room for them (kilobytes
/// each) for as long as the watch runs.
fn pop_releasing<T>(queue: &mut VecDeque<T>) -> Option<T> {
    let front = queue.pop_front();
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
    front
}

/// Splits a byte stream into lines, holding only an unfinished line between chunks
/// (and nothing once it is finished).
#[derive(Default)]
struct Lines {
    unfinished: Vec<u8>,
}

struct LineTooLong;

impl Lines {
    /// Hands `each` every line `chunk` finishes (empty lines skipped).
    fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(&[u8])) -> Result<(), LineTooLong> {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (line, after) = (&rest[..end], &rest[end + 1..]);
            if self.unfinished.is_empty() {
                if !line.is_empty() {
                    each(line);
                }
            } else {
                self.unfinished.extend_from_slice(line);
                each(&std::mem::take(&mut self.unfinished));
            }
            rest = after;
        }
        if self.unfinished.len() + rest.len() > MAX_LINE {
            self.unfinished = Vec::new();
            return Err(LineTooLong);
        }
        self.unfinished.extend_from_slice(rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn lines_of(chunks: &[&str]) -> Vec<String> {
        let mut lines = Lines::default();
        let mut seen = Vec::new();
        for chunk in chunks {
            assert!(lines.feed(chunk.as_bytes(), |l| seen.push(String::from_utf8(l.to_vec()).unwrap())).is_ok());
        }
        seen
    }

    #[test]
    fn lines_split_over_chunks_or_sharing_one_come_out_whole() {
        assert_eq!(lines_of(&["{\"a\":1}\n"]), ["{\"a\":1}"]);
        assert_eq!(lines_of(&["{\"a\"", ":1}\n{\"b\":", "2}\n"]), ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(lines_of(&["one\ntwo\n\nthree"]), ["one", "two"], "an unfinished line waits for its end");
        assert_eq!(lines_of(&["one\ntw", "o\nthree", "\n"]), ["one", "two", "three"]);
    }

    #[test]
    fn a_drained_queue_holds_no_room() {
        let mut queue: VecDeque<u32> = (0..3).collect();
        assert_eq!((pop_releasing(&mut queue), pop_releasing(&mut queue)), (Some(0), Some(1)));
        assert!(queue.capacity() > 0);
        assert_eq!(pop_releasing(&mut queue), Some(2));
        assert_eq!((queue.capacity(), pop_releasing(&mut queue)), (0, None));
    }

    #[test]
    fn a_finished_line_leaves_nothing_held_and_an_endless_one_is_refused() {
        let mut lines = Lines::default();
        assert!(lines.feed(b"{\"half", |_| {}).is_ok());
        assert!(lines.feed(b"\":1}\n", |_| {}).is_ok());
        assert_eq!(lines.unfinished.capacity(), 0, "nothing held once the line is out");
        let big = vec![b'x'; MAX_LINE / 2 + 1];
        assert!(lines.feed(&big, |_| {}).is_ok());
        assert!(lines.feed(&big, |_| {}).is_err());
        assert!(lines.unfinished.is_empty());
    }

    fn configmap(name: &str, version: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "a", "resourceVersion": version}})
    }

    /// A list, a watch whose lines arrive split, a bookmark, the version gone, a
    /// list again, a connection broken mid-watch: the events kube's watcher would
    /// yield, and the requests it would make.
    #[tokio::test]
    async fn it_lists_watches_from_the_list_version_resumes_and_lists_again_when_gone() {
        type Chunks = http_body_util::StreamBody<BoxStream<'static, Result<hyper::body::Frame<Bytes>, std::io::Error>>>;
        let (service, mut handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Chunks>>();
        let served = tokio::spawn(async move {
            let mut asked = Vec::new();
            let line = |event: serde_json::Value| format!("{event}\n");
            let answers: Vec<(u16, Vec<String>)> = vec![
                (200, vec![json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": "10"}, "items": [configmap("one", "9")]}).to_string()]),
                (200, {
                    let added = line(json!({"type": "ADDED", "object": configmap("two", "11")}));
                    let (head, tail) = added.split_at(20);
                    vec![head.into(), tail.into(), line(json!({"type": "BOOKMARK", "object": {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"resourceVersion": "15"}}}))]
                }),
                (200, vec![line(json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired", "message": "too old"}}))]),
                (200, vec![json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": "20"}, "items": [configmap("two", "11")]}).to_string()]),
                // The connection breaks after one event; what follows is never read.
                (200, vec![line(json!({"type": "MODIFIED", "object": configmap("two", "21")})), "BREAK".into(), line(json!({"type": "DELETED", "object": configmap("two", "22")}))]),
                (200, vec![]),
            ];
            for (code, chunks) in answers {
                let (request, send) = handle.next_request().await.unwrap();
                asked.push(request.uri().to_string());
                let frame = |c: String| match c.as_str() {
                    "BREAK" => Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset")),
                    _ => Ok(hyper::body::Frame::data(Bytes::from(c))),
                };
                let chunks = futures::stream::iter(chunks.into_iter().map(frame)).boxed();
                send.send_response(http::Response::builder().status(code).body(http_body_util::StreamBody::new(chunks)).unwrap());
            }
            asked
        });
        let client = Client::new(service, "default");
        let stream = events::<ConfigMap>(Arc::new(client), "/api/v1/namespaces/a/configmaps".into(), Arc::default());
        let seen: Vec<String> = stream
            .take(11)
            .map(|event| match event {
                Ok(Event::Init) => "init".to_string(),
                Ok(Event::InitApply(o)) => format!("listed {}", o.metadata.name.unwrap()),
                Ok(Event::InitDone) => "listed".to_string(),
                Ok(Event::Apply(o)) => format!("applied {}", o.metadata.name.unwrap()),
                Ok(Event::Delete(o)) => format!("deleted {}", o.metadata.name.unwrap()),
                Err(e) => format!("error {e}"),
            })
            .collect()
            .await;
        assert_eq!(seen[..4], ["init", "listed one", "listed", "applied two"]);
        assert!(seen[4].starts_with("error") && seen[4].contains("too old"), "{seen:?}");
        assert_eq!(seen[5..8], ["init", "listed two", "listed"][..]);
        assert_eq!(seen[8], "applied two");
        assert!(seen[9].starts_with("error") && seen[9].contains("connection reset"), "{seen:?}");
        assert!(seen[10].starts_with("error"), "the mock answers no more: {seen:?}");
        let asked = served.await.unwrap();
        assert!(!asked[0].contains("watch=true") && asked[0].contains("limit=500"), "a list, in pages: {asked:?}");
        assert!(
            asked[1].contains("watch=true") && asked[1].contains("resourceVersion=10") && asked[1].contains("allowWatchBookmarks=true"),
            "{asked:?}"
        );
        assert!(asked[2].contains("watch=true") && asked[2].contains("resourceVersion=15"), "resumed from the bookmark: {asked:?}");
        assert!(!asked[3].contains("watch=true"), "listed again once the version is gone: {asked:?}");
        assert!(asked[4].contains("watch=true") && asked[4].contains("resourceVersion=20"), "{asked:?}");
        assert!(
            asked[5].contains("watch=true") && asked[5].contains("resourceVersion=21"),
            "opened again from the last event's version: {asked:?}"
        );
        assert_eq!(asked.len(), 6);
    }
}
