//! Faults of WeCom's API and of the agent, injected into the stand-ins one at a time, on every
//! twin (and the native one again with `state_dir`). Each ends one of two ways: the reply
//! arrives exactly once after the fault, or the job ends with a clear error in the log (and in
//! `/metrics` where the twin has it) after a bounded number of tries. Nothing is sent twice.

use std::time::{Duration, Instant};

use wecom_relay_core::relay::APOLOGY_TEXT;
use wecom_relay_standin::openai::{ChatFault, OpenAiStandin, RunningOpenAi};
use wecom_relay_standin::wecom::Fault;
use wecom_relay_tests::harness::{now, text_xml, AppSpec, Running, Scenario, Twin};
use wecom_relay_tests::peer::WechatpyPeer;

const KEY: &str = "sk-faults-0123456789abcdef";
const API_TOKEN: &str = "sendapi-Faults-4f7Kq2";
const SEND: &str = "/cgi-bin/message/send";
const TOKEN: &str = "/cgi-bin/gettoken";

/// What a case injects.
enum Inject {
    WeCom(Fault),
    /// The API's listening socket closes for this long.
    Refuse(u64),
    Agent(ChatFault),
}

/// How it must end.
enum Expect {
    /// The reply arrives once. `tokens`: how many more token fetches it took; `dropped`:
    /// whether a retry reached WeCom and was dropped by its duplicate check.
    Once { tokens: u64, dropped: bool },
    /// No reply; an error line containing this; at most `calls` sends in all.
    Fails { log: &'static str, calls: u64 },
    /// The apology instead of a reply; an error line containing this.
    Apology { log: &'static str },
}

struct Case {
    name: &'static str,
    inject: Vec<Inject>,
    expect: Expect,
}

fn fault(f: Fault) -> Vec<Inject> {
    vec![Inject::WeCom(f)]
}

/// The table. `late` is longer than the twin's API timeout.
fn cases(late_ms: u64) -> Vec<Case> {
    // The reply arrives once, after `tokens` more token fetches; `dropped`: a retry reached
    // WeCom and its duplicate check dropped it.
    let once = |tokens, dropped| Expect::Once { tokens, dropped };
    vec![
        Case {
            name: "40014 mid-flight",
            inject: fault(Fault::errcode(SEND, 40014, 1)),
            expect: once(1, false),
        },
        Case {
            name: "42001 mid-flight",
            inject: fault(Fault::errcode(SEND, 42001, 1)),
            expect: once(1, false),
        },
        Case {
            name: "-1 twice",
            inject: fault(Fault::errcode(SEND, -1, 2)),
            expect: once(0, false),
        },
        Case {
            name: "45009",
            inject: fault(Fault::errcode(SEND, 45009, 1)),
            expect: once(0, false),
        },
        Case {
            name: "45033",
            inject: fault(Fault::errcode(SEND, 45033, 1)),
            expect: once(0, false),
        },
        Case {
            name: "HTTP 500",
            inject: fault(Fault::http(SEND, 500, 1)),
            expect: once(0, false),
        },
        Case {
            name: "HTTP 502 from a proxy",
            inject: fault(Fault::http(SEND, 502, 1)),
            expect: once(0, false),
        },
        Case {
            name: "gettoken answers -1 once",
            inject: vec![
                Inject::WeCom(Fault::errcode(SEND, 42001, 1)),
                Inject::WeCom(Fault::errcode(TOKEN, -1, 1)),
            ],
            expect: once(1, false),
        },
        Case {
            name: "delivered, but answered after the client gave up",
            inject: fault(Fault {
                late_ms,
                times: 1,
                ..Fault::slow(SEND, 0)
            }),
            expect: once(0, true),
        },
        Case {
            name: "delivered, then the connection broke",
            inject: fault(Fault {
                cut: true,
                times: 1,
                ..Fault::slow(SEND, 0)
            }),
            expect: once(0, true),
        },
        Case {
            name: "delivered, answer cut off mid-JSON",
            inject: fault(Fault {
                truncate: true,
                times: 1,
                ..Fault::slow(SEND, 0)
            }),
            expect: once(0, true),
        },
        Case {
            name: "connection refused for 2 s",
            inject: vec![Inject::Refuse(2000)],
            expect: once(0, false),
        },
        Case {
            name: "60020: this host's IP is not trusted",
            inject: fault(Fault::errcode(SEND, 60020, 1)),
            expect: Expect::Fails {
                log: "60020",
                calls: 1,
            },
        },
        Case {
            name: "-1 for good",
            inject: fault(Fault::errcode(SEND, -1, 5)),
            expect: Expect::Fails {
                log: "errcode -1",
                calls: 5,
            },
        },
        Case {
            name: "agent 401",
            inject: vec![Inject::Agent(ChatFault {
                status: 401,
                ..ChatFault::default()
            })],
            expect: Expect::Apology {
                log: "refused the api_key",
            },
        },
        Case {
            name: "agent 429 with Retry-After",
            inject: vec![Inject::Agent(ChatFault {
                status: 429,
                retry_after: Some(1),
                ..ChatFault::default()
            })],
            expect: once(0, false),
        },
        Case {
            name: "agent 500",
            inject: vec![Inject::Agent(ChatFault {
                status: 500,
                ..ChatFault::default()
            })],
            expect: once(0, false),
        },
        Case {
            name: "agent slower than its timeout",
            inject: vec![Inject::Agent(ChatFault {
                delay_ms: 3000,
                ..ChatFault::default()
            })],
            expect: once(0, false),
        },
        Case {
            name: "agent answers malformed JSON",
            inject: vec![Inject::Agent(ChatFault {
                malformed: true,
                ..ChatFault::default()
            })],
            expect: once(0, false),
        },
    ]
}

const USERS: usize = 24;

fn users() -> Vec<String> {
    (0..USERS).map(|i| format!("user{i}")).collect()
}

/// How a run is set up: the twin, and for the native one whether it keeps state on disk
/// (and logs JSON at debug level, to scan that format too).
#[derive(Clone, Copy)]
struct Run {
    twin: Twin,
    durable: bool,
}

async fn relay(run: Run, state_dir: &std::path::Path) -> (Running, RunningOpenAi) {
    let ai = OpenAiStandin::new(KEY).serve().await.unwrap();
    let users = users();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut app = AppSpec::new("a", "wwcorpA", 1000002, 'q', &refs);
    app.secret = "corpsecret-Faults-9Zk3".into();
    app.token = "cbtoken-Faults-7Q2x".into();
    let mut scenario = Scenario::new(vec![app]);
    scenario.api_token = Some(API_TOKEN.into());
    scenario.agent = vec![
        ("AGENT_KIND".into(), "openai".into()),
        ("AGENT_BASE_URL".into(), ai.base_url()),
        ("AGENT_API_KEY".into(), KEY.into()),
        ("AGENT_MODEL".into(), "standin-model".into()),
        ("AGENT_TIMEOUT_SECS".into(), "2".into()),
        ("AGENT_THINKING_NOTICE_SECS".into(), "0".into()),
    ];
    scenario.debug_logs = true;
    if run.durable {
        scenario.env.extend([
            (
                "WECOM_RELAY_STATE_DIR".into(),
                state_dir.display().to_string(),
            ),
            ("WECOM_RELAY_LOG_FORMAT".into(), "json".into()),
        ]);
    }
    (Running::start(run.twin, scenario).await, ai)
}

fn count(r: &Running, text: &str) -> usize {
    r.standin
        .standin
        .messages()
        .iter()
        .filter(|m| m.content.as_deref() == Some(text))
        .count()
}

/// The log without wrangler's own debug dumps of DevTools protocol messages: its network
/// events show every subrequest's URL, as a browser's network tab would, and WeCom's API puts
/// the corp secret (`gettoken`) and the access token in the query string. Those dumps are the
/// dev tool's, not the relay's log; everything else (the Worker's lines, wrangler's other
/// output) is scanned.
fn without_devtools_dumps(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut in_dump = false;
    for line in log.lines() {
        if in_dump {
            in_dump = line != "}";
            continue;
        }
        if line.starts_with("[InspectorProxyWorker]") && line.ends_with('{') {
            in_dump = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every secret of the run, in every form it could leak in.
fn secrets(r: &Running) -> Vec<(String, String)> {
    use base64::Engine;
    let app = &r.scenario.apps[0];
    let key = wecom_relay_core::crypto::EncodingAesKey::parse(&app.key).unwrap();
    let bytes = key.as_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = vec![
        ("corp secret".to_owned(), app.secret.clone()),
        ("callback token".into(), app.token.clone()),
        ("EncodingAESKey".into(), app.key.clone()),
        ("AES key in hex".into(), hex.clone()),
        ("AES key in upper-case hex".into(), hex.to_uppercase()),
        ("AES key in base64".into(), b64.encode(bytes)),
        (
            "AES key in unpadded base64".into(),
            b64.encode(bytes).trim_end_matches('=').to_owned(),
        ),
        ("agent API key".into(), KEY.into()),
        ("send API token".into(), API_TOKEN.into()),
        ("wrong send API token".into(), "sendapi-Wrong-0000".into()),
    ];
    for token in r.standin.standin.issued_tokens() {
        out.push(("access token".into(), token));
    }
    assert!(out.len() > 10, "the stand-in issued no token");
    out
}

/// Waits up to 40 s for an `ERROR` line after byte `since` that contains `needle`.
async fn error_line(r: &Running, since: usize, needle: &str) -> Option<String> {
    let found = settle(Duration::from_secs(40), || {
        let logs = r.logs();
        logs.get(since..)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains(needle))
    });
    if !found.await {
        return None;
    }
    let logs = r.logs();
    let line = logs
        .get(since..)?
        .lines()
        .find(|l| l.contains("ERROR") && l.contains(needle));
    line.map(str::to_owned)
}

/// Waits up to `limit` for `done`; whether it came.
async fn settle(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

async fn metrics(r: &Running) -> String {
    reqwest::Client::new()
        .get(format!("{}/metrics", r.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_ends_in_one_reply_or_one_clear_failure() {
    let mut runs = Vec::new();
    for twin in Twin::selected() {
        runs.push(Run {
            twin,
            durable: false,
        });
        if twin == Twin::Native {
            runs.push(Run {
                twin,
                durable: true,
            });
        }
    }
    for run in runs {
        let twin = run.twin;
        let label = format!(
            "{twin:?}{}",
            if run.durable {
                " with state_dir, JSON logs"
            } else {
                ""
            }
        );
        let dir = std::env::temp_dir().join(format!("wecom-relay-faults-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (r, ai) = relay(run, &dir).await;
        let standin = &r.standin.standin;
        // The native twin's API timeout is 5 s in the harness; the Worker's is 10 s.
        let late = if twin == Twin::Native { 6_000 } else { 11_000 };
        let mut peer = WechatpyPeer::start();
        let app = r.scenario.apps[0].clone();
        // A first message caches the token, so token faults hit a token in use.
        let warm = text_xml("wwcorpA", "user0", 1000002, 1, "warm up", now());
        let ts = now().to_string();
        assert_eq!(
            r.post(&peer.encrypt_callback(&app.peer(), &warm, &ts, "w"))
                .await,
            200
        );
        r.wait_for("the warm-up reply", |m| m.len() == 1).await;
        let mut failures = Vec::new();
        for (i, case) in cases(late).into_iter().enumerate() {
            let user = format!("user{}", i + 1);
            let text = format!("case {i}: {}", case.name);
            let reply = format!("reply to {text} (history: 0 earlier messages)");
            let tokens_before = standin.gettoken_calls();
            let dropped_before = standin.duplicates_dropped();
            let sends_before = standin.calls(SEND);
            let since = r.logs().len();
            for inject in case.inject {
                match inject {
                    Inject::WeCom(f) => standin.inject(f),
                    Inject::Refuse(ms) => standin.refuse_for(ms),
                    Inject::Agent(f) => ai.standin.inject(f),
                }
            }
            let xml = text_xml("wwcorpA", &user, 1000002, 100 + i as u64, &text, now());
            let ts = now().to_string();
            let cb = peer.encrypt_callback(&app.peer(), &xml, &ts, &format!("f{i}"));
            assert_eq!(r.post(&cb).await, 200, "{label}: {}", case.name);
            match case.expect {
                Expect::Once { tokens, dropped } => {
                    if !settle(Duration::from_secs(40), || count(&r, &reply) >= 1).await {
                        failures.push(format!("{}: no reply", case.name));
                        continue;
                    }
                    if dropped {
                        // The retry reached WeCom and was dropped as the duplicate it was.
                        let deduped = settle(Duration::from_secs(30), || {
                            standin.duplicates_dropped() > dropped_before
                        });
                        if !deduped.await {
                            failures.push(format!("{}: the retry never came", case.name));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    let n = count(&r, &reply);
                    if n != 1 {
                        failures.push(format!("{}: the reply arrived {n} times", case.name));
                    }
                    let fetched = standin.gettoken_calls() - tokens_before;
                    if fetched != tokens {
                        failures.push(format!(
                            "{}: {fetched} token fetches, wanted {tokens}",
                            case.name
                        ));
                    }
                }
                Expect::Fails { log, calls } => {
                    if error_line(&r, since, log).await.is_none() {
                        failures.push(format!("{}: no error line with {log:?}", case.name));
                    }
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    let made = standin.calls(SEND) - sends_before;
                    if made != calls {
                        failures.push(format!("{}: {made} sends, wanted {calls}", case.name));
                    }
                    if count(&r, &reply) != 0 {
                        failures.push(format!("{}: a reply went out after all", case.name));
                    }
                }
                Expect::Apology { log } => {
                    let got = settle(Duration::from_secs(30), || {
                        standin.messages().iter().any(|m| m.touser == user)
                    });
                    if !got.await {
                        failures.push(format!("{}: no apology", case.name));
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    let to_user: Vec<String> = standin
                        .messages()
                        .iter()
                        .filter(|m| m.touser == user)
                        .filter_map(|m| m.content.clone())
                        .collect();
                    if to_user != [APOLOGY_TEXT] {
                        failures.push(format!("{}: the user got {to_user:?}", case.name));
                    }
                    if error_line(&r, since, log).await.is_none() {
                        failures.push(format!("{}: no error line with {log:?}", case.name));
                    }
                }
            }
        }
        // The send API, once right and once with a wrong token, so the bearer token passes by.
        for (token, status) in [(API_TOKEN, 200), ("sendapi-Wrong-0000", 401)] {
            let resp = reqwest::Client::new()
                .post(format!("{}/api/send", r.base))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(r#"{"to": "wwcorpA:user0", "text": "from the send API"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), status, "{label}");
        }
        // No secret reached the log, in any form.
        let logs = without_devtools_dumps(&r.logs());
        for (what, needle) in secrets(&r) {
            if logs.contains(&needle) {
                failures.push(format!("the log shows the {what}"));
            }
        }
        // Nothing at all went out twice.
        let mut seen = std::collections::HashSet::new();
        for m in standin.messages() {
            let key = (m.touser.clone(), m.content.clone());
            if !seen.insert(key.clone()) {
                failures.push(format!("sent twice: {key:?}"));
            }
        }
        if twin == Twin::Native {
            let text = metrics(&r).await;
            for series in [
                "wecom_relay_replies_total{result=\"failed\",errcode=\"60020\"} 1",
                "wecom_relay_replies_total{result=\"failed\",errcode=\"-1\"} 1",
                "wecom_relay_replies_total{result=\"failed\",errcode=\"agent\"} 1",
                "wecom_relay_job_retries_total{reason=\"transport\"}",
                "wecom_relay_job_retries_total{reason=\"http_502\"}",
                "wecom_relay_job_retries_total{reason=\"45009\"}",
                "wecom_relay_job_retries_total{reason=\"agent\"}",
            ] {
                if !text.contains(series) {
                    failures.push(format!("/metrics lacks {series}"));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{label}:\n{}\n\nlog:\n{}",
            failures.join("\n"),
            r.logs()
        );
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
