"""The caller's keypad: menu keys, and PCI values typed on it that only their tool may see.

The session presses keys on it; the brain reads the menu key, starts an entry when a PCI tool needs a
value, and keeps what was typed in the vault; the session swaps the vault's values for the masks the
tool call carries when the tool runs. Pure state, no I/O: it imports nothing of ours, so engines may
read it through `ResponseRequest.keypad` without depending on the rest of the session.
"""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class KeyPress(Enum):
    """What a key press amounts to, for the session to act on."""

    TYPED = "typed"  # a digit (or '*', which starts over) of a PCI entry: nothing else may see it
    ENTERED = "entered"  # '#' ended a PCI entry: answer it like an utterance
    MENU = "menu"  # a menu choice: answer it like an utterance
    OTHER = "other"  # any other key: reported to the client, nothing else


@dataclass
class KeypadEntry:
    """A PCI argument being typed. The digits live here only: no event, item, log line or record holds them."""

    tool: str
    argument: str
    tries: int = 0  # entries for this argument that did not validate
    digits: str = ""
    done: bool = False  # '#' was pressed

    def __repr__(self) -> str:  # never the digits, even in a traceback or a debug log
        return f"KeypadEntry(tool={self.tool!r}, argument={self.argument!r}, tries={self.tries}, done={self.done})"


@dataclass
class PciVault:
    """The typed values of one PCI tool, used once: its call carries masks, the vault the digits."""

    tool: str
    values: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"PciVault(tool={self.tool!r}, arguments={sorted(self.values)!r})"


@dataclass
class Keypad:
    pressed: list[str] = field(default_factory=list)  # every key pressed outside a PCI entry, in order
    menu_key: str | None = None  # the menu key the next response answers
    entry: KeypadEntry | None = None  # set by the brain while it collects a PCI argument
    vault: PciVault | None = None

    # -- the session's side -----------------------------------------------------------------------

    def press(self, digit: str, menu: Container[str]) -> KeyPress:
        entry = self.entry
        if entry is not None and not entry.done:
            if digit == "#":
                entry.done = True
                return KeyPress.ENTERED
            if digit == "*":  # start the entry over, as IVRs do
                entry.digits = ""
            else:
                entry.digits += digit
            return KeyPress.TYPED
        self.pressed.append(digit)
        if digit in menu:
            self.menu_key = digit
            return KeyPress.MENU
        return KeyPress.OTHER

    def tool_arguments(self, tool: str, arguments: str) -> str:
        """The arguments `tool` really runs with: its masked PCI values swapped for the typed digits, once."""
        vault = self.vault
        if vault is None or vault.tool != tool:
            return arguments
        self.vault = None
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
        if not isinstance(parsed, dict):
            return arguments
        return json.dumps({**parsed, **vault.values})

    # -- the brain's side -------------------------------------------------------------------------

    def take_menu_key(self) -> str | None:
        key, self.menu_key = self.menu_key, None
        return key

    def ask(self, tool: str, argument: str, tries: int) -> None:
        """Wait for `argument` of `tool` to be typed (whatever was being typed is dropped)."""
        self.entry = KeypadEntry(tool, argument, tries)

    def take_entry(self) -> KeypadEntry | None:
        """The entry once '#' ended it (and no longer pending), else None."""
        entry = self.entry
        if entry is None or not entry.done:
            return None
        self.entry = None
        return entry

    def vault_for(self, tool: str) -> PciVault:
        """Where `tool`'s typed values go (a vault kept for another tool is dropped)."""
        if self.vault is None or self.vault.tool != tool:
            self.vault = PciVault(tool)
        return self.vault

    def typed(self, tool: str) -> dict[str, Any]:
        return dict(self.vault.values) if self.vault is not None and self.vault.tool == tool else {}

    def cancel(self) -> None:
        """The caller moved on: forget the entry and whatever was typed."""
        self.entry = None
        self.vault = None
