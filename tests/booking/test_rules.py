"""Booking rules, pure: dates, overlap, capacity, totals and Rp formatting."""

from __future__ import annotations

from datetime import date

import pytest

from examples.booking_app.rules import (
    BookingError,
    Status,
    Stay,
    Villa,
    check_status_change,
    find_conflict,
    format_idr,
    overlaps,
    parse_status,
    total_price,
    validate_booking,
)

VILLA = Villa(1, "Villa Kembang", "Garden villa", 1_500_000, 2)
TODAY = date(2030, 1, 10)


def form(**overrides: str) -> dict[str, str]:
    base = {
        "guest_name": "Budi",
        "guest_email": "budi@example.com",
        "check_in": "2030-01-12",
        "check_out": "2030-01-15",
        "guests": "2",
    }
    return {**base, **overrides}


def errors_of(data: dict[str, str], stays: list[Stay] | None = None) -> dict[str, str]:
    with pytest.raises(BookingError) as info:
        validate_booking(data, VILLA, today=TODAY, stays=stays or [])
    return info.value.errors


def test_valid_booking_is_parsed() -> None:
    request = validate_booking(form(guest_name="  Budi  "), VILLA, today=TODAY)
    assert request.guest_name == "Budi"
    assert (request.check_in, request.check_out, request.guests) == (
        date(2030, 1, 12),
        date(2030, 1, 15),
        2,
    )
    assert request.nights == 3


def test_check_in_today_is_allowed() -> None:
    assert validate_booking(form(check_in="2030-01-10"), VILLA, today=TODAY).nights == 5


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"check_in": "2030-01-09"}, "check_in"),
        ({"check_in": "not-a-date"}, "check_in"),
        ({"check_in": "2030-02-30"}, "check_in"),
        ({"check_out": ""}, "check_out"),
        ({"check_out": "2030-01-12"}, "check_out"),
        ({"check_out": "2030-01-11"}, "check_out"),
        ({"check_out": "2030-04-01"}, "check_out"),
        ({"guests": "3"}, "guests"),
        ({"guests": "0"}, "guests"),
        ({"guests": "two"}, "guests"),
        ({"guest_name": "   "}, "guest_name"),
        ({"guest_email": "budi.example.com"}, "guest_email"),
    ],
)
def test_each_rule_reports_its_field(overrides: dict[str, str], field: str) -> None:
    assert field in errors_of(form(**overrides))


def test_all_errors_are_reported_together() -> None:
    errors = errors_of(form(guest_name="", check_in="2030-01-01", guests="9"))
    assert set(errors) == {"guest_name", "check_in", "guests"}


def test_capacity_message_names_the_villa() -> None:
    assert errors_of(form(guests="3"))["guests"] == "Villa Kembang sleeps at most 2 guests."


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (("01-12", "01-15"), ("01-14", "01-16"), True),
        (("01-12", "01-15"), ("01-10", "01-13"), True),
        (("01-12", "01-15"), ("01-13", "01-14"), True),
        (("01-12", "01-15"), ("01-11", "01-16"), True),
        (("01-12", "01-15"), ("01-15", "01-18"), False),  # back-to-back: checkout day is free
        (("01-12", "01-15"), ("01-09", "01-12"), False),
        (("01-12", "01-15"), ("01-20", "01-22"), False),
    ],
)
def test_overlap_is_half_open(a: tuple[str, str], b: tuple[str, str], expected: bool) -> None:
    def d(month_day: str) -> date:
        return date.fromisoformat(f"2030-{month_day}")

    assert overlaps(d(a[0]), d(a[1]), d(b[0]), d(b[1])) is expected
    assert overlaps(d(b[0]), d(b[1]), d(a[0]), d(a[1])) is expected


@pytest.mark.parametrize("status", [Status.PENDING, Status.CONFIRMED])
def test_pending_and_confirmed_bookings_block_the_dates(status: Status) -> None:
    stays = [Stay(7, date(2030, 1, 14), date(2030, 1, 20), status)]
    assert "already booked" in errors_of(form(), stays)["__all__"]


@pytest.mark.parametrize("status", [Status.CANCELLED, Status.COMPLETED])
def test_cancelled_and_completed_bookings_free_the_dates(status: Status) -> None:
    stays = [Stay(7, date(2030, 1, 14), date(2030, 1, 20), status)]
    assert validate_booking(form(), VILLA, today=TODAY, stays=stays).nights == 3


def test_overlap_is_not_checked_when_the_dates_are_invalid() -> None:
    stays = [Stay(7, date(2030, 1, 1), date(2030, 3, 1), Status.CONFIRMED)]
    assert "__all__" not in errors_of(form(check_out="2030-01-11"), stays)


def test_find_conflict_ignores_the_booking_itself() -> None:
    stay = Stay(7, date(2030, 1, 12), date(2030, 1, 15), Status.PENDING)
    assert find_conflict(stay.check_in, stay.check_out, [stay], ignore_id=7) is None
    assert find_conflict(stay.check_in, stay.check_out, [stay]) == stay


def test_totals_are_nights_times_rate() -> None:
    assert total_price(VILLA, date(2030, 1, 12), date(2030, 1, 15)) == 4_500_000
    assert total_price(VILLA, date(2030, 1, 31), date(2030, 2, 1)) == 1_500_000


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (1_500_000, "Rp 1.500.000"),
        (950_000, "Rp 950.000"),
        (0, "Rp 0"),
        (999, "Rp 999"),
        (22_750_000, "Rp 22.750.000"),
        (1_000_000_000, "Rp 1.000.000.000"),
        (-5_000, "-Rp 5.000"),
    ],
)
def test_rupiah_formatting(amount: int, text: str) -> None:
    assert format_idr(amount) == text


def test_reviving_a_booking_rechecks_overlap() -> None:
    mine = Stay(1, date(2030, 1, 12), date(2030, 1, 15), Status.CANCELLED)
    other = Stay(2, date(2030, 1, 13), date(2030, 1, 14), Status.CONFIRMED)
    with pytest.raises(BookingError):
        check_status_change(1, Status.CANCELLED, Status.PENDING, mine, [mine, other])
    # Moving between two statuses that both hold (or both free) the dates needs no check.
    check_status_change(1, Status.PENDING, Status.CONFIRMED, mine, [mine, other])
    check_status_change(1, Status.CONFIRMED, Status.COMPLETED, mine, [mine, other])


def test_parse_status_rejects_unknown_values() -> None:
    assert parse_status("confirmed") is Status.CONFIRMED
    with pytest.raises(BookingError):
        parse_status("paid")
