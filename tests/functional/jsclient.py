"""Drive real pusher-js and Laravel Echo clients (tests/js/client.mjs) from async tests.

Each client is a Node process. It takes one JSON command per stdin line and prints one JSON
observation per stdout line (see the header of client.mjs). `JSClient.wait_for()` waits, with a
bounded timeout, for an observation of a given type whose fields match; every observation is kept
in `messages` so a test can also prove that something did *not* arrive (`seen()`), after waiting
for a later sentinel.

Channel authorization uses the official `pusher` Python SDK: `AuthEndpoint` is a small aiohttp
app standing in for Laravel's `/broadcasting/auth`, answering with `Pusher.authenticate()`.

Test modules define their fixtures as `async with JSClients() as clients: yield clients` and
`async with AuthEndpoint(server) as endpoint: yield endpoint`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import re
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pusher
import pusher.http
import pytest
from aiohttp import web

JS_DIR = Path(__file__).resolve().parents[1] / "js"
CLIENT_SCRIPT = JS_DIR / "client.mjs"
DEFAULT_TIMEOUT = 10.0
SOCKET_ID_RE = r"^\d+\.\d+$"

Message = dict[str, Any]


def node_command() -> list[str]:
    """The command that runs client.mjs, or a test failure saying what is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is not installed: the pusher-js/Echo tests need Node.js (deselect with -m 'not node')"
        )
    for pkg in ("pusher-js", "laravel-echo"):
        if not (JS_DIR / "node_modules" / pkg / "package.json").is_file():
            pytest.fail(f"tests/js/node_modules/{pkg} is missing: run `make node-deps`")
    return [node, str(CLIENT_SCRIPT)]


class JSClient:
    """One running client.mjs process."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.messages: list[Message] = []
        self.stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._consumed: set[int] = set()
        self._cond = asyncio.Condition()
        self._eof = False
        self._ids = itertools.count(1)
        self._tasks = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    @classmethod
    async def start(cls, name: str, config: dict[str, Any]) -> JSClient:
        proc = await asyncio.create_subprocess_exec(
            *node_command(),
            json.dumps(config),
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(name, proc)

    # -- reading ---------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for raw in self.proc.stdout:
                line = raw.decode(errors="replace").strip()
                if not line:
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    msg = {"type": "unparsed", "line": line}
                async with self._cond:
                    self.messages.append(msg)
                    self._cond.notify_all()
        finally:
            async with self._cond:
                self._eof = True
                self._cond.notify_all()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip())

    @staticmethod
    def _matches(
        msg: Message, type_: str, fields: dict[str, Any], where: Callable[[Message], bool] | None
    ) -> bool:
        if msg.get("type") != type_:
            return False
        if any(msg.get(k) != v for k, v in fields.items()):
            return False
        return where is None or bool(where(msg))

    def seen(
        self, type_: str, where: Callable[[Message], bool] | None = None, **fields: Any
    ) -> list[Message]:
        """Every observation so far of that type whose fields equal `fields` (consumed or not)."""
        return [m for m in self.messages if self._matches(m, type_, fields, where)]

    def describe(self) -> str:
        tail = "\n  ".join(json.dumps(m) for m in self.messages[-25:])
        err = "\n  ".join(list(self.stderr)[-25:])
        return f"[{self.name}] observations (last 25):\n  {tail}\n[{self.name}] stderr (last 25):\n  {err}"

    async def wait_for(
        self,
        type_: str,
        *,
        within: float = DEFAULT_TIMEOUT,
        where: Callable[[Message], bool] | None = None,
        **fields: Any,
    ) -> Message:
        """The first not-yet-consumed observation of that type matching `fields`/`where`; marks it consumed."""
        found: list[int] = []

        def ready() -> bool:
            for i, m in enumerate(self.messages):
                if i not in self._consumed and self._matches(m, type_, fields, where):
                    found.append(i)
                    return True
            return self._eof

        try:
            async with asyncio.timeout(within), self._cond:
                await self._cond.wait_for(ready)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no {type_!r} {fields or ''} within {within}s\n{self.describe()}"
            ) from None
        if not found:
            raise AssertionError(
                f"{self.name}: exited before {type_!r} {fields or ''}\n{self.describe()}"
            )
        self._consumed.add(found[0])
        return self.messages[found[0]]

    # -- commands --------------------------------------------------------------------------

    async def send(self, cmd: str, **args: Any) -> int:
        """Send a command without waiting for it; returns its id."""
        assert self.proc.stdin is not None
        cmd_id = next(self._ids)
        self.proc.stdin.write((json.dumps({"cmd": cmd, "id": cmd_id, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return cmd_id

    async def call(self, cmd: str, *, within: float = DEFAULT_TIMEOUT, **args: Any) -> Any:
        """Run a command in the client and return its result (an exception in Node fails the test)."""
        cmd_id = await self.send(cmd, **args)
        ack = await self.wait_for("ack", id=cmd_id, within=within)
        if "error" in ack:
            raise AssertionError(
                f"{self.name}: {cmd} {args} failed in Node: {ack['error']}\n{self.describe()}"
            )
        return ack.get("result")

    async def connected(self, within: float = DEFAULT_TIMEOUT) -> str:
        """Wait for the `connected` state and return the socket_id pusher-js got."""
        msg = await self.wait_for("connected", within=within)
        return str(msg["socket_id"])

    # -- pusher-js shortcuts ---------------------------------------------------------------

    async def subscribe(self, channel: str, *, bind: list[str] | None = None) -> None:
        await self.call("subscribe", channel=channel, bind=bind or [])

    async def subscribed(self, channel: str, within: float = DEFAULT_TIMEOUT) -> Message:
        """Subscribe and wait for pusher:subscription_succeeded on that channel."""
        await self.subscribe(channel)
        return await self.wait_for("subscription_succeeded", channel=channel, within=within)

    # -- teardown --------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL: the kernel drops the TCP connection, the server sees an abrupt disconnect."""
        if self.alive:
            self.proc.kill()
        await self.proc.wait()

    async def close(self) -> None:
        if self.alive:
            assert self.proc.stdin is not None
            with contextlib.suppress(ConnectionError):
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(task, 2)
            task.cancel()


class JSClients:
    """Factory for clients in one test; everything it started is stopped at teardown."""

    def __init__(self) -> None:
        self.clients: list[JSClient] = []

    async def _start(self, name: str, config: dict[str, Any]) -> JSClient:
        client = await JSClient.start(name, config)
        self.clients.append(client)
        return client

    @staticmethod
    def _config(
        lib: str,
        server: Any,
        auth: AuthEndpoint | None,
        params: dict[str, Any] | None,
        **extra: Any,
    ) -> dict[str, Any]:
        config: dict[str, Any] = {
            "lib": lib,
            "key": server.key,
            "host": "127.0.0.1",
            "port": server.port,
        }
        if server.path:
            config["wsPath"] = server.path
        if auth is not None:
            config["authEndpoint"] = auth.url
            config["authParams"] = params or {}
        config.update(extra)
        return config

    async def pusher(
        self,
        server: Any,
        name: str = "pusher-js",
        *,
        auth: AuthEndpoint | None = None,
        params: dict[str, Any] | None = None,
        **extra: Any,
    ) -> JSClient:
        """A `new Pusher(key, {wsHost, wsPort, forceTLS:false, enabledTransports:['ws'], …})`."""
        return await self._start(name, self._config("pusher", server, auth, params, **extra))

    async def echo(
        self,
        server: Any,
        name: str = "echo",
        *,
        auth: AuthEndpoint | None = None,
        params: dict[str, Any] | None = None,
        **extra: Any,
    ) -> JSClient:
        """A `new Echo({broadcaster:'reverb', key, wsHost, wsPort, forceTLS:false, Pusher, authEndpoint, auth})`."""
        return await self._start(name, self._config("echo", server, auth, params, **extra))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)

    async def __aenter__(self) -> JSClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AuthEndpoint:
    """The app's channel-authorization endpoint, signing with the official pusher SDK.

    Form fields from the client (pusher-js posts `socket_id`, `channel_name` plus the configured
    params): `user_id` (and `user_id_type=int` for Laravel-style integer ids) and `user_info`
    (JSON) for presence; `sign=bad` signs with a wrong secret. Channels in `bad_channels` are
    always signed with the wrong secret. Every request's form is kept in `requests`.
    """

    def __init__(self, server: Any) -> None:
        self.good = sdk(server)
        self.bad = sdk(server, secret="not-the-" + server.secret)
        self.bad_channels: set[str] = set()
        self.requests: list[dict[str, str]] = []
        self.responses: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(form)
        channel, socket_id = form["channel_name"], form["socket_id"]
        signer = (
            self.bad if form.get("sign") == "bad" or channel in self.bad_channels else self.good
        )
        custom: dict[str, Any] | None = None
        if channel.startswith("presence-"):
            user_id: Any = form["user_id"]
            if form.get("user_id_type") == "int":
                user_id = int(user_id)
            custom = {"user_id": user_id, "user_info": json.loads(form.get("user_info", "{}"))}
        payload = signer.authenticate(channel, socket_id, custom)
        self.responses.append(payload)
        return web.json_response(payload)

    async def start(self) -> AuthEndpoint:
        app = web.Application()
        app.router.add_post("/broadcasting/auth", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/broadcasting/auth"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> AuthEndpoint:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def sdk(server: Any, *, secret: str | None = None) -> pusher.Pusher:
    """The official Python server SDK pointed at the test server (no path prefix: it has none)."""
    return pusher.Pusher(
        app_id=server.app_id,
        key=server.key,
        secret=secret if secret is not None else server.secret,
        host="127.0.0.1",
        port=server.port,
        ssl=False,
        timeout=5,
    )


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking SDK call without stalling the event loop (which reads the Node clients)."""
    return await asyncio.to_thread(partial(fn, *args, **kwargs))


async def signed_request(
    server: Any,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    *,
    secret: str | None = None,
) -> tuple[int, Any]:
    """An HTTP API call the SDK has no method for, signed by the SDK's own `pusher.http.Request`.

    `path` is the API path the SDK signs (`/apps/{id}/…`); the server's path prefix, if any, is
    put in front of it on the wire, as the PHP SDK does with its `path` option.
    Returns (status, decoded JSON body or raw text).
    """
    client = sdk(server, secret=secret)._pusher_client
    request = pusher.http.Request(client, method, path, params or {})
    url = f"http://127.0.0.1:{server.port}{server.path}{request.signed_path}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            url,
            data=request.body if method == "POST" else None,
            headers=request.headers,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


# --- auth params and Echo readiness, shared by the Node-based suites -------------------------


def user(user_id: str, name: str) -> dict[str, str]:
    """pusher-js auth params for a presence member with a string id."""
    return {"user_id": user_id, "user_info": json.dumps({"name": name})}


def laravel_user(user_id: int, name: str) -> dict[str, str]:
    """Auth params making the endpoint answer like Laravel: integer user_id, user_info from the channel callback."""
    return {
        "user_id": str(user_id),
        "user_id_type": "int",
        "user_info": json.dumps({"id": user_id, "name": name}),
    }


async def echo_ready(client: JSClient) -> str:
    """Wait for an Echo client to connect; returns `Echo.socketId()`."""
    await client.connected()
    socket_id = await client.call("socket_id")
    assert isinstance(socket_id, str) and re.match(SOCKET_ID_RE, socket_id), socket_id
    return socket_id
