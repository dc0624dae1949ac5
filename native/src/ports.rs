//! The core's ports on native: reqwest for HTTP, the system clock, the OS random source, a
//! per-key async lock for token refreshes, the in-memory stores, and [`NativePlatform`], which
//! bundles them with the job queue and writes the core's events to `tracing` and Prometheus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, error, info, warn};
use wecom_relay_core::http::{Body, HttpRequest, HttpResponse, Method, TransportError};
use wecom_relay_core::kv::{KvConversations, KvTokenCache};
use wecom_relay_core::media::{HostRule, MediaPolicy};
use wecom_relay_core::ports::Either::{self, Left, Right};
use wecom_relay_core::ports::{
    Clock, HttpClient, MemoryConversations, MemoryDedup, MemorySendBudget, MemoryStreams,
    MemoryTokenCache, Random, RefreshLock, Sleeper,
};
use wecom_relay_core::{Event, Level, Platform};

use crate::config::RuntimeConfig;
use crate::jobs::JobQueue;
use crate::metrics::Metrics;
use crate::shared::{Shared, SharedGuard};
use crate::store::Store;

/// HTTP through reqwest (rustls), with a per-request timeout.
#[derive(Debug, Clone)]
pub struct ReqwestHttp {
    client: reqwest::Client,
}

impl ReqwestHttp {
    fn builder(timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("wecom-relay/", env!("CARGO_PKG_VERSION")))
    }

    /// A client whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let client = Self::builder(timeout)
            .build()
            .expect("reqwest client with rustls builds");
        Self { client }
    }

    /// A client for media by URL: it connects only to addresses `policy` allows, whatever a
    /// name resolves to, and follows no redirects (a redirect could lead anywhere; the core
    /// checked only the first URL).
    pub fn for_media(timeout: Duration, policy: MediaPolicy) -> Self {
        let client = Self::builder(timeout)
            .dns_resolver(Arc::new(GuardedResolver(Arc::new(policy))))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client with rustls builds");
        Self { client }
    }
}

/// Resolves through the system, then drops the addresses the media policy refuses: a public
/// name that resolves to a private address is refused unless the operator allowed it.
struct GuardedResolver(Arc<MediaPolicy>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // A name the operator allowed may lead anywhere it resolves to.
            let by_name = policy
                .allow_hosts
                .iter()
                .any(|r| matches!(r, HostRule::Name(n) if n.eq_ignore_ascii_case(&host)));
            let allowed: Vec<std::net::SocketAddr> = addrs
                .into_iter()
                .filter(|a| by_name || policy.allows_ip(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves only to addresses media.allow_hosts does not allow"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

fn transport(e: &reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else if e.is_connect() {
        TransportError::Connect
    } else {
        TransportError::Io
    }
}

impl ReqwestHttp {
    async fn start(&self, req: HttpRequest) -> Result<reqwest::Response, TransportError> {
        let builder = match req.method {
            Method::Get => self.client.get(&req.url),
            Method::Post => self.client.post(&req.url),
        };
        let builder = req
            .headers
            .iter()
            .fold(builder, |b, (k, v)| b.header(k.as_str(), v.as_str()));
        let builder = match req.body {
            Body::Empty => builder,
            Body::Json(json) => builder
                .header("content-type", "application/json")
                .body(json),
            Body::Multipart(part) => {
                let file = reqwest::multipart::Part::bytes(part.bytes)
                    .file_name(part.filename)
                    .mime_str(&part.content_type)
                    .map_err(|_| TransportError::Io)?;
                let form = part
                    .fields
                    .into_iter()
                    .fold(reqwest::multipart::Form::new(), |f, (k, v)| f.text(k, v));
                builder.multipart(form.part(part.field, file))
            }
        };
        builder.send().await.map_err(|e| transport(&e))
    }
}

fn response(resp: &reqwest::Response, body: Vec<u8>) -> HttpResponse {
    let headers = resp.headers();
    HttpResponse::from_parts(
        resp.status().as_u16(),
        |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        },
        body,
    )
}

impl HttpClient for ReqwestHttp {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let resp = self.start(req).await?;
        let head = response(&resp, Vec::new());
        let body = resp.bytes().await.map_err(|e| transport(&e))?.to_vec();
        Ok(HttpResponse { body, ..head })
    }

    async fn send_streaming(
        &self,
        req: HttpRequest,
        on_chunk: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<HttpResponse, TransportError> {
        let mut resp = self.start(req).await?;
        let head = response(&resp, Vec::new());
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
            on_chunk(&chunk);
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse { body, ..head })
    }

    async fn send_capped(
        &self,
        req: HttpRequest,
        more: &mut (dyn FnMut(&[u8]) -> bool + Send),
    ) -> Result<HttpResponse, TransportError> {
        let mut resp = self.start(req).await?;
        let head = response(&resp, Vec::new());
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
            if !more(&chunk) {
                // Over the caller's cap: stop reading; dropping the response closes it.
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse { body, ..head })
    }
}

/// Timers on tokio.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, buf: &mut [u8]) {
        getrandom::fill(buf).expect("the OS random source is available");
    }
}

/// One async mutex per key, created on demand.
#[derive(Debug, Default)]
pub struct KeyedLock {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl RefreshLock for KeyedLock {
    type Guard<'a> = tokio::sync::OwnedMutexGuard<()>;

    async fn lock<'a>(&'a self, key: &'a str) -> Self::Guard<'a> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.entry(key.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// Each store lives in memory (the default), in the durable store (`relay.state_dir`), or in
/// Redis shared by several replicas (`relay.redis_url`).
type Stored<M, D, R> = Either<M, Either<D, R>>;
type Tokens = Stored<MemoryTokenCache, KvTokenCache<Store>, KvTokenCache<Shared>>;
type Dedup = Stored<MemoryDedup, Store, Shared>;
type Conversations = Stored<MemoryConversations, KvConversations<Store>, KvConversations<Shared>>;
type Budget = Stored<MemorySendBudget, Store, Shared>;
type Streams = Stored<MemoryStreams, Store, Shared>;

/// The token-refresh lock: per process, or across replicas through Redis.
pub enum Lock {
    /// One process.
    Local(KeyedLock),
    /// Every replica on one Redis.
    Shared(Shared),
}

/// A held [`Lock`].
pub enum LockGuard {
    /// Held in this process.
    Local(tokio::sync::OwnedMutexGuard<()>),
    /// Held in Redis.
    Shared(Box<SharedGuard>),
}

impl RefreshLock for Lock {
    type Guard<'a> = LockGuard;

    async fn lock<'a>(&'a self, key: &'a str) -> LockGuard {
        match self {
            Self::Local(l) => LockGuard::Local(l.lock(key).await),
            Self::Shared(s) => LockGuard::Shared(Box::new(s.lock(key).await)),
        }
    }
}

/// Where a platform keeps its state.
pub enum Backing {
    /// In memory.
    Memory,
    /// In SQLite.
    Durable(Store),
    /// In Redis.
    Shared(Shared),
}

/// The native platform: every port, the job queue and the metrics of one relay process.
pub struct NativePlatform {
    api_http: ReqwestHttp,
    agent_http: ReqwestHttp,
    media_http: ReqwestHttp,
    tokens: Tokens,
    dedup: Dedup,
    conversations: Conversations,
    budget: Budget,
    streams: Streams,
    refresh: Lock,
    clock: Arc<dyn Clock>,
    jobs: JobQueue,
    metrics: Arc<Metrics>,
}

impl NativePlatform {
    /// Ports with the runtime's timeouts, the stores in `store` (or in memory without one),
    /// and `jobs` as the sink.
    pub fn new(
        runtime: &RuntimeConfig,
        agent_timeout: Duration,
        clock: Arc<dyn Clock>,
        backing: Backing,
        jobs: JobQueue,
        metrics: Arc<Metrics>,
        media: &MediaPolicy,
    ) -> Self {
        let mut refresh = Lock::Local(KeyedLock::default());
        let (tokens, dedup, conversations, budget, streams) = match backing {
            Backing::Memory => (
                Left(MemoryTokenCache::default()),
                Left(MemoryDedup::default()),
                Left(MemoryConversations::with_budget(
                    runtime.memory_history_mb.saturating_mul(1 << 20),
                )),
                Left(MemorySendBudget::default()),
                Left(MemoryStreams::default()),
            ),
            Backing::Durable(store) => (
                Right(Left(KvTokenCache(store.clone()))),
                Right(Left(store.clone())),
                Right(Left(KvConversations(store.clone()))),
                Right(Left(store.clone())),
                Right(Left(store)),
            ),
            Backing::Shared(shared) => {
                refresh = Lock::Shared(shared.clone());
                (
                    Right(Right(KvTokenCache(shared.clone()))),
                    Right(Right(shared.clone())),
                    Right(Right(KvConversations(shared.clone()))),
                    Right(Right(shared.clone())),
                    Right(Right(shared)),
                )
            }
        };
        Self {
            api_http: ReqwestHttp::new(Duration::from_secs(runtime.api_timeout_secs)),
            agent_http: ReqwestHttp::new(agent_timeout),
            media_http: ReqwestHttp::for_media(agent_timeout, media.clone()),
            tokens,
            dedup,
            conversations,
            budget,
            streams,
            refresh,
            clock,
            jobs,
            metrics,
        }
    }

    /// The job queue.
    pub fn jobs(&self) -> &JobQueue {
        &self.jobs
    }
}

impl Platform for NativePlatform {
    type Http = ReqwestHttp;
    type Tokens = Tokens;
    type Dedup = Dedup;
    type Conversations = Conversations;
    type Lock = Lock;
    type Clock = Arc<dyn Clock>;
    type Sleeper = TokioSleeper;
    type Random = OsRandom;
    type Sink = JobQueue;
    type Budget = Budget;
    type Streams = Streams;

    fn streams(&self) -> &Streams {
        &self.streams
    }
    fn api_http(&self) -> &ReqwestHttp {
        &self.api_http
    }
    fn agent_http(&self) -> &ReqwestHttp {
        &self.agent_http
    }
    fn media_http(&self) -> &ReqwestHttp {
        &self.media_http
    }
    fn tokens(&self) -> &Tokens {
        &self.tokens
    }
    fn dedup(&self) -> &Dedup {
        &self.dedup
    }
    fn conversations(&self) -> &Conversations {
        &self.conversations
    }
    fn refresh_lock(&self) -> &Lock {
        &self.refresh
    }
    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    fn sleeper(&self) -> &TokioSleeper {
        &TokioSleeper
    }
    fn random(&self) -> &OsRandom {
        &OsRandom
    }
    fn budget(&self) -> &Budget {
        &self.budget
    }
    fn sink(&self) -> &JobQueue {
        &self.jobs
    }
    fn observe(&self, event: &Event<'_>) {
        match event.level() {
            Level::Debug => debug!("{event}"),
            Level::Info => info!("{event}"),
            Level::Warn => warn!("{event}"),
            Level::Error => error!("{event}"),
        }
        self.metrics.record(event);
    }
    fn count(&self, event: &Event<'_>) {
        self.metrics.record(event);
    }
    fn metrics(&self) -> Option<String> {
        Some(self.metrics.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name resolving to loopback is refused by the media client's resolver, whatever the
    /// URL check said; a name the operator allowed gets through.
    #[tokio::test]
    async fn the_media_client_refuses_private_addresses_after_dns() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route("/x", axum::routing::get(|| async { "hello" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let get = |url: String| HttpRequest {
            method: Method::Get,
            url,
            headers: Vec::new(),
            body: Body::Empty,
        };
        let url = format!("http://localhost:{port}/x");
        let guarded = ReqwestHttp::for_media(Duration::from_secs(5), MediaPolicy::default());
        assert_eq!(
            guarded.send(get(url.clone())).await.unwrap_err(),
            TransportError::Connect
        );
        let allowed = MediaPolicy::from_hosts(&["localhost"]).unwrap();
        let open = ReqwestHttp::for_media(Duration::from_secs(5), allowed);
        let resp = open.send(get(url)).await.unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"hello"[..]));
    }

    /// A capped read stops at the cap instead of reading on.
    #[tokio::test]
    async fn a_capped_read_stops_early() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let app =
            axum::Router::new().route("/big", axum::routing::get(|| async { vec![1u8; 8 << 20] }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = ReqwestHttp::new(Duration::from_secs(5));
        let mut seen = 0usize;
        let resp = http
            .send_capped(
                HttpRequest {
                    method: Method::Get,
                    url: format!("http://127.0.0.1:{port}/big"),
                    headers: Vec::new(),
                    body: Body::Empty,
                },
                &mut |chunk| {
                    seen += chunk.len();
                    seen <= 64 << 10
                },
            )
            .await
            .unwrap();
        assert!(resp.body.len() <= 64 << 10, "{}", resp.body.len());
        assert!(seen < 8 << 20, "stopped reading at the cap, read {seen}");
    }
}
