//! User routes (JWT-authenticated): config summary, status, the removed storage API, and restart
//! (original-behaviour.md §1.2).

use kiloclaw_core::edge::errors::EdgeError;
use kiloclaw_core::edge::routes::UserRoute;
use serde_json::json;

use crate::http::Reply;
use crate::imports::{self, Principal, instances};

/// Serves a user route for an authenticated principal.
pub fn serve(route: UserRoute, principal: &Principal) -> Reply {
    match route {
        UserRoute::Config => match instances::summarize_config(&principal.user_id) {
            Ok(summary) => Reply::json(
                200,
                &json!({
                    "envVarKeys": summary.env_var_keys,
                    "secretCount": summary.secret_count,
                    "kilocodeDefaultModel": summary.default_model,
                    "hasKiloCodeApiKey": summary.has_api_key,
                    "kilocodeApiKeyExpiresAt": summary.api_key_expires_at,
                    "channels": {
                        "telegram": summary.channels.telegram,
                        "discord": summary.channels.discord,
                        "slackBot": summary.channels.slack_bot,
                        "slackApp": summary.channels.slack_app,
                    },
                }),
            ),
            Err(error) => Reply::error(&EdgeError::from(error)),
        },
        UserRoute::Status => match instances::status(&principal.user_id) {
            Ok(status) => Reply::json(200, &imports::status_json(&status)),
            Err(error) => Reply::error(&EdgeError::from(error)),
        },
        UserRoute::StorageGone => Reply::json(
            410,
            &json!({"error": "Storage sync has been removed. Data now persists via Fly Volumes."}),
        ),
        UserRoute::GatewayRestart => match instances::restart(&principal.user_id) {
            Ok(()) => Reply::json(
                200,
                &json!({"success": true, "message": "Machine restarting with updated configuration..."}),
            ),
            Err(error) => {
                // The original's failure shape `{success:false, error}`, with our status codes.
                let error = EdgeError::from(error);
                let mut reply = Reply::error(&error);
                let response = error.response();
                let message = response.body.get("error").cloned().unwrap_or_default();
                reply.body = crate::http::Body::Bytes(
                    json!({"success": false, "error": message})
                        .to_string()
                        .into_bytes(),
                );
                reply
            }
        },
    }
}
