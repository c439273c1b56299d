//! `.env` file reading, with the rules SRS proxy deployments' `.env` files are written for.
//!
//! Rules: lines are trimmed; blank lines and `#` lines are skipped; a leading `export ` is
//! stripped; the key is everything before the first `=`. Values in single quotes are taken raw;
//! values in double quotes understand `\n`, `\r`, `\"` and `\\`; unquoted values lose an inline
//! ` #comment`. A key already present in the process environment is never overwritten.

use std::path::Path;

/// One `KEY=value` pair read from a `.env` file.
pub type EnvPair = (String, String);

/// Parses the text of a `.env` file. Lines without `=` or with an empty key are skipped.
pub fn parse(text: &str) -> Vec<EnvPair> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<EnvPair> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let line = line.strip_prefix("export ").map_or(line, str::trim_start);
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() {
        return None;
    }
    Some((key.to_string(), parse_value(value.trim())))
}

fn parse_value(value: &str) -> String {
    if let Some(inner) = quoted(value, '\'') {
        return inner.to_string();
    }
    if let Some(inner) = quoted(value, '"') {
        return unescape(inner);
    }
    match value.find(" #") {
        Some(at) => value[..at].trim_end().to_string(),
        None => value.to_string(),
    }
}

fn quoted(value: &str, quote: char) -> Option<&str> {
    let inner = value.strip_prefix(quote)?;
    // The closing quote is the last one on the line; anything after it (a comment) is dropped.
    let end = inner.rfind(quote)?;
    Some(&inner[..end])
}

fn unescape(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Reads `path` (a missing file is not an error) and returns the pairs whose keys are not
/// already set in the process environment.
pub fn read_missing(path: &Path) -> std::io::Result<Vec<EnvPair>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(parse(&text).into_iter().filter(|(k, _)| std::env::var_os(k).is_none()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Option<EnvPair> {
        parse_line(line)
    }

    #[test]
    fn plain_and_exported_pairs() {
        assert_eq!(one("A=1"), Some(("A".into(), "1".into())));
        assert_eq!(one("  export B = two  "), Some(("B".into(), "two".into())));
        assert_eq!(one("C="), Some(("C".into(), "".into())));
        assert_eq!(one("D=a=b"), Some(("D".into(), "a=b".into())));
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        assert_eq!(one("# PROXY_RTMP_SERVER=1"), None);
        assert_eq!(one("   "), None);
        assert_eq!(one("no equals sign"), None);
        assert_eq!(one("=value"), None);
        assert_eq!(one("E=5 # the port"), Some(("E".into(), "5".into())));
        assert_eq!(one("F=a#b"), Some(("F".into(), "a#b".into())));
    }

    #[test]
    fn quotes() {
        assert_eq!(one("G='raw \\n # x'"), Some(("G".into(), "raw \\n # x".into())));
        assert_eq!(one(r#"H="line\nnext \"q\" \\ end""#), Some(("H".into(), "line\nnext \"q\" \\ end".into())));
        assert_eq!(one(r#"I="kept # hash" # comment"#), Some(("I".into(), "kept # hash".into())));
        assert_eq!(one("J=\"unterminated"), Some(("J".into(), "\"unterminated".into())));
    }

    #[test]
    fn whole_file() {
        let text = "# streamgate\nPROXY_RTMP_SERVER=1935\n\nexport PROXY_SYSTEM_API='12025'\n";
        assert_eq!(
            parse(text),
            vec![("PROXY_RTMP_SERVER".into(), "1935".into()), ("PROXY_SYSTEM_API".into(), "12025".into())]
        );
    }

    #[test]
    fn missing_file_is_empty() {
        let pairs = read_missing(Path::new("/nonexistent/streamgate/.env")).unwrap();
        assert!(pairs.is_empty());
    }
}
