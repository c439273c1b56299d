//! RTMP connections on a shard.

use std::net::SocketAddr;
use std::rc::Rc;

use glommio::net::TcpStream;

use crate::shard::Shard;

/// Serves one RTMP client connection.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    log::info!("shard {}: RTMP connection from {peer} closed: RTMP proxying is not built yet", shard.index);
    drop(stream);
}
