"""Logging set-up: readable text or one JSON object per line, with secrets kept out.

Two layers keep secrets out of the output:

- ``mask_frame`` rewrites a Pusher frame before ``--debug`` logs it: auth signatures lose their
  HMAC, any ``*secret*`` field is replaced, and long ``data`` is cut to a short prefix.
- ``SecretFilter`` is a last line of defence on every handler: a record whose text contains a
  configured app secret (or the metrics token) has it replaced by ``**********``.

Records may carry ``app_id``, ``socket_id`` and ``event`` (``extra={...}``); the JSON format
writes them as fields, the text format appends them as ``key=value``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

MASK = "**********"
BODY_PREFIX = 32
"""Characters of a message body kept in a debug log line."""
_FIELDS = ("app_id", "socket_id", "event", "remote", "code")
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` and the extras."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {k: v for k, v in _extras(record).items() if k in _FIELDS}
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return text


class SecretFilter(logging.Filter):
    """Replace known secrets in a record's final text; ``secrets`` can be swapped on reload."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        self.set(secrets)

    def set(self, secrets: Iterable[str]) -> None:
        # Very short "secrets" would mask ordinary words; those are a configuration problem.
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        text = record.getMessage()
        extras = _extras(record)
        blob = text + "".join(str(v) for v in extras.values())
        if not any(s in blob for s in self.secrets):
            return True
        for s in self.secrets:
            text = text.replace(s, MASK)
        record.msg, record.args = text, None
        for k, v in extras.items():
            if isinstance(v, str):
                for s in self.secrets:
                    v = v.replace(s, MASK)
                setattr(record, k, v)
        return True


SECRETS = SecretFilter()
"""The filter installed by ``setup``; ``lifecycle`` refreshes it when apps are reloaded."""


def setup(fmt: str = "text", *, debug: bool = False, secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once: one stderr handler, the chosen format, the secret filter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    SECRETS.set(secrets)
    handler.addFilter(SECRETS)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # aiohttp's own debug chatter would drown the frame log.
    logging.getLogger("aiohttp").setLevel(logging.INFO)


def _cut(value: str) -> str:
    return value if len(value) <= BODY_PREFIX else f"{value[:BODY_PREFIX]}…[{len(value)} chars]"


def _mask_auth(value: str) -> str:
    key, sep, _signature = value.partition(":")
    return f"{key}:{MASK}" if sep else MASK


def _mask(obj: Any, depth: int = 0) -> Any:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            lk = str(k).lower()
            if "secret" in lk or "signature" in lk or "password" in lk or "token" in lk:
                out[k] = MASK
            elif lk == "auth" and isinstance(v, str):
                out[k] = _mask_auth(v)
            elif isinstance(v, dict | list) and depth < 3:
                out[k] = _mask(v, depth + 1)
            elif isinstance(v, str):
                out[k] = _cut(v)
            elif isinstance(v, dict | list):
                out[k] = _cut(orjson.dumps(v).decode())
            else:
                out[k] = v
        return out
    if isinstance(obj, list):
        return [_mask(v, depth + 1) for v in obj[:10]]
    if isinstance(obj, str):
        return _cut(obj)
    return obj


def mask_frame(payload: str | bytes) -> str:
    """A Pusher JSON frame fit for a log line: signatures and secrets masked, bodies cut."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
        return _cut(text)
    return orjson.dumps(_mask(doc)).decode()


def frame_payload(frame: bytes) -> bytes:
    """The payload of one unmasked server WebSocket frame (see ``protocol.frames``)."""
    n = frame[1] & 0x7F
    if n == 126:
        return frame[4:]
    if n == 127:
        return frame[10:]
    return frame[2:]
