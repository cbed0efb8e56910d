"""Prometheus metrics at ``/metrics``, cheap on the hot path.

The hot path only bumps plain integers (``WIRE``: one dict increment per socket read, per
socket write, per broadcast call, never per subscriber of a broadcast). Everything that is
state rather than an event (connections, channels and subscriptions by type, signed-in users,
webhook outcomes, slow consumers dropped, readiness) is read from the hub when Prometheus
scrapes, by ``HubCollector``. ``prometheus-client`` only renders the text format.

Labels: ``app`` is the app id (the only per-app label; never a key, secret or user id),
``type`` a channel type, ``code`` a WebSocket close code, ``endpoint`` an HTTP API route
pattern (``/apps/{app_id}/events``, from ``protocol.api.ROUTES``), ``status`` an HTTP status.
HTTP API requests are counted by ``http_api.service.HttpApi.record``, for both transports.

Other components add their own series with ``Metrics.registry.register(collector)``
(the Redis adapter's state and publish latency belong there).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from reverbpy import __version__
from reverbpy.protocol.channels import ChannelType
from reverbpy.readiness import Readiness
from reverbpy.wire import WIRE, Histogram, Wire

if TYPE_CHECKING:
    from reverbpy.config import ServerConfig
    from reverbpy.dispatch import Outbox
    from reverbpy.hub import Hub


def _counter(
    name: str, doc: str, labels: Sequence[str], values: Iterable[tuple[object, int]]
) -> Metric:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    for key, value in values:
        family.add_metric(list(key) if isinstance(key, tuple) else [str(key)], value)
    return family


def _histogram(
    name: str, doc: str, labels: Sequence[str], items: Iterable[tuple[Sequence[str], Histogram]]
) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for label_values, h in items:
        family.add_metric(list(label_values), h.buckets(), h.sum)
    return family


class HubCollector(Collector):
    """Reads the hub's state and ``WIRE`` at scrape time."""

    def __init__(
        self,
        hub: Hub,
        outbox: Outbox,
        readiness: Readiness,
        config: ServerConfig,
        wire: Wire = WIRE,
    ) -> None:
        self.hub = hub
        self.outbox = outbox
        self.readiness = readiness
        self.config = config
        self.wire = wire

    def collect(self) -> Iterator[Metric]:
        yield from self._state()
        yield from self._events()

    def _state(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "reverbpy_info", "Build and run-time information", labels=["version", "adapter"]
        )
        info.add_metric([__version__, adapter_name(self.config)], 1)
        yield info
        yield GaugeMetricFamily(
            "reverbpy_ready",
            "1 when /ready answers 200",
            value=0 if self.readiness.problem() else 1,
        )
        connections = GaugeMetricFamily(
            "reverbpy_connections", "Open WebSocket connections", labels=["app"]
        )
        users = GaugeMetricFamily(
            "reverbpy_users", "Signed-in users (pusher:signin)", labels=["app"]
        )
        channels = GaugeMetricFamily(
            "reverbpy_channels", "Occupied channels", labels=["app", "type"]
        )
        subs = GaugeMetricFamily(
            "reverbpy_subscriptions", "Channel subscriptions", labels=["app", "type"]
        )
        for app_id, state in list(self.hub.registry.apps.items()):
            connections.add_metric([app_id], len(state.connections))
            users.add_metric([app_id], len(state.users))
            n_channels = dict.fromkeys(ChannelType, 0)
            n_subs = dict.fromkeys(ChannelType, 0)
            for channel in list(state.channels.values()):
                n_channels[channel.kind.type] += 1
                n_subs[channel.kind.type] += len(channel.subscribers)
            for kind in ChannelType:
                channels.add_metric([app_id, kind.value], n_channels[kind])
                subs.add_metric([app_id, kind.value], n_subs[kind])
        yield connections
        yield users
        yield channels
        yield subs
        webhooks = CounterMetricFamily(
            "reverbpy_webhook_events", "Webhook events by outcome", labels=["outcome"]
        )
        for outcome in ("delivered", "failed", "dropped", "retried"):
            value = getattr(self.hub.webhooks, outcome, None)
            if isinstance(value, int):
                webhooks.add_metric([outcome], value)
        yield webhooks
        yield CounterMetricFamily(
            "reverbpy_slow_consumers_dropped",
            "Sockets dropped because their write buffer overflowed",
            value=self.outbox.slow_consumers,
        )

    def _events(self) -> Iterator[Metric]:
        w = self.wire
        yield _counter(
            "reverbpy_connections_opened",
            "WebSocket connections accepted",
            ["app"],
            w.connections.items(),
        )
        yield _counter(
            "reverbpy_connections_closed",
            "WebSocket connections closed, by close code",
            ["app", "code"],
            w.disconnections.items(),
        )
        yield _counter(
            "reverbpy_messages_received",
            "WebSocket messages received",
            ["app"],
            w.messages_in.items(),
        )
        yield _counter(
            "reverbpy_received_bytes",
            "WebSocket payload bytes received",
            ["app"],
            w.bytes_in.items(),
        )
        yield _counter(
            "reverbpy_messages_sent", "WebSocket messages sent", ["app"], w.messages_out.items()
        )
        yield _counter(
            "reverbpy_sent_bytes",
            "WebSocket payload bytes sent",
            ["app"],
            w.bytes_out.items(),
        )
        yield _counter(
            "reverbpy_rate_limited",
            "Requests refused by a rate limit",
            ["app", "kind"],
            w.rate_limited.items(),
        )
        yield _counter(
            "reverbpy_http_requests",
            "HTTP API requests",
            ["endpoint", "app", "status"],
            w.http_requests.items(),
        )
        yield _counter(
            "reverbpy_bad_requests",
            "Connections refused before routing: malformed, too large or too slow heads, and"
            " heads evicted past REVERB_MAX_PENDING_HEADS",
            ["reason"],
            (((reason,), n) for reason, n in w.refused.items()),
        )
        yield _histogram(
            "reverbpy_http_request_duration_seconds",
            "HTTP API request latency",
            ["endpoint"],
            (((e,), h) for e, h in w.http_latency.items()),
        )
        yield _histogram(
            "reverbpy_broadcast_fanout", "Sockets reached per broadcast", [], [((), w.fanout)]
        )
        adapter = self.hub.adapter
        up = GaugeMetricFamily(
            "reverbpy_adapter_up", "1 while the scaling adapter's link is up", labels=["adapter"]
        )
        up.add_metric([adapter.name], 1 if adapter.healthy else 0)
        yield up
        yield CounterMetricFamily(
            "reverbpy_adapter_dropped_envelopes",
            "Envelopes not relayed to other nodes (the outage buffer overflowed or aged out)",
            value=getattr(adapter, "dropped", 0),
        )
        yield GaugeMetricFamily(
            "reverbpy_adapter_buffered_envelopes",
            "Envelopes waiting for the link to the other nodes",
            value=getattr(adapter, "buffered", 0),
        )
        yield CounterMetricFamily(
            "reverbpy_adapter_received_envelopes",
            "Envelopes from other nodes applied here (only topics this node serves)",
            value=getattr(adapter, "received", 0),
        )
        publish = SummaryMetricFamily(
            "reverbpy_adapter_publish_seconds",
            "Time to publish one pipelined batch of envelopes to Redis",
            count_value=getattr(adapter, "publish_batches", 0),
            sum_value=getattr(adapter, "publish_seconds", 0.0),
        )
        yield publish


def adapter_name(config: ServerConfig) -> str:
    scaling = getattr(config, "scaling", None)
    return str(getattr(scaling, "adapter", None) or getattr(config, "adapter", "memory"))


class Metrics:
    """The Prometheus registry of one server and the ``/metrics`` handler."""

    def __init__(
        self, hub: Hub, outbox: Outbox, readiness: Readiness, config: ServerConfig
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HubCollector(hub, outbox, readiness, config))
        ProcessCollector(registry=self.registry)
        self._token = config.metrics_token.reveal().encode() if config.metrics_token else None

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        if self._token is not None:
            given = request.headers.get("Authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self._token):
                return web.Response(
                    status=401,
                    text="metrics need a bearer token\n",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
