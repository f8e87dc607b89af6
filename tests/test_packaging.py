"""The wheel, as `pip install automerge-bridge` gets it: it carries the
browser client, the demo page and py.typed, and an installed (not editable)
bridge serves /, /client.js and /demo.js, also through the pytest plugin.

The wheel is built from a copy of the working tree (the files git knows or
does not ignore), so that the build hook's `npm run build` does not replace
the checkout's web/dist while other tests use it. The fresh virtualenv gets
only the wheel; its dependencies come from this environment's site-packages,
listed after its own, so the `bridge` it imports is the installed one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import httpx
import pytest

from bridge.testing import RunningBridge, free_port, stop_process, wait_healthy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WEB_FILES = ("bridge/web/index.html", "bridge/web/client.js", "bridge/web/demo.js")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AUTOMERGE_BRIDGE_", "PYTHONPATH", "VIRTUAL_ENV"))}


def _copy_tree(target: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # not deleted in the working tree
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    if (ROOT / "node_modules").is_dir():  # else the hook runs `npm ci`
        (target / "node_modules").symlink_to(ROOT / "node_modules")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("npm") is None:
        pytest.skip("building the wheel needs npm")
    source = tmp_path_factory.mktemp("source")
    out = tmp_path_factory.mktemp("wheelhouse")
    _copy_tree(source)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(out)],
        capture_output=True, text=True, env=_clean_env(), timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("automerge_bridge-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed (no editable checkout)."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=300)
    python = home / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True, timeout=300, env=_clean_env(),
    )
    # Dependencies from this environment, after the venv's own site-packages.
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip())
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return home


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (*WEB_FILES, "bridge/py.typed", "bridge/cli.py", "bridge/server/app.py"):
        assert name in names, name
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata
    assert "Requires-Dist: automerge==0.2.0.dev4" in metadata
    # The bundled client is the built one, not a placeholder.
    with zipfile.ZipFile(wheel) as z:
        assert len(z.read("bridge/web/client.js")) > 10_000
        assert b"demo.js" in z.read("bridge/web/index.html")


def test_installed_bridge_serves_web_files(venv, tmp_path):
    python = venv / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import bridge, bridge.server.app as a; print(bridge.__file__); print(a.WEB_DIST)"],
        cwd=tmp_path, capture_output=True, text=True, check=True, env=_clean_env(),
    ).stdout.splitlines()
    assert Path(where[0]).is_relative_to(venv), f"imported the wrong bridge: {where[0]}"
    assert Path(where[1]).is_relative_to(venv), f"web files from the checkout: {where[1]}"

    version = subprocess.run([str(venv / "bin" / "automerge-bridge"), "--version"], capture_output=True, text=True,
                             cwd=tmp_path, env=_clean_env())
    assert version.returncode == 0 and version.stdout.startswith("automerge-bridge 0."), version

    port = free_port()
    process = subprocess.Popen(
        [str(venv / "bin" / "automerge-bridge"), "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
         "--log-level", "warning"],
        cwd=tmp_path, env=_clean_env(),
    )
    try:
        wait_healthy(RunningBridge("127.0.0.1", port, process=process))
        for path, kind in (("/", "text/html"), ("/client.js", "javascript"), ("/demo.js", "javascript")):
            answer = httpx.get(f"http://127.0.0.1:{port}{path}")
            assert answer.status_code == 200, (path, answer.text[:200])
            assert kind in answer.headers["content-type"], (path, answer.headers["content-type"])
    finally:
        stop_process(process)


def test_installed_pytest_plugin_serves_the_demo(venv, tmp_path):
    """The README's "Testing your own app" example needs only the files served."""
    (tmp_path / "test_users_app.py").write_text(textwrap.dedent('''
        import httpx

        def test_demo_page(bridge_server, wait_durable):
            import bridge
            assert "site-packages" in bridge.__file__
            for path in ("/", "/client.js", "/demo.js"):
                assert httpx.get(bridge_server.http_url + path).status_code == 200, path
    '''))
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_users_app.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_clean_env(),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout


def test_runtime_dependencies_are_ranges_except_automerge():
    """Installed into other people's apps, the bridge must not pin what they
    pin too; only the Automerge binding is exact (its core version is the
    protocol). CI stays reproducible through constraints.txt."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    exact = [d for d in project["dependencies"] if "==" in d]
    assert exact == ["automerge==0.2.0.dev4"]
    # Names compared as PEP 503 normalises them (pip writes prometheus_client or prometheus-client).
    pinned = {line.split("==")[0].lower().replace("_", "-")
              for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line}
    for dependency in project["dependencies"]:
        name = dependency.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower().replace("_", "-")
        assert name in pinned, f"{name} is not pinned in constraints.txt"
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
