//! The shards' events on the control thread. Claims, HLS ids and ICE usernames are answered
//! from the local registry when it knows them; in redis mode what it does not know (a stream
//! without a usable pin here, an HLS id or ICE username another proxy gave out) is asked of
//! Redis in a task of its own, so one slow Redis answer holds up only the session that waits
//! for it. Session counts and reports never wait for Redis.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::{State, new_hls_id, redis};
use crate::balance::ice::IceSession;
use crate::balance::{Origin, OriginId, StreamKey};
use crate::bridge::{ClaimReply, HlsClaimReply, HlsResolveReply, ShardEvent};

/// Handles one event from a shard.
pub fn dispatch(shared: &Rc<RefCell<State>>, event: ShardEvent) {
    match event {
        ShardEvent::Claim { key, proposed, failed, reply } => {
            let mut state = shared.borrow_mut();
            state.dial_failed(failed.as_ref());
            match state.claim_here(&key, proposed.as_ref()) {
                Ok(answer) => drop(reply.send(answer)),
                Err(choice) => {
                    drop(state);
                    let shared = shared.clone();
                    spawn(async move {
                        let _ = reply.send(claim_shared(&shared, &key, choice, failed).await);
                    });
                }
            }
        }
        ShardEvent::ClaimHls { key, proposed, failed, reply } => {
            shared.borrow_mut().dial_failed(failed.as_ref());
            let shared = shared.clone();
            spawn(async move { claim_hls(&shared, key, proposed, failed, reply).await });
        }
        ShardEvent::ResolveHls { id, reply } => {
            let shared = shared.clone();
            spawn(async move {
                let _ = reply.send(resolve_hls(&shared, id).await);
            });
        }
        ShardEvent::IceResolve { username, reply } => {
            let shared = shared.clone();
            spawn(async move {
                let _ = reply.send(resolve_ice(&shared, &username).await);
            });
        }
        ShardEvent::IceBind { username, session } => {
            let redis_mode = shared.borrow().redis.is_some();
            if redis_mode {
                let (shared, username, key) = (shared.clone(), username.clone(), session.key.clone());
                tokio::task::spawn_local(async move { redis::store_ice(&shared, &username, &key).await });
            }
            shared.borrow_mut().on_event(ShardEvent::IceBind { username, session });
        }
        other => shared.borrow_mut().on_event(other),
    }
}

/// Runs `task` on the control thread's `LocalSet`.
fn spawn(task: impl Future<Output = ()> + 'static) {
    tokio::task::spawn_local(task);
}

/// The origin of `key`: the local pin, else (redis mode) the fleet's pin or this proxy's choice.
async fn claim(
    shared: &Rc<RefCell<State>>,
    key: &StreamKey,
    proposed: Option<OriginId>,
    failed: Option<OriginId>,
) -> ClaimReply {
    let choice = match shared.borrow_mut().claim_here(key, proposed.as_ref()) {
        Ok(answer) => return answer,
        Err(choice) => choice,
    };
    claim_shared(shared, key, choice, failed).await
}

/// Redis mode: pins `key` through Redis (see [`redis::claim`]).
async fn claim_shared(
    shared: &Rc<RefCell<State>>,
    key: &StreamKey,
    choice: Option<OriginId>,
    failed: Option<OriginId>,
) -> ClaimReply {
    let result = redis::claim(shared, key, choice.as_ref(), failed.as_ref()).await;
    if let Err(e) = &result {
        log::debug!("stream {key}: {e}");
    }
    shared.borrow_mut().publish_snapshot();
    result
}

/// The stream's HLS id: the local one, else (redis mode) the fleet's or a new one stored there.
async fn hls_id(shared: &Rc<RefCell<State>>, key: &StreamKey) -> Arc<str> {
    {
        let mut state = shared.borrow_mut();
        if let Some(id) = state.hls.id_of(key) {
            return id.clone();
        }
        if state.redis.is_none() {
            return state.hls.id_for(key, new_hls_id);
        }
    }
    let candidate = new_hls_id();
    let chosen = redis::store_hls(shared, key, &candidate).await.unwrap_or(candidate);
    let mut state = shared.borrow_mut();
    let id = state.hls.insert(key, &chosen);
    state.publish_snapshot();
    id
}

async fn claim_hls(
    shared: &Rc<RefCell<State>>,
    key: StreamKey,
    proposed: Option<OriginId>,
    failed: Option<OriginId>,
    reply: oneshot::Sender<HlsClaimReply>,
) {
    let answer = match claim(shared, &key, proposed, failed).await {
        Ok(origin) => Ok((origin, hls_id(shared, &key).await)),
        Err(e) => Err(e),
    };
    let _ = reply.send(answer);
}

/// The stream of an HLS id and its claim: the local table, else (redis mode) Redis.
async fn resolve_hls(shared: &Rc<RefCell<State>>, id: String) -> HlsResolveReply {
    let known = shared.borrow().hls.key_of(&id).cloned();
    let key = match known {
        Some(key) => key,
        None if shared.borrow().redis.is_some() => {
            let key = redis::load_hls(shared, &id).await.ok().flatten()?;
            shared.borrow_mut().hls.insert(&key, &id);
            key
        }
        None => return None,
    };
    let result = claim(shared, &key, None, None).await;
    let id = shared.borrow().hls.id_of(&key).cloned().unwrap_or_else(|| id.into());
    Some((key, id, result))
}

/// The WebRTC session of a STUN USERNAME with its origin: the local table, else (redis mode)
/// the username another proxy recorded, with the stream's pin.
async fn resolve_ice(shared: &Rc<RefCell<State>>, username: &str) -> Option<(IceSession, Arc<Origin>)> {
    let found = {
        let mut state = shared.borrow_mut();
        let found = state.ice.resolve(username, Instant::now()).cloned();
        found.map(|s| {
            let origin = state.registry.origin(&s.origin).cloned();
            (s, origin)
        })
    };
    match found {
        Some((session, origin)) => Some((session, origin?)),
        None if shared.borrow().redis.is_some() => {
            let (key, role) = redis::load_ice(shared, username).await?;
            let origin = claim(shared, &key, None, None).await.ok()?;
            let session = redis::ice_session(key, &origin, role);
            shared.borrow_mut().ice.bind(username.to_string(), session.clone(), Instant::now());
            Some((session, origin))
        }
        None => None,
    }
}
