//! Request input parsing: JSON bodies, query strings and URL-encoded forms. Every failure is the
//! client's (400), never a 500 (fix of the original's habit of turning parse errors into 500s).

use serde_json::{Map, Value};

use super::errors::{EdgeError, FieldError};

/// Parses a JSON object body. Not JSON at all → `MalformedJson`; JSON but not an object →
/// `InvalidRequest` (as a schema failure would be).
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, EdgeError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(EdgeError::InvalidRequest(vec![FieldError {
            field: "(body)".to_owned(),
            message: "Expected a JSON object".to_owned(),
        }])),
        Err(_) => Err(EdgeError::MalformedJson),
    }
}

/// The `userId` field of a platform request body: a non-empty string.
pub fn user_id_field(object: &Map<String, Value>) -> Result<String, EdgeError> {
    let message = match object.get("userId") {
        Some(Value::String(id)) if !id.is_empty() => return Ok(id.clone()),
        Some(Value::String(_)) => "String must contain at least 1 character(s)",
        None | Some(Value::Null) => "Required",
        Some(_) => "Expected string",
    };
    Err(EdgeError::InvalidRequest(vec![FieldError {
        field: "userId".to_owned(),
        message: message.to_owned(),
    }]))
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space, `%XX` a byte); malformed
/// escapes are kept literally, invalid UTF-8 is replaced.
pub fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high * 16 + low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Parses `a=1&b=two` pairs (a query string or a URL-encoded form body), decoding both sides.
pub fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (form_decode(key), form_decode(value)),
            None => (form_decode(pair), String::new()),
        })
        .collect()
}

/// The first value of `name` in a query string (without the leading `?`).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_pairs(query?)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// The first value of `name` in a query string, required to be non-empty.
pub fn required_query_param(
    query: Option<&str>,
    name: &str,
    missing_message: &'static str,
) -> Result<String, EdgeError> {
    query_param(query, name)
        .filter(|value| !value.is_empty())
        .ok_or(EdgeError::MissingQuery(missing_message))
}

/// Splits a request target (`/path?query`) into path and query.
pub fn split_path_and_query(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies() {
        assert!(json_object(br#"{"userId":"u"}"#).is_ok());
        assert_eq!(
            json_object(b"{not json").err(),
            Some(EdgeError::MalformedJson)
        );
        assert_eq!(json_object(b"").err(), Some(EdgeError::MalformedJson));
        assert!(matches!(
            json_object(b"[1]"),
            Err(EdgeError::InvalidRequest(_))
        ));
    }

    #[test]
    fn user_id_must_be_a_non_empty_string() -> Result<(), EdgeError> {
        assert_eq!(user_id_field(&json_object(br#"{"userId":"u1"}"#)?)?, "u1");
        for body in [
            &br#"{}"#[..],
            br#"{"userId":""}"#,
            br#"{"userId":5}"#,
            br#"{"userId":null}"#,
        ] {
            let result = user_id_field(&json_object(body)?);
            assert!(
                matches!(result, Err(EdgeError::InvalidRequest(ref f)) if f[0].field == "userId")
            );
        }
        Ok(())
    }

    #[test]
    fn form_and_query_decoding() {
        assert_eq!(form_decode("a+b%20c%2Fd"), "a b c/d");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz%4"), "%zz%4");
        assert_eq!(form_decode("%C3%A9"), "é");
        assert_eq!(
            form_pairs("code=ab-12&userId=user%40x&flag"),
            vec![
                ("code".to_owned(), "ab-12".to_owned()),
                ("userId".to_owned(), "user@x".to_owned()),
                ("flag".to_owned(), String::new())
            ]
        );
        assert_eq!(
            query_param(Some("a=1&userId=u%201"), "userId").as_deref(),
            Some("u 1")
        );
        assert_eq!(query_param(None, "userId"), None);
        assert_eq!(
            required_query_param(
                Some("userId="),
                "userId",
                "userId query parameter is required"
            ),
            Err(EdgeError::MissingQuery(
                "userId query parameter is required"
            ))
        );
        assert_eq!(split_path_and_query("/a/b?x=1"), ("/a/b", Some("x=1")));
        assert_eq!(split_path_and_query("/a"), ("/a", None));
    }
}
