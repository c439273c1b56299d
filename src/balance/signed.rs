//! Signed URLs: `?token=HEX&expires=UNIX_SECONDS`, where HEX is the lowercase hex of
//! HMAC-SHA256 with the role's secret over `APP/STREAM:EXPIRES`. `APP/STREAM` is the stream key
//! without its vhost, so one URL signs the stream for every protocol and host name it is
//! reached by. Pure: the time is passed in. The token is compared in constant time.
//!
//! Signing from a shell: `printf '%s' "live/cam:1767225600" | openssl dgst -sha256 -hmac SECRET`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::balance::StreamKey;
use crate::balance::stream_key::query_param;

/// Why a signed URL was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("no signed URL (token= and expires= missing from the query)")]
    Missing,
    #[error("expires= is not a number of seconds")]
    BadExpiry,
    #[error("the signed URL expired at {0}")]
    Expired(u64),
    #[error("token= is not hex")]
    BadToken,
    #[error("token= does not match the stream and expiry")]
    Mismatch,
}

/// What is signed: `APP/STREAM:EXPIRES`.
pub fn message(key: &StreamKey, expires: u64) -> String {
    let path = key.as_str().split_once('/').map_or(key.as_str(), |(_, path)| path);
    format!("{path}:{expires}")
}

fn mac(secret: &str, key: &StreamKey, expires: u64) -> Hmac<Sha256> {
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(message(key, expires).as_bytes());
    mac
}

/// The token for `key` until `expires`.
pub fn sign(secret: &str, key: &StreamKey, expires: u64) -> String {
    mac(secret, key, expires).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the `token`/`expires` of `query` (without `?`) for `key` at `now` (Unix seconds).
pub fn verify(secret: &str, key: &StreamKey, query: &str, now: u64) -> Result<(), SignError> {
    let (token, expires) = match (query_param(Some(query), "token"), query_param(Some(query), "expires")) {
        (Some(token), Some(expires)) => (token, expires),
        _ => return Err(SignError::Missing),
    };
    let expires: u64 = expires.trim().parse().map_err(|_| SignError::BadExpiry)?;
    if expires < now {
        return Err(SignError::Expired(expires));
    }
    let token = hex(&token).ok_or(SignError::BadToken)?;
    mac(secret, key, expires).verify_slice(&token).map_err(|_| SignError::Mismatch)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().as_bytes();
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    s.chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(url: &str) -> StreamKey {
        StreamKey::from_url(url).unwrap()
    }

    #[test]
    fn a_signed_url_is_accepted_until_it_expires() {
        let k = key("rtmp://example.com/live/cam");
        let token = sign("s3cret", &k, 1000);
        let query = format!("token={token}&expires=1000&other=1");
        assert_eq!(verify("s3cret", &k, &query, 999), Ok(()));
        assert_eq!(verify("s3cret", &k, &query, 1000), Ok(()));
        assert_eq!(verify("s3cret", &k, &query, 1001), Err(SignError::Expired(1000)));
        assert_eq!(verify("other", &k, &query, 999), Err(SignError::Mismatch), "another secret");
        assert_eq!(verify("s3cret", &key("rtmp://example.com/live/cam2"), &query, 999), Err(SignError::Mismatch));
        let later = query.replace("expires=1000", "expires=2000");
        assert_eq!(verify("s3cret", &k, &later, 999), Err(SignError::Mismatch), "expiry is signed");
    }

    #[test]
    fn the_vhost_is_not_signed_and_openssl_agrees() {
        let (a, b) = (key("rtmp://127.0.0.1/live/cam"), key("rtmp://cdn.example.com/live/cam"));
        assert_eq!(message(&a, 5), "live/cam:5");
        assert_eq!(sign("k", &a, 5), sign("k", &b, 5));
        // printf '%s' "live/livestream:1767225600" | openssl dgst -sha256 -hmac secret
        let known = sign("secret", &key("rtmp://h/live/livestream"), 1_767_225_600);
        assert_eq!(known, "b9e602ed2f3ca9c5ae7e687d1219375d1e661418800ac805925eb74055410d8c");
        assert_eq!(
            verify("secret", &key("rtmp://h/live/livestream"), &format!("token={known}&expires=1767225600"), 0),
            Ok(())
        );
    }

    #[test]
    fn malformed_queries_are_refused_without_panic() {
        let k = key("rtmp://h/live/a");
        assert_eq!(verify("s", &k, "", 0), Err(SignError::Missing));
        assert_eq!(verify("s", &k, "token=ab", 0), Err(SignError::Missing));
        assert_eq!(verify("s", &k, "token=ab&expires=x", 0), Err(SignError::BadExpiry));
        assert_eq!(verify("s", &k, "token=zz&expires=9", 0), Err(SignError::BadToken));
        assert_eq!(verify("s", &k, "token=abc&expires=9", 0), Err(SignError::BadToken));
        assert_eq!(verify("s", &k, "token=%E2%82&expires=9", 0), Err(SignError::BadToken));
        assert_eq!(verify("s", &k, "token=00&expires=9", 0), Err(SignError::Mismatch));
    }
}
