//! Several replicas, one state: `relay.redis_url` puts tokens, dedup markers, conversations,
//! send budgets and the job queue in Redis (through the `redis` crate), so replicas behind a
//! load balancer serve one set of apps.
//!
//! - Dedup: a claim sets a pending marker naming the replica (a Lua script), committed together
//!   with the job it admitted (one script commits the marker and `XADD`s the job). A pending
//!   marker whose replica no longer beats its heartbeat belongs to a replica that died in
//!   between, and is taken over, so WeCom's retry gets in rather than the message being lost.
//! - Tokens: one refresh at a time across replicas, under a lock (`SET NX PX`, released by a
//!   compare-and-delete script), so replicas do not invalidate each other's tokens.
//! - Jobs: [`PARTITIONS`] streams with one consumer group; a user's jobs always go to the same
//!   partition, and one replica at a time holds a partition's lease and works its stream in
//!   order, so each user's messages are answered in order. Progress is kept per job. A replica
//!   that dies stops renewing its leases; another takes the partitions over and first finishes
//!   what the dead one had read but not acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamReadReply;
use redis::{AsyncCommands, Client, Script};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use wecom_relay_core::aibot::stream::{Stream, StreamOp, STREAM_TTL_SECS};
use wecom_relay_core::kv::KeyValue;
use wecom_relay_core::pacing::SendWindow;
use wecom_relay_core::ports::{
    Claim, DedupStore, RefreshLock, SendBudget, StoreError, StreamStore,
};
use wecom_relay_core::{Job, JobState};

use crate::NativeRelay;

/// Job streams; a user's jobs always land in the same one.
pub const PARTITIONS: u32 = 16;
const GROUP: &str = "relay";
const JOB_STATE_TTL_SECS: u64 = 24 * 3600;

fn store_error(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("redis: {e}"))
}

/// A stable partition for a user (FNV-1a: the same on every replica and every build).
pub fn partition(user: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in user.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % PARTITIONS
}

/// The connection to Redis, and the key prefix of this relay's data; clones share them.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

struct Inner {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    /// This replica's name (leases and locks say who holds them).
    me: String,
    /// How long a lease lives without renewal: how soon a dead replica's partitions are
    /// taken over.
    lease_ms: u64,
}

impl Shared {
    /// Connects to `url`; leases live `lease` without renewal.
    pub async fn connect(url: &str, lease: Duration) -> Result<Self, StoreError> {
        Self::connect_prefixed(url, lease, "wecom-relay").await
    }

    /// Like [`Shared::connect`], with this relay's keys under `prefix:` (several relays, or
    /// tests, on one Redis database).
    pub async fn connect_prefixed(
        url: &str,
        lease: Duration,
        prefix: &str,
    ) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(store_error)?;
        let conn = client.get_connection_manager().await.map_err(store_error)?;
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(store_error)?;
        let me = id.iter().map(|b| format!("{b:02x}")).collect();
        let shared = Self(Arc::new(Inner {
            client,
            conn,
            prefix: prefix.into(),
            me,
            lease_ms: (lease.as_millis() as u64).max(1000),
        }));
        // The heartbeat that tells other replicas this one's pending claims are still alive.
        shared.beat().await?;
        let beating = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(beating.renew_every()).await;
                if let Err(e) = beating.beat().await {
                    warn!(error = %e, "replica heartbeat failed");
                }
            }
        });
        Ok(shared)
    }

    async fn beat(&self) -> Result<(), StoreError> {
        let key = self.key(&format!("alive:{}", self.0.me));
        redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("PX")
            .arg(self.0.lease_ms)
            .exec_async(&mut self.conn())
            .await
            .map_err(store_error)
    }

    fn key(&self, parts: &str) -> String {
        format!("{}:{parts}", self.0.prefix)
    }

    fn renew_every(&self) -> Duration {
        Duration::from_millis(self.0.lease_ms / 3)
    }

    fn conn(&self) -> ConnectionManager {
        self.0.conn.clone()
    }

    fn stream(&self, partition: u32) -> String {
        self.key(&format!("jobs:{partition}"))
    }

    /// Commits an accepted job and, in the same script, the dedup claim of its id.
    pub async fn enqueue(&self, job: &Job) -> Result<(), StoreError> {
        let text = serde_json::to_string(job).map_err(store_error)?;
        Script::new(
            r"local v = redis.call('GET', KEYS[1])
              if v then
                local u = string.match(v, '^(%d+):')
                if u then redis.call('SET', KEYS[1], u .. ':c', 'KEEPTTL') end
              end
              return redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])",
        )
        .key(self.key(&format!("dedup:{}", job.id)))
        .key(self.stream(partition(&job.user.key())))
        .arg(text)
        .invoke_async::<String>(&mut self.conn())
        .await
        .map(drop)
        .map_err(store_error)
    }

    /// The jobs waiting in all partitions.
    pub async fn depth(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let mut total = 0;
        for p in 0..PARTITIONS {
            let n: usize = conn.xlen(self.stream(p)).await.map_err(store_error)?;
            total += n;
        }
        Ok(total)
    }

    /// Keeps a job's progress.
    pub async fn save_state(&self, id: &str, state: &JobState) -> Result<(), StoreError> {
        let text = serde_json::to_string(state).map_err(store_error)?;
        self.conn()
            .set_ex(self.key(&format!("job:{id}")), text, JOB_STATE_TTL_SECS)
            .await
            .map_err(store_error)
    }

    async fn load_state(&self, id: &str) -> JobState {
        let text: Option<String> = self
            .conn()
            .get(self.key(&format!("job:{id}")))
            .await
            .unwrap_or(None);
        text.and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Takes or renews the lease on `name`; whether this replica holds it.
    async fn lease(&self, name: &str) -> bool {
        let script = Script::new(
            r"local v = redis.call('GET', KEYS[1])
              if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
              if v then return 0 end
              redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
              return 1",
        );
        let held: Result<i32, _> = script
            .key(self.key(name))
            .arg(&self.0.me)
            .arg(self.0.lease_ms)
            .invoke_async(&mut self.conn())
            .await;
        held == Ok(1)
    }

    /// Lets go of a lease this replica holds.
    async fn release_lease(&self, name: &str) {
        let _: Result<i32, _> = Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
              return 0",
        )
        .key(self.key(name))
        .arg(&self.0.me)
        .invoke_async(&mut self.conn())
        .await;
    }
}

impl KeyValue for Shared {
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .get(self.key(&format!("kv:{key}")))
            .await
            .map_err(store_error)
    }

    async fn put(&self, key: &str, value: String, ttl_secs: u64) -> Result<(), StoreError> {
        self.conn()
            .set_ex(self.key(&format!("kv:{key}")), value, ttl_secs.max(1))
            .await
            .map_err(store_error)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.conn()
            .del(self.key(&format!("kv:{key}")))
            .await
            .map_err(store_error)
    }
}

impl StreamStore for Shared {
    async fn apply(&self, id: &str, op: &StreamOp, now: u64) -> Result<Option<Stream>, StoreError> {
        // Optimistic: read, change, and write only if nobody wrote in between (a
        // compare-and-set script); on a race, read again.
        let script = Script::new(
            r"local v = redis.call('GET', KEYS[1]) or ''
              if v ~= ARGV[1] then return 0 end
              if ARGV[2] == '' then redis.call('DEL', KEYS[1])
              else redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
              return 1",
        );
        let key = self.key(&format!("stream:{id}"));
        for _ in 0..50 {
            let raw: Option<String> = self.conn().get(&key).await.map_err(store_error)?;
            let raw = raw.unwrap_or_default();
            let current = serde_json::from_str::<Stream>(&raw)
                .ok()
                .filter(|s| s.started_at.saturating_add(STREAM_TTL_SECS) > now);
            let next = Stream::apply(current.clone(), op, now);
            if next == current {
                return Ok(next);
            }
            let (text, ttl) = match &next {
                Some(stream) => (
                    serde_json::to_string(stream).map_err(store_error)?,
                    stream
                        .started_at
                        .saturating_add(STREAM_TTL_SECS)
                        .saturating_sub(now)
                        .max(1),
                ),
                None => (String::new(), 1),
            };
            let done: i32 = script
                .key(&key)
                .arg(&raw)
                .arg(&text)
                .arg(ttl)
                .invoke_async(&mut self.conn())
                .await
                .map_err(store_error)?;
            if done == 1 {
                return Ok(next);
            }
        }
        Err(StoreError(format!(
            "redis: stream {id} kept changing under us"
        )))
    }
}

impl DedupStore for Shared {
    async fn claim(&self, key: &str, now: u64, ttl: u64) -> Result<Claim, StoreError> {
        // The marker is `<until>:c` once its job committed, `<until>:p:<replica>` before. It
        // counts while `until` is ahead of the caller's clock, and a pending one only while its
        // replica is alive.
        let script = Script::new(
            r"local v = redis.call('GET', KEYS[1])
              if v then
                local u, state = string.match(v, '^(%d+):(.*)$')
                if u and tonumber(u) > tonumber(ARGV[2]) then
                  if state == 'c' then return 0 end
                  local owner = string.match(state, '^p:(.+)$')
                  if not owner or redis.call('EXISTS', ARGV[4] .. owner) == 1 then return 0 end
                end
              end
              local u = tonumber(ARGV[2]) + tonumber(ARGV[3])
              redis.call('SET', KEYS[1], string.format('%d', u) .. ':p:' .. ARGV[1], 'EX', ARGV[3])
              return 1",
        );
        let fresh: i32 = script
            .key(self.key(&format!("dedup:{key}")))
            .arg(&self.0.me)
            .arg(now)
            .arg(ttl.max(1))
            .arg(self.key("alive:"))
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(if fresh == 1 {
            Claim::Fresh
        } else {
            Claim::Duplicate
        })
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.conn()
            .del(self.key(&format!("dedup:{key}")))
            .await
            .map_err(store_error)
    }
}

impl SendBudget for Shared {
    async fn take(&self, key: &str, now_ms: u64) -> Result<(), Duration> {
        // The rule is the core's SendWindow; the lock makes the read-modify-write atomic
        // across replicas.
        let _guard = self.lock(&format!("budget:{key}")).await;
        let name = self.key(&format!("budget:{key}"));
        let text: Option<String> = self.conn().get(&name).await.unwrap_or(None);
        let mut window: SendWindow = text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        window.take(now_ms)?;
        if let Ok(text) = serde_json::to_string(&window) {
            // A failed write lets the send go: an outage must not stall replies.
            let _: Result<(), _> = self.conn().set_ex(&name, text, 3600 + 60).await;
        }
        Ok(())
    }
}

/// A lock held across replicas; released when dropped.
pub struct SharedGuard {
    shared: Shared,
    name: String,
    held: bool,
}

impl Drop for SharedGuard {
    fn drop(&mut self) {
        if self.held {
            let (shared, name) = (self.shared.clone(), self.name.clone());
            tokio::spawn(async move { shared.release_lease(&name).await });
        }
    }
}

impl RefreshLock for Shared {
    type Guard<'a> = SharedGuard;

    async fn lock<'a>(&'a self, key: &'a str) -> SharedGuard {
        let name = format!("lock:{key}");
        // A holder that died frees the lock when its lease lapses; past that, go ahead
        // unlocked rather than stall (a second token fetch is only a cost).
        let mut held = false;
        for _ in 0..200 {
            if self.lease(&name).await {
                held = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        SharedGuard {
            shared: self.clone(),
            name,
            held,
        }
    }
}

/// Works the job streams: each partition whose lease this replica can take, in order, until
/// `stop` is set.
pub fn spawn_partitions(
    relay: Arc<NativeRelay>,
    shared: Shared,
    stop: Arc<AtomicBool>,
    tracker: &TaskTracker,
) {
    for p in 0..PARTITIONS {
        let (relay, shared, stop) = (relay.clone(), shared.clone(), stop.clone());
        tracker.spawn(async move {
            if let Err(e) = work_partition(&relay, &shared, p, &stop).await {
                warn!(partition = p, error = %e, "job partition stopped");
            }
        });
    }
}

async fn work_partition(
    relay: &NativeRelay,
    shared: &Shared,
    p: u32,
    stop: &AtomicBool,
) -> Result<(), StoreError> {
    let stream = shared.stream(p);
    let lease = format!("lease:{p}");
    // Its own connection, reconnecting by itself, that waits longer than a blocking read: a
    // blocking read must not hold up the replica's other commands.
    let config = ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    let mut conn = shared
        .0
        .client
        .get_connection_manager_with_config(config)
        .await
        .map_err(store_error)?;
    let created: Result<(), _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    if let Err(e) = created {
        if !e.to_string().contains("BUSYGROUP") {
            return Err(store_error(e));
        }
    }
    // One consumer name per partition: whoever holds the lease reads as it, and so first
    // finds what a previous holder read but never acknowledged.
    let consumer = format!("partition-{p}");
    let mut holding = false;
    while !stop.load(Ordering::SeqCst) {
        if !shared.lease(&lease).await {
            if holding {
                info!(partition = p, "job partition lease lost");
                holding = false;
            }
            tokio::time::sleep(shared.renew_every()).await;
            continue;
        }
        if !holding {
            info!(partition = p, "job partition taken");
            holding = true;
        }
        // Redis may blip; the job stays in the stream, so wait and read again.
        if let Err(e) = work_one(relay, shared, &mut conn, &stream, &consumer, &lease).await {
            warn!(partition = p, error = %e, "job partition read failed, retrying");
            tokio::time::sleep(shared.renew_every()).await;
        }
    }
    if holding {
        shared.release_lease(&lease).await;
    }
    Ok(())
}

/// Reads and runs one job of the partition, if one comes within a second.
async fn work_one(
    relay: &NativeRelay,
    shared: &Shared,
    conn: &mut ConnectionManager,
    stream: &str,
    consumer: &str,
    lease: &str,
) -> Result<(), StoreError> {
    let mut entry = read(conn, stream, consumer, "0", None).await?;
    if entry.is_none() {
        entry = read(conn, stream, consumer, ">", Some(1000)).await?;
    }
    let Some((id, job)) = entry else {
        return Ok(());
    };
    if let Some(job) = job {
        let state = shared.load_state(&job.id).await;
        let renewing = keep_lease(shared.clone(), lease.to_owned());
        relay.resume_job(&job, state).await;
        renewing.abort();
        let _: Result<(), _> = shared
            .conn()
            .del(shared.key(&format!("job:{}", job.id)))
            .await;
    }
    redis::pipe()
        .cmd("XACK")
        .arg(stream)
        .arg(GROUP)
        .arg(&id)
        .ignore()
        .cmd("XDEL")
        .arg(stream)
        .arg(&id)
        .ignore()
        .exec_async(conn)
        .await
        .map_err(store_error)
}

/// Renews a lease while a job runs.
fn keep_lease(shared: Shared, lease: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(shared.renew_every()).await;
            if !shared.lease(&lease).await {
                warn!(%lease, "could not renew a job partition lease while a job ran");
            }
        }
    })
}

/// The next entry: one pending for `consumer` (`id` "0") or a new one (`id` ">"). An entry
/// whose job cannot be read is returned without one, to be acknowledged and dropped.
async fn read(
    conn: &mut ConnectionManager,
    stream: &str,
    consumer: &str,
    id: &str,
    block_ms: Option<u64>,
) -> Result<Option<(String, Option<Job>)>, StoreError> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(1);
    if let Some(ms) = block_ms {
        cmd.arg("BLOCK").arg(ms);
    }
    cmd.arg("STREAMS").arg(stream).arg(id);
    let reply: Option<StreamReadReply> = cmd.query_async(conn).await.map_err(store_error)?;
    let Some(entry) = reply
        .and_then(|r| r.keys.into_iter().next())
        .and_then(|k| k.ids.into_iter().next())
    else {
        return Ok(None);
    };
    let job = match entry.map.get("job") {
        Some(redis::Value::BulkString(bytes)) => serde_json::from_slice(bytes).ok(),
        _ => None,
    };
    if job.is_none() {
        warn!(entry = %entry.id, "unreadable job in the stream, dropped");
    }
    Ok(Some((entry.id, job)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::OnceLock;

    fn runtime() -> &'static tokio::runtime::Runtime {
        static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        })
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        runtime().block_on(future)
    }

    /// A store on the test Redis under a prefix of its own.
    fn shared() -> Shared {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let prefix = format!(
            "test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let url = wecom_relay_tests::harness::redis_url(9);
        block_on(Shared::connect_prefixed(
            &url,
            Duration::from_secs(5),
            &prefix,
        ))
        .unwrap()
    }

    mod redis_dedup {
        use super::*;
        wecom_relay_core::dedup_store_contract_tests!(shared(), block_on);
    }
    mod redis_tokens {
        use super::*;
        use wecom_relay_core::kv::KvTokenCache;
        wecom_relay_core::token_cache_contract_tests!(KvTokenCache(shared()), block_on);
    }
    mod redis_conversations {
        use super::*;
        use wecom_relay_core::kv::KvConversations;
        wecom_relay_core::conversation_store_contract_tests!(KvConversations(shared()), block_on);
    }
    mod redis_streams {
        use super::*;
        wecom_relay_core::stream_store_contract_tests!(shared(), block_on);
    }
    mod redis_budget {
        use super::*;
        wecom_relay_core::send_budget_contract_tests!(shared(), block_on);
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition("wwcorpA:alice"), partition("wwcorpA:alice"));
        let used: std::collections::HashSet<u32> = (0..200)
            .map(|i| partition(&format!("ww1:user{i}")))
            .collect();
        assert_eq!(used.len(), PARTITIONS as usize);
    }

    /// Another replica on the same keys, named `me`, that beats no heartbeat.
    fn ghost(of: &Shared, me: &str) -> Shared {
        Shared(Arc::new(Inner {
            client: of.0.client.clone(),
            conn: of.0.conn.clone(),
            prefix: of.0.prefix.clone(),
            me: me.into(),
            lease_ms: 1000,
        }))
    }

    #[test]
    fn a_dead_replicas_pending_claim_is_taken_over_a_live_ones_is_not() {
        let live = shared();
        let dead = ghost(&live, "dead");
        block_on(async {
            let now = 10_000;
            // The dead replica claimed m1 and died before its job was committed.
            assert_eq!(dead.claim("m1", now, 600).await.unwrap(), Claim::Fresh);
            assert_eq!(live.claim("m1", now + 1, 600).await.unwrap(), Claim::Fresh);
            // A live replica's pending claim holds.
            assert_eq!(live.claim("m2", now, 600).await.unwrap(), Claim::Fresh);
            assert_eq!(
                dead.claim("m2", now + 1, 600).await.unwrap(),
                Claim::Duplicate
            );
        });
    }

    #[test]
    fn the_refresh_lock_is_held_by_one_replica_at_a_time() {
        let a = shared();
        let b = ghost(&a, "other");
        block_on(async {
            let guard = a.lock("app").await;
            assert!(guard.held);
            assert!(!b.lease("lock:app").await, "the other replica waits");
            drop(guard);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(b.lease("lock:app").await, "released on drop");
        });
    }
}
