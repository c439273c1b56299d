//! streamgate-load: RTMP load generator (being written).
fn main() {}
