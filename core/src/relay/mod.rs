//! [`Relay`]: the front door. It owns the HTTP face (routes, statuses, literals, the body cap)
//! and a job's whole life (agent, commands, splitting, sending, retries, the thinking notice,
//! the apology and the report), over one [`Platform`].
//!
//! A twin turns its request into an [`Incoming`], calls [`Relay::handle`], and writes the
//! [`Answer`] back. Accepted jobs reach the platform's [`crate::ports::JobSink`]; whatever
//! runs them calls [`Relay::run_job`] (retries with the platform's timers) or, from a queue
//! that retries by itself, [`Relay::step_job`] once per delivery. What happened reaches
//! [`Platform::observe`] as an [`Event`]: the same log line and the same metric on every twin.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

use crate::agent::ConfiguredAgent;
use crate::config::{AgentSettings, Settings};
use crate::http::{Answer, HttpRequest, HttpResponse, Incoming, TransportError};
use crate::ids::ScopedUser;
use crate::job::{Job, JobError, JobReport, JobState, Step};
use crate::ports::{Clock, HttpClient, Platform, Sleeper};
use crate::wecom::api::{self, ApiError, Content};
use crate::wecom::client::WeComClient;
use crate::wecom::split::split_for_wecom;
use runner::{send_paced, Pace};

mod bot;
mod callback;
mod commands;
mod media;
mod runner;
mod send_api;
mod streaming;

pub use bot::{stream_id, BotOutcome};
pub use callback::{
    decide, deny_notice_key, handle_callback, open_callback, verify_url, Decision, Inbound,
    Outcome, Rejection, DENY_NOTICE_INTERVAL_SECS, MAX_BODY_BYTES,
};
pub use commands::{parse_command, Command, APOLOGY_TEXT, HELP_TEXT, RESET_TEXT, THINKING_TEXT};
pub use send_api::{check_send, Recipient, SendOrder, SendRefusal};

/// The health route, answered the same whatever the settings.
pub const HEALTH_PATH: &str = "/health";
/// The metrics route, where the platform keeps metrics.
pub const METRICS_PATH: &str = "/metrics";
/// The send API's route.
pub const SEND_API_PATH: &str = "/api/send";

/// The WeCom client over a platform's ports, with token fetches observed.
pub(crate) type ClientOf<'a, P> = WeComClient<
    'a,
    ObservedHttp<'a, P>,
    <P as Platform>::Tokens,
    <P as Platform>::Clock,
    <P as Platform>::Lock,
>;

/// The platform's API HTTP, reporting each token fetch as an [`Event::TokenFetched`].
pub(crate) struct ObservedHttp<'a, P>(&'a P);

impl<P: Platform> HttpClient for ObservedHttp<'_, P> {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let is_token = req.path().ends_with("/cgi-bin/gettoken");
        let resp = self.0.api_http().send(req).await;
        if is_token {
            let ok = resp.as_ref().is_ok_and(|r| api::parse_token(r).is_ok());
            self.0.observe(&Event::TokenFetched { ok });
        }
        resp
    }

    async fn send_capped(
        &self,
        req: HttpRequest,
        more: &mut (dyn FnMut(&[u8]) -> bool + Send),
    ) -> Result<HttpResponse, TransportError> {
        self.0.api_http().send_capped(req, more).await
    }
}

/// Warning lines that requests may cause in one second. Past it, each is counted (the
/// platform's metrics) but not written, and the next second's first request writes how many
/// were held back: a flood of refused or unqueued callbacks, hostile or not, costs a counter
/// each instead of a write each.
pub const REQUEST_WARNINGS_PER_SEC: u32 = 100;

/// The budget of [`REQUEST_WARNINGS_PER_SEC`], shared by every request a relay answers.
#[derive(Debug, Default)]
struct WarningGate {
    /// The unix second the count is for.
    second: AtomicU64,
    /// Warnings written in it.
    written: AtomicU32,
    /// Warnings held back since the last report.
    held: AtomicU64,
}

impl WarningGate {
    /// Starts the count over when `now` is a new second; returns how many warnings were
    /// held back before it, if any (once).
    fn roll(&self, now: u64) -> Option<u64> {
        let second = self.second.load(Ordering::Relaxed);
        if second == now
            || self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        self.written.store(0, Ordering::Relaxed);
        Some(self.held.swap(0, Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// Whether one more warning may be written this second (else it is counted as held).
    fn admit(&self) -> bool {
        let admitted = self.written.fetch_add(1, Ordering::Relaxed) < REQUEST_WARNINGS_PER_SEC;
        if !admitted {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }
}

/// How loud an [`Event`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Only for tracing a problem.
    Debug,
    /// Normal operation.
    Info,
    /// Refused input or a transient failure.
    Warn,
    /// Something a person must look at.
    Error,
}

/// Something the relay decided or saw. `Display` is the log line (never message text or a
/// secret); the variants carry what a metric needs.
#[derive(Debug)]
pub enum Event<'a> {
    /// A URL verification passed.
    Verified {
        /// The app's name.
        app: &'a str,
    },
    /// A URL verification was refused.
    VerifyRefused(&'a Rejection),
    /// What became of a callback `POST`.
    Callback(&'a Outcome),
    /// What became of an AI bot's callback `POST`.
    Bot(&'a BotOutcome),
    /// A streamed answer went on through its `response_url` (or could not).
    ResponseUrl {
        /// The job id.
        job: &'a str,
        /// Whether WeCom took it.
        ok: bool,
        /// Why not, if not.
        why: &'a str,
    },
    /// A job attempt failed and will be tried again.
    Retrying {
        /// The job id.
        job: &'a str,
        /// Why.
        error: &'a JobError,
        /// When.
        delay: Duration,
    },
    /// A job waits for the member's send budget (WeCom drops what exceeds it).
    Paced {
        /// The job id.
        job: &'a str,
        /// How long.
        delay: Duration,
    },
    /// How a job ended.
    Job(&'a JobReport),
    /// A send-API request was refused.
    SendRefused {
        /// The status answered.
        status: u16,
        /// Why.
        why: &'a str,
    },
    /// An attachment of an answer could not be sent (the user got a line saying so).
    AttachmentFailed {
        /// Why (names a host at most).
        why: &'a str,
    },
    /// A send-API message went out.
    SendDone {
        /// The recipient.
        user: &'a ScopedUser,
        /// Parts sent.
        parts: usize,
    },
    /// A send-API message stopped part-way at the member's hourly budget.
    SendPaced {
        /// The recipient.
        user: &'a ScopedUser,
        /// Parts sent before it.
        sent: usize,
        /// When the next part could go.
        delay: Duration,
    },
    /// A send-API message failed part-way.
    SendFailed {
        /// The recipient.
        user: &'a ScopedUser,
        /// WeCom's refusal.
        error: &'a ApiError,
        /// Parts sent before it.
        sent: usize,
    },
    /// An access token was fetched (or the fetch failed).
    TokenFetched {
        /// Whether WeCom granted one.
        ok: bool,
    },
    /// The agent answered (or failed) after this long.
    AgentAnswered {
        /// Milliseconds.
        millis: u64,
    },
    /// A request matched no route, or not with its method.
    Unrouted {
        /// The method.
        method: &'a str,
        /// The path (shortened).
        path: &'a str,
        /// 404 or 405.
        status: u16,
    },
    /// The settings are unusable; every route but `/health` answers 500.
    Misconfigured(&'a str),
    /// Warnings caused by requests were past [`REQUEST_WARNINGS_PER_SEC`] in an earlier
    /// second; this many were counted but not written.
    HeldBack {
        /// Warnings not written.
        lines: u64,
    },
}

impl Level {
    /// `DEBUG`, `INFO`, `WARN` or `ERROR`, as log lines name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
        }
    }
}

impl Event<'_> {
    /// The level to log at.
    pub fn level(&self) -> Level {
        match self {
            Self::Verified { .. }
            | Self::SendDone { .. }
            | Self::Unrouted { .. }
            | Self::Paced { .. } => Level::Info,
            Self::Callback(o) if o.is_warning() => Level::Warn,
            Self::Callback(o) if o.is_chatter() => Level::Debug,
            Self::Callback(_) => Level::Info,
            Self::Bot(o) if o.is_warning() => Level::Warn,
            Self::Bot(o) if o.is_chatter() => Level::Debug,
            Self::Bot(_) => Level::Info,
            Self::ResponseUrl { ok: true, .. } => Level::Info,
            Self::ResponseUrl { ok: false, .. } => Level::Error,
            Self::VerifyRefused(_)
            | Self::Retrying { .. }
            | Self::SendRefused { .. }
            | Self::SendPaced { .. }
            | Self::AttachmentFailed { .. }
            | Self::HeldBack { .. } => Level::Warn,
            Self::Job(r) if r.is_success() => Level::Info,
            Self::Job(_) | Self::SendFailed { .. } | Self::Misconfigured(_) => Level::Error,
            Self::TokenFetched { .. } | Self::AgentAnswered { .. } => Level::Debug,
        }
    }
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Verified { app } => write!(f, "callback URL verified app={app}"),
            Self::VerifyRefused(r) => write!(f, "URL verification refused ({}): {r}", r.status()),
            Self::Callback(outcome) => write!(f, "{outcome}"),
            Self::Bot(outcome) => write!(f, "{outcome}"),
            Self::ResponseUrl { job, ok: true, .. } => {
                write!(f, "answer continued through response_url job={job}")
            }
            Self::ResponseUrl { job, ok: false, why } => {
                write!(f, "answer could not go through response_url job={job}: {why}")
            }
            Self::Retrying { job, error, delay } => write!(
                f,
                "retrying job={job} error={error} in {}ms",
                delay.as_millis()
            ),
            Self::Paced { job, delay } => write!(
                f,
                "pacing job={job}: the member's send budget is spent, next part in {}ms",
                delay.as_millis()
            ),
            Self::Job(report) => write!(f, "{report}"),
            Self::SendRefused { status, why } => {
                write!(f, "send API request refused ({status}): {why}")
            }
            Self::AttachmentFailed { why } => write!(f, "an attachment was not sent: {why}"),
            Self::SendDone { user, parts } => {
                write!(f, "send API message sent user={user} parts={parts}")
            }
            Self::SendPaced { user, sent, delay } => write!(
                f,
                "send API message paced user={user} sent={sent}: the member's hourly budget is spent for {}s",
                delay.as_secs()
            ),
            Self::SendFailed { user, error, sent } => write!(
                f,
                "send API message failed user={user} error={error} sent={sent}"
            ),
            Self::TokenFetched { ok: true } => f.write_str("access token fetched"),
            Self::TokenFetched { ok: false } => f.write_str("access token fetch failed"),
            Self::AgentAnswered { millis } => write!(f, "agent answered in {millis}ms"),
            Self::Unrouted {
                method,
                path,
                status,
            } => write!(f, "{method} {path:?} answered {status}: no such route"),
            Self::Misconfigured(e) => write!(f, "configuration error: {e}"),
            Self::HeldBack { lines } => write!(
                f,
                "{lines} more warnings about requests were not written \
                 (at most {REQUEST_WARNINGS_PER_SEC} a second; /metrics counts every one)"
            ),
        }
    }
}

/// The relay: settings plus a platform.
pub struct Relay<P> {
    settings: Settings,
    agent: AgentSettings,
    platform: P,
    warnings: WarningGate,
}

impl<P: Platform> Relay<P> {
    /// A relay with validated settings over a platform.
    pub fn new(mut settings: Settings, agent: AgentSettings, platform: P) -> Self {
        settings.forward_events = matches!(agent.backend, crate::config::Backend::Webhook { .. });
        Self {
            settings,
            agent,
            platform,
            warnings: WarningGate::default(),
        }
    }

    /// Observes what a request caused, within [`REQUEST_WARNINGS_PER_SEC`] for warnings and
    /// errors: past it they are only counted. ([`Relay::handle`] starts each second's count
    /// and reports what the last ones held back.)
    pub(crate) fn observe_request(&self, event: &Event<'_>) {
        if event.level() >= Level::Warn && !self.warnings.admit() {
            self.platform.count(event);
        } else {
            self.platform.observe(event);
        }
    }

    /// The relay's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The agent's settings.
    pub fn agent_settings(&self) -> &AgentSettings {
        &self.agent
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Answers one HTTP request: URL verification and callbacks on the configured path,
    /// `/health`, `/metrics` and `/api/send`. Accepted callbacks leave a job with the sink.
    pub async fn handle(&self, req: &Incoming<'_>) -> Answer {
        if let Some(lines) = self.warnings.roll(self.platform.clock().now_unix()) {
            self.platform.observe(&Event::HeldBack { lines });
        }
        let method = req.method;
        let answer = if req.path == HEALTH_PATH {
            route(method, HEALTH_METHODS, health)
        } else if req.path == METRICS_PATH {
            match (method, self.platform.metrics()) {
                ("GET", Some(text)) => Answer::metrics(text),
                (_, None) => Answer::not_found(),
                _ => Answer::method_not_allowed("GET"),
            }
        } else if req.path == SEND_API_PATH {
            if method == "POST" {
                return self.send_api(req).await;
            }
            Answer::method_not_allowed("POST")
        } else if req.path == self.settings.path && !self.settings.apps.is_empty() {
            match method {
                "GET" => return self.verify(req.query),
                "POST" => return self.callback(req).await,
                _ => Answer::method_not_allowed("GET, POST"),
            }
        } else if self.settings.bots.serves(req.path) {
            match method {
                "GET" => return self.verify_bot(req.path, req.query),
                "POST" => return self.bot_callback(req).await,
                _ => Answer::method_not_allowed("GET, POST"),
            }
        } else {
            Answer::not_found()
        };
        if answer.status == 404 || answer.status == 405 {
            let path: String = req.path.chars().take(120).collect();
            self.observe_request(&Event::Unrouted {
                method,
                path: &path,
                status: answer.status,
            });
        }
        answer
    }

    fn verify(&self, query: &str) -> Answer {
        match verify_url(&self.settings, query) {
            Ok((app, echo)) => {
                let app = self.settings.apps.get(app).map_or("", |a| a.name.as_str());
                self.observe_request(&Event::Verified { app });
                Answer::text(200, echo)
            }
            Err(rejection) => {
                self.observe_request(&Event::VerifyRefused(&rejection));
                Answer::text(rejection.status(), "")
            }
        }
    }

    async fn callback(&self, req: &Incoming<'_>) -> Answer {
        let outcome = match req.body {
            Ok(body) => {
                let now = self.platform.clock().now_unix();
                let (dedup, sink) = (self.platform.dedup(), self.platform.sink());
                handle_callback(&self.settings, dedup, sink, req.query, body, now).await
            }
            Err(e) => Outcome::Rejected(Rejection::Body(e)),
        };
        self.observe_request(&Event::Callback(&outcome));
        Answer::text(outcome.status(), outcome.body())
    }

    async fn send_api(&self, req: &Incoming<'_>) -> Answer {
        let checked = match req.body {
            Ok(body) => check_send(&self.settings, req.authorization, body),
            Err(e) => Err(SendRefusal::new(e.status(), &e.to_string())),
        };
        let order = match checked {
            Ok(order) => order,
            Err(refusal) => {
                self.platform.observe(&Event::SendRefused {
                    status: refusal.status,
                    why: &refusal.error,
                });
                let mut answer = Answer::json(refusal.status, refusal.body);
                if refusal.status == 401 {
                    answer.headers.push(("www-authenticate", "Bearer".into()));
                }
                return answer;
            }
        };
        let (app, recipient) = match &order.to {
            Recipient::Stream(stream) => {
                let mut text = order.text.clone();
                for link in &order.attachments {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(link);
                }
                let text =
                    media::stream_pictures(&self.platform, &self.settings.media, stream, &text)
                        .await;
                return self.send_to_stream(stream, &text).await;
            }
            Recipient::User { app, user } => (*app, user),
        };
        let http = ObservedHttp(&self.platform);
        let client = self.client(&http);
        let app = self
            .settings
            .apps
            .get(app)
            .expect("check_send returns a valid index");
        let user = recipient.user_id.as_str();
        let mut parts: Vec<Content> = split_for_wecom(&order.text)
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .map(|content| {
                if order.markdown {
                    Content::Markdown { content }
                } else {
                    Content::Text { content }
                }
            })
            .collect();
        if !order.attachments.is_empty() {
            let (lines, media) = media::attach(
                &self.platform,
                &client,
                &self.settings.media,
                app,
                alloc::vec![order.attachments.join("\n")],
            )
            .await;
            parts.extend(media);
            parts.extend(lines.into_iter().map(|content| Content::Text { content }));
        }
        let mut msgids = Vec::with_capacity(parts.len());
        for content in &parts {
            // A caller waits out the minute budget; the hour budget is theirs to wait out.
            let pace = Pace::WaitUpTo(Duration::from_secs(62));
            // The caller decides whether to repeat a send: no duplicate check of ours.
            match send_paced(&self.platform, &client, app, user, content, pace, None).await {
                Ok(receipt) => msgids.extend(receipt.map(|r| r.msgid)),
                Err(JobError::Paced(delay)) => {
                    let sent = msgids.len();
                    self.platform.observe(&Event::SendPaced {
                        user: recipient,
                        sent,
                        delay,
                    });
                    let error = "the member's send budget (30 a minute, 1000 an hour) is spent";
                    let mut answer =
                        Answer::json(429, send_api::failed_body(sent, parts.len(), error));
                    answer
                        .headers
                        .push(("retry-after", delay.as_secs().max(1).to_string()));
                    return answer;
                }
                Err(JobError::Api(error)) => {
                    let sent = msgids.len();
                    self.platform.observe(&Event::SendFailed {
                        user: recipient,
                        error: &error,
                        sent,
                    });
                    let body = send_api::failed_body(sent, parts.len(), &error.to_string());
                    return Answer::json(502, body);
                }
                Err(other) => {
                    let body = send_api::failed_body(msgids.len(), parts.len(), &other.to_string());
                    return Answer::json(500, body);
                }
            }
        }
        self.platform.observe(&Event::SendDone {
            user: recipient,
            parts: msgids.len(),
        });
        Answer::json(200, send_api::sent_body(msgids.len(), &msgids))
    }

    fn client<'a>(&'a self, http: &'a ObservedHttp<'a, P>) -> ClientOf<'a, P> {
        WeComClient {
            api_base: &self.settings.api_base,
            http,
            tokens: self.platform.tokens(),
            clock: self.platform.clock(),
            refresh: self.platform.refresh_lock(),
        }
    }

    /// Runs a job to its end: attempts, with the core's delays on the platform's timers
    /// between them (and waits for the member's send budget), until it is done or given up.
    /// Each step is observed; the report is returned too.
    pub async fn run_job(&self, job: &Job) -> JobReport {
        self.resume_job(job, JobState::default()).await
    }

    /// Like [`Relay::run_job`], continuing from a job's kept progress (after a restart).
    pub async fn resume_job(&self, job: &Job, mut state: JobState) -> JobReport {
        loop {
            match self.step(job, &mut state, Pace::Wait).await {
                Step::RetryIn(delay) => self.platform.sleeper().sleep(delay).await,
                Step::Done(report) | Step::GaveUp(report) => return report,
            }
        }
    }

    /// One attempt at a job, continuing from `state` (keep it between deliveries): for a queue
    /// that retries by itself. [`Step::RetryIn`] says when to deliver it again, after a
    /// failure or when the member's send budget is spent (which is not an attempt).
    pub async fn step_job(&self, job: &Job, state: &mut JobState) -> Step {
        self.step(job, state, Pace::Defer).await
    }

    async fn step(&self, job: &Job, state: &mut JobState, pace: Pace) -> Step {
        let http = ObservedHttp(&self.platform);
        let client = self.client(&http);
        let agent = ConfiguredAgent {
            settings: &self.agent,
            http: self.platform.agent_http(),
            clock: self.platform.clock(),
            sleeper: self.platform.sleeper(),
        };
        runner::Runner {
            apps: &self.settings.apps,
            bots: &self.settings.bots,
            stream_limit_secs: self.settings.stream_limit_secs,
            api_base: &self.settings.api_base,
            media: &self.settings.media,
            settings: &self.agent,
            agent: &agent,
            client: &client,
            platform: &self.platform,
            pace,
        }
        .step(job, state)
        .await
    }
}

fn health() -> Answer {
    Answer::json(
        200,
        serde_json::json!({"status": "ok", "platform": "wecom_callback"}).to_string(),
    )
}

/// The methods `/health` answers.
const HEALTH_METHODS: &str = "GET, HEAD";

fn route(method: &str, allowed: &'static str, answer: fn() -> Answer) -> Answer {
    if allowed.split(", ").any(|m| m == method) {
        answer()
    } else {
        Answer::method_not_allowed(allowed)
    }
}

/// The answer when the settings cannot be loaded: `/health` still answers (the process is up),
/// everything else is a 500 that says no more. The twin observes
/// [`Event::Misconfigured`] with the reason.
pub fn answer_misconfigured(req: &Incoming<'_>) -> Answer {
    if req.path == HEALTH_PATH {
        return route(req.method, HEALTH_METHODS, health);
    }
    Answer::text(500, "configuration error")
}

#[cfg(all(test, feature = "std"))]
mod tests;
