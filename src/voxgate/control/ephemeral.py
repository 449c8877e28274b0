"""Ephemeral keys: what a browser holds to open one realtime session, minted by the app's own server.

The app's server calls `POST /v1/realtime/client_secrets` (GA) or `POST /v1/realtime/sessions` (beta)
with its real API key and hands the `ek_...` value to the page. The key:

- lives `ephemeral_ttl_s` (60 s) unless the minting request asks for another TTL, never more than
  `ephemeral_max_ttl_s`;
- opens exactly one session, over the WebSocket or WebRTC; it is spent (revoked) as that session opens,
  so a second open with it gets 401 like any unknown key. It never authenticates the control API (403);
- is bound to the session config it was minted with: a session opened with it starts from that config.
  The client may still change the session afterwards with `session.update`, as on OpenAI; but a WebRTC
  offer that carries its own `session` part may only add fields the minted config left open; a field the
  minting server set to another value is refused (400 `session_mismatch`), because the page would be
  overriding its own server;
- is bound to one agent: the one the minting request names with `?agent=` (an unknown name is a 400), or
  the default agent. A session opened with it talks to that agent; `?agent=` naming another is refused
  (403 `agent_mismatch`). Its calls belong to the key that minted it;
- can be revoked early (`POST /v1/realtime/client_secrets/revoke` with its value);
- is audited at issuance, use and revocation, by key id and never by secret.

The stored config is always a GA-shaped patch, whichever dialect minted it, because that is what the
session applies as its starting point.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voxgate.control.auth import require_api_key
from voxgate.control.problems import problem
from voxgate.gateway import gateway_of
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.ids import new_id
from voxgate.protocol.items import Dialect
from voxgate.protocol.json_text import parse_json
from voxgate.protocol.session_config import SessionConfig, default_turn_detection

if TYPE_CHECKING:
    from voxgate.agents import AgentConfig
    from voxgate.gateway import Gateway, Principal

# Where each beta session field lives in the GA session object.
_BETA_TO_GA: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "instructions": ("instructions",),
    "modalities": ("output_modalities",),
    "voice": ("audio", "output", "voice"),
    "speed": ("audio", "output", "speed"),
    "input_audio_format": ("audio", "input", "format"),
    "output_audio_format": ("audio", "output", "format"),
    "input_audio_transcription": ("audio", "input", "transcription"),
    "input_audio_noise_reduction": ("audio", "input", "noise_reduction"),
    "turn_detection": ("audio", "input", "turn_detection"),
    "tools": ("tools",),
    "tool_choice": ("tool_choice",),
    "max_response_output_tokens": ("max_output_tokens",),
    "tracing": ("tracing",),
}
# Fields that describe the session object itself, not a setting a key can bind.
_NOT_BOUND = {"id", "object", "expires_at", "client_secret", "type"}


def seed_config(gateway: Gateway, agent_name: str | None = None, model: str | None = None) -> SessionConfig:
    """The config a new session of this agent starts from before any patch (what `Session` builds)."""
    agent = gateway.agent(agent_name)
    engine_name = agent.engine or gateway.settings.engine
    return SessionConfig(
        id=new_id("sess"),
        model=model or f"voxgate-{engine_name}",
        instructions=agent.instructions,
        voice=agent.voice,
        turn_detection=default_turn_detection(agent.turn_taking.silence_duration_ms, agent.turn_taking.threshold),
        expires_at=int(time.time()) + 3600,
    )


async def _voices(gateway: Gateway, agent_name: str | None = None) -> set[str] | None:
    agent = gateway.agent(agent_name)
    _, engine = await gateway.engine_for(agent)
    return set(engine.voices()) or None


def to_ga_patch(patch: dict[str, Any], dialect: Dialect, validated: SessionConfig) -> dict[str, Any]:
    """A validated session patch in GA shape, holding only the fields the patch set."""
    if dialect == "ga":
        return {k: v for k, v in patch.items() if k not in _NOT_BOUND}
    rendered = validated.to_ga()
    out: dict[str, Any] = {}
    for key in patch:
        path = _BETA_TO_GA.get(key)
        if path is None:  # temperature and the object's own fields have no GA setting to bind
            continue
        value: Any = rendered
        for part in path:
            value = value[part]
        if key == "model":
            value = patch["model"]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def merge_bound_session(minted: dict[str, Any], requested: dict[str, Any], prefix: str = "session") -> dict[str, Any]:
    """`requested` layered on the key's `minted` config; a field set to another value there is refused."""
    merged = dict(minted)
    for key, value in requested.items():
        if key in _NOT_BOUND:
            continue
        param = f"{prefix}.{key}"
        if key not in minted:
            merged[key] = value
        elif isinstance(minted[key], dict) and isinstance(value, dict):
            merged[key] = merge_bound_session(minted[key], value, param)
        elif minted[key] != value:
            raise RealtimeError(
                "session_mismatch",
                f"This key was minted for a session with a different '{param}'; the session given with "
                "the offer may only add settings the key left open.",
                param=param,
            )
    return merged


async def validate_session(gateway: Gateway, patch: Any, dialect: Dialect,
                           agent_name: str | None = None) -> tuple[dict[str, Any], SessionConfig]:
    """Check a session the way `session.update` would for this agent; returns (GA patch to bind, the session)."""
    if not isinstance(patch, dict):
        raise RealtimeError("invalid_type", "session must be an object.", param="session")
    if dialect == "ga" and patch.get("type", "realtime") != "realtime":
        raise RealtimeError("invalid_value", "Only session.type 'realtime' can be minted here.",
                            param="session.type")
    model = patch.get("model")
    config = seed_config(gateway, agent_name, model=model if isinstance(model, str) else None)
    validated = config.updated(patch, dialect, await _voices(gateway, agent_name))
    return to_ga_patch(patch, dialect, validated), validated


def minted_agent(gateway: Gateway, request: Request) -> str:
    """The agent a key is minted for: `?agent=` on the minting request, or the default agent."""
    name = request.query_params.get("agent")
    if name is None:
        return gateway.settings.default_agent
    if name not in gateway.agents:
        raise RealtimeError("invalid_value", f"No agent named {name!r} to mint a key for.", param="agent")
    return name


def session_agent(gateway: Gateway, principal: Principal, requested: str | None) -> AgentConfig:
    """The agent a session opened by this key talks to; an ephemeral key opens only the one it was minted for."""
    agent = gateway.agent(requested)
    if principal.agent is None:
        return agent
    bound = gateway.agent(principal.agent)
    if requested is not None and agent.name != bound.name:
        raise RealtimeError("agent_mismatch", f"This key was minted for the agent {bound.name!r}; it cannot open "
                            f"a session with {agent.name!r}. Mint a key with ?agent={agent.name}.", param="agent")
    return bound


def _ttl(gateway: Gateway, expires_after: Any) -> int:
    settings = gateway.settings
    if expires_after is None:
        return settings.ephemeral_ttl_s
    if not isinstance(expires_after, dict):
        raise RealtimeError("invalid_type", "expires_after must be an object.", param="expires_after")
    unknown = set(expires_after) - {"anchor", "seconds"}
    if unknown:
        name = sorted(unknown)[0]
        raise RealtimeError("unknown_parameter", f"Unknown parameter: 'expires_after.{name}'.",
                            param=f"expires_after.{name}")
    if expires_after.get("anchor", "created_at") != "created_at":
        raise RealtimeError("invalid_value", "expires_after.anchor must be 'created_at'.",
                            param="expires_after.anchor")
    seconds = expires_after.get("seconds", settings.ephemeral_ttl_s)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 10 <= seconds <= settings.ephemeral_max_ttl_s:
        raise RealtimeError("invalid_value",
                            f"expires_after.seconds must be an integer from 10 to {settings.ephemeral_max_ttl_s}.",
                            param="expires_after.seconds")
    return seconds


async def mint(gateway: Gateway, principal: Principal, ga_patch: dict[str, Any], ttl_s: int,
               dialect: Dialect, agent_name: str) -> tuple[str, int]:
    """Store a key bound to `ga_patch` and the agent, owned by `principal`, and audit its issuance;
    returns (secret, expires_at)."""
    key_id, secret = await gateway.keys.create(f"ephemeral via {principal.key_id}", kind="ephemeral",
                                               ttl_s=ttl_s, session_config=ga_patch, owner=principal.owner,
                                               agent=agent_name)
    expires_at = int(time.time()) + ttl_s
    await gateway.calls.audit(principal.key_id, "ephemeral_key.issued", key_id,
                              {"ttl_s": ttl_s, "dialect": dialect, "agent": agent_name,
                               "bound_fields": sorted(ga_patch)})
    return secret, expires_at


async def redeem(gateway: Gateway, principal: Principal, transport: str, subject: str | None = None) -> bool:
    """Spend an ephemeral key on opening a session; False when it was spent already (a race lost).

    API keys are not spent. Spending is the key store's atomic revoke, so two concurrent opens with one
    key cannot both win.
    """
    if principal.kind != "ephemeral":
        return True
    spent = await gateway.keys.revoke(principal.key_id)
    await gateway.calls.audit(principal.key_id, "ephemeral_key.used" if spent else "ephemeral_key.reuse_refused",
                              subject, {"transport": transport})
    return spent


# -- routes ----------------------------------------------------------------------------------------


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    return parse_json(raw, "The body")


async def create_client_secret(request: Request) -> Response:
    """GA `POST /v1/realtime/client_secrets`: `{expires_after?, session?}` -> `{value, expires_at, session}`."""

    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    gateway = gateway_of(request)
    try:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise RealtimeError("invalid_type", "The body must be a JSON object.")
        unknown = set(body) - {"expires_after", "session"}
        if unknown:
            name = sorted(unknown)[0]
            raise RealtimeError("unknown_parameter", f"Unknown parameter: '{name}'.", param=name)
        ttl = _ttl(gateway, body.get("expires_after"))
        agent = minted_agent(gateway, request)
        ga_patch, config = await validate_session(gateway, body.get("session") or {"type": "realtime"}, "ga", agent)
    except RealtimeError as exc:
        return problem(400, exc.code, exc.message, param=exc.param)
    secret, expires_at = await mint(gateway, principal, ga_patch, ttl, "ga", agent)
    config.expires_at = expires_at
    return JSONResponse({"value": secret, "expires_at": expires_at, "session": config.to_ga()})


async def create_beta_session(request: Request) -> Response:
    """Beta `POST /v1/realtime/sessions`: flat session in, session plus `client_secret` out."""

    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    gateway = gateway_of(request)
    try:
        body = await _json_body(request)
        agent = minted_agent(gateway, request)
        ga_patch, config = await validate_session(gateway, body, "beta", agent)
    except RealtimeError as exc:
        return problem(400, exc.code, exc.message, param=exc.param)
    ttl = gateway.settings.ephemeral_ttl_s
    secret, expires_at = await mint(gateway, principal, ga_patch, ttl, "beta", agent)
    session = config.to_beta()
    session["expires_at"] = expires_at
    session["client_secret"] = {"value": secret, "expires_at": expires_at}
    return JSONResponse(session)


async def revoke_client_secret(request: Request) -> Response:
    """`POST /v1/realtime/client_secrets/revoke` with `{"value": "ek_..."}`: the key opens nothing after this."""

    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    gateway = gateway_of(request)
    try:
        body = await _json_body(request)
    except RealtimeError as exc:
        return problem(400, exc.code, exc.message)
    value = body.get("value") if isinstance(body, dict) else None
    if not isinstance(value, str) or not value.startswith("ek_"):
        return problem(400, "invalid_value", "Give the ephemeral key to revoke as 'value' (ek_...).", param="value")
    record = await gateway.keys.verify(value)
    if record is None or record.kind != "ephemeral" or not await gateway.keys.revoke(record.id):
        return problem(404, "key_not_found", "No live ephemeral key with that value.")
    await gateway.calls.audit(principal.key_id, "ephemeral_key.revoked", record.id)
    return JSONResponse({"revoked": True})
