"""Logging for operators: one line per record, and nothing in it that a caller must not leave behind.

Every record passes through redaction (card numbers by Luhn, SSNs, emails), messages and tracebacks
alike, so a tool that fails with a card number in its exception cannot write it to a log file.

Credentials are scrubbed too: at debug level the WebSocket server (websockets' sans-IO protocol) prints
every handshake header, `Authorization: Bearer ...` and the browser's `openai-insecure-api-key.ek_...`
subprotocol among them. `CredentialFilter` sits on the loggers that print headers, where each record is
made (so it holds whatever handlers an embedding app installs), and on the handler `serve` installs.
"""

from __future__ import annotations

import json
import logging
import re
import time

from voxgate.tools.redaction import redact


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned, count = redact(message)
        if count:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            formatter = logging.Formatter()
            record.exc_text = redact(formatter.formatException(record.exc_info))[0]
            record.exc_info = None
        return True


# Header lines and tokens that carry a key; each match keeps its name and loses its value.
_CREDENTIALS = re.compile(
    r"(?P<keep>(?:authorization|proxy-authorization|cookie|set-cookie|x-api-key|x-telnyx-streaming-auth-token"
    r"|x-twilio-signature)\s*[:=]\s*)[^\r\n]+"
    r"|(?P<keep2>openai-insecure-api-key\.)[^\s,;'\"]+"
    r"|(?P<keep3>\bbearer\s+)[^\s,;'\"]+"
    r"|(?P<keep4>\b(?:ek|vg)_)[A-Za-z0-9_-]{8,}"
    r"|(?P<keep5>\bwhsec_)[A-Za-z0-9+/=_-]{8,}",  # a Standard Webhooks secret (sip_webhook_secret)
    re.IGNORECASE,
)
# a cheap pre-test
_MARKERS = ("authoriz", "cookie", "api-key", "bearer", "ek_", "vg_", "auth-token", "signature", "whsec_")
# Where records carrying request headers are made: websockets logs every handshake header on its own
# loggers (the listener's WebSocket connections use "websockets.server"); uvicorn's, for an app embedded
# under uvicorn, log on "uvicorn.error".
HEADER_LOGGERS = ("websockets.server", "websockets.client", "voxgate", "uvicorn.error", "uvicorn.access")


def scrub_credentials(text: str) -> str:
    """`text` with every key, bearer token, cookie and key subprotocol replaced by `[redacted]`."""
    lowered = text.lower()
    if not any(marker in lowered for marker in _MARKERS):
        return text
    return _CREDENTIALS.sub(lambda m: next(g for g in m.groups() if g is not None) + "[redacted]", text)


class CredentialFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub_credentials(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def guard_credentials() -> None:
    """Put a CredentialFilter on each logger that prints request headers (once per process)."""
    for name in HEADER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, CredentialFilter) for f in logger.filters):
            logger.addFilter(CredentialFilter())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
                 "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry)


def configure_logging(level: str = "info", json_lines: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(CredentialFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one line per decode is noise
