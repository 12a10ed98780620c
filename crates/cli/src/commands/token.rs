//! `kiloclaw token`: print a user JWT for the local (or any) deployment.

use anyhow::Context;

use crate::args::TokenArgs;
use crate::project;
use crate::secrets::{self, DevSecrets, NEXTAUTH_SECRET};
use crate::token::mint_user_token;

/// Prints the token on stdout (and nothing else there, so `$(kiloclaw token ...)` works).
pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let secret = match secrets::from_env(NEXTAUTH_SECRET) {
        Some(secret) => secret,
        None => {
            let manifest = project::find_manifest(args.location.manifest.as_deref())?;
            let state_dir = project::state_dir(args.location.state_dir.as_deref(), &manifest);
            let dev = DevSecrets::load(&state_dir)?.with_context(|| {
                format!(
                    "no {} set and no dev secrets in {} yet; run `kiloclaw up` once, or set {}",
                    secrets::spin_env_name(NEXTAUTH_SECRET),
                    state_dir.display(),
                    secrets::spin_env_name(NEXTAUTH_SECRET),
                )
            })?;
            dev.nextauth_secret
        }
    };
    let token = mint_user_token(&secret, &args.user, args.ttl.into(), args.env.as_deref())?;
    println!("{token}");
    Ok(())
}
