//! The core's ports on Workers: `Fetch` for HTTP, KV for tokens and dedup, `Date` for time.
//!
//! JS values are not `Send`; Workers run one thread per isolate, so wrapping them with
//! workers-rs's own `SendWrapper`/`SendFuture` is sound, as its documentation states.

use std::time::Duration;

use futures_util::future::{select, Either};
use serde::{Deserialize, Serialize};
use wecom_relay_core::api::{Body, HttpRequest, HttpResponse, Method as ApiMethod, TransportError};
use wecom_relay_core::ids::AccessToken;
use wecom_relay_core::ports::{
    trim_history, CachedToken, Claim, Clock, ConversationStore, DedupStore, HistoryLimits,
    HttpClient, Sleeper, StoreError, TokenCache, Turn,
};
use worker::send::{SendFuture, SendWrapper};
use worker::{Date, Delay, Fetch, Headers, KvStore, Method, Request, RequestInit};

/// KV refuses TTLs under 60 seconds.
pub const KV_MIN_TTL_SECS: u64 = 60;

/// `Date.now()` in seconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct DateClock;

impl Clock for DateClock {
    fn now_unix(&self) -> u64 {
        Date::now().as_millis() / 1000
    }
}

/// HTTP through the Workers `fetch`, with a timeout.
#[derive(Debug, Clone, Copy)]
pub struct FetchHttp {
    /// Per-request timeout.
    pub timeout: Duration,
}

async fn fetch(req: HttpRequest, timeout: Duration) -> Result<HttpResponse, TransportError> {
    let mut init = RequestInit::new();
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
            form.append_with_blob_and_filename(&part.field, &file, &part.filename)
                .map_err(|_| TransportError::Io)?;
            init.with_body(Some(form.into()));
        }
    }
    let request = Request::new_with_init(&req.url, &init).map_err(|_| TransportError::Connect)?;
    let fetch = Fetch::Request(request);
    let sent = Box::pin(fetch.send());
    let timer = Box::pin(Delay::from(timeout));
    let mut resp = match select(sent, timer).await {
        Either::Left((Ok(resp), _)) => resp,
        Either::Left((Err(_), _)) => return Err(TransportError::Connect),
        Either::Right(_) => return Err(TransportError::Timeout),
    };
    let status = resp.status_code();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(|_| TransportError::Io)?;
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
        SendFuture::new(fetch(req, self.timeout))
    }
}

/// A KV namespace shared by the KV-backed ports, under distinct key prefixes.
#[derive(Clone)]
pub struct Kv(pub SendWrapper<KvStore>);

impl Kv {
    /// Wraps the binding.
    pub fn new(store: KvStore) -> Self {
        Self(SendWrapper::new(store))
    }

    /// Reads JSON.
    pub async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        SendFuture::new(self.0.get(key).json::<T>())
            .await
            .map_err(|e| StoreError(format!("kv get: {e}")))
    }

    /// Writes JSON that expires after `ttl` seconds (at least KV's 60).
    pub async fn put_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: u64,
    ) -> Result<(), StoreError> {
        let text =
            serde_json::to_string(value).map_err(|e| StoreError(format!("serialise: {e}")))?;
        let builder = self
            .0
            .put(key, text)
            .map_err(|e| StoreError(format!("kv put: {e}")))?;
        SendFuture::new(builder.expiration_ttl(ttl.max(KV_MIN_TTL_SECS)).execute())
            .await
            .map_err(|e| StoreError(format!("kv put: {e}")))
    }

    /// Deletes a key.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        SendFuture::new(self.0.delete(key))
            .await
            .map_err(|e| StoreError(format!("kv delete: {e}")))
    }
}

/// Access tokens in KV (`token:<corp>:<agent>`), expiring with the token.
#[derive(Clone)]
pub struct KvTokenCache(pub Kv);

impl TokenCache for KvTokenCache {
    fn get(
        &self,
        app: &str,
        now: u64,
    ) -> impl std::future::Future<Output = Option<CachedToken>> + Send {
        let key = format!("token:{app}");
        SendFuture::new(async move {
            let token: CachedToken = self.0.get_json(&key).await.ok().flatten()?;
            (token.expires_at > now).then_some(token)
        })
    }

    fn put(
        &self,
        app: &str,
        token: CachedToken,
        now: u64,
    ) -> impl std::future::Future<Output = ()> + Send {
        let key = format!("token:{app}");
        SendFuture::new(async move {
            // Two isolates may both refresh. Keep the token that lives longer: WeCom hands out
            // the same token while it is valid, and a newer one only after the old one died.
            if let Ok(Some(current)) = self.0.get_json::<CachedToken>(&key).await {
                if current.expires_at > token.expires_at && current.token != token.token {
                    return;
                }
            }
            let ttl = token.expires_at.saturating_sub(now);
            if let Err(e) = self.0.put_json(&key, &token, ttl).await {
                worker::console_warn!("token cache write failed: {e}");
            }
        })
    }

    fn invalidate(
        &self,
        app: &str,
        token: &AccessToken,
    ) -> impl std::future::Future<Output = ()> + Send {
        let key = format!("token:{app}");
        let token = token.clone();
        SendFuture::new(async move {
            if let Ok(Some(current)) = self.0.get_json::<CachedToken>(&key).await {
                if current.token == token {
                    let _ = self.0.delete(&key).await;
                }
            }
        })
    }
}

/// Dedup markers in KV (`dedup:<key>` holding the unix time it lapses). Not atomic across
/// locations: see the crate documentation.
#[derive(Clone)]
pub struct KvDedup(pub Kv);

impl DedupStore for KvDedup {
    fn claim(
        &self,
        key: &str,
        now: u64,
        ttl: u64,
    ) -> impl std::future::Future<Output = Result<Claim, StoreError>> + Send {
        let key = format!("dedup:{key}");
        SendFuture::new(async move {
            if let Some(until) = self.0.get_json::<u64>(&key).await? {
                if until > now {
                    return Ok(Claim::Duplicate);
                }
            }
            self.0.put_json(&key, &now.saturating_add(ttl), ttl).await?;
            Ok(Claim::Fresh)
        })
    }

    fn release(
        &self,
        key: &str,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        let key = format!("dedup:{key}");
        SendFuture::new(async move { self.0.delete(&key).await })
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

/// Conversations in KV (`conv:<corp>:<user>`), forgotten after a week of silence.
#[derive(Clone)]
pub struct KvConversations(pub Kv);

/// How long an idle conversation is kept.
pub const CONVERSATION_TTL_SECS: u64 = 7 * 24 * 3600;

impl ConversationStore for KvConversations {
    fn load(
        &self,
        user: &str,
    ) -> impl std::future::Future<Output = Result<Vec<Turn>, StoreError>> + Send {
        let key = format!("conv:{user}");
        SendFuture::new(async move {
            Ok(self
                .0
                .get_json::<Vec<Turn>>(&key)
                .await?
                .unwrap_or_default())
        })
    }

    fn append(
        &self,
        user: &str,
        turns: Vec<Turn>,
        limits: HistoryLimits,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        let key = format!("conv:{user}");
        SendFuture::new(async move {
            let mut history = self
                .0
                .get_json::<Vec<Turn>>(&key)
                .await?
                .unwrap_or_default();
            history.extend(turns);
            trim_history(&mut history, limits);
            self.0.put_json(&key, &history, CONVERSATION_TTL_SECS).await
        })
    }

    fn clear(
        &self,
        user: &str,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        let key = format!("conv:{user}");
        SendFuture::new(async move { self.0.delete(&key).await })
    }
}
