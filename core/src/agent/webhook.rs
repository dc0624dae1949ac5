//! The webhook agent: a signed JSON event POSTed to the user's own agent URL.
//!
//! Signature: header `X-WeCom-Relay-Signature: t=<unix seconds>,v1=<hex>` where `<hex>` is
//! HMAC-SHA256 with the shared secret over `<t>.<raw body>`. A receiver recomputes it, compares
//! in constant time, and rejects timestamps far from its clock (replay).
//!
//! Answers: `200` with `{"reply": "..."}` or `{"replies": ["...", ...]}` is sent to the user;
//! `202`/`204` (or `200` with neither key) means the receiver will answer later through
//! `POST /api/send`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::agent::AgentError;
use crate::crypto::to_hex;
use crate::http::{Body, HttpRequest, HttpResponse, Method};
use crate::job::{AgentInput, Job, JobKind};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-wecom-relay-signature";

/// The event a webhook receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Event type: `message`.
    pub event: String,
    /// The app's name.
    pub app: String,
    /// The corp.
    pub corp_id: String,
    /// The app's agent id.
    pub agent_id: u64,
    /// The scoped user id, `corp_id:user_id`: pass it as `to` to `/api/send`.
    pub user: String,
    /// `text`, `image`, `voice`, `video`, `location` or `link`.
    pub msg_type: String,
    /// The text, or a description of the media.
    pub text: String,
    /// The message itself, media references included.
    pub input: AgentInput,
    /// The relay's id for the message (also the dedup key).
    pub message_id: String,
    /// When WeCom created the message.
    pub create_time: u64,
    /// An AI bot's message: the stream the answer goes to. Answer at once, or later by
    /// passing it as `stream` to `/api/send`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// An AI bot's message: the conversation (`aibotid:chatid` in a group chat, else
    /// `aibotid:userid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// A `feedback` event: the rated answer's `feedback_id` and the `rating` (1 accurate,
    /// 2 inaccurate, 3 cancelled); `text` holds the user's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
    /// The message's media: references, and their bytes with `agent.webhook_media_bytes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<crate::media::MediaInfo>,
}

/// A user's rating of an AI bot's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// The `feedback.id` the answer carried.
    pub feedback_id: String,
    /// 1 accurate, 2 inaccurate, 3 cancelled.
    pub rating: u8,
}

impl WebhookEvent {
    /// The event for a job.
    pub fn from_job(job: &Job, corp_id: &str) -> Option<Self> {
        let (input, stream, conversation) = match &job.kind {
            JobKind::Answer { input } => (input, None, None),
            JobKind::Stream {
                input,
                stream,
                conversation,
            } => (input, Some(stream.clone()), Some(conversation.clone())),
            JobKind::Notice { .. } | JobKind::Feedback { .. } => return None,
        };
        let msg_type = serde_json::to_value(input)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_default();
        Some(Self {
            event: "message".into(),
            app: job.app.clone(),
            corp_id: corp_id.to_string(),
            agent_id: job.agent_id.0,
            user: job.user.to_string(),
            msg_type,
            text: input.to_text(),
            input: input.clone(),
            message_id: job.id.clone(),
            create_time: job.create_time,
            stream,
            conversation,
            feedback: None,
            media: Vec::new(),
        })
    }

    /// The `feedback` event for a [`JobKind::Feedback`] job.
    pub fn feedback(job: &Job) -> Option<Self> {
        let JobKind::Feedback {
            feedback_id,
            rating,
            comment,
        } = &job.kind
        else {
            return None;
        };
        Some(Self {
            event: "feedback".into(),
            app: job.app.clone(),
            corp_id: job.user.corp_id.as_str().to_string(),
            agent_id: 0,
            user: job.user.to_string(),
            msg_type: "feedback".into(),
            text: comment.clone(),
            input: AgentInput::Text {
                text: comment.clone(),
            },
            message_id: job.id.clone(),
            create_time: job.create_time,
            stream: None,
            conversation: None,
            feedback: Some(Feedback {
                feedback_id: feedback_id.clone(),
                rating: *rating,
            }),
            media: Vec::new(),
        })
    }
}

/// `HMAC-SHA256(secret, "<timestamp>.<body>")` in lower-case hex.
pub fn sign(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    to_hex(&mac.finalize().into_bytes())
}

/// Checks a signature header in constant time, allowing `tolerance_secs` of clock skew.
pub fn verify(secret: &str, header: &str, body: &str, now: u64, tolerance_secs: u64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if t.abs_diff(now) > tolerance_secs {
        return false;
    }
    let expected = sign(secret, t, body);
    use subtle::ConstantTimeEq;
    expected.len() == v1.len() && bool::from(expected.as_bytes().ct_eq(v1.as_bytes()))
}

/// The signed request.
pub fn webhook_request(url: &str, secret: &str, event: &WebhookEvent, now: u64) -> HttpRequest {
    let body = serde_json::to_string(event).unwrap_or_default();
    let signature = format!("t={now},v1={}", sign(secret, now, &body));
    HttpRequest {
        method: Method::Post,
        url: url.to_string(),
        headers: alloc::vec![(SIGNATURE_HEADER.to_string(), signature)],
        body: Body::Json(body),
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    reply: Option<String>,
    #[serde(default)]
    replies: Option<Vec<String>>,
    #[serde(default)]
    attachments: Vec<crate::media::AttachmentSpec>,
}

/// Parses the receiver's answer: the texts to send now (empty when it answers later).
pub fn parse_webhook(resp: &HttpResponse) -> Result<Vec<String>, AgentError> {
    match resp.status {
        202 | 204 => return Ok(Vec::new()),
        200..=299 => {}
        429 | 408 | 500..=599 => {
            let mut e = AgentError::retry(format!("the webhook failed (http {})", resp.status));
            e.retry_after_secs = resp.retry_after_secs;
            return Err(e);
        }
        status => {
            return Err(AgentError::fatal(format!(
                "the webhook refused the event (http {status})"
            )))
        }
    }
    if resp.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let answer: Answer = serde_json::from_slice(&resp.body)
        .map_err(|_| AgentError::retry("the webhook answered with malformed JSON"))?;
    let mut texts: Vec<String> = answer.replies.unwrap_or_default();
    if let Some(reply) = answer.reply {
        texts.insert(0, reply);
    }
    texts.retain(|t| !t.trim().is_empty());
    // Attachments travel as the markdown the relay reads attachments from in any answer.
    let links: Vec<String> = answer
        .attachments
        .iter()
        .map(|a| {
            a.to_link()
                .unwrap_or_else(|why| format!("(An attachment was not sent: {why}.)"))
        })
        .collect();
    if !links.is_empty() {
        texts.push(links.join("\n"));
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AgentId, ScopedUser};
    #[allow(unused_imports)]
    use crate::testing::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn job() -> Job {
        Job {
            id: "ww1:7:m:9".into(),
            app: "hr".into(),
            agent_id: AgentId(7),
            user: ScopedUser::new("ww1", "alice"),
            create_time: 1700000000,
            kind: JobKind::Answer {
                input: AgentInput::Image {
                    media_id: "M".into(),
                    pic_url: "http://p".into(),
                },
            },
        }
    }

    #[test]
    fn signature_known_answer_and_verification() {
        // Computed independently with Python's hmac module.
        assert_eq!(
            sign("secret", 1700000000, "{}"),
            "b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        let event = WebhookEvent::from_job(&job(), "ww1").unwrap();
        assert_eq!(event.user, "ww1:alice");
        assert_eq!(event.msg_type, "image");
        let req = webhook_request("http://127.0.0.1:1/hook", "s3", &event, 1700000100);
        let Body::Json(body) = &req.body else {
            panic!()
        };
        let header = &req.headers[0].1;
        assert!(verify("s3", header, body, 1700000100, 300));
        assert!(!verify("s3", header, body, 1700001000, 300), "stale");
        assert!(!verify("other", header, body, 1700000100, 300));
        assert!(!verify(
            "s3",
            header,
            &body.replace("alice", "bob"),
            1700000100,
            300
        ));
        assert!(!verify("s3", "garbage", body, 1700000100, 300));
    }

    #[test]
    fn answers() {
        let with = |status: u16, body: &str| HttpResponse {
            status,
            body: body.as_bytes().to_vec(),
            ..HttpResponse::default()
        };
        assert_eq!(
            parse_webhook(&with(200, r#"{"reply":"hi"}"#)).unwrap(),
            ["hi"]
        );
        assert_eq!(
            parse_webhook(&with(200, r#"{"replies":["a","b"]}"#)).unwrap(),
            ["a", "b"]
        );
        assert!(parse_webhook(&with(202, "")).unwrap().is_empty());
        assert!(parse_webhook(&with(200, "")).unwrap().is_empty());
        assert!(parse_webhook(&with(500, "")).unwrap_err().retryable);
        assert!(!parse_webhook(&with(401, "")).unwrap_err().retryable);
        assert!(parse_webhook(&with(200, "<html>")).unwrap_err().retryable);
    }
}
