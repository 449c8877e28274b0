"""Tools written as Python functions, named in the agent YAML by `handler`.

Two spellings:

    handler: "shop.orders:lookup_order"     # an importable module, then the function
    handler: "tools/orders.py:lookup_order"  # a file, relative to the agent YAML's directory

The function receives the validated arguments as keyword arguments and returns a JSON value.
`async def` functions are awaited on the event loop; plain functions run in a worker thread so a slow
one cannot stall other calls. A timed-out plain function cannot be stopped and keeps its thread until
it returns, so tools should bound their own I/O too.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["HandlerError", "PythonTool", "resolve_handler"]


class HandlerError(ValueError):
    """A `handler` string that names no callable (raised when the agent's tools are built)."""


_file_modules: dict[Path, ModuleType] = {}
_file_modules_lock = threading.Lock()


def _is_file_reference(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or "\\" in module_part


def _load_file_module(path: Path) -> ModuleType:
    """Import a tool file once per process; later agents naming the same file share the module."""
    with _file_modules_lock:
        module = _file_modules.get(path)
        if module is not None:
            return module
        if not path.is_file():
            raise HandlerError(f"tool file {path} does not exist")
        # A name unique to the path, so two agents' "tools.py" never collide in sys.modules.
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
        name = f"voxgate_tool_{path.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise HandlerError(f"cannot import tool file {path}")
        module = importlib.util.module_from_spec(spec)
        # Registered before execution, as importlib documents, so dataclasses and pickling inside work.
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise HandlerError(f"importing tool file {path} failed: {type(exc).__name__}: {exc}") from exc
        _file_modules[path] = module
        return module


def resolve_handler(handler: str, base_dir: Path | None) -> Callable[..., Any]:
    """Find the function a `handler` string names; relative file paths resolve against `base_dir`."""
    module_part, sep, attr = handler.rpartition(":")
    if not sep or not module_part or not attr:
        raise HandlerError(
            f"handler {handler!r} must look like 'package.module:function' or 'file.py:function'")
    if _is_file_reference(module_part):
        path = Path(module_part)
        if not path.is_absolute():
            if base_dir is None:
                raise HandlerError(f"handler {handler!r} is a relative path but the agent has no source file")
            path = base_dir / path
        module = _load_file_module(path.resolve())
    else:
        try:
            module = importlib.import_module(module_part)
        except Exception as exc:
            raise HandlerError(f"handler {handler!r}: cannot import {module_part!r}: "
                               f"{type(exc).__name__}: {exc}") from exc
    target: Any = module
    for name in attr.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise HandlerError(f"handler {handler!r}: {module_part!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise HandlerError(f"handler {handler!r} is not callable")
    return target  # type: ignore[no-any-return]


class PythonTool:
    """Runs one handler function; the registry supplies the timeout and the error reporting."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self._is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
            getattr(func, "__call__", None))  # noqa: B004 - callable objects with async __call__

    async def run(self, arguments: dict[str, Any]) -> Any:
        if self._is_async:
            return await self.func(**arguments)
        result = await asyncio.to_thread(self.func, **arguments)
        if inspect.isawaitable(result):  # a plain function that hands back a coroutine
            result = await result
        return result
