//! WeCom silently drops a member's 31st message from an app within a minute. Every message the
//! relay sends counts against that budget, and what exceeds it waits: the stand-in, which drops
//! exactly as WeCom does, must record no drop.

use std::time::Duration;

use wecom_relay_tests::harness::{now, text_xml, AppSpec, Running, Scenario, Twin};
use wecom_relay_tests::peer::WechatpyPeer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_answer_after_many_notifications_waits_instead_of_being_dropped() {
    for twin in Twin::selected() {
        if twin == Twin::Worker {
            // Without a Queue, a job runs in `waitUntil`, which Cloudflare ends 30 s after the
            // response: a wait for the next minute needs the Queue (README, Differences).
            continue;
        }
        let app = AppSpec::new("hr", "wwcorpA", 1000002, 'a', &["alice"]);
        let mut scenario = Scenario::new(vec![app.clone()]);
        let token = "send-api-token-0123456789";
        scenario.api_token = Some(token.into());
        let r = Running::start(twin, scenario).await;
        let client = reqwest::Client::new();
        for i in 0..25 {
            let resp = client
                .post(format!("{}/api/send", r.base))
                .bearer_auth(token)
                .body(
                    serde_json::json!({"to": "wwcorpA:alice", "text": format!("notice {i}")})
                        .to_string(),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{twin:?}");
        }
        // 20,000 bytes: ten parts, of which the last five exceed the minute's 30.
        let long: String = (0..200)
            .map(|i| format!("{i:03} {}\n", "x".repeat(95)))
            .collect();
        let mut peer = WechatpyPeer::start();
        let ts = now();
        let xml = text_xml(&app.corp_id, "alice", app.agent_id, 1, &long, ts);
        let cb = peer.encrypt_callback(&app.peer(), &xml, &ts.to_string(), "n1");
        let resp = client
            .post(r.callback_url(&cb.query))
            .body(cb.body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{twin:?}");
        let got = r
            .wait_for_within("every part, paced", Duration::from_secs(100), |m| {
                m.len() >= 35
            })
            .await;
        assert_eq!(got.len(), 35, "{twin:?}");
        assert!(
            got.iter().all(|m| !m.dropped && !m.truncated),
            "{twin:?}: the stand-in dropped or cut a message"
        );
        let answer: String = got[25..].iter().filter_map(|m| m.content.clone()).collect();
        assert_eq!(
            answer, long,
            "{twin:?}: the answer arrived whole and in order"
        );
    }
}
