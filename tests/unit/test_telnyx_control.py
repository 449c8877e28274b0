"""Telnyx call commands need the account's API key: without one the gateway says so, sends nothing."""

from __future__ import annotations

import socket

import httpx
import pytest

from voxgate.transports.carrier_call import CarrierApiError
from voxgate.transports.telnyx import TelnyxControl


async def test_a_command_without_an_api_key_names_the_missing_setting_and_sends_nothing() -> None:
    # Nothing listens on this port: a command that went out would fail to connect, with another message.
    # The socket stays bound without listening, so no other process can take the port meanwhile.
    with socket.socket() as unheard:
        unheard.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{unheard.getsockname()[1]}"
        async with httpx.AsyncClient() as http:
            control = TelnyxControl(http, base, "v3:call", api_key="", timeout_s=1.0)
            with pytest.raises(CarrierApiError, match="VOXGATE_TELNYX_API_KEY") as refused:
                await control.command("answer", {})
            assert refused.value.action == "answer" and not refused.value.gone

            with pytest.raises(CarrierApiError) as unreachable:  # the control: with a key, it does try
                await TelnyxControl(http, base, "v3:call", api_key="KEYx", timeout_s=1.0).hang_up()
            assert "VOXGATE_TELNYX_API_KEY" not in str(unreachable.value)
