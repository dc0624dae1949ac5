//! The hot path of a callback, per request: verify, decrypt, route, parse, decide, claim.
//!
//! `cargo bench -p wecom-relay-core --bench callback`. Figures are for comparison within one
//! run (e.g. 1 app against 20 apps), not absolute targets: this machine is shared.

use std::hint::black_box;

use criterion::{criterion_main, Criterion};
use wecom_relay_core::crypto::MsgCrypt;
use wecom_relay_core::ports::{JobSink, MemoryDedup, SinkError};
use wecom_relay_core::relay::{handle_callback, open_callback};
use wecom_relay_core::testing::block_on;
use wecom_relay_core::wecom::split::split_for_wecom;
use wecom_relay_core::xml::callback_envelope_xml;
use wecom_relay_core::{Job, RawSettings, Settings};

const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

fn settings(apps: usize) -> Settings {
    let list: Vec<serde_json::Value> = (0..apps)
        .map(|i| {
            let key: String = KEY.chars().take(40).chain(format!("{:03}", i).chars()).collect();
            serde_json::json!({"name": format!("app{i}"), "corp_id": format!("wwcorp{i}"), "corp_secret": "s",
                "agent_id": 1000 + i, "token": format!("token{i}"), "encoding_aes_key": key})
        })
        .collect();
    let mut raw = RawSettings::default();
    raw.set("apps_json", serde_json::to_string(&list).unwrap())
        .unwrap();
    raw.set("allow_all_users", "true".into()).unwrap();
    raw.resolve().unwrap()
}

/// A callback for the last app, so routing checks every signature first.
fn callback(settings: &Settings, content: &str) -> (String, String) {
    let app = settings.apps.iter().last().unwrap();
    let crypt: &MsgCrypt = &app.crypt;
    let xml = format!(
        "<xml><ToUserName><![CDATA[{c}]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>1700000000</CreateTime>\
         <MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>1234567890</MsgId><AgentID>{a}</AgentID></xml>",
        c = app.corp_id,
        a = app.agent_id
    );
    let sealed = crypt
        .encrypt(&xml, &[7; 16], "1700000000", "nonce")
        .unwrap();
    let query = format!(
        "msg_signature={}&timestamp=1700000000&nonce=nonce",
        sealed.signature
    );
    (
        query,
        callback_envelope_xml(
            crypt.receive_id(),
            &sealed.encrypt,
            &app.agent_id.to_string(),
        ),
    )
}

struct Discard;
impl JobSink for Discard {
    async fn submit(&self, _job: Job) -> Result<(), SinkError> {
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    for apps in [1, 20] {
        let s = settings(apps);
        let (query, body) = callback(&s, "你好，请帮我总结一下今天的会议纪要。");
        c.bench_function(&format!("open_callback/{apps}_apps/short"), |b| {
            b.iter(|| {
                let mut plain = Vec::new();
                let inbound = open_callback(
                    black_box(&s),
                    black_box(&query),
                    black_box(body.as_bytes()),
                    1_700_000_000,
                    &mut plain,
                )
                .unwrap();
                black_box(inbound.dedup_key.len())
            })
        });
    }
    let s = settings(1);
    let (query, body) = callback(&s, &"长消息".repeat(600));
    c.bench_function("open_callback/1_app/5.4KB", |b| {
        b.iter(|| {
            let mut plain = Vec::new();
            let inbound = open_callback(
                black_box(&s),
                black_box(&query),
                black_box(body.as_bytes()),
                1_700_000_000,
                &mut plain,
            )
            .unwrap();
            black_box(inbound.dedup_key.len())
        })
    });
    let (query, body) = callback(&s, "hello");
    c.bench_function("handle_callback/1_app/retry_deduped", |b| {
        let dedup = MemoryDedup::default();
        b.iter(|| {
            block_on(handle_callback(
                &s,
                &dedup,
                &Discard,
                black_box(&query),
                body.as_bytes(),
                1_700_000_000,
            ))
            .status()
        })
    });
    let text = "这是一段很长的回答。它会被拆分成多条消息。\n\n".repeat(160);
    c.bench_function("split_for_wecom/10KB", |b| {
        b.iter(|| split_for_wecom(black_box(&text)))
    });
}

mod group {
    #![allow(missing_docs)]
    use super::bench;
    use criterion::criterion_group;
    criterion_group!(benches, bench);
}

criterion_main!(group::benches);
