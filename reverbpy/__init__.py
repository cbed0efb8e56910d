"""reverbpy: a Pusher Channels (protocol 7) server for Python, a drop-in for Laravel Reverb."""

__version__ = "0.1.0"
__all__ = ["__version__"]
