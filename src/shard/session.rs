//! A stream session on a TCP connection, as a guard: [`Shard::open_session`] reports it open
//! to the control thread, registers its byte counters and attaches it to the current
//! connection (for the stall sweep and log lines); dropping the [`Session`] reports it closed,
//! however the connection's future ended: finished, failed, panicked or ended by the shard.
//!
//! The close is sent without waiting (a `Drop` cannot): when the event queue is full it is
//! kept in the shard's [`Closing`] backlog, which the reporter sends first, with
//! back-pressure, once a second. The backlog holds at most one event per session that was
//! open, so it is bounded by the connection gate.

use std::cell::RefCell;
use std::rc::Rc;

use tokio::sync::mpsc;

use super::Shard;
use super::conn::{self, Conn, SessionLabel};
use super::traffic::Traffic;
use crate::balance::StreamKey;
use crate::balance::session::{Protocol, Role};
use crate::bridge::ShardEvent;

/// Session-close events that found the event queue full.
#[derive(Debug, Default)]
pub struct Closing {
    events: RefCell<Vec<ShardEvent>>,
}

impl Closing {
    /// Sends what is waiting, in order, waiting for room in the queue.
    pub async fn flush(&self, events: &mpsc::Sender<ShardEvent>) {
        let waiting = std::mem::take(&mut *self.events.borrow_mut());
        for event in waiting {
            if events.send(event).await.is_err() {
                return; // the control thread is gone
            }
        }
    }

    pub fn len(&self) -> usize {
        self.events.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open session; reported closed when dropped.
#[derive(Debug)]
pub struct Session {
    pub traffic: Rc<Traffic>,
    label: SessionLabel,
    events: mpsc::Sender<ShardEvent>,
    closing: Rc<Closing>,
    conn: Option<Rc<Conn>>,
}

impl Session {
    pub fn key(&self) -> &StreamKey {
        &self.label.key
    }
}

impl Shard {
    /// Opens a session of `key`: reported to the control thread (waiting for room in the
    /// queue, as every session event does), counted, and attached to the current connection.
    pub async fn open_session(&self, key: &StreamKey, protocol: Protocol, role: Role) -> Session {
        self.open_session_of(key, protocol, role, false).await
    }

    /// [`Shard::open_session`], saying whether it is a local publisher's (`--local-origin`: the
    /// control thread then starts its HLS).
    pub async fn open_session_of(&self, key: &StreamKey, protocol: Protocol, role: Role, local: bool) -> Session {
        self.link.session_of(key, protocol, role, true, local).await;
        let traffic = self.traffic.register(key, protocol);
        let label = SessionLabel { key: key.clone(), protocol, role };
        let conn = conn::current();
        if let Some(conn) = &conn {
            conn.session_started(label.clone(), traffic.clone());
        }
        Session { traffic, label, events: self.link.events.clone(), closing: self.closing.clone(), conn }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(conn) = &self.conn {
            conn.session_ended();
        }
        let SessionLabel { key, protocol, role } = self.label.clone();
        let event = ShardEvent::Session { key, protocol, role, opened: false, local: false };
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            self.closing.events.borrow_mut().push(event);
        }
    }
}
