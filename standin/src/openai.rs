//! A local stand-in for an OpenAI-compatible Chat Completions API, for the tests.
//!
//! It follows the real API's shapes: `POST /v1/chat/completions` with `Authorization: Bearer`,
//! a `chat.completion` object with `choices[0].message.content` and `usage`, and its error
//! objects (`{"error": {"message", "type", "code"}}`) for a wrong key (401), a malformed request
//! (400), rate limits (429 with `Retry-After`) and server errors (500). Faults can be queued;
//! every accepted request body is recorded.
//!
//! The answer is `reply to <last user message> (history: <n> earlier messages)`, so tests can
//! see what the relay sent as memory.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A queued misbehaviour.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatFault {
    /// Answer with this status and OpenAI's error object for it (0: answer normally).
    pub status: u16,
    /// `Retry-After` seconds, for 429.
    pub retry_after: Option<u64>,
    /// Wait before answering.
    pub delay_ms: u64,
    /// Answer 200 with a body that is not JSON.
    pub malformed: bool,
    /// A streamed answer: pause this long between its pieces (default 30 ms).
    #[serde(default)]
    pub piece_delay_ms: Option<u64>,
    /// A streamed answer: break the connection after this many pieces, without `[DONE]`.
    #[serde(default)]
    pub cut_after: Option<usize>,
}

struct Inner {
    api_key: String,
    faults: VecDeque<ChatFault>,
    requests: Vec<Value>,
    attempts: usize,
    transcriptions: usize,
}

/// The stand-in's state.
#[derive(Clone)]
pub struct OpenAiStandin {
    inner: Arc<Mutex<Inner>>,
}

/// A running stand-in.
pub struct RunningOpenAi {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub standin: OpenAiStandin,
    task: tokio::task::JoinHandle<()>,
}

impl RunningOpenAi {
    /// The `base_url` to configure: `http://127.0.0.1:port/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for RunningOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}})),
    )
        .into_response()
}

impl OpenAiStandin {
    /// A stand-in accepting `api_key`.
    pub fn new(api_key: &str) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                api_key: api_key.into(),
                faults: VecDeque::new(),
                requests: Vec::new(),
                attempts: 0,
                transcriptions: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a fault for the next request.
    pub fn inject(&self, fault: ChatFault) {
        self.lock().faults.push_back(fault);
    }

    /// Request bodies that were answered normally.
    pub fn requests(&self) -> Vec<Value> {
        self.lock().requests.clone()
    }

    /// Requests that reached `/audio/transcriptions`, refused ones included.
    pub fn transcriptions(&self) -> usize {
        self.lock().transcriptions
    }

    /// Every request that reached the endpoint, failed ones included.
    pub fn attempts(&self) -> usize {
        self.lock().attempts
    }

    /// Serves on `127.0.0.1:0`.
    pub async fn serve(self) -> std::io::Result<RunningOpenAi> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let router = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/audio/transcriptions", post(transcriptions))
            .with_state(self.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(RunningOpenAi {
            addr,
            standin: self,
            task,
        })
    }
}

async fn completions(State(s): State<OpenAiStandin>, headers: HeaderMap, body: Bytes) -> Response {
    let (fault, key) = {
        let mut inner = s.lock();
        inner.attempts += 1;
        (inner.faults.pop_front(), inner.api_key.clone())
    };
    if let Some(f) = &fault {
        if f.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
        }
    }
    if !authorized(&headers, &key) {
        return error(StatusCode::UNAUTHORIZED, "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.", "invalid_request_error", Some("invalid_api_key"));
    }
    if let Some(f) = &fault {
        if f.malformed {
            return (StatusCode::OK, "<html>upstream error</html>").into_response();
        }
        match f.status {
            401 => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "Incorrect API key provided.",
                    "invalid_request_error",
                    Some("invalid_api_key"),
                );
            }
            429 => {
                let mut resp = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Rate limit reached for requests",
                    "requests",
                    Some("rate_limit_exceeded"),
                );
                if let Some(secs) = f.retry_after {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
                }
                return resp;
            }
            500..=599 => {
                return error(
                    StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    "The server had an error while processing your request. Sorry about that!",
                    "server_error",
                    None,
                )
            }
            _ => {}
        }
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
        );
    };
    let Some(model) = req["model"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
            None,
        );
    };
    let Some(messages) = req["messages"].as_array().filter(|m| !m.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "'messages' is a required property",
            "invalid_request_error",
            None,
        );
    };
    // Content is a string, or (for a user) an array of `text` and `image_url` parts, the
    // image a `data:` or `https` URL.
    let valid = messages.iter().all(|m| {
        let role = m["role"].as_str();
        matches!(role, Some("system" | "user" | "assistant" | "tool"))
            && (m["content"].is_string()
                || role == Some("user")
                    && m["content"]
                        .as_array()
                        .is_some_and(|parts| !parts.is_empty() && parts.iter().all(valid_part)))
    });
    if !valid {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid 'messages': each needs a role and string content (or, for a user, content parts)",
            "invalid_request_error",
            None,
        );
    }
    let last = messages.last().map(content_text).unwrap_or_default();
    let earlier = messages.iter().filter(|m| m["role"] != "system").count() - 1;
    let answer = format!("reply to {last} (history: {earlier} earlier messages)");
    let model = model.to_owned();
    let stream = req["stream"] == true;
    s.lock().requests.push(req);
    if stream {
        return event_stream(&model, &answer, fault.as_ref());
    }
    Json(json!({
        "id": format!("chatcmpl-standin{}", s.lock().requests.len()),
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
    }))
    .into_response()
}

/// Whether the request carries `Authorization: Bearer <key>`.
fn authorized(headers: &HeaderMap, key: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k == key)
}

fn valid_part(part: &Value) -> bool {
    match part["type"].as_str() {
        Some("text") => part["text"].is_string(),
        Some("image_url") => part["image_url"]["url"].as_str().is_some_and(|u| {
            u.starts_with("https://") || u.starts_with("data:image/") && u.contains(";base64,")
        }),
        _ => false,
    }
}

/// A message's text: the string, or the text parts joined with `[image]` for each picture.
fn content_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("text") => p["text"].as_str().unwrap_or_default().to_owned(),
                _ => "[image]".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The formats OpenAI's `/audio/transcriptions` accepts, by file name extension.
const AUDIO_FORMATS: [&str; 10] = [
    "flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm",
];

/// `POST /v1/audio/transcriptions`: multipart `file` and `model`, answered `{"text": ...}`;
/// a format outside [`AUDIO_FORMATS`] (AMR, Speex) is refused with 400, as OpenAI does.
async fn transcriptions(
    State(s): State<OpenAiStandin>,
    headers: HeaderMap,
    mut form: axum::extract::Multipart,
) -> Response {
    let key = {
        let mut inner = s.lock();
        inner.transcriptions += 1;
        inner.api_key.clone()
    };
    if !authorized(&headers, &key) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    let (mut file, mut model) = (None, None);
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("file") => {
                let name = field.file_name().unwrap_or_default().to_owned();
                file = field.bytes().await.ok().map(|b| (name, b.len()));
            }
            Some("model") => model = field.text().await.ok(),
            _ => {}
        }
    }
    let Some(_model) = model.filter(|m| !m.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
            None,
        );
    };
    let Some((name, len)) = file else {
        return error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'file'.",
            "invalid_request_error",
            None,
        );
    };
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if !AUDIO_FORMATS.contains(&ext.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid file format. Supported formats: {AUDIO_FORMATS:?}"),
            "invalid_request_error",
            None,
        );
    }
    Json(json!({"text": format!("transcript of {name} ({len} bytes)")})).into_response()
}

/// A streamed answer as OpenAI sends it (`stream: true`): `text/event-stream`, a first chunk
/// with the role, one chunk per piece of content, a last chunk with `finish_reason`, then
/// `data: [DONE]`.
fn event_stream(model: &str, answer: &str, fault: Option<&ChatFault>) -> Response {
    let delay = Duration::from_millis(fault.and_then(|f| f.piece_delay_ms).unwrap_or(30));
    let cut_after = fault.and_then(|f| f.cut_after);
    let chunk = |delta: Value, finish: Value| {
        let obj = json!({
            "id": "chatcmpl-standin-stream",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000u64,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        format!("data: {obj}\n\n")
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    // Pieces of about eight characters, cut anywhere (inside a word, a CJK character's
    // neighbours): the client must not care where.
    let chars: Vec<char> = answer.chars().collect();
    for piece in chars.chunks(8) {
        let text: String = piece.iter().collect();
        events.push(chunk(json!({"content": text}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    events.push("data: [DONE]\n\n".to_owned());
    let total = events.len();
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let events = events.clone();
        async move {
            if i >= total || cut_after.is_some_and(|n| i > n) {
                return None;
            }
            if cut_after.is_some_and(|n| i == n) {
                return Some((Err(std::io::Error::other("cut")), i + 1));
            }
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, std::io::Error>(events[i].clone()), i + 1))
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(axum::body::Body::from_stream(stream))
        .expect("a valid response")
}
