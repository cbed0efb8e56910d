"""TLS for ``wss://`` and ``https://`` served directly (``--tls-cert``/``--tls-key``)."""

from __future__ import annotations

import ssl

from reverbpy.config import ConfigError, ServerConfig


def server_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The server's TLS context, or None when TLS is off; errors name the setting."""
    if not config.tls_cert and not config.tls_key:
        return None
    if not config.tls_cert or not config.tls_key:
        raise ConfigError("REVERB_TLS_CERT and REVERB_TLS_KEY must be given together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except FileNotFoundError as exc:
        raise ConfigError(f"REVERB_TLS_CERT/KEY: {exc.filename} does not exist") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"REVERB_TLS_CERT/KEY: cannot load the certificate: {exc}") from None
    return context


def scheme(config: ServerConfig) -> str:
    return "https" if config.tls_cert else "http"
