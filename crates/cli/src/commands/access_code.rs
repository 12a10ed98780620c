//! `kiloclaw access-code`: issue a one-time access code through a running app's platform API
//! (`POST /api/platform/access-code`), so a browser can sign in at the access gateway locally, as
//! the Next.js dashboard's "Open" link does in production.

use anyhow::{Context, bail};

use crate::args::AccessCodeArgs;
use crate::secrets::{self, INTERNAL_API_SECRET};

/// Prints the code on stdout (alone, so `$(kiloclaw access-code …)` works) and where to use it on
/// stderr.
pub fn run(args: &AccessCodeArgs) -> anyhow::Result<()> {
    let key = secrets::resolve(INTERNAL_API_SECRET, &args.location)?;
    let base = args.url.trim_end_matches('/').to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (status, body) = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{base}/api/platform/access-code"))
            .header("x-internal-api-key", key)
            .json(&serde_json::json!({ "userId": args.user }))
            .send()
            .await
            .with_context(|| format!("is the app running on {base}? (kiloclaw up)"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        anyhow::Ok((status, body))
    })?;
    if status != reqwest::StatusCode::CREATED {
        let reason = body
            .get("error")
            .map(ToString::to_string)
            .unwrap_or_else(|| body.to_string());
        bail!("the app refused to issue a code ({status}): {reason}");
    }
    let code = body
        .get("code")
        .and_then(serde_json::Value::as_str)
        .context("the app's answer has no code")?;
    println!("{code}");
    let user = url::form_urlencoded::byte_serialize(args.user.as_bytes()).collect::<String>();
    eprintln!(
        "kiloclaw: open {base}/kilo-access-gateway?userId={user} and enter the code (valid 10 minutes, once)"
    );
    Ok(())
}
