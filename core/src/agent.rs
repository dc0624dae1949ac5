//! Agents and the job runner: turning an accepted [`Job`] into messages sent back to the user.
//!
//! A job runs in steps that can be retried without repeating side effects: the agent's answer
//! is kept in [`JobState`] once it arrives, and so is the number of reply parts WeCom accepted.
//! The twin calls [`run_job`] again (with backoff from a retry crate) while the error says
//! retrying can help; a retry never asks the agent twice nor sends a part twice.

use alloc::string::String;
use core::fmt;
use core::future::Future;

use crate::api::{ApiError, ErrorClass};
use crate::app::Apps;
use crate::client::{retry_delay_ms, RefreshLock, WeComClient};
use crate::ports::{Clock, HttpClient, TokenCache};
use crate::relay::{Job, JobKind};

/// Why the agent could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentError {
    /// Whether asking again may work (timeouts, 429, 5xx).
    pub retryable: bool,
    /// For the log; never contains a secret.
    pub message: String,
    /// A delay the backend asked for.
    pub retry_after_secs: Option<u64>,
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An AI backend.
pub trait Agent: Send + Sync {
    /// Answers one job's input. Called at most once per successful job.
    fn respond(&self, job: &Job) -> impl Future<Output = Result<String, AgentError>> + Send;
}

/// Replies with exactly the text it received (media as their `[kind media_id=...]` form).
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoAgent;

impl Agent for EchoAgent {
    async fn respond(&self, job: &Job) -> Result<String, AgentError> {
        match &job.kind {
            JobKind::Answer { input } => Ok(input.to_text()),
            JobKind::Notice { text } => Ok(text.clone()),
        }
    }
}

/// Progress of one job, kept across retries (in memory, or stored beside a queued job).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobState {
    /// The answer, once the agent gave it.
    pub reply: Option<String>,
    /// Reply parts WeCom accepted.
    pub parts_sent: usize,
    /// Reply parts in total, once known.
    pub parts_total: usize,
    /// Attempts made so far.
    pub attempts: u32,
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

/// Runs (or resumes) a job: asks the agent if no answer is kept yet, then sends the parts not
/// yet sent. Returns when every part went out, or with the first error.
pub async fn run_job<A, H, C, K, L>(
    job: &Job,
    state: &mut JobState,
    apps: &Apps,
    agent: &A,
    client: &WeComClient<'_, H, C, K, L>,
) -> Result<(), JobError>
where
    A: Agent,
    H: HttpClient,
    C: TokenCache,
    K: Clock,
    L: RefreshLock,
{
    state.attempts += 1;
    let app = apps
        .by_name(&job.app)
        .or_else(|| apps.for_user(&job.user, Some(job.agent_id)))
        .ok_or_else(|| JobError::UnknownApp(job.app.clone()))?;
    let reply = match &state.reply {
        Some(r) => r.clone(),
        None => {
            let r = agent.respond(job).await.map_err(JobError::Agent)?;
            state.reply = Some(r.clone());
            r
        }
    };
    if reply.trim().is_empty() {
        return Ok(());
    }
    match client
        .send_text(
            app,
            job.user.user_id.as_str(),
            &reply,
            false,
            state.parts_sent,
        )
        .await
    {
        Ok(receipts) => {
            state.parts_sent += receipts.len();
            state.parts_total = state.parts_sent;
            Ok(())
        }
        Err(partial) => {
            state.parts_sent = partial.sent;
            state.parts_total = partial.total;
            Err(JobError::Api(partial.error))
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::ids::{AgentId, ScopedUser};
    use crate::ports::MemoryTokenCache;
    use crate::relay::AgentInput;
    #[allow(unused_imports)]
    use crate::test_support::*;
    use crate::testing::{block_on, FixedClock, ScriptedHttp};
    use core::sync::atomic::{AtomicUsize, Ordering};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    struct CountingAgent(AtomicUsize);
    impl Agent for CountingAgent {
        async fn respond(&self, _job: &Job) -> Result<String, AgentError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok("答".repeat(1500)) // 4500 bytes: 3 parts
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

    fn job() -> Job {
        Job {
            id: "ww1:7:m:1".into(),
            app: "a".into(),
            agent_id: AgentId(7),
            user: ScopedUser::new("ww1", "alice"),
            create_time: 1,
            kind: JobKind::Answer {
                input: AgentInput::Text { text: "q".into() },
            },
        }
    }

    #[test]
    fn a_retry_resumes_without_asking_the_agent_or_sending_twice() {
        let (http, cache, clock, apps) = (
            ScriptedHttp::new(),
            MemoryTokenCache::default(),
            FixedClock::at(1),
            apps(),
        );
        let client = WeComClient::new("http://x", &http, &cache, &clock);
        let agent = CountingAgent(AtomicUsize::new(0));
        let sent = r#"{"errcode":0,"errmsg":"ok","msgid":"m"}"#;
        http.push_json(r#"{"errcode":0,"access_token":"T","expires_in":7200}"#)
            .push_json(sent)
            .push_json(r#"{"errcode":-1,"errmsg":"system busy"}"#);
        let mut state = JobState::default();
        let err = block_on(run_job(&job(), &mut state, &apps, &agent, &client)).unwrap_err();
        assert!(err.is_retryable());
        assert_eq!((state.parts_sent, state.parts_total), (1, 3));
        http.push_json(sent).push_json(sent);
        block_on(run_job(&job(), &mut state, &apps, &agent, &client)).unwrap();
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
    fn echo_and_unknown_app() {
        let (http, cache, clock, apps) = (
            ScriptedHttp::new(),
            MemoryTokenCache::default(),
            FixedClock::at(1),
            apps(),
        );
        let client = WeComClient::new("http://x", &http, &cache, &clock);
        assert_eq!(block_on(EchoAgent.respond(&job())).unwrap(), "q");
        let mut orphan = job();
        orphan.app = "gone".into();
        orphan.user = ScopedUser::new("wwOther", "bob");
        let err = block_on(run_job(
            &orphan,
            &mut JobState::default(),
            &apps,
            &EchoAgent,
            &client,
        ))
        .unwrap_err();
        assert_eq!(err, JobError::UnknownApp("gone".into()));
        assert!(!err.is_retryable());
    }
}
