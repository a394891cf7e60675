//! One watch per kind per scope, for the life of the process, read by every
//! controller and by the webhook. A `Cache` is a reflector store fed by one watch,
//! plus a fan-out of what the watch touches, so any number of controllers can be
//! triggered by it without opening a watch of their own.
//!
//! Caches run on every replica, leader or not: the webhook reads them, and a replica
//! that wins the lease starts its controllers on warm caches instead of listing
//! everything again.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::{
    broadcast::{self, error::RecvError},
    watch,
};
use tracing::warn;

use super::metrics::Metrics;

/// How many touched objects wait for a slow reader before it lags, for the kinds a
/// scope holds many of, changing often (MCPServers and what the operator makes for
/// them). A reader that lags is handed the whole cache again: it is triggered for
/// more, never for less.
pub const BUSY: usize = 128;
/// The same for kinds a scope holds few of, changing rarely (groups, entries, remote
/// proxies, configuration kinds, VirtualMCPServers, EmbeddingServers). Every slot is
/// allocated up front, per kind and scope: with 100 allowed namespaces the smaller
/// buffer saves about 4 MiB, and a burst past it costs reconciles, not writes.
pub const RARE: usize = 16;
/// `BUSY` for a scope that is one namespace (namespace mode): what a reader that
/// lags is handed again is that namespace's objects only, a few dozen, and with
/// hundreds of allowed namespaces the slots of nine busy kinds each would cost
/// megabytes.
pub const NAMESPACE_BUSY: usize = 32;

/// The buffer for a busy kind in the scope `namespace` (None: the cluster).
pub const fn busy(namespace: Option<&str>) -> usize {
    if namespace.is_some() { NAMESPACE_BUSY } else { BUSY }
}

#[cfg(test)]
const CHANGE_BUFFER: usize = BUSY;

/// How long whoever needs a cache waits for its first list before going on without
/// it (a kind whose CRD is missing never lists).
pub const FIRST_LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A kind the operator caches: any namespaced Kubernetes object type.
pub trait Cached:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Cached for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// `Api` for the whole cluster (`ns` None) or one namespace.
pub fn scoped<K: Cached>(client: &Client, ns: Option<&str>) -> Api<K> {
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Starts a cache's watch.
type StartWatch = Box<dyn FnOnce() + Send>;

/// A watched kind in one scope: its store and the stream of what the watch touches.
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    changes: broadcast::Sender<Arc<K>>,
    /// The watch, until something starts it (`watch`).
    unstarted: Arc<Mutex<Option<StartWatch>>>,
    /// True once the first list is in the store. (kube's `Store::wait_until_ready`
    /// wakes only the last of several tasks waiting at once, and a cache not started yet may
    /// be waited on for hours by many.)
    has_listed: watch::Receiver<bool>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            changes: self.changes.clone(),
            unstarted: self.unstarted.clone(),
            has_listed: self.has_listed.clone(),
        }
    }
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// A cache of `api`'s objects, its watch started when something asks for it
    /// (`watch`, or `started` at once) and then retried with backoff for the life of
    /// the process; until then it is empty and not `ready`, so what a scope needs only
    /// once it holds work costs an idle namespace nothing. `slim` drops what no reader
    /// needs before an object is stored; `buffer` is `busy(..)` or `RARE`.
    pub fn new(
        api: Api<K>,
        config: watcher::Config,
        slim: impl FnMut(&mut K) + Send + 'static,
        plural: &str,
        metrics: &Metrics,
        buffer: usize,
    ) -> Self {
        let (changes, _) = broadcast::channel(buffer);
        let (store, writer) = reflector::store();
        let (listed, has_listed) = watch::channel(false);
        let start = {
            let (changes, reader, plural, metrics) = (changes.clone(), store.clone(), plural.to_string(), metrics.clone());
            move || drop(feed(api, config, slim, &plural, &metrics, Fed { changes, writer, reader, listed }))
        };
        Self { store, changes, unstarted: Arc::new(Mutex::new(Some(Box::new(start)))), has_listed }
    }

    /// Starts the watch, if it has not started; it then runs for the life of the process.
    pub fn watch(&self) {
        if let Some(start) = self.unstarted.lock().take() {
            start();
        }
    }

    /// The store, its watch started if it was not, once it has listed or
    /// `FIRST_LIST_WAIT` has passed (a kind whose CRD is missing never lists: what it
    /// would hold reads as not found, and the caller goes on).
    pub async fn watched(&self) -> &Store<K> {
        self.watch();
        if tokio::time::timeout(FIRST_LIST_WAIT, self.ready()).await.is_err() {
            warn!(kind = %K::plural(&()), "not listed yet (is its CRD installed?); going on without it");
        }
        &self.store
    }

    /// The cache with its watch started.
    pub fn started(self) -> Self {
        self.watch();
        self
    }

    /// A cache fed by hand (tests): `ready` once `store` is.
    #[cfg(test)]
    pub fn from_store(store: Store<K>) -> Self {
        let (listed, has_listed) = watch::channel(false);
        let reader = store.clone();
        tokio::spawn(async move {
            if reader.wait_until_ready().await.is_ok() {
                listed.send_replace(true);
            }
        });
        Self { store, changes: broadcast::channel(BUSY).0, unstarted: Arc::default(), has_listed }
    }

    /// A cache holding `objects` as a watch that has listed them would (tests; no watch).
    #[cfg(test)]
    pub fn listed(objects: impl IntoIterator<Item = K>) -> Self {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        Self { store, changes: broadcast::channel(BUSY).0, unstarted: Arc::default(), has_listed: watch::channel(true).1 }
    }

    /// Announces `object` as touched by the watch (tests feeding a cache by hand).
    pub fn touched(&self, object: Arc<K>) {
        drop(self.changes.send(object));
    }

    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// How many change streams are subscribed (tests: a stream made but not read
    /// holds every change sent after it until it is read or dropped).
    #[cfg(test)]
    pub fn subscribers(&self) -> usize {
        self.changes.receiver_count()
    }

    /// Every object the watch touches (applied or deleted) from now on.
    pub fn changes(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let store = self.store.clone();
        changes_from(self.changes.subscribe(), move || store.state())
    }

    /// Every cached object once the cache has listed, then every change: what a
    /// controller that starts now must look at.
    pub fn everything_then_changes(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        // Subscribed before the snapshot: a change in between is seen (twice at worst).
        let changes = self.changes();
        let (store, cache) = (self.store.clone(), self.clone());
        futures::stream::once(async move {
            cache.ready().await;
            futures::stream::iter(store.state())
        })
        .flatten()
        .chain(changes)
    }

    /// Resolves once the first list is in the store.
    pub async fn ready(&self) {
        let mut has_listed = self.has_listed.clone();
        // An error: the watch is gone (never, while the process runs).
        let _ = has_listed.wait_for(|listed| *listed).await;
    }

    /// Runs the controller `start` makes once the cache holds an object, unless
    /// `shutdown` resolves first: a scope with nothing of a kind runs no controller
    /// for it, and holds only this wait (the controller's state is allocated when it
    /// starts, not reserved in every idle scope).
    pub async fn when_first<F: std::future::Future<Output = ()>>(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
        start: impl FnOnce() -> F,
    ) {
        tokio::select! {
            _ = self.first_object() => Box::pin(start()).await,
            _ = shutdown => {}
        }
    }

    /// Resolves once the cache holds an object (at once if it already does): the
    /// MCPServer controller waits for this, so a scope without a server does not
    /// watch what servers make.
    pub async fn first_object(&self) {
        let mut changes = std::pin::pin!(self.changes());
        self.ready().await;
        if self.store.state().is_empty() {
            let _ = changes.next().await;
        }
    }
}

/// Starts a watch of `api` into a new store, announcing what it touches on `changes`;
/// retried with backoff until the task is aborted. The receiver turns true once the
/// store has listed.
pub(super) fn watch_into<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: impl FnMut(&mut K) + Send + 'static,
    plural: &str,
    metrics: &Metrics,
    changes: broadcast::Sender<Arc<K>>,
) -> (Store<K>, tokio::task::JoinHandle<()>, watch::Receiver<bool>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let (listed, has_listed) = watch::channel(false);
    let task = feed(api, config, slim, plural, metrics, Fed { changes, writer, reader: reader.clone(), listed });
    (reader, task, has_listed)
}

/// What a watch feeds: the store (written through `writer`, read through `reader`),
/// the announcements of what it touches, and whether it has listed.
struct Fed<K: Resource<DynamicType = ()> + Clone + 'static> {
    changes: broadcast::Sender<Arc<K>>,
    writer: reflector::store::Writer<K>,
    reader: Store<K>,
    listed: watch::Sender<bool>,
}

/// Spawns the watch of `api` that feeds `fed`; retried with backoff until aborted.
fn feed<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: impl FnMut(&mut K) + Send + 'static,
    plural: &str,
    metrics: &Metrics,
    fed: Fed<K>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let restarts = metrics.watch_restarts.with_label_values(&[plural]);
    let Fed { changes, writer, reader, listed } = fed;
    let url = api.resource_url().to_string();
    let stream = super::watch::events(api.into_client(), url, config)
        .inspect_err(move |_| restarts.inc())
        .default_backoff()
        .modify(slim)
        .reflect(writer);
    let plural = plural.to_string();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        let mut before_relist = Vec::new();
        while let Some(event) = stream.next().await {
            match event {
                // No reader is fine: the store is the truth, changes are only triggers.
                Ok(event) => {
                    if matches!(event, watcher::Event::InitDone) {
                        listed.send_if_modified(|listed| !std::mem::replace(listed, true));
                    }
                    for object in touched(&event, &reader, &mut before_relist) {
                        drop(changes.send(object));
                    }
                }
                Err(e) => warn!(kind = %plural, error = %e, "watch failed; retrying"),
            }
        }
    })
}

/// What a watcher event, already applied to `store`, touched: announced only once it
/// is in the store, since a reader looks an announced object up there. A (re)list is
/// buffered by the store and swapped in whole at its end, so its objects are announced
/// then, with those that were cached before it and are gone after it (deleted while
/// the watch was down: whoever counted them must look again). `before_relist` holds
/// the store as it was when the list began.
fn touched<K>(event: &watcher::Event<K>, store: &Store<K>, before_relist: &mut Vec<Arc<K>>) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    match event {
        watcher::Event::Apply(object) | watcher::Event::Delete(object) => vec![Arc::new(object.clone())],
        watcher::Event::Init => {
            *before_relist = store.state();
            Vec::new()
        }
        watcher::Event::InitApply(_) => Vec::new(),
        watcher::Event::InitDone => {
            let listed = store.state();
            let gone: Vec<Arc<K>> = std::mem::take(before_relist)
                .into_iter()
                .filter(|old| store.get(&reflector::ObjectRef::from_obj(old.as_ref())).is_none())
                .collect();
            listed.into_iter().chain(gone).collect()
        }
    }
}

/// What `rx` announces; a reader that lags is handed `everything()` again: it is
/// triggered for more, never for less.
pub(super) fn changes_from<K>(
    rx: broadcast::Receiver<Arc<K>>,
    everything: impl Fn() -> Vec<Arc<K>> + Send + 'static,
) -> impl Stream<Item = Arc<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    futures::stream::unfold((rx, everything, VecDeque::new()), |(mut rx, everything, mut backlog)| async move {
        loop {
            if let Some(object) = backlog.pop_front() {
                return Some((object, (rx, everything, backlog)));
            }
            match rx.recv().await {
                Ok(object) => return Some((object, (rx, everything, backlog))),
                Err(RecvError::Lagged(missed)) => {
                    warn!(kind = %K::plural(&()), missed, "a reader fell behind the watch; it is given every cached object again");
                    backlog.extend(everything());
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn configmap(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), namespace: Some("a".into()), ..Default::default() },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_controller_waiting_for_its_first_object_starts_on_it_and_not_before() {
        let holding = Cache::listed([configmap("one")]);
        tokio::time::timeout(std::time::Duration::from_secs(1), holding.first_object()).await.expect("an object is already there");

        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let empty = Cache::from_store(store);
        let mut waiting = Box::pin(empty.first_object());
        assert!(futures::poll!(waiting.as_mut()).is_pending(), "an empty scope starts no controller");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        let created = configmap("created");
        writer.apply_watcher_event(&watcher::Event::Apply(created.clone()));
        empty.touched(Arc::new(created));
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting).await.expect("the first object starts it");
    }

    #[tokio::test]
    async fn a_late_reader_sees_everything_then_changes_and_a_lagging_one_sees_everything_again() {
        let cache = Cache::listed([configmap("one")]);
        let mut reader = Box::pin(cache.everything_then_changes());
        assert_eq!(reader.next().await.unwrap().metadata.name.as_deref(), Some("one"));
        drop(cache.changes.send(Arc::new(configmap("two"))));
        assert_eq!(reader.next().await.unwrap().metadata.name.as_deref(), Some("two"));

        let mut lagging = Box::pin(cache.changes());
        for i in 0..CHANGE_BUFFER + 5 {
            drop(cache.changes.send(Arc::new(configmap(&format!("burst-{i}")))));
        }
        // Lagged: the whole cache (one object here) comes first, then the newest changes.
        assert_eq!(lagging.next().await.unwrap().metadata.name.as_deref(), Some("one"));
        assert!(lagging.next().await.unwrap().metadata.name.as_deref().unwrap().starts_with("burst-"));
    }

    fn names(objects: &[Arc<ConfigMap>]) -> Vec<String> {
        let mut names: Vec<String> = objects.iter().map(|o| o.metadata.name.clone().unwrap()).collect();
        names.sort();
        names
    }

    /// An object made while the watch was down arrives in a relist; announced before
    /// the store swaps the list in, a controller would look it up, miss it and drop it
    /// for good.
    #[test]
    fn a_relist_is_announced_once_it_is_in_the_store_with_what_it_no_longer_holds() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let mut before = Vec::new();
        let mut feed = |event: watcher::Event<ConfigMap>, before: &mut Vec<Arc<ConfigMap>>| {
            writer.apply_watcher_event(&event);
            touched(&event, &store, before)
        };
        assert!(feed(watcher::Event::Init, &mut before).is_empty());
        assert!(feed(watcher::Event::InitApply(configmap("kept")), &mut before).is_empty());
        assert!(feed(watcher::Event::InitApply(configmap("deleted-in-outage")), &mut before).is_empty());
        assert_eq!(names(&feed(watcher::Event::InitDone, &mut before)), ["deleted-in-outage", "kept"]);
        assert_eq!(names(&feed(watcher::Event::Apply(configmap("edited")), &mut before)), ["edited"]);

        // The watch expires; the relist holds a new object and lacks a deleted one.
        assert!(feed(watcher::Event::Init, &mut before).is_empty());
        for object in ["kept", "edited", "made-in-outage"] {
            assert!(feed(watcher::Event::InitApply(configmap(object)), &mut before).is_empty());
        }
        assert!(store.get(&reflector::ObjectRef::from_obj(&configmap("made-in-outage"))).is_none(), "not in the store yet");
        let announced = feed(watcher::Event::InitDone, &mut before);
        assert_eq!(names(&announced), ["deleted-in-outage", "edited", "kept", "made-in-outage"]);
        for object in announced.iter().filter(|o| o.metadata.name.as_deref() != Some("deleted-in-outage")) {
            assert!(
                store.get(&reflector::ObjectRef::from_obj(object.as_ref())).is_some(),
                "{:?} announced before it is cached",
                object.metadata.name
            );
        }
        assert!(before.is_empty(), "the snapshot is not kept past the relist");
    }

    /// What an idle namespace does not need costs it no request until something asks
    /// for it; then it lists, and everyone waiting on it wakes.
    #[tokio::test]
    async fn a_deferred_cache_asks_nothing_until_watched_then_lists() {
        let (client, calls) = crate::runtime::mock::mock_api(serde_json::json!({}));
        let api: Api<ConfigMap> = Api::namespaced(client, "a");
        let cache = Cache::new(api, watcher::Config::default(), |_| {}, "configmaps", &Metrics::default(), RARE);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.ready().await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(calls.lock().unwrap().is_empty(), "no request before it is watched");
        assert!(waiters.iter().all(|w| !w.is_finished()), "not ready before it has listed");

        cache.watch();
        cache.watch();
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(2), waiter).await.expect("every waiter wakes").unwrap();
        }
        let calls = calls.lock().unwrap();
        let (method, path, _) = &calls[0];
        assert_eq!((method.as_str(), path.split('?').next().unwrap()), ("GET", "/api/v1/namespaces/a/configmaps"), "{calls:?}");
    }

    #[tokio::test]
    async fn every_task_waiting_for_the_first_list_sees_it() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let cache = Cache::from_store(store);
        // Several waiters at once, as the webhook and a controller wait on one store.
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.ready().await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(2), waiter).await.expect("every waiter wakes").unwrap();
        }
    }
}
