//! Running an AI bot's job: the answer grows in its stream while the agent writes it, the
//! stream is finished with what fits, and the rest (or what came too late) goes once through
//! the message's `response_url`.
//!
//! Steps, kept in [`JobState`] so a retry repeats none: the answer (`replies`), the stream
//! finished and the rest laid out (`parts_sent` 1, `rest`, `parts_total` 1 or 2), the rest
//! posted (`parts_sent` 2).

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::pin::pin;
use core::time::Duration;

use futures_util::future::{select, Either};

use super::commands::APOLOGY_TEXT;
use super::runner::Runner;
use super::send_api::{self, SendRefusal};
use super::Event;
use crate::agent::{Agent, AgentError, Progress};
use crate::aibot::reply::markdown_json;
use crate::aibot::response_url_target;
use crate::aibot::stream::{fit_message, layout, showable, Stream, StreamOp, LATE_NOTE};
use crate::http::Answer;
use crate::job::{AgentInput, Job, JobError, JobKind, JobState};
use crate::media::drop_inline_bytes;
use crate::ports::{Clock, HttpClient, JobSink, Platform, Sleeper, StreamStore};
use crate::wecom::api::{parse_response_url, response_url_post, ApiError};

/// How often the answer so far is written to the stream while the agent writes it (WeCom
/// asks about once a second).
const GROW_EVERY: Duration = Duration::from_millis(400);

/// How long the rest waits for WeCom to take the stream's last answer, so that the two
/// arrive in order.
const WAIT_FOR_CLOSE: Duration = Duration::from_secs(12);
const WAIT_STEP: Duration = Duration::from_millis(500);

fn store_failed(e: impl core::fmt::Display) -> JobError {
    JobError::Agent(AgentError::retry(format!("stream store: {e}")))
}

/// What the stream shows of the answer itself (without the note a late close added).
fn shown_answer(stream: &Stream) -> &str {
    if stream.late {
        stream
            .content
            .strip_suffix(LATE_NOTE)
            .unwrap_or(&stream.content)
    } else {
        &stream.content
    }
}

impl<P: Platform, A: Agent> Runner<'_, P, A> {
    async fn stream_op(&self, id: &str, op: &StreamOp) -> Result<Option<Stream>, JobError> {
        let now = self.platform.clock().now_unix();
        self.platform
            .streams()
            .apply(id, op, now)
            .await
            .map_err(store_failed)
    }

    /// Runs (or resumes) a stream job.
    pub(crate) async fn run_stream(&self, job: &Job, state: &mut JobState) -> Result<(), JobError> {
        let JobKind::Stream {
            input,
            stream,
            conversation,
        } = &job.kind
        else {
            return Ok(());
        };
        if self.bots.by_name(&job.app).is_none() {
            return Err(JobError::UnknownApp(job.app.clone()));
        }
        if state.replies.is_none() {
            let answer = self
                .stream_answer(job, state, input, stream, conversation)
                .await?;
            state.replies = Some(answer);
            self.platform.sink().progress(job, state).await;
        }
        let answer = state.replies.clone().unwrap_or_default().join("\n\n");
        if answer.is_empty() && !state.command {
            // The agent answers later (a webhook's 202), through /api/send with the stream.
            return Ok(());
        }
        // Parts: the stream's last answer, then the rest through the response_url, if any.
        if state.parts_sent == 0 {
            state.rest = self.finish_stream(stream, &answer).await?;
            state.parts_total = 1 + usize::from(state.rest.is_some());
            state.parts_sent = 1;
            self.platform.sink().progress(job, state).await;
        }
        if let (1, Some(rest)) = (state.parts_sent, state.rest.clone()) {
            self.post_rest(job, stream, &rest).await?;
            state.parts_sent = 2;
            self.platform.sink().progress(job, state).await;
        }
        Ok(())
    }

    /// The answer (a command's, or the agent's), shown in the stream as it grows.
    async fn stream_answer(
        &self,
        job: &Job,
        state: &mut JobState,
        input: &AgentInput,
        stream: &str,
        conversation: &str,
    ) -> Result<Vec<String>, JobError> {
        if let Some(answer) = self.command(conversation, input, state).await? {
            return Ok(answer);
        }
        let history = self.history(conversation).await;
        let progress = Progress::default();
        let media = self.gather(job, input).await;
        let started = self.platform.clock().now_millis();
        let answer = {
            let respond = pin!(self
                .agent
                .respond_streaming(job, &history, &media, &progress));
            let grow = pin!(self.grow(stream, &progress));
            match select(respond, grow).await {
                Either::Left((answer, _)) => answer,
                Either::Right(((), respond)) => respond.await,
            }
        };
        let millis = self.platform.clock().now_millis().saturating_sub(started);
        self.platform.observe(&Event::AgentAnswered { millis });
        let answer = answer.map_err(JobError::Agent)?;
        let kept: Vec<String> = answer.iter().map(|a| drop_inline_bytes(a)).collect();
        self.remember(conversation, input, &kept).await;
        if answer.is_empty() {
            return Ok(answer);
        }
        // The pictures go to the stream now; the text keeps no inline bytes.
        let text =
            super::media::stream_pictures(self.platform, self.media, stream, &answer.join("\n\n"))
                .await;
        Ok(alloc::vec![text])
    }

    /// Writes the answer so far to the stream, every [`GROW_EVERY`], until dropped.
    async fn grow(&self, stream: &str, progress: &Progress) {
        let mut shown = 0;
        loop {
            self.platform.sleeper().sleep(GROW_EVERY).await;
            let text = progress.snapshot();
            let cut = showable(&text, shown);
            if cut <= shown {
                continue;
            }
            let op = StreamOp::Grow {
                content: text[..cut].to_owned(),
            };
            // A failed write only delays what the user sees; the finish writes it all.
            if let Ok(Some(s)) = self.stream_op(stream, &op).await {
                shown = s.content.len().min(cut);
                if s.closed {
                    return core::future::pending().await;
                }
            }
        }
    }

    /// Finishes the stream with what fits of `answer`; the rest, if any, for the
    /// `response_url`.
    async fn finish_stream(&self, stream: &str, answer: &str) -> Result<Option<String>, JobError> {
        // Past the limit (no refresh came to end it), the stream is closed now.
        let poll = StreamOp::Poll {
            limit_secs: self.stream_limit_secs,
        };
        let Some(current) = self.stream_op(stream, &poll).await? else {
            // Expired (an hour passed): the response_url is no longer valid either.
            return Ok(None);
        };
        if !current.closed {
            let shown = shown_answer(&current);
            let (content, rest) = if answer.starts_with(shown) {
                let out = layout(answer, shown.len());
                (out.stream, out.rest)
            } else {
                // A retried agent answered differently from what is shown: the stream
                // keeps what it showed, and the whole answer follows.
                (
                    format!("{shown}{}", crate::aibot::stream::CONTINUED_NOTE),
                    Some(fit_message(answer)),
                )
            };
            let done = StreamOp::Finish { content };
            if let Some(after) = self.stream_op(stream, &done).await? {
                if after.finished {
                    return Ok(rest);
                }
                // Closed by the time limit in between: fall through with what it shows.
                return Ok(Some(rest_after(&after, answer)));
            }
            return Ok(None);
        }
        Ok(Some(rest_after(&current, answer)))
    }

    /// Posts `rest` to the stream's `response_url`, once the stream's last answer is out.
    async fn post_rest(&self, job: &Job, stream: &str, rest: &str) -> Result<(), JobError> {
        let mut waited = Duration::ZERO;
        let current = loop {
            match self.stream_op(stream, &StreamOp::Peek).await? {
                Some(s) if !s.closed && waited < WAIT_FOR_CLOSE => {
                    self.platform.sleeper().sleep(WAIT_STEP).await;
                    waited += WAIT_STEP;
                }
                other => break other,
            }
        };
        let url = current.and_then(|s| s.response_url);
        post_response_url(self.platform, self.api_base, &job.id, url.as_deref(), rest).await
    }

    /// After the agent never answered: the apology ends the stream, or (if the stream is
    /// already closed) goes through the `response_url`.
    pub(crate) async fn apologize_in_stream(&self, job: &Job) -> bool {
        let JobKind::Stream { stream, .. } = &job.kind else {
            return false;
        };
        let Ok(Some(current)) = self.stream_op(stream, &StreamOp::Peek).await else {
            return false;
        };
        if !current.closed {
            let content = if current.content.is_empty() {
                APOLOGY_TEXT.to_owned()
            } else {
                format!("{}\n\n{APOLOGY_TEXT}", current.content)
            };
            let done = StreamOp::Finish { content };
            if let Ok(Some(after)) = self.stream_op(stream, &done).await {
                if after.finished {
                    return true;
                }
            }
        }
        self.post_rest(job, stream, APOLOGY_TEXT).await.is_ok()
    }
}

/// What a closed stream did not show of `answer`, as one message.
fn rest_after(stream: &Stream, answer: &str) -> String {
    let shown = shown_answer(stream);
    match answer.strip_prefix(shown) {
        Some(rest) if !shown.is_empty() => fit_message(rest.trim_start_matches('\n')),
        _ => fit_message(answer),
    }
}

/// Posts `content` (markdown) to a message's `response_url`, if it has one on WeCom's host or
/// the API base; what became of it is observed under `label`. Transport failures and WeCom's
/// retryable errors are the caller's to retry; a refusal is final (the URL is usable once).
pub(crate) async fn post_response_url<P: Platform>(
    platform: &P,
    api_base: &str,
    label: &str,
    url: Option<&str>,
    content: &str,
) -> Result<(), JobError> {
    let refused = |why: &str| {
        platform.observe(&Event::ResponseUrl {
            job: label,
            ok: false,
            why,
        });
        Ok(())
    };
    let Some(url) = url else {
        return refused("the message came without a response_url (or it expired)");
    };
    let Some(target) = response_url_target(url, api_base) else {
        return refused(
            "its response_url is neither on WeCom's API host nor on api_base: not contacted",
        );
    };
    let req = response_url_post(&target, markdown_json(content));
    let resp = platform
        .api_http()
        .send(req)
        .await
        .map_err(|e| JobError::Api(ApiError::transport(e)))?;
    match parse_response_url(&resp) {
        Ok(()) => {
            platform.observe(&Event::ResponseUrl {
                job: label,
                ok: true,
                why: "",
            });
            Ok(())
        }
        Err(e) if !e.class.is_retryable() => refused(&e.to_string()),
        Err(e) => Err(JobError::Api(e)),
    }
}

impl<P: Platform> crate::Relay<P> {
    /// `/api/send` to a stream: a webhook agent's later answer ends it; what does not fit, or
    /// comes after the stream closed, goes through its `response_url`.
    pub(crate) async fn send_to_stream(&self, stream: &str, text: &str) -> Answer {
        let now = self.platform.clock().now_unix();
        let streams = self.platform.streams();
        let refuse = |status: u16, why: &str| {
            self.platform.observe(&Event::SendRefused { status, why });
            Answer::json(status, SendRefusal::new(status, why).body)
        };
        let poll = StreamOp::Poll {
            limit_secs: self.settings.stream_limit_secs,
        };
        let current = match streams.apply(stream, &poll, now).await {
            Ok(Some(s)) => s,
            Ok(None) => return refuse(404, "no such stream (unknown, or older than an hour)"),
            Err(e) => return refuse(503, &format!("stream store: {e}")),
        };
        if current.finished {
            return refuse(409, "the stream is already answered");
        }
        let label = format!("stream:{stream}");
        // Closed already (past its limit): all of it goes through the response_url.
        let rest = if current.closed {
            Some(fit_message(text))
        } else {
            let out = layout(text, 0);
            let done = StreamOp::Finish {
                content: match shown_answer(&current) {
                    "" => out.stream,
                    shown => format!("{shown}\n\n{}", out.stream),
                },
            };
            match streams.apply(stream, &done, now).await {
                Ok(Some(after)) if after.finished => out.rest,
                Ok(_) => Some(fit_message(text)),
                Err(e) => return refuse(503, &format!("stream store: {e}")),
            }
        };
        let continued = rest.is_some();
        if let Some(rest) = rest {
            let url = current.response_url.as_deref();
            if let Err(e) =
                post_response_url(&self.platform, &self.settings.api_base, &label, url, &rest).await
            {
                let body = send_api::failed_body(0, 1, &e.to_string());
                return Answer::json(502, body);
            }
        }
        Answer::json(
            200,
            serde_json::json!({"ok": true, "stream": stream, "continued": continued}).to_string(),
        )
    }
}
