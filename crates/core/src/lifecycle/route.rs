//! The proxy's hot path: where a user's traffic goes, from one key-value read and a decode of the
//! four fields that decide it (a second look only for a user without a live record at its key). The full record (config, encrypted secrets, lease, history) is never
//! parsed for a proxied request, and no setting besides the legacy app name is needed.
//!
//! It must answer exactly as [`super::Instances::route`] does for every stored record; a property
//! test in `lifecycle::tests` holds the two together.

use serde::Deserialize;

use super::{LifecycleError, Route};
use crate::kv::KeyValue;
use crate::record::InstanceState;
use crate::store::{current_record_bytes, record_key};

/// The fields of a stored record the route depends on. Anything else is skipped unparsed; a field
/// of the wrong type counts as absent, as the tolerant full decoder treats it.
#[derive(Deserialize)]
struct RouteFields {
    #[serde(rename = "userId", default)]
    user_id: Id,
    #[serde(default)]
    status: Option<serde_json::Value>,
    #[serde(rename = "flyMachineId", default)]
    machine_id: Id,
    #[serde(rename = "flyAppName", default)]
    app_name: Id,
}

/// An id field, read exactly as the full decoder reads ids ([`crate::record::id_value`]).
#[derive(Default)]
struct Id(Option<String>);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Self(crate::record::id_value(&value)))
    }
}

/// Where to proxy `user_id`'s traffic: 409 while destroying, 404 without a provisioned record or a
/// machine, and the legacy shared app (`legacy_app`) for a record without an app of its own.
pub fn route_of<K: KeyValue + ?Sized>(
    kv: &K,
    user_id: &str,
    legacy_app: Option<&str>,
) -> Result<Route, LifecycleError> {
    let raw = kv
        .get(&record_key(user_id))
        .map_err(|e| LifecycleError::Store(e.into()))?;
    let route = route_from(user_id, raw.as_deref(), legacy_app);
    // Only a user without a live record at its key can have one elsewhere (a record whose creator
    // stalled lives in a later creation generation; see `store`, Flow 1), and such an answer is a 404
    // or a sealed key: only then look further, so the proxied path stays one read.
    let live_here = !matches!(route, Err(LifecycleError::NotProvisioned))
        && raw
            .as_deref()
            .is_none_or(|raw| !crate::store::is_sealed(raw));
    if live_here {
        return route;
    }
    let current = current_record_bytes(kv, user_id).map_err(LifecycleError::Store)?;
    if current == raw {
        return route;
    }
    route_from(user_id, current.as_deref(), legacy_app)
}

/// The route a stored value gives (`None`: no record).
fn route_from(
    user_id: &str,
    raw: Option<&[u8]>,
    legacy_app: Option<&str>,
) -> Result<Route, LifecycleError> {
    let Some(raw) = raw else {
        return Err(LifecycleError::NotProvisioned);
    };
    // Only an object is a record (serde would also map a JSON array onto the struct).
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(corrupt(user_id, raw));
    }
    let fields: RouteFields = serde_json::from_slice(raw).map_err(|_| corrupt(user_id, raw))?;
    let user_known = fields.user_id.0.is_some();
    let status = match fields.status {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(
            // As the full decoder: a status lost to a bad value still means a provisioned instance.
            serde_json::from_value::<InstanceState>(value).unwrap_or(InstanceState::Stopped),
        ),
    };
    let status = status
        .filter(|_| user_known)
        .ok_or(LifecycleError::NotProvisioned)?;
    if status == InstanceState::Destroying {
        return Err(LifecycleError::Destroying { operation: "proxy" });
    }
    let machine_id = fields.machine_id.0.ok_or(LifecycleError::NotProvisioned)?;
    let app_name = fields
        .app_name
        .0
        .or_else(|| legacy_app.map(str::to_owned))
        .ok_or(LifecycleError::NoFlyApp)?;
    Ok(Route {
        app_name,
        machine_id,
        status: status.as_str().to_owned(),
    })
}

/// The corruption error, worded as the full decoder words it (this path is rare).
fn corrupt(user_id: &str, raw: &[u8]) -> LifecycleError {
    let source = match crate::record::InstanceRecord::decode(raw) {
        Err(source) => source,
        Ok(_) => crate::record::RecordDecodeError::NotAnObject("not an object".to_owned()),
    };
    LifecycleError::Store(crate::store::StoreError::Corrupt {
        user_id: user_id.to_owned(),
        source,
    })
}
