//! Test support, behind the `testing` feature: a deterministic harness (fixed clock, seeded
//! randomness, scripted HTTP that records every request, a whole [`TestPlatform`]), the
//! contract tests every port implementation runs, and Tencent's official vectors. Nothing here
//! is for production.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Deserialize;

use crate::http::{HttpRequest, HttpResponse, TransportError};
use crate::job::Job;
use crate::ports::{
    Clock, HttpClient, JobSink, MemoryConversations, MemoryDedup, MemorySendBudget, MemoryStreams,
    MemoryTokenCache, NoRefreshLock, Platform, Random, SinkError,
};
use crate::relay::{Event, Level};

/// Drives a future to completion on this thread. For futures that never wait on real I/O
/// (the in-memory ports and the scripted HTTP client), which complete on first poll or soon.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = core::pin::pin!(fut);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    loop {
        if let core::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

/// A sleeper whose timers either fire at once or never.
#[derive(Debug, Clone, Copy)]
pub struct InstantSleeper {
    fires: bool,
}

impl InstantSleeper {
    /// Every timer fires immediately.
    pub fn immediate() -> Self {
        Self { fires: true }
    }

    /// No timer ever fires.
    pub fn never() -> Self {
        Self { fires: false }
    }
}

impl crate::ports::Sleeper for InstantSleeper {
    async fn sleep(&self, _duration: core::time::Duration) {
        if !self.fires {
            core::future::pending::<()>().await;
        }
    }
}

/// Yields to the executor a few times, so a competing ready future wins a race.
pub async fn yield_a_few() {
    for _ in 0..3 {
        let mut yielded = false;
        core::future::poll_fn(|cx| {
            if yielded {
                core::task::Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                core::task::Poll::Pending
            }
        })
        .await;
    }
}

/// A clock that only moves when told (or when a [`VirtualSleeper`] sleeps on it).
#[derive(Debug, Default)]
pub struct FixedClock(AtomicU64);

impl FixedClock {
    /// A clock at `now` (unix seconds).
    pub fn at(now: u64) -> Self {
        Self(AtomicU64::new(now.saturating_mul(1000)))
    }

    /// Moves the clock forward by whole seconds.
    pub fn advance(&self, secs: u64) {
        self.advance_millis(secs.saturating_mul(1000));
    }

    /// Moves the clock forward by milliseconds.
    pub fn advance_millis(&self, millis: u64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_unix(&self) -> u64 {
        self.0.load(Ordering::SeqCst) / 1000
    }
    fn now_millis(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Timers in virtual time: a sleep moves the shared clock forward by its duration and ends at
/// once, so code that waits (pacing, retries) runs instantly and sees time pass. Told to never
/// fire, every sleep stays pending.
#[derive(Debug, Clone)]
pub struct VirtualSleeper {
    clock: Arc<FixedClock>,
    fires: bool,
}

impl VirtualSleeper {
    /// Sleeps that advance `clock`.
    pub fn on(clock: Arc<FixedClock>) -> Self {
        Self { clock, fires: true }
    }

    /// From now on, no sleep ends.
    pub fn never_fire(&mut self) {
        self.fires = false;
    }
}

impl crate::ports::Sleeper for VirtualSleeper {
    async fn sleep(&self, duration: core::time::Duration) {
        if !self.fires {
            core::future::pending::<()>().await;
        }
        self.clock
            .advance_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    }
}

/// Reproducible bytes from a seed (SplitMix64). Not for cryptographic use.
#[derive(Debug)]
pub struct SeededRandom(AtomicU64);

impl SeededRandom {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Random for SeededRandom {
    fn fill(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

type Responder = dyn Fn(&HttpRequest) -> Option<Result<HttpResponse, TransportError>> + Send + Sync;

/// HTTP that answers from a script and records what was asked.
///
/// Answers come first from queued responses (in order), then from the responder function; a
/// request neither can answer gets a 599, which the core classifies as retryable.
#[derive(Clone, Default)]
pub struct ScriptedHttp {
    inner: Arc<Mutex<Script>>,
}

#[derive(Default)]
struct Script {
    queued: VecDeque<Result<HttpResponse, TransportError>>,
    responder: Option<Arc<Responder>>,
    recorded: Vec<HttpRequest>,
}

impl ScriptedHttp {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues one answer.
    pub fn push(&self, answer: Result<HttpResponse, TransportError>) -> &Self {
        self.inner.lock().unwrap().queued.push_back(answer);
        self
    }

    /// Queues a 200 JSON answer.
    pub fn push_json(&self, body: &str) -> &Self {
        self.push(Ok(HttpResponse::json(body)))
    }

    /// Answers requests the queue does not.
    pub fn respond_with(
        &self,
        f: impl Fn(&HttpRequest) -> Option<Result<HttpResponse, TransportError>> + Send + Sync + 'static,
    ) {
        self.inner.lock().unwrap().responder = Some(Arc::new(f));
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.inner.lock().unwrap().recorded.clone()
    }

    /// The paths of every request so far (no query, so no secrets).
    pub fn paths(&self) -> Vec<String> {
        self.requests().iter().map(|r| r.path().into()).collect()
    }
}

impl HttpClient for ScriptedHttp {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let (queued, responder) = {
            let mut s = self.inner.lock().unwrap();
            s.recorded.push(req.clone());
            (s.queued.pop_front(), s.responder.clone())
        };
        if let Some(answer) = queued {
            return answer;
        }
        responder.and_then(|f| f(&req)).unwrap_or(Ok(HttpResponse {
            status: 599,
            ..HttpResponse::default()
        }))
    }
}

/// Tencent's official vectors (`core/tests/vectors/`), the one loader every test uses.
pub fn vectors() -> Vec<VectorSet> {
    const TEXT: &str = include_str!("../tests/vectors/wecom-official.json");
    let file: VectorFile = serde_json::from_str(TEXT).expect("the vectors file parses");
    assert!(!file.sets.is_empty(), "the vectors file has sets");
    file.sets
}

/// Settings for the app of an official vector set, with this allowlist.
pub fn vector_settings(set: &VectorSet, allowed_users: &str) -> crate::config::Settings {
    let mut raw = crate::config::RawSettings::default();
    for (k, v) in [
        ("corp_id", set.corp_id.as_str()),
        ("corp_secret", "s"),
        ("agent_id", set.agent_id.as_str()),
        ("token", set.token.as_str()),
        ("encoding_aes_key", set.encoding_aes_key.as_str()),
        ("allowed_users", allowed_users),
    ] {
        raw.set(k, v.into()).expect("a known key");
    }
    raw.resolve().expect("the vectors' settings are valid")
}

/// The vectors file.
#[derive(Debug, Deserialize)]
struct VectorFile {
    sets: Vec<VectorSet>,
}

/// One official sample: an app's settings, a URL verification and a callback.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct VectorSet {
    pub name: String,
    pub token: String,
    pub encoding_aes_key: String,
    pub corp_id: String,
    pub agent_id: String,
    pub verify_url: VerifyVector,
    pub callback: CallbackVector,
}

/// A URL verification `GET` and its expected echo.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct VerifyVector {
    pub msg_signature: String,
    pub timestamp: String,
    pub nonce: String,
    pub echostr: String,
    pub query: String,
    pub expected_body: String,
    pub pad_len: usize,
}

/// A callback `POST` and its expected plaintext.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct CallbackVector {
    pub msg_signature: String,
    pub timestamp: String,
    pub nonce: String,
    pub query: String,
    pub body: String,
    pub expected_plaintext: String,
    pub pad_len: usize,
}

/// A job sink that keeps what it is given, or refuses everything once closed.
#[derive(Debug, Default)]
pub struct RecordingSink {
    jobs: Mutex<Vec<Job>>,
    progress: Mutex<Vec<(String, usize)>>,
    closed: core::sync::atomic::AtomicBool,
}

impl RecordingSink {
    /// The jobs submitted so far, and forgets them.
    pub fn take(&self) -> Vec<Job> {
        core::mem::take(&mut *self.jobs.lock().unwrap())
    }

    /// Every progress report so far: the job id and the parts sent then.
    pub fn progress_reports(&self) -> Vec<(String, usize)> {
        self.progress.lock().unwrap().clone()
    }

    /// Refuse every job from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

impl JobSink for RecordingSink {
    async fn submit(&self, job: Job) -> Result<(), SinkError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(SinkError("closed".into()));
        }
        self.jobs.lock().unwrap().push(job);
        Ok(())
    }

    async fn progress(&self, job: &Job, state: &crate::job::JobState) {
        self.progress
            .lock()
            .unwrap()
            .push((job.id.clone(), state.parts_sent));
    }
}

/// A whole platform of deterministic parts: scripted HTTP (one script for WeCom and the
/// agent), in-memory stores, a fixed clock, timers that never fire unless told, seeded
/// randomness, a recording sink, and every observed event kept as `(level, line)`.
pub struct TestPlatform {
    /// HTTP for WeCom and the agent.
    pub http: ScriptedHttp,
    /// Tokens.
    pub tokens: MemoryTokenCache,
    /// Dedup markers.
    pub dedup: MemoryDedup,
    /// Conversations.
    pub conversations: MemoryConversations,
    /// The clock.
    pub clock: Arc<FixedClock>,
    /// Timers, in virtual time on `clock`.
    pub sleeper: VirtualSleeper,
    /// Randomness.
    pub random: SeededRandom,
    /// Accepted jobs.
    pub sink: RecordingSink,
    /// Send budgets.
    pub budget: MemorySendBudget,
    /// The AI bot's streams.
    pub streams: MemoryStreams,
    /// Whether `/metrics` has something to serve.
    pub metrics: Option<String>,
    events: Mutex<Vec<(Level, String)>>,
    counted: AtomicU64,
}

impl TestPlatform {
    /// A platform at unix time `now` whose timers run in virtual time.
    pub fn at(now: u64) -> Self {
        let clock = Arc::new(FixedClock::at(now));
        Self {
            http: ScriptedHttp::new(),
            tokens: MemoryTokenCache::default(),
            dedup: MemoryDedup::default(),
            conversations: MemoryConversations::default(),
            clock: clock.clone(),
            sleeper: VirtualSleeper::on(clock),
            random: SeededRandom::new(7),
            sink: RecordingSink::default(),
            budget: MemorySendBudget::default(),
            streams: MemoryStreams::default(),
            metrics: None,
            events: Mutex::new(Vec::new()),
            counted: AtomicU64::new(0),
        }
    }

    /// How many events were counted without a line ([`Platform::count`]).
    pub fn counted(&self) -> u64 {
        self.counted.load(Ordering::Relaxed)
    }

    /// The lines observed so far, with their levels.
    pub fn events(&self) -> Vec<(Level, String)> {
        self.events.lock().unwrap().clone()
    }

    /// The lines observed so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|(_, line)| line.contains(needle))
            .map(|(_, line)| line)
            .collect()
    }
}

impl Platform for TestPlatform {
    type Http = ScriptedHttp;
    type Tokens = MemoryTokenCache;
    type Dedup = MemoryDedup;
    type Conversations = MemoryConversations;
    type Lock = NoRefreshLock;
    type Clock = Arc<FixedClock>;
    type Sleeper = VirtualSleeper;
    type Random = SeededRandom;
    type Sink = RecordingSink;
    type Budget = MemorySendBudget;
    type Streams = MemoryStreams;

    fn api_http(&self) -> &ScriptedHttp {
        &self.http
    }
    fn agent_http(&self) -> &ScriptedHttp {
        &self.http
    }
    fn tokens(&self) -> &MemoryTokenCache {
        &self.tokens
    }
    fn dedup(&self) -> &MemoryDedup {
        &self.dedup
    }
    fn conversations(&self) -> &MemoryConversations {
        &self.conversations
    }
    fn refresh_lock(&self) -> &NoRefreshLock {
        &NoRefreshLock
    }
    fn clock(&self) -> &Arc<FixedClock> {
        &self.clock
    }
    fn sleeper(&self) -> &VirtualSleeper {
        &self.sleeper
    }
    fn random(&self) -> &SeededRandom {
        &self.random
    }
    fn budget(&self) -> &MemorySendBudget {
        &self.budget
    }
    fn streams(&self) -> &MemoryStreams {
        &self.streams
    }
    fn sink(&self) -> &RecordingSink {
        &self.sink
    }
    fn observe(&self, event: &Event<'_>) {
        use alloc::string::ToString;
        self.events
            .lock()
            .unwrap()
            .push((event.level(), event.to_string()));
    }
    fn count(&self, _event: &Event<'_>) {
        self.counted.fetch_add(1, Ordering::Relaxed);
    }
    fn metrics(&self) -> Option<String> {
        self.metrics.clone()
    }
}

/// Contract tests every port implementation runs. `$block_on` drives a future to completion;
/// `$make` builds a fresh store.
///
/// ```ignore
/// wecom_relay_core::dedup_store_contract_tests!(MemoryDedup::default(), wecom_relay_core::testing::block_on);
/// ```
pub mod contract_tests {
    /// Generates dedup-store contract tests in the calling module.
    #[macro_export]
    macro_rules! dedup_store_contract_tests {
        ($make:expr, $block_on:path) => {
            #[test]
            fn dedup_claim_is_fresh_once_then_duplicate_until_ttl() {
                use $crate::ports::{Claim, DedupStore};
                let store = $make;
                $block_on(async {
                    assert_eq!(store.claim("k", 1000, 60).await.unwrap(), Claim::Fresh);
                    assert_eq!(store.claim("k", 1001, 60).await.unwrap(), Claim::Duplicate);
                    assert_eq!(store.claim("k", 1059, 60).await.unwrap(), Claim::Duplicate);
                    assert_eq!(store.claim("other", 1001, 60).await.unwrap(), Claim::Fresh);
                    assert_eq!(store.claim("k", 1061, 60).await.unwrap(), Claim::Fresh);
                });
            }

            #[test]
            fn dedup_release_lets_the_retry_through() {
                use $crate::ports::{Claim, DedupStore};
                let store = $make;
                $block_on(async {
                    assert_eq!(store.claim("k", 1, 600).await.unwrap(), Claim::Fresh);
                    store.release("k").await.unwrap();
                    assert_eq!(store.claim("k", 2, 600).await.unwrap(), Claim::Fresh);
                    store.release("never-claimed").await.unwrap();
                });
            }
        };
    }

    /// Generates token-cache contract tests in the calling module.
    #[macro_export]
    macro_rules! token_cache_contract_tests {
        ($make:expr, $block_on:path) => {
            #[test]
            fn token_cache_keeps_tokens_per_app_until_expiry() {
                use $crate::ids::AccessToken;
                use $crate::ports::{CachedToken, TokenCache};
                let cache = $make;
                $block_on(async {
                    let a = CachedToken::new(AccessToken::new("A"), 1000, 7200);
                    let b = CachedToken::new(AccessToken::new("B"), 1800, 7200);
                    assert!(cache.get("app-a", 1000).await.is_none());
                    cache.put("app-a", a.clone(), 1000).await;
                    cache.put("app-b", b.clone(), 1000).await;
                    assert_eq!(cache.get("app-a", 1000).await, Some(a.clone()));
                    assert_eq!(cache.get("app-b", 1000).await, Some(b));
                    assert!(
                        cache.get("app-a", 8200).await.is_none(),
                        "expired token returned"
                    );
                });
            }

            #[test]
            fn token_cache_invalidate_spares_a_newer_token() {
                use $crate::ids::AccessToken;
                use $crate::ports::{CachedToken, TokenCache};
                let cache = $make;
                $block_on(async {
                    let old = CachedToken::new(AccessToken::new("OLD"), 1000, 7200);
                    let new = CachedToken::new(AccessToken::new("NEW"), 1800, 7200);
                    cache.put("app", old.clone(), 1000).await;
                    cache.put("app", new.clone(), 1001).await;
                    cache.invalidate("app", &old.token).await;
                    assert_eq!(cache.get("app", 1002).await, Some(new.clone()));
                    cache.invalidate("app", &new.token).await;
                    assert!(cache.get("app", 1002).await.is_none());
                });
            }
        };
    }

    /// Generates send-budget contract tests in the calling module.
    #[macro_export]
    macro_rules! send_budget_contract_tests {
        ($make:expr, $block_on:path) => {
            #[test]
            fn send_budget_allows_thirty_a_minute_per_member() {
                use $crate::ports::SendBudget;
                let budget = $make;
                $block_on(async {
                    for i in 0..30u64 {
                        assert_eq!(budget.take("c:1:alice", 10_000 + i).await, Ok(()));
                    }
                    let wait = budget.take("c:1:alice", 10_100).await.unwrap_err();
                    assert!(
                        wait.as_millis() >= 59_000 && wait.as_millis() <= 62_000,
                        "{wait:?}"
                    );
                    // Nothing was taken by the refusal; other members are not affected.
                    assert!(budget.take("c:1:alice", 10_100).await.is_err());
                    assert_eq!(budget.take("c:1:bob", 10_100).await, Ok(()));
                    assert_eq!(budget.take("c:2:alice", 10_100).await, Ok(()));
                    assert_eq!(
                        budget
                            .take("c:1:alice", 10_100 + wait.as_millis() as u64)
                            .await,
                        Ok(())
                    );
                });
            }
        };
    }

    /// Generates stream-store contract tests in the calling module.
    #[macro_export]
    macro_rules! stream_store_contract_tests {
        ($make:expr, $block_on:path) => {
            #[test]
            fn streams_apply_ops_in_order_and_keep_content_growing() {
                use $crate::aibot::stream::{StreamOp, STREAM_TTL_SECS};
                use $crate::ports::StreamStore;
                let store = $make;
                let open = StreamOp::Open {
                    bot: "b".into(),
                    response_url: Some("https://qyapi.weixin.qq.com/r".into()),
                };
                let grow = |c: &str| StreamOp::Grow { content: c.into() };
                let poll = StreamOp::Poll { limit_secs: 330 };
                $block_on(async {
                    assert_eq!(store.apply("s1", &poll, 1000).await.unwrap(), None);
                    let s = store.apply("s1", &open, 1000).await.unwrap().unwrap();
                    assert_eq!((s.started_at, s.content.as_str()), (1000, ""));
                    store.apply("s1", &grow("Hel"), 1001).await.unwrap();
                    let s = store
                        .apply("s1", &grow("Hello"), 1002)
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(s.content, "Hello");
                    let s = store
                        .apply("s1", &grow("Nope"), 1003)
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(s.content, "Hello");
                    // A retried message keeps the stream it opened.
                    let s = store.apply("s1", &open, 1004).await.unwrap().unwrap();
                    assert_eq!((s.started_at, s.content.as_str()), (1000, "Hello"));
                    let s = store.apply("s1", &poll, 1005).await.unwrap().unwrap();
                    assert!(!s.closed);
                    let done = StreamOp::Finish {
                        content: "Hello!".into(),
                    };
                    store.apply("s1", &done, 1006).await.unwrap();
                    let s = store.apply("s1", &poll, 1007).await.unwrap().unwrap();
                    assert!(s.closed && s.finished && !s.late);
                    let s = store
                        .apply("s1", &StreamOp::Peek, 1008)
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(s.content, "Hello!");
                    // Another stream is another record; an expired one is gone.
                    assert_eq!(
                        store.apply("s2", &StreamOp::Peek, 1008).await.unwrap(),
                        None
                    );
                    let later = 1000 + STREAM_TTL_SECS + 1;
                    assert_eq!(
                        store.apply("s1", &StreamOp::Peek, later).await.unwrap(),
                        None
                    );
                });
            }

            #[test]
            fn a_stream_past_its_limit_is_closed_once() {
                use $crate::aibot::stream::StreamOp;
                use $crate::ports::StreamStore;
                let store = $make;
                let open = StreamOp::Open {
                    bot: "b".into(),
                    response_url: None,
                };
                let poll = StreamOp::Poll { limit_secs: 10 };
                $block_on(async {
                    store.apply("late", &open, 2000).await.unwrap();
                    let s = store.apply("late", &poll, 2010).await.unwrap().unwrap();
                    assert!(s.closed && s.late);
                    let done = StreamOp::Finish {
                        content: "too late".into(),
                    };
                    let s = store.apply("late", &done, 2011).await.unwrap().unwrap();
                    assert!(!s.finished);
                });
            }
        };
    }

    /// Generates conversation-store contract tests in the calling module.
    #[macro_export]
    macro_rules! conversation_store_contract_tests {
        ($make:expr, $block_on:path) => {
            #[test]
            fn conversations_append_in_order_trim_and_clear() {
                use $crate::memory::{HistoryLimits, Role, Turn};
                use $crate::ports::ConversationStore;
                let store = $make;
                let t = |role, text: &str| Turn {
                    role,
                    text: text.into(),
                };
                let limits = HistoryLimits {
                    max_turns: 3,
                    max_bytes: 1000,
                };
                $block_on(async {
                    store
                        .append(
                            "c:u",
                            ::std::vec![t(Role::User, "1"), t(Role::Assistant, "2")],
                            limits,
                        )
                        .await
                        .unwrap();
                    store
                        .append(
                            "c:u",
                            ::std::vec![t(Role::User, "3"), t(Role::Assistant, "4")],
                            limits,
                        )
                        .await
                        .unwrap();
                    let texts: ::std::vec::Vec<::std::string::String> = store
                        .load("c:u")
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|t| t.text)
                        .collect();
                    assert_eq!(texts, ["2", "3", "4"]);
                    assert!(store.load("c:other").await.unwrap().is_empty());
                    store.clear("c:u").await.unwrap();
                    assert!(store.load("c:u").await.unwrap().is_empty());
                    let small = HistoryLimits {
                        max_turns: 10,
                        max_bytes: 5,
                    };
                    store
                        .append(
                            "c:v",
                            ::std::vec![t(Role::User, "abc"), t(Role::Assistant, "defg")],
                            small,
                        )
                        .await
                        .unwrap();
                    let texts: ::std::vec::Vec<::std::string::String> = store
                        .load("c:v")
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|t| t.text)
                        .collect();
                    assert_eq!(texts, ["defg"]);
                });
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Body, Method};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn seeded_random_is_reproducible() {
        let (a, b) = (SeededRandom::new(7), SeededRandom::new(7));
        let (mut x, mut y) = ([0u8; 21], [0u8; 21]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        a.fill(&mut x);
        assert_ne!(x, y);
    }

    #[test]
    fn scripted_http_answers_in_order_and_records() {
        let http = ScriptedHttp::new();
        http.push_json("{\"a\":1}")
            .push(Err(TransportError::Timeout));
        let req = HttpRequest {
            method: Method::Get,
            url: "http://x/p?access_token=T".into(),
            headers: Vec::new(),
            body: Body::Empty,
        };
        block_on(async {
            assert_eq!(http.send(req.clone()).await.unwrap().body, b"{\"a\":1}");
            assert_eq!(http.send(req.clone()).await, Err(TransportError::Timeout));
            assert_eq!(http.send(req.clone()).await.unwrap().status, 599);
        });
        assert_eq!(http.paths(), ["http://x/p", "http://x/p", "http://x/p"]);
        let clock = FixedClock::at(5);
        clock.advance(10);
        assert_eq!(clock.now_unix(), 15);
    }
}
