//! The client side of an RTMP connection until it says what it wants: answer the handshake,
//! `connect`, `createStream` and the calls around them as an origin would, until `publish` or
//! `play` names the stream.
//!
//! Every byte the client sends after its C2 is kept, in order, in [`Identified::replay`]: the
//! proxy will send exactly these bytes to the origin, so the origin sees the client's own
//! `connect` command object (app, tcUrl, flashVer, ...), its chunk sizes and its chunk-stream
//! header state, and the switch to relaying needs no re-framing in this direction.
//!
//! On `connect` the proxy sends what an SRS origin sends, in its order: WindowAckSize,
//! SetPeerBandwidth, SetChunkSize [`CHUNK_SIZE`], then the `_result`; every answer after that
//! goes out in chunks of [`CHUNK_SIZE`], so each fits one chunk (clients that cannot reassemble
//! a message split over chunks need that). What the proxy wrote and which transactions it
//! answered are kept ([`Told`]): the origin's own answers to the replayed commands are left
//! out of its stream, and the rest is written so the client reads it right
//! ([`super::handover`]).

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use crate::bridge::Role;
use crate::codec::rtmp::amf0::Amf0Value;
use crate::codec::rtmp::chunk::Head;
use crate::codec::rtmp::message::{self, BandwidthLimit, COMMAND_AMF0, COMMAND_AMF3};
use crate::codec::rtmp::{
    ChunkDecoder, ChunkEncoder, ChunkError, Command, HandshakeError, Message, MessageError, ServerHandshake,
};
use crate::shard::relay::{quickack, recv};

/// Most bytes a client may send before `publish`/`play` is complete (its commands, plus media
/// that follows at once); past it the connection is dropped.
pub const MAX_IDENTIFY_BYTES: usize = 1024 * 1024;
/// Largest message accepted before `publish`/`play` (commands are a few hundred bytes).
const MAX_IDENTIFY_MESSAGE: u32 = 64 * 1024;
/// The message stream id the proxy hands out in `createStream`; nginx-rtmp and SRS use 1 too.
pub const STREAM_ID: u32 = 1;
/// Window acknowledgement size and peer bandwidth announced to clients (SRS's values).
const WINDOW: u32 = 2_500_000;
/// The chunk size the proxy announces before its `_result` to `connect` and writes its own
/// messages with until the origin's stream starts (SRS's default).
pub const CHUNK_SIZE: u32 = 60_000;
/// The chunk stream of the proxy's answers to calls other than `connect` and `createStream`
/// (`releaseStream`, `FCPublish`, `FCSubscribe`, ...). Origins answer `connect` and
/// `createStream` on chunk stream 3, as the proxy does, and their answers are left out
/// ([`super::handover`]): when the client's chunk stream 3 ends on the same `createStream`
/// answer as the origin's, the player's relay can take the origin's stream verbatim at once.
/// Origins do not answer these other calls, or answer them on a chunk stream of their own.
const CALL_RESULT_CSID: u32 = 4;
/// Most transactions the proxy answers before `publish`/`play` (clients send a handful).
pub const MAX_ANSWERED: usize = 32;

/// What the client asked for.
#[derive(Debug)]
pub struct Identified {
    pub role: Role,
    pub tc_url: String,
    /// The `publish`/`play` name, query included.
    pub stream_name: String,
    /// Every byte after the client's C2, in order (up to and past `publish`/`play`).
    pub replay: Vec<u8>,
    /// What the proxy wrote to the client.
    pub told: Told,
}

/// What the proxy wrote to a client before the origin's stream.
#[derive(Debug, Default, Clone)]
pub struct Told {
    /// The last message written on each chunk stream (the header and the length): the header
    /// state the client's chunk streams hold.
    pub heads: Vec<(Head, u32)>,
    /// The chunk size the client reads with.
    pub chunk_size: u32,
    /// Transactions the proxy answered (`connect`, `createStream`, other calls).
    pub answered: Vec<f64>,
}

impl Told {
    /// Notes `msg`, written to the client; a `_result` answers its transaction.
    fn wrote(&mut self, msg: &Message, answers: Option<f64>) {
        let head = Head { csid: msg.csid, timestamp: msg.timestamp, type_id: msg.type_id, stream_id: msg.stream_id };
        let length = u32::try_from(msg.payload.len()).unwrap_or(u32::MAX);
        match self.heads.iter_mut().find(|(h, _)| h.csid == msg.csid) {
            Some(last) => *last = (head, length),
            None => self.heads.push((head, length)),
        }
        self.answered.extend(answers);
    }
}

/// Why a client never got as far as `publish` or `play`.
#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("command: {0}")]
    Message(#[from] MessageError),
    #[error("{0} before connect")]
    BeforeConnect(String),
    #[error("{0} without a stream name")]
    NoStreamName(String),
    #[error("closed the connection before publish or play")]
    Closed,
    #[error("sent more than {MAX_IDENTIFY_BYTES} bytes before publish or play")]
    TooMuch,
    #[error("sent more than {MAX_ANSWERED} calls before publish or play")]
    TooManyCalls,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The connection so far.
struct Session {
    /// The tcUrl of `connect`, once it arrived.
    connect: Option<String>,
    out: Vec<u8>,
    told: Told,
}

/// Runs the handshake and the command exchange; returns once `publish` or `play` arrived.
pub async fn identify(client: &mut TcpStream) -> Result<Identified, IdentifyError> {
    let mut replay = handshake(client).await?;
    let mut decoder = ChunkDecoder::with_limits(MAX_IDENTIFY_MESSAGE, 64);
    let mut encoder = ChunkEncoder::new();
    let told = Told { chunk_size: encoder.chunk_size(), ..Told::default() };
    let mut session = Session { connect: None, out: Vec::new(), told };
    let mut fed = 0;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        while fed < replay.len() {
            let (used, msg) = decoder.decode(&replay[fed..])?;
            fed += used;
            let Some(msg) = msg else { break };
            if let Some((role, name)) = session.on_message(&msg, &mut encoder)? {
                client.write_all(&session.out).await?;
                let tc_url = session.connect.take().unwrap_or_default();
                let told = std::mem::take(&mut session.told);
                return Ok(Identified { role, tc_url, stream_name: name, replay, told });
            }
        }
        if !session.out.is_empty() {
            client.write_all(&session.out).await?;
            session.out.clear();
        }
        let n = recv(client, &mut chunk).await?;
        quickack(client);
        if n == 0 {
            return Err(IdentifyError::Closed);
        }
        if replay.len() + n > MAX_IDENTIFY_BYTES {
            return Err(IdentifyError::TooMuch);
        }
        replay.extend_from_slice(&chunk[..n]);
    }
}

/// Server handshake; returns the bytes the client sent after C2.
async fn handshake(client: &mut TcpStream) -> Result<Vec<u8>, IdentifyError> {
    let mut random = vec![0u8; crate::codec::rtmp::handshake::RANDOM_LEN];
    crate::util::fill_random(&mut random);
    let mut hs = ServerHandshake::new(0, &random)?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = recv(client, &mut buf).await?;
        quickack(client);
        if n == 0 {
            return Err(IdentifyError::Closed);
        }
        let progress = hs.feed(&buf[..n])?;
        if !progress.output.is_empty() {
            client.write_all(&progress.output).await?;
        }
        if progress.done {
            return Ok(buf[progress.consumed..n].to_vec());
        }
    }
}

impl Session {
    /// Writes `msg`, the answer to transaction `answers` if any.
    fn send(&mut self, encoder: &mut ChunkEncoder, msg: &Message, answers: Option<f64>) -> Result<(), IdentifyError> {
        if answers.is_some() && self.told.answered.len() >= MAX_ANSWERED {
            return Err(IdentifyError::TooManyCalls);
        }
        encoder.encode(msg, &mut self.out)?;
        self.told.wrote(msg, answers);
        self.told.chunk_size = encoder.chunk_size();
        Ok(())
    }

    /// Handles one client message; `Some` once it is `publish` or `play`.
    fn on_message(
        &mut self,
        msg: &Message,
        encoder: &mut ChunkEncoder,
    ) -> Result<Option<(Role, String)>, IdentifyError> {
        if msg.type_id != COMMAND_AMF0 && msg.type_id != COMMAND_AMF3 {
            return Ok(None); // control messages are applied by the decoder; data waits for the origin
        }
        let cmd = Command::from_message(msg)?;
        let role = match cmd.name.as_str() {
            "connect" => return self.on_connect(&cmd, encoder).map(|()| None),
            "publish" => Role::Publish,
            "play" => Role::Play,
            _ if self.connect.is_none() => return Err(IdentifyError::BeforeConnect(cmd.name)),
            "createStream" => {
                let result = message::create_stream_result(cmd.transaction_id, STREAM_ID);
                self.send(encoder, &result, Some(cmd.transaction_id))?;
                return Ok(None);
            }
            "getStreamLength" => return Ok(None),
            _ if cmd.transaction_id > 0.0 => {
                let result = Message { csid: CALL_RESULT_CSID, ..message::call_result(cmd.transaction_id) };
                self.send(encoder, &result, Some(cmd.transaction_id))?;
                return Ok(None);
            }
            _ => return Ok(None),
        };
        if self.connect.is_none() {
            return Err(IdentifyError::BeforeConnect(cmd.name));
        }
        match cmd.args.first().and_then(Amf0Value::as_str) {
            Some(name) if !name.is_empty() => Ok(Some((role, name.to_string()))),
            _ => Err(IdentifyError::NoStreamName(cmd.name)),
        }
    }

    fn on_connect(&mut self, cmd: &Command, encoder: &mut ChunkEncoder) -> Result<(), IdentifyError> {
        let field = |k: &str| cmd.command_object.get(k).and_then(Amf0Value::as_str).unwrap_or_default().to_string();
        self.connect = Some(field("tcUrl"));
        self.send(encoder, &message::window_ack_size(WINDOW), None)?;
        self.send(encoder, &message::set_peer_bandwidth(WINDOW, BandwidthLimit::Dynamic), None)?;
        // Encoding SetChunkSize switches the encoder too: the `_result` goes out in one chunk.
        self.send(encoder, &message::set_chunk_size(CHUNK_SIZE), None)?;
        let encoding = message::object_encoding(cmd);
        self.send(encoder, &message::connect_result(cmd.transaction_id, encoding), Some(cmd.transaction_id))
    }
}
