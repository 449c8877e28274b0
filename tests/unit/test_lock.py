"""The lock file is what every machine installs: it must say what pyproject.toml asks for.

`make run` and `make test` install uv.lock exactly (`uv sync --locked`), so a dependency added to, removed
from or re-ranged in pyproject.toml without `uv lock` would test one program and ship another. Two checks:
uv's own (`uv lock --check --offline`, which re-resolves nothing), and one in Python that reads both files,
so the failure names the requirement that drifted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
bench_pipecat = Path("bench", "pipecat")
# voxgate, the Pipecat side of the bridge benchmark, and the llama.cpp server the cascade is tested against
PROJECTS = [ROOT, ROOT / bench_pipecat, ROOT / "tests" / "llama"]


def _uv_check(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_uv(), "lock", "--check", "--offline", "--project", str(project)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})


def _uv() -> str:
    uv = ROOT / ".uv" / "bin" / "uv"  # what `make` bootstraps from tools/uv-requirements.txt
    found = str(uv) if uv.exists() else shutil.which("uv")
    assert found, "uv is not installed: run the tests through `make test`, which installs it"
    return found


def _requirement_key(name: str, specifier: str = "", extras: list[str] | None = None, marker: str = "") -> tuple:
    text = f"{name}{'[' + ','.join(sorted(extras)) + ']' if extras else ''}{specifier}"
    requirement = Requirement(text + (f"; {marker}" if marker else ""))
    return (canonicalize_name(requirement.name), tuple(sorted(requirement.extras)), str(requirement.specifier),
            str(requirement.marker or ""))


def _asked(pyproject: dict[str, Any]) -> set[tuple]:
    project = pyproject["project"]
    asked = {_requirement_key(*_split(Requirement(text))) for text in project.get("dependencies", [])}
    for extra, texts in project.get("optional-dependencies", {}).items():
        for text in texts:
            name, specifier, extras, marker = _split(Requirement(text))
            extra_marker = f"extra == '{extra}'"
            asked.add(_requirement_key(name, specifier, extras, f"({marker}) and {extra_marker}" if marker
                                       else extra_marker))
    return asked


def _split(requirement: Requirement) -> tuple[str, str, list[str], str]:
    return requirement.name, str(requirement.specifier), sorted(requirement.extras), str(requirement.marker or "")


def _locked(lock: dict[str, Any], name: str) -> set[tuple]:
    root = next(p for p in lock["package"] if canonicalize_name(p["name"]) == canonicalize_name(name))
    return {_requirement_key(r["name"], r.get("specifier", ""), r.get("extras"), r.get("marker", ""))
            for r in root["metadata"]["requires-dist"]}


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_uv_finds_the_lock_up_to_date(project: Path) -> None:
    done = _uv_check(project)
    assert done.returncode == 0, f"{project / 'uv.lock'} is stale; run `uv lock`:\n{done.stderr}"


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_the_lock_records_every_requirement_of_pyproject(project: Path) -> None:
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    lock = tomllib.loads((project / "uv.lock").read_text())
    asked, locked = _asked(pyproject), _locked(lock, pyproject["project"]["name"])
    assert asked == locked, (f"pyproject.toml and uv.lock disagree (run `uv lock`): only in pyproject "
                             f"{sorted(asked - locked)}, only in the lock {sorted(locked - asked)}")


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_every_locked_version_satisfies_its_range(project: Path) -> None:
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    lock = tomllib.loads((project / "uv.lock").read_text())
    versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        versions.setdefault(canonicalize_name(package["name"]), set()).add(package["version"])
    project_table = pyproject["project"]
    texts = list(project_table.get("dependencies", []))
    for extra in project_table.get("optional-dependencies", {}).values():
        texts.extend(extra)
    for text in texts:
        requirement = Requirement(text)
        locked = versions.get(canonicalize_name(requirement.name))
        assert locked, f"{requirement.name} is required but not locked"
        assert any(requirement.specifier.contains(Version(v), prereleases=True) for v in locked), \
            f"{requirement.name} is locked at {sorted(locked)}, outside {requirement.specifier}"


def test_a_drifted_pyproject_is_caught(tmp_path: Path) -> None:
    """Both checks can fail: a pyproject whose range moved no longer matches its lock (the same copy with
    pyproject untouched passes, so it is the drift that fails, whatever uv has cached)."""
    text = (ROOT / bench_pipecat / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text)
    (tmp_path / "uv.lock").write_bytes((ROOT / bench_pipecat / "uv.lock").read_bytes())
    assert _uv_check(tmp_path).returncode == 0
    drifted = text.replace('"fastapi",', '"fastapi>=0.1",')
    assert drifted != text
    (tmp_path / "pyproject.toml").write_text(drifted)
    done = _uv_check(tmp_path)
    assert done.returncode != 0, done.stderr
    pyproject = tomllib.loads(drifted)
    lock = tomllib.loads((tmp_path / "uv.lock").read_text())
    assert _asked(pyproject) != _locked(lock, pyproject["project"]["name"])
