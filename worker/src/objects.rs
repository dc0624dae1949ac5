//! Durable Objects, for what KV cannot promise: strongly consistent state in one place.
//!
//! - [`UserJobs`], one per user (`corp_id:user_id`), bound as [`USERS_BINDING`]: it keeps that
//!   user's accepted jobs in its storage, in order, and works them one at a time from an alarm,
//!   so a user's messages are answered in order; their progress, conversation memory and send
//!   budgets live in the same storage.
//! - [`AppTokens`], one per app, bound as [`TOKENS_BINDING`]: it holds the app's access token
//!   and fetches a new one for everyone at once (single flight), writing it through to KV.
//!
//! Both are optional: without the bindings the Worker falls back to KV and the Queue or
//! `waitUntil`, with the weaker guarantees the README lists.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wecom_relay_core::aibot::stream::{Stream, StreamOp, STREAM_TTL_SECS};
use wecom_relay_core::kv::{KeyValue, KvSendBudget, KvTokenCache};
use wecom_relay_core::ports::{
    CachedToken, Clock, HttpClient, SendBudget, StoreError, StreamStore, TokenCache,
};
use wecom_relay_core::wecom::api;
use wecom_relay_core::wecom::client::token_key;
use wecom_relay_core::{Job, JobState, Relay, Step};
use worker::send::{SendFuture, SendWrapper};
use worker::{
    durable_object, DurableObject, Env, ListOptions, Method, Request, RequestInit, Response,
    Result, State, Storage,
};

use crate::entry::load_settings;
use crate::jobs::Sink;
use crate::ports::{log, DateClock, FetchHttp, Home, WorkerPlatform, WorkersKv, API_TIMEOUT};

/// The binding of the per-user job objects.
pub const USERS_BINDING: &str = "WECOM_RELAY_USERS";
/// The binding of the per-app token objects.
pub const TOKENS_BINDING: &str = "WECOM_RELAY_TOKENS";
/// The binding of the AI bot's stream objects (one per stream).
pub const STREAMS_BINDING: &str = "WECOM_RELAY_STREAMS";

/// A Durable Object's storage as the core's [`KeyValue`] (entries never expire by themselves;
/// the stores over it do not rely on expiry).
#[derive(Clone)]
pub struct ObjectKv(pub SendWrapper<Rc<Storage>>);

impl KeyValue for ObjectKv {
    fn get(
        &self,
        key: &str,
    ) -> impl std::future::Future<Output = std::result::Result<Option<String>, StoreError>> + Send
    {
        SendFuture::new(async move {
            self.0
                .get::<String>(key)
                .await
                .map_err(|e| StoreError(format!("object storage get: {e}")))
        })
    }

    fn put(
        &self,
        key: &str,
        value: String,
        _ttl_secs: u64,
    ) -> impl std::future::Future<Output = std::result::Result<(), StoreError>> + Send {
        SendFuture::new(async move {
            self.0
                .put(key, value)
                .await
                .map_err(|e| StoreError(format!("object storage put: {e}")))
        })
    }

    fn delete(
        &self,
        key: &str,
    ) -> impl std::future::Future<Output = std::result::Result<(), StoreError>> + Send {
        SendFuture::new(async move {
            self.0
                .delete(key)
                .await
                .map(drop)
                .map_err(|e| StoreError(format!("object storage delete: {e}")))
        })
    }
}

/// A user's jobs, in order.
#[durable_object(alarm)]
pub struct UserJobs {
    state: State,
    env: Env,
    running: Cell<bool>,
}

impl DurableObject for UserJobs {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            running: Cell::new(false),
        }
    }

    /// `POST /enqueue` with a job: kept in storage before the answer, then worked in order.
    /// `POST /budget?key=..&now=..`: takes one send from a member's budget, which lives here
    /// so that jobs and send-API messages share it.
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let url = req.url()?;
        if url.path() == "/budget" {
            let param = |name: &str| {
                url.query_pairs()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            };
            let key = param("key").unwrap_or_default();
            let now = param("now").and_then(|n| n.parse().ok()).unwrap_or(0);
            let budget = KvSendBudget(ObjectKv(SendWrapper::new(Rc::new(self.state.storage()))));
            let wait_ms = match budget.take(&key, now).await {
                Ok(()) => 0,
                Err(wait) => wait.as_millis() as u64,
            };
            return Response::from_json(&serde_json::json!({ "wait_ms": wait_ms }));
        }
        let text = req.text().await?;
        if read_json::<Job>(&text).is_err() {
            return Response::error("the body is not a job", 400);
        }
        let storage = self.state.storage();
        // Input gates hold other events while storage is written: the sequence is this
        // object's alone.
        let seq = storage.get::<u64>("seq").await?.unwrap_or(0) + 1;
        storage.put("seq", seq).await?;
        storage.put(&format!("job:{seq:020}"), text).await?;
        if storage.get_alarm().await?.is_none() {
            storage.set_alarm(Duration::ZERO).await?;
        }
        Response::ok("queued")
    }

    async fn alarm(&self) -> Result<Response> {
        if self.running.get() {
            // The running loop finds whatever this alarm was for.
            return Response::ok("already running");
        }
        self.running.set(true);
        let result = self.work().await;
        self.running.set(false);
        result
    }
}

impl UserJobs {
    /// Works the jobs in order until none is left, or one must wait (then an alarm is set).
    async fn work(&self) -> Result<Response> {
        let storage = Rc::new(self.state.storage());
        let (settings, agent) = match load_settings(&self.env) {
            Ok(s) => s,
            Err(reason) => {
                log(&wecom_relay_core::Event::Misconfigured(&reason));
                storage.set_alarm(Duration::from_secs(60)).await?;
                return Response::ok("misconfigured");
            }
        };
        let kv = ObjectKv(SendWrapper::new(storage.clone()));
        let timeout = Duration::from_secs(agent.timeout_secs);
        let home = Home::Object(kv.clone());
        let platform = WorkerPlatform::new(&self.env, timeout, Sink::Object(kv), home)
            .map_err(worker::Error::RustError)?;
        let relay = Relay::new(settings, agent, platform);
        loop {
            let keys = storage
                .list_with_options(ListOptions::new().prefix("job:").limit(1))
                .await?;
            let first = keys.keys().next()?;
            let Some(key) = (!first.done()).then(|| first.value().as_string()).flatten() else {
                return Response::ok("done");
            };
            let text: Option<String> = storage.get(&key).await?;
            let Some(job) = text.and_then(|t| serde_json::from_str::<Job>(&t).ok()) else {
                storage.delete(&key).await?;
                continue;
            };
            let state_key = format!("state:{}", job.id);
            let mut state: JobState = storage
                .get::<String>(&state_key)
                .await?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            match relay.step_job(&job, &mut state).await {
                Step::RetryIn(delay) => {
                    let text = serde_json::to_string(&state)
                        .map_err(|e| worker::Error::RustError(e.to_string()))?;
                    storage.put(&state_key, text).await?;
                    storage.set_alarm(delay).await?;
                    return Response::ok("waiting");
                }
                Step::Done(_) | Step::GaveUp(_) => {
                    storage.delete(&key).await?;
                    storage.delete(&state_key).await?;
                }
            }
        }
    }
}

/// Hands a job to its user's object.
pub async fn enqueue(env: &Env, job: &Job) -> std::result::Result<(), String> {
    let namespace = env
        .durable_object(USERS_BINDING)
        .map_err(|e| e.to_string())?;
    let stub = namespace
        .id_from_name(&job.user.key())
        .and_then(|id| id.get_stub())
        .map_err(|e| e.to_string())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(
        serde_json::to_string(job)
            .map_err(|e| e.to_string())?
            .into(),
    ));
    let req = Request::new_with_init("https://user/enqueue", &init).map_err(|e| e.to_string())?;
    let resp = stub
        .fetch_with_request(req)
        .await
        .map_err(|e| e.to_string())?;
    if resp.status_code() == 200 {
        Ok(())
    } else {
        Err(format!(
            "the user's job object answered {}",
            resp.status_code()
        ))
    }
}

/// Members' send budgets, kept in their users' objects (see [`UserJobs::fetch`]).
#[derive(Clone)]
pub struct ObjectBudget {
    env: SendWrapper<Env>,
}

impl ObjectBudget {
    /// Over `env`'s user objects.
    pub fn new(env: &Env) -> Self {
        Self {
            env: SendWrapper::new(env.clone()),
        }
    }
}

impl SendBudget for ObjectBudget {
    fn take(
        &self,
        key: &str,
        now_ms: u64,
    ) -> impl std::future::Future<Output = std::result::Result<(), Duration>> + Send {
        SendFuture::new(async move {
            // `corp:agent:user` lives in the object of `corp:user`.
            let mut parts = key.splitn(3, ':');
            let (Some(corp), Some(_agent), Some(user)) = (parts.next(), parts.next(), parts.next())
            else {
                return Ok(());
            };
            let name = format!("{corp}:{user}");
            let path = format!(
                "https://user/budget?{}",
                query(&[("key", key), ("now", &now_ms.to_string())])
            );
            // A store outage must not stall replies: on any failure the send goes.
            let Some(wait_ms) = async {
                let stub = self
                    .env
                    .durable_object(USERS_BINDING)
                    .ok()?
                    .id_from_name(&name)
                    .ok()?
                    .get_stub()
                    .ok()?;
                let mut init = RequestInit::new();
                init.with_method(Method::Post);
                let req = Request::new_with_init(&path, &init).ok()?;
                let mut resp = stub.fetch_with_request(req).await.ok()?;
                let v: serde_json::Value = resp.json().await.ok()?;
                v["wait_ms"].as_u64()
            }
            .await
            else {
                return Ok(());
            };
            if wait_ms == 0 {
                Ok(())
            } else {
                Err(Duration::from_millis(wait_ms))
            }
        })
    }
}

/// What the token object answers.
#[derive(Debug, Serialize, Deserialize)]
struct Granted {
    token: Option<CachedToken>,
}

/// An app's access token, fetched once for everyone.
#[durable_object(fetch)]
pub struct AppTokens {
    state: State,
    env: Env,
    /// Held while fetching: concurrent requests wait for the one fetch.
    fetching: futures_util::lock::Mutex<()>,
}

impl DurableObject for AppTokens {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            fetching: futures_util::lock::Mutex::new(()),
        }
    }

    /// `GET /token?app=<corp:agent>` (a valid token, fetched if needed) or
    /// `POST /invalidate?app=..&token=..` (drop that token if it is still the one held).
    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.url()?;
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let app = param("app").unwrap_or_default();
        let storage = self.state.storage();
        if url.path() == "/invalidate" {
            let held: Option<String> = storage.get("token").await?;
            if let Some(held) = held.and_then(|t| serde_json::from_str::<CachedToken>(&t).ok()) {
                if Some(held.token.expose()) == param("token").as_deref() {
                    storage.delete("token").await?;
                }
            }
            return Response::ok("ok");
        }
        let _one_at_a_time = self.fetching.lock().await;
        let now = DateClock.now_unix();
        let held: Option<CachedToken> = storage
            .get::<String>("token")
            .await?
            .and_then(|t| serde_json::from_str(&t).ok());
        if let Some(token) = held.filter(|t| !t.needs_refresh(now)) {
            return Response::from_json(&Granted { token: Some(token) });
        }
        let fetched = self.fetch_token(&app, now).await;
        if let Some(token) = &fetched {
            let text = serde_json::to_string(token)
                .map_err(|e| worker::Error::RustError(e.to_string()))?;
            storage.put("token", text).await?;
            if let Ok(kv) = WorkersKv::from_env(&self.env) {
                KvTokenCache(kv).put(&app, token.clone(), now).await;
            }
        }
        Response::from_json(&Granted { token: fetched })
    }
}

impl AppTokens {
    /// A fresh token from WeCom; `None` when that fails (the caller then fetches itself and
    /// reports WeCom's answer).
    async fn fetch_token(&self, app: &str, now: u64) -> Option<CachedToken> {
        let (settings, _) = load_settings(&self.env).ok()?;
        let app = settings.apps.iter().find(|a| token_key(a) == app)?;
        let http = FetchHttp {
            timeout: API_TIMEOUT,
            follow_redirects: true,
        };
        let resp = http
            .send(api::get_token(
                &settings.api_base,
                &app.corp_id,
                &app.corp_secret,
            ))
            .await
            .ok()?;
        let grant = api::parse_token(&resp).ok()?;
        Some(CachedToken::new(grant.access_token, now, grant.expires_in))
    }
}

/// The token cache over the apps' token objects: a miss there means the object could not fetch,
/// and the relay fetches itself (and reports why).
#[derive(Clone)]
pub struct ObjectTokens {
    env: SendWrapper<Env>,
    kv: KvTokenCache<WorkersKv>,
}

impl ObjectTokens {
    /// Over `env`'s token objects, with `kv` for writes.
    pub fn new(env: &Env, kv: WorkersKv) -> Self {
        Self {
            env: SendWrapper::new(env.clone()),
            kv: KvTokenCache(kv),
        }
    }

    async fn call(&self, app: &str, path_and_query: &str, method: Method) -> Option<Response> {
        let namespace = self.env.durable_object(TOKENS_BINDING).ok()?;
        let stub = namespace.id_from_name(app).ok()?.get_stub().ok()?;
        let mut init = RequestInit::new();
        init.with_method(method);
        let req = Request::new_with_init(&format!("https://app{path_and_query}"), &init).ok()?;
        stub.fetch_with_request(req).await.ok()
    }
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

impl TokenCache for ObjectTokens {
    fn get(
        &self,
        app: &str,
        now: u64,
    ) -> impl std::future::Future<Output = Option<CachedToken>> + Send {
        SendFuture::new(async move {
            let path = format!("/token?{}", query(&[("app", app)]));
            let mut resp = self.call(app, &path, Method::Get).await?;
            let granted: Granted = resp.json().await.ok()?;
            granted.token.filter(|t| t.expires_at > now)
        })
    }

    fn put(
        &self,
        app: &str,
        token: CachedToken,
        now: u64,
    ) -> impl std::future::Future<Output = ()> + Send {
        // Only after the object could not fetch: keep the relay's own token in KV.
        self.kv.put(app, token, now)
    }

    fn invalidate(
        &self,
        app: &str,
        token: &wecom_relay_core::ids::AccessToken,
    ) -> impl std::future::Future<Output = ()> + Send {
        let token = token.clone();
        SendFuture::new(async move {
            let path = format!(
                "/invalidate?{}",
                query(&[("app", app), ("token", token.expose())])
            );
            let _ = self.call(app, &path, Method::Post).await;
            self.kv.invalidate(app, &token).await;
        })
    }
}

/// One AI bot stream's state: the job writes it, refreshes read it, and no two changes
/// interleave (an object runs one event at a time, and input gates hold others while its
/// storage is read and written). Deleted an hour after the stream started.
#[durable_object(alarm)]
pub struct BotStreams {
    state: State,
}

/// What a stream object is asked to do.
#[derive(Debug, Serialize, Deserialize)]
struct StreamCall {
    op: StreamOp,
    now: u64,
}

impl DurableObject for BotStreams {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    /// `POST /apply` with `{"op", "now"}`: the stream afterwards (`null`: no such stream).
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Ok(call) = read_json::<StreamCall>(&req.text().await?) else {
            return Response::error("the body is not a stream call", 400);
        };
        let storage = self.state.storage();
        let current: Option<Stream> = storage
            .get::<String>("stream")
            .await?
            .and_then(|t| serde_json::from_str(&t).ok());
        let next = Stream::apply(current.clone(), &call.op, call.now);
        if next != current {
            match &next {
                Some(stream) => {
                    let text = serde_json::to_string(stream)
                        .map_err(|e| worker::Error::RustError(e.to_string()))?;
                    storage.put("stream", text).await?;
                    if current.is_none() {
                        storage
                            .set_alarm(Duration::from_secs(STREAM_TTL_SECS))
                            .await?;
                    }
                }
                None => storage.delete_all().await?,
            }
        }
        Response::from_json(&next)
    }

    async fn alarm(&self) -> Result<Response> {
        self.state.storage().delete_all().await?;
        Response::ok("expired")
    }
}

/// The stream store over the stream objects. Without the binding every call fails, and the
/// bot's messages are answered 503 with a log line that says what to bind.
#[derive(Clone)]
pub struct ObjectStreams {
    env: SendWrapper<Env>,
}

impl ObjectStreams {
    /// Over `env`'s stream objects.
    pub fn new(env: &Env) -> Self {
        Self {
            env: SendWrapper::new(env.clone()),
        }
    }

    async fn call(
        &self,
        id: &str,
        op: &StreamOp,
        now: u64,
    ) -> std::result::Result<Option<Stream>, String> {
        let namespace = self.env.durable_object(STREAMS_BINDING).map_err(|_| {
            format!("AI bots need the {STREAMS_BINDING} Durable Object binding (class BotStreams): see wrangler.toml")
        })?;
        let stub = namespace
            .id_from_name(id)
            .and_then(|id| id.get_stub())
            .map_err(|e| e.to_string())?;
        let body = serde_json::to_string(&StreamCall {
            op: op.clone(),
            now,
        })
        .map_err(|e| e.to_string())?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let req =
            Request::new_with_init("https://stream/apply", &init).map_err(|e| e.to_string())?;
        let mut resp = stub
            .fetch_with_request(req)
            .await
            .map_err(|e| e.to_string())?;
        if resp.status_code() != 200 {
            return Err(format!("the stream object answered {}", resp.status_code()));
        }
        resp.json().await.map_err(|e| e.to_string())
    }
}

impl StreamStore for ObjectStreams {
    fn apply(
        &self,
        id: &str,
        op: &StreamOp,
        now: u64,
    ) -> impl std::future::Future<Output = std::result::Result<Option<Stream>, StoreError>> + Send
    {
        SendFuture::new(async move { self.call(id, op, now).await.map_err(StoreError) })
    }
}

/// A request body read as JSON with `serde_json`. Not `Request::json`, which reads through
/// `serde_wasm_bindgen`: a second copy of every deserializer in the wasm.
fn read_json<T: serde::de::DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_str(text)
}
