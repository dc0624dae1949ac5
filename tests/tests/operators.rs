//! The operators' commands as a user runs them: the `wecom-relay` binary against every twin in
//! `WECOM_RELAY_TWINS` (`probe`), and against the WeCom stand-in (`api-check`, `check-config`).

use std::process::Command;

use wecom_relay_tests::harness::{relay_binary, AppSpec, BotSpec, Running, Scenario, Twin};

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(relay_binary())
        .args(args)
        .env_remove("WECOM_RELAY_CONFIG")
        .output()
        .expect("the wecom-relay binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_passes_against_every_twin_and_names_a_wrong_key() {
    for twin in Twin::selected() {
        let a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"]);
        let mut scenario = Scenario::new(vec![a.clone()]);
        let bot = BotSpec::new("helper", 3);
        scenario.bots = vec![bot.clone()];
        let r = Running::start(twin, scenario).await;
        let url = format!("{}{}", r.base, r.path);
        let agent = a.agent_id.to_string();
        let args = [
            "probe",
            &url,
            "--token",
            &a.token,
            "--aes-key",
            &a.key,
            "--corp-id",
            &a.corp_id,
            "--agent-id",
            &agent,
        ];
        // The probe blocks on its own runtime: off this one's threads.
        let (ok, out) = tokio::task::spawn_blocking({
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            move || run(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        assert!(
            ok && out.contains("all passed"),
            "{twin:?}: {out}\n{}",
            r.logs()
        );
        let bot_url = format!("{}{}", r.base, bot.path());
        let (ok, out) = tokio::task::spawn_blocking({
            let (token, key) = (bot.token.clone(), bot.key.clone());
            move || {
                run(&[
                    "probe",
                    &bot_url,
                    "--aibot",
                    "--token",
                    &token,
                    "--aes-key",
                    &key,
                ])
            }
        })
        .await
        .unwrap();
        assert!(ok, "{twin:?} (AI bot): {out}");
        // Another app's key: the echo does not come back.
        let other = AppSpec::new("b", "wwcorpA", 1000003, 'b', &["alice"]);
        let (ok, out) = tokio::task::spawn_blocking({
            let (url, token, key, corp) = (
                url.clone(),
                a.token.clone(),
                other.key.clone(),
                a.corp_id.clone(),
            );
            move || {
                run(&[
                    "probe",
                    &url,
                    "--token",
                    &token,
                    "--aes-key",
                    &key,
                    "--corp-id",
                    &corp,
                ])
            }
        })
        .await
        .unwrap();
        assert!(
            !ok && out.contains("FAIL URL verification"),
            "{twin:?}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_check_and_check_config_from_the_command_line() {
    let good = AppSpec::new("good", "wwcorpA", 1000002, 'a', &["alice"]);
    let mut untrusted = AppSpec::new("far", "wwcorpB", 1000003, 'b', &["bob"]);
    untrusted.trusted = false;
    // The native twin's scenario writes the config.yaml the commands read.
    let r = Running::start(Twin::Native, Scenario::new(vec![good, untrusted])).await;
    let config = r.config_path().expect("the native twin has a config.yaml");
    let config = config.to_str().unwrap().to_owned();
    let (ok, out) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || run(&["check-config", "--config", &config])
    })
    .await
    .unwrap();
    assert!(ok && out.contains("app good: corp wwcorpA"), "{out}");
    // The container's health check.
    let health = format!("{}/health", r.base);
    let (ok, out) = tokio::task::spawn_blocking(move || run(&["health", "--url", &health]))
        .await
        .unwrap();
    assert!(ok, "{out}");
    let (ok, _) =
        tokio::task::spawn_blocking(|| run(&["health", "--url", "http://127.0.0.1:9/health"]))
            .await
            .unwrap();
    assert!(!ok);
    let (ok, out) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || run(&["api-check", "--config", &config, "--send-to", "alice"])
    })
    .await
    .unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains("ok   message/send to alice"), "{out}");
    assert!(
        out.contains("60020") && out.contains("127.0.0.1") && out.contains("trusted IPs"),
        "{out}"
    );
}
