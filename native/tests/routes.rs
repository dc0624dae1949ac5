//! Route tests without sockets: the router driven through `tower::ServiceExt::oneshot`, with
//! the official Tencent vectors and a clock fixed at the vectors' time.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use tower::ServiceExt;
use wecom_relay::config::RuntimeConfig;
use wecom_relay::http::app;
use wecom_relay::NativeRelay;
use wecom_relay_core::testing::{vectors, FixedClock, VectorSet};
use wecom_relay_core::{AgentSettings, RawSettings};
use wecom_relay_standin::wecom::{RunningStandin, Standin, StandinApp};

struct Fixture {
    router: Router,
    relay: Arc<NativeRelay>,
    clock: Arc<FixedClock>,
    sets: Vec<VectorSet>,
    _standin: RunningStandin,
}

async fn fixture(allowed: &str) -> Fixture {
    let sets = vectors();
    let standin = Standin::new(
        sets.iter()
            .map(|s| StandinApp {
                corp_id: s.corp_id.clone(),
                corp_secret: "secret".into(),
                agent_id: s.agent_id.parse().unwrap(),
                users: vec!["ChenJiaShun".into()],
                trusted: true,
            })
            .collect(),
        Duration::from_secs(7200),
    )
    .serve(0)
    .await
    .unwrap();
    let apps: Vec<serde_json::Value> = sets
        .iter()
        .map(|s| {
            serde_json::json!({"corp_id": s.corp_id, "corp_secret": "secret", "agent_id": s.agent_id,
                "token": s.token, "encoding_aes_key": s.encoding_aes_key})
        })
        .collect();
    let mut raw = RawSettings::default();
    raw.set("apps_json", serde_json::to_string(&apps).unwrap())
        .unwrap();
    raw.set("api_base", standin.base_url()).unwrap();
    raw.set("allowed_users", allowed.into()).unwrap();
    let settings = raw.resolve().unwrap();
    let clock = Arc::new(FixedClock::at(sets[0].callback.timestamp.parse().unwrap()));
    let relay = wecom_relay::start(
        settings,
        AgentSettings::default(),
        &RuntimeConfig::default(),
        clock.clone(),
    )
    .await
    .unwrap();
    Fixture {
        router: app(relay.clone(), std::time::Duration::from_secs(10)),
        relay,
        clock,
        sets,
        _standin: standin,
    }
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).body(body.into()).unwrap()
}

#[tokio::test]
async fn url_verification_answers_the_plaintext_only() {
    let f = fixture("").await;
    for set in &f.sets {
        let (status, body) = send(
            &f.router,
            get(&format!("/wecom/callback?{}", set.verify_url.query)),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, set.verify_url.expected_body.as_str())
        );
    }
    let tampered = f.sets[0]
        .verify_url
        .query
        .replace("timestamp=1", "timestamp=2");
    assert_eq!(
        send(&f.router, get(&format!("/wecom/callback?{tampered}")))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&f.router, get("/wecom/callback?timestamp=1&nonce=2"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(&f.router, get("/wecom/callback")).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn callbacks_are_acknowledged_or_refused_with_the_right_status() {
    let f = fixture("ChenJiaShun").await;
    let set = &f.sets[0];
    let uri = format!("/wecom/callback?{}", set.callback.query);
    assert_eq!(
        send(&f.router, post(&uri, set.callback.body.clone())).await,
        (StatusCode::OK, "success".into())
    );
    // Retried by WeCom: acknowledged again, processed once.
    assert_eq!(
        send(&f.router, post(&uri, set.callback.body.clone())).await,
        (StatusCode::OK, "success".into())
    );

    let huge = "x".repeat(64 * 1024 + 1);
    assert_eq!(
        send(&f.router, post(&uri, huge)).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let bad_sig = uri.replace("nonce=", "nonce=1");
    assert_eq!(
        send(&f.router, post(&bad_sig, set.callback.body.clone()))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    for body in [
        "",
        "<xml>",
        "not xml",
        "<xml><Encrypt>!!!</Encrypt></xml>",
        "<!DOCTYPE x [<!ENTITY a \"b\">]><xml/>",
    ] {
        let status = send(&f.router, post(&uri, body)).await.0;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN,
            "{body:?} got {status}"
        );
    }
    assert_eq!(
        send(&f.router, post(&uri, vec![0xffu8, 0xfe, 0x00]))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    // The same, valid callback outside the replay window.
    f.clock.advance(601);
    assert_eq!(
        send(&f.router, post(&uri, set.callback.body.clone()))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    let (_, metrics) = send(&f.router, get("/metrics")).await;
    for line in [
        "wecom_relay_callbacks_total{outcome=\"accepted\"} 1",
        "wecom_relay_callbacks_total{outcome=\"duplicate\"} 1",
        "wecom_relay_callbacks_total{outcome=\"too_large\"} 1",
        "wecom_relay_callbacks_total{outcome=\"bad_signature\"}",
        "wecom_relay_callbacks_total{outcome=\"stale\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    assert!(
        f.relay
            .platform()
            .jobs()
            .shutdown(Duration::from_secs(5))
            .await
    );
}

#[tokio::test]
async fn health_and_metrics() {
    let f = fixture("").await;
    let (status, body) = send(&f.router, get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    let (status, body) = send(&f.router, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    for name in [
        "wecom_relay_queue_depth",
        "wecom_relay_agent_latency_seconds",
        "wecom_relay_replies",
        "wecom_relay_token_refreshes",
    ] {
        assert!(body.contains(name), "missing {name} in\n{body}");
    }
}

#[tokio::test]
async fn denied_users_get_nothing_processed() {
    let f = fixture("someone-else").await;
    let set = &f.sets[0];
    let uri = format!("/wecom/callback?{}", set.callback.query);
    assert_eq!(
        send(&f.router, post(&uri, set.callback.body.clone())).await,
        (StatusCode::OK, "success".into())
    );
    assert_eq!(f.relay.platform().jobs().depth(), 0);
    let (_, metrics) = send(&f.router, get("/metrics")).await;
    assert!(
        metrics.contains("wecom_relay_callbacks_total{outcome=\"denied\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn after_shutdown_a_callback_is_left_for_wecom_to_retry() {
    let f = fixture("ChenJiaShun").await;
    assert!(
        f.relay
            .platform()
            .jobs()
            .shutdown(Duration::from_secs(1))
            .await
    );
    let set = &f.sets[0];
    let uri = format!("/wecom/callback?{}", set.callback.query);
    assert_eq!(
        send(&f.router, post(&uri, set.callback.body.clone()))
            .await
            .0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Not marked as seen: a relay that is running again would process WeCom's retry.
    let (_, metrics) = send(&f.router, get("/metrics")).await;
    assert!(metrics.contains("outcome=\"not_queued\""));
    assert!(metrics.contains("outcome=\"accepted\"} 0"), "{metrics}");
}

#[tokio::test]
async fn the_core_routes_every_request_and_caps_every_body() {
    let f = fixture("").await;
    let put = Request::put("/health").body(Body::empty()).unwrap();
    let resp = f.router.clone().oneshot(put).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert_eq!(
        send(&f.router, get("/no/such/route")).await.0,
        StatusCode::NOT_FOUND
    );
    let delete = Request::delete("/wecom/callback")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&f.router, delete).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Announced larger than the cap: refused before a byte of the body is read (this body
    // would never end).
    let endless = Body::from_stream(futures_util::stream::pending::<
        Result<Vec<u8>, std::io::Error>,
    >());
    let announced = Request::post(format!("/wecom/callback?{}", f.sets[0].callback.query))
        .header("content-length", (10 * 1024 * 1024).to_string())
        .body(endless)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), f.router.clone().oneshot(announced))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The send API has the same cap.
    let big = post("/api/send", "x".repeat(64 * 1024 + 1));
    assert_eq!(send(&f.router, big).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}
