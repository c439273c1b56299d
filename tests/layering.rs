//! The layers import one way only (DESIGN.md, Layers):
//!
//! `codec`, `balance` (pure) <- `bridge` (what crosses threads; no runtime) <- `shard` (runtime,
//! listeners, relays; no protocol) <- `proxy` (protocols, through the shard's link) <- `control`
//! <- `app` <- `main`, with `config`, `util`, `logging` and `version` usable from anywhere and
//! importing none of those layers.
//!
//! Each rule lists what a directory's code (comments left out) must not name. A rule that is
//! broken fails here with the file and the name.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of `file` without comment lines.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Fails if any file under `src/<dirs>` names one of `banned`.
fn forbid(dirs: &[&str], banned: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for dir in dirs {
        let path = root.join(dir);
        if path.is_dir() {
            rust_files(&path, &mut files);
        }
        let module = root.join(format!("{dir}.rs"));
        if module.is_file() {
            files.push(module);
        }
    }
    assert!(!files.is_empty(), "no files under {dirs:?}");
    let mut broken = Vec::new();
    for file in files {
        let code = code(&file);
        for name in banned {
            if code.contains(name) {
                broken.push(format!("{} uses {name}", file.strip_prefix(&root).unwrap().display()));
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

const ABOVE_PURE: [&str; 5] = ["crate::bridge", "crate::shard", "crate::proxy", "crate::control", "crate::app"];

#[test]
fn codec_and_balance_import_no_runtime_and_no_layer_above() {
    forbid(&["codec", "balance"], &["glommio", "tokio", "std::net::Tcp", "std::net::Udp"]);
    forbid(&["codec", "balance"], &ABOVE_PURE);
}

#[test]
fn bridge_is_runtime_free_and_knows_no_shard_proxy_or_control() {
    forbid(&["bridge"], &["glommio", "tokio::net", "tokio::time", "tokio::task", "tokio::runtime"]);
    forbid(&["bridge"], &["crate::shard", "crate::proxy", "crate::control", "crate::app"]);
}

#[test]
fn shard_knows_no_protocol_and_no_control() {
    forbid(&["shard"], &["crate::proxy", "crate::control", "crate::app"]);
}

#[test]
fn proxy_knows_no_control_internals() {
    forbid(&["proxy"], &["crate::control", "crate::app"]);
}

#[test]
fn webrtc_does_not_reach_into_the_http_stream_listener() {
    forbid(&["proxy/webrtc"], &["crate::proxy::http_stream", "super::http_stream", "super::super::http_stream"]);
}

#[test]
fn control_reaches_the_data_plane_only_through_the_bridge() {
    forbid(&["control"], &["crate::shard", "crate::proxy", "crate::app", "glommio"]);
}

#[test]
fn transcode_knows_no_runtime_shard_proxy_or_control() {
    forbid(&["transcode"], &["glommio", "tokio", "crate::shard", "crate::proxy", "crate::control", "crate::app"]);
}

#[test]
fn shared_helpers_import_no_layer() {
    forbid(&["config", "util", "logging", "version"], &ABOVE_PURE);
}
