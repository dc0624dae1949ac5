//! WeCom's AI bot (智能机器人) in callback (URL) mode: the bots, their JSON callbacks and
//! replies, and the streamed answer's state.
//!
//! A bot speaks the same WXBizMsgCrypt as an app, with an empty receive id and JSON bodies.
//! A user's message is answered at once with a stream (`finish: false`); WeCom then keeps
//! asking for it ("refresh" callbacks naming the stream) until an answer says `finish: true`,
//! for at most six minutes. Each answer carries the whole content so far, at most
//! [`stream::MAX_STREAM_BYTES`]. What does not fit, or arrives too late, goes once through the
//! message's `response_url`.
//!
//! - [`Bots`]: the configured bots, found by path and signature.
//! - [`BotCallback`]: what a decrypted callback says ([`parse_callback`]).
//! - [`stream`]: the stream's state, changed only through [`stream::StreamOp`]s so that any
//!   store can apply them atomically, and where an answer is cut.
//! - [`reply`]: the passive replies, sealed.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::Deserialize;

use crate::apps::{ConfigError, RouteError, SignedQuery};
use crate::crypto::MsgCrypt;

mod message;
pub mod reply;
pub mod stream;

pub use message::{
    parse_callback, BotCallback, BotEvent, BotMessage, ChatType, MessageError, MAX_ID_BYTES,
};

/// The bots' default callback path.
pub const DEFAULT_BOT_PATH: &str = "/wecom/aibot";

/// The greeting a bot answers `enter_chat` with when none is configured.
pub const DEFAULT_BOT_WELCOME: &str = "你好！直接发消息给我就行。发送 /help 查看可用命令。";

/// One bot's settings as written in `config.yaml` (`bots:`) or `WECOM_AIBOT_BOTS_JSON`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// A name for logs, metrics and stored state; defaults to `bot` plus its position.
    #[serde(default)]
    pub name: Option<String>,
    /// The callback Token.
    #[serde(default)]
    pub token: String,
    /// The callback EncodingAESKey (43 characters).
    #[serde(default)]
    pub encoding_aes_key: String,
    /// The callback path; [`DEFAULT_BOT_PATH`] when unset.
    #[serde(default)]
    pub path: Option<String>,
    /// The answer to `enter_chat`; the shared `welcome_message` when unset, none when empty.
    #[serde(default)]
    pub welcome_message: Option<String>,
}

impl fmt::Debug for BotConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotConfig")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("encoding_aes_key", &"<redacted>")
            .field("path", &self.path)
            .field("welcome_message", &self.welcome_message)
            .finish()
    }
}

/// A configured bot.
#[derive(Debug, Clone)]
pub struct Bot {
    /// Its name.
    pub name: String,
    /// Where WeCom calls it.
    pub path: String,
    /// What `enter_chat` is answered with; `None` answers nothing.
    pub welcome: Option<String>,
    crypt: MsgCrypt,
}

impl Bot {
    /// The bot's crypt (receive id `""`).
    pub fn crypt(&self) -> &MsgCrypt {
        &self.crypt
    }
}

/// The configured bots (possibly none).
#[derive(Debug, Clone, Default)]
pub struct Bots(Vec<Bot>);

impl Bots {
    /// Validates the bots. `welcome` is the shared `welcome_message`, if set.
    pub fn from_configs(configs: &[BotConfig], welcome: Option<&str>) -> Result<Self, ConfigError> {
        let mut bots: Vec<Bot> = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let key = |field: &str| format!("bots[{i}].{field}");
            let name = c
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| format!("bot{}", i + 1));
            if !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                return Err(ConfigError::new(
                    key("name"),
                    "may hold only letters, digits, '-', '_' and '.'",
                ));
            }
            if c.token.trim().is_empty() {
                return Err(ConfigError::new(key("token"), "is required"));
            }
            let crypt =
                MsgCrypt::new(c.token.trim(), c.encoding_aes_key.trim(), "").map_err(|_| {
                    ConfigError::new(key("encoding_aes_key"), "must be 43 characters of base64")
                })?;
            let path = c
                .path
                .clone()
                .filter(|p| !p.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_BOT_PATH.to_owned());
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                return Err(ConfigError::new(
                    key("path"),
                    format!("must be a URL path starting with '/', got {path:?}"),
                ));
            }
            if bots.iter().any(|b| b.name == name) {
                return Err(ConfigError::new(key("name"), "is used by another bot"));
            }
            if bots
                .iter()
                .any(|b| b.path == path && b.crypt.token() == crypt.token())
            {
                return Err(ConfigError::new(
                    key("token"),
                    "is used by another bot on the same path: WeCom's signature could not tell them apart",
                ));
            }
            let welcome = match c.welcome_message.as_deref().or(welcome) {
                Some(w) if w.trim().is_empty() => None,
                Some(w) => Some(w.to_owned()),
                None => Some(DEFAULT_BOT_WELCOME.to_owned()),
            };
            bots.push(Bot {
                name,
                path,
                welcome,
                crypt,
            });
        }
        Ok(Self(bots))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// All of them.
    pub fn iter(&self) -> impl Iterator<Item = &Bot> {
        self.0.iter()
    }

    /// Whether some bot listens on `path`.
    pub fn serves(&self, path: &str) -> bool {
        self.0.iter().any(|b| b.path == path)
    }

    /// The bot called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Bot> {
        self.0.iter().find(|b| b.name == name)
    }

    /// The bot on `path` whose token signs `encrypted` with the query's timestamp and nonce.
    pub fn route(&self, path: &str, q: &SignedQuery, encrypted: &str) -> Result<&Bot, RouteError> {
        self.0
            .iter()
            .filter(|b| b.path == path)
            .find(|b| {
                b.crypt
                    .verify_signature(&q.msg_signature, &q.timestamp, &q.nonce, encrypted)
                    .is_ok()
            })
            .ok_or(RouteError::Signature)
    }
}

/// Whether `url` may be POSTed to as a `response_url`, and where: WeCom's own API host (through
/// `api_base` when that is an egress proxy: same path and query) or the configured API base
/// itself. Any other origin is refused: the URL came in a callback, and the relay contacts no
/// host the operator did not configure.
pub fn response_url_target(url: &str, api_base: &str) -> Option<String> {
    let (origin, rest) = split_origin(url)?;
    let (base_origin, _) = split_origin(api_base)?;
    let rest = if rest.is_empty() { "/" } else { rest };
    if origin.eq_ignore_ascii_case(base_origin) {
        return Some(format!("{base_origin}{rest}"));
    }
    if origin.eq_ignore_ascii_case(crate::wecom::api::DEFAULT_API_BASE) {
        return Some(format!("{}{rest}", api_base.trim_end_matches('/')));
    }
    None
}

/// `scheme://host[:port]` and the rest (path and query), for http(s) URLs without userinfo.
fn split_origin(url: &str) -> Option<(&str, &str)> {
    let after = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..end];
    if authority.is_empty() || authority.contains(['@', '\\', ' ']) {
        return None;
    }
    let scheme_len = url.len() - after.len();
    let rest = &url[scheme_len + end..];
    if rest.contains(['#', ' ', '\r', '\n']) {
        return None;
    }
    Some((&url[..scheme_len + end], rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    fn config(name: Option<&str>, token: &str, path: Option<&str>) -> BotConfig {
        BotConfig {
            name: name.map(Into::into),
            token: token.into(),
            encoding_aes_key: KEY.into(),
            path: path.map(Into::into),
            welcome_message: None,
        }
    }

    #[test]
    fn bots_get_names_paths_and_welcomes() {
        let bots = Bots::from_configs(
            &[
                config(None, "t1", None),
                config(Some("sales"), "t2", Some("/b")),
            ],
            Some("hi"),
        )
        .unwrap();
        let names: Vec<_> = bots
            .iter()
            .map(|b| (b.name.as_str(), b.path.as_str()))
            .collect();
        assert_eq!(names, [("bot1", "/wecom/aibot"), ("sales", "/b")]);
        assert_eq!(
            bots.by_name("sales").unwrap().welcome.as_deref(),
            Some("hi")
        );
        let quiet = BotConfig {
            welcome_message: Some(String::new()),
            ..config(None, "t", None)
        };
        let bots = Bots::from_configs(&[quiet], None).unwrap();
        assert_eq!(bots.by_name("bot1").unwrap().welcome, None);
        let bots = Bots::from_configs(&[config(None, "t", None)], None).unwrap();
        assert_eq!(
            bots.by_name("bot1").unwrap().welcome.as_deref(),
            Some(DEFAULT_BOT_WELCOME)
        );
    }

    #[test]
    fn bad_bots_are_refused_by_key() {
        let err = |configs: &[BotConfig]| Bots::from_configs(configs, None).unwrap_err().key;
        assert_eq!(err(&[config(None, "", None)]), "bots[0].token");
        let mut bad_key = config(None, "t", None);
        bad_key.encoding_aes_key = "short".into();
        assert_eq!(err(&[bad_key]), "bots[0].encoding_aes_key");
        assert_eq!(err(&[config(None, "t", Some("nope"))]), "bots[0].path");
        assert_eq!(
            err(&[config(Some("a"), "t", None), config(Some("a"), "u", None)]),
            "bots[1].name"
        );
        assert_eq!(
            err(&[config(None, "t", None), config(None, "t", None)]),
            "bots[1].token"
        );
    }

    #[test]
    fn response_urls_go_only_to_wecom_or_the_api_base() {
        let wecom = "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=abc";
        assert_eq!(
            response_url_target(wecom, "https://qyapi.weixin.qq.com").as_deref(),
            Some(wecom)
        );
        assert_eq!(
            response_url_target(wecom, "http://proxy.internal:8080/").as_deref(),
            Some("http://proxy.internal:8080/cgi-bin/aibot/response?response_code=abc")
        );
        assert_eq!(
            response_url_target("http://127.0.0.1:9/r?x=1", "http://127.0.0.1:9").as_deref(),
            Some("http://127.0.0.1:9/r?x=1")
        );
        for evil in [
            "https://evil.example/cgi-bin/aibot/response",
            "https://qyapi.weixin.qq.com.evil.example/x",
            "https://user@qyapi.weixin.qq.com/x",
            "http://qyapi.weixin.qq.com/x",
            "ftp://qyapi.weixin.qq.com/x",
            "http://127.0.0.1:10/r",
            "",
        ] {
            assert_eq!(
                response_url_target(evil, "http://127.0.0.1:9"),
                None,
                "{evil}"
            );
        }
    }
}
