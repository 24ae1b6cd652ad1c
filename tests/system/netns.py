"""
What the tests that use network namespaces share: whether they may be made
here, and the ``ip`` command.  They need root (``ip netns add``); a test
skips, with the reason, where namespaces cannot be made, except under CI as
root, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NoReturn

import pytest


def ci_as_root() -> bool:
    """Whether this is CI, running as root (where namespaces must work)."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes") and os.geteuid() == 0


def unavailable(reason: str) -> NoReturn:
    """Skip: network namespaces cannot be made here.  Under CI as root, fail."""
    if ci_as_root():
        pytest.fail(f"CI runs as root, yet network namespaces cannot be made: {reason}")
    pytest.skip(f"network namespaces cannot be made here: {reason}")


def ip_command() -> str:
    """The path of iproute2's ``ip``."""
    ip = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None)
    if ip is None:
        unavailable("the `ip` command (iproute2) is not installed")
    return ip


def run_ip(ip: str, *args: str) -> None:
    """Run ``ip args``; fail with its error output when it fails."""
    done = subprocess.run([ip, *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


def add_namespace(ip: str, name: str) -> None:
    """Make the namespace ``name``; skip (or fail, under CI as root) when it cannot be made."""
    done = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        unavailable(f"`ip netns add {name}` failed: {done.stderr.strip()} (uid {os.geteuid()})")


def delete_namespace(ip: str, name: str) -> None:
    """Delete the namespace ``name`` (and the links in it), if it is there."""
    subprocess.run([ip, "netns", "del", name], capture_output=True, check=False, timeout=30)
