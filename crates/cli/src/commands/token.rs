//! `kiloclaw token`: print a user JWT for the local (or any) deployment.

use crate::args::TokenArgs;
use crate::secrets::{self, NEXTAUTH_SECRET};
use crate::token::mint_user_token;

/// Prints the token on stdout (and nothing else there, so `$(kiloclaw token ...)` works).
pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let secret = secrets::resolve(NEXTAUTH_SECRET, &args.location)?;
    let token = mint_user_token(&secret, &args.user, args.ttl.into(), args.env.as_deref())?;
    println!("{token}");
    Ok(())
}
