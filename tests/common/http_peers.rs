//! Real HTTP peers for the HTTP stream proxy tests: nginx-rtmp with HLS served by its own
//! `http {}` block, and ffmpeg as an HTTP-FLV / HTTP-TS origin.
#![allow(dead_code)]
