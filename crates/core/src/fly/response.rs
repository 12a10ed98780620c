//! Pure response parsing: status check, then JSON decoding into the expected type.
//!
//! Calls whose 200 body Fly documents inconsistently (start, stop, destroy, wait, delete) accept an empty
//! body or any JSON; calls that return a resource require it.

use serde::de::DeserializeOwned;

use super::error::FlyError;
use super::transport::HttpResponse;

/// Any non-2xx response becomes a [`FlyError`] carrying status and body.
pub fn check_status(context: &str, response: &HttpResponse) -> Result<(), FlyError> {
    if response.is_success() {
        Ok(())
    } else {
        Err(FlyError::from_response(context, response))
    }
}

/// A 2xx with a JSON body of type `T`.
pub fn json<T: DeserializeOwned>(context: &str, response: &HttpResponse) -> Result<T, FlyError> {
    check_status(context, response)?;
    serde_json::from_slice(&response.body).map_err(|err| {
        FlyError::invalid_response(
            context,
            response.status,
            format!("unexpected JSON: {err}"),
            &response.body,
        )
    })
}

/// A 2xx whose body may be empty (then `T::default()`), or JSON of type `T`.
pub fn lenient_json<T: DeserializeOwned + Default>(
    context: &str,
    response: &HttpResponse,
) -> Result<T, FlyError> {
    check_status(context, response)?;
    if response.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&response.body).map_err(|err| {
        FlyError::invalid_response(
            context,
            response.status,
            format!("unexpected JSON: {err}"),
            &response.body,
        )
    })
}

/// A 2xx whose body is ignored.
pub fn empty(context: &str, response: &HttpResponse) -> Result<(), FlyError> {
    check_status(context, response)
}

/// Like [`json`], but 404 means "does not exist" instead of an error.
pub fn optional_json<T: DeserializeOwned>(
    context: &str,
    response: &HttpResponse,
) -> Result<Option<T>, FlyError> {
    if response.status == 404 {
        return Ok(None);
    }
    json(context, response).map(Some)
}
