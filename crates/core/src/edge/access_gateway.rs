//! The access gateway's pages and cookie (original-behaviour.md §1.1): the access-code form, the
//! "accepted" page, the redirect into the Control UI, and the session cookie. Every interpolated
//! value is HTML-escaped.
//!
//! The redirect fragment carries both the gateway token and the direct gateway URL
//! (`#token=…&gatewayUrl=wss://…`): WebSockets cannot pass through Spin (DESIGN decision 6), so the
//! Control UI connects to the user's Fly app directly and authenticates with the token.

use super::credentials::SESSION_COOKIE;

/// Session cookie lifetime, as the JWT the access gateway mints (24 h).
pub const SESSION_MAX_AGE_SECONDS: u64 = 86_400;

/// Error shown when the form is submitted incomplete.
pub const MISSING_FIELDS: &str = "Access code and user ID are required.";
/// Error shown when the server cannot redeem codes.
pub const SERVER_CONFIGURATION: &str = "Server configuration error.";
/// Error shown for an unknown, used or expired code.
pub const INVALID_CODE: &str =
    "Invalid or expired access code. Please generate a new one from your dashboard.";
/// Error shown when the code's user no longer exists.
pub const USER_NOT_FOUND: &str = "User not found.";

/// Escapes `& < > " '` for HTML text and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a URL fragment parameter value (everything but unreserved characters).
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Where the browser goes once it holds a session: the Control UI at `/`, with the gateway token and
/// the direct gateway URL in the fragment (never sent to any server). Without a token: plain `/`.
pub fn control_ui_location(gateway_token: Option<&str>, gateway_url: Option<&str>) -> String {
    match (gateway_token, gateway_url) {
        (Some(token), Some(url)) => {
            format!(
                "/#token={}&gatewayUrl={}",
                encode_component(token),
                encode_component(url)
            )
        }
        (Some(token), None) => format!("/#token={}", encode_component(token)),
        (None, _) => "/".to_owned(),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}\
input,button{font-size:1rem;padding:.5rem}.error{color:#b00020}";

/// The access-code form; `error` is shown above it.
pub fn form_page(user_id: &str, error: Option<&str>) -> String {
    let error_html = error
        .map(|message| format!("<p class=\"error\">{}</p>", escape_html(message)))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>KiloClaw Access</title><style>{STYLE}</style></head><body>\
<h1>KiloClaw Access</h1>{error_html}\
<p>Enter the access code shown in your dashboard.</p>\
<form method=\"POST\" action=\"/kilo-access-gateway\">\
<input type=\"hidden\" name=\"userId\" value=\"{user_id}\">\
<input type=\"text\" name=\"code\" placeholder=\"XXXXX-XXXXX\" maxlength=\"11\" autocomplete=\"off\" required autofocus>\
<button type=\"submit\">Continue</button></form></body></html>\n",
        user_id = escape_html(user_id),
    )
}

/// The "accepted" page: redirects to `location` by meta refresh (2 s) and script (1 s), with a link
/// for browsers without script.
pub fn accepted_page(location: &str) -> String {
    let attr = escape_html(location);
    let script_literal = serde_json::Value::String(location.to_owned())
        .to_string()
        .replace('<', "\\u003c");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"2;url={attr}\"><title>KiloClaw Access</title>\
<style>{STYLE}</style></head><body><h1>Access code accepted</h1><p>Loading KiloClaw Control UI…</p>\
<noscript><p><a href=\"{attr}\">Continue</a></p></noscript>\
<script>setTimeout(function(){{window.location.replace({script_literal});}},1000);</script>\
</body></html>\n"
    )
}

/// The `Set-Cookie` value for a freshly minted session JWT. `Secure` unless the deployment is
/// `development` (the original's later rule).
pub fn session_cookie(token: &str, secure: bool) -> String {
    let secure_attr = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_MAX_AGE_SECONDS}{secure_attr}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_all_five_characters() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_form_escapes_the_user_id_and_error() {
        let page = form_page("\"><script>alert(1)</script>", Some("<b>bad</b>"));
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));
        assert!(page.contains("&lt;b&gt;bad&lt;/b&gt;"));
        assert!(page.contains("maxlength=\"11\""));
        assert!(page.contains("<title>KiloClaw Access</title>"));
    }

    #[test]
    fn locations_and_accepted_page() {
        assert_eq!(control_ui_location(None, None), "/");
        assert_eq!(control_ui_location(Some("ab12"), None), "/#token=ab12");
        assert_eq!(
            control_ui_location(Some("ab12"), Some("wss://acct-1.fly.dev")),
            "/#token=ab12&gatewayUrl=wss%3A%2F%2Facct-1.fly.dev"
        );
        let page = accepted_page("/#token=a&gatewayUrl=x</script>");
        assert!(page.contains("content=\"2;url=/#token=a&amp;gatewayUrl=x&lt;/script&gt;\""));
        assert!(!page.contains("x</script>"));
    }

    #[test]
    fn cookie_attributes() {
        assert_eq!(
            session_cookie("t", true),
            "kiloclaw-auth=t; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400; Secure"
        );
        assert!(!session_cookie("t", false).contains("Secure"));
    }
}
