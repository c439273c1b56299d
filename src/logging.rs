//! The process logger: `log` records to stderr as text for people or JSON lines for
//! collectors. Every line carries the time (UTC), level, thread (`shard-0`, `control`, `main`)
//! and target; JSON lines also carry the pid. glommio's own warnings come through here too.
//!
//! Messages carry what clients sent (paths, stream names and ids, ICE usernames), so a text
//! line escapes, as it is written, every character that could end the line early or garble a
//! terminal ([`escape_into`]): `\n`, `\r` and `\t` as such, the other C0 controls (ESC
//! included), DEL, the C1 controls, the Unicode line and paragraph separators and the
//! bidirectional controls as `\u001b` (the way JSON writes them; JSON lines are escaped by the
//! JSON writer). A client's `%0a` can therefore never start a line of its own. Backslashes are
//! left alone, so an escape in a message reads the same as a client's own backslash; the line
//! structure is what is protected. Nothing is allocated for it: the message is formatted
//! straight into the line, clean runs copied as they are.
//!
//! Log lines about remote peers stay short and few: [`clip`] cuts a peer's string to a length
//! with an ellipsis, and [`throttle::LogThrottle`] rate-limits a listener's warnings by kind.

pub mod throttle;

use std::fmt::{self, Write as _};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::LogFormat;

struct Logger {
    format: LogFormat,
    level: LevelFilter,
    pid: u32,
}

/// Installs the logger; call once, before any thread starts.
pub fn init(level: LevelFilter, format: LogFormat) {
    let logger = Logger { format, level, pid: std::process::id() };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = self.line(record);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

impl Logger {
    /// One record as one line, newline included.
    fn line(&self, record: &Record<'_>) -> String {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("?");
        match self.format {
            LogFormat::Text => {
                let mut line = String::with_capacity(160);
                let (time, level, target) = (utc_timestamp(SystemTime::now()), record.level(), record.target());
                let _ = write!(line, "{time} {level:<5} {thread} {}: ", short_target(target));
                let _ = write!(Escaping(&mut line), "{}", record.args());
                line.push('\n');
                line
            }
            LogFormat::Json => {
                let value = serde_json::json!({
                    "time": utc_timestamp(SystemTime::now()),
                    "level": level_name(record.level()),
                    "pid": self.pid,
                    "thread": thread,
                    "target": record.target(),
                    "msg": record.args().to_string(),
                });
                format!("{value}\n")
            }
        }
    }
}

/// A `fmt::Write` that appends to a line, escaping as [`escape_into`] does.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// Appends `s` to `out` with every character that [`needs_escape`] written as an escape:
/// `\n`, `\r`, `\t`, else `\u` and four hex digits. Clean runs are copied whole.
pub fn escape_into(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        // Only these bytes can start a character that needs escaping: ASCII controls and DEL,
        // 0xC2 (U+0080..U+00BF, the C1 controls among them), 0xD8 (U+061C), 0xE2 (U+2000..U+2FFF:
        // the separators and bidi controls). None of them is a UTF-8 continuation byte, so `i`
        // is on a character boundary whenever the slow path looks.
        let b = bytes[i];
        if b >= 0x20 && b != 0x7f && b != 0xc2 && b != 0xd8 && b != 0xe2 {
            i += 1;
            continue;
        }
        let Some(c) = s[i..].chars().next() else { break };
        let len = c.len_utf8();
        if needs_escape(c) {
            out.push_str(&s[copied..i]);
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
            }
            copied = i + len;
        }
        i += len;
    }
    out.push_str(&s[copied..]);
}

/// Characters a text log line must not carry raw: controls (C0, DEL, C1), the Unicode line and
/// paragraph separators (some viewers break lines there), and the bidirectional controls
/// (they reorder what a terminal shows).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `s` for a log line, cut to at most `max` characters with an ellipsis: for strings a remote
/// peer chose (stream ids, keys, paths), so one line stays one screen line. `{}` writes it as
/// is, `{:?}` quoted and escaped like `str`'s Debug.
pub fn clip(s: &str, max: usize) -> Clipped<'_> {
    match s.char_indices().nth(max) {
        Some((cut, _)) => Clipped { head: &s[..cut], cut: true },
        None => Clipped { head: s, cut: false },
    }
}

/// What [`clip`] returns.
#[derive(Clone, Copy)]
pub struct Clipped<'a> {
    head: &'a str,
    cut: bool,
}

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.head)?;
        if self.cut { f.write_char('…') } else { Ok(()) }
    }
}

impl fmt::Debug for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.head.chars().flat_map(char::escape_debug) {
            f.write_char(c)?;
        }
        if self.cut {
            f.write_char('…')?;
        }
        f.write_char('"')
    }
}

fn short_target(target: &str) -> &str {
    target.strip_prefix("streamgate::").unwrap_or(target)
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// `2026-11-22T04:38:31.123Z`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!("{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_millis())
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, s);
        out
    }

    #[test]
    fn clean_text_is_copied_as_is() {
        for s in
            ["", "rtmp publish __defaultVhost__/live/a from 127.0.0.1:5", "é ü 漢字 🎥 \\n \"q\"", "\u{a0}\u{2030}"]
        {
            assert_eq!(escaped(s), s);
        }
    }

    #[test]
    fn controls_separators_and_bidi_are_escaped() {
        let forged = "/live/a\n2026-01-01T00:00:00.000Z ERROR fake\r\t\u{1b}[31mred\u{7f}\u{85}\u{9b}";
        assert_eq!(
            escaped(forged),
            "/live/a\\n2026-01-01T00:00:00.000Z ERROR fake\\r\\t\\u001b[31mred\\u007f\\u0085\\u009b"
        );
        assert_eq!(escaped("\0\u{1}x\u{1f}"), "\\u0000\\u0001x\\u001f");
        assert_eq!(escaped("a\u{2028}b\u{2029}c"), "a\\u2028b\\u2029c");
        assert_eq!(escaped("\u{202e}evil\u{2066}\u{200f}\u{61c}"), "\\u202eevil\\u2066\\u200f\\u061c");
        // Neighbours of the escaped ranges that share their lead bytes stay.
        assert_eq!(escaped("\u{a9}\u{2030}\u{2070}\u{610}"), "\u{a9}\u{2030}\u{2070}\u{610}");
    }

    /// Any string: the escaped form has no character that needs escaping, and undoing the
    /// escapes gives the string back when it had no backslash.
    #[test]
    fn every_character_survives_as_one_line() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let out = escaped(&all);
        assert!(!out.chars().any(needs_escape));
        assert!(!out.contains('\n'));
        let back = out.replace("\\n", "\n").replace("\\r", "\r").replace("\\t", "\t");
        let mut undone = String::new();
        let mut rest = back.as_str();
        while let Some(at) = rest.find("\\u") {
            undone.push_str(&rest[..at]);
            let code = u32::from_str_radix(&rest[at + 2..at + 6], 16).unwrap();
            undone.push(char::from_u32(code).unwrap());
            rest = &rest[at + 6..];
        }
        undone.push_str(rest);
        let without_backslash: String = all.chars().filter(|c| *c != '\\').collect();
        assert_eq!(undone.replace('\\', ""), without_backslash);
    }

    #[test]
    fn a_forged_message_stays_one_line_in_both_formats() {
        let key = "live/a\n2026-01-01T00:00:00.000Z ERROR fake\r\u{1b}[2K";
        for format in [LogFormat::Text, LogFormat::Json] {
            let logger = Logger { format, level: LevelFilter::Info, pid: 1 };
            let line = logger.line(
                &Record::builder()
                    .args(format_args!("play {key} refused"))
                    .level(Level::Warn)
                    .target("streamgate::proxy")
                    .build(),
            );
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            assert!(line.ends_with('\n') && !line.contains('\r') && !line.contains('\u{1b}'), "{line:?}");
            if format == LogFormat::Text {
                assert!(
                    line.contains("proxy: play live/a\\n2026-01-01T00:00:00.000Z ERROR fake\\r\\u001b[2K refused\n"),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn clips() {
        assert_eq!(clip("short", 10).to_string(), "short");
        assert_eq!(clip("0123456789", 10).to_string(), "0123456789");
        assert_eq!(clip("0123456789a", 10).to_string(), "0123456789…");
        assert_eq!(clip(&"é".repeat(700), 3).to_string(), "ééé…");
        assert_eq!(format!("{:?}", clip("a\"b\nc", 10)), "\"a\\\"b\\nc\"");
        assert_eq!(format!("{:?}", clip(&"x".repeat(700), 4)), "\"xxxx…\"");
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_316_242_465);
        assert_eq!(utc_timestamp(t), "2026-11-22T02:57:22.465Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&utc_timestamp(leap)[..10], "2000-02-29");
    }
}
