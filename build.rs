//! Build steps:
//! - embeds the git commit into the binary (`STREAMGATE_COMMIT`), for `--version`,
//!   `/api/v1/versions` and the benchmark result files;
//! - generates the gRPC ModuleService (proto/module.proto) with tonic-prost-build, plus its file
//!   descriptor set for server reflection. protoc comes from `$PROTOC`, else a `protoc` on PATH,
//!   else the one inside protoc-bin-vendored, so a fresh machine needs no apt step.

use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=STREAMGATE_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto/module.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");

    let mut config = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() && !protoc_on_path() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("module_descriptor.bin");
    tonic_prost_build::configure().file_descriptor_set_path(descriptors).compile_with_config(
        config,
        &["proto/module.proto"],
        &["proto"],
    )?;
    Ok(())
}

fn protoc_on_path() -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("protoc").is_file()))
}
