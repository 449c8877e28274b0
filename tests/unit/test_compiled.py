"""The compiled media path (src/voxgate/compiled.py): built by `make install`, and never run when stale."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

from voxgate import compiled

MODULE = ("voxgate.session.listening",)


def _media_path(env: dict[str, str]) -> dict[str, str]:
    """How a new interpreter loads the media path: the state and each module's file."""
    code = ("import importlib, json, voxgate.compiled as c; "
            "print(json.dumps({'state': c.state(), **{m: importlib.import_module(m).__file__ for m in c.MODULES}}))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    loaded: dict[str, str] = json.loads(out.stdout)
    return loaded


def test_a_build_is_current_only_for_the_sources_it_was_built_from(tmp_path: Path) -> None:
    source = tmp_path / "voxgate" / "session" / "listening.py"
    other = tmp_path / "voxgate" / "sip" / "errors.py"  # not compiled, but what compiled code was built against
    for path in (source, other):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("SPEECH = 1\n")
    stamp = tmp_path / "stamp.json"
    assert compiled.changed(MODULE, stamp, tmp_path) == ["(no build stamp)"]
    stamp.write_text(json.dumps({"sources": compiled.fingerprint(tmp_path)}))
    assert compiled.changed(MODULE, stamp, tmp_path) == list(MODULE)  # stamped, but its extension is gone
    source.with_suffix(importlib.machinery.EXTENSION_SUFFIXES[0]).write_bytes(b"")
    assert compiled.changed(MODULE, stamp, tmp_path) == []
    os.utime(other, ns=(0, 0))  # a checkout: a new time, the same content
    assert compiled.changed(MODULE, stamp, tmp_path) == []
    other.write_text("SPEECH = 2\n")  # edited after the build
    assert compiled.changed(MODULE, stamp, tmp_path) == ["voxgate/sip/errors.py"]
    other.unlink()
    assert compiled.changed(MODULE, stamp, tmp_path) == ["voxgate/sip/errors.py"]
    stamp.write_text("{not json")
    assert compiled.changed(MODULE, stamp, tmp_path) == ["(no build stamp)"]


def test_make_install_compiles_the_whole_media_path() -> None:
    loaded = _media_path({})
    assert loaded.pop("state") == "compiled", "the media path runs from source: `make compile` builds it"
    assert sorted(loaded) == sorted(compiled.MODULES)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    assert all(path.endswith(suffix) for path in loaded.values()), loaded


def test_voxgate_compiled_0_runs_every_module_from_its_source() -> None:
    loaded = _media_path({"VOXGATE_COMPILED": "0"})
    assert loaded.pop("state") == "source"
    assert all(path.endswith(".py") for path in loaded.values()), loaded
