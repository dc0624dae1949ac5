//! `POST /api/send`: proactive messages to a scoped user, for cron jobs, notifications and
//! webhook agents answering later.
//!
//! `Authorization: Bearer <api_token>`; body `{"to": "corp_id:user_id", "text": "..."}` or
//! `{"to": ..., "markdown": "..."}`. The message goes through the app of the user's corp (or
//! the app named by `"app"`), split at 2048 bytes like any reply. Without a configured
//! `api_token` the endpoint does not exist (404).
//!
//! `"attachments": [{"url" | "base64", "type", "name", "mime"}]` adds pictures and files (as a
//! webhook's answer does): each is fetched or decoded, uploaded with `media/upload` and sent
//! after the text, which may then be left out. One that cannot be sent becomes a line saying
//! why.
//!
//! `{"stream": "<id>", "markdown": "..."}` instead answers an AI bot's message whose webhook
//! agent said it would answer later: the answer ends the stream (what does not fit, or comes
//! after the stream's time limit, goes through the message's `response_url`).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::Settings;
use crate::ids::ScopedUser;

/// Who a send order goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A member, through an app.
    User {
        /// Index of the app in `settings.apps`.
        app: usize,
        /// The member.
        user: ScopedUser,
    },
    /// An AI bot's stream, by id.
    Stream(String),
}

/// A checked send order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOrder {
    /// The recipient.
    pub to: Recipient,
    /// What to send.
    pub text: String,
    /// Whether it is markdown.
    pub markdown: bool,
    /// The attachments, as the markdown links the relay reads attachments from.
    pub attachments: Vec<String>,
}

/// A refusal: status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRefusal {
    /// HTTP status.
    pub status: u16,
    /// Why, in a few words (never the token or the text).
    pub error: String,
    /// `{"ok":false,"error":"..."}`.
    pub body: String,
}

impl SendRefusal {
    /// A refusal with `{"ok":false,"error":...}`.
    pub fn new(status: u16, error: &str) -> Self {
        Self {
            status,
            error: error.into(),
            body: serde_json::json!({"ok": false, "error": error}).to_string(),
        }
    }
}

fn refuse(status: u16, error: &str) -> SendRefusal {
    SendRefusal::new(status, error)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    markdown: Option<String>,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    attachments: Vec<crate::media::AttachmentSpec>,
}

/// Authenticates and validates a request.
pub fn check_send(
    settings: &Settings,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<SendOrder, SendRefusal> {
    let Some(expected) = &settings.api_token else {
        return Err(refuse(404, "not found"));
    };
    let given = authorization
        .and_then(|h| {
            h.trim()
                .strip_prefix("Bearer ")
                .or_else(|| h.trim().strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| refuse(401, "missing bearer token"))?;
    let ok = given.len() == expected.expose().len()
        && bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes()));
    if !ok {
        return Err(refuse(401, "wrong bearer token"));
    }
    let body: Body =
        serde_json::from_slice(body).map_err(|e| refuse(400, &format!("body: {e}")))?;
    if body.attachments.len() > crate::media::MAX_ATTACHMENTS {
        return Err(refuse(
            400,
            &format!("at most {} attachments", crate::media::MAX_ATTACHMENTS),
        ));
    }
    let attachments = body
        .attachments
        .iter()
        .map(crate::media::AttachmentSpec::to_link)
        .collect::<Result<Vec<String>, String>>()
        .map_err(|why: String| refuse(400, &why))?;
    let (text, markdown) = match (body.text, body.markdown) {
        (Some(t), None) => (t, false),
        (None, Some(m)) => (m, true),
        (None, None) if !attachments.is_empty() => (String::new(), false),
        _ => return Err(refuse(400, "give exactly one of text and markdown")),
    };
    if text.trim().is_empty() && attachments.is_empty() {
        return Err(refuse(400, "empty message"));
    }
    let to = match (body.to, body.stream) {
        (None, Some(stream)) if body.app.is_none() => {
            if stream.is_empty() || stream.len() > 128 {
                return Err(refuse(400, "stream must be a stream id"));
            }
            Recipient::Stream(stream)
        }
        (Some(to), None) => {
            let user =
                ScopedUser::parse(&to).ok_or_else(|| refuse(400, "to must be corp_id:user_id"))?;
            let app = match body.app {
                Some(name) => settings
                    .apps
                    .iter()
                    .position(|a| a.name == name && a.corp_id == user.corp_id)
                    .ok_or_else(|| refuse(404, "no such app for that corp"))?,
                None => {
                    let app = settings
                        .apps
                        .for_user(&user, None)
                        .ok_or_else(|| refuse(404, "no app for that corp"))?;
                    settings
                        .apps
                        .iter()
                        .position(|a| a.name == app.name)
                        .unwrap_or(0)
                }
            };
            Recipient::User { app, user }
        }
        _ => {
            return Err(refuse(
                400,
                "give exactly one of to and stream (app only with to)",
            ))
        }
    };
    Ok(SendOrder {
        to,
        text,
        markdown,
        attachments,
    })
}

/// The success body.
pub fn sent_body(parts: usize, msgids: &[String]) -> String {
    serde_json::json!({"ok": true, "parts": parts, "msgids": msgids}).to_string()
}

/// The failure body when WeCom refused part-way.
pub fn failed_body(sent: usize, total: usize, error: &str) -> String {
    serde_json::json!({"ok": false, "sent": sent, "parts": total, "error": error}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawSettings;
    #[allow(unused_imports)]
    use crate::testing::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn settings(token: Option<&str>) -> Settings {
        let mut raw = single_app();
        if let Some(t) = token {
            raw.set("api_token", t.into()).unwrap();
        }
        raw.resolve().unwrap()
    }

    fn single_app() -> RawSettings {
        let mut raw = RawSettings::default();
        for (k, v) in [
            ("corp_id", "ww1"),
            ("corp_secret", "s"),
            ("agent_id", "7"),
            ("token", "t"),
            ("encoding_aes_key", &*"A".repeat(43)),
        ] {
            raw.set(k, v.into()).unwrap();
        }
        raw
    }

    #[test]
    fn authentication_and_validation() {
        let body = br#"{"to":"ww1:alice","text":"hello"}"#;
        assert_eq!(
            check_send(&settings(None), Some("Bearer x"), body)
                .unwrap_err()
                .status,
            404
        );
        let s = settings(Some("a-long-enough-token"));
        assert_eq!(check_send(&s, None, body).unwrap_err().status, 401);
        assert_eq!(
            check_send(&s, Some("Bearer wrong-token-of-length"), body)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            check_send(&s, Some("Basic a-long-enough-token"), body)
                .unwrap_err()
                .status,
            401
        );
        let order = check_send(&s, Some("Bearer a-long-enough-token"), body).unwrap();
        let Recipient::User { app, user } = &order.to else {
            panic!("{order:?}")
        };
        assert_eq!(
            (*app, user.to_string(), order.text.as_str(), order.markdown),
            (0, "ww1:alice".into(), "hello", false)
        );
        let order = check_send(
            &s,
            Some("Bearer a-long-enough-token"),
            br#"{"stream":"abc","markdown":"**later**"}"#,
        )
        .unwrap();
        assert_eq!(order.to, Recipient::Stream("abc".into()));
        for bad in [
            &br#"{"stream":"abc","to":"ww1:a","text":"x"}"#[..],
            br#"{"stream":"abc","app":"x","text":"x"}"#,
            br#"{"stream":"","text":"x"}"#,
            br#"{"text":"x"}"#,
        ] {
            assert_eq!(
                check_send(&s, Some("Bearer a-long-enough-token"), bad)
                    .unwrap_err()
                    .status,
                400
            );
        }
        assert_eq!(
            check_send(
                &s,
                Some("Bearer a-long-enough-token"),
                br#"{"to":"alice","text":"x"}"#
            )
            .unwrap_err()
            .status,
            400
        );
        assert_eq!(
            check_send(
                &s,
                Some("Bearer a-long-enough-token"),
                br#"{"to":"ww9:alice","text":"x"}"#
            )
            .unwrap_err()
            .status,
            404
        );
        assert_eq!(
            check_send(
                &s,
                Some("Bearer a-long-enough-token"),
                br#"{"to":"ww1:a","text":"x","markdown":"y"}"#
            )
            .unwrap_err()
            .status,
            400
        );
        assert!(
            check_send(
                &s,
                Some("Bearer a-long-enough-token"),
                br#"{"to":"ww1:a","markdown":"**y**"}"#
            )
            .unwrap()
            .markdown
        );
        assert_eq!(
            check_send(&s, Some("Bearer a-long-enough-token"), b"nope")
                .unwrap_err()
                .status,
            400
        );
        let mut raw = single_app();
        raw.set("api_token", "short".into()).unwrap();
        assert_eq!(raw.resolve().unwrap_err().key, "api_token");
    }

    #[test]
    fn attachments_are_checked_and_may_stand_alone() {
        let tok = "Bearer 0123456789abcdef";
        let s = settings(Some("0123456789abcdef"));
        let order = check_send(
            &s,
            Some(tok),
            br#"{"to":"ww1:a","attachments":[{"url":"https://x.example/c.png","type":"image","name":"chart"},{"base64":"JVBERi0x","mime":"application/pdf","name":"r.pdf"}]}"#,
        )
        .unwrap();
        assert_eq!(order.text, "");
        assert_eq!(
            order.attachments,
            [
                "![chart](https://x.example/c.png)",
                "[r.pdf](data:application/pdf;base64,JVBERi0x \"attachment\")"
            ]
        );
        for bad in [
            &br#"{"to":"ww1:a","attachments":[{"url":"https://x/y","base64":"AA=="}]}"#[..],
            br#"{"to":"ww1:a","attachments":[{"url":"https://x/y","type":"hologram"}]}"#,
            br#"{"to":"ww1:a","attachments":[]}"#,
        ] {
            assert_eq!(check_send(&s, Some(tok), bad).unwrap_err().status, 400);
        }
    }
}
