"""The operator console (``{path}/console``): a live log, per-app figures, channels and an
event creator, served by the server itself.

``feed`` and ``series`` are pure (no I/O, no event loop): the log's records, their filters and
their rate bound, and the ring buffers behind the charts. ``web`` is the aiohttp side: pages,
sign-in, the Server-Sent Events stream and the event creator.
"""
