//! What this build is, as every API that says so answers it.

use serde_json::json;

use crate::codec::http::Response;

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit it was built from (`build.rs`).
pub const COMMIT: &str = env!("STREAMGATE_COMMIT");

/// `GET /api/v1/versions` on the System API and the HTTP API listener:
/// `{"signature":"streamgate","version":..,"commit":..}`.
pub fn versions() -> Response {
    Response::json(200, &json!({ "signature": "streamgate", "version": VERSION, "commit": COMMIT }))
}
