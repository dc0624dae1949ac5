//! Benchmark equipment (`bench/run.sh` drives it; nothing here is part of the relay):
//!
//! - `bench params`: the app the corpora are signed for, as JSON (the peers read it).
//! - `bench corpus core FILE N`: N realistic callbacks (text of 5 to 600 bytes in Chinese and
//!   ASCII, emoji, `]]>`, pictures, voice, events), one JSON object a line, for the core and
//!   wechatpy to open.
//! - `bench corpus load FILE N USERS`: N distinct text callbacks from USERS members, one
//!   `path?query<TAB>body` a line, for wrk.
//! - `bench core FILE SECS`: nanoseconds per callback of the core's `open_callback` (verify,
//!   decrypt, route, parse) and of the floor (one SHA1 over the signed bytes plus one
//!   AES-256-CBC decryption of the ciphertext), interleaved, median of rounds, as JSON.
//! - `bench profile FILE ROUNDS`: only the core over the corpus ROUNDS times, for `perf record`
//!   or `valgrind --tool=callgrind`.
//! - `bench standin PORT USERS [SLOW_MS]`: the stand-in for WeCom's API (`message/send` slowed
//!   by SLOW_MS); answers `stats` on stdin.
//! - `bench stack PORT`: the native relay's HTTP stack (its runtime, its hyper settings,
//!   accept loop and answer writer) answering every request with a constant 200 once its body
//!   is read: the load runs' measure of what the relay's own work costs above its stack.

use std::io::{BufRead, Write};
use std::time::Instant;

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, KeyIvInit};
use base64::Engine;
use sha1::{Digest, Sha1};
use wecom_relay_core::crypto::{MsgCrypt, Sealed};
use wecom_relay_core::relay::{open_callback, Rejection};
use wecom_relay_core::xml::{callback_envelope_xml, parse_envelope};
use wecom_relay_core::{RawSettings, Settings};

const CORP: &str = "wwbench0123456789";
const SECRET: &str = "bench-secret";
const AGENT: u64 = 1000002;
const TOKEN: &str = "benchtoken";
const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let num = |i: usize, default: u64| arg(i).parse().unwrap_or(default);
    match (arg(0), arg(1)) {
        ("params", _) => println!(
            "{}",
            serde_json::json!({"corp_id": CORP, "corp_secret": SECRET, "agent_id": AGENT,
                "token": TOKEN, "encoding_aes_key": KEY})
        ),
        ("corpus", "core") => write_core_corpus(arg(2), num(3, 1000) as usize),
        ("corpus", "load") => {
            write_load_corpus(arg(2), num(3, 100_000) as usize, num(4, 10_000) as usize)
        }
        ("core", _) => measure(arg(1), num(2, 5)),
        ("profile", _) => profile(arg(1), num(2, 100)),
        #[cfg(feature = "serve")]
        ("standin", _) => standin::serve(num(1, 18700) as u16, num(2, 10_000) as usize, num(3, 0)),
        #[cfg(feature = "serve")]
        ("stack", _) => stack::serve(num(1, 18800) as u16),
        _ => {
            eprintln!("usage: bench params | corpus core FILE N | corpus load FILE N USERS | core FILE SECS | profile FILE ROUNDS | standin PORT USERS [SLOW_MS] | stack PORT");
            std::process::exit(2);
        }
    }
}

fn crypt() -> MsgCrypt {
    MsgCrypt::new(TOKEN, KEY, CORP).expect("the bench key is valid")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A small deterministic generator (xorshift), so every run opens the same corpus.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "你好",
    "请帮我总结一下今天的会议纪要。",
    "明天下午三点的评审改到四点",
    "hello",
    "Can you draft a reply to the customer? ",
    "报销流程是什么？",
    "😀",
    "👍🏻",
    "🚀 ship it",
    "a]]>b",
    " <tag> & \"quotes\" ",
    "库存还剩多少？",
    "SELECT * FROM orders WHERE id = 42;",
    "\n",
];

/// Text of about `target` bytes (5 to 600) from the pieces above.
fn text(rng: &mut Rng, target: usize) -> String {
    let mut s = String::new();
    while s.len() < target {
        s.push_str(PIECES[rng.below(PIECES.len())]);
    }
    while s.len() > target.max(5) {
        s.pop();
    }
    if s.trim().is_empty() {
        s = "hello".into();
    }
    s
}

/// `value` as CDATA, splitting any `]]>` the way WeCom's SDKs do.
fn cdata(value: &str) -> String {
    format!("<![CDATA[{}]]>", value.replace("]]>", "]]]]><![CDATA[>"))
}

fn message_xml(rng: &mut Rng, user: &str, msg_id: u64, created: u64, text_only: bool) -> String {
    let head = format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{created}</CreateTime>",
        cdata(CORP),
        cdata(user)
    );
    let kind = if text_only { 0 } else { rng.below(10) };
    let body = match kind {
        7 => format!(
            "<MsgType>{}</MsgType><PicUrl>{}</PicUrl><MediaId>{}</MediaId><MsgId>{msg_id}</MsgId>",
            cdata("image"),
            cdata("https://wework.qpic.cn/wwpic/123456_abcdef/0"),
            cdata("1XyzMediaIdOfThePicture0123456789abcdefghijk")
        ),
        8 => format!(
            "<MsgType>{}</MsgType><MediaId>{}</MediaId><Format>{}</Format><Recognition>{}</Recognition><MsgId>{msg_id}</MsgId>",
            cdata("voice"),
            cdata("1VoiceMediaId0123456789abcdefghijk"),
            cdata("amr"),
            cdata(&text(rng, 60))
        ),
        9 => format!(
            "<MsgType>{}</MsgType><Event>{}</Event><EventKey>{}</EventKey>",
            cdata("event"),
            cdata("enter_agent"),
            cdata("")
        ),
        _ => {
            let size = 5 + rng.below(596);
            format!(
                "<MsgType>{}</MsgType><Content>{}</Content><MsgId>{msg_id}</MsgId>",
                cdata("text"),
                cdata(&text(rng, size))
            )
        }
    };
    format!("{head}{body}<AgentID>{AGENT}</AgentID></xml>")
}

/// One signed callback: its query, its body, and what was signed.
fn seal(crypt: &MsgCrypt, rng: &mut Rng, xml: &str, timestamp: &str) -> (String, String, Sealed) {
    let mut random = [0u8; 16];
    for b in &mut random {
        *b = rng.next() as u8;
    }
    let nonce = format!("{}", rng.next() % 10_000_000_000);
    let sealed = crypt
        .encrypt(xml, &random, timestamp, &nonce)
        .expect("sealing the bench corpus");
    let query = format!(
        "msg_signature={}&timestamp={timestamp}&nonce={nonce}",
        sealed.signature
    );
    let body = callback_envelope_xml(CORP, &sealed.encrypt, &AGENT.to_string());
    (query, body, sealed)
}

fn write_core_corpus(path: &str, n: usize) {
    let crypt = crypt();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let ts = now().to_string();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("corpus file"));
    for i in 0..n {
        let xml = message_xml(
            &mut rng,
            &format!("user{}", i % 50),
            7_000_000_000 + i as u64,
            now(),
            false,
        );
        let (query, body, sealed) = seal(&crypt, &mut rng, &xml, &ts);
        writeln!(
            out,
            "{}",
            serde_json::json!({"query": query, "body": body, "msg_signature": sealed.signature,
                "timestamp": sealed.timestamp, "nonce": sealed.nonce, "plain_bytes": xml.len()})
        )
        .expect("writing the corpus");
    }
}

fn write_load_corpus(path: &str, n: usize, users: usize) {
    let crypt = crypt();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let ts = now().to_string();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("corpus file"));
    for i in 0..n {
        let xml = message_xml(
            &mut rng,
            &format!("u{}", i % users),
            8_000_000_000 + i as u64,
            now(),
            true,
        );
        let (query, body, _) = seal(&crypt, &mut rng, &xml, &ts);
        debug_assert!(!body.contains(['\t', '\n']));
        writeln!(out, "/wecom/callback?{query}\t{body}").expect("writing the corpus");
    }
}

struct Case {
    query: String,
    body: String,
    /// What the floor hashes: the signature's input, token, timestamp, nonce and ciphertext.
    signed: Vec<u8>,
    cipher: Vec<u8>,
}

fn load_cases(path: &str) -> Vec<Case> {
    let file = std::fs::File::open(path).expect("the corpus file");
    std::io::BufReader::new(file)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(&line.expect("a line")).expect("json");
            let body = v["body"].as_str().unwrap_or_default().to_owned();
            let encrypt = parse_envelope(&body)
                .expect("a corpus envelope")
                .encrypt
                .into_owned();
            let mut parts = [
                TOKEN.to_owned(),
                v["timestamp"].as_str().unwrap_or_default().to_owned(),
                v["nonce"].as_str().unwrap_or_default().to_owned(),
                encrypt.clone(),
            ];
            parts.sort();
            Case {
                query: v["query"].as_str().unwrap_or_default().to_owned(),
                body,
                signed: parts.concat().into_bytes(),
                cipher: base64::engine::general_purpose::STANDARD
                    .decode(encrypt)
                    .expect("base64 ciphertext"),
            }
        })
        .collect()
}

fn settings() -> Settings {
    let mut raw = RawSettings::default();
    for (k, v) in [
        ("corp_id", CORP.to_owned()),
        ("corp_secret", SECRET.to_owned()),
        ("agent_id", AGENT.to_string()),
        ("token", TOKEN.to_owned()),
        ("encoding_aes_key", KEY.to_owned()),
        ("allow_all_users", "true".to_owned()),
    ] {
        raw.set(k, v).expect("a bench setting");
    }
    raw.resolve().expect("the bench settings")
}

/// Nanoseconds per callback for `f` over the whole corpus, repeated until `budget` passes.
fn per_message(cases: &[Case], budget: std::time::Duration, mut f: impl FnMut(&Case)) -> f64 {
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < budget {
        for case in cases {
            f(case);
        }
        done += cases.len() as u64;
    }
    started.elapsed().as_nanos() as f64 / done as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Opens one case as the relay's `handle_callback` opens a callback: verify, decrypt, route
/// and parse, into a new slot for the decrypted buffer, dropped with the message.
fn open_case(settings: &Settings, case: &Case, now: u64) -> Result<(), Rejection> {
    let mut plain = Vec::new();
    let inbound = open_callback(settings, &case.query, case.body.as_bytes(), now, &mut plain)?;
    std::hint::black_box(&inbound);
    Ok(())
}

fn measure(path: &str, secs: u64) {
    let cases = load_cases(path);
    let settings = settings();
    let key = *wecom_relay_core::crypto::EncodingAesKey::parse(KEY)
        .expect("the bench key")
        .as_bytes();
    let now = now();
    // Every case must open, or the figure would time the error path.
    for case in &cases {
        if let Err(e) = open_case(&settings, case, now) {
            eprintln!("a corpus callback does not open: {e:?}");
            std::process::exit(1);
        }
    }
    let rounds = 7;
    let budget = std::time::Duration::from_millis(secs * 1000 / (2 * rounds));
    let (mut core, mut floor) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 8192];
    for _ in 0..rounds {
        core.push(per_message(&cases, budget, |case| {
            std::hint::black_box(open_case(&settings, case, now).is_ok());
        }));
        floor.push(per_message(&cases, budget, |case| {
            let digest = Sha1::digest(&case.signed);
            let out = &mut buf[..case.cipher.len()];
            out.copy_from_slice(&case.cipher);
            let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &key[..16])
                .expect("key and iv lengths")
                .decrypt_padded_mut::<NoPadding>(out)
                .expect("whole blocks");
            std::hint::black_box((digest, plain.len()));
        }));
    }
    let mean_bytes = cases.iter().map(|c| c.body.len()).sum::<usize>() / cases.len().max(1);
    println!(
        "{}",
        serde_json::json!({"messages": cases.len(), "mean_body_bytes": mean_bytes,
            "core_ns": median(core), "floor_ns": median(floor)})
    );
}

fn profile(path: &str, rounds: u64) {
    let cases = load_cases(path);
    let settings = settings();
    let now = now();
    let mut opened = 0u64;
    for _ in 0..rounds {
        for case in &cases {
            opened += u64::from(open_case(&settings, case, now).is_ok());
        }
    }
    println!("{opened} callbacks opened");
}

#[cfg(feature = "serve")]
mod standin {
    use std::io::BufRead;
    use std::time::Duration;

    use wecom_relay_standin::wecom::{Fault, Standin, StandinApp};

    /// Serves the stand-in on `port` until stdin closes (`message/send` answering after
    /// `slow_ms` when it is not 0); `stats` on stdin prints its counters.
    pub fn serve(port: u16, users: usize, slow_ms: u64) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let app = StandinApp {
            corp_id: super::CORP.into(),
            corp_secret: super::SECRET.into(),
            agent_id: super::AGENT,
            users: (0..users).map(|i| format!("u{i}")).collect(),
            trusted: true,
        };
        let standin = Standin::new(vec![app], Duration::from_secs(7200));
        if slow_ms > 0 {
            standin.inject(Fault::slow("/cgi-bin/message/send", slow_ms));
        }
        let running = rt
            .block_on(standin.clone().serve(port))
            .expect("the stand-in's port");
        println!("ready {}", running.base_url());
        for line in std::io::stdin().lock().lines() {
            match line.as_deref() {
                Ok("stats") => println!(
                    "{}",
                    serde_json::json!({"send_calls": standin.calls("/cgi-bin/message/send"),
                        "gettoken_calls": standin.gettoken_calls(),
                        "duplicates_dropped": standin.duplicates_dropped()})
                ),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        drop(running);
    }
}

#[cfg(feature = "serve")]
mod stack {
    use http_body_util::{BodyExt, Limited};
    use hyper::body::Incoming;
    use hyper::Request;
    use wecom_relay::http::{respond, serve_with, Reply, DEFAULT_REQUEST_TIMEOUT};
    use wecom_relay_core::Answer;
    use wecom_relay_core::MAX_BODY_BYTES;

    /// Serves a constant `success` on `port` through the relay's own `serve_with`, on a
    /// runtime built as `wecom-relay serve` builds its own, until killed.
    pub fn serve(port: u16) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("the stack's port");
            serve_with(
                listener,
                DEFAULT_REQUEST_TIMEOUT,
                std::future::pending(),
                constant,
            )
            .await;
        });
    }

    /// Reads the body (at most the relay's cap), then answers as the relay answers a retry,
    /// through the same `respond`.
    async fn constant(request: Request<Incoming>) -> Reply {
        let read = Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await;
        let status = if read.is_ok() { 200 } else { 413 };
        respond(Answer::text(status, "success"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_corpus_callback_opens_and_text_survives_cdata() {
        let dir = std::env::temp_dir().join(format!("bench-corpus-{}", std::process::id()));
        let path = dir.with_extension("jsonl");
        write_core_corpus(path.to_str().unwrap(), 200);
        let cases = load_cases(path.to_str().unwrap());
        assert_eq!(cases.len(), 200);
        let s = settings();
        let now = now();
        let mut texts = 0;
        for case in &cases {
            let mut plain = Vec::new();
            let inbound =
                open_callback(&s, &case.query, case.body.as_bytes(), now, &mut plain).unwrap();
            if let wecom_relay_core::xml::MessageBody::Text { content } = &inbound.message.body {
                texts += 1;
                assert!(!content.is_empty() && content.len() <= 600);
            }
        }
        assert!(texts > 100, "{texts}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn cdata_splits_its_terminator() {
        assert_eq!(cdata("a]]>b"), "<![CDATA[a]]]]><![CDATA[>b]]>");
    }
}
