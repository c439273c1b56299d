//! Proving origins from the control thread: a TCP connection to each unproven origin's RTMP
//! address (what an RTMP session would dial), closed at once. The registry decides which
//! origins are due and bounds how many (see `balance::registry`): here each due probe becomes
//! one task on the control thread's `LocalSet` with a deadline of [`PROBE_TIMEOUT`], whose
//! result goes back to the registry and, when it proved an origin, to the shards in a new
//! snapshot. Nothing is read or written on the connection.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::State;
use crate::balance::OriginId;
use crate::balance::registry::ProbeOutcome;

/// How long a probe's connection may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts the probes due now.
pub fn start_due(shared: &Rc<RefCell<State>>) {
    let due = shared.borrow_mut().registry.due_probes(Instant::now());
    for (id, addr) in due {
        tokio::task::spawn_local(probe(shared.clone(), id, addr));
    }
}

async fn probe(shared: Rc<RefCell<State>>, id: OriginId, addr: SocketAddr) {
    let reached = match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    {
        let mut state = shared.borrow_mut();
        match (state.registry.probe_done(&id, addr, reached.is_ok(), Instant::now()), reached) {
            (ProbeOutcome::Proven, _) => {
                log::info!("origin {id} proven: its RTMP address {addr} accepted a connection");
                // Proven origins are preferred for new streams: the shards see it at once.
                state.publish_snapshot_now();
            }
            (ProbeOutcome::Failed, Err(e)) => log::debug!("origin {id} not proven: probe of {addr}: {e}"),
            (outcome, _) => log::debug!("origin {id}: probe of {addr} dropped ({outcome:?})"),
        }
        state.publish_snapshot();
    }
    start_due(&shared);
}
