"""
The package as it ships: the sdist and the wheel that ``python -m build``
makes pass ``twine check``, say what they hold, and the wheel installed in
a fresh venv runs a mesh.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import twisted_mesh
from tests.integration.twistd import REPO, Venv

BUILD_TIMEOUT = 600


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel of this checkout, as ``python -m build`` makes them."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_twine_checks_both(dist: Path) -> None:
    files = sorted(dist.iterdir())
    assert [path.name for path in files] == [
        f"twisted_mesh-{twisted_mesh.__version__}-py3-none-any.whl",
        f"twisted_mesh-{twisted_mesh.__version__}.tar.gz",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.count("PASSED") == 2, done.stdout + done.stderr


def test_the_metadata_names_every_supported_python(dist: Path) -> None:
    """One version everywhere; a classifier for each Python tox tests, and for Twisted and typing."""
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = Parser().parsestr(
            archive.read(f"twisted_mesh-{twisted_mesh.__version__}.dist-info/METADATA").decode()
        )
        names = set(archive.namelist())
    assert metadata["Version"] == twisted_mesh.__version__
    assert metadata["Requires-Python"] == ">=3.10"
    classifiers = set(metadata.get_all("Classifier"))
    tox = configparser.ConfigParser()
    tox.read(REPO / "tox.ini")
    tested = re.findall(r"py3(\d+)", tox["tox"]["envlist"])
    assert tested == ["10", "11", "12", "13"]
    for minor in tested:
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert {"Framework :: Twisted", "Typing :: Typed"} <= classifiers
    assert metadata["License"] == "MIT" and metadata.get_all("Project-URL")
    assert f"twisted_mesh-{twisted_mesh.__version__}.dist-info/licenses/LICENSE" in names
    assert "twisted_mesh/py.typed" in names and "twisted_mesh/web/static/twisted_mesh.js" in names


def test_the_sdist_builds_again(dist: Path) -> None:
    """The sdist holds what a build needs: the license, the README, the browser bundle."""
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"setup.py", "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "twisted/plugins/mesh.py"} <= names
    assert "twisted_mesh/web/static/twisted_mesh.js" in names


#: Two nodes of the installed package exchange a message, and the program
#: says where twisted_mesh came from.
TWO_NODES = """
from twisted.internet import defer, task
import twisted_mesh
from twisted_mesh import MeshSocket

async def main(reactor):
    a, b = MeshSocket("127.0.0.1", 0), MeshSocket("127.0.0.1", 0)
    await b.connect("127.0.0.1", a.out_addr[1])
    a.send("from the wheel")
    msg = await b.next_message()
    print(twisted_mesh.__version__, twisted_mesh.__file__, msg.packets)
    await a.close()
    await b.close()

task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
"""


def test_the_installed_wheel_runs_a_mesh(venv: Venv, tmp_path: Path) -> None:
    """The wheel in a fresh venv: ``twistd mesh --help`` works, and two nodes exchange a message."""
    help_run = subprocess.run(
        [venv.exe("twistd"), "mesh", "--help"], env=venv.env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert help_run.returncode == 0 and "--port" in help_run.stdout and "--signed" in help_run.stdout, help_run
    done = subprocess.run(
        [venv.exe("python"), "-c", TWO_NODES], env=venv.env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    version, path, packets = done.stdout.strip().split(" ", 2)
    assert version == twisted_mesh.__version__
    assert "site-packages" in path and not path.startswith(str(REPO))
    assert packets == "(0, 'from the wheel')"


def test_the_changelog_has_this_release() -> None:
    """CHANGELOG.md's newest entry is the package's version, and the sdist carries it."""
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## (\S+) \(\d{4}-\d{2}-\d{2}\)$", text, re.M)
    assert releases and releases[0] == twisted_mesh.__version__
