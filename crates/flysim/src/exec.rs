//! A tiny stand-in for commands run through `/exec` on the OpenClaw image: `echo`, `cat`, `ls`, `true`,
//! `false`, and the OpenClaw commands the control plane uses (`openclaw-pairing-list.js`,
//! `openclaw pairing approve`, `openclaw doctor`). Paths under the volume mount read the volume directory.

use std::path::{Path, PathBuf};

use kiloclaw_core::fly::ExecResponse;

fn ok(stdout: impl Into<String>) -> ExecResponse {
    ExecResponse {
        stdout: stdout.into(),
        stderr: String::new(),
        exit_code: 0,
        exit_signal: None,
    }
}

fn fail(code: i32, stderr: impl Into<String>) -> ExecResponse {
    ExecResponse {
        stdout: String::new(),
        stderr: stderr.into(),
        exit_code: code,
        exit_signal: None,
    }
}

/// Maps a guest path to the volume directory when it lies under the mount path.
fn host_path(guest: &str, mount: Option<&(String, PathBuf)>) -> Option<PathBuf> {
    let (mount_path, dir) = mount?;
    let rest = Path::new(guest).strip_prefix(mount_path).ok()?;
    if rest
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    Some(dir.join(rest))
}

pub fn run(
    command: &[String],
    stdin: Option<&str>,
    mount: Option<&(String, PathBuf)>,
) -> ExecResponse {
    // `/usr/bin/env [NAME=value…] cmd…` as the control plane wraps commands.
    let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
    if args
        .first()
        .is_some_and(|a| *a == "/usr/bin/env" || *a == "env")
    {
        args.remove(0);
        while args.first().is_some_and(|a| a.contains('=')) {
            args.remove(0);
        }
    }
    let Some((&program, rest)) = args.split_first() else {
        return fail(127, "missing command\n");
    };
    let name = program.rsplit('/').next().unwrap_or(program);
    match (name, rest) {
        ("echo", words) => ok(format!("{}\n", words.join(" "))),
        ("true", _) => ok(""),
        ("false", _) => fail(1, ""),
        ("cat", []) => ok(stdin.unwrap_or_default()),
        ("cat", files) => {
            let mut out = String::new();
            for file in files {
                match host_path(file, mount).map(std::fs::read_to_string) {
                    Some(Ok(text)) => out.push_str(&text),
                    _ => return fail(1, format!("cat: {file}: No such file or directory\n")),
                }
            }
            ok(out)
        }
        ("ls", [dir]) => match host_path(dir, mount).map(std::fs::read_dir) {
            Some(Ok(entries)) => {
                let mut names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                ok(names.iter().map(|n| format!("{n}\n")).collect::<String>())
            }
            _ => fail(
                2,
                format!("ls: cannot access '{dir}': No such file or directory\n"),
            ),
        },
        ("node", [script, ..]) if script.ends_with("openclaw-pairing-list.js") => {
            ok("{\"requests\":[]}\n")
        }
        ("openclaw", ["pairing", "approve", channel, code, ..]) => {
            ok(format!("Approved {channel} pairing {code}\n"))
        }
        ("openclaw", ["doctor", ..]) => ok("Doctor: no problems found\n"),
        _ => fail(127, format!("{program}: command not found\n")),
    }
}
