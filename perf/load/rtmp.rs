//! RTMP client pieces shared by publishers and players: the `connect` command, the
//! `publish` / `play` commands, status fields, and how socket errors map to error kinds.

use std::io;

use streamgate::codec::rtmp::Command;
use streamgate::codec::rtmp::amf0::Amf0Value;
use streamgate::codec::rtmp::message::{AUDIO, VIDEO};

use crate::args::Target;
use crate::stats::{Failure, Kind};

/// Chunk stream for NetStream commands (`publish`, `play`).
pub const STREAM_CSID: u32 = 5;
/// Chunk stream publishers send video on.
pub const VIDEO_CSID: u32 = 6;
/// Chunk stream publishers send audio on.
pub const AUDIO_CSID: u32 = 7;
/// Chunk stream publishers send `@setDataFrame` on.
pub const DATA_CSID: u32 = 8;

/// Whether a message type is audio or video.
pub fn is_media(type_id: u8) -> bool {
    type_id == AUDIO || type_id == VIDEO
}

/// `connect` (transaction 1) for the target's app, with the fields encoders send.
pub fn connect(target: &Target) -> Command {
    let obj = Amf0Value::object([
        ("app", Amf0Value::string(target.app.as_str())),
        ("type", Amf0Value::string("nonprivate")),
        ("flashVer", Amf0Value::string("FMLE/3.0 (compatible; streamgate-load)")),
        ("tcUrl", Amf0Value::string(target.tc_url.as_str())),
        ("fpad", Amf0Value::Boolean(false)),
        ("capabilities", Amf0Value::Number(15.0)),
        ("audioCodecs", Amf0Value::Number(4071.0)),
        ("videoCodecs", Amf0Value::Number(252.0)),
        ("videoFunction", Amf0Value::Number(1.0)),
    ]);
    Command::new("connect", 1.0, obj, vec![])
}

/// `publish(name, "live")` (transaction 3).
pub fn publish(name: &str) -> Command {
    Command::new("publish", 3.0, Amf0Value::Null, vec![Amf0Value::string(name), Amf0Value::string("live")])
}

/// `play(name, -2000)` (transaction 4): live or recorded, from the live point.
pub fn play(name: &str) -> Command {
    Command::new("play", 4.0, Amf0Value::Null, vec![Amf0Value::string(name), Amf0Value::Number(-2000.0)])
}

/// A string field of a status answer's info object (the first argument), or of its command
/// object when the server put it there.
pub fn status_field<'a>(cmd: &'a Command, key: &str) -> Option<&'a str> {
    let info = cmd.args.first().and_then(|a| a.get(key)).and_then(Amf0Value::as_str);
    info.or_else(|| cmd.command_object.get(key).and_then(Amf0Value::as_str))
}

/// An error status (`_error` or error-level `onStatus`) as a failure carrying its code.
pub fn status_failure(cmd: &Command) -> Failure {
    let code = status_field(cmd, "code").unwrap_or("(no code)").to_owned();
    let description = status_field(cmd, "description").unwrap_or_default();
    let detail = format!("{} {code}: {description}", cmd.name);
    Failure { kind: Kind::RtmpStatus, code, detail }
}

/// A failed read or write (`op`): the server closed (reset / broken pipe) or another error.
pub fn io_failure(op: &str, e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            Failure::new(Kind::ClosedEarly, format!("{op}: {e}"))
        }
        _ => Failure::new(Kind::Io, format!("{op}: {e}")),
    }
}
