"""The configuration, as plain frozen dataclasses every layer may read.

Nothing here reads the environment or a file, and nothing imports pydantic: the sans-I/O core
(``protocol.session``) takes an ``AppConfig`` as it is. ``settings`` builds these from the
environment, a ``.env`` file and an apps file, through one validation. Constraints are written
on the fields as plain ``annotated-types`` metadata, which that validation enforces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal, Protocol, TypeVar

from annotated_types import Ge, Gt

ClientEventsFrom = Literal["members", "all", "none"]
# Constraints as plain metadata (annotated-types): pydantic enforces them when a file or the
# environment is read, and nothing else here has to know about pydantic.
T = TypeVar("T", int, float)
Positive = Annotated[T, Gt(0)]
Limit = Annotated[int, Ge(0)] | None
"""A count per connection, app or second; None (or 0, as written in a file or variable): no limit."""
UNLIMITED_WHEN_ZERO = (
    "max_connections",
    "max_channels_per_connection",
    "client_event_rate",
    "backend_event_rate",
    "read_request_rate",
)
LogFormat = Literal["text", "json"]


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the key."""


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


WEBHOOK_EVENTS = frozenset(
    {
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
        "client_event",
        "cache_miss",
        "subscription_count",
    }
)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """One webhook receiver; soketi's per-webhook filters."""

    url: str
    event_types: frozenset[str] = WEBHOOK_EVENTS
    channel_prefix: str | None = None
    channel_suffix: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def wants(self, event: str, channel: str | None) -> bool:
        if event not in self.event_types:
            return False
        if channel is not None:
            if self.channel_prefix and not channel.startswith(self.channel_prefix):
                return False
            if self.channel_suffix and not channel.endswith(self.channel_suffix):
                return False
        return True


@dataclass(frozen=True, slots=True)
class AppConfig:
    """One Pusher app. Limits follow Pusher's published ones; ``None`` means unlimited."""

    # Read by pydantic when the apps file or the environment is validated (a plain dict, so this
    # module's AppConfig does not need pydantic to exist); `Secret` is our own type.
    __pydantic_config__: ClassVar[dict[str, object]] = {
        "arbitrary_types_allowed": True,
        "extra": "forbid",
        "strict": False,
    }

    id: str
    key: str
    secret: Secret
    enabled: bool = True
    ping_interval: Positive[float] = 60.0
    """Seconds of silence after which the server pings the client (Reverb's ping_interval)."""
    activity_timeout: Positive[int] = 30
    """Seconds advertised in ``connection_established``; pusher-js pings after that long idle."""
    pong_timeout: Positive[float] = 30.0
    """Seconds to wait for any message after a server ping before closing with 4201."""
    max_connections: Limit = None
    """Sockets of this app (4004); cluster-wide with a scaling adapter."""
    max_message_size: Positive[int] = 10_000
    """Bytes per incoming WebSocket message; larger ones close the socket with 1009."""
    accept_client_events_from: ClientEventsFrom = "members"
    allowed_origins: tuple[str, ...] = ("*",)
    max_event_payload: Positive[int] = 10_240
    """Bytes of ``data`` per event (HTTP API: 413; client events: 4301)."""
    max_channels_per_event: Positive[int] = 100
    max_channels_per_connection: Limit = 100
    """Channels one socket may be subscribed to at once; past it ``subscription_error``
    ``LimitReached`` (403). Pusher sets none; a bound keeps a subscribe flood from growing the
    channel table (and Redis' hashes) without end."""
    max_batch_size: Positive[int] = 10
    max_channel_name_length: Positive[int] = 200
    max_event_name_length: Positive[int] = 200
    max_presence_members: Positive[int] = 100
    max_presence_member_size: Positive[int] = 1_024
    max_user_id_length: Positive[int] = 128
    client_event_rate: Limit = 10
    """Client events per connection per second; over it the event is refused with 4301."""
    backend_event_rate: Limit = None
    """Events per second accepted by the HTTP API (``POST events``/``batch_events``); 429 over it."""
    read_request_rate: Limit = None
    """HTTP API read requests per second (``GET channels``...); 429 over it."""
    cache_ttl: Positive[float] = 1800.0
    """Seconds a cache channel keeps its last event (Pusher: up to 30 minutes)."""
    subscription_count_events: bool = False
    """Send ``pusher_internal:subscription_count`` to subscribers (Pusher's opt-in)."""
    authorized_connections_timeout: Positive[float] | None = None
    """Close sockets that neither sign in nor join a private/presence channel in this time (4009)."""
    webhooks: tuple[WebhookTarget, ...] = ()
    webhook_batch_ms: Annotated[int, Ge(0)] = 0
    """Collect webhook events for this long and send them in one request (0: one per event)."""

    def __post_init__(self) -> None:
        # 0 means unlimited for every limit, wherever it was written (README, "Apps").
        for name in UNLIMITED_WHEN_ZERO:
            if getattr(self, name) == 0:
                object.__setattr__(self, name, None)

    def __repr__(self) -> str:
        return f"AppConfig(id={self.id!r}, key={self.key!r}, secret=Secret('**********'))"


class AppSource(Protocol):
    """Where a socket reads its app's settings: ``registry.AppState``, whose ``app`` a reload
    swaps for the new one. Nothing keeps a copy, so one swap reaches every socket at once."""

    @property
    def app(self) -> AppConfig: ...


@dataclass(frozen=True, slots=True)
class FixedApp:
    """An ``AppSource`` that never changes (tests, one-off tools)."""

    app: AppConfig


@dataclass(frozen=True, slots=True)
class ScalingConfig:
    """How nodes share traffic (Reverb's ``scaling`` block, on Laravel's variable names)."""

    adapter: Literal["memory", "redis", "nats"] = "memory"
    channel: str = "reverb"
    """Reverb's pub/sub channel name (REVERB_SCALING_CHANNEL): accepted for its ``.env``;
    reverbpy routes by channel (a topic per channel under ``prefix``), so it names nothing."""
    prefix: str = "reverbpy"
    """Every Redis key and channel starts with this, so deployments can share a Redis."""
    redis_url: Secret = field(default_factory=lambda: Secret("redis://127.0.0.1:6379/0"))
    """May carry a password, hence a Secret."""
    redis_cluster: bool = False
    """A Redis Cluster (REDIS_CLUSTER): sharded pub/sub and hash-tagged keys."""
    nats_url: Secret = field(default_factory=lambda: Secret("nats://127.0.0.1:4222"))
    """NATS servers, comma-separated (NATS_URL); may carry credentials, hence a Secret."""
    node_timeout: float = 15.0
    """Seconds without a heartbeat after which a node's members and counts are removed."""
    buffer_size: int = 100_000
    """Envelopes kept, in order, while the link to the other nodes is down
    (REVERB_SCALING_BUFFER_SIZE); past it the oldest are dropped, counted and logged once."""
    buffer_age: float = 30.0
    """Seconds an envelope may wait for the link to come back (REVERB_SCALING_BUFFER_AGE);
    also how long a topic's recent envelopes are kept for a node catching up."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    path: str = ""
    """Prefix for every route (``/ws/app/{key}``...), Reverb's REVERB_SERVER_PATH."""
    max_request_size: int = 262_144
    """Bytes of HTTP API request body; larger ones get 413."""
    max_write_buffer: int = 1_048_576
    """Unsent bytes a socket may hold before it is dropped as a slow consumer (4100)."""
    head_timeout: float = 20.0
    """Seconds to send a complete request head: the first from the accept (a WebSocket upgrade
    too), later ones from their first byte; then the connection is closed (REVERB_HEAD_TIMEOUT)."""
    max_pending_heads: int = 1000
    """Connections waiting for a complete head; past it, each new one closes the oldest that
    has waited over a second (REVERB_MAX_PENDING_HEADS)."""
    tls_cert: str | None = None
    """PEM certificate chain; with ``tls_key`` the server speaks https/wss (REVERB_TLS_CERT)."""
    tls_key: str | None = None
    """PEM private key for ``tls_cert`` (REVERB_TLS_KEY)."""
    metrics_port: int | None = None
    """Serve ``/metrics`` on this port instead of the main one (REVERB_METRICS_PORT)."""
    metrics_token: Secret | None = None
    """Bearer token that ``/metrics`` requires (REVERB_METRICS_TOKEN); None: no token."""
    console_token: Secret | None = None
    """What signs an operator in to ``{path}/console`` (REVERB_CONSOLE_TOKEN); None: the
    console is off, except on loopback with a generated development app (``console.web``)."""
    console_sample_interval: float = 5.0
    """Seconds between two samples of the console's charts (REVERB_CONSOLE_SAMPLE_INTERVAL)."""
    log_format: LogFormat = "text"
    shutdown_grace: float = 10.0
    """Seconds SIGTERM waits for closing handshakes and queued webhooks (REVERB_SHUTDOWN_GRACE)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks whose ``X-Forwarded-For`` is believed (REVERB_TRUSTED_PROXIES)."""
    debug: bool = False
    apps: tuple[AppConfig, ...] = field(default_factory=tuple)
    generated_app: bool = False
    """True when no app was configured and a development app was made up."""
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    workers: int = 1
