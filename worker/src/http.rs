//! The HTTP face on Workers: every request becomes the core's `Incoming`, with the body read
//! up to the core's cap, and the core's `Answer` is written back as it is.

use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;
use wecom_relay_core::MAX_BODY_BYTES;
use wecom_relay_core::{answer_misconfigured, Answer, BodyTooLarge, Event, Incoming, Relay};
use worker::{Context, Env, Request, Response, Result};

use crate::entry::load_settings;
use crate::jobs::Sink;
use crate::ports::{log, WorkerPlatform};

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
        let platform = WorkerPlatform::new(&env, timeout, sink)?;
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

/// Reads at most the core's cap: refused before reading when the announced length is larger,
/// and cut off as soon as more arrives.
async fn read_capped(req: &mut Request) -> std::result::Result<Vec<u8>, BodyTooLarge> {
    let announced = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(BodyTooLarge);
    }
    let Ok(mut stream) = req.stream() else {
        // No body at all.
        return Ok(Vec::new());
    };
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyTooLarge)?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(BodyTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn respond(answer: Answer) -> Result<Response> {
    let response = Response::ok(answer.body)?.with_status(answer.status);
    let headers = response.headers();
    headers.set("content-type", answer.content_type)?;
    for (name, value) in answer.headers {
        headers.set(name, value)?;
    }
    Ok(response)
}
