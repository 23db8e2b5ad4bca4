//! Names the cargo profile this crate is compiled with (`QLAB_PROFILE`), read from the
//! output directory cargo gives the build script (`target/<profile>/build/...`): cargo
//! tells a build script only "debug" or "release", not a custom profile's name.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-env=QLAB_PROFILE={}", profile_name());
}

fn profile_name() -> String {
    let out_dir = std::env::var("OUT_DIR").unwrap_or_default();
    let parts: Vec<&str> = std::path::Path::new(&out_dir).iter().filter_map(|p| p.to_str()).collect();
    parts
        .iter()
        .rposition(|p| *p == "build")
        .and_then(|at| at.checked_sub(1))
        .map_or_else(|| "unknown".to_string(), |at| parts[at].to_string())
}
