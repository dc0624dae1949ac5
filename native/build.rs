//! Records the git commit the binary is built from, for `wecom-relay --version`:
//! `WECOM_RELAY_COMMIT` when set (a build without `.git`, e.g. the Dockerfile's `--build-arg`),
//! else `git rev-parse`, with `-dirty` when the work tree has uncommitted changes, else `unknown`.
//!
//! And lays out a release binary's code by `link-order.txt` where the linker is LLD (see
//! [`link_order`]), with its relocations packed where the glibc it is built on reads them
//! (see [`packed_relocations`]).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The functions a running relay executes, placed together at the start of the release
/// binary's code (`link-order.txt`, written by `bench/link-order.sh`, hottest first).
///
/// The kernel maps a binary's code 64 KB around each page a process touches, so code spread
/// over the whole text section made most of it resident: an idle relay had 4.6 MB of its
/// 7.7 MB of code in memory, and nearly all of it ran once or never. Together, the code that
/// runs is under 2 MB.
///
/// Only for `x86_64-unknown-linux-gnu` release builds, whose default linker has been the
/// toolchain's LLD since Rust 1.90, and only when no linker is configured and no rustflag
/// mentions `link` (a `-fuse-ld`, a linker flavour); `WECOM_RELAY_LINK_ORDER=0` turns it off
/// (and [`packed_relocations`] with it). A name the build no longer has (another compiler,
/// other dependency versions) is skipped without a warning: such a binary is only laid out
/// less well.
fn link_order() {
    println!("cargo:rerun-if-env-changed=WECOM_RELAY_LINK_ORDER");
    println!("cargo:rerun-if-changed=link-order.txt");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let wanted = var("PROFILE") == "release"
        && var("TARGET") == "x86_64-unknown-linux-gnu"
        && var("WECOM_RELAY_LINK_ORDER") != "0"
        // Cargo names a linker set in `.cargo/config.toml` or `CARGO_TARGET_<triple>_LINKER`.
        && var("RUSTC_LINKER").is_empty()
        && !var("CARGO_ENCODED_RUSTFLAGS").contains("link")
        && rustc_minor().is_some_and(|minor| minor >= 90);
    if !wanted {
        return;
    }
    packed_relocations();
    let file = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("link-order.txt");
    if file.exists() {
        let file = file.display();
        println!("cargo:rustc-link-arg-bin=wecom-relay=-Wl,--symbol-ordering-file={file}");
        println!("cargo:rustc-link-arg-bin=wecom-relay=-Wl,--no-warn-symbol-ordering");
    }
}

/// Packed relative relocations (`DT_RELR`) where the binary is built for the machine that
/// builds it and that machine's glibc reads them (2.36 and later).
///
/// A position-independent binary's relocations are a table the loader reads whole at start,
/// and its pages stay resident: 231 KB of `.rela.dyn` for the relay, nearly all of it
/// relative relocations, which RELR packs (6 KB of relocations are left in all). The binary
/// then needs glibc 2.36 where it runs (it needs 2.34 in any case), so a build for another
/// machine or on an older glibc leaves it out, as do the conditions of [`link_order`].
fn packed_relocations() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    if native && glibc_minor().is_some_and(|minor| minor >= 36) {
        println!("cargo:rustc-link-arg-bin=wecom-relay=-Wl,-z,pack-relative-relocs");
    }
}

/// The compiler's minor version (`rustc 1.95.0 (…)` is 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    minor_version(&rustc, "--version")
}

/// The building machine's glibc minor version (`glibc 2.36` is 36).
fn glibc_minor() -> Option<u32> {
    minor_version("getconf", "GNU_LIBC_VERSION")
}

/// The minor version in what `program arg` prints as its second word (`name X.Y…`).
fn minor_version(program: &str, arg: &str) -> Option<u32> {
    let out = Command::new(program).arg(arg).output().ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    let number = version.split_whitespace().nth(1)?;
    number.split('.').nth(1)?.parse().ok()
}

fn main() {
    link_order();
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
