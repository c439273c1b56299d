//! HLS playlists (RFC 8216): adding the proxy's `spbhid` to every URI a player will request.
