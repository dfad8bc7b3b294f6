//! The fleet's shared store (Redis): what replicas share so that the shield holds for the
//! fleet, not per process — response pages (L2 behind each replica's own cache), one flight per
//! page (a short lock per key), the regions' rate limits (GCRA in one Lua script per call),
//! `Retry-After` deadlines and open breakers, and remembered marker positions.
//!
//! Redis trouble never becomes client trouble: every operation is bounded by
//! `fleet.op_timeout` and its failure is "not available" (the caller then does what a single
//! process does: its own cache, its own limits). While Redis is down, operations are skipped
//! but for one every [`PROBE_EVERY`], so requests do not each pay the timeout; the state is
//! logged once per change and exported as `vbs_fleet_up`.
//!
//! redis-rs's `ConnectionManager` (one multiplexed connection, reconnected in the background
//! with backoff) is created lazily: the proxy starts and serves without Redis.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use crate::config::FleetConfig;

/// While Redis is down, one operation in this long is tried (the others are skipped).
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(250);

/// How often a replica tells the store it is alive.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// A replica not heard from for this long is not counted alive.
pub(crate) const ALIVE_FOR: Duration = Duration::from_secs(5);

/// Fleet operations by kind and outcome (`ok`, `error`, `timeout`, `skipped`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpLabels {
    pub op: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Default)]
pub struct FleetMetrics {
    /// 1 while the last operation tried succeeded.
    pub up: Gauge,
    pub(crate) ops: Family<OpLabels, Counter>,
    /// Replicas the store last said were alive.
    replicas_alive: Gauge,
    /// Operations done and failed (error, timeout), and the last failure: for the status page.
    pub(crate) done: std::sync::atomic::AtomicU64,
    pub(crate) failed: std::sync::atomic::AtomicU64,
    pub(crate) last_error: Mutex<Option<(std::time::SystemTime, String)>>,
}

/// A page's value as another replica stored it, or the lock to fetch it.
#[derive(Debug)]
pub enum Flight {
    /// A fresh value, and its age.
    Fresh(Vec<u8>, Duration),
    /// No fresh value; this replica now holds the key's lock and fetches it.
    Holder,
    /// Another replica holds the lock: wait for its value.
    Wait,
}

/// What the fleet says about a call to a region.
#[derive(Debug, PartialEq)]
pub(crate) enum Admission {
    Go,
    /// The fleet's rate limit: a token in this long.
    Wait(Duration),
    /// A replica saw the region's `Retry-After`: nothing before this long.
    BackingOff(Duration),
    /// A replica saw the region's `Retry-After` for this tenant: nothing of its before this
    /// long.
    TenantBackingOff(Duration),
    /// A replica's breaker for the region is open, after this failure, for this long.
    BreakerOpen { cause: String, retry_in: Duration },
}

const GET_OR_LOCK: &str = r"
-- KEYS: value, lock, purged (its scope), purged (all), purged (its scope's group). ARGV: lock
-- token, lock ms, ttl ms,
-- keep ms. A value is written to be kept `keep` ms: its age is what its expiry says, in
-- Redis's own clock, like the purge times (no two replicas' clocks are compared).
local v = redis.call('GET', KEYS[1])
if v then
  local age = tonumber(ARGV[4]) - redis.call('PTTL', KEYS[1])
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  local purged = math.max(tonumber(redis.call('GET', KEYS[3]) or 0),
                          tonumber(redis.call('GET', KEYS[4]) or 0),
                          tonumber(redis.call('GET', KEYS[5]) or 0))
  if age < tonumber(ARGV[3]) and now - age > purged then return {1, v, age} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}
";

/// Entries of these scopes stored until now are gone (for as long as an entry is kept).
const PURGE: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
for _, key in ipairs(KEYS) do redis.call('SET', key, now, 'PX', ARGV[1]) end
return 0
";

const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// GCRA (the generic cell rate algorithm: one timestamp per region, the theoretical arrival
/// time of the next call), after the region's published `Retry-After` and open breaker.
///
/// A region's timestamp is kept a day after its last call, so that one missing means the
/// store lost it (a restart without persistence, a flush), or a fleet's first call: the
/// bucket then starts empty, not full. While the store was away each replica spent its share
/// of the rate on its own (`Guard::rate_now`); a full burst on its return would come on top
/// of that.
const ADMIT: &str = r"
-- KEYS: gcra, backoff, breaker, the tenant's backoff (or the region's again). ARGV: interval
-- ms (0 = no limit), burst tolerance ms.
local wait = redis.call('PTTL', KEYS[2])
if wait > 0 then return {1, wait} end
if KEYS[4] ~= KEYS[2] then
  local held = redis.call('PTTL', KEYS[4])
  if held > 0 then return {4, held} end
end
local cause = redis.call('GET', KEYS[3])
if cause then return {2, math.max(redis.call('PTTL', KEYS[3]), 0), cause} end
local interval = tonumber(ARGV[1])
if interval <= 0 then return {0, 0} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or (now + tonumber(ARGV[2])))
if tat < now then tat = now end
local allowed_at = tat - tonumber(ARGV[2])
if now < allowed_at then return {3, allowed_at - now} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', 86400000)
return {0, 0}
";

/// A project's `[tenants]` rate for the fleet: GCRA, one timestamp per project (ms with a
/// fraction, written with `%.3f` so that Lua's number printing loses nothing), kept until its
/// burst would be whole again. Returns the ms to wait (as a string: a fraction), or 0.
const TENANT_RATE: &str = r"
-- KEYS: the project's theoretical arrival time. ARGV: interval ms, tolerance ms.
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + tonumber(ARGV[1])
local ahead = next_tat - now
if ahead > tonumber(ARGV[2]) then return string.format('%.3f', ahead - tonumber(ARGV[2])) end
redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX', math.ceil(ahead) + 1000)
return '0'
";

/// A replica alive now; how many are (heard from within ARGV[2] ms, in Redis's clock). The set
/// holds only those, and goes with the last of them.
const HEARTBEAT: &str = r"
-- KEYS: the replicas (member: a replica, score: when it was last heard from). ARGV: this
-- replica, how long one counts as alive (ms).
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
";

/// The region's GCRA alone (as in [`ADMIT`], the same key), reserving: the next token is
/// taken now, and the ms until it is due returned (0: now). Each replica's dispatcher holds
/// at most one reservation, so the key runs ahead by at most one interval per replica.
const RATE_TOKEN: &str = r"
-- KEYS: gcra. ARGV: interval ms, burst tolerance ms.
local interval = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or (now + tonumber(ARGV[2])))
if tat < now then tat = now end
redis.call('SET', KEYS[1], tat + interval, 'PX', 86400000)
return math.max(tat - tonumber(ARGV[2]) - now, 0)
";

/// A `Retry-After` published: kept if it ends later than the one already there.
const BACK_OFF: &str = r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
";

pub struct Fleet {
    conn: ConnectionManager,
    prefix: String,
    op_timeout: Duration,
    pub(crate) flight_wait: Duration,
    up: AtomicBool,
    /// While down: when the last operation was tried.
    last_try: Mutex<Option<Instant>>,
    pub metrics: FleetMetrics,
    get_or_lock: redis::Script,
    unlock: redis::Script,
    admit: redis::Script,
    back_off: redis::Script,
    purge: redis::Script,
    heartbeat: redis::Script,
    tenant_rate: redis::Script,
    rate_token: redis::Script,
    /// This replica among the fleet's (random, for this process).
    replica: String,
    /// Replicas alive when the store was last asked (this one included).
    alive: AtomicU32,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the connection: its address may carry the password.
        f.debug_struct("Fleet")
            .field("prefix", &self.prefix)
            .field("up", &self.is_up())
            .field("replicas_alive", &self.replicas_alive())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Register the store's families in `registry` (fleet mode only: a replica without Redis
    /// has no fleet store to be down).
    pub(crate) fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "fleet_up",
            "1 while the fleet store (Redis) answers, 0 while this replica runs on its own",
            self.metrics.up.clone(),
        );
        registry.register(
            "fleet_operations",
            "Fleet store operations by kind and outcome (ok, error, timeout, skipped)",
            self.metrics.ops.clone(),
        );
        registry.register(
            "fleet_replicas_alive",
            "Replicas the fleet store last said were alive (heard from within 5 s); while the \
             store is down each keeps the regions' rate over this many",
            self.metrics.replicas_alive.clone(),
        );
    }

    /// The store for `config` (`None` when no `redis_url` is set). Does not connect: the first
    /// operation does, and the connection manager reconnects by itself after that.
    pub fn new(config: &FleetConfig) -> Result<Option<Fleet>, String> {
        let Some(url) = &config.redis_url else {
            return Ok(None);
        };
        let client = match &config.ca_file {
            Some(ca) => {
                let root = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
                redis::Client::build_with_tls(
                    url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root),
                    },
                )
            }
            None => redis::Client::open(url.as_str()),
        }
        // Not the error's text: it may quote the URL, password included.
        .map_err(|e| format!("fleet.redis_url is not usable ({:?})", e.kind()))?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.op_timeout))
            .set_connection_timeout(Some(config.op_timeout.max(Duration::from_millis(200))))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| format!("fleet: {:?}", e.kind()))?;
        let fleet = Fleet {
            conn,
            prefix: config.key_prefix.clone(),
            op_timeout: config.op_timeout,
            flight_wait: config.flight_wait,
            up: AtomicBool::new(true),
            last_try: Mutex::new(None),
            metrics: FleetMetrics::default(),
            get_or_lock: redis::Script::new(GET_OR_LOCK),
            unlock: redis::Script::new(UNLOCK),
            admit: redis::Script::new(ADMIT),
            back_off: redis::Script::new(BACK_OFF),
            purge: redis::Script::new(PURGE),
            heartbeat: redis::Script::new(HEARTBEAT),
            tenant_rate: redis::Script::new(TENANT_RATE),
            rate_token: redis::Script::new(RATE_TOKEN),
            replica: uuid::Uuid::new_v4().simple().to_string(),
            alive: AtomicU32::new(1),
        };
        fleet.metrics.up.set(1);
        fleet.metrics.replicas_alive.set(1);
        Ok(Some(fleet))
    }

    pub fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Replicas the store last said were alive (this one included; 1 before it was asked).
    pub(crate) fn replicas_alive(&self) -> u32 {
        self.alive.load(Ordering::Relaxed)
    }

    /// Tell the store this replica is alive, every [`HEARTBEAT_EVERY`], for as long as the
    /// fleet is in use (the task ends when the last handle on it is dropped), and learn how
    /// many are. While the store is down this is also what notices it is back, traffic or
    /// not.
    pub fn keep_alive(fleet: &std::sync::Arc<Fleet>) {
        if tokio::runtime::Handle::try_current().is_err() {
            return; // not serving (a configuration check)
        }
        let fleet: Weak<Fleet> = std::sync::Arc::downgrade(fleet);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(fleet) = fleet.upgrade() else {
                    return;
                };
                fleet.beat().await;
            }
        });
    }

    async fn beat(&self) {
        let mut conn = self.conn.clone();
        let mut invocation = self.heartbeat.key(self.key("replicas", "alive"));
        invocation.arg(&self.replica).arg(millis(ALIVE_FOR));
        if let Some(n) = self
            .run("heartbeat", invocation.invoke_async::<i64>(&mut conn))
            .await
        {
            let n = n.clamp(1, i64::from(u32::MAX)) as u32;
            self.metrics.replicas_alive.set(i64::from(n));
            if self.alive.swap(n, Ordering::Relaxed) != n {
                tracing::info!(replicas = n, "replicas alive in the fleet");
            }
        }
    }

    /// Skip this operation? Only while down, and not if a probe is due.
    fn skip(&self) -> bool {
        if self.is_up() {
            return false;
        }
        let mut last = self.last_try.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match *last {
            Some(at) if now.saturating_duration_since(at) < PROBE_EVERY => true,
            _ => {
                *last = Some(now);
                false
            }
        }
    }

    fn mark(&self, up: bool, why: &str) {
        let tally = &self.metrics;
        if up {
            tally.done.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            let mut last = tally.last_error.lock().unwrap_or_else(|p| p.into_inner());
            *last = Some((std::time::SystemTime::now(), why.to_string()));
        }
        if self.up.swap(up, Ordering::Relaxed) != up {
            self.metrics.up.set(up as i64);
            if up {
                tracing::info!("fleet store (Redis) reachable again: sharing resumes");
            } else {
                tracing::warn!(
                    error = why,
                    "fleet store (Redis) unavailable: serving from this replica's cache and limits"
                );
            }
        }
    }

    /// `op` within `op_timeout`; `None` when Redis is down, slow or refuses.
    async fn run<T, F>(&self, op: &'static str, command: F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let count = |outcome| {
            self.metrics.ops.get_or_create(&OpLabels { op, outcome }).inc();
        };
        if self.skip() {
            count("skipped");
            return None;
        }
        match tokio::time::timeout(self.op_timeout, command).await {
            Ok(Ok(value)) => {
                count("ok");
                self.mark(true, "");
                Some(value)
            }
            Ok(Err(e)) => {
                count("error");
                // The kind and code, not the text: an error may echo a command's arguments.
                self.mark(false, &format!("{:?} {}", e.kind(), e.code().unwrap_or("")));
                None
            }
            Err(_) => {
                count("timeout");
                self.mark(false, "timed out");
                None
            }
        }
    }

    /// A fresh value under `key` (younger than `ttl`, stored after the last purge of its
    /// scope and of its scope's group), or this replica takes the key's lock for
    /// `flight_wait`, or another replica holds it.
    pub async fn get_or_lock(
        &self,
        key: &str,
        [scope, group]: &[String; 2],
        lock: &str,
        token: &str,
        (ttl, keep): (Duration, Duration),
    ) -> Option<Flight> {
        let mut conn = self.conn.clone();
        let mut invocation = self.get_or_lock.key(key);
        invocation
            .key(lock)
            .key(self.key("purged", scope))
            .key(self.key("purged", "*"))
            .key(self.key("purged", group))
            .arg(token)
            .arg(millis(self.flight_wait))
            .arg(millis(ttl))
            .arg(millis(keep));
        let answer: redis::Value = self
            .run("get_or_lock", invocation.invoke_async(&mut conn))
            .await?;
        let redis::Value::Array(parts) = answer else {
            return None;
        };
        match parts.as_slice() {
            [redis::Value::Int(1), redis::Value::BulkString(value), redis::Value::Int(age)] => Some(
                Flight::Fresh(value.clone(), Duration::from_millis((*age).max(0) as u64)),
            ),
            [redis::Value::Int(2)] => Some(Flight::Holder),
            _ => Some(Flight::Wait),
        }
    }

    /// Every value of these scopes (`"*"`: all) stored until now is no longer served, for as
    /// long as a value is kept.
    pub async fn purge(&self, scopes: &[&str], keep: Duration) -> bool {
        let mut conn = self.conn.clone();
        let mut invocation = self.purge.prepare_invoke();
        for scope in scopes {
            invocation.key(self.key("purged", scope));
        }
        invocation.arg(millis(keep).max(1));
        self.run("purge", invocation.invoke_async::<i64>(&mut conn))
            .await
            .is_some()
    }

    /// Store `value` under `key` for `keep`.
    pub(crate) async fn put(&self, key: &str, value: &[u8], keep: Duration) -> bool {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(millis(keep));
        self.run("put", cmd.query_async::<()>(&mut conn))
            .await
            .is_some()
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.run("get", cmd.query_async::<Option<Vec<u8>>>(&mut conn))
            .await
            .flatten()
    }

    /// Drop the value under `key`.
    pub(crate) async fn forget(&self, key: &str) -> bool {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        self.run("forget", cmd.query_async::<i64>(&mut conn))
            .await
            .is_some()
    }

    /// Many values at once (one round trip), each for `keep`.
    pub(crate) async fn put_many(&self, entries: &[(String, Vec<u8>)], keep: Duration) -> bool {
        if entries.is_empty() {
            return true;
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for (key, value) in entries {
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(millis(keep))
                .ignore();
        }
        self.run("put_many", pipe.query_async::<()>(&mut conn))
            .await
            .is_some()
    }

    /// Give the lock back (only if this replica still holds it).
    pub(crate) async fn unlock(&self, lock: &str, token: &str) {
        let mut conn = self.conn.clone();
        let mut invocation = self.unlock.key(lock);
        invocation.arg(token);
        let _ = self
            .run("unlock", invocation.invoke_async::<i64>(&mut conn))
            .await;
    }

    /// May a call go to `region` now, fleet-wide? `rate` calls per second (0: no limit), with
    /// a burst of `max(rate, 1)` like each replica's own bucket.
    pub(crate) async fn admit(
        &self,
        region: &str,
        tenant: Option<&str>,
        rate: f64,
    ) -> Option<Admission> {
        let (interval, tolerance) = gcra_ms(rate);
        let mut conn = self.conn.clone();
        let mut invocation = self.admit.key(self.key("gcra", region));
        let backoff = self.key("backoff", region);
        let tenant_backoff = tenant.map_or_else(|| backoff.clone(), |t| self.key("backoff", t));
        invocation
            .key(backoff)
            .key(self.key("breaker", region))
            .key(tenant_backoff)
            .arg(interval)
            .arg(tolerance);
        let answer: redis::Value = self.run("admit", invocation.invoke_async(&mut conn)).await?;
        let redis::Value::Array(parts) = answer else {
            return None;
        };
        let ms = |v: &redis::Value| match v {
            redis::Value::Int(n) => Duration::from_millis((*n).max(0) as u64),
            _ => Duration::ZERO,
        };
        Some(match parts.as_slice() {
            [redis::Value::Int(1), wait] => Admission::BackingOff(ms(wait)),
            [redis::Value::Int(2), wait, redis::Value::BulkString(cause)] => {
                Admission::BreakerOpen {
                    cause: String::from_utf8_lossy(cause).into_owned(),
                    retry_in: ms(wait),
                }
            }
            [redis::Value::Int(3), wait] => Admission::Wait(ms(wait)),
            [redis::Value::Int(4), wait] => Admission::TenantBackingOff(ms(wait)),
            _ => Admission::Go,
        })
    }

    /// The fleet's next token for `region` (`rate` a second), reserved: it is this replica's
    /// after the wait returned (`None`: Redis unavailable, the replica's own share stands
    /// alone). A replica's dispatcher reserves one at a time for the call whose turn it is, so
    /// contending replicas are served in the order they reserved, in turn, not by who asks
    /// Redis first when a token comes due.
    pub(crate) async fn reserve_rate_token(&self, region: &str, rate: f64) -> Option<Duration> {
        let (interval, tolerance) = gcra_ms(rate);
        let mut conn = self.conn.clone();
        let mut invocation = self.rate_token.key(self.key("gcra", region));
        invocation.arg(interval).arg(tolerance);
        let wait: i64 = self
            .run("rate_token", invocation.invoke_async(&mut conn))
            .await?;
        Some(Duration::from_millis(wait.max(0) as u64))
    }

    /// May `tenant` (a project's scope, or a project-less caller's token digest) make a
    /// request that needs the regions now, fleet-wide? GCRA in Redis: one request every
    /// `interval`, running at most `tolerance` ahead. `None`: Redis unavailable.
    pub(crate) async fn admit_tenant(
        &self,
        tenant: &str,
        interval: Duration,
        tolerance: Duration,
    ) -> Option<Result<(), Duration>> {
        let mut conn = self.conn.clone();
        let mut invocation = self.tenant_rate.key(self.key("tenant", tenant));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        invocation.arg(ms(interval)).arg(ms(tolerance));
        let wait: f64 = self
            .run("admit_tenant", invocation.invoke_async::<f64>(&mut conn))
            .await?;
        Some(match wait > 0.0 {
            true => Err(Duration::from_secs_f64(wait / 1000.0)),
            false => Ok(()),
        })
    }

    /// A region's `Retry-After` (for one tenant: `region\ntenant`), for every replica to
    /// honour.
    pub(crate) async fn publish_back_off(&self, region: &str, wait: Duration) {
        let mut conn = self.conn.clone();
        let mut invocation = self.back_off.key(self.key("backoff", region));
        invocation.arg(millis(wait).max(1));
        let _ = self
            .run("publish_back_off", invocation.invoke_async::<i64>(&mut conn))
            .await;
    }

    /// A region's breaker opened after `cause`: every replica fails fast for `cooldown`.
    pub(crate) async fn publish_breaker_open(&self, region: &str, cause: &str, cooldown: Duration) {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("breaker", region))
            .arg(cause)
            .arg("PX")
            .arg(millis(cooldown).max(1));
        let _ = self
            .run("publish_breaker_open", cmd.query_async::<()>(&mut conn))
            .await;
    }
}

/// A region's `rate` (calls a second, 0: no limit) as the fleet's GCRA keeps it: the interval
/// between calls and the burst tolerance, in ms (a burst of `max(rate, 1)`, like each
/// replica's own bucket).
fn gcra_ms(rate: f64) -> (u64, u64) {
    let interval = if rate > 0.0 { (1000.0 / rate).ceil() as u64 } else { 0 };
    (interval, interval * (rate.max(1.0) as u64).saturating_sub(1))
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}
