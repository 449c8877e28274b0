"""Log lines never carry card numbers, SSNs or emails, tracebacks included."""

from __future__ import annotations

import io
import json
import logging

from voxgate.observability.logs import JsonFormatter, RedactingFilter


def test_messages_and_tracebacks_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("voxgate.test.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("caller said %s", "my card is 4111 1111 1111 1111 and mail a@b.example")
        try:
            raise ValueError("declined: 4111111111111111")
        except ValueError:
            log.exception("tool failed for %s", "123-45-6789")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "4111 1111 1111 1111" not in out and "4111111111111111" not in out
    assert "a@b.example" not in out and "123-45-6789" not in out
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["msg"].endswith("1111 and mail [email redacted]")
    assert "ValueError" in lines[1]["exc"]
