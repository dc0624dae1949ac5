//! Running accepted jobs on Workers: through the bound Queue (one `Relay::step_job` per
//! delivery, progress kept in KV, Cloudflare's retries with the core's delays, then the
//! dead-letter queue), or, without a Queue, after the response through `ctx.waitUntil` with
//! `Relay::run_job`.

use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wecom_relay_core::kv::{KeyValue, KvJobStates};
use wecom_relay_core::ports::{JobSink, SinkError};
use wecom_relay_core::{AgentSettings, Event, Job, JobState, Relay, Settings, Step};
use worker::js_sys::JSON;
use worker::send::{SendFuture, SendWrapper};
use worker::wasm_bindgen::JsValue;
use worker::{
    Context, Env, MessageBatch, MessageExt, Queue, QueueContentType, QueueRetryOptionsBuilder,
    RawMessageBuilder, Result,
};

use crate::entry::load_settings;
use crate::objects::{ObjectKv, USERS_BINDING};
use crate::ports::{log, Home, WorkerPlatform, WorkersKv};
use crate::QUEUE_BINDING;

/// The body of a queue message: `{"job": {...}}`, sent with the `json` content type.
///
/// Both ways it goes through JSON text and `serde_json`, which the Worker needs anyway,
/// rather than through `serde_wasm_bindgen`: that would be a second copy of every job type's
/// deserializer in the wasm (about 100 KB of it). The JS value on the queue is the same as
/// before, so messages queued by an earlier version are still read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    job: Job,
}

impl Queued {
    /// The message to send: the JSON text parsed into a JS value.
    fn to_js(&self) -> std::result::Result<JsValue, String> {
        let text = serde_json::to_string(self).map_err(|e| e.to_string())?;
        JSON::parse(&text).map_err(|_| "the job's JSON did not parse".to_owned())
    }

    /// A delivered message's body, whatever JS value the queue gives back.
    fn from_js(body: &JsValue) -> std::result::Result<Self, String> {
        let text = match body.as_string() {
            Some(text) => text,
            None => JSON::stringify(body)
                .ok()
                .and_then(|t| t.as_string())
                .ok_or("the message is not JSON")?,
        };
        // Not the error's text, which can quote a value of the message.
        serde_json::from_str(&text)
            .map_err(|e| format!("{:?} error at column {}", e.classify(), e.column()))
    }
}

/// Where jobs go.
pub enum Sink {
    /// The user's Durable Object, which works a user's jobs in order.
    Users(SendWrapper<Env>),
    /// Inside a user's Durable Object: submits nothing, keeps progress in its storage.
    Object(ObjectKv),
    /// The bound Queue.
    Queue(SendWrapper<Queue>),
    /// This invocation's `waitUntil`, with what a job needs to run after the response.
    WaitUntil {
        /// The invocation.
        ctx: SendWrapper<Rc<Context>>,
        /// The bindings.
        env: SendWrapper<Env>,
        /// The relay's settings.
        settings: Box<Settings>,
        /// The agent's settings.
        agent: Box<AgentSettings>,
    },
    /// Inside a queued job: submits nothing, keeps the job's progress in KV part by part, so a
    /// redelivery after a crash sends no part twice.
    Consumer(KvJobStates<WorkersKv>),
    /// Inside a job run by `waitUntil`, which never submits another.
    None,
}

impl Sink {
    /// The Queue when one is bound, else `waitUntil`.
    pub fn for_request(
        env: &Env,
        ctx: Rc<Context>,
        settings: &Settings,
        agent: &AgentSettings,
    ) -> Self {
        if env.durable_object(USERS_BINDING).is_ok() {
            return Sink::Users(SendWrapper::new(env.clone()));
        }
        match env.queue(QUEUE_BINDING) {
            Ok(queue) => Sink::Queue(SendWrapper::new(queue)),
            Err(_) => Sink::WaitUntil {
                ctx: SendWrapper::new(ctx),
                env: SendWrapper::new(env.clone()),
                settings: Box::new(settings.clone()),
                agent: Box::new(agent.clone()),
            },
        }
    }
}

impl JobSink for Sink {
    fn submit(
        &self,
        job: Job,
    ) -> impl std::future::Future<Output = std::result::Result<(), SinkError>> + Send {
        SendFuture::new(async move {
            match self {
                Sink::Users(env) => crate::objects::enqueue(env, &job).await.map_err(SinkError),
                Sink::Queue(queue) => {
                    let body = Queued { job }.to_js().map_err(SinkError)?;
                    let message = RawMessageBuilder::new(body)
                        .build_with_content_type(QueueContentType::Json);
                    queue
                        .send_raw(message)
                        .await
                        .map_err(|e| SinkError(format!("queue send failed: {e}")))
                }
                Sink::WaitUntil {
                    ctx,
                    env,
                    settings,
                    agent,
                } => {
                    let (settings, agent) = ((**settings).clone(), (**agent).clone());
                    let relay =
                        relay_for_jobs(env, settings, agent, Sink::None).map_err(SinkError)?;
                    ctx.wait_until(async move {
                        relay.run_job(&job).await;
                    });
                    Ok(())
                }
                Sink::Object(_) | Sink::Consumer(_) | Sink::None => {
                    Err(SinkError("jobs do not submit jobs".into()))
                }
            }
        })
    }

    fn progress(
        &self,
        job: &Job,
        state: &JobState,
    ) -> impl std::future::Future<Output = ()> + Send {
        SendFuture::new(async move {
            // Lost progress costs a repeated part, never a lost message.
            match self {
                Sink::Consumer(states) => {
                    let _ = states.save(&job.id, state).await;
                }
                Sink::Object(object) => {
                    if let Ok(text) = serde_json::to_string(state) {
                        let _ = object.put(&format!("state:{}", job.id), text, 0).await;
                    }
                }
                _ => {}
            }
        })
    }
}

fn relay_for_jobs(
    env: &Env,
    settings: Settings,
    agent: AgentSettings,
    sink: Sink,
) -> std::result::Result<Relay<WorkerPlatform>, String> {
    let timeout = Duration::from_secs(agent.timeout_secs);
    let platform = WorkerPlatform::new(env, timeout, sink, Home::Kv)?;
    Ok(Relay::new(settings, agent, platform))
}

/// The Queue consumer: one attempt per delivery. The core decides; a retry is redelivered
/// after the delay it asks for, with the progress kept in KV so that nothing is asked or sent
/// twice.
pub async fn consume(batch: MessageBatch<Queued>, env: Env) -> Result<()> {
    let relay = WorkersKv::from_env(&env).and_then(|kv| {
        let (settings, agent) = load_settings(&env)?;
        let sink = Sink::Consumer(KvJobStates(kv));
        relay_for_jobs(&env, settings, agent, sink)
    });
    let relay = match relay {
        Ok(relay) => relay,
        Err(reason) => {
            log(&Event::Misconfigured(&reason));
            batch.retry_all();
            return Ok(());
        }
    };
    let states = KvJobStates(relay.platform().kv().clone());
    for message in batch.raw_iter() {
        let job = match Queued::from_js(&message.body()) {
            Ok(queued) => queued.job,
            Err(reason) => {
                // Not ours to drop: retried, then kept in the dead-letter queue for a look.
                worker::console_error!("ERROR a queued message is not a job ({reason}); retried");
                message.retry();
                continue;
            }
        };
        let job = &job;
        let mut state = states.load(&job.id).await;
        match relay.step_job(job, &mut state).await {
            Step::RetryIn(delay) => {
                // Lost progress costs a repeated question, never a lost message.
                let _ = states.save(&job.id, &state).await;
                let secs = u32::try_from(delay.as_secs_f64().ceil() as u64).unwrap_or(u32::MAX);
                message.retry_with_options(
                    &QueueRetryOptionsBuilder::new()
                        .with_delay_seconds(secs)
                        .build(),
                );
            }
            Step::Done(_) | Step::GaveUp(_) => {
                let _ = states.forget(&job.id).await;
                message.ack();
            }
        }
    }
    Ok(())
}
