//! Hostile input: one table of requests an attacker (or a broken proxy) might send, run
//! against every twin. Each case checks the status, that the relay stays healthy, that nothing
//! reached WeCom's API, and that the log says why at the right level.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use aes::cipher::{BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use wecom_relay_core::crypto::{signature, EncodingAesKey, MsgCrypt};
use wecom_relay_core::http::{DRAIN_BYTES, MAX_BODY_BYTES};
use wecom_relay_tests::harness::{now, text_xml, AppSpec, Running, Scenario, Twin};

const API_TOKEN: &str = "send-api-token-0123456789abcdef";

fn apps() -> Vec<AppSpec> {
    vec![
        AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"]),
        AppSpec::new("c", "wwcorpA", 1000003, 'c', &["alice"]),
        AppSpec::new("b", "wwcorpB", 1000005, 'b', &["bob"]),
    ]
}

fn scenario() -> Scenario {
    let mut s = Scenario::new(apps());
    s.api_token = Some(API_TOKEN.into());
    s
}

/// One hostile request and what the relay must do with it.
struct Case {
    name: &'static str,
    method: &'static str,
    /// Path and query.
    target: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Acceptable statuses.
    status: &'static [u16],
    /// A fragment of the log line that says why, and its level; `None` where the platform
    /// answers before the relay sees the request.
    log: Option<(&'static str, &'static str)>,
}

/// Signs and builds a callback POST for app `a` around an already-encrypted `encrypt`.
struct Signer {
    token: String,
    key: EncodingAesKey,
    crypt: MsgCrypt,
}

impl Signer {
    fn new(app: &AppSpec) -> Self {
        Self {
            token: app.token.clone(),
            key: EncodingAesKey::parse(&app.key).unwrap(),
            crypt: MsgCrypt::new(&app.token, &app.key, &app.corp_id).unwrap(),
        }
    }

    fn query(&self, ts: &str, nonce: &str, encrypt: &str) -> String {
        let sig = signature(&self.token, ts, nonce, encrypt);
        format!("msg_signature={sig}&timestamp={ts}&nonce={nonce}")
    }

    /// A correctly signed envelope around `encrypt`.
    fn signed(&self, encrypt: &str) -> (String, Vec<u8>) {
        let ts = now().to_string();
        let body = format!("<xml><ToUserName>wwcorpA</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID>1000002</AgentID></xml>");
        (
            format!("/wecom/callback?{}", self.query(&ts, "n1", encrypt)),
            body.into_bytes(),
        )
    }

    /// `plaintext` encrypted for the app, signed.
    fn message(&self, plaintext: &str) -> (String, Vec<u8>) {
        let sealed = self
            .crypt
            .encrypt(plaintext, &[7; 16], &now().to_string(), "n2")
            .unwrap();
        self.signed(&sealed.encrypt)
    }

    /// Raw AES-256-CBC over `plain` (a multiple of 16 bytes, padding included), base64.
    fn raw(&self, plain: &[u8]) -> String {
        let key = self.key.as_bytes();
        let enc = cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &key[..16]).unwrap();
        let out = enc.encrypt_padded_vec_mut::<aes::cipher::block_padding::NoPadding>(plain);
        STANDARD.encode(out)
    }

    /// WeCom's layout (random, length, message, receive id) with the given pad bytes.
    fn layout(msg: &[u8], claimed_len: u32, receive_id: &[u8], pad: &[u8]) -> Vec<u8> {
        let mut buf = vec![9u8; 16];
        buf.extend_from_slice(&claimed_len.to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(receive_id);
        buf.extend_from_slice(pad);
        buf
    }

    /// A message laid out with a pad that fills to a 32-byte boundary, then `tweak`ed.
    fn padded(
        &self,
        msg: &[u8],
        claimed_len: u32,
        receive_id: &[u8],
        tweak: fn(&mut [u8]),
    ) -> String {
        let content = 20 + msg.len() + receive_id.len();
        let pad = 32 - content % 32;
        let mut buf = Self::layout(msg, claimed_len, receive_id, &vec![pad as u8; pad]);
        tweak(&mut buf);
        self.raw(&buf)
    }
}

fn plain_text(to: &str, from: &str, agent: &str) -> String {
    format!(
        "<xml><ToUserName>{to}</ToUserName><FromUserName>{from}</FromUserName><CreateTime>{}</CreateTime>\
         <MsgType>text</MsgType><Content>hi</Content><MsgId>1</MsgId><AgentID>{agent}</AgentID></xml>",
        now()
    )
}

fn cases(app: &AppSpec) -> Vec<Case> {
    let s = Signer::new(app);
    let good_sig = "0123456789abcdef0123456789abcdef01234567";
    let ts = now().to_string();
    let q = |query: String| format!("/wecom/callback?{query}");
    let post = |name, target: String, body: Vec<u8>, status, why| Case {
        name,
        method: "POST",
        target,
        headers: vec![("content-type", "text/xml".into())],
        body,
        status,
        log: Some((why, "WARN")),
    };
    let good_query = format!("msg_signature={good_sig}&timestamp={ts}&nonce=1");
    let env =
        |inner: &str| format!("<xml><ToUserName>wwcorpA</ToUserName>{inner}</xml>").into_bytes();
    let any_env = env("<Encrypt>AAAA</Encrypt>");
    let mut cases = vec![
        // -- the query
        post("no query", "/wecom/callback".into(), any_env.clone(), &[400], "missing query parameter msg_signature"),
        post("empty values", q("msg_signature=&timestamp=&nonce=".into()), any_env.clone(), &[400], "query parameter msg_signature is empty or malformed"),
        post("duplicated timestamp", q(format!("{good_query}&timestamp=1")), any_env.clone(), &[400], "query parameter timestamp given more than once"),
        post("duplicated signature", q(format!("msg_signature=x&{good_query}")), any_env.clone(), &[400], "query parameter msg_signature given more than once"),
        post("signature too short", q(good_query.replace(good_sig, &good_sig[..20])), any_env.clone(), &[400], "query parameter msg_signature is empty or malformed"),
        post("signature in upper case", q(good_query.replace(good_sig, &good_sig.to_uppercase())), any_env.clone(), &[400], "query parameter msg_signature is empty or malformed"),
        post("signature not hex", q(good_query.replace(good_sig, &good_sig.replace('a', "z"))), any_env.clone(), &[400], "query parameter msg_signature is empty or malformed"),
        post("timestamp not numeric", q(good_query.replace(&ts, "1e9")), any_env.clone(), &[400], "query parameter timestamp is empty or malformed"),
        post("timestamp huge", q(good_query.replace(&ts, "99999999999999999999999")), any_env.clone(), &[400], "query parameter timestamp is empty or malformed"),
        post("nonce with a space", q(good_query.replace("nonce=1", "nonce=a%20b")), any_env.clone(), &[400], "query parameter nonce is empty or malformed"),
        post("query of 10 KB", q(format!("{good_query}&pad={}", "x".repeat(10_000))), any_env.clone(), &[414], "query string longer than"),
        // -- the envelope (checked before the signature)
        post("not XML", q(good_query.clone()), b"hello".to_vec(), &[400], "envelope: malformed xml"),
        post("a DOCTYPE", q(good_query.clone()), b"<!DOCTYPE xml [<!ELEMENT xml ANY>]><xml><Encrypt>AAAA</Encrypt></xml>".to_vec(), &[400], "envelope: xml with a doctype is refused"),
        post("billion laughs", q(good_query.clone()), format!("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">{}]><xml><Encrypt>&lol9;</Encrypt></xml>", (1..10).map(|i| format!("<!ENTITY lol{i} \"{}\">", format!("&lol{};", i - 1).repeat(10))).collect::<String>()).into_bytes(), &[400], "envelope: xml with a doctype is refused"),
        post("external entity", q(good_query.clone()), b"<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><Encrypt>&x;</Encrypt></xml>".to_vec(), &[400], "envelope: xml with a doctype is refused"),
        post("an undeclared entity", q(good_query.clone()), env("<Encrypt>&x;</Encrypt>"), &[400], "envelope: malformed xml"),
        post("deep nesting", q(good_query.clone()), format!("<xml>{}{}</xml>", "<a>".repeat(5000), "</a>".repeat(5000)).into_bytes(), &[400], "envelope: xml nests too deeply"),
        post("10,000 elements", q(good_query.clone()), env(&"<a/>".repeat(10_000)), &[400], "envelope: more than 512 elements"),
        post("100,000 attributes", q(good_query.clone()), format!("<xml{}><Encrypt>AAAA</Encrypt></xml>", (0..100_000).map(|i| format!(" a{i}=\"\"")).collect::<String>()).into_bytes(), &[413], "body larger than"),
        post("no Encrypt", q(good_query.clone()), env("<AgentID>1</AgentID>"), &[400], "envelope: missing field Encrypt"),
        post("empty Encrypt", q(good_query.clone()), env("<Encrypt></Encrypt>"), &[400], "envelope: missing field Encrypt"),
        post("not UTF-8", q(good_query.clone()), b"<xml><Encrypt>\xff\xfe</Encrypt></xml>".to_vec(), &[400], "envelope: malformed xml: body is not utf-8"),
        post("JSON instead of XML", q(good_query.clone()), br#"{"encrypt":"AAAA"}"#.to_vec(), &[400], "envelope: malformed xml"),
        post("unsigned", q(good_query.clone()), any_env.clone(), &[403], "no app verifies the signature"),
    ];
    // Two Encrypt elements: the first one genuine and signed.
    let (target, body) = s.message(&plain_text("wwcorpA", "alice", "1000002"));
    let body = String::from_utf8(body)
        .unwrap()
        .replace("</xml>", "<Encrypt>AAAA</Encrypt></xml>");
    cases.push(post(
        "two Encrypt elements",
        target,
        body.into_bytes(),
        &[400],
        "envelope: field Encrypt appears more than once",
    ));
    // A genuine message signed five hours ago.
    let old = (now() - 5 * 3600).to_string();
    let sealed = s
        .crypt
        .encrypt(
            &plain_text("wwcorpA", "alice", "1000002"),
            &[1; 16],
            &old,
            "n3",
        )
        .unwrap();
    cases.push(post(
        "timestamp outside the window",
        q(s.query(&old, "n3", &sealed.encrypt)),
        env(&format!("<Encrypt>{}</Encrypt>", sealed.encrypt)),
        &[400],
        "replay window",
    ));
    // -- the ciphertext, correctly signed
    let mut signed = |name, encrypt: String, why| {
        let (target, body) = s.signed(&encrypt);
        cases.push(post(name, target, body, &[400], why));
    };
    let msg = plain_text("wwcorpA", "alice", "1000002");
    let m = msg.as_bytes();
    let len = m.len() as u32;
    signed("bad base64", "!!!!not-base64!!!!".into(), "base64");
    signed(
        "length not a multiple of 16",
        STANDARD.encode([1u8; 20]),
        "aes",
    );
    signed(
        "pad byte 0",
        s.padded(m, len, b"wwcorpA", |b| *b.last_mut().unwrap() = 0),
        "aes",
    );
    signed(
        "pad byte 33",
        s.padded(m, len, b"wwcorpA", |b| *b.last_mut().unwrap() = 33),
        "aes",
    );
    signed(
        "mixed pad bytes",
        s.padded(m, len, b"wwcorpA", |b| {
            let n = b.len();
            b[n - 2] ^= 0x55
        }),
        "aes",
    );
    signed(
        "length field beyond the buffer",
        s.padded(m, len + 4096, b"wwcorpA", |_| {}),
        "buffer",
    );
    signed(
        "an empty message",
        s.padded(b"", 0, b"wwcorpA", |_| {}),
        "message: malformed xml",
    );
    signed(
        "another corp's receive id",
        s.padded(m, len, b"wwcorpB", |_| {}),
        "receive id matches no app",
    );
    // -- the decrypted message
    let mut decrypted = |name, plaintext: String, why| {
        let (target, body) = s.message(&plaintext);
        cases.push(post(name, target, body, &[400], why));
    };
    decrypted(
        "invalid XML inside",
        "<xml><ToUserName>wwcorpA".into(),
        "message: malformed xml",
    );
    decrypted(
        "ToUserName of another corp",
        plain_text("wwcorpB", "alice", "1000002"),
        "message corp differs from the app's",
    );
    decrypted(
        "AgentID of another app of the corp",
        plain_text("wwcorpA", "alice", "1000003"),
        "message AgentID is not the app's",
    );
    decrypted(
        "AgentID of another corp's app",
        plain_text("wwcorpA", "alice", "1000005"),
        "message AgentID is not the app's",
    );
    decrypted(
        "no AgentID on a message",
        plain_text("wwcorpA", "alice", "1000002").replace("<AgentID>1000002</AgentID>", ""),
        "message AgentID is not the app's",
    );
    decrypted(
        "a 20,000-character FromUserName",
        plain_text("wwcorpA", &"u".repeat(20_000), "1000002"),
        "message: invalid field FromUserName",
    );
    decrypted(
        "a huge MsgId",
        plain_text("wwcorpA", "alice", "1000002").replace(
            "<MsgId>1</MsgId>",
            &format!("<MsgId>{}</MsgId>", "9".repeat(5000)),
        ),
        "message: invalid field MsgId",
    );
    decrypted(
        "two FromUserName",
        plain_text("wwcorpA", "alice", "1000002")
            .replace("</xml>", "<FromUserName>mallory</FromUserName></xml>"),
        "message: field FromUserName appears more than once",
    );
    // -- transport
    cases.push(post(
        "a body over the cap, announced",
        q(good_query.clone()),
        vec![b'x'; 70_000],
        &[413],
        "body larger than",
    ));
    // -- methods on every route
    for (method, target, status, log) in [
        ("PUT", "/health", 405, "PUT \"/health\" answered 405"),
        ("POST", "/health", 405, "POST \"/health\" answered 405"),
        (
            "OPTIONS",
            "/health",
            405,
            "OPTIONS \"/health\" answered 405",
        ),
        (
            "PUT",
            "/wecom/callback",
            405,
            "PUT \"/wecom/callback\" answered 405",
        ),
        (
            "HEAD",
            "/wecom/callback",
            405,
            "HEAD \"/wecom/callback\" answered 405",
        ),
        (
            "DELETE",
            "/wecom/callback",
            405,
            "DELETE \"/wecom/callback\" answered 405",
        ),
        (
            "OPTIONS",
            "/wecom/callback",
            405,
            "OPTIONS \"/wecom/callback\" answered 405",
        ),
        ("GET", "/api/send", 405, "GET \"/api/send\" answered 405"),
        ("PUT", "/api/send", 405, "PUT \"/api/send\" answered 405"),
        ("POST", "/metrics", 405, "POST \"/metrics\" answered"),
        (
            "GET",
            "/wecom/callback/../../etc/passwd",
            404,
            "answered 404",
        ),
        ("GET", "/.env", 404, "GET \"/.env\" answered 404"),
    ] {
        cases.push(Case {
            name: "method or path",
            method,
            target: target.into(),
            headers: vec![],
            body: vec![],
            status: if target == "/metrics" && method == "POST" {
                &[404, 405]
            } else if status == 405 {
                &[405]
            } else {
                &[404]
            },
            log: Some((log, "INFO")),
        });
    }
    // URL verification: the same rules apply to GET.
    cases.push(Case {
        name: "verification with an upper-case signature",
        method: "GET",
        target: q(format!(
            "msg_signature={}&timestamp={ts}&nonce=1&echostr=AAAA",
            good_sig.to_uppercase()
        )),
        headers: vec![],
        body: vec![],
        status: &[400],
        log: Some((
            "URL verification refused (400): query parameter msg_signature",
            "WARN",
        )),
    });
    // -- the send API
    let send = |name, auth: Option<String>, body: &str, status, why| Case {
        name,
        method: "POST",
        target: "/api/send".into(),
        headers: auth
            .map(|a| {
                vec![
                    ("authorization", a),
                    ("content-type", "application/json".into()),
                ]
            })
            .unwrap_or_default(),
        body: body.as_bytes().to_vec(),
        status,
        log: Some((why, "WARN")),
    };
    let ok_body = r#"{"to":"wwcorpA:alice","text":"hi"}"#;
    let bearer = format!("Bearer {API_TOKEN}");
    let mut almost = API_TOKEN.to_owned();
    almost.pop();
    almost.push('x');
    cases.extend([
        send(
            "send API without a token",
            None,
            ok_body,
            &[401],
            "send API request refused (401): missing bearer token",
        ),
        send(
            "send API with a wrong token",
            Some("Bearer nope".into()),
            ok_body,
            &[401],
            "send API request refused (401): wrong bearer token",
        ),
        send(
            "send API with an almost-right token",
            Some(format!("Bearer {almost}")),
            ok_body,
            &[401],
            "send API request refused (401): wrong bearer token",
        ),
        send(
            "send API with the token as Basic",
            Some(format!("Basic {API_TOKEN}")),
            ok_body,
            &[401],
            "send API request refused (401)",
        ),
        send(
            "send API body not JSON",
            Some(bearer.clone()),
            "to=alice",
            &[400],
            "send API request refused (400): body",
        ),
        send(
            "send API unknown field",
            Some(bearer.clone()),
            r#"{"to":"wwcorpA:alice","text":"hi","safe":1}"#,
            &[400],
            "send API request refused (400): body",
        ),
        send(
            "send API to without a corp",
            Some(bearer.clone()),
            r#"{"to":"alice","text":"hi"}"#,
            &[400],
            "send API request refused (400): to must be",
        ),
        send(
            "send API to an unknown corp",
            Some(bearer.clone()),
            r#"{"to":"wwnobody:alice","text":"hi"}"#,
            &[404],
            "send API request refused (404)",
        ),
        send(
            "send API body over the cap",
            Some(bearer.clone()),
            &format!(
                r#"{{"to":"wwcorpA:alice","text":"{}"}}"#,
                "x".repeat(70_000)
            ),
            &[413],
            "send API request refused (413): body larger than",
        ),
    ]);
    cases
}

/// The status the relay answered. A body too large to be worth reading (over the cap plus what
/// a twin drains) is refused with 413 and the connection closed while the client may still be
/// sending: the client can then see the reset before the 413. That counts as the 413 (the
/// case's log line still has to show the refusal); any other failure to answer does not.
async fn run(r: &Running, case: &Case) -> u16 {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
    let mut req = client
        .request(method, format!("{}{}", r.base, case.target))
        .body(case.body.clone());
    for (k, v) in &case.headers {
        req = req.header(*k, v);
    }
    match req.send().await {
        Ok(answer) => answer.status().as_u16(),
        Err(e) if case.status == [413] && case.body.len() > MAX_BODY_BYTES + DRAIN_BYTES => {
            assert!(e.is_request(), "{}: {e}", case.name);
            413
        }
        Err(e) => panic!("{}: the relay did not answer: {e}", case.name),
    }
}

async fn healthy(r: &Running) -> bool {
    reqwest::Client::new()
        .get(format!("{}/health", r.base))
        .send()
        .await
        .is_ok_and(|resp| resp.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_request_is_refused_and_explained() {
    let app = apps().remove(0);
    for twin in Twin::selected() {
        let r = Running::start(twin, scenario()).await;
        let mut failures = Vec::new();
        for case in cases(&app) {
            let since = r.logs().len();
            let status = run(&r, &case).await;
            if !case.status.contains(&status) {
                failures.push(format!(
                    "{}: status {status}, wanted {:?}",
                    case.name, case.status
                ));
            }
            if let Some((why, level)) = case.log {
                match r.log_line_after(since, why, Duration::from_secs(5)).await {
                    Some(line) if line.contains(level) => {}
                    Some(line) => {
                        failures.push(format!("{}: logged at the wrong level: {line}", case.name))
                    }
                    None => failures.push(format!("{}: no log line containing {why:?}", case.name)),
                }
            }
            if !healthy(&r).await {
                panic!("{twin:?}: unhealthy after {:?}\n{}", case.name, r.logs());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = r.standin.standin.messages();
        assert!(
            sent.is_empty(),
            "{twin:?}: hostile input reached WeCom: {sent:#?}"
        );
        assert_eq!(
            r.standin.standin.gettoken_calls(),
            0,
            "{twin:?}: hostile input cost a token fetch"
        );
        assert!(
            failures.is_empty(),
            "{twin:?}:\n{}\n\nlog:\n{}",
            failures.join("\n"),
            r.logs()
        );
        // And the relay still works.
        assert_eq!(post_genuine(&r, 77, "still here").await, 200, "{twin:?}");
        r.wait_for("the genuine message's answer", |m| m.len() == 1)
            .await;
    }
}

/// Writes the first `head` bytes at once, then the rest one at a time, one every `gap` (the
/// headers' bytes cycle, so a header dribbler never finishes), until the server closes or
/// `limit` passes. Returns what the server answered and how long the connection lasted.
fn dribble(
    addr: &str,
    bytes: &[u8],
    head: usize,
    gap: Duration,
    limit: Duration,
) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(&bytes[..head]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut answer = Vec::new();
    for &b in bytes[head..].iter().cycle() {
        if started.elapsed() > limit || stream.write_all(&[b]).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        std::thread::sleep(gap);
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// Posts a 70,000-byte body with its `Content-Length`, the headers first and then the body in
/// 8 KiB pieces 2 ms apart; what the server answered, or how the connection failed.
fn slow_oversized_post(addr: &str, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = vec![b'x'; 70_000];
    let sent = write!(
        stream,
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .and_then(|()| {
        std::thread::sleep(Duration::from_millis(20));
        body.chunks(8192).try_for_each(|piece| {
            std::thread::sleep(Duration::from_millis(2));
            stream.write_all(piece)
        })
    });
    if let Err(e) = sent {
        return format!("sending failed: {e}");
    }
    let mut answer = [0u8; 64];
    match stream.read(&mut answer) {
        Ok(n) => String::from_utf8_lossy(&answer[..n]).into_owned(),
        Err(e) => format!("reading failed: {e}"),
    }
}

/// Posts a genuine, signed text message from alice through app `a`; the status.
async fn post_genuine(r: &Running, msg_id: u64, text: &str) -> u16 {
    let app = apps().remove(0);
    let (target, body) =
        Signer::new(&app).message(&text_xml("wwcorpA", "alice", 1000002, msg_id, text, now()));
    let ok = Case {
        name: "genuine",
        method: "POST",
        target,
        headers: vec![],
        body,
        status: &[200],
        log: None,
    };
    run(r, &ok).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_do_not_hold_the_server() {
    for twin in Twin::selected() {
        let mut scenario = scenario();
        scenario
            .env
            .push(("WECOM_RELAY_REQUEST_TIMEOUT_SECS".into(), "2".into()));
        let r = Running::start(twin, scenario).await;
        let addr = r.base.trim_start_matches("http://").to_owned();
        // 50 clients dribbling headers and 50 dribbling a body, one byte every 200 ms.
        let mut slow = Vec::new();
        // The native server cuts them off at 2 s; workerd does not (Cloudflare's edge would),
        // so there they only have to not get in the way.
        let limit = Duration::from_secs(if twin == Twin::Native { 20 } else { 4 });
        for i in 0..100 {
            let addr = addr.clone();
            let bytes: Vec<u8> = if i % 2 == 0 {
                b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec()
            } else {
                let mut b = b"POST /wecom/callback?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n".to_vec();
                b.extend(std::iter::repeat_n(b'x', 60_000));
                b
            };
            // Headers arrive whole for the body dribblers: only their body is slow.
            let head = if i % 2 == 1 {
                bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4
            } else {
                0
            };
            slow.push(std::thread::spawn(move || {
                dribble(&addr, &bytes, head, Duration::from_millis(200), limit)
            }));
        }
        // Meanwhile, WeCom's callbacks are answered at once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        assert_eq!(post_genuine(&r, 5, "hello").await, 200, "{twin:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{twin:?}: a callback waited behind slow clients"
        );
        assert!(healthy(&r).await);
        let results: Vec<(String, Duration)> =
            slow.into_iter().map(|t| t.join().unwrap()).collect();
        if twin == Twin::Native {
            for (i, (answer, lasted)) in results.iter().enumerate() {
                assert!(
                    *lasted < Duration::from_secs(6),
                    "{twin:?}: slow client {i} held on for {lasted:?}"
                );
                if i % 2 == 1 {
                    assert!(
                        answer.starts_with("HTTP/1.1 408"),
                        "{twin:?}: a slow body got {answer:?}"
                    );
                }
            }
            let logs = r.logs();
            assert!(
                logs.contains("callback refused (408): the client did not send the body in time"),
                "{logs}"
            );
            assert!(
                logs.contains("closed a connection that sent no complete request in time"),
                "{logs}"
            );
        }
        r.wait_for("the genuine answer", |m| m.len() == 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_announced_but_never_sent_and_oversized_chunks_are_refused() {
    for twin in Twin::selected() {
        let mut scenario = scenario();
        scenario
            .env
            .push(("WECOM_RELAY_REQUEST_TIMEOUT_SECS".into(), "2".into()));
        let r = Running::start(twin, scenario).await;
        let addr = r.base.trim_start_matches("http://").to_owned();
        let sig = "0123456789abcdef0123456789abcdef01234567";
        let target = format!(
            "/wecom/callback?msg_signature={sig}&timestamp={}&nonce=1",
            now()
        );
        // Chunked, no Content-Length, adding up past the cap.
        let since = r.logs().len();
        let chunked = {
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            write!(
                stream,
                "POST {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .unwrap();
            let chunk = vec![b'x'; 8192];
            for _ in 0..10 {
                if write!(stream, "2000\r\n").is_err()
                    || stream.write_all(&chunk).is_err()
                    || write!(stream, "\r\n").is_err()
                {
                    break;
                }
            }
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer
        };
        // wrangler dev's proxy drops the connection instead of relaying the Worker's 413 to a
        // client that is still sending; the log below shows the Worker refused it.
        let dropped = twin != Twin::Native && chunked.is_empty();
        assert!(
            chunked.starts_with("HTTP/1.1 413") || dropped,
            "{twin:?}: {chunked:?}\n{}",
            r.logs()
        );
        assert!(
            r.log_line_after(since, "callback refused (413)", Duration::from_secs(5))
                .await
                .is_some(),
            "{twin:?}: {}",
            r.logs()
        );
        // Announced over the cap and still being sent when the refusal is ready: the client
        // gets the 413, not a reset connection (this used to fail as "broken pipe").
        for _ in 0..20 {
            let answer = slow_oversized_post(&addr, &target);
            assert!(
                answer.starts_with("HTTP/1.1 413"),
                "{twin:?}: {answer:?}\n{}",
                r.logs()
            );
        }
        if twin == Twin::Native {
            // 10 MiB announced, none sent: refused before reading.
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            write!(
                stream,
                "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n"
            )
            .unwrap();
            let mut answer = [0u8; 64];
            let n = stream.read(&mut answer).unwrap();
            assert!(
                answer[..n].starts_with(b"HTTP/1.1 413"),
                "{:?}",
                String::from_utf8_lossy(&answer[..n])
            );
            // Within the cap, announced, never sent: 408 after the timeout.
            let started = Instant::now();
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            write!(
                stream,
                "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc"
            )
            .unwrap();
            let n = stream.read(&mut answer).unwrap();
            assert!(
                answer[..n].starts_with(b"HTTP/1.1 408"),
                "{:?}",
                String::from_utf8_lossy(&answer[..n])
            );
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        assert!(healthy(&r).await);
        assert!(r.standin.standin.messages().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_do_not_stop_callbacks() {
    for twin in Twin::selected() {
        let r = Running::start(twin, scenario()).await;
        let addr = r.base.trim_start_matches("http://").to_owned();
        let idle: Vec<TcpStream> = (0..2000)
            .filter_map(|_| TcpStream::connect(&addr).ok())
            .collect();
        assert!(
            idle.len() >= 1900,
            "{twin:?}: only {} connections opened",
            idle.len()
        );
        let started = Instant::now();
        assert_eq!(post_genuine(&r, 9, "hello").await, 200, "{twin:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{twin:?}: {:?}",
            started.elapsed()
        );
        r.wait_for("the answer", |m| m.len() == 1).await;
        drop(idle);
    }
}
