"""A small Chrome DevTools Protocol client over headless Chromium: load a
page, record every network request it makes, evaluate expressions in it,
take screenshots of its parts. Used to check the report in a real browser
(the tests) and to take the screenshots under docs/ (``python -m
exporter.report.screenshots``).

Only the protocol's stable domains are used (Target, Page, Network, Runtime,
Log, Emulation); the browser runs with a throw-away profile and is killed on
exit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from .pdf import chromium_flags, find_chromium

START_TIMEOUT = 30.0


class BrowserError(Exception):
    """Chromium did not start, or a protocol call failed."""


class Browser:
    """``async with Browser() as b: page = await b.open(url)``."""

    def __init__(self, chromium: str | None = None, width: int = 1200, height: int = 900) -> None:
        self.path = find_chromium(chromium)
        self.width = width
        self.height = height
        self._profile = tempfile.TemporaryDirectory(prefix="kae-cdp-", ignore_cleanup_errors=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: list[dict[str, Any]] = []
        self._event_added = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Browser:
        profile = self._profile.name
        self._proc = subprocess.Popen(
            [
                self.path,
                *chromium_flags(profile),
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--hide-scrollbars",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = port_file.read_text() if port_file.exists() else ""
            if text.count("\n") >= 1:
                break
            if self._proc.poll() is not None or time.monotonic() > deadline:
                await self.__aexit__(None, None, None)
                raise BrowserError("Chromium did not open its DevTools port")
            await asyncio.sleep(0.05)
        port, path = text.split("\n")[:2]
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(
            f"ws://127.0.0.1:{port.strip()}{path.strip()}", max_msg_size=0
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ws is not None and not self._ws.closed:
            # a browser asked to close takes its helper processes with it
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call("Browser.close"), 5.0)
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(10.0)
            except subprocess.TimeoutExpired:
                # its own session (start_new_session): the group is the browser's
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getpgid(proc.pid) == proc.pid:
                        os.killpg(proc.pid, signal.SIGKILL)
                proc.kill()
                proc.wait(10.0)
        self._profile.cleanup()

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._waiting.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            else:
                self._events.append(data)
                self._event_added.set()

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        assert self._ws is not None
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = fut
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        await self._ws.send_str(json.dumps(msg))
        data = await asyncio.wait_for(fut, START_TIMEOUT)
        if "error" in data:
            raise BrowserError(f"{method}: {data['error'].get('message')}")
        return data.get("result", {})

    async def wait_event(self, method: str, session: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if any(
                ev.get("method") == method and ev.get("sessionId") == session for ev in self._events
            ):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no {method} within {timeout:g}s")
            self._event_added.clear()
            try:
                await asyncio.wait_for(self._event_added.wait(), left)
            except TimeoutError:
                continue

    async def open(self, url: str) -> Page:
        """A new tab that has loaded ``url``, its network requests recorded."""
        target = await self.call("Target.createTarget", url="about:blank")
        attached = await self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        session = attached["sessionId"]
        await self.call("Network.enable", session)
        await self.call("Page.enable", session)
        # exceptions and console calls (Runtime), and what the browser itself
        # reports (Log): a load the Content Security Policy refused, a failed one
        await self.call("Runtime.enable", session)
        await self.call("Log.enable", session)
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        page = Page(self, session)
        await self.call("Page.navigate", session, url=url)
        await self.wait_event("Page.loadEventFired", session)
        return page


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def requests(self) -> list[str]:
        """The URL of every request the page made (the page itself included)."""
        return [
            ev["params"]["request"]["url"]
            for ev in self.browser._events
            if ev.get("sessionId") == self.session
            and ev.get("method") == "Network.requestWillBeSent"
        ]

    def console_and_errors(self) -> list[dict[str, Any]]:
        """Exceptions, console calls and the browser's own log entries (a
        request the Content Security Policy refused is one)."""
        return [
            ev
            for ev in self.browser._events
            if ev.get("sessionId") == self.session
            and ev.get("method")
            in ("Runtime.exceptionThrown", "Runtime.consoleAPICalled", "Log.entryAdded")
        ]

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression, evaluated by DevTools (the
        page itself runs no script)."""
        res = await self.browser.call(
            "Runtime.evaluate", self.session, expression=expression, returnByValue=True
        )
        if "exceptionDetails" in res:
            raise BrowserError(f"evaluate failed: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    async def screenshot(self, selector: str, path: Path, max_height: float = 1600) -> None:
        """A PNG of the element ``selector`` matches: its top ``max_height`` pixels."""
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.left + window.scrollX, r.top + window.scrollY,"
            " r.width, r.height]; })()"
        )
        x, y, w, h = box
        h = min(h, max_height)
        res = await self.browser.call(
            "Page.captureScreenshot",
            self.session,
            format="png",
            captureBeyondViewport=True,
            clip={"x": x - 8, "y": y - 8, "width": w + 16, "height": h + 16, "scale": 1},
        )
        path.write_bytes(base64.b64decode(res["data"]))
