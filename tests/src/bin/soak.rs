//! The soak: the native relay under a steady rate of distinct callbacks for many minutes,
//! with replies, thinking notices and one WeCom fault a minute. It checks that every
//! callback was accepted, every accepted message answered exactly once, and that resident
//! memory stays flat (the last minute's peak within 10 % of the second minute's).
//!
//! `scripts/soak.sh` runs it (10 minutes at 50 callbacks a second by default); it is not part
//! of the test command. Usage: `soak [minutes] [callbacks per second]`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wecom_relay_core::crypto::MsgCrypt;
use wecom_relay_standin::openai::{ChatFault, OpenAiStandin};
use wecom_relay_standin::wecom::Fault;
use wecom_relay_tests::harness::{now, text_xml, AppSpec, Running, Scenario, Twin};

/// Few enough that every user's conversation memory fills up early (so memory can level off),
/// many enough to stay under WeCom's 30 messages a member a minute.
const USERS: usize = 200;
const KEY: &str = "sk-soak-0123456789";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let minutes: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rate: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(50);

    let ai = OpenAiStandin::new(KEY).serve().await.unwrap();
    let users: Vec<String> = (0..USERS).map(|i| format!("soak{i}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let app = AppSpec::new("soak", "wwsoak", 1000002, 's', &refs);
    let mut scenario = Scenario::new(vec![app.clone()]);
    // A short replay window and dedup TTL, so the dedup markers reach their steady state in
    // the second minute (with the default 15 minutes they would grow all through the soak).
    scenario.max_timestamp_skew_secs = 60;
    scenario.dedup_ttl_secs = Some(120);
    scenario.agent = vec![
        ("AGENT_KIND".into(), "openai".into()),
        ("AGENT_BASE_URL".into(), ai.base_url()),
        ("AGENT_API_KEY".into(), KEY.into()),
        ("AGENT_MODEL".into(), "soak".into()),
        ("AGENT_THINKING_NOTICE_SECS".into(), "1".into()),
        ("AGENT_TIMEOUT_SECS".into(), "10".into()),
    ];
    let r = Arc::new(Running::start(Twin::Native, scenario).await);
    let crypt = MsgCrypt::new(&app.token, &app.key, &app.corp_id).unwrap();
    let client = reqwest::Client::new();
    println!(
        "soak: {minutes} min at {rate} callbacks/s, {USERS} users, relay pid {:?}",
        r.pid()
    );

    // Resident memory, sampled every second, peak per minute.
    let peaks = Arc::new(std::sync::Mutex::new(vec![0u64; minutes as usize + 1]));
    let started = Instant::now();
    {
        let (r, peaks) = (r.clone(), peaks.clone());
        tokio::spawn(async move {
            loop {
                let minute = (started.elapsed().as_secs() / 60) as usize;
                if let Some(rss) = r.rss_kib() {
                    let mut p = peaks.lock().unwrap();
                    if minute < p.len() {
                        p[minute] = p[minute].max(rss);
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    let errors = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let faults = [
        Fault::errcode("/cgi-bin/message/send", -1, 2),
        Fault::http("/cgi-bin/message/send", 502, 1),
        Fault {
            late_ms: 6_000,
            times: 1,
            ..Fault::slow("/cgi-bin/message/send", 0)
        },
        Fault {
            cut: true,
            times: 1,
            ..Fault::slow("/cgi-bin/message/send", 0)
        },
        Fault::errcode("/cgi-bin/message/send", 42001, 1),
        Fault::errcode("/cgi-bin/message/send", 45009, 1),
    ];
    let total = minutes * 60 * rate;
    let gap = Duration::from_micros(1_000_000 / rate);
    let mut next = Instant::now();
    let mut sent_texts = Vec::with_capacity(total as usize);
    for i in 0..total {
        if i % (60 * rate) == 30 * rate {
            r.standin
                .standin
                .inject(faults[(i / (60 * rate)) as usize % faults.len()].clone());
        }
        // One in a hundred answers is slow enough for the thinking notice.
        if i % 100 == 7 {
            ai.standin.inject(ChatFault {
                delay_ms: 1_500,
                ..ChatFault::default()
            });
        }
        let user = &users[i as usize % USERS];
        let text = format!("soak message {i}");
        let ts = now();
        let xml = text_xml(&app.corp_id, user, app.agent_id, 10_000 + i, &text, ts);
        let sealed = crypt
            .encrypt(
                &xml,
                &(i as u128).to_le_bytes(),
                &ts.to_string(),
                &format!("{i}"),
            )
            .unwrap();
        let body = format!(
            "<xml><ToUserName>{}</ToUserName><Encrypt>{}</Encrypt><AgentID>{}</AgentID></xml>",
            app.corp_id, sealed.encrypt, app.agent_id
        );
        let url = r.callback_url(&format!(
            "msg_signature={}&timestamp={ts}&nonce={i}",
            sealed.signature
        ));
        sent_texts.push(text);
        let (client, failed, ok) = (client.clone(), errors.clone(), accepted.clone());
        tokio::spawn(async move {
            match client.post(url).body(body).send().await {
                Ok(resp) if resp.status().as_u16() == 200 => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        next += gap;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        if i % (60 * rate) == 0 && i > 0 {
            println!(
                "  minute {}: {} accepted, {} errors, {} messages at the stand-in",
                i / (60 * rate),
                accepted.load(Ordering::Relaxed),
                errors.load(Ordering::Relaxed),
                r.standin.standin.messages().len()
            );
        }
    }
    let load_secs = started.elapsed().as_secs_f64();

    // Every reply, then exactly once each.
    let deadline = Instant::now() + Duration::from_secs(120);
    let replies = loop {
        let mut replies: HashMap<String, usize> = HashMap::new();
        for m in r.standin.standin.messages() {
            if let Some(c) = m.content {
                if let Some(rest) = c.strip_prefix("reply to ") {
                    let text = rest
                        .split(" (history")
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    *replies.entry(text).or_default() += 1;
                }
            }
        }
        if replies.len() >= sent_texts.len() || Instant::now() > deadline {
            break replies;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let unanswered = sent_texts
        .iter()
        .filter(|t| !replies.contains_key(*t))
        .count();
    let twice = replies.values().filter(|&&n| n > 1).count();
    let notices = r
        .standin
        .standin
        .messages()
        .iter()
        .filter(|m| {
            m.content
                .as_deref()
                .is_some_and(|c| c.starts_with("正在思考"))
        })
        .count();
    let dropped = r
        .standin
        .standin
        .messages()
        .iter()
        .filter(|m| m.dropped)
        .count();
    let peaks = peaks.lock().unwrap().clone();
    let growth = if minutes >= 3 {
        let (second, last) = (peaks[1], peaks[minutes as usize - 1]);
        (last as f64 / second.max(1) as f64 - 1.0) * 100.0
    } else {
        0.0
    };
    let errors = errors.load(Ordering::Relaxed);
    println!("soak finished: {total} callbacks in {load_secs:.0} s");
    println!(
        "  accepted {}  errors {errors}  unanswered {unanswered}  answered twice {twice}",
        accepted.load(Ordering::Relaxed)
    );
    println!(
        "  thinking notices {notices}  dropped by the member limit {dropped}  duplicate sends WeCom dropped {}",
        r.standin.standin.duplicates_dropped()
    );
    for body in r.standin.standin.duplicates().iter().take(5) {
        println!("  dropped as a duplicate: {body}");
    }
    println!(
        "  peak RSS per minute (MiB): {}",
        peaks
            .iter()
            .take(minutes as usize)
            .map(|k| format!("{:.1}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("  last minute's peak vs the second's: {growth:+.1} %");
    let ok = errors == 0 && unanswered == 0 && twice == 0 && dropped == 0 && growth <= 10.0;
    println!("soak {}", if ok { "PASSED" } else { "FAILED" });
    // `exit` skips destructors: stop the relay here.
    if let Some(pid) = r.pid() {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    std::process::exit(if ok { 0 } else { 1 });
}
