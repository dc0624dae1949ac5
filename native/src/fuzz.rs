//! The `settings_yaml` fuzz target's body (`native/fuzz/`), also replayed over the kept
//! inputs by `tests/fuzz_regressions.rs`. Only built with the `fuzz` feature.

/// `config.yaml` as `serve` reads it: never a panic, and no secret value of the file in an
/// error or in the settings' `Debug`.
pub fn settings_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Scalars under a key that names a secret, as the file may hold them.
    let secrets: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| {
            let k = k.trim().to_ascii_lowercase();
            k.ends_with("secret") || k.ends_with("token") || k.ends_with("key")
        })
        .map(|(_, v)| v.trim().trim_matches(['"', '\'']))
        .filter(|v| wecom_relay_core::fuzz::looks_secret(v))
        // A value that also appears elsewhere in the file may be shown for that other key.
        .filter(|v| text.matches(*v).count() == 1)
        .collect();
    let leaks = |shown: &str| secrets.iter().any(|s| shown.contains(s));
    match crate::config::parse_yaml(text) {
        Ok((raw, agent, _runtime)) => {
            match raw.resolve() {
                Ok(settings) => assert!(!leaks(&format!("{settings:?}"))),
                Err(e) => assert!(!leaks(&e.to_string()), "{e}"),
            }
            match agent.resolve() {
                Ok(settings) => assert!(!leaks(&format!("{settings:?}"))),
                Err(e) => assert!(!leaks(&e.to_string()), "{e}"),
            }
        }
        Err(e) => assert!(!leaks(&e.to_string()), "{e}"),
    }
}
