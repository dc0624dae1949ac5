//! Pictures, voice and files both ways, on every twin in `WECOM_RELAY_TWINS`. wechatpy plays
//! WeCom for apps; the WeCom stand-in serves `media/get` and checks `media/upload` as WeCom
//! does, and serves files at `/files/<name>` (an agent's attachments, an AI bot's sealed media);
//! the OpenAI stand-in checks content parts and refuses AMR for transcription, as OpenAI does.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wecom_relay_standin::openai::{OpenAiStandin, RunningOpenAi};
use wecom_relay_standin::wecom::Delivered;
use wecom_relay_tests::harness::{now, AppSpec, BotSpec, Running, Scenario, Twin};
use wecom_relay_tests::peer::{PeerBot, WechatpyPeer};

const KEY: &str = "sk-standin-media";

/// A real PNG's first bytes, then filler: what a picture's sniffing sees.
fn png(len: usize) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    b.extend((0..len).map(|i| (i % 251) as u8));
    b
}

fn app() -> AppSpec {
    AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"])
}

fn openai_agent(ai: &RunningOpenAi, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut agent: Vec<(String, String)> = vec![
        ("AGENT_KIND".into(), "openai".into()),
        ("AGENT_BASE_URL".into(), ai.base_url()),
        ("AGENT_API_KEY".into(), KEY.into()),
        ("AGENT_MODEL".into(), "standin-model".into()),
        ("AGENT_THINKING_NOTICE_SECS".into(), "0".into()),
    ];
    agent.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    agent
}

/// WeCom posts message `msg_id` (`inner` is its `MsgType` and fields); the relay must take it.
async fn post(r: &Running, peer: &mut WechatpyPeer, msg_id: u64, inner: &str) {
    let inner = format!("{inner}<MsgId>{msg_id}</MsgId>");
    assert_eq!(r.post_xml(peer, &format!("n{msg_id}"), &inner).await, 200);
}

/// The user message the model was asked about, in request `i`.
fn last_user(requests: &[Value], i: usize) -> Value {
    requests[i]["messages"].as_array().unwrap().last().unwrap()["content"].clone()
}

async fn wait_requests(ai: &RunningOpenAi, r: &Running, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = ai.standin.requests();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{n} model requests expected, got {}: {}",
            got.len(),
            r.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_voice_and_files_reach_the_model() {
    for twin in Twin::selected() {
        let ai = OpenAiStandin::new(KEY).serve().await.unwrap();
        let mut scenario = Scenario::new(vec![app()]);
        scenario.agent = openai_agent(&ai, &[("AGENT_TRANSCRIPTION_MODEL", "whisper-1")]);
        let r = Running::start(twin, scenario).await;
        let mut peer = WechatpyPeer::start();
        let wecom = &r.standin.standin;
        // A picture, by media id: the model sees its bytes as an image content part.
        let picture = png(3000);
        let media_id = wecom.put_media("photo.png", "image/png", picture.clone());
        let image = format!(
            "<MsgType>image</MsgType><PicUrl>https://wework.qpic.cn/x</PicUrl><MediaId>{media_id}</MediaId>"
        );
        post(&r, &mut peer, 8101, &image).await;
        let requests = wait_requests(&ai, &r, 1).await;
        let parts = last_user(&requests, 0);
        let url = parts[0]["image_url"]["url"].as_str().unwrap_or_default();
        use base64::Engine;
        let want = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&picture)
        );
        assert_eq!(url, want, "{twin:?}: {parts}");
        // Voice without WeCom's transcript: the backend is asked to transcribe, refuses AMR
        // (as OpenAI does), and the model hears that a voice message came without one.
        let voice = wecom.put_media("voice.amr", "audio/amr", b"#!AMR\n0123456789".to_vec());
        post(
            &r,
            &mut peer,
            8102,
            &format!("<MsgType>voice</MsgType><MediaId>{voice}</MediaId><Format>amr</Format>"),
        )
        .await;
        let requests = wait_requests(&ai, &r, 2).await;
        let said = last_user(&requests, 1);
        assert!(
            said.as_str()
                .unwrap_or_default()
                .contains("without a transcript"),
            "{twin:?}: {said}"
        );
        assert_eq!(ai.standin.transcriptions(), 1, "{twin:?}");
        // Voice with WeCom's transcript: the transcript, and no transcription call.
        post(
            &r,
            &mut peer,
            8103,
            &format!(
                "<MsgType>voice</MsgType><MediaId>{voice}</MediaId><Format>amr</Format>\
                 <Recognition><![CDATA[明天上午十点开会]]></Recognition>"
            ),
        )
        .await;
        let requests = wait_requests(&ai, &r, 3).await;
        assert_eq!(last_user(&requests, 2), "明天上午十点开会", "{twin:?}");
        assert_eq!(ai.standin.transcriptions(), 1);
        // A text file: its name, size and content.
        let notes = "# Notes\n\n- ship on Friday\n- 回顾 on Monday\n";
        let file = wecom.put_media("notes.md", "text/markdown", notes.as_bytes().to_vec());
        post(&r, &mut peer, 8104, &format!(
                "<MsgType>file</MsgType><MediaId>{file}</MediaId><FileName><![CDATA[notes.md]]></FileName><FileSize>{}</FileSize>",
                notes.len()
            ),
        )
        .await;
        let requests = wait_requests(&ai, &r, 4).await;
        let said = last_user(&requests, 3);
        let said = said.as_str().unwrap_or_default();
        assert!(
            said.contains("notes.md") && said.contains("- ship on Friday") && said.contains("回顾"),
            "{twin:?}: {said}"
        );
        // An expired media id (40007): the model hears the picture could not be read.
        post(
            &r,
            &mut peer,
            8105,
            "<MsgType>image</MsgType><PicUrl></PicUrl><MediaId>expired-media</MediaId>",
        )
        .await;
        let requests = wait_requests(&ai, &r, 5).await;
        let said = last_user(&requests, 4);
        assert!(
            said.as_str()
                .unwrap_or_default()
                .contains("could not be read"),
            "{twin:?}: {said}"
        );
        // A picture over the 10 MB a model is given: refused while downloading, said so.
        let huge = wecom.put_media("huge.png", "image/png", png(11 << 20));
        post(
            &r,
            &mut peer,
            8106,
            &format!("<MsgType>image</MsgType><PicUrl></PicUrl><MediaId>{huge}</MediaId>"),
        )
        .await;
        let requests = wait_requests(&ai, &r, 6).await;
        let said = last_user(&requests, 5);
        assert!(
            said.as_str()
                .unwrap_or_default()
                .contains("larger than 10 MB"),
            "{twin:?}: {said}"
        );
    }
}

fn by_type<'a>(messages: &'a [Delivered], msgtype: &str) -> Vec<&'a Delivered> {
    messages.iter().filter(|m| m.msgtype == msgtype).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_go_out_through_upload_and_what_cannot_go_is_said() {
    for twin in Twin::selected() {
        let mut scenario = Scenario::new(vec![app()]);
        // The stand-in serves the files on loopback: allowed by name of address.
        scenario.media_allow_hosts = vec!["127.0.0.1".into()];
        // The echo agent answers with the text it got, links and all.
        let r = Running::start(twin, scenario).await;
        let mut peer = WechatpyPeer::start();
        let wecom = &r.standin.standin;
        let base = wecom_base(&r);
        let chart = png(5000);
        wecom.put_file("chart.png", "image/png", chart.clone());
        let report = b"%PDF-1.7\n% a small report\n".to_vec();
        wecom.put_file("report.pdf", "application/pdf", report.clone());
        wecom.put_file("big.bin", "application/octet-stream", vec![7u8; 21 << 20]);
        let answer = format!(
            "Here is the chart: ![chart]({base}/files/chart.png)\n\
             and [the report]({base}/files/report.pdf \"attachment\").\n\
             [too big]({base}/files/big.bin \"attachment\")\n\
             ![inside](https://169.254.169.254/latest/meta-data.png)"
        );
        r.say(&mut peer, 8201, &answer).await;
        r.wait_for("text, image and file", |m| m.len() >= 3).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let got = wecom.messages();
        let images = by_type(&got, "image");
        let files = by_type(&got, "file");
        assert_eq!(
            (images.len(), files.len()),
            (1, 1),
            "{twin:?}: {got:#?}\n{}",
            r.logs()
        );
        let (name, _, bytes) = wecom
            .uploaded(images[0].body["image"]["media_id"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            (name.as_str(), bytes == chart),
            ("chart.png", true),
            "{twin:?}"
        );
        let (name, _, bytes) = wecom
            .uploaded(files[0].body["file"]["media_id"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            (name.as_str(), bytes == report),
            ("the report.pdf", true),
            "{twin:?}"
        );
        let text: Vec<String> = got.iter().filter_map(|m| m.content.clone()).collect();
        let text = text.join("\n");
        assert!(
            text.contains("Here is the chart:") && !text.contains("/files/chart.png"),
            "{twin:?}: {text}"
        );
        assert!(
            text.contains("Could not send too big: it is larger than 20 MB"),
            "{twin:?}: {text}"
        );
        assert!(
            text.contains("Could not send inside: 169.254.169.254 is a private address"),
            "{twin:?}: {text}"
        );
    }
}

fn wecom_base(r: &Running) -> String {
    r.standin.base_url()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_format_sends_markdown_only_when_the_answer_uses_it() {
    for twin in Twin::selected() {
        let r = Running::start(twin, Scenario::new(vec![app()])).await;
        let mut peer = WechatpyPeer::start();
        r.say(&mut peer, 8301, "a plain answer, 3 * 4 = 12").await;
        r.say(&mut peer, 8302, "**bold** and a list:\n- one\n- two")
            .await;
        let got = r.wait_for("two answers", |m| m.len() >= 2).await;
        let mut kinds: Vec<(String, String)> = got
            .iter()
            .map(|m| (m.msgtype.clone(), m.content.clone().unwrap_or_default()))
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            vec![
                (
                    "markdown".to_string(),
                    "**bold** and a list:\n- one\n- two".to_string()
                ),
                ("text".to_string(), "a plain answer, 3 * 4 = 12".to_string()),
            ],
            "{twin:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ai_bot_picture_is_opened_with_the_bot_key_for_the_model() {
    for twin in Twin::selected() {
        let ai = OpenAiStandin::new(KEY).serve().await.unwrap();
        let mut scenario = Scenario::new(vec![app()]);
        let bot = BotSpec::new("helper", 3);
        scenario.bots = vec![bot.clone()];
        scenario.media_allow_hosts = vec!["127.0.0.1".into()];
        scenario.agent = openai_agent(&ai, &[]);
        let r = Running::start(twin, scenario).await;
        let mut peer = WechatpyPeer::start();
        let peer_bot = PeerBot {
            token: bot.token.clone(),
            key: bot.key.clone(),
        };
        let picture = png(4000);
        let sealed = peer.bot_seal_media(&peer_bot, &picture);
        r.standin
            .standin
            .put_file("bot-photo", "application/octet-stream", sealed);
        let message = json!({
            "msgid": "media-1",
            "aibotid": bot.aibotid,
            "chattype": "single",
            "from": {"userid": "alice"},
            "msgtype": "mixed",
            "mixed": {"msg_item": [
                {"msgtype": "text", "text": {"content": "what is in this picture?"}},
                {"msgtype": "image", "image": {"url": format!("{}/files/bot-photo", wecom_base(&r))}}
            ]},
        });
        let (query, body) =
            peer.bot_callback(&peer_bot, &message.to_string(), &now().to_string(), "nm1");
        let resp = reqwest::Client::new()
            .post(format!("{}{}?{query}", r.base, bot.path()))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{twin:?}");
        let requests = wait_requests(&ai, &r, 1).await;
        let parts = last_user(&requests, 0);
        assert_eq!(
            parts[0]["text"], "what is in this picture?",
            "{twin:?}: {parts}"
        );
        use base64::Engine;
        let want = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&picture)
        );
        assert_eq!(parts[1]["image_url"]["url"], want.as_str(), "{twin:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ai_bot_answer_ends_with_its_pictures() {
    for twin in Twin::selected() {
        let mut scenario = Scenario::new(vec![app()]);
        let bot = BotSpec::new("helper", 3);
        scenario.bots = vec![bot.clone()];
        scenario.media_allow_hosts = vec!["127.0.0.1".into()];
        // The echo agent streams back what it got: a picture link and a file link.
        let r = Running::start(twin, scenario).await;
        let mut peer = WechatpyPeer::start();
        let peer_bot = PeerBot {
            token: bot.token.clone(),
            key: bot.key.clone(),
        };
        let chart = png(6000);
        r.standin
            .standin
            .put_file("chart.png", "image/png", chart.clone());
        let base = wecom_base(&r);
        let text =
            format!("See ![chart]({base}/files/chart.png) and ![gone]({base}/files/missing.png)");
        let mut seq = 0;
        let mut post = |plain: Value| {
            seq += 1;
            let (query, body) = peer.bot_callback(
                &peer_bot,
                &plain.to_string(),
                &now().to_string(),
                &format!("np{seq}"),
            );
            let url = format!("{}{}?{query}", r.base, bot.path());
            let peer_bot = peer_bot.clone();
            async move {
                let text = reqwest::Client::new()
                    .post(url)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                (text, peer_bot)
            }
        };
        let message = json!({
            "msgid": "pic-out-1", "aibotid": bot.aibotid, "chattype": "single",
            "from": {"userid": "alice"}, "msgtype": "text", "text": {"content": text},
        });
        let (reply, _) = post(message).await;
        let mut opener = WechatpyPeer::start();
        let (plain, _, _) = opener.bot_open_reply(&peer_bot, &reply).unwrap();
        let first: Value = serde_json::from_str(&plain).unwrap();
        let stream = first["stream"]["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(20);
        let last = loop {
            let refresh = json!({
                "msgid": format!("r{}", Instant::now().elapsed().as_nanos()), "aibotid": bot.aibotid,
                "chattype": "single", "from": {"userid": "alice"}, "msgtype": "stream", "stream": {"id": stream},
            });
            let (reply, _) = post(refresh).await;
            let (plain, _, _) = opener.bot_open_reply(&peer_bot, &reply).unwrap();
            let json: Value = serde_json::from_str(&plain).unwrap();
            if json["stream"]["finish"] == true {
                break json;
            }
            assert!(Instant::now() < deadline, "{twin:?}: {}", r.logs());
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let items = last["stream"]["msg_item"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(items.len(), 1, "{twin:?}: {last}\n{}", r.logs());
        use base64::Engine;
        use md5::Digest;
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(items[0]["msgtype"], "image");
        assert_eq!(
            b64.decode(items[0]["image"]["base64"].as_str().unwrap())
                .unwrap(),
            chart,
            "{twin:?}"
        );
        let md5: String = md5::Md5::digest(&chart)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(items[0]["image"]["md5"], md5.as_str());
        let content = last["stream"]["content"].as_str().unwrap();
        assert!(
            content.starts_with(&text) && content.contains("Could not show gone"),
            "{twin:?}: {content}"
        );
    }
}
