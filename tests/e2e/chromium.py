"""Headless Chromium driven over raw CDP (only `websockets`), set up for WebRTC on loopback.

The flags are the ones in ../shared/reference/real-client-testing.md §1.2: loopback ICE candidates,
a fake microphone fed from a WAV file, no network besides 127.0.0.1, and `--mute-audio` so Chrome's
echo canceller does not eat the agent's voice. Chromium runs in its own process group with a
throw-away profile; `close()` stops that group only and deletes the profile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import websockets

CHROMIUM = "/usr/lib/chromium/chromium" if Path("/usr/lib/chromium/chromium").exists() else shutil.which("chromium")

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--disable-breakpad",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns,OptimizationHints,MediaRouter,DialMediaRouteProvider",
    "--mute-audio", "--remote-debugging-port=0", "--window-size=1280,860",
]
RESOLVE_NOTHING = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"  # no network besides loopback


class CdpError(RuntimeError):
    pass


class Page:
    """One tab, spoken to over its DevTools WebSocket."""

    def __init__(self, socket: Any) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self.console: list[str] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        async with self._lock:
            message_id = next(self._ids)
            await self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
            while True:
                reply = json.loads(await self._socket.recv())
                if reply.get("method") == "Runtime.consoleAPICalled":
                    args = reply["params"].get("args", [])
                    self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
                if reply.get("id") == message_id:
                    if "error" in reply:
                        raise CdpError(f"{method}: {reply['error']}")
                    result: dict[str, Any] = reply.get("result", {})
                    return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited), as JSON."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:60]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", within=15)

    async def wait_for(self, expression: str, within: float = 30.0, interval: float = 0.2) -> Any:
        """Poll until the expression is truthy; returns its value. Raises TimeoutError with the last value."""
        deadline = time.monotonic() + within
        value: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(CdpError):
                value = await self.evaluate(expression)
                if value:
                    return value
            await asyncio.sleep(interval)
        raise TimeoutError(f"waited {within} s for {expression!r}; last value {value!r}")

    async def screenshot(self, path: Path) -> None:
        result = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(result["data"]))


class Chromium:
    """`browser = await Chromium.launch(fake_mic=wav)`; `page = await browser.page()`; `await browser.close()`."""

    def __init__(self, process: subprocess.Popen[bytes], profile: Path, port: int) -> None:
        self.process = process
        self.profile = profile
        self.port = port
        self._sockets: list[Any] = []

    @classmethod
    async def launch(cls, fake_mic: Path | None = None, play_once: bool = True,
                     resolve: Mapping[str, str] | None = None) -> Chromium:
        """`resolve` maps names to loopback addresses (a page "on another site" that is served here)."""
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed: `make test` installs it (apt-get install chromium)")
        profile = Path(tempfile.mkdtemp(prefix="voxgate-chromium-"))
        rules = [f"MAP {name} {address}" for name, address in (resolve or {}).items()] + [RESOLVE_NOTHING]
        flags = [*FLAGS, f"--host-resolver-rules={', '.join(rules)}", f"--user-data-dir={profile}"]
        if fake_mic is not None:
            flags.append(f"--use-file-for-fake-audio-capture={fake_mic}{'%noloop' if play_once else ''}")
        process = await asyncio.to_thread(subprocess.Popen, [CHROMIUM, *flags, "about:blank"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                shutil.rmtree(profile, ignore_errors=True)
                raise RuntimeError("chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        return cls(process, profile, port)

    async def page(self) -> Page:
        async with httpx.AsyncClient() as http:
            targets = (await http.get(f"http://127.0.0.1:{self.port}/json/list")).json()
        target = next(t for t in targets if t.get("type") == "page")
        socket = await websockets.connect(target["webSocketDebuggerUrl"], max_size=None)
        self._sockets.append(socket)
        page = Page(socket)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        return page

    async def close(self) -> None:
        for socket in self._sockets:
            with contextlib.suppress(Exception):
                await socket.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await asyncio.to_thread(self.process.wait, 5)
        shutil.rmtree(self.profile, ignore_errors=True)
