//! The request line as logged (original-behaviour.md §1.0 step 1): query values whose key or value
//! looks secret (`secret|token|key|password|auth|credential`, any case) become `[REDACTED]`.

use super::body::form_decode;

const SENSITIVE: &[&str] = &["secret", "token", "key", "password", "auth", "credential"];

fn looks_sensitive(text: &str) -> bool {
    let lower = form_decode(text).to_ascii_lowercase();
    SENSITIVE.iter().any(|word| lower.contains(word))
}

/// `?query` with sensitive values replaced, or an empty string when there is no query.
pub fn redacted_query(query: Option<&str>) -> String {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if looks_sensitive(key) || looks_sensitive(value) => {
                format!("{key}=[REDACTED]")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("?{}", pairs.join("&"))
}

/// `METHOD /path?redacted-query`, the text of the per-request log line.
pub fn request_line(method: &str, path: &str, query: Option<&str>) -> String {
    format!("{method} {path}{}", redacted_query(query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_keys_and_values_are_hidden() {
        assert_eq!(
            redacted_query(Some(
                "userId=u1&token=abc&apiKey=k&x=my-secret-thing&page=2"
            )),
            "?userId=u1&token=[REDACTED]&apiKey=[REDACTED]&x=[REDACTED]&page=2"
        );
        assert_eq!(
            redacted_query(Some("AUTH%5Fcode=1")),
            "?AUTH%5Fcode=[REDACTED]"
        );
        assert_eq!(redacted_query(None), "");
        assert_eq!(redacted_query(Some("")), "");
        assert_eq!(
            request_line("GET", "/a", Some("password=p")),
            "GET /a?password=[REDACTED]"
        );
    }
}
