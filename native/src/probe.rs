//! `wecom-relay probe <URL>`: plays WeCom against a deployed callback URL (this relay on
//! either twin, or any server claiming compatibility) and says, step by step, whether WeCom
//! would be satisfied, and if not, the likely cause.
//!
//! Steps: a signed URL verification (the echo must come back exactly, within WeCom's 1 s); a
//! signed, encrypted test message (from the user `wecom-relay-probe`, whom an allowlist should
//! not know, so no agent is asked); the same with a wrong signature (must be refused); and a
//! correctly signed message from an hour ago (a replay: must be refused).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use wecom_relay_core::crypto::MsgCrypt;

/// Who the probe pretends to be: the callback's credentials.
#[derive(Debug, Clone)]
pub struct Target {
    /// The callback URL (`https://your.domain/wecom/callback`).
    pub url: String,
    /// Token, EncodingAESKey and receive id (the CorpID; empty for an AI bot).
    pub crypt: MsgCrypt,
    /// The app's agent id (apps only).
    pub agent_id: u64,
    /// Probe an AI bot's URL (JSON bodies, receive id "").
    pub aibot: bool,
}

/// WeCom waits this long for a URL verification's answer.
pub const WECOM_VERIFY_WAIT: Duration = Duration::from_secs(1);

/// The user the probe's message comes from.
pub const PROBE_USER: &str = "wecom-relay-probe";

struct Step {
    name: &'static str,
    ok: bool,
    detail: String,
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

fn with_query(url: &str, q: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{q}")
}

/// Why a request did not get an answer, in an operator's words.
fn transport(e: &reqwest::Error) -> String {
    let text = format!("{e:?}").to_lowercase();
    if e.is_timeout() {
        "no answer in time".into()
    } else if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
        "TLS failed: the certificate is not valid for this name, expired, or self-signed (WeCom needs a valid one)".into()
    } else if e.is_connect() {
        "could not connect: wrong host or port, nothing listening, or a firewall".into()
    } else {
        format!("the request failed: {e}")
    }
}

/// What a refusal status most likely means for a request the server should have taken.
fn refusal(status: u16, body: &str) -> String {
    let body: String = body.chars().take(120).collect();
    match status {
        404 => "404: the path is wrong (the URL's path must be the relay's `path`, e.g. /wecom/callback)".into(),
        403 => format!("403: the signature was refused: the Token (or which app) differs from the console's ({body})"),
        400 => format!("400: the request was refused: the EncodingAESKey or CorpID may differ ({body})"),
        405 => "405: this URL does not take the method: is it the callback path?".into(),
        500 => format!("500: the server failed: is it configured? ({body})"),
        502..=504 => format!("{status}: a proxy in front could not reach the server"),
        _ => format!("{status}: {body}"),
    }
}

/// Compares an echo answer with what it must be, naming the usual mistakes.
fn echo_problem(got: &[u8], want: &str) -> Option<String> {
    if got == want.as_bytes() {
        return None;
    }
    let text = String::from_utf8_lossy(got);
    Some(if got.starts_with(b"\xef\xbb\xbf") {
        "the echo starts with a byte-order mark (BOM): answer the bare text".into()
    } else if text.trim() == want {
        "the echo has whitespace or a newline around it: answer exactly the decrypted text".into()
    } else if text.trim_matches(['"', '\'']) == want {
        "the echo is wrapped in quotes (a JSON string?): answer the bare text".into()
    } else if text.contains(want) {
        "the echo is wrapped in more text (HTML or JSON?): answer exactly the decrypted text".into()
    } else {
        format!(
            "the answer is not the echo: got {:?}",
            text.chars().take(80).collect::<String>()
        )
    })
}

impl Target {
    fn message(&self, msg_id: &str, at: u64) -> String {
        if self.aibot {
            serde_json::json!({
                "msgid": msg_id, "aibotid": "wecom-relay-probe", "chattype": "single",
                "from": {"userid": PROBE_USER}, "msgtype": "text",
                "text": {"content": "wecom-relay probe: please ignore"},
            })
            .to_string()
        } else {
            format!(
                "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{PROBE_USER}]]></FromUserName>\
                 <CreateTime>{at}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
                 <Content><![CDATA[wecom-relay probe: please ignore]]></Content><MsgId>{msg_id}</MsgId>\
                 <AgentID>{}</AgentID></xml>",
                self.crypt.receive_id(),
                self.agent_id
            )
        }
    }

    /// A signed POST of `plain` as WeCom sends it at `at`; `break_signature` spoils it.
    fn sealed_post(&self, plain: &str, at: u64, break_signature: bool) -> (String, String) {
        let mut random = [0u8; 16];
        let _ = getrandom::fill(&mut random);
        let nonce = random_hex(5);
        let ts = at.to_string();
        let sealed = self
            .crypt
            .encrypt(plain, &random, &ts, &nonce)
            .expect("a valid key encrypts");
        let mut signature = sealed.signature.clone();
        if break_signature {
            signature = signature.chars().rev().collect();
        }
        let body = if self.aibot {
            serde_json::json!({"encrypt": sealed.encrypt}).to_string()
        } else {
            wecom_relay_core::xml::callback_envelope_xml(
                self.crypt.receive_id(),
                &sealed.encrypt,
                &self.agent_id.to_string(),
            )
        };
        let q = query(&[
            ("msg_signature", &signature),
            ("timestamp", &ts),
            ("nonce", &nonce),
        ]);
        (with_query(&self.url, &q), body)
    }
}

async fn verify(http: &reqwest::Client, t: &Target) -> Step {
    let name = "URL verification (GET)";
    let echo = format!("probe-{}", random_hex(8));
    let mut random = [0u8; 16];
    let _ = getrandom::fill(&mut random);
    let ts = now_unix().to_string();
    let nonce = random_hex(5);
    let sealed = t
        .crypt
        .encrypt(&echo, &random, &ts, &nonce)
        .expect("a valid key encrypts");
    let q = query(&[
        ("msg_signature", &sealed.signature),
        ("timestamp", &ts),
        ("nonce", &nonce),
        ("echostr", &sealed.encrypt),
    ]);
    let started = Instant::now();
    let resp = match http.get(with_query(&t.url, &q)).send().await {
        Ok(r) => r,
        Err(e) => {
            return Step {
                name,
                ok: false,
                detail: transport(&e),
            }
        }
    };
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    let took = started.elapsed();
    if status != 200 {
        return Step {
            name,
            ok: false,
            detail: refusal(status, &String::from_utf8_lossy(&body)),
        };
    }
    if let Some(problem) = echo_problem(&body, &echo) {
        return Step {
            name,
            ok: false,
            detail: problem,
        };
    }
    if took > WECOM_VERIFY_WAIT {
        return Step {
            name,
            ok: false,
            detail: format!(
                "the echo is right but took {} ms: WeCom gives up after 1 s (a cold start, or a slow proxy?)",
                took.as_millis()
            ),
        };
    }
    Step {
        name,
        ok: true,
        detail: format!("the exact echo in {} ms", took.as_millis()),
    }
}

async fn post(http: &reqwest::Client, url: String, body: String) -> Result<(u16, String), String> {
    let resp = http
        .post(url)
        .body(body)
        .send()
        .await
        .map_err(|e| transport(&e))?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

async fn message(http: &reqwest::Client, t: &Target) -> Step {
    let name = "an encrypted message (POST)";
    let at = now_unix();
    let (url, body) = t.sealed_post(&t.message(&random_hex(8), at), at, false);
    match post(http, url, body).await {
        Err(detail) => Step {
            name,
            ok: false,
            detail,
        },
        Ok((200, body)) => Step {
            name,
            ok: true,
            detail: match body.trim() {
                "" | "success" => "taken (200)".into(),
                _ => "taken, with a passive reply (200)".into(),
            },
        },
        Ok((status, body)) => Step {
            name,
            ok: false,
            detail: refusal(status, &body),
        },
    }
}

/// A message the server must refuse (4xx): `taken` says what it means if it does not.
async fn must_refuse(
    http: &reqwest::Client,
    t: &Target,
    name: &'static str,
    at: u64,
    break_signature: bool,
    taken: &str,
) -> Step {
    let (url, body) = t.sealed_post(&t.message(&random_hex(8), at), at, break_signature);
    match post(http, url, body).await {
        Err(detail) => Step {
            name,
            ok: false,
            detail,
        },
        Ok((status, _)) if (400..500).contains(&status) => Step {
            name,
            ok: true,
            detail: format!("refused ({status})"),
        },
        Ok((status, _)) => Step {
            name,
            ok: false,
            detail: format!("answered {status}: {taken}"),
        },
    }
}

/// Runs every step: the report, and whether all passed.
pub async fn probe(t: &Target) -> (String, bool) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wecom-relay-probe/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("reqwest client with rustls builds");
    let mut steps = vec![verify(&http, t).await];
    // Without a working verification the rest says little; go on anyway, for the causes.
    steps.push(message(&http, t).await);
    steps.push(
        must_refuse(
            &http,
            t,
            "a wrong signature is refused",
            now_unix(),
            true,
            "the server does not check signatures, so anyone can post to it",
        )
        .await,
    );
    steps.push(
        must_refuse(
            &http,
            t,
            "a replay from an hour ago is refused",
            now_unix().saturating_sub(3600),
            false,
            "a captured request can be replayed (no timestamp window)",
        )
        .await,
    );
    let mut out = String::new();
    let _ = writeln!(
        out,
        "probing {} as WeCom ({}, receive id {:?})",
        t.url,
        if t.aibot { "AI bot" } else { "self-built app" },
        t.crypt.receive_id()
    );
    for s in &steps {
        let _ = writeln!(
            out,
            "  {} {}: {}",
            if s.ok { "pass" } else { "FAIL" },
            s.name,
            s.detail
        );
    }
    let ok = steps.iter().all(|s| s.ok);
    let _ = writeln!(
        out,
        "{}",
        if ok {
            "all passed"
        } else {
            "some steps failed"
        }
    );
    (out, ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use axum::extract::{Query, State};
    use axum::routing::get;
    use wecom_relay_core::config::RawSettings;
    use wecom_relay_core::AgentSettings;

    use crate::config::RuntimeConfig;
    use crate::ports::SystemClock;

    const TOKEN: &str = "probe-token";
    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    const OTHER_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const CORP: &str = "wwprobe";

    fn target(url: String) -> Target {
        Target {
            url,
            crypt: MsgCrypt::new(TOKEN, KEY, CORP).unwrap(),
            agent_id: 1000002,
            aibot: false,
        }
    }

    /// The native relay, in this process, on a real socket.
    async fn relay() -> String {
        let mut raw = RawSettings::default();
        for (k, v) in [
            ("corp_id", CORP),
            ("corp_secret", "s"),
            ("agent_id", "1000002"),
            ("token", TOKEN),
            ("encoding_aes_key", KEY),
            ("api_base", "http://127.0.0.1:9"),
            ("allowed_users", "alice"),
        ] {
            raw.set(k, v.into()).unwrap();
        }
        raw.bots = Some(vec![wecom_relay_core::aibot::BotConfig {
            name: Some("helper".into()),
            token: "bot-token".into(),
            encoding_aes_key: OTHER_KEY.into(),
            ..Default::default()
        }]);
        let settings = raw.resolve().unwrap();
        let path = settings.path.clone();
        let relay = crate::start(
            settings,
            AgentSettings::default(),
            &RuntimeConfig::default(),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::http::serve(
            listener,
            relay,
            crate::http::DEFAULT_REQUEST_TIMEOUT,
            std::future::pending(),
        ));
        format!("http://{addr}{path}")
    }

    #[derive(Clone, Copy)]
    enum Fault {
        Quoted,
        Newline,
        Slow,
        WrongKey,
        AcceptsAnything,
    }

    /// A server that gets URL verification (or the rest) wrong in one way.
    async fn broken(fault: Fault) -> String {
        async fn verify(
            State(fault): State<Fault>,
            Query(q): Query<std::collections::HashMap<String, String>>,
        ) -> String {
            let key = if matches!(fault, Fault::WrongKey) {
                OTHER_KEY
            } else {
                KEY
            };
            let crypt = MsgCrypt::new(TOKEN, key, CORP).unwrap();
            let echo = crypt
                .verify_url(
                    &q["msg_signature"],
                    &q["timestamp"],
                    &q["nonce"],
                    &q["echostr"],
                )
                .unwrap_or_else(|_| "could not decrypt".into());
            match fault {
                Fault::Quoted => format!("\"{echo}\""),
                Fault::Newline => format!("{echo}\n"),
                Fault::Slow => {
                    tokio::time::sleep(Duration::from_millis(1300)).await;
                    echo
                }
                Fault::WrongKey | Fault::AcceptsAnything => echo,
            }
        }
        let app = axum::Router::new()
            .route("/wecom/callback", get(verify).post(|| async { "success" }))
            .with_state(fault);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/wecom/callback")
    }

    #[tokio::test]
    async fn the_relay_passes_every_step() {
        let (report, ok) = probe(&target(relay().await)).await;
        assert!(ok, "{report}");
        assert_eq!(report.matches("  pass ").count(), 4, "{report}");
    }

    #[tokio::test]
    async fn an_ai_bot_path_passes_too() {
        let url = relay().await.replace("/wecom/callback", "/wecom/aibot");
        let bot = Target {
            url,
            crypt: MsgCrypt::new("bot-token", OTHER_KEY, "").unwrap(),
            agent_id: 0,
            aibot: true,
        };
        let (report, ok) = probe(&bot).await;
        assert!(ok && report.contains("with a passive reply"), "{report}");
    }

    #[tokio::test]
    async fn broken_servers_are_told_apart() {
        let relay = relay().await;
        let wrong_path = relay.replace("/wecom/callback", "/callback");
        let (report, ok) = probe(&target(wrong_path)).await;
        assert!(!ok && report.contains("the path is wrong"), "{report}");
        let mut wrong_token = target(relay.clone());
        wrong_token.crypt = MsgCrypt::new("another-token", KEY, CORP).unwrap();
        let (report, _) = probe(&wrong_token).await;
        assert!(
            report.contains("FAIL URL verification (GET): 403"),
            "{report}"
        );
        for (fault, says) in [
            (Fault::Quoted, "wrapped in quotes"),
            (Fault::Newline, "newline"),
            (Fault::Slow, "WeCom gives up after 1 s"),
            (Fault::WrongKey, "the answer is not the echo"),
            (Fault::AcceptsAnything, "does not check signatures"),
        ] {
            let (report, ok) = probe(&target(broken(fault).await)).await;
            assert!(!ok && report.contains(says), "{says}: {report}");
        }
        let (report, _) = probe(&target("http://127.0.0.1:9/wecom/callback".into())).await;
        assert!(report.contains("could not connect"), "{report}");
    }
}
