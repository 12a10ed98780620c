//! Fly Machines API responses: `kiloclaw_core::fly::response::{check_status, json, lenient_json,
//! optional_json, empty}` with the response types `FlyClient` decodes (the same call → parser →
//! type table as `crates/core/src/fly/client.rs`), and the classification of `FlyError`.
//!
//! Input layout: bytes 0–1 the status (big-endian, mod 600), byte 2 the call, then a
//! `retry-after` value up to the first newline, a `fly-request-id` up to the second, and the body.
//!
//! Properties, beyond "never panics":
//! - a call succeeds only on a 2xx (a 404 of `get_app` is "absent"); an empty/whitespace body is
//!   the default value for the lenient calls;
//! - a decoded value survives serialize → parse unchanged (unknown fields included), which is what
//!   "read a machine, change one thing, update" relies on;
//! - an error keeps the status, call and request id; `NotFound` is exactly 404; transient is exactly
//!   408, 429 and 5xx; capacity only on 409/412/422 and name-taken only on 409/422; a 2xx body that
//!   does not decode is `InvalidResponse`, never transient and never "gone"; the kept body is at most
//!   4 KiB (plus an ellipsis) and `Retry-After` at most an hour.
#![no_main]

use std::fmt::Debug;
use std::time::Duration;

use kiloclaw_core::fly::response::{check_status, empty, json, lenient_json, optional_json};
use kiloclaw_core::fly::{
    App, AppList, CreateAppResponse, DeleteSecretResponse, ExecResponse, FlyError, FlyErrorKind,
    HttpResponse, IpAssignment, IpAssignmentList, Machine, SecretList, SetSecretResponse,
    StartMachineResponse, Volume, VolumeSnapshot, WaitResponse,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Clone, Copy)]
enum Parser {
    Json,
    Lenient,
    Optional,
    Empty,
}

/// Every call of `FlyClient`, with its parser.
const CALLS: [(&str, Parser); 24] = [
    ("create_machine", Parser::Json),
    ("get_machine", Parser::Json),
    ("list_machines", Parser::Json),
    ("update_machine", Parser::Json),
    ("start_machine", Parser::Lenient),
    ("stop_machine", Parser::Empty),
    ("destroy_machine", Parser::Empty),
    ("wait_machine", Parser::Lenient),
    ("exec", Parser::Lenient),
    ("list_volumes", Parser::Json),
    ("create_volume", Parser::Json),
    ("get_volume", Parser::Json),
    ("delete_volume", Parser::Empty),
    ("list_volume_snapshots", Parser::Json),
    ("create_app", Parser::Lenient),
    ("get_app", Parser::Optional),
    ("list_apps", Parser::Json),
    ("delete_app", Parser::Empty),
    ("allocate_ip", Parser::Lenient),
    ("list_ips", Parser::Json),
    ("set_secret", Parser::Lenient),
    ("delete_secret", Parser::Lenient),
    ("list_secrets", Parser::Json),
    ("get_app_json", Parser::Json),
];

fn check_error(context: &str, response: &HttpResponse, error: &FlyError) {
    let status = response.status;
    let _ = error.to_string();
    assert_eq!(error.context(), context);
    if response.is_success() {
        // A 2xx that did not decode.
        assert_eq!(error.kind(), FlyErrorKind::InvalidResponse);
        assert_eq!(error.http_status(), None);
        assert!(!error.is_transient() && !error.is_not_found() && !error.is_capacity());
    } else {
        assert_eq!(error.http_status(), Some(status));
        assert_eq!(error.request_id(), response.header("fly-request-id"));
        assert!(!error.message().is_empty());
        let kind = error.kind();
        assert_eq!(kind == FlyErrorKind::NotFound, status == 404);
        assert_eq!(error.is_not_found(), status == 404);
        assert_eq!(
            error.is_transient(),
            matches!(status, 408 | 429 | 500..=599),
            "status {status} classified as {kind:?}"
        );
        assert_eq!(error.is_rate_limited(), status == 429);
        if kind == FlyErrorKind::Capacity {
            assert!(matches!(status, 409 | 412 | 422));
        }
        if kind == FlyErrorKind::NameTaken {
            assert!(matches!(status, 409 | 422));
        }
        assert_eq!(error.is_capacity(), kind == FlyErrorKind::Capacity);
        if let Some(after) = error.retry_after() {
            assert!(after <= Duration::from_secs(3600));
        }
    }
    assert!(error.body().chars().count() <= 4097, "body kept in full");
}

/// A decoded value is unchanged by serialize → parse.
fn check_roundtrip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let bytes = serde_json::to_vec(value).expect("a decoded value serializes");
    let again: T = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "re-encoded value does not parse ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(
        &again,
        value,
        "value changed by a round trip: {}",
        String::from_utf8_lossy(&bytes)
    );
}

fn run<T: Serialize + DeserializeOwned + PartialEq + Debug + Default>(
    context: &str,
    parser: Parser,
    response: &HttpResponse,
) {
    let success = response.is_success();
    let blank = response.body.iter().all(u8::is_ascii_whitespace);
    match parser {
        Parser::Json => match json::<T>(context, response) {
            Ok(value) => {
                assert!(success);
                check_roundtrip(&value);
            }
            Err(error) => check_error(context, response, &error),
        },
        Parser::Lenient => match lenient_json::<T>(context, response) {
            Ok(value) => {
                assert!(success);
                if blank {
                    assert_eq!(value, T::default());
                }
                check_roundtrip(&value);
            }
            Err(error) => {
                assert!(!(success && blank), "an empty 2xx body was refused");
                check_error(context, response, &error);
            }
        },
        Parser::Optional => match optional_json::<T>(context, response) {
            Ok(None) => assert_eq!(response.status, 404),
            Ok(Some(value)) => {
                assert!(success);
                check_roundtrip(&value);
            }
            Err(error) => {
                assert_ne!(response.status, 404);
                check_error(context, response, &error);
            }
        },
        Parser::Empty => match empty(context, response) {
            Ok(()) => assert!(success),
            Err(error) => check_error(context, response, &error),
        },
    }
    assert_eq!(check_status(context, response).is_ok(), success);
}

/// Types without a `Default` (they have required fields) go through the strict parser only.
fn run_required<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    context: &str,
    response: &HttpResponse,
) {
    match json::<T>(context, response) {
        Ok(value) => {
            assert!(response.is_success());
            check_roundtrip(&value);
        }
        Err(error) => check_error(context, response, &error),
    }
}

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

fuzz_target!(|data: &[u8]| {
    let [high, low, call, rest @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*high, *low]) % 600;
    let (retry_after, rest) = split_line(rest);
    let (request_id, body) = split_line(rest);
    let mut headers = Vec::new();
    if !retry_after.is_empty() {
        headers.push((
            "Retry-After".to_owned(),
            String::from_utf8_lossy(retry_after).into_owned(),
        ));
    }
    if !request_id.is_empty() {
        headers.push((
            "fly-request-id".to_owned(),
            String::from_utf8_lossy(request_id).into_owned(),
        ));
    }
    let response = HttpResponse {
        status,
        headers,
        body: body.to_vec(),
    };
    let (context, parser) = CALLS[usize::from(*call) % CALLS.len()];
    match context {
        "create_machine" | "get_machine" | "update_machine" => {
            run_required::<Machine>(context, &response)
        }
        "list_machines" => run::<Vec<Machine>>(context, parser, &response),
        "start_machine" => run::<StartMachineResponse>(context, parser, &response),
        "wait_machine" => run::<WaitResponse>(context, parser, &response),
        "exec" => run::<ExecResponse>(context, parser, &response),
        "list_volumes" => run::<Vec<Volume>>(context, parser, &response),
        "create_volume" | "get_volume" => run_required::<Volume>(context, &response),
        "list_volume_snapshots" => run::<Vec<VolumeSnapshot>>(context, parser, &response),
        "create_app" => run::<CreateAppResponse>(context, parser, &response),
        "get_app" => run::<App>(context, parser, &response),
        "get_app_json" => run::<App>("get_app", parser, &response),
        "list_apps" => run::<AppList>(context, parser, &response),
        "allocate_ip" => run::<IpAssignment>(context, parser, &response),
        "list_ips" => run::<IpAssignmentList>(context, parser, &response),
        "set_secret" => run::<SetSecretResponse>(context, parser, &response),
        "delete_secret" => run::<DeleteSecretResponse>(context, parser, &response),
        "list_secrets" => run::<SecretList>(context, parser, &response),
        _ => run::<()>(context, parser, &response),
    }
});
