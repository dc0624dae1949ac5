//! The agent's settings: the `agent:` section of `config.yaml`, or `AGENT_*` variables, each
//! key listed once in [`AGENT_KEYS`].

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use core::fmt;

use serde::Deserialize;

use super::{opt_scalar, parse_bool};
use crate::apps::ConfigError;
use crate::ids::ApiToken;
use crate::memory::HistoryLimits;

/// Which backend answers.
#[derive(Clone, PartialEq)]
pub enum Backend {
    /// Replies with the text received.
    Echo,
    /// An OpenAI-compatible Chat Completions endpoint.
    OpenAi {
        /// e.g. `https://api.openai.com/v1`, `https://api.deepseek.com/v1`, `http://localhost:11434/v1`.
        base_url: String,
        /// The API key (a secret; may be empty for local servers).
        api_key: ApiToken,
        /// Model name.
        model: String,
        /// Added to the relay's own system prompt.
        system_prompt: Option<String>,
        /// Sampling temperature.
        temperature: Option<f32>,
        /// Answer length limit.
        max_tokens: Option<u32>,
    },
    /// A signed JSON event to the user's own agent.
    Webhook {
        /// Where to POST.
        url: String,
        /// The HMAC-SHA256 key (a secret).
        secret: ApiToken,
    },
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Echo => f.write_str("Echo"),
            Self::OpenAi {
                base_url, model, ..
            } => f
                .debug_struct("OpenAi")
                .field("base_url", base_url)
                .field("model", model)
                .finish_non_exhaustive(),
            Self::Webhook { url, .. } => f
                .debug_struct("Webhook")
                .field("url", url)
                .finish_non_exhaustive(),
        }
    }
}

/// How answers are formatted for an app (the AI bot always gets markdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyFormat {
    /// Markdown when the answer uses it, plain text otherwise.
    #[default]
    Auto,
    /// Always plain text, markdown symbols removed.
    Text,
    /// Always markdown (users of the personal-WeChat plugin see it raw).
    Markdown,
}

/// Resolved agent settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// The backend.
    pub backend: Backend,
    /// Seconds before a "thinking" notice; 0 turns it off.
    pub thinking_notice_secs: u64,
    /// How long to wait for the backend.
    pub timeout_secs: u64,
    /// Conversation memory bounds.
    pub history: HistoryLimits,
    /// How replies are formatted (`reply_format`; the older `markdown: true|false` forces one).
    pub reply_format: ReplyFormat,
    /// Pass pictures to an OpenAI-compatible model as image content parts (`vision`).
    pub vision: bool,
    /// The model of `{base_url}/audio/transcriptions` for voice without WeCom's transcript.
    pub transcription_model: Option<String>,
    /// Send the webhook each medium's bytes (base64) along with its reference.
    pub webhook_media_bytes: bool,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Echo,
            thinking_notice_secs: 8,
            timeout_secs: 60,
            history: HistoryLimits::default(),
            reply_format: ReplyFormat::Auto,
            vision: true,
            transcription_model: None,
            webhook_media_bytes: false,
        }
    }
}

/// The agent keys; the environment variable is `AGENT_` + upper-case.
pub const AGENT_KEYS: &[&str] = &[
    "kind",
    "base_url",
    "api_key",
    "model",
    "system_prompt",
    "temperature",
    "max_tokens",
    "timeout_secs",
    "max_history_turns",
    "max_history_bytes",
    "thinking_notice_secs",
    "markdown",
    "reply_format",
    "vision",
    "transcription_model",
    "webhook_media_bytes",
    "url",
    "secret",
];

/// Agent settings as written (`agent:` in `config.yaml`, or `AGENT_*`). `Debug` shows the
/// API key and the webhook secret only as `<redacted>`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawAgentSettings {
    #[serde(default, deserialize_with = "opt_scalar")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub base_url: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub api_key: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub system_prompt: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub temperature: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub max_tokens: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub timeout_secs: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub max_history_turns: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub max_history_bytes: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub thinking_notice_secs: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub markdown: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub reply_format: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub vision: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub transcription_model: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub webhook_media_bytes: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub secret: Option<String>,
}

fn num<T: core::str::FromStr>(
    key: &str,
    value: &Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ConfigError::new(
                format!("agent.{key}"),
                format!("must be a number, got {v:?}"),
            )
        }),
    }
}

fn http_url(key: &str, value: Option<&str>) -> Result<String, ConfigError> {
    let v = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ConfigError::new(format!("agent.{key}"), "is required"))?;
    if !(v.starts_with("http://") || v.starts_with("https://")) {
        return Err(ConfigError::new(
            format!("agent.{key}"),
            "must start with http:// or https://",
        ));
    }
    Ok(v.trim_end_matches('/').to_owned())
}

impl fmt::Debug for RawAgentSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::redacted;
        f.debug_struct("RawAgentSettings")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &redacted(&self.api_key))
            .field("model", &self.model)
            .field("system_prompt", &self.system_prompt)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("timeout_secs", &self.timeout_secs)
            .field("max_history_turns", &self.max_history_turns)
            .field("max_history_bytes", &self.max_history_bytes)
            .field("thinking_notice_secs", &self.thinking_notice_secs)
            .field("markdown", &self.markdown)
            .field("reply_format", &self.reply_format)
            .field("vision", &self.vision)
            .field("transcription_model", &self.transcription_model)
            .field("webhook_media_bytes", &self.webhook_media_bytes)
            .field("url", &self.url)
            .field("secret", &redacted(&self.secret))
            .finish()
    }
}

impl RawAgentSettings {
    /// Overrides keys from `AGENT_<KEY>` variables; empty values count as unset.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        for key in AGENT_KEYS {
            let Some(value) = lookup(&format!("AGENT_{}", key.to_ascii_uppercase()))
                .filter(|v| !v.trim().is_empty())
            else {
                continue;
            };
            let slot = match *key {
                "kind" => &mut self.kind,
                "base_url" => &mut self.base_url,
                "api_key" => &mut self.api_key,
                "model" => &mut self.model,
                "system_prompt" => &mut self.system_prompt,
                "temperature" => &mut self.temperature,
                "max_tokens" => &mut self.max_tokens,
                "timeout_secs" => &mut self.timeout_secs,
                "max_history_turns" => &mut self.max_history_turns,
                "max_history_bytes" => &mut self.max_history_bytes,
                "thinking_notice_secs" => &mut self.thinking_notice_secs,
                "markdown" => &mut self.markdown,
                "reply_format" => &mut self.reply_format,
                "vision" => &mut self.vision,
                "transcription_model" => &mut self.transcription_model,
                "webhook_media_bytes" => &mut self.webhook_media_bytes,
                "url" => &mut self.url,
                _ => &mut self.secret,
            };
            *slot = Some(value);
        }
    }

    /// Validates and fills defaults. Errors name `agent.<key>` and never a secret.
    pub fn resolve(&self) -> Result<AgentSettings, ConfigError> {
        let kind = self
            .kind
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .unwrap_or("echo")
            .to_ascii_lowercase();
        let backend = match kind.as_str() {
            "echo" => Backend::Echo,
            "openai" => Backend::OpenAi {
                base_url: http_url("base_url", self.base_url.as_deref())?,
                api_key: ApiToken::new(self.api_key.clone().unwrap_or_default().trim()),
                model: self
                    .model
                    .clone()
                    .filter(|m| !m.trim().is_empty())
                    .ok_or_else(|| {
                        ConfigError::new("agent.model", "is required for kind openai")
                    })?,
                system_prompt: self.system_prompt.clone().filter(|p| !p.trim().is_empty()),
                temperature: match self.temperature.as_deref().filter(|t| !t.trim().is_empty()) {
                    None => None,
                    Some(t) => Some(
                        t.trim()
                            .parse::<f32>()
                            .ok()
                            .filter(|t| (0.0..=2.0).contains(t))
                            .ok_or_else(|| {
                                ConfigError::new(
                                    "agent.temperature",
                                    format!("must be a number from 0 to 2, got {t:?}"),
                                )
                            })?,
                    ),
                },
                max_tokens: match self.max_tokens.as_deref().filter(|t| !t.trim().is_empty()) {
                    None => None,
                    Some(_) => Some(num("max_tokens", &self.max_tokens, 0u32)?),
                },
            },
            "webhook" => Backend::Webhook {
                url: http_url("url", self.url.as_deref())?,
                secret: ApiToken::new(
                    self.secret
                        .clone()
                        .filter(|s| s.trim().len() >= 16)
                        .ok_or_else(|| {
                            ConfigError::new(
                                "agent.secret",
                                "is required for kind webhook (16 characters or more)",
                            )
                        })?
                        .trim(),
                ),
            },
            other => {
                return Err(ConfigError::new(
                    "agent.kind",
                    format!("must be echo, openai or webhook, got {other:?}"),
                ))
            }
        };
        let turns: usize = num("max_history_turns", &self.max_history_turns, 10)?;
        Ok(AgentSettings {
            backend,
            thinking_notice_secs: num("thinking_notice_secs", &self.thinking_notice_secs, 8)?,
            timeout_secs: num("timeout_secs", &self.timeout_secs, 60u64)?.max(1),
            history: HistoryLimits {
                // A turn is the user's message and the answer.
                max_turns: turns * 2,
                max_bytes: num("max_history_bytes", &self.max_history_bytes, 32 * 1024)?,
            },
            reply_format: self.reply_format()?,
            vision: match self.vision.as_deref() {
                Some(v) => parse_bool("agent.vision", v)?,
                None => true,
            },
            transcription_model: self
                .transcription_model
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned),
            webhook_media_bytes: match self.webhook_media_bytes.as_deref() {
                Some(v) => parse_bool("agent.webhook_media_bytes", v)?,
                None => false,
            },
        })
    }

    fn reply_format(&self) -> Result<ReplyFormat, ConfigError> {
        let format = self
            .reply_format
            .as_deref()
            .map(|f| f.trim().to_ascii_lowercase())
            .filter(|f| !f.is_empty());
        Ok(match (format.as_deref(), self.markdown.as_deref()) {
            (Some("auto"), _) => ReplyFormat::Auto,
            (Some("text"), _) => ReplyFormat::Text,
            (Some("markdown"), _) => ReplyFormat::Markdown,
            (Some(other), _) => {
                return Err(ConfigError::new(
                    "agent.reply_format",
                    format!("must be auto, text or markdown, got {other:?}"),
                ))
            }
            (None, Some(v)) if parse_bool("agent.markdown", v)? => ReplyFormat::Markdown,
            (None, Some(_)) => ReplyFormat::Text,
            (None, None) => ReplyFormat::Auto,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::system_prompt;
    use crate::ids::ScopedUser;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn settings_resolve_with_errors_naming_the_key() {
        let mut raw = RawAgentSettings::default();
        assert_eq!(raw.resolve().unwrap().backend, Backend::Echo);
        raw.apply_env(|k| match k {
            "AGENT_KIND" => Some("openai".into()),
            "AGENT_BASE_URL" => Some("http://127.0.0.1:1/v1/".into()),
            "AGENT_API_KEY" => Some("sk-SECRET".into()),
            "AGENT_MODEL" => Some("deepseek-chat".into()),
            "AGENT_MAX_HISTORY_TURNS" => Some("3".into()),
            _ => None,
        });
        let s = raw.resolve().unwrap();
        assert_eq!(s.history.max_turns, 6);
        assert!(!format!("{s:?}").contains("sk-SECRET"));
        raw.temperature = Some("hot".into());
        assert_eq!(raw.resolve().unwrap_err().key, "agent.temperature");
        let bad = RawAgentSettings {
            kind: Some("gpt".into()),
            ..Default::default()
        };
        assert_eq!(bad.resolve().unwrap_err().key, "agent.kind");
        let hook = RawAgentSettings {
            kind: Some("webhook".into()),
            url: Some("https://x/hook".into()),
            secret: Some("short".into()),
            ..Default::default()
        };
        assert_eq!(hook.resolve().unwrap_err().key, "agent.secret");
        let mut formats = RawAgentSettings::default();
        let s = formats.resolve().unwrap();
        assert_eq!(
            (s.reply_format, s.vision, s.transcription_model),
            (ReplyFormat::Auto, true, None)
        );
        formats.markdown = Some("true".into());
        assert_eq!(
            formats.resolve().unwrap().reply_format,
            ReplyFormat::Markdown
        );
        formats.markdown = Some("false".into());
        assert_eq!(formats.resolve().unwrap().reply_format, ReplyFormat::Text);
        formats.reply_format = Some("Auto".into());
        assert_eq!(formats.resolve().unwrap().reply_format, ReplyFormat::Auto);
        formats.reply_format = Some("html".into());
        assert_eq!(formats.resolve().unwrap_err().key, "agent.reply_format");
        formats.reply_format = None;
        formats.vision = Some("maybe".into());
        assert_eq!(formats.resolve().unwrap_err().key, "agent.vision");
        let prompt = system_prompt(
            Some("Be kind."),
            ReplyFormat::Text,
            &ScopedUser::new("ww1", "alice"),
        );
        assert!(
            prompt.contains("WeCom")
                && prompt.contains("plain text")
                && prompt.contains("2048")
                && prompt.contains("ww1:alice")
                && prompt.ends_with("Be kind.")
        );
    }
}
