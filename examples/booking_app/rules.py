"""Booking rules: pure functions, no I/O, so every rule is tested without a database or a loop.

A stay is the half-open date range [check_in, check_out): a guest checking out on the 5th and
another checking in on the 5th do not overlap. Only `pending` and `confirmed` bookings hold a villa.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


#: Statuses that keep the villa's dates taken.
HOLDING_STATUSES = frozenset({Status.PENDING, Status.CONFIRMED})

MAX_NIGHTS = 60


@dataclass(frozen=True)
class Villa:
    id: int
    name: str
    description: str
    nightly_rate: int  # IDR, whole rupiah
    capacity: int


@dataclass(frozen=True)
class Stay:
    """An existing booking as far as overlap checks are concerned."""

    booking_id: int
    check_in: date
    check_out: date
    status: Status


@dataclass(frozen=True)
class BookingRequest:
    """A validated booking form, ready to store."""

    villa_id: int
    guest_name: str
    guest_email: str
    check_in: date
    check_out: date
    guests: int

    @property
    def nights(self) -> int:
        return (self.check_out - self.check_in).days


class BookingError(ValueError):
    """Form errors keyed by field name (`"__all__"` for the booking as a whole)."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = dict(errors)


def nights(check_in: date, check_out: date) -> int:
    return (check_out - check_in).days


def total_price(villa: Villa, check_in: date, check_out: date) -> int:
    """Total in IDR: nights x nightly rate (no taxes or fees in this demo)."""
    return nights(check_in, check_out) * villa.nightly_rate


def format_idr(amount: int) -> str:
    """`1500000` -> `Rp 1.500.000`: Indonesian grouping uses dots; rupiah have no decimals here."""
    sign = "-" if amount < 0 else ""
    return f"{sign}Rp {abs(amount):,}".replace(",", ".")


def overlaps(a_in: date, a_out: date, b_in: date, b_out: date) -> bool:
    """True when two half-open stays share at least one night."""
    return a_in < b_out and b_in < a_out


def find_conflict(
    check_in: date, check_out: date, stays: Iterable[Stay], *, ignore_id: int | None = None
) -> Stay | None:
    """The first holding stay that overlaps the given dates, if any."""
    for stay in stays:
        if stay.booking_id == ignore_id or stay.status not in HOLDING_STATUSES:
            continue
        if overlaps(check_in, check_out, stay.check_in, stay.check_out):
            return stay
    return None


def validate_booking(
    form: Mapping[str, str], villa: Villa, *, today: date, stays: Iterable[Stay] = ()
) -> BookingRequest:
    """Check a raw booking form against every rule; raise `BookingError` with all field errors.

    `today` is passed in rather than read from the clock so tests (and time zones) stay explicit.
    """
    errors: dict[str, str] = {}

    guest_name = form.get("guest_name", "").strip()
    if not guest_name:
        errors["guest_name"] = "Please enter your name."
    elif len(guest_name) > 100:
        errors["guest_name"] = "Name is too long (100 characters at most)."

    guest_email = form.get("guest_email", "").strip()
    if not _looks_like_email(guest_email):
        errors["guest_email"] = "Please enter a valid email address."

    check_in = _parse_date(form.get("check_in", ""))
    check_out = _parse_date(form.get("check_out", ""))
    if check_in is None:
        errors["check_in"] = "Please choose a valid check-in date."
    elif check_in < today:
        errors["check_in"] = "Check-in cannot be in the past."
    if check_out is None:
        errors["check_out"] = "Please choose a valid check-out date."
    elif check_in is not None and check_out <= check_in:
        errors["check_out"] = "Check-out must be after check-in."
    elif check_in is not None and nights(check_in, check_out) > MAX_NIGHTS:
        errors["check_out"] = f"Stays are limited to {MAX_NIGHTS} nights."

    guests = _parse_int(form.get("guests", ""))
    if guests is None or guests < 1:
        errors["guests"] = "Please enter the number of guests (at least 1)."
    elif guests > villa.capacity:
        errors["guests"] = f"{villa.name} sleeps at most {villa.capacity} guests."

    dates_ok = check_in is not None and check_out is not None
    if dates_ok and not errors.keys() & {"check_in", "check_out"}:
        assert check_in is not None and check_out is not None
        if find_conflict(check_in, check_out, stays) is not None:
            errors["__all__"] = f"{villa.name} is already booked for some of these dates."

    if errors:
        raise BookingError(errors)
    assert check_in is not None and check_out is not None and guests is not None
    return BookingRequest(villa.id, guest_name, guest_email, check_in, check_out, guests)


def check_status_change(
    booking_id: int, old: Status, new: Status, stay: Stay, stays: Iterable[Stay]
) -> None:
    """Admins may move a booking between any two statuses, but reviving a cancelled or completed
    booking must not double-book the villa, so that move re-runs the overlap check."""
    reviving = new in HOLDING_STATUSES and old not in HOLDING_STATUSES
    if reviving and find_conflict(stay.check_in, stay.check_out, stays, ignore_id=booking_id):
        raise BookingError({"status": "Another booking now holds these dates."})


def parse_status(raw: str) -> Status:
    try:
        return Status(raw)
    except ValueError:
        raise BookingError({"status": f"Unknown status {raw!r}."}) from None


def _parse_date(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        return None


def _parse_int(raw: str) -> int | None:
    try:
        return int(raw.strip())
    except ValueError:
        return None


def _looks_like_email(value: str) -> bool:
    # Deliberately loose: the only real check of an address is sending mail to it.
    local, at, domain = value.partition("@")
    return bool(local and at and "." in domain and " " not in value and len(value) <= 254)
