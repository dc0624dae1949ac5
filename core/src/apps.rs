//! Apps and routing: many self-built apps, possibly of several corps, share one callback path.
//!
//! A callback belongs to the app whose token verifies the signature, whose key decrypts the
//! payload, and whose CorpID equals the decrypted receive id. The clear-text `ToUserName` and
//! `AgentID` of the envelope are not authenticated and are never trusted for routing.
//!
//! Cost: one SHA1 per app, and at most one AES decrypt per distinct key among the apps whose
//! signature verified.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::Deserialize;

use crate::crypto::{open, CryptoError, MsgCrypt, Opened};
use crate::ids::{AgentId, CorpId, CorpSecret, ScopedUser};

/// One app's settings as written in `config.yaml` or `apps_json`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// A name for logs and metrics; defaults to `<corp_id>-<agent_id>`.
    #[serde(default)]
    pub name: Option<String>,
    /// The CorpID (企业ID).
    #[serde(default)]
    pub corp_id: String,
    /// The app's Secret.
    #[serde(default)]
    pub corp_secret: String,
    /// The app's AgentId; a number, or a string of digits.
    #[serde(default, deserialize_with = "string_or_number")]
    pub agent_id: String,
    /// The callback Token.
    #[serde(default)]
    pub token: String,
    /// The callback EncodingAESKey (43 characters).
    #[serde(default)]
    pub encoding_aes_key: String,
    /// What `enter_agent` is answered with (once a day); the shared `welcome_message` when
    /// unset, nothing when empty.
    #[serde(default)]
    pub welcome_message: Option<String>,
}

impl fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppConfig")
            .field("name", &self.name)
            .field("corp_id", &self.corp_id)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

/// Accepts `1000002` and `"1000002"` alike.
pub fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(u64),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::S(s) => s,
        Raw::N(n) => n.to_string(),
    })
}

/// A configuration problem: which key, and what is wrong with it. Never holds a secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key as the user wrote it, e.g. `apps[1].encoding_aes_key`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl ConfigError {
    /// Builds the error.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}

/// A validated app.
#[derive(Debug, Clone)]
pub struct App {
    /// Name for logs and metrics.
    pub name: String,
    /// The corp.
    pub corp_id: CorpId,
    /// The secret for `gettoken`.
    pub corp_secret: CorpSecret,
    /// The agent id for `message/send`.
    pub agent_id: AgentId,
    /// The callback crypt.
    pub crypt: MsgCrypt,
    /// Its own welcome: `Some("")` turns the shared one off for this app.
    pub welcome: Option<String>,
}

/// All configured apps.
#[derive(Debug, Clone)]
pub struct Apps {
    apps: Vec<App>,
}

/// Why a callback could not be routed to an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// A query parameter is missing.
    MissingParam(&'static str),
    /// A query parameter is given twice.
    DuplicateParam(&'static str),
    /// A query parameter is empty or not of its form (the signature 40 lower-case hex digits,
    /// the timestamp at most 10 digits, the nonce 1 to 64 visible ASCII characters).
    BadParam(&'static str),
    /// The query string is longer than any WeCom sends ([`MAX_QUERY_BYTES`]).
    QueryTooLong,
    /// No app's token verifies the signature.
    Signature,
    /// The payload did not decrypt (bad base64, padding or buffer).
    Decrypt(CryptoError),
    /// It decrypted, but the receive id matches no app with that key.
    CorpMismatch,
    /// The decrypted payload is not UTF-8.
    NotUtf8,
}

impl RouteError {
    /// The official WXBizMsgCrypt code.
    pub fn code(&self) -> i32 {
        match self {
            Self::MissingParam(_)
            | Self::DuplicateParam(_)
            | Self::BadParam(_)
            | Self::QueryTooLong
            | Self::Signature => CryptoError::ValidateSignature.code(),
            Self::Decrypt(e) => e.code(),
            Self::CorpMismatch => CryptoError::ValidateCorpId.code(),
            Self::NotUtf8 => CryptoError::IllegalBuffer.code(),
        }
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingParam(p) => write!(f, "missing query parameter {p}"),
            Self::DuplicateParam(p) => write!(f, "query parameter {p} given more than once"),
            Self::BadParam(p) => write!(f, "query parameter {p} is empty or malformed"),
            Self::QueryTooLong => write!(f, "query string longer than {MAX_QUERY_BYTES} bytes"),
            Self::Signature => f.write_str("no app verifies the signature"),
            Self::Decrypt(e) => write!(f, "{e}"),
            Self::CorpMismatch => f.write_str("receive id matches no app"),
            Self::NotUtf8 => f.write_str("decrypted payload is not utf-8"),
        }
    }
}

/// A routed, decrypted payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Index of the app in [`Apps::iter`].
    pub app: usize,
    /// The decrypted payload, read in place: the plaintext is not yet checked as UTF-8.
    opened: Opened,
}

impl Routed {
    /// The plaintext, checked as UTF-8 (with SIMD where the CPU has it; call it once).
    pub fn plaintext(&self) -> Result<&str, RouteError> {
        crate::text::utf8(self.opened.msg()).ok_or(RouteError::NotUtf8)
    }

    /// The plaintext, checked as [`Routed::plaintext`] checks it, in the decrypted buffer,
    /// which moves into `slot` (no copy) so that what is read from the plaintext can borrow
    /// from it for as long as the caller keeps the slot.
    pub fn plaintext_in(self, slot: &mut Vec<u8>) -> Result<&str, RouteError> {
        let (buf, msg) = self.opened.into_parts();
        *slot = buf;
        crate::text::utf8(&slot[msg]).ok_or(RouteError::NotUtf8)
    }

    /// The plaintext, owned.
    pub fn into_plaintext(self) -> Result<String, RouteError> {
        String::from_utf8(self.opened.into_msg()).map_err(|_| RouteError::NotUtf8)
    }
}

impl Apps {
    /// No apps (a relay that serves only AI bots).
    pub fn none() -> Self {
        Self { apps: Vec::new() }
    }

    /// Whether there are none (only AI bots are configured).
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// Validates the configured apps; at least one is required. Errors name the key
    /// (`apps[i].field`, or the bare field for a single app given by `single = true`) and never
    /// include a secret.
    pub fn from_configs(configs: &[AppConfig], single: bool) -> Result<Self, ConfigError> {
        if configs.is_empty() {
            return Err(ConfigError::new("apps", "no app configured: set corp_id, corp_secret, agent_id, token and encoding_aes_key, or an apps list (or configure an AI bot)"));
        }
        let mut apps: Vec<App> = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let key = |field: &str| {
                if single {
                    field.to_string()
                } else {
                    format!("apps[{i}].{field}")
                }
            };
            let required = |value: &str, field: &str| {
                if value.trim().is_empty() {
                    Err(ConfigError::new(key(field), "is required"))
                } else {
                    Ok(value.trim().to_string())
                }
            };
            let corp_id = required(&c.corp_id, "corp_id")?;
            if corp_id.contains(':') || corp_id.chars().any(char::is_whitespace) {
                return Err(ConfigError::new(
                    key("corp_id"),
                    "must not contain ':' or spaces",
                ));
            }
            let corp_secret = required(&c.corp_secret, "corp_secret")?;
            let agent_raw = required(&c.agent_id, "agent_id")?;
            let agent_id = agent_raw.parse::<u64>().map_err(|_| {
                ConfigError::new(
                    key("agent_id"),
                    format!("must be a number, got {agent_raw:?}"),
                )
            })?;
            let token = required(&c.token, "token")?;
            let aes = required(&c.encoding_aes_key, "encoding_aes_key")?;
            let crypt = MsgCrypt::new(&token, &aes, &corp_id).map_err(|_| {
                ConfigError::new(
                    key("encoding_aes_key"),
                    format!("must be the 43-character base64 key from the admin console (got {} characters)", aes.chars().count()),
                )
            })?;
            let name = match c.name.as_deref().map(str::trim) {
                Some(n) if !n.is_empty() => n.to_string(),
                _ => format!("{corp_id}-{agent_id}"),
            };
            if let Some(other) = apps.iter().find(|a| a.name == name) {
                return Err(ConfigError::new(
                    key("name"),
                    format!(
                        "duplicate app name {:?} (also used by another app of corp {})",
                        name, other.corp_id
                    ),
                ));
            }
            if let Some(other) = apps
                .iter()
                .find(|a| a.crypt.token() == crypt.token() && a.crypt.key() == crypt.key())
            {
                return Err(ConfigError::new(
                    key("token"),
                    format!("app {name:?} has the same token and encoding_aes_key as app {:?}: callbacks could not be told apart", other.name),
                ));
            }
            apps.push(App {
                name,
                corp_id: CorpId(corp_id),
                corp_secret: CorpSecret::new(corp_secret),
                agent_id: AgentId(agent_id),
                crypt,
                welcome: c.welcome_message.clone(),
            });
        }
        Ok(Self { apps })
    }

    /// The apps in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &App> {
        self.apps.iter()
    }

    /// The app at `index` (from [`Routed::app`]).
    pub fn get(&self, index: usize) -> Option<&App> {
        self.apps.get(index)
    }

    /// The app by name.
    pub fn by_name(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The app that answers `user`: the one of the user's corp with `agent_id` if given and
    /// present, else the corp's first app. Derived from the id alone, so it survives restarts.
    pub fn for_user(&self, user: &ScopedUser, agent_id: Option<AgentId>) -> Option<&App> {
        let mut of_corp = self.apps.iter().filter(|a| a.corp_id == user.corp_id);
        match agent_id {
            Some(agent) => self
                .apps
                .iter()
                .find(|a| a.corp_id == user.corp_id && a.agent_id == agent)
                .or_else(|| of_corp.next()),
            None => of_corp.next(),
        }
    }

    /// Verifies the signature against every app and decrypts with the candidates' keys.
    pub fn route(&self, q: &SignedQuery<'_>, encrypted: &str) -> Result<Routed, RouteError> {
        let mut verified = (0..self.apps.len()).filter(|&i| {
            self.apps[i]
                .crypt
                .verify_signature(&q.msg_signature, &q.timestamp, &q.nonce, encrypted)
                .is_ok()
        });
        // Nearly always one app verifies: the others are collected only when there are any,
        // so a callback costs no allocation here.
        let first = verified.next().ok_or(RouteError::Signature)?;
        let rest: Vec<usize> = verified.collect();
        let candidates = || core::iter::once(first).chain(rest.iter().copied());
        let mut last_err = RouteError::CorpMismatch;
        for (n, i) in candidates().enumerate() {
            let key = self.apps[i].crypt.key();
            // Every earlier candidate's key has been tried (by it or by one before it).
            if candidates()
                .take(n)
                .any(|t| self.apps[t].crypt.key() == key)
            {
                continue;
            }
            let opened = match open(key, encrypted) {
                Ok(o) => o,
                Err(e) => {
                    last_err = RouteError::Decrypt(e);
                    continue;
                }
            };
            let owner = candidates().find(|&j| {
                self.apps[j].crypt.key() == key
                    && self.apps[j].corp_id.as_str().as_bytes() == opened.receive_id()
            });
            match owner {
                Some(app) => return Ok(Routed { app, opened }),
                None => last_err = RouteError::CorpMismatch,
            }
        }
        Err(last_err)
    }
}

/// The `key=value` pairs of a query with nothing to decode (no `%` or `+`), as form decoding
/// reads them, borrowed: empty pairs skipped, a pair without `=` a key with an empty value.
/// With `memchr`, where `str::split` builds a char searcher for each call.
fn plain_pairs(raw: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut start = 0;
    memchr::memchr_iter(b'&', raw.as_bytes())
        .chain([raw.len()])
        .filter_map(move |end| {
            let pair = &raw[start..end];
            start = end + 1;
            if pair.is_empty() {
                return None;
            }
            Some(match memchr::memchr(b'=', pair.as_bytes()) {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, ""),
            })
        })
}

/// The longest query string read. WeCom's are under 400 bytes (the `echostr` of a URL
/// verification is the longest part).
pub const MAX_QUERY_BYTES: usize = 4096;

/// The signed query parameters of a callback, borrowed from the query string where nothing
/// had to be decoded (WeCom's never need it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignedQuery<'a> {
    /// `msg_signature`.
    pub msg_signature: Cow<'a, str>,
    /// `timestamp`.
    pub timestamp: Cow<'a, str>,
    /// `nonce`.
    pub nonce: Cow<'a, str>,
    /// `echostr`, on URL verification only.
    pub echostr: Option<Cow<'a, str>>,
}

impl<'a> SignedQuery<'a> {
    /// Parses a raw query string (`a=b&c=d`, percent-encoded).
    ///
    /// `+` in `echostr` stays `+`: base64 never contains a space, so a `+` that a proxy left
    /// un-encoded (and form decoding turned into a space) is put back.
    ///
    /// Strict where WeCom is exact: each parameter at most once (a repeated one is somebody's
    /// attempt to make two parsers disagree), the signature in lower-case hex, the timestamp in
    /// digits. Unknown parameters are ignored.
    pub fn parse(raw_query: &'a str) -> Result<Self, RouteError> {
        if raw_query.len() > MAX_QUERY_BYTES {
            return Err(RouteError::QueryTooLong);
        }
        let (mut sig, mut ts, mut nonce, mut echostr) = (None, None, None, None);
        let mut take = |k: &str, v: Cow<'a, str>| {
            let (slot, name) = match k {
                "msg_signature" => (&mut sig, "msg_signature"),
                "timestamp" => (&mut ts, "timestamp"),
                "nonce" => (&mut nonce, "nonce"),
                "echostr" => (&mut echostr, "echostr"),
                _ => return Ok(()),
            };
            match slot.replace(v) {
                Some(_) => Err(RouteError::DuplicateParam(name)),
                None => Ok(()),
            }
        };
        if memchr::memchr2(b'%', b'+', raw_query.as_bytes()).is_some() {
            for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
                take(&k, v)?;
            }
        } else {
            // WeCom's queries have nothing to decode: split as form decoding would, uncopied.
            for (k, v) in plain_pairs(raw_query) {
                take(k, Cow::Borrowed(v))?;
            }
        }
        let sig = sig.ok_or(RouteError::MissingParam("msg_signature"))?;
        if sig.len() != 40 || !sig.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(RouteError::BadParam("msg_signature"));
        }
        let ts = ts.ok_or(RouteError::MissingParam("timestamp"))?;
        if ts.is_empty() || ts.len() > 10 || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RouteError::BadParam("timestamp"));
        }
        let nonce = nonce.ok_or(RouteError::MissingParam("nonce"))?;
        if nonce.is_empty() || nonce.len() > 64 || !nonce.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RouteError::BadParam("nonce"));
        }
        let echostr = match echostr {
            Some(e) if e.trim().is_empty() => return Err(RouteError::BadParam("echostr")),
            Some(e) if e.contains(' ') => Some(Cow::Owned(e.replace(' ', "+"))),
            other => other,
        };
        Ok(Self {
            msg_signature: sig,
            timestamp: ts,
            nonce,
            echostr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use alloc::vec;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    pub(crate) fn cfg(name: &str, corp: &str, agent: &str, token: &str, key: &str) -> AppConfig {
        AppConfig {
            welcome_message: None,
            name: Some(name.into()),
            corp_id: corp.into(),
            corp_secret: "secret-value".into(),
            agent_id: agent.into(),
            token: token.into(),
            encoding_aes_key: key.into(),
        }
    }

    fn official_apps() -> (Apps, Vec<VectorSet>) {
        let sets = vectors();
        let configs: Vec<AppConfig> = sets
            .iter()
            .map(|s| {
                cfg(
                    &s.name,
                    &s.corp_id,
                    &s.agent_id,
                    &s.token,
                    &s.encoding_aes_key,
                )
            })
            .collect();
        (Apps::from_configs(&configs, false).unwrap(), sets)
    }

    #[test]
    fn routes_official_vectors_to_their_app() {
        let (apps, sets) = official_apps();
        for (i, set) in sets.iter().enumerate() {
            let q = SignedQuery::parse(&set.verify_url.query).unwrap();
            let routed = apps.route(&q, q.echostr.as_deref().unwrap()).unwrap();
            assert_eq!(
                (routed.app, routed.plaintext().unwrap()),
                (i, set.verify_url.expected_body.as_str())
            );
            let q = SignedQuery::parse(&set.callback.query).unwrap();
            let env = crate::xml::parse_envelope(&set.callback.body).unwrap();
            let routed = apps.route(&q, &env.encrypt).unwrap();
            assert_eq!(routed.app, i);
            assert_eq!(routed.plaintext().unwrap(), set.callback.expected_plaintext);
        }
    }

    #[test]
    fn same_token_and_key_in_two_corps_is_told_apart_by_receive_id() {
        let key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
        // Same key, different tokens would be the common case; here both differ only by corp,
        // which configuration rejects, so use the same key with different tokens.
        let apps = Apps::from_configs(
            &[
                cfg("a", "corpA", "1", "tokA", key),
                cfg("b", "corpB", "2", "tokB", key),
            ],
            false,
        )
        .unwrap();
        let b = &apps.get(1).unwrap().crypt;
        let sealed = b.encrypt("<xml/>", &[1; 16], "100", "n").unwrap();
        let q = SignedQuery {
            msg_signature: sealed.signature.into(),
            timestamp: "100".into(),
            nonce: "n".into(),
            echostr: None,
        };
        assert_eq!(apps.route(&q, &sealed.encrypt).unwrap().app, 1);
        // A payload for a third corp, signed with A's token and encrypted under the shared key.
        let foreign = MsgCrypt::new("tokA", key, "corpC").unwrap();
        let sealed = foreign.encrypt("<xml/>", &[1; 16], "100", "n").unwrap();
        let q = SignedQuery {
            msg_signature: sealed.signature.into(),
            timestamp: "100".into(),
            nonce: "n".into(),
            echostr: None,
        };
        assert_eq!(
            apps.route(&q, &sealed.encrypt),
            Err(RouteError::CorpMismatch)
        );
        // Bad signature.
        let q = SignedQuery {
            msg_signature: "0".repeat(40).into(),
            timestamp: "100".into(),
            nonce: "n".into(),
            echostr: None,
        };
        assert_eq!(apps.route(&q, &sealed.encrypt), Err(RouteError::Signature));
    }

    #[test]
    fn shared_token_different_keys_decrypts_each_candidate_once() {
        let apps = Apps::from_configs(
            &[
                cfg("a", "corpA", "1", "tok", &"A".repeat(43)),
                cfg("b", "corpB", "2", "tok", &"B".repeat(43)),
            ],
            false,
        )
        .unwrap();
        let sealed = apps
            .get(1)
            .unwrap()
            .crypt
            .encrypt("hi", &[2; 16], "1", "n")
            .unwrap();
        let q = SignedQuery {
            msg_signature: sealed.signature.into(),
            timestamp: "1".into(),
            nonce: "n".into(),
            echostr: None,
        };
        let routed = apps.route(&q, &sealed.encrypt).unwrap();
        assert_eq!((routed.app, routed.plaintext().unwrap()), (1, "hi"));
    }

    #[test]
    fn config_errors_name_the_key_and_hide_secrets() {
        let good = cfg("a", "ww1", "1000002", "tok", &"A".repeat(43));
        let err = |c: Vec<AppConfig>, single: bool| Apps::from_configs(&c, single).unwrap_err();

        let mut bad = good.clone();
        bad.encoding_aes_key = "!".repeat(43);
        let e = err(vec![bad], true);
        assert_eq!(e.key, "encoding_aes_key");
        assert!(!e.problem.contains("!!!"));

        let mut bad = good.clone();
        bad.agent_id = "abc".into();
        assert_eq!(err(vec![good.clone(), bad], false).key, "apps[1].agent_id");

        let mut dup = cfg("a", "ww2", "1", "tok2", &"B".repeat(43));
        assert_eq!(
            err(vec![good.clone(), dup.clone()], false).key,
            "apps[1].name"
        );
        dup.name = Some("b".into());
        dup.token = "tok".into();
        dup.encoding_aes_key = "A".repeat(43);
        let e = err(vec![good.clone(), dup], false);
        assert_eq!(e.key, "apps[1].token");
        assert!(!e.to_string().contains("secret-value"));

        let mut missing = good.clone();
        missing.corp_secret = " ".into();
        assert_eq!(
            err(vec![missing], true).to_string(),
            "corp_secret: is required"
        );
        assert_eq!(err(vec![], true).key, "apps");

        let mut unnamed = good;
        unnamed.name = None;
        let apps = Apps::from_configs(&[unnamed], true).unwrap();
        assert_eq!(apps.get(0).unwrap().name, "ww1-1000002");
        assert!(!alloc::format!("{:?}", apps).contains("secret-value"));
    }

    #[test]
    fn reply_app_is_derived_from_the_scoped_id() {
        let apps = Apps::from_configs(
            &[
                cfg("a1", "corpA", "1", "t1", &"A".repeat(43)),
                cfg("a2", "corpA", "2", "t2", &"B".repeat(43)),
                cfg("b", "corpB", "1", "t3", &"C".repeat(43)),
            ],
            false,
        )
        .unwrap();
        let alice_b = ScopedUser::new("corpB", "alice");
        assert_eq!(apps.for_user(&alice_b, None).unwrap().name, "b");
        let alice_a = ScopedUser::new("corpA", "alice");
        assert_eq!(
            apps.for_user(&alice_a, Some(AgentId(2))).unwrap().name,
            "a2"
        );
        assert_eq!(
            apps.for_user(&alice_a, Some(AgentId(9))).unwrap().name,
            "a1"
        );
        assert!(apps
            .for_user(&ScopedUser::new("corpZ", "x"), None)
            .is_none());
    }

    #[test]
    fn query_parsing() {
        let sig = "0123456789abcdef0123456789abcdef01234567";
        let raw =
            format!("msg_signature={sig}&timestamp=1&nonce=n&echostr=a%2Bb+c%3D&other=x&other=y");
        let q = SignedQuery::parse(&raw).unwrap();
        assert_eq!(q.echostr.as_deref(), Some("a+b+c="));
        // WeCom's own queries need no decoding: every field is borrowed, nothing copied.
        let raw = format!("msg_signature={sig}&timestamp=1&nonce=n&echostr=abc%3D");
        let plain = raw.replace("%3D", "=");
        let q = SignedQuery::parse(&plain).unwrap();
        assert!([
            &q.msg_signature,
            &q.timestamp,
            &q.nonce,
            q.echostr.as_ref().unwrap()
        ]
        .iter()
        .all(|f| matches!(f, Cow::Borrowed(_))));
        assert_eq!(SignedQuery::parse(&raw).unwrap(), q);
        let refused = |query: &str| SignedQuery::parse(query).unwrap_err();
        let ok = format!("msg_signature={sig}&timestamp=1700000000&nonce=n");
        assert!(SignedQuery::parse(&ok).is_ok());
        for (query, why) in [
            (
                format!("{ok}&timestamp=1"),
                RouteError::DuplicateParam("timestamp"),
            ),
            (
                format!("{ok}&msg_signature={sig}"),
                RouteError::DuplicateParam("msg_signature"),
            ),
            (
                ok.replace(sig, &sig.to_ascii_uppercase()),
                RouteError::BadParam("msg_signature"),
            ),
            (
                ok.replace(sig, &sig[..39]),
                RouteError::BadParam("msg_signature"),
            ),
            (
                ok.replace(sig, &sig.replace('a', "g")),
                RouteError::BadParam("msg_signature"),
            ),
            (
                ok.replace("1700000000", "17e8"),
                RouteError::BadParam("timestamp"),
            ),
            (
                ok.replace("1700000000", "99999999999999999999"),
                RouteError::BadParam("timestamp"),
            ),
            (
                ok.replace("1700000000", ""),
                RouteError::BadParam("timestamp"),
            ),
            (
                ok.replace("nonce=n", "nonce="),
                RouteError::BadParam("nonce"),
            ),
            (
                ok.replace("nonce=n", "nonce=a%20b"),
                RouteError::BadParam("nonce"),
            ),
            (format!("{ok}&echostr="), RouteError::BadParam("echostr")),
            (
                format!("{ok}&pad={}", "x".repeat(MAX_QUERY_BYTES)),
                RouteError::QueryTooLong,
            ),
        ] {
            assert_eq!(refused(&query), why, "{query}");
        }
        assert_eq!(
            SignedQuery::parse("timestamp=1&nonce=n"),
            Err(RouteError::MissingParam("msg_signature"))
        );
        assert_eq!(
            SignedQuery::parse(&format!("msg_signature={sig}&nonce=n")),
            Err(RouteError::MissingParam("timestamp"))
        );
    }

    /// A query with nothing to decode skips form decoding; it must read exactly as form
    /// decoding reads it. Appending an ignored `%41` forces the decoding path.
    #[test]
    fn undecoded_queries_read_as_form_decoding_reads_them() {
        let sig = "0123456789abcdef0123456789abcdef01234567";
        let base = format!("msg_signature={sig}&timestamp=17&nonce=n");
        for query in [
            base.clone(),
            format!("&&{base}&&"),
            format!("{base}&echostr=abc="),
            format!("{base}&echostr=a=b=c&flag&=v&x="),
            format!("{base}&nonce=m"),
            format!("{base}&echostr="),
            format!("{base}&msg_signature"),
            String::from("timestamp=1&nonce=n"),
            format!("msg_signature={sig}=&timestamp=1&nonce=n"),
            format!("msg_signature={sig}&timestamp=1&nonce=n=n"),
            String::new(),
        ] {
            let decoded = format!("{query}&zz=%41");
            assert_eq!(
                SignedQuery::parse(&query),
                SignedQuery::parse(&decoded),
                "{query}"
            );
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Without anything to decode, the borrowed split reads what form decoding reads.
        #[test]
        fn plain_pairs_read_as_form_decoding_does(raw in "[a-z_=&é0-9]{0,40}") {
            let plain: Vec<(String, String)> =
                plain_pairs(&raw).map(|(k, v)| (k.into(), v.into())).collect();
            let form: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            prop_assert_eq!(plain, form);
        }
    }
}
