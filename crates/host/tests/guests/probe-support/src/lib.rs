//! What every probe guest needs: its query parameters (`op`, `address`, …) and a JSON answer.

use spin_sdk::http::Response;
use std::collections::BTreeMap;

/// The query string's parameters, percent- and `+`-decoded (the last of a repeated name wins).
pub fn params(query: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

/// A JSON response.
pub fn respond(status: u16, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}
