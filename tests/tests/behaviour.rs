//! The behaviour suite: each scenario runs against every twin in `WECOM_RELAY_TWINS`
//! (default `native`), on real sockets, with wechatpy from PyPI playing WeCom's side and the
//! local stand-in playing WeCom's server API.

use std::time::Duration;

use wecom_relay_core::testing::vectors;
use wecom_relay_core::wecom::split::split_for_wecom;
use wecom_relay_core::xml::parse_message;
use wecom_relay_standin::wecom::Fault;
use wecom_relay_tests::harness::{now, text_xml, AppSpec, Running, Scenario, Twin};
use wecom_relay_tests::peer::{EncryptedCallback, WechatpyPeer};

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(r: &Running, cb: &EncryptedCallback) -> (u16, String) {
    let resp = http()
        .post(r.callback_url(&cb.query))
        .body(cb.body.clone())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// wechatpy encrypts a text message from `user` for `app`, stamped now.
fn callback(
    peer: &mut WechatpyPeer,
    app: &AppSpec,
    user: &str,
    msg_id: u64,
    content: &str,
) -> EncryptedCallback {
    let ts = now();
    let xml = text_xml(&app.corp_id, user, app.agent_id, msg_id, content, ts);
    peer.encrypt_callback(&app.peer(), &xml, &ts.to_string(), &format!("n{msg_id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_vectors_over_a_real_socket() {
    let sets = vectors();
    for twin in Twin::selected() {
        let apps = sets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let user = parse_message(&s.callback.expected_plaintext)
                    .unwrap()
                    .from_user_name;
                let mut a = AppSpec::new(
                    &format!("official{i}"),
                    &s.corp_id,
                    s.agent_id.parse().unwrap(),
                    'x',
                    &[&user],
                );
                a.token = s.token.clone();
                a.key = s.encoding_aes_key.clone();
                a
            })
            .collect();
        let mut scenario = Scenario::new(apps);
        scenario.max_timestamp_skew_secs = 0; // the samples were signed in 2014 and 2016
        let r = Running::start(twin, scenario).await;
        for (i, set) in sets.iter().enumerate() {
            let resp = http()
                .get(r.callback_url(&set.verify_url.query))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{twin:?}");
            assert_eq!(
                resp.text().await.unwrap(),
                set.verify_url.expected_body,
                "{twin:?}: exactly the plaintext"
            );
            let resp = http()
                .post(r.callback_url(&set.callback.query))
                .body(set.callback.body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{twin:?}");
            let corp = set.corp_id.clone();
            let got = r
                .wait_for("the echo of the official message", |m| {
                    m.iter().any(|d| d.corp_id == corp)
                })
                .await;
            let reply = got.iter().find(|d| d.corp_id == corp).unwrap();
            assert_eq!(
                reply.agent_id,
                set.agent_id.parse::<u64>().unwrap(),
                "reply through app {i}"
            );
            assert!(set
                .callback
                .expected_plaintext
                .contains(reply.content.as_deref().unwrap()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_corps_sharing_a_user_id_are_two_people() {
    for twin in Twin::selected() {
        let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["zhangsan"]);
        let b = AppSpec::new("b", "wwcorpB", 1000005, 'b', &["zhangsan", "lisi"]);
        let mut scenario = Scenario::new(vec![a.clone(), b.clone()]);
        // zhangsan is allowed in corp A only; lisi (bare entry) in any corp.
        scenario.allowed_users = vec!["wwcorpA:ZhangSan".into(), "lisi".into()];
        let r = Running::start(twin, scenario).await;
        let mut peer = WechatpyPeer::start();
        assert_eq!(
            post(&r, &callback(&mut peer, &a, "zhangsan", 1, "hello from A"))
                .await
                .0,
            200
        );
        assert_eq!(
            post(&r, &callback(&mut peer, &b, "zhangsan", 1, "hello from B"))
                .await
                .0,
            200
        );
        assert_eq!(
            post(&r, &callback(&mut peer, &b, "lisi", 2, "lisi in B"))
                .await
                .0,
            200
        );
        let got = r
            .wait_for("replies for A's zhangsan and B's lisi", |m| m.len() >= 2)
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = if got.len() == 2 {
            r.standin.standin.messages()
        } else {
            got
        };
        let mut summary: Vec<(String, u64, String, String)> = got
            .iter()
            .map(|d| {
                (
                    d.corp_id.clone(),
                    d.agent_id,
                    d.touser.clone(),
                    d.content.clone().unwrap(),
                )
            })
            .collect();
        // Different users are served concurrently: compare as a set.
        summary.sort();
        assert_eq!(
            summary,
            vec![
                ("wwcorpA".into(), 1000002, "zhangsan".into(), "hello from A".into()),
                ("wwcorpB".into(), 1000005, "lisi".into(), "lisi in B".into()),
            ],
            "{twin:?}: corp B's zhangsan must be denied, and each reply must go through its own corp's app"
        );
        let logs = r.wait_for_log("denied by the access policy").await;
        assert!(logs.contains("denied by the access policy"), "{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_retries_are_acknowledged_and_answered_once() {
    for twin in Twin::selected() {
        let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"]);
        let r = Running::start(twin, Scenario::new(vec![a.clone()])).await;
        let mut peer = WechatpyPeer::start();
        let cb = callback(&mut peer, &a, "alice", 77, "only once please");
        for _ in 0..3 {
            assert_eq!(post(&r, &cb).await, (200, "success".into()), "{twin:?}");
        }
        // An event is deduped by user and CreateTime.
        r.wait_for("one reply", |m| !m.is_empty()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            r.standin.standin.messages().len(),
            1,
            "{twin:?}: a retry was answered twice"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_replies_are_split_never_truncated() {
    for twin in Twin::selected() {
        let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"]);
        let r = Running::start(twin, Scenario::new(vec![a.clone()])).await;
        let mut peer = WechatpyPeer::start();
        let mut text = String::new();
        for i in 0..60 {
            text.push_str(&format!("第{i}段：企业微信会在 2048 字节处截断文本，中继必须拆分。Paragraph {i} in English.\n\n"));
        }
        text.push_str("```rust\nfn main() {\n    println!(\"code survives\");\n}\n```\n");
        assert!(text.len() > 3 * 2048);
        assert_eq!(
            post(&r, &callback(&mut peer, &a, "alice", 9, &text))
                .await
                .0,
            200
        );
        let expected = split_for_wecom(&text);
        let got = r
            .wait_for("every part", |m| m.len() >= expected.len())
            .await;
        let parts: Vec<String> = got.iter().map(|d| d.content.clone().unwrap()).collect();
        assert_eq!(parts, expected, "{twin:?}: parts arrive in order");
        assert!(got
            .iter()
            .all(|d| !d.truncated && d.content.as_ref().unwrap().len() <= 2048));
        assert_eq!(parts.concat(), text, "{twin:?}: nothing lost or repeated");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_mid_flight_is_refreshed_and_the_reply_still_arrives() {
    for twin in Twin::selected() {
        let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"]);
        let r = Running::start(twin, Scenario::new(vec![a.clone()])).await;
        let mut peer = WechatpyPeer::start();
        assert_eq!(
            post(&r, &callback(&mut peer, &a, "alice", 1, "first"))
                .await
                .0,
            200
        );
        r.wait_for("the first reply", |m| m.len() == 1).await;
        assert_eq!(r.standin.standin.gettoken_calls(), 1);
        // WeCom may invalidate a token before expires_in: the next send meets 42001.
        r.standin.standin.expire_tokens();
        assert_eq!(
            post(&r, &callback(&mut peer, &a, "alice", 2, "second"))
                .await
                .0,
            200
        );
        let got = r.wait_for("the second reply", |m| m.len() == 2).await;
        assert_eq!(got[1].content.as_deref(), Some("second"));
        assert_eq!(
            r.standin.standin.gettoken_calls(),
            2,
            "{twin:?}: exactly one refresh"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_outside_the_window_and_bad_input_are_refused() {
    for twin in Twin::selected() {
        let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"]);
        let r = Running::start(twin, Scenario::new(vec![a.clone()])).await;
        let mut peer = WechatpyPeer::start();
        let old = now() - 3600;
        let xml = text_xml(
            &a.corp_id,
            "alice",
            a.agent_id,
            5,
            "captured an hour ago",
            old,
        );
        let replay = peer.encrypt_callback(&a.peer(), &xml, &old.to_string(), "n");
        assert_eq!(
            post(&r, &replay).await.0,
            400,
            "{twin:?}: a valid but stale callback"
        );
        let good = callback(&mut peer, &a, "alice", 6, "fresh");
        let forged = EncryptedCallback {
            query: good.query.replace("nonce=", "nonce=x"),
            ..good.clone()
        };
        assert_eq!(post(&r, &forged).await.0, 403);
        let garbage = EncryptedCallback {
            body: "<xml><Encrypt>%%%</Encrypt></xml>".into(),
            ..good.clone()
        };
        assert_eq!(
            post(&r, &garbage).await.0,
            403,
            "signature is checked before anything else"
        );
        let huge = EncryptedCallback {
            body: "x".repeat(200_000),
            ..good.clone()
        };
        assert_eq!(post(&r, &huge).await.0, 413);
        assert_eq!(post(&r, &good).await.0, 200);
        r.wait_for("the fresh reply", |m| m.len() == 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(r.standin.standin.messages().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_egress_ip_is_reported_in_one_clear_line() {
    for twin in Twin::selected() {
        let mut a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"]);
        a.trusted = false;
        let r = Running::start(twin, Scenario::new(vec![a.clone()])).await;
        let mut peer = WechatpyPeer::start();
        assert_eq!(
            post(&r, &callback(&mut peer, &a, "alice", 1, "hi")).await.0,
            200
        );
        let logs = r.wait_for_log("60020").await;
        // Give a (wrong) second report time to show up.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let logs = if logs.is_empty() { logs } else { r.logs() };
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains("60020")).collect();
        assert_eq!(lines.len(), 1, "{twin:?}: {logs}");
        assert!(
            lines[0].contains("trusted IPs")
                && lines[0].contains("127.0.0.1")
                && lines[0].contains("api_base"),
            "{}",
            lines[0]
        );
        assert!(
            !logs.contains(&a.secret) && !logs.contains("standin-token"),
            "a secret or token leaked into the log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_users_get_one_notice_per_hour_at_most() {
    for twin in Twin::selected() {
        let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice", "mallory"]);
        let mut scenario = Scenario::new(vec![a.clone()]);
        scenario.allowed_users = vec!["alice".into()];
        scenario.deny_message = Some("not enabled for you".into());
        let r = Running::start(twin, scenario).await;
        let mut peer = WechatpyPeer::start();
        for id in 1..=3 {
            assert_eq!(
                post(&r, &callback(&mut peer, &a, "mallory", id, "let me in"))
                    .await
                    .0,
                200
            );
        }
        let got = r.wait_for("the deny notice", |m| !m.is_empty()).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let got = if got.len() == 1 {
            r.standin.standin.messages()
        } else {
            got
        };
        assert_eq!(got.len(), 1, "{twin:?}");
        assert_eq!(
            (got[0].touser.as_str(), got[0].content.as_deref()),
            ("mallory", Some("not enabled for you"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_intake_and_drains_accepted_work() {
    let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"]);
    let mut r = Running::start(Twin::Native, Scenario::new(vec![a.clone()])).await;
    let mut peer = WechatpyPeer::start();
    // Hold the reply back: WeCom is busy for the first attempts, so the job is in flight.
    r.standin
        .standin
        .inject(Fault::errcode("/cgi-bin/message/send", -1, 2));
    assert_eq!(
        post(&r, &callback(&mut peer, &a, "alice", 1, "finish me"))
            .await
            .0,
        200
    );
    let clean = tokio::task::block_in_place(|| r.terminate());
    assert!(clean, "exit status after SIGTERM; log:\n{}", r.logs());
    let got = r.standin.standin.messages();
    assert_eq!(
        got.len(),
        1,
        "the accepted message was answered before exit; log:\n{}",
        r.logs()
    );
    assert!(r.logs().contains("all in-flight work finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_messages_are_answered_in_arrival_order() {
    // Without its Durable Objects the Worker runs each job in its own invocation (waitUntil or
    // a Queue delivery), which keeps no per-user order; see README, "Differences between the
    // twins". With them, a user's object works that user's jobs in order.
    for twin in Twin::selected()
        .into_iter()
        .filter(|t| matches!(t, Twin::Native | Twin::WorkerObjects))
    {
        let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice", "bob"]);
        let r = Running::start(twin, Scenario::new(vec![a.clone()])).await;
        let mut peer = WechatpyPeer::start();
        // WeCom is slow to take alice's first reply; her later ones must wait for it.
        r.standin.standin.inject(Fault {
            times: 1,
            ..Fault::slow("/cgi-bin/message/send", 600)
        });
        for i in 1..=5 {
            assert_eq!(
                post(
                    &r,
                    &callback(&mut peer, &a, "alice", i, &format!("alice {i}"))
                )
                .await
                .0,
                200
            );
        }
        assert_eq!(
            post(&r, &callback(&mut peer, &a, "bob", 9, "bob 1"))
                .await
                .0,
            200
        );
        let got = r.wait_for("six replies", |m| m.len() == 6).await;
        let alice: Vec<String> = got
            .iter()
            .filter(|d| d.touser == "alice")
            .map(|d| d.content.clone().unwrap())
            .collect();
        assert_eq!(
            alice,
            ["alice 1", "alice 2", "alice 3", "alice 4", "alice 5"],
            "{twin:?}"
        );
        // bob did not wait behind alice's slow reply.
        assert_eq!(got[0].touser, "bob", "{twin:?}: users are independent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_messages_fetch_one_token() {
    // Isolates share no lock: on the Worker without its token objects two may both refresh (KV
    // keeps the right token). With them, the app's object fetches once for everyone.
    for twin in Twin::selected()
        .into_iter()
        .filter(|t| matches!(t, Twin::Native | Twin::WorkerObjects))
    {
        let users: Vec<String> = (0..12).map(|i| format!("user{i}")).collect();
        let refs: Vec<&str> = users.iter().map(String::as_str).collect();
        let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &refs);
        let r = Running::start(twin, Scenario::new(vec![a.clone()])).await;
        // Slow token endpoint: every job finds the cache empty at once.
        r.standin.standin.inject(Fault {
            times: 1,
            ..Fault::slow("/cgi-bin/gettoken", 400)
        });
        let mut peer = WechatpyPeer::start();
        let callbacks: Vec<EncryptedCallback> = users
            .iter()
            .enumerate()
            .map(|(i, u)| callback(&mut peer, &a, u, i as u64 + 1, "hi"))
            .collect();
        // Each answer comes at once; the twelve jobs then run concurrently in the relay.
        for cb in &callbacks {
            assert_eq!(post(&r, cb).await.0, 200);
        }
        r.wait_for("twelve replies", |m| m.len() == 12).await;
        assert_eq!(
            r.standin.standin.gettoken_calls(),
            1,
            "{twin:?}: one refresh under concurrency"
        );
    }
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_key_not_the_secret() {
    let dir = std::env::temp_dir().join(format!("wecom-relay-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    let app = |name: &str, token: &str, aes: &str, agent: &str| serde_json::json!({"name": name, "corp_id": "ww1", "corp_secret": "TOPSECRET-VALUE", "agent_id": agent, "token": token, "encoding_aes_key": aes});
    let cases = [
        (
            vec![app(
                "a",
                "t",
                "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
                "1",
            )],
            "apps[0].encoding_aes_key",
        ),
        (
            vec![app("a", "t", key, "1"), app("a", "u", key, "2")],
            "apps[1].name",
        ),
        (vec![app("a", "t", key, "12ab")], "apps[0].agent_id"),
        (
            vec![app("a", "t", key, "1"), app("b", "t", key, "2")],
            "apps[1].token",
        ),
    ];
    for (apps, key_name) in cases {
        let path = dir.join("config.yaml");
        let cfg = serde_json::json!({"platforms": {"wecom_callback": {"extra": {"apps": apps}}}});
        std::fs::write(&path, serde_yaml_ng::to_string(&cfg).unwrap()).unwrap();
        let out = std::process::Command::new(wecom_relay_tests::harness::relay_binary())
            .args(["serve", "--config"])
            .arg(&path)
            .env("WECOM_CALLBACK_PORT", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(key_name),
            "{key_name} not named in {stderr:?}"
        );
        assert!(
            !stderr.contains("TOPSECRET") && !stderr.contains(key),
            "a secret leaked: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_cached_across_requests_even_short_lived_ones() {
    for twin in Twin::selected() {
        let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"]);
        let mut scenario = Scenario::new(vec![a.clone()]);
        // Shorter than KV's 60 s minimum TTL: the Worker must still store it (with TTL 60) and
        // must not use it past its own expiry.
        scenario.token_ttl = Duration::from_secs(40);
        let r = Running::start(twin, scenario).await;
        let mut peer = WechatpyPeer::start();
        for i in 1..=3 {
            assert_eq!(
                post(&r, &callback(&mut peer, &a, "alice", i, &format!("m{i}")))
                    .await
                    .0,
                200
            );
            r.wait_for("the reply", |m| m.len() == i as usize).await;
        }
        assert_eq!(
            r.standin.standin.gettoken_calls(),
            1,
            "{twin:?}: the token was not reused; log:\n{}",
            r.logs()
        );
        assert!(
            !r.logs().to_lowercase().contains("expiration_ttl"),
            "{twin:?}: KV refused the TTL:\n{}",
            r.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_mid_reply_resumes_without_resending_parts() {
    for twin in Twin::selected() {
        let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"]);
        let r = Running::start(twin, Scenario::new(vec![a.clone()])).await;
        // The second part meets "system busy" once.
        r.standin.standin.inject(Fault {
            after: 1,
            ..Fault::errcode("/cgi-bin/message/send", -1, 1)
        });
        let mut peer = WechatpyPeer::start();
        let text = "分段发送，失败后从断点继续。".repeat(200); // 8400 bytes
        assert_eq!(
            post(&r, &callback(&mut peer, &a, "alice", 3, &text))
                .await
                .0,
            200
        );
        let expected = split_for_wecom(&text);
        let got = r
            .wait_for("every part after the retry", |m| m.len() >= expected.len())
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let parts: Vec<String> = r
            .standin
            .standin
            .messages()
            .iter()
            .map(|d| d.content.clone().unwrap())
            .collect();
        assert_eq!(
            parts, expected,
            "{twin:?}: no part twice, none lost; {got:?}"
        );
        let logs = r.wait_for_log("reply sent").await;
        assert!(
            logs.contains("retrying") && logs.contains("attempts=2"),
            "{twin:?}: {logs}"
        );
    }
}

/// wechatpy encrypts `inner` (the elements after `CreateTime`) from `user` for `app`.
fn raw_callback(
    peer: &mut WechatpyPeer,
    app: &AppSpec,
    user: &str,
    at: u64,
    inner: &str,
) -> EncryptedCallback {
    let xml = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>\
         <CreateTime>{at}</CreateTime>{inner}<AgentID>{}</AgentID></xml>",
        app.corp_id, app.agent_id
    );
    peer.encrypt_callback(
        &app.peer(),
        &xml,
        &at.to_string(),
        &format!("n{at}{}", inner.len()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_once_a_day_menu_clicks_and_voice_transcripts() {
    for twin in Twin::selected() {
        let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"]);
        let mut scenario = Scenario::new(vec![a.clone()]);
        scenario.welcome_message = Some("Welcome back! Ask me anything.".into());
        scenario.menu_commands = vec![("K_HELLO".into(), "hello from the menu".into())];
        let r = Running::start(twin, scenario).await;
        let mut peer = WechatpyPeer::start();
        let ts = now();
        // Opening the app twice the same day: one welcome.
        let enter = "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event>";
        for at in [ts, ts + 1] {
            let cb = raw_callback(&mut peer, &a, "alice", at, enter);
            assert_eq!(post(&r, &cb).await, (200, "success".into()), "{twin:?}");
        }
        // A menu click stands for its text (the echo agent answers it).
        let click = "<MsgType>event</MsgType><Event>click</Event><EventKey>K_HELLO</EventKey>";
        let cb = raw_callback(&mut peer, &a, "alice", ts + 2, click);
        assert_eq!(post(&r, &cb).await.0, 200);
        // A voice message with WeCom's transcript: the agent reads the transcript.
        let voice = "<MsgType>voice</MsgType><MediaId>VOICE1</MediaId><Format>amr</Format>\
                     <Recognition><![CDATA[明天上午十点开会]]></Recognition><MsgId>4401</MsgId>";
        let cb = raw_callback(&mut peer, &a, "alice", ts + 3, voice);
        assert_eq!(post(&r, &cb).await.0, 200);
        let got = r.wait_for("three messages", |m| m.len() >= 3).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        // (In any order: the Worker without its user objects does not keep one.)
        let mut texts: Vec<String> = r
            .standin
            .standin
            .messages()
            .iter()
            .filter_map(|m| m.content.clone())
            .collect();
        texts.sort();
        let mut want = [
            "Welcome back! Ask me anything.",
            "hello from the menu",
            "明天上午十点开会",
        ];
        want.sort();
        assert_eq!(texts, want, "{twin:?}: {got:#?}");
        let logs = r.wait_for_log("welcome=already sent today").await;
        assert!(logs.contains("welcome=queued"), "{twin:?}: {logs}");
    }
}
