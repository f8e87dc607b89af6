"""The deployment recipes in deploy/ (and the README's operations section)
name only options that `automerge-bridge serve` has: a renamed flag must
not leave a recipe that fails at 3 a.m. CI does not build the Docker image
or run nginx, Caddy or systemd; this keeps their bridge side honest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.cli import ENV_PREFIX, SERVE_OPTIONS

ROOT = Path(__file__).resolve().parents[1]
FLAGS = {option.flag for option in SERVE_OPTIONS}
ENV = {option.env for option in SERVE_OPTIONS}


def _serve_commands(text: str) -> list[str]:
    """Each `automerge-bridge serve ...` command line, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return re.findall(r"automerge-bridge\"?,? *\"?serve\b[^\n]*", joined)


@pytest.mark.parametrize("name", ["Dockerfile", "automerge-bridge.service"])
def test_recipes_use_only_real_options(name):
    text = (ROOT / "deploy" / name).read_text()
    commands = _serve_commands(text)
    assert commands, f"no serve command found in deploy/{name}"
    for command in commands:
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", command):
            assert flag in FLAGS, f"deploy/{name}: {flag} is not a serve option"
    for variable in re.findall(rf"{ENV_PREFIX}[A-Z_]+", text):
        assert variable in ENV, f"deploy/{name}: {variable} is not a serve option's variable"


def test_the_readme_operations_section_uses_only_real_options():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Operations"):]
    section = section[: section.index("\n## ", 4)]
    for command in _serve_commands(section):
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", command):
            assert flag in FLAGS, f"README operations: {flag} is not a serve option"


def test_proxies_pass_the_upgrade_and_the_client_address():
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    for needed in ("proxy_set_header Upgrade $http_upgrade", "X-Forwarded-For", "proxy_read_timeout"):
        assert needed in nginx
    caddy = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "reverse_proxy 127.0.0.1:8080" in caddy and "health_uri /readyz" in caddy
