//! The HTTP face on axum: every request becomes the core's `Incoming`, with the body read up to
//! the core's cap, and the core's `Answer` is written back as it is.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use wecom_relay_core::{Answer, BodyTooLarge, CappedBody, Incoming};

use crate::NativeRelay;

/// The relay's router: one handler, the core routes.
pub fn app(relay: Arc<NativeRelay>) -> Router {
    Router::new().fallback(handle).with_state(relay)
}

async fn handle(
    State(relay): State<Arc<NativeRelay>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = read_capped(&headers, body).await;
    let incoming = Incoming {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or_default(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        body: body.as_deref().map_err(|e| *e),
    };
    respond(relay.handle(&incoming).await)
}

/// Reads the body through the core's cap, chunk by chunk.
async fn read_capped(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, BodyTooLarge> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok());
    let mut capped = CappedBody::new(announced)?;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        capped.push(&chunk.map_err(|_| BodyTooLarge)?)?;
    }
    Ok(capped.finish())
}

fn respond(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
    for (name, value) in answer.headers {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("")),
        );
    }
    response
}
