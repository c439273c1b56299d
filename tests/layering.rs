//! `codec/` and `balance/` are pure: no runtime, no sockets (DESIGN.md, Layout).

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn codec_and_balance_import_no_runtime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root.join("codec"), &mut files);
    rust_files(&root.join("balance"), &mut files);
    assert!(files.len() >= 5, "found {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        for banned in
            ["glommio", "tokio", "std::net::Tcp", "std::net::Udp", "crate::shard", "crate::control", "crate::proxy"]
        {
            assert!(!code.contains(banned), "{} uses {banned}", file.display());
        }
    }
}
