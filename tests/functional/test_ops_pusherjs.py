"""Real pusher-js against the production paths: SIGTERM hand-over (4200) and TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import ROOT, free_port, start_server
from tests.functional.jsclient import JS_DIR, JSClient, JSClients, node_command

pytestmark = pytest.mark.node


@pytest.fixture
async def clients() -> AsyncIterator[JSClients]:
    async with JSClients() as c:
        yield c


def trigger(port: int, channel: str, event: str, data: str, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REVERB_")}
    return subprocess.run(
        [sys.executable, "-m", "reverbpy", "trigger", "--port", str(port), *extra, channel, event, data],
        cwd=ROOT, env=base | env, capture_output=True, text=True, timeout=20,
    )


async def test_sigterm_sends_4200_and_pusher_js_reconnects_to_the_next_server(
    tmp_path: Path, clients: JSClients
) -> None:
    port = free_port()
    first = start_server(tmp_path, port=port)
    try:
        client = await clients.pusher(first)
        old_id = await client.connected()
        await client.subscribed("handover")

        assert first.proc is not None
        first.proc.send_signal(signal.SIGTERM)
        error = await client.wait_for("connection_error")
        assert error["error"]["data"]["code"] == 4200, error
        assert await asyncio.to_thread(first.proc.wait, 10) == 0
    finally:
        first.stop()

    second = start_server(tmp_path, port=port)
    try:
        new_id = await client.connected(within=30)
        assert new_id != old_id
        await client.wait_for("subscription_succeeded", channel="handover", within=10)
        env = {k: v for k, v in second.env.items() if k.startswith("REVERB_")}
        out = await asyncio.to_thread(trigger, port, "handover", "after-restart", '{"ok":true}', env=env)
        assert out.returncode == 0, out.stderr
        event = await client.wait_for("event", channel="handover", event="after-restart")
        assert event["data"] == {"ok": True}
    finally:
        second.stop()
    assert "SIGTERM: draining" in first.log()


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_with_pusher_js_force_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    # start_server polls http://.../up, so start without waiting and poll over https here.
    server = start_server(
        tmp_path, port=port, wait=False,
        extra_env={"REVERB_TLS_CERT": str(cert)}, args=["--tls-key", str(key)],
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"https://127.0.0.1:{port}/up", ssl=False) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail(f"no https on {port}:\n{server.log()}")

        node = node_command()
        config = {"key": server.key, "host": "127.0.0.1", "port": port}
        proc = await asyncio.create_subprocess_exec(
            node[0], str(JS_DIR / "tls_client.mjs"), json.dumps(config),
            cwd=JS_DIR,
            env=os.environ | {"NODE_EXTRA_CA_CERTS": str(cert)},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        client = JSClient("pusher-js-tls", proc)
        try:
            await client.connected()
            await client.call("subscribe", channel="secure")
            await client.wait_for("subscription_succeeded", channel="secure")
            env = {k: v for k, v in server.env.items() if k.startswith("REVERB_")}
            out = await asyncio.to_thread(
                trigger, port, "secure", "over-tls", "hello", "--url", f"https://127.0.0.1:{port}", "--insecure", env=env
            )
            assert out.returncode == 0, out.stderr
            event = await client.wait_for("event", channel="secure", event="over-tls")
            assert event["data"] == "hello"
            out = await asyncio.to_thread(
                trigger, port, "secure", "x", "y", "--url", f"https://127.0.0.1:{port}", env=env
            )
            assert out.returncode == 1 and "certificate" in out.stderr.lower()
        finally:
            await client.close()
    finally:
        server.stop()
    assert "listening on https://" in server.log()
