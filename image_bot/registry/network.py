"""Why a registry could not be reached, in words a user can act on (pure: reads an exception
chain, never the network).

A plain-HTTP registry reached over HTTPS fails in the TLS handshake; a typo in a host name
fails in DNS; an untrusted certificate fails in verification. httpx reports all three as a
``ConnectError``, so the cause is read from the exception chain.
"""

from __future__ import annotations

import socket
import ssl


def unreachable(exc: BaseException) -> str:
    """``TLS handshake failed — a plain-HTTP registry? …``, ``cannot resolve host``, … or the
    exception's class name when nothing more specific is known."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "TLS certificate not trusted; set `ca_bundle` for this registry"
        if isinstance(cause, ssl.SSLError):
            return ("TLS handshake failed — a plain-HTTP registry? set `insecure: true` for "
                    "this registry")
        if isinstance(cause, socket.gaierror):
            return "cannot resolve host (DNS)"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        text = str(cause)
        if "SSL" in text and ("WRONG_VERSION_NUMBER" in text or "RECORD_LAYER" in text
                              or "record layer" in text):
            return ("TLS handshake failed — a plain-HTTP registry? set `insecure: true` for "
                    "this registry")
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return "TLS certificate not trusted; set `ca_bundle` for this registry"
        if "Name or service not known" in text or "name resolution" in text or (
                "nodename nor servname" in text):
            return "cannot resolve host (DNS)"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__
