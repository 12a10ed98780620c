//! Credentials and user JWTs: `kiloclaw_core::edge::credentials` (Bearer header, cookies) and
//! `kiloclaw_core::auth::JwtVerifier`.
//!
//! Inputs are arbitrary header strings and tokens, plus structured near-valid tokens signed with the
//! verifier's own secret (fuzzed header and claims), so the fuzzer gets past the signature and into
//! the claim checks. Properties, beyond "never panics":
//! - an accepted token is three base64url segments whose header says HS256 and whose third segment
//!   is the HMAC-SHA256 of the first two under the verifier's secret;
//! - its payload carries exactly the claims the verifier returns: string `kiloUserId`, number
//!   `version == 3`, numeric `exp` after `now`, no `nbf` after `now`, a string or null pepper, and
//!   no `env` that contradicts the deployment's;
//! - a minted token always verifies with the claims it was minted with (before it expires);
//! - `without_cookie` removes every cookie of that name and keeps every other cookie's value.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use kiloclaw_core::auth::{JwtVerifier, MintRequest, VerifiedClaims, mint_token};
use kiloclaw_core::edge::credentials::{
    SESSION_COOKIE, bearer_token, cookie_value, session_token, without_cookie,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use sha2::Sha256;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const OTHER_SECRET: &str = "fedcba9876543210fedcba9876543210";

#[derive(Debug, Arbitrary)]
enum Input {
    /// A token whose header and payload bytes are fuzzed but signed with HS256 under a chosen key.
    Signed {
        header: Bytes,
        payload: Bytes,
        right_key: bool,
        tamper: Option<u8>,
        now: u64,
        worker_env: Option<String>,
    },
    /// A JSON payload with fuzzed claims, signed by jsonwebtoken.
    Claims {
        claims: Claims,
        alg: Alg,
        right_key: bool,
        now: u64,
        worker_env: Option<String>,
    },
    /// `mint_token` followed by `verify`.
    Mint {
        user_id: String,
        pepper: Option<String>,
        env: Option<String>,
        issued_at_s: u32,
        ttl_s: u32,
        elapsed_s: u32,
        worker_env: Option<String>,
    },
}

/// Either arbitrary bytes or a JSON value built from fuzzed fields.
#[derive(Debug, Arbitrary)]
enum Bytes {
    Raw(Vec<u8>),
    Header {
        alg: Alg,
        typ: Option<String>,
        extra: Option<(String, Field)>,
    },
    Claims(Claims),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Alg {
    Hs256,
    Hs384,
    Hs512,
    None,
    Lower,
    Other,
}

#[derive(Debug, Arbitrary)]
struct Claims {
    user_id: Field,
    version: Field,
    exp: Field,
    nbf: Field,
    pepper: Field,
    env: Field,
    iat: Field,
    extra: Option<(String, Field)>,
}

/// A claim value: absent, or a JSON value of a fuzzed kind.
#[derive(Debug, Arbitrary)]
enum Field {
    Absent,
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Three,
    ThreeFloat,
    Str(String),
    Array(Vec<u8>),
    Object,
    /// A time near the verification time (so expiry and not-before both go either way).
    Near(i16),
}

impl Field {
    fn value(&self, now: u64) -> Option<Value> {
        Some(match self {
            Field::Absent => return None,
            Field::Null => Value::Null,
            Field::Bool(b) => Value::Bool(*b),
            Field::Int(i) => json!(i),
            Field::Uint(u) => json!(u),
            Field::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Field::Three => json!(3),
            Field::ThreeFloat => json!(3.0),
            Field::Str(s) => Value::String(s.clone()),
            Field::Array(items) => json!(items),
            Field::Object => json!({"a": 1}),
            Field::Near(delta) => json!(now.saturating_add_signed(i64::from(*delta))),
        })
    }
}

impl Claims {
    fn json(&self, now: u64) -> Value {
        let mut map = Map::new();
        let fields = [
            ("kiloUserId", &self.user_id),
            ("version", &self.version),
            ("exp", &self.exp),
            ("nbf", &self.nbf),
            ("apiTokenPepper", &self.pepper),
            ("env", &self.env),
            ("iat", &self.iat),
        ];
        for (name, field) in fields {
            if let Some(value) = field.value(now) {
                map.insert(name.to_owned(), value);
            }
        }
        if let Some((name, field)) = &self.extra
            && let Some(value) = field.value(now)
        {
            map.insert(name.clone(), value);
        }
        Value::Object(map)
    }
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
            Alg::None => "none",
            Alg::Lower => "hs256",
            Alg::Other => "RS256",
        }
    }
}

impl Bytes {
    fn bytes(&self, now: u64) -> Vec<u8> {
        match self {
            Bytes::Raw(bytes) => bytes.clone(),
            Bytes::Header { alg, typ, extra } => {
                let mut map = Map::new();
                map.insert("alg".into(), json!(alg.name()));
                if let Some(typ) = typ {
                    map.insert("typ".into(), json!(typ));
                }
                if let Some((name, field)) = extra
                    && let Some(value) = field.value(now)
                {
                    map.insert(name.clone(), value);
                }
                Value::Object(map).to_string().into_bytes()
            }
            Bytes::Claims(claims) => claims.json(now).to_string().into_bytes(),
        }
    }
}

fn hs256(secret: &str, input: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

fn verifier(worker_env: Option<String>) -> JwtVerifier {
    JwtVerifier::new(SECRET, worker_env).expect("the secret is long enough")
}

/// What an accepted token must be, checked from its bytes without jsonwebtoken.
fn check_accepted(token: &str, now: u64, worker_env: Option<&str>, claims: &VerifiedClaims) {
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(
        segments.len(),
        3,
        "accepted token {token:?} is not three segments"
    );
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(segments[0])
            .expect("accepted header is base64url"),
    )
    .expect("accepted header is JSON");
    assert_eq!(
        header["alg"], "HS256",
        "accepted a token not signed with HS256"
    );
    let signed = format!("{}.{}", segments[0], segments[1]);
    let signature = URL_SAFE_NO_PAD
        .decode(segments[2])
        .expect("accepted signature is base64url");
    assert_eq!(
        signature,
        hs256(SECRET, signed.as_bytes()),
        "accepted a token whose signature is not the HMAC under the secret"
    );
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(segments[1])
            .expect("accepted payload is base64url"),
    )
    .expect("accepted payload is JSON");
    assert_eq!(
        payload["kiloUserId"].as_str(),
        Some(claims.user_id.as_str())
    );
    assert_eq!(
        payload["version"].as_i64(),
        Some(3),
        "accepted version {}",
        payload["version"]
    );
    let exp = payload["exp"].as_f64().expect("accepted exp is a number");
    assert!(
        exp > now as f64,
        "accepted an expired token (exp {exp}, now {now})"
    );
    assert!(claims.expires_at_s >= now && claims.expires_at_s as f64 <= exp);
    if let Some(nbf) = payload.get("nbf") {
        let nbf = nbf.as_f64().expect("accepted nbf is a number");
        assert!(nbf <= now as f64, "accepted a token before its nbf");
    }
    match payload.get("apiTokenPepper") {
        None | Some(Value::Null) => assert_eq!(claims.api_token_pepper, None),
        Some(Value::String(p)) => assert_eq!(claims.api_token_pepper.as_deref(), Some(p.as_str())),
        Some(other) => panic!("accepted pepper {other}"),
    }
    assert_eq!(claims.env.as_deref(), payload["env"].as_str());
    if let (Some(token_env), Some(worker_env)) = (claims.env.as_deref(), worker_env)
        && !worker_env.is_empty()
    {
        assert_eq!(
            token_env, worker_env,
            "accepted a token for another environment"
        );
    }
}

fn verify_and_check(token: &str, now: u64, worker_env: Option<String>) -> bool {
    let verifier = verifier(worker_env.clone());
    match verifier.verify(token, now) {
        Ok(claims) => {
            check_accepted(token, now, worker_env.as_deref(), &claims);
            true
        }
        Err(error) => {
            // Every refusal renders as a 401 message.
            let _ = error.to_string();
            false
        }
    }
}

fn check_headers(authorization: Option<&str>, cookie: Option<&str>, name: &str, now: u64) {
    if let Some(token) = bearer_token(authorization) {
        let header = authorization.expect("a token comes from a header");
        assert!(header.len() >= 7 && header[..7].eq_ignore_ascii_case("bearer "));
        assert!(!token.is_empty() && token == token.trim());
        assert!(header[7..].contains(token));
    }
    for cookie_name in [name, SESSION_COOKIE] {
        if let Some(value) = cookie_value(cookie, cookie_name) {
            assert!(!value.is_empty() && !value.contains(';'));
        }
        if let Some(header) = cookie {
            let rest = without_cookie(header, cookie_name);
            assert_eq!(
                cookie_value(rest.as_deref(), cookie_name),
                None,
                "without_cookie({header:?}, {cookie_name:?}) = {rest:?} still has it"
            );
            // Every other cookie keeps the value it had.
            for pair in header.split(';') {
                if let Some((key, _)) = pair.trim().split_once('=') {
                    let key = key.trim();
                    if key != cookie_name {
                        assert_eq!(
                            cookie_value(rest.as_deref(), key),
                            cookie_value(Some(header), key),
                            "without_cookie({header:?}, {cookie_name:?}) changed cookie {key:?}"
                        );
                    }
                }
            }
        }
    }
    let session = session_token(authorization, cookie);
    assert_eq!(
        session,
        bearer_token(authorization).or_else(|| cookie_value(cookie, SESSION_COOKIE))
    );
    if let Some(token) = session {
        verify_and_check(token, now, None);
    }
}

/// Verification time of the plain-text modes (seeds minted with `kiloclaw token` around then).
const NOW: u64 = 1_700_000_000;

// The first byte picks the input's form, so hand-written seeds are plain text after one byte:
// 0 a token (verified at [`NOW`], with and without a deployment env), 1 `Authorization` and
// `Cookie` headers and a cookie name on three lines, anything else a structured [`Input`].
fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = match mode {
        0 => {
            let token = String::from_utf8_lossy(rest);
            verify_and_check(&token, NOW, None);
            verify_and_check(&token, NOW, Some("production".to_owned()));
            return;
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            let mut lines = text.splitn(3, '\n');
            let authorization = lines.next().filter(|l| !l.is_empty());
            let cookie = lines.next().filter(|l| !l.is_empty());
            let name = lines.next().unwrap_or(SESSION_COOKIE);
            check_headers(authorization, cookie, name, NOW);
            return;
        }
        _ => match Input::arbitrary_take_rest(Unstructured::new(rest)) {
            Ok(input) => input,
            Err(_) => return,
        },
    };
    match input {
        Input::Signed {
            header,
            payload,
            right_key,
            tamper,
            now,
            worker_env,
        } => {
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.bytes(now)),
                URL_SAFE_NO_PAD.encode(payload.bytes(now))
            );
            let key = if right_key { SECRET } else { OTHER_SECRET };
            let mut signature = hs256(key, signed.as_bytes());
            if let Some(bit) = tamper {
                signature[usize::from(bit / 8) % 32] ^= 1 << (bit % 8);
            }
            let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature));
            let accepted = verify_and_check(&token, now, worker_env);
            assert!(
                !accepted || (right_key && tamper.is_none()),
                "accepted a token with a wrong or tampered signature"
            );
        }
        Input::Claims {
            claims,
            alg,
            right_key,
            now,
            worker_env,
        } => {
            let algorithm = match alg {
                Alg::Hs384 => jsonwebtoken::Algorithm::HS384,
                Alg::Hs512 => jsonwebtoken::Algorithm::HS512,
                _ => jsonwebtoken::Algorithm::HS256,
            };
            let key = if right_key { SECRET } else { OTHER_SECRET };
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(algorithm),
                &claims.json(now),
                &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
            )
            .expect("HMAC signing cannot fail");
            let accepted = verify_and_check(&token, now, worker_env);
            assert!(
                !accepted || (right_key && algorithm == jsonwebtoken::Algorithm::HS256),
                "accepted {algorithm:?} or a foreign key"
            );
        }
        Input::Mint {
            user_id,
            pepper,
            env,
            issued_at_s,
            ttl_s,
            elapsed_s,
            worker_env,
        } => {
            let request = MintRequest {
                user_id,
                api_token_pepper: pepper,
                env,
                issued_at_s: u64::from(issued_at_s),
                ttl_s: u64::from(ttl_s),
            };
            let token = mint_token(SECRET, &request).expect("minting with a long secret works");
            let now = u64::from(issued_at_s) + u64::from(elapsed_s);
            let result = verifier(worker_env.clone()).verify(&token, now);
            let env_conflict = matches!(
                (&request.env, worker_env.as_deref()),
                (Some(token_env), Some(worker_env)) if !worker_env.is_empty() && token_env != worker_env
            );
            if elapsed_s < ttl_s && !env_conflict {
                let claims = result.expect("a fresh minted token verifies");
                assert_eq!(claims.user_id, request.user_id);
                assert_eq!(claims.api_token_pepper, request.api_token_pepper);
                assert_eq!(claims.env, request.env);
                assert_eq!(claims.expires_at_s, request.issued_at_s + request.ttl_s);
                check_accepted(&token, now, worker_env.as_deref(), &claims);
            } else {
                assert!(result.is_err(), "an expired or foreign-env token verified");
            }
        }
    }
});
