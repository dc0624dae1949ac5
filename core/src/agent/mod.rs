//! Agents and the job runner: turning an accepted [`Job`] into messages sent back to the user.
//!
//! Backends: `echo` (the zero-config default), `openai` (any OpenAI-compatible Chat Completions
//! endpoint) and `webhook` (a signed JSON event to the user's own URL). They are configured the
//! same way on both twins ([`RawAgentSettings`]: the `agent:` section, or `AGENT_*` variables)
//! and call out through the same HTTP port as the WeCom API.
//!
//! A job runs in steps that can be retried without repeating side effects: the agent's answer
//! is kept in [`JobState`] once it arrives, and so is the number of parts WeCom accepted. The
//! twin calls [`Runner::run`] again (with backoff from a retry crate) while the error says
//! retrying can help, and [`Runner::apologize`] when it gives up, so the user is never left in
//! silence. `/reset`, `/new` and `/help` are answered here and never reach the agent.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::pin;
use core::time::Duration;

use futures_util::future::{select, Either};
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, Content, ErrorClass, TransportError};
use crate::app::{App, Apps, ConfigError};
use crate::client::{retry_delay_ms, RefreshLock, WeComClient};
use crate::ids::{ApiToken, ScopedUser};
pub use crate::openai::AgentError;
use crate::openai::{chat_request, parse_chat};
use crate::ports::{
    Clock, ConversationStore, HistoryLimits, HttpClient, Role, Sleeper, TokenCache, Turn,
};
use crate::relay::{Job, JobKind};
use crate::settings::{opt_scalar, parse_bool};
use crate::split::split_for_wecom;
use crate::webhook::{parse_webhook, webhook_request, WebhookEvent};

/// Sent once when the agent is slow.
pub const THINKING_TEXT: &str = "正在思考，请稍候…（Thinking, one moment…）";
/// Sent when the agent failed for good.
pub const APOLOGY_TEXT: &str = "抱歉，暂时无法回答，请稍后再试。（Sorry, I couldn't answer just now. Please try again in a moment.）";
/// The answer to `/reset` and `/new`.
pub const RESET_TEXT: &str = "已开始新的对话。（Started a new conversation.）";
/// The answer to `/help`.
pub const HELP_TEXT: &str = "可用命令 / Commands:\n/new 或 /reset — 清空对话记忆，开始新的对话 (forget this conversation)\n/help — 显示本帮助 (show this help)";

/// A command the relay answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `/reset` or `/new`.
    Reset,
    /// `/help`.
    Help,
}

/// Recognises a command: the whole message, case-insensitive, surrounding spaces ignored.
pub fn parse_command(text: &str) -> Option<Command> {
    match text.trim().to_ascii_lowercase().as_str() {
        "/reset" | "/new" => Some(Command::Reset),
        "/help" => Some(Command::Help),
        _ => None,
    }
}

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
    /// Send replies as markdown.
    pub markdown: bool,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Echo,
            thinking_notice_secs: 8,
            timeout_secs: 60,
            history: HistoryLimits::default(),
            markdown: false,
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
    "url",
    "secret",
];

/// Agent settings as written (`agent:` in `config.yaml`, or `AGENT_*`).
#[derive(Debug, Clone, Default, Deserialize)]
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
            markdown: match self.markdown.as_deref() {
                Some(v) => parse_bool("agent.markdown", v)?,
                None => false,
            },
        })
    }
}

/// The relay's part of the system prompt: where the answer goes and how it is read.
pub fn system_prompt(custom: Option<&str>, markdown: bool, user: &ScopedUser) -> String {
    let format = if markdown {
        "Format replies in Markdown (WeCom renders a subset; users reading through the WeChat plugin see it raw)."
    } else {
        "Reply in plain text: no Markdown, no tables."
    };
    let mut prompt = format!(
        "You are answering a user in WeCom (企业微信), the enterprise messenger. {format} \
         Long answers reach the user as several messages of about 2048 bytes each, so prefer short paragraphs. \
         The user's id is {user}."
    );
    if let Some(custom) = custom {
        prompt.push_str("\n\n");
        prompt.push_str(custom);
    }
    prompt
}

/// An AI backend.
pub trait Agent: Send + Sync {
    /// Answers one job's input given the stored conversation. An empty list means the backend
    /// will answer later (a webhook's `202`).
    fn respond(
        &self,
        job: &Job,
        history: &[Turn],
    ) -> impl Future<Output = Result<Vec<String>, AgentError>> + Send;
}

/// Replies with exactly the text it received (media as their `[kind media_id=...]` form).
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoAgent;

impl Agent for EchoAgent {
    async fn respond(&self, job: &Job, _history: &[Turn]) -> Result<Vec<String>, AgentError> {
        Ok(alloc::vec![job_text(job)])
    }
}

fn job_text(job: &Job) -> String {
    match &job.kind {
        JobKind::Answer { input } => input.to_text(),
        JobKind::Notice { text } => text.clone(),
    }
}

fn transport(e: TransportError, backend: &str) -> AgentError {
    match e {
        TransportError::Timeout => {
            AgentError::retry(format!("the {backend} did not answer in time"))
        }
        TransportError::Connect => AgentError::retry(format!("could not connect to the {backend}")),
        TransportError::Io => AgentError::retry(format!("the connection to the {backend} broke")),
    }
}

/// The configured backend over the HTTP port.
pub struct ConfiguredAgent<'a, H, K> {
    /// Settings.
    pub settings: &'a AgentSettings,
    /// HTTP for the backend (with the agent's timeout).
    pub http: &'a H,
    /// Clock (webhook signatures carry a timestamp).
    pub clock: &'a K,
}

impl<H: HttpClient, K: Clock> Agent for ConfiguredAgent<'_, H, K> {
    async fn respond(&self, job: &Job, history: &[Turn]) -> Result<Vec<String>, AgentError> {
        match &self.settings.backend {
            Backend::Echo => EchoAgent.respond(job, history).await,
            Backend::OpenAi {
                base_url,
                api_key,
                model,
                system_prompt: custom,
                temperature,
                max_tokens,
            } => {
                let system = system_prompt(custom.as_deref(), self.settings.markdown, &job.user);
                let end_user = job.user.key();
                let req = chat_request(
                    base_url,
                    api_key.expose(),
                    model,
                    &system,
                    history,
                    &job_text(job),
                    *temperature,
                    *max_tokens,
                    Some(&end_user),
                );
                let resp = self
                    .http
                    .send(req)
                    .await
                    .map_err(|e| transport(e, "agent API"))?;
                Ok(alloc::vec![parse_chat(&resp)?])
            }
            Backend::Webhook { url, secret } => {
                let corp = job.user.corp_id.as_str();
                let event = WebhookEvent::from_job(job, corp)
                    .ok_or_else(|| AgentError::fatal("not a message"))?;
                let req = webhook_request(url, secret.expose(), &event, self.clock.now_unix());
                let resp = self
                    .http
                    .send(req)
                    .await
                    .map_err(|e| transport(e, "webhook"))?;
                parse_webhook(&resp)
            }
        }
    }
}

/// Progress of one job, kept across retries (in memory, or in KV beside a queued job).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    /// The texts to send, once known (the agent's answer, a command's answer, a notice).
    pub replies: Option<Vec<String>>,
    /// Parts WeCom accepted.
    pub parts_sent: usize,
    /// Parts in total, once known.
    pub parts_total: usize,
    /// Attempts made so far.
    pub attempts: u32,
    /// Whether the "thinking" notice went out.
    pub notice_sent: bool,
    /// Whether the job was a command the relay answered itself.
    pub command: bool,
}

/// Why a job step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// The job names an app that is not configured (any more).
    UnknownApp(String),
    /// The agent failed.
    Agent(AgentError),
    /// WeCom refused or could not be reached.
    Api(ApiError),
}

impl JobError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::UnknownApp(_) => false,
            Self::Agent(e) => e.retryable,
            Self::Api(e) => e.class.is_retryable(),
        }
    }

    /// The delay before attempt `attempt + 1`, given this error.
    pub fn retry_delay_ms(&self, attempt: u32, jitter: u16) -> u64 {
        match self {
            Self::Api(e) => retry_delay_ms(attempt, e, jitter),
            Self::Agent(e) => {
                let as_api = ApiError {
                    class: ErrorClass::RetryLater,
                    errcode: None,
                    errmsg: String::new(),
                    http_status: None,
                    retry_after_secs: e.retry_after_secs,
                };
                retry_delay_ms(attempt, &as_api, jitter)
            }
            Self::UnknownApp(_) => 0,
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownApp(name) => write!(f, "app {name:?} is not configured"),
            Self::Agent(e) => write!(f, "agent: {e}"),
            Self::Api(e) => write!(f, "wecom api: {e}"),
        }
    }
}

/// Everything a job needs, borrowed from the twin.
pub struct Runner<'a, A, H, C, K, L, S, Z> {
    /// The apps.
    pub apps: &'a Apps,
    /// Agent settings (memory bounds, notice delay, markdown).
    pub settings: &'a AgentSettings,
    /// The agent.
    pub agent: &'a A,
    /// The WeCom client.
    pub client: &'a WeComClient<'a, H, C, K, L>,
    /// Conversation memory.
    pub conversations: &'a S,
    /// Timers (for the thinking notice).
    pub sleeper: &'a Z,
}

impl<A, H, C, K, L, S, Z> Runner<'_, A, H, C, K, L, S, Z>
where
    A: Agent,
    H: HttpClient,
    C: TokenCache,
    K: Clock,
    L: RefreshLock,
    S: ConversationStore,
    Z: Sleeper,
{
    fn app(&self, job: &Job) -> Result<&App, JobError> {
        self.apps
            .by_name(&job.app)
            .or_else(|| self.apps.for_user(&job.user, Some(job.agent_id)))
            .ok_or_else(|| JobError::UnknownApp(job.app.clone()))
    }

    /// Runs (or resumes) a job: finds the replies if none are kept yet (command, notice or
    /// agent), then sends the parts not yet sent.
    pub async fn run(&self, job: &Job, state: &mut JobState) -> Result<(), JobError> {
        state.attempts += 1;
        let app = self.app(job)?;
        let user = job.user.user_id.as_str();
        if state.replies.is_none() {
            state.replies = Some(self.replies(job, state, app).await?);
        }
        let replies = state.replies.clone().unwrap_or_default();
        let parts: Vec<String> = replies.iter().flat_map(|r| split_for_wecom(r)).collect();
        let markdown = self.settings.markdown && !state.command;
        match self
            .client
            .send_parts(app, user, &parts, markdown, state.parts_sent)
            .await
        {
            Ok(receipts) => {
                state.parts_sent += receipts.len();
                state.parts_total = parts.len();
                Ok(())
            }
            Err(partial) => {
                state.parts_sent = partial.sent;
                state.parts_total = partial.total;
                Err(JobError::Api(partial.error))
            }
        }
    }

    async fn replies(
        &self,
        job: &Job,
        state: &mut JobState,
        app: &App,
    ) -> Result<Vec<String>, JobError> {
        let key = job.user.key();
        let input = match &job.kind {
            JobKind::Notice { text } => return Ok(alloc::vec![text.clone()]),
            JobKind::Answer { input } => input,
        };
        if let crate::relay::AgentInput::Text { text } = input {
            match parse_command(text) {
                Some(Command::Reset) => {
                    state.command = true;
                    // Failing to forget must not pretend it forgot.
                    self.conversations.clear(&key).await.map_err(|e| {
                        JobError::Agent(AgentError::retry(format!("conversation store: {e}")))
                    })?;
                    return Ok(alloc::vec![RESET_TEXT.to_owned()]);
                }
                Some(Command::Help) => {
                    state.command = true;
                    return Ok(alloc::vec![HELP_TEXT.to_owned()]);
                }
                None => {}
            }
        }
        // Memory is best-effort: an unreadable history means answering without it.
        let history = self.conversations.load(&key).await.unwrap_or_default();
        let answer = {
            let respond = pin!(self.agent.respond(job, &history));
            if self.settings.thinking_notice_secs > 0 && !state.notice_sent {
                let timer = pin!(self
                    .sleeper
                    .sleep(Duration::from_secs(self.settings.thinking_notice_secs)));
                match select(respond, timer).await {
                    Either::Left((answer, _)) => answer,
                    Either::Right(((), respond)) => {
                        state.notice_sent = true;
                        let notice = Content::Text {
                            content: THINKING_TEXT.to_owned(),
                        };
                        // A lost notice is not worth failing the answer for.
                        let _ = self
                            .client
                            .send(app, job.user.user_id.as_str(), &notice)
                            .await;
                        respond.await
                    }
                }
            } else {
                respond.await
            }
        }
        .map_err(JobError::Agent)?;
        let mut turns = alloc::vec![Turn {
            role: Role::User,
            text: input.to_text()
        }];
        if !answer.is_empty() {
            turns.push(Turn {
                role: Role::Assistant,
                text: answer.join("\n\n"),
            });
        }
        let _ = self
            .conversations
            .append(&key, turns, self.settings.history)
            .await;
        Ok(answer)
    }

    /// After the last attempt failed: if the agent never answered, tell the user to try
    /// again. Returns whether an apology went out.
    pub async fn apologize(&self, job: &Job, state: &JobState) -> bool {
        if state.replies.is_some() || !matches!(job.kind, JobKind::Answer { .. }) {
            return false;
        }
        let Ok(app) = self.app(job) else { return false };
        let apology = Content::Text {
            content: APOLOGY_TEXT.to_owned(),
        };
        self.client
            .send(app, job.user.user_id.as_str(), &apology)
            .await
            .is_ok()
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::ids::{AgentId, ScopedUser};
    use crate::ports::{MemoryConversations, MemoryTokenCache};
    use crate::relay::AgentInput;
    #[allow(unused_imports)]
    use crate::test_support::*;
    use crate::testing::{block_on, FixedClock, InstantSleeper, ScriptedHttp};
    use core::sync::atomic::{AtomicUsize, Ordering};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    struct CountingAgent(AtomicUsize);
    impl Agent for CountingAgent {
        async fn respond(&self, _job: &Job, _history: &[Turn]) -> Result<Vec<String>, AgentError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(alloc::vec!["答".repeat(1500)]) // 4500 bytes: 3 parts
        }
    }

    fn apps() -> Apps {
        let cfg = crate::app::AppConfig {
            name: Some("a".into()),
            corp_id: "ww1".into(),
            corp_secret: "s".into(),
            agent_id: "7".into(),
            token: "t".into(),
            encoding_aes_key: "A".repeat(43),
        };
        Apps::from_configs(&[cfg], true).unwrap()
    }

    fn job(text: &str) -> Job {
        Job {
            id: "ww1:7:m:1".into(),
            app: "a".into(),
            agent_id: AgentId(7),
            user: ScopedUser::new("ww1", "alice"),
            create_time: 1,
            kind: JobKind::Answer {
                input: AgentInput::Text { text: text.into() },
            },
        }
    }

    const TOKEN: &str = r#"{"errcode":0,"access_token":"T","expires_in":7200}"#;
    const SENT: &str = r#"{"errcode":0,"errmsg":"ok","msgid":"m"}"#;

    #[test]
    fn a_retry_resumes_without_asking_the_agent_or_sending_twice() {
        let http = ScriptedHttp::new();
        let agent = CountingAgent(AtomicUsize::new(0));
        let settings = AgentSettings::default();
        let conv = MemoryConversations::default();
        let (cache, clock, apps) = (MemoryTokenCache::default(), FixedClock::at(1), apps());
        let client = WeComClient::new("http://x", &http, &cache, &clock);
        let runner = Runner {
            apps: &apps,
            settings: &settings,
            agent: &agent,
            client: &client,
            conversations: &conv,
            sleeper: &InstantSleeper::never(),
        };
        http.push_json(TOKEN)
            .push_json(SENT)
            .push_json(r#"{"errcode":-1,"errmsg":"system busy"}"#);
        let mut state = JobState::default();
        let err = block_on(runner.run(&job("q"), &mut state)).unwrap_err();
        assert!(err.is_retryable());
        assert_eq!((state.parts_sent, state.parts_total), (1, 3));
        http.push_json(SENT).push_json(SENT);
        block_on(runner.run(&job("q"), &mut state)).unwrap();
        assert_eq!(agent.0.load(Ordering::SeqCst), 1);
        assert_eq!((state.parts_sent, state.attempts), (3, 2));
        assert_eq!(
            http.paths()
                .iter()
                .filter(|p| p.ends_with("message/send"))
                .count(),
            4
        );
    }

    #[test]
    fn memory_commands_and_notices() {
        let http = ScriptedHttp::new();
        http.respond_with(|req| {
            Some(Ok(crate::api::HttpResponse::json(
                if req.path().ends_with("gettoken") {
                    TOKEN
                } else {
                    SENT
                },
            )))
        });
        let settings = AgentSettings::default();
        let conv = MemoryConversations::default();
        let (cache, clock, apps) = (MemoryTokenCache::default(), FixedClock::at(1), apps());
        let client = WeComClient::new("http://x", &http, &cache, &clock);
        let sleeper = InstantSleeper::never();
        let runner = Runner {
            apps: &apps,
            settings: &settings,
            agent: &EchoAgent,
            client: &client,
            conversations: &conv,
            sleeper: &sleeper,
        };
        block_on(runner.run(&job("first"), &mut JobState::default())).unwrap();
        block_on(runner.run(&job("second"), &mut JobState::default())).unwrap();
        let stored = block_on(conv.load("ww1:alice")).unwrap();
        assert_eq!(stored.len(), 4);
        assert_eq!(
            (stored[0].role, stored[3].text.as_str()),
            (Role::User, "second")
        );
        let mut st = JobState::default();
        block_on(runner.run(&job(" /NEW "), &mut st)).unwrap();
        assert!(st.command);
        assert_eq!(st.replies.as_deref(), Some(&[RESET_TEXT.to_owned()][..]));
        assert!(block_on(conv.load("ww1:alice")).unwrap().is_empty());
        let mut st = JobState::default();
        block_on(runner.run(&job("/help"), &mut st)).unwrap();
        assert!(st.replies.unwrap()[0].contains("/reset"));
        assert!(
            block_on(conv.load("ww1:alice")).unwrap().is_empty(),
            "commands never reach the agent or the memory"
        );
    }

    #[test]
    fn the_thinking_notice_goes_out_once_when_the_timer_wins() {
        let http = ScriptedHttp::new();
        http.respond_with(|req| {
            Some(Ok(crate::api::HttpResponse::json(
                if req.path().ends_with("gettoken") {
                    TOKEN
                } else {
                    SENT
                },
            )))
        });
        let settings = AgentSettings::default();
        let conv = MemoryConversations::default();
        let (cache, clock, apps) = (MemoryTokenCache::default(), FixedClock::at(1), apps());
        let client = WeComClient::new("http://x", &http, &cache, &clock);
        struct SlowAgent;
        impl Agent for SlowAgent {
            async fn respond(&self, _job: &Job, _h: &[Turn]) -> Result<Vec<String>, AgentError> {
                crate::testing::yield_a_few().await;
                Ok(alloc::vec!["done".into()])
            }
        }
        let runner = Runner {
            apps: &apps,
            settings: &settings,
            agent: &SlowAgent,
            client: &client,
            conversations: &conv,
            sleeper: &InstantSleeper::immediate(),
        };
        let mut st = JobState::default();
        block_on(runner.run(&job("q"), &mut st)).unwrap();
        assert!(st.notice_sent);
        let sent: Vec<String> = http
            .requests()
            .iter()
            .filter_map(|r| match &r.body {
                crate::api::Body::Json(j) => Some(
                    serde_json::from_str::<serde_json::Value>(j).unwrap()["text"]["content"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ),
                _ => None,
            })
            .collect();
        assert_eq!(sent, [THINKING_TEXT, "done"]);
    }

    #[test]
    fn a_final_failure_apologises_once_the_agent_never_answered() {
        struct Broken;
        impl Agent for Broken {
            async fn respond(&self, _job: &Job, _h: &[Turn]) -> Result<Vec<String>, AgentError> {
                Err(AgentError::fatal("401"))
            }
        }
        let http = ScriptedHttp::new();
        http.respond_with(|req| {
            Some(Ok(crate::api::HttpResponse::json(
                if req.path().ends_with("gettoken") {
                    TOKEN
                } else {
                    SENT
                },
            )))
        });
        let settings = AgentSettings::default();
        let conv = MemoryConversations::default();
        let (cache, clock, apps) = (MemoryTokenCache::default(), FixedClock::at(1), apps());
        let client = WeComClient::new("http://x", &http, &cache, &clock);
        let runner = Runner {
            apps: &apps,
            settings: &settings,
            agent: &Broken,
            client: &client,
            conversations: &conv,
            sleeper: &InstantSleeper::never(),
        };
        let mut st = JobState::default();
        let err = block_on(runner.run(&job("q"), &mut st)).unwrap_err();
        assert!(!err.is_retryable());
        assert!(block_on(runner.apologize(&job("q"), &st)));
        let mut answered = st.clone();
        answered.replies = Some(alloc::vec!["x".into()]);
        assert!(
            !block_on(runner.apologize(&job("q"), &answered)),
            "an answer that failed to send is retried, not apologised for"
        );
    }

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
        let prompt = system_prompt(Some("Be kind."), false, &ScopedUser::new("ww1", "alice"));
        assert!(
            prompt.contains("WeCom")
                && prompt.contains("plain text")
                && prompt.contains("2048")
                && prompt.contains("ww1:alice")
                && prompt.ends_with("Be kind.")
        );
    }
}
