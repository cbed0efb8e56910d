"""The Pusher HTTP API (``/apps/{app_id}/...``), Reverb's extras and the health route."""
