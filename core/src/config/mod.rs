//! Settings: the Hermes `platforms.wecom_callback.extra` keys plus ours, from any source.
//!
//! Both twins fill a [`RawSettings`] (native: `config.yaml`, then `WECOM_CALLBACK_*` variables;
//! Worker: vars and secrets) and call [`RawSettings::resolve`], so validation and defaults are
//! the same everywhere. Errors name the key and never echo a secret's value. The agent's own
//! section is [`RawAgentSettings`].

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::{Deserialize, Deserializer};

use crate::aibot::stream::{DEFAULT_STREAM_LIMIT_SECS, WECOM_STREAM_SECS};
use crate::aibot::{BotConfig, Bots};
use crate::apps::{AppConfig, Apps, ConfigError};
use crate::ids::ApiToken;
use crate::policy::AccessPolicy;
use crate::replay::ReplayConfig;
use crate::wecom::api::DEFAULT_API_BASE;

mod agent;
mod lint;
pub use agent::{AgentSettings, Backend, RawAgentSettings, ReplyFormat, AGENT_KEYS};
pub use lint::{Problem, Severity};

/// The settings keys, lower-case; the environment variable is `WECOM_CALLBACK_` + upper-case.
pub const KEYS: &[&str] = &[
    "host",
    "port",
    "path",
    "corp_id",
    "corp_secret",
    "agent_id",
    "token",
    "encoding_aes_key",
    "apps_json",
    "api_base",
    "max_timestamp_skew_secs",
    "dedup_ttl_secs",
    "allowed_users",
    "allow_all_users",
    "deny_message",
    "api_token",
    "welcome_message",
    "stream_limit_secs",
    "menu_commands",
];

/// The AI bot's variables: `WECOM_AIBOT_` + upper-case key, for one bot (or the whole list as
/// JSON).
pub const BOT_KEYS: &[&str] = &["token", "encoding_aes_key", "path", "bots_json"];

/// The prefix of the AI bot's variables.
pub const BOT_ENV_PREFIX: &str = "WECOM_AIBOT_";

/// `Some("<redacted>")` for a set secret, so `Debug` says whether it is set and nothing more.
pub(crate) fn redacted(value: &Option<String>) -> Option<&'static str> {
    value.as_ref().map(|_| "<redacted>")
}

impl core::fmt::Debug for RawSettings {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RawSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &self.path)
            .field("corp_id", &self.corp_id)
            .field("corp_secret", &redacted(&self.corp_secret))
            .field("agent_id", &self.agent_id)
            .field("token", &redacted(&self.token))
            .field("encoding_aes_key", &redacted(&self.encoding_aes_key))
            .field("apps", &self.apps)
            .field("apps_json", &redacted(&self.apps_json))
            .field("api_base", &self.api_base)
            .field("max_timestamp_skew_secs", &self.max_timestamp_skew_secs)
            .field("dedup_ttl_secs", &self.dedup_ttl_secs)
            .field("allowed_users", &self.allowed_users)
            .field("allow_all_users", &self.allow_all_users)
            .field("deny_message", &self.deny_message)
            .field("api_token", &redacted(&self.api_token))
            .field("bots", &self.bots)
            .field("bots_json", &redacted(&self.bots_json))
            .field("bot_token", &redacted(&self.bot_token))
            .field(
                "bot_encoding_aes_key",
                &redacted(&self.bot_encoding_aes_key),
            )
            .field("bot_path", &self.bot_path)
            .field("welcome_message", &self.welcome_message)
            .field("stream_limit_secs", &self.stream_limit_secs)
            .field("menu_commands", &self.menu_commands)
            .field("media_allow_hosts", &self.media_allow_hosts)
            .finish()
    }
}

/// The prefix of every environment variable.
pub const ENV_PREFIX: &str = "WECOM_CALLBACK_";
/// The variable for `media.allow_hosts` (comma-separated host names and networks).
pub const MEDIA_ALLOW_HOSTS_ENV: &str = "WECOM_RELAY_MEDIA_ALLOW_HOSTS";

/// Settings as written: every value optional, numbers and booleans accepted as text. `Debug`
/// shows secrets (and `apps_json`, which holds them) only as `<redacted>`.
#[derive(Clone, Default, Deserialize)]
pub struct RawSettings {
    /// Bind address (native only).
    #[serde(default, deserialize_with = "opt_scalar")]
    pub host: Option<String>,
    /// Port (native only).
    #[serde(default, deserialize_with = "opt_scalar")]
    pub port: Option<String>,
    /// The callback path.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub path: Option<String>,
    /// Single-app CorpID.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub corp_id: Option<String>,
    /// Single-app secret.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub corp_secret: Option<String>,
    /// Single-app AgentId.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub agent_id: Option<String>,
    /// Single-app callback Token.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub token: Option<String>,
    /// Single-app EncodingAESKey.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub encoding_aes_key: Option<String>,
    /// The apps list; takes precedence over the single-app keys.
    #[serde(default)]
    pub apps: Option<Vec<AppConfig>>,
    /// The apps list as JSON; takes precedence over `apps`.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub apps_json: Option<String>,
    /// WeCom API base URL.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub api_base: Option<String>,
    /// Replay window in seconds; 0 disables.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub max_timestamp_skew_secs: Option<String>,
    /// Dedup marker lifetime.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub dedup_ttl_secs: Option<String>,
    /// Allowlist: a YAML list or a comma-separated string.
    #[serde(default, deserialize_with = "opt_list")]
    pub allowed_users: Option<Vec<String>>,
    /// Admit everyone.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub allow_all_users: Option<String>,
    /// Sent (at most hourly) to users the policy denies.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub deny_message: Option<String>,
    /// Bearer token for `POST /api/send`; without it the endpoint is off.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub api_token: Option<String>,
    /// The AI bots.
    #[serde(default)]
    pub bots: Option<Vec<BotConfig>>,
    /// The AI bots as JSON; takes precedence over `bots`.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub bots_json: Option<String>,
    /// One bot's Token (`WECOM_AIBOT_TOKEN`), when no list is given.
    #[serde(skip)]
    pub bot_token: Option<String>,
    /// One bot's EncodingAESKey (`WECOM_AIBOT_ENCODING_AES_KEY`).
    #[serde(skip)]
    pub bot_encoding_aes_key: Option<String>,
    /// One bot's path (`WECOM_AIBOT_PATH`).
    #[serde(skip)]
    pub bot_path: Option<String>,
    /// What bots answer `enter_chat` with, unless a bot sets its own; empty for nothing.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub welcome_message: Option<String>,
    /// How long after a bot message its stream is ended with what has arrived.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub stream_limit_secs: Option<String>,
    /// Menu keys and the text (or command) a click on each stands for: a map, or its JSON.
    #[serde(default, deserialize_with = "opt_map")]
    pub menu_commands: Option<BTreeMap<String, String>>,
    /// `media.allow_hosts`: a top-level `media:` section in `config.yaml`, not a key under
    /// `extra` (the native twin fills it in), or `WECOM_RELAY_MEDIA_ALLOW_HOSTS` separated by
    /// commas.
    #[serde(skip)]
    pub media_allow_hosts: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    S(String),
    I(i64),
    U(u64),
    F(f64),
    B(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Self::S(s) => s,
            Self::I(n) => n.to_string(),
            Self::U(n) => n.to_string(),
            Self::F(n) => n.to_string(),
            Self::B(b) => b.to_string(),
        }
    }
}

/// Deserialises any YAML/JSON scalar as its text.
pub(crate) fn opt_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.map(Scalar::into_string))
}

fn opt_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<Scalar>),
        One(Scalar),
    }
    Ok(Option::<ListOrCsv>::deserialize(d)?.map(|v| match v {
        ListOrCsv::List(items) => items.into_iter().map(Scalar::into_string).collect(),
        ListOrCsv::One(s) => split_csv(&s.into_string()),
    }))
}

fn opt_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum MapOrJson {
        Map(BTreeMap<String, Scalar>),
        Json(String),
    }
    match Option::<MapOrJson>::deserialize(d)? {
        None => Ok(None),
        Some(MapOrJson::Map(m)) => Ok(Some(
            m.into_iter().map(|(k, v)| (k, v.into_string())).collect(),
        )),
        Some(MapOrJson::Json(json)) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|_| serde::de::Error::custom("menu_commands must map menu keys to text")),
    }
}

fn split_csv(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses a boolean the way people write them in env files.
pub fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        other => Err(ConfigError::new(
            key,
            format!("must be true or false, got {other:?}"),
        )),
    }
}

fn parse_num<T: core::str::FromStr>(key: &str, value: &str, what: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(key, format!("must be {what}, got {:?}", value.trim())))
}

/// Resolved, validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bind address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Callback path, starting with `/`.
    pub path: String,
    /// The apps.
    pub apps: Apps,
    /// API base without a trailing slash.
    pub api_base: String,
    /// Replay window and dedup TTL.
    pub replay: ReplayConfig,
    /// Who may use the agent.
    pub policy: AccessPolicy,
    /// Notice for denied users.
    pub deny_message: Option<String>,
    /// Bearer token of `POST /api/send`, if enabled.
    pub api_token: Option<ApiToken>,
    /// The AI bots.
    pub bots: Bots,
    /// How long after a bot message its stream is ended with what has arrived.
    pub stream_limit_secs: u64,
    /// What apps answer `enter_agent` with (once a day), unless an app sets its own.
    pub welcome_message: Option<String>,
    /// Menu keys (`EventKey` of a `click`) and the text each stands for.
    pub menu_commands: BTreeMap<String, String>,
    /// What may be fetched: inbound pictures by URL and outbound attachments.
    pub media: crate::media::MediaPolicy,
    /// Events without a meaning of their own (not a mapped click, not a welcome) go to the
    /// agent: [`crate::Relay::new`] sets it for a webhook agent, the only kind that reads them.
    pub forward_events: bool,
}

impl RawSettings {
    /// Sets one key from text, as an environment variable would. Unknown keys are refused.
    pub fn set(&mut self, key: &str, value: String) -> Result<(), ConfigError> {
        let slot = match key {
            "host" => &mut self.host,
            "port" => &mut self.port,
            "path" => &mut self.path,
            "corp_id" => &mut self.corp_id,
            "corp_secret" => &mut self.corp_secret,
            "agent_id" => &mut self.agent_id,
            "token" => &mut self.token,
            "encoding_aes_key" => &mut self.encoding_aes_key,
            "apps_json" => &mut self.apps_json,
            "api_base" => &mut self.api_base,
            "max_timestamp_skew_secs" => &mut self.max_timestamp_skew_secs,
            "dedup_ttl_secs" => &mut self.dedup_ttl_secs,
            "allow_all_users" => &mut self.allow_all_users,
            "deny_message" => &mut self.deny_message,
            "api_token" => &mut self.api_token,
            "bots_json" => &mut self.bots_json,
            "welcome_message" => &mut self.welcome_message,
            "stream_limit_secs" => &mut self.stream_limit_secs,
            "menu_commands" => {
                let map = serde_json::from_str(&value).map_err(|_| {
                    ConfigError::new(
                        "menu_commands",
                        "must be a JSON object mapping menu keys to text",
                    )
                })?;
                self.menu_commands = Some(map);
                return Ok(());
            }
            "allowed_users" => {
                self.allowed_users = Some(split_csv(&value));
                return Ok(());
            }
            other => return Err(ConfigError::new(other, "is not a setting")),
        };
        *slot = Some(value);
        Ok(())
    }

    /// Overrides keys from an environment lookup (`WECOM_CALLBACK_<KEY>`). Empty values count
    /// as unset, so `FOO=` in a compose file does not wipe the file's value.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for key in KEYS {
            let var = format!("{ENV_PREFIX}{}", key.to_ascii_uppercase());
            if let Some(value) = lookup(&var).filter(|v| !v.trim().is_empty()) {
                self.set(key, value)
                    .map_err(|e| ConfigError::new(var.clone(), e.problem))?;
            }
        }
        if let Some(hosts) = lookup(MEDIA_ALLOW_HOSTS_ENV).filter(|v| !v.trim().is_empty()) {
            self.media_allow_hosts = Some(hosts.split(',').map(|h| h.trim().to_owned()).collect());
        }
        for key in BOT_KEYS {
            let var = format!("{BOT_ENV_PREFIX}{}", key.to_ascii_uppercase());
            if let Some(value) = lookup(&var).filter(|v| !v.trim().is_empty()) {
                let slot = match *key {
                    "token" => &mut self.bot_token,
                    "encoding_aes_key" => &mut self.bot_encoding_aes_key,
                    "path" => &mut self.bot_path,
                    _ => &mut self.bots_json,
                };
                *slot = Some(value);
            }
        }
        Ok(())
    }

    /// The bots, by precedence: `bots_json`, then `bots`, then the single-bot variables.
    pub(crate) fn bot_configs(&self) -> Result<Vec<BotConfig>, ConfigError> {
        if let Some(json) = self.bots_json.as_deref().filter(|j| !j.trim().is_empty()) {
            return serde_json::from_str(json).map_err(|e| {
                ConfigError::new(
                    "bots_json",
                    format!(
                        "is not a JSON list of bots: {}",
                        redact_serde(&e.to_string())
                    ),
                )
            });
        }
        if let Some(bots) = self.bots.as_ref().filter(|b| !b.is_empty()) {
            return Ok(bots.clone());
        }
        if self.bot_token.is_none() && self.bot_encoding_aes_key.is_none() {
            return Ok(Vec::new());
        }
        Ok(alloc::vec![BotConfig {
            name: None,
            token: self.bot_token.clone().unwrap_or_default(),
            encoding_aes_key: self.bot_encoding_aes_key.clone().unwrap_or_default(),
            path: self.bot_path.clone(),
            welcome_message: None,
        }])
    }

    /// The apps, by precedence: `apps_json`, then `apps`, then the single-app keys.
    pub(crate) fn app_configs(&self) -> Result<(Vec<AppConfig>, bool), ConfigError> {
        if let Some(json) = self.apps_json.as_deref().filter(|j| !j.trim().is_empty()) {
            let apps: Vec<AppConfig> = serde_json::from_str(json).map_err(|e| {
                // serde_json's message names the field and position, never the value.
                ConfigError::new(
                    "apps_json",
                    format!(
                        "is not a JSON list of apps: {}",
                        redact_serde(&e.to_string())
                    ),
                )
            })?;
            return Ok((apps, false));
        }
        if let Some(apps) = self.apps.as_ref().filter(|a| !a.is_empty()) {
            return Ok((apps.clone(), false));
        }
        let any_single = [
            &self.corp_id,
            &self.corp_secret,
            &self.agent_id,
            &self.token,
            &self.encoding_aes_key,
        ]
        .iter()
        .any(|v| v.is_some());
        if !any_single {
            return Ok((Vec::new(), true));
        }
        let get = |v: &Option<String>| v.clone().unwrap_or_default();
        Ok((
            alloc::vec![AppConfig {
                welcome_message: None,
                name: None,
                corp_id: get(&self.corp_id),
                corp_secret: get(&self.corp_secret),
                agent_id: get(&self.agent_id),
                token: get(&self.token),
                encoding_aes_key: get(&self.encoding_aes_key),
            }],
            true,
        ))
    }

    /// Validates and fills defaults.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let (configs, single) = self.app_configs()?;
        let bots = Bots::from_configs(&self.bot_configs()?, self.welcome_message.as_deref())?;
        let apps = if configs.is_empty() && !bots.is_empty() {
            Apps::none()
        } else {
            Apps::from_configs(&configs, single)?
        };
        let port = match self.port.as_deref() {
            Some(p) => {
                parse_num::<u16>("port", p, "a port number from 1 to 65535").and_then(|p| {
                    if p == 0 {
                        Err(ConfigError::new("port", "must not be 0"))
                    } else {
                        Ok(p)
                    }
                })?
            }
            None => 8645,
        };
        let path = self
            .path
            .clone()
            .unwrap_or_else(|| "/wecom/callback".into());
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(ConfigError::new(
                "path",
                format!("must be a URL path starting with '/', got {path:?}"),
            ));
        }
        let api_base = self
            .api_base
            .clone()
            .unwrap_or_else(|| DEFAULT_API_BASE.into())
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if !(api_base.starts_with("http://") || api_base.starts_with("https://")) {
            return Err(ConfigError::new(
                "api_base",
                "must start with http:// or https://",
            ));
        }
        let skew = match self.max_timestamp_skew_secs.as_deref() {
            Some(v) => parse_num("max_timestamp_skew_secs", v, "a number of seconds")?,
            None => 600,
        };
        let ttl = match self.dedup_ttl_secs.as_deref() {
            Some(v) => parse_num("dedup_ttl_secs", v, "a number of seconds")?,
            None => 900.max(skew),
        };
        let replay = ReplayConfig::new(skew, ttl)?;
        let allow_all = match self.allow_all_users.as_deref() {
            Some(v) => parse_bool("allow_all_users", v)?,
            None => false,
        };
        let users = self.allowed_users.clone().unwrap_or_default();
        let policy = AccessPolicy::new(users.iter().map(String::as_str), allow_all);
        let stream_limit_secs = match self.stream_limit_secs.as_deref() {
            Some(v) => {
                let secs: u64 = parse_num("stream_limit_secs", v, "a number of seconds")?;
                if !(1..WECOM_STREAM_SECS).contains(&secs) {
                    return Err(ConfigError::new(
                        "stream_limit_secs",
                        format!(
                            "must be between 1 and {} (WeCom stops asking at {WECOM_STREAM_SECS})",
                            WECOM_STREAM_SECS - 1
                        ),
                    ));
                }
                secs
            }
            None => DEFAULT_STREAM_LIMIT_SECS,
        };
        if let Some(bot) = bots.iter().find(|b| {
            b.path == path
                || b.path.starts_with("/health")
                || b.path == "/api/send"
                || b.path == "/metrics"
        }) {
            return Err(ConfigError::new(
                "bots",
                format!(
                    "bot {} listens on {}, which another route uses",
                    bot.name, bot.path
                ),
            ));
        }
        let media = crate::media::MediaPolicy::from_hosts(
            self.media_allow_hosts.as_deref().unwrap_or_default(),
        )?;
        Ok(Settings {
            media,
            forward_events: false,
            bots,
            stream_limit_secs,
            welcome_message: self
                .welcome_message
                .clone()
                .filter(|m| !m.trim().is_empty()),
            menu_commands: self.menu_commands.clone().unwrap_or_default(),
            host: self.host.clone().unwrap_or_else(|| "0.0.0.0".into()),
            port,
            path,
            apps,
            api_base,
            replay,
            policy,
            deny_message: self.deny_message.clone().filter(|m| !m.trim().is_empty()),
            api_token: match self
                .api_token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
            {
                None => None,
                Some(t) if t.len() < 16 => {
                    return Err(ConfigError::new(
                        "api_token",
                        "must be at least 16 characters (it guards /api/send)",
                    ))
                }
                Some(t) => Some(ApiToken::new(t)),
            },
        })
    }
}

/// serde_json quotes offending values in some messages (`invalid type: string "..."`); keep
/// only the part before any quote so a secret typed into the wrong field is not echoed.
fn redact_serde(msg: &str) -> String {
    match msg.find(['"', '`']) {
        Some(i) => format!(
            "{}… {}",
            &msg[..i],
            msg.rsplit(" at ")
                .next()
                .map(|p| format!("at {p}"))
                .unwrap_or_default()
        ),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::testing::*;
    use alloc::collections::BTreeMap;
    use alloc::string::ToString;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const KEY_A: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn single_app_from_env_with_hermes_defaults() {
        let mut raw = RawSettings::default();
        raw.apply_env(env(&[
            ("WECOM_CALLBACK_CORP_ID", "ww1"),
            ("WECOM_CALLBACK_CORP_SECRET", "sec"),
            ("WECOM_CALLBACK_AGENT_ID", "1000002"),
            ("WECOM_CALLBACK_TOKEN", "tok"),
            ("WECOM_CALLBACK_ENCODING_AES_KEY", KEY_A),
            ("WECOM_CALLBACK_ALLOWED_USERS", "alice, ww2:bob"),
            ("WECOM_CALLBACK_PORT", ""),
        ]))
        .unwrap();
        let s = raw.resolve().unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.path.as_str()),
            ("0.0.0.0", 8645, "/wecom/callback")
        );
        assert_eq!(s.api_base, "https://qyapi.weixin.qq.com");
        assert_eq!(
            (s.replay.max_skew_secs(), s.replay.dedup_ttl_secs()),
            (600, 900)
        );
        assert_eq!(s.apps.iter().count(), 1);
        assert!(!s.policy.denies_all());
    }

    #[test]
    fn ai_bots_alone_or_beside_apps() {
        // One bot from the environment, no app: a bot-only relay.
        let mut raw = RawSettings::default();
        raw.apply_env(env(&[
            ("WECOM_AIBOT_TOKEN", "SECRET-bot-token"),
            ("WECOM_AIBOT_ENCODING_AES_KEY", KEY_A),
            ("WECOM_CALLBACK_WELCOME_MESSAGE", "hello there"),
            ("WECOM_CALLBACK_STREAM_LIMIT_SECS", "120"),
        ]))
        .unwrap();
        let s = raw.resolve().unwrap();
        assert!(s.apps.is_empty());
        let bot = s.bots.iter().next().unwrap();
        assert_eq!(
            (bot.name.as_str(), bot.path.as_str(), bot.welcome.as_deref()),
            ("bot1", "/wecom/aibot", Some("hello there"))
        );
        assert_eq!(s.stream_limit_secs, 120);
        let shown = format!("{raw:?} {s:?}");
        assert!(
            !shown.contains("SECRET") && !shown.contains(KEY_A),
            "{shown}"
        );
        // A list beats the single bot; the JSON list beats the YAML one.
        let json = serde_json::json!({
            "bots": [{"name": "yaml", "token": "t", "encoding_aes_key": KEY_A, "path": "/bot"}],
            "corp_id": "ww1", "corp_secret": "s", "agent_id": 5, "token": "t", "encoding_aes_key": KEY_A,
        });
        let mut raw: RawSettings = serde_json::from_value(json).unwrap();
        let s = raw.resolve().unwrap();
        assert_eq!(s.apps.iter().count(), 1);
        assert_eq!(s.bots.iter().next().unwrap().name, "yaml");
        assert_eq!(s.stream_limit_secs, 330);
        raw.bots_json = Some(format!(
            r#"[{{"name":"j","token":"t","encoding_aes_key":"{KEY_A}","welcome_message":""}}]"#
        ));
        let s = raw.resolve().unwrap();
        let bot = s.bots.iter().next().unwrap();
        assert_eq!((bot.name.as_str(), bot.welcome.as_deref()), ("j", None));
        // Refusals name the key.
        raw.stream_limit_secs = Some("360".into());
        assert_eq!(raw.resolve().unwrap_err().key, "stream_limit_secs");
        raw.stream_limit_secs = None;
        raw.bots_json = Some(format!(
            r#"[{{"token":"t","encoding_aes_key":"{KEY_A}","path":"/wecom/callback"}}]"#
        ));
        assert_eq!(raw.resolve().unwrap_err().key, "bots");
        raw.bots_json = Some(r#"[{"token":"SECRET-x","encoding_aes_key":"short"}]"#.into());
        let err = raw.resolve().unwrap_err();
        assert_eq!(err.key, "bots[0].encoding_aes_key");
        assert!(!err.to_string().contains("SECRET"));
        raw.bots_json = Some(r#"{"not": "a list"}"#.into());
        assert_eq!(raw.resolve().unwrap_err().key, "bots_json");
    }

    #[test]
    fn yaml_shaped_values_and_precedence() {
        let json = serde_json::json!({
            "port": 9000, "allow_all_users": true, "allowed_users": ["a", "b"],
            "corp_id": "ignored", "max_timestamp_skew_secs": 0, "dedup_ttl_secs": 120,
            "apps": [{"name": "x", "corp_id": "ww1", "corp_secret": "s", "agent_id": 5, "token": "t", "encoding_aes_key": KEY_A}]
        });
        let mut raw: RawSettings = serde_json::from_value(json).unwrap();
        let s = raw.resolve().unwrap();
        assert_eq!(s.port, 9000);
        assert!(s.policy.allows_all());
        assert_eq!(s.apps.iter().next().unwrap().name, "x");
        assert_eq!(s.replay.max_skew_secs(), 0);
        // apps_json beats apps.
        raw.set("apps_json", format!(r#"[{{"name":"j","corp_id":"ww9","corp_secret":"s","agent_id":"7","token":"t","encoding_aes_key":"{KEY_A}"}}]"#)).unwrap();
        assert_eq!(raw.resolve().unwrap().apps.iter().next().unwrap().name, "j");
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let mut raw = RawSettings::default();
        for (k, v) in [
            ("corp_id", "ww1"),
            ("corp_secret", "SECRET-corp-1"),
            ("agent_id", "1"),
            ("token", "SECRET-token-2"),
            ("encoding_aes_key", KEY_A),
            ("api_token", "SECRET-api-token-3"),
        ] {
            raw.set(k, v.into()).unwrap();
        }
        let mut agent = super::agent::RawAgentSettings::default();
        agent.apply_env(|k| match k {
            "AGENT_KIND" => Some("openai".into()),
            "AGENT_BASE_URL" => Some("http://127.0.0.1/v1".into()),
            "AGENT_API_KEY" => Some("SECRET-api-key-4".into()),
            "AGENT_MODEL" => Some("m".into()),
            "AGENT_SECRET" => Some("SECRET-hmac-5".into()),
            _ => None,
        });
        let key_bytes = crate::crypto::EncodingAesKey::parse(KEY_A).unwrap();
        let hex = crate::crypto::to_hex(key_bytes.as_bytes());
        let shown = format!(
            "{raw:?} {:?} {agent:?} {:?}",
            raw.resolve().unwrap(),
            agent.resolve().unwrap()
        );
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains(KEY_A) && !shown.contains(&hex), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn errors_name_the_key_and_never_the_secret() {
        let base = || {
            let mut raw = RawSettings::default();
            for (k, v) in [
                ("corp_id", "ww1"),
                ("corp_secret", "TOPSECRET"),
                ("agent_id", "1"),
                ("token", "tok"),
                ("encoding_aes_key", KEY_A),
            ] {
                raw.set(k, v.into()).unwrap();
            }
            raw
        };
        let check = |raw: RawSettings, key: &str| {
            let e = raw.resolve().unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(!e.to_string().contains("TOPSECRET"));
        };
        let mut r = base();
        r.set("port", "http".into()).unwrap();
        check(r, "port");
        let mut r = base();
        r.set("path", "wecom".into()).unwrap();
        check(r, "path");
        let mut r = base();
        r.set("dedup_ttl_secs", "100".into()).unwrap();
        check(r, "dedup_ttl_secs");
        let mut r = base();
        r.set("allow_all_users", "maybe".into()).unwrap();
        check(r, "allow_all_users");
        let mut r = base();
        r.set("api_base", "ftp://x".into()).unwrap();
        check(r, "api_base");
        let mut r = base();
        r.set("encoding_aes_key", "TOPSECRET".into()).unwrap();
        check(r, "encoding_aes_key");
        let mut r = base();
        r.set(
            "apps_json",
            r#"[{"corp_id": 5, "corp_secret": "TOPSECRET"}]"#.into(),
        )
        .unwrap();
        check(r, "apps_json");
        let mut r = base();
        r.set(
            "apps_json",
            r#"{"not": "a list", "corp_secret": "TOPSECRET"}"#.into(),
        )
        .unwrap();
        check(r, "apps_json");
        check(RawSettings::default(), "apps");
        let e = RawSettings::default().apply_env(env(&[])).map(|_| ());
        assert!(e.is_ok());
    }
}
