//! A cron guest (`fermyon:spin-cron@2.0.0`): counts ticks in the default store, fails on demand.

use spin_sdk::wit::wasi::keyvalue::{atomics, store};

wit_bindgen::generate!({
    path: "../../../wit/deps/spin-cron",
    world: "fermyon:spin-cron/spin-cron",
});

struct Ticker;

impl Guest for Ticker {
    fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
        println!("tick at {}", metadata.timestamp);
        if spin_sdk::variables::get("fail").is_ok_and(|v| v == "true") {
            return Err(Error::Other("asked to fail".into()));
        }
        let bucket = store::open("default").map_err(|e| Error::Other(format!("{e:?}")))?;
        atomics::increment(&bucket, "ticks", 1).map_err(|e| Error::Other(format!("{e:?}")))?;
        bucket
            .set("last-timestamp", metadata.timestamp.to_string().as_bytes())
            .map_err(|e| Error::Other(format!("{e:?}")))?;
        Ok(())
    }
}

export!(Ticker);
