//! Publishers: connect, SetChunkSize (`--publish-chunk-size`), createStream, `publish`, wait
//! for `NetStream.Publish.Start`, then send the FLV's tags until the run ends.
//!
//! Audio, video and `@setDataFrame onMetaData` go on separate chunk streams with the file's
//! timestamps; each lap of the file adds [`Flv::loop_ms`] so timestamps keep increasing
//! (metadata is sent on the first lap only). Paced publishers send every tag when its time
//! comes (all tags already due in one write); unpaced ones fill writes of up to
//! [`BATCH_BYTES`] as fast as the socket takes them. Whatever the server sends after the
//! setup is read and dropped by a small side task so its acknowledgements never pile up.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use streamgate::codec::rtmp::message::{self, AUDIO, DATA_AMF0, VIDEO};
use streamgate::codec::rtmp::{ChunkEncoder, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, sleep_until};

use crate::Ctx;
use crate::conn::Conn;
use crate::flv::{Flv, Tag};
use crate::rtmp::{self, AUDIO_CSID, DATA_CSID, STREAM_CSID, VIDEO_CSID};
use crate::stats::{Failure, Kind};

/// Write size an unpaced publisher fills before writing.
const BATCH_BYTES: usize = 256 * 1024;
/// Read buffer of the side task draining the server's messages.
const DRAIN_BUF: usize = 4096;

/// Publishes stream PREFIX{idx} until the run ends; failures are counted.
pub async fn run(ctx: Arc<Ctx>, idx: usize) {
    let name = format!("{}{idx}", ctx.args.stream_prefix);
    let setup = setup(&ctx, &name).await;
    ctx.stats.publishers_settled.fetch_add(1, Relaxed);
    let result = match setup {
        Ok((conn, sid)) => send(&ctx, conn, sid).await,
        Err(f) => Err(f),
    };
    if let Err(f) = result {
        ctx.stats.fail(&f);
    }
}

/// Dial, handshake, connect, createStream, publish; returns the connection once the server
/// confirmed with `NetStream.Publish.Start`, and the message stream id.
async fn setup(ctx: &Arc<Ctx>, name: &str) -> Result<(Conn, u32), Failure> {
    let started = Instant::now();
    let mut conn = Conn::open(ctx, &ctx.target).await?;
    conn.connect(&ctx.target).await?;
    conn.send(&message::set_chunk_size(ctx.args.publish_chunk_size))?;
    let sid = conn.create_stream().await?;
    conn.send(&rtmp::publish(name).to_message(STREAM_CSID, sid))?;
    conn.flush().await?;
    conn.status("NetStream.Publish.Start").await?;
    ctx.stats.sent(conn.tx_bytes());
    ctx.stats.setup_done(started.elapsed());
    Ok((conn, sid))
}

/// Sends the file in laps until the run ends (the runtime drops this task) or a write fails.
async fn send(ctx: &Arc<Ctx>, conn: Conn, sid: u32) -> Result<(), Failure> {
    let flv = ctx.flv.as_ref().ok_or_else(|| Failure::new(Kind::Io, "no --flv loaded"))?;
    let (socket, encoder, _guard) = conn.into_parts();
    let (rd, wr) = socket.into_split();
    let drain = tokio::spawn(drain(rd));
    let mut sender = Sender {
        ctx,
        wr,
        encoder,
        msg: Message { csid: VIDEO_CSID, timestamp: 0, type_id: VIDEO, stream_id: sid, payload: Vec::new() },
        out: Vec::new(),
    };
    let result = sender.laps(flv).await;
    drain.abort();
    result
}

/// Reads and drops what the server sends after the setup, until it closes.
async fn drain(mut rd: OwnedReadHalf) {
    let mut buf = vec![0u8; DRAIN_BUF];
    while let Ok(n) = rd.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// The writing half of a publisher.
struct Sender<'a> {
    ctx: &'a Ctx,
    wr: OwnedWriteHalf,
    encoder: ChunkEncoder,
    /// Reused for every tag (payload buffer kept).
    msg: Message,
    out: Vec<u8>,
}

impl Sender<'_> {
    async fn laps(&mut self, flv: &Flv) -> Result<(), Failure> {
        let start = Instant::now();
        let paced = self.ctx.args.paced;
        for lap in 0u64.. {
            let offset = lap.saturating_mul(flv.loop_ms);
            for tag in flv.tags.iter().filter(|t| lap == 0 || t.type_id != DATA_AMF0) {
                let ts = offset.saturating_add(tag.ts);
                if paced {
                    let due = start + Duration::from_millis(ts);
                    if due > Instant::now() {
                        self.flush().await?;
                        sleep_until(due).await;
                    }
                }
                self.queue(tag, ts)?;
                if self.out.len() >= BATCH_BYTES {
                    self.flush().await?;
                }
            }
        }
        Ok(())
    }

    fn queue(&mut self, tag: &Tag, ts: u64) -> Result<(), Failure> {
        self.msg.csid = match tag.type_id {
            AUDIO => AUDIO_CSID,
            VIDEO => VIDEO_CSID,
            _ => DATA_CSID,
        };
        self.msg.type_id = tag.type_id;
        self.msg.timestamp = ts as u32; // RTMP timestamps wrap at 2^32 ms
        self.msg.payload.clear();
        self.msg.payload.extend_from_slice(&tag.data);
        self.encoder.encode(&self.msg, &mut self.out).map_err(|e| Failure::new(Kind::Protocol, format!("encode: {e}")))
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.wr.write_all(&self.out).await.map_err(|e| rtmp::io_failure("write", &e))?;
        self.ctx.stats.sent(self.out.len() as u64);
        self.out.clear();
        Ok(())
    }
}
