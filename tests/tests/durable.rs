//! Accepted means delivered: with `relay.state_dir`, a relay killed with SIGKILL while answers
//! are half sent comes back, finishes every accepted message, and sends no part twice.

use std::time::Duration;

use wecom_relay_standin::wecom::Fault;
use wecom_relay_tests::harness::{now, text_xml, AppSpec, Running, Scenario, Twin};
use wecom_relay_tests::peer::WechatpyPeer;

/// A message whose echo is three parts: `tag` opens each paragraph so parts can be told apart.
fn three_parts(tag: &str) -> String {
    (0..3)
        .map(|p| format!("{tag}/{p} {}", "y".repeat(1900)))
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_answer_then_restart_answers_everything_exactly_once() {
    if !Twin::selected().contains(&Twin::Native) {
        return;
    }
    let state = std::env::temp_dir().join(format!("wecom-relay-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let app = AppSpec::new("hr", "wwcorpA", 1000002, 'a', &["alice", "bob"]);
    let mut scenario = Scenario::new(vec![app.clone()]);
    scenario.env = vec![("WECOM_RELAY_STATE_DIR".into(), state.display().to_string())];
    let mut r = Running::start(Twin::Native, scenario).await;
    // A slow API: the kill lands while parts are still going out.
    r.standin
        .standin
        .inject(Fault::slow("/cgi-bin/message/send", 400));
    let mut peer = WechatpyPeer::start();
    let ts = now();
    let mut sent = Vec::new();
    for i in 0..6u64 {
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        let text = three_parts(&format!("{user}-m{i}"));
        let xml = text_xml(&app.corp_id, user, app.agent_id, 500 + i, &text, ts);
        let cb = peer.encrypt_callback(&app.peer(), &xml, &ts.to_string(), &format!("n{i}"));
        assert_eq!(r.post(&cb).await, 200);
        sent.push((user, text, cb));
    }
    // Kill while both users' next parts sit in the stand-in's delay, not yet recorded: a part
    // WeCom recorded but whose answer never reached the relay is the one window nobody can
    // tell apart (README), and killing right after a record would aim at it.
    r.wait_for("the first parts", |m| m.len() >= 4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    r.kill_and_restart().await;
    assert!(
        r.logs().contains("resuming jobs pending at the last stop"),
        "{}",
        r.logs()
    );
    // WeCom retries a message it already got 200 for: the durable dedup still knows it.
    assert_eq!(r.post(&sent[0].2).await, 200);
    let got = r
        .wait_for_within("all 18 parts", Duration::from_secs(60), |m| m.len() >= 18)
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_now = r.standin.standin.messages();
    assert_eq!(got_now.len(), 18, "a part went out twice: {got:#?}");
    for user in ["alice", "bob"] {
        let received: String = got_now
            .iter()
            .filter(|m| m.touser == user)
            .filter_map(|m| m.content.clone())
            .collect();
        let expected: String = sent
            .iter()
            .filter(|(u, _, _)| *u == user)
            .map(|(_, text, _)| text.replace("\n\n", ""))
            .collect();
        assert_eq!(
            received.replace("\n\n", ""),
            expected,
            "{user}'s answers arrived whole, once, in order"
        );
    }
    drop(r);
    let _ = std::fs::remove_dir_all(&state);
}
