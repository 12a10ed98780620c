//! `docs/openapi.json` as a contract. Every reply the end-to-end suite reads through
//! [`super::system::System::send`] is checked here: its method and path must be a documented
//! operation, its status a documented response of that operation, and its body valid against the
//! response's JSON Schema (2020-12, with the document's `$ref`s). So each run of the suite replays
//! all of its requests against the document, and a route, status or field that drifts from it
//! fails the test that saw it.
//!
//! Conventions the checker assumes of the document: a trailing `{param}` path segment matches the
//! rest of the path (the proxy's catch-all `/{proxyPath}`), a literal path beats a templated one;
//! `default` stands for any status the user's machine may answer; a response without `content`
//! has an empty body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

/// Statuses the host itself answers with an empty body before any component runs (413 over
/// `Content-Length`, 400 for a target it cannot rebuild, 500 for a trap), documented on responses
/// that otherwise carry the router's JSON.
const HOST_EMPTY_BODY_STATUSES: [u16; 3] = [400, 413, 500];

const DOCUMENT_URI: &str = "urn:kiloclaw:openapi";

struct ApiDocument {
    document: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

fn document() -> anyhow::Result<&'static ApiDocument> {
    static DOCUMENT: OnceLock<Result<ApiDocument, String>> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            let path = kiloclaw_e2e::workspace_root().join("docs/openapi.json");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let document: Value =
                serde_json::from_str(&text).map_err(|e| format!("docs/openapi.json: {e}"))?;
            Ok(ApiDocument {
                document,
                validators: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
        .map_err(|message| anyhow::anyhow!("{message}"))
}

/// Checks one exchange against the document.
pub fn check(
    method: &str,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    body: &str,
) -> anyhow::Result<()> {
    let api = document()?;
    let (template, item) = path_item(&api.document, path)
        .with_context(|| format!("{method} {path}: no path of docs/openapi.json matches"))?;
    let operation = item
        .get(method.to_ascii_lowercase())
        .with_context(|| format!("{method} {path}: {template} documents no {method}"))?;
    let responses = operation["responses"]
        .as_object()
        .with_context(|| format!("{method} {template}: no responses"))?;
    let code = status.to_string();
    let (key, pointer_base) = if responses.contains_key(&code) {
        (code.clone(), response_pointer(template, method, &code))
    } else if responses.contains_key("default") {
        (
            "default".to_owned(),
            response_pointer(template, method, "default"),
        )
    } else {
        bail!(
            "{method} {path} ({template}): status {status} is not documented (documented: {:?}); body {body}",
            responses.keys().collect::<Vec<_>>()
        );
    };
    if key == "default" {
        // Whatever the user's machine answered, passed through.
        return Ok(());
    }
    let (response, pointer) = resolve(&api.document, &responses[&key], pointer_base)?;
    let Some(content) = response.get("content") else {
        ensure!(
            body.is_empty(),
            "{method} {path}: {status} is documented without a body, got {body}"
        );
        return Ok(());
    };
    if body.is_empty() {
        ensure!(
            HOST_EMPTY_BODY_STATUSES.contains(&status),
            "{method} {path}: {status} must carry a body"
        );
        return Ok(());
    }
    // The media type the reply names must be one the response documents (parameters aside).
    let essence = |media: &str| {
        media
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    let media = essence(content_type.unwrap_or_default());
    let documented = content
        .as_object()
        .into_iter()
        .flatten()
        .find(|(key, _)| essence(key) == media);
    let Some((media_key, _)) = documented else {
        bail!(
            "{method} {path}: {status} with content type {media:?} is not documented (documented: {:?})",
            content.as_object().map(|c| c.keys().collect::<Vec<_>>())
        );
    };
    if media != "application/json" {
        return Ok(());
    }
    let value: Value = serde_json::from_str(body)
        .with_context(|| format!("{method} {path}: {status} body is not JSON: {body}"))?;
    let escaped = media_key.replace('~', "~0").replace('/', "~1");
    let validator = api.validator(&format!("{pointer}/content/{escaped}/schema"))?;
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    ensure!(
        errors.is_empty(),
        "{method} {path} ({template}) {status}: the body does not match docs/openapi.json: {}\nbody: {body}",
        errors.join("; ")
    );
    Ok(())
}

impl ApiDocument {
    /// The validator for the schema at `pointer` in the document, built once.
    fn validator(&self, pointer: &str) -> anyhow::Result<Arc<jsonschema::Validator>> {
        let mut validators = self
            .validators
            .lock()
            .map_err(|_| anyhow::anyhow!("validator cache poisoned"))?;
        if let Some(validator) = validators.get(pointer) {
            return Ok(validator.clone());
        }
        let resource = jsonschema::Draft::Draft202012.create_resource(self.document.clone());
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .with_resource(DOCUMENT_URI, resource)
            .build(&serde_json::json!({ "$ref": format!("{DOCUMENT_URI}#{pointer}") }))
            .map_err(|e| anyhow::anyhow!("schema at {pointer}: {e}"))?;
        let validator = Arc::new(validator);
        validators.insert(pointer.to_owned(), validator.clone());
        Ok(validator)
    }
}

/// The JSON pointer of an operation's response.
fn response_pointer(template: &str, method: &str, key: &str) -> String {
    format!(
        "/paths/{}/{}/responses/{key}",
        template.replace('~', "~0").replace('/', "~1"),
        method.to_ascii_lowercase()
    )
}

/// Follows a response's `$ref` (to `#/components/responses/…`), returning it and its pointer.
fn resolve<'a>(
    document: &'a Value,
    response: &'a Value,
    pointer: String,
) -> anyhow::Result<(&'a Value, String)> {
    match response.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let target = reference
                .strip_prefix('#')
                .with_context(|| format!("only local references: {reference}"))?;
            let resolved = document
                .pointer(target)
                .with_context(|| format!("dangling reference {reference}"))?;
            Ok((resolved, target.to_owned()))
        }
        None => Ok((response, pointer)),
    }
}

/// The best-matching path of the document: a literal match, else the template with the fewest
/// parameters; a trailing parameter takes the rest of the path.
fn path_item<'a>(document: &'a Value, path: &str) -> Option<(&'a str, &'a Value)> {
    let paths = document["paths"].as_object()?;
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    paths
        .iter()
        .filter_map(|(template, item)| {
            let parts: Vec<&str> = template.split('/').skip(1).collect();
            let parameters = parts.iter().filter(|p| p.starts_with('{')).count();
            matches(&parts, &segments).then_some((parameters, template.as_str(), item))
        })
        .min_by_key(|(parameters, template, _)| (*parameters, std::cmp::Reverse(template.len())))
        .map(|(_, template, item)| (template, item))
}

fn matches(template: &[&str], path: &[&str]) -> bool {
    let is_parameter = |part: &str| part.starts_with('{') && part.ends_with('}');
    match (template.split_last(), path.len()) {
        (None, 0) => true,
        (None, _) => false,
        (Some((last, init)), n) if is_parameter(last) && n > init.len() => {
            // A trailing parameter: every earlier part matches one segment, the last takes the rest
            // (at least one non-empty segment).
            init.iter()
                .zip(path)
                .all(|(part, segment)| is_parameter(part) || part == segment)
                && path[init.len()..].iter().any(|s| !s.is_empty())
        }
        (Some(_), n) if n == template.len() => template
            .iter()
            .zip(path)
            .all(|(part, segment)| (is_parameter(part) && !segment.is_empty()) || part == segment),
        _ => false,
    }
}

#[test]
fn the_checker_rejects_what_the_document_does_not_allow() -> anyhow::Result<()> {
    let json = Some("application/json");
    let health = r#"{"status":"ok","service":"kiloclaw","gateway_port":18789}"#;
    check("GET", "/health", 200, json, health)?;
    check(
        "POST",
        "/api/platform/provision",
        201,
        json,
        r#"{"sandboxId":"dXNlcg"}"#,
    )?;
    // A body of the wrong shape or type, a missing body, an undocumented status or method.
    ensure!(
        check(
            "POST",
            "/api/platform/provision",
            201,
            json,
            r#"{"sandboxId":7}"#
        )
        .is_err()
    );
    ensure!(check("GET", "/health", 200, json, r#"{"status":"fine"}"#).is_err());
    ensure!(check("GET", "/health", 200, Some("text/plain"), "ok").is_err());
    ensure!(check("GET", "/health", 200, json, "").is_err());
    ensure!(check("POST", "/api/platform/provision", 418, json, "{}").is_err());
    ensure!(check("BREW", "/api/platform/provision", 200, json, "{}").is_err());
    // The host's own empty 413 is allowed where the router would answer JSON.
    check("POST", "/api/platform/provision", 413, None, "")?;
    // The proxy takes any path and any status the machine answers.
    check(
        "GET",
        "/some/deep/path",
        299,
        Some("text/plain"),
        "anything",
    )?;
    Ok(())
}
