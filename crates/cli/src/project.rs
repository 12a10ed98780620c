//! Where the app lives on disk: the `spin.toml` to run and the state directory beside it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The manifest file name a Spin app uses.
pub const MANIFEST_FILE: &str = "spin.toml";

/// The state directory's name next to the manifest, as `spin up` uses it.
pub const STATE_DIR_NAME: &str = ".spin";

/// Finds the manifest: the explicit path when given, otherwise `spin.toml` in the current
/// directory or the nearest parent that has one (so `cargo run` works from any sub-directory).
pub fn find_manifest(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        let path = path
            .canonicalize()
            .with_context(|| format!("manifest {} not found", path.display()))?;
        return Ok(path);
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    for dir in cwd.ancestors() {
        let candidate = dir.join(MANIFEST_FILE);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no {MANIFEST_FILE} in {} or any parent directory; run from the KiloClaw checkout or pass --manifest",
        cwd.display()
    )
}

/// The directory holding the manifest (the workspace root of this repository).
pub fn app_root(manifest: &Path) -> PathBuf {
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The state directory: the explicit one, else `.spin/` next to the manifest.
pub fn state_dir(explicit: Option<&Path>, manifest: &Path) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| app_root(manifest).join(STATE_DIR_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_defaults_next_to_manifest() {
        let manifest = Path::new("/srv/app/spin.toml");
        assert_eq!(state_dir(None, manifest), Path::new("/srv/app/.spin"));
        assert_eq!(
            state_dir(Some(Path::new("/tmp/s")), manifest),
            Path::new("/tmp/s")
        );
    }

    #[test]
    fn explicit_missing_manifest_is_an_error() {
        let err = find_manifest(Some(Path::new("/definitely/not/here/spin.toml")));
        assert!(err.is_err());
    }
}
