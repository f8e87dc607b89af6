"""`automerge-bridge` as a user runs it: help, version, environment
variables, and one clear line (exit 2) for every bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from bridge.testing import RunningBridge, free_port, stop_process, wait_healthy

ENV_PREFIX = "AUTOMERGE_BRIDGE_"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({ENV_PREFIX + k: v for k, v in extra.items()})
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(*args: str, cwd: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", *args], cwd=cwd, env=_env(**env))




@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"]], ids=["main", "serve"])
def test_help_is_plain_text(tmp_path, args):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "automerge-bridge" in text
    for markup in ("``", ":class:", ":func:", ":mod:", "::"):
        assert markup not in text, f"reST markup {markup!r} in --help"


def test_serve_help_shows_defaults_and_variables(tmp_path):
    text = run_cli("serve", "--help", cwd=tmp_path).stdout
    flat = " ".join(text.split())
    assert "(default: 8080)" in flat
    assert "(default: 127.0.0.1)" in flat
    assert "(default: data)" in flat
    assert "(default: info)" in flat
    for flag in ("--host", "--port", "--data-dir", "--store", "--max-frame-bytes", "--flush-timeout",
                 "--idle-unload-after", "--log-level"):
        variable = ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()
        assert flag in flat and variable in flat, flag
    assert "command line wins" in flat


def test_version(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"automerge-bridge {version('automerge-bridge')}"


def test_environment_variables_configure_serve(tmp_path):
    port = free_port()
    data_dir = tmp_path / "from-env"
    process = start_cli("serve", cwd=tmp_path, PORT=str(port), DATA_DIR=str(data_dir), LOG_LEVEL="WARNING")
    try:
        wait_healthy(RunningBridge("127.0.0.1", port, process=process))
        assert (data_dir / "bridge.sqlite3").is_file()
        assert not (tmp_path / "data").exists()  # the default was not used
    finally:
        stop_process(process)
    assert process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown


def test_flags_win_over_environment_variables(tmp_path):
    port = free_port()
    # A bad variable does not matter when its flag is given.
    process = start_cli(
        "serve", f"--port={port}", "--store", "memory:", cwd=tmp_path,
        PORT="not-a-port", STORE="nosuch://x", LOG_LEVEL="warning",
    )
    try:
        wait_healthy(RunningBridge("127.0.0.1", port, process=process))
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
        assert not (tmp_path / "data").exists()  # memory: store, no data directory
    finally:
        stop_process(process)


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], dict[str, str], str]]:
    a_file = tmp / "a-file"
    a_file.write_text("not a directory")
    return {
        # name: (arguments, environment, what the line must mention)
        "log-level": (["--log-level", "loud"], {}, "--log-level"),
        "port": (["--port", "abc"], {}, "--port"),
        "port-range": (["--port", "70000"], {}, "--port"),
        "max-frame-bytes": (["--max-frame-bytes", "0"], {}, "--max-frame-bytes"),
        "store-scheme": (["--store", "nosuch://x"], {}, "nosuch://x"),
        "store-sqlite-url": (["--store", "sqlite://host/file"], {}, "sqlite://host/file"),
        "data-dir-is-a-file": (["--data-dir", str(a_file)], {}, str(a_file)),
        "data-dir-under-a-file": (["--data-dir", str(a_file / "sub")], {}, str(a_file / "sub")),
        "env-port": ([], {"PORT": "abc"}, "AUTOMERGE_BRIDGE_PORT"),
        "env-log-level": ([], {"LOG_LEVEL": "loud"}, "AUTOMERGE_BRIDGE_LOG_LEVEL"),
        "env-flush-timeout": ([], {"FLUSH_TIMEOUT": "-1"}, "AUTOMERGE_BRIDGE_FLUSH_TIMEOUT"),
        "env-store": ([], {"STORE": "nosuch://x"}, "nosuch://x"),
        "env-data-dir": ([], {"DATA_DIR": str(a_file)}, str(a_file)),
        "no-command": (None, {}, "COMMAND"),
        "unknown-flag": (["--po", "8080"], {}, "--po"),
        "workers-on-sqlite": (["--workers", "2"], {}, "SQLite is one process's"),
        "bus-on-sqlite": (["--bus", "redis://127.0.0.1:1/0"], {}, "SQLite is one process's"),
        "bus-on-memory": (["--store", "memory:", "--bus", "redis://127.0.0.1:1/0"], {}, "memory is one process's"),
        "workers-without-bus": (["--workers", "2", "--store", "postgresql://postgres@127.0.0.1/x"], {}, "--bus"),
        "workers-zero": (["--workers", "0"], {}, "--workers"),
        "postgres-unreachable": (["--store", "postgresql://nobody:s3cret@127.0.0.1:1/none"], {}, "cannot open store"),
    }


BAD = [
    "log-level", "port", "port-range", "max-frame-bytes", "store-scheme", "store-sqlite-url",
    "data-dir-is-a-file", "data-dir-under-a-file", "env-port", "env-log-level", "env-flush-timeout",
    "env-store", "env-data-dir", "no-command", "unknown-flag", "workers-on-sqlite", "bus-on-sqlite",
    "bus-on-memory", "workers-without-bus", "workers-zero", "postgres-unreachable",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    args, env, mentions = _bad_inputs(tmp_path)[case]
    # --port 0, so that an input let through by mistake cannot take a used port
    # (except where the port itself comes from the environment).
    argv = [] if args is None else ["serve", *([] if "PORT" in env else ["--port", "0"]), *args]
    result = run_cli(*argv, cwd=tmp_path, **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("automerge-bridge")
    assert "Traceback" not in result.stderr
    assert mentions in lines[0]
    assert "s3cret" not in result.stderr, "a password in a store URL is never printed"


def test_unwritable_data_dir(tmp_path):
    # A directory nobody can write, root included (tests run as root here,
    # and root ignores permission bits): a read-only filesystem.
    result = run_cli("serve", "--port", "0", "--data-dir", "/proc", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "/proc" in result.stderr and "Traceback" not in result.stderr
