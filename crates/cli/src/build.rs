//! Builds the four wasm components with cargo, showing cargo's own progress.
//!
//! The artifact paths are read from cargo's JSON messages rather than guessed, so
//! `CARGO_TARGET_DIR`, `build.target-dir` in a cargo config and the like all just work.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The target every component is built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Fails with the one command that fixes it when the standard library for [`WASM_TARGET`] is not
/// installed; without this check cargo fails later with a raw "can't find crate for `core`". Asks
/// the `rustc` cargo would use (`RUSTC`, else `rustc` on `PATH`) where that library lives.
pub fn check_wasm_target() -> anyhow::Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "running {} (is Rust installed?)",
                PathBuf::from(&rustc).display()
            )
        })?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let has_core = output.status.success()
        && std::fs::read_dir(&libdir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().starts_with("libcore-"))
        });
    if !has_core {
        bail!(
            "the Rust target {WASM_TARGET} is not installed (no standard library in {}); install it with:\n\n    rustup target add {WASM_TARGET}\n",
            libdir.display()
        );
    }
    Ok(())
}

/// The component packages, in the order they are reported.
pub const COMPONENT_PACKAGES: [&str; 4] = [
    "kiloclaw-auth",
    "kiloclaw-instances",
    "kiloclaw-router",
    "kiloclaw-reconciler",
];

/// The cargo invocation that builds the components (shown to the user and run by [`build_components`]).
pub fn cargo_args() -> Vec<String> {
    let mut args = vec![
        "build".to_owned(),
        "--target".to_owned(),
        WASM_TARGET.to_owned(),
        "--release".to_owned(),
    ];
    for package in COMPONENT_PACKAGES {
        args.push("-p".to_owned());
        args.push(package.to_owned());
    }
    args
}

#[derive(Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    package_id: String,
    #[serde(default)]
    target: Option<Target>,
    #[serde(default)]
    filenames: Vec<PathBuf>,
    #[serde(default)]
    success: Option<bool>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
}

/// Runs the build in `workspace_root`; cargo's progress and diagnostics go to this process's
/// stderr. Returns the `.wasm` file of each component package, keyed by package name.
pub fn build_components(workspace_root: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    check_wasm_target()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = cargo_args();
    args.push("--message-format=json-render-diagnostics".to_owned());
    eprintln!(
        "kiloclaw: building components: cargo {}",
        cargo_args().join(" ")
    );
    let mut child = Command::new(&cargo)
        .args(&args)
        .current_dir(workspace_root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("running {}", PathBuf::from(&cargo).display()))?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut artifacts = BTreeMap::new();
    let mut finished_ok = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo output")?;
        let Ok(message) = serde_json::from_str::<Message>(&line) else {
            continue;
        };
        match message.reason.as_str() {
            "compiler-artifact" => {
                let Some(package) = package_name(&message.package_id, message.target.as_ref())
                else {
                    continue;
                };
                if !COMPONENT_PACKAGES.contains(&package.as_str()) {
                    continue;
                }
                if let Some(wasm) = message
                    .filenames
                    .iter()
                    .find(|f| f.extension().is_some_and(|e| e == "wasm"))
                {
                    artifacts.insert(package, wasm.clone());
                }
            }
            "build-finished" => finished_ok = message.success,
            _ => {}
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() || finished_ok == Some(false) {
        bail!("building the components failed (cargo exited with {status})");
    }
    for package in COMPONENT_PACKAGES {
        if !artifacts.contains_key(package) {
            bail!("cargo built no .wasm for {package}");
        }
    }
    Ok(artifacts)
}

/// The `.wasm` files a previous build left, for `--no-build`: cargo's target directory (as
/// `cargo metadata` reports it, so `CARGO_TARGET_DIR` and cargo configs count) joined with
/// `wasm32-wasip2/release/<crate>.wasm`. Missing files are reported when the manifest is resolved.
pub fn prebuilt_components(workspace_root: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    #[derive(Deserialize)]
    struct Metadata {
        target_directory: PathBuf,
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed ({})", output.status);
    }
    let metadata: Metadata =
        serde_json::from_slice(&output.stdout).context("parsing cargo metadata")?;
    Ok(artifacts_in(&metadata.target_directory))
}

/// Where cargo puts each component of a release wasm build under `target_dir`.
pub fn artifacts_in(target_dir: &Path) -> BTreeMap<String, PathBuf> {
    let release = target_dir.join(WASM_TARGET).join("release");
    COMPONENT_PACKAGES
        .iter()
        .map(|package| {
            let file = format!("{}.wasm", package.replace('-', "_"));
            ((*package).to_owned(), release.join(file))
        })
        .collect()
}

/// The package name of an artifact. Cargo's package ids are either the old
/// `name version (source)` form or the newer `source#name@version` spec; the target name
/// (underscored) is a fallback.
fn package_name(package_id: &str, target: Option<&Target>) -> Option<String> {
    if let Some((_, spec)) = package_id.rsplit_once('#') {
        let name = spec.split('@').next().unwrap_or(spec);
        // `path+file:///x/components/router#0.1.0` carries no name: the directory is not the
        // package name, so fall back to the target name.
        if !name.is_empty() && !name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            return Some(name.to_owned());
        }
    } else if let Some(name) = package_id.split(' ').next().filter(|n| !n.is_empty()) {
        return Some(name.to_owned());
    }
    target.map(|t| t.name.replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_from_every_id_format() {
        let t = Target {
            name: "kiloclaw_router".to_owned(),
        };
        assert_eq!(
            package_name(
                "path+file:///w/components/router#kiloclaw-router@0.1.0",
                None
            )
            .as_deref(),
            Some("kiloclaw-router")
        );
        assert_eq!(
            package_name("path+file:///w/components/router#0.1.0", Some(&t)).as_deref(),
            Some("kiloclaw-router")
        );
        assert_eq!(
            package_name("kiloclaw-router 0.1.0 (path+file:///w)", None).as_deref(),
            Some("kiloclaw-router")
        );
    }

    #[test]
    fn the_build_command_is_the_documented_one() {
        assert_eq!(
            cargo_args().join(" "),
            "build --target wasm32-wasip2 --release -p kiloclaw-auth -p kiloclaw-instances -p kiloclaw-router -p kiloclaw-reconciler"
        );
    }
}
