"""The hub's channel, user and cluster rules, with recording peers and a fake adapter.

No socket and no server: a ``RecordingPeer`` is a ``dispatch.Peer`` whose transport side keeps
what it was sent, and ``FakeAdapter`` answers for "the rest of the cluster" as a test says and
records what the hub told it. That is the adapter seam the Redis adapter plugs into.
"""

from __future__ import annotations

import orjson
import pytest

from reverbpy.config import AppConfig, Secret, WebhookTarget
from reverbpy.dispatch import Outbox
from reverbpy.hub import Hub
from reverbpy.protocol import messages
from reverbpy.protocol.cluster import (
    ApiEvent,
    ClientEvent,
    Envelope,
    MemberAdded,
    MemberRemoved,
    Terminate,
    UserOnline,
)
from reverbpy.protocol.errors import SubscriptionError
from reverbpy.protocol.presence import Member
from reverbpy.protocol.session import SignedInUser
from reverbpy.registry import AppState, Registry
from reverbpy.scaling.base import PresenceFull, PresenceJoin
from reverbpy.scaling.memory import MemoryAdapter
from tests.peers import APP, RecordingPeer, RecordingWebhooks


class FakeAdapter(MemoryAdapter):
    """The rest of the cluster, as a test wants it; records what this node published."""

    name = "fake"
    local = False

    def __init__(self) -> None:
        super().__init__()
        self.published: list[Envelope] = []
        self.counts: dict[str, int] = {}
        self.presence_answer: PresenceJoin | None = None
        self.full = False

    def publish(self, envelope: Envelope) -> None:
        self.published.append(envelope)

    async def subscriptions_changed(self, state: AppState, channel: str, delta: int) -> int | None:
        self.counts[channel] = self.counts.get(channel, 0) + delta
        return self.counts[channel]

    async def presence_join(
        self, state: AppState, channel: str, socket_id: str, member: Member
    ) -> PresenceJoin | None:
        if self.full:
            raise PresenceFull
        return self.presence_answer


@pytest.fixture
def outbox() -> Outbox:
    return Outbox(max_write_buffer=1 << 20)


def make_hub(adapter: FakeAdapter | None = None, app: AppConfig = APP) -> tuple[Hub, AppState]:
    hub = Hub(Registry((app,)), RecordingWebhooks(), adapter or FakeAdapter())
    state = hub.registry.by_id(app.id)
    assert state is not None
    return hub, state


def connect(hub: Hub, state: AppState, socket_id: str, outbox: Outbox) -> RecordingPeer:
    peer = RecordingPeer(socket_id, outbox, state.app)
    hub.connect(state, peer)
    return peer


async def test_presence_member_added_once_per_user_and_never_to_the_joiner(outbox: Outbox) -> None:
    hub, state = make_hub()
    ann1 = connect(hub, state, "1.1", outbox)
    ann2 = connect(hub, state, "1.2", outbox)
    bob = connect(hub, state, "1.3", outbox)
    room = "presence-room"
    await hub.join(state, ann1, room, Member("ann", {"n": 1}))
    await hub.join(state, bob, room, Member("bob"))
    await hub.join(state, ann2, room, Member("ann", {"n": 1}))  # Ann's second socket
    assert ann1.events() == ["pusher_internal:subscription_succeeded", "pusher_internal:member_added"]
    assert bob.events() == ["pusher_internal:subscription_succeeded"]
    succeeded = ann2.received()[0]
    assert orjson.loads(succeeded["data"])["presence"]["count"] == 2


async def test_member_removed_only_when_the_users_last_socket_leaves(outbox: Outbox) -> None:
    hub, state = make_hub()
    ann1, ann2, bob = (connect(hub, state, f"1.{i}", outbox) for i in range(3))
    for peer, user in ((ann1, "ann"), (ann2, "ann"), (bob, "bob")):
        await hub.join(state, peer, "presence-room", Member(user))
    bob.received()
    bob.frames.clear()
    await hub.leave(state, ann1, "presence-room", Member("ann"))
    assert bob.events() == []
    await hub.leave(state, ann2, "presence-room", Member("ann"))
    assert bob.events() == ["pusher_internal:member_removed"]


async def test_client_event_skips_the_sender_and_is_relayed_once(outbox: Outbox) -> None:
    adapter = FakeAdapter()
    hub, state = make_hub(adapter)
    hub.node_id = "node-a"
    alice, bob = connect(hub, state, "1.1", outbox), connect(hub, state, "1.2", outbox)
    for peer in (alice, bob):
        await hub.join(state, peer, "private-chat", None)
    hub.whisper(state, alice, "private-chat", "client-typing", {"x": 1}, None)
    assert alice.events() == ["pusher_internal:subscription_succeeded"]
    assert bob.events()[-1] == "client-typing"
    assert [e.message for e in adapter.published] == [
        ClientEvent("private-chat", "client-typing", {"x": 1}, None, "1.1")
    ]


async def test_a_lone_node_publishes_nothing(outbox: Outbox) -> None:
    adapter = FakeAdapter()
    hub, state = make_hub(adapter)
    peer = connect(hub, state, "1.1", outbox)
    await hub.join(state, peer, "news", None)
    assert hub.trigger(state, ["news"], "flash", "hi") == 1
    assert adapter.published == []


async def test_envelopes_from_other_nodes_reach_local_sockets_only_once(outbox: Outbox) -> None:
    hub, state = make_hub()
    hub.node_id = "node-a"
    peer = connect(hub, state, "1.1", outbox)
    await hub.join(state, peer, "presence-room", Member("ann"))
    peer.received()
    peer.frames.clear()
    hub.receive(Envelope("1", "node-b", ApiEvent(["presence-room"], "flash", {"n": 1})))
    hub.receive(Envelope("1", "node-a", ApiEvent(["presence-room"], "echo", {})))  # our own
    hub.receive(Envelope("1", "node-b", MemberAdded("presence-room", "bob", None)))
    hub.receive(Envelope("1", "node-b", MemberRemoved("presence-room", "bob")))
    hub.receive(Envelope("2", "node-b", ApiEvent(["presence-room"], "other-app", {})))
    assert peer.events() == [
        "flash",
        "pusher_internal:member_added",
        "pusher_internal:member_removed",
    ]


async def test_terminate_from_another_node_closes_the_users_sockets(outbox: Outbox) -> None:
    hub, state = make_hub()
    hub.node_id = "node-a"
    peer = connect(hub, state, "1.1", outbox)
    await hub.sign_in(state, peer, "42", (), messages.signin_success("{}"))
    hub.receive(Envelope("1", "node-b", Terminate("42")))
    assert peer.closed_with is not None and peer.closed_with[0] == 4009


async def test_cluster_full_presence_channel_refuses_and_undoes_the_count(outbox: Outbox) -> None:
    adapter = FakeAdapter()
    adapter.full = True
    hub, state = make_hub(adapter)
    peer = connect(hub, state, "1.1", outbox)
    with pytest.raises(SubscriptionError):
        await hub.join(state, peer, "presence-room", Member("ann"))
    assert adapter.counts["presence-room"] == 0
    assert "presence-room" not in state.channels


async def test_the_clusters_presence_answer_wins_over_local_state(outbox: Outbox) -> None:
    adapter = FakeAdapter()
    adapter.presence_answer = PresenceJoin(first=False, members=[Member("ann"), Member("zoe")])
    hub, state = make_hub(adapter)
    hub.node_id = "node-a"
    peer = connect(hub, state, "1.1", outbox)
    await hub.join(state, peer, "presence-room", Member("ann"))
    data = orjson.loads(peer.received()[0]["data"])
    assert sorted(data["presence"]["ids"]) == ["ann", "zoe"]
    assert not any(isinstance(e.message, MemberAdded) for e in adapter.published)


async def test_occupied_and_vacated_follow_the_cluster_count(outbox: Outbox) -> None:
    adapter = FakeAdapter()
    hooked = AppConfig(id="1", key="k", secret=Secret("s"),
                       webhooks=(WebhookTarget(url="http://127.0.0.1:9/hook"),))
    hub, state = make_hub(adapter, hooked)
    hooks = hub.webhooks
    assert isinstance(hooks, RecordingWebhooks)
    adapter.counts["news"] = 3  # other nodes have subscribers
    peer = connect(hub, state, "1.1", outbox)
    await hub.join(state, peer, "news", None)
    await hub.leave(state, peer, "news", None)
    assert hooks.sent == []
    await hub.join(state, peer, "lonely", None)
    await hub.leave(state, peer, "lonely", None)
    assert [h["name"] for h in hooks.sent] == ["channel_occupied", "channel_vacated"]


async def test_cache_channel_replays_the_last_event_after_subscription_succeeded(
    outbox: Outbox,
) -> None:
    hub, state = make_hub()
    hub.trigger(state, ["cache-prices"], "price", {"eur": 1})
    peer = connect(hub, state, "1.1", outbox)
    await hub.join(state, peer, "cache-prices", None)
    late = connect(hub, state, "1.2", outbox)
    await hub.join(state, late, "cache-empty", None)
    assert peer.events() == ["pusher_internal:subscription_succeeded", "price"]
    assert late.events() == ["pusher_internal:subscription_succeeded", "pusher:cache_miss"]


async def test_watchers_hear_online_once_per_user(outbox: Outbox) -> None:
    adapter = FakeAdapter()
    hub, state = make_hub(adapter)
    hub.node_id = "node-a"
    watcher = connect(hub, state, "1.1", outbox)
    await hub.sign_in(state, watcher, "w", ("42",), messages.signin_success("{}"))
    first, second = connect(hub, state, "1.2", outbox), connect(hub, state, "1.3", outbox)
    await hub.sign_in(state, first, "42", (), messages.signin_success("{}"))
    await hub.sign_in(state, second, "42", (), messages.signin_success("{}"))
    assert watcher.events().count("pusher_internal:watchlist_events") == 1
    assert [e.message for e in adapter.published].count(UserOnline("42")) == 1


class CountingAdapter(FakeAdapter):
    """Keeps the hub's interest counts as a clustering adapter would."""

    def __init__(self) -> None:
        super().__init__()
        self.interest: dict[tuple[str, str, str], int] = {}

    def follow(self, topic: tuple[str, str, str]) -> None:
        self.interest[topic] = self.interest.get(topic, 0) + 1

    def unfollow(self, topic: tuple[str, str, str]) -> None:
        count = self.interest[topic] - 1  # a KeyError here is an unfollow without a follow
        if count:
            self.interest[topic] = count
        else:
            del self.interest[topic]


async def test_every_follow_is_matched_by_one_unfollow(outbox: Outbox) -> None:
    """The adapter receives a topic while the hub counts an interest in it: joins (failed
    ones let go at once), first signed-in socket of a user, first watcher of a user."""
    adapter = CountingAdapter()
    hub, state = make_hub(adapter)
    a, b, c = (connect(hub, state, f"1.{n}", outbox) for n in range(3))
    for peer in (a, b):
        peer.session.subscriptions["news"] = None  # what the session records as it asks
        await hub.join(state, peer, "news", None)
    assert adapter.interest == {("1", "c", "news"): 2}
    await hub.leave(state, b, "news", None)
    b.session.subscriptions.clear()
    c.closed = True  # gone while the cluster was asked: the join is undone
    await hub.join(state, c, "news", None)
    adapter.full = True
    with pytest.raises(SubscriptionError):
        await hub.join(state, b, "presence-room", Member("u"))
    assert adapter.interest == {("1", "c", "news"): 1}
    for peer, watchlist in ((a, ("7", "7", "8")), (b, ("8",))):
        peer.session.user, peer.session.watchlist = SignedInUser("42", None, "{}"), watchlist
        await hub.sign_in(state, peer, "42", watchlist, messages.signin_success("{}"))
    assert adapter.interest == {
        ("1", "c", "news"): 1,
        ("1", "u", "42"): 1,  # the user's first socket here, not each
        ("1", "w", "7"): 1,
        ("1", "w", "8"): 1,  # the first watcher here
    }
    await hub.disconnect(state, b)
    assert ("1", "u", "42") in adapter.interest and ("1", "w", "8") in adapter.interest
    await hub.disconnect(state, a)
    assert adapter.interest == {}
