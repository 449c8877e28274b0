"""The flow brain: the local engine's default, offline, deterministic dialog manager.

Per caller turn it routes the utterance to an agent intent or a tool (routing.py), fills the tool's
arguments from what was said (slots.py), asks for whatever required argument is missing and remembers
the pending tool in the session state so the next utterance fills it, validates every value against the
tool's JSON schema, and after the tool ran speaks a short sentence built from its result.

State it keeps in `request.state["flow"]`:
    pending   {"tool", "arguments", "asking", "tries"} while a tool waits for arguments
    route     the last route taken (an intent name, a tool name, "fallback"...), for KPIs and benchmarks
`request.state["today"]` (a date or "YYYY-MM-DD") overrides the brain's clock for relative dates.

Key presses arrive on `request.keypad` (session/keypad.py): a menu key waiting to be answered is routed
to the agent's `dtmf_menu` intent or tool; a PCI argument is asked for with `keypad.ask` and its typed
value kept in the keypad's vault, so the tool call itself carries only masks, which the session swaps
for the digits when the tool runs.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from voxgate.agents import AgentConfig
from voxgate.clock import current_clock
from voxgate.engines.base import HistoryEntry, ResponseRequest, ToolSpec
from voxgate.engines.local.brains.base import BrainDecision, CallTool, Say
from voxgate.engines.local.brains.routing import Match, Route, Router, build_routes
from voxgate.engines.local.brains.slots import (
    argument_error,
    extract_argument,
    is_free_text,
    slot_kind,
    tokens,
)
from voxgate.engines.local.spoken_text import clock_time
from voxgate.session.keypad import KeypadEntry
from voxgate.tools.redaction import private_value, redact, redact_value

# Below this score nothing matched well enough: the agent's fallback line is spoken.
FALLBACK_BELOW = 0.3
# While a tool waits for an argument, an answer that does not fill it switches topic above this score.
SWITCH_ABOVE = 0.45
# Extra score for a tool whose required values (an order number, a date and a time) are in the utterance,
# times the square of the share found: all of them is strong evidence, one of two much weaker.
EVIDENCE_BONUS = 0.3
# A tool the session's client declared is what its app asked for: where it clearly matches what was said
# (this much of the score from its name, description and parameters), it goes before the agent's own
# routes for the same topic (the client's order tool beside the demo agent's), whatever their phrases score.
CLIENT_TOOL_CLEAR_MATCH = 0.4
MAX_TRIES = 3
# A spoken turn is at most a few hundred words; a typed item may be far longer, and reading it all would
# hold the event loop (about 4 ms per thousand characters).
MAX_UTTERANCE_CHARS = 2000

_ESCALATION_TOOLS = ("transfer_to_human",)
# "Are you a robot?", "am I talking to a real person?", "is this an AI?": a caller who asks gets a true answer
# whatever the agent's intents say (the seed's disclosure duty does not end with the greeting, and laws such
# as California's B.O.T. Act ask for it when asked). Not a request for a person: that is escalation's.
_WHAT_AM_I = (r"(?:a |an )?(?:real |actual |live |automated )?(?:person|human(?: being)?|robot|bot|ai|a\.i\.?|"
              r"machine|computer|recording|automated(?: system| assistant| voice)?|artificial intelligence|"
              r"real|live)\b")
_ASKS_IF_AI = re.compile(
    rf"\b(?:are|r) (?:you|u) {_WHAT_AM_I}"
    rf"|\b(?:am i|are we) (?:talking|speaking|chatting) (?:to|with) {_WHAT_AM_I}"
    rf"|\bis (?:this|that|it) {_WHAT_AM_I}")
_CHECKS_PRESENCE = re.compile(r"^(?:hello[,.!?]* )?(?:are you (?:still )?(?:there|with me)|can you hear me|"
                              r"is (?:anyone|anybody|someone|somebody) there)\b")
PRESENCE_ANSWER = "Yes, I'm here. How can I help?"
# A caller asked for a value they do not have ("I don't know it", "I can't remember"): asking again cannot help.
_DOES_NOT_HAVE_IT = re.compile(
    r"\b(?:(?:do not|don't|dont|didn't|did not) (?:know|have|remember|see|get)|no idea|can'?t (?:remember|find|"
    r"recall)|cannot (?:remember|find|recall)|(?:i )?forgot|lost it|not sure what it is)\b")
NO_ANSWER = "No problem."
NO_ANSWER_OFFER = " I can connect you with a person who can help, or is there anything else I can do?"
NO_ANSWER_ELSE = " Is there anything else I can help with?"
_WANTS_A_PERSON = re.compile(r"\b(?:talk|speak|transfer|connect|put me through|get me|give me|let me)\b")
AI_ANSWER = "I'm an automated assistant, not a person."
AI_ANSWER_OFFER = " I can connect you with someone if you'd like."
_CANCEL = re.compile(r"\b(never ?mind|forget (it|that|about it)|cancel (that|it)|no thanks|don't bother)\b")


class FlowBrain:
    """`decide(request)` -> Say | CallTool. Holds no per-call state itself; one instance serves all calls."""

    def __init__(self, today: Callable[[], date] | None = None) -> None:
        self._today = today or (lambda: current_clock().today())
        self._routers: dict[tuple[int, tuple[tuple[str, str, bool], ...]], tuple[AgentConfig, Router]] = {}

    # -- entry point ------------------------------------------------------------------------------------

    def decide(self, request: ResponseRequest) -> BrainDecision:
        """The next step, with nothing that looks like a card number, an SSN or an email in what it says
        or in the arguments it extracted (the utterance it reads is masked too: see `heard`)."""
        decision = self._decide(request)
        if isinstance(decision, Say):
            text, masked = redact(decision.text)
            return Say(text, decision.completes_task) if masked else decision
        arguments, masked = redact_value(decision.arguments)
        return CallTool(decision.name, arguments) if masked else decision

    def _decide(self, request: ResponseRequest) -> BrainDecision:
        flow: dict[str, Any] = request.state.setdefault("flow", {})
        last = request.history[-1] if request.history else None
        if last is not None and last.kind == "function_call_output":
            flow.pop("pending", None)
            flow["route"] = "tool_result"
            return self._reply_to_result(request, last)
        entered = request.keypad.take_entry()
        if entered is not None:
            request.keypad.take_menu_key()
            return self._keypad_entry(request, flow, entered)
        key = request.keypad.take_menu_key()
        if key is not None and key in request.agent.dtmf_menu:
            request.keypad.cancel()
            return self._menu_choice(request, flow, key)
        keypad = request.keypad.entry
        text = heard(last.text) if last is not None and last.kind == "user" else ""
        if not text:
            said_anything = any(e.kind == "user" for e in request.history)
            flow["route"] = "prompt"
            if not said_anything:
                return Say(request.agent.greeting or "Hello! How can I help you today?")
            return Say("Is there anything else I can help you with?")
        if keypad is not None:
            decision = self._speech_during_keypad(request, flow, keypad, text)
            if decision is not None:
                return decision
        pending = flow.get("pending")
        if pending is not None:
            decision = self._continue_pending(request, flow, pending, text)
            if decision is not None:
                return decision
        return self._route(request, flow, text)

    # -- routing ----------------------------------------------------------------------------------------

    def router(self, agent: AgentConfig, tools: Sequence[ToolSpec]) -> Router:
        """The routes for a request: every tool in it (client tools too) and the agent's intents and tools,
        except where a client declared tools and the agent lets them replace its own (`client_tools`):
        then the client's tools and the agent's tool-less intents (greetings, thanks) only. Cached per
        agent and tools."""
        key = (id(agent), tuple((t.name, t.description, t.server) for t in tools))
        cached = self._routers.get(key)
        if cached is not None and cached[0] is agent:
            return cached[1]
        if any(not t.server for t in tools) and agent.client_tools == "replace":
            tools = [t for t in tools if not t.server]
            agent_tools: list[ToolSpec] = []
        else:
            agent_tools = [ToolSpec(t.name, t.description, t.parameters, server=True) for t in agent.tools]
        available = {t.name for t in tools} | {t.name for t in agent_tools}
        intents = [(i.name, i.tool, i.reply, i.examples) for i in agent.intents
                   if i.tool is None or i.tool in available]
        specs = {t.name: (t.name, t.description, t.parameters) for t in agent_tools}
        specs.update({t.name: (t.name, t.description, t.parameters) for t in tools})
        router = Router(build_routes(intents, specs.values()))
        if len(self._routers) > 256:
            self._routers.clear()
        self._routers[key] = (agent, router)
        return router

    def rank(self, request: ResponseRequest, text: str) -> list[Match]:
        """Routes for `text`, best first, with the bonus for tools whose values the caller already gave."""
        allowed = _allowed_tools(request)
        today = self.today(request)
        client_tools = {t.name for t in request.tools if not t.server}
        ranked = []
        for m in self.router(request.agent, request.tools).match(text):
            if m.route.tool is not None and allowed is not None and m.route.tool not in allowed:
                continue
            if m.route.tool is None and request.tool_choice == "required":
                continue
            score = m.score
            preferred = False
            if m.route.tool is not None:
                score += EVIDENCE_BONUS * _evidence(_parameters(request, m.route.tool), text, today) ** 2
                preferred = m.route.tool in client_tools and m.score >= CLIENT_TOOL_CLEAR_MATCH
            ranked.append((preferred, Match(m.route, score)))
        # A tool the client declared, clearly about what was said, goes before the agent's own routes.
        ranked.sort(key=lambda pm: (pm[0], pm[1].score), reverse=True)
        return [m for _, m in ranked]

    def _route(self, request: ResponseRequest, flow: dict[str, Any], text: str) -> BrainDecision:
        forced = _forced_tool(request.tool_choice)
        if forced is not None:
            return self._start_tool(request, flow, forced, text)
        lowered = text.lower()
        if _ASKS_IF_AI.search(lowered) and not _WANTS_A_PERSON.search(lowered):
            flow["route"] = "asked_if_ai"
            return Say(AI_ANSWER + (AI_ANSWER_OFFER if self._can_transfer(request) else ""))
        if _CHECKS_PRESENCE.search(lowered):
            flow["route"] = "presence"
            return Say(PRESENCE_ANSWER)
        ranked = self.rank(request, text)
        if not ranked or ranked[0].score < FALLBACK_BELOW:
            flow["route"] = "fallback"
            return Say(request.agent.fallback)
        route = ranked[0].route
        if route.tool is not None and route.tool not in _ESCALATION_TOOLS and \
                self.router(request.agent, request.tools).undoes(route, text) is not None:
            flow["route"] = "fallback"  # "cancel my appointment" to an agent that can only book one
            return Say(request.agent.fallback)
        flow["route"] = route.tool or route.name
        if route.tool is None:
            return Say(route.reply or request.agent.fallback)
        return self._start_tool(request, flow, route.tool, text)

    @staticmethod
    def _can_transfer(request: ResponseRequest) -> bool:
        """Whether this agent, in this request, can put the caller through to a person."""
        allowed = _allowed_tools(request)
        tools = {t.name for t in request.tools} | {t.name for t in request.agent.tools}
        return any(name in tools and (allowed is None or name in allowed) for name in _ESCALATION_TOOLS)

    def _menu_choice(self, request: ResponseRequest, flow: dict[str, Any], key: str) -> BrainDecision:
        """A menu key acts like asking for its intent or tool, with nothing said to fill arguments from."""
        target = request.agent.dtmf_menu[key]
        flow.pop("pending", None)
        intent = next((i for i in request.agent.intents if i.name == target), None)
        tool = intent.tool if intent is not None else target
        if tool is None:
            flow["route"] = target
            return Say((intent.reply if intent is not None else None) or request.agent.fallback)
        flow["route"] = tool
        arguments: dict[str, Any] = {}
        if tool in _ESCALATION_TOOLS and "reason" in _properties(_parameters(request, tool)):
            arguments["reason"] = f"the caller pressed {key} in the menu"
        return self._call_or_ask(request, flow, tool, arguments, tries=0, hint=None)

    # -- PCI: arguments typed on the keypad -------------------------------------------------------------

    def _keypad_entry(self, request: ResponseRequest, flow: dict[str, Any], entry: KeypadEntry) -> BrainDecision:
        """The caller typed an argument and pressed '#': keep it in the vault, ask the next or call."""
        tool, name = entry.tool, entry.argument
        props = _properties(_parameters(request, tool))
        vault = request.keypad.vault_for(tool)
        value: Any = entry.digits
        schema = props.get(name, {})
        if schema.get("type") in ("integer", "number") and value.isdigit():
            value = int(value)
        flow["route"] = tool
        if not value or argument_error(schema, value) is not None:
            tries = entry.tries + 1
            if tries >= MAX_TRIES:
                request.keypad.vault = None
                flow["route"] = "fallback"
                return Say(request.agent.fallback)
            return self._ask_keypad(request, tool, name, props, tries, "Sorry, that doesn't look right.")
        vault.values[name] = value
        return self._call_or_ask(request, flow, tool, {}, tries=0, hint=None)

    def _speech_during_keypad(self, request: ResponseRequest, flow: dict[str, Any], entry: KeypadEntry,
                              text: str) -> BrainDecision | None:
        """Words while we wait for typed digits: cancel, a change of topic (None), or a reminder.

        Spoken words are never taken as the PCI value: they are already in a transcript.
        """
        words = tokens(text)
        switch = self.rank(request, text)
        if _CANCEL.search(" ".join(words)) and len(words) <= 6:
            decision: BrainDecision | None = Say("Okay, no problem. Is there anything else I can help with?")
            flow["route"] = "cancel"
        elif switch and switch[0].score >= SWITCH_ABOVE and (switch[0].route.tool or "") != entry.tool:
            decision = None
        else:  # a reminder: the digits typed so far stay, the caller goes on where they were
            props = _properties(_parameters(request, entry.tool))
            return self._ask_keypad(request, entry.tool, entry.argument, props, entry.tries,
                                    "For your security, please use the keypad.", restart=False)
        request.keypad.cancel()
        return decision

    def _ask_keypad(self, request: ResponseRequest, tool: str, name: str, props: Mapping[str, dict[str, Any]],
                    tries: int, hint: str | None, *, restart: bool = True) -> Say:
        if restart:
            request.keypad.ask(tool, name, tries)
        phrase = _phrase(name, props.get(name, {}))
        question = f"Please type {phrase} on your keypad, then press the pound key."
        return Say(f"{hint} {question}" if hint else question)

    # -- arguments --------------------------------------------------------------------------------------

    def _start_tool(self, request: ResponseRequest, flow: dict[str, Any], tool: str, text: str) -> BrainDecision:
        flow["route"] = tool
        params = _parameters(request, tool)
        today = self.today(request)
        arguments: dict[str, Any] = {}
        if _keypad_only(request, tool):  # PCI values come from the keypad, never from what was said
            return self._call_or_ask(request, flow, tool, arguments, tries=0, hint=None)
        for name, schema in _properties(params).items():
            value = _extract(name, schema, text, today)
            if value is not None and argument_error(schema, value) is None:
                arguments[name] = value
        if tool in _ESCALATION_TOOLS and "reason" in _properties(params) and "reason" not in arguments:
            arguments["reason"] = text
        return self._call_or_ask(request, flow, tool, arguments, tries=0, hint=None)

    def _continue_pending(self, request: ResponseRequest, flow: dict[str, Any], pending: dict[str, Any],
                          text: str) -> BrainDecision | None:
        """The caller answers our question (fill it), changes topic (None: route afresh), or cancels."""
        if _CANCEL.search(" ".join(tokens(text))) and len(tokens(text)) <= 6:
            flow.pop("pending")
            flow["route"] = "cancel"
            return Say("Okay, no problem. Is there anything else I can help with?")
        tool = pending["tool"]
        props = _properties(_parameters(request, tool))
        today = self.today(request)
        asking = [n for n in pending["asking"] if n in props]
        structured = [n for n in asking if slot_kind(n, props[n]) != "text"]
        # A free-text answer ("Boston") would swallow a change of topic, so check for one first.
        if len(structured) < len(asking) or not asking:
            ranked = self.rank(request, text)
            if ranked and ranked[0].score >= SWITCH_ABOVE and (ranked[0].route.tool or "") != tool:
                flow.pop("pending")
                return None
        arguments = dict(pending["arguments"])
        filled, bad = False, None
        for name in asking:
            value = _extract(name, props[name], text, today, answer=True)
            if value is None:
                continue
            if argument_error(props[name], value) is None:
                arguments[name] = value
                filled = True
            else:
                bad = (name, value)
        # The answer may also carry arguments we did not ask about yet ("friday at 3" for date and time).
        for name, schema in props.items():
            if name not in arguments and name not in asking and slot_kind(name, schema) != "text":
                value = _extract(name, schema, text, today)
                if value is not None and argument_error(schema, value) is None:
                    arguments[name] = value
        if not filled:
            ranked = self.rank(request, text)
            if ranked and ranked[0].score >= SWITCH_ABOVE and (ranked[0].route.tool or "") != tool:
                flow.pop("pending")
                return None
            if _DOES_NOT_HAVE_IT.search(text.lower()):
                # Asking again cannot help a caller who does not have the answer: offer what can.
                flow.pop("pending")
                flow["route"] = "no_answer"
                return Say(NO_ANSWER + (NO_ANSWER_OFFER if self._can_transfer(request) else NO_ANSWER_ELSE))
            tries = pending.get("tries", 0) + 1
            if tries >= MAX_TRIES:
                flow.pop("pending")
                flow["route"] = "fallback"
                return Say(request.agent.fallback)
            flow["route"] = tool
            hint = _invalid_hint(bad[0], props[bad[0]]) if bad else "Sorry, I didn't get that."
            return self._call_or_ask(request, flow, tool, arguments, tries=tries, hint=hint)
        flow["route"] = tool
        return self._call_or_ask(request, flow, tool, arguments, tries=0, hint=None)

    def _call_or_ask(self, request: ResponseRequest, flow: dict[str, Any], tool: str,
                     arguments: dict[str, Any], tries: int, hint: str | None) -> BrainDecision:
        params = _parameters(request, tool)
        props = _properties(params)
        required = [n for n in params.get("required", []) if n in props]
        if _keypad_only(request, tool):
            flow.pop("pending", None)
            typed = request.keypad.typed(tool)
            untyped = [n for n in required if n not in typed]
            if untyped:
                return self._ask_keypad(request, tool, untyped[0], props, tries, hint)
            # The call (and so the conversation) holds masks; the session swaps in the digits.
            return CallTool(tool, {**arguments, **{n: _masked(str(v)) for n, v in typed.items()}})
        missing = [n for n in required if n not in arguments]
        if not missing:
            flow.pop("pending", None)
            return CallTool(tool, arguments)
        flow["pending"] = {"tool": tool, "arguments": arguments, "asking": missing, "tries": tries}
        question = question_for(missing, props)
        return Say(f"{hint} {question}" if hint else question)

    def today(self, request: ResponseRequest) -> date:
        override = request.state.get("today")
        if isinstance(override, datetime):
            return override.date()
        if isinstance(override, date):
            return override
        if isinstance(override, str):
            return date.fromisoformat(override[:10])
        return self._today()

    # -- tool results -----------------------------------------------------------------------------------

    def _reply_to_result(self, request: ResponseRequest, output: HistoryEntry) -> Say:
        call = _call_for(request.history, output)
        name = call.name if call is not None else ""
        arguments = _json_object(call.arguments) if call is not None else {}
        result = _parse(output.output)
        definition = request.agent.tool(name) if name else None
        failed = isinstance(result, dict) and "error" in result
        template = None
        if definition is not None:
            template = definition.say_error if failed else definition.say
        fields = {**arguments, **(result if isinstance(result, dict) else {"result": result})}
        if failed and isinstance(fields.get("error"), dict):
            fields["error"] = fields["error"].get("message", "something went wrong")
        if template:
            spoken = render(template, fields)
            if spoken is not None:
                return Say(spoken, completes_task=not failed and name not in _ESCALATION_TOOLS)
        if name in _ESCALATION_TOOLS and not failed:
            return Say(request.agent.escalation.handover_line)
        if failed:
            return Say(f"Sorry, that didn't work: {_sentence(str(fields['error']))}")
        return Say(describe(result), completes_task=True)


# ---------------------------------------------------------------------------------------------------------
# Reading the caller


def heard(utterance: str) -> str:
    """What the brain reads of an utterance: its first MAX_UTTERANCE_CHARS, with card numbers (last four
    digits included), SSNs and emails masked, so none of them is ever taken as an order number or spoken
    back ("my social is 123 45 6789" is not order 123456789)."""
    # A little beyond the cut is masked first, so a card that straddles it is not read in part.
    masked = redact(utterance[:MAX_UTTERANCE_CHARS + 64], last_four=False)[0]
    return masked[:MAX_UTTERANCE_CHARS].strip()


def _extract(name: str, schema: dict[str, Any], text: str, today: date, answer: bool = False) -> Any:
    """`extract_argument`, except a value that is a card number or an SSN (even spelled out in words, which
    `heard` cannot mask) is never an argument, nor echoed back as what we understood."""
    value = extract_argument(name, schema, text, today, answer)
    if value is None or isinstance(value, bool):
        return value
    return None if private_value(str(value), text) else value


# ---------------------------------------------------------------------------------------------------------
# Speaking results


class _SpokenFormatter(string.Formatter):
    """str.format with a `spoken` spec: {date:spoken} -> "Thursday, March 13", {time:spoken} -> "3 PM"."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec == "spoken":
            return spoken(value)
        return super().format_field(value, format_spec)


_FORMATTER = _SpokenFormatter()


def render(template: str, fields: Mapping[str, Any]) -> str | None:
    """The template filled from the fields, or None when it names a field the result lacks."""
    try:
        return _FORMATTER.vformat(template, (), dict(fields))
    except (KeyError, IndexError, ValueError, AttributeError):
        return None


def spoken(value: Any) -> str:
    """How a value sounds: ISO dates and times, booleans and lists in words."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        items = [spoken(v) for v in value[:5]]
        if len(items) <= 1:
            return items[0] if items else "none"
        return ", ".join(items[:-1]) + " and " + items[-1]
    if not isinstance(value, str):
        return str(value)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            d = date.fromisoformat(value)
        except ValueError:
            return value
        return f"{d:%A}, {d:%B} {d.day}"
    clock = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)(?::\d{2})?", value)
    if clock:
        return clock_time(int(clock.group(1)), int(clock.group(2)))
    return value


_MESSAGE_KEYS = ("message", "summary", "text", "answer", "reply", "description", "status_message")


def describe(result: Any) -> str:
    """A short spoken sentence for a tool result with no template: never braces, quotes or raw keys."""
    if result is None or result == {} or result == []:
        return "Done."
    if isinstance(result, str):
        return _sentence(result[:300])
    if isinstance(result, list):
        scalars = [spoken(v) for v in result if isinstance(v, str | int | float)]
        if scalars and len(scalars) == len(result):
            return _sentence(f"I found {spoken(scalars[:5])}")
        return f"I found {len(result)} result{'s' if len(result) != 1 else ''}."
    if not isinstance(result, dict):
        return _sentence(spoken(result))
    for key in _MESSAGE_KEYS:
        if isinstance(result.get(key), str) and result[key].strip():
            return _sentence(result[key][:300])
    clauses = []
    for key, value in result.items():
        if value is None or isinstance(value, dict) or key.lower() in ("ok", "success", "id") or \
                key.lower().endswith("_id"):
            continue
        if isinstance(value, list) and not all(isinstance(v, str | int | float) for v in value):
            continue
        words = " ".join(re.findall(r"[a-z0-9]+", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", key).lower()))
        if not words:
            continue
        # "items are", "status is", "address is", "analysis is": a final s is a plural only after most letters
        verb = "are" if words.endswith("s") and not words.endswith(("ss", "us", "is")) else "is"
        clauses.append(f"the {words} {verb} {spoken(value)}")
        if len(clauses) == 4:
            break
    if not clauses:
        return "Done." if result.get("ok", result.get("success", True)) else "That didn't work."
    text = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return _sentence(text[0].upper() + text[1:])


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


# ---------------------------------------------------------------------------------------------------------
# Questions


def question_for(missing: Sequence[str], props: Mapping[str, dict[str, Any]]) -> str:
    """A short question for the first missing argument, from its description; date and time together."""
    kinds = {name: slot_kind(name, props[name]) for name in missing}
    if "date" in kinds.values() and "time" in kinds.values():
        return "What day and time would you like?"
    name = missing[0]
    kind = kinds[name]
    if kind == "date":
        return "What day would you like?"
    if kind == "time":
        return "What time would you like?"
    phrase = _phrase(name, props[name])
    if kind == "enum":
        options = [str(v).replace("_", " ") for v in props[name]["enum"]]
        listed = options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]
        return f"Which {_strip_article(phrase)}: {listed}?"
    if kind == "boolean":
        return f"Should I {phrase}?" if not phrase.startswith(("the ", "your ")) else f"What about {phrase}?"
    if re.match(r"(why|what|which|how|when|where|who)\b", phrase):
        return f"Can you tell me {phrase}?"
    return f"What's {phrase}?"


def _phrase(name: str, schema: dict[str, Any]) -> str:
    description = str(schema.get("description", "")).strip()
    clause = re.split(r"[,.;:(]| - | e\.g\.", description)[0].strip() if description else ""
    if not clause:
        clause = name.replace("_", " ")
    clause = re.sub(r"\bthe (caller|customer|user)'s\b", "your", clause, flags=re.I)
    clause = re.sub(r"\bthe (caller|customer|user) (\w+?)s\b", r"you \2", clause, flags=re.I)
    clause = re.sub(r"\bthe (caller|customer|user)\b", "you", clause, flags=re.I)
    if clause[:1].isupper() and not clause[1:2].isupper():
        clause = clause[0].lower() + clause[1:]
    if not re.match(r"(the|your|a|an|why|what|which|how|when|where|who)\b", clause):
        clause = f"the {clause}"
    return clause


def _strip_article(phrase: str) -> str:
    return re.sub(r"^(the|a|an|your) ", "", phrase)


def _invalid_hint(name: str, schema: dict[str, Any]) -> str:
    description = str(schema.get("description", ""))
    rest = description.split(",", 1)[1].strip() if "," in description else ""
    if rest and slot_kind(name, schema) == "digits":
        return f"Sorry, that doesn't look right: it should be {rest}."
    return "Sorry, that doesn't look right."


# ---------------------------------------------------------------------------------------------------------
# Request plumbing


def _parameters(request: ResponseRequest, tool: str) -> dict[str, Any]:
    for spec in request.tools:
        if spec.name == tool:
            return spec.parameters if isinstance(spec.parameters, dict) else {}
    definition = request.agent.tool(tool)
    return definition.parameters if definition is not None else {}


def _properties(parameters: dict[str, Any]) -> dict[str, dict[str, Any]]:
    props = parameters.get("properties", {})
    return {k: v for k, v in props.items() if isinstance(v, dict)} if isinstance(props, dict) else {}


def _evidence(parameters: dict[str, Any], text: str, today: date) -> float:
    """The share of a tool's required, checkable values (numbers, dates, enums) found in `text`."""
    props = _properties(parameters)
    checkable = [n for n in parameters.get("required", []) if n in props
                 and slot_kind(n, props[n]) != "text" and not is_free_text(n, props[n])]
    if not checkable:
        return 0.0
    found = 0
    for name in checkable:
        value = _extract(name, props[name], text, today)
        if value is not None and argument_error(props[name], value) is None:
            found += 1
    return found / len(checkable)


def _keypad_only(request: ResponseRequest, tool: str) -> bool:
    """A PCI tool in a PCI-mode agent: its arguments are typed on the keypad."""
    definition = request.agent.tool(tool)
    return request.agent.pci_mode and definition is not None and definition.pci


def _masked(value: str) -> str:
    return "****" + value[-4:] if len(value) > 4 else "****"


def _allowed_tools(request: ResponseRequest) -> set[str] | None:
    """Tools the brain may call: None means any tool the request or agent knows."""
    if request.tool_choice == "none":
        return set()
    return None


def _forced_tool(tool_choice: str | dict[str, Any]) -> str | None:
    if isinstance(tool_choice, dict):
        name = tool_choice.get("name") or (tool_choice.get("function") or {}).get("name")
        return str(name) if name else None
    return None


def _call_for(history: Sequence[HistoryEntry], output: HistoryEntry) -> HistoryEntry | None:
    calls = [e for e in history if e.kind == "function_call"]
    return next((c for c in reversed(calls) if c.call_id == output.call_id), calls[-1] if calls else None)


def _parse(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return raw


def _json_object(raw: str) -> dict[str, Any]:
    parsed = _parse(raw)
    return parsed if isinstance(parsed, dict) else {}


__all__ = ["FlowBrain", "Route", "describe", "heard", "question_for", "render", "spoken"]
