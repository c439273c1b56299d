//! Port 0 for the listeners every shard binds. Each shard binds its own socket on a listener's
//! address (SO_REUSEPORT), so "any free port" must be chosen once, before the shards start:
//! [`reserve`] binds a socket of the listener's kind on port 0 with SO_REUSEPORT, reads the port
//! the kernel gave, and keeps that socket bound (never listening, never read) in a
//! [`Reservation`] until every shard has bound the same port, so nothing else can take it in
//! between. The configuration the shards start from then names the real port (which the
//! WebRTC signalling writes into its answers), and the startup line reports it.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// Sockets holding reserved ports; dropping it lets them go.
#[derive(Debug, Default)]
pub struct Reservation(Vec<Socket>);

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
}

/// `addr` itself, or with port 0 a free port reserved in `held`.
pub fn reserve(addr: SocketAddr, kind: Kind, held: &mut Reservation) -> io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let ty = match kind {
        Kind::Tcp => Type::STREAM,
        Kind::Udp => Type::DGRAM,
    };
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    let bound = socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?;
    held.0.push(socket);
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_becomes_a_port_others_can_share_while_it_is_held() {
        let mut held = Reservation::default();
        let fixed: SocketAddr = "127.0.0.1:1935".parse().unwrap();
        assert_eq!(reserve(fixed, Kind::Tcp, &mut held).unwrap(), fixed, "a given port is kept");
        for kind in [Kind::Tcp, Kind::Udp] {
            let addr = reserve("127.0.0.1:0".parse().unwrap(), kind, &mut held).unwrap();
            assert_ne!(addr.port(), 0);
            let ty = if kind == Kind::Tcp { Type::STREAM } else { Type::DGRAM };
            let shard = Socket::new(Domain::IPV4, ty, None).unwrap();
            shard.set_reuse_port(true).unwrap();
            shard.bind(&addr.into()).expect("a shard binds the reserved port");
            let stranger = Socket::new(Domain::IPV4, ty, None).unwrap();
            assert!(stranger.bind(&addr.into()).is_err(), "a socket without SO_REUSEPORT cannot take it");
        }
    }
}
