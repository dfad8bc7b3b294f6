//! One cache layer: a byte-bounded moka cache, freshness by an explicit stored-at time (so
//! tests can drive it with paused tokio time; moka's own clock does not follow it), and
//! request coalescing where the fetch runs in its own task, so a caller that goes away does
//! not cancel the work the others wait for.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::time::{Duration, Instant};
use tracing::Instrument;

use super::key::Owner;
use super::metrics::LayerMetrics;

/// What a key costs in memory: counted in its entry's weight, so that the byte bound holds
/// whatever size of key a client makes (a long query, a long project id).
pub trait KeySize {
    fn key_size(&self) -> usize;
}

impl KeySize for String {
    fn key_size(&self) -> usize {
        std::mem::size_of::<String>() + self.capacity()
    }
}

impl KeySize for u32 {
    fn key_size(&self) -> usize {
        4
    }
}

impl KeySize for &'static str {
    fn key_size(&self) -> usize {
        16 + self.len()
    }
}

/// What moka and the layer keep per entry besides key and value (hash table slot, access
/// deques, timer wheel node, the `Stored` header): measured roughly, rounded up.
pub(crate) const ENTRY_OVERHEAD: usize = 256;

/// Why a layer fetches: for the requests that wait on it, or to refresh a stale entry that
/// was served (stale-while-revalidate), which nobody waits for: the proxy's own work, which
/// the regions' limiters queue as the proxy's flow, not the project's (README, "Fair
/// sharing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetching {
    ForRequests,
    Refresh,
}

/// TTL and the two staleness windows after it (README, "Cache").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub ttl: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    /// A forced refresh (`Cache-Control: no-cache`) of an entry younger than this is answered
    /// with the entry: a client that always sends it refreshes a key at most this often.
    pub min_refresh_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Serve it and refresh in the background.
    StaleWhileRevalidate,
    /// Refresh first; serve it only if the refresh fails.
    StaleIfError,
    Expired,
}

impl Policy {
    pub(crate) fn classify(&self, age: Duration) -> Freshness {
        if age < self.ttl {
            Freshness::Fresh
        } else if age < self.ttl + self.stale_while_revalidate {
            Freshness::StaleWhileRevalidate
        } else if age < self.ttl + self.stale_if_error {
            Freshness::StaleIfError
        } else {
            Freshness::Expired
        }
    }

    /// How long moka keeps an entry at all (it is reclaimed after this, in real time).
    fn keep(&self) -> Duration {
        self.ttl + self.stale_while_revalidate.max(self.stale_if_error)
    }
}

/// A stored value and what the layer needs to judge and purge it.
#[derive(Debug)]
pub struct Stored<V> {
    pub value: V,
    pub(crate) stored_at: Instant,
    pub(crate) weight: u32,
    /// Whose data it is, for purges.
    pub owner: Owner,
    /// Which insert of its key this is: a removal reported for an older one (replaced, or
    /// evicted after the key was stored again) leaves the purge index alone.
    serial: u64,
    /// Stored by a forced refresh (`no-cache`): the start of its `min_refresh_interval`.
    pub forced: bool,
}

impl<V> Stored<V> {
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }
}

/// What a fetch produced: the value for every waiter, and whether to keep it.
#[derive(Debug)]
pub struct FetchOutcome<V> {
    pub value: V,
    /// Keep it (a complete 200): its weight, and whose data it is.
    pub store: Option<(u32, Owner)>,
    /// The upstream failed (timeout, 429, 5xx, a region missing): stale may be served instead.
    pub failed: bool,
    /// How old the value already is (a page another replica produced): its freshness counts
    /// from when it was made, not from when it was stored here.
    pub age: Duration,
}

/// How a lookup was answered.
pub enum Lookup<V> {
    Hit(Arc<Stored<V>>),
    /// Fresh, given to a forced refresh because it was refreshed less than
    /// `min_refresh_interval` ago.
    Recent(Arc<Stored<V>>),
    /// Stale, served while one background refresh runs.
    StaleWhileRevalidate(Arc<Stored<V>>),
    /// Stale, served because the refresh failed.
    StaleIfError(Arc<Stored<V>>),
    FetchOutcome {
        fetched: Arc<FetchOutcome<V>>,
        collapsed: bool,
    },
    /// The producer panicked or was cancelled, and nothing stored could stand in: an error
    /// for this request; the key is free again for the next one.
    Lost,
    /// Too many flights already: nothing was started (load shedding).
    Shed,
}

/// `None`: the producer never finished (it panicked, or its task was cancelled).
type Flight<V> = Shared<BoxFuture<'static, Option<Arc<FetchOutcome<V>>>>>;

/// A fetch under way for a key: what its waiters await, and who they are.
struct Flying<V> {
    flight: Flight<V>,
    /// Tells this fetch from a later one for the same key.
    serial: u64,
    /// Requests awaiting it now.
    waiters: usize,
    /// Stops its task, when the layer stops fetches nobody waits for; `None`: it runs to its
    /// end whoever leaves (a background refresh, which nobody waits for by design).
    stop: Option<tokio::task::AbortHandle>,
}

/// Forgets a key's flight when the producer's task ends, however it ends: a panicking
/// producer must not leave a flight that every later request for the key would join.
struct Forget<K: Hash + Eq, V> {
    layer: CoalescingCache<K, V>,
    key: K,
    serial: u64,
}

impl<K: Hash + Eq, V> Drop for Forget<K, V> {
    fn drop(&mut self) {
        let mut inflight = self
            .layer
            .0
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // A stopped fetch was forgotten when it was stopped; a later one may be under way.
        if inflight.get(&self.key).is_some_and(|f| f.serial == self.serial) {
            inflight.remove(&self.key);
        }
    }
}

/// One request awaiting a flight. When the last one leaves before the fetch is done (its
/// clients went away: a 504 at `server.request_timeout`, a disconnect), the fetch is stopped
/// in a layer that stops unwanted fetches, so a costly one does not go on reading the
/// regions for nobody; while anyone waits, it goes on.
struct Waiter<'a, K: Hash + Eq, V> {
    layer: &'a CoalescingCache<K, V>,
    key: &'a K,
    serial: u64,
}

impl<K: Hash + Eq, V> Drop for Waiter<'_, K, V> {
    fn drop(&mut self) {
        let stop = {
            let mut inflight = self.layer.0.inflight.lock().unwrap_or_else(|p| p.into_inner());
            let Some(flying) = inflight.get_mut(self.key).filter(|f| f.serial == self.serial)
            else {
                return; // done (and forgotten) already
            };
            flying.waiters -= 1;
            if flying.waiters > 0 || flying.stop.is_none() || !self.layer.0.stop_unwanted {
                return;
            }
            inflight.remove(self.key).and_then(|f| f.stop)
        };
        if let Some(stop) = stop {
            self.layer.0.metrics.stopped.inc();
            stop.abort();
        }
    }
}

/// The keys stored for each owner, with the serial of their entry: a purge drops one
/// owner's entries without looking at anyone else's (a write used to scan both layers whole:
/// ~60 ms with 30,000 entries, on every write).
type OwnerIndex<K> = Mutex<HashMap<Owner, HashMap<K, u64>>>;

/// What an entry's line in the owner index costs: its key again, the serial, the hash table's
/// slot and control bytes at its load factor (rounded up).
const INDEX_SLOT: usize = 48;

struct Inner<K, V> {
    entries: moka::sync::Cache<K, Arc<Stored<V>>>,
    by_owner: Arc<OwnerIndex<K>>,
    serials: std::sync::atomic::AtomicU64,
    inflight: Mutex<HashMap<K, Flying<V>>>,
    /// Stop a fetch when its last waiter leaves (see [`Waiter`]).
    stop_unwanted: bool,
    /// Most flights at once: each holds a key and a task, so they are bounded too.
    max_flights: usize,
    policy: Policy,
    metrics: Arc<LayerMetrics>,
}

pub struct CoalescingCache<K, V>(Arc<Inner<K, V>>);

impl<K, V> Clone for CoalescingCache<K, V> {
    fn clone(&self) -> Self {
        CoalescingCache(self.0.clone())
    }
}

/// Take a removed entry's key out of the owner index, unless the key has been stored again
/// since (a newer serial is indexed).
fn unindex<K: Hash + Eq, V>(index: &OwnerIndex<K>, key: &K, stored: &Stored<V>) {
    let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(keys) = index.get_mut(&stored.owner) {
        if keys.get(key) == Some(&stored.serial) {
            keys.remove(key);
            if keys.is_empty() {
                index.remove(&stored.owner);
            }
        }
    }
}

/// Values are shared between the store and every waiter: make `V` cheap to clone (an `Arc`).
impl<K, V> CoalescingCache<K, V>
where
    K: Hash + Eq + Clone + KeySize + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(
        max_bytes: u64,
        max_flights: usize,
        policy: Policy,
        metrics: Arc<LayerMetrics>,
    ) -> CoalescingCache<K, V> {
        let evictions = metrics.clone();
        let by_owner: Arc<OwnerIndex<K>> = Default::default();
        let index = by_owner.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k, v: &Arc<Stored<V>>| v.weight)
            .time_to_live(policy.keep().max(Duration::from_millis(1)))
            .eviction_listener(move |key: Arc<K>, stored: Arc<Stored<V>>, cause| {
                if cause.was_evicted() {
                    evictions.evictions.inc();
                }
                unindex(&index, &key, &stored);
            })
            .build();
        CoalescingCache(Arc::new(Inner {
            entries,
            by_owner,
            serials: Default::default(),
            inflight: Mutex::new(HashMap::new()),
            stop_unwanted: false,
            max_flights,
            policy,
            metrics,
        }))
    }

    /// This layer stops a fetch when the last request waiting for it leaves (the response
    /// layer: its fetch is a whole page's walk over the regions). Call right after `new`.
    pub fn stopping_unwanted_fetches(mut self) -> Self {
        Arc::get_mut(&mut self.0)
            .expect("called right after new")
            .stop_unwanted = true;
        self
    }

    pub fn policy(&self) -> Policy {
        self.0.policy
    }

    pub fn metrics(&self) -> &LayerMetrics {
        &self.0.metrics
    }

    pub(crate) fn metrics_arc(&self) -> Arc<LayerMetrics> {
        self.0.metrics.clone()
    }

    /// Answer from the cache or through `fetch` (given the key: a miss may need it, a hit
    /// costs no copy of it), coalescing concurrent misses on `key`.
    /// `refresh`: the client asked for `no-cache`; a stored value is used only if the fetch
    /// fails.
    pub async fn get<F, Fut>(&self, key: K, refresh: bool, fetch: F) -> Lookup<V>
    where
        F: FnOnce(&K, Fetching) -> Fut,
        Fut: Future<Output = FetchOutcome<V>> + Send + 'static,
    {
        let inner = &self.0;
        let stored = inner.entries.get(&key);
        let freshness = stored
            .as_ref()
            .map(|s| inner.policy.classify(s.age(Instant::now())));
        if let (Some(s), Some(f), false) = (&stored, freshness, refresh) {
            match f {
                Freshness::Fresh => {
                    inner.metrics.hits.inc();
                    return Lookup::Hit(s.clone());
                }
                Freshness::StaleWhileRevalidate => {
                    inner.metrics.stale.inc();
                    // One refresh, in its own task; nobody waits for it, nobody stops it.
                    drop(self.flight(key, fetch, false, false));
                    return Lookup::StaleWhileRevalidate(s.clone());
                }
                _ => {}
            }
        }
        if let (Some(s), true) = (&stored, refresh) {
            let recent = s.forced && s.age(Instant::now()) < inner.policy.min_refresh_interval;
            // A refresh in flight is newer still: join it rather than answer with this.
            if recent && !self.in_flight(&key) {
                inner.metrics.hits.inc();
                return Lookup::Recent(s.clone());
            }
        }
        inner.metrics.misses.inc();
        let Some((flight, collapsed, serial)) = self.flight(key.clone(), fetch, refresh, true)
        else {
            return Lookup::Shed;
        };
        if collapsed {
            inner.metrics.coalesced.inc();
        }
        let waiter = Waiter {
            layer: self,
            key: &key,
            serial,
        };
        let fetched = flight.await;
        drop(waiter);
        let Some(fetched) = fetched else {
            tracing::error!("a cache producer panicked or was cancelled");
            let usable = freshness.is_some_and(|f| f != Freshness::Expired);
            return match (stored, usable) {
                (Some(s), true) => {
                    inner.metrics.stale.inc();
                    Lookup::StaleIfError(s)
                }
                _ => Lookup::Lost,
            };
        };
        if fetched.failed {
            let usable = matches!(
                freshness,
                Some(Freshness::Fresh | Freshness::StaleWhileRevalidate | Freshness::StaleIfError)
            );
            if let (Some(s), true) = (stored, usable) {
                inner.metrics.stale.inc();
                return Lookup::StaleIfError(s);
            }
        }
        Lookup::FetchOutcome { fetched, collapsed }
    }

    fn in_flight(&self, key: &K) -> bool {
        let inflight = self.0.inflight.lock().unwrap_or_else(|p| p.into_inner());
        inflight.contains_key(key)
    }

    /// Join the fetch in flight for `key`, or start one in a task of its own, counting the
    /// caller among its waiters when it will `wait`; the flight, whether it was joined, and
    /// its serial. `None` when `max_flights` are under way already.
    fn flight<F, Fut>(
        &self,
        key: K,
        fetch: F,
        forced: bool,
        wait: bool,
    ) -> Option<(Flight<V>, bool, u64)>
    where
        F: FnOnce(&K, Fetching) -> Fut,
        Fut: Future<Output = FetchOutcome<V>> + Send + 'static,
    {
        let mut inflight = self.0.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flying) = inflight.get_mut(&key) {
            flying.waiters += usize::from(wait);
            return Some((flying.flight.clone(), true, flying.serial));
        }
        if inflight.len() >= self.0.max_flights {
            return None;
        }
        let layer = self.clone();
        let task_key = key.clone();
        // The fetch belongs to the trace of the request that started it.
        let why = match wait {
            true => Fetching::ForRequests,
            false => Fetching::Refresh,
        };
        let work = fetch(&key, why).in_current_span();
        let serial = self.0.serials.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let forget = Forget {
            layer: self.clone(),
            key: key.clone(),
            serial,
        };
        let task = tokio::spawn(async move {
            let forget = forget;
            let fetched = Arc::new(work.await);
            if let Some((weight, owner)) = &fetched.store {
                layer.store(task_key.clone(), fetched.value.clone(), (*weight, owner), fetched.age, forced);
            }
            // Stored first, then forgotten: a request in between finds one or the other.
            drop(forget);
            fetched
        });
        let stop = wait.then(|| task.abort_handle());
        let flight = async move { task.await.ok() }.boxed().shared();
        let flying = Flying {
            flight: flight.clone(),
            serial,
            waiters: usize::from(wait),
            stop,
        };
        inflight.insert(key, flying);
        Some((flight, false, serial))
    }

    /// Drop the entry of `key`, if any (flights in progress are not touched).
    pub(crate) fn forget(&self, key: &K) {
        self.0.entries.invalidate(key);
    }

    /// Store `value` for `key`, indexed under its owner.
    fn store(&self, key: K, value: V, (weight, owner): (u32, &Owner), age: Duration, forced: bool) {
        // The entry's whole cost: value, key (in the cache and in the index), owner and
        // bookkeeping.
        let weight = (weight as usize)
            .saturating_add(2 * key.key_size())
            .saturating_add(owner.heap_size())
            .saturating_add(ENTRY_OVERHEAD + INDEX_SLOT)
            .min(u32::MAX as usize) as u32;
        let serial = self.0.serials.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let stored = Stored {
            value,
            stored_at: now.checked_sub(age).unwrap_or(now),
            weight,
            owner: owner.clone(),
            serial,
            forced,
        };
        {
            let mut index = self.0.by_owner.lock().unwrap_or_else(|p| p.into_inner());
            index
                .entry(owner.clone())
                .or_default()
                .insert(key.clone(), serial);
        }
        self.0.entries.insert(key, Arc::new(stored));
    }

    /// Take over `old`'s entries (a reload: the same answers under a new policy or byte
    /// bound), each under the key `rekey` gives it (`None`: left behind). They keep their age,
    /// so the new policy judges them as if they had been stored here. How many came over.
    pub(crate) fn adopt(&self, old: &CoalescingCache<K, V>, rekey: impl Fn(&K) -> Option<K>) -> usize {
        let mut adopted = 0;
        for (key, stored) in old.0.entries.iter() {
            let Some(key) = rekey(&key) else {
                continue;
            };
            let serial = self.0.serials.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let copy = Stored {
                value: stored.value.clone(),
                stored_at: stored.stored_at,
                weight: stored.weight,
                owner: stored.owner.clone(),
                serial,
                forced: stored.forced,
            };
            {
                let mut index = self.0.by_owner.lock().unwrap_or_else(|p| p.into_inner());
                let keys = index.entry(copy.owner.clone()).or_default();
                keys.insert(key.clone(), serial);
            }
            self.0.entries.insert(key, Arc::new(copy));
            adopted += 1;
        }
        adopted
    }

    /// Drop the entries of `owner`; how many there were.
    pub fn purge(&self, owner: &Owner) -> usize {
        let keys = {
            let mut index = self.0.by_owner.lock().unwrap_or_else(|p| p.into_inner());
            index.remove(owner).unwrap_or_default()
        };
        // Out of the index's lock: moka tells the listener (which takes it) at once.
        for key in keys.keys() {
            self.0.entries.invalidate(key);
        }
        keys.len()
    }

    /// Drop the entries of every caller-owned scope (`Owner::Caller`); how many there were.
    pub fn purge_callers(&self) -> usize {
        let callers: Vec<Owner> = {
            let index = self.0.by_owner.lock().unwrap_or_else(|p| p.into_inner());
            index
                .keys()
                .filter(|o| matches!(o, Owner::Caller(_)))
                .cloned()
                .collect()
        };
        callers.iter().map(|owner| self.purge(owner)).sum()
    }

    /// Drop every entry; how many there were.
    pub fn purge_all(&self) -> usize {
        let index = {
            let mut index = self.0.by_owner.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *index)
        };
        self.0.entries.invalidate_all();
        index.values().map(HashMap::len).sum()
    }

    /// Entries held, after pending maintenance.
    pub fn entry_count(&self) -> u64 {
        self.0.entries.run_pending_tasks();
        self.0.entries.entry_count()
    }

    /// Bytes held (by the weigher), after pending maintenance.
    pub fn weighted_size(&self) -> u64 {
        self.0.entries.run_pending_tasks();
        self.0.entries.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn policy(ttl: u64, swr: u64, sie: u64) -> Policy {
        Policy {
            ttl: Duration::from_secs(ttl),
            stale_while_revalidate: Duration::from_secs(swr),
            stale_if_error: Duration::from_secs(sie),
            min_refresh_interval: Duration::ZERO,
        }
    }

    fn layer(ttl: u64, swr: u64, sie: u64) -> CoalescingCache<&'static str, u32> {
        CoalescingCache::new(
            1 << 20,
            64,
            policy(ttl, swr, sie),
            Arc::new(LayerMetrics::default()),
        )
    }

    fn ok(v: u32) -> FetchOutcome<u32> {
        FetchOutcome {
            value: v,
            store: Some((8, Owner::Project("/v3/p".into()))),
            failed: false,
            age: Duration::ZERO,
        }
    }

    fn failed(v: u32) -> FetchOutcome<u32> {
        FetchOutcome {
            value: v,
            store: None,
            failed: true,
            age: Duration::ZERO,
        }
    }

    fn value(s: &Lookup<u32>) -> (u32, &'static str) {
        match s {
            Lookup::Hit(e) => (e.value, "hit"),
            Lookup::Recent(e) => (e.value, "recent"),
            Lookup::StaleWhileRevalidate(e) => (e.value, "swr"),
            Lookup::StaleIfError(e) => (e.value, "sie"),
            Lookup::FetchOutcome { fetched, .. } => (fetched.value, "fetched"),
            Lookup::Lost => (0, "lost"),
            Lookup::Shed => (0, "shed"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_producer_is_an_error_for_its_waiters_not_a_poisoned_key() {
        let l = layer(30, 0, 0);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let first = tokio::spawn({
            let l = l.clone();
            async move {
                let served = l
                    .get("k", false, |_, _| async move {
                        let _ = rx.await;
                        panic!("a producer bug");
                    })
                    .await;
                value(&served)
            }
        });
        settle().await;
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { value(&l.get("k", false, |_, _| async { ok(2) }).await) }
        });
        settle().await;
        tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), (0, "lost"));
        assert_eq!(waiter.await.unwrap(), (0, "lost"));
        // The key is free: the next request produces again.
        assert_eq!(
            value(&l.get("k", false, |_, _| async { ok(3) }).await),
            (3, "fetched")
        );
    }

    /// Let spawned fetch tasks run to completion (paused time: no sleeping involved).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_then_stale_while_revalidate_then_stale_if_error_then_expired() {
        let l = layer(30, 10, 300);
        assert_eq!(
            value(&l.get("k", false, |_, _| async { ok(1) }).await),
            (1, "fetched")
        );
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(
            value(&l.get("k", false, |_, _| async { ok(2) }).await),
            (1, "hit")
        );
        // 35 s: stale within SWR → the old value now, one refresh behind it.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            value(&l.get("k", false, |_, _| async { ok(3) }).await),
            (1, "swr")
        );
        settle().await;
        assert_eq!(
            value(&l.get("k", false, |_, _| async { ok(4) }).await),
            (3, "hit")
        );
        // 100 s after the refresh: past SWR, within stale-if-error.
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(
            value(&l.get("k", false, |_, _| async { failed(5) }).await),
            (3, "sie")
        );
        assert_eq!(
            value(&l.get("k", false, |_, _| async { ok(6) }).await),
            (6, "fetched")
        );
        // Past every window: a failure is the answer.
        tokio::time::advance(Duration::from_secs(400)).await;
        assert_eq!(
            value(&l.get("k", false, |_, _| async { failed(7) }).await),
            (7, "fetched")
        );
        assert_eq!(l.metrics().hits.get(), 2);
    }

    /// The regions' limiters queue a refresh nobody waits for as the proxy's own work: the
    /// layer says which fetch is which.
    #[tokio::test(start_paused = true)]
    async fn a_stale_entrys_refresh_is_fetched_as_the_layers_own() {
        let l = layer(30, 10, 0);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fetch = |v: u32| {
            let seen = seen.clone();
            move |_: &&str, why: Fetching| async move {
                seen.lock().unwrap().push((v, why));
                ok(v)
            }
        };
        l.get("k", false, fetch(1)).await;
        tokio::time::advance(Duration::from_secs(35)).await;
        assert_eq!(value(&l.get("k", false, fetch(2)).await), (1, "swr"));
        settle().await;
        assert_eq!(value(&l.get("k", true, fetch(3)).await), (3, "fetched"));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (1, Fetching::ForRequests),
                (2, Fetching::Refresh),
                (3, Fetching::ForRequests)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_bypasses_a_fresh_entry_but_falls_back_on_error() {
        let l = layer(30, 0, 300);
        l.get("k", false, |_, _| async { ok(1) }).await;
        assert_eq!(
            value(&l.get("k", true, |_, _| async { ok(2) }).await),
            (2, "fetched")
        );
        assert_eq!(
            value(&l.get("k", true, |_, _| async { failed(3) }).await),
            (2, "sie")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forced_refreshes_happen_at_most_once_per_interval() {
        let l: CoalescingCache<&'static str, u32> = CoalescingCache::new(
            1 << 20,
            64,
            Policy {
                min_refresh_interval: Duration::from_secs(1),
                ..policy(30, 0, 300)
            },
            Arc::new(LayerMetrics::default()),
        );
        // An entry stored by an ordinary miss does not hold a forced refresh back.
        l.get("k", false, |_, _| async { ok(1) }).await;
        assert_eq!(
            value(&l.get("k", true, |_, _| async { ok(2) }).await),
            (2, "fetched")
        );
        assert_eq!(
            value(&l.get("k", true, |_, _| async { ok(9) }).await),
            (2, "recent")
        );
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(
            value(&l.get("k", true, |_, _| async { ok(3) }).await),
            (2, "recent")
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            value(&l.get("k", true, |_, _| async { ok(4) }).await),
            (4, "fetched")
        );
        assert_eq!(
            value(&l.get("k", true, |_, _| async { ok(5) }).await),
            (4, "recent")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_make_one_fetch_that_survives_its_caller() {
        let l = layer(30, 0, 0);
        let calls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let gate = rx.shared();
        let fetch = |calls: Arc<AtomicUsize>, gate: Shared<tokio::sync::oneshot::Receiver<()>>| {
            move |_: &&str, _| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = gate.await;
                ok(9)
            }
        };
        // The first caller starts the fetch and is then dropped (its client went away).
        let first = tokio::spawn({
            let l = l.clone();
            let f = fetch(calls.clone(), gate.clone());
            async move { value(&l.get("k", false, f).await).0 }
        });
        settle().await;
        first.abort();
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let l = l.clone();
                let f = fetch(calls.clone(), gate.clone());
                tokio::spawn(async move {
                    match l.get("k", false, f).await {
                        Lookup::FetchOutcome { fetched, collapsed } => (fetched.value, collapsed),
                        other => (value(&other).0, false),
                    }
                })
            })
            .collect();
        settle().await;
        tx.send(()).unwrap();
        for w in waiters {
            assert_eq!(w.await.unwrap(), (9, true));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(l.metrics().coalesced.get(), 50);
        assert_eq!(
            value(&l.get("k", false, |_, _| async { ok(10) }).await),
            (9, "hit")
        );
    }

    /// A fetch in a layer that stops unwanted fetches: how far it got.
    #[derive(Default)]
    struct Progress {
        started: AtomicUsize,
        finished: AtomicUsize,
        dropped: AtomicUsize,
    }

    struct DropMark(Arc<Progress>);

    impl Drop for DropMark {
        fn drop(&mut self) {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn gated_fetch(
        progress: Arc<Progress>,
        gate: Arc<tokio::sync::Semaphore>,
        v: u32,
    ) -> impl FnOnce(&&'static str, Fetching) -> BoxFuture<'static, FetchOutcome<u32>> {
        move |_, _| {
            async move {
                progress.started.fetch_add(1, Ordering::SeqCst);
                let _mark = DropMark(progress.clone());
                let _permit = gate.acquire().await;
                progress.finished.fetch_add(1, Ordering::SeqCst);
                ok(v)
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn a_fetch_nobody_waits_for_is_stopped_one_somebody_waits_for_is_not() {
        let l = layer(30, 0, 0).stopping_unwanted_fetches();
        let progress = Arc::new(Progress::default());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let waiter = || {
            let (l, f) = (l.clone(), gated_fetch(progress.clone(), gate.clone(), 1));
            tokio::spawn(async move { value(&l.get("k", false, f).await) })
        };
        let (a, b) = (waiter(), waiter());
        settle().await;
        assert_eq!(progress.started.load(Ordering::SeqCst), 1, "one fetch, joined");
        a.abort();
        settle().await;
        assert_eq!(progress.dropped.load(Ordering::SeqCst), 0, "b still waits");
        assert_eq!(l.metrics().stopped.get(), 0);
        b.abort();
        settle().await;
        assert_eq!(progress.dropped.load(Ordering::SeqCst), 1, "nobody waits: stopped");
        assert_eq!(l.metrics().stopped.get(), 1);
        // The key is free: the next request starts a fetch of its own, which completes.
        gate.add_permits(10);
        let next = waiter().await.unwrap();
        assert_eq!(next, (1, "fetched"));
        assert_eq!(progress.started.load(Ordering::SeqCst), 2);
        assert_eq!(progress.finished.load(Ordering::SeqCst), 1, "only the second");
    }

    #[tokio::test(start_paused = true)]
    async fn a_background_refresh_is_never_stopped() {
        let l = layer(30, 60, 0).stopping_unwanted_fetches();
        assert_eq!(value(&l.get("k", false, |_, _| async { ok(1) }).await).0, 1);
        tokio::time::advance(Duration::from_secs(31)).await;
        let progress = Arc::new(Progress::default());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let served = l.get("k", false, gated_fetch(progress.clone(), gate.clone(), 2)).await;
        assert_eq!(value(&served), (1, "swr"));
        settle().await;
        assert_eq!(progress.started.load(Ordering::SeqCst), 1);
        // A forced refresh joins it and leaves: the refresh still goes on.
        let joined = tokio::spawn({
            let l = l.clone();
            async move { value(&l.get("k", true, |_, _| async { ok(3) }).await) }
        });
        settle().await;
        joined.abort();
        settle().await;
        assert_eq!(progress.dropped.load(Ordering::SeqCst), 0);
        gate.add_permits(1);
        for _ in 0..1000 {
            if progress.finished.load(Ordering::SeqCst) == 1 {
                break;
            }
            settle().await;
        }
        assert_eq!(progress.finished.load(Ordering::SeqCst), 1);
        settle().await;
        assert_eq!(value(&l.get("k", false, |_, _| async { ok(4) }).await), (2, "hit"));
    }

    /// Index lines held for the layer's entries.
    fn indexed<K: Hash + Eq, V>(l: &CoalescingCache<K, V>) -> usize {
        let index = l.0.by_owner.lock().unwrap();
        index.values().map(HashMap::len).sum()
    }

    #[tokio::test]
    async fn bounded_by_bytes_and_purged_by_owner() {
        let policy = Policy {
            ttl: Duration::from_secs(60),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            min_refresh_interval: Duration::ZERO,
        };
        let l: CoalescingCache<u32, u32> =
            CoalescingCache::new(10_000, 64, policy, Arc::new(LayerMetrics::default()));
        let owner = |k: u32| match k % 3 {
            0 => Owner::Project("/v3/a".into()),
            1 => Owner::Project("/v3/b".into()),
            _ => Owner::Caller(crate::cache::key::Identity([k as u8 % 2; 32])),
        };
        for k in 0..100u32 {
            let owner = owner(k);
            l.get(k, false, move |_, _| async move {
                FetchOutcome {
                    value: k,
                    store: Some((500, owner)),
                    failed: false,
                    age: Duration::ZERO,
                }
            })
            .await;
        }
        assert!(l.weighted_size() <= 10_000, "{}", l.weighted_size());
        assert!(l.metrics().evictions.get() > 0);
        // Evicted entries left the index: it holds exactly what the cache holds.
        let held = |o: &Owner| l.0.entries.iter().filter(|(_, v)| &v.owner == o).count();
        assert_eq!(indexed(&l), l.0.entries.iter().count());
        let a = Owner::Project("/v3/a".into());
        let b = Owner::Project("/v3/b".into());
        let (in_a, in_b) = (held(&a), held(&b));
        assert!(in_a > 0 && in_b > 0);
        assert_eq!(l.purge(&a), in_a);
        l.0.entries.run_pending_tasks();
        assert_eq!(held(&a), 0);
        assert_eq!(held(&b), in_b, "another owner's entries are untouched");
        let callers = l.0.entries.iter().count() - in_b;
        assert_eq!(l.purge_callers(), callers);
        l.0.entries.run_pending_tasks();
        assert_eq!(l.0.entries.iter().count(), in_b);
        assert_eq!(l.purge_all(), in_b);
        l.0.entries.run_pending_tasks();
        assert_eq!(l.0.entries.iter().count(), 0);
        assert_eq!(indexed(&l), 0);
    }

    /// A key stored again stays indexed when its old entry's removal is reported (replaced,
    /// or expired after the new one was stored): the serial tells them apart.
    #[tokio::test]
    async fn a_key_stored_again_stays_purgeable() {
        let l = layer(60, 0, 0);
        let a = Owner::Project("/v3/p".into());
        for round in 0..3 {
            l.store("k", round, (8, &a), Duration::ZERO, false);
            l.0.entries.run_pending_tasks();
            assert_eq!(indexed(&l), 1, "round {round}");
        }
        assert_eq!(l.purge(&a), 1);
        l.0.entries.run_pending_tasks();
        assert!(l.0.entries.get(&"k").is_none());
        assert_eq!(indexed(&l), 0);
    }
}
