//! Interop with a real peer: wechatpy (PyPI, 1.8.18) encrypts what the core must decrypt, and
//! decrypts what the core encrypts. Random payloads cover every pad length and non-ASCII text.

use wecom_relay_core::apps::{AppConfig, Apps, SignedQuery};
use wecom_relay_core::crypto::MsgCrypt;
use wecom_relay_core::ports::Random;
use wecom_relay_core::testing::SeededRandom;
use wecom_relay_core::xml::{parse_envelope, parse_message, MessageBody};
use wecom_relay_tests::peer::{PeerApp, WechatpyPeer};

const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

fn peer_app() -> PeerApp {
    PeerApp {
        token: "QDG6eK".into(),
        key: KEY.into(),
        corp_id: "wx5823bf96d3bd56c7".into(),
        agent_id: "218".into(),
    }
}

/// Random text of exactly `len` bytes mixing ASCII, CJK, emoji and XML-special characters.
fn random_text(rng: &SeededRandom, len: usize) -> String {
    const ALPHABET: [&str; 8] = ["a", "Z", "<", "&", "字", "😀", "\n", "]]>"];
    let mut out = String::with_capacity(len);
    let mut b = [0u8; 1];
    while out.len() < len {
        rng.fill(&mut b);
        let piece = ALPHABET[b[0] as usize % ALPHABET.len()];
        if out.len() + piece.len() <= len {
            out.push_str(piece);
        } else {
            out.push('x');
        }
    }
    out
}

#[test]
fn wechatpy_encrypts_the_core_decrypts() {
    let mut peer = WechatpyPeer::start();
    let app = peer_app();
    let crypt = MsgCrypt::new(&app.token, &app.key, &app.corp_id).unwrap();
    let rng = SeededRandom::new(0x5eed);
    let mut lens: Vec<usize> = (0..=64).collect();
    lens.extend([255, 256, 1000, 2048, 4095, 5000]);
    for len in lens {
        let text = random_text(&rng, len);
        let ts = (1_700_000_000 + len).to_string();
        let cb = peer.encrypt_callback(&app, &text, &ts, "nonce42");
        let env = parse_envelope(&cb.body).unwrap();
        assert_eq!(env.encrypt, cb.encrypt);
        let q = SignedQuery::parse(&cb.query).unwrap();
        let plain = crypt
            .decrypt(&q.msg_signature, &q.timestamp, &q.nonce, &env.encrypt)
            .unwrap();
        assert_eq!(plain, text, "length {len}");
    }
}

#[test]
fn the_core_encrypts_wechatpy_decrypts() {
    let mut peer = WechatpyPeer::start();
    let app = peer_app();
    let crypt = MsgCrypt::new(&app.token, &app.key, &app.corp_id).unwrap();
    let rng = SeededRandom::new(7);
    for len in (0..=70).chain([999, 2048, 5000]) {
        let text = random_text(&rng, len);
        let mut random = [0u8; 16];
        rng.fill(&mut random); // arbitrary bytes, not only ASCII
        let sealed = crypt
            .encrypt(&text, &random, "1409659589", "263014780")
            .unwrap();
        let back = peer.decrypt(
            &app,
            &sealed.encrypt,
            &sealed.signature,
            &sealed.timestamp,
            &sealed.nonce,
        );
        assert_eq!(back.as_deref(), Ok(text.as_str()), "length {len}");
    }
    // wechatpy rejects a signature we did not compute for it: the peer is really checking.
    let sealed = crypt.encrypt("x", &[0; 16], "1", "n").unwrap();
    assert!(peer
        .decrypt(&app, &sealed.encrypt, &"0".repeat(40), "1", "n")
        .is_err());
}

#[test]
fn wechatpy_callbacks_route_across_two_corps_sharing_a_user_id() {
    let mut peer = WechatpyPeer::start();
    let a = PeerApp {
        token: "tokenA".into(),
        key: "A".repeat(43),
        corp_id: "wwcorpA".into(),
        agent_id: "1000002".into(),
    };
    let b = PeerApp {
        token: "tokenB".into(),
        key: KEY.into(),
        corp_id: "wwcorpB".into(),
        agent_id: "1000005".into(),
    };
    let cfg = |p: &PeerApp| AppConfig {
        name: None,
        corp_id: p.corp_id.clone(),
        corp_secret: "s".into(),
        agent_id: p.agent_id.clone(),
        token: p.token.clone(),
        encoding_aes_key: p.key.clone(),
        welcome_message: None,
    };
    let apps = Apps::from_configs(&[cfg(&a), cfg(&b)], false).unwrap();
    for (i, p) in [&a, &b].into_iter().enumerate() {
        let xml = format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>1700000000</CreateTime>\
             <MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi from {}]]></Content><MsgId>100</MsgId><AgentID>{}</AgentID></xml>",
            p.corp_id, p.corp_id, p.agent_id
        );
        let cb = peer.encrypt_callback(p, &xml, "1700000000", "n");
        let q = SignedQuery::parse(&cb.query).unwrap();
        let routed = apps
            .route(&q, &parse_envelope(&cb.body).unwrap().encrypt)
            .unwrap();
        assert_eq!(routed.app, i);
        let msg = parse_message(routed.plaintext().unwrap()).unwrap();
        assert_eq!(msg.from_user_name, "zhangsan");
        assert_eq!(
            msg.body,
            MessageBody::Text {
                content: format!("hi from {}", p.corp_id).into()
            }
        );

        let query = peer.verify_url_query(p, "echo-1288432023552776189", "1700000000", "n2");
        let q = SignedQuery::parse(&query).unwrap();
        let routed = apps.route(&q, q.echostr.as_deref().unwrap()).unwrap();
        assert_eq!(
            (routed.app, routed.plaintext().unwrap()),
            (i, "echo-1288432023552776189")
        );
    }
}
