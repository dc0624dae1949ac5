//! Accepted means delivered, and memory stays bounded: above the queue's bounds the relay
//! answers 503 so WeCom keeps the message and retries; everything it answered 200 is answered.

use std::time::Duration;

use wecom_relay_standin::wecom::Fault;
use wecom_relay_tests::harness::{now, text_xml, AppSpec, Running, Scenario, Twin};
use wecom_relay_tests::peer::{EncryptedCallback, WechatpyPeer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_against_a_slow_api_is_refused_at_the_bound_and_every_200_is_answered() {
    if !Twin::selected().contains(&Twin::Native) {
        return;
    }
    let users: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let app = AppSpec::new("hr", "wwcorpA", 1000002, 'a', &user_refs);
    let mut scenario = Scenario::new(vec![app.clone()]);
    scenario.env = vec![
        ("WECOM_RELAY_MAX_QUEUED_JOBS".into(), "12".into()),
        ("WECOM_RELAY_MAX_QUEUED_PER_USER".into(), "3".into()),
        ("WECOM_RELAY_CONCURRENCY".into(), "2".into()),
    ];
    let r = Running::start(Twin::Native, scenario).await;
    r.standin
        .standin
        .inject(Fault::slow("/cgi-bin/message/send", 150));
    let mut peer = WechatpyPeer::start();
    let ts = now();
    let callbacks: Vec<EncryptedCallback> = (0..48u64)
        .map(|i| {
            let user = &users[(i % 8) as usize];
            let xml = text_xml(
                &app.corp_id,
                user,
                app.agent_id,
                100 + i,
                &format!("m{i}"),
                ts,
            );
            peer.encrypt_callback(&app.peer(), &xml, &ts.to_string(), &format!("n{i}"))
        })
        .collect();
    let mut refused = Vec::new();
    let mut accepted = 0;
    let mut peak_rss = 0;
    for cb in &callbacks {
        match r.post(cb).await {
            200 => accepted += 1,
            503 => refused.push(cb),
            other => panic!("unexpected status {other}"),
        }
        peak_rss = peak_rss.max(r.rss_kib().unwrap_or(0));
    }
    assert!(!refused.is_empty(), "the bounds were never reached");
    assert!(
        accepted >= 12,
        "at least a full queue was accepted: {accepted}"
    );
    let logs = r.wait_for_log("queue is full").await;
    assert!(logs.contains("left for WeCom to retry"), "{logs}");
    r.wait_for_within("every accepted message", Duration::from_secs(60), |m| {
        m.len() >= accepted
    })
    .await;
    // WeCom retries what got 503, until it gets in.
    let mut pending = refused;
    for _ in 0..200 {
        let mut still = Vec::new();
        for cb in pending {
            if r.post(cb).await != 200 {
                still.push(cb);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pending.is_empty(), "{} retries never got in", pending.len());
    let got = r
        .wait_for_within("all 48 answers", Duration::from_secs(60), |m| m.len() >= 48)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        r.standin.standin.messages().len(),
        48,
        "none answered twice"
    );
    let mut texts: Vec<String> = got.iter().filter_map(|m| m.content.clone()).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 48);
    let metrics = reqwest::get(format!("{}/metrics", r.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("outcome=\"not_queued\""), "{metrics}");
    assert!(
        peak_rss > 0 && peak_rss < 40 * 1024,
        "peak RSS {peak_rss} KiB"
    );
}

/// The default bounds against a flood: 12,000 distinct messages from 3,000 users, 32 at a time,
/// while the API answers slowly. Resident memory must stay under 40 MB. Long (about a minute),
/// so outside the test command: `cargo test -p wecom-relay-tests --test bounds -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute-long flood; run by hand"]
async fn a_flood_at_the_default_bounds_stays_under_40_mb() {
    use wecom_relay_core::crypto::MsgCrypt;
    use wecom_relay_core::xml::callback_envelope_xml;
    let users: Vec<String> = (0..3000).map(|i| format!("u{i}")).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let app = AppSpec::new("hr", "wwcorpA", 1000002, 'a', &user_refs);
    let r = Running::start(Twin::Native, Scenario::new(vec![app.clone()])).await;
    r.standin
        .standin
        .inject(Fault::slow("/cgi-bin/message/send", 2000));
    let crypt = MsgCrypt::new(&app.token, &app.key, &app.corp_id).unwrap();
    let ts = now();
    let client = reqwest::Client::new();
    let (mut peak, mut ok, mut busy) = (0u64, 0usize, 0usize);
    let bodies: Vec<(String, String)> = (0..12_000u64)
        .map(|i| {
            let user = &users[(i % 3000) as usize];
            let text = format!("message {i}: {}", "内容".repeat(100));
            let xml = text_xml(&app.corp_id, user, app.agent_id, 10_000 + i, &text, ts);
            let nonce = format!("n{i}");
            let sealed = crypt
                .encrypt(&xml, &[7; 16], &ts.to_string(), &nonce)
                .unwrap();
            let query = format!(
                "msg_signature={}&timestamp={ts}&nonce={nonce}",
                sealed.signature
            );
            let body = callback_envelope_xml(&app.corp_id, &sealed.encrypt, "1000002");
            (query, body)
        })
        .collect();
    for chunk in bodies.chunks(32) {
        let sent = chunk
            .iter()
            .map(|(query, body)| client.post(r.callback_url(query)).body(body.clone()).send());
        for resp in futures_util::future::join_all(sent).await {
            match resp.unwrap().status().as_u16() {
                200 => ok += 1,
                503 => busy += 1,
                other => panic!("status {other}"),
            }
        }
        peak = peak.max(r.rss_kib().unwrap_or(0));
    }
    println!("accepted {ok}, refused {busy}, peak RSS {} KiB", peak);
    assert!(busy > 0, "the default bound was reached");
    assert!(peak < 40 * 1024, "peak RSS {peak} KiB");
}
