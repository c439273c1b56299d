//! WebRTC through the proxy: signalling on the HTTP API listener ([`signal`]) and media on the
//! WebRTC UDP listener ([`media`]). ICE, DTLS and SRTP stay end to end between the client and
//! its origin; the proxy routes datagrams by the STUN USERNAME that signalling recorded.

pub mod media;
pub mod signal;
