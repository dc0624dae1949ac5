//! The HTTP face on Workers: every request becomes the core's `Incoming`, with the body read
//! up to the core's cap, and the core's `Answer` is written back as it is.

use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;
use wecom_relay_core::{
    answer_misconfigured, Answer, BodyError, CappedBody, Event, Incoming, Relay,
};
use worker::{Context, Env, Request, Response, Result};

use crate::entry::load_settings;
use crate::jobs::Sink;
use crate::ports::{log, Home, WorkerPlatform};

/// Answers one request.
pub async fn fetch(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    let method = req.method().to_string();
    let url = req.url()?;
    let authorization = req.headers().get("authorization").ok().flatten();
    let body = read_capped(&mut req).await;
    let incoming = Incoming {
        method: &method,
        path: url.path(),
        query: url.query().unwrap_or_default(),
        authorization: authorization.as_deref(),
        body: body.as_deref().map_err(|e| *e),
    };
    let relay = load_settings(&env).and_then(|(settings, agent)| {
        let timeout = Duration::from_secs(agent.timeout_secs);
        let sink = Sink::for_request(&env, Rc::new(ctx), &settings, &agent);
        let platform = WorkerPlatform::new(&env, timeout, sink, Home::Kv)?;
        Ok(Relay::new(settings, agent, platform))
    });
    let answer = match relay {
        Ok(relay) => relay.handle(&incoming).await,
        Err(reason) => {
            log(&Event::Misconfigured(&reason));
            answer_misconfigured(&incoming)
        }
    };
    respond(answer)
}

/// Reads the body through the core's cap, chunk by chunk. Slow clients are the platform's to
/// time out: Cloudflare's edge holds the connection, not the Worker.
async fn read_capped(req: &mut Request) -> std::result::Result<Vec<u8>, BodyError> {
    let announced = req.headers().get("content-length").ok().flatten();
    let mut capped = CappedBody::new(announced.as_deref())?;
    let Ok(mut chunks) = req.stream() else {
        // No body at all.
        return Ok(capped.finish());
    };
    while let Some(chunk) = chunks.next().await {
        capped.push(&chunk.map_err(|_| BodyError::Broken)?)?;
    }
    Ok(capped.finish())
}

fn respond(answer: Answer) -> Result<Response> {
    let response = Response::ok(answer.body.into_owned())?.with_status(answer.status);
    let headers = response.headers();
    headers.set("content-type", answer.content_type)?;
    for (name, value) in answer.headers {
        headers.set(name, &value)?;
    }
    Ok(response)
}
