"""Log lines never carry card numbers, SSNs or emails, tracebacks included, nor credentials."""

from __future__ import annotations

import io
import json
import logging

from voxgate.observability.logs import JsonFormatter, RedactingFilter, scrub_credentials


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


def test_carrier_handshake_credentials_are_scrubbed() -> None:
    """websockets prints every handshake header at debug level: the Telnyx stream token and the Twilio
    signature go the way of Authorization."""
    lines = ["< x-telnyx-streaming-auth-token: OYp0uCqq-Z5KpmZvl8YKO4SVlbkKk29rGYAkVGjn558",
             "< X-Twilio-Signature: bm90IGEgc2lnbmF0dXJlIGJ1dCBjbG9zZQ==", "< Authorization: Bearer vg_abcdefgh123"]
    assert [scrub_credentials(line) for line in lines] == [
        "< x-telnyx-streaming-auth-token: [redacted]", "< X-Twilio-Signature: [redacted]",
        "< Authorization: [redacted]"]
    assert scrub_credentials("< Upgrade: websocket") == "< Upgrade: websocket"
    # a webhook signing secret, wherever it turns up
    assert scrub_credentials("secret whsec_c2VjcmV0LXNoYXJlZA+/= rotated") == "secret whsec_[redacted] rotated"
