//! The stored instance record: `kiloclaw_core::record::InstanceRecord::{decode, encode}`.
//!
//! Properties, beyond "never panics":
//! - anything that is not a JSON object is refused, and every JSON object decodes (tolerantly);
//! - decode → encode → decode gives the same record (with this build's schema version as a floor),
//!   reports no bad field the second time, and encoding again gives the same bytes;
//! - a non-empty string Fly id (`flyMachineId`, `flyVolumeId`, `flyAppName`, `userId`) is never
//!   lost, whatever else in the record is bad;
//! - every field that failed to decode is kept under `_quarantine` (numeric ids are kept as text
//!   instead), unknown fields are carried in `extra`, and a newer schema is reported as such;
//! - a record whose `status` was unreadable but that has a user stays provisioned.
#![no_main]

use kiloclaw_core::record::{InstanceRecord, SCHEMA_VERSION};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const ID_FIELDS: [&str; 8] = [
    "userId",
    "sandboxId",
    "flyAppName",
    "flyMachineId",
    "flyVolumeId",
    "flyRegion",
    "pendingDestroyMachineId",
    "pendingDestroyVolumeId",
];

fn id_of<'a>(record: &'a InstanceRecord, field: &str) -> Option<&'a str> {
    match field {
        "userId" => Some(record.user_id.as_str()).filter(|s| !s.is_empty()),
        "sandboxId" => Some(record.sandbox_id.as_str()).filter(|s| !s.is_empty()),
        "flyAppName" => record.fly_app_name.as_deref(),
        "flyMachineId" => record.fly_machine_id.as_deref(),
        "flyVolumeId" => record.fly_volume_id.as_deref(),
        "flyRegion" => record.fly_region.as_deref(),
        "pendingDestroyMachineId" => record.pending_destroy_machine_id.as_deref(),
        "pendingDestroyVolumeId" => record.pending_destroy_volume_id.as_deref(),
        _ => unreachable!("not an id field"),
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed: Option<Value> = serde_json::from_slice(data).ok();
    let (record, report) = match InstanceRecord::decode(data) {
        Ok(decoded) => decoded,
        Err(error) => {
            assert!(
                !matches!(parsed, Some(Value::Object(_))),
                "a JSON object was refused: {error}"
            );
            return;
        }
    };
    let Some(Value::Object(object)) = parsed else {
        panic!("decoded something that is not a JSON object");
    };

    assert_eq!(report.newer_schema, record.schema_version > SCHEMA_VERSION);
    for field in ID_FIELDS {
        if let Some(Value::String(id)) = object.get(field)
            && !id.is_empty()
        {
            assert_eq!(id_of(&record, field), Some(id.as_str()), "lost {field}");
        }
    }
    for field in &report.bad_fields {
        let numeric_id = ID_FIELDS.contains(&field.as_str())
            && matches!(object.get(field.as_str()), Some(Value::Number(_)));
        assert!(
            numeric_id || record.quarantine.contains_key(field),
            "bad field {field} was not quarantined"
        );
    }
    for key in record.extra.keys() {
        assert!(object.contains_key(key), "invented field {key}");
    }
    if report.bad_fields.iter().any(|f| f == "status") && !record.user_id.is_empty() {
        assert!(
            record.is_provisioned(),
            "a record with a bad status lost its state"
        );
    }

    let bytes = record.encode();
    let (again, report_again) = InstanceRecord::decode(&bytes).expect("an encoded record decodes");
    let mut expected = record.clone();
    expected.schema_version = expected.schema_version.max(SCHEMA_VERSION);
    assert_eq!(
        again,
        expected,
        "decode(encode(r)) != r for {}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        report_again.bad_fields.is_empty(),
        "an encoded record has bad fields {:?}: {}",
        report_again.bad_fields,
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(again.encode(), bytes, "encoding is not stable");
});
