"""`GET /openapi.json`: the operators' API as OpenAPI 3.1, made from the pydantic models that validate its
requests and shape its answers (control/schema.py), once per process."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voxgate import __version__
from voxgate.control import schema

__all__ = ["document", "openapi_json"]

_REF = "#/components/schemas/{model}"
_ERRORS = {"400": "The request is invalid.", "401": "Missing or invalid API key.",
           "403": "An ephemeral key: it may only open a realtime session.", "404": "No such call.",
           "409": "The call is not live, or cannot do that on its transport."}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _query(model: type[BaseModel], components: dict[str, Any]) -> list[dict[str, Any]]:
    """One query parameter per field of `model`, its schema the field's."""
    own = components[model.__name__]
    return [{"name": name, "in": "query", "required": False, "schema": _not_null(field_schema),
             **({"description": field_schema["description"]} if "description" in field_schema else {})}
            for name, field_schema in own["properties"].items()]


def _not_null(field_schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is left out rather than null: the schema without its null branch."""
    branches = [b for b in field_schema.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) != 1:
        return {k: v for k, v in field_schema.items() if k not in ("default", "description", "title")}
    return {**branches[0], **{k: v for k, v in field_schema.items()
                               if k not in ("anyOf", "default", "description", "title")}}


def _answer(model: type[BaseModel], status: str, *errors: str) -> dict[str, Any]:
    responses: dict[str, Any] = {status: {"description": model.__doc__ or "OK",
                                          "content": {"application/json": {"schema": _ref(model)}}}}
    for code in ("401", "403", *errors):
        responses[code] = {"description": _ERRORS[code],
                           "content": {"application/json": {"schema": _ref(schema.Problem)}}}
    return responses


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": False, "content": {"application/json": {"schema": _ref(model)}}}


@functools.cache
def document() -> dict[str, Any]:
    inputs: list[type[BaseModel]] = [schema.Window, schema.CallsQuery, schema.HangupRequest, schema.TransferRequest]
    outputs: list[type[BaseModel]] = [schema.CallList, schema.CallDetail, schema.DialingCall, schema.CallAction,
                                      schema.Stats, schema.CostReport, schema.Problem]
    _, defs = models_json_schema([(m, "validation") for m in inputs] + [(m, "serialization") for m in outputs],
                                 ref_template=_REF)
    components: dict[str, Any] = defs.get("$defs", {})
    call_id = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1,
                                                                       "maxLength": 200}}
    security: list[dict[str, list[str]]] = [{"apiKey": []}]
    paths = {
        "/v1/calls": {"get": {
            "operationId": "listCalls", "summary": "Calls, newest first, filtered and paged by cursor",
            "parameters": _query(schema.CallsQuery, components), "responses": _answer(schema.CallList, "200", "400"),
            "security": security}},
        "/v1/calls/{call_id}": {"get": {
            "operationId": "getCall", "summary": "A call with its transcript, tools, latency per turn and cost",
            "parameters": [call_id], "security": security,
            "responses": {**_answer(schema.CallDetail, "200", "404"),
                          "200": {"description": "The call's record, or an outbound call still ringing.",
                                  "content": {"application/json": {"schema": {"anyOf": [
                                      _ref(schema.CallDetail), _ref(schema.DialingCall)]}}}}}}},
        "/v1/calls/{call_id}/hangup": {"post": {
            "operationId": "hangUpCall", "summary": "Hang up a live call on any transport",
            "parameters": [call_id], "requestBody": _body(schema.HangupRequest), "security": security,
            "responses": _answer(schema.CallAction, "202", "400", "404", "409")}},
        "/v1/calls/{call_id}/transfer": {"post": {
            "operationId": "transferCall", "summary": "Move a live phone call to a person or another number",
            "parameters": [call_id], "security": security,
            "requestBody": {**_body(schema.TransferRequest), "required": True},
            "responses": _answer(schema.CallAction, "202", "400", "404", "409")}},
        "/v1/stats": {"get": {
            "operationId": "getStats", "summary": "KPIs against their targets over a window of calls",
            "parameters": _query(schema.Window, components), "security": security,
            "responses": _answer(schema.Stats, "200", "400")}},
        "/v1/stats/cost": {"get": {
            "operationId": "getCost", "summary": "Cost in money against a human agent over a window of calls",
            "parameters": _query(schema.Window, components), "security": security,
            "responses": _answer(schema.CostReport, "200", "400")}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "voxgate operators' API", "version": __version__,
                 "description": "Calls, KPIs and cost of a voxgate gateway. Every route takes an API key."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document())
