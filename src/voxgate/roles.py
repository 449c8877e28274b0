"""Roles: what a key (and the calls it opens) may do, on the control API and in tool execution.

    admin      everything: every route, every tool; `voxgate keys` and `voxgate audit` are the CLI's
    operator   runs the call centre: reads calls and transcripts, hangs up, places calls, opens sessions
    app        an app's server: opens sessions, mints ephemeral keys, places and hangs up its own calls,
               uses the speech and chat APIs; it never reads a transcript back
    read-only  an auditor: reads calls, transcripts, KPIs, agents and metrics; changes nothing

The gateway's configured keys (`api_keys`) are admin. A key created without roles is an `app` key
(`DEFAULT_KEY_ROLES`): least privilege for what most keys are for. Keys stored before roles existed were
migrated to admin, so they keep doing what they did. An ephemeral key carries a subset of its minter's.
A call no key opened (a phone, SIP) runs its tools with `GATEWAY_CALL_ROLES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    APP = "app"
    READ_ONLY = "read-only"


ALL_ROLES: frozenset[str] = frozenset(Role)
DEFAULT_KEY_ROLES: tuple[str, ...] = (Role.APP,)
GATEWAY_CALL_ROLES: frozenset[str] = frozenset({Role.APP})

# Who may use a route, as sets of roles (any one of them will do).
READERS: frozenset[str] = frozenset({Role.ADMIN, Role.OPERATOR, Role.READ_ONLY})  # records and transcripts
CALLERS: frozenset[str] = frozenset({Role.ADMIN, Role.OPERATOR, Role.APP})  # sessions, keys, calls, speech
ANY_ROLE: frozenset[str] = ALL_ROLES


def parse_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """Known role names, sorted and without repeats; an unknown one is a ValueError naming the known ones."""
    given = set(roles)
    unknown = sorted(given - ALL_ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}: roles are {', '.join(sorted(ALL_ROLES))}")
    return tuple(sorted(given))


def narrowed(minter: frozenset[str], requested: Iterable[str] | None) -> frozenset[str]:
    """The roles an ephemeral key gets: those asked for (all the minter's when None), which must be the
    minter's own. Raises ValueError for a role the minter lacks."""
    if requested is None:
        return minter
    asked = frozenset(parse_roles(requested))
    beyond = sorted(asked - minter)
    if beyond:
        raise ValueError(f"the minting key does not hold the role(s) {', '.join(beyond)}")
    return asked
