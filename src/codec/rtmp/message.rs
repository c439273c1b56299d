//! RTMP messages: type ids, the [`Message`] unit, command parsing, control
//! message parsers and the builders a server needs while answering `connect`.
#![deny(clippy::indexing_slicing)]

use thiserror::Error;

use super::amf0::{self, Amf0Error, Amf0Value};

/// Set Chunk Size protocol control message.
pub const SET_CHUNK_SIZE: u8 = 1;
/// Abort Message protocol control message.
pub const ABORT: u8 = 2;
/// Acknowledgement protocol control message.
pub const ACKNOWLEDGEMENT: u8 = 3;
/// User Control message.
pub const USER_CONTROL: u8 = 4;
/// Window Acknowledgement Size protocol control message.
pub const WINDOW_ACK_SIZE: u8 = 5;
/// Set Peer Bandwidth protocol control message.
pub const SET_PEER_BANDWIDTH: u8 = 6;
/// Audio data.
pub const AUDIO: u8 = 8;
/// Video data.
pub const VIDEO: u8 = 9;
/// Data message, AMF3 encoded.
pub const DATA_AMF3: u8 = 15;
/// Shared object message, AMF3 encoded.
pub const SHARED_OBJECT_AMF3: u8 = 16;
/// Command message, AMF3 encoded (a leading format byte, then AMF0 in practice).
pub const COMMAND_AMF3: u8 = 17;
/// Data message, AMF0 encoded (e.g. `@setDataFrame`, `onMetaData`).
pub const DATA_AMF0: u8 = 18;
/// Shared object message, AMF0 encoded.
pub const SHARED_OBJECT_AMF0: u8 = 19;
/// Command message, AMF0 encoded.
pub const COMMAND_AMF0: u8 = 20;
/// Aggregate message.
pub const AGGREGATE: u8 = 22;

/// Chunk stream used for protocol control messages.
pub const CONTROL_CSID: u32 = 2;
/// Chunk stream used for connection-level commands.
pub const COMMAND_CSID: u32 = 3;
/// Chunk stream used for NetStream commands and statuses.
pub const STREAM_COMMAND_CSID: u32 = 5;

/// One complete RTMP message, as reassembled from (or split into) chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chunk stream id it travelled (or will travel) on, 2..=65599.
    pub csid: u32,
    /// Absolute timestamp in milliseconds (wraps at 2^32).
    pub timestamp: u32,
    /// Message type id (see the constants in this module).
    pub type_id: u8,
    /// Message stream id (0 for the NetConnection).
    pub stream_id: u32,
    /// The message body.
    pub payload: Vec<u8>,
}

/// Errors from parsing message payloads.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// A control message payload shorter than its fixed layout.
    #[error("{what} payload has {got} bytes, needs {need}")]
    Truncated {
        /// Which message was being parsed.
        what: &'static str,
        /// Bytes required.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// SetChunkSize value of 0 or with the high bit set.
    #[error("chunk size {size} outside 1..=0x7FFFFFFF")]
    InvalidChunkSize {
        /// The received value.
        size: u32,
    },
    /// SetPeerBandwidth limit type other than 0, 1, 2.
    #[error("unknown peer bandwidth limit type {limit}")]
    InvalidLimitType {
        /// The received limit type byte.
        limit: u8,
    },
    /// `Command::parse` on a message that is not type 17 or 20.
    #[error("message type {type_id} is not a command")]
    NotACommand {
        /// The message type id.
        type_id: u8,
    },
    /// The first value of a command is not a string.
    #[error("command name missing: first value is {found}")]
    MissingCommandName {
        /// Kind of the value found instead ("nothing" if empty).
        found: &'static str,
    },
    /// The transaction id of a command is not a number.
    #[error("command {name}: transaction id is {found}, not a number")]
    InvalidTransactionId {
        /// Command name.
        name: String,
        /// Kind of the value found.
        found: &'static str,
    },
    /// The command body is not valid AMF0.
    #[error("malformed AMF0 in command: {0}")]
    Amf0(#[from] Amf0Error),
}

/// A parsed command message (`connect`, `createStream`, `publish`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Command name.
    pub name: String,
    /// Transaction id (0 when absent).
    pub transaction_id: f64,
    /// Command object (`Null` when absent).
    pub command_object: Amf0Value,
    /// Remaining arguments.
    pub args: Vec<Amf0Value>,
}

impl Command {
    /// Creates a command.
    pub fn new(name: &str, transaction_id: f64, command_object: Amf0Value, args: Vec<Amf0Value>) -> Self {
        Command { name: name.to_owned(), transaction_id, command_object, args }
    }

    /// Parses a type 20 (AMF0) or type 17 (AMF3-wrapped) command payload.
    ///
    /// For type 17 a leading 0x00 format byte is skipped and the rest is
    /// decoded as AMF0.
    pub fn parse(type_id: u8, payload: &[u8]) -> Result<Self, MessageError> {
        let body = match type_id {
            COMMAND_AMF0 => payload,
            COMMAND_AMF3 => payload.strip_prefix(&[0u8]).unwrap_or(payload),
            _ => return Err(MessageError::NotACommand { type_id }),
        };
        Self::from_values(amf0::decode_all(body)?)
    }

    /// Parses the command carried by `msg`.
    pub fn from_message(msg: &Message) -> Result<Self, MessageError> {
        Self::parse(msg.type_id, &msg.payload)
    }

    fn from_values(values: Vec<Amf0Value>) -> Result<Self, MessageError> {
        let mut it = values.into_iter();
        let name = match it.next() {
            Some(Amf0Value::String(s) | Amf0Value::LongString(s)) => s,
            other => {
                let found = other.as_ref().map_or("nothing", Amf0Value::kind);
                return Err(MessageError::MissingCommandName { found });
            }
        };
        let transaction_id = match it.next() {
            None => 0.0,
            Some(Amf0Value::Number(n)) => n,
            Some(other) => {
                let found = other.kind();
                return Err(MessageError::InvalidTransactionId { name, found });
            }
        };
        let command_object = it.next().unwrap_or(Amf0Value::Null);
        Ok(Command { name, transaction_id, command_object, args: it.collect() })
    }

    /// The AMF0 payload of this command.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        amf0::encode(&Amf0Value::String(self.name.clone()), &mut out);
        amf0::encode(&Amf0Value::Number(self.transaction_id), &mut out);
        amf0::encode(&self.command_object, &mut out);
        self.args.iter().for_each(|a| amf0::encode(a, &mut out));
        out
    }

    /// Wraps this command in a type 20 message.
    pub fn to_message(&self, csid: u32, stream_id: u32) -> Message {
        Message { csid, timestamp: 0, type_id: COMMAND_AMF0, stream_id, payload: self.encode() }
    }
}

/// Limit type of a SetPeerBandwidth message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandwidthLimit {
    /// 0: the peer should limit its output to the window size.
    Hard,
    /// 1: limit to the window size or the current limit, whichever is smaller.
    Soft,
    /// 2: hard if the previous limit was hard, else ignore.
    Dynamic,
}

impl BandwidthLimit {
    fn to_byte(self) -> u8 {
        match self {
            BandwidthLimit::Hard => 0,
            BandwidthLimit::Soft => 1,
            BandwidthLimit::Dynamic => 2,
        }
    }

    fn from_byte(limit: u8) -> Result<Self, MessageError> {
        match limit {
            0 => Ok(BandwidthLimit::Hard),
            1 => Ok(BandwidthLimit::Soft),
            2 => Ok(BandwidthLimit::Dynamic),
            _ => Err(MessageError::InvalidLimitType { limit }),
        }
    }
}

/// A decoded User Control message event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserControl {
    /// Event 0: the stream became functional.
    StreamBegin(u32),
    /// Event 1: playback of the stream is over.
    StreamEof(u32),
    /// Event 2: no more data on the stream.
    StreamDry(u32),
    /// Event 3: client buffer length in milliseconds.
    SetBufferLength {
        /// Message stream id.
        stream_id: u32,
        /// Buffer length in milliseconds.
        buffer_ms: u32,
    },
    /// Event 4: the stream is a recorded stream.
    StreamIsRecorded(u32),
    /// Event 6: ping from the server, with its timestamp.
    PingRequest(u32),
    /// Event 7: answer to a ping, echoing its timestamp.
    PingResponse(u32),
    /// Any other event type with its raw data.
    Other {
        /// The event type.
        event_type: u16,
        /// Event data after the type field.
        data: Vec<u8>,
    },
}

fn be_u32_at(payload: &[u8], at: usize, what: &'static str) -> Result<u32, MessageError> {
    let need = at.saturating_add(4);
    let bytes = payload.get(at..need).ok_or(MessageError::Truncated { what, need, got: payload.len() })?;
    let mut arr = [0u8; 4];
    arr.copy_from_slice(bytes);
    Ok(u32::from_be_bytes(arr))
}

/// Reads and validates the value of a SetChunkSize payload.
pub fn parse_set_chunk_size(payload: &[u8]) -> Result<u32, MessageError> {
    let size = be_u32_at(payload, 0, "SetChunkSize")?;
    if size == 0 || size > 0x7FFF_FFFF {
        return Err(MessageError::InvalidChunkSize { size });
    }
    Ok(size)
}

/// Reads the chunk stream id of an Abort payload.
pub fn parse_abort(payload: &[u8]) -> Result<u32, MessageError> {
    be_u32_at(payload, 0, "Abort")
}

/// Reads the sequence number of an Acknowledgement payload.
pub fn parse_acknowledgement(payload: &[u8]) -> Result<u32, MessageError> {
    be_u32_at(payload, 0, "Acknowledgement")
}

/// Reads the window size of a WindowAckSize payload.
pub fn parse_window_ack_size(payload: &[u8]) -> Result<u32, MessageError> {
    be_u32_at(payload, 0, "WindowAckSize")
}

/// Reads the window size and limit type of a SetPeerBandwidth payload.
pub fn parse_set_peer_bandwidth(payload: &[u8]) -> Result<(u32, BandwidthLimit), MessageError> {
    let size = be_u32_at(payload, 0, "SetPeerBandwidth")?;
    let got = payload.len();
    let limit = payload.get(4).copied().ok_or(MessageError::Truncated { what: "SetPeerBandwidth", need: 5, got })?;
    Ok((size, BandwidthLimit::from_byte(limit)?))
}

/// Decodes a User Control payload.
pub fn parse_user_control(payload: &[u8]) -> Result<UserControl, MessageError> {
    let what = "UserControl";
    let got = payload.len();
    let head = payload.get(..2).ok_or(MessageError::Truncated { what, need: 2, got })?;
    let event_type = u16::from_be_bytes([head.first().copied().unwrap_or(0), head.get(1).copied().unwrap_or(0)]);
    let data = payload.get(2..).unwrap_or_default();
    let arg = |at| be_u32_at(data, at, what);
    Ok(match event_type {
        0 => UserControl::StreamBegin(arg(0)?),
        1 => UserControl::StreamEof(arg(0)?),
        2 => UserControl::StreamDry(arg(0)?),
        3 => UserControl::SetBufferLength { stream_id: arg(0)?, buffer_ms: arg(4)? },
        4 => UserControl::StreamIsRecorded(arg(0)?),
        6 => UserControl::PingRequest(arg(0)?),
        7 => UserControl::PingResponse(arg(0)?),
        _ => UserControl::Other { event_type, data: data.to_vec() },
    })
}

fn control(type_id: u8, payload: Vec<u8>) -> Message {
    Message { csid: CONTROL_CSID, timestamp: 0, type_id, stream_id: 0, payload }
}

/// SetChunkSize message; `size` is clamped into 1..=0x7FFFFFFF.
pub fn set_chunk_size(size: u32) -> Message {
    control(SET_CHUNK_SIZE, size.clamp(1, 0x7FFF_FFFF).to_be_bytes().to_vec())
}

/// Acknowledgement message with the number of bytes received so far.
pub fn acknowledgement(sequence: u32) -> Message {
    control(ACKNOWLEDGEMENT, sequence.to_be_bytes().to_vec())
}

/// WindowAckSize message.
pub fn window_ack_size(size: u32) -> Message {
    control(WINDOW_ACK_SIZE, size.to_be_bytes().to_vec())
}

/// SetPeerBandwidth message.
pub fn set_peer_bandwidth(size: u32, limit: BandwidthLimit) -> Message {
    let mut payload = size.to_be_bytes().to_vec();
    payload.push(limit.to_byte());
    control(SET_PEER_BANDWIDTH, payload)
}

fn user_control(event_type: u16, value: u32) -> Message {
    let mut payload = event_type.to_be_bytes().to_vec();
    payload.extend_from_slice(&value.to_be_bytes());
    control(USER_CONTROL, payload)
}

/// User Control StreamBegin for `stream_id`.
pub fn stream_begin(stream_id: u32) -> Message {
    user_control(0, stream_id)
}

/// User Control StreamEOF for message stream `stream_id`: its playback is over.
pub fn stream_eof(stream_id: u32) -> Message {
    user_control(1, stream_id)
}

/// User Control PingResponse echoing a PingRequest's `timestamp`.
pub fn ping_response(timestamp: u32) -> Message {
    user_control(7, timestamp)
}

/// The `objectEncoding` a client asked for in its `connect` (0 if absent).
pub fn object_encoding(connect: &Command) -> f64 {
    connect.command_object.get("objectEncoding").and_then(Amf0Value::as_f64).unwrap_or(0.0)
}

fn status_object(level: &str, code: &str, description: &str) -> Vec<(String, Amf0Value)> {
    vec![
        ("level".to_owned(), Amf0Value::string(level)),
        ("code".to_owned(), Amf0Value::string(code)),
        ("description".to_owned(), Amf0Value::string(description)),
    ]
}

/// `_result` answering `connect` (FMS/3,5,3,888, capabilities 127, mode 1).
pub fn connect_result(transaction_id: f64, object_encoding: f64) -> Message {
    let properties = Amf0Value::object([
        ("fmsVer", Amf0Value::string("FMS/3,5,3,888")),
        ("capabilities", Amf0Value::Number(127.0)),
        ("mode", Amf0Value::Number(1.0)),
    ]);
    let mut info = status_object("status", "NetConnection.Connect.Success", "Connection succeeded.");
    info.push(("objectEncoding".to_owned(), Amf0Value::Number(object_encoding)));
    let args = vec![Amf0Value::Object(info)];
    Command::new("_result", transaction_id, properties, args).to_message(COMMAND_CSID, 0)
}

/// `_result(txid, null, stream_id)` answering `createStream`.
pub fn create_stream_result(transaction_id: f64, stream_id: u32) -> Message {
    let args = vec![Amf0Value::Number(f64::from(stream_id))];
    Command::new("_result", transaction_id, Amf0Value::Null, args).to_message(COMMAND_CSID, 0)
}

/// `_result(txid, null, undefined)` for calls such as `releaseStream` or `FCPublish`.
pub fn call_result(transaction_id: f64) -> Message {
    let args = vec![Amf0Value::Undefined];
    Command::new("_result", transaction_id, Amf0Value::Null, args).to_message(COMMAND_CSID, 0)
}

/// `onStatus(0, null, {level, code, description})` on message stream `stream_id`.
///
/// Used for NetStream events such as `NetStream.Publish.Start`,
/// `NetStream.Publish.BadName` or `NetStream.Play.StreamNotFound`.
pub fn on_status(stream_id: u32, level: &str, code: &str, description: &str) -> Message {
    let args = vec![Amf0Value::Object(status_object(level, code, description))];
    Command::new("onStatus", 0.0, Amf0Value::Null, args).to_message(STREAM_COMMAND_CSID, stream_id)
}

/// `_error(txid, null, {level: "error", code: "NetConnection.Connect.Rejected", description})`.
pub fn connect_rejected(transaction_id: f64, description: &str) -> Message {
    let info = status_object("error", "NetConnection.Connect.Rejected", description);
    let args = vec![Amf0Value::Object(info)];
    Command::new("_error", transaction_id, Amf0Value::Null, args).to_message(COMMAND_CSID, 0)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::super::amf0::tests::ffmpeg_connect_bytes;
    use super::*;

    #[test]
    fn parses_ffmpeg_connect() {
        let cmd = Command::parse(COMMAND_AMF0, &ffmpeg_connect_bytes()).unwrap();
        assert_eq!(cmd.name, "connect");
        assert_eq!(cmd.transaction_id, 1.0);
        assert_eq!(cmd.command_object.get("app").and_then(Amf0Value::as_str), Some("live"));
        assert!(cmd.args.is_empty());
        assert_eq!(object_encoding(&cmd), 0.0);
    }

    #[test]
    fn parses_amf3_wrapped_command() {
        let mut payload = vec![0x00];
        payload.extend_from_slice(b"\x02\x00\x0ccreateStream");
        payload.extend_from_slice(b"\x00\x40\x00\x00\x00\x00\x00\x00\x00\x05");
        let cmd = Command::parse(COMMAND_AMF3, &payload).unwrap();
        assert_eq!(cmd.name, "createStream");
        assert_eq!(cmd.transaction_id, 2.0);
        assert_eq!(cmd.command_object, Amf0Value::Null);
    }

    #[test]
    fn command_errors() {
        assert!(matches!(Command::parse(AUDIO, b""), Err(MessageError::NotACommand { type_id: 8 })));
        let not_name = Command::parse(COMMAND_AMF0, &[0x05]);
        assert!(matches!(not_name, Err(MessageError::MissingCommandName { found: "null" })));
        let bad_tx = Command::parse(COMMAND_AMF0, b"\x02\x00\x01a\x05");
        assert!(matches!(bad_tx, Err(MessageError::InvalidTransactionId { .. })));
        let bytes = ffmpeg_connect_bytes();
        for len in 0..bytes.len() {
            let _ = Command::parse(COMMAND_AMF0, &bytes[..len]);
        }
    }

    #[test]
    fn connect_result_layout() {
        let msg = connect_result(1.0, 3.0);
        assert_eq!((msg.type_id, msg.csid, msg.stream_id), (COMMAND_AMF0, COMMAND_CSID, 0));
        let cmd = Command::from_message(&msg).unwrap();
        assert_eq!(cmd.name, "_result");
        let props = &cmd.command_object;
        assert_eq!(props.get("fmsVer").and_then(Amf0Value::as_str), Some("FMS/3,5,3,888"));
        assert_eq!(props.get("capabilities").and_then(Amf0Value::as_f64), Some(127.0));
        assert_eq!(props.get("mode").and_then(Amf0Value::as_f64), Some(1.0));
        let info = &cmd.args[0];
        let code = info.get("code").and_then(Amf0Value::as_str);
        assert_eq!(code, Some("NetConnection.Connect.Success"));
        assert_eq!(info.get("objectEncoding").and_then(Amf0Value::as_f64), Some(3.0));
    }

    #[test]
    fn result_and_status_builders() {
        let cs = Command::from_message(&create_stream_result(4.0, 1)).unwrap();
        assert_eq!((cs.transaction_id, &cs.command_object), (4.0, &Amf0Value::Null));
        assert_eq!(cs.args, vec![Amf0Value::Number(1.0)]);
        let generic = Command::from_message(&call_result(2.0)).unwrap();
        assert_eq!(generic.args, vec![Amf0Value::Undefined]);
        let msg = on_status(1, "error", "NetStream.Publish.BadName", "taken");
        assert_eq!((msg.stream_id, msg.csid), (1, STREAM_COMMAND_CSID));
        let st = Command::from_message(&msg).unwrap();
        assert_eq!((st.name.as_str(), st.transaction_id), ("onStatus", 0.0));
        assert_eq!(st.args[0].get("description").and_then(Amf0Value::as_str), Some("taken"));
        let rej = Command::from_message(&connect_rejected(1.0, "no")).unwrap();
        assert_eq!(rej.name, "_error");
        assert_eq!(rej.args[0].get("level").and_then(Amf0Value::as_str), Some("error"));
        let code = rej.args[0].get("code").and_then(Amf0Value::as_str);
        assert_eq!(code, Some("NetConnection.Connect.Rejected"));
    }

    #[test]
    fn control_messages() {
        assert_eq!(set_chunk_size(4096).payload, [0, 0, 0x10, 0]);
        assert_eq!(set_chunk_size(0).payload, [0, 0, 0, 1]);
        assert_eq!(parse_set_chunk_size(&set_chunk_size(60000).payload), Ok(60000));
        let bad = parse_set_chunk_size(&[0x80, 0, 0, 0]);
        assert_eq!(bad, Err(MessageError::InvalidChunkSize { size: 0x8000_0000 }));
        assert!(matches!(parse_set_chunk_size(&[0, 1]), Err(MessageError::Truncated { .. })));
        assert_eq!(parse_window_ack_size(&window_ack_size(2_500_000).payload), Ok(2_500_000));
        let pb = set_peer_bandwidth(5_000_000, BandwidthLimit::Dynamic);
        assert_eq!(parse_set_peer_bandwidth(&pb.payload), Ok((5_000_000, BandwidthLimit::Dynamic)));
        assert_eq!(parse_acknowledgement(&acknowledgement(9).payload), Ok(9));
        assert_eq!(parse_abort(&[0, 0, 0, 3]), Ok(3));
        let sb = stream_begin(1);
        assert_eq!((sb.type_id, sb.payload.as_slice()), (USER_CONTROL, &[0, 0, 0, 0, 0, 1][..]));
        assert_eq!(parse_user_control(&sb.payload), Ok(UserControl::StreamBegin(1)));
        assert_eq!(parse_user_control(&ping_response(7).payload), Ok(UserControl::PingResponse(7)));
        let buf = parse_user_control(&[0, 3, 0, 0, 0, 1, 0, 0, 0x0b, 0xb8]);
        assert_eq!(buf, Ok(UserControl::SetBufferLength { stream_id: 1, buffer_ms: 3000 }));
        assert!(parse_user_control(&[0]).is_err());
        assert!(parse_user_control(&[0, 3, 0, 0, 0, 1]).is_err());
    }
}
