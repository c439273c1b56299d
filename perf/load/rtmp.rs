//! RTMP client pieces shared by publishers and players: the `connect` command, the
//! `publish` / `play` commands, status fields, and how socket errors map to error kinds.

use std::io;

use streamgate::codec::rtmp::Command;
use streamgate::codec::rtmp::client;

use crate::args::Target;
use crate::stats::{Failure, Kind};

pub use streamgate::codec::rtmp::client::{
    AUDIO_CSID, DATA_CSID, STREAM_CSID, VIDEO_CSID, is_media, play, publish, status_field,
};

/// `connect` (transaction 1) for the target's app, with the fields encoders send.
pub fn connect(target: &Target) -> Command {
    client::connect(&target.app, &target.tc_url, "FMLE/3.0 (compatible; streamgate-load)")
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
