//! Records the git commit the binary is built from, for `wecom-relay --version`:
//! `WECOM_RELAY_COMMIT` when set (a build without `.git`, e.g. the Dockerfile's `--build-arg`),
//! else `git rev-parse`, with `-dirty` when the work tree has uncommitted changes, else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=WECOM_RELAY_COMMIT");
    let commit = match std::env::var("WECOM_RELAY_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => match git(&["rev-parse", "--short=12", "HEAD"]) {
            Some(hash) if !hash.is_empty() => {
                let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                    .is_some_and(|s| !s.is_empty());
                if dirty {
                    format!("{hash}-dirty")
                } else {
                    hash
                }
            }
            _ => "unknown".to_owned(),
        },
    };
    // Build again when HEAD moves or the index changes (a commit or a checkout).
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/index");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
    println!("cargo:rustc-env=WECOM_RELAY_COMMIT={commit}");
}
