//! Replays the inputs kept for the `settings_yaml` fuzz target (`native/fuzz/regressions/`).
#![cfg(feature = "fuzz")]

use std::path::Path;

#[test]
fn every_kept_settings_yaml_input_still_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/settings_yaml");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| wecom_relay::fuzz::settings_yaml(&data));
        assert!(outcome.is_ok(), "{} fails again", path.display());
        replayed += 1;
    }
    assert!(replayed > 0, "no inputs in {}", dir.display());
}
