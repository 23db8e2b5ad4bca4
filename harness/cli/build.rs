//! Records what the `qlab` binary is built from, so every result says which code made
//! it: the commit (`QLAB_BUILD_COMMIT`, `unknown` outside a git checkout), whether the
//! tree had uncommitted changes (`QLAB_BUILD_DIRTY`), and the cargo profile
//! (`QLAB_BUILD_PROFILE`, named by the output directory cargo gives this script).
//!
//! It re-runs when HEAD, the index or a ref moves and when any source under
//! `protocols/` or `harness/` changes (so an edit marks the build dirty); only this
//! small crate is rebuilt then, not the libraries.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("../..");
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    println!("cargo:rustc-env=QLAB_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=QLAB_BUILD_DIRTY={dirty}");
    println!("cargo:rustc-env=QLAB_BUILD_PROFILE={}", profile_name());
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let git_dir = Path::new(&git_dir);
        for watched in ["HEAD", "index", "refs", "packed-refs"] {
            if git_dir.join(watched).exists() {
                println!("cargo:rerun-if-changed={}", git_dir.join(watched).display());
            }
        }
    }
    for sources in ["protocols", "harness", "Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(sources).display());
    }
}

fn profile_name() -> String {
    let out_dir = std::env::var("OUT_DIR").unwrap_or_default();
    let parts: Vec<&str> = Path::new(&out_dir).iter().filter_map(|p| p.to_str()).collect();
    parts
        .iter()
        .rposition(|p| *p == "build")
        .and_then(|at| at.checked_sub(1))
        .map_or_else(|| "unknown".to_string(), |at| parts[at].to_string())
}
