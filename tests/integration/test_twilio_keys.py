"""Key presses on a Twilio call: a menu choice answered by voice, and a card payment typed in PCI mode.

The typed card number must reach the payment tool and nowhere else: not the conversation, not the
call record, not a log line.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from tests.conftest import CarrierServer, finished_call
from tests.integration.test_twilio import transcribe, wait_session
from tests.phone_carrier import TwilioLine, eventually
from voxgate.session.session import Session

CARD = "4111111111111111"
INVOICE = "20931"


def waiting_for(session: Session) -> str | None:
    """The PCI argument the brain waits to be typed."""
    entry = session.keypad.entry
    return entry.argument if entry is not None else None


async def type_digits(line: TwilioLine, digits: str) -> None:
    for digit in digits:
        await line.press(digit)


async def test_menu_choice_and_a_typed_card_that_stays_secret(carrier_server: CarrierServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    live = carrier_server.live
    line = await TwilioLine.call(live.base_url, carrier_server.twilio_auth_token, agent="acme",
                                 caller="+15557654321")
    try:
        session = await wait_session(carrier_server, line.call_sid)
        dialled = time.monotonic()
        await line.wait_audio(dialled, min_s=1.0, within_s=20)

        # 1. "Press 1" cuts the greeting short and is answered like asking about an order.
        pressed_at = time.monotonic()
        await line.press("1")
        await eventually(lambda: line.clears, 5, "a clear when the key cut the greeting")
        reply_at = await line.wait_audio(pressed_at + 0.1, min_s=1.0, within_s=20)
        await line.wait_played(session, within_s=20)
        assert "order" in (await transcribe(line.pcm_since(reply_at))).lower()

        # 2. A payment: the invoice and card numbers are typed, each ended with '#'.
        asked_at = time.monotonic()
        await line.press("3")
        await line.wait_audio(asked_at, min_s=1.0, within_s=20)
        await line.wait_played(session, within_s=20)
        await eventually(lambda: waiting_for(session) == "invoice_id", 5,
                         "the brain waiting for the invoice number")
        await type_digits(line, INVOICE + "#")
        await eventually(lambda: waiting_for(session) == "card_number", 20,
                         "the brain waiting for the card number")
        typed_at = time.monotonic()
        await type_digits(line, CARD + "#")
        confirmed_at = await line.wait_audio(typed_at, min_s=1.5, within_s=30)
        await line.wait_played(session, within_s=30)
        confirmation = (await transcribe(line.pcm_since(confirmed_at))).lower()
        assert "payment" in confirmation, confirmation
        assert session.keypad.vault is None  # used once, then gone
        # The items a client sees, and the history the model would be given (tool calls included).
        conversation = json.dumps([item.to_wire("ga") for item in session.conversation.visible()])
        conversation += json.dumps([vars(entry) for entry in session.conversation.history()])
        assert "****1111" in conversation  # the tool call is there, masked
    finally:
        await line.hang_up()

    call = await finished_call(live, session.id)
    payments = [t for t in call["tool_calls"] if t["name"] == "pay_invoice"]
    assert len(payments) == 1 and payments[0]["status"] == "completed", payments
    assert json.loads(payments[0]["arguments"]) == {"invoice_id": "****0931", "card_number": "****1111"}
    for secret in (CARD, INVOICE):
        assert secret not in json.dumps(call)
        assert secret not in conversation
        assert secret not in caplog.text
