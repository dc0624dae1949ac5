//! Several native replicas on one Redis: WeCom's retries may land on either, and a replica may
//! die mid-answer. Every message is answered once, in each user's order.

use std::time::Duration;

use wecom_relay_standin::wecom::Fault;
use wecom_relay_tests::harness::{now, redis_url, text_xml, AppSpec, Running, Scenario, Twin};
use wecom_relay_tests::peer::WechatpyPeer;

fn replicas_scenario(app: &AppSpec, db: u8) -> Scenario {
    let mut scenario = Scenario::new(vec![app.clone()]);
    scenario.env = vec![
        ("WECOM_RELAY_REDIS_URL".into(), redis_url(db)),
        ("WECOM_RELAY_REDIS_LEASE_SECS".into(), "2".into()),
    ];
    scenario
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_answer_each_message_once_and_take_over_a_dead_ones_jobs() {
    if !Twin::selected().contains(&Twin::Native) {
        return;
    }
    let users = ["alice", "bob", "carol"];
    let app = AppSpec::new("hr", "wwcorpA", 1000002, 'a', &users);
    // Replica A starts first and takes every job partition; B shares its Redis and stand-in.
    let mut a = Running::start(Twin::Native, replicas_scenario(&app, 3)).await;
    a.wait_for_log("job partition taken").await;
    let mut scenario_b = replicas_scenario(&app, 3);
    scenario_b.api_base = Some(a.standin.base_url());
    let b = Running::start(Twin::Native, scenario_b).await;

    // The same callbacks to both replicas, as WeCom's retries can land on either.
    let mut peer = WechatpyPeer::start();
    let ts = now();
    let mut expected = Vec::new();
    for i in 0..9u64 {
        let user = users[(i % 3) as usize];
        let text = format!("{user} says {i}");
        let xml = text_xml(&app.corp_id, user, app.agent_id, 700 + i, &text, ts);
        let cb = peer.encrypt_callback(&app.peer(), &xml, &ts.to_string(), &format!("n{i}"));
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        assert_eq!(first.post(&cb).await, 200);
        assert_eq!(second.post(&cb).await, 200);
        expected.push((user, text));
    }
    a.wait_for("nine answers", |m| m.len() >= 9).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = a.standin.standin.messages();
    assert_eq!(got.len(), 9, "each message answered once: {got:#?}");
    for user in users {
        let texts: Vec<String> = got
            .iter()
            .filter(|m| m.touser == user)
            .filter_map(|m| m.content.clone())
            .collect();
        let want: Vec<String> = expected
            .iter()
            .filter(|(u, _)| *u == user)
            .map(|(_, t)| t.clone())
            .collect();
        assert_eq!(texts, want, "{user}'s answers in order");
    }

    // A dies mid-answer; B takes its partitions over and finishes, sending no part twice.
    a.standin
        .standin
        .inject(Fault::slow("/cgi-bin/message/send", 400));
    let long: String = (0..3)
        .map(|p| format!("part{p} {}", "z".repeat(1900)))
        .collect::<Vec<_>>()
        .join("\n\n");
    let xml = text_xml(&app.corp_id, "alice", app.agent_id, 800, &long, ts);
    let cb = peer.encrypt_callback(&app.peer(), &xml, &ts.to_string(), "n800");
    assert_eq!(b.post(&cb).await, 200);
    a.wait_for("the first part", |m| m.len() >= 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.kill();
    let got = a
        .wait_for_within("the rest, from B", Duration::from_secs(30), |m| {
            m.len() >= 12
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        a.standin.standin.messages().len(),
        12,
        "no part sent twice: {got:#?}"
    );
    let answer: String = got[9..].iter().filter_map(|m| m.content.clone()).collect();
    assert_eq!(answer.replace("\n\n", ""), long.replace("\n\n", ""));
    assert!(b.logs().contains("job partition taken"), "{}", b.logs());
}
