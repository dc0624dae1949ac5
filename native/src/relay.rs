//! The running relay: the core's pipeline with native ports, a job queue that keeps each
//! user's messages in order under bounded concurrency, and graceful draining.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backon::Retryable;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use wecom_relay_core::agent::{
    Agent, AgentError, AgentSettings, ConfiguredAgent, JobError, JobState, Runner,
};
use wecom_relay_core::api::{self, ErrorClass, HttpRequest, HttpResponse, TransportError};
use wecom_relay_core::client::{WeComClient, MAX_ATTEMPTS};
use wecom_relay_core::ports::{
    Clock, HttpClient, MemoryConversations, MemoryDedup, MemoryTokenCache, Random, Turn,
};
use wecom_relay_core::relay::{handle_callback, verify_url, Job, JobSink, Rejection, SinkError};
use wecom_relay_core::send_api::{check_send, execute};
use wecom_relay_core::settings::Settings;

use crate::config::RuntimeConfig;
use crate::metrics::Metrics;
use crate::platform::{KeyedLock, OsRandom, ReqwestHttp, SystemClock, TokioSleeper};

/// A clock shared behind a pointer, so tests can move time.
#[derive(Clone)]
pub struct SharedClock(pub Arc<dyn Clock>);

impl Clock for SharedClock {
    fn now_unix(&self) -> u64 {
        self.0.now_unix()
    }
}

/// HTTP that counts token fetches.
struct ObservedHttp {
    inner: ReqwestHttp,
    metrics: Arc<Metrics>,
}

impl HttpClient for ObservedHttp {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let is_token = req.path().ends_with("/cgi-bin/gettoken");
        let resp = self.inner.send(req).await;
        if is_token {
            let ok = resp.as_ref().is_ok_and(|r| api::parse_token(r).is_ok());
            self.metrics.token_refresh(ok);
        }
        resp
    }
}

/// Any agent, timed into the latency histogram.
struct TimedAgent<'a, A> {
    inner: A,
    metrics: &'a Metrics,
}

impl<A: Agent> Agent for TimedAgent<'_, A> {
    async fn respond(&self, job: &Job, history: &[Turn]) -> Result<Vec<String>, AgentError> {
        let started = Instant::now();
        let out = self.inner.respond(job, history).await;
        self.metrics.agent_latency(started.elapsed().as_secs_f64());
        out
    }
}

#[derive(Default)]
struct Queues {
    by_user: HashMap<String, VecDeque<Job>>,
    depth: usize,
    closed: bool,
}

/// The in-process queue as the core's job sink.
struct QueueSink<'a>(&'a Arc<Relay>);

impl JobSink for QueueSink<'_> {
    async fn submit(&self, job: Job) -> Result<(), SinkError> {
        self.0
            .submit(job)
            .map_err(|Closed| SinkError("shutting down".into()))
    }
}

/// The job queue refused a job: the relay is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// What the HTTP layer should answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body (`success`, the echo, or empty).
    pub body: String,
}

impl Answer {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }
}

/// One running relay.
pub struct Relay {
    /// Validated settings.
    pub settings: Settings,
    /// Runtime knobs.
    pub runtime: RuntimeConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    http: ObservedHttp,
    tokens: MemoryTokenCache,
    refresh: KeyedLock,
    dedup: MemoryDedup,
    clock: SharedClock,
    agent: AgentSettings,
    agent_http: ReqwestHttp,
    conversations: MemoryConversations,
    queues: Mutex<Queues>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
}

impl Relay {
    /// Builds the relay with the system clock.
    pub fn new(settings: Settings, agent: AgentSettings, runtime: RuntimeConfig) -> Arc<Self> {
        Self::with_clock(settings, agent, runtime, Arc::new(SystemClock))
    }

    /// Builds the relay with the given clock.
    pub fn with_clock(
        settings: Settings,
        agent: AgentSettings,
        runtime: RuntimeConfig,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::default());
        Arc::new(Self {
            http: ObservedHttp {
                inner: ReqwestHttp::new(Duration::from_secs(runtime.api_timeout_secs)),
                metrics: metrics.clone(),
            },
            permits: Arc::new(Semaphore::new(runtime.concurrency)),
            settings,
            runtime,
            metrics,
            tokens: MemoryTokenCache::default(),
            refresh: KeyedLock::default(),
            dedup: MemoryDedup::default(),
            clock: SharedClock(clock),
            agent_http: ReqwestHttp::new(Duration::from_secs(agent.timeout_secs)),
            agent,
            conversations: MemoryConversations::default(),
            queues: Mutex::new(Queues::default()),
            tracker: TaskTracker::new(),
        })
    }

    fn queues(&self) -> MutexGuard<'_, Queues> {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Jobs waiting or running.
    pub fn queue_depth(&self) -> usize {
        self.queues().depth
    }

    /// `GET <path>`: URL verification.
    pub fn handle_verify(&self, raw_query: &str) -> Answer {
        match verify_url(&self.settings, raw_query) {
            Ok((app, echo)) => {
                let name = self
                    .settings
                    .apps
                    .get(app)
                    .map(|a| a.name.as_str())
                    .unwrap_or_default();
                info!(app = name, "callback URL verified");
                self.metrics.callback("verified");
                Answer::new(200, echo)
            }
            Err(rejection) => self.reject("URL verification refused", &rejection),
        }
    }

    fn reject(&self, what: &str, rejection: &Rejection) -> Answer {
        warn!(outcome = rejection.outcome(), reason = %rejection, status = rejection.status(), "{what}");
        self.metrics.callback(rejection.outcome());
        Answer::new(rejection.status(), "")
    }

    /// `POST <path>`: a callback. Answers at once; the agent runs in the background.
    pub async fn handle_callback(self: &Arc<Self>, raw_query: &str, body: &[u8]) -> Answer {
        let now = self.clock.now_unix();
        let sink = QueueSink(self);
        let outcome =
            handle_callback(&self.settings, &self.dedup, &sink, raw_query, body, now).await;
        if outcome.is_warning() {
            warn!(outcome = outcome.label(), "{outcome}");
        } else {
            info!(outcome = outcome.label(), "{outcome}");
        }
        self.metrics.callback(outcome.label());
        Answer::new(outcome.status(), outcome.body())
    }

    /// Queues a job behind the same user's earlier jobs.
    pub fn submit(self: &Arc<Self>, job: Job) -> Result<(), Closed> {
        let key = job.user.key();
        let mut queues = self.queues();
        if queues.closed {
            return Err(Closed);
        }
        queues.depth += 1;
        self.metrics.set_queue_depth(queues.depth);
        if let Some(pending) = queues.by_user.get_mut(&key) {
            pending.push_back(job);
            return Ok(());
        }
        queues.by_user.insert(key.clone(), VecDeque::from([job]));
        let relay = self.clone();
        self.tracker
            .spawn(async move { relay.drain_user(key).await });
        Ok(())
    }

    async fn drain_user(self: Arc<Self>, key: String) {
        loop {
            let Some(job) = self
                .queues()
                .by_user
                .get(&key)
                .and_then(|q| q.front().cloned())
            else {
                return;
            };
            {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .expect("the semaphore is never closed");
                self.process(&job).await;
            }
            let mut queues = self.queues();
            queues.depth -= 1;
            self.metrics.set_queue_depth(queues.depth);
            let pending = queues
                .by_user
                .get_mut(&key)
                .expect("a user's queue lives while drained");
            pending.pop_front();
            if pending.is_empty() {
                queues.by_user.remove(&key);
                return;
            }
        }
    }

    /// The WeCom client over this relay's ports.
    fn client(&self) -> WeComClient<'_, ObservedHttp, MemoryTokenCache, SharedClock, KeyedLock> {
        WeComClient {
            api_base: &self.settings.api_base,
            http: &self.http,
            tokens: &self.tokens,
            clock: &self.clock,
            refresh: &self.refresh,
        }
    }

    async fn process(&self, job: &Job) {
        let client = self.client();
        let agent = TimedAgent {
            inner: ConfiguredAgent {
                settings: &self.agent,
                http: &self.agent_http,
                clock: &self.clock,
            },
            metrics: &self.metrics,
        };
        let runner = Runner {
            apps: &self.settings.apps,
            settings: &self.agent,
            agent: &agent,
            client: &client,
            conversations: &self.conversations,
            sleeper: &TokioSleeper,
        };
        let state = tokio::sync::Mutex::new(JobState::default());
        let attempt = AtomicU32::new(0);
        let result = (|| async {
            let mut st = state.lock().await;
            runner.run(job, &mut st).await
        })
        .retry(std::iter::repeat_n(Duration::ZERO, MAX_ATTEMPTS as usize - 1))
        .sleep(tokio::time::sleep)
        .when(JobError::is_retryable)
        .adjust(|e: &JobError, planned| {
            let n = attempt.fetch_add(1, Ordering::SeqCst) + 1;
            let mut jitter = [0u8; 2];
            OsRandom.fill(&mut jitter);
            planned.map(|_| Duration::from_millis(e.retry_delay_ms(n, u16::from_le_bytes(jitter) % 1001)))
        })
        .notify(|e: &JobError, delay| warn!(job = %job.id, error = %e, retry_in_ms = delay.as_millis() as u64, "retrying"))
        .await;
        let st = state.into_inner();
        self.metrics.replies("sent", "0", st.parts_sent as u64);
        match result {
            Ok(()) => {
                info!(job = %job.id, parts = st.parts_sent, attempts = st.attempts, "reply sent")
            }
            Err(e) => {
                let errcode = match &e {
                    JobError::Api(api) => api
                        .errcode
                        .map_or_else(|| "transport".to_string(), |c| c.to_string()),
                    JobError::Agent(_) => "agent".into(),
                    JobError::UnknownApp(_) => "config".into(),
                };
                self.metrics.replies("failed", &errcode, 1);
                match &e {
                    JobError::Api(api)
                        if matches!(api.class, ErrorClass::IpNotTrusted | ErrorClass::Config) =>
                    {
                        error!(job = %job.id, app = %job.app, errcode = api.errcode, "{}", api.explanation());
                    }
                    _ => {
                        error!(job = %job.id, error = %e, sent = st.parts_sent, total = st.parts_total, attempts = st.attempts, "reply failed")
                    }
                }
                if runner.apologize(job, &st).await {
                    info!(job = %job.id, "apology sent");
                }
            }
        }
    }

    /// `POST /api/send`: status and JSON body.
    pub async fn handle_send_api(&self, authorization: Option<&str>, body: &[u8]) -> (u16, String) {
        let order = match check_send(&self.settings, authorization, body) {
            Ok(order) => order,
            Err(refusal) => {
                warn!(status = refusal.status, "send API request refused");
                return (refusal.status, refusal.body);
            }
        };
        let client = self.client();
        let result = execute(&self.settings, &order, &client).await;
        self.metrics.replies("sent", "0", result.sent as u64);
        match &result.error {
            None => info!(user = %order.user, parts = result.sent, "send API message sent"),
            Some(e) => {
                error!(user = %order.user, error = %e, sent = result.sent, "send API message failed")
            }
        }
        (result.status, result.body)
    }

    /// Stops intake and waits up to `timeout` for queued and running jobs. Returns whether
    /// everything finished.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        self.queues().closed = true;
        self.tracker.close();
        let drained = tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok();
        if drained {
            info!("all in-flight work finished");
        } else {
            warn!(
                left = self.queue_depth(),
                "drain timeout: unfinished jobs dropped"
            );
        }
        drained
    }
}
