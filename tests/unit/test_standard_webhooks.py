"""Standard Webhooks: what voxgate signs the official SDK verifies, what it verifies refuses forgeries,
stale and future timestamps and replays, and no input makes it raise anything but WebhookRejected."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from types import ModuleType

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.control.standard_webhooks import ReplayGuard, WebhookRejected, secret_bytes, sign, verify

SECRET = "whsec_" + base64.b64encode(b"a shared secret of 32 bytes!!!!!").decode()
BODY = (b'{"object":"event","id":"evt_1","type":"realtime.call.incoming","created_at":1764900000,'
        b'"data":{"call_id":"rtc_1","sip_headers":[{"name":"From","value":"<sip:+15550100@example.com>"}]}}')
NOW = 1_764_900_000


def test_what_voxgate_signs_the_official_sdk_unwraps(openai_sdk: ModuleType) -> None:
    now = int(time.time())  # the SDK checks the timestamp against its own clock: sign at that time
    headers = sign(SECRET, "wh_1", now, BODY)
    client = openai_sdk.OpenAI(api_key="unused", http_client=httpx.Client())
    event = client.webhooks.unwrap(BODY, headers, secret=SECRET)
    assert event.type == "realtime.call.incoming" and event.data.call_id == "rtc_1"
    with pytest.raises(openai_sdk.InvalidWebhookSignatureError):
        client.webhooks.unwrap(BODY + b" ", headers, secret=SECRET)


def test_the_mac_is_standard_webhooks_one_computed_by_hand() -> None:
    headers = sign(SECRET, "wh_2", NOW, BODY)
    key = base64.b64decode(SECRET[len("whsec_"):])
    expected = base64.b64encode(hmac.new(key, f"wh_2.{NOW}.".encode() + BODY, hashlib.sha256).digest()).decode()
    assert headers == {"webhook-id": "wh_2", "webhook-timestamp": str(NOW), "webhook-signature": f"v1,{expected}"}
    assert secret_bytes("plain") == b"plain"


def test_a_signed_delivery_passes_with_any_matching_entry_and_any_current_secret() -> None:
    headers = sign(SECRET, "wh_3", NOW, BODY)
    rotated = dict(headers, **{"webhook-signature": "v1,bm90IGl0 " + headers["webhook-signature"]})
    delivery = verify(["whsec_b2xkIHNlY3JldA==", SECRET], rotated, BODY, now=NOW + 299)
    assert (delivery.webhook_id, delivery.timestamp) == ("wh_3", NOW)


@pytest.mark.parametrize(("change", "reason"), [
    ({"webhook-signature": None}, "missing_header"),
    ({"webhook-id": ""}, "missing_header"),
    ({"webhook-timestamp": "12e3"}, "malformed"),
    ({"webhook-timestamp": "-5"}, "malformed"),
    ({"webhook-id": "x" * 300}, "malformed"),
    ({"webhook-timestamp": str(NOW - 301)}, "stale"),
    ({"webhook-timestamp": str(NOW + 301)}, "future"),
    ({"webhook-id": "wh_other"}, "bad_signature"),
    ({"webhook-signature": "v2,abc"}, "bad_signature"),
    ({"webhook-signature": " ".join(["v1,x"] * 17)}, "malformed"),
])
def test_forged_and_malformed_deliveries_are_refused_with_a_reason(change: dict[str, str | None], reason: str) -> None:
    headers: dict[str, str] = sign(SECRET, "wh_4", NOW, BODY)
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    with pytest.raises(WebhookRejected) as refused:
        verify([SECRET], headers, BODY, now=NOW)
    assert refused.value.reason == reason


def test_a_body_changed_in_flight_is_refused() -> None:
    headers = sign(SECRET, "wh_5", NOW, BODY)
    with pytest.raises(WebhookRejected, match="no webhook-signature entry matches"):
        verify([SECRET], headers, BODY.replace(b"rtc_1", b"rtc_2"), now=NOW)


def test_a_replay_is_refused_while_it_could_pass_and_a_failed_delivery_can_be_retried() -> None:
    guard = ReplayGuard(tolerance_s=300)
    delivery = verify([SECRET], sign(SECRET, "wh_6", NOW, BODY), BODY, now=NOW)
    assert guard.admit(delivery, NOW)
    assert not guard.admit(delivery, NOW + 200)
    guard.release("wh_6")  # handling it failed: the sender's retry carries the same id
    assert guard.admit(delivery, NOW + 201)
    assert len(guard) == 1
    later = verify([SECRET], sign(SECRET, "wh_7", NOW + 600, BODY), BODY, now=NOW + 600)
    assert guard.admit(later, NOW + 600)
    assert len(guard) == 1  # wh_6 can no longer pass as fresh: forgotten


def test_the_guard_is_bounded() -> None:
    guard = ReplayGuard(capacity=3)
    for n in range(10):
        assert guard.admit(verify([SECRET], sign(SECRET, f"wh_{n}", NOW, BODY), BODY, now=NOW), NOW)
    assert len(guard) == 3


def test_bad_secrets_are_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        secret_bytes("whsec_not base64!")
    with pytest.raises(ValueError):
        secret_bytes("")


@given(st.dictionaries(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x"]),
                       st.text(max_size=80)), st.binary(max_size=200))
def test_no_input_raises_anything_but_a_refusal(headers: dict[str, str], body: bytes) -> None:
    try:
        verify([SECRET], headers, body, now=NOW)
    except WebhookRejected:
        pass
