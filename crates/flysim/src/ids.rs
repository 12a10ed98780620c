//! Identifiers in Fly's formats: 14-hex machine ids, ULID versions and request ids, `vol_` volume ids.

use rand::Rng;
use rand::distr::{Alphanumeric, SampleString};

pub fn machine_id() -> String {
    let value: u64 = rand::rng().random();
    format!("{:014x}", value & 0x00ff_ffff_ffff_ffff)
}

/// A ULID, as Fly uses for `instance_id`, event ids and request ids.
pub fn ulid() -> String {
    ulid::Ulid::new().to_string()
}

pub fn volume_id() -> String {
    format!(
        "vol_{}",
        Alphanumeric
            .sample_string(&mut rand::rng(), 16)
            .to_ascii_lowercase()
    )
}

pub fn snapshot_id() -> String {
    format!(
        "vs_{}",
        Alphanumeric
            .sample_string(&mut rand::rng(), 16)
            .to_ascii_lowercase()
    )
}

pub fn app_id() -> String {
    Alphanumeric
        .sample_string(&mut rand::rng(), 16)
        .to_ascii_lowercase()
}

/// `fly-request-id`: `<ULID>-<region>`.
pub fn request_id(region: &str) -> String {
    format!("{}-{region}", ulid())
}

/// A 6PN-looking private IPv6 address.
pub fn private_ip() -> String {
    let mut rng = rand::rng();
    format!(
        "fdaa:0:18:a7b:{:x}:{:x}:{:x}:2",
        rng.random::<u16>(),
        rng.random::<u16>(),
        rng.random::<u16>()
    )
}

/// `adjective-noun-1234`, as Fly names machines created without a name.
pub fn machine_name() -> String {
    const ADJECTIVES: [&str; 8] = [
        "aged", "bold", "calm", "dark", "eager", "fancy", "green", "hidden",
    ];
    const NOUNS: [&str; 8] = [
        "thunder", "river", "forest", "meadow", "sunset", "breeze", "glade", "frost",
    ];
    let mut rng = rand::rng();
    format!(
        "{}-{}-{}",
        ADJECTIVES[rng.random_range(0..ADJECTIVES.len())],
        NOUNS[rng.random_range(0..NOUNS.len())],
        rng.random_range(1000..10000)
    )
}
