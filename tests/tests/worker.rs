//! Worker-only behaviour: settings errors answer 500 with a log line naming the setting.
//! Runs when `WECOM_RELAY_TWINS` includes `worker`.

use wecom_relay_standin::wecom::Standin;
use wecom_relay_tests::harness::{AppSpec, Running, Scenario, Twin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_setting_answers_500_and_names_it_without_the_secret() {
    if !Twin::selected().contains(&Twin::Worker) {
        return;
    }
    let mut a = AppSpec::new("a", "wwcorpA", 1000002, 'a', &["alice"]);
    a.key = "not-a-valid-key-TOPSECRET".into();
    let scenario = Scenario::new(vec![a]);
    let standin = Standin::new(vec![], std::time::Duration::from_secs(7200))
        .serve(0)
        .await
        .unwrap();
    let vars = Running::worker_vars(&scenario, &standin.base_url());
    let r = Running::start_worker_with_vars(scenario, standin, Twin::Worker, vars).await;
    let resp = reqwest::Client::new()
        .post(r.callback_url("msg_signature=x&timestamp=1&nonce=2"))
        .body("<xml/>")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    let body = resp.text().await.unwrap();
    assert!(!body.contains("TOPSECRET"));
    let logs = r.wait_for_log("configuration error").await;
    assert!(
        logs.contains("configuration error: apps[0].encoding_aes_key"),
        "{logs}"
    );
    assert!(
        !logs.contains("TOPSECRET"),
        "the secret leaked into the log:\n{logs}"
    );
    // /health does not depend on settings.
    let health = reqwest::Client::new()
        .get(format!("{}/health", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
