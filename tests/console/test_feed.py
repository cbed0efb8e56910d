"""The console's pure parts: log lines, filters, the rate bound and the chart series."""

from __future__ import annotations

from reverbpy.console.feed import Feed, Filter, Line, Tap
from reverbpy.console.series import Series, Totals


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def line(**kw: object) -> Line:
    fields: dict[str, object] = {"seq": 1, "time": 0.0, "app_id": "1", "kind": "api_event"}
    fields.update(kw)
    return Line(**fields)  # type: ignore[arg-type]


def test_filter_by_app_channel_prefix_event_prefix_and_socket_id() -> None:
    assert Filter("1").matches(line())
    assert not Filter("2").matches(line())
    assert Filter("1", channel="private-").matches(line(channels=("a", "private-x")))
    assert not Filter("1", channel="private-").matches(line(channels=("a",)))
    assert not Filter("1", channel="a").matches(line())  # no channel at all
    assert Filter("1", event="order.").matches(line(event="order.created"))
    assert not Filter("1", event="order.").matches(line(event="client-x"))
    assert Filter("1", socket_id="1.2").matches(line(socket_id="1.2"))
    assert not Filter("1", socket_id="1.2").matches(line(socket_id="1.23"))


def test_taps_receive_only_while_open_and_the_feed_says_when_it_is_needed() -> None:
    changes: list[object] = []
    clock = Clock()
    feed = Feed(clock=clock, on_change=changes.append)
    tap, other = Tap(Filter("1")), Tap(Filter("1", event="x"))
    feed.open(tap)
    feed.open(other)
    assert changes == [feed]
    feed.record("api_event", "1", channels=("c",), event="e", data="{}")
    feed.record("api_event", "2", channels=("c",), event="e")
    lines, skipped = tap.take()
    assert [(x.app_id, x.event, x.channels, x.seq) for x in lines] == [("1", "e", ("c",), 1)]
    assert skipped == 0 and other.take() == ([], 0)
    assert lines[0].to_json() == {
        "seq": 1, "time": 1000.0, "kind": "api_event", "channels": ["c"], "event": "e", "data": "{}"
    }  # fmt: skip
    feed.close(tap)
    assert changes == [feed]
    feed.close(other)
    assert changes == [feed, None]
    feed.record("api_event", "1", event="e")
    assert tap.take() == ([], 0)


def test_at_most_max_per_second_lines_and_the_rest_counted_as_skipped() -> None:
    clock = Clock()
    feed = Feed(clock=clock)
    woken: list[int] = []
    tap = Tap(Filter("1"), wake=lambda: woken.append(1), max_per_second=3)
    feed.open(tap)
    for _ in range(10):
        feed.record("client_event", "1", event="client-x")
    lines, skipped = tap.take()
    assert (len(lines), skipped, len(woken)) == (3, 7, 3)
    clock.now += 1  # a new second, a new budget
    for _ in range(2):
        feed.record("client_event", "1", event="client-x")
    lines, skipped = tap.take()
    assert (len(lines), skipped, tap.skipped_total) == (2, 0, 7)


def test_a_reader_that_does_not_take_loses_the_oldest_and_is_told_how_many() -> None:
    clock = Clock()
    feed = Feed(clock=clock)
    tap = Tap(Filter("1"), max_per_second=1000, max_buffered=4)
    feed.open(tap)
    for i in range(6):
        feed.record("connected", "1", socket_id=f"{i}.1")
    lines, skipped = tap.take()
    assert [x.socket_id for x in lines] == ["2.1", "3.1", "4.1", "5.1"]
    assert skipped == 2


def totals(t: float, **kw: int) -> Totals:
    values = dict.fromkeys(
        ("connections", "channels", "users", "webhooks_queued", "messages_in", "messages_out",
         "api_requests", "webhooks_failed"), 0)  # fmt: skip
    values.update(kw)
    return Totals(time=t, **values)


def test_series_turns_totals_into_rates_and_keeps_fifteen_minutes() -> None:
    series = Series(interval=5.0)
    first = series.add(totals(0, connections=3, messages_in=100))
    assert first["connections"] == 3 and first["messages_in"] == 0.0
    second = series.add(totals(5, connections=4, messages_in=150, api_requests=10))
    assert second["messages_in"] == 10.0 and second["api_requests"] == 2.0
    third = series.add(totals(10, messages_in=0))  # counters reset: no negative rate
    assert third["messages_in"] == 0.0
    for i in range(3, 400):
        series.add(totals(i * 5.0))
    history = series.history()
    assert len(history) == 15 * 60 // 5 + 1
    assert history[-1]["time"] == 399 * 5.0
