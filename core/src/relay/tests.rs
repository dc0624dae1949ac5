//! The relay's own tests: the job runner with scripted agents, whole jobs over a
//! [`TestPlatform`], and the HTTP face with Tencent's vectors.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::runner::Runner;
use super::*;
use crate::agent::{Agent, AgentError, EchoAgent};
use crate::apps::{AppConfig, Apps};
use crate::config::RawSettings;
use crate::http::BodyError;
use crate::http::{Body, HttpResponse};
use crate::ids::{AgentId, ScopedUser};
use crate::job::{AgentInput, JobKind};
use crate::memory::{Role, Turn};
use crate::ports::{ConversationStore, NoRefreshLock, Platform};
use crate::testing::{block_on, vector_settings, vectors, TestPlatform};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const TOKEN: &str = r#"{"errcode":0,"access_token":"T","expires_in":7200}"#;
const SENT: &str = r#"{"errcode":0,"errmsg":"ok","msgid":"m"}"#;

fn apps() -> Apps {
    let cfg = AppConfig {
        welcome_message: None,
        name: Some("a".into()),
        corp_id: "ww1".into(),
        corp_secret: "s".into(),
        agent_id: "7".into(),
        token: "t".into(),
        encoding_aes_key: "A".repeat(43),
    };
    Apps::from_configs(&[cfg], true).unwrap()
}

fn job(text: &str) -> Job {
    Job {
        id: "ww1:7:m:1".into(),
        app: "a".into(),
        agent_id: AgentId(7),
        user: ScopedUser::new("ww1", "alice"),
        create_time: 1,
        kind: JobKind::Answer {
            input: AgentInput::Text { text: text.into() },
        },
    }
}

/// WeCom answers every call: a token, or a sent message.
fn answering(p: &TestPlatform) {
    p.http.respond_with(|req| {
        Some(Ok(HttpResponse::json(
            if req.path().ends_with("gettoken") {
                TOKEN
            } else {
                SENT
            },
        )))
    });
}

/// The texts of every message sent, in order.
fn sent_texts(p: &TestPlatform) -> Vec<String> {
    p.http
        .requests()
        .iter()
        .filter_map(|r| match &r.body {
            Body::Json(j) => {
                let v: serde_json::Value = serde_json::from_str(j).unwrap();
                v["text"]["content"].as_str().map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

/// Runs `f` with a runner over `p` whose agent is `agent`.
fn with_runner<A: Agent, T>(
    p: &TestPlatform,
    agent: &A,
    f: impl FnOnce(&Runner<'_, TestPlatform, A>) -> T,
) -> T {
    let apps = apps();
    let settings = AgentSettings::default();
    let http = ObservedHttp(p);
    let client = WeComClient {
        api_base: "http://x",
        http: &http,
        tokens: &p.tokens,
        clock: p.clock(),
        refresh: &NoRefreshLock,
    };
    let bots = crate::aibot::Bots::default();
    let runner = Runner {
        apps: &apps,
        bots: &bots,
        stream_limit_secs: 330,
        api_base: "http://x",
        media: &crate::media::MediaPolicy::default(),
        settings: &settings,
        agent,
        client: &client,
        platform: p,
        pace: super::runner::Pace::Defer,
    };
    f(&runner)
}

struct CountingAgent(AtomicUsize);
impl Agent for CountingAgent {
    async fn respond(
        &self,
        _job: &Job,
        _history: &[Turn],
        _media: &crate::media::Gathered,
    ) -> Result<Vec<String>, AgentError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(alloc::vec!["答".repeat(1500)]) // 4500 bytes: 3 parts
    }
}

struct Broken;
impl Agent for Broken {
    async fn respond(
        &self,
        _job: &Job,
        _h: &[Turn],
        _media: &crate::media::Gathered,
    ) -> Result<Vec<String>, AgentError> {
        Err(AgentError::fatal("401"))
    }
}

#[test]
fn a_retry_resumes_without_asking_the_agent_or_sending_twice() {
    let p = TestPlatform::at(1);
    let agent = CountingAgent(AtomicUsize::new(0));
    p.http
        .push_json(TOKEN)
        .push_json(SENT)
        .push_json(r#"{"errcode":-1,"errmsg":"system busy"}"#);
    let mut state = JobState::default();
    let step = with_runner(&p, &agent, |r| block_on(r.step(&job("q"), &mut state)));
    assert!(
        matches!(step, Step::RetryIn(d) if d.as_millis() >= 500),
        "{step:?}"
    );
    assert_eq!((state.parts_sent, state.parts_total), (1, 3));
    assert_eq!(p.lines_with("retrying job=ww1:7:m:1").len(), 1);
    p.http.push_json(SENT).push_json(SENT);
    let step = with_runner(&p, &agent, |r| block_on(r.step(&job("q"), &mut state)));
    let Step::Done(report) = step else {
        panic!("{step:?}")
    };
    assert_eq!(agent.0.load(Ordering::SeqCst), 1);
    assert_eq!((state.parts_sent, state.attempts), (3, 2));
    assert_eq!(
        report.to_string(),
        "reply sent job=ww1:7:m:1 parts=3 attempts=2"
    );
    let sends = p.http.paths();
    assert_eq!(
        sends.iter().filter(|p| p.ends_with("message/send")).count(),
        4
    );
}

/// Echoes, as [`EchoAgent`] does, but reads the memory: it answers with how many turns it
/// was given.
struct Recalling;
impl Agent for Recalling {
    async fn respond(
        &self,
        job: &Job,
        history: &[Turn],
        _media: &crate::media::Gathered,
    ) -> Result<Vec<String>, AgentError> {
        Ok(alloc::vec![format!(
            "{} after {}",
            crate::agent::job_text(job),
            history.len()
        )])
    }
}

#[test]
fn memory_commands_and_notices() {
    let p = TestPlatform::at(1);
    answering(&p);
    with_runner(&p, &Recalling, |r| {
        block_on(r.run(&job("first"), &mut JobState::default())).unwrap();
        block_on(r.run(&job("second"), &mut JobState::default())).unwrap();
        assert_eq!(sent_texts(&p), ["first after 0", "second after 2"]);
        let stored = block_on(p.conversations.load("ww1:alice")).unwrap();
        assert_eq!(stored.len(), 4);
        assert_eq!(
            (stored[0].role, stored[3].text.as_str()),
            (Role::User, "second after 2")
        );
        let mut st = JobState::default();
        block_on(r.run(&job(" /NEW "), &mut st)).unwrap();
        assert!(st.command);
        assert_eq!(st.replies.as_deref(), Some(&[RESET_TEXT.to_owned()][..]));
        assert!(block_on(p.conversations.load("ww1:alice"))
            .unwrap()
            .is_empty());
        let mut st = JobState::default();
        block_on(r.run(&job("/help"), &mut st)).unwrap();
        assert!(st.replies.unwrap()[0].contains("/reset"));
        assert!(
            block_on(p.conversations.load("ww1:alice"))
                .unwrap()
                .is_empty(),
            "commands never reach the agent or the memory"
        );
    });
}

#[test]
fn an_agent_that_reads_no_memory_gets_none_kept() {
    let p = TestPlatform::at(1);
    answering(&p);
    with_runner(&p, &EchoAgent, |r| {
        block_on(r.run(&job("first"), &mut JobState::default())).unwrap();
        block_on(r.run(&job("second"), &mut JobState::default())).unwrap();
    });
    assert_eq!(sent_texts(&p), ["first", "second"]);
    assert!(block_on(p.conversations.load("ww1:alice"))
        .unwrap()
        .is_empty());
}

#[test]
fn the_thinking_notice_goes_out_once_when_the_timer_wins() {
    struct SlowAgent;
    impl Agent for SlowAgent {
        async fn respond(
            &self,
            _job: &Job,
            _h: &[Turn],
            _media: &crate::media::Gathered,
        ) -> Result<Vec<String>, AgentError> {
            crate::testing::yield_a_few().await;
            Ok(alloc::vec!["done".into()])
        }
    }
    let p = TestPlatform::at(1);
    answering(&p);
    let mut st = JobState::default();
    with_runner(&p, &SlowAgent, |r| block_on(r.run(&job("q"), &mut st))).unwrap();
    assert!(st.notice_sent);
    assert_eq!(sent_texts(&p), [THINKING_TEXT, "done"]);

    // A timer that never fires: no notice.
    let mut p = TestPlatform::at(1);
    p.sleeper.never_fire();
    answering(&p);
    with_runner(&p, &SlowAgent, |r| {
        block_on(r.run(&job("q"), &mut JobState::default()))
    })
    .unwrap();
    assert_eq!(sent_texts(&p), ["done"]);
}

#[test]
fn a_final_failure_apologises_once_the_agent_never_answered() {
    let p = TestPlatform::at(1);
    answering(&p);
    let mut st = JobState::default();
    let step = with_runner(&p, &Broken, |r| block_on(r.step(&job("q"), &mut st)));
    let Step::GaveUp(report) = step else {
        panic!("{step:?}")
    };
    assert!(report.apologized);
    assert_eq!(sent_texts(&p), [APOLOGY_TEXT]);
    assert_eq!(report.failure_label().as_deref(), Some("agent"));
    let line = &p.lines_with("reply failed")[0];
    assert!(line.ends_with("apology=sent"), "{line}");
    assert!(p.events().iter().any(|(l, _)| *l == Level::Error));

    let mut answered = st.clone();
    answered.replies = Some(alloc::vec!["x".into()]);
    assert!(
        !with_runner(&p, &Broken, |r| block_on(r.apologize(&job("q"), &answered))),
        "an answer that failed to send is retried, not apologised for"
    );
}

fn relay_at(now: u64) -> Relay<TestPlatform> {
    relay_with(now, &[])
}

/// A relay for one app (`ww1`, agent 7) that allows everyone, with these settings added.
fn relay_with(now: u64, extra: &[(&str, &str)]) -> Relay<TestPlatform> {
    let mut raw = RawSettings::default();
    raw.set(
        "apps_json",
        r#"[{"name":"a","corp_id":"ww1","corp_secret":"s","agent_id":"7","token":"t","encoding_aes_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]"#.into(),
    )
    .unwrap();
    raw.set("api_base", "http://x".into()).unwrap();
    raw.set("allowed_users", "*".into()).unwrap();
    for (key, value) in extra {
        raw.set(key, (*value).into()).unwrap();
    }
    Relay::new(
        raw.resolve().unwrap(),
        AgentSettings::default(),
        TestPlatform::at(now),
    )
}

#[test]
fn run_job_retries_on_the_platform_timers_until_done() {
    let relay = relay_at(1);
    relay
        .platform()
        .http
        .push_json(TOKEN)
        .push_json(r#"{"errcode":-1,"errmsg":"system busy"}"#)
        .push_json(r#"{"errcode":-1,"errmsg":"system busy"}"#)
        .push_json(SENT);
    let report = block_on(relay.run_job(&job("hello")));
    assert!(report.is_success(), "{report}");
    assert_eq!(report.attempts, 3);
    assert_eq!(
        relay.platform().sink.progress_reports(),
        [("ww1:7:m:1".to_owned(), 0), ("ww1:7:m:1".to_owned(), 1)],
        "progress is kept once the answer is known and after the part went out"
    );
    assert_eq!(relay.platform().lines_with("retrying").len(), 2);
    assert_eq!(sent_texts(relay.platform()), ["hello", "hello", "hello"]);
    assert_eq!(relay.platform().lines_with("reply sent").len(), 1);
}

#[test]
fn run_job_gives_up_after_the_last_attempt_and_explains_60020_once() {
    let relay = relay_at(1);
    relay.platform().http.respond_with(|req| {
        Some(Ok(HttpResponse::json(if req.path().ends_with("gettoken") {
            TOKEN
        } else {
            r#"{"errcode":60020,"errmsg":"not allow to access from your ip, hint: [1], from ip: 127.0.0.1"}"#
        })))
    });
    let report = block_on(relay.run_job(&job("hello")));
    assert_eq!(report.attempts, 1, "a trusted-IP refusal is not retried");
    let lines = relay.platform().lines_with("60020");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("trusted IPs") && lines[0].contains("127.0.0.1"));

    let relay = relay_at(1);
    relay.platform().http.respond_with(|req| {
        Some(Ok(HttpResponse::json(
            if req.path().ends_with("gettoken") {
                TOKEN
            } else {
                r#"{"errcode":-1,"errmsg":"system busy"}"#
            },
        )))
    });
    let report = block_on(relay.run_job(&job("hello")));
    assert_eq!(report.attempts, crate::wecom::client::MAX_ATTEMPTS);
    assert!(!report.is_success());
    assert_eq!(report.failure_label().as_deref(), Some("-1"));
    assert!(!report.apologized, "the agent answered: no apology");
}

fn get<'a>(path: &'a str, query: &'a str) -> Incoming<'a> {
    Incoming {
        method: "GET",
        path,
        query,
        authorization: None,
        body: Ok(b""),
    }
}

#[test]
fn routes_statuses_and_literals() {
    let relay = relay_at(1);
    let health = block_on(relay.handle(&get("/health", "")));
    assert_eq!(
        (health.status, health.content_type, health.body.as_ref()),
        (
            200,
            "application/json",
            r#"{"platform":"wecom_callback","status":"ok"}"#
        )
    );
    let put = Incoming {
        method: "PUT",
        ..get("/health", "")
    };
    let answer = block_on(relay.handle(&put));
    assert_eq!(
        (answer.status, &answer.headers[..]),
        (405, &[("allow", "GET, HEAD".to_owned())][..])
    );
    assert_eq!(block_on(relay.handle(&get("/metrics", ""))).status, 404);
    assert_eq!(block_on(relay.handle(&get("/nope", ""))).status, 404);
    assert_eq!(
        relay.platform().lines_with("\"/nope\" answered 404").len(),
        1
    );
    let delete = Incoming {
        method: "DELETE",
        ..get("/wecom/callback", "")
    };
    assert_eq!(block_on(relay.handle(&delete)).status, 405);
    assert_eq!(block_on(relay.handle(&get("/api/send", ""))).status, 405);
    let send = Incoming {
        method: "POST",
        ..get("/api/send", "")
    };
    let answer = block_on(relay.handle(&send));
    assert_eq!(
        (answer.status, answer.body.as_ref()),
        (404, r#"{"error":"not found","ok":false}"#),
        "no api_token: the send API does not exist"
    );

    let mut relay = relay_at(1);
    relay.platform.metrics = Some("# EOF\n".into());
    let metrics = block_on(relay.handle(&get("/metrics", "")));
    assert_eq!((metrics.status, metrics.body.as_ref()), (200, "# EOF\n"));
    assert!(metrics
        .content_type
        .starts_with("application/openmetrics-text"));
}

/// A flood of refused callbacks writes at most the per-second budget of warnings; the rest
/// are counted, and the next second's first request says how many were held back.
#[test]
fn a_flood_of_refused_callbacks_writes_a_bounded_number_of_lines() {
    let relay = relay_at(1_000);
    let post = Incoming {
        method: "POST",
        body: Ok(b"<xml>garbage"),
        ..get("/wecom/callback", "timestamp=1")
    };
    let warnings = |r: &Relay<TestPlatform>| {
        r.platform()
            .events()
            .into_iter()
            .filter(|(level, _)| *level == Level::Warn)
            .count()
    };
    for _ in 0..500 {
        assert_eq!(block_on(relay.handle(&post)).status, 400);
    }
    let limit = REQUEST_WARNINGS_PER_SEC as usize;
    assert_eq!(warnings(&relay), limit);
    assert_eq!(relay.platform().counted(), 500 - limit as u64);
    // Requests that log at info are not held back, and do not report yet.
    assert_eq!(block_on(relay.handle(&get("/nope", ""))).status, 404);
    assert_eq!(relay.platform().lines_with("answered 404").len(), 1);

    relay.platform().clock.advance(1);
    assert_eq!(block_on(relay.handle(&get("/health", ""))).status, 200);
    let held = relay.platform().lines_with("more warnings about requests");
    assert_eq!(held.len(), 1);
    assert!(held[0].starts_with("400 more"), "{}", held[0]);
    // A new second has its own budget, and nothing is reported twice.
    for _ in 0..5 {
        block_on(relay.handle(&post));
    }
    relay.platform().clock.advance(1);
    block_on(relay.handle(&get("/health", "")));
    assert_eq!(warnings(&relay), limit + 1 + 5);
    assert_eq!(relay.platform().counted(), 400);
}

#[test]
fn the_official_vectors_through_the_front_door() {
    let set = vectors().remove(0);
    let now = set.callback.timestamp.parse().unwrap();
    let relay = Relay::new(
        vector_settings(&set, "*"),
        AgentSettings::default(),
        TestPlatform::at(now),
    );
    let echo = block_on(relay.handle(&get("/wecom/callback", &set.verify_url.query)));
    assert_eq!(
        (echo.status, echo.body.as_ref()),
        (200, set.verify_url.expected_body.as_str())
    );
    let post = Incoming {
        method: "POST",
        body: Ok(set.callback.body.as_bytes()),
        ..get("/wecom/callback", &set.callback.query)
    };
    let answer = block_on(relay.handle(&post));
    assert_eq!((answer.status, answer.body.as_ref()), (200, "success"));
    assert_eq!(relay.platform().sink.take().len(), 1);
    let again = block_on(relay.handle(&post));
    assert_eq!((again.status, again.body.as_ref()), (200, "success"));
    assert!(
        relay.platform().sink.take().is_empty(),
        "a retry is not a new job"
    );
    assert_eq!(relay.platform().lines_with("duplicate callback").len(), 1);

    let huge = Incoming {
        body: Err(BodyError::TooLarge),
        ..post
    };
    assert_eq!(block_on(relay.handle(&huge)).status, 413);
    let tampered = Incoming {
        body: Ok(b"<xml><Encrypt>AAAA</Encrypt></xml>"),
        ..post
    };
    assert_eq!(block_on(relay.handle(&tampered)).status, 403);

    // A sink that refuses: 503, and the claim is released so WeCom's retry gets in.
    let relay = Relay::new(
        relay.settings().clone(),
        AgentSettings::default(),
        TestPlatform::at(now),
    );
    relay.platform().sink.close();
    assert_eq!(block_on(relay.handle(&post)).status, 503);
    let lines = relay.platform().lines_with("job not queued");
    assert_eq!(lines.len(), 1);
    assert!(relay
        .platform()
        .events()
        .iter()
        .any(|(level, line)| *level == Level::Warn && line.contains("job not queued")));
}

#[test]
fn misconfigured_answers_500_except_health() {
    let health = answer_misconfigured(&get("/health", ""));
    assert_eq!(health.status, 200);
    let other = answer_misconfigured(&get("/wecom/callback", ""));
    assert_eq!(
        (other.status, other.body.as_ref()),
        (500, "configuration error")
    );
    let e = crate::apps::ConfigError::new("apps[0].encoding_aes_key", "bad");
    let reason = e.to_string();
    let line = Event::Misconfigured(&reason).to_string();
    assert!(
        line.starts_with("configuration error: apps[0].encoding_aes_key"),
        "{line}"
    );
}

/// An answer of `n` parts of 2000 ASCII bytes.
fn long_answer(n: usize) -> String {
    (0..n)
        .map(|i| format!("{i:04}{}", "x".repeat(1990)))
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[test]
fn a_long_answer_waits_for_the_members_budget_instead_of_being_dropped() {
    let relay = relay_at(1_000);
    answering(relay.platform());
    let start = relay.platform().clock.now_millis();
    let report = block_on(relay.run_job(&job(&long_answer(40))));
    assert!(report.is_success(), "{report}");
    assert_eq!((report.parts_sent, report.attempts), (40, 1));
    let waited = relay.platform().clock.now_millis() - start;
    assert!(
        (60_000..=62_000).contains(&waited),
        "parts 31..40 waited for the minute to pass: {waited} ms"
    );
    let texts = sent_texts(relay.platform());
    assert_eq!(texts.len(), 40);
    assert!(texts
        .iter()
        .enumerate()
        .all(|(i, t)| t.starts_with(&format!("{i:04}"))));
}

#[test]
fn a_queued_job_is_redelivered_after_the_budget_wait_without_spending_an_attempt() {
    let relay = relay_at(1_000);
    answering(relay.platform());
    let job = job(&long_answer(35));
    let mut state = JobState::default();
    let Step::RetryIn(delay) = block_on(relay.step_job(&job, &mut state)) else {
        panic!("the 31st part must wait")
    };
    assert_eq!((state.parts_sent, state.attempts), (30, 0));
    assert!(delay.as_secs() >= 59, "{delay:?}");
    assert_eq!(relay.platform().lines_with("pacing job=").len(), 1);
    assert!(relay.platform().lines_with("retrying").is_empty());
    relay
        .platform()
        .clock
        .advance_millis(delay.as_millis() as u64);
    let Step::Done(report) = block_on(relay.step_job(&job, &mut state)) else {
        panic!("done after the wait")
    };
    assert_eq!((report.parts_sent, report.attempts), (35, 1));
    assert_eq!(sent_texts(relay.platform()).len(), 35);
}

#[test]
fn the_send_api_waits_out_a_minute_and_refuses_an_hour_with_retry_after() {
    let relay = relay_with(1_000, &[("api_token", "a-long-enough-api-token")]);
    answering(relay.platform());
    let body = serde_json::json!({"to": "ww1:alice", "text": long_answer(35)}).to_string();
    let send = Incoming {
        method: "POST",
        path: "/api/send",
        query: "",
        authorization: Some("Bearer a-long-enough-api-token"),
        body: Ok(body.as_bytes()),
    };
    let answer = block_on(relay.handle(&send));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(v["parts"], 35);

    // Spend the rest of alice's hour.
    let app = relay.settings().apps.get(0).unwrap();
    let key = crate::pacing::budget_key(app, "alice");
    block_on(async {
        use crate::ports::SendBudget;
        let p = relay.platform();
        loop {
            match p.budget.take(&key, p.clock.now_millis()).await {
                Ok(()) => {}
                Err(wait) if wait.as_secs() < 120 => {
                    p.clock.advance_millis(wait.as_millis() as u64)
                }
                Err(_) => break,
            }
        }
    });
    let answer = block_on(relay.handle(&send));
    assert_eq!(answer.status, 429, "{}", answer.body);
    let retry_after: u64 = answer
        .headers
        .iter()
        .find(|(name, _)| *name == "retry-after")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    assert!(retry_after > 120, "{retry_after}");
    assert_eq!(
        relay.platform().lines_with("send API message paced").len(),
        1
    );
}

const BOT_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

/// A relay with one app and one bot (`/wecom/aibot`, token `bt`).
fn bot_relay(now: u64) -> Relay<TestPlatform> {
    let bots = format!(r#"[{{"name":"helper","token":"bt","encoding_aes_key":"{BOT_KEY}"}}]"#);
    relay_with(now, &[("bots_json", &bots)])
}

/// POSTs `plain` to the bot as WeCom would; the status and the opened reply.
fn bot_post(
    relay: &Relay<TestPlatform>,
    plain: &str,
    now: u64,
) -> (u16, Option<serde_json::Value>) {
    let crypt = crate::crypto::MsgCrypt::new("bt", BOT_KEY, "").unwrap();
    let ts = now.to_string();
    let sealed = crypt.encrypt(plain, &[1; 16], &ts, "n1").unwrap();
    let query = format!("msg_signature={}&timestamp={ts}&nonce=n1", sealed.signature);
    let body = serde_json::json!({"encrypt": sealed.encrypt}).to_string();
    let answer = block_on(relay.handle(&Incoming {
        method: "POST",
        path: "/wecom/aibot",
        query: &query,
        authorization: None,
        body: Ok(body.as_bytes()),
    }));
    if answer.body.is_empty() {
        return (answer.status, None);
    }
    let reply: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(reply["nonce"], "n1");
    let opened = crypt
        .decrypt(
            reply["msgsignature"].as_str().unwrap(),
            &reply["timestamp"].to_string(),
            "n1",
            reply["encrypt"].as_str().unwrap(),
        )
        .unwrap();
    (answer.status, Some(serde_json::from_str(&opened).unwrap()))
}

fn bot_message(text: &str, response_url: &str) -> String {
    serde_json::json!({"msgid": "m1", "aibotid": "b1", "chattype": "single",
        "from": {"userid": "alice"}, "response_url": response_url,
        "msgtype": "text", "text": {"content": text}})
    .to_string()
}

#[test]
fn a_bot_message_opens_a_stream_and_its_job_finishes_it() {
    let now = 1_700_000_000;
    let relay = bot_relay(now);
    let (status, reply) = bot_post(&relay, &bot_message("hello bot", ""), now);
    assert_eq!(status, 200);
    let reply = reply.unwrap();
    assert_eq!(reply["stream"]["finish"], false);
    let stream = reply["stream"]["id"].as_str().unwrap().to_owned();
    assert_eq!(stream, stream_id("b1", "m1"));
    let jobs = relay.platform().sink.take();
    assert_eq!(jobs.len(), 1);
    let report = block_on(relay.run_job(&jobs[0]));
    assert!(report.is_success(), "{report}");
    let refresh = serde_json::json!({"msgid": "r", "aibotid": "b1", "from": {"userid": "alice"},
        "msgtype": "stream", "stream": {"id": stream}})
    .to_string();
    let (_, reply) = bot_post(&relay, &refresh, now);
    let reply = reply.unwrap();
    assert_eq!(reply["stream"]["content"], "hello bot");
    assert_eq!(reply["stream"]["finish"], true);
    // Nothing went through WeCom's API: the stream carried it.
    assert!(relay.platform().http.requests().is_empty());
}

#[test]
fn a_response_url_elsewhere_is_never_contacted() {
    let now = 1_700_000_000;
    let relay = bot_relay(now);
    let long: String = (0..30)
        .map(|i| format!("{i:03} {}\n\n", "y".repeat(990)))
        .collect();
    let (status, _) = bot_post(
        &relay,
        &bot_message(&long, "https://evil.example/steal?x=1"),
        now,
    );
    assert_eq!(status, 200);
    let jobs = relay.platform().sink.take();
    // WeCom takes the stream's last answer in the meantime.
    let report = block_on(relay.run_job(&jobs[0]));
    assert!(report.is_success(), "{report}");
    assert!(
        relay.platform().http.requests().is_empty(),
        "no request at all"
    );
    let lines = relay
        .platform()
        .lines_with("could not go through response_url");
    assert_eq!(lines.len(), 1, "{:?}", relay.platform().events());
    assert!(lines[0].contains("not contacted"), "{lines:?}");
}

/// A relay for one app with these agent settings (the `AGENT_*` keys, lower-cased).
fn relay_with_agent(agent: &[(&str, &str)]) -> Relay<TestPlatform> {
    let mut raw_agent = crate::config::RawAgentSettings::default();
    raw_agent.apply_env(|name| {
        agent
            .iter()
            .find(|(k, _)| format!("AGENT_{}", k.to_ascii_uppercase()) == name)
            .map(|(_, v)| (*v).to_owned())
    });
    let relay = relay_at(1);
    Relay::new(
        relay.settings().clone(),
        raw_agent.resolve().unwrap(),
        TestPlatform::at(1),
    )
}

/// WeCom answers tokens, sends, and `media/get` with `media` (type and bytes); `more` answers
/// the other paths it knows.
fn serving(
    relay: &Relay<TestPlatform>,
    media: (&'static str, &'static [u8]),
    more: fn(&str) -> Option<HttpResponse>,
) {
    relay.platform().http.respond_with(move |req| {
        let path = req.path();
        Some(Ok(if path.ends_with("gettoken") {
            HttpResponse::json(TOKEN)
        } else if path.ends_with("/media/get") {
            HttpResponse {
                status: 200,
                content_type: Some(media.0.into()),
                body: media.1.to_vec(),
                ..HttpResponse::default()
            }
        } else {
            more(path).unwrap_or_else(|| HttpResponse::json(SENT))
        }))
    });
}

/// The JSON body of the first request to a path ending in `path`.
fn json_sent_to(requests: &[crate::http::HttpRequest], path: &str) -> serde_json::Value {
    let req = requests
        .iter()
        .find(|r| r.path().ends_with(path))
        .unwrap_or_else(|| panic!("nothing sent to {path}"));
    let Body::Json(json) = &req.body else {
        panic!("{path} got no JSON")
    };
    serde_json::from_str(json).unwrap()
}

fn media_job(input: AgentInput) -> Job {
    Job {
        kind: JobKind::Answer { input },
        ..job("")
    }
}

#[test]
fn voice_is_transcribed_by_the_backend_when_wecom_gave_no_transcript() {
    let relay = relay_with_agent(&[
        ("kind", "openai"),
        ("base_url", "http://ai/v1"),
        ("model", "m"),
        ("transcription_model", "whisper-large"),
        ("thinking_notice_secs", "0"),
    ]);
    serving(&relay, ("audio/amr", b"#!AMR\n0123456789"), |path| {
        if path.ends_with("/audio/transcriptions") {
            Some(HttpResponse::json(r#"{"text":"meet at ten"}"#))
        } else if path.ends_with("/chat/completions") {
            Some(HttpResponse::json(
                r#"{"choices":[{"message":{"role":"assistant","content":"noted"}}]}"#,
            ))
        } else {
            None
        }
    });
    let report = block_on(relay.run_job(&media_job(AgentInput::Voice {
        media_id: "V1".into(),
        format: "amr".into(),
        transcript: None,
    })));
    assert!(report.is_success(), "{report}");
    let requests = relay.platform().http.requests();
    let transcription = requests
        .iter()
        .find(|r| r.path().ends_with("/audio/transcriptions"))
        .expect("asked to transcribe");
    let Body::Multipart(part) = &transcription.body else {
        panic!("multipart")
    };
    assert_eq!(
        (
            part.filename.as_str(),
            part.fields[0].1.as_str(),
            part.bytes.len()
        ),
        ("voice.amr", "whisper-large", 16)
    );
    let v = json_sent_to(&requests, "/chat/completions");
    assert_eq!(
        v["messages"].as_array().unwrap().last().unwrap()["content"],
        "meet at ten"
    );
}

#[test]
fn the_webhook_gets_media_references_and_on_request_their_bytes() {
    for (bytes, want) in [("false", None), ("true", Some("iVBORw0KGgoAAAAAAAA="))] {
        let relay = relay_with_agent(&[
            ("kind", "webhook"),
            ("url", "http://hook/events"),
            ("secret", "0123456789abcdef0123"),
            ("webhook_media_bytes", bytes),
        ]);
        serving(
            &relay,
            ("image/png", b"\x89PNG\r\n\x1a\n\0\0\0\0\0\0"),
            |path| {
                path.ends_with("/events").then(|| HttpResponse {
                    status: 202,
                    ..HttpResponse::default()
                })
            },
        );
        let report = block_on(relay.run_job(&media_job(AgentInput::Image {
            media_id: "P1".into(),
            pic_url: "https://wework.qpic.cn/p".into(),
        })));
        assert!(report.is_success(), "{report}");
        let requests = relay.platform().http.requests();
        let v = json_sent_to(&requests, "/events");
        assert_eq!(v["media"][0]["type"], "image");
        assert_eq!(v["media"][0]["media_id"], "P1");
        assert_eq!(v["media"][0]["base64"].as_str(), want, "{v}");
        assert_eq!(
            requests.iter().any(|r| r.path().ends_with("/media/get")),
            want.is_some(),
            "bytes are fetched only when asked for"
        );
    }
}
