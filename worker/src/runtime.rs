//! The Worker's entry points: `fetch` for callbacks, `queue` for jobs.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use backon::Retryable;
use serde::{Deserialize, Serialize};
use wecom_relay_core::agent::{
    AgentSettings, ConfiguredAgent, JobError, JobState, RawAgentSettings, Runner,
};
use wecom_relay_core::api::ErrorClass;
use wecom_relay_core::client::{WeComClient, MAX_ATTEMPTS};
use wecom_relay_core::ports::Clock;
use wecom_relay_core::relay::{handle_callback, verify_url, Job, JobSink, SinkError};
use wecom_relay_core::send_api::{check_send, execute, failed_body};
use wecom_relay_core::settings::{RawSettings, Settings};
use worker::send::{SendFuture, SendWrapper};
use worker::{
    console_error, console_log, console_warn, event, Context, Delay, Env, MessageBatch, MessageExt,
    Queue, QueueRetryOptionsBuilder, Request, Response, Result,
};

use crate::ports::{
    DateClock, DelaySleeper, FetchHttp, Kv, KvConversations, KvDedup, KvTokenCache,
};
use crate::{KV_BINDING, QUEUE_BINDING};

const API_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a queued job's progress is kept between deliveries.
const JOB_STATE_TTL_SECS: u64 = 24 * 3600;

/// The body of a queue message.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Queued {
    job: Job,
}

fn lookup(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.to_string())
        .or_else(|_| env.secret(name).map(|s| s.to_string()))
        .ok()
}

/// The relay's and the agent's settings, from vars and secrets. Errors name the setting.
fn load_settings(env: &Env) -> std::result::Result<(Settings, AgentSettings), String> {
    let mut raw = RawSettings::default();
    raw.apply_env(|name| lookup(env, name))
        .map_err(|e| e.to_string())?;
    let mut agent = RawAgentSettings::default();
    agent.apply_env(|name| lookup(env, name));
    let agent = agent.resolve().map_err(|e| e.to_string())?;
    Ok((raw.resolve().map_err(|e| e.to_string())?, agent))
}

fn kv(env: &Env) -> std::result::Result<Kv, String> {
    env.kv(KV_BINDING)
        .map(Kv::new)
        .map_err(|_| format!("the KV namespace binding {KV_BINDING} is missing from wrangler.toml"))
}

fn text(status: u16, body: &str) -> Result<Response> {
    let resp = Response::ok(body)?.with_status(status);
    resp.headers()
        .set("content-type", "text/plain; charset=utf-8")?;
    Ok(resp)
}

/// Where jobs go: the bound Queue, or `wait_until` in this invocation.
enum Sink {
    Queue(SendWrapper<Queue>),
    WaitUntil {
        ctx: SendWrapper<Rc<Context>>,
        env: SendWrapper<Env>,
        settings: Box<Settings>,
        agent: Box<AgentSettings>,
    },
}

impl JobSink for Sink {
    fn submit(
        &self,
        job: Job,
    ) -> impl std::future::Future<Output = std::result::Result<(), SinkError>> + Send {
        SendFuture::new(async move {
            match self {
                Sink::Queue(queue) => queue
                    .send(Queued { job })
                    .await
                    .map_err(|e| SinkError(format!("queue send failed: {e}"))),
                Sink::WaitUntil {
                    ctx,
                    env,
                    settings,
                    agent,
                } => {
                    let env = (**env).clone();
                    let settings = (**settings).clone();
                    let agent = (**agent).clone();
                    ctx.wait_until(
                        async move { run_in_background(env, settings, agent, job).await },
                    );
                    Ok(())
                }
            }
        })
    }
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    let path = req.path();
    if path == "/health" {
        return Response::from_json(
            &serde_json::json!({"status": "ok", "platform": "wecom_callback"}),
        );
    }
    let (settings, agent) = match load_settings(&env) {
        Ok(s) => s,
        Err(e) => {
            console_error!("configuration error: {e}");
            return text(500, "configuration error");
        }
    };
    if path == "/api/send" && req.method() == worker::Method::Post {
        let authorization = req.headers().get("authorization").ok().flatten();
        let body = req.bytes().await?;
        let (status, json) = send_api(&env, &settings, authorization.as_deref(), &body).await;
        let resp = Response::ok(json)?.with_status(status);
        resp.headers().set("content-type", "application/json")?;
        if status == 401 {
            resp.headers().set("www-authenticate", "Bearer")?;
        }
        return Ok(resp);
    }
    if path != settings.path {
        return text(404, "not found");
    }
    let query = req.url()?.query().unwrap_or_default().to_owned();
    match req.method() {
        worker::Method::Get => match verify_url(&settings, &query) {
            Ok((app, echo)) => {
                let name = settings
                    .apps
                    .get(app)
                    .map(|a| a.name.clone())
                    .unwrap_or_default();
                console_log!("callback URL verified app={name}");
                text(200, &echo)
            }
            Err(r) => {
                console_warn!("URL verification refused ({}): {r}", r.status());
                text(r.status(), "")
            }
        },
        worker::Method::Post => {
            let store = match kv(&env) {
                Ok(kv) => kv,
                Err(e) => {
                    console_error!("configuration error: {e}");
                    return text(500, "configuration error");
                }
            };
            let body = req.bytes().await?;
            let sink = match env.queue(QUEUE_BINDING) {
                Ok(queue) => Sink::Queue(SendWrapper::new(queue)),
                Err(_) => Sink::WaitUntil {
                    ctx: SendWrapper::new(Rc::new(ctx)),
                    env: SendWrapper::new(env.clone()),
                    settings: Box::new(settings.clone()),
                    agent: Box::new(agent.clone()),
                },
            };
            let dedup = KvDedup(store);
            let now = DateClock.now_unix();
            let outcome = handle_callback(&settings, &dedup, &sink, &query, &body, now).await;
            if outcome.is_warning() {
                console_warn!("{outcome}");
            } else {
                console_log!("{outcome}");
            }
            text(outcome.status(), outcome.body())
        }
        _ => text(405, ""),
    }
}

/// The send API: checked by the core, sent through the app of the user's corp.
async fn send_api(
    env: &Env,
    settings: &Settings,
    authorization: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let order = match check_send(settings, authorization, body) {
        Ok(order) => order,
        Err(refusal) => {
            console_warn!("send API request refused ({})", refusal.status);
            return (refusal.status, refusal.body);
        }
    };
    let store = match kv(env) {
        Ok(store) => store,
        Err(e) => return (500, failed_body(0, 0, &e)),
    };
    let tokens = KvTokenCache(store);
    let http = FetchHttp {
        timeout: API_TIMEOUT,
    };
    let client = WeComClient::new(&settings.api_base, &http, &tokens, &DateClock);
    let result = execute(settings, &order, &client).await;
    match &result.error {
        None => console_log!(
            "send API message sent user={} parts={}",
            order.user,
            result.sent
        ),
        Some(e) => console_error!(
            "send API message failed user={} error={e} sent={}",
            order.user,
            result.sent
        ),
    }
    (result.status, result.body)
}

/// One attempt at a job with Workers ports; after the last one, an apology if the agent never
/// answered.
async fn attempt(
    env: &Env,
    settings: &Settings,
    agent: &AgentSettings,
    job: &Job,
    state: &mut JobState,
    last: bool,
) -> std::result::Result<(), JobError> {
    let store = kv(env).map_err(JobError::UnknownApp)?;
    let tokens = KvTokenCache(store.clone());
    let conversations = KvConversations(store);
    let http = FetchHttp {
        timeout: API_TIMEOUT,
    };
    let agent_http = FetchHttp {
        timeout: Duration::from_secs(agent.timeout_secs),
    };
    let client = WeComClient::new(&settings.api_base, &http, &tokens, &DateClock);
    let configured = ConfiguredAgent {
        settings: agent,
        http: &agent_http,
        clock: &DateClock,
    };
    let runner = Runner {
        apps: &settings.apps,
        settings: agent,
        agent: &configured,
        client: &client,
        conversations: &conversations,
        sleeper: &DelaySleeper,
    };
    let result = runner.run(job, state).await;
    if let Err(e) = &result {
        if (last || !e.is_retryable()) && runner.apologize(job, state).await {
            console_log!("apology sent job={}", job.id);
        }
    }
    result
}

fn report(job: &Job, state: &JobState, result: &std::result::Result<(), JobError>) {
    match result {
        Ok(()) => console_log!(
            "reply sent job={} parts={} attempts={}",
            job.id,
            state.parts_sent,
            state.attempts
        ),
        Err(JobError::Api(api))
            if matches!(api.class, ErrorClass::IpNotTrusted | ErrorClass::Config) =>
        {
            console_error!(
                "{} (job={} app={} errcode={:?})",
                api.explanation(),
                job.id,
                job.app,
                api.errcode
            );
        }
        Err(e) => console_error!(
            "reply failed job={} error={e} sent={} total={} attempts={}",
            job.id,
            state.parts_sent,
            state.parts_total,
            state.attempts
        ),
    }
}

/// Runs a job after the response (no Queue bound): retries with the core's delays.
async fn run_in_background(env: Env, settings: Settings, agent: AgentSettings, job: Job) {
    let state = RefCell::new(JobState::default());
    let tries = RefCell::new(0u32);
    let result = (|| async {
        let mut st = state.take();
        let last = st.attempts + 1 >= MAX_ATTEMPTS;
        let r = attempt(&env, &settings, &agent, &job, &mut st, last).await;
        state.replace(st);
        r
    })
    .retry(std::iter::repeat_n(
        Duration::ZERO,
        MAX_ATTEMPTS as usize - 1,
    ))
    .sleep(|d: Duration| Delay::from(d))
    .when(JobError::is_retryable)
    .adjust(|e: &JobError, planned| {
        let n = {
            let mut t = tries.borrow_mut();
            *t += 1;
            *t
        };
        let jitter = (worker::js_sys::Math::random() * 1000.0) as u16;
        planned.map(|_| Duration::from_millis(e.retry_delay_ms(n, jitter)))
    })
    .notify(|e: &JobError, delay: Duration| {
        console_warn!(
            "retrying job={} error={e} in {}ms",
            job.id,
            delay.as_millis()
        )
    })
    .await;
    report(&job, &state.borrow(), &result);
}

/// The Queue consumer: one attempt per delivery; progress is kept in KV between deliveries so
/// a retry neither asks the agent again nor resends a part. Cloudflare retries, then moves the
/// message to the dead-letter queue.
#[event(queue)]
async fn queue(batch: MessageBatch<Queued>, env: Env, _ctx: Context) -> Result<()> {
    let (settings, agent) = match load_settings(&env) {
        Ok(s) => s,
        Err(e) => {
            console_error!("configuration error: {e}");
            batch.retry_all();
            return Ok(());
        }
    };
    let store = kv(&env).map_err(worker::Error::RustError)?;
    for message in batch.messages()? {
        let job = message.body().job.clone();
        let key = format!("job:{}", job.id);
        let mut state: JobState = store
            .get_json(&key)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let last = state.attempts + 1 >= MAX_ATTEMPTS;
        let result = attempt(&env, &settings, &agent, &job, &mut state, last).await;
        match &result {
            Err(e) if e.is_retryable() && !last => {
                let _ = store.put_json(&key, &state, JOB_STATE_TTL_SECS).await;
                let jitter = (worker::js_sys::Math::random() * 1000.0) as u16;
                let delay = e.retry_delay_ms(state.attempts, jitter).div_ceil(1000) as u32;
                console_warn!("retrying job={} error={e} in {delay}s", job.id);
                message.retry_with_options(
                    &QueueRetryOptionsBuilder::new()
                        .with_delay_seconds(delay)
                        .build(),
                );
            }
            _ => {
                report(&job, &state, &result);
                let _ = store.delete(&key).await;
                message.ack();
            }
        }
    }
    Ok(())
}
