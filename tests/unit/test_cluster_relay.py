"""The relay's wire format, running a relayed request through an app, and the HAProxy agent's answer."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxgate.cluster.load_report import agent_reply
from voxgate.cluster.relay import RELAYED, MalformedRelay, RelayedAnswer, RelayedRequest, answer_here

REQUEST = RelayedRequest(id="r1", reply_to="voxgate:reply:a", method="POST", path="/v1/realtime/calls/rtc_1/hangup",
                         query=b"x=1", headers=[(b"authorization", b"Bearer k"), (b"content-type", b"text/plain")],
                         body=b"\x00\xffbody", client="10.0.0.9")


def test_a_request_and_an_answer_cross_the_wire_unchanged() -> None:
    assert RelayedRequest.from_wire(REQUEST.to_wire()) == REQUEST
    answer = RelayedAnswer(id="r1", status=404, headers=[(b"content-type", b"application/json")], body=b"{}")
    assert RelayedAnswer.from_wire(answer.to_wire().encode()) == answer


@given(st.binary(max_size=300), st.text(max_size=30))
def test_any_body_and_query_cross_the_wire(body: bytes, query: str) -> None:
    request = RelayedRequest(id="r", reply_to="c", method="POST", path="/p", query=query.encode("utf-8"),
                             headers=[], body=body, client=None)
    assert RelayedRequest.from_wire(request.to_wire()) == request


@pytest.mark.parametrize("wire", [
    "not json", "[]", json.dumps({"v": 2, "id": "r"}), json.dumps({"v": 1}),
    json.dumps({"v": 1, "id": "r", "reply_to": "c", "method": "POST", "path": "relative"}),
    json.dumps({"v": 1, "id": "r", "reply_to": "c", "method": "POST", "path": "/p", "headers": [["a"]]}),
    json.dumps({"v": 1, "id": "r", "reply_to": "c", "method": "POST", "path": "/p", "body": "%%%"}),
])
def test_a_message_that_is_not_a_relayed_request_is_refused(wire: str) -> None:
    with pytest.raises(MalformedRelay):
        RelayedRequest.from_wire(wire)


@pytest.mark.parametrize("status", [True, 99, 600, "200", None])
def test_an_answer_without_an_http_status_is_refused(status: object) -> None:
    with pytest.raises(MalformedRelay):
        RelayedAnswer.from_wire(json.dumps({"v": 1, "id": "r", "status": status}))


async def test_the_holder_runs_the_request_through_its_app_marked_as_relayed() -> None:
    seen: dict[str, object] = {}

    async def hangup(request: Request) -> Response:
        seen.update(call=request.path_params["call_id"], auth=request.headers["authorization"],
                    body=await request.body(), relayed=request.scope.get(RELAYED), query=request.query_params["x"],
                    client=request.client.host if request.client else None)
        return JSONResponse({"ok": True}, status_code=202, headers={"X-Node": "a"})

    app = Starlette(routes=[Route("/v1/realtime/calls/{call_id}/hangup", hangup, methods=["POST"])])
    answer = await answer_here(app, REQUEST)
    assert seen == {"call": "rtc_1", "auth": "Bearer k", "body": b"\x00\xffbody", "relayed": True, "query": "1",
                    "client": "10.0.0.9"}
    assert (answer.id, answer.status, json.loads(answer.body)) == ("r1", 202, {"ok": True})
    response = answer.response()  # what the relaying node answers its own client
    assert response.status_code == 202 and response.headers["x-node"] == "a"
    assert response.headers["content-length"] == str(len(answer.body))
    assert response.headers.getlist("content-length") == [str(len(answer.body))]


async def test_a_route_that_fails_on_the_holder_is_answered_500_not_left_without_an_answer() -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    app = Starlette(routes=[Route("/v1/realtime/calls/{call_id}/hangup", broken, methods=["POST"])])
    answer = await answer_here(app, REQUEST)
    assert (answer.id, answer.status) == ("r1", 500)


@pytest.mark.parametrize(("limit", "active", "draining", "line"), [
    (16, 0, False, "up 100%\n"), (16, 15, False, "up 6%\n"), (16, 16, False, "up 0%\n"),
    (16, 20, False, "up 0%\n"), (16, 3, True, "drain\n"), (0, 0, False, "up 0%\n"),
])
def test_the_agent_reply_weighs_the_node_by_its_free_calls(limit: int, active: int, draining: bool,
                                                           line: str) -> None:
    assert agent_reply(limit, active, draining) == line
