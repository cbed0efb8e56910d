"""The Pusher protocol without I/O: plain functions and classes, testable without a socket."""
