"""SQLite storage: the standard library's sqlite3, run off the event loop with `asyncio.to_thread`.

Each call opens its own short-lived connection in a worker thread, so no connection is ever shared
between threads. Checks that must not race (overlap on create, on revive) run in the same
`BEGIN IMMEDIATE` transaction as the write they guard: two guests booking the same nights at the
same moment cannot both win.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from . import rules
from .rules import Status, Stay, Villa

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS villas (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    nightly_rate INTEGER NOT NULL,
    capacity INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bookings (
    id INTEGER PRIMARY KEY,
    villa_id INTEGER NOT NULL REFERENCES villas(id),
    guest_name TEXT NOT NULL,
    guest_email TEXT NOT NULL,
    check_in TEXT NOT NULL,
    check_out TEXT NOT NULL,
    guests INTEGER NOT NULL,
    total INTEGER NOT NULL,
    status TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS bookings_villa ON bookings(villa_id, status);
CREATE TABLE IF NOT EXISTS admins (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL
);
"""

DEMO_VILLAS = [
    (
        "Villa Kembang",
        "A garden villa in Ubud with a private plunge pool among frangipani trees.",
        1_500_000,
        2,
    ),
    (
        "Villa Samudra",
        "Ocean-front in Uluwatu: cliff views, sunset deck and an infinity pool.",
        3_250_000,
        6,
    ),
    (
        "Villa Sawah",
        "Rice-terrace retreat near Tegallalang with an open-air bale and yoga deck.",
        950_000,
        4,
    ),
    (
        "Villa Pasir Putih",
        "Steps from the white sand of Nusa Dua; family rooms and a shallow pool.",
        2_400_000,
        8,
    ),
    (
        "Villa Gunung",
        "Highland cabin on the slopes of Batur, sunrise trek and hot springs nearby.",
        700_000,
        3,
    ),
]


@dataclass(frozen=True)
class Booking:
    id: int
    villa_id: int
    villa_name: str
    guest_name: str
    guest_email: str
    check_in: date
    check_out: date
    guests: int
    total: int
    status: Status
    token: str
    created_at: datetime
    updated_at: datetime

    @property
    def nights(self) -> int:
        return rules.nights(self.check_in, self.check_out)

    @property
    def total_formatted(self) -> str:
        return rules.format_idr(self.total)

    def as_stay(self) -> Stay:
        return Stay(self.id, self.check_in, self.check_out, self.status)


@dataclass(frozen=True)
class Admin:
    id: int
    email: str
    name: str
    password_hash: str


@dataclass(frozen=True)
class StatusChange:
    booking: Booking
    old_status: Status

    @property
    def changed(self) -> bool:
        return self.old_status != self.booking.status


def utcnow() -> datetime:
    return datetime.now(UTC)


def stamp(moment: datetime) -> str:
    """Fixed-width ISO 8601 (always microseconds), so stamps also order correctly as strings."""
    return moment.isoformat(timespec="microseconds")


class Database:
    """Async façade over one SQLite file; every public method is a single transaction."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._run, fn)

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with closing(sqlite3.connect(self.path, timeout=10, isolation_level=None)) as conn:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    # -- setup -------------------------------------------------------------------------------

    async def setup(
        self,
        *,
        admin_email: str,
        admin_password_hash: str,
        seed_demo_bookings: bool,
        today: date,
    ) -> None:
        """Create the schema and seed villas (and a few demo bookings) on first start.

        The configured admin's password is set on every start, so changing
        `BOOKING_ADMIN_PASSWORD` takes effect without deleting the database.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._create_schema)

        def seed(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO admins (email, name, password_hash) VALUES (?, ?, ?) "
                "ON CONFLICT(email) DO UPDATE SET password_hash = excluded.password_hash",
                (admin_email, "Admin", admin_password_hash),
            )
            if conn.execute("SELECT COUNT(*) FROM villas").fetchone()[0]:
                return
            conn.executemany(
                "INSERT INTO villas (name, description, nightly_rate, capacity) VALUES (?, ?, ?, ?)",
                DEMO_VILLAS,
            )
            if seed_demo_bookings:
                _seed_bookings(conn, today)

        await self._call(seed)

    def _create_schema(self) -> None:
        with closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)

    # -- villas ------------------------------------------------------------------------------

    async def list_villas(self) -> list[Villa]:
        return await self._call(
            lambda c: [_villa(r) for r in c.execute("SELECT * FROM villas ORDER BY id")]
        )

    async def get_villa(self, villa_id: int) -> Villa | None:
        return await self._call(lambda c: _get_villa(c, villa_id))

    # -- bookings ----------------------------------------------------------------------------

    async def create_booking(
        self, villa_id: int, form: Mapping[str, str], *, today: date
    ) -> Booking | None:
        """Validate and store a new pending booking; None if the villa does not exist.

        Raises `BookingError` with the form errors.
        """

        def create(conn: sqlite3.Connection) -> Booking | None:
            villa = _get_villa(conn, villa_id)
            if villa is None:
                return None
            request = rules.validate_booking(form, villa, today=today, stays=_stays(conn, villa_id))
            now = stamp(utcnow())
            cur = conn.execute(
                "INSERT INTO bookings (villa_id, guest_name, guest_email, check_in, check_out, "
                "guests, total, status, token, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    villa.id,
                    request.guest_name,
                    request.guest_email,
                    request.check_in.isoformat(),
                    request.check_out.isoformat(),
                    request.guests,
                    rules.total_price(villa, request.check_in, request.check_out),
                    Status.PENDING.value,
                    secrets.token_urlsafe(24),
                    now,
                    now,
                ),
            )
            assert cur.lastrowid is not None
            return _get_booking(conn, cur.lastrowid)

        return await self._call(create)

    async def get_booking(self, booking_id: int) -> Booking | None:
        return await self._call(lambda c: _get_booking(c, booking_id))

    async def list_bookings(self) -> list[Booking]:
        """Every booking, newest first."""
        return await self._call(
            lambda c: [_booking(r) for r in c.execute(BOOKING_SELECT + " ORDER BY b.id DESC")]
        )

    async def change_status(self, booking_id: int, new: Status) -> StatusChange | None:
        """Move a booking to `new`; None if it does not exist. Raises `BookingError` if reviving
        it would double-book the villa."""

        def change(conn: sqlite3.Connection) -> StatusChange | None:
            booking = _get_booking(conn, booking_id)
            if booking is None:
                return None
            if booking.status == new:
                return StatusChange(booking, booking.status)
            rules.check_status_change(
                booking_id, booking.status, new, booking.as_stay(), _stays(conn, booking.villa_id)
            )
            conn.execute(
                "UPDATE bookings SET status = ?, updated_at = ? WHERE id = ?",
                (new.value, stamp(utcnow()), booking_id),
            )
            updated = _get_booking(conn, booking_id)
            assert updated is not None
            return StatusChange(updated, booking.status)

        return await self._call(change)

    # -- admins ------------------------------------------------------------------------------

    async def find_admin(self, email: str) -> Admin | None:
        return await self._call(
            lambda c: _admin(c.execute("SELECT * FROM admins WHERE email = ?", (email,)).fetchone())
        )

    async def get_admin(self, admin_id: int) -> Admin | None:
        return await self._call(
            lambda c: _admin(c.execute("SELECT * FROM admins WHERE id = ?", (admin_id,)).fetchone())
        )


BOOKING_SELECT = (
    "SELECT b.*, v.name AS villa_name FROM bookings b JOIN villas v ON v.id = b.villa_id"
)


def _villa(row: sqlite3.Row) -> Villa:
    return Villa(row["id"], row["name"], row["description"], row["nightly_rate"], row["capacity"])


def _get_villa(conn: sqlite3.Connection, villa_id: int) -> Villa | None:
    row = conn.execute("SELECT * FROM villas WHERE id = ?", (villa_id,)).fetchone()
    return _villa(row) if row else None


def _booking(row: sqlite3.Row) -> Booking:
    return Booking(
        id=row["id"],
        villa_id=row["villa_id"],
        villa_name=row["villa_name"],
        guest_name=row["guest_name"],
        guest_email=row["guest_email"],
        check_in=date.fromisoformat(row["check_in"]),
        check_out=date.fromisoformat(row["check_out"]),
        guests=row["guests"],
        total=row["total"],
        status=Status(row["status"]),
        token=row["token"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
    )


def _get_booking(conn: sqlite3.Connection, booking_id: int) -> Booking | None:
    row = conn.execute(BOOKING_SELECT + " WHERE b.id = ?", (booking_id,)).fetchone()
    return _booking(row) if row else None


def _stays(conn: sqlite3.Connection, villa_id: int) -> list[Stay]:
    rows = conn.execute(
        "SELECT id, check_in, check_out, status FROM bookings WHERE villa_id = ?", (villa_id,)
    )
    return [
        Stay(
            r["id"],
            date.fromisoformat(r["check_in"]),
            date.fromisoformat(r["check_out"]),
            Status(r["status"]),
        )
        for r in rows
    ]


def _admin(row: sqlite3.Row | None) -> Admin | None:
    return Admin(row["id"], row["email"], row["name"], row["password_hash"]) if row else None


def _seed_bookings(conn: sqlite3.Connection, today: date) -> None:
    """A few bookings so a fresh dashboard is not empty: one of each status but pending.

    Demo guests book ahead (or stayed before), so they never collide with a test's bookings,
    which use dates from tomorrow on.
    """
    demo = [
        (1, "Sari Dewi", "sari@example.com", 120, 124, 2, Status.CONFIRMED, 3),
        (2, "Tom Becker", "tom@example.com", 130, 137, 5, Status.CONFIRMED, 2),
        (3, "Aiko Tanaka", "aiko@example.com", -20, -16, 2, Status.COMPLETED, 26),
        (4, "Lucas Martin", "lucas@example.com", 140, 143, 6, Status.CANCELLED, 1),
    ]
    now = utcnow()
    rates = {
        r["id"]: r["nightly_rate"] for r in conn.execute("SELECT id, nightly_rate FROM villas")
    }
    for villa_id, name, email, start, end, guests, status, days_ago in demo:
        created = stamp(now - timedelta(days=days_ago))
        conn.execute(
            "INSERT INTO bookings (villa_id, guest_name, guest_email, check_in, check_out, "
            "guests, total, status, token, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                villa_id,
                name,
                email,
                (today + timedelta(days=start)).isoformat(),
                (today + timedelta(days=end)).isoformat(),
                guests,
                (end - start) * rates[villa_id],
                status.value,
                secrets.token_urlsafe(24),
                created,
                created,
            ),
        )
