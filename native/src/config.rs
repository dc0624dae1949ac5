//! Loading settings: `config.yaml` (Hermes's layout), then `WECOM_CALLBACK_*` variables.
//!
//! The file keeps Hermes's shape: relay settings live under `platforms.wecom_callback.extra`,
//! the agent under a top-level `agent:`. Everything else in the file is ignored, so a Hermes
//! `config.yaml` works as it is. Validation is the core's ([`RawSettings::resolve`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use wecom_relay_core::{AgentSettings, ConfigError, RawAgentSettings, RawSettings, Settings};

/// Native-only runtime settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Jobs processed at once.
    pub concurrency: usize,
    /// How long SIGTERM waits for in-flight work.
    pub drain_timeout_secs: u64,
    /// Timeout of one WeCom API request.
    pub api_timeout_secs: u64,
    /// How long a client may take to send a request's headers, and then its body.
    pub request_timeout_secs: u64,
    /// `text` or `json` logs.
    pub log_format: String,
    /// Jobs waiting or running at most; above it callbacks get 503 and WeCom retries later.
    pub max_queued_jobs: usize,
    /// Jobs one user may have waiting or running at most.
    pub max_queued_per_user: usize,
    /// Where the durable store lives; unset keeps everything in memory.
    pub state_dir: Option<PathBuf>,
    /// Redis shared by several replicas (`redis://host:port/db`); unset: this process alone.
    pub redis_url: Option<String>,
    /// How soon another replica takes over a dead one's jobs.
    pub redis_lease_secs: u64,
    /// MiB of conversation memory kept in RAM when there is no durable store: beyond it the
    /// least recently active members' conversations are forgotten first.
    pub memory_history_mb: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            drain_timeout_secs: 30,
            api_timeout_secs: 10,
            request_timeout_secs: 10,
            log_format: "text".into(),
            max_queued_jobs: 10_000,
            max_queued_per_user: 100,
            state_dir: None,
            redis_url: None,
            redis_lease_secs: 30,
            memory_history_mb: 8,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    #[serde(default)]
    platforms: Platforms,
    #[serde(default)]
    agent: Option<RawAgentSettings>,
    #[serde(default)]
    relay: Option<RuntimeConfig>,
    #[serde(default)]
    media: Option<MediaSection>,
}

/// The top-level `media:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaSection {
    /// Hosts (names or CIDRs) that may be fetched although private, over http too.
    #[serde(default)]
    allow_hosts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Platforms {
    #[serde(default)]
    wecom_callback: Option<Platform>,
}

#[derive(Debug, Default, Deserialize)]
struct Platform {
    #[serde(default)]
    extra: RawSettings,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The relay's settings.
    pub settings: Settings,
    /// The agent.
    pub agent: AgentSettings,
    /// Runtime knobs.
    pub runtime: RuntimeConfig,
    /// The file read, if any.
    pub source: Option<PathBuf>,
}

/// The file to read when `--config` is not given: `WECOM_RELAY_CONFIG`, `./config.yaml`, then
/// Hermes's `$HERMES_HOME/config.yaml` or `~/.hermes/config.yaml`, the first that exists.
pub fn default_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = env("WECOM_RELAY_CONFIG").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let mut candidates = vec![PathBuf::from("config.yaml")];
    if let Some(home) = env("HERMES_HOME") {
        candidates.push(Path::new(&home).join("config.yaml"));
    }
    if let Some(home) = env("HOME") {
        candidates.push(Path::new(&home).join(".hermes/config.yaml"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Keeps a parser's position and the shape of its complaint, never the quoted value. A quote
/// escaped inside the value (`"a\"b"`, as serde writes a value that holds one) does not end
/// it: the fuzzer found a secret leaking that way.
fn redacted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in msg.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '`' => {
                out.push_str("<value>");
                quote = Some(c);
            }
            None => out.push(c),
        }
    }
    out
}

/// Parses the YAML text of a config file.
pub fn parse_yaml(
    text: &str,
) -> Result<(RawSettings, RawAgentSettings, RuntimeConfig), ConfigError> {
    let file: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        serde_yaml_ng::from_str(text)
            .map_err(|e| ConfigError::new("config.yaml", redacted(&e.to_string())))?
    };
    let mut raw = file
        .platforms
        .wecom_callback
        .map(|p| p.extra)
        .unwrap_or_default();
    if let Some(media) = file.media {
        raw.media_allow_hosts = Some(media.allow_hosts);
    }
    Ok((
        raw,
        file.agent.unwrap_or_default(),
        file.relay.unwrap_or_default(),
    ))
}

/// Loads the file (if any), applies the environment and validates.
pub fn load(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let source = path
        .map(Path::to_path_buf)
        .or_else(|| default_config_path(env));
    let (mut raw, mut agent, mut runtime) = match &source {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ConfigError::new("--config", format!("cannot read {}: {e}", p.display()))
            })?;
            parse_yaml(&text)?
        }
        None => (
            RawSettings::default(),
            RawAgentSettings::default(),
            RuntimeConfig::default(),
        ),
    };
    raw.apply_env(env)?;
    if let Some(dir) = env("WECOM_RELAY_STATE_DIR").filter(|d| !d.trim().is_empty()) {
        runtime.state_dir = Some(PathBuf::from(dir.trim()));
    }
    if let Some(url) = env("WECOM_RELAY_REDIS_URL").filter(|u| !u.trim().is_empty()) {
        runtime.redis_url = Some(url.trim().to_owned());
    }
    if let Some(secs) = env("WECOM_RELAY_REDIS_LEASE_SECS").filter(|s| !s.trim().is_empty()) {
        runtime.redis_lease_secs =
            secs.trim()
                .parse()
                .ok()
                .filter(|s| *s >= 1)
                .ok_or_else(|| {
                    ConfigError::new(
                        "relay.redis_lease_secs",
                        "must be a whole number of seconds, at least 1",
                    )
                })?;
    }
    if let Some(secs) = env("WECOM_RELAY_REQUEST_TIMEOUT_SECS").filter(|s| !s.trim().is_empty()) {
        runtime.request_timeout_secs = secs.trim().parse().map_err(|_| {
            ConfigError::new(
                "relay.request_timeout_secs",
                "must be a whole number of seconds",
            )
        })?;
    }
    if runtime.request_timeout_secs == 0 {
        return Err(ConfigError::new(
            "relay.request_timeout_secs",
            "must be at least 1 (a client that never finishes its request would hold a connection forever)",
        ));
    }
    if runtime.state_dir.is_some() && runtime.redis_url.is_some() {
        return Err(ConfigError::new(
            "relay.redis_url",
            "set either state_dir (one machine) or redis_url (several replicas), not both",
        ));
    }
    if let Some(format) = env("WECOM_RELAY_LOG_FORMAT").filter(|f| !f.is_empty()) {
        runtime.log_format = format;
    }
    if !matches!(runtime.log_format.as_str(), "text" | "json") {
        return Err(ConfigError::new("relay.log_format", "must be text or json"));
    }
    for (var, key, slot) in [
        (
            "WECOM_RELAY_MAX_QUEUED_JOBS",
            "relay.max_queued_jobs",
            &mut runtime.max_queued_jobs,
        ),
        (
            "WECOM_RELAY_MAX_QUEUED_PER_USER",
            "relay.max_queued_per_user",
            &mut runtime.max_queued_per_user,
        ),
        (
            "WECOM_RELAY_CONCURRENCY",
            "relay.concurrency",
            &mut runtime.concurrency,
        ),
        (
            "WECOM_RELAY_MEMORY_HISTORY_MB",
            "relay.memory_history_mb",
            &mut runtime.memory_history_mb,
        ),
    ] {
        if let Some(value) = env(var).filter(|v| !v.trim().is_empty()) {
            *slot = value.trim().parse().map_err(|_| {
                ConfigError::new(key, format!("must be a whole number, got {value:?}"))
            })?;
        }
        if *slot == 0 {
            return Err(ConfigError::new(key, "must be at least 1"));
        }
    }
    agent.apply_env(env);
    let agent = agent.resolve()?;
    let settings = raw.resolve()?;
    Ok(Config {
        settings,
        agent,
        runtime,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_hermes_config_file_loads_as_it_is() {
        let yaml = format!(
            r#"
model: some-model
platforms:
  telegram:
    enabled: false
  wecom_callback:
    enabled: true
    extra:
      corp_id: ww1
      corp_secret: s3cret
      agent_id: 1000002
      token: tok
      encoding_aes_key: {KEY}
      port: 8700
      allowed_users: [alice, "ww2:bob"]
agent:
  kind: echo
"#
        );
        let (raw, agent, runtime) = parse_yaml(&yaml).unwrap();
        assert_eq!(
            agent.resolve().unwrap().backend,
            wecom_relay_core::config::Backend::Echo
        );
        assert_eq!(runtime, RuntimeConfig::default());
        let s = raw.resolve().unwrap();
        assert_eq!(s.port, 8700);
        assert_eq!(s.apps.iter().next().unwrap().agent_id.0, 1000002);
    }

    #[test]
    fn env_overrides_the_file_and_errors_hide_values() {
        let dir = std::env::temp_dir().join(format!("wecom-relay-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(
            &path,
            format!("platforms:\n  wecom_callback:\n    extra:\n      corp_id: ww1\n      corp_secret: s\n      agent_id: '5'\n      token: t\n      encoding_aes_key: {KEY}\n"),
        )
        .unwrap();
        let env = |k: &str| match k {
            "WECOM_CALLBACK_PORT" => Some("9100".to_string()),
            "WECOM_CALLBACK_ALLOW_ALL_USERS" => Some("true".to_string()),
            _ => None,
        };
        let cfg = load(Some(&path), &env).unwrap();
        assert_eq!(cfg.settings.port, 9100);
        assert!(cfg.settings.policy.allows_all());

        let bad = |k: &str| (k == "WECOM_CALLBACK_AGENT_ID").then(|| "SECRET-LOOKING".to_string());
        let e = load(Some(&path), &bad).unwrap_err();
        assert_eq!(e.key, "agent_id");
        std::fs::write(&path, "platforms: [unclosed\n  corp_secret: \"TOPSECRET").unwrap();
        let e = load(Some(&path), &no_env).unwrap_err();
        assert_eq!(e.key, "config.yaml");
        assert!(!e.to_string().contains("TOPSECRET"), "{e}");
        // Found by the fuzzer: a value with a quote in it, which the error escapes.
        std::fs::write(&path, "-0nB\\i\n \"api_key:TOPSECRET-123").unwrap();
        let e = load(Some(&path), &no_env).unwrap_err();
        assert!(!e.to_string().contains("TOPSECRET"), "{e}");
        assert_eq!(
            redacted(r#"string "a\"b TOP\\" at 1"#),
            "string <value> at 1"
        );
        std::fs::write(&path, "agent:\n  kind: gpt9\n").unwrap();
        assert_eq!(load(Some(&path), &no_env).unwrap_err().key, "agent.kind");

        std::fs::write(
            &path,
            "relay:\n  max_queued_jobs: 50\n  memory_history_mb: 2\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "WECOM_CALLBACK_CORP_ID" => Some("ww1".to_string()),
            "WECOM_CALLBACK_CORP_SECRET" => Some("s".to_string()),
            "WECOM_CALLBACK_AGENT_ID" => Some("5".to_string()),
            "WECOM_CALLBACK_TOKEN" => Some("t".to_string()),
            "WECOM_CALLBACK_ENCODING_AES_KEY" => Some(KEY.to_string()),
            "WECOM_RELAY_MAX_QUEUED_PER_USER" => Some("7".to_string()),
            _ => None,
        };
        let cfg = load(Some(&path), &env).unwrap();
        assert_eq!(
            (
                cfg.runtime.max_queued_jobs,
                cfg.runtime.max_queued_per_user,
                cfg.runtime.memory_history_mb
            ),
            (50, 7, 2)
        );
        let more = |k: &str| match k {
            "WECOM_RELAY_MEMORY_HISTORY_MB" => Some("64".to_string()),
            _ => env(k),
        };
        assert_eq!(
            load(Some(&path), &more).unwrap().runtime.memory_history_mb,
            64
        );
        for (var, value, key) in [
            ("WECOM_RELAY_MAX_QUEUED_JOBS", "0", "relay.max_queued_jobs"),
            (
                "WECOM_RELAY_MAX_QUEUED_PER_USER",
                "many",
                "relay.max_queued_per_user",
            ),
            ("WECOM_RELAY_CONCURRENCY", "-1", "relay.concurrency"),
            (
                "WECOM_RELAY_MEMORY_HISTORY_MB",
                "0",
                "relay.memory_history_mb",
            ),
        ] {
            let bad = |k: &str| {
                if k == var {
                    Some(value.to_string())
                } else {
                    env(k)
                }
            };
            assert_eq!(load(Some(&path), &bad).unwrap_err().key, key);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
