"""Build hook: the wheel ships the browser client and the demo page.

Everything else about the package is declared in pyproject.toml; this file
only adds two setuptools commands.

``build_py`` (run by ``pip wheel .``, ``pip install .``, ``python -m build``)
builds the JS client with npm (``npm ci`` first when node_modules is missing
or older than package-lock.json, then ``npm run build``) and copies
web/dist/{index.html,client.js,demo.js} into the wheel as ``bridge/web/``,
where ``bridge.server.app`` finds them at run time. An editable install
(``pip install -e .``) skips this: it serves the checkout's web/dist.

Without npm on the machine, already built files in web/dist are used as they
are (an sdist carries them); with neither, the build fails and says why.
``AUTOMERGE_BRIDGE_SKIP_WEB_BUILD=1`` uses web/dist as it is without npm.

``sdist`` adds what that build needs: the JS sources, package.json, the lock
file and the built files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
WEB_DIST = ROOT / "web" / "dist"
# What the server serves (bridge/server/app.py, _web_routes), from web/dist.
WEB_FILES = ("index.html", "client.js", "demo.js")
# What `npm run build` reads, for the sdist.
WEB_INPUTS = ("package.json", "package-lock.json", "tsconfig.json", "web/build.mjs", "web/tsconfig.types.json")
WEB_INPUT_DIRS = ("web/src", "web/demo")


def _npm() -> str | None:
    return shutil.which("npm")


def _run(cmd: list[str]) -> None:
    print("running", " ".join(cmd), flush=True)
    try:
        subprocess.run(cmd, cwd=ROOT, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"automerge-bridge: building the browser client failed ({' '.join(cmd)}): {exc}") from exc


def build_web() -> Path:
    """Build web/dist (when npm and the JS sources are here); return it."""
    skip = os.environ.get("AUTOMERGE_BRIDGE_SKIP_WEB_BUILD", "") not in ("", "0")
    npm = None if skip else _npm()
    if npm and (ROOT / "package.json").is_file():
        lock = ROOT / "package-lock.json"
        installed = ROOT / "node_modules" / ".package-lock.json"
        if not installed.is_file() or (lock.is_file() and lock.stat().st_mtime > installed.stat().st_mtime):
            _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"])
        _run([npm, "run", "--silent", "build"])
    missing = [name for name in WEB_FILES if not (WEB_DIST / name).is_file()]
    if missing:
        why = "npm is not on PATH" if not npm else "`npm run build` did not produce them"
        raise SystemExit(
            f"automerge-bridge: web/dist/{{{','.join(missing)}}} missing ({why}); "
            "install Node 20+ and npm, or run `npm ci && npm run build` first"
        )
    return WEB_DIST


class BuildPyWithWeb(build_py):
    """build_py, plus bridge/web/{index.html,client.js,demo.js} in the build tree."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install serves the checkout's web/dist
        dist = build_web()
        target = Path(self.build_lib) / "bridge" / "web"
        target.mkdir(parents=True, exist_ok=True)
        for name in WEB_FILES:
            self.copy_file(str(dist / name), str(target / name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return [*outputs, *(str(Path(self.build_lib) / "bridge" / "web" / name) for name in WEB_FILES)]


class SDistWithWeb(sdist):
    """sdist, plus the JS sources and the built files, so a wheel builds from it."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        dist = build_web()
        extra = [ROOT / name for name in WEB_INPUTS]
        for folder in WEB_INPUT_DIRS:
            extra += sorted(p for p in (ROOT / folder).rglob("*") if p.is_file())
        extra += [dist / name for name in WEB_FILES]
        for source in extra:
            if source.is_file():
                dest = Path(base_dir) / source.relative_to(ROOT)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest)


setup(cmdclass={"build_py": BuildPyWithWeb, "sdist": SDistWithWeb})
