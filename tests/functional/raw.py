"""Raw WebSocket and signed-HTTP helpers for functional tests: exact wire shapes, no SDK."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import aiohttp
import orjson

from tests.conftest import ServerProcess


def decode(text: str) -> dict[str, Any]:
    msg: dict[str, Any] = orjson.loads(text)
    if isinstance(msg.get("data"), str) and msg["event"].startswith("pusher"):
        msg["data"] = orjson.loads(msg["data"])
    return msg


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.socket_id = ""

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        return decode(msg.data)

    async def recv_event(self, event: str, timeout: float = 5.0) -> dict[str, Any]:
        while True:
            msg = await self.recv(timeout)
            if msg["event"] == event:
                return msg

    async def send(self, event: str, data: Any = None, channel: str | None = None) -> None:
        msg: dict[str, Any] = {"event": event}
        if data is not None:
            msg["data"] = data
        if channel is not None:
            msg["channel"] = channel
        await self.ws.send_str(orjson.dumps(msg).decode())

    async def subscribe(self, channel: str, secret: str = "", key: str = "", channel_data: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"channel": channel, "auth": ""}
        if secret:
            text = f"{self.socket_id}:{channel}" + (f":{channel_data}" if channel_data is not None else "")
            data["auth"] = f"{key}:{hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()}"
        if channel_data is not None:
            data["channel_data"] = channel_data
        await self.send("pusher:subscribe", data)
        return await self.recv()

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Read until the close frame; returns (code, reason)."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return self.ws.close_code, str(msg.extra or "")


async def connect(
    session: aiohttp.ClientSession, server: ServerProcess, *, query: str = "protocol=7&client=js&version=8.4.0",
    key: str | None = None, headers: dict[str, str] | None = None, established: bool = True,
) -> Client:
    url = f"ws://127.0.0.1:{server.port}{server.path}/app/{key or server.key}?{query}"
    ws = await session.ws_connect(url, headers=headers or {}, autoping=False, max_msg_size=0)
    client = Client(ws)
    if established:
        hello = await client.recv()
        assert hello["event"] == "pusher:connection_established"
        client.socket_id = hello["data"]["socket_id"]
    return client


def signed_url(server: ServerProcess, method: str, path: str, body: bytes = b"", params: dict[str, str] | None = None,
               *, secret: str | None = None, timestamp: int | None = None) -> str:
    """Sign as the Pusher docs say (independently of reverbpy's own code)."""
    query = {"auth_key": server.key, "auth_timestamp": str(timestamp or int(time.time())), "auth_version": "1.0", **(params or {})}
    if body:
        query["body_md5"] = hashlib.md5(body).hexdigest()
    to_sign = "&".join(f"{k}={v}" for k, v in sorted(query.items()))
    sig = hmac.new((secret or server.secret).encode(), f"{method}\n{path}\n{to_sign}".encode(), hashlib.sha256).hexdigest()
    from urllib.parse import urlencode

    return f"http://127.0.0.1:{server.port}{server.path}{path}?{urlencode({**query, 'auth_signature': sig})}"


async def api(session: aiohttp.ClientSession, server: ServerProcess, method: str, path: str, body: Any = None,
              params: dict[str, str] | None = None, **kw: Any) -> tuple[int, Any]:
    raw = b"" if body is None else (body if isinstance(body, bytes) else orjson.dumps(body))
    url = signed_url(server, method, f"/apps/{server.app_id}{path}", raw, params, **kw)
    async with session.request(method, url, data=raw or None, headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.json(content_type=None)
