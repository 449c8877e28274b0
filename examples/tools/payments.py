"""Acme's demo payment tool: card numbers arrive typed on the keypad (the agent runs in PCI mode).

The card number is checked (Luhn) and never repeated back: the result names only its last 4 digits,
so nothing that reaches the conversation or the call record could be charged.
"""

from __future__ import annotations

import hashlib
from typing import Any

from voxgate.tools.redaction import luhn_valid


async def pay_invoice(invoice_id: str, card_number: str) -> dict[str, Any]:
    """Take a payment for an invoice, or {"error": ...} when the card number cannot be right."""
    if not card_number.isdigit() or not luhn_valid(card_number):
        return {"error": "that card number doesn't look right. Please check it and try again."}
    # A stable, made-up confirmation code: the demo has no payment processor behind it.
    confirmation = hashlib.sha256(f"{invoice_id}:{card_number[-4:]}".encode()).hexdigest()[:6].upper()
    return {"card_last4": card_number[-4:], "confirmation": confirmation}
