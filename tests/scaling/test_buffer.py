"""The outage buffer both adapters keep: ordered, bounded by count and by age, counted."""

from __future__ import annotations

import logging

import pytest

from reverbpy.scaling.buffer import OutageBuffer


def test_full_buffer_drops_the_oldest_and_logs_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    buffer: OutageBuffer[int] = OutageBuffer(3, 30.0, "Redis")
    with caplog.at_level(logging.WARNING, "reverbpy.scaling"):
        for n in range(6):
            buffer.append(n, now=0.0)
    assert buffer.take(1.0, 10) == [3, 4, 5]
    assert buffer.dropped == 3 and len(caplog.records) == 1
    assert "REVERB_SCALING_BUFFER_SIZE 3" in caplog.records[0].getMessage()
    buffer.link_back()
    with caplog.at_level(logging.WARNING, "reverbpy.scaling"):
        for n in range(4):
            buffer.append(n, now=2.0)
    assert buffer.dropped == 4 and len(caplog.records) == 2  # a new outage, a new line


def test_what_waited_past_its_age_is_dropped_when_taken() -> None:
    buffer: OutageBuffer[str] = OutageBuffer(100, 10.0, "NATS")
    buffer.append("old", now=0.0)
    buffer.append("new", now=5.0)
    assert buffer.take(12.0, 10) == ["new"] and buffer.dropped == 1


def test_what_the_broker_did_not_take_goes_back_to_the_front_in_order() -> None:
    buffer: OutageBuffer[int] = OutageBuffer(100, 10.0, "Redis")
    for n in range(5):
        buffer.append(n, now=0.0)
    assert buffer.take(1.0, 3) == [0, 1, 2]
    buffer.put_back(2)  # 0 went out, 1 and 2 did not
    buffer.append(5, now=1.0)
    assert buffer.take(1.0, 10) == [1, 2, 3, 4, 5] and buffer.dropped == 0
