//! WeCom's AI bot (智能机器人) in callback mode, on every twin in `WECOM_RELAY_TWINS`: the
//! Python peer (wechatpy's own AES, receive id "") plays WeCom, polling streams as WeCom does;
//! the stand-in takes `response_url` messages; the OpenAI stand-in streams over server-sent
//! events.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wecom_relay_core::aibot::stream::{CONTINUED_NOTE, MAX_STREAM_BYTES, UNKNOWN_STREAM_TEXT};
use wecom_relay_core::relay::HELP_TEXT;
use wecom_relay_standin::openai::{ChatFault, OpenAiStandin};
use wecom_relay_tests::harness::{now, redis_url, AppSpec, BotSpec, Running, Scenario, Twin};
use wecom_relay_tests::peer::{PeerBot, WechatpyPeer};

fn bot() -> BotSpec {
    BotSpec::new("helper", 3)
}

fn scenario() -> Scenario {
    let mut s = Scenario::new(vec![AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"])]);
    s.bots = vec![bot()];
    s
}

/// WeCom's side of one bot: signs and seals callbacks, opens and checks the replies.
struct Wecom<'a> {
    /// The relay it calls (switch it to call another replica).
    r: &'a Running,
    bot: BotSpec,
    peer: WechatpyPeer,
    seq: u64,
}

/// A passive reply, opened.
#[derive(Debug)]
struct Reply {
    status: u16,
    json: Option<Value>,
}

impl<'a> Wecom<'a> {
    fn new(r: &'a Running) -> Self {
        Self {
            r,
            bot: r.scenario.bots[0].clone(),
            peer: WechatpyPeer::start(),
            seq: 0,
        }
    }

    fn peer_bot(&self) -> PeerBot {
        PeerBot {
            token: self.bot.token.clone(),
            key: self.bot.key.clone(),
        }
    }

    fn url(&self, query: &str) -> String {
        format!("{}{}?{query}", self.r.base, self.bot.path())
    }

    /// POSTs `plain` as WeCom would and opens the reply, checking that it is sealed for
    /// this callback (its nonce) and signed with the bot's token.
    async fn post(&mut self, plain: &Value) -> Reply {
        self.seq += 1;
        let nonce = format!("nonce{}", self.seq);
        let (query, body) = self.peer.bot_callback(
            &self.peer_bot(),
            &plain.to_string(),
            &now().to_string(),
            &nonce,
        );
        let resp = reqwest::Client::new()
            .post(self.url(&query))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        if text.is_empty() {
            return Reply { status, json: None };
        }
        let (plain, _ts, reply_nonce) = self
            .peer
            .bot_open_reply(&self.peer_bot(), &text)
            .unwrap_or_else(|e| panic!("the reply does not open: {e}: {text}"));
        assert_eq!(reply_nonce, nonce, "the reply reuses the callback's nonce");
        Reply {
            status,
            json: Some(serde_json::from_str(&plain).unwrap()),
        }
    }

    fn message(&self, msgid: &str, user: &str, text: &str, response_code: Option<&str>) -> Value {
        let mut m = json!({
            "msgid": msgid,
            "aibotid": self.bot.aibotid,
            "chattype": "single",
            "from": {"userid": user},
            "msgtype": "text",
            "text": {"content": text},
        });
        if let Some(code) = response_code {
            m["response_url"] = json!(format!(
                "{}/cgi-bin/aibot/response?response_code={code}",
                self.r.standin.base_url()
            ));
        }
        m
    }

    fn refresh(&self, stream: &str, user: &str) -> Value {
        json!({
            "msgid": format!("refresh-{}", self.seq),
            "aibotid": self.bot.aibotid,
            "chattype": "single",
            "from": {"userid": user},
            "msgtype": "stream",
            "stream": {"id": stream},
        })
    }

    /// Polls a stream as WeCom does (about every 300 ms here) until `finish: true`, checking
    /// that every answer starts with the one before. The answers, in order.
    async fn poll(&mut self, stream: &str, user: &str, limit: Duration) -> Vec<String> {
        let started = Instant::now();
        let mut seen: Vec<String> = Vec::new();
        loop {
            let reply = self.post(&self.refresh(stream, user)).await;
            assert_eq!(reply.status, 200);
            let json = reply.json.expect("a refresh is answered");
            assert_eq!(json["msgtype"], "stream");
            assert_eq!(json["stream"]["id"], stream);
            let content = json["stream"]["content"].as_str().unwrap().to_owned();
            assert!(content.len() <= MAX_STREAM_BYTES, "{} bytes", content.len());
            if let Some(last) = seen.last() {
                assert!(
                    content.starts_with(last.as_str()),
                    "content shrank or changed: {last:?} then {content:?}"
                );
            }
            if seen.last() != Some(&content) {
                seen.push(content);
            }
            if json["stream"]["finish"] == true {
                return seen;
            }
            assert!(
                started.elapsed() < limit,
                "the stream did not finish: {seen:?}\n{}",
                self.r.logs()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The stream id of a first answer.
fn stream_of(reply: &Reply) -> String {
    let json = reply.json.as_ref().expect("a stream answer");
    assert_eq!(json["msgtype"], "stream", "{json}");
    assert_eq!(json["stream"]["finish"], false, "{json}");
    assert_eq!(
        json["stream"]["content"], "",
        "no placeholder: content only grows"
    );
    json["stream"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_streams_to_completion_and_a_retry_finds_the_same_stream() {
    for twin in Twin::selected() {
        let r = Running::start(twin, scenario()).await;
        let mut wecom = Wecom::new(&r);
        // URL verification: the plaintext, at once.
        let query =
            wecom
                .peer
                .bot_verify_url(&wecom.peer_bot(), "echo-123", &now().to_string(), "v1");
        let resp = reqwest::get(wecom.url(&query)).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{twin:?}");
        assert_eq!(resp.text().await.unwrap(), "echo-123");

        let text = "Streaming is the point of the bot: this sentence arrives in pieces.";
        let first = wecom.post(&wecom.message("m-1", "alice", text, None)).await;
        assert_eq!(first.status, 200, "{twin:?}: {}", r.logs());
        let stream = stream_of(&first);
        // WeCom's retry of the same msgid: the same stream, no second job.
        let again = wecom.post(&wecom.message("m-1", "alice", text, None)).await;
        assert_eq!(again.json.unwrap()["stream"]["id"], stream.as_str());
        let seen = wecom.poll(&stream, "alice", Duration::from_secs(20)).await;
        assert_eq!(seen.last().unwrap(), text, "{twin:?}");
        assert!(
            seen.iter().any(|c| !c.is_empty() && c != text),
            "{twin:?}: the echo grows in steps, not at once: {seen:?}"
        );
        // A refresh after the end still says finished, with the same content.
        let after = wecom.post(&wecom.refresh(&stream, "alice")).await;
        let after = after.json.unwrap();
        assert_eq!(after["stream"]["finish"], true);
        assert_eq!(after["stream"]["content"], text);
        // Exactly one job: the retry did not ask the agent again.
        let logs = r.logs();
        assert_eq!(
            logs.matches("bot message accepted").count(),
            1,
            "{twin:?}: {logs}"
        );
        assert!(logs.contains("bot message seen before"), "{logs}");
        // No message went through the app's API: the bot answers in its stream.
        assert!(r.standin.standin.messages().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_mentions_commands_events_and_strangers() {
    for twin in Twin::selected() {
        let mut scenario = scenario();
        scenario.allowed_users = vec!["alice".into(), "bob".into()];
        scenario.deny_message = Some("not for you".into());
        let r = Running::start(twin, scenario).await;
        let mut wecom = Wecom::new(&r);
        // A group @-mention: the mention is not part of the question.
        let mut group = wecom.message("g-1", "bob", "@helper what now?", None);
        group["chattype"] = json!("group");
        group["chatid"] = json!("chat42");
        let stream = stream_of(&wecom.post(&group).await);
        let seen = wecom.poll(&stream, "bob", Duration::from_secs(20)).await;
        assert_eq!(seen.last().unwrap(), "what now?", "{twin:?}");
        // /help is answered by the relay itself.
        let help = wecom
            .post(&wecom.message("c-1", "alice", "/help", None))
            .await;
        let stream = stream_of(&help);
        let seen = wecom.poll(&stream, "alice", Duration::from_secs(20)).await;
        assert_eq!(seen.last().unwrap(), HELP_TEXT);
        // enter_chat: the default greeting, mentioning /help.
        let enter = json!({"aibotid": r.scenario.bots[0].aibotid, "from": {"userid": "alice"},
                           "msgtype": "event", "event": {"eventtype": "enter_chat"}, "msgid": "e-1"});
        let welcome = wecom.post(&enter).await.json.unwrap();
        assert_eq!(welcome["msgtype"], "text");
        assert!(welcome["text"]["content"]
            .as_str()
            .unwrap()
            .contains("/help"));
        // A rating of an answer: logged.
        let feedback = json!({"aibotid": r.scenario.bots[0].aibotid, "from": {"userid": "alice"},
                              "msgtype": "event", "msgid": "f-1",
                              "event": {"eventtype": "feedback_event",
                                        "feedback_event": {"id": "fb1", "type": 2}}});
        let rated = wecom.post(&feedback).await;
        assert_eq!((rated.status, rated.json.is_none()), (200, true));
        // A stranger: the stream ends at once with the deny message.
        let denied = wecom
            .post(&wecom.message("d-1", "mallory", "hi", None))
            .await;
        let denied = denied.json.unwrap();
        assert_eq!(denied["stream"]["finish"], true);
        assert_eq!(denied["stream"]["content"], "not for you");
        // A refresh for a stream nobody opened: finished, saying so.
        let unknown = wecom.post(&wecom.refresh("nosuchstream", "alice")).await;
        let unknown = unknown.json.unwrap();
        assert_eq!(unknown["stream"]["finish"], true);
        assert_eq!(unknown["stream"]["content"], UNKNOWN_STREAM_TEXT);
        for line in [
            "bot feedback bot=helper id=fb1 type=2",
            "bot enter_chat bot=helper welcome=true",
            "bot message denied user=aibot3:mallory",
            "bot stream unknown stream=nosuchstream",
        ] {
            let logs = r.wait_for_log(line).await;
            assert!(logs.contains(line), "{twin:?}: {line}\n{logs}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_and_a_foreign_key_are_refused() {
    for twin in Twin::selected() {
        let r = Running::start(twin, scenario()).await;
        let mut wecom = Wecom::new(&r);
        let plain = wecom.message("x-1", "alice", "hi", None).to_string();
        let (query, body) =
            wecom
                .peer
                .bot_callback(&wecom.peer_bot(), &plain, &now().to_string(), "n");
        let tampered: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some(("msg_signature", _)) => format!("msg_signature={}", "0".repeat(40)),
                _ => kv.to_owned(),
            })
            .collect();
        let tampered = tampered.join("&");
        let resp = reqwest::Client::new()
            .post(wecom.url(&tampered))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{twin:?}");
        // Sealed with another key (signed with the right token): refused, not answered.
        let stranger = PeerBot {
            token: wecom.bot.token.clone(),
            key: BotSpec::new("other", 9).key,
        };
        let (query, body) = wecom
            .peer
            .bot_callback(&stranger, &plain, &now().to_string(), "n");
        let resp = reqwest::Client::new()
            .post(wecom.url(&query))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{twin:?}");
        // Hostile shapes, each refused with its status and a line saying why.
        let good_query = {
            let (q, _) =
                wecom
                    .peer
                    .bot_callback(&wecom.peer_bot(), &plain, &now().to_string(), "n");
            q
        };
        let (stale_query, stale_body) =
            wecom
                .peer
                .bot_callback(&wecom.peer_bot(), &plain, &(now() - 3600).to_string(), "n");
        let client = reqwest::Client::new();
        for (what, query, body, status, why) in [
            (
                "not JSON",
                good_query.clone(),
                "<xml/>".to_owned(),
                400,
                "envelope",
            ),
            (
                "no encrypt",
                good_query.clone(),
                r#"{"x":1}"#.to_owned(),
                400,
                "envelope",
            ),
            (
                "over the cap",
                good_query.clone(),
                "x".repeat(70_000),
                413,
                "body larger than",
            ),
            (
                "a repeated parameter",
                format!("{good_query}&nonce=m"),
                r#"{"encrypt":"x"}"#.to_owned(),
                400,
                "query parameter nonce given more than once",
            ),
            ("an hour old", stale_query, stale_body, 400, "replay window"),
        ] {
            // Worker logs arrive late: count this case's line, not an earlier one.
            let needle = format!("bot callback refused ({status}): {why}");
            let before = r.logs().matches(&needle).count();
            let resp = client
                .post(wecom.url(&query))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), status, "{twin:?}: {what}");
            let deadline = Instant::now() + Duration::from_secs(5);
            while r.logs().matches(&needle).count() == before {
                assert!(
                    Instant::now() < deadline,
                    "{twin:?}: {what}: no line {needle:?}\n{}",
                    r.logs()
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        let put = client.put(wecom.url("")).send().await.unwrap();
        assert_eq!(put.status().as_u16(), 405);
        assert_eq!(put.headers()["allow"], "GET, POST");
        let logs = r.wait_for_log("bot callback refused (400)").await;
        assert!(
            logs.contains("bot callback refused (403): no app verifies the signature"),
            "{logs}"
        );
        assert!(!logs.contains("bot message accepted"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_answer_continues_through_the_response_url() {
    for twin in Twin::selected() {
        let r = Running::start(twin, scenario()).await;
        let mut wecom = Wecom::new(&r);
        // 30 paragraphs of 1,000 bytes: 30 KB, more than one stream holds.
        let paragraphs: Vec<String> = (0..30)
            .map(|i| format!("{i:03} {}", "x".repeat(996)))
            .collect();
        let text = paragraphs.join("\n\n");
        let code = r.standin.standin.issue_response_code();
        let first = wecom
            .post(&wecom.message("long-1", "alice", &text, Some(&code)))
            .await;
        assert_eq!(first.status, 200, "{twin:?}: {}", r.logs());
        let stream = stream_of(&first);
        let seen = wecom.poll(&stream, "alice", Duration::from_secs(30)).await;
        let last = seen.last().unwrap();
        let head = last
            .strip_suffix(CONTINUED_NOTE)
            .unwrap_or_else(|| panic!("{twin:?}: the stream says it continues: {last:?}"));
        // The rest arrives through the response_url, once, and nothing is lost.
        let deadline = Instant::now() + Duration::from_secs(20);
        while r.standin.standin.bot_replies().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let replies = r.standin.standin.bot_replies();
        assert_eq!(replies.len(), 1, "{twin:?}: {}", r.logs());
        assert_eq!(replies[0].code, code);
        assert_eq!(replies[0].msgtype, "markdown");
        assert_eq!(
            format!("{head}\n\n{}", replies[0].content),
            text,
            "{twin:?}"
        );
        assert!(head.ends_with('x'), "cut at a paragraph");
        r.wait_for_log("answer continued through response_url")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_is_cut_over_at_the_limit_and_finished_through_the_response_url() {
    for twin in Twin::selected() {
        let ai = OpenAiStandin::new("sk-standin-0000").serve().await.unwrap();
        // Pieces 400 ms apart: the answer takes longer than the 3 s stream limit.
        ai.standin.inject(ChatFault {
            piece_delay_ms: Some(400),
            ..ChatFault::default()
        });
        let mut scenario = scenario();
        scenario.stream_limit_secs = Some(3);
        scenario.agent = vec![
            ("AGENT_KIND".into(), "openai".into()),
            ("AGENT_BASE_URL".into(), ai.base_url()),
            ("AGENT_API_KEY".into(), "sk-standin-0000".into()),
            ("AGENT_MODEL".into(), "standin-model".into()),
            ("AGENT_THINKING_NOTICE_SECS".into(), "0".into()),
        ];
        let r = Running::start(twin, scenario).await;
        let mut wecom = Wecom::new(&r);
        let code = r.standin.standin.issue_response_code();
        let question = "tell me something that takes a while to say";
        let first = wecom
            .post(&wecom.message("slow-1", "alice", question, Some(&code)))
            .await;
        let stream = stream_of(&first);
        let seen = wecom.poll(&stream, "alice", Duration::from_secs(15)).await;
        let expected = format!("reply to {question} (history: 0 earlier messages)");
        let last = seen.last().unwrap();
        assert!(
            seen.len() >= 2 && last.len() < expected.len() + 60,
            "{twin:?}: the stream grew, then ended early: {seen:?}"
        );
        // The model was asked to stream.
        assert_eq!(ai.standin.requests()[0]["stream"], true);
        let deadline = Instant::now() + Duration::from_secs(20);
        while r.standin.standin.bot_replies().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let replies = r.standin.standin.bot_replies();
        assert_eq!(replies.len(), 1, "{twin:?}: {}", r.logs());
        let shown = last.split("\n\n").next().unwrap();
        assert!(expected.starts_with(shown), "{shown:?}");
        assert_eq!(
            format!("{shown}{}", replies[0].content),
            expected,
            "{twin:?}: what the stream did not show follows, nothing more"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_agent_answers_a_stream_later_and_hears_of_ratings() {
    use wecom_relay_tests::webhook::serve_webhook;
    for twin in Twin::selected() {
        let mut scenario = scenario();
        let receiver = serve_webhook(&mut scenario).await;
        let r = Running::start(twin, scenario).await;
        let mut wecom = Wecom::new(&r);
        // At once.
        let now_msg = wecom.post(&wecom.message("w-1", "alice", "hi", None)).await;
        let seen = wecom
            .poll(&stream_of(&now_msg), "alice", Duration::from_secs(20))
            .await;
        assert_eq!(seen.last().unwrap(), "webhook got: hi", "{twin:?}");
        // Later: the webhook answers 202, then POSTs to /api/send with the stream.
        let later = wecom
            .post(&wecom.message("w-2", "alice", "later: think", None))
            .await;
        let stream = stream_of(&later);
        let seen = wecom.poll(&stream, "alice", Duration::from_secs(20)).await;
        assert_eq!(
            seen.last().unwrap(),
            "later reply to later: think",
            "{twin:?}"
        );
        // A rating reaches the webhook as a signed `feedback` event.
        let feedback = json!({"aibotid": r.scenario.bots[0].aibotid, "from": {"userid": "alice"},
                              "msgtype": "event", "msgid": "f-9",
                              "event": {"eventtype": "feedback_event",
                                        "feedback_event": {"id": "fb9", "type": 1, "content": "great"}}});
        assert_eq!(wecom.post(&feedback).await.status, 200);
        let deadline = Instant::now() + Duration::from_secs(15);
        let stats = loop {
            let stats = receiver.stats().await;
            if stats["events"].as_array().unwrap().len() >= 3 || Instant::now() > deadline {
                break stats;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let events = stats["events"].as_array().unwrap();
        assert_eq!(events.len(), 3, "{twin:?}: {stats}");
        assert_eq!(events[1]["stream"], stream.as_str());
        assert_eq!(events[1]["conversation"], "aibot3:alice");
        assert_eq!(events[2]["event"], "feedback");
        assert_eq!(events[2]["feedback"]["feedback_id"], "fb9");
        assert_eq!(events[2]["feedback"]["rating"], 1);
        assert_eq!(events[2]["text"], "great");
        assert_eq!(stats["rejected"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_one_across_replicas_on_redis() {
    if !Twin::selected().contains(&Twin::Native) {
        return;
    }
    let redis = |s: &mut Scenario| {
        s.env = vec![
            ("WECOM_RELAY_REDIS_URL".into(), redis_url(5)),
            ("WECOM_RELAY_REDIS_LEASE_SECS".into(), "2".into()),
        ];
    };
    let mut scenario_a = scenario();
    redis(&mut scenario_a);
    let a = Running::start(Twin::Native, scenario_a).await;
    let mut scenario_b = scenario();
    redis(&mut scenario_b);
    scenario_b.api_base = Some(a.standin.base_url());
    let b = Running::start(Twin::Native, scenario_b).await;
    let mut wecom = Wecom::new(&a);
    let text = "one stream, whichever replica WeCom's refresh lands on";
    let stream = stream_of(&wecom.post(&wecom.message("r-1", "alice", text, None)).await);
    // The retry lands on B: the same stream, no second job.
    wecom.r = &b;
    let again = wecom.post(&wecom.message("r-1", "alice", text, None)).await;
    assert_eq!(again.json.unwrap()["stream"]["id"], stream.as_str());
    // Refreshes alternate between the replicas, and the content only grows.
    let mut seen: Vec<String> = Vec::new();
    for i in 0.. {
        wecom.r = if i % 2 == 0 { &a } else { &b };
        let json = wecom
            .post(&wecom.refresh(&stream, "alice"))
            .await
            .json
            .unwrap();
        let content = json["stream"]["content"].as_str().unwrap().to_owned();
        if let Some(last) = seen.last() {
            assert!(
                content.starts_with(last.as_str()),
                "{last:?} then {content:?}"
            );
        }
        seen.push(content);
        if json["stream"]["finish"] == true {
            break;
        }
        assert!(i < 100, "never finished: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen.last().unwrap(), text);
    let accepted = a.logs().matches("bot message accepted").count()
        + b.logs().matches("bot message accepted").count();
    assert_eq!(accepted, 1, "one job for the message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_kill_9_with_the_durable_store() {
    if !Twin::selected().contains(&Twin::Native) {
        return;
    }
    let state =
        std::env::temp_dir().join(format!("wecom-relay-aibot-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut scenario = scenario();
    scenario.env = vec![("WECOM_RELAY_STATE_DIR".into(), state.display().to_string())];
    let mut r = Running::start(Twin::Native, scenario).await;
    let text = "Accepted means delivered, for streams too: this answer outlives its process.";
    let stream = {
        let mut wecom = Wecom::new(&r);
        let stream = stream_of(&wecom.post(&wecom.message("k-1", "alice", text, None)).await);
        // Mid-answer: the echo takes 1.5 s in four steps.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let json = wecom
            .post(&wecom.refresh(&stream, "alice"))
            .await
            .json
            .unwrap();
        assert_eq!(
            json["stream"]["finish"], false,
            "killed too late to prove anything"
        );
        stream
    };
    r.kill_and_restart().await;
    let mut wecom = Wecom::new(&r);
    let seen = wecom.poll(&stream, "alice", Duration::from_secs(20)).await;
    assert_eq!(seen.last().unwrap(), text, "{}", r.logs());
    assert!(
        r.logs().contains("resuming jobs pending at the last stop"),
        "{}",
        r.logs()
    );
    drop(wecom);
    drop(r);
    let _ = std::fs::remove_dir_all(&state);
}
