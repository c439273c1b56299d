//! The client side of RTMP's command exchange (sans-io): the commands a client sends to
//! publish or play (`connect`, `createStream`, `publish`, `play`) and how to read the
//! server's answers. Shared by the edge's origin pull (`crate::proxy::edge`) and the load
//! generator (`perf/load`).

use super::amf0::Amf0Value;
use super::message::{AUDIO, COMMAND_AMF0, COMMAND_AMF3, Command, Message, VIDEO};

/// Chunk stream for NetStream commands (`publish`, `play`).
pub const STREAM_CSID: u32 = 5;
/// Chunk stream video goes on (SRS's and ffmpeg's).
pub const VIDEO_CSID: u32 = 6;
/// Chunk stream audio goes on.
pub const AUDIO_CSID: u32 = 7;
/// Chunk stream `@setDataFrame` / `onMetaData` go on.
pub const DATA_CSID: u32 = 8;

/// Whether a message type is audio or video.
pub fn is_media(type_id: u8) -> bool {
    type_id == AUDIO || type_id == VIDEO
}

/// `connect` (transaction 1) to `app` at `tc_url`, with the fields encoders send.
pub fn connect(app: &str, tc_url: &str, flash_ver: &str) -> Command {
    let obj = Amf0Value::object([
        ("app", Amf0Value::string(app)),
        ("type", Amf0Value::string("nonprivate")),
        ("flashVer", Amf0Value::string(flash_ver)),
        ("tcUrl", Amf0Value::string(tc_url)),
        ("fpad", Amf0Value::Boolean(false)),
        ("capabilities", Amf0Value::Number(15.0)),
        ("audioCodecs", Amf0Value::Number(4071.0)),
        ("videoCodecs", Amf0Value::Number(252.0)),
        ("videoFunction", Amf0Value::Number(1.0)),
    ]);
    Command::new("connect", 1.0, obj, vec![])
}

/// `createStream` (transaction `txid`).
pub fn create_stream(txid: f64) -> Command {
    Command::new("createStream", txid, Amf0Value::Null, vec![])
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

/// What a server's message says to a client waiting for its answers.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// `_result` of transaction `txid`.
    Result { txid: f64, cmd: Command },
    /// `_error`, or an `onStatus` of level error: `code` and `description`.
    Refused { code: String, description: String },
    /// `onStatus` of another level, with its code.
    Status(String),
    /// Anything else (media, data, controls, other commands, an unreadable command).
    Other,
}

/// Reads `msg` as an answer to a client.
pub fn answer(msg: &Message) -> Answer {
    if msg.type_id != COMMAND_AMF0 && msg.type_id != COMMAND_AMF3 {
        return Answer::Other;
    }
    let Ok(cmd) = Command::from_message(msg) else { return Answer::Other };
    let text = |k: &str| status_field(&cmd, k).unwrap_or_default().to_string();
    match cmd.name.as_str() {
        "_result" => Answer::Result { txid: cmd.transaction_id, cmd },
        "_error" => Answer::Refused { code: text("code"), description: text("description") },
        "onStatus" if text("level") == "error" => {
            Answer::Refused { code: text("code"), description: text("description") }
        }
        "onStatus" => Answer::Status(text("code")),
        _ => Answer::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::rtmp::message;

    #[test]
    fn answers_are_read_by_kind() {
        let result = message::create_stream_result(2.0, 1);
        assert!(matches!(answer(&result), Answer::Result { txid, .. } if txid == 2.0));
        let start = message::on_status(1, "status", "NetStream.Play.Start", "go");
        assert_eq!(answer(&start), Answer::Status("NetStream.Play.Start".into()));
        let gone = message::on_status(1, "error", "NetStream.Play.StreamNotFound", "none");
        let refused = Answer::Refused { code: "NetStream.Play.StreamNotFound".into(), description: "none".into() };
        assert_eq!(answer(&gone), refused);
        assert_eq!(answer(&message::set_chunk_size(4096)), Answer::Other);
        let cmd = Command::from_message(&connect("live", "rtmp://h/live", "x").to_message(3, 0)).unwrap();
        assert_eq!(cmd.command_object.get("app").and_then(Amf0Value::as_str), Some("live"));
    }
}
