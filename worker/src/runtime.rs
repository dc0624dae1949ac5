//! The Worker's entry points: `fetch` for callbacks, `queue` for jobs.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use backon::Retryable;
use serde::{Deserialize, Serialize};
use wecom_relay_core::agent::{run_job, EchoAgent, JobError, JobState};
use wecom_relay_core::api::ErrorClass;
use wecom_relay_core::client::{WeComClient, MAX_ATTEMPTS};
use wecom_relay_core::ports::Clock;
use wecom_relay_core::relay::{handle_callback, verify_url, Job, JobSink, SinkError};
use wecom_relay_core::settings::{RawSettings, Settings};
use worker::send::{SendFuture, SendWrapper};
use worker::{
    console_error, console_log, console_warn, event, Context, Delay, Env, MessageBatch, MessageExt,
    Queue, QueueRetryOptionsBuilder, Request, Response, Result,
};

use crate::ports::{DateClock, FetchHttp, Kv, KvDedup, KvTokenCache};
use crate::{KV_BINDING, QUEUE_BINDING};

const API_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a queued job's progress is kept between deliveries.
const JOB_STATE_TTL_SECS: u64 = 24 * 3600;

/// The body of a queue message.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Queued {
    job: Job,
}

fn load_settings(env: &Env) -> std::result::Result<Settings, String> {
    let mut raw = RawSettings::default();
    raw.apply_env(|name| {
        env.var(name)
            .map(|v| v.to_string())
            .or_else(|_| env.secret(name).map(|s| s.to_string()))
            .ok()
    })
    .map_err(|e| e.to_string())?;
    raw.resolve().map_err(|e| e.to_string())
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
        settings: Settings,
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
                Sink::WaitUntil { ctx, env, settings } => {
                    let env = (**env).clone();
                    let settings = settings.clone();
                    ctx.wait_until(async move { run_in_background(env, settings, job).await });
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
    let settings = match load_settings(&env) {
        Ok(s) => s,
        Err(e) => {
            console_error!("configuration error: {e}");
            return text(500, "configuration error");
        }
    };
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
                    settings: settings.clone(),
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

/// One attempt at a job with Workers ports.
async fn attempt(
    env: &Env,
    settings: &Settings,
    job: &Job,
    state: &mut JobState,
) -> std::result::Result<(), JobError> {
    let store = kv(env).map_err(JobError::UnknownApp)?;
    let tokens = KvTokenCache(store);
    let http = FetchHttp {
        timeout: API_TIMEOUT,
    };
    let client = WeComClient::new(&settings.api_base, &http, &tokens, &DateClock);
    run_job(job, state, &settings.apps, &EchoAgent, &client).await
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
async fn run_in_background(env: Env, settings: Settings, job: Job) {
    let state = RefCell::new(JobState::default());
    let tries = RefCell::new(0u32);
    let result = (|| async {
        let mut st = state.take();
        let r = attempt(&env, &settings, &job, &mut st).await;
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
    let settings = match load_settings(&env) {
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
        let result = attempt(&env, &settings, &job, &mut state).await;
        match &result {
            Err(e) if e.is_retryable() => {
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
