//! Optional persistence: the whole world as `state.json` in the state directory, written atomically
//! after every change; volume data lives beside it in `volumes/{id}/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::state::World;

const STATE_FILE: &str = "state.json";

pub fn state_file(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Loads a saved world; `Ok(None)` when there is none yet.
pub fn load(dir: &Path) -> io::Result<Option<World>> {
    match fs::read(state_file(dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {err}", STATE_FILE))
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Writes the world through a temporary file and a rename, so a crash never leaves half a file.
pub fn save(dir: &Path, json: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    fs::write(&tmp, json)?;
    fs::rename(tmp, state_file(dir))
}

/// Recursively copies a volume directory (fork with `source_volume_id`).
pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    if !from.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
