"""The per-connection state machine, without I/O.

``Session.receive(text)`` takes one client frame and returns the actions the server must carry
out. Every rule about what a connection may do lives here: subscription authorization,
presence member data, client-event permissions and rate, sign-in. What needs the state of
other connections (presence members, the fan-out) is left to the caller, expressed as actions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from reverbpy.config import AppConfig, AppSource
from reverbpy.protocol import messages
from reverbpy.protocol.auth import verify_channel_auth, verify_user_auth
from reverbpy.protocol.channels import (
    SERVER_TO_USER_PREFIX,
    ChannelType,
    channel_kind,
    channel_name_error,
)
from reverbpy.protocol.errors import ErrorCode, PusherError, SubscriptionError, invalid_message
from reverbpy.protocol.presence import Member
from reverbpy.protocol.ratelimit import PerSecond

# --- actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``frame`` to this connection only."""

    frame: bytes


@dataclass(slots=True)  # not frozen: one is made per subscribe, a reconnect storm's hot path
class Join:
    """Add this connection to ``channel``; the caller sends ``subscription_succeeded``."""

    channel: str
    member: Member | None


@dataclass(frozen=True, slots=True)
class Leave:
    channel: str
    member: Member | None


@dataclass(slots=True)  # not frozen: one is made per client event (see messages.ClientEvent)
class Whisper:
    """Relay a client event to the channel's other subscribers."""

    channel: str
    event: str
    data: Any
    user_id: Any


@dataclass(frozen=True, slots=True)
class SignIn:
    """Sign the socket in; ``confirmation`` (``pusher:signin_success``) goes out once the
    cluster knows, so a client that hears it can rely on being seen as online everywhere."""

    user_id: str
    user_info: Any
    watchlist: tuple[str, ...]
    confirmation: bytes


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


Action = Reply | Join | Leave | Whisper | SignIn | Close


@dataclass(slots=True)
class SignedInUser:
    id: str
    info: Any
    user_data: str


@dataclass(slots=True)
class Session:
    source: AppSource
    """The app's settings are read through it at each message, so a reload applies at once."""
    socket_id: str
    clock: Callable[[], float]
    subscriptions: dict[str, Member | None] = field(default_factory=dict)
    user: SignedInUser | None = None
    watchlist: tuple[str, ...] = ()
    watch_online: set[str] = field(default_factory=set)
    """Watched users this client was last told are online: events only on a change, however
    many nodes report it or in whatever order."""
    _client_events: PerSecond | None = None
    """Made at the first client event: most sockets never send one (one object less each)."""
    _frame_size: int = 0

    @property
    def app(self) -> AppConfig:
        return self.source.app

    def receive(self, text: str | bytes) -> list[Action]:
        # UTF-8 size of the frame (isascii is a fast scan; encoding only when it must)
        self._frame_size = (
            len(text) if isinstance(text, bytes) or text.isascii() else len(text.encode())
        )
        try:
            return self._handle(messages.decode(text))
        except SubscriptionError as exc:
            return [
                Reply(messages.subscription_error(exc.channel, exc.kind, exc.message, exc.status))
            ]
        except PusherError as exc:
            return error_actions(exc)

    def _handle(self, message: messages.ClientMessage) -> list[Action]:
        # Client events are most of the traffic: test for them first, by exact type.
        if type(message) is messages.ClientEvent:
            return self._client_event(message)
        match message:
            case messages.Ping():
                return [Reply(messages.PONG)]
            case messages.Pong():
                return []
            case messages.Subscribe():
                return self._subscribe(message)
            case messages.Unsubscribe(channel):
                if channel not in self.subscriptions:
                    return []
                return [Leave(channel, self.subscriptions.pop(channel))]
            case messages.Signin():
                return self._signin(message)
        raise AssertionError(f"unhandled message {message!r}")  # pragma: no cover

    def subscription_refused(self, channel: str) -> None:
        """The caller could not add the socket (a limit elsewhere): forget the subscription."""
        self.subscriptions.pop(channel, None)

    # --- subscribe ------------------------------------------------------------------------

    def _subscribe(self, msg: messages.Subscribe) -> list[Action]:
        channel = msg.channel
        problem = channel_name_error(channel, self.app.max_channel_name_length)
        if problem:
            raise SubscriptionError(channel, problem, status=400, kind="InvalidChannel")
        if channel in self.subscriptions:
            raise PusherError(
                ErrorCode.GENERIC_RECONNECT, f"Existing subscription to channel {channel}"
            )
        # Joins still in flight count too: a flood cannot outrun the cap.
        cap = self.app.max_channels_per_connection
        if cap is not None and len(self.subscriptions) >= cap:
            raise SubscriptionError(
                channel,
                f"Too many channels: at most {cap} per connection",
                status=403,
                kind="LimitReached",
            )
        kind = channel_kind(channel)
        member: Member | None = None
        if kind.type is ChannelType.SERVER_TO_USER:
            if self.user is None or channel[len(SERVER_TO_USER_PREFIX) :] != self.user.id:
                raise SubscriptionError(
                    channel, "Only the signed-in user may subscribe to this channel", status=403
                )
        elif kind.needs_auth:
            if not verify_channel_auth(
                msg.auth,
                key=self.app.key,
                secret=self.app.secret.reveal(),
                socket_id=self.socket_id,
                channel=channel,
                channel_data=msg.channel_data,
            ):
                raise SubscriptionError(
                    channel,
                    f"Invalid signature: expected HMAC SHA256 hex digest of {self.socket_id}:{channel}"
                    + (":<channel_data>" if kind.type is ChannelType.PRESENCE else ""),
                )
            if kind.type is ChannelType.PRESENCE:
                member = self._presence_member(channel, msg.channel_data)
        self.subscriptions[channel] = member
        return [Join(channel, member)]

    def _presence_member(self, channel: str, channel_data: str | None) -> Member:
        if channel_data is None:
            # pusher-js >= 7.4 omits channel_data for signed-in users: the member is the user.
            if self.user is None:
                raise SubscriptionError(channel, "Presence channels need channel_data", status=400)
            return Member(self.user.id, self.user.info)
        try:
            data = orjson.loads(channel_data)
        except orjson.JSONDecodeError:
            raise SubscriptionError(channel, "channel_data is not valid JSON", status=400) from None
        user_id = data.get("user_id") if isinstance(data, dict) else None
        if not isinstance(user_id, str | int) or isinstance(user_id, bool) or str(user_id) == "":
            raise SubscriptionError(channel, "channel_data must hold a user_id", status=400)
        if len(str(user_id)) > self.app.max_user_id_length:
            raise SubscriptionError(
                channel,
                f"user_id longer than {self.app.max_user_id_length} characters",
                status=400,
                kind="LimitReached",
            )
        user_info = data.get("user_info")
        if (
            user_info is not None
            and len(orjson.dumps(user_info)) > self.app.max_presence_member_size
        ):
            raise SubscriptionError(
                channel,
                f"user_info larger than {self.app.max_presence_member_size} bytes",
                status=413,
                kind="LimitReached",
            )
        return Member(user_id, user_info)

    # --- client events --------------------------------------------------------------------

    def _client_event(self, msg: messages.ClientEvent) -> list[Action]:
        app = self.source.app
        if app.accept_client_events_from == "none":
            raise PusherError(
                ErrorCode.RATE_LIMITED, "The app does not have client messaging enabled."
            )
        if not msg.event.startswith("client-"):
            raise invalid_message("Client event names must start with client-")
        if len(msg.event) > app.max_event_name_length:
            raise PusherError(ErrorCode.RATE_LIMITED, "Event name too long")
        kind = channel_kind(msg.channel)
        if not kind.accepts_client_events:
            raise PusherError(
                ErrorCode.UNAUTHORIZED,
                "Client events are only allowed on private and presence channels",
            )
        subscribed = msg.channel in self.subscriptions
        if not subscribed and app.accept_client_events_from == "members":
            raise PusherError(
                ErrorCode.UNAUTHORIZED, "The client is not a member of the specified channel."
            )
        limit = app.max_event_payload
        # The frame bounds the data's size: only a frame over the limit needs measuring.
        if (
            self._frame_size > limit
            and msg.data is not None
            and len(orjson.dumps(msg.data)) > limit
        ):
            raise PusherError(ErrorCode.RATE_LIMITED, "Client event payload too large")
        limiter = self._client_events
        if limiter is None:
            limiter = self._client_events = PerSecond(None)
        limiter.limit = app.client_event_rate
        if not limiter.allow(self.clock()):
            raise PusherError(ErrorCode.RATE_LIMITED, "Client event rejected due to rate limit")
        member = self.subscriptions.get(msg.channel)
        return [Whisper(msg.channel, msg.event, msg.data, member.user_id if member else None)]

    # --- sign-in --------------------------------------------------------------------------

    def _signin(self, msg: messages.Signin) -> list[Action]:
        if not verify_user_auth(
            msg.auth,
            key=self.app.key,
            secret=self.app.secret.reveal(),
            socket_id=self.socket_id,
            user_data=msg.user_data,
        ):
            raise PusherError(
                ErrorCode.UNAUTHORIZED, "Invalid signature for pusher:signin", fatal=True
            )
        try:
            data = orjson.loads(msg.user_data)
        except orjson.JSONDecodeError:
            raise PusherError(
                ErrorCode.UNAUTHORIZED, "user_data is not valid JSON", fatal=True
            ) from None
        user_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(user_id, str) or not user_id:
            raise PusherError(
                ErrorCode.UNAUTHORIZED, "user_data.id must be a non-empty string", fatal=True
            )
        if self.user is not None and self.user.id != user_id:
            raise PusherError(
                ErrorCode.UNAUTHORIZED, "Already signed in as another user", fatal=True
            )
        watchlist_raw = data.get("watchlist") or []
        if not isinstance(watchlist_raw, list):
            raise PusherError(
                ErrorCode.UNAUTHORIZED, "user_data.watchlist must be a list", fatal=True
            )
        actions: list[Action] = []
        if len(watchlist_raw) > 100:
            watchlist_raw = watchlist_raw[:100]
            actions.append(
                Reply(
                    messages.error(
                        ErrorCode.WATCHLIST_LIMIT,
                        "Watchlist limit exceeded: only the first 100 ids are watched",
                    )
                )
            )
        watchlist = tuple(str(u) for u in watchlist_raw)
        if self.user is not None:
            # Signed in again as the same user: the registry still lists this socket as a
            # watcher of the earlier watchlist, so those ids stay in it and are let go at
            # sign-out with the rest (a replaced watchlist leaked them for good).
            watchlist = tuple(dict.fromkeys((*self.watchlist, *watchlist)))
        self.user = SignedInUser(user_id, data.get("user_info"), msg.user_data)
        self.watchlist = watchlist
        confirmation = messages.signin_success(msg.user_data)
        return [SignIn(user_id, data.get("user_info"), self.watchlist, confirmation), *actions]


def error_actions(exc: PusherError) -> list[Action]:
    """How any ``PusherError`` reaches the client: ``pusher:error``, then a close if fatal."""
    actions: list[Action] = [Reply(messages.error(exc.code, exc.message))]
    if exc.fatal:
        actions.append(Close(exc.code, exc.message))
    return actions
