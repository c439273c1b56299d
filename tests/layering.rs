//! The layers import one way only:
//!
//! `codec`, `balance` (pure) <- `bridge` (what crosses threads; no runtime) <- `shard` (runtime,
//! listeners, relays; no protocol) <- `proxy` (protocols, through the shard's link) <- `control`
//! <- `app` <- `main`, with `config`, `util`, `logging` and `version` usable from anywhere and
//! importing none of those layers.
//!
//! Each rule lists what a directory's code (comments left out) must not name: text (a runtime's
//! crate) and modules of this crate, however a path reaches them (`crate::a::b`, grouped
//! imports `crate::{a, b}`, `super::` chains that climb out of the directory). A rule that is
//! broken fails here with the file and the path.

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

/// The module a file under `src/` is: `proxy/srt.rs` is `proxy::srt`, `proxy/mod.rs` and
/// `proxy.rs` are `proxy`, `lib.rs` is the crate root.
fn module_of(relative: &Path) -> Vec<String> {
    let mut segments: Vec<String> = relative.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if let Some(last) = segments.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && stem != "lib" {
            segments.push(stem.to_string());
        }
    }
    segments
}

/// Reads the use tree or path at `s[i..]` (after `crate::` or `super::`), naming each path it
/// holds (`a::{b, c::{d, e}}` is `a::b`, `a::c::d` and `a::c::e`) as `prefix` + its segments.
/// Returns where it ends.
fn use_tree(s: &[u8], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let skip_space = |mut i: usize| {
        while s.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut path = prefix.to_vec();
    loop {
        i = skip_space(i);
        if s.get(i) == Some(&b'{') {
            i += 1;
            while i < s.len() {
                i = skip_space(i);
                if s[i] == b'}' {
                    return i + 1;
                }
                i = use_tree(s, i, &path, out);
                // What follows an item (` as name`) up to the next one, or the group's end.
                while i < s.len() && s[i] != b',' && s[i] != b'}' {
                    i += 1;
                }
                if s.get(i) == Some(&b',') {
                    i += 1;
                }
            }
            return i;
        }
        let start = i;
        while s.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
            i += 1;
        }
        if i > start {
            path.push(String::from_utf8_lossy(&s[start..i]).into_owned());
        }
        if i == start || !s[i..].starts_with(b"::") {
            out.push(path);
            return i;
        }
        i += 2;
    }
}

/// Every crate path `code` (of the file that is module `module`) names: `crate::a::b`, grouped
/// imports (`use crate::{a, b::c}`) and `super::` paths, resolved from `module`.
fn crate_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let s = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let starts_path = i == 0 || !(ident(s[i - 1]) || s[i - 1] == b':');
        if starts_path && s[i..].starts_with(b"crate::") {
            i = use_tree(s, i + "crate::".len(), &[], &mut out);
        } else if starts_path && s[i..].starts_with(b"super::") {
            let mut up = 0;
            while s[i..].starts_with(b"super::") {
                up += 1;
                i += "super::".len();
            }
            let base = &module[..module.len().saturating_sub(up)];
            i = use_tree(s, i, base, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Fails if any file under `src/<dirs>` names one of `banned` (text) or a path into one of
/// `modules` (`proxy::http_stream`: that module or anything in it), however it names it:
/// `crate::` paths, grouped imports, `super::` paths that climb out of the file's directory.
fn forbid(dirs: &[&str], banned: &[&str], modules: &[&str]) {
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
    let modules: Vec<Vec<&str>> = modules.iter().map(|m| m.split("::").collect()).collect();
    let mut broken = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&root).unwrap();
        let code = code(&file);
        for name in banned {
            if code.contains(name) {
                broken.push(format!("{} uses {name}", relative.display()));
            }
        }
        for path in crate_paths(&code, &module_of(relative)) {
            if modules.iter().any(|m| path.len() >= m.len() && path.iter().zip(m).all(|(a, b)| a == b)) {
                broken.push(format!("{} uses crate::{}", relative.display(), path.join("::")));
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

const ABOVE_PURE: [&str; 5] = ["bridge", "shard", "proxy", "control", "app"];

#[test]
fn codec_and_balance_import_no_runtime_and_no_layer_above() {
    forbid(&["codec", "balance"], &["glommio", "tokio", "std::net::Tcp", "std::net::Udp"], &ABOVE_PURE);
}

#[test]
fn bridge_is_runtime_free_and_knows_no_shard_proxy_or_control() {
    let runtime = ["glommio", "tokio::net", "tokio::time", "tokio::task", "tokio::runtime"];
    forbid(&["bridge"], &runtime, &["shard", "proxy", "control", "app"]);
}

#[test]
fn shard_knows_no_protocol_and_no_control() {
    forbid(&["shard"], &[], &["proxy", "control", "app"]);
}

#[test]
fn proxy_knows_no_control_internals() {
    forbid(&["proxy"], &[], &["control", "app"]);
}

#[test]
fn webrtc_does_not_reach_into_the_http_stream_listener() {
    forbid(&["proxy/webrtc"], &[], &["proxy::http_stream"]);
}

#[test]
fn control_reaches_the_data_plane_only_through_the_bridge() {
    forbid(&["control"], &["glommio"], &["shard", "proxy", "app"]);
}

#[test]
fn transcode_knows_no_runtime_shard_proxy_or_control() {
    forbid(&["transcode"], &["glommio", "tokio"], &["shard", "proxy", "control", "app"]);
}

#[test]
fn shared_helpers_import_no_layer() {
    forbid(&["config", "util", "logging", "version"], &[], &ABOVE_PURE);
}

/// The path reader itself: grouped imports and `super::` chains resolve to the modules they name.
#[test]
fn paths_are_read_however_they_are_written() {
    let module: Vec<String> = ["proxy", "webrtc", "signal"].map(String::from).to_vec();
    let code =
        "use crate::{bridge, shard::{udp::Table as T, media}};\nlet _ = super::super::http_stream::reply(crate::x);";
    let paths: Vec<String> = crate_paths(code, &module).iter().map(|p| p.join("::")).collect();
    assert_eq!(paths, ["bridge", "shard::udp::Table", "shard::media", "proxy::http_stream::reply", "x"]);
}
