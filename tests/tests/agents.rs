//! Agents end to end, on every twin in `WECOM_RELAY_TWINS`: an OpenAI-compatible stand-in that
//! follows the real API's shapes and errors, and a webhook receiver in Python that verifies the
//! HMAC with its own code. wechatpy plays WeCom; the WeCom stand-in records what users receive.

use std::time::{Duration, Instant};

use wecom_relay_core::relay::{APOLOGY_TEXT, HELP_TEXT, RESET_TEXT, THINKING_TEXT};
use wecom_relay_standin::openai::{ChatFault, OpenAiStandin, RunningOpenAi};
use wecom_relay_tests::harness::{AppSpec, Running, Scenario, Twin};
use wecom_relay_tests::peer::WechatpyPeer;
use wecom_relay_tests::webhook::serve_webhook;

const KEY: &str = "sk-standin-0123456789";

fn app() -> AppSpec {
    AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"])
}

fn texts(r: &Running) -> Vec<String> {
    r.standin
        .standin
        .messages()
        .iter()
        .map(|m| m.content.clone().unwrap_or_default())
        .collect()
}

async fn openai_relay(twin: Twin, extra: &[(&str, &str)]) -> (Running, RunningOpenAi) {
    let ai = OpenAiStandin::new(KEY).serve().await.unwrap();
    let mut scenario = Scenario::new(vec![app()]);
    let mut agent = vec![
        ("AGENT_KIND".to_string(), "openai".to_string()),
        ("AGENT_BASE_URL".into(), ai.base_url()),
        ("AGENT_API_KEY".into(), KEY.into()),
        ("AGENT_MODEL".into(), "standin-model".into()),
        (
            "AGENT_SYSTEM_PROMPT".into(),
            "You are the HR helper.".into(),
        ),
        ("AGENT_THINKING_NOTICE_SECS".into(), "0".into()),
    ];
    for (k, v) in extra {
        agent.retain(|(key, _)| key != k);
        agent.push((k.to_string(), v.to_string()));
    }
    scenario.agent = agent;
    (Running::start(twin, scenario).await, ai)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_multi_turn_memory_reset_and_help() {
    for twin in Twin::selected() {
        let (r, ai) = openai_relay(twin, &[]).await;
        let mut peer = WechatpyPeer::start();
        r.say(&mut peer, 1, "one").await;
        r.wait_for("the first answer", |m| m.len() == 1).await;
        r.say(&mut peer, 2, "two").await;
        let got = r.wait_for("the second answer", |m| m.len() == 2).await;
        assert_eq!(
            got[0].content.as_deref(),
            Some("reply to one (history: 0 earlier messages)"),
            "{twin:?}"
        );
        assert_eq!(
            got[1].content.as_deref(),
            Some("reply to two (history: 2 earlier messages)"),
            "{twin:?}: memory"
        );
        let second = &ai.standin.requests()[1];
        let system = second["messages"][0]["content"].as_str().unwrap();
        assert!(
            system.contains("WeCom")
                && system.contains("2048")
                && system.contains("wwcorpA:alice")
                && system.contains("HR helper"),
            "{system}"
        );
        assert_eq!(second["messages"][1]["content"], "one");
        assert_eq!(second["model"], "standin-model");

        r.say(&mut peer, 3, "/reset").await;
        r.wait_for("the reset answer", |m| m.len() == 3).await;
        r.say(&mut peer, 4, "/help").await;
        r.wait_for("the help answer", |m| m.len() == 4).await;
        assert_eq!(
            ai.standin.requests().len(),
            2,
            "{twin:?}: commands never reach the agent"
        );
        r.say(&mut peer, 5, "three").await;
        r.wait_for("the answer after reset", |m| m.len() == 5).await;
        assert_eq!(
            texts(&r)[2..],
            [
                RESET_TEXT.to_string(),
                HELP_TEXT.to_string(),
                "reply to three (history: 0 earlier messages)".to_string()
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_agent_sends_one_thinking_notice() {
    for twin in Twin::selected() {
        let (r, ai) = openai_relay(twin, &[("AGENT_THINKING_NOTICE_SECS", "1")]).await;
        ai.standin.inject(ChatFault {
            delay_ms: 2500,
            ..ChatFault::default()
        });
        let mut peer = WechatpyPeer::start();
        r.say(&mut peer, 1, "think hard").await;
        r.wait_for("the notice and the answer", |m| m.len() == 2)
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            texts(&r),
            [
                THINKING_TEXT.to_string(),
                "reply to think hard (history: 0 earlier messages)".to_string()
            ],
            "{twin:?}"
        );
        // A fast answer gets no notice.
        r.say(&mut peer, 2, "quick").await;
        r.wait_for("the quick answer", |m| m.len() == 3).await;
        assert_eq!(texts(&r)[2], "reply to quick (history: 2 earlier messages)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_fails_for_good_gets_the_user_an_apology() {
    for twin in Twin::selected() {
        let (r, ai) = openai_relay(twin, &[("AGENT_API_KEY", "sk-wrong-key-000000")]).await;
        let mut peer = WechatpyPeer::start();
        r.say(&mut peer, 1, "hello?").await;
        r.wait_for("the apology", |m| m.len() == 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(texts(&r), [APOLOGY_TEXT.to_string()], "{twin:?}");
        assert_eq!(ai.standin.attempts(), 1, "{twin:?}: a 401 is not retried");
        let logs = r.wait_for_log("api_key").await;
        assert!(
            logs.contains("refused the api_key"),
            "{twin:?}: the cause is logged\n{logs}"
        );
        assert!(
            !logs.contains("sk-wrong-key"),
            "{twin:?}: the key leaked into the log:\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out_and_malformed_answers_retried() {
    for twin in Twin::selected() {
        let (r, ai) = openai_relay(twin, &[]).await;
        ai.standin.inject(ChatFault {
            status: 429,
            retry_after: Some(1),
            ..ChatFault::default()
        });
        ai.standin.inject(ChatFault {
            malformed: true,
            ..ChatFault::default()
        });
        let mut peer = WechatpyPeer::start();
        let started = Instant::now();
        r.say(&mut peer, 1, "busy?").await;
        r.wait_for("the answer after the retries", |m| m.len() == 1)
            .await;
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{twin:?}: Retry-After was not honoured"
        );
        assert_eq!(
            texts(&r),
            ["reply to busy? (history: 0 earlier messages)"],
            "{twin:?}"
        );
        assert_eq!(ai.standin.attempts(), 3, "{twin:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_api_needs_the_right_bearer_token() {
    for twin in Twin::selected() {
        let mut scenario = Scenario::new(vec![app()]);
        let token = "send-api-token-0123456789";
        scenario.api_token = Some(token.into());
        let r = Running::start(twin, scenario).await;
        let url = format!("{}/api/send", r.base);
        let body = serde_json::json!({"to": "wwcorpA:alice", "text": "网关通知：".repeat(300)})
            .to_string();
        let client = reqwest::Client::new();
        let missing = client.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(missing.status().as_u16(), 401, "{twin:?}");
        assert_eq!(
            missing
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer")
        );
        let wrong = client
            .post(&url)
            .bearer_auth("send-api-token-wrong-value")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{twin:?}");
        assert!(r.standin.standin.messages().is_empty());
        let right = client
            .post(&url)
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(right.status().as_u16(), 200, "{twin:?}");
        let answer: serde_json::Value = serde_json::from_str(&right.text().await.unwrap()).unwrap();
        assert_eq!(
            (answer["ok"].as_bool(), answer["parts"].as_u64()),
            (Some(true), Some(3)),
            "{answer}"
        );
        let got = r.standin.standin.messages();
        assert_eq!(got.len(), 3);
        assert!(got
            .iter()
            .all(|m| m.corp_id == "wwcorpA" && m.touser == "alice" && !m.truncated));
        let bad = client
            .post(&url)
            .bearer_auth(token)
            .body(r#"{"to":"alice","text":"x"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status().as_u16(), 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_agent_signs_events_and_takes_sync_and_later_answers() {
    for twin in Twin::selected() {
        let mut scenario = Scenario::new(vec![app()]);
        scenario.media_allow_hosts = vec!["127.0.0.1".into()];
        let receiver = serve_webhook(&mut scenario).await;
        let r = Running::start(twin, scenario).await;
        let mut peer = WechatpyPeer::start();
        r.say(&mut peer, 1, "hi").await;
        r.wait_for("the synchronous answer", |m| m.len() == 1).await;
        r.say(&mut peer, 2, "many: please").await;
        r.wait_for("two answers", |m| m.len() == 3).await;
        r.say(&mut peer, 3, "later: take your time").await;
        r.wait_for("the answer through /api/send", |m| m.len() == 4)
            .await;
        assert_eq!(
            texts(&r),
            [
                "webhook got: hi",
                "first of many",
                "second of many",
                "later reply to later: take your time"
            ],
            "{twin:?}"
        );
        let stats = receiver.stats().await;
        assert_eq!(
            (stats["verified"].as_u64(), stats["rejected"].as_u64()),
            (Some(3), Some(0)),
            "{twin:?}: {stats}"
        );
        let event = &stats["events"][0];
        assert_eq!(event["user"], "wwcorpA:alice");
        assert_eq!(
            (
                event["app"].as_str(),
                event["agent_id"].as_u64(),
                event["msg_type"].as_str()
            ),
            (Some("a"), Some(1000002), Some("text"))
        );
        assert!(event["message_id"]
            .as_str()
            .unwrap()
            .starts_with("wwcorpA:1000002:m:"));
        assert!(event["create_time"].as_u64().unwrap() > 0);

        // An event the relay has no use for reaches the webhook as it came.
        let scan = "<MsgType>event</MsgType><Event>scancode_waitmsg</Event><EventKey>K_SCAN</EventKey>\
                    <ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>PO-1234</ScanResult></ScanCodeInfo>";
        assert_eq!(r.post_xml(&mut peer, "nscan", scan).await, 200);
        r.wait_for("the event's answer", |m| m.len() == 5).await;
        assert_eq!(
            texts(&r)[4],
            "webhook got: [event scancode_waitmsg]",
            "{twin:?}"
        );
        let stats = receiver.stats().await;
        let scan = &stats["events"][3]["input"];
        assert_eq!(
            (scan["type"].as_str(), scan["event"]["scan_result"].as_str()),
            (Some("event"), Some("PO-1234")),
            "{twin:?}: {scan}"
        );

        // Attachments in the webhook's answer go out as a picture and a file.
        let chart = b"\x89PNG\r\n\x1a\n0123456789".to_vec();
        r.standin
            .standin
            .put_file("chart.png", "image/png", chart.clone());
        let url = format!("{}/files/chart.png", r.standin.base_url());
        r.say(&mut peer, 4, &format!("attach: {url}")).await;
        let got = r.wait_for("text, picture and file", |m| m.len() == 8).await;
        let kinds: Vec<&str> = got[5..].iter().map(|m| m.msgtype.as_str()).collect();
        assert_eq!(kinds, ["text", "image", "file"], "{twin:?}: {}", r.logs());
        let image = got[6].body["image"]["media_id"].as_str().unwrap();
        assert_eq!(r.standin.standin.uploaded(image).unwrap().2, chart);
        let file = got[7].body["file"]["media_id"].as_str().unwrap();
        let (name, _, bytes) = r.standin.standin.uploaded(file).unwrap();
        assert_eq!(
            (name.as_str(), bytes.as_slice()),
            ("notes.txt", &b"notes from the webhook\n"[..])
        );
    }
}
