//! Running accepted jobs on Workers: through the bound Queue (one `Relay::step_job` per
//! delivery, progress kept in KV, Cloudflare's retries with the core's delays, then the
//! dead-letter queue), or, without a Queue, after the response through `ctx.waitUntil` with
//! `Relay::run_job`.

use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wecom_relay_core::kv::KvJobStates;
use wecom_relay_core::ports::{JobSink, SinkError};
use wecom_relay_core::{AgentSettings, Event, Job, Relay, Settings, Step};
use worker::send::{SendFuture, SendWrapper};
use worker::{Context, Env, MessageBatch, MessageExt, Queue, QueueRetryOptionsBuilder, Result};

use crate::entry::load_settings;
use crate::ports::{log, WorkerPlatform};
use crate::QUEUE_BINDING;

/// The body of a queue message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    job: Job,
}

/// Where jobs go.
pub enum Sink {
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
    /// Inside a job, which never submits another.
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
                    let relay = relay_for_jobs(env, (**settings).clone(), (**agent).clone())
                        .map_err(SinkError)?;
                    ctx.wait_until(async move {
                        relay.run_job(&job).await;
                    });
                    Ok(())
                }
                Sink::None => Err(SinkError("jobs do not submit jobs".into())),
            }
        })
    }
}

fn relay_for_jobs(
    env: &Env,
    settings: Settings,
    agent: AgentSettings,
) -> std::result::Result<Relay<WorkerPlatform>, String> {
    let timeout = Duration::from_secs(agent.timeout_secs);
    let platform = WorkerPlatform::new(env, timeout, Sink::None)?;
    Ok(Relay::new(settings, agent, platform))
}

/// The Queue consumer: one attempt per delivery. The core decides; a retry is redelivered
/// after the delay it asks for, with the progress kept in KV so that nothing is asked or sent
/// twice.
pub async fn consume(batch: MessageBatch<Queued>, env: Env) -> Result<()> {
    let relay =
        load_settings(&env).and_then(|(settings, agent)| relay_for_jobs(&env, settings, agent));
    let relay = match relay {
        Ok(relay) => relay,
        Err(reason) => {
            log(&Event::Misconfigured(&reason));
            batch.retry_all();
            return Ok(());
        }
    };
    let states = KvJobStates(relay.platform().kv().clone());
    for message in batch.messages()? {
        let job = &message.body().job;
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
