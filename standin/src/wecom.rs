//! A local stand-in for WeCom's server API, for `demo` and the tests (which cannot reach WeCom).
//!
//! It follows the documented API: `gettoken`, `message/send`, `media/upload`, `media/get`, their
//! errcodes (41001/40014/42001 for tokens, 40001/40013 for credentials, 40056 for a foreign
//! agentid, 60020 for an untrusted caller, 81013 when every recipient is invalid, 47001 for bad
//! JSON, 44004 for empty content, 40004/40006/40007 for media), token expiry, and the limits:
//! text beyond 2048 bytes is cut (and the cut is recorded), and a member's 31st message from an
//! app within a minute, or 1,001st within an hour, is silently dropped (and recorded as such).
//!
//! Control endpoints under `/__standin/` let tests inspect what arrived and inject faults.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Multipart, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One app the stand-in knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandinApp {
    /// CorpID.
    pub corp_id: String,
    /// Secret.
    pub corp_secret: String,
    /// AgentId.
    pub agent_id: u64,
    /// Members visible to the app.
    pub users: Vec<String>,
    /// Whether the caller's IP is among the app's trusted IPs (else every call gets 60020).
    #[serde(default = "yes")]
    pub trusted: bool,
}

fn yes() -> bool {
    true
}

/// A message as it arrived.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivered {
    /// The app's corp.
    pub corp_id: String,
    /// `agentid` of the request.
    pub agent_id: u64,
    /// `touser`.
    pub touser: String,
    /// `msgtype`.
    pub msgtype: String,
    /// The whole request body.
    pub body: Value,
    /// `text.content` / `markdown.content` as sent.
    pub content: Option<String>,
    /// Whether WeCom would have cut the content at 2048 bytes.
    pub truncated: bool,
    /// Whether the per-member limit dropped it silently.
    pub dropped: bool,
}

/// An error to return instead of the real answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// The API path it applies to, e.g. `/cgi-bin/message/send`.
    pub path: String,
    /// errcode.
    pub errcode: i64,
    /// errmsg.
    #[serde(default)]
    pub errmsg: String,
    /// How many calls it affects.
    #[serde(default = "one")]
    pub times: u32,
    /// Answer with this HTTP status and no JSON instead (e.g. 502).
    #[serde(default)]
    pub http_status: Option<u16>,
    /// Wait this long, then answer normally (errcode 0 means no error at all).
    #[serde(default)]
    pub delay_ms: u64,
    /// Let this many matching calls through before the fault applies.
    #[serde(default)]
    pub after: u32,
    /// Carry the call out, then wait this long before answering (a client that gave up
    /// sooner never learns that it worked).
    #[serde(default)]
    pub late_ms: u64,
    /// Carry the call out, then answer with the JSON cut off half-way.
    #[serde(default)]
    pub truncate: bool,
    /// Carry the call out, then break the connection before the answer's body.
    #[serde(default)]
    pub cut: bool,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// A slow API: every call to `path` waits `delay_ms`, then is answered normally.
    pub fn slow(path: &str, delay_ms: u64) -> Self {
        Self {
            path: path.into(),
            errcode: 0,
            errmsg: String::new(),
            times: u32::MAX,
            http_status: None,
            delay_ms,
            after: 0,
            late_ms: 0,
            truncate: false,
            cut: false,
        }
    }

    /// `times` calls to `path` answered with this errcode.
    pub fn errcode(path: &str, errcode: i64, times: u32) -> Self {
        Self {
            errcode,
            errmsg: format!("standin fault {errcode}"),
            times,
            ..Self::slow(path, 0)
        }
    }

    /// `times` calls to `path` answered with this HTTP status and no JSON.
    pub fn http(path: &str, status: u16, times: u32) -> Self {
        Self {
            http_status: Some(status),
            times,
            ..Self::slow(path, 0)
        }
    }

    /// Whether the call is carried out before the fault shows.
    fn after_effect(&self) -> bool {
        self.late_ms > 0 || self.truncate || self.cut
    }
}

struct Token {
    app: usize,
    expires: Instant,
}

struct Media {
    content_type: String,
    filename: String,
    bytes: Vec<u8>,
}

struct Inner {
    apps: Vec<StandinApp>,
    /// Each app's members, lower-cased (WeCom's user ids are case-insensitive), for lookups.
    members: Vec<std::collections::HashSet<String>>,
    token_ttl: Duration,
    tokens: HashMap<String, Token>,
    messages: Vec<Delivered>,
    faults: VecDeque<Fault>,
    media: HashMap<String, Media>,
    /// Files served at `/files/<name>`: content type and bytes.
    files: HashMap<String, (String, Vec<u8>)>,
    per_member: HashMap<String, VecDeque<Instant>>,
    /// `enable_duplicate_check`: when each request body was last taken, per app.
    recent: HashMap<(usize, String), Instant>,
    duplicates_dropped: u64,
    /// The request bodies the duplicate check dropped.
    duplicates: Vec<Value>,
    /// Every call per API path, faulted ones included.
    calls: HashMap<String, u64>,
    gettoken_calls: u64,
    seq: u64,
    refuse_ms: u64,
    /// AI bot `response_url` codes: when each was issued, and whether it was used.
    response_codes: HashMap<String, (Instant, bool)>,
    bot_replies: Vec<BotReply>,
}

/// What arrived through an AI bot message's `response_url`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BotReply {
    /// The `response_code` of the URL.
    pub code: String,
    /// `markdown` (or what else was sent).
    pub msgtype: String,
    /// The content.
    pub content: String,
}

/// How long a `response_url` is valid.
const RESPONSE_URL_TTL: Duration = Duration::from_secs(3600);
/// The most a `response_url` markdown message may hold, in UTF-8 bytes.
const RESPONSE_URL_MAX_BYTES: usize = 20_480;

/// The stand-in's shared state.
#[derive(Clone)]
pub struct Standin {
    inner: Arc<Mutex<Inner>>,
    /// Closes the listener for a while ([`Standin::refuse_for`]).
    refuse: Arc<tokio::sync::Notify>,
}

/// A stand-in listening on a real socket.
pub struct RunningStandin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state, for in-process inspection.
    pub standin: Standin,
    task: tokio::task::JoinHandle<()>,
}

impl RunningStandin {
    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningStandin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn err(errcode: i64, errmsg: &str) -> Response {
    Json(json!({"errcode": errcode, "errmsg": errmsg})).into_response()
}

impl Standin {
    /// A stand-in for these apps, whose tokens live `token_ttl`.
    pub fn new(apps: Vec<StandinApp>, token_ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                members: apps
                    .iter()
                    .map(|a| a.users.iter().map(|u| u.to_lowercase()).collect())
                    .collect(),
                apps,
                token_ttl,
                tokens: HashMap::new(),
                messages: Vec::new(),
                faults: VecDeque::new(),
                media: HashMap::new(),
                files: HashMap::new(),
                per_member: HashMap::new(),
                recent: HashMap::new(),
                duplicates_dropped: 0,
                duplicates: Vec::new(),
                calls: HashMap::new(),
                gettoken_calls: 0,
                seq: 0,
                refuse_ms: 0,
                response_codes: HashMap::new(),
                bot_replies: Vec::new(),
            })),
            refuse: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Issues a fresh `response_code`, as WeCom does with each AI bot message: the URL is
    /// `<base>/cgi-bin/aibot/response?response_code=<it>`, usable once within an hour.
    pub fn issue_response_code(&self) -> String {
        let mut inner = self.lock();
        inner.seq += 1;
        let code = format!("rc{:08}", inner.seq);
        inner
            .response_codes
            .insert(code.clone(), (Instant::now(), false));
        code
    }

    /// What arrived through `response_url`s, in order.
    pub fn bot_replies(&self) -> Vec<BotReply> {
        self.lock().bot_replies.clone()
    }

    /// Stores a medium as if a user had sent it to an app; returns its media id for
    /// `media/get`.
    pub fn put_media(&self, filename: &str, content_type: &str, bytes: Vec<u8>) -> String {
        let mut inner = self.lock();
        inner.seq += 1;
        let media_id = format!("standin-media-{}", inner.seq);
        inner.media.insert(
            media_id.clone(),
            Media {
                content_type: content_type.into(),
                filename: filename.into(),
                bytes,
            },
        );
        media_id
    }

    /// An uploaded medium: its file name, content type and bytes.
    pub fn uploaded(&self, media_id: &str) -> Option<(String, String, Vec<u8>)> {
        self.lock()
            .media
            .get(media_id)
            .map(|m| (m.filename.clone(), m.content_type.clone(), m.bytes.clone()))
    }

    /// Serves `bytes` at `/files/<name>`.
    pub fn put_file(&self, name: &str, content_type: &str, bytes: Vec<u8>) {
        self.lock()
            .files
            .insert(name.into(), (content_type.into(), bytes));
    }

    /// Closes the listening socket for `ms` milliseconds, so that connecting is refused, then
    /// listens again on the same port.
    pub fn refuse_for(&self, ms: u64) {
        self.lock().refuse_ms = ms;
        self.refuse.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Everything `message/send` accepted, in order.
    pub fn messages(&self) -> Vec<Delivered> {
        self.lock().messages.clone()
    }

    /// Every access token issued so far (for tests that look for them where they must not be).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().tokens.keys().cloned().collect()
    }

    /// How many calls reached `path` (faulted ones included).
    pub fn calls(&self, path: &str) -> u64 {
        self.lock().calls.get(path).copied().unwrap_or(0)
    }

    /// The request bodies `enable_duplicate_check` dropped.
    pub fn duplicates(&self) -> Vec<Value> {
        self.lock().duplicates.clone()
    }

    /// How many messages `enable_duplicate_check` dropped.
    pub fn duplicates_dropped(&self) -> u64 {
        self.lock().duplicates_dropped
    }

    /// How many times `gettoken` was called.
    pub fn gettoken_calls(&self) -> u64 {
        self.lock().gettoken_calls
    }

    /// Queues a fault.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// Expires every issued token now (WeCom may invalidate tokens early).
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for t in self.lock().tokens.values_mut() {
            t.expires = now;
        }
    }

    /// The router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/cgi-bin/gettoken", get(gettoken))
            .route("/cgi-bin/message/send", post(send))
            // WeCom takes files of up to 20 MB; axum's default body limit is 2 MB.
            .route(
                "/cgi-bin/media/upload",
                post(upload).layer(axum::extract::DefaultBodyLimit::max(24 << 20)),
            )
            .route("/cgi-bin/media/get", get(media_get))
            .route("/cgi-bin/agent/get", get(agent_get))
            .route("/files/{name}", get(file_get))
            .route("/cgi-bin/aibot/response", post(aibot_response))
            .route("/__standin/response_code", post(control_response_code))
            .route("/__standin/bot_replies", get(control_bot_replies))
            .route("/__standin/messages", get(control_messages))
            .route("/__standin/fault", post(control_fault))
            .route("/__standin/expire_tokens", post(control_expire))
            .route("/__standin/stats", get(control_stats))
            .route("/__standin/refuse", post(control_refuse))
            .with_state(self.clone())
    }

    /// Serves on `127.0.0.1:port` (0 picks a free port).
    pub async fn serve(self, port: u16) -> std::io::Result<RunningStandin> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let router = self.router();
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mut listener = listener;
            loop {
                let refuse = me.refuse.clone();
                let _ = axum::serve(listener, router.clone())
                    .with_graceful_shutdown(async move { refuse.notified().await })
                    .await;
                let pause = me.lock().refuse_ms;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                listener = loop {
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
            }
        });
        Ok(RunningStandin {
            addr,
            standin: self,
            task,
        })
    }

    /// The next fault for `path`: `Err` is the answer to give instead of carrying the call
    /// out; `Ok(Some)` is a fault to apply to the real answer ([`Standin::finish`]).
    async fn take_fault(&self, path: &str) -> Result<Option<Fault>, Response> {
        let fault = {
            let mut inner = self.lock();
            *inner.calls.entry(path.to_owned()).or_default() += 1;
            let Some(i) = inner.faults.iter().position(|f| f.path == path) else {
                return Ok(None);
            };
            if inner.faults[i].after > 0 {
                inner.faults[i].after -= 1;
                return Ok(None);
            }
            let fault = inner.faults[i].clone();
            if fault.times <= 1 {
                inner.faults.remove(i);
            } else {
                inner.faults[i].times -= 1;
            }
            fault
        };
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        if fault.after_effect() {
            return Ok(Some(fault));
        }
        if fault.errcode == 0 && fault.http_status.is_none() {
            return Ok(None);
        }
        Err(match fault.http_status {
            Some(status) => StatusCode::from_u16(status)
                .unwrap_or(StatusCode::BAD_GATEWAY)
                .into_response(),
            None => err(fault.errcode, &fault.errmsg),
        })
    }

    /// Applies an after-effect fault to the answer of a call that was carried out.
    async fn finish(fault: Option<Fault>, resp: Response) -> Response {
        let Some(fault) = fault else { return resp };
        if fault.late_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.late_ms)).await;
        }
        if fault.cut {
            let broken = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("connection cut"))
            });
            return (StatusCode::OK, axum::body::Body::from_stream(broken)).into_response();
        }
        if fault.truncate {
            let (parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let half = bytes.slice(..bytes.len() / 2);
            let mut resp = Response::from_parts(parts, axum::body::Body::from(half));
            resp.headers_mut().remove(header::CONTENT_LENGTH);
            return resp;
        }
        resp
    }

    fn authorize(&self, token: Option<&str>) -> Result<usize, Box<Response>> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(Box::new(err(41001, "access_token missing")));
        };
        let inner = self.lock();
        let Some(t) = inner.tokens.get(token) else {
            return Err(Box::new(err(40014, "invalid access_token")));
        };
        if Instant::now() >= t.expires {
            return Err(Box::new(err(42001, "access_token expired")));
        }
        if !inner.apps[t.app].trusted {
            return Err(Box::new(err(
                60020,
                "not allow to access from your ip, hint: [1700000000_00_standin], from ip: 127.0.0.1, more info at https://open.work.weixin.qq.com/devtool/query?e=60020",
            )));
        }
        Ok(t.app)
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    corpid: Option<String>,
    corpsecret: Option<String>,
}

async fn gettoken(State(s): State<Standin>, Query(q): Query<TokenQuery>) -> Response {
    let fault = match s.take_fault("/cgi-bin/gettoken").await {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let resp = issue_token(&s, q);
    Standin::finish(fault, resp).await
}

fn issue_token(s: &Standin, q: TokenQuery) -> Response {
    let mut inner = s.lock();
    inner.gettoken_calls += 1;
    let Some(corp) = q.corpid.filter(|c| !c.is_empty()) else {
        return err(41002, "corpid missing");
    };
    let Some(secret) = q.corpsecret.filter(|c| !c.is_empty()) else {
        return err(41004, "corpsecret missing");
    };
    if !inner.apps.iter().any(|a| a.corp_id == corp) {
        return err(40013, "invalid corpid");
    }
    let Some(app) = inner
        .apps
        .iter()
        .position(|a| a.corp_id == corp && a.corp_secret == secret)
    else {
        return err(40001, "invalid credential");
    };
    inner.seq += 1;
    let token = format!("standin-token-{}-{}", inner.seq, app);
    let ttl = inner.token_ttl;
    inner.tokens.insert(
        token.clone(),
        Token {
            app,
            expires: Instant::now() + ttl,
        },
    );
    Json(json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": ttl.as_secs()}))
        .into_response()
}

#[derive(Deserialize)]
struct AuthQuery {
    access_token: Option<String>,
}

fn cut_at_2048(s: &str) -> (String, bool) {
    if s.len() <= 2048 {
        return (s.to_owned(), false);
    }
    let mut end = 2048;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_owned(), true)
}

async fn send(State(s): State<Standin>, Query(q): Query<AuthQuery>, body: Bytes) -> Response {
    let fault = match s.take_fault("/cgi-bin/message/send").await {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let resp = deliver(&s, q, &body);
    Standin::finish(fault, resp).await
}

fn deliver(s: &Standin, q: AuthQuery, body: &Bytes) -> Response {
    let app = match s.authorize(q.access_token.as_deref()) {
        Ok(app) => app,
        Err(resp) => return *resp,
    };
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return err(47001, "data format error");
    };
    let mut inner = s.lock();
    let (corp_id, agent_id) = (inner.apps[app].corp_id.clone(), inner.apps[app].agent_id);
    if body["agentid"].as_u64() != Some(agent_id) {
        return err(40056, "invalid agentid");
    }
    let msgtype = body["msgtype"].as_str().unwrap_or_default().to_owned();
    const TYPES: [&str; 10] = [
        "text",
        "markdown",
        "image",
        "voice",
        "file",
        "video",
        "news",
        "textcard",
        "mpnews",
        "template_card",
    ];
    if !TYPES.contains(&msgtype.as_str()) {
        return err(40008, "invalid message type");
    }
    let mut content = None;
    let mut truncated = false;
    if msgtype == "text" || msgtype == "markdown" {
        let Some(text) = body[&msgtype]["content"].as_str().filter(|t| !t.is_empty()) else {
            return err(44004, "empty content");
        };
        truncated = cut_at_2048(text).1;
        content = Some(text.to_owned());
    }
    let touser = body["touser"].as_str().unwrap_or_default().to_owned();
    let recipients: Vec<String> = touser
        .split('|')
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    let invalid: Vec<String> = recipients
        .iter()
        .filter(|u| *u != "@all" && !inner.members[app].contains(&u.to_lowercase()))
        .cloned()
        .collect();
    if recipients.is_empty() || invalid.len() == recipients.len() {
        return Json(json!({"errcode": 81013, "errmsg": "user & party & tag all invalid", "invaliduser": invalid.join("|")})).into_response();
    }
    let now = Instant::now();
    inner.seq += 1;
    let msgid = format!("standin-msg-{}", inner.seq);
    let ok = json!({"errcode": 0, "errmsg": "ok", "invaliduser": invalid.join("|"), "invalidparty": "", "invalidtag": "", "unlicenseduser": "", "msgid": msgid});
    // `enable_duplicate_check`: "同样内容（请求json）的消息" within the interval (default 1800 s,
    // at most 4 hours) is not delivered again.
    if body["enable_duplicate_check"].as_u64() == Some(1) {
        let interval = body["duplicate_check_interval"].as_u64().unwrap_or(1800);
        if interval > 4 * 3600 {
            return err(40058, "duplicate_check_interval exceeds 4 hours");
        }
        let key = (app, body.to_string());
        let seen = inner.recent.get(&key).copied();
        if seen.is_some_and(|t| now.duration_since(t) < Duration::from_secs(interval)) {
            inner.duplicates_dropped += 1;
            inner.duplicates.push(body.clone());
            return Json(ok).into_response();
        }
        inner.recent.insert(key, now);
    }
    // Per member and app: 30 messages a minute and 1,000 an hour; beyond that WeCom drops them
    // without an error.
    let mut dropped = false;
    for user in recipients.iter().filter(|u| !invalid.contains(u)) {
        let window = inner
            .per_member
            .entry(format!("{}:{}:{}", corp_id, agent_id, user.to_lowercase()))
            .or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(3600))
        {
            window.pop_front();
        }
        let last_minute = window
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) <= Duration::from_secs(60))
            .count();
        if last_minute >= 30 || window.len() >= 1000 {
            dropped = true;
        } else {
            window.push_back(now);
        }
    }
    inner.messages.push(Delivered {
        corp_id,
        agent_id,
        touser,
        msgtype,
        body,
        content,
        truncated,
        dropped,
    });
    Json(ok).into_response()
}

#[derive(Deserialize)]
struct UploadQuery {
    access_token: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn upload(
    State(s): State<Standin>,
    Query(q): Query<UploadQuery>,
    mut form: Multipart,
) -> Response {
    if let Err(answer) = s.take_fault("/cgi-bin/media/upload").await {
        return answer;
    }
    if let Err(resp) = s.authorize(q.access_token.as_deref()) {
        return *resp;
    }
    let kind = q.kind.unwrap_or_default();
    // Each kind's limit, the errcode for breaking it, and the extensions it takes.
    let (limit, size_error, extensions): (usize, (i64, &str), &[&str]) = match kind.as_str() {
        "image" => (
            10 << 20,
            (40009, "invalid image size"),
            &["jpg", "jpeg", "png"],
        ),
        "voice" => (2 << 20, (40010, "invalid voice size"), &["amr"]),
        "video" => (10 << 20, (40011, "invalid video size"), &["mp4"]),
        "file" => (20 << 20, (40006, "invalid file size"), &[]),
        _ => return err(40004, "invalid media type"),
    };
    let mut file = None;
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("media") {
            let filename = field.file_name().unwrap_or("media").to_owned();
            let content_type = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_owned();
            match field.bytes().await {
                Ok(bytes) => file = Some((filename, content_type, bytes.to_vec())),
                Err(_) => return err(40006, "invalid file size"),
            }
        }
    }
    let Some((filename, content_type, bytes)) = file else {
        return err(41005, "media data missing");
    };
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if !extensions.is_empty() && !extensions.contains(&ext.as_str()) {
        return err(40005, "invalid file type");
    }
    if bytes.len() <= 5 || bytes.len() > limit {
        return err(size_error.0, size_error.1);
    }
    let mut inner = s.lock();
    inner.seq += 1;
    let media_id = format!("standin-media-{}", inner.seq);
    inner.media.insert(
        media_id.clone(),
        Media {
            content_type,
            filename,
            bytes,
        },
    );
    Json(json!({"errcode": 0, "errmsg": "", "type": kind, "media_id": media_id, "created_at": "1700000000"})).into_response()
}

#[derive(Deserialize)]
struct MediaQuery {
    access_token: Option<String>,
    media_id: Option<String>,
}

async fn media_get(State(s): State<Standin>, Query(q): Query<MediaQuery>) -> Response {
    if let Err(answer) = s.take_fault("/cgi-bin/media/get").await {
        return answer;
    }
    if let Err(resp) = s.authorize(q.access_token.as_deref()) {
        return *resp;
    }
    let inner = s.lock();
    match q.media_id.as_deref().and_then(|id| inner.media.get(id)) {
        Some(m) => (
            [
                (header::CONTENT_TYPE, m.content_type.clone()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", m.filename),
                ),
            ],
            m.bytes.clone(),
        )
            .into_response(),
        None => err(40007, "invalid media_id"),
    }
}

#[derive(Deserialize)]
struct AgentQuery {
    access_token: Option<String>,
    agentid: Option<String>,
}

/// `GET /cgi-bin/agent/get`: the app's details; 40056 for another app's agent id, and (as for
/// every call but `gettoken`) 60020 from an IP the app does not trust.
async fn agent_get(State(s): State<Standin>, Query(q): Query<AgentQuery>) -> Response {
    let app = match s.authorize(q.access_token.as_deref()) {
        Ok(app) => app,
        Err(resp) => return *resp,
    };
    let me = s.lock().apps[app].clone();
    if q.agentid.as_deref() != Some(me.agent_id.to_string().as_str()) {
        return err(40056, "invalid agentid");
    }
    let users: Vec<Value> = me.users.iter().map(|u| json!({"userid": u})).collect();
    Json(json!({
        "errcode": 0, "errmsg": "ok", "agentid": me.agent_id, "name": format!("standin app {}", me.agent_id),
        "square_logo_url": "", "description": "", "allow_userinfos": {"user": users},
        "allow_partys": {"partyid": []}, "allow_tags": {"tagid": []}, "close": 0,
        "redirect_domain": "", "report_location_flag": 0, "isreportenter": 0, "home_url": ""
    }))
    .into_response()
}

/// `GET /files/<name>`: a file put there by [`Standin::put_file`], as any web server would
/// serve it (an agent's attachment, or an AI bot's sealed medium on WeCom's CDN).
async fn file_get(
    State(s): State<Standin>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match s.lock().files.get(&name) {
        Some((content_type, bytes)) => (
            [(header::CONTENT_TYPE, content_type.clone())],
            bytes.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
struct ResponseCode {
    #[serde(default)]
    response_code: String,
}

/// `POST /cgi-bin/aibot/response?response_code=..`: an AI bot's late answer, markdown of at
/// most 20,480 bytes, once per code, within an hour of the message. WeCom documents no
/// errcode for a used or expired code; the stand-in answers 40058 (invalid parameter) for
/// those, as for content over the limit or a body it cannot read.
async fn aibot_response(
    State(s): State<Standin>,
    Query(q): Query<ResponseCode>,
    body: Bytes,
) -> Response {
    if let Err(answer) = s.take_fault("/cgi-bin/aibot/response").await {
        return answer;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return err(47001, "data format error");
    };
    let msgtype = v["msgtype"].as_str().unwrap_or_default().to_owned();
    let content = match msgtype.as_str() {
        "markdown" => v["markdown"]["content"].as_str().map(str::to_owned),
        "template_card" => Some(v["template_card"].to_string()),
        _ => None,
    };
    let Some(content) = content.filter(|c| !c.is_empty()) else {
        return err(44004, "empty content or unsupported msgtype");
    };
    if content.len() > RESPONSE_URL_MAX_BYTES {
        return err(40058, "markdown.content exceeds 20480 bytes");
    }
    let mut inner = s.lock();
    match inner.response_codes.get_mut(&q.response_code) {
        Some((issued, used)) if !*used && issued.elapsed() < RESPONSE_URL_TTL => *used = true,
        _ => return err(40058, "invalid response_code: unknown, used or expired"),
    }
    inner.bot_replies.push(BotReply {
        code: q.response_code,
        msgtype,
        content,
    });
    err(0, "ok")
}

async fn control_response_code(State(s): State<Standin>) -> String {
    s.issue_response_code()
}

async fn control_bot_replies(State(s): State<Standin>) -> Json<Vec<BotReply>> {
    Json(s.bot_replies())
}

async fn control_messages(State(s): State<Standin>) -> Json<Vec<Delivered>> {
    Json(s.messages())
}

async fn control_fault(State(s): State<Standin>, Json(fault): Json<Fault>) -> StatusCode {
    s.inject(fault);
    StatusCode::NO_CONTENT
}

async fn control_expire(State(s): State<Standin>) -> StatusCode {
    s.expire_tokens();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Refuse {
    ms: u64,
}

async fn control_refuse(State(s): State<Standin>, Json(r): Json<Refuse>) -> StatusCode {
    s.refuse_for(r.ms);
    StatusCode::NO_CONTENT
}

async fn control_stats(State(s): State<Standin>) -> Json<Value> {
    Json(
        json!({"gettoken_calls": s.gettoken_calls(), "duplicates_dropped": s.duplicates_dropped()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn standin() -> Standin {
        Standin::new(
            vec![
                StandinApp {
                    corp_id: "ww1".into(),
                    corp_secret: "s1".into(),
                    agent_id: 7,
                    users: vec!["alice".into()],
                    trusted: true,
                },
                StandinApp {
                    corp_id: "ww2".into(),
                    corp_secret: "s2".into(),
                    agent_id: 8,
                    users: vec!["bob".into()],
                    trusted: false,
                },
            ],
            Duration::from_secs(7200),
        )
    }

    async fn call(router: &Router, req: Request<Body>) -> Value {
        let resp = router.clone().oneshot(req).await.unwrap();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn token(router: &Router, corp: &str, secret: &str) -> Value {
        call(
            router,
            Request::get(format!(
                "/cgi-bin/gettoken?corpid={corp}&corpsecret={secret}"
            ))
            .body(Body::empty())
            .unwrap(),
        )
        .await
    }

    async fn send(router: &Router, token: &str, body: Value) -> Value {
        call(
            router,
            Request::post(format!("/cgi-bin/message/send?access_token={token}"))
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    #[tokio::test]
    async fn follows_the_documented_errcodes() {
        let s = standin();
        let r = s.router();
        assert_eq!(token(&r, "nope", "x").await["errcode"], 40013);
        assert_eq!(token(&r, "ww1", "wrong").await["errcode"], 40001);
        assert_eq!(token(&r, "ww1", "").await["errcode"], 41004);
        let t = token(&r, "ww1", "s1").await;
        assert_eq!(
            (t["errcode"].clone(), t["expires_in"].clone()),
            (json!(0), json!(7200))
        );
        let t = t["access_token"].as_str().unwrap().to_owned();
        let text = |content: &str, to: &str, agent: u64| json!({"touser": to, "msgtype": "text", "agentid": agent, "text": {"content": content}});
        assert_eq!(send(&r, "", text("x", "alice", 7)).await["errcode"], 41001);
        assert_eq!(
            send(&r, "bogus", text("x", "alice", 7)).await["errcode"],
            40014
        );
        assert_eq!(send(&r, &t, text("x", "alice", 9)).await["errcode"], 40056);
        assert_eq!(send(&r, &t, text("", "alice", 7)).await["errcode"], 44004);
        assert_eq!(
            send(&r, &t, text("x", "mallory", 7)).await["errcode"],
            81013
        );
        let ok = send(&r, &t, text(&"字".repeat(700), "ALICE|mallory", 7)).await;
        assert_eq!(
            (ok["errcode"].clone(), ok["invaliduser"].clone()),
            (json!(0), json!("mallory"))
        );
        assert!(s.messages()[0].truncated);
        s.expire_tokens();
        assert_eq!(send(&r, &t, text("x", "alice", 7)).await["errcode"], 42001);
        let t2 = token(&r, "ww2", "s2").await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let refused = send(&r, &t2, text("x", "bob", 8)).await;
        assert_eq!(refused["errcode"], 60020);
        assert!(refused["errmsg"]
            .as_str()
            .unwrap()
            .contains("from ip: 127.0.0.1"));
        s.inject(Fault::errcode("/cgi-bin/gettoken", -1, 1));
        assert_eq!(token(&r, "ww1", "s1").await["errcode"], -1);
        assert_eq!(token(&r, "ww1", "s1").await["errcode"], 0);
    }

    #[tokio::test]
    async fn the_31st_message_in_a_minute_is_dropped_silently() {
        let s = standin();
        let r = s.router();
        let t = token(&r, "ww1", "s1").await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        for i in 0..31 {
            let out = send(&r, &t, json!({"touser": "alice", "msgtype": "text", "agentid": 7, "text": {"content": i.to_string()}})).await;
            assert_eq!(out["errcode"], 0);
        }
        let dropped: Vec<bool> = s.messages().iter().map(|m| m.dropped).collect();
        assert_eq!(dropped.iter().filter(|d| **d).count(), 1);
        assert!(dropped[30]);
    }

    /// A JSON answer's body.
    async fn json_of(resp: reqwest::Response) -> Value {
        serde_json::from_str(&resp.text().await.unwrap()).unwrap()
    }

    /// `media/upload` checks kinds, extensions and sizes with WeCom's errcodes; `media/get`
    /// serves what was uploaded, and 40007 for an id it does not know.
    #[tokio::test]
    async fn media_follows_the_documented_limits() {
        let running = standin().serve(0).await.unwrap();
        let base = running.base_url();
        let http = reqwest::Client::new();
        let token: Value = json_of(
            http.get(format!("{base}/cgi-bin/gettoken?corpid=ww1&corpsecret=s1"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let token = token["access_token"].as_str().unwrap().to_owned();
        let upload = |kind: &str, name: &str, bytes: Vec<u8>| {
            let url = format!("{base}/cgi-bin/media/upload?access_token={token}&type={kind}");
            let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned());
            let form = reqwest::multipart::Form::new().part("media", part);
            let http = http.clone();
            async move {
                let v: Value = json_of(http.post(url).multipart(form).send().await.unwrap()).await;
                v
            }
        };
        let code = |v: &Value| v["errcode"].as_i64().unwrap();
        assert_eq!(code(&upload("image", "a.gif", vec![1; 100]).await), 40005);
        assert_eq!(
            code(&upload("image", "a.png", vec![1; 11 << 20]).await),
            40009
        );
        assert_eq!(
            code(&upload("voice", "v.amr", vec![1; 3 << 20]).await),
            40010
        );
        assert_eq!(
            code(&upload("video", "v.mp4", vec![1; 11 << 20]).await),
            40011
        );
        assert_eq!(code(&upload("file", "f.bin", vec![1; 5]).await), 40006);
        assert_eq!(code(&upload("sticker", "f.bin", vec![1; 50]).await), 40004);
        let ok = upload("file", "report.pdf", b"%PDF-1.7 report".to_vec()).await;
        assert_eq!(code(&ok), 0, "{ok}");
        let media_id = ok["media_id"].as_str().unwrap();
        let got = http
            .get(format!(
                "{base}/cgi-bin/media/get?access_token={token}&media_id={media_id}"
            ))
            .send()
            .await
            .unwrap();
        assert!(got.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("report.pdf"));
        assert_eq!(got.bytes().await.unwrap().as_ref(), b"%PDF-1.7 report");
        let gone: Value = json_of(
            http.get(format!(
                "{base}/cgi-bin/media/get?access_token={token}&media_id=old"
            ))
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(code(&gone), 40007);
    }
}
