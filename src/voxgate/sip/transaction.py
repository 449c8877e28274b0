"""SIP transactions (RFC 3261 §17 with the RFC 6026 fix), sans-IO: the timers and retransmissions that make
UDP reliable, driven by the caller's clock.

    layer = TransactionLayer()
    events = layer.receive_request(request, peer, now)       # RequestReceived, or nothing: a retransmission
    events += layer.send_response(response, now)             # Transmit(...)
    client, events = layer.send_request(invite, peer, now)   # Transmit(...), later ResponseReceived(...)
    events = layer.handle_timer(now)                         # retransmissions and timeouts that fell due
    layer.next_deadline()                                    # when to call handle_timer next (or None)

The shell sends every `Transmit` (its `data` to its `peer`), hands the other events to the transaction user
(the UA core), and calls `handle_timer` at `next_deadline()`. `now` is seconds on any monotonic clock.

What it does for the core: a server INVITE transaction answers 100 Trying at once; retransmitted requests
are absorbed and answered with the last response; a final non-2xx to an INVITE is retransmitted (Timer G)
until the ACK, which the layer absorbs; a client INVITE answered with a non-2xx is ACKed here (§17.1.1.3);
requests are retransmitted over UDP (Timers A and E) and time out (B and F) into `TransactionTimedOut`,
which the core treats as a 408. A 2xx to INVITE ends the server transaction's job: the UAS core
retransmits it until the ACK (dialog.InviteAnswer), and the ACK to a 2xx, a new transaction, comes up as a
`RequestReceived` with no transaction. Responses with more than one Via are discarded (§8.1.3.3).
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, field

from voxgate.sip.headers import MAGIC_COOKIE, CSeq, Via, new_tag
from voxgate.sip.message import Headers, Message, Request, Response, make_response

__all__ = [
    "Address",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "RequestReceived",
    "ResponseReceived",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "ServerTransaction",
    "State",
    "Timers",
    "TransactionEvent",
    "TransactionLayer",
    "TransactionTimedOut",
    "Transmit",
    "ack_for",
    "cancel_for",
]

Address = tuple[str, int]  # where a message came from or goes to; the shell's business, carried through


@dataclass(frozen=True)
class Timers:
    """RFC 3261 §17.1.1.1 and Table 4. T1 is the RTT estimate, T2 the longest non-INVITE retransmit
    interval, T4 how long a message can stay in the network."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable), L and M."""
        return 64 * self.t1


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"  # RFC 6026: a 2xx was sent or received
    TERMINATED = "terminated"


# --- events ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send `data` (the serialised `message`) to `peer`."""

    message: Message
    peer: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the core. `transaction` is None for an ACK to a 2xx (it has no transaction)."""

    request: Request
    peer: Address
    transaction: ServerTransaction | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for the core. `transaction` is None for a stray one (a retransmitted 2xx to an INVITE
    whose transaction has ended: the core ACKs it again)."""

    response: Response
    transaction: ClientTransaction | None


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """No final response in time (client: act as on a 408), or no ACK to our final non-2xx (server)."""

    transaction: ClientTransaction | ServerTransaction


TransactionEvent = Transmit | RequestReceived | ResponseReceived | TransactionTimedOut


def _transmit(message: Message, peer: Address) -> Transmit:
    return Transmit(message, peer, message.to_bytes())


# --- building the requests the layer sends itself -----------------------------------------------------------


def ack_for(invite: Request, response: Response) -> Request:
    """The ACK to a non-2xx final response (RFC 3261 §17.1.1.3): same branch, Request-URI, Call-ID, From and
    Route as the INVITE, the response's To (with its tag), CSeq number with method ACK."""
    headers = Headers([("Via", invite.headers.get_all("Via")[0]), ("Max-Forwards", "70")])
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.headers.get("Call-ID") or "")
    headers.add("CSeq", str(CSeq(invite.cseq.number, "ACK")))
    return Request("ACK", invite.uri, headers)


def cancel_for(request: Request) -> Request:
    """A CANCEL of `request` (RFC 3261 §9.1): same top Via (branch), Request-URI, Call-ID, From, To, Route and
    CSeq number, method CANCEL."""
    headers = Headers([("Via", request.headers.get_all("Via")[0]), ("Max-Forwards", "70")])
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    for name in ("From", "To", "Call-ID"):
        headers.add(name, request.headers.get(name) or "")
    headers.add("CSeq", str(CSeq(request.cseq.number, "CANCEL")))
    return Request("CANCEL", request.uri, headers)


# --- transactions ------------------------------------------------------------------------------------------


class _Transaction:
    """State, the message that made it, where its messages go, and its running timers (name → deadline)."""

    invite = False

    def __init__(self, request: Request, peer: Address, reliable: bool, timers: Timers, key: tuple[str, ...]) -> None:
        self.request = request
        self.peer = peer
        self.reliable = reliable
        self.config = timers
        self.key = key
        self.state = State.TERMINATED
        self.timers: dict[str, float] = {}
        self._intervals: dict[str, float] = {}

    @property
    def branch(self) -> str | None:
        return self.request.via[0].branch

    def _start(self, name: str, now: float, delay: float) -> None:
        self.timers[name] = now + delay
        self._intervals[name] = delay

    def _stop(self, *names: str) -> None:
        for name in names:
            self.timers.pop(name, None)

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self.timers.clear()

    def fire(self, name: str, now: float) -> list[TransactionEvent]:  # pragma: no cover - overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.state.value} {self.key}>"


class ClientInviteTransaction(_Transaction):
    invite = True

    def __init__(self, request: Request, peer: Address, reliable: bool, timers: Timers, key: tuple[str, ...]) -> None:
        super().__init__(request, peer, reliable, timers, key)
        self.provisional_seen = False
        self.cancel_pending = False  # a CANCEL asked for before any provisional response (RFC 3261 §9.1)
        self.last_ack: Transmit | None = None

    def start(self, now: float) -> list[TransactionEvent]:
        self.state = State.CALLING
        if not self.reliable:
            self._start("A", now, self.config.t1)
        self._start("B", now, self.config.timeout)
        return [_transmit(self.request, self.peer)]

    def receive(self, response: Response, now: float) -> list[TransactionEvent]:
        state = self.state
        if response.provisional:
            if state in (State.CALLING, State.PROCEEDING):
                self.state = State.PROCEEDING
                self.provisional_seen = True
                self._stop("A", "B")
                return [ResponseReceived(response, self)]
            return []
        if 200 <= response.status < 300:
            if state in (State.CALLING, State.PROCEEDING):
                self.state = State.ACCEPTED
                self.timers.clear()
                self._start("M", now, self.config.timeout)
            if state in (State.CALLING, State.PROCEEDING, State.ACCEPTED):
                return [ResponseReceived(response, self)]  # every 2xx goes up: the core ACKs each
            return []
        if state in (State.CALLING, State.PROCEEDING):
            self.state = State.COMPLETED
            self.timers.clear()
            self._start("D", now, 0.0 if self.reliable else 32.0)
            self.last_ack = _transmit(ack_for(self.request, response), self.peer)
            return [self.last_ack, ResponseReceived(response, self)]
        if state == State.COMPLETED and self.last_ack is not None:
            return [self.last_ack]  # a retransmitted final response: ACK again, tell nobody
        return []

    def fire(self, name: str, now: float) -> list[TransactionEvent]:
        if name == "A" and self.state == State.CALLING:
            self._start("A", now, 2 * self._intervals["A"])
            return [_transmit(self.request, self.peer)]
        if name in ("B", "C") and self.state in (State.CALLING, State.PROCEEDING):
            self._terminate()
            return [TransactionTimedOut(self)]
        if name in ("D", "M"):
            self._terminate()
        return []


class ClientNonInviteTransaction(_Transaction):
    def start(self, now: float) -> list[TransactionEvent]:
        self.state = State.TRYING
        if not self.reliable:
            self._start("E", now, self.config.t1)
        self._start("F", now, self.config.timeout)
        return [_transmit(self.request, self.peer)]

    def receive(self, response: Response, now: float) -> list[TransactionEvent]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []  # a retransmitted final response in Completed is absorbed
        if response.provisional:
            self.state = State.PROCEEDING
            return [ResponseReceived(response, self)]
        self.state = State.COMPLETED
        self.timers.clear()
        self._start("K", now, 0.0 if self.reliable else self.config.t4)
        return [ResponseReceived(response, self)]

    def fire(self, name: str, now: float) -> list[TransactionEvent]:
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            interval = self.config.t2 if self.state == State.PROCEEDING else min(2 * self._intervals["E"],
                                                                                 self.config.t2)
            self._start("E", now, interval)
            return [_transmit(self.request, self.peer)]
        if name == "F" and self.state in (State.TRYING, State.PROCEEDING):
            self._terminate()
            return [TransactionTimedOut(self)]
        if name == "K":
            self._terminate()
        return []


class ServerInviteTransaction(_Transaction):
    invite = True

    def __init__(self, request: Request, peer: Address, reliable: bool, timers: Timers, key: tuple[str, ...]) -> None:
        super().__init__(request, peer, reliable, timers, key)
        self.last_response: Transmit | None = None
        self.final: Response | None = None

    def start(self, now: float) -> list[TransactionEvent]:
        """Proceeding, with 100 Trying sent at once (§17.2.1 allows it; it stops the INVITE retransmits)."""
        self.state = State.PROCEEDING
        self.last_response = _transmit(make_response(self.request, 100), self.peer)
        return [self.last_response, RequestReceived(self.request, self.peer, self)]

    def receive(self, request: Request, now: float) -> list[TransactionEvent]:
        if request.method == "ACK":
            if self.state == State.ACCEPTED:
                return [RequestReceived(request, self.peer, None)]  # RFC 6026: an ACK to the 2xx goes up
            if self.state == State.COMPLETED:
                self.state = State.CONFIRMED
                self._stop("G", "H")
                self._start("I", now, 0.0 if self.reliable else self.config.t4)
            return []  # an ACK to a non-2xx ends here; retransmitted ACKs are absorbed
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response is not None:
            return [self.last_response]  # a retransmitted INVITE gets the last response again
        return []

    def send(self, response: Response, now: float) -> list[TransactionEvent]:
        if self.state != State.PROCEEDING:
            raise RuntimeError(f"cannot send {response.status} in state {self.state.value}")
        out = _transmit(response, self.peer)
        self.last_response = out
        if response.provisional:
            return [out]
        self.final = response
        if response.status < 300:
            self.state = State.ACCEPTED  # the UAS core retransmits the 2xx itself (dialog.InviteAnswer)
            self._start("L", now, self.config.timeout)
        else:
            self.state = State.COMPLETED
            if not self.reliable:
                self._start("G", now, self.config.t1)
            self._start("H", now, self.config.timeout)
        return [out]

    def fire(self, name: str, now: float) -> list[TransactionEvent]:
        if name == "G" and self.state == State.COMPLETED and self.last_response is not None:
            self._start("G", now, min(2 * self._intervals["G"], self.config.t2))
            return [self.last_response]
        if name == "H" and self.state == State.COMPLETED:
            self._terminate()
            return [TransactionTimedOut(self)]
        if name in ("I", "L"):
            self._terminate()
        return []


class ServerNonInviteTransaction(_Transaction):
    def __init__(self, request: Request, peer: Address, reliable: bool, timers: Timers, key: tuple[str, ...]) -> None:
        super().__init__(request, peer, reliable, timers, key)
        self.last_response: Transmit | None = None

    def start(self, now: float) -> list[TransactionEvent]:
        self.state = State.TRYING
        return [RequestReceived(self.request, self.peer, self)]

    def receive(self, request: Request, now: float) -> list[TransactionEvent]:
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response is not None:
            return [self.last_response]
        return []  # absorbed in Trying: the core has not answered yet

    def send(self, response: Response, now: float) -> list[TransactionEvent]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            raise RuntimeError(f"cannot send {response.status} in state {self.state.value}")
        out = _transmit(response, self.peer)
        self.last_response = out
        if response.provisional:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            self._start("J", now, 0.0 if self.reliable else self.config.timeout)
        return [out]

    def fire(self, name: str, now: float) -> list[TransactionEvent]:
        if name == "J":
            self._terminate()
        return []


ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction
ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction
_AnyTransaction = ClientTransaction | ServerTransaction


# --- matching ----------------------------------------------------------------------------------------------


def _server_key(request: Request) -> tuple[str, ...]:
    """RFC 3261 §17.2.3: branch, sent-by and method (ACK matches INVITE); RFC 2543 peers without the magic
    cookie are matched on Request-URI, From tag, Call-ID, CSeq number and the top Via."""
    top: Via = request.via[0]
    method = "INVITE" if request.method == "ACK" else request.method
    branch = top.branch or ""
    if branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return (branch, top.host, str(top.port or ""), method)
    return ("2543", str(request.uri), request.from_.tag or "", request.call_id, str(request.cseq.number),
            str(top), method)


def _client_key(branch: str, method: str) -> tuple[str, ...]:
    return (branch, method)  # §17.1.3: the response's top Via branch and its CSeq method


# --- the layer ---------------------------------------------------------------------------------------------


@dataclass
class LayerCounters:
    """What the layer refused or absorbed, for metrics."""

    retransmissions_absorbed: int = 0
    responses_discarded: int = 0  # more than one Via, or a response to nothing we sent and not a 2xx
    overloaded: int = 0  # requests answered 503 because the transaction table was full


@dataclass
class TransactionLayer:
    """Every transaction of one user agent, matched by key, with one timer heap for all of them.

    `max_server_transactions` bounds the table: past it, new requests are answered 503 statelessly (an
    INVITE flood costs a response each, not memory)."""

    timers: Timers = field(default_factory=Timers)
    max_server_transactions: int = 20_000
    counters: LayerCounters = field(default_factory=LayerCounters)

    def __post_init__(self) -> None:
        self._server: dict[tuple[str, ...], ServerTransaction] = {}
        self._client: dict[tuple[str, ...], ClientTransaction] = {}
        self._heap: list[tuple[float, int, str, _AnyTransaction]] = []
        self._order = itertools.count()
        self._scheduled: dict[int, dict[str, float]] = {}

    # -- incoming

    def receive_request(self, request: Request, peer: Address, now: float, *,
                        reliable: bool = False) -> list[TransactionEvent]:
        """A request that arrived from `peer` (over a stream when `reliable`)."""
        key = _server_key(request)
        existing = self._server.get(key)
        if existing is not None:
            self.counters.retransmissions_absorbed += request.method != "ACK"
            events = existing.receive(request, now)
            self._after(existing)
            return events
        if request.method == "ACK":
            return [RequestReceived(request, peer, None)]  # the ACK to a 2xx: its own transaction
        if len(self._server) >= self.max_server_transactions:
            self.counters.overloaded += 1
            busy = make_response(request, 503, headers=[("Retry-After", "5")], to_tag=new_tag())
            return [_transmit(busy, peer)]
        server: ServerTransaction
        if request.method == "INVITE":
            server = ServerInviteTransaction(request, peer, reliable, self.timers, key)
            events = server.start(now)
        else:
            server = ServerNonInviteTransaction(request, peer, reliable, self.timers, key)
            events = server.start(now)
        self._server[key] = server
        self._after(server)
        return events

    def receive_response(self, response: Response, now: float) -> list[TransactionEvent]:
        vias = response.via
        if len(vias) != 1:
            self.counters.responses_discarded += 1  # §8.1.3.3: not for us
            return []
        client = self._client.get(_client_key(vias[0].branch or "", response.cseq.method))
        if client is None:
            if response.cseq.method == "INVITE" and 200 <= response.status < 300:
                return [ResponseReceived(response, None)]
            self.counters.responses_discarded += 1
            return []
        events = client.receive(response, now)
        if isinstance(client, ClientInviteTransaction) and client.cancel_pending and client.provisional_seen:
            client.cancel_pending = False
            events += self._send_cancel(client, now)
        self._after(client)
        return events

    # -- outgoing

    def send_request(self, request: Request, peer: Address, now: float, *,
                     reliable: bool = False) -> tuple[ClientTransaction | None, list[TransactionEvent]]:
        """Start a client transaction for `request` (an ACK has none: it is just sent)."""
        if request.method == "ACK":
            return None, [_transmit(request, peer)]
        branch = request.via[0].branch or ""
        key = _client_key(branch, request.method)
        if key in self._client:
            raise ValueError(f"a {request.method} transaction with branch {branch} already exists")
        client: ClientTransaction
        if request.method == "INVITE":
            client = ClientInviteTransaction(request, peer, reliable, self.timers, key)
        else:
            client = ClientNonInviteTransaction(request, peer, reliable, self.timers, key)
        self._client[key] = client
        events = client.start(now)
        self._after(client)
        return client, events

    def send_response(self, response: Response, now: float) -> list[TransactionEvent]:
        """Send a response through the server transaction of the request it answers."""
        server = self._server_for_response(response)
        if server is None:
            raise LookupError(f"no server transaction for {response!r} ({response.cseq})")
        events = server.send(response, now)
        self._after(server)
        return events

    def cancel(self, client: ClientInviteTransaction, now: float) -> list[TransactionEvent]:
        """CANCEL a pending INVITE: at once if a provisional response came, else as soon as one does
        (RFC 3261 §9.1). Nothing to do once a final response arrived."""
        if client.state not in (State.CALLING, State.PROCEEDING):
            return []
        if not client.provisional_seen:
            client.cancel_pending = True
            return []
        return self._send_cancel(client, now)

    def _send_cancel(self, client: ClientInviteTransaction, now: float) -> list[TransactionEvent]:
        # a CANCEL that gets no final response to the INVITE must not leave it pending forever: Timer C's role
        client._start("C", now, self.timers.timeout)
        _, events = self.send_request(cancel_for(client.request), client.peer, now, reliable=client.reliable)
        self._after(client)
        return events

    def invite_for_cancel(self, cancel: Request) -> ServerInviteTransaction | None:
        """The INVITE transaction a received CANCEL targets (§9.2), if it is still pending."""
        key = _server_key(cancel)
        server = self._server.get((*key[:-1], "INVITE"))
        if isinstance(server, ServerInviteTransaction):
            return server
        return None

    def _server_for_response(self, response: Response) -> ServerTransaction | None:
        method = response.cseq.method
        vias = response.via
        if not vias:
            return None
        top = vias[0]
        branch = top.branch or ""
        if branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
            return self._server.get((branch, top.host, str(top.port or ""), method))
        for server in self._server.values():  # RFC 2543 peers: rare, so a scan is fine
            if server.key[0] == "2543" and server.request.method == method and \
                    server.request.call_id == response.call_id and server.request.cseq == response.cseq:
                return server
        return None

    # -- time

    def handle_timer(self, now: float) -> list[TransactionEvent]:
        """Fire every timer due at `now`, in deadline order."""
        events: list[TransactionEvent] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, name, transaction = heapq.heappop(heap)
            if transaction.timers.get(name) != deadline:
                continue  # stopped or restarted since it was scheduled
            del transaction.timers[name]
            self._scheduled.get(id(transaction), {}).pop(name, None)
            events += transaction.fire(name, now)
            self._after(transaction)
        return events

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][3].timers.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # drop stale entries so the answer is a real deadline
        return heap[0][0] if heap else None

    def _after(self, transaction: _AnyTransaction) -> None:
        """Schedule the transaction's new timers; forget it once terminated."""
        if transaction.state == State.TERMINATED:
            table: dict[tuple[str, ...], _AnyTransaction] = (
                self._server if isinstance(transaction, ServerInviteTransaction | ServerNonInviteTransaction)
                else self._client)  # type: ignore[assignment]
            if table.get(transaction.key) is transaction:
                del table[transaction.key]
            self._scheduled.pop(id(transaction), None)
            return
        scheduled = self._scheduled.setdefault(id(transaction), {})
        for name, deadline in transaction.timers.items():
            if scheduled.get(name) != deadline:
                scheduled[name] = deadline
                heapq.heappush(self._heap, (deadline, next(self._order), name, transaction))

    # -- inspection

    def states(self) -> Counter[tuple[str, State]]:
        """How many transactions of each method are in each state (for metrics and tests)."""
        found: Counter[tuple[str, State]] = Counter()
        for transaction in (*self._server.values(), *self._client.values()):
            found[(transaction.request.method, transaction.state)] += 1
        return found

    @property
    def server_transactions(self) -> int:
        return len(self._server)

    @property
    def client_transactions(self) -> int:
        return len(self._client)

