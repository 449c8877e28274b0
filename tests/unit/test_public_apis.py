"""voxgate uses its dependencies through their public APIs only: a guard over the source tree.

A server's internals change in any release (voxgate once subclassed uvicorn's WebSocket protocol and read
websockets' reader buffer, and had to pin uvicorn below its next minor version for it). These checks read
src/voxgate with `ast` and fail on the ways code reaches past an API: a private module or name imported,
anything of uvicorn's but what runs it, websockets modules its reference does not document, a private
attribute that none of voxgate's own code defines read off something other than `self`/`cls` (so it is
a library's), a uvicorn or websockets class subclassed, uvicorn's internals named in a string it loads.
An attribute without an underscore that a library never documented (`conn.reader.buffer`) is past what
a syntax check can see: review catches those.
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src" / "voxgate"
FILES = sorted(SOURCE.rglob("*.py"))
# Libraries whose classes are theirs to evolve: voxgate composes them, never subclasses them.
NO_SUBCLASSING = ("uvicorn", "websockets", "h11")
# What uvicorn offers a program that runs it.
UVICORN_PUBLIC = {"Config", "Server", "run"}
# The modules websockets' API reference documents (websockets.utils and .speedups, say, are not in it).
WEBSOCKETS_DOCUMENTED = {"websockets", "websockets.asyncio.client", "websockets.asyncio.server", "websockets.client",
                         "websockets.server", "websockets.protocol", "websockets.frames", "websockets.http11",
                         "websockets.datastructures", "websockets.exceptions", "websockets.typing", "websockets.uri",
                         "websockets.extensions", "websockets.extensions.permessage_deflate"}
# namedtuple's documented methods carry an underscore so they cannot clash with field names.
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_field_defaults", "_make"}
ATTRIBUTE_BUILTINS = ("getattr", "setattr", "hasattr", "delattr")
# Known uses of internals, each with the reason it stands; the test fails when one is gone (drop it here)
# as much as when a new one appears. None today: keep it that way.
KNOWN: dict[str, list[str]] = {}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(tree: ast.Module) -> list[str]:
    """Imports of a private module or name of another package, of uvicorn beyond its public names, and of
    websockets from a module its reference does not document."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names
                      if any(_private(part) for part in a.name.split("."))]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "voxgate":
                continue
            names = [a.name for a in node.names]
            if any(_private(part) for part in node.module.split(".")) or any(_private(n) for n in names):
                found.append(f"{node.lineno}: from {node.module} import {', '.join(names)}")
            elif node.module.split(".")[0] == "uvicorn" and (node.module != "uvicorn" or set(names) - UVICORN_PUBLIC):
                found.append(f"{node.lineno}: from {node.module} import {', '.join(names)} "
                             f"(uvicorn's API: {', '.join(sorted(UVICORN_PUBLIC))})")
            elif node.module.split(".")[0] == "websockets" and node.module not in WEBSOCKETS_DOCUMENTED:
                found.append(f"{node.lineno}: from {node.module} import {', '.join(names)} (not documented)")
    return found


def private_names_defined(trees: list[ast.Module]) -> set[str]:
    """Every private name voxgate's own code defines: functions, classes, attributes it assigns."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {name for name in names if _private(name)}


def private_attributes(tree: ast.Module, ours: set[str]) -> list[str]:
    """`x._name` (or getattr(x, "_name")) on anything but self or cls, where none of `ours` is `_name`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in NAMEDTUPLE_API | ours:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ATTRIBUTE_BUILTINS
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and _private(node.args[1].value)
              and node.args[1].value not in ours):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def server_subclasses(tree: ast.Module) -> list[str]:
    """Classes whose base was imported from uvicorn or websockets."""
    origin: dict[str, str] = {}  # local name -> where it was imported from
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            origin.update({(a.asname or a.name).split(".")[0]: a.name for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            origin.update({a.asname or a.name: node.module for a in node.names})
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                root = base
                while isinstance(root, ast.Attribute):
                    root = root.value
                source = origin.get(root.id, "") if isinstance(root, ast.Name) else ""
                if source.split(".")[0] in NO_SUBCLASSING:
                    found.append(f"{node.lineno}: class {node.name}({ast.unparse(base)}), from {source}")
    return found


def internals_named(text: str) -> list[str]:
    """uvicorn loads classes named by strings too (`ws="module:Class"`)."""
    return [name for name in ("uvicorn.protocols", "websockets.legacy") if name in text]


def test_dependencies_are_used_through_their_public_apis() -> None:
    """One test over the whole tree, each file's findings reported under its name: the tree is parsed once,
    by one worker (the private names voxgate defines need every file; a test per file made each xdist
    worker parse all of it)."""
    parsed = {path: (text, ast.parse(text, str(path))) for path in FILES for text in [path.read_text()]}
    ours = private_names_defined([tree for _, tree in parsed.values()])
    problems = []
    for path, (text, tree) in parsed.items():
        found = private_imports(tree) + private_attributes(tree, ours) + server_subclasses(tree) + internals_named(text)
        known = KNOWN.get(str(path.relative_to(SOURCE)), [])
        problems += [f"{path}: {use!r} is gone: drop it from KNOWN" for use in known
                     if not any(use in line for line in found)]
        found = [line for line in found if not any(use in line for use in known)]
        if found:
            problems.append(f"{path.relative_to(SOURCE.parent)}:\n" + "\n".join(found))
    assert not problems, "\n\n".join(problems)


def test_the_guard_catches_what_it_is_for() -> None:
    """What src/voxgate/transports/direct_socket.py did, and its kin: each is found (a guard that cannot
    fail is no guard)."""
    text = (
        "from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol\n"
        "from uvicorn.config import Config\n"
        "from websockets.speedups import apply_mask\n"
        "import websockets.server as ws_server\n"
        "from websockets.server import ServerProtocol\n"
        "class Lane(WebSocketsSansIOProtocol): ...\n"
        "class Sansio(ws_server.ServerProtocol): ...\n"
        "class Server(ServerProtocol): ...\n"
        "def peek(protocol, friend):\n"
        "    return protocol.conn._reader, getattr(protocol, '_buffer'), self._mine, row._replace(a=1), friend._own\n"
        "class Friend:\n"
        "    def _own(self): ...\n"
        "WS = 'voxgate.x:Lane'  # fine; 'uvicorn.protocols.websockets.auto' would not be\n")
    tree = ast.parse(text)
    assert [line.split(":")[0] for line in private_imports(tree)] == ["1", "2", "3"]
    assert [line.split(":")[0] for line in server_subclasses(tree)] == ["6", "7", "8"]
    assert [line.split(": ", 1)[1] for line in private_attributes(tree, private_names_defined([tree]))] == [
        "protocol.conn._reader", "getattr(protocol, '_buffer')"]
    assert internals_named(text) == ["uvicorn.protocols"]
    assert private_imports(ast.parse("import uvicorn\nfrom uvicorn import Config, Server\n")) == []
