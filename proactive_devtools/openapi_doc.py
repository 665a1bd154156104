"""Builds proactive/api/openapi.json, the HTTP API's OpenAPI 3.1 document.

The request schema of POST /api/notifications IS the outbox contract's JSON
Schema (proactive/schemas/outbox-message.v1.json): its `$defs` become
components named `Outbox.<name>` and its references are rewritten to them, so
the two can't drift. `python -m proactive_devtools.openapi_doc` writes the
document; tests/test_api_openapi.py fails when the committed one is not what
this builds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from proactive.api.notifications import MAX_BATCH
from proactive.api.paging import MAX_PAGE
from proactive.contract import MAX_KEY
from proactive.reporting.reports import REPORT_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "proactive" / "schemas" / "outbox-message.v1.json"
DOCUMENT = ROOT / "proactive" / "api" / "openapi.json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# The report columns that are not strings (the rest are).
COLUMN_TYPES = {"attempts": "integer", "unknownAttempt": "integer", "ambiguous": "boolean",
                "readAtApprox": "boolean"}


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (f"#/components/schemas/Outbox.{v.removeprefix('#/$defs/')}"
                    if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/")
                    else _rewrite(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


def _json(description: str, schema: str) -> dict[str, Any]:
    # OpenAPI 3.1 (4.8.17.1 Response Object): `description` is REQUIRED.
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": _ref("Problem")}}}


UNAUTHORIZED = {"description": "No Functions key, a wrong one, or (with Entra ID on) no valid "
                               "bearer token. The Functions host answers key failures itself, "
                               "with no body; a token failure is problem details."}
COMMON = {"401": UNAUTHORIZED, "403": _problem("The bearer token lacks the app role"),
          "500": _problem("An unexpected failure (a bug: see the app's log)"),
          "503": _problem("Storage or the app's configuration is unavailable; retry later")}
KEY_PARAM = {"name": "key", "in": "path", "required": True, "description": "The send's key",
             "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY}}

ID_PARAM = {"name": "id", "in": "path", "required": True,
            "description": "The parked message's queue id", "schema": {"type": "string"}}


def _op(summary: str, op_id: str, responses: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"summary": summary, "operationId": op_id, **more,
            "responses": {**responses, **COMMON}}


def build() -> dict[str, Any]:
    contract = json.loads(CONTRACT.read_text(encoding="utf-8"))
    defs = contract.pop("$defs", {})
    for name in ("$schema", "$id"):
        contract.pop(name, None)
    schemas: dict[str, Any] = {"OutboxMessage": _rewrite(contract)}
    schemas.update({f"Outbox.{name}": _rewrite(value) for name, value in defs.items()})
    schemas.update({
        "Problem": {
            "type": "object", "description": "RFC 9457 problem details, with our reason",
            "required": ["type", "title", "status", "detail", "reason"],
            "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                           "status": {"type": "integer"}, "detail": {"type": "string"},
                           "reason": {"type": "string"},
                           "settings": {"type": "array", "items": {"type": "string"},
                                        "description": "config-error: the settings to fix, "
                                                       "by name"},
                           "errors": {"type": "array", "items": {
                               "type": "object", "required": ["index", "reason", "detail"],
                               "properties": {"index": {"type": "integer"},
                                              "reason": {"type": "string"},
                                              "detail": {"type": "string"}}}}}},
        "Accepted": {"type": "object", "required": ["key", "status"],
                     "properties": {"key": {"type": "string"},
                                    "status": {"type": "string", "format": "uri"}}},
        "AcceptedBatch": {"type": "object", "required": ["accepted"],
                          "properties": {"accepted": {"type": "array",
                                                      "items": _ref("Accepted")}}},
        "SendStatus": {
            "type": "object", "required": ["key", "state", "counts", "links"],
            "properties": {
                "key": {"type": "string"},
                "state": {"enum": ["running", "done", "cancelled", "scheduled"]},
                "counts": {
                    "type": "object", "additionalProperties": {"type": "integer"},
                    "description": "By state, and by reason for failed and skipped "
                                   "(`failed_unknown_user`, `skipped_opted_out`); unknown: "
                                   "recipients whose attempt's "
                                   "outcome is unknown, not sent again (onUnknown skip); "
                                   "ambiguous: recipients one of whose attempts had an "
                                   "unknown outcome (a worker died mid-call, a lost "
                                   "answer): sent again, they may have two copies; with "
                                   "`read`, `unread`, `not-available`, `read_unknown` and "
                                   "`acked` of the sent deliveries (README \"Read, "
                                   "acknowledged, reminded\")"},
                "engagement": {"type": "string", "description": "Why read/acked are "
                                                                "not counted here"},
                "scheduled": {"type": "integer"},
                "createdAt": {"type": "string"}, "cancelledAt": {"type": "string"},
                "reason": {"type": "string"},
                "detail": {"type": "string",
                           "description": "Why a send ended without recipients "
                                          "(reason `no-recipients`)"},
                "links": {"type": "object", "properties": {
                    "recipients": {"type": "string"}, "report": {"type": "string"}}}}},
        "Reach": {
            "type": "object", "required": ["tenants", "unreachable", "partial"],
            "properties": {
                "partial": {"type": "boolean"},
                "unreachable": {"type": "array", "items": {
                    "type": "object",
                    "required": ["user", "tenantId", "status", "topic", "at", "via"],
                    "properties": {name: {"type": "string"} for name in
                                   ("user", "tenantId", "status", "topic", "at", "via")}}},
                "tenants": {"type": "array", "items": {
                    "type": "object", "required": ["tenant", "counts"],
                    "properties": {"tenant": {"type": "string"}, "counts": {
                        "type": "object", "additionalProperties": {"type": "integer"}}}}}}},
        "SendsPage": {
            "type": "object", "required": ["items"],
            "properties": {
                "continuation": {"type": "string",
                                 "description": "Pass as `continuation` for the next page"},
                "items": {"type": "array", "items": {
                    "type": "object", "required": ["key", "state", "createdAt", "counts"],
                    "properties": {
                        "key": {"type": "string"},
                        "state": {"enum": ["running", "done", "cancelled"]},
                        "createdAt": {"type": "string"}, "audience": {"type": "string"},
                        "topic": {"type": "string"},
                        "text": {"type": "string", "description": "Its first 200 characters"},
                        "counts": {"type": "object",
                                   "additionalProperties": {"type": "integer"}}}}}}},
        "Poison": {
            "type": "object", "required": ["count", "more", "items"],
            "properties": {
                "count": {"type": "integer", "description": "How many are listed"},
                "more": {"type": "boolean",
                         "description": "The list is full: more may be parked behind it"},
                "items": {"type": "array", "description": "The first 32", "items": {
                    "type": "object",
                    "required": ["id", "insertedAt", "reason", "detail", "failedAt", "message"],
                    "properties": {name: {"type": "string"} for name in (
                        "id", "insertedAt", "reason", "detail", "failedAt", "message")}}}}},
        "Schedules": {
            "type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": {
                "type": "object", "required": ["key", "recipient", "state"],
                "properties": {"key": {"type": "string"}, "recipient": {"type": "string"},
                               "state": {"type": "string"}, "due": {"type": "string"},
                               "dueLocal": {"type": "string"},
                               "timezone": {"type": "string"}}}}}},
        "RecipientsPage": {
            "type": "object", "required": ["key", "items"],
            "properties": {
                "key": {"type": "string"},
                "continuation": {"type": "string",
                                 "description": "Pass as `continuation` for the next page"},
                "items": {"type": "array", "items": {
                    "type": "object", "required": ["recipient", "state"],
                    "description": "The send report's columns (README \"Reports\"), those "
                                   "with a value",
                    "properties": {name: {"type": COLUMN_TYPES.get(name, "string")}
                                   for name in REPORT_COLUMNS}}}}},
    })
    paths = {
        "/api/notifications": {"post": _op(
            "Enqueue outbox messages (one, or a batch)", "enqueueNotifications",
            {"202": {"description": "Enqueued; each message's key and status URL",
                     "headers": {"Location": {"schema": {"type": "string"}}},
                     "content": {"application/json": {"schema": {
                         "oneOf": [_ref("Accepted"), _ref("AcceptedBatch")]}}}},
             "400": _problem("Refused with the reason and detail the poison queue would get; "
                             "a batch lists each refused message in `errors`"),
             "413": _problem("The body or one message is too large"),
             "415": _problem("The body is not application/json")},
            requestBody={"required": True, "content": {"application/json": {"schema": {
                "oneOf": [_ref("OutboxMessage"),
                          {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                           "items": _ref("OutboxMessage")}]}}}})},
        "/api/sends": {"get": _op(
            "Sends to many recipients, newest first (from the send index; a one-recipient "
            "message is read by its key)", "listSends",
            {"200": _json("One page; the next is named by `continuation`", "SendsPage"),
             "400": _problem("A bad page size, state, filter or continuation token")},
            parameters=[{"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
                        {"name": "continuation", "in": "query", "required": False,
                         "schema": {"type": "string"}},
                        {"name": "state", "in": "query", "required": False,
                         "schema": {"enum": ["running", "done", "cancelled"]}},
                        {"name": "topic", "in": "query", "required": False,
                         "description": "Only sends with exactly this topic",
                         "schema": {"type": "string", "maxLength": MAX_KEY}},
                        {"name": "text", "in": "query", "required": False,
                         "description": "Only sends whose key or text contains this "
                                        "(case-insensitive)",
                         "schema": {"type": "string", "maxLength": MAX_KEY}}])},
        "/api/sends/{key}": {"get": _op(
            "A send's state and counts", "getSend",
            {"200": _json("The send's state and counts", "SendStatus"),
             "400": _problem("The key can't be one"),
             "404": _problem("No send with this key is recorded")},
            parameters=[KEY_PARAM])},
        "/api/sends/{key}/recipients": {"get": _op(
            "A page of a send's recipients and their results", "listRecipients",
            {"200": _json("One page of recipients; the next is named by `continuation`",
                          "RecipientsPage"),
             "400": _problem("A bad key, page size or continuation token")},
            parameters=[KEY_PARAM,
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
                        {"name": "continuation", "in": "query", "required": False,
                         "schema": {"type": "string"}}])},
        "/api/sends/{key}/cancel": {"post": _op(
            "Cancel a many-user or scheduled send", "cancelSend",
            {"202": {"description": "The cancel is queued",
                     "headers": {"Location": {"schema": {"type": "string"}}},
                     "content": {"application/json": {"schema": _ref("Accepted")}}},
             "400": _problem("The key can't be one")},
            parameters=[KEY_PARAM])},
        "/api/sends/{key}/report": {"get": _op(
            "A page of a send's report, as JSON or CSV", "getReport",
            {"200": {"description": "One page; the next is named by `continuation` (JSON) and "
                                    "a `Link: rel=\"next\"` header",
                     "content": {"application/json": {"schema": _ref("RecipientsPage")},
                                 "text/csv": {"schema": {"type": "string"}}}},
             "400": _problem("A bad key, format, page size or continuation token")},
            parameters=[KEY_PARAM,
                        {"name": "format", "in": "query", "required": False,
                         "schema": {"enum": ["json", "csv"]}},
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
                        {"name": "continuation", "in": "query", "required": False,
                         "schema": {"type": "string"}}])},
        "/api/reach": {"get": _op(
            "Whom the bot can reach per tenant, and who can't (blocked, uninstalled, "
            "disabled, opted out; with `group`, who in that Entra ID group never installed "
            "the bot)", "getReach",
            {"200": _json("Counts per tenant and who can't be reached", "Reach"),
             "400": _problem("`group` without proactive install, or a group Graph can't read")},
            parameters=[{"name": "group", "in": "query", "required": False,
                         "description": "An Entra ID group id: one paced Graph call per "
                                        "member, so for small groups (the CLI for large ones)",
                         "schema": {"type": "string"}}])},
        "/api/poison": {"get": _op(
            "The poison queue: its count and its first 32 messages with reason and detail",
            "listPoison", {"200": _json("The parked messages", "Poison")})},
        "/api/poison/{id}/requeue": {"post": _op(
            "Put a parked message back on the outbox: as it came, or the fixed message in "
            "the body; either must pass the worker's checks", "requeuePoison",
            {"200": {"description": "Requeued", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"requeued": {"type": "string"}}}}}},
             "400": _problem("The message (or the fix) is still invalid: nothing moved"),
             "404": _problem("No parked message has this id"),
             "413": _problem("The fixed message is over the app's body limit")},
            parameters=[ID_PARAM],
            requestBody={"required": False, "content": {"application/json": {
                "schema": _ref("OutboxMessage")}}})},
        "/api/poison/{id}/purge": {"post": _op(
            "Delete one parked message", "purgePoison",
            {"200": {"description": "Deleted", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"purged": {"type": "string"}}}}}},
             "404": _problem("No parked message has this id")},
            parameters=[ID_PARAM])},
        "/api/schedules": {"get": _op(
            "The scheduled items still to come, soonest first (cancel one with "
            "POST /api/sends/{key}/cancel)", "listSchedules",
            {"200": _json("The items", "Schedules")})},
        "/api/health": {"get": {
            "summary": "Whether the app's configuration can be used (`python -m proactive "
                       "doctor` reads it). Anonymous: it names settings, never a value",
            "operationId": "getHealth", "security": [],
            "responses": {
                "200": {"description": "The settings can be used",
                        "content": {"application/json": {"schema": {
                            "type": "object", "required": ["status"],
                            "properties": {"status": {"const": "ok"}}}}}},
                "503": _problem("`config-error`: the app's configuration is invalid; "
                                "`settings` names what to fix")}}},
        "/api/openapi.json": {"get": _op(
            "This document", "getOpenApi",
            {"200": {"description": "OpenAPI 3.1",
                     "content": {"application/json": {"schema": {"type": "object"}}}}})},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "proactive HTTP API", "version": "1",
                 "description": "Send Microsoft Teams proactive messages over HTTP: the outbox "
                                "contract (README) behind Functions keys. Generated by "
                                "proactive_devtools/openapi_doc.py; do not edit."},
        "security": [{"functionKey": []}, {"functionCode": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionCode": {"type": "apiKey", "in": "query", "name": "code"},
            },
        },
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    DOCUMENT.write_text(render(), encoding="utf-8")
    print(f"wrote {DOCUMENT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
