//! Agents: what answers the user. `echo` (the zero-config default), `openai` (any
//! OpenAI-compatible Chat Completions endpoint) and `webhook` (a signed JSON event to the
//! user's own URL), configured alike on both twins ([`crate::config::RawAgentSettings`]) and
//! called through the same HTTP port as WeCom's API.
//!
//! An agent only answers; when to ask it, what to do with a slow or failed answer, and how the
//! answer reaches the user are the relay's ([`crate::Relay::run_job`]).

use alloc::string::String;
use alloc::vec::Vec;
use core::future::Future;

use crate::config::{AgentSettings, Backend, ReplyFormat};
use crate::http::TransportError;
use crate::ids::ScopedUser;
use crate::job::{Job, JobKind};
use crate::media::Gathered;
use crate::memory::Turn;
use crate::ports::{Clock, HttpClient, Sleeper};

pub mod openai;
pub mod webhook;

use openai::{chat_request, parse_chat};
use webhook::{parse_webhook, webhook_request, WebhookEvent};

/// What an agent call failed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentError {
    /// Whether asking again may work.
    pub retryable: bool,
    /// For the log; never contains a secret.
    pub message: String,
    /// A delay the backend asked for.
    pub retry_after_secs: Option<u64>,
}

impl AgentError {
    /// A retryable failure.
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// A final failure.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
            retry_after_secs: None,
        }
    }
}

impl core::fmt::Display for AgentError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The relay's part of the system prompt: where the answer goes and how it is read.
pub fn system_prompt(custom: Option<&str>, format: ReplyFormat, user: &ScopedUser) -> String {
    let format = match format {
        ReplyFormat::Markdown => "Format replies in Markdown (WeCom renders a subset; users reading through the WeChat plugin see it raw).",
        ReplyFormat::Auto => "Use Markdown only where it helps (WeCom renders a subset); plain answers go as plain text.",
        ReplyFormat::Text => "Reply in plain text: no Markdown, no tables.",
    };
    let mut prompt = alloc::format!(
        "You are answering a user in WeCom (企业微信), the enterprise messenger. {format} \
         Long answers reach the user as several messages of about 2048 bytes each, so prefer short paragraphs. \
         The user's id is {user}. \
         To send the user a picture, write a Markdown image, ![description](https://...); to send a file, \
         a link titled attachment, [report.pdf](https://... \"attachment\"). The relay delivers them."
    );
    if let Some(custom) = custom {
        prompt.push_str("\n\n");
        prompt.push_str(custom);
    }
    prompt
}

/// The answer so far, as an agent streams it: the agent adds text, the relay reads it.
#[derive(Debug, Default)]
pub struct Progress(std::sync::Mutex<String>);

impl Progress {
    fn text(&self) -> std::sync::MutexGuard<'_, String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a piece of the answer.
    pub fn push(&self, piece: &str) {
        self.text().push_str(piece);
    }

    /// The answer so far.
    pub fn snapshot(&self) -> String {
        self.text().clone()
    }

    /// Starts over (a new attempt).
    pub fn clear(&self) {
        self.text().clear();
    }
}

/// An AI backend.
pub trait Agent: Send + Sync {
    /// Whether answers read the conversation's memory (the `history` of [`Agent::respond`]).
    /// When not, the relay neither loads nor keeps it: memory no one reads would only cost
    /// every job a load and an append, and RAM or a store's space for each member.
    fn remembers(&self) -> bool {
        true
    }

    /// Answers one job's input given the stored conversation. An empty list means the backend
    /// will answer later (a webhook's `202`).
    fn respond(
        &self,
        job: &Job,
        history: &[Turn],
        media: &Gathered,
    ) -> impl Future<Output = Result<Vec<String>, AgentError>> + Send;

    /// Passes a user's rating of an answer on (a [`JobKind::Feedback`] job). The default
    /// keeps it to itself: only the webhook agent hears of ratings.
    fn feedback(&self, job: &Job) -> impl Future<Output = Result<(), AgentError>> + Send {
        let _ = job;
        core::future::ready(Ok(()))
    }

    /// Like [`Agent::respond`], adding the answer to `progress` as it arrives, so a stream can
    /// show it. The default adds it whole once it is there.
    fn respond_streaming(
        &self,
        job: &Job,
        history: &[Turn],
        media: &Gathered,
        progress: &Progress,
    ) -> impl Future<Output = Result<Vec<String>, AgentError>> + Send {
        async move {
            let answer = self.respond(job, history, media).await?;
            progress.push(&answer.join("\n\n"));
            Ok(answer)
        }
    }
}

/// Replies with exactly the text it received (media as their `[kind media_id=...]` form).
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoAgent;

impl Agent for EchoAgent {
    fn remembers(&self) -> bool {
        false
    }

    async fn respond(
        &self,
        job: &Job,
        _history: &[Turn],
        _media: &Gathered,
    ) -> Result<Vec<String>, AgentError> {
        Ok(alloc::vec![job_text(job)])
    }
}

pub(crate) fn job_text(job: &Job) -> String {
    match &job.kind {
        JobKind::Answer { input } | JobKind::Stream { input, .. } => input.to_text(),
        JobKind::Notice { text } => text.clone(),
        JobKind::Feedback { comment, .. } => comment.clone(),
    }
}

fn transport(e: TransportError, backend: &str) -> AgentError {
    match e {
        TransportError::Timeout => {
            AgentError::retry(alloc::format!("the {backend} did not answer in time"))
        }
        TransportError::Connect => {
            AgentError::retry(alloc::format!("could not connect to the {backend}"))
        }
        TransportError::Io => {
            AgentError::retry(alloc::format!("the connection to the {backend} broke"))
        }
    }
}

/// The configured backend over the HTTP port.
pub struct ConfiguredAgent<'a, H, K, S> {
    /// Settings.
    pub settings: &'a AgentSettings,
    /// HTTP for the backend (with the agent's timeout).
    pub http: &'a H,
    /// Clock (webhook signatures carry a timestamp).
    pub clock: &'a K,
    /// Timers (the echo agent streams in steps).
    pub sleeper: &'a S,
}

/// How many steps the echo agent streams its echo in, and the pause between them.
const ECHO_STEPS: usize = 4;
const ECHO_STEP_MS: u64 = 500;

impl<H: HttpClient, K: Clock, S: Sleeper> ConfiguredAgent<'_, H, K, S> {
    async fn stream_echo(&self, job: &Job, progress: &Progress) -> Vec<String> {
        let text = job_text(job);
        let chars: Vec<char> = text.chars().collect();
        let step = chars.len().div_ceil(ECHO_STEPS).max(1);
        for (i, piece) in chars.chunks(step).enumerate() {
            if i > 0 {
                self.sleeper
                    .sleep(core::time::Duration::from_millis(ECHO_STEP_MS))
                    .await;
            }
            progress.push(&piece.iter().collect::<String>());
        }
        alloc::vec![text]
    }

    async fn stream_openai(
        &self,
        req: crate::http::HttpRequest,
        progress: &Progress,
    ) -> Result<Vec<String>, AgentError> {
        let mut reader = openai::SseReader::default();
        let resp = self
            .http
            .send_streaming(openai::streaming(req), &mut |chunk| {
                reader.feed(chunk, &mut |text| progress.push(text));
            })
            .await
            .map_err(|e| transport(e, "agent API"))?;
        let is_events = resp
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !(200..300).contains(&resp.status) || !is_events {
            // An error, or a provider that ignored `stream` and answered whole.
            let text = parse_chat(&resp)?;
            progress.clear();
            progress.push(&text);
            return Ok(alloc::vec![text]);
        }
        if let Some(e) = reader.error {
            return Err(AgentError::retry(alloc::format!(
                "the agent API failed mid-answer: {e}"
            )));
        }
        if !reader.done {
            return Err(AgentError::retry(
                "the agent API's answer stream ended before the answer did",
            ));
        }
        Ok(alloc::vec![progress.snapshot()])
    }

    /// Sends a signed event to the webhook; its answer's replies.
    async fn call_webhook(&self, event: &WebhookEvent) -> Result<Vec<String>, AgentError> {
        let Backend::Webhook { url, secret } = &self.settings.backend else {
            return Err(AgentError::fatal("the backend is not a webhook"));
        };
        let req = webhook_request(url, secret.expose(), event, self.clock.now_unix());
        let resp = self
            .http
            .send(req)
            .await
            .map_err(|e| transport(e, "webhook"))?;
        parse_webhook(&resp)
    }

    fn openai_request(
        &self,
        job: &Job,
        history: &[Turn],
        media: &Gathered,
    ) -> Option<crate::http::HttpRequest> {
        let Backend::OpenAi {
            base_url,
            api_key,
            model,
            system_prompt: custom,
            temperature,
            max_tokens,
        } = &self.settings.backend
        else {
            return None;
        };
        let system = system_prompt(custom.as_deref(), self.settings.reply_format, &job.user);
        let end_user = job.user.key();
        Some(chat_request(
            base_url,
            api_key.expose(),
            model,
            &system,
            history,
            &media.text,
            &media.images,
            *temperature,
            *max_tokens,
            Some(&end_user),
        ))
    }
}

impl<H: HttpClient, K: Clock, S: Sleeper> Agent for ConfiguredAgent<'_, H, K, S> {
    /// Only the OpenAI backend sends the conversation; a webhook agent keeps its own.
    fn remembers(&self) -> bool {
        matches!(self.settings.backend, Backend::OpenAi { .. })
    }

    async fn feedback(&self, job: &Job) -> Result<(), AgentError> {
        let (Backend::Webhook { .. }, Some(event)) =
            (&self.settings.backend, WebhookEvent::feedback(job))
        else {
            return Ok(());
        };
        // Whatever it answers, a rating needs no reply: only a failure counts.
        self.call_webhook(&event).await.map(drop)
    }

    async fn respond_streaming(
        &self,
        job: &Job,
        history: &[Turn],
        media: &Gathered,
        progress: &Progress,
    ) -> Result<Vec<String>, AgentError> {
        progress.clear();
        match &self.settings.backend {
            Backend::Echo => Ok(self.stream_echo(job, progress).await),
            Backend::OpenAi { .. } => {
                let req = self
                    .openai_request(job, history, media)
                    .expect("the backend is OpenAI");
                self.stream_openai(req, progress).await
            }
            Backend::Webhook { .. } => {
                let answer = self.respond(job, history, media).await?;
                // Pictures given as bytes go with the last answer, not in the text.
                progress.push(&crate::media::drop_inline_bytes(&answer.join("\n\n")));
                Ok(answer)
            }
        }
    }

    async fn respond(
        &self,
        job: &Job,
        history: &[Turn],
        media: &Gathered,
    ) -> Result<Vec<String>, AgentError> {
        match &self.settings.backend {
            Backend::Echo => EchoAgent.respond(job, history, media).await,
            Backend::OpenAi { .. } => {
                let req = self
                    .openai_request(job, history, media)
                    .expect("the backend is OpenAI");
                let resp = self
                    .http
                    .send(req)
                    .await
                    .map_err(|e| transport(e, "agent API"))?;
                Ok(alloc::vec![parse_chat(&resp)?])
            }
            Backend::Webhook { .. } => {
                let corp = job.user.corp_id.as_str();
                let mut event = WebhookEvent::from_job(job, corp)
                    .ok_or_else(|| AgentError::fatal("not a message"))?;
                event.media = media.media.clone();
                self.call_webhook(&event).await
            }
        }
    }
}
