"""The media path's modules compiled to C with mypyc, and the guard that never lets a stale build run.

A phone call costs voxgate about 50 small steps a second each way (a WebSocket frame or RTP packet, its
JSON or header, G.711, the VAD, the echo gate, the turn detector, the playout), and nearly all of that
time is CPython's own evaluation of small functions, not any one hot spot (docs/architecture.md,
"Compiled media path"). mypyc compiles these modules, as they are and type-checked as they are, into
C extensions that sit beside their sources (`make install` builds them: `voxgate compile`).
The sources stay the truth: when any voxgate source changes after the build, or `VOXGATE_COMPILED=0` is set (a profiler
that reads Python frames, a debugger), every module here runs from its source, all together, since
compiled modules call each other directly and must never mix with newer source. Without a C compiler
the build is skipped and everything runs from source, only slower.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["MODULES", "build", "changed", "fingerprint", "guard", "state"]

# What a phone or SIP call runs 50 times a second each way, and what that calls in turn.
MODULES: tuple[str, ...] = (
    "voxgate.audio.clock",
    "voxgate.audio.formats",
    "voxgate.audio.g711",
    "voxgate.audio.playout",
    "voxgate.engines.local.vad",
    "voxgate.server.websocket_connection",
    "voxgate.server.websocket_frames",
    "voxgate.session.echo_gate",
    "voxgate.session.listening",
    "voxgate.session.outbound",
    "voxgate.session.playback",
    "voxgate.session.response",
    "voxgate.session.session",
    "voxgate.session.turn_detection",
    "voxgate.sip.dtmf",
    "voxgate.sip.jitter",
    "voxgate.sip.rtcp",
    "voxgate.sip.rtp",
    "voxgate.transports.audio_output",
    "voxgate.transports.caller_input",
    "voxgate.transports.carrier_call",
    "voxgate.transports.frame_ticker",
    "voxgate.transports.media_stream",
    "voxgate.transports.rtp_line",
    "voxgate.transports.sip_call",
    "voxgate.transports.twilio_messages",
    "voxgate.transports.webrtc",
    "voxgate.webrtc.peer",
)

_SRC = Path(__file__).resolve().parent.parent  # the directory that holds the voxgate package
_STAMP = Path(__file__).with_name(".compiled.json")  # the sources the extensions were built from
_GROUP = "voxgate_compiled"  # mypyc's shared runtime library for the group: voxgate_compiled__mypyc.*.so
_ENABLED = "VOXGATE_COMPILED"


def _source(module: str, src: Path = _SRC) -> Path:
    return src.joinpath(*module.split(".")).with_suffix(".py")


def _extension(module: str, src: Path = _SRC) -> Path:
    # What build_ext --inplace writes for this interpreter (e.g. listening.cpython-311-x86_64-linux-gnu.so).
    return _source(module, src).with_suffix(importlib.machinery.EXTENSION_SUFFIXES[0])


def _sources(src: Path) -> list[Path]:
    return sorted((src / "voxgate").rglob("*.py"))


def fingerprint(src: Path = _SRC) -> dict[str, list[int | str]]:
    """Every voxgate source as [size, mtime_ns, sha256]: mypyc compiles a module against the types of all it
    imports, so a change to any of them (a base class's attribute, a dataclass's field) can change what the
    compiled code must be."""
    prints: dict[str, list[int | str]] = {}
    for path in _sources(src):
        status, digest = path.stat(), hashlib.sha256(path.read_bytes()).hexdigest()
        prints[path.relative_to(src).as_posix()] = [status.st_size, status.st_mtime_ns, digest]
    return prints


def changed(modules: Sequence[str], stamp: Path = _STAMP, src: Path = _SRC) -> list[str]:
    """Why the build cannot run: sources that differ from the ones it was built from, and extensions that are
    missing (everything, without a stamp). Files whose size and time match the stamp are not read again."""
    try:
        built = json.loads(stamp.read_text())["sources"]
        assert isinstance(built, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return ["(no build stamp)"]
    differ = [m for m in modules if not _extension(m, src).exists()]
    paths = {path.relative_to(src).as_posix(): path for path in _sources(src)}
    differ += [name for name in built if name not in paths]  # a source deleted since
    for name, path in paths.items():
        was = built.get(name)
        if not isinstance(was, list) or len(was) != 3:
            differ.append(name)
            continue
        status = path.stat()
        if [status.st_size, status.st_mtime_ns] == was[:2]:
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != was[2]:  # a checkout touches times, not content
            differ.append(name)
    return differ


def state() -> str:
    """'compiled', 'source' (never built, or turned off) or 'source (stale build)': how the media path runs."""
    return _state


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Loads each of MODULES from its .py file, ahead of the extension beside it."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(fullname))


def guard() -> None:
    """Run from source unless every extension is there and current (called once, when voxgate is imported)."""
    global _state
    if not any(_extension(module).exists() for module in MODULES):
        _state = "source"
        return
    if os.environ.get(_ENABLED, "1") == "0":
        _state = "source"
    elif changed(MODULES):
        _state = "source (stale build)"
    else:
        _state = "compiled"
        return
    sys.meta_path.insert(0, _SourcesFirst())


def _clean(src: Path = _SRC) -> None:
    _STAMP.unlink(missing_ok=True)
    for module in MODULES:
        _extension(module, src).unlink(missing_ok=True)
    for runtime in src.glob(f"{_GROUP}__mypyc.*"):
        runtime.unlink()


def build(force: bool = False) -> bool:
    """Compile MODULES beside their sources unless the build is current; False when it cannot (no compiler,
    no mypyc), which leaves everything to run from source."""
    if not force and not changed(MODULES):
        return True
    _clean()
    import tempfile

    try:
        from mypyc.build import mypycify
        from setuptools import setup
    except ImportError as exc:
        print(f"voxgate: not compiling the media path ({exc}); it runs from source", file=sys.stderr)
        return False
    sources = fingerprint()  # what is compiled is what is read now, whatever changes during the build
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="voxgate-mypyc-") as work:
        try:
            os.chdir(_SRC)  # mypyc names each module by its path from here
            setup(name=_GROUP, script_args=["-q", "build_ext", "--inplace", "--build-temp", work],
                  ext_modules=mypycify([str(_source(m).relative_to(_SRC)) for m in MODULES],
                                       target_dir=os.path.join(work, "c"), group_name=_GROUP))
        except (Exception, SystemExit) as exc:  # setuptools exits on a compiler error
            _clean()
            print(f"voxgate: compiling the media path failed ({exc}); it runs from source", file=sys.stderr)
            return False
        finally:
            os.chdir(cwd)
    _STAMP.write_text(json.dumps({"python": sys.version, "sources": sources}, indent=1) + "\n")
    return True


_state = "source"
