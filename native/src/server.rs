//! The HTTP surface: `GET`/`POST <path>`, `GET /health`, `GET /metrics`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use wecom_relay_core::relay::MAX_BODY_BYTES;

use crate::relay::{Answer, Relay};

/// The relay's router.
pub fn app(relay: Arc<Relay>) -> Router {
    let path = relay.settings.path.clone();
    Router::new()
        .route(&path, get(verify).post(callback))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/send", post(send_api))
        .with_state(relay)
}

fn respond(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        answer.body,
    )
        .into_response()
}

async fn verify(State(relay): State<Arc<Relay>>, RawQuery(query): RawQuery) -> Response {
    respond(relay.handle_verify(query.as_deref().unwrap_or_default()))
}

async fn callback(
    State(relay): State<Arc<Relay>>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    // Read at most one byte past the limit: the core sees (and counts) an oversized body, and
    // the server never buffers more than that.
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES + 1).await {
        Ok(bytes) => bytes,
        Err(_) => Bytes::from(vec![0u8; MAX_BODY_BYTES + 1]),
    };
    respond(
        relay
            .handle_callback(query.as_deref().unwrap_or_default(), &body)
            .await,
    )
}

async fn send_api(State(relay): State<Arc<Relay>>, headers: HeaderMap, body: Body) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "").into_response();
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (status, json) = relay.handle_send_api(authorization, &body).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], json).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "platform": "wecom_callback"}))
}

async fn metrics(State(relay): State<Arc<Relay>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        relay.metrics.render(),
    )
        .into_response()
}
