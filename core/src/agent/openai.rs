//! OpenAI-compatible Chat Completions as data: one request value, one parsed answer.
//!
//! Covers OpenAI, DeepSeek, Qwen (DashScope compatible mode), Moonshot, Ollama, vLLM, LiteLLM and
//! the Hermes agent's own API server: `POST {base_url}/chat/completions` with a bearer key.
//! Errors are classified the way these APIs report them: 401/403 (bad key: do not retry), 429
//! (retry after `Retry-After`), 408/409/5xx and timeouts (retry), other 4xx (do not retry),
//! malformed JSON (retry: proxies answer HTML error pages).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::agent::AgentError;
use crate::http::{Body, HttpRequest, HttpResponse, Method};
use crate::memory::{Role, Turn};

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'a str,
    content: MessageContent<'a>,
}

/// A message's content: text, or text and pictures as content parts (vision).
#[derive(Serialize)]
#[serde(untagged)]
enum MessageContent<'a> {
    Text(&'a str),
    Parts(Vec<Part<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Serialize)]
struct ImageUrl<'a> {
    url: &'a str,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<ChatMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    stream: bool,
    /// A stable, non-reversible-enough id so the provider can spot abuse per end user.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

/// The request for one answer: the system prompt, the stored turns, then the user's text and
/// pictures (`data:` URLs, sent as `image_url` content parts).
#[allow(clippy::too_many_arguments)]
pub fn chat_request(
    base_url: &str,
    api_key: &str,
    model: &str,
    system: &str,
    history: &[Turn],
    user_text: &str,
    images: &[String],
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    end_user: Option<&str>,
) -> HttpRequest {
    let mut messages = Vec::with_capacity(history.len() + 2);
    if !system.is_empty() {
        messages.push(ChatMessage {
            role: "system",
            content: MessageContent::Text(system),
        });
    }
    for turn in history {
        let role = match turn.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        messages.push(ChatMessage {
            role,
            content: MessageContent::Text(&turn.text),
        });
    }
    let content = if images.is_empty() {
        MessageContent::Text(user_text)
    } else {
        let mut parts = Vec::with_capacity(images.len() + 1);
        if !user_text.is_empty() {
            parts.push(Part::Text { text: user_text });
        }
        parts.extend(images.iter().map(|url| Part::ImageUrl {
            image_url: ImageUrl { url },
        }));
        MessageContent::Parts(parts)
    };
    messages.push(ChatMessage {
        role: "user",
        content,
    });
    let body = ChatRequest {
        model,
        messages,
        temperature,
        max_tokens,
        stream: false,
        user: end_user,
    };
    let mut headers = Vec::new();
    if !api_key.is_empty() {
        headers.push(("authorization".to_string(), format!("Bearer {api_key}")));
    }
    HttpRequest {
        method: Method::Post,
        url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
        headers,
        body: Body::Json(serde_json::to_string(&body).unwrap_or_default()),
    }
}

/// `POST {base_url}/audio/transcriptions`: the audio as multipart field `file`, with `model`.
pub fn transcription_request(
    base_url: &str,
    api_key: &str,
    model: &str,
    file_name: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> HttpRequest {
    let mut headers = Vec::new();
    if !api_key.is_empty() {
        headers.push(("authorization".to_string(), format!("Bearer {api_key}")));
    }
    HttpRequest {
        method: Method::Post,
        url: format!("{}/audio/transcriptions", base_url.trim_end_matches('/')),
        headers,
        body: Body::Multipart(crate::http::FilePart {
            field: "file".into(),
            filename: file_name.into(),
            content_type: content_type.into(),
            bytes,
            fields: alloc::vec![("model".into(), model.into())],
        }),
    }
}

/// The transcript of a `/audio/transcriptions` answer (`{"text": ...}`), or why there is none.
pub fn parse_transcription(resp: &HttpResponse) -> Result<String, AgentError> {
    #[derive(Deserialize)]
    struct Transcript {
        text: String,
    }
    check_status(resp)?;
    serde_json::from_slice::<Transcript>(&resp.body)
        .map(|t| t.text.trim().to_string())
        .map_err(|_| AgentError::retry("the transcription API answered with malformed JSON"))
}

/// The same request asking for the answer as server-sent events (`"stream": true`).
pub fn streaming(mut req: HttpRequest) -> HttpRequest {
    if let Body::Json(json) = &req.body {
        if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(json) {
            value["stream"] = serde_json::Value::Bool(true);
            req.body = Body::Json(value.to_string());
        }
    }
    req
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Option<AnswerMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// Reads a Chat Completions event stream (`data: {...}` lines, then `data: [DONE]`) as it
/// arrives, piece by piece, however the pieces cut the lines.
#[derive(Debug, Default)]
pub struct SseReader {
    line: Vec<u8>,
    /// The `[DONE]` line or a `finish_reason` arrived: the answer is whole.
    pub done: bool,
    /// An `error` object arrived in the stream.
    pub error: Option<String>,
}

impl SseReader {
    /// Feeds a piece of the body; calls `on_text` with each piece of answer text in it.
    pub fn feed(&mut self, chunk: &[u8], on_text: &mut dyn FnMut(&str)) {
        for &b in chunk {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = core::mem::take(&mut self.line);
            self.line_done(&line, on_text);
        }
    }

    fn line_done(&mut self, line: &[u8], on_text: &mut dyn FnMut(&str)) {
        let Ok(line) = core::str::from_utf8(line) else {
            return;
        };
        let Some(data) = line.trim_end_matches('\r').strip_prefix("data:") else {
            return;
        };
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        if let Ok(err) = serde_json::from_str::<ErrorBody>(data) {
            if let Some(e) = err.error {
                self.error = Some(e.message.chars().take(200).collect());
                return;
            }
        }
        let Ok(chunk) = serde_json::from_str::<StreamChunk>(data) else {
            return;
        };
        for choice in chunk.choices {
            if let Some(text) = choice.delta.and_then(|d| d.content) {
                if !text.is_empty() {
                    on_text(&text);
                }
            }
            if choice.finish_reason.is_some() {
                self.done = true;
            }
        }
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<AnswerMessage>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
}

/// The provider's own error message, cut short (it never holds the key).
fn provider_message(resp: &HttpResponse) -> String {
    let msg = serde_json::from_slice::<ErrorBody>(&resp.body)
        .ok()
        .and_then(|b| b.error)
        .map(|e| e.message)
        .unwrap_or_default();
    msg.chars().take(200).collect()
}

/// The error an answer's status means, sorted as the module says; `Ok` for 2xx.
fn check_status(resp: &HttpResponse) -> Result<(), AgentError> {
    match resp.status {
        200..=299 => Ok(()),
        401 | 403 => Err(AgentError::fatal(format!(
            "the agent API refused the api_key (http {}): {}",
            resp.status,
            provider_message(resp)
        ))),
        429 => {
            let mut e = AgentError::retry(format!(
                "the agent API is rate limiting (429): {}",
                provider_message(resp)
            ));
            e.retry_after_secs = resp.retry_after_secs;
            Err(e)
        }
        408 | 409 | 500..=599 => {
            let mut e = AgentError::retry(format!(
                "the agent API failed (http {}): {}",
                resp.status,
                provider_message(resp)
            ));
            e.retry_after_secs = resp.retry_after_secs;
            Err(e)
        }
        status => Err(AgentError::fatal(format!(
            "the agent API rejected the request (http {status}): {}",
            provider_message(resp)
        ))),
    }
}

/// Parses a Chat Completions answer into the reply text.
pub fn parse_chat(resp: &HttpResponse) -> Result<String, AgentError> {
    check_status(resp)?;
    let parsed: ChatResponse = serde_json::from_slice(&resp.body)
        .map_err(|_| AgentError::retry("the agent API answered with malformed JSON"))?;
    let text = parsed
        .choices
        .into_iter()
        .find_map(|c| c.message.and_then(|m| m.content))
        .ok_or_else(|| AgentError::retry("the agent API answered without a message"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::testing::*;
    use alloc::vec;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn request_shape() {
        let history = vec![
            Turn {
                role: Role::User,
                text: "hi".into(),
            },
            Turn {
                role: Role::Assistant,
                text: "hello".into(),
            },
        ];
        let req = chat_request(
            "http://127.0.0.1:9/v1/",
            "sk-123",
            "gpt-x",
            "be brief",
            &history,
            "again",
            &[],
            Some(0.2),
            None,
            Some("u1"),
        );
        assert_eq!(req.url, "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(
            req.headers,
            vec![("authorization".to_string(), "Bearer sk-123".to_string())]
        );
        assert!(!format!("{req:?}").contains("sk-123"));
        let Body::Json(json) = &req.body else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["model"], "gpt-x");
        assert_eq!(v["stream"], false);
        assert_eq!(v["messages"].as_array().unwrap().len(), 4);
        assert_eq!(
            v["messages"][0],
            serde_json::json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            v["messages"][3],
            serde_json::json!({"role": "user", "content": "again"})
        );
        assert!(v.get("max_tokens").is_none());
    }

    #[test]
    fn answers_and_errors() {
        let ok = HttpResponse::json(
            r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"42"},"finish_reason":"stop"}]}"#,
        );
        assert_eq!(parse_chat(&ok).unwrap(), "42");
        let with = |status: u16, body: &str, retry: Option<u64>| HttpResponse {
            status,
            body: body.as_bytes().to_vec(),
            retry_after_secs: retry,
            ..HttpResponse::default()
        };
        let e = parse_chat(&with(
            401,
            r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#,
            None,
        ))
        .unwrap_err();
        assert!(!e.retryable && e.message.contains("Incorrect API key"));
        let e = parse_chat(&with(
            429,
            r#"{"error":{"message":"Rate limit reached"}}"#,
            Some(2),
        ))
        .unwrap_err();
        assert!(e.retryable);
        assert_eq!(e.retry_after_secs, Some(2));
        assert!(
            parse_chat(&with(503, "<html>", None))
                .unwrap_err()
                .retryable
        );
        assert!(
            !parse_chat(&with(400, r#"{"error":{"message":"bad model"}}"#, None))
                .unwrap_err()
                .retryable
        );
        assert!(
            parse_chat(&with(200, "not json", None))
                .unwrap_err()
                .retryable
        );
        assert!(parse_chat(&with(200, r#"{"choices":[]}"#, None)).is_err());
    }

    #[test]
    fn an_event_stream_is_read_across_any_cuts() {
        let body = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"你好\"}}]}\r\n\r\n\
                    : keep-alive\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\", world\"},\"finish_reason\":null}]}\n\n\
                    data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                    data: [DONE]\n\n";
        for size in [1, 2, 3, 7, 64, body.len()] {
            let mut reader = SseReader::default();
            let mut text = String::new();
            for piece in body.as_bytes().chunks(size) {
                reader.feed(piece, &mut |t| text.push_str(t));
            }
            assert_eq!(text, "你好, world", "pieces of {size}");
            assert!(reader.done);
        }
        let mut reader = SseReader::default();
        reader.feed(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"cut\"}}]}\n",
            &mut |_| {},
        );
        assert!(!reader.done, "no end yet");
        reader.feed(
            b"data: {\"error\":{\"message\":\"overloaded\"}}\n",
            &mut |_| {},
        );
        assert_eq!(reader.error.as_deref(), Some("overloaded"));
    }

    #[test]
    fn a_streaming_request_says_so() {
        let req = streaming(chat_request(
            "http://x/v1",
            "k",
            "m",
            "",
            &[],
            "hi",
            &["data:image/png;base64,AAAA".into()],
            None,
            None,
            None,
        ));
        let Body::Json(json) = &req.body else {
            panic!()
        };
        assert!(json.contains("\"stream\":true"), "{json}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            v["messages"][0]["content"],
            serde_json::json!([
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ])
        );
    }

    #[test]
    fn transcriptions_go_as_multipart_and_refusals_are_errors() {
        let req = transcription_request(
            "http://x/v1/",
            "k",
            "whisper-1",
            "voice.amr",
            "audio/amr",
            b"#!AMR\n..".to_vec(),
        );
        assert_eq!(req.url, "http://x/v1/audio/transcriptions");
        let Body::Multipart(part) = &req.body else {
            panic!()
        };
        assert_eq!(
            (part.field.as_str(), part.fields[0].1.as_str()),
            ("file", "whisper-1")
        );
        assert_eq!(
            parse_transcription(&HttpResponse::json(r#"{"text":" hello "}"#)).unwrap(),
            "hello"
        );
        let mut refused = HttpResponse::json(
            r#"{"error":{"message":"Invalid file format.","type":"invalid_request_error"}}"#,
        );
        refused.status = 400;
        let e = parse_transcription(&refused).unwrap_err();
        assert!(
            !e.retryable && e.message.contains("Invalid file format"),
            "{e}"
        );
    }
}
