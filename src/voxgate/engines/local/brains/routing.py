"""Which intent or tool a caller's utterance is about: lexical matching, no model.

Each route (an agent intent, or a tool no intent points at) is described by phrases: an intent by its
examples, a tool by its name, description and parameters, so client-declared tools route with no examples.
Words are stemmed and mapped through a small lexicon of customer-service synonyms ("parcel" -> order,
"representative" -> human), weighted by how few routes use them (IDF), and an utterance is scored against
each route by its best single phrase (cosine) and by how much of the utterance the route's vocabulary
covers. It runs in well under a millisecond for a typical agent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Surface words -> a shared concept. General customer-service vocabulary, not tied to one agent.
_LEXICON: dict[str, tuple[str, ...]] = {
    "order": ("order", "orders", "ordered", "package", "packages", "parcel", "parcels", "shipment", "purchase",
              "purchases", "stuff", "item", "items", "delivery", "deliveries"),
    "deliver": ("deliver", "delivered", "arrive", "arrived", "arriving", "arrival", "ship", "shipped",
                "shipping", "sent", "track", "tracking", "eta", "status", "way"),
    "appointment": ("appointment", "appointments", "booking", "bookings", "reservation", "reservations",
                    "slot", "slots", "visit", "consultation", "session", "meeting"),
    "book": ("book", "booked", "schedule", "scheduled", "reserve", "reserved", "arrange", "fit", "reschedule",
             "rescheduled", "rebook", "rebooked"),
    "human": ("human", "humans", "person", "people", "agent", "agents", "representative", "representatives",
              "rep", "operator", "someone", "somebody", "manager", "supervisor", "staff", "colleague",
              "employee", "live", "real", "actual", "being"),
    "talk": ("talk", "speak", "speaking", "connect", "transfer", "chat"),
    "hello": ("hello", "hi", "hey", "howdy", "greetings", "hiya"),
    "thank": ("thank", "thanks", "thx", "appreciate", "appreciated", "cheers", "grateful"),
    "bye": ("bye", "goodbye", "farewell", "byebye"),
    "hours": ("hour", "hours", "open", "opening", "opens", "close", "closing", "closes", "closed", "late"),
    "hangup": ("hang", "hangup", "disconnect", "end"),
    "weather": ("weather", "forecast", "rain", "raining", "rainy", "sunny", "snow", "snowing", "umbrella",
                "cloudy", "windy", "storm", "humid", "outside"),
    "temperature": ("temperature", "degrees", "degree", "thermostat", "heat", "heating", "cooling", "warmer",
                    "cooler", "celsius", "fahrenheit"),
    "help": ("help", "able", "assist", "options", "offer", "services", "service"),
}
_CONCEPT = {word: concept for concept, words in _LEXICON.items() for word in words}

_STOPWORDS = frozenset(
    "a an the i me my mine you your yours we us our it its it's this that these those to of for in on at "
    "by with from and or but so is are am was were be been being do does did doing have has had having "
    "can could would will shall should may might must please just um uh uhm er yeah yes ok okay oh well "
    "there here then than too very really also some any about up into out over get got go going gonna "
    "want wanna need needs like i'd i'm i'll i've you're you've that's there's let let's s d ll m re ve "
    "also if as". split()
)
# Question words tell questions from requests but not one topic from another: they count half.
_QUESTION_WORDS = frozenset("what when where how who why which".split())


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]
    return word


# Requests to undo or object: a route that never mentions one cannot be what the caller wants done.
_UNDO = frozenset(_stem(w) for w in ("cancel", "cancelled", "canceled", "cancelling", "cancellation", "refund",
                                     "refunds", "unsubscribe", "complain", "complaint", "dispute"))


def terms(text: str) -> list[str]:
    """The words of `text` that carry meaning, as concepts or stems. Numbers are left to slot evidence."""
    out: list[str] = []
    for raw in re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower().replace("’", "'").replace("_", " ")):
        word = raw[:-2] if raw.endswith("'s") and raw not in _STOPWORDS else raw
        if word in _STOPWORDS:
            continue
        concept = _CONCEPT.get(word)
        out.append(f"#{concept}" if concept else _stem(word))
    return out


@dataclass(frozen=True)
class Route:
    """Where an utterance can go: an intent (with a reply or a tool) or a tool on its own."""

    name: str
    tool: str | None = None
    reply: str | None = None
    phrases: tuple[str, ...] = ()
    # Weaker evidence: a tool's own description when an intent with examples calls it. Its wording is
    # written for a model ("open Monday to Saturday") and can overlap other intents ("opening hours").
    secondary: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    route: Route
    score: float


@dataclass
class Router:
    routes: Sequence[Route]
    _docs: list[list[set[str]]] = field(init=False, repr=False)
    _vocab: list[set[str]] = field(init=False, repr=False)
    _secondary: list[set[str]] = field(init=False, repr=False)
    _idf: dict[str, float] = field(init=False, repr=False)
    _unknown_weight: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._docs = [[set(terms(p)) for p in r.phrases if terms(p)] for r in self.routes]
        self._vocab = [set().union(*docs) if docs else set() for docs in self._docs]
        self._secondary = [{t for p in r.secondary for t in terms(p)} - vocab
                           for r, vocab in zip(self.routes, self._vocab, strict=True)]
        n = max(len(self.routes), 1)
        df: dict[str, int] = {}
        for vocab, secondary in zip(self._vocab, self._secondary, strict=True):
            for term in vocab | secondary:
                df[term] = df.get(term, 0) + 1
        self._idf = {t: math.log(1.0 + n / c) for t, c in df.items()}
        # A word no route knows counts against every route as much as a word only one route knows.
        self._unknown_weight = math.log(1.0 + n)

    def weight(self, term: str) -> float:
        weight = self._idf.get(term, self._unknown_weight)
        return 0.5 * weight if term in _QUESTION_WORDS else weight

    def undoes(self, route: Route, text: str) -> str | None:
        """A word of `text` that asks to undo something (cancel, refund, ...) that `route` never mentions:
        "cancel my appointment" is not a booking, whatever else the words share. None when there is none."""
        index = self.routes.index(route)
        known = self._vocab[index] | self._secondary[index]
        return next((t for t in terms(text) if t in _UNDO and t not in known), None)

    def match(self, text: str) -> list[Match]:
        """Every route scored in [0, 1], best first."""
        query = set(terms(text))
        if not query:
            return [Match(r, 0.0) for r in self.routes]
        q_weight = sum(self.weight(t) for t in query)
        matches = []
        for route, docs, vocab, secondary in zip(self.routes, self._docs, self._vocab, self._secondary,
                                                 strict=True):
            covered = sum(self.weight(t) for t in query & vocab)
            covered += 0.5 * sum(self.weight(t) for t in query & secondary)
            coverage = covered / q_weight
            best = 0.0
            for doc in docs:
                shared = sum(self.weight(t) for t in query & doc)
                if shared:
                    d_weight = sum(self.weight(t) for t in doc)
                    best = max(best, shared / math.sqrt(q_weight * d_weight))
            matches.append(Match(route, 0.5 * best + 0.5 * coverage))
        matches.sort(key=lambda m: m.score, reverse=True)
        return matches


def tool_phrases(name: str, description: str, parameters: dict[str, Any]) -> tuple[str, ...]:
    """What a tool with no examples is about: its name, each sentence of its description, its parameters."""
    phrases = [name.replace("_", " ").replace("-", " ")]
    phrases += [s for s in re.split(r"(?<=[.!?;])\s+", description) if s.strip()]
    props = parameters.get("properties", {}) if isinstance(parameters, dict) else {}
    for pname, pschema in props.items() if isinstance(props, dict) else ():
        words = [pname.replace("_", " ")]
        if isinstance(pschema, dict):
            words.append(str(pschema.get("description", "")))
            words += [str(v) for v in pschema.get("enum", []) if isinstance(v, str)]
        phrases.append(" ".join(words))
    return tuple(p for p in phrases if p.strip())


def build_routes(intents: Iterable[tuple[str, str | None, str | None, Sequence[str]]],
                 tools: Iterable[tuple[str, str, dict[str, Any]]]) -> list[Route]:
    """Intents as given (name, tool, reply, examples); a tool's own phrases back up the intent that calls
    it, and a tool no intent calls becomes a route of its own."""
    tools = list(tools)
    by_tool = {name: tool_phrases(name, desc, params) for name, desc, params in tools}
    routes: list[Route] = []
    claimed: set[str] = set()
    for name, tool, reply, examples in intents:
        own = by_tool.get(tool, ()) if tool else ()
        if examples:
            routes.append(Route(name=name, tool=tool, reply=reply, phrases=tuple(examples), secondary=own))
        else:
            routes.append(Route(name=name, tool=tool, reply=reply, phrases=own))
        if tool:
            claimed.add(tool)
    for name, _desc, _params in tools:
        if name not in claimed:
            routes.append(Route(name=name, tool=name, phrases=by_tool[name]))
    return routes
