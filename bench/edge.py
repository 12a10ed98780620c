#!/usr/bin/env python3
"""Side-by-side benchmark of the proxied edge path (issue #8, item 1).

One run measures, in interleaved rounds and against the SAME loopback upstream:

  direct    the upstream itself (an nginx serving /1k, /1m and answering POST /post),
  nginx     nginx `proxy_pass` in front of it (upstream keepalive, HTTP/1.1),
  kiloclaw  `kiloclaw up --proxy-upstream http://127.0.0.1:<upstream>` (release build) in front of
            it: a user provisioned and started through the platform API, requests carrying the
            user's JWT, so every request goes through the router (auth, instance lookup in the
            key-value store, header rewriting) and the host's outbound HTTP.

Scenarios (wrk, one thread): 1 KiB GET at c=1, c=16, c=64; 1 MiB GET at c=16; 64 KiB POST at
c=16; and kiloclaw's platform route `GET /api/platform/status?userId=` at c=16 (no proxying).

Per run: req/s; p50/p99/p99.9 latency (wrk's Lua `done` hook prints them as JSON); CPU time per
request of the server under test (utime+stime, process plus children: nginx master+workers, the
kiloclaw process) and of the upstream; upstream connections opened (nginx stub_status). At the
end: VmRSS/VmHWM of every server process. The markdown report gives the median over rounds and
the kiloclaw/nginx ratios for req/s and CPU per request.

Usage (from anywhere in the repository; Python 3.11+, standard library only, Linux):

    python3 bench/edge.py                   # 5 s per run, 3 rounds
    python3 bench/edge.py --quick           # 1 s per run, 1 round: checks the setup, noisy
    python3 bench/edge.py --duration 10 --rounds 5 --out /tmp/edge.md --json /tmp/edge.json

It installs `nginx` and `wrk` with `apt-get install -y` when missing (Debian/Ubuntu; as root or
through sudo), builds the CLI with `cargo build --release -p kiloclaw-cli` (binary in
`$CARGO_TARGET_DIR/release/kiloclaw`, `CARGO_TARGET_DIR` defaulting to
`$HOME/.cache/kiloclaw-target`), and `kiloclaw up` builds the wasm components (skip both builds
with --no-build). Everything listens on and talks to 127.0.0.1 only; every wait is bounded; every
process the script starts runs in its own process group and is stopped on exit, on errors and on
Ctrl-C/SIGTERM (and gets SIGTERM from the kernel should the script itself be killed).

See docs/benchmarks.md for the method, the configuration choices and how to read the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
USER_ID = "bench-user"
DEFAULT_SPIN_INSTALLER = REPO.parent / "shared" / "tools" / "spin" / "install.sh"
# The servers of kiloclaw's components: our host (`kiloclaw up`), and with --spin the bundled real Spin.
APP_TARGETS: list[str] = ["kiloclaw"]


def log(message: str) -> None:
    print(f"edge: {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure that ends the benchmark with a message (after cleanup)."""


# --------------------------------------------------------------------------------------------
# Processes: started in their own process group, stopped by that group's id on exit.


def _parent_death_sigterm() -> None:
    """In the child, before exec: SIGTERM when the script dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """The servers this script started."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], *, log_path: Path, env=None, cwd=None,
              stdout_path: Path | None = None) -> subprocess.Popen:
        err = open(log_path, "ab")
        out = open(stdout_path, "ab") if stdout_path else err
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=env, cwd=cwd, start_new_session=True,
                                    preexec_fn=_parent_death_sigterm)
        finally:
            err.close()
            if stdout_path:
                out.close()
        self.started.append((name, proc))
        return proc

    def stop_all(self) -> None:
        """SIGTERM to each group, up to 15 s for the leaders to exit, then SIGKILL to whatever is
        left in each group. A leader is reaped only after its group got the SIGKILL, so the group
        id cannot have been reused by then."""
        live = []
        for name, proc in reversed(self.started):
            if proc.returncode is None:
                self._signal_group(proc.pid, signal.SIGTERM)
                live.append((name, proc))
            elif group_members(proc.pid):  # leader already reaped, members left (nginx workers)
                self._signal_group(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        for name, proc in live:
            while not exited_unreaped(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not exited_unreaped(proc.pid):
                log(f"{name} (pid {proc.pid}) ignored SIGTERM; killing its process group")
            self._signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.started.clear()

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        # start_new_session made each child the leader of a group whose id is its pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def exited_unreaped(pid: int) -> bool:
    """Whether our child `pid` has exited, without reaping it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = (entry / "stat").read_text()
                if int(text[text.rindex(")") + 2:].split()[2]) == pgid:
                    members.append(int(entry.name))
    return members


def _terminate_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------------------------
# /proc accounting


def proc_stat_ticks(pid: int) -> tuple[int, int]:
    """(utime+stime, cutime+cstime) of one process, in clock ticks."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17.
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            kids.append(int(entry.name))
    return sorted(kids)


def tree_cpu_ticks(pid: int) -> int:
    """CPU ticks of a process, its live children, and its reaped children (so a worker that
    exits during a run is still counted, once)."""
    own, reaped = proc_stat_ticks(pid)
    total = own + reaped
    for kid in children_of(pid):
        with contextlib.suppress(OSError):
            total += proc_stat_ticks(kid)[0]
    return total


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


# --------------------------------------------------------------------------------------------
# Tools and builds


def run_checked(argv: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, check=True, timeout=timeout, **kwargs)
    except subprocess.CalledProcessError as err:
        raise BenchError(f"{' '.join(argv)} failed with {err.returncode}") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(argv)} took longer than {timeout:.0f} s") from None


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def ensure_tools(no_install: bool) -> tuple[str, str]:
    missing = [pkg for pkg, found in (("nginx", find_nginx()), ("wrk", shutil.which("wrk")))
               if not found]
    if missing:
        if no_install:
            raise BenchError(f"missing {', '.join(missing)} (and --no-install was given)")
        if not shutil.which("apt-get"):
            raise BenchError(f"missing {', '.join(missing)} and no apt-get to install them")
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = sudo + ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        log(f"installing {', '.join(missing)}: {' '.join(install)}")
        if subprocess.run(install, env=env, timeout=900).returncode != 0:
            log("apt-get install failed; refreshing the package lists once and retrying")
            run_checked(sudo + ["apt-get", "update"], env=env, timeout=600)
            run_checked(install, env=env, timeout=900)
    nginx, wrk = find_nginx(), shutil.which("wrk")
    if not nginx or not wrk:
        raise BenchError("nginx or wrk still not found after installing")
    return nginx, wrk


def build_kiloclaw(args) -> Path:
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR")
                      or Path.home() / ".cache" / "kiloclaw-target")
    os.environ["CARGO_TARGET_DIR"] = str(target_dir)  # `kiloclaw up` builds the components there
    if args.kiloclaw:
        binary = Path(args.kiloclaw).resolve()
    else:
        binary = target_dir / "release" / "kiloclaw"
        if not args.no_build:
            log(f"building: cargo build --release -p kiloclaw-cli (CARGO_TARGET_DIR={target_dir})")
            run_checked(["cargo", "build", "--release", "-p", "kiloclaw-cli"], cwd=REPO,
                        timeout=args.build_timeout)
    if not os.access(binary, os.X_OK):
        raise BenchError(f"no kiloclaw binary at {binary}")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, log_path: Path,
                  timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}:\n{tail(log_path)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"{what} not listening on 127.0.0.1:{port} after {timeout:.0f} s")


def tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


# --------------------------------------------------------------------------------------------
# The servers


NGINX_COMMON = """\
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
"""

NGINX_HTTP_COMMON = """\
    access_log {access_log};
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
"""


def upstream_conf(dir_: Path, www: Path, port: int, workers: str, access_log: str) -> str:
    return NGINX_COMMON.format(dir=dir_) + f"""\
worker_processes {workers};
http {{
{NGINX_HTTP_COMMON.format(dir=dir_, access_log=access_log)}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
        default_type application/octet-stream;
        location = /1k {{ }}
        location = /1m {{ }}
        # `return` makes nginx read and discard the request body (keepalive stays usable);
        # the script checks that with two POSTs on one connection.
        location = /post {{
            client_max_body_size 1m;
            return 200 "ok\\n";
        }}
        location = /_status {{ stub_status; }}
    }}
}}
"""


def proxy_conf(dir_: Path, port: int, upstream_port: int, access_log: str) -> str:
    return NGINX_COMMON.format(dir=dir_) + f"""\
worker_processes auto;
http {{
{NGINX_HTTP_COMMON.format(dir=dir_, access_log=access_log)}
    upstream edge_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 75s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://edge_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Keep bodies in memory (no temp files) like a streaming proxy: the 64 KiB POST fits
            # the client body buffer, and the 1 MiB response streams through the proxy buffers.
            client_max_body_size 1m;
            client_body_buffer_size 128k;
            proxy_buffers 32 16k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    name: str
    proc: subprocess.Popen
    dir: Path
    port: int

    def pid(self) -> int:
        return self.proc.pid

    def processes(self) -> list[tuple[str, int]]:
        return [("master", self.pid())] + [("worker", kid) for kid in children_of(self.pid())]


def start_nginx(procs: Processes, nginx: str, name: str, dir_: Path, conf: str,
                port: int) -> Nginx:
    dir_.mkdir(parents=True)
    (dir_ / "nginx.conf").write_text(conf)
    log_path = dir_ / "stderr.log"
    argv = [nginx, "-p", str(dir_), "-e", str(dir_ / "error.log"), "-c", str(dir_ / "nginx.conf")]
    check = subprocess.run(argv + ["-t", "-q"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise BenchError(f"nginx -t for {name}: {check.stderr.strip()}")
    proc = procs.start(name, argv, log_path=log_path)
    wait_for_port(port, proc, f"nginx ({name})", dir_ / "error.log")
    # The workers are up once the master has children.
    deadline = time.monotonic() + 10
    while not children_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return Nginx(name, proc, dir_, port)


@dataclass
class Kiloclaw:
    proc: subprocess.Popen
    url: str
    port: int
    key: str
    token: str
    state_dir: Path
    log_path: Path


def controlled_env(base, request_logs: bool) -> dict[str, str]:
    """`base` without the caller's SPIN_VARIABLE_* or runtime config, with the log level the
    benchmark wants: the app servers run on dev secrets and the default key-value store."""
    env = {k: v for k, v in base.items()
           if not k.startswith("SPIN_VARIABLE_") and k not in ("RUNTIME_CONFIG_FILE",
                                                               "SPIN_HTTP_LISTEN_ADDR")}
    env["RUST_LOG"] = "info" if request_logs else "warn"
    return env


def start_kiloclaw(procs: Processes, binary: Path, dir_: Path, upstream_port: int, args,
                   request_logs: bool) -> Kiloclaw:
    dir_.mkdir(parents=True, mode=0o700)  # the state dir holds the generated secrets
    state = dir_ / "state"
    out_path, log_path = dir_ / "stdout.log", dir_ / "stderr.log"
    env = controlled_env(os.environ, request_logs)
    argv = [str(binary), "up", "--listen", "127.0.0.1:0", "--sim-listen", "127.0.0.1:0",
            "--proxy-upstream", f"http://127.0.0.1:{upstream_port}",
            "--manifest", str(REPO / "spin.toml"), "--state-dir", str(state)]
    if args.no_build:
        argv.append("--no-build")
    log(f"starting: {' '.join(argv)}")
    proc = procs.start("kiloclaw", argv, log_path=log_path, stdout_path=out_path, env=env,
                       cwd=REPO)
    deadline = time.monotonic() + args.ready_timeout
    url = key = None
    while url is None:
        if proc.poll() is not None:
            raise BenchError(f"kiloclaw up exited with {proc.returncode}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            raise BenchError(f"kiloclaw up not ready after {args.ready_timeout:.0f} s:\n"
                             f"{tail(log_path)}")
        text = out_path.read_text(errors="replace") if out_path.exists() else ""
        if m := re.search(r"^\s*KEY='([^']*)'", text, re.M):
            key = m.group(1)
        if m := re.search(r"^kiloclaw: ready on (http://127\.0\.0\.1:(\d+))\s*$", text, re.M):
            url = m.group(1)
            port = int(m.group(2))
        else:
            time.sleep(0.2)
    if not key:
        raise BenchError("kiloclaw up did not print the internal key")
    target_line = re.search(r"kiloclaw: user traffic goes to .*", log_path.read_text())
    if target_line:
        log(target_line.group(0))
    token = provision_user(port, key, [str(binary), "token", "--user", USER_ID, "--ttl", "12h",
                                       "--manifest", str(REPO / "spin.toml"), "--state-dir",
                                       str(state)], env)
    return Kiloclaw(proc, url, port, key, token, state, log_path)


def provision_user(port: int, key: str, token_argv: list[str], env: dict) -> str:
    """Provisions and starts the bench user through the platform API, as the Next.js backend
    does, and returns a JWT for it."""
    for step, status in (("provision", 201), ("start", 200)):
        got, body = http_request("POST", port, f"/api/platform/{step}",
                                 {"x-internal-api-key": key, "content-type": "application/json"},
                                 json.dumps({"userId": USER_ID}).encode(), timeout=120)
        if got != status:
            raise BenchError(f"{step}: HTTP {got} {body[:300]!r}")
    token = run_checked(token_argv, capture_output=True, text=True, env=env,
                        timeout=60).stdout.strip()
    if token.count(".") != 2:
        raise BenchError(f"kiloclaw token printed no JWT: {token!r}")
    return token


def spin_environment(install_script: Path) -> dict[str, str]:
    """The environment of the bundled Spin: its installer prints `export NAME="value"` lines
    (PATH with `spin`, SPIN_DATA_DIR with the cron trigger plugin)."""
    out = run_checked(["bash", str(install_script)], capture_output=True, text=True,
                      timeout=600).stdout
    env = dict(os.environ)
    for name, value in re.findall(r'^export (\w+)="([^"]*)"$', out, re.M):
        env[name] = value.replace("$PATH", os.environ.get("PATH", ""))
    if not shutil.which("spin", path=env.get("PATH")):
        raise BenchError(f"{install_script} put no `spin` on PATH:\n{out}")
    return env


def start_spin(procs: Processes, binary: Path, dir_: Path, upstream_port: int, args,
               request_logs: bool) -> Kiloclaw:
    """The same components on the bundled real Spin (`spin up` on the repository's spin.toml),
    with `kiloclaw fly-sim` for the Machines API and the upstream as the Fly proxy."""
    dir_.mkdir(parents=True, mode=0o700)
    env = controlled_env(spin_environment(Path(args.spin)), request_logs)
    sim_port = free_port()
    sim_log = dir_ / "fly-sim.log"
    sim = procs.start("fly-sim", [str(binary), "fly-sim", "--listen", f"127.0.0.1:{sim_port}"],
                      log_path=sim_log, env=env)
    wait_for_port(sim_port, sim, "kiloclaw fly-sim", sim_log)
    # Spin resolves the manifest's component paths against the app directory.
    app = dir_ / "app"
    release = app / "target" / "wasm32-wasip2" / "release"
    release.mkdir(parents=True)
    shutil.copy(REPO / "spin.toml", app / "spin.toml")
    built = Path(os.environ["CARGO_TARGET_DIR"]) / "wasm32-wasip2" / "release"
    for name in ("router", "auth", "instances", "reconciler"):
        (release / f"kiloclaw_{name}.wasm").symlink_to(built / f"kiloclaw_{name}.wasm")
    key, nextauth = secrets.token_hex(24), secrets.token_hex(32)
    upstream = f"http://127.0.0.1:{upstream_port}"
    for name, value in {
        "nextauth_secret": nextauth, "internal_api_secret": key,
        "gateway_token_secret": secrets.token_hex(32), "fly_api_token": "flysim-local-token",
        "fly_org_slug": "kiloclaw-local", "fly_api_base_url": f"http://127.0.0.1:{sim_port}",
        "fly_proxy_base_url": upstream, "fly_proxy_outbound_host": upstream,
    }.items():
        env[f"SPIN_VARIABLE_{name.upper()}"] = value
    port = free_port()
    log_path = dir_ / "spin.log"
    argv = ["spin", "up", "--from", str(app / "spin.toml"), "--listen", f"127.0.0.1:{port}",
            "--state-dir", str(app / ".spin")]
    log(f"starting: {' '.join(argv)} (in {app})")
    proc = procs.start("spin", argv, log_path=log_path, env=env, cwd=app)
    wait_for_port(port, proc, "spin up", log_path, timeout=args.ready_timeout)
    token = provision_user(port, key, [str(binary), "token", "--user", USER_ID, "--ttl", "12h"],
                           env)
    return Kiloclaw(proc, f"http://127.0.0.1:{port}", port, key, token, app, log_path)


def http_request(method: str, port: int, path: str, headers: dict, body: bytes | None = None,
                 timeout: float = 30, conn: http.client.HTTPConnection | None = None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


def upstream_counters(port: int) -> tuple[int, int]:
    """(accepted connections, requests) from the upstream's stub_status."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_status", timeout=10) as resp:
        text = resp.read().decode()
    accepts, _handled, requests = map(int, text.splitlines()[2].split())
    return accepts, requests


# --------------------------------------------------------------------------------------------
# Scenarios and runs


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    method: str
    path: str
    conns: int
    body_bytes: int = 0
    expect_bytes: int | None = None
    targets: tuple[str, ...] = ()  # default: direct, nginx and every app target
    platform: bool = False  # kiloclaw's own platform route (internal key, no proxying)

    def __post_init__(self) -> None:
        if not self.targets:
            object.__setattr__(self, "targets", ("direct", "nginx", *APP_TARGETS))


def scenarios() -> list[Scenario]:
    return [
        Scenario("get1k-c1", "GET 1 KiB, c=1", "GET", "/1k", 1, expect_bytes=1024),
        Scenario("get1k-c16", "GET 1 KiB, c=16", "GET", "/1k", 16, expect_bytes=1024),
        Scenario("get1k-c64", "GET 1 KiB, c=64", "GET", "/1k", 64, expect_bytes=1024),
        Scenario("get1m-c16", "GET 1 MiB, c=16", "GET", "/1m", 16, expect_bytes=1 << 20),
        Scenario("post64k-c16", "POST 64 KiB, c=16", "POST", "/post", 16, body_bytes=64 << 10),
        Scenario("status-c16", f"GET /api/platform/status?userId={USER_ID}, c=16", "GET",
                 f"/api/platform/status?userId={USER_ID}", 16, targets=tuple(APP_TARGETS),
                 platform=True),
        # The cost floors of kiloclaw's path, for the breakdown in docs/benchmarks.md: the host's
        # HTTP server alone (Spin's well-known health, answered without any component), and one
        # component instantiation with the least work (the router's public /health route).
        Scenario("spinhealth-c16", "GET /.well-known/spin/health (host only), c=16", "GET",
                 "/.well-known/spin/health", 16, targets=tuple(APP_TARGETS), platform=True),
        Scenario("health-c16", "GET /health (one instantiation, no auth), c=16", "GET",
                 "/health", 16, targets=tuple(APP_TARGETS), platform=True),
    ]


WRK_LUA = r"""
-- Written by bench/edge.py. Parameters come from the environment.
wrk.method = os.getenv("EDGE_METHOD") or "GET"
local body_bytes = tonumber(os.getenv("EDGE_BODY_BYTES") or "0")
if body_bytes > 0 then
  wrk.body = string.rep("x", body_bytes)
  wrk.headers["Content-Type"] = "application/octet-stream"
end
for name, value in (os.getenv("EDGE_HEADERS") or ""):gmatch("([^:\n]+):%s*([^\n]*)") do
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'EDGE_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max))
end
"""


@dataclass
class Bench:
    wrk: str
    lua: Path
    upstream: Nginx
    proxy: Nginx
    apps: dict[str, Kiloclaw]  # "kiloclaw" (our host), "spin" (the bundled Spin)
    results: dict = field(default_factory=dict)  # (scenario, target) -> [run dicts]

    def port(self, target: str) -> int:
        if target in self.apps:
            return self.apps[target].port
        return {"direct": self.upstream.port, "nginx": self.proxy.port}[target]

    def server_pid(self, target: str) -> int:
        if target in self.apps:
            return self.apps[target].proc.pid
        return {"direct": self.upstream.pid(), "nginx": self.proxy.pid()}[target]

    def headers(self, sc: Scenario, target: str) -> dict[str, str]:
        app = self.apps.get(target, self.apps["kiloclaw"])
        if sc.platform:
            return {"x-internal-api-key": app.key}
        # Every path gets the same request bytes; only the app servers check the JWT.
        return {"Authorization": f"Bearer {app.token}"}

    def check_alive(self) -> None:
        for name, proc in (("upstream nginx", self.upstream.proc), ("proxy nginx", self.proxy.proc),
                           *((name, app.proc) for name, app in self.apps.items())):
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with {proc.returncode}")

    def preflight(self) -> None:
        """One request per scenario and target: status 200 and the expected body size."""
        for sc in scenarios():
            for target in sc.targets:
                body = b"x" * sc.body_bytes if sc.body_bytes else None
                headers = dict(self.headers(sc, target))
                if body:
                    headers["Content-Type"] = "application/octet-stream"
                status, data = http_request(sc.method, self.port(target), sc.path, headers, body)
                if status != 200:
                    raise BenchError(f"preflight {sc.key} via {target}: HTTP {status} "
                                     f"{data[:300]!r}")
                if sc.expect_bytes is not None and len(data) != sc.expect_bytes:
                    raise BenchError(f"preflight {sc.key} via {target}: {len(data)} bytes, "
                                     f"expected {sc.expect_bytes}")
        # The upstream consumes a POST body: a second request on the same connection works.
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream.port, timeout=10)
        try:
            for _ in range(2):
                status, _ = http_request("POST", 0, "/post", {}, b"y" * (64 << 10), conn=conn)
                if status != 200:
                    raise BenchError(f"upstream POST keepalive check: HTTP {status}")
            status, data = http_request("GET", 0, "/1k", {}, conn=conn)
            if status != 200 or len(data) != 1024:
                raise BenchError("upstream did not discard the POST body")
        finally:
            conn.close()
        log("preflight ok: every path answers every scenario with 200 and the right size")

    def run(self, sc: Scenario, target: str, duration: int) -> dict:
        self.check_alive()
        env = dict(os.environ, EDGE_METHOD=sc.method, EDGE_BODY_BYTES=str(sc.body_bytes),
                   EDGE_HEADERS="\n".join(f"{k}: {v}" for k, v in self.headers(sc, target).items()))
        url = f"http://127.0.0.1:{self.port(target)}{sc.path}"
        argv = [self.wrk, "-t1", f"-c{sc.conns}", f"-d{duration}s", "--timeout", "10s",
                "-s", str(self.lua), url]
        server, upstream = self.server_pid(target), self.upstream.pid()
        # Let requests still in flight from the previous run (a proxy may keep forwarding after
        # wrk closed its connections) finish before the counters are read.
        time.sleep(0.5)
        up_before = upstream_counters(self.upstream.port)
        cpu_before = tree_cpu_ticks(server)
        upcpu_before = tree_cpu_ticks(upstream)
        try:
            out = subprocess.run(argv, env=env, capture_output=True, text=True,
                                 timeout=duration + 60)
        except subprocess.TimeoutExpired:
            raise BenchError(f"wrk did not finish: {' '.join(argv)}") from None
        cpu_after = tree_cpu_ticks(server)
        upcpu_after = tree_cpu_ticks(upstream)
        up_after = upstream_counters(self.upstream.port)
        m = re.search(r"^EDGE_RESULT (\{.*\})$", out.stdout, re.M)
        if out.returncode != 0 or not m:
            raise BenchError(f"wrk failed ({out.returncode}): {out.stderr.strip()}\n{out.stdout}")
        r = json.loads(m.group(1))
        n = max(r["requests"], 1)
        r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
        r["errors"] = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors",
                                         "status_errors", "timeouts"))
        r["cpu_us_per_req"] = (cpu_after - cpu_before) / CLK_TCK * 1e6 / n
        # Minus the stub_status probe's own connection and request.
        r["upstream_conns"] = up_after[0] - up_before[0] - 1
        r["upstream_requests"] = up_after[1] - up_before[1] - 1
        # For `direct` the upstream is the server under test (same number, shown once); the
        # platform route does not reach it.
        r["upstream_cpu_us_per_req"] = (
            None if target == "direct" or sc.platform
            else (upcpu_after - upcpu_before) / CLK_TCK * 1e6 / n)
        return r

    def memory(self) -> list[tuple[str, str, int, dict]]:
        rows = []
        servers = [("direct (upstream nginx)", self.upstream.processes()),
                   ("nginx proxy", self.proxy.processes())]
        for name, app in self.apps.items():
            # `spin up` serves from trigger processes it starts.
            children = [("child", c) for c in children_of(app.proc.pid)]
            servers.append((name, [("process", app.proc.pid), *children]))
        for target, procs in servers:
            for role, pid in procs:
                with contextlib.suppress(OSError):
                    rows.append((target, role, pid, memory_kib(pid)))
        return rows


# --------------------------------------------------------------------------------------------
# Report


def med(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0, unit=""):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{unit}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "–"


def machine_info() -> dict:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    rev = "unknown revision"
    with contextlib.suppress(Exception):
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                             capture_output=True, timeout=10).stdout.strip() or rev
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, text=True, capture_output=True, timeout=30).stdout
        if dirty.strip():
            rev += " + uncommitted changes"
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(), "git": rev}


def versions(nginx: str, wrk: str) -> dict:
    nv = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10).stderr.strip()
    wv = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10).stdout
    return {"nginx": nv.split("/", 1)[-1], "wrk": (wv.split()[1] if wv.split() else "?")}


def report(bench: Bench, args, meta: dict) -> str:
    lines = [
        "# Edge benchmark: direct vs nginx proxy_pass vs kiloclaw up"
        + (" vs Spin" if "spin" in APP_TARGETS else ""),
        "",
        f"Generated by `python3 bench/edge.py {' '.join(sys.argv[1:])}` on "
        f"{meta['started']} (see `docs/benchmarks.md`).",
        "",
    ]
    if args.quick or args.duration < 5 or args.rounds < 3:
        lines += [
            f"> **Noisy numbers**: {args.rounds} round(s) of {args.duration} s"
            f"{' (--quick)' if args.quick else ''}; a check of the setup, not a measurement.",
            "",
        ]
    lines += [
        f"- Machine: {meta['cpu']}, {meta['cores']} cores, Linux {meta['kernel']}; load average "
        f"before the run {meta['loadavg']}",
        f"- Code: {meta['git']}; kiloclaw release build; nginx {meta['nginx']}; wrk {meta['wrk']}",
        f"- Runs: {args.duration} s each, {args.rounds} interleaved round(s), 1 s warm-up per path;"
        f" `wrk -t1`; medians over rounds",
        f"- Upstream: nginx, `worker_processes {args.upstream_workers}`; nginx proxy: "
        f"`worker_processes auto`, upstream `keepalive`; kiloclaw: `kiloclaw up --proxy-upstream`"
        f" with the Fly simulator for the Machines API"
        + ("; spin: the same components on the bundled Spin (`spin up`, SQLite key-value, "
           "`kiloclaw fly-sim` for the Machines API)" if "spin" in APP_TARGETS else "")
        + f"; request logging {'on' if args.request_logs else 'off'} for all",
        "- CPU/req: utime+stime of the server's processes (nginx master+workers; the kiloclaw "
        "process; `spin up` and its trigger processes) over the run ÷ requests; upstream CPU/req "
        "likewise for the upstream nginx",
        "",
        "| scenario | path | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | upstream CPU µs/req"
        " | upstream conns | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summary = []
    for sc in scenarios():
        for target in sc.targets:
            runs = bench.results.get((sc.key, target), [])
            if not runs:
                continue
            lat = lambda k: fmt(med(runs, k) / 1000 if med(runs, k) is not None else None, 3)
            lines.append(
                f"| {sc.title} | {target} | {fmt(med(runs, 'rps'))} | {lat('p50_us')} | "
                f"{lat('p99_us')} | {lat('p999_us')} | {fmt(med(runs, 'cpu_us_per_req'), 1)} | "
                f"{fmt(med(runs, 'upstream_cpu_us_per_req'), 1)} | "
                f"{fmt(med(runs, 'upstream_conns'))} | {sum(r['errors'] for r in runs)} |")
        n = bench.results.get((sc.key, "nginx"))
        for app in APP_TARGETS:
            k = bench.results.get((sc.key, app))
            if not (k and n):
                continue
            summary.append(
                f"| {sc.title} | {app} | {ratio(med(k, 'rps'), med(n, 'rps'))} | "
                f"{ratio(med(k, 'cpu_us_per_req'), med(n, 'cpu_us_per_req'))} | "
                f"{ratio(med(k, 'p50_us'), med(n, 'p50_us'))} | "
                f"{ratio(med(k, 'p99_us'), med(n, 'p99_us'))} |")
    lines += [
        "",
        "Relative to nginx (medians; req/s above 1× = faster than nginx, CPU and latency "
        "above 1× = costlier):",
        "",
        "| scenario | path | req/s | CPU/req | p50 | p99 |",
        "|---|---|---:|---:|---:|---:|",
        *summary,
        "",
        "Memory after the last run (VmRSS now / VmHWM peak):",
        "",
        "| server | process | pid | VmRSS MiB | VmHWM MiB |",
        "|---|---|---:|---:|---:|",
    ]
    for target, role, pid, mem in meta["memory"]:
        lines.append(f"| {target} | {role} | {pid} | {fmt(mem.get('VmRSS', 0) / 1024, 1)} | "
                     f"{fmt(mem.get('VmHWM', 0) / 1024, 1)} |")
    lines += [
        "",
        "Per-round req/s (order of the paths rotates each round):",
        "",
        "| scenario | path | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |",
        "|---|---|" + "---:|" * args.rounds,
    ]
    for sc in scenarios():
        for target in sc.targets:
            runs = bench.results.get((sc.key, target), [])
            if runs:
                lines.append(f"| {sc.title} | {target} | "
                             + " | ".join(fmt(r["rps"]) for r in runs) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark the upstream directly, nginx proxy_pass and `kiloclaw up` side by "
                    "side against the same loopback upstream (see docs/benchmarks.md).")
    p.add_argument("--duration", type=int, help="seconds per run [5; 1 with --quick]")
    p.add_argument("--rounds", type=int, help="interleaved rounds [3; 1 with --quick]")
    p.add_argument("--quick", action="store_true",
                   help="short runs to check the setup (noisy numbers)")
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks-edge-latest.md"),
                   help="markdown report [docs/benchmarks-edge-latest.md]")
    p.add_argument("--json", help="also write every run's raw numbers here")
    p.add_argument("--upstream-workers", default="1",
                   help="worker_processes of the upstream nginx [1]")
    p.add_argument("--request-logs", action="store_true",
                   help="log every request (nginx access_log to a file, kiloclaw RUST_LOG=info) "
                        "instead of neither")
    p.add_argument("--no-build", action="store_true",
                   help="use the existing release binary and wasm components (no cargo)")
    p.add_argument("--kiloclaw", help="path of a kiloclaw binary to use instead of building one")
    p.add_argument("--no-install", action="store_true", help="never run apt-get")
    p.add_argument("--build-timeout", type=float, default=3600,
                   help="seconds allowed for cargo build --release [3600]")
    p.add_argument("--ready-timeout", type=float, default=1800,
                   help="seconds allowed for kiloclaw up to be ready, component build included "
                        "[1800]")
    p.add_argument("--spin", nargs="?", const=str(DEFAULT_SPIN_INSTALLER), metavar="INSTALLER",
                   help="also run the components on the bundled real Spin; INSTALLER prints its "
                        f"environment [{DEFAULT_SPIN_INSTALLER}]")
    p.add_argument("--keep-temp", action="store_true",
                   help="keep the temporary directory (configs, logs) for inspection")
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 1 if args.quick else 5
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.duration < 1 or args.rounds < 1:
        p.error("--duration and --rounds must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if sys.platform != "linux":
        log("needs Linux (/proc)")
        return 2
    signal.signal(signal.SIGTERM, _terminate_on_sigterm)
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="kiloclaw-edge-bench-"))
    # nginx workers run as an unprivileged user when the script is root: they must read www/.
    tmp.chmod(0o755)
    try:
        nginx, wrk = ensure_tools(args.no_install)
        binary = build_kiloclaw(args)
        meta = {"started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                **machine_info(), **versions(nginx, wrk)}

        www = tmp / "upstream" / "www"
        www.mkdir(parents=True)
        (www / "1k").write_bytes(secrets.token_bytes(1024))
        (www / "1m").write_bytes(secrets.token_bytes(1 << 20))
        for f in (www, www.parent):
            f.chmod(0o755)
        (www / "1k").chmod(0o644)
        (www / "1m").chmod(0o644)
        lua = tmp / "edge.lua"
        lua.write_text(WRK_LUA)

        up_port, proxy_port = free_port(), free_port()
        def access_log(name):
            return str(tmp / f"{name}-access.log") if args.request_logs else "off"
        up_dir = tmp / "upstream" / "nginx"
        upstream = start_nginx(procs, nginx, "upstream", up_dir,
                               upstream_conf(up_dir, www, up_port, args.upstream_workers,
                                             access_log("upstream")), up_port)
        proxy = start_nginx(procs, nginx, "proxy", tmp / "proxy",
                            proxy_conf(tmp / "proxy", proxy_port, up_port, access_log("proxy")),
                            proxy_port)
        log(f"upstream nginx on 127.0.0.1:{up_port}, nginx proxy on 127.0.0.1:{proxy_port}")
        kc = start_kiloclaw(procs, binary, tmp / "kiloclaw", up_port, args, args.request_logs)
        log(f"kiloclaw up on {kc.url}, user {USER_ID} provisioned and started")
        apps = {"kiloclaw": kc}
        if args.spin:
            APP_TARGETS.append("spin")
            apps["spin"] = start_spin(procs, binary, tmp / "spin", up_port, args,
                                      args.request_logs)
            log(f"spin up on {apps['spin'].url}, user {USER_ID} provisioned and started")

        bench = Bench(wrk, lua, upstream, proxy, apps)
        bench.preflight()
        for sc in scenarios():  # warm-up: every path, every scenario, not recorded
            for target in sc.targets:
                bench.run(sc, target, 1)
        total = args.rounds * sum(len(sc.targets) for sc in scenarios())
        done = 0
        for rnd in range(args.rounds):
            for sc in scenarios():
                order = list(sc.targets[rnd % len(sc.targets):] + sc.targets[:rnd % len(sc.targets)])
                for target in order:
                    r = bench.run(sc, target, args.duration)
                    r["round"] = rnd + 1
                    bench.results.setdefault((sc.key, target), []).append(r)
                    done += 1
                    log(f"[{done}/{total}] round {rnd + 1} {sc.key:<12} {target:<8} "
                        f"{r['rps']:>9,.0f} req/s  p99 {r['p99_us'] / 1000:7.3f} ms  "
                        f"cpu {r['cpu_us_per_req']:6.1f} µs/req  errors {r['errors']}")
        meta["memory"] = bench.memory()
        text = report(bench, args, meta)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"meta": meta, "args": vars(args),
                 "results": {f"{k[0]}/{k[1]}": v for k, v in bench.results.items()}}, indent=1))
        print(text)
        log(f"wrote {out}")
        return 0
    except BenchError as err:
        log(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        procs.stop_all()
        if args.keep_temp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
