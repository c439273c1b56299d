//! HLS playlists (RFC 8216): adding the proxy's `spbhid` to every URI a player will request.
//!
//! The proxy fetches a playlist from the origin it pinned a stream to and hands it to the player
//! with [`add_query_param`], so that every request the player makes from it (media segments,
//! variant playlists, init sections, keys, parts, preload hints, ...) carries the origin's id as
//! the first query parameter and is routed back to the same origin.
//!
//! Two kinds of places hold a URI:
//! - URI lines: any line that is not blank and does not start with `#` (a media segment, or the
//!   variant after `#EXT-X-STREAM-INF`);
//! - the `URI="..."` attribute of any tag (`#EXT-X-MAP`, `#EXT-X-KEY`, `#EXT-X-MEDIA`,
//!   `#EXT-X-I-FRAME-STREAM-INF`, `#EXT-X-SESSION-KEY`, `#EXT-X-PART`, `#EXT-X-PRELOAD-HINT`,
//!   `#EXT-X-RENDITION-REPORT`, ...). The attribute list is parsed (RFC 8216 §4.2), so a
//!   quoted value holding commas or `URI=` and an attribute such as `XURI` are left alone.
//!
//! Everything else is copied byte for byte: line endings (LF or CRLF, per line), the presence
//! of a final newline, a UTF-8 BOM, blank lines, comments and tags without a `URI` attribute.
//! Absolute URIs (`https://...`, `skd://...`, `//host/...`) point elsewhere and are not
//! touched. The rewrite is one pass over the lines into a buffer sized up front (after UTF-8
//! validation and a vectorized newline count); the bytes between insertions are copied in runs.

use std::borrow::Cow;

/// Why a body could not be rewritten as a playlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaylistError {
    /// The body starts like a playlist but is not valid UTF-8 (RFC 8216 §4.1 requires it).
    #[error("playlist is not UTF-8")]
    NotUtf8,
    /// The body (after an optional BOM and whitespace) does not start with the `#EXTM3U` tag.
    #[error("not an HLS playlist: it does not start with #EXTM3U")]
    NotAPlaylist,
}

/// Adds `name=value` as the first query parameter of every relative URI in `playlist`
/// (URI lines and `URI="..."` attributes of tags). Returns the new playlist.
///
/// Each URI is rewritten as by [`add_to_uri`]; all other bytes are kept. `name` and `value`
/// are inserted as given, so they must already be safe in a query (no `&`, `#`, `"`, spaces
/// or line breaks).
///
/// # Errors
/// [`PlaylistError::NotAPlaylist`] if the body, after an optional UTF-8 BOM and leading
/// whitespace, does not start with `#EXTM3U`; [`PlaylistError::NotUtf8`] if it does but is not
/// valid UTF-8.
pub fn add_query_param(playlist: &[u8], name: &str, value: &str) -> Result<Vec<u8>, PlaylistError> {
    // The BOM and whitespace before `#EXTM3U` are copied as they are, never read as a URI.
    let head = extm3u_offset(playlist).ok_or(PlaylistError::NotAPlaylist)?;
    let text = std::str::from_utf8(playlist).map_err(|_| PlaylistError::NotUtf8)?;
    let bytes = text.as_bytes();

    // Every insertion is a slice of this: `?name=value` (no query yet), `name=value&` (in
    // front of a query) or `name=value` (after a bare `?`).
    let insertion = format!("?{name}={value}&");
    // At most every other line holds a URI in the usual playlists (a tag, then its URI line);
    // counting lines is a vectorized scan, far cheaper than growing the buffer mid-way.
    let lines = count_newlines(bytes) + 1;
    let mut out = String::with_capacity(text.len() + (lines / 2 + 1) * insertion.len());
    // `text[copied..]` is not yet in `out`: what is not inserted is copied in runs, and a
    // URI's own bytes are never copied separately.
    let mut copied = 0;
    let mut edit = |out: &mut String, from: usize, to: usize| {
        let uri = &text[from..to];
        match plan(uri, name) {
            Edit::Keep => {}
            Edit::Insert { at, question, ampersand } => {
                out.push_str(&text[copied..from + at]);
                out.push_str(&insertion[usize::from(!question)..insertion.len() - usize::from(!ampersand)]);
                copied = from + at;
            }
            Edit::Rewrite => {
                out.push_str(&text[copied..from]);
                rewrite(out, uri, name, value);
                copied = to;
            }
        }
    };
    let mut next = head;
    while next < bytes.len() {
        let mut start = next;
        let mut end = find_byte(&bytes[start..], b'\n').map_or(bytes.len(), |i| start + i);
        next = end + 1;
        while start < end && bytes[start].is_ascii_whitespace() {
            start += 1;
        }
        if start == end {
            continue;
        }
        if bytes[start] != b'#' {
            while bytes[end - 1].is_ascii_whitespace() {
                end -= 1;
            }
            edit(&mut out, start, end);
        } else if bytes[start..end].starts_with(b"#EXT")
            && let Some(colon) = find_byte(&bytes[start..end], b':')
        {
            let base = start + colon + 1;
            for_each_uri_attribute(&bytes[base..end], |from, to| edit(&mut out, base + from, base + to));
        }
    }
    out.push_str(&text[copied..]);
    Ok(out.into_bytes())
}

/// Adds `name=value` as the first query parameter of one URI reference.
///
/// `a.ts` -> `a.ts?name=value`, `a.ts?x=1` -> `a.ts?name=value&x=1`, `a.ts?` ->
/// `a.ts?name=value`, `a.ts#f` -> `a.ts?name=value#f`. An existing `name` parameter has its
/// value replaced in place (any further `name` parameters are dropped, so there is exactly
/// one). Empty parameters (`a.ts?&x=1`, `x=1&&y=2`) are dropped: the result never holds `&&`
/// or `?&`. Absolute URIs (with a scheme like `https:` or `skd:`, or starting with `//`) and
/// the empty reference are returned unchanged (borrowed).
///
/// ```
/// use streamgate::codec::m3u8::add_to_uri;
/// assert_eq!(add_to_uri("x-12.ts?hls_ctx=k", "spbhid", "o1"), "x-12.ts?spbhid=o1&hls_ctx=k");
/// assert_eq!(add_to_uri("a.ts?x=1&spbhid=old", "spbhid", "o1"), "a.ts?x=1&spbhid=o1");
/// assert_eq!(add_to_uri("https://cdn.example.com/a.ts", "spbhid", "o1"), "https://cdn.example.com/a.ts");
/// ```
pub fn add_to_uri<'a>(uri: &'a str, name: &str, value: &str) -> Cow<'a, str> {
    let mut out = String::with_capacity(uri.len() + name.len() + value.len() + 2);
    match plan(uri, name) {
        Edit::Keep => return Cow::Borrowed(uri),
        Edit::Insert { at, question, ampersand } => {
            out.push_str(&uri[..at]);
            if question {
                out.push('?');
            }
            out.push_str(name);
            out.push('=');
            out.push_str(value);
            if ampersand {
                out.push('&');
            }
            out.push_str(&uri[at..]);
        }
        Edit::Rewrite => rewrite(&mut out, uri, name, value),
    }
    Cow::Owned(out)
}

/// How `name=value` gets into one URI.
#[derive(Debug, PartialEq, Eq)]
enum Edit {
    /// Not at all: the URI is absolute or empty.
    Keep,
    /// Inserted at byte `at`, after a `?` if `question` and before a `&` if `ampersand`.
    Insert { at: usize, question: bool, ampersand: bool },
    /// The URI is written anew by [`rewrite`]: its query already has a `name` parameter or an
    /// empty one.
    Rewrite,
}

/// Decides the [`Edit`] for `uri`, reading it once.
fn plan(uri: &str, name: &str) -> Edit {
    let bytes = uri.as_bytes();
    if bytes.is_empty() {
        return Edit::Keep;
    }
    // The query is between the first `?` and the first `#` (a `?` after `#` is the fragment's);
    // a scheme ends before either.
    let boundary = find_either(bytes, b'?', b'#');
    if is_absolute(&bytes[..boundary.unwrap_or(bytes.len())]) {
        return Edit::Keep;
    }
    match boundary {
        None => Edit::Insert { at: bytes.len(), question: true, ampersand: false },
        Some(hash) if bytes[hash] == b'#' => Edit::Insert { at: hash, question: true, ampersand: false },
        Some(question) => {
            let at = question + 1;
            let hash = find_byte(&bytes[at..], b'#').map_or(bytes.len(), |i| at + i);
            let query = &bytes[at..hash];
            if query.is_empty() {
                Edit::Insert { at, question: false, ampersand: false }
            } else if plain_query(query, name.as_bytes()) {
                Edit::Insert { at, question: false, ampersand: true }
            } else {
                Edit::Rewrite
            }
        }
    }
}

/// Where the `#EXTM3U` tag (followed by whitespace or the end) starts if `body` is nothing but
/// an optional UTF-8 BOM and ASCII whitespace before it.
fn extm3u_offset(body: &[u8]) -> Option<usize> {
    let rest = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body).trim_ascii_start();
    let after = rest.strip_prefix(b"#EXTM3U")?;
    after.first().is_none_or(u8::is_ascii_whitespace).then_some(body.len() - rest.len())
}

/// Whether the part of a URI before its query and fragment makes it absolute or network-path:
/// a scheme (`ALPHA *(ALPHA / DIGIT / "+" / "-" / ".") ":"`, RFC 3986 §3.1) or a leading `//`.
fn is_absolute(path: &[u8]) -> bool {
    if path.starts_with(b"//") {
        return true;
    }
    if !path.first().is_some_and(u8::is_ascii_alphabetic) {
        return false;
    }
    match find_either(path, b':', b'/') {
        Some(colon) if path[colon] == b':' => {
            path[..colon].iter().all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        }
        _ => false,
    }
}

/// The key of a query parameter: the text before the first `=`, or all of it.
fn param_key(param: &str) -> &str {
    param.split_once('=').map_or(param, |(key, _)| key)
}

/// Appends `uri` with its query rebuilt to `out`: `name=value` in place of the first `name`
/// parameter (or first of all if there is none), further `name` parameters and empty ones
/// dropped. The rare case of [`plan`], so it favours plainness over speed.
fn rewrite(out: &mut String, uri: &str, name: &str, value: &str) {
    let (rest, fragment) = uri.find('#').map_or((uri, ""), |i| uri.split_at(i));
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    out.push_str(path);
    out.push('?');
    let present = query.split('&').any(|p| param_key(p) == name);
    let mut first = true;
    if !present {
        out.push_str(name);
        out.push('=');
        out.push_str(value);
        first = false;
    }
    let mut replaced = false;
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let ours = param_key(param) == name;
        if ours && replaced {
            continue;
        }
        if !first {
            out.push('&');
        }
        first = false;
        if ours {
            out.push_str(name);
            out.push('=');
            out.push_str(value);
            replaced = true;
        } else {
            out.push_str(param);
        }
    }
    out.push_str(fragment);
}

/// Whether the non-empty `query` has no empty parameter and no parameter named `name`, so
/// that ours can simply go in front of it.
fn plain_query(query: &[u8], name: &[u8]) -> bool {
    let mut start = 0;
    loop {
        let end = find_byte(&query[start..], b'&').map_or(query.len(), |i| start + i);
        let param = &query[start..end];
        let ours = param.first() == name.first()
            && param.starts_with(name)
            && param.get(name.len()).is_none_or(|&b| b == b'=');
        if param.is_empty() || ours {
            return false;
        }
        if end == query.len() {
            return true;
        }
        start = end + 1;
    }
}

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The next eight bytes of `hay` from `at` as a little-endian word.
fn word_at(hay: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&hay[at..at + 8]);
    u64::from_le_bytes(word)
}

/// A high bit in each byte of `word` that equals the byte repeated in `pattern`. Bytes above
/// the first match may be flagged wrongly, so only the lowest flag is to be trusted.
fn zero_bytes(word: u64, pattern: u64) -> u64 {
    let x = word ^ pattern;
    x.wrapping_sub(LOW_BITS) & !x & HIGH_BITS
}

/// The index of the first `needle` in `hay`, eight bytes at a time: playlist lines are too short
/// for `memchr`'s setup to pay off, and a byte loop costs several instructions a byte.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    let pattern = LOW_BITS * u64::from(needle);
    let mut i = 0;
    while i + 8 <= hay.len() {
        let found = zero_bytes(word_at(hay, i), pattern);
        if found != 0 {
            return Some(i + found.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    hay[i..].iter().position(|&b| b == needle).map(|p| i + p)
}

/// The index of the first `a` or `b` in `hay` (see [`find_byte`]).
fn find_either(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    let (pattern_a, pattern_b) = (LOW_BITS * u64::from(a), LOW_BITS * u64::from(b));
    let mut i = 0;
    while i + 8 <= hay.len() {
        let word = word_at(hay, i);
        let found = zero_bytes(word, pattern_a) | zero_bytes(word, pattern_b);
        if found != 0 {
            return Some(i + found.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    hay[i..].iter().position(|&c| c == a || c == b).map(|p| i + p)
}

/// The number of `\n` in `bytes`, counted in byte lanes (which the compiler vectorizes).
fn count_newlines(bytes: &[u8]) -> usize {
    bytes.chunks(255).map(|chunk| usize::from(chunk.iter().map(|&b| u8::from(b == b'\n')).sum::<u8>())).sum()
}

/// Calls `f(from, to)` with the byte range of the value (inside the quotes) of every quoted
/// `URI` attribute in the attribute list `attrs` (RFC 8216 §4.2: `NAME=value` pairs separated
/// by commas, where a value is a quoted string, which may hold commas and `=`, or runs to the
/// next comma). Stops at the first thing that is not an attribute list, such as an `#EXTINF`
/// duration and title. Spaces and tabs around names and values are tolerated.
fn for_each_uri_attribute(attrs: &[u8], mut f: impl FnMut(usize, usize)) {
    let blank = |b: u8| b == b' ' || b == b'\t';
    let n = attrs.len();
    let mut i = 0;
    loop {
        while i < n && blank(attrs[i]) {
            i += 1;
        }
        let name_start = i;
        while i < n && (attrs[i].is_ascii_alphanumeric() || attrs[i] == b'-' || attrs[i] == b'_') {
            i += 1;
        }
        let name_end = i;
        while i < n && blank(attrs[i]) {
            i += 1;
        }
        if name_start == name_end || i == n || attrs[i] != b'=' {
            return;
        }
        i += 1;
        while i < n && blank(attrs[i]) {
            i += 1;
        }
        if i < n && attrs[i] == b'"' {
            let from = i + 1;
            let Some(len) = attrs[from..].iter().position(|&b| b == b'"') else {
                return;
            };
            let to = from + len;
            if &attrs[name_start..name_end] == b"URI" {
                f(from, to);
            }
            i = to + 1;
        } else {
            while i < n && attrs[i] != b',' {
                i += 1;
            }
        }
        while i < n && blank(attrs[i]) {
            i += 1;
        }
        if i == n || attrs[i] != b',' {
            return;
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "spbhid";
    const ID: &str = "o7f3";

    fn rewrite(playlist: &str) -> String {
        String::from_utf8(add_query_param(playlist.as_bytes(), NAME, ID).unwrap()).unwrap()
    }

    /// nginx-rtmp's live media playlist (`hls on; hls_fragment 2s;`), after a publisher
    /// reconnect: `#EXT-X-DISCONTINUITY` before the new segments.
    const NGINX_RTMP_LIVE: &str = "#EXTM3U\n\
#EXT-X-VERSION:3\n\
#EXT-X-MEDIA-SEQUENCE:12\n\
#EXT-X-TARGETDURATION:3\n\
#EXTINF:2.000,\n\
x-12.ts\n\
#EXTINF:2.000,\n\
x-13.ts\n\
#EXTINF:2.000,\n\
x-14.ts\n\
#EXT-X-DISCONTINUITY\n\
#EXTINF:2.083,\n\
x-15.ts\n\
#EXTINF:1.958,\n\
x-16.ts\n";

    #[test]
    fn nginx_rtmp_live_playlist() {
        let out = rewrite(NGINX_RTMP_LIVE);
        let expected = NGINX_RTMP_LIVE.replace(".ts\n", ".ts?spbhid=o7f3\n");
        assert_eq!(out, expected);
        assert_eq!(out.matches("?spbhid=o7f3\n").count(), 5);
        // Tags, durations and the discontinuity are untouched.
        assert!(out.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:12\n#EXT-X-TARGETDURATION:3\n"));
        assert!(out.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.083,\nx-15.ts?spbhid=o7f3\n"));
    }

    /// What SRS answers for `/live/livestream.m3u8` without `hls_ctx`: a one-variant master
    /// playlist pointing back at the same path with a fresh `hls_ctx`.
    const SRS_MASTER: &str =
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,AVERAGE-BANDWIDTH=1\n/live/livestream.m3u8?hls_ctx=8k2n7x1q\n";

    #[test]
    fn srs_master_playlist() {
        assert_eq!(
            rewrite(SRS_MASTER),
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,AVERAGE-BANDWIDTH=1\n\
/live/livestream.m3u8?spbhid=o7f3&hls_ctx=8k2n7x1q\n"
        );
    }

    /// SRS's media playlist for a request with `hls_ctx`: every segment carries it.
    const SRS_MEDIA: &str = "#EXTM3U\n\
#EXT-X-VERSION:3\n\
#EXT-X-MEDIA-SEQUENCE:12\n\
#EXT-X-TARGETDURATION:10\n\
#EXTINF:10.005, no desc\n\
livestream-12.ts?hls_ctx=8k2n7x1q\n\
#EXTINF:9.995, no desc\n\
livestream-13.ts?hls_ctx=8k2n7x1q\n\
#EXTINF:10.000, no desc\n\
livestream-14.ts?hls_ctx=8k2n7x1q\n";

    #[test]
    fn srs_media_playlist_with_hls_ctx() {
        let out = rewrite(SRS_MEDIA);
        assert_eq!(out, SRS_MEDIA.replace(".ts?hls_ctx=", ".ts?spbhid=o7f3&hls_ctx="));
        assert!(out.contains("\nlivestream-12.ts?spbhid=o7f3&hls_ctx=8k2n7x1q\n"));
        assert!(out.contains("#EXTINF:10.005, no desc\n"));
        assert!(!out.contains("&&"));
        assert!(!out.contains("?&"));
        assert_eq!(out.matches("spbhid=").count(), 3);
    }

    /// fMP4 (CMAF) media playlist: init section, keys (one absolute FairPlay `skd:` key left
    /// alone), `.m4s` segments, an absolute-path segment and a byte range.
    const FMP4: &str = "#EXTM3U\n\
#EXT-X-VERSION:7\n\
#EXT-X-TARGETDURATION:4\n\
#EXT-X-MEDIA-SEQUENCE:100\n\
#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://k\",KEYFORMAT=\"com.apple.streamingkeydelivery\",KEYFORMATVERSIONS=\"1\"\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"keys/k1.bin\",IV=0x1234\n\
#EXTINF:4.000,\n\
seg-100.m4s\n\
#EXTINF:4.000,\n\
seg-101.m4s\n\
#EXT-X-BYTERANGE:1000@0\n\
#EXTINF:3.200,\n\
/live/x/seg-102.m4s\n";

    #[test]
    fn fmp4_playlist_with_map_and_keys() {
        let out = rewrite(FMP4);
        let expected = FMP4
            .replace("URI=\"init.mp4\"", "URI=\"init.mp4?spbhid=o7f3\"")
            .replace("URI=\"keys/k1.bin\"", "URI=\"keys/k1.bin?spbhid=o7f3\"")
            .replace(".m4s\n", ".m4s?spbhid=o7f3\n");
        assert_eq!(out, expected);
        assert!(out.contains("#EXT-X-MAP:URI=\"init.mp4?spbhid=o7f3\"\n"));
        assert!(out.contains(
            "#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://k\",KEYFORMAT=\"com.apple.streamingkeydelivery\",\
KEYFORMATVERSIONS=\"1\"\n"
        ));
        assert!(out.contains("#EXT-X-KEY:METHOD=AES-128,URI=\"keys/k1.bin?spbhid=o7f3\",IV=0x1234\n"));
        assert!(out.contains("\n/live/x/seg-102.m4s?spbhid=o7f3\n"));
        assert_eq!(out.matches("spbhid=").count(), 5);
    }

    /// Master playlist: an audio rendition (a comma inside the quoted NAME), two variants
    /// whose CODECS hold a comma, an I-frame playlist, a session key and a CDN variant.
    const MASTER: &str = "#EXTM3U\n\
#EXT-X-VERSION:6\n\
#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"keys/session.key\"\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en,main\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,URI=\"audio/en.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=2500000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aud\"\n\
720p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\",AUDIO=\"aud\"\n\
360p/index.m3u8?token=abc\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=200000,CODECS=\"avc1.64001f\",URI=\"iframe.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=5000000,CODECS=\"avc1.640028,mp4a.40.2\"\n\
https://cdn.example.com/v.m3u8\n";

    #[test]
    fn master_playlist_with_renditions() {
        let out = rewrite(MASTER);
        let expected = "#EXTM3U\n\
#EXT-X-VERSION:6\n\
#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"keys/session.key?spbhid=o7f3\"\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en,main\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,\
URI=\"audio/en.m3u8?spbhid=o7f3\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=2500000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aud\"\n\
720p/index.m3u8?spbhid=o7f3\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\",AUDIO=\"aud\"\n\
360p/index.m3u8?spbhid=o7f3&token=abc\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=200000,CODECS=\"avc1.64001f\",URI=\"iframe.m3u8?spbhid=o7f3\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=5000000,CODECS=\"avc1.640028,mp4a.40.2\"\n\
https://cdn.example.com/v.m3u8\n";
        assert_eq!(out, expected);
    }

    /// Low-latency HLS: parts, a preload hint and a rendition report all carry URIs.
    const LL_HLS: &str = "#EXTM3U\n\
#EXT-X-TARGETDURATION:4\n\
#EXT-X-VERSION:9\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,CAN-SKIP-UNTIL=24.0\n\
#EXT-X-PART-INF:PART-TARGET=0.33334\n\
#EXT-X-MEDIA-SEQUENCE:266\n\
#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXTINF:4.00008,\n\
fileSequence266.mp4\n\
#EXT-X-PART:DURATION=0.33334,URI=\"filePart267.0.mp4\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=0.33334,URI=\"filePart267.1.mp4\"\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"filePart267.2.mp4\"\n\
#EXT-X-RENDITION-REPORT:URI=\"../1M/waitForMSN.php\",LAST-MSN=273,LAST-PART=2\n";

    #[test]
    fn low_latency_tags() {
        let out = rewrite(LL_HLS);
        for uri in ["init.mp4", "filePart267.0.mp4", "filePart267.1.mp4", "filePart267.2.mp4", "../1M/waitForMSN.php"] {
            assert!(out.contains(&format!("URI=\"{uri}?spbhid=o7f3\"")), "{uri}: {out}");
        }
        assert!(out.contains("\nfileSequence266.mp4?spbhid=o7f3\n"));
        assert!(out.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,CAN-SKIP-UNTIL=24.0\n"));
        assert_eq!(out.matches("spbhid=").count(), 6);
        assert_eq!(out.replace("?spbhid=o7f3", ""), LL_HLS);
    }

    #[test]
    fn crlf_line_endings_are_kept_per_line() {
        let input = "#EXTM3U\r\n#EXT-X-MAP:URI=\"init.mp4\"\r\n#EXTINF:2.000,\r\nx-1.ts\r\n#EXTINF:2.000,\nx-2.ts\n";
        assert_eq!(
            rewrite(input),
            "#EXTM3U\r\n#EXT-X-MAP:URI=\"init.mp4?spbhid=o7f3\"\r\n#EXTINF:2.000,\r\nx-1.ts?spbhid=o7f3\r\n\
#EXTINF:2.000,\nx-2.ts?spbhid=o7f3\n"
        );
    }

    #[test]
    fn missing_final_newline() {
        assert_eq!(rewrite("#EXTM3U\n#EXTINF:2.000,\nx-1.ts"), "#EXTM3U\n#EXTINF:2.000,\nx-1.ts?spbhid=o7f3");
        assert_eq!(rewrite("#EXTM3U\r\n#EXTINF:2,\r\nx-1.ts?a=b"), "#EXTM3U\r\n#EXTINF:2,\r\nx-1.ts?spbhid=o7f3&a=b");
        assert_eq!(rewrite("#EXTM3U"), "#EXTM3U");
        assert_eq!(rewrite("#EXTM3U\n#EXT-X-MAP:URI=\"i.mp4\""), "#EXTM3U\n#EXT-X-MAP:URI=\"i.mp4?spbhid=o7f3\"");
    }

    #[test]
    fn bom_whitespace_blank_lines_and_comments_are_kept() {
        let input = "\u{feff} \n#EXTM3U\n\n# a comment with x.ts\n  \t\n#EXTINF:2.000,\n  x-1.ts \t\r\n";
        assert_eq!(
            rewrite(input),
            "\u{feff} \n#EXTM3U\n\n# a comment with x.ts\n  \t\n#EXTINF:2.000,\n  x-1.ts?spbhid=o7f3 \t\r\n"
        );
    }

    #[test]
    fn existing_param_is_replaced() {
        let input = "#EXTM3U\n#EXTINF:2,\nx-1.ts?spbhid=old\n#EXTINF:2,\nx-2.ts?a=1&spbhid=old&b=2\n\
#EXT-X-MAP:URI=\"init.mp4?spbhid=old\"\n";
        assert_eq!(
            rewrite(input),
            "#EXTM3U\n#EXTINF:2,\nx-1.ts?spbhid=o7f3\n#EXTINF:2,\nx-2.ts?a=1&spbhid=o7f3&b=2\n\
#EXT-X-MAP:URI=\"init.mp4?spbhid=o7f3\"\n"
        );
        assert_eq!(add_to_uri("a.ts?spbhid=old", NAME, ID), "a.ts?spbhid=o7f3");
        assert_eq!(add_to_uri("a.ts?x=1&spbhid=old", NAME, ID), "a.ts?x=1&spbhid=o7f3");
        assert_eq!(add_to_uri("a.ts?spbhid", NAME, ID), "a.ts?spbhid=o7f3");
        assert_eq!(add_to_uri("a.ts?spbhid=a&x=1&spbhid=b", NAME, ID), "a.ts?spbhid=o7f3&x=1");
        // Another parameter whose name merely starts with ours is not ours.
        assert_eq!(add_to_uri("a.ts?spbhidx=1", NAME, ID), "a.ts?spbhid=o7f3&spbhidx=1");
        assert_eq!(add_to_uri("a.ts?x=spbhid", NAME, ID), "a.ts?spbhid=o7f3&x=spbhid");
    }

    #[test]
    fn add_to_uri_shapes() {
        assert_eq!(add_to_uri("a.ts", NAME, ID), "a.ts?spbhid=o7f3");
        assert_eq!(add_to_uri("a.ts?x=1", NAME, ID), "a.ts?spbhid=o7f3&x=1");
        assert_eq!(add_to_uri("a.ts?", NAME, ID), "a.ts?spbhid=o7f3");
        assert_eq!(add_to_uri("a.ts#f", NAME, ID), "a.ts?spbhid=o7f3#f");
        assert_eq!(add_to_uri("a.ts?#f", NAME, ID), "a.ts?spbhid=o7f3#f");
        assert_eq!(add_to_uri("a.ts?x=1#f?g", NAME, ID), "a.ts?spbhid=o7f3&x=1#f?g");
        assert_eq!(add_to_uri("a.ts?x=a?b", NAME, ID), "a.ts?spbhid=o7f3&x=a?b");
        assert_eq!(add_to_uri("/live/x-1.ts", NAME, ID), "/live/x-1.ts?spbhid=o7f3");
        assert_eq!(add_to_uri("../v/x-1.ts", NAME, ID), "../v/x-1.ts?spbhid=o7f3");
        assert_eq!(add_to_uri("a:b/c.ts", NAME, ID), "a:b/c.ts", "a scheme");
        assert_eq!(add_to_uri("./a:b.ts", NAME, ID), "./a:b.ts?spbhid=o7f3");
        assert_eq!(add_to_uri("1a:b.ts", NAME, ID), "1a:b.ts?spbhid=o7f3", "a scheme starts with a letter");
    }

    #[test]
    fn empty_params_never_make_double_ampersands() {
        assert_eq!(add_to_uri("a.ts?&x=1", NAME, ID), "a.ts?spbhid=o7f3&x=1");
        assert_eq!(add_to_uri("a.ts?x=1&&y=2&", NAME, ID), "a.ts?spbhid=o7f3&x=1&y=2");
        assert_eq!(add_to_uri("a.ts?&", NAME, ID), "a.ts?spbhid=o7f3");
        assert_eq!(add_to_uri("a.ts?&spbhid=old&&x=1", NAME, ID), "a.ts?spbhid=o7f3&x=1");
        for uri in ["a.ts?&x=1", "a.ts?x=1&&y=2&", "a.ts?&", "a.ts?&&", "a.ts?&spbhid=1&&x", "a.ts?x&#f"] {
            let out = add_to_uri(uri, NAME, ID);
            assert!(!out.contains("&&") && !out.contains("?&") && !out.contains("&#"), "{uri} -> {out}");
        }
    }

    #[test]
    fn absolute_uris_are_borrowed_unchanged() {
        for uri in [
            "https://cdn.example.com/v.m3u8",
            "http://o:8080/live/x-1.ts?a=b",
            "skd://k",
            "data:text/plain;base64,AAAA",
            "//cdn.example.com/x.ts",
            "HTTPS://CDN/x.ts",
            "",
        ] {
            assert!(matches!(add_to_uri(uri, NAME, ID), Cow::Borrowed(u) if u == uri), "{uri}");
        }
        let input = "#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"https://keys.example.com/k\"\n#EXTINF:2,\n\
https://cdn.example.com/x-1.ts\n#EXTINF:2,\n//cdn.example.com/x-2.ts\n";
        assert_eq!(rewrite(input), input);
    }

    #[test]
    fn not_a_playlist() {
        for body in [&b""[..], b"<html>#EXTM3U</html>", b"EXTM3U\nx.ts\n", b"#EXTM3UX\n", b"\x47\x40\x00\x10\xff\xfe"] {
            assert_eq!(add_query_param(body, NAME, ID), Err(PlaylistError::NotAPlaylist), "{body:?}");
        }
        assert_eq!(add_query_param(b"\xEF\xBB\xBF\r\n\t#EXTM3U\n", NAME, ID).unwrap(), b"\xEF\xBB\xBF\r\n\t#EXTM3U\n");
        assert_eq!(add_query_param(b"#EXTM3U \n", NAME, ID).unwrap(), b"#EXTM3U \n");
    }

    #[test]
    fn invalid_utf8() {
        assert_eq!(add_query_param(b"#EXTM3U\n#EXTINF:2,\nx-\xff.ts\n", NAME, ID), Err(PlaylistError::NotUtf8));
        assert_eq!(add_query_param(b"#EXTM3U\n\xc3\n", NAME, ID), Err(PlaylistError::NotUtf8));
    }

    #[test]
    fn utf8_uris_are_rewritten() {
        assert_eq!(
            rewrite("#EXTM3U\n#EXTINF:2,Übertragung\nséquence-1.ts\n"),
            "#EXTM3U\n#EXTINF:2,Übertragung\nséquence-1.ts?spbhid=o7f3\n"
        );
    }

    #[test]
    fn only_the_uri_attribute_is_rewritten() {
        let input = "#EXTM3U\n\
#EXT-X-MAP:XURI=\"init.mp4\"\n\
#EXT-X-KEY:METHOD=AES-128,KEYFORMAT=\"a,URI=x\",URI=\"k.bin\"\n\
#EX-NOTES:URI=\"n.txt\"\n\
#EXT-X-DATERANGE:ID=\"ad\",START-DATE=\"2024-01-01T00:00:00Z\",X-ASSET-URI=\"ad.m3u8\",X-COMMENT=\"URI=y\"\n\
#EXT-X-MAP:URI=init.mp4\n\
#EXT-X-MEDIA:TYPE=AUDIO,NAME=\"URI=fake.m3u8\",GROUP-ID=\"a\"\n\
#EXTINF:2.000,URI=\"title.ts\"\n\
#EXTINF:2.000,title\n\
#EXT-X-MAP : URI = \"spaced.mp4\" , BYTERANGE=\"10@0\"\n\
x-1.ts\n";
        let out = rewrite(input);
        let expected = input
            .replace("URI=\"k.bin\"", "URI=\"k.bin?spbhid=o7f3\"")
            .replace("\"spaced.mp4\"", "\"spaced.mp4?spbhid=o7f3\"")
            .replace("\nx-1.ts\n", "\nx-1.ts?spbhid=o7f3\n");
        assert_eq!(out, expected);
        assert_eq!(out.matches("spbhid").count(), 3);
    }

    #[test]
    fn quoted_value_containing_uri_is_not_touched() {
        let input = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"x,URI=\",URI=\"a/en.m3u8\"\n\
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"s\",NAME=\"URI=\"\n";
        assert_eq!(
            rewrite(input),
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"x,URI=\",URI=\"a/en.m3u8?spbhid=o7f3\"\n\
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"s\",NAME=\"URI=\"\n"
        );
    }

    #[test]
    fn malformed_attribute_lists_are_left_alone() {
        for line in ["#EXT-X-MAP:URI=\"init.mp4", "#EXT-X-MAP:", "#EXT-X-MAP:=\"x\"", "#EXT-X-MAP:URI"] {
            let input = format!("#EXTM3U\n{line}\n");
            assert_eq!(rewrite(&input), input);
        }
        // A URI attribute before the damage is still found.
        assert_eq!(
            rewrite("#EXTM3U\n#EXT-X-KEY:URI=\"k\",IV=\"0x1\n"),
            "#EXTM3U\n#EXT-X-KEY:URI=\"k?spbhid=o7f3\",IV=\"0x1\n"
        );
    }

    #[test]
    fn playlist_and_single_uri_agree() {
        for uri in [
            "a.ts",
            "a.ts?x=1",
            "a.ts?",
            "a.ts#f",
            "a.ts?#f",
            "a.ts?x=1#f",
            "a.ts?spbhid=old&x=1",
            "a.ts?x=1&&y",
            "/live/a.ts",
            "https://h/a.ts",
            "//h/a.ts",
            "?x=1",
        ] {
            let single = add_to_uri(uri, NAME, ID);
            assert_eq!(rewrite(&format!("#EXTM3U\n{uri}\n")), format!("#EXTM3U\n{single}\n"), "{uri}");
            assert_eq!(
                rewrite(&format!("#EXTM3U\n#EXT-X-MAP:URI=\"{uri}\",BYTERANGE=\"1@0\"\n")),
                format!("#EXTM3U\n#EXT-X-MAP:URI=\"{single}\",BYTERANGE=\"1@0\"\n"),
                "{uri}"
            );
        }
    }

    mod property {
        use super::super::*;
        use proptest::prelude::*;

        /// A relative segment reference: optional directories, a name, and maybe a query of
        /// `key=value` pairs (keys of at most 5 letters, so never `spbhid`).
        fn segment() -> impl Strategy<Value = (String, String)> {
            (
                "(/?[a-z0-9]{1,6}/){0,2}[a-zA-Z0-9_-]{1,12}\\.(ts|m4s|aac|m3u8)",
                prop::option::of(prop::collection::vec("[a-z]{1,5}=[A-Za-z0-9._~%-]{0,8}", 1..4)),
            )
                .prop_map(|(path, query)| {
                    let uri = match query {
                        Some(params) => format!("{path}?{}", params.join("&")),
                        None => path.clone(),
                    };
                    (path, uri)
                })
        }

        /// Any short mix of path text and URI delimiters, our parameter's name included.
        fn any_uri() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                "[a-z0-9.]{1,4}",
                Just("/".to_string()),
                Just("//".to_string()),
                Just("?".to_string()),
                Just("&".to_string()),
                Just("=".to_string()),
                Just("#".to_string()),
                Just(":".to_string()),
                Just("spbhid".to_string()),
            ];
            prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// For any URI: it is left alone only if empty or absolute; otherwise the path and
            /// fragment are kept, the query holds exactly one `spbhid=ID` and no empty parameter,
            /// the other parameters keep their order, and a playlist rewrites it the same way.
            #[test]
            fn any_uri_gets_exactly_one_param(uri in any_uri()) {
                let out = add_to_uri(&uri, "spbhid", "ID");
                let split = |u: &str| -> (String, Option<String>, String) {
                    let (rest, fragment) = u.find('#').map_or((u, ""), |i| u.split_at(i));
                    match rest.split_once('?') {
                        Some((path, query)) => (path.to_string(), Some(query.to_string()), fragment.to_string()),
                        None => (rest.to_string(), None, fragment.to_string()),
                    }
                };
                let (path, query, fragment) = split(&uri);
                if matches!(out, Cow::Borrowed(_)) {
                    prop_assert!(uri.is_empty() || path.starts_with("//") || path.contains(':'), "{}", uri);
                } else {
                    let (out_path, out_query, out_fragment) = split(&out);
                    prop_assert_eq!(&out_path, &path);
                    prop_assert_eq!(&out_fragment, &fragment);
                    let out_query = out_query.unwrap();
                    let params: Vec<&str> = out_query.split('&').collect();
                    prop_assert!(params.iter().all(|p| !p.is_empty()), "{} -> {}", uri, out);
                    prop_assert_eq!(params.iter().filter(|p| param_key(p) == "spbhid").count(), 1);
                    prop_assert!(params.contains(&"spbhid=ID"));
                    let others = |q: &str| -> Vec<String> {
                        q.split('&').filter(|p| !p.is_empty() && param_key(p) != "spbhid").map(String::from).collect()
                    };
                    prop_assert_eq!(others(&out_query), others(query.as_deref().unwrap_or("")));
                }
                if !uri.is_empty() && !uri.starts_with('#') {
                    let playlist = add_query_param(format!("#EXTM3U\n{uri}\n").as_bytes(), "spbhid", "ID").unwrap();
                    prop_assert_eq!(String::from_utf8(playlist).unwrap(), format!("#EXTM3U\n{out}\n"));
                }
                let tag = add_query_param(format!("#EXTM3U\n#EXT-X-MAP:URI=\"{uri}\"\n").as_bytes(), "spbhid", "ID");
                prop_assert_eq!(String::from_utf8(tag.unwrap()).unwrap(), format!("#EXTM3U\n#EXT-X-MAP:URI=\"{out}\"\n"));
            }

            /// Every URI line gets exactly one `spbhid` right after the path and nothing else
            /// changes: removing what was inserted gives the input back byte for byte.
            #[test]
            fn rewrite_only_inserts(
                segments in prop::collection::vec((segment(), any::<bool>(), any::<bool>()), 0..20),
                final_newline in any::<bool>(),
                id in "[A-Za-z0-9]{1,16}",
            ) {
                let mut input = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:3\n");
                let mut paths = Vec::new();
                for ((path, uri), crlf, with_map) in &segments {
                    let eol = if *crlf { "\r\n" } else { "\n" };
                    if *with_map {
                        input.push_str(&format!("#EXT-X-MAP:URI=\"{uri}\",BYTERANGE=\"100@0\"{eol}"));
                    }
                    input.push_str(&format!("#EXTINF:2.000,{eol}{uri}{eol}"));
                    paths.push(path.clone());
                }
                if !final_newline && input.ends_with('\n') {
                    input.truncate(input.trim_end_matches(['\r', '\n']).len());
                }
                let out = String::from_utf8(add_query_param(input.as_bytes(), "spbhid", &id).unwrap()).unwrap();

                let uri_lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
                prop_assert_eq!(uri_lines.len(), paths.len());
                for (line, path) in uri_lines.iter().zip(&paths) {
                    prop_assert!(line.starts_with(&format!("{path}?spbhid={id}")), "{} vs {}", line, path);
                    prop_assert_eq!(line.matches("spbhid=").count(), 1);
                }
                prop_assert!(!out.contains("&&") && !out.contains("?&"));
                let back = out.replace(&format!("spbhid={id}&"), "").replace(&format!("?spbhid={id}"), "");
                prop_assert_eq!(back, input);
            }
        }
    }
}
