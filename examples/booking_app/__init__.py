"""A villa booking site whose admin dashboard and guest pages update live through reverbpy.

The showcase for reverbpy: a small aiohttp app that publishes with the official `pusher` SDK,
authorizes private channels at Laravel's `/broadcasting/auth`, and serves the real pusher-js and
laravel-echo browser builds. Start it with `make run`.
"""
