//! Reading user credentials from request headers (original-behaviour.md §2.1), and keeping them
//! away from the user's machine (fix of §10 #20: the original forwarded the JWT cookie and the
//! Authorization header to the machine).

/// The cookie that carries the user's session JWT.
pub const SESSION_COOKIE: &str = "kiloclaw-auth";

/// The token of an `Authorization: Bearer <token>` header: the scheme is matched case-insensitively
/// and the token is everything after `bearer `. An empty token counts as absent.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?;
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return None;
    }
    let token = value[7..].trim();
    (!token.is_empty()).then_some(token)
}

/// The value of the first cookie called `name` in a `Cookie` header (`a=1; b=2`), without
/// surrounding double quotes. Empty values count as absent.
pub fn cookie_value<'a>(cookie_header: Option<&'a str>, name: &str) -> Option<&'a str> {
    cookie_header?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// The session token a request presents: the Bearer token, else the `kiloclaw-auth` cookie.
pub fn session_token<'a>(
    authorization: Option<&'a str>,
    cookie_header: Option<&'a str>,
) -> Option<&'a str> {
    bearer_token(authorization).or_else(|| cookie_value(cookie_header, SESSION_COOKIE))
}

/// The `Cookie` header without any cookie called `name`, keeping the others in order. `None` when
/// no cookie remains, so the caller drops the header entirely.
pub fn without_cookie(cookie_header: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = cookie_header
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            pair.split_once('=')
                .map_or(pair.trim(), |(key, _)| key.trim())
                != name
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_empty_tokens_are_absent() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bEaReR abc.def")), Some("abc.def"));
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bear")), None);
        assert_eq!(bearer_token(None), None);
        // Multi-byte input shorter than the scheme must not panic on a char boundary.
        assert_eq!(bearer_token(Some("béarer x")), None);
    }

    #[test]
    fn cookie_lookup() {
        let header = Some("theme=dark; kiloclaw-auth=tok.en; other=1");
        assert_eq!(cookie_value(header, SESSION_COOKIE), Some("tok.en"));
        assert_eq!(
            cookie_value(Some("kiloclaw-auth=\"q\""), SESSION_COOKIE),
            Some("q")
        );
        assert_eq!(cookie_value(Some("kiloclaw-auth="), SESSION_COOKIE), None);
        assert_eq!(cookie_value(Some("xkiloclaw-auth=1"), SESSION_COOKIE), None);
        assert_eq!(cookie_value(None, SESSION_COOKIE), None);
    }

    #[test]
    fn bearer_wins_over_cookie_and_empty_bearer_falls_back() {
        assert_eq!(
            session_token(Some("Bearer h"), Some("kiloclaw-auth=c")),
            Some("h")
        );
        assert_eq!(
            session_token(Some("Bearer "), Some("kiloclaw-auth=c")),
            Some("c")
        );
        assert_eq!(session_token(None, None), None);
    }

    #[test]
    fn only_the_session_cookie_is_removed() {
        assert_eq!(
            without_cookie("a=1; kiloclaw-auth=secret; b=2", SESSION_COOKIE).as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(without_cookie("kiloclaw-auth=secret", SESSION_COOKIE), None);
        assert_eq!(
            without_cookie("kiloclaw-auth=x;kiloclaw-auth=y", SESSION_COOKIE),
            None
        );
        assert_eq!(
            without_cookie("flag; a=1", SESSION_COOKIE).as_deref(),
            Some("flag; a=1")
        );
    }
}
