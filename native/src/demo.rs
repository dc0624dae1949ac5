//! `wecom-relay demo`: the first run, with no credentials and no network.
//!
//! It starts a local stand-in for WeCom's API, the relay (echo agent) on a real socket, then
//! plays WeCom: verifies the URL and sends encrypted callbacks, printing what went in, what the
//! relay decided (its log lines) and what came back through the stand-in.

use std::time::Duration;

use std::sync::Arc;

use wecom_relay_core::aibot::{BotConfig, DEFAULT_BOT_PATH};
use wecom_relay_core::crypto::MsgCrypt;
use wecom_relay_core::ports::{Clock, Random};
use wecom_relay_core::wecom::split::split_for_wecom;
use wecom_relay_core::xml::callback_envelope_xml;
use wecom_relay_core::{AgentSettings, RawSettings};
use wecom_relay_standin::wecom::{Standin, StandinApp};

use crate::config::RuntimeConfig;
use crate::http;
use crate::ports::{OsRandom, SystemClock};

/// The demo app's settings: public, for the demo only.
pub const DEMO_CORP_ID: &str = "wwdemo0123456789ab";
/// Demo secret.
pub const DEMO_SECRET: &str = "demo-secret-not-a-real-one";
/// Demo agent id.
pub const DEMO_AGENT_ID: u64 = 1000002;
/// Demo callback token.
pub const DEMO_TOKEN: &str = "DemoToken";
/// Demo EncodingAESKey.
pub const DEMO_AES_KEY: &str = "DemoKeyDemoKeyDemoKeyDemoKeyDemoKeyDemoKey0";
/// The demo AI bot's callback token.
pub const DEMO_BOT_TOKEN: &str = "DemoBotToken";
/// The demo AI bot's EncodingAESKey.
pub const DEMO_BOT_AES_KEY: &str = "DemoBotKeyDemoBotKeyDemoBotKeyDemoBotKey012";

fn nonce() -> String {
    let mut b = [0u8; 6];
    OsRandom.fill(&mut b);
    b.iter().map(|x| format!("{:02x}", x)).collect()
}

/// Runs the demo; returns whether every step behaved as expected.
pub async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let standin = Standin::new(
        vec![StandinApp {
            corp_id: DEMO_CORP_ID.into(),
            corp_secret: DEMO_SECRET.into(),
            agent_id: DEMO_AGENT_ID,
            users: vec!["alice".into(), "bob".into(), "mallory".into()],
            trusted: true,
        }],
        Duration::from_secs(7200),
    )
    .serve(0)
    .await?;

    let mut raw = RawSettings::default();
    for (k, v) in [
        ("corp_id", DEMO_CORP_ID.to_string()),
        ("corp_secret", DEMO_SECRET.to_string()),
        ("agent_id", DEMO_AGENT_ID.to_string()),
        ("token", DEMO_TOKEN.to_string()),
        ("encoding_aes_key", DEMO_AES_KEY.to_string()),
        ("api_base", standin.base_url()),
        ("allowed_users", "alice,bob".to_string()),
        (
            "deny_message",
            "Sorry, this assistant is not enabled for your account.".to_string(),
        ),
    ] {
        raw.set(k, v)?;
    }
    raw.bots = Some(vec![BotConfig {
        name: Some("helper".into()),
        token: DEMO_BOT_TOKEN.into(),
        encoding_aes_key: DEMO_BOT_AES_KEY.into(),
        ..BotConfig::default()
    }]);
    let settings = raw.resolve()?;
    let path = settings.path.clone();
    let relay = crate::start(
        settings,
        AgentSettings::default(),
        &RuntimeConfig::default(),
        Arc::new(SystemClock),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(http::serve(
        listener,
        relay.clone(),
        http::DEFAULT_REQUEST_TIMEOUT,
        std::future::pending(),
    ));
    let url = format!("http://{addr}{path}");
    println!("wecom-relay demo");
    println!("  relay       {url}  (echo agent, allowlist: alice, bob)");
    println!("  WeCom API   {}  (local stand-in)", standin.base_url());
    println!();

    let crypt = MsgCrypt::new(DEMO_TOKEN, DEMO_AES_KEY, DEMO_CORP_ID)?;
    let http = reqwest::Client::new();
    let mut ok = true;

    // 1. URL verification, as the admin console does when the callback URL is saved.
    let ts = SystemClock.now_unix().to_string();
    let n = nonce();
    let mut random = [0u8; 16];
    OsRandom.fill(&mut random);
    let echo = "1288432023552776189";
    let sealed = crypt.encrypt(echo, &random, &ts, &n)?;
    let query = form_query(&[
        ("msg_signature", &sealed.signature),
        ("timestamp", &ts),
        ("nonce", &n),
        ("echostr", &sealed.encrypt),
    ]);
    println!("1. WeCom verifies the URL (GET, encrypted echostr)");
    let resp = http.get(format!("{url}?{query}")).send().await?;
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    println!("   <- {status} {body:?}  (expected the plaintext {echo:?})");
    print_step_logs();
    ok &= status == 200 && body == echo;

    // 2. Messages.
    let long =
        "WeCom cuts text at 2048 bytes; the relay splits instead. 长回复不会被截断。\n".repeat(40);
    let steps: [(&str, &str, &str, &str); 4] = [
        (
            "alice",
            "1001",
            "Hello from WeCom!",
            "alice sends a short message",
        ),
        (
            "bob",
            "1002",
            &long,
            "bob sends a message whose echo is longer than 2048 bytes",
        ),
        (
            "mallory",
            "1003",
            "let me in",
            "mallory, who is not on the allowlist, sends a message",
        ),
        (
            "alice",
            "1001",
            "Hello from WeCom!",
            "WeCom retries alice's message 1001 (same MsgId)",
        ),
    ];
    for (i, (user, msg_id, text, what)) in steps.iter().enumerate() {
        println!(
            "{}. {what} ({} bytes, encrypted, MsgId {msg_id}, user {user})",
            i + 2,
            text.len()
        );
        let ts = SystemClock.now_unix();
        let xml = format!(
            "<xml><ToUserName><![CDATA[{DEMO_CORP_ID}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>\
             <CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{text}]]></Content>\
             <MsgId>{msg_id}</MsgId><AgentID>{DEMO_AGENT_ID}</AgentID></xml>"
        );
        let n = nonce();
        OsRandom.fill(&mut random);
        let sealed = crypt.encrypt(&xml, &random, &ts.to_string(), &n)?;
        let body = callback_envelope_xml(DEMO_CORP_ID, &sealed.encrypt, &DEMO_AGENT_ID.to_string());
        let query = form_query(&[
            ("msg_signature", &sealed.signature),
            ("timestamp", &ts.to_string()),
            ("nonce", &n),
        ]);
        let resp = http
            .post(format!("{url}?{query}"))
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let answer = resp.text().await?;
        println!("   <- {status} {answer:?}");
        ok &= status == 200;
        // The job runs after the answer: its lines belong to this step too.
        tokio::time::sleep(Duration::from_millis(300)).await;
        print_step_logs();
    }

    // 3. What WeCom received.
    // alice's echo, bob's in parts, mallory's deny notice; the retry adds nothing.
    let expected = 1 + split_for_wecom(&long).len() + 1;
    for _ in 0..50 {
        if standin.standin.messages().len() >= expected && relay.platform().jobs().depth() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = standin.standin.messages();
    println!();
    println!(
        "WeCom's message/send received {} messages:",
        delivered.len()
    );
    for m in &delivered {
        let content = m.content.clone().unwrap_or_default();
        let preview: String = content
            .chars()
            .take(48)
            .collect::<String>()
            .replace('\n', " ");
        println!(
            "   to {:<8} {:>5} bytes  truncated: {:<5}  {preview:?}{}",
            m.touser,
            content.len(),
            m.truncated,
            if content.chars().count() > 48 {
                "…"
            } else {
                ""
            }
        );
    }
    let bob: String = delivered
        .iter()
        .filter(|m| m.touser == "bob")
        .filter_map(|m| m.content.clone())
        .collect();
    let split_ok = bob == long && delivered.iter().all(|m| !m.truncated);
    ok &= split_ok && delivered.len() == expected;
    println!();
    println!(
        "bob's reply: {} parts, joined back {} the original ({} bytes); nothing truncated: {}",
        delivered.iter().filter(|m| m.touser == "bob").count(),
        if bob == long {
            "equal to"
        } else {
            "DIFFERENT from"
        },
        long.len(),
        delivered.iter().all(|m| !m.truncated)
    );
    println!(
        "alice's retry was acknowledged but not answered twice: {}",
        delivered.iter().filter(|m| m.touser == "alice").count() == 1
    );
    println!();
    ok &= bot_demo(&format!("http://{addr}{DEFAULT_BOT_PATH}"), &http).await?;
    println!();
    println!("Next: put your app's settings in config.yaml (or WECOM_CALLBACK_* variables) and run `wecom-relay serve`.");

    relay
        .platform()
        .jobs()
        .shutdown(Duration::from_secs(5))
        .await;
    server.abort();
    Ok(ok)
}

/// The AI bot: alice asks, the relay answers with a stream, and WeCom polls it as it grows.
async fn bot_demo(url: &str, http: &reqwest::Client) -> Result<bool, Box<dyn std::error::Error>> {
    let crypt = MsgCrypt::new(DEMO_BOT_TOKEN, DEMO_BOT_AES_KEY, "")?;
    let call = |plain: String| {
        let crypt = crypt.clone();
        let http = http.clone();
        let url = url.to_owned();
        async move {
            let ts = SystemClock.now_unix().to_string();
            let n = nonce();
            let mut random = [0u8; 16];
            OsRandom.fill(&mut random);
            let sealed = crypt.encrypt(&plain, &random, &ts, &n)?;
            let query = form_query(&[
                ("msg_signature", &sealed.signature),
                ("timestamp", &ts),
                ("nonce", &n),
            ]);
            let body = serde_json::json!({"encrypt": sealed.encrypt}).to_string();
            let text = http
                .post(format!("{url}?{query}"))
                .body(body)
                .send()
                .await?
                .text()
                .await?;
            let reply: serde_json::Value = serde_json::from_str(&text)?;
            let opened = crypt.decrypt(
                reply["msgsignature"].as_str().unwrap_or_default(),
                &reply["timestamp"].to_string(),
                reply["nonce"].as_str().unwrap_or_default(),
                reply["encrypt"].as_str().unwrap_or_default(),
            )?;
            Ok::<serde_json::Value, Box<dyn std::error::Error>>(serde_json::from_str(&opened)?)
        }
    };
    let question = "Streams grow while the agent writes: this echo arrives in four steps.";
    println!("AI bot (智能机器人, callback mode) at {url}");
    println!("   alice asks the bot: {question:?}");
    let first = call(
        serde_json::json!({"msgid": "demo-bot-1", "aibotid": "demobot", "chattype": "single",
            "from": {"userid": "alice"}, "msgtype": "text", "text": {"content": question}})
        .to_string(),
    )
    .await?;
    let stream = first["stream"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    println!(
        "   <- stream {stream}, finish: {}",
        first["stream"]["finish"]
    );
    print_step_logs();
    let mut last = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reply = call(
            serde_json::json!({"msgid": "demo-refresh", "aibotid": "demobot", "chattype": "single",
                "from": {"userid": "alice"}, "msgtype": "stream", "stream": {"id": stream}})
            .to_string(),
        )
        .await?;
        let content = reply["stream"]["content"].as_str().unwrap_or_default();
        let finish = reply["stream"]["finish"] == true;
        if content != last || finish {
            println!("   WeCom refreshes <- {content:?}  finish: {finish}");
            last = content.to_owned();
        }
        print_step_logs();
        if finish {
            break;
        }
    }
    let ok = last == question;
    tokio::time::sleep(Duration::from_millis(100)).await;
    print_step_logs();
    println!("   the streamed answer is the whole echo: {ok}");
    Ok(ok)
}

/// The relay's log lines, held until the step they belong to has printed its heading.
static STEP_LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// Where the demo's log goes (`tracing`'s writer): held until its step has printed.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepLog;

impl std::io::Write for StepLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        STEP_LOGS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Prints what the relay logged since the last step, indented under it.
fn print_step_logs() {
    let bytes = std::mem::take(
        &mut *STEP_LOGS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for line in String::from_utf8_lossy(&bytes).lines() {
        println!("   │ relay: {}", line.trim());
    }
}

fn form_query(pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}
