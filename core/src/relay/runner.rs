//! Running a job: ask (or answer a command), send in parts, resume after a failure without
//! repeating a side effect, and decide whether to retry, give up or apologise.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::pin::pin;
use core::time::Duration;

use futures_util::future::{select, Either};

use super::commands::{parse_command, Command, APOLOGY_TEXT, HELP_TEXT, RESET_TEXT, THINKING_TEXT};
use super::{ClientOf, Event};
use crate::agent::{Agent, AgentError};
use crate::apps::{App, Apps};
use crate::config::{AgentSettings, ReplyFormat};
use crate::job::{AgentInput, Job, JobError, JobKind, JobReport, JobState, Step};
use crate::memory::{Role, Turn};
use crate::pacing::budget_key;
use crate::ports::SendBudget;
use crate::ports::{Clock, ConversationStore, JobSink, Platform, Random, Sleeper};
use crate::wecom::api::{duplicate_check_secs, Content, SendReceipt};
use crate::wecom::client::MAX_ATTEMPTS;
use crate::wecom::markdown::{strip_markdown, uses_markdown};
use crate::wecom::split::split_for_wecom;

/// What to do when a member's send budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// Wait on the platform's timers, however long.
    Wait,
    /// Wait at most this long; beyond it, give the wait back as [`JobError::Paced`].
    WaitUpTo(Duration),
    /// Give the wait back at once (a queue redelivers the job after it).
    Defer,
    /// Do not send at all (a notice that would only cost budget).
    Skip,
}

/// Sends one message through the member's budget: every message the relay sends goes through
/// here, so none is silently dropped by WeCom for exceeding it. `once` names the message
/// (job and part) for WeCom's duplicate check, so that a retry of a send whose answer was lost
/// cannot reach the user twice.
pub(crate) async fn send_paced<P: Platform>(
    platform: &P,
    client: &ClientOf<'_, P>,
    app: &App,
    user: &str,
    content: &Content,
    pace: Pace,
    once: Option<(&str, usize)>,
) -> Result<Option<SendReceipt>, JobError> {
    let key = budget_key(app, user);
    loop {
        let wait = match platform
            .budget()
            .take(&key, platform.clock().now_millis())
            .await
        {
            Ok(()) => break,
            Err(wait) => wait,
        };
        match pace {
            Pace::Skip => return Ok(None),
            Pace::Wait => {}
            Pace::WaitUpTo(max) if wait <= max => {}
            Pace::WaitUpTo(_) | Pace::Defer => return Err(JobError::Paced(wait)),
        }
        platform.sleeper().sleep(wait).await;
    }
    let check = once.map(|(job, part)| duplicate_check_secs(job, part));
    client
        .send(app, user, content, check)
        .await
        .map(Some)
        .map_err(JobError::Api)
}

/// Everything one job needs, borrowed from the relay.
pub(crate) struct Runner<'a, P: Platform, A> {
    pub(crate) apps: &'a Apps,
    /// The AI bots (a stream job's `app` names one).
    pub(crate) bots: &'a crate::aibot::Bots,
    /// How long after its message a stream is ended with what has arrived.
    pub(crate) stream_limit_secs: u64,
    /// The WeCom API base (a `response_url` goes there, or through it).
    pub(crate) api_base: &'a str,
    /// What media may be fetched.
    pub(crate) media: &'a crate::media::MediaPolicy,
    pub(crate) settings: &'a AgentSettings,
    pub(crate) agent: &'a A,
    pub(crate) client: &'a ClientOf<'a, P>,
    pub(crate) platform: &'a P,
    /// How the parts of an answer wait for the member's budget.
    pub(crate) pace: Pace,
}

impl<P: Platform, A: Agent> Runner<'_, P, A> {
    /// One attempt, and what it means: done, retry after a delay, or give up (apologising
    /// when the agent never answered). Every outcome is observed once, here.
    pub(crate) async fn step(&self, job: &Job, state: &mut JobState) -> Step {
        let error = match self.run(job, state).await {
            Ok(()) => {
                let report = self.report(job, state, None, false);
                self.platform.observe(&Event::Job(&report));
                return Step::Done(report);
            }
            Err(e) => e,
        };
        if let JobError::Paced(delay) = error {
            // Waiting for the budget is not a failed attempt.
            state.attempts = state.attempts.saturating_sub(1);
            self.platform.observe(&Event::Paced {
                job: &job.id,
                delay,
            });
            return Step::RetryIn(delay);
        }
        if error.is_retryable() && state.attempts < MAX_ATTEMPTS {
            let mut jitter = [0u8; 2];
            self.platform.random().fill(&mut jitter);
            let jitter = u16::from_le_bytes(jitter) % 1001;
            let delay = Duration::from_millis(error.retry_delay_ms(state.attempts, jitter));
            self.platform.observe(&Event::Retrying {
                job: &job.id,
                error: &error,
                delay,
            });
            return Step::RetryIn(delay);
        }
        let apologized = self.apologize(job, state).await;
        let report = self.report(job, state, Some(error), apologized);
        self.platform.observe(&Event::Job(&report));
        Step::GaveUp(report)
    }

    fn report(
        &self,
        job: &Job,
        state: &JobState,
        error: Option<JobError>,
        apologized: bool,
    ) -> JobReport {
        JobReport {
            job: job.id.clone(),
            app: job.app.clone(),
            attempts: state.attempts,
            parts_sent: state.parts_sent,
            parts_total: state.parts_total,
            error,
            apologized,
        }
    }

    /// The agent's answer, timed for the latency metric.
    async fn timed_answer(
        &self,
        job: &Job,
        history: &[Turn],
        media: &crate::media::Gathered,
    ) -> Result<Vec<String>, AgentError> {
        let started = self.platform.clock().now_millis();
        let answer = self.agent.respond(job, history, media).await;
        let millis = self.platform.clock().now_millis().saturating_sub(started);
        self.platform.observe(&Event::AgentAnswered { millis });
        answer
    }

    pub(crate) fn app(&self, job: &Job) -> Result<&App, JobError> {
        self.apps
            .by_name(&job.app)
            .or_else(|| self.apps.for_user(&job.user, Some(job.agent_id)))
            .ok_or_else(|| JobError::UnknownApp(job.app.clone()))
    }

    /// Runs (or resumes) a job: finds the replies if none are kept yet (command, notice or
    /// agent), then sends the parts not yet sent.
    pub async fn run(&self, job: &Job, state: &mut JobState) -> Result<(), JobError> {
        state.attempts += 1;
        match job.kind {
            JobKind::Stream { .. } => return self.run_stream(job, state).await,
            JobKind::Feedback { .. } => {
                return self.agent.feedback(job).await.map_err(JobError::Agent)
            }
            JobKind::Answer { .. } | JobKind::Notice { .. } => {}
        }
        let app = self.app(job)?;
        let user = job.user.user_id.as_str();
        if state.replies.is_none() {
            state.replies = Some(self.replies(job, state, app).await?);
            self.platform.sink().progress(job, state).await;
        }
        let replies = state.replies.clone().unwrap_or_default();
        let markdown = match self.settings.reply_format {
            _ if state.command => false,
            ReplyFormat::Markdown => true,
            ReplyFormat::Text => false,
            ReplyFormat::Auto => replies.iter().any(|r| uses_markdown(r)),
        };
        let mut contents: Vec<Content> = replies
            .iter()
            .flat_map(|r| {
                if markdown || self.settings.reply_format == ReplyFormat::Auto || state.command {
                    split_for_wecom(r)
                } else {
                    split_for_wecom(&strip_markdown(r))
                }
            })
            .map(|content| {
                if markdown {
                    Content::Markdown { content }
                } else {
                    Content::Text { content }
                }
            })
            .collect();
        contents.extend(state.media.iter().cloned());
        state.parts_total = contents.len();
        for (i, content) in contents.iter().enumerate().skip(state.parts_sent) {
            // The same part in one answer twice (a repeated block) would be dropped as a
            // duplicate of itself: such a part goes without the check.
            let once = (!contents[..i].contains(content)).then_some((job.id.as_str(), i));
            send_paced(
                self.platform,
                self.client,
                app,
                user,
                content,
                self.pace,
                once,
            )
            .await?;
            state.parts_sent = i + 1;
            self.platform.sink().progress(job, state).await;
        }
        Ok(())
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
            JobKind::Feedback { .. } => return Ok(Vec::new()),
            JobKind::Answer { input } | JobKind::Stream { input, .. } => input,
        };
        if let Some(answer) = self.command(&key, input, state).await? {
            return Ok(answer);
        }
        let history = self.history(&key).await;
        let media = self.gather(job, input).await;
        let answer = {
            let respond = pin!(self.timed_answer(job, &history, &media));
            if self.settings.thinking_notice_secs > 0 && !state.notice_sent {
                let timer = pin!(self
                    .platform
                    .sleeper()
                    .sleep(Duration::from_secs(self.settings.thinking_notice_secs)));
                match select(respond, timer).await {
                    Either::Left((answer, _)) => answer,
                    Either::Right(((), respond)) => {
                        state.notice_sent = true;
                        let notice = Content::Text {
                            content: THINKING_TEXT.to_owned(),
                        };
                        // A lost notice is not worth failing the answer for, nor worth a
                        // slot of the member's budget that the answer needs.
                        let user = job.user.user_id.as_str();
                        // Sent once, never retried: no duplicate check, which would drop a
                        // user's next notice (the same text) if the intervals matched.
                        let _ = send_paced(
                            self.platform,
                            self.client,
                            app,
                            user,
                            &notice,
                            Pace::Skip,
                            None,
                        )
                        .await;
                        respond.await
                    }
                }
            } else {
                respond.await
            }
        }
        .map_err(JobError::Agent)?;
        let (answer, media) =
            super::media::attach(self.platform, self.client, self.media, app, answer).await;
        state.media = media;
        self.remember(&key, input, &answer).await;
        Ok(answer)
    }

    /// A command's answer, if `input` is one: the relay answers `/reset`, `/new` and `/help`
    /// itself.
    pub(crate) async fn command(
        &self,
        key: &str,
        input: &AgentInput,
        state: &mut JobState,
    ) -> Result<Option<Vec<String>>, JobError> {
        let AgentInput::Text { text } = input else {
            return Ok(None);
        };
        match parse_command(text) {
            Some(Command::Reset) => {
                state.command = true;
                // Failing to forget must not pretend it forgot.
                self.platform
                    .conversations()
                    .clear(key)
                    .await
                    .map_err(|e| {
                        JobError::Agent(AgentError::retry(format!("conversation store: {e}")))
                    })?;
                Ok(Some(alloc::vec![RESET_TEXT.to_owned()]))
            }
            Some(Command::Help) => {
                state.command = true;
                Ok(Some(alloc::vec![HELP_TEXT.to_owned()]))
            }
            None => Ok(None),
        }
    }

    /// The conversation's memory, when the agent reads it. Memory is best-effort: an
    /// unreadable history means answering without it.
    pub(crate) async fn history(&self, key: &str) -> Vec<Turn> {
        if !self.agent.remembers() {
            return Vec::new();
        }
        self.platform
            .conversations()
            .load(key)
            .await
            .unwrap_or_default()
    }

    /// Keeps the exchange in the conversation's memory (best effort), when the agent reads it.
    pub(crate) async fn remember(&self, key: &str, input: &AgentInput, answer: &[String]) {
        if !self.agent.remembers() {
            return;
        }
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
            .platform
            .conversations()
            .append(key, turns, self.settings.history)
            .await;
    }

    /// After the last attempt failed: if the agent never answered, tell the user to try
    /// again. Returns whether an apology went out.
    pub async fn apologize(&self, job: &Job, state: &JobState) -> bool {
        if state.replies.is_some() {
            return false;
        }
        if matches!(job.kind, JobKind::Stream { .. }) {
            return self.apologize_in_stream(job).await;
        }
        if !matches!(job.kind, JobKind::Answer { .. }) {
            return false;
        }
        let Ok(app) = self.app(job) else { return false };
        let apology = Content::Text {
            content: APOLOGY_TEXT.to_owned(),
        };
        let user = job.user.user_id.as_str();
        // Rare, and the user's only word on what happened: worth waiting for the budget. Sent
        // once, never retried, so without the duplicate check.
        matches!(
            send_paced(
                self.platform,
                self.client,
                app,
                user,
                &apology,
                Pace::Wait,
                None,
            )
            .await,
            Ok(Some(_))
        )
    }
}
