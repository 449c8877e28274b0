"""Two SIP transaction layers wired back to back through bytes, on a clock the test moves.

Every message crosses as bytes and is parsed again on arrival, so serialisation is exercised with the
state machines. `drop` loses the next matching messages, to exercise retransmission. No sockets, no sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from voxgate.sip.message import Request, Response, parse_message
from voxgate.sip.transaction import Address, TransactionEvent, TransactionLayer, Transmit

ALICE: Address = ("192.0.2.1", 5062)
BOB: Address = ("192.0.2.10", 5060)


@dataclass
class Peer:
    name: str
    address: Address
    layer: TransactionLayer = field(default_factory=TransactionLayer)
    inbox: list[TransactionEvent] = field(default_factory=list)  # events for this side's core
    sent: list[bytes] = field(default_factory=list)

    def events(self, kind: type) -> list:
        return [event for event in self.inbox if isinstance(event, kind)]

    def take(self, kind: type) -> list:
        found = self.events(kind)
        self.inbox = [event for event in self.inbox if not isinstance(event, kind)]
        return found


@dataclass
class Network:
    now: float = 0.0
    reliable: bool = False
    alice: Peer = field(default_factory=lambda: Peer("alice", ALICE))
    bob: Peer = field(default_factory=lambda: Peer("bob", BOB))
    _drops: list[Callable[[bytes], bool]] = field(default_factory=list)

    def peer_at(self, address: Address) -> Peer:
        return self.alice if address == ALICE else self.bob

    def other(self, peer: Peer) -> Peer:
        return self.bob if peer is self.alice else self.alice

    def drop(self, predicate: Callable[[bytes], bool]) -> None:
        """Lose the next message for which `predicate(bytes)` is true."""
        self._drops.append(predicate)

    def deliver(self, sender: Peer, events: list[TransactionEvent]) -> None:
        """Send `sender`'s Transmits across (in order), and queue its other events for its core."""
        for event in events:
            if not isinstance(event, Transmit):
                sender.inbox.append(event)
                continue
            sender.sent.append(event.data)
            lost = next((p for p in self._drops if p(event.data)), None)
            if lost is not None:
                self._drops.remove(lost)
                continue
            receiver = self.peer_at(event.peer)
            message = parse_message(event.data)
            if isinstance(message, Request):
                out = receiver.layer.receive_request(message, sender.address, self.now, reliable=self.reliable)
            else:
                assert isinstance(message, Response)
                out = receiver.layer.receive_response(message, self.now)
            self.deliver(receiver, out)

    def advance(self, until: float) -> None:
        """Move the clock to `until`, firing every timer due on the way, in order."""
        while True:
            due = [d for d in (self.alice.layer.next_deadline(), self.bob.layer.next_deadline()) if d is not None]
            if not due or min(due) > until:
                break
            self.now = max(self.now, min(due))
            for peer in (self.alice, self.bob):
                self.deliver(peer, peer.layer.handle_timer(self.now))
        self.now = until
