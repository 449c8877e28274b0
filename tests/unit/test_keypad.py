"""The caller's keypad, pure: what each key press amounts to, and PCI digits that only their tool gets."""

from __future__ import annotations

import json

from voxgate.session.keypad import Keypad, KeyPress

CARD = "4111111111111111"
MENU = {"1", "2"}


def test_menu_keys_and_other_keys_are_kept_in_order() -> None:
    keypad = Keypad()
    assert keypad.press("5", MENU) is KeyPress.OTHER
    assert keypad.press("1", MENU) is KeyPress.MENU
    assert keypad.pressed == ["5", "1"]
    assert keypad.take_menu_key() == "1"
    assert keypad.take_menu_key() is None


def test_an_entry_takes_digits_star_starts_over_and_pound_ends_it() -> None:
    keypad = Keypad()
    keypad.ask("pay", "card", tries=1)
    assert [keypad.press(key, MENU) for key in "55*"] == [KeyPress.TYPED] * 3
    for key in CARD:
        assert keypad.press(key, MENU) is KeyPress.TYPED  # a menu key too: it is a digit of the card
    assert keypad.take_entry() is None  # not ended yet
    assert keypad.press("#", MENU) is KeyPress.ENTERED
    assert keypad.pressed == [] and keypad.menu_key is None
    entry = keypad.take_entry()
    assert entry is not None and (entry.tool, entry.argument, entry.tries, entry.digits) == ("pay", "card", 1, CARD)
    assert keypad.entry is None
    assert keypad.press("1", MENU) is KeyPress.MENU  # after the entry, keys are menu keys again


def test_the_vault_fills_only_its_tool_and_only_once() -> None:
    keypad = Keypad()
    keypad.vault_for("pay").values["card"] = CARD
    masked = json.dumps({"card": "****1111", "amount": 5})
    assert keypad.tool_arguments("refund", masked) == masked  # another tool never sees the digits
    assert json.loads(keypad.tool_arguments("pay", masked)) == {"card": CARD, "amount": 5}
    assert keypad.tool_arguments("pay", masked) == masked  # used once, then gone
    keypad.vault_for("pay").values["card"] = CARD
    assert keypad.vault_for("refund").values == {}  # a vault kept for another tool is dropped
    assert keypad.typed("pay") == {}


def test_digits_never_show_in_a_repr() -> None:
    keypad = Keypad()
    keypad.ask("pay", "card", tries=0)
    for key in CARD:
        keypad.press(key, MENU)
    keypad.vault_for("pay").values["card"] = CARD
    assert CARD not in repr(keypad) and "1111" not in repr(keypad)
