//! Ports: the few effects a relay needs, as small traits the twins implement.
//!
//! Each trait states its consistency contract: what an implementation may get wrong and what the
//! core does about it. Futures are `Send` so the native twin can spawn them; the Worker wraps its
//! JS futures with workers-rs's `SendFuture`, sound on its single-threaded runtime.
//!
//! [`Platform`] bundles them: a twin implements it once, with one associated type per port, and
//! hands it to [`crate::Relay`]. In-memory implementations (`Memory*`) live here for the native
//! twin and tests, with null ones for when a store is not wanted; the KV-backed ones are in
//! [`crate::kv`]. The `testing` feature's contract-test macros check any implementation.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;

use serde::{Deserialize, Serialize};

use crate::http::{HttpRequest, HttpResponse, TransportError};
use crate::ids::AccessToken;
#[cfg(feature = "std")]
use crate::job::Job;
use crate::memory::{HistoryLimits, Turn};
#[cfg(feature = "std")]
use crate::relay::Event;

/// Performs one HTTP request. The only port that talks to the network.
///
/// Contract: a request is sent at most once per call (no hidden retries: retry decisions are
/// the core's); a response with any status is `Ok`; only a transport failure is `Err`.
/// Implementations apply a timeout and report it as [`TransportError::Timeout`].
pub trait HttpClient: Send + Sync {
    /// Sends the request.
    fn send(
        &self,
        req: HttpRequest,
    ) -> impl Future<Output = Result<HttpResponse, TransportError>> + Send;

    /// Sends the request and hands each piece of the response body to `on_chunk` as it
    /// arrives (a streamed answer), returning the response with the whole body too. The
    /// timeout covers the whole exchange. The default reads the body whole, then hands it over.
    fn send_streaming(
        &self,
        req: HttpRequest,
        on_chunk: &mut (dyn FnMut(&[u8]) + Send),
    ) -> impl Future<Output = Result<HttpResponse, TransportError>> + Send {
        async move {
            let resp = self.send(req).await?;
            on_chunk(&resp.body);
            Ok(resp)
        }
    }

    /// Sends the request and reads the body while `more` agrees: it sees each piece as it
    /// arrives and answers `false` to stop reading (a download over its cap), and the response
    /// holds what was read by then. The default reads the body whole, then shows it.
    fn send_capped(
        &self,
        req: HttpRequest,
        more: &mut (dyn FnMut(&[u8]) -> bool + Send),
    ) -> impl Future<Output = Result<HttpResponse, TransportError>> + Send {
        async move {
            let resp = self.send(req).await?;
            more(&resp.body);
            Ok(resp)
        }
    }
}

/// The wall clock.
pub trait Clock: Send + Sync {
    /// Now, in unix seconds.
    fn now_unix(&self) -> u64;
    /// Now, in unix milliseconds, for durations the relay reports (the agent's latency).
    fn now_millis(&self) -> u64 {
        self.now_unix().saturating_mul(1000)
    }
}

#[cfg(feature = "std")]
impl<C: Clock + ?Sized> Clock for alloc::sync::Arc<C> {
    fn now_unix(&self) -> u64 {
        (**self).now_unix()
    }
    fn now_millis(&self) -> u64 {
        (**self).now_millis()
    }
}

/// Timers. Native: `tokio::time::sleep`; Worker: `setTimeout` (workers-rs `Delay`).
pub trait Sleeper: Send + Sync {
    /// Completes after `duration`.
    fn sleep(&self, duration: core::time::Duration) -> impl Future<Output = ()> + Send;
}

/// A source of random bytes for ciphertext prefixes and nonces. Production implementations use
/// the OS or Web Crypto CSPRNG.
pub trait Random: Send + Sync {
    /// Fills `buf`.
    fn fill(&self, buf: &mut [u8]);
}

/// A store failed (network, quota, serialisation). Carries no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store error: {}", self.0)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for StoreError {}

/// An access token with its expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedToken {
    /// The token.
    pub token: AccessToken,
    /// Unix seconds at which WeCom stops accepting it.
    pub expires_at: u64,
    /// Unix seconds from which it should be replaced.
    #[serde(default)]
    pub refresh_at: u64,
}

impl CachedToken {
    /// A token fetched at `now` that lives `expires_in` seconds.
    pub fn new(token: AccessToken, now: u64, expires_in: u64) -> Self {
        let expires_at = now.saturating_add(expires_in);
        Self {
            token,
            expires_at,
            refresh_at: expires_at - crate::wecom::api::refresh_margin(expires_in),
        }
    }

    /// Whether it is time to replace it.
    pub fn needs_refresh(&self, now: u64) -> bool {
        now >= self.refresh_at
    }
}

/// Caches access tokens per app (each app has its own secret, so its own token).
///
/// Contract:
/// - `get` may return a token that WeCom has already invalidated, or a stale one from another
///   replica or location: false positives are allowed, because the core drops a token that
///   WeCom rejects (40014/42001) and fetches again.
/// - `get` may miss (false negatives): the core then fetches a new token, which is only a cost.
/// - `get` never returns a token past its `expires_at`.
/// - `invalidate` removes the entry only if it still holds that token, so a token another
///   worker just fetched is not thrown away: the newest fetch wins.
pub trait TokenCache: Send + Sync {
    /// The cached token of `app`, if any and unexpired at `now`.
    fn get(&self, app: &str, now: u64) -> impl Future<Output = Option<CachedToken>> + Send;
    /// Stores a freshly fetched token.
    fn put(&self, app: &str, token: CachedToken, now: u64) -> impl Future<Output = ()> + Send;
    /// Drops `token` if it is still the cached one.
    fn invalidate(&self, app: &str, token: &AccessToken) -> impl Future<Output = ()> + Send;
}

/// Keeps each member's [`crate::pacing::SendWindow`], so that no member gets more than WeCom
/// delivers (30 messages a minute, 1,000 an hour, per app).
///
/// Contract: `take` counts a send and returns `Ok`, or returns how long until one is free and
/// counts nothing. Concurrent takes for one key must not both succeed past the limit where the
/// backend allows atomicity (memory, Redis); an eventually consistent backend may let a few
/// through, and a failing backend lets the send go (a store outage must not stall replies).
pub trait SendBudget: Send + Sync {
    /// Takes one send from `key`'s budget at `now_ms`.
    fn take(
        &self,
        key: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), core::time::Duration>> + Send;
}

/// Whether a dedup claim made the caller the first to see a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// No live marker existed; one now does. Process the message, or `release` on failure.
    Fresh,
    /// A live marker exists: this is a retry or a replay.
    Duplicate,
}

/// Remembers which callbacks were accepted, for `ttl` seconds.
///
/// Contract:
/// - `claim` is atomic where the backend allows it (memory, Redis `SET NX`): of two concurrent
///   claims of one key, one is `Fresh`. An eventually consistent backend (Workers KV) may let
///   both through; the twin documents this, and a duplicate reply is the failure mode, never a
///   lost message.
/// - A marker lives at least `ttl` seconds unless released.
/// - `release` removes a claim whose job could not be accepted, so WeCom's retry is processed.
/// - On `Err`, the caller must treat the message as not accepted (answer non-200 so WeCom
///   retries) rather than guess.
pub trait DedupStore: Send + Sync {
    /// Claims `key` until `now + ttl`.
    fn claim(
        &self,
        key: &str,
        now: u64,
        ttl: u64,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;
    /// Releases a claim.
    fn release(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Conversation memory per scoped user (`ScopedUser::key`).
///
/// Contract: `append` applies [`crate::memory::trim_history`] with the given limits; `load` returns turns in
/// order, oldest first. Concurrent appends for one user may be lost on eventually consistent
/// backends; the relay processes one user's messages in order, so this needs no locking there.
pub trait ConversationStore: Send + Sync {
    /// The stored turns.
    fn load(&self, user: &str) -> impl Future<Output = Result<Vec<Turn>, StoreError>> + Send;
    /// Appends turns and trims.
    fn append(
        &self,
        user: &str,
        turns: Vec<Turn>,
        limits: HistoryLimits,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Forgets the user's conversation.
    fn clear(&self, user: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The AI bot's streams ([`crate::aibot::stream::Stream`]), shared by the job that writes a
/// stream and the refresh callbacks that read it, which may land on another process.
///
/// Contract: `apply` is atomic per id: it reads the stream, computes
/// [`crate::aibot::stream::Stream::apply`] and stores the result (keeping it at least
/// [`crate::aibot::stream::STREAM_TTL_SECS`]) with no other `apply` to the same id in between,
/// and returns what it stored. It must be strongly consistent (never Workers KV): a refresh
/// that read a stale stream would show content shrinking, or miss the end.
#[cfg(feature = "std")]
pub trait StreamStore: Send + Sync {
    /// Applies `op` at `now` to stream `id`; the stream afterwards (`None`: no such stream).
    fn apply(
        &self,
        id: &str,
        op: &crate::aibot::stream::StreamOp,
        now: u64,
    ) -> impl Future<Output = Result<Option<crate::aibot::stream::Stream>, StoreError>> + Send;
}

/// Serialises token refreshes per key, so concurrent callers fetch one token, not many.
///
/// Contract: while a guard for a key is held, `lock` for the same key waits. Distinct keys do
/// not wait on each other. The Worker needs none (a token fetched twice is only a cost).
pub trait RefreshLock: Send + Sync {
    /// Held while refreshing.
    type Guard<'a>: Send
    where
        Self: 'a;
    /// Waits for the key's lock.
    fn lock<'a>(&'a self, key: &'a str) -> impl Future<Output = Self::Guard<'a>> + Send;
}

/// No serialisation.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRefreshLock;

impl RefreshLock for NoRefreshLock {
    type Guard<'a> = ();
    async fn lock<'a>(&'a self, _key: &'a str) {}
}

#[cfg(feature = "std")]
/// Where accepted jobs go: a per-user task queue on native, a Cloudflare Queue or `waitUntil`
/// on the Worker, a durable queue later. Whatever runs them calls [`crate::Relay::run_job`] (or
/// [`crate::Relay::step_job`] once per delivery).
///
/// Contract: `Ok` means the job will run (or has been durably stored to run) even if the caller
/// returns at once; `Err` means it will not, and the callback must not be acknowledged as
/// processed.
pub trait JobSink: Send + Sync {
    /// Hands over one job.
    fn submit(&self, job: Job) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Keeps a running job's progress: called once the replies are known and after each part
    /// WeCom accepted, so a job resumed after a crash neither asks the agent again nor sends a
    /// part twice. A sink without durable storage keeps nothing (the default).
    fn progress(&self, job: &Job, state: &crate::job::JobState) -> impl Future<Output = ()> + Send {
        let _ = (job, state);
        core::future::ready(())
    }
}

#[cfg(feature = "std")]
/// The sink refused a job (shutting down, queue unavailable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError(pub String);

#[cfg(feature = "std")]
/// Everything a relay needs from the machine it runs on, in one bundle: a twin implements this
/// once and never names the core's internals.
///
/// `observe` is where the core's decisions become log lines and metrics: each [`Event`] has a
/// level and a `Display` that is the line to write, the same on every twin.
pub trait Platform: Send + Sync {
    /// HTTP for WeCom's API and the agent.
    type Http: HttpClient;
    /// Access tokens.
    type Tokens: TokenCache;
    /// Dedup markers.
    type Dedup: DedupStore;
    /// Conversation memory.
    type Conversations: ConversationStore;
    /// Serialises token refreshes.
    type Lock: RefreshLock;
    /// The wall clock.
    type Clock: Clock;
    /// Timers.
    type Sleeper: Sleeper;
    /// Random bytes (retry jitter).
    type Random: Random;
    /// The members' send budgets.
    type Budget: SendBudget;
    /// The AI bot's streams.
    type Streams: StreamStore;
    /// Where accepted jobs go.
    type Sink: JobSink;

    /// HTTP for WeCom's API, with the API timeout.
    fn api_http(&self) -> &Self::Http;
    /// HTTP for the agent, with the agent's timeout.
    fn agent_http(&self) -> &Self::Http;
    /// HTTP for media by URL (inbound pictures, outbound attachments). URLs are checked by
    /// [`crate::media::MediaPolicy`] first; a twin that resolves names itself should also
    /// refuse the addresses the policy refuses. The default is the agent's.
    fn media_http(&self) -> &Self::Http {
        self.agent_http()
    }
    /// The token cache.
    fn tokens(&self) -> &Self::Tokens;
    /// The dedup store.
    fn dedup(&self) -> &Self::Dedup;
    /// The conversation store.
    fn conversations(&self) -> &Self::Conversations;
    /// The refresh lock.
    fn refresh_lock(&self) -> &Self::Lock;
    /// The clock.
    fn clock(&self) -> &Self::Clock;
    /// The timers.
    fn sleeper(&self) -> &Self::Sleeper;
    /// The random source.
    fn random(&self) -> &Self::Random;
    /// The send budgets.
    fn budget(&self) -> &Self::Budget;
    /// The job sink.
    fn sink(&self) -> &Self::Sink;
    /// The AI bot's streams.
    fn streams(&self) -> &Self::Streams;
    /// Writes the event's line at its level and counts it. The default drops it.
    fn observe(&self, event: &Event<'_>) {
        let _ = event;
    }
    /// Counts the event without writing its line (a warning past the relay's per-second
    /// budget, [`crate::relay::REQUEST_WARNINGS_PER_SEC`]). The default drops it.
    fn count(&self, event: &Event<'_>) {
        let _ = event;
    }
    /// The metrics exposition served at `GET /metrics`, if this twin keeps metrics.
    fn metrics(&self) -> Option<String> {
        None
    }
}

/// One of two implementations of a port, chosen at run time (a twin whose state lives in one
/// place or another, by configuration).
#[derive(Debug, Clone)]
pub enum Either<L, R> {
    /// The first.
    Left(L),
    /// The second.
    Right(R),
}

impl<L: TokenCache, R: TokenCache> TokenCache for Either<L, R> {
    async fn get(&self, app: &str, now: u64) -> Option<CachedToken> {
        match self {
            Self::Left(l) => l.get(app, now).await,
            Self::Right(r) => r.get(app, now).await,
        }
    }
    async fn put(&self, app: &str, token: CachedToken, now: u64) {
        match self {
            Self::Left(l) => l.put(app, token, now).await,
            Self::Right(r) => r.put(app, token, now).await,
        }
    }
    async fn invalidate(&self, app: &str, token: &AccessToken) {
        match self {
            Self::Left(l) => l.invalidate(app, token).await,
            Self::Right(r) => r.invalidate(app, token).await,
        }
    }
}

impl<L: DedupStore, R: DedupStore> DedupStore for Either<L, R> {
    async fn claim(&self, key: &str, now: u64, ttl: u64) -> Result<Claim, StoreError> {
        match self {
            Self::Left(l) => l.claim(key, now, ttl).await,
            Self::Right(r) => r.claim(key, now, ttl).await,
        }
    }
    async fn release(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Left(l) => l.release(key).await,
            Self::Right(r) => r.release(key).await,
        }
    }
}

#[cfg(feature = "std")]
impl<L: StreamStore, R: StreamStore> StreamStore for Either<L, R> {
    async fn apply(
        &self,
        id: &str,
        op: &crate::aibot::stream::StreamOp,
        now: u64,
    ) -> Result<Option<crate::aibot::stream::Stream>, StoreError> {
        match self {
            Self::Left(l) => l.apply(id, op, now).await,
            Self::Right(r) => r.apply(id, op, now).await,
        }
    }
}

impl<L: ConversationStore, R: ConversationStore> ConversationStore for Either<L, R> {
    async fn load(&self, user: &str) -> Result<Vec<Turn>, StoreError> {
        match self {
            Self::Left(l) => l.load(user).await,
            Self::Right(r) => r.load(user).await,
        }
    }
    async fn append(
        &self,
        user: &str,
        turns: Vec<Turn>,
        limits: HistoryLimits,
    ) -> Result<(), StoreError> {
        match self {
            Self::Left(l) => l.append(user, turns, limits).await,
            Self::Right(r) => r.append(user, turns, limits).await,
        }
    }
    async fn clear(&self, user: &str) -> Result<(), StoreError> {
        match self {
            Self::Left(l) => l.clear(user).await,
            Self::Right(r) => r.clear(user).await,
        }
    }
}

impl<L: SendBudget, R: SendBudget> SendBudget for Either<L, R> {
    async fn take(&self, key: &str, now_ms: u64) -> Result<(), core::time::Duration> {
        match self {
            Self::Left(l) => l.take(key, now_ms).await,
            Self::Right(r) => r.take(key, now_ms).await,
        }
    }
}

/// A token cache that caches nothing: every call fetches.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullTokenCache;

impl TokenCache for NullTokenCache {
    async fn get(&self, _app: &str, _now: u64) -> Option<CachedToken> {
        None
    }
    async fn put(&self, _app: &str, _token: CachedToken, _now: u64) {}
    async fn invalidate(&self, _app: &str, _token: &AccessToken) {}
}

/// A dedup store that remembers nothing: every claim is fresh.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullDedup;

impl DedupStore for NullDedup {
    async fn claim(&self, _key: &str, _now: u64, _ttl: u64) -> Result<Claim, StoreError> {
        Ok(Claim::Fresh)
    }
    async fn release(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(feature = "std")]
pub use memory::{
    MemoryConversations, MemoryDedup, MemorySendBudget, MemoryStreams, MemoryTokenCache,
};

#[cfg(feature = "std")]
mod memory {
    use super::*;
    use crate::memory::trim_history;
    use alloc::boxed::Box;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Amortised sweeps of expired entries: only when a map has doubled since it was last
    /// cleaned, so each insert costs O(1) on average.
    fn worth_sweeping(len: usize) -> bool {
        len >= 1024 && len.is_power_of_two()
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tokens in process memory.
    #[derive(Debug, Default)]
    pub struct MemoryTokenCache {
        tokens: Mutex<HashMap<String, CachedToken>>,
    }

    impl TokenCache for MemoryTokenCache {
        async fn get(&self, app: &str, now: u64) -> Option<CachedToken> {
            lock(&self.tokens)
                .get(app)
                .filter(|t| t.expires_at > now)
                .cloned()
        }
        async fn put(&self, app: &str, token: CachedToken, _now: u64) {
            lock(&self.tokens).insert(app.into(), token);
        }
        async fn invalidate(&self, app: &str, token: &AccessToken) {
            let mut tokens = lock(&self.tokens);
            if tokens.get(app).is_some_and(|t| &t.token == token) {
                tokens.remove(app);
            }
        }
    }

    /// Dedup markers in process memory; expired markers are swept as new ones arrive.
    ///
    /// A marker is held as a 96-bit fingerprint of its key and its expiry in whole
    /// seconds (`now` and `ttl` are seconds, as the relay passes them; a `u32` lasts until
    /// 2106): 16 bytes in the map instead of about a hundred for the key, which is most of the
    /// dedup memory when many messages arrive. Two keys share a fingerprint with a chance of
    /// about n²/2⁹⁷ for n markers (below 10⁻¹⁷ for a million), and nobody outside the process
    /// knows the hash keys to aim for one.
    #[derive(Debug, Default)]
    pub struct MemoryDedup {
        markers: Mutex<FpMap<u32>>,
        fingerprint: Fingerprint,
    }

    /// Two independently keyed hashers.
    #[derive(Debug, Default)]
    struct Fingerprint(std::hash::RandomState, std::hash::RandomState);

    impl Fingerprint {
        fn of(&self, key: &str) -> Fp {
            use std::hash::BuildHasher;
            let (a, b) = (self.0.hash_one(key), self.1.hash_one(key));
            Fp([(a >> 32) as u32, a as u32, b as u32])
        }
    }

    /// 96 bits of a key's two keyed digests: twelve bytes aligned to four, so a map entry of a
    /// fingerprint and a `u32` is 16 bytes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Fp([u32; 3]);

    impl std::hash::Hash for Fp {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            // Already a keyed hash: its first 64 bits serve the map as they are.
            state.write_u64((u64::from(self.0[0]) << 32) | u64::from(self.0[1]));
        }
    }

    /// The hasher of maps keyed by [`Fp`]: it keeps the 64 bits it is given, so a lookup
    /// hashes the key once (the fingerprint), not twice.
    #[derive(Default)]
    struct Given(u64);

    impl std::hash::Hasher for Given {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write_u64(&mut self, v: u64) {
            self.0 = v;
        }
        fn write(&mut self, bytes: &[u8]) {
            // `Fp` hashes as one `u64`; anything else is folded in all the same.
            for &b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(b);
            }
        }
    }

    type FpMap<V> = HashMap<Fp, V, std::hash::BuildHasherDefault<Given>>;

    #[cfg(test)]
    mod layout {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;

        #[test]
        fn a_dedup_marker_is_sixteen_bytes_in_its_map() {
            assert_eq!(core::mem::size_of::<(Fp, u32)>(), 16);
            let fingerprint = Fingerprint::default();
            assert_ne!(fingerprint.of("ww1:1:m:1"), fingerprint.of("ww1:1:m:2"));
            assert_ne!(
                fingerprint.of("k"),
                Fingerprint::default().of("k"),
                "each store draws its own keys"
            );
        }
    }

    impl MemoryDedup {
        /// Live and expired markers not yet swept.
        pub fn len(&self) -> usize {
            lock(&self.markers).len()
        }

        /// Whether no marker is held.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }

    impl DedupStore for MemoryDedup {
        async fn claim(&self, key: &str, now: u64, ttl: u64) -> Result<Claim, StoreError> {
            let id = self.fingerprint.of(key);
            let mut markers = lock(&self.markers);
            if markers
                .get(&id)
                .is_some_and(|&until| u64::from(until) > now)
            {
                return Ok(Claim::Duplicate);
            }
            if worth_sweeping(markers.len()) {
                markers.retain(|_, until| u64::from(*until) > now);
            }
            let until = u32::try_from(now.saturating_add(ttl)).unwrap_or(u32::MAX);
            markers.insert(id, until);
            Ok(Claim::Fresh)
        }
        async fn release(&self, key: &str) -> Result<(), StoreError> {
            let id = self.fingerprint.of(key);
            lock(&self.markers).remove(&id);
            Ok(())
        }
    }

    /// Send budgets in process memory; idle windows are swept as new ones arrive.
    ///
    /// Members are held by the fingerprint of their key, as in [`MemoryDedup`] (two members
    /// sharing one would only share a budget), and each window packed
    /// ([`crate::pacing::SendWindow::pack`]): a member sent one message costs about 80 bytes
    /// for the hour, where the window as it is used costs about 300.
    #[derive(Debug, Default)]
    pub struct MemorySendBudget {
        windows: Mutex<FpMap<Box<[u8]>>>,
        fingerprint: Fingerprint,
    }

    impl SendBudget for MemorySendBudget {
        async fn take(&self, key: &str, now_ms: u64) -> Result<(), core::time::Duration> {
            use crate::pacing::SendWindow;
            // A new member's slot is empty, which unpacks to nothing: a window not yet used.
            let unpack = |packed: &[u8]| SendWindow::unpack(packed).unwrap_or_default();
            let mut windows = lock(&self.windows);
            if windows.len() >= 1024 && windows.len().is_power_of_two() {
                windows.retain(|_, w| !unpack(w).is_idle(now_ms));
            }
            let slot = windows.entry(self.fingerprint.of(key)).or_default();
            let mut window = unpack(slot);
            let taken = window.take(now_ms);
            *slot = window.pack();
            taken
        }
    }

    /// Conversations in process memory, within a budget of bytes: when they outgrow it, the
    /// least recently active are forgotten first, down to three quarters of it (so a sweep,
    /// which sorts, happens at most once per quarter-budget of new text).
    #[derive(Debug)]
    pub struct MemoryConversations {
        state: Mutex<HeldConversations>,
        budget: usize,
    }

    #[derive(Debug, Default)]
    struct HeldConversations {
        by_user: HashMap<String, Held>,
        bytes: usize,
        tick: u64,
    }

    #[derive(Debug)]
    struct Held {
        turns: Vec<Turn>,
        used: u64,
    }

    /// What one held conversation costs beyond its text: its key, its map entry and one turn
    /// record per turn, roughly as the allocator sees them.
    fn held_bytes(user: &str, turns: &[Turn]) -> usize {
        const ENTRY: usize = 96;
        const TURN: usize = 48;
        ENTRY + user.len() + turns.iter().map(|t| TURN + t.text.len()).sum::<usize>()
    }

    impl MemoryConversations {
        /// The default budget: 8 MiB, a few thousand conversations of a few turns.
        pub const DEFAULT_BUDGET: usize = 8 << 20;

        /// Conversations within `budget` bytes.
        pub fn with_budget(budget: usize) -> Self {
            Self {
                state: Mutex::default(),
                budget,
            }
        }

        /// Bytes held, as the budget counts them.
        pub fn bytes(&self) -> usize {
            lock(&self.state).bytes
        }

        /// Conversations held.
        pub fn len(&self) -> usize {
            lock(&self.state).by_user.len()
        }

        /// Whether none is held.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }

    impl Default for MemoryConversations {
        fn default() -> Self {
            Self::with_budget(Self::DEFAULT_BUDGET)
        }
    }

    impl HeldConversations {
        fn forget(&mut self, user: &str) {
            if let Some(held) = self.by_user.remove(user) {
                self.bytes -= held_bytes(user, &held.turns);
            }
        }

        /// Forgets the least recently active conversations until three quarters of
        /// `budget` are left.
        fn fit(&mut self, budget: usize) {
            if self.bytes <= budget {
                return;
            }
            let mut by_age: Vec<(u64, &str)> = self
                .by_user
                .iter()
                .map(|(user, held)| (held.used, user.as_str()))
                .collect();
            by_age.sort_unstable();
            let target = budget - budget / 4;
            let mut bytes = self.bytes;
            let mut gone = Vec::new();
            for (_, user) in by_age {
                if bytes <= target {
                    break;
                }
                bytes -= held_bytes(user, &self.by_user[user].turns);
                gone.push(String::from(user));
            }
            for user in gone {
                self.forget(&user);
            }
        }
    }

    impl ConversationStore for MemoryConversations {
        async fn load(&self, user: &str) -> Result<Vec<Turn>, StoreError> {
            let mut state = lock(&self.state);
            state.tick += 1;
            let tick = state.tick;
            Ok(match state.by_user.get_mut(user) {
                Some(held) => {
                    held.used = tick;
                    held.turns.clone()
                }
                None => Vec::new(),
            })
        }
        async fn append(
            &self,
            user: &str,
            turns: Vec<Turn>,
            limits: HistoryLimits,
        ) -> Result<(), StoreError> {
            let mut state = lock(&self.state);
            state.tick += 1;
            let used = state.tick;
            let mut history = match state.by_user.remove(user) {
                Some(held) => {
                    state.bytes -= held_bytes(user, &held.turns);
                    held.turns
                }
                None => Vec::new(),
            };
            history.extend(turns);
            trim_history(&mut history, limits);
            state.bytes += held_bytes(user, &history);
            state.by_user.insert(
                user.into(),
                Held {
                    turns: history,
                    used,
                },
            );
            state.fit(self.budget);
            Ok(())
        }
        async fn clear(&self, user: &str) -> Result<(), StoreError> {
            lock(&self.state).forget(user);
            Ok(())
        }
    }

    /// Streams in process memory, each dropped [`crate::aibot::stream::STREAM_TTL_SECS`] after
    /// it started (swept, amortised, as new ones open).
    #[derive(Debug, Default)]
    pub struct MemoryStreams {
        streams: Mutex<HashMap<String, crate::aibot::stream::Stream>>,
    }

    impl MemoryStreams {
        /// Streams held, live or not yet swept.
        pub fn len(&self) -> usize {
            lock(&self.streams).len()
        }

        /// Whether none is held.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }

    impl StreamStore for MemoryStreams {
        async fn apply(
            &self,
            id: &str,
            op: &crate::aibot::stream::StreamOp,
            now: u64,
        ) -> Result<Option<crate::aibot::stream::Stream>, StoreError> {
            use crate::aibot::stream::{Stream, StreamOp, STREAM_TTL_SECS};
            let mut streams = lock(&self.streams);
            let alive = |s: &Stream| s.started_at.saturating_add(STREAM_TTL_SECS) > now;
            if matches!(op, StreamOp::Open { .. }) && worth_sweeping(streams.len()) {
                streams.retain(|_, s| alive(s));
            }
            let current = streams.get(id).filter(|s| alive(s)).cloned();
            let next = Stream::apply(current, op, now);
            match &next {
                Some(s) => {
                    streams.insert(id.into(), s.clone());
                }
                None => {
                    streams.remove(id);
                }
            }
            Ok(next)
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::testing::block_on;
    #[allow(unused_imports)]
    use crate::testing::*;
    use alloc::string::ToString;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    mod memory_dedup {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;
        crate::dedup_store_contract_tests!(MemoryDedup::default(), block_on);
    }
    mod memory_tokens {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;
        crate::token_cache_contract_tests!(MemoryTokenCache::default(), block_on);
    }
    mod memory_budget {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;
        crate::send_budget_contract_tests!(MemorySendBudget::default(), block_on);
    }
    mod memory_streams {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;
        crate::stream_store_contract_tests!(MemoryStreams::default(), block_on);
    }
    mod memory_conversations {
        use super::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;
        crate::conversation_store_contract_tests!(MemoryConversations::default(), block_on);

        /// Many members' conversations stay within the budget; the least recently active are
        /// forgotten first, and reading a conversation counts as activity.
        #[test]
        fn stay_within_their_budget_forgetting_the_least_recently_active() {
            let store = MemoryConversations::with_budget(64 * 1024);
            let limits = HistoryLimits::default();
            let said = |text: &str| {
                alloc::vec![Turn {
                    role: crate::memory::Role::User,
                    text: text.into(),
                }]
            };
            block_on(store.append("first", said("remember me"), limits)).unwrap();
            for i in 0..2_000 {
                let user = alloc::format!("member{i}");
                block_on(store.append(&user, said(&"x".repeat(100)), limits)).unwrap();
                assert!(store.bytes() <= 64 * 1024, "{} bytes held", store.bytes());
                // "first" keeps talking; it is never the least recently active.
                if i % 50 == 0 {
                    assert_eq!(block_on(store.load("first")).unwrap().len(), 1, "{i}");
                }
            }
            assert!(store.len() > 100, "{} held", store.len());
            assert!(block_on(store.load("member0")).unwrap().is_empty());
            assert_eq!(block_on(store.load("member1999")).unwrap().len(), 1);
            block_on(store.clear("first")).unwrap();
            let without = store.bytes();
            assert!(block_on(store.load("first")).unwrap().is_empty());
            assert_eq!(without, store.bytes());
        }
    }

    #[test]
    fn memory_streams_are_dropped_an_hour_after_they_started() {
        use crate::aibot::stream::{StreamOp, STREAM_TTL_SECS};
        let store = MemoryStreams::default();
        let open = StreamOp::Open {
            bot: "b".into(),
            response_url: None,
        };
        block_on(async {
            // One stream a second for three hours: at most an hour's worth is held.
            for i in 0..3 * STREAM_TTL_SECS {
                store.apply(&i.to_string(), &open, i).await.unwrap();
            }
        });
        // Swept when the map doubles: at most twice the live hour.
        assert!(
            store.len() <= 2 * (STREAM_TTL_SECS as usize + 1),
            "{} streams kept",
            store.len()
        );
    }

    #[test]
    fn memory_dedup_sweeps_expired_markers() {
        let store = MemoryDedup::default();
        block_on(async {
            for i in 0..5000 {
                store.claim(&i.to_string(), i, 10).await.unwrap();
            }
        });
        assert!(store.len() < 2100, "{} markers kept", store.len());
    }

    #[test]
    fn memory_dedup_tells_apart_keys_that_differ_in_one_character() {
        // Markers are fingerprints of their keys: a weak one would call a new message a retry.
        let store = MemoryDedup::default();
        let keys: Vec<String> = (0..50_000u64)
            .map(|i| alloc::format!("wwcorp:1000002:{}", 7_000_000_000_000_000_000 + i))
            .collect();
        block_on(async {
            for key in &keys {
                assert_eq!(
                    store.claim(key, 0, 60).await.unwrap(),
                    Claim::Fresh,
                    "{key}"
                );
            }
            for key in &keys {
                assert_eq!(store.claim(key, 1, 60).await.unwrap(), Claim::Duplicate);
            }
            store.release(&keys[7]).await.unwrap();
            assert_eq!(store.claim(&keys[7], 2, 60).await.unwrap(), Claim::Fresh);
            assert_eq!(
                store.claim(&keys[8], 2, 60).await.unwrap(),
                Claim::Duplicate
            );
        });
        assert_eq!(store.len(), keys.len());
    }
}
