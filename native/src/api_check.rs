//! `wecom-relay api-check`: asks WeCom about each configured app and says in plain words what
//! the answers mean and what to do. `gettoken` proves the corp id and secret; `agent/get`
//! proves the agent id and that this host's IP is trusted (every call but `gettoken` is
//! checked against the app's trusted IPs). A test message goes out only with `--send-to`.

use std::fmt::Write as _;

use wecom_relay_core::apps::App;
use wecom_relay_core::ports::{HttpClient, MemoryTokenCache};
use wecom_relay_core::wecom::api::{ApiError, Content};
use wecom_relay_core::wecom::client::WeComClient;
use wecom_relay_core::Settings;

use crate::ports::SystemClock;

/// Checks every app; with `send_to`, sends that member a test message through each app of
/// the member's corp. Returns the report and whether everything passed.
pub async fn check<H: HttpClient>(
    settings: &Settings,
    http: &H,
    send_to: Option<&str>,
) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    if settings.apps.is_empty() {
        out.push_str("no apps are configured: nothing to check\n");
        return (out, true);
    }
    let clock = SystemClock;
    for app in settings.apps.iter() {
        let tokens = MemoryTokenCache::default();
        let client = WeComClient::new(&settings.api_base, http, &tokens, &clock);
        let _ = writeln!(
            out,
            "app {} (corp {}, agent {}), through {}:",
            app.name, app.corp_id, app.agent_id.0, settings.api_base
        );
        if !check_app(&client, app, send_to, &mut out).await {
            ok = false;
        }
    }
    (out, ok)
}

async fn check_app<H: HttpClient>(
    client: &WeComClient<'_, H, MemoryTokenCache, SystemClock>,
    app: &App,
    send_to: Option<&str>,
    out: &mut String,
) -> bool {
    let fail = |out: &mut String, step: &str, e: &ApiError| {
        let _ = writeln!(out, "  FAIL {step}: {e}\n       {}", e.explanation());
        false
    };
    match client.fetch_token(app).await {
        Ok(_) => out.push_str("  ok   gettoken: the corp id and secret are right\n"),
        Err(e) => return fail(out, "gettoken", &e),
    }
    match client.get_agent(app).await {
        Ok(info) => {
            let _ = writeln!(
                out,
                "  ok   agent/get: the agent id is right and this host's IP is trusted (app {:?}, {} members visible by name)",
                info.name,
                info.visible_users.len()
            );
        }
        Err(e) => return fail(out, "agent/get", &e),
    }
    let Some(user) = send_to else {
        return true;
    };
    let content = Content::Text {
        content: format!("wecom-relay api-check: app {} can message you.", app.name),
    };
    match client.send(app, user, &content, None).await {
        Ok(receipt) => {
            let _ = writeln!(
                out,
                "  ok   message/send to {user}: msgid {}",
                receipt.msgid
            );
            true
        }
        Err(e) => fail(out, &format!("message/send to {user}"), &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wecom_relay_core::RawSettings;
    use wecom_relay_standin::wecom::{Standin, StandinApp};

    use crate::ports::ReqwestHttp;

    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    fn app(name: &str, corp: &str, secret: &str, agent: u64) -> serde_json::Value {
        serde_json::json!({"name": name, "corp_id": corp, "corp_secret": secret,
            "agent_id": agent, "token": format!("token-{name}"), "encoding_aes_key": KEY})
    }

    /// Against the stand-in: a good app, a wrong secret (40001), a wrong corp id (40013), a
    /// wrong agent id (40056), and an app whose IP is not trusted (60020, with the IP).
    #[tokio::test]
    async fn each_problem_is_named_with_what_to_do() {
        let trusted = |corp: &str, secret: &str, agent, ok| StandinApp {
            corp_id: corp.into(),
            corp_secret: secret.into(),
            agent_id: agent,
            users: vec!["alice".into()],
            trusted: ok,
        };
        let standin = Standin::new(
            vec![
                trusted("ww1", "good-secret", 1000002, true),
                trusted("ww2", "other-secret", 1000003, false),
            ],
            Duration::from_secs(7200),
        )
        .serve(0)
        .await
        .unwrap();
        let apps = serde_json::json!([
            app("good", "ww1", "good-secret", 1000002),
            app("secret", "ww1", "wrong-secret", 1000002),
            app("corp", "ww9", "good-secret", 1000002),
            app("agent", "ww1", "good-secret", 1000999),
            app("ip", "ww2", "other-secret", 1000003),
        ]);
        let mut raw = RawSettings::default();
        raw.set("apps_json", apps.to_string()).unwrap();
        raw.set("api_base", standin.base_url()).unwrap();
        let settings = raw.resolve().unwrap();
        let http = ReqwestHttp::new(Duration::from_secs(5));
        let (report, ok) = check(&settings, &http, None).await;
        assert!(!ok, "{report}");
        let section = |name: &str| {
            report
                .split("app ")
                .find(|s| s.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name}: {report}"))
                .to_owned()
        };
        assert!(section("good").contains("ok   agent/get"), "{report}");
        assert!(!section("good").contains("FAIL"), "{report}");
        assert!(
            section("secret").contains("corp_secret is wrong"),
            "{report}"
        );
        assert!(section("corp").contains("corp_id is wrong"), "{report}");
        assert!(section("agent").contains("agent_id is wrong"), "{report}");
        let ip = section("ip");
        assert!(ip.contains("60020") && ip.contains("127.0.0.1"), "{report}");
        assert!(!report.contains("good-secret") && !report.contains("wrong-secret"));

        // Only the good app, and a test message: sent, and a stranger is refused.
        let mut raw = RawSettings::default();
        raw.set(
            "apps_json",
            serde_json::json!([app("good", "ww1", "good-secret", 1000002)]).to_string(),
        )
        .unwrap();
        raw.set("api_base", standin.base_url()).unwrap();
        let settings = raw.resolve().unwrap();
        let (report, ok) = check(&settings, &http, Some("alice")).await;
        assert!(
            ok && report.contains("ok   message/send to alice"),
            "{report}"
        );
        assert_eq!(standin.standin.messages().len(), 1);
        let (report, ok) = check(&settings, &http, Some("mallory")).await;
        assert!(!ok && report.contains("visible range"), "{report}");
    }
}
