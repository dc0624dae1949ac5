//! The core's ports on Workers: `Fetch` for HTTP, KV (through the core's KV-backed stores) for
//! tokens, dedup markers, conversations and queued jobs' progress, `Date` for time,
//! `setTimeout` for timers and Web Crypto for random bytes, bundled as [`WorkerPlatform`], which
//! writes the core's events to the console.
//!
//! JS values are not `Send`; Workers run one thread per isolate, so wrapping them with
//! workers-rs's own `SendWrapper`/`SendFuture` is sound, as its documentation states.

use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use wecom_relay_core::http::{
    Body, HttpRequest, HttpResponse, Method as ApiMethod, TransportError,
};
use wecom_relay_core::kv::{KeyValue, KvConversations, KvDedup, KvSendBudget, KvTokenCache};
use wecom_relay_core::ports::Either::{Left, Right};
use wecom_relay_core::ports::{Clock, HttpClient, NoRefreshLock, Random, Sleeper, StoreError};
use wecom_relay_core::{Event, Level, Platform};
use worker::send::{SendFuture, SendWrapper};
use worker::wasm_bindgen::JsCast;
use worker::{
    console_debug, console_error, console_log, console_warn, Date, Delay, Env, Fetch, Headers,
    KvStore, Method, Request, RequestInit,
};

use crate::jobs::Sink;
use crate::objects::{
    ObjectBudget, ObjectKv, ObjectStreams, ObjectTokens, TOKENS_BINDING, USERS_BINDING,
};
use crate::KV_BINDING;

/// KV refuses TTLs under 60 seconds.
pub const KV_MIN_TTL_SECS: u64 = 60;

/// `Date.now()` in seconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct DateClock;

impl Clock for DateClock {
    fn now_unix(&self) -> u64 {
        Date::now().as_millis() / 1000
    }
    fn now_millis(&self) -> u64 {
        Date::now().as_millis()
    }
}

/// HTTP through the Workers `fetch`, with a timeout.
#[derive(Debug, Clone, Copy)]
pub struct FetchHttp {
    /// Per-request timeout.
    pub timeout: Duration,
    /// Follow redirects (not for media: the core checked only the first URL).
    pub follow_redirects: bool,
}

/// What takes a streamed body's pieces (none here: read whole).
type OnChunk = dyn FnMut(&[u8]) -> bool + Send;

/// Fetches `req` within `timeout` (the whole exchange, body included), handing the body's
/// pieces to `on_chunk` as they arrive when given.
async fn fetch<F: FnMut(&[u8]) -> bool + Send + ?Sized>(
    req: HttpRequest,
    http: &FetchHttp,
    on_chunk: Option<&mut F>,
) -> Result<HttpResponse, TransportError> {
    let timeout = http.timeout;
    let mut init = RequestInit::new();
    if !http.follow_redirects {
        // A redirect is answered as it is (3xx), so the media check holds for what is fetched.
        init.with_redirect(worker::RequestRedirect::Manual);
    }
    init.with_method(match req.method {
        ApiMethod::Get => Method::Get,
        ApiMethod::Post => Method::Post,
    });
    match req.body {
        Body::Empty | Body::Multipart(_) if !req.headers.is_empty() => {
            let headers = Headers::new();
            for (k, v) in &req.headers {
                headers.set(k, v).map_err(|_| TransportError::Io)?;
            }
            init.with_headers(headers);
        }
        _ => {}
    }
    match req.body {
        Body::Empty => {}
        Body::Json(json) => {
            let headers = Headers::new();
            headers
                .set("content-type", "application/json")
                .map_err(|_| TransportError::Io)?;
            for (k, v) in &req.headers {
                headers.set(k, v).map_err(|_| TransportError::Io)?;
            }
            init.with_headers(headers);
            init.with_body(Some(json.into()));
        }
        Body::Multipart(part) => {
            let form = worker::web_sys::FormData::new().map_err(|_| TransportError::Io)?;
            let bytes = worker::js_sys::Uint8Array::from(part.bytes.as_slice());
            let file = worker::web_sys::File::new_with_u8_array_sequence(
                &worker::js_sys::Array::of1(&bytes.buffer()),
                &part.filename,
            )
            .map_err(|_| TransportError::Io)?;
            for (name, value) in &part.fields {
                form.append_with_str(name, value)
                    .map_err(|_| TransportError::Io)?;
            }
            form.append_with_blob_and_filename(&part.field, &file, &part.filename)
                .map_err(|_| TransportError::Io)?;
            init.with_body(Some(form.into()));
        }
    }
    let request = Request::new_with_init(&req.url, &init).map_err(|_| TransportError::Connect)?;
    let fetch = Fetch::Request(request);
    let sent = Box::pin(fetch.send());
    let mut timer = Box::pin(Delay::from(timeout));
    let mut resp = match select(sent, &mut timer).await {
        Either::Left((Ok(resp), _)) => resp,
        Either::Left((Err(_), _)) => return Err(TransportError::Connect),
        Either::Right(_) => return Err(TransportError::Timeout),
    };
    let status = resp.status_code();
    let headers = resp.headers().clone();
    let read = Box::pin(async {
        let Some(on_chunk) = on_chunk else {
            return resp.bytes().await.map_err(|_| TransportError::Io);
        };
        let mut body = Vec::new();
        let Ok(mut chunks) = resp.stream() else {
            return Ok(body);
        };
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|_| TransportError::Io)?;
            if !on_chunk(&chunk) {
                // Over the caller's cap: stop reading; dropping the stream cancels it.
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    });
    let body = match select(read, timer).await {
        Either::Left((body, _)) => body?,
        Either::Right(_) => return Err(TransportError::Timeout),
    };
    Ok(HttpResponse::from_parts(
        status,
        |name| headers.get(name).ok().flatten(),
        body,
    ))
}

impl HttpClient for FetchHttp {
    fn send(
        &self,
        req: HttpRequest,
    ) -> impl std::future::Future<Output = Result<HttpResponse, TransportError>> + Send {
        SendFuture::new(fetch(req, self, None::<&mut OnChunk>))
    }

    fn send_streaming(
        &self,
        req: HttpRequest,
        on_chunk: &mut (dyn FnMut(&[u8]) + Send),
    ) -> impl std::future::Future<Output = Result<HttpResponse, TransportError>> + Send {
        let mut every = move |chunk: &[u8]| {
            on_chunk(chunk);
            true
        };
        SendFuture::new(async move { fetch(req, self, Some(&mut every)).await })
    }

    fn send_capped(
        &self,
        req: HttpRequest,
        more: &mut (dyn FnMut(&[u8]) -> bool + Send),
    ) -> impl std::future::Future<Output = Result<HttpResponse, TransportError>> + Send {
        SendFuture::new(fetch(req, self, Some(more)))
    }
}

/// The KV namespace bound as [`KV_BINDING`], as the core's [`KeyValue`].
#[derive(Clone)]
pub struct WorkersKv(SendWrapper<KvStore>);

impl WorkersKv {
    /// The binding, or why it is missing.
    pub fn from_env(env: &Env) -> Result<Self, String> {
        env.kv(KV_BINDING)
            .map(|kv| Self(SendWrapper::new(kv)))
            .map_err(|_| {
                format!("the KV namespace binding {KV_BINDING} is missing from wrangler.toml")
            })
    }
}

impl KeyValue for WorkersKv {
    fn get(
        &self,
        key: &str,
    ) -> impl std::future::Future<Output = Result<Option<String>, StoreError>> + Send {
        SendFuture::new(async move {
            self.0
                .get(key)
                .text()
                .await
                .map_err(|e| StoreError(format!("kv get: {e}")))
        })
    }

    fn put(
        &self,
        key: &str,
        value: String,
        ttl_secs: u64,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        SendFuture::new(async move {
            let builder = self
                .0
                .put(key, value)
                .map_err(|e| StoreError(format!("kv put: {e}")))?;
            builder
                .expiration_ttl(ttl_secs.max(KV_MIN_TTL_SECS))
                .execute()
                .await
                .map_err(|e| StoreError(format!("kv put: {e}")))
        })
    }

    fn delete(
        &self,
        key: &str,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        SendFuture::new(async move {
            self.0
                .delete(key)
                .await
                .map_err(|e| StoreError(format!("kv delete: {e}")))
        })
    }
}

/// Timers through `setTimeout`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DelaySleeper;

impl Sleeper for DelaySleeper {
    fn sleep(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send {
        SendFuture::new(Delay::from(duration))
    }
}

/// Random bytes from Web Crypto's `crypto.getRandomValues`.
#[derive(Debug, Default, Clone, Copy)]
pub struct WebCryptoRandom;

fn web_crypto_fill(buf: &mut [u8]) -> Option<()> {
    use worker::js_sys::{global, Function, Reflect, Uint8Array};
    let crypto = Reflect::get(&global(), &"crypto".into()).ok()?;
    let get = Reflect::get(&crypto, &"getRandomValues".into())
        .ok()?
        .dyn_into::<Function>()
        .ok()?;
    let bytes = Uint8Array::new_with_length(u32::try_from(buf.len()).ok()?);
    get.call1(&crypto, &bytes).ok()?;
    bytes.copy_to(buf);
    Some(())
}

impl Random for WebCryptoRandom {
    fn fill(&self, buf: &mut [u8]) {
        if web_crypto_fill(buf).is_none() {
            // workerd always has Web Crypto; this only keeps a missing one from panicking.
            for b in buf.iter_mut() {
                *b = (worker::js_sys::Math::random() * 256.0) as u8;
            }
        }
    }
}

type Tokens = wecom_relay_core::ports::Either<KvTokenCache<WorkersKv>, ObjectTokens>;
type Conversations =
    wecom_relay_core::ports::Either<KvConversations<WorkersKv>, KvConversations<ObjectKv>>;
type Budget = wecom_relay_core::ports::Either<
    KvSendBudget<WorkersKv>,
    wecom_relay_core::ports::Either<KvSendBudget<ObjectKv>, ObjectBudget>,
>;

/// Where a platform keeps a user's conversation and send budget.
pub enum Home {
    /// In KV (eventually consistent).
    Kv,
    /// In the user's Durable Object (strongly consistent), from inside it.
    Object(ObjectKv),
}

/// The Worker's platform for one invocation.
pub struct WorkerPlatform {
    api_http: FetchHttp,
    agent_http: FetchHttp,
    media_http: FetchHttp,
    tokens: Tokens,
    dedup: KvDedup<WorkersKv>,
    conversations: Conversations,
    budget: Budget,
    streams: ObjectStreams,
    sink: Sink,
    kv: WorkersKv,
}

impl WorkerPlatform {
    /// The ports over `env`'s KV binding (and token objects when bound), with `sink` for
    /// accepted jobs and a user's state kept at `home`.
    pub fn new(env: &Env, agent_timeout: Duration, sink: Sink, home: Home) -> Result<Self, String> {
        let kv = WorkersKv::from_env(env)?;
        let tokens = match env.durable_object(TOKENS_BINDING) {
            Ok(_) => Right(ObjectTokens::new(env, kv.clone())),
            Err(_) => Left(KvTokenCache(kv.clone())),
        };
        let users = env.durable_object(USERS_BINDING).is_ok();
        let (conversations, budget) = match home {
            Home::Kv if users => (
                Left(KvConversations(kv.clone())),
                Right(Right(ObjectBudget::new(env))),
            ),
            Home::Kv => (
                Left(KvConversations(kv.clone())),
                Left(KvSendBudget(kv.clone())),
            ),
            Home::Object(object) => (
                Right(KvConversations(object.clone())),
                Right(Left(KvSendBudget(object))),
            ),
        };
        Ok(Self {
            api_http: FetchHttp {
                timeout: API_TIMEOUT,
                follow_redirects: true,
            },
            agent_http: FetchHttp {
                timeout: agent_timeout,
                follow_redirects: true,
            },
            media_http: FetchHttp {
                timeout: agent_timeout,
                follow_redirects: false,
            },
            tokens,
            dedup: KvDedup(kv.clone()),
            conversations,
            budget,
            streams: ObjectStreams::new(env),
            sink,
            kv,
        })
    }

    /// The KV namespace (queued jobs keep their progress there).
    pub fn kv(&self) -> &WorkersKv {
        &self.kv
    }
}

/// Timeout of one WeCom API request.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes an event's line to the console at its level.
pub fn log(event: &Event<'_>) {
    // The console method carries the level to Workers Logs; the word carries it to
    // `wrangler dev` and `wrangler tail`, which print only the text.
    let level = event.level();
    let word = level.as_str();
    match level {
        Level::Debug => console_debug!("{word} {event}"),
        Level::Info => console_log!("{word} {event}"),
        Level::Warn => console_warn!("{word} {event}"),
        Level::Error => console_error!("{word} {event}"),
    }
}

impl Platform for WorkerPlatform {
    type Http = FetchHttp;
    type Tokens = Tokens;
    type Dedup = KvDedup<WorkersKv>;
    type Conversations = Conversations;
    type Lock = NoRefreshLock;
    type Clock = DateClock;
    type Sleeper = DelaySleeper;
    type Random = WebCryptoRandom;
    type Sink = Sink;
    type Budget = Budget;
    type Streams = ObjectStreams;

    fn streams(&self) -> &ObjectStreams {
        &self.streams
    }
    fn media_http(&self) -> &FetchHttp {
        &self.media_http
    }
    fn api_http(&self) -> &FetchHttp {
        &self.api_http
    }
    fn agent_http(&self) -> &FetchHttp {
        &self.agent_http
    }
    fn tokens(&self) -> &Tokens {
        &self.tokens
    }
    fn dedup(&self) -> &KvDedup<WorkersKv> {
        &self.dedup
    }
    fn conversations(&self) -> &Conversations {
        &self.conversations
    }
    fn refresh_lock(&self) -> &NoRefreshLock {
        &NoRefreshLock
    }
    fn clock(&self) -> &DateClock {
        &DateClock
    }
    fn sleeper(&self) -> &DelaySleeper {
        &DelaySleeper
    }
    fn random(&self) -> &WebCryptoRandom {
        &WebCryptoRandom
    }
    fn budget(&self) -> &Budget {
        &self.budget
    }
    fn sink(&self) -> &Sink {
        &self.sink
    }
    fn observe(&self, event: &Event<'_>) {
        log(event);
    }
}
