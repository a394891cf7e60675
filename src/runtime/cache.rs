//! One store per kind for the whole install, read by every controller and by the
//! webhook, fed by one watch per scope: the cluster, or each allowed namespace. A
//! `Cache` is that store, the watches feeding it (all driven by one task per kind),
//! and a fan-out of what they touch, so any number of controllers can be triggered
//! by it without opening a watch of their own.
//!
//! A namespace's relist replaces that namespace's objects only: what it lists is
//! applied, and what the namespace held before and the list lacks is deleted (kube's
//! reflector would replace the whole store, dropping every other namespace's).
//!
//! Caches run on every replica, leader or not: the webhook reads them, and a replica
//! that wins the lease starts its controllers on warm caches instead of listing
//! everything again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt, TryStreamExt, stream::BoxStream};
use kube::{
    Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::{
    broadcast::{self, error::RecvError},
    mpsc, watch,
};
use tracing::warn;

use super::metrics::Metrics;
use super::watch_client::WatchConnections;

/// How many touched objects wait for a slow reader before it lags, for the kinds the
/// install holds many of, changing often (MCPServers and what the operator makes for
/// them). A reader that lags is handed the whole cache again: it is triggered for
/// more, never for less.
pub const BUSY: usize = 128;
/// The same for kinds the install holds few of, changing rarely (groups, entries,
/// remote proxies, configuration kinds, VirtualMCPServers, EmbeddingServers): a burst
/// past it costs reconciles, not writes.
pub const RARE: usize = 32;

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

/// Where the install watches: the whole cluster, or each allowed namespace; and the
/// connections the watches go through.
pub struct Scopes {
    /// None: the cluster (then the only entry).
    each: Vec<Option<String>>,
    index: HashMap<String, usize>,
    connections: Arc<WatchConnections>,
}

impl Scopes {
    /// `namespaces` (None: the cluster), watched through `connections`.
    pub fn new(namespaces: Vec<Option<String>>, connections: Arc<WatchConnections>) -> Arc<Self> {
        let index = namespaces.iter().enumerate().filter_map(|(i, ns)| Some((ns.clone()?, i))).collect();
        Arc::new(Self { each: namespaces, index, connections })
    }

    /// No scope at all (caches filled by hand in tests).
    #[cfg(test)]
    pub fn none() -> Arc<Self> {
        Self::new(Vec::new(), WatchConnections::none())
    }

    /// The scope that holds `ns`'s objects, if the install serves it.
    fn of(&self, ns: &str) -> Option<usize> {
        match self.each.first() {
            Some(None) => Some(0),
            _ => self.index.get(ns).copied(),
        }
    }

    /// `ns` alone, watched through the same connections: empty when the install
    /// does not serve it.
    pub fn only(&self, ns: &str) -> Arc<Self> {
        let served = self.of(ns).map(|_| Some(ns.to_string()));
        Self::new(served.into_iter().collect(), self.connections.clone())
    }

    pub fn len(&self) -> usize {
        self.each.len()
    }

    pub fn is_empty(&self) -> bool {
        self.each.is_empty()
    }
}

/// What a cache strips from an object before storing it.
type Slim<K> = Arc<dyn Fn(&mut K) + Send + Sync>;
/// One scope's watch events, tagged with the scope's index.
type ScopeEvents<K> = BoxStream<'static, (usize, watcher::Result<watcher::Event<K>>)>;

/// A watched kind: its store, the stream of what its watches touch, and its watches,
/// each started when something first needs its scope.
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    changes: broadcast::Sender<Arc<K>>,
    watches: Arc<Watches<K>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self { store: self.store.clone(), changes: self.changes.clone(), watches: self.watches.clone() }
    }
}

/// A cache's watches, one per scope.
struct Watches<K: Resource<DynamicType = ()> + Clone + 'static> {
    scopes: Arc<Scopes>,
    /// Per scope: whether its watch has started.
    started: Vec<AtomicBool>,
    listed: Arc<Listed>,
    feeder: Mutex<Feeder<K>>,
    config: Arc<watcher::Config>,
    plural: String,
    metrics: Metrics,
}

/// Per scope: whether its watch has listed (set by the feeding task).
struct Listed {
    each: Vec<AtomicBool>,
    /// Bumped whenever a scope has listed (waiters then look at `each`). (kube's
    /// `Store::wait_until_ready` wakes only the last of several tasks waiting at once.)
    bumped: watch::Sender<u64>,
}

impl Listed {
    fn mark(&self, i: usize) {
        self.each[i].store(true, Ordering::Release);
        self.bumped.send_modify(|n| *n += 1);
    }
}

/// The task that feeds the store: what it is started with, until a first scope is
/// watched; then where a newly watched scope's events are sent to it.
enum Feeder<K: Resource<DynamicType = ()> + Clone + 'static> {
    Waiting(Box<Feed<K>>),
    Running(mpsc::UnboundedSender<ScopeEvents<K>>),
}

/// What the feeding task holds.
struct Feed<K: Resource<DynamicType = ()> + Clone + 'static> {
    writer: reflector::store::Writer<K>,
    store: Store<K>,
    changes: broadcast::Sender<Arc<K>>,
    slim: Slim<K>,
    /// Which namespace each scope holds (None: every namespace), by index.
    scopes: Arc<Scopes>,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// A cache of the objects of `K` that `config` selects in `scopes`, no scope
    /// watched yet: a scope's watch starts when something asks for it (`watch_in`,
    /// `watched_in`, `watch`, or `started` for every scope at once) and is then retried
    /// with backoff for the life of the process. `slim` drops what no reader needs
    /// before an object is stored; `buffer` is `BUSY` or `RARE`.
    pub fn new(
        scopes: &Arc<Scopes>,
        config: watcher::Config,
        slim: impl Fn(&mut K) + Send + Sync + 'static,
        plural: &str,
        metrics: &Metrics,
        buffer: usize,
    ) -> Self {
        Self::announcing_on(broadcast::channel(buffer).0, scopes, config, slim, plural, metrics)
    }

    /// `new`, announcing what it touches on `changes` (shared with other caches).
    pub(super) fn announcing_on(
        changes: broadcast::Sender<Arc<K>>,
        scopes: &Arc<Scopes>,
        config: watcher::Config,
        slim: impl Fn(&mut K) + Send + Sync + 'static,
        plural: &str,
        metrics: &Metrics,
    ) -> Self {
        let (store, mut writer) = reflector::store();
        // Ready at once: what each scope lists is applied, never swapped in whole.
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let feed = Feed { writer, store: store.clone(), changes: changes.clone(), slim: Arc::new(slim), scopes: scopes.clone() };
        let watches = Watches {
            started: scopes.each.iter().map(|_| AtomicBool::default()).collect(),
            listed: Arc::new(Listed { each: scopes.each.iter().map(|_| AtomicBool::default()).collect(), bumped: watch::channel(0).0 }),
            scopes: scopes.clone(),
            feeder: Mutex::new(Feeder::Waiting(Box::new(feed))),
            config: Arc::new(config),
            plural: plural.to_string(),
            metrics: metrics.clone(),
        };
        Self { store, changes, watches: Arc::new(watches) }
    }

    /// Starts the watch of every scope, if not started; they then run for the life of
    /// the process.
    pub fn watch(&self) {
        (0..self.watches.started.len()).for_each(|i| self.watches.start(i));
    }

    /// Starts the watch of the scope holding `ns`, if not started.
    pub fn watch_in(&self, ns: &str) {
        if let Some(i) = self.watches.scopes.of(ns) {
            self.watches.start(i);
        }
    }

    /// The store, the watch of `ns`'s scope started if it was not, once that scope
    /// has listed or `FIRST_LIST_WAIT` has passed (a kind whose CRD is missing never
    /// lists: what it would hold reads as not found, and the caller goes on). A
    /// namespace the install does not serve holds nothing, at once.
    pub async fn watched_in(&self, ns: &str) -> &Store<K> {
        self.watch_in(ns);
        if let Some(i) = self.watches.scopes.of(ns) {
            self.wait_listed(|w| w.listed.each[i].load(Ordering::Acquire)).await;
        }
        &self.store
    }

    /// The cache with every scope's watch started.
    pub fn started(self) -> Self {
        self.watch();
        self
    }

    /// Resolves once every scope watched has listed.
    pub async fn ready(&self) {
        let every = |w: &Watches<K>| {
            w.started.iter().zip(&w.listed.each).all(|(started, listed)| !started.load(Ordering::Acquire) || listed.load(Ordering::Acquire))
        };
        self.until_listed(every).await;
    }

    /// Waits until `done`, looked at again each time a scope has listed.
    async fn until_listed(&self, done: impl Fn(&Watches<K>) -> bool) {
        let mut listed = self.watches.listed.bumped.subscribe();
        // An error: the sender is gone (never, while the cache is held).
        let _ = listed.wait_for(|_| done(&self.watches)).await;
    }

    /// Waits until `done`, at most `FIRST_LIST_WAIT`.
    async fn wait_listed(&self, done: impl Fn(&Watches<K>) -> bool) {
        if tokio::time::timeout(FIRST_LIST_WAIT, self.until_listed(done)).await.is_err() {
            warn!(kind = %K::plural(&()), "not listed yet (is its CRD installed?); going on without it");
        }
    }

    /// A cache holding `objects` as watches that have listed them would (tests; no watch).
    #[cfg(test)]
    pub fn listed(objects: impl IntoIterator<Item = K>) -> Self {
        let cache = Self::new(&Scopes::none(), watcher::Config::default(), |_| {}, &K::plural(&()), &Metrics::default(), BUSY);
        if let Feeder::Waiting(feed) = &mut *cache.watches.feeder.lock() {
            for object in objects {
                feed.writer.apply_watcher_event(&watcher::Event::Apply(object));
            }
        }
        cache
    }

    /// A cache fed by hand through the writer it returns (tests; no watch).
    #[cfg(test)]
    pub fn by_hand() -> (Self, reflector::store::Writer<K>) {
        let cache = Self::listed([]);
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        (Self { store, ..cache }, writer)
    }

    /// Announces `object` as touched by a watch (tests feeding a cache by hand).
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

    /// Every object the watches touch (applied or deleted) from now on.
    pub fn changes(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let store = self.store.clone();
        changes_from(self.changes.subscribe(), move || store.state())
    }

    /// Every cached object once every scope watched has listed (or `FIRST_LIST_WAIT`
    /// has passed: a namespace whose watch cannot list, forbidden say, holds up no
    /// other), then every change: what a controller that starts now must look at.
    pub fn everything_then_changes(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        // Subscribed before the snapshot: a change in between is seen (twice at worst).
        let changes = self.changes();
        let (store, cache) = (self.store.clone(), self.clone());
        futures::stream::once(async move {
            let _ = tokio::time::timeout(FIRST_LIST_WAIT, cache.ready()).await;
            futures::stream::iter(store.state())
        })
        .flatten()
        .chain(changes)
    }

    /// Runs the controller `start` makes once the cache holds an object, unless
    /// `shutdown` resolves first: with nothing of a kind no controller runs for it,
    /// and only this wait is held (the controller's state is allocated when it
    /// starts).
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

    /// Resolves once the cache holds an object (at once if it already does): a
    /// controller waits for this, so a kind nobody uses costs no controller.
    pub async fn first_object(&self) {
        let mut changes = std::pin::pin!(self.changes());
        if self.store.is_empty() {
            let _ = changes.next().await;
        }
    }
}

impl<K> Watches<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts scope `i`'s watch, if not started: its events go to the feeding task,
    /// which starts with the first.
    fn start(&self, i: usize) {
        if self.started[i].swap(true, Ordering::AcqRel) {
            return;
        }
        let url = K::url_path(&(), self.scopes.each[i].as_deref());
        let client = self.scopes.connections.for_watch();
        let restarts = self.metrics.watch_restarts.with_label_values(&[&self.plural]);
        let plural = self.plural.clone();
        let events = super::watch::events(client, url, self.config.clone())
            .inspect_err(move |e| {
                restarts.inc();
                warn!(kind = %plural, error = %e, "watch failed; retrying");
            })
            .default_backoff()
            .map(move |event| (i, event))
            .boxed();
        let mut feeder = self.feeder.lock();
        match &mut *feeder {
            Feeder::Running(tx) => drop(tx.send(events)),
            Feeder::Waiting(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                drop(tx.send(events));
                let Feeder::Waiting(feed) = std::mem::replace(&mut *feeder, Feeder::Running(tx)) else { unreachable!() };
                tokio::spawn(feed_from(*feed, rx, self.listed.clone()));
            }
        }
    }
}

/// Feeds `feed`'s store from every scope's events, the scopes' streams arriving on
/// `opened` as they start: one task per kind, however many scopes it watches. Ends
/// when the cache is dropped.
async fn feed_from<K>(mut feed: Feed<K>, mut opened: mpsc::UnboundedReceiver<ScopeEvents<K>>, listed: Arc<Listed>)
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    let mut events = futures::stream::SelectAll::new();
    let mut relists = HashMap::new();
    loop {
        let (scope, event) = tokio::select! {
            scope = opened.recv() => match scope {
                Some(scope) => {
                    events.push(scope);
                    continue;
                }
                None => return,
            },
            Some(next) = events.next(), if !events.is_empty() => next,
        };
        // An error was counted and logged on its way here; the backoff retries.
        let Ok(event) = event else { continue };
        let has_listed = matches!(event, watcher::Event::InitDone);
        // No reader is fine: the store is the truth, changes are only triggers.
        for object in feed.apply(scope, event, &mut relists) {
            drop(feed.changes.send(object));
        }
        if has_listed {
            listed.mark(scope);
        }
    }
}

/// A scope's (re)list under way: what the scope held when it began, and what it has
/// listed so far.
struct Relist<K: Resource<DynamicType = ()>> {
    before: Vec<Arc<K>>,
    seen: HashSet<ObjectRef<K>>,
}

impl<K> Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    /// Applies scope `scope`'s `event` to the store and says what it touched, each
    /// announced once it is in the store (a reader looks an announced object up
    /// there). A listed object is applied as it comes; at the list's end, what the
    /// scope held before and the list lacks (deleted while the watch was down) is
    /// deleted and announced: whoever counted it must look again.
    fn apply(&mut self, scope: usize, event: watcher::Event<K>, relists: &mut HashMap<usize, Relist<K>>) -> Vec<Arc<K>> {
        match event {
            watcher::Event::Init => {
                let held = self.store.state().into_iter().filter(|o| self.holds(scope, o)).collect();
                relists.insert(scope, Relist { before: held, seen: HashSet::new() });
                Vec::new()
            }
            watcher::Event::InitApply(object) => {
                let key = ObjectRef::from_obj(&object);
                if let Some(relist) = relists.get_mut(&scope) {
                    relist.seen.insert(key.clone());
                }
                self.stored(key, object)
            }
            watcher::Event::Apply(object) => self.stored(ObjectRef::from_obj(&object), object),
            watcher::Event::Delete(object) => {
                self.writer.apply_watcher_event(&watcher::Event::Delete(object.clone()));
                vec![Arc::new(object)]
            }
            watcher::Event::InitDone => {
                let Some(Relist { before, seen }) = relists.remove(&scope) else { return Vec::new() };
                let gone: Vec<Arc<K>> = before.into_iter().filter(|o| !seen.contains(&ObjectRef::from_obj(o.as_ref()))).collect();
                for object in &gone {
                    self.writer.apply_watcher_event(&watcher::Event::Delete(object.as_ref().clone()));
                }
                gone
            }
        }
    }

    /// Stores `object`, slimmed, and hands back the stored copy.
    fn stored(&mut self, key: ObjectRef<K>, mut object: K) -> Vec<Arc<K>> {
        (self.slim)(&mut object);
        self.writer.apply_watcher_event(&watcher::Event::Apply(object));
        self.store.get(&key).into_iter().collect()
    }

    /// Whether `object` is scope `scope`'s.
    fn holds(&self, scope: usize, object: &K) -> bool {
        match &self.scopes.each[scope] {
            None => true,
            Some(ns) => object.meta().namespace.as_ref() == Some(ns),
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
    use futures::FutureExt;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn configmap_in(ns: &str, name: &str) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), namespace: Some(ns.into()), ..Default::default() },
            ..Default::default()
        }
    }

    fn configmap(name: &str) -> ConfigMap {
        configmap_in("a", name)
    }

    #[tokio::test]
    async fn a_controller_waiting_for_its_first_object_starts_on_it_and_not_before() {
        let holding = Cache::listed([configmap("one")]);
        tokio::time::timeout(std::time::Duration::from_secs(1), holding.first_object()).await.expect("an object is already there");

        let (empty, mut writer) = Cache::<ConfigMap>::by_hand();
        let mut waiting = Box::pin(empty.first_object());
        assert!(futures::poll!(waiting.as_mut()).is_pending(), "nothing of the kind starts no controller");
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
        for i in 0..BUSY + 5 {
            drop(cache.changes.send(Arc::new(configmap(&format!("burst-{i}")))));
        }
        // Lagged: the whole cache (one object here) comes first, then the newest changes.
        assert_eq!(lagging.next().await.unwrap().metadata.name.as_deref(), Some("one"));
        assert!(lagging.next().await.unwrap().metadata.name.as_deref().unwrap().starts_with("burst-"));
    }

    fn names(objects: &[Arc<ConfigMap>]) -> Vec<String> {
        let mut names: Vec<String> =
            objects.iter().map(|o| format!("{}/{}", o.metadata.namespace.as_ref().unwrap(), o.metadata.name.as_ref().unwrap())).collect();
        names.sort();
        names
    }

    /// Two namespaces feed one store: a relist of one (its watch expired while objects
    /// came and went) changes that namespace's objects only, and what it announces is
    /// in the store by then (a controller looks an announced object up there: one
    /// missing would be dropped for good), with what it no longer holds.
    #[test]
    fn a_namespace_relists_its_own_objects_and_leaves_the_others() {
        let (changes, _) = broadcast::channel(BUSY);
        let (store, writer) = reflector::store::<ConfigMap>();
        let mut feed = Feed {
            writer,
            store: store.clone(),
            changes,
            slim: Arc::new(|_| {}),
            scopes: Scopes::new(vec![Some("a".into()), Some("b".into())], WatchConnections::none()),
        };
        let mut relists = HashMap::new();
        let list = |feed: &mut Feed<ConfigMap>, relists: &mut HashMap<usize, Relist<ConfigMap>>, scope: usize, objects: Vec<ConfigMap>| {
            let mut touched = feed.apply(scope, watcher::Event::Init, relists);
            for object in objects {
                let announced = feed.apply(scope, watcher::Event::InitApply(object), relists);
                for o in &announced {
                    assert!(store.get(&ObjectRef::from_obj(o.as_ref())).is_some(), "{:?} announced before it is cached", o.metadata.name);
                }
                touched.extend(announced);
            }
            touched.extend(feed.apply(scope, watcher::Event::InitDone, relists));
            names(&touched)
        };
        assert_eq!(
            list(&mut feed, &mut relists, 0, vec![configmap_in("a", "kept"), configmap_in("a", "deleted-in-outage")]),
            ["a/deleted-in-outage", "a/kept"]
        );
        assert_eq!(list(&mut feed, &mut relists, 1, vec![configmap_in("b", "other")]), ["b/other"]);
        assert_eq!(names(&feed.apply(0, watcher::Event::Apply(configmap_in("a", "edited")), &mut relists)), ["a/edited"]);

        // a's watch expires; its relist holds a new object and lacks a deleted one.
        let touched = list(
            &mut feed,
            &mut relists,
            0,
            vec![configmap_in("a", "kept"), configmap_in("a", "edited"), configmap_in("a", "made-in-outage")],
        );
        assert_eq!(touched, ["a/deleted-in-outage", "a/edited", "a/kept", "a/made-in-outage"]);
        assert_eq!(names(&store.state()), ["a/edited", "a/kept", "a/made-in-outage", "b/other"], "b's object stays");
        assert!(relists.is_empty(), "the snapshot is not kept past the relist");

        // b lists nothing now: only its own object goes.
        assert_eq!(list(&mut feed, &mut relists, 1, vec![]), ["b/other"]);
        assert_eq!(names(&store.state()), ["a/edited", "a/kept", "a/made-in-outage"]);
    }

    /// What an idle namespace does not need costs it no request until something asks
    /// for it there; then only that namespace lists, and everyone waiting on it wakes.
    #[tokio::test]
    async fn a_namespace_is_watched_once_something_there_asks_and_only_there() {
        let (client, calls) = crate::runtime::mock::mock_api(serde_json::json!({}));
        let scopes = Scopes::new(vec![Some("a".into()), Some("b".into())], WatchConnections::single(client));
        let cache = Cache::<ConfigMap>::new(&scopes, watcher::Config::default(), |_| {}, "configmaps", &Metrics::default(), RARE);
        tokio::time::timeout(std::time::Duration::from_secs(1), cache.ready()).await.expect("nothing watched: nothing to wait for");
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.watched_in("b").await.state().len() })
            })
            .collect();
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(2), waiter).await.expect("every waiter wakes").unwrap();
        }
        cache.ready().await;
        let calls = calls.lock().unwrap();
        assert!(!calls.is_empty());
        for (method, path, _) in calls.iter() {
            assert_eq!((method.as_str(), path.split('?').next().unwrap()), ("GET", "/api/v1/namespaces/b/configmaps"), "{calls:?}");
        }
        let lists = calls.iter().filter(|(_, path, _)| !path.contains("watch=true")).count();
        assert_eq!(lists, 1, "one list however many wait: {calls:?}");
        // A namespace the install does not serve holds nothing, at once.
        assert!(cache.watched_in("elsewhere").now_or_never().is_some());
    }
}
