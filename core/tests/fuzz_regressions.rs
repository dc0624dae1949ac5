//! Replays every input the fuzzers kept (`fuzz/regressions/<target>/`, found crashes and
//! hand-picked edge cases) through the same target bodies, on stable, as plain tests.

use std::path::Path;

use wecom_relay_core::fuzz::TARGETS;

#[test]
fn every_kept_fuzz_input_still_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} fails again", path.display());
            replayed += 1;
        }
    }
    assert!(
        replayed >= TARGETS.len(),
        "only {replayed} inputs kept in {}",
        root.display()
    );
}
