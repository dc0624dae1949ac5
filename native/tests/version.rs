//! `wecom-relay --version` names the version and the commit the binary was built from.

use std::process::Command;

#[test]
fn version_names_the_commit() {
    let out = Command::new(env!("CARGO_BIN_EXE_wecom-relay"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let expected = format!("wecom-relay {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&expected), "{line}");
    let commit = line[expected.len()..].trim_end().trim_end_matches(')');
    let hash = commit.trim_end_matches("-dirty");
    // A git checkout gives 12 hex digits; a build from a source archive says so.
    assert!(
        (hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit())) || commit == "unknown",
        "{line}"
    );
}
