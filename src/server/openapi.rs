//! The OpenAPI 3 description of every route, written by hand (a test
//! checks that each route of the router appears in it).

use axum::Json;
use serde_json::{Value, json};

fn err(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok_json(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"type": "object"}}}})
}

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true,
           "description": "A snapshot id, a unique prefix of one (hex), or `latest`.",
           "schema": {"type": "string"}})
}

fn path_param() -> Value {
    json!({"name": "path", "in": "path", "required": true,
           "description": "A path inside the snapshot, `/`-separated.",
           "schema": {"type": "string"}})
}

/// Responses every authenticated route can give.
fn guarded(role: &str, mut responses: Value) -> Value {
    if let Some(r) = responses.as_object_mut() {
        r.insert("401".into(), err("No token, or not a valid one."));
        r.insert(
            "403".into(),
            err(&format!("The token's role is below {role}; or, for a change authorized by the browser session, the request came from another origin or lacked the session's X-CSRF-Token.")),
        );
        r.insert(
            "503".into(),
            err("The server cannot read its tokens file (the reason is in the server's log)."),
        );
    }
    responses
}

/// [`guarded`] for a route that takes a JSON body: 415 without
/// `Content-Type: application/json`.
fn guarded_json(role: &str, responses: Value) -> Value {
    let mut r = guarded(role, responses);
    if let Some(o) = r.as_object_mut() {
        o.insert(
            "415".into(),
            err("A body sent without 'Content-Type: application/json'."),
        );
    }
    r
}

/// The document.
pub(crate) fn spec() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "cairn serve",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("The HTTP API of a cairn repository. Authenticate with `Authorization: Bearer TOKEN` (tokens from `cairn token add NAME --role reader|operator|admin`). Roles: reader lists and reads; operator also creates snapshots and runs verify; admin also restores and deletes. Every error is a JSON object {{\"error\", \"status\"}}. Changing calls are recorded in the repository's audit log as token:NAME; no route changes or deletes audit events. A request body must be sent with `Content-Type: application/json` (else 415). The status page's session cookie also authorizes the API; a change authorized by it must come from the server's own origin (`Origin`, `Sec-Fetch-Site`) and carry the session's CSRF token in `X-CSRF-Token` (else 403). Sessions end {idle} minutes unused or {life} hours after login. Request headers must arrive within {hdr} s and each part of a body within {body} s of the last. Every answer says `Cache-Control: no-store`, `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` and a `Content-Security-Policy` with `frame-ancestors 'none'`.",
                idle = super::SESSION_IDLE.as_secs() / 60,
                life = super::SESSION_LIFETIME.as_secs() / 3600,
                hdr = super::HEADER_READ_TIMEOUT.as_secs(),
                body = super::BODY_READ_TIMEOUT.as_secs())
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "status"], "properties": {
                    "error": {"type": "string"}, "status": {"type": "integer"}}},
                "CreateSnapshot": {"type": "object", "required": ["profile"], "additionalProperties": false, "properties": {
                    "profile": {"type": "string", "description": "An application name of a --profile the server was started with."},
                    "components": {"type": "array", "items": {"type": "string"}, "description": "Only these components (default: all)."},
                    "tags": {"type": "array", "items": {"type": "string"}}}},
                "Restore": {"type": "object", "required": ["profile", "component"], "additionalProperties": false, "properties": {
                    "snapshot": {"type": "string", "description": "Snapshot id, prefix or latest; default: the newest of the component at `at`."},
                    "at": {"type": "string", "description": "A time (RFC 3339, `2026-11-20 14:00`, `2h ago`): the newest snapshot of the component at or before it."},
                    "profile": {"type": "string"},
                    "component": {"type": "string"},
                    "target": {"type": "string", "description": "Absolute directory on the server to restore into; without it the component is restored in place (after a safety snapshot)."},
                    "dry_run": {"type": "boolean"},
                    "force": {"type": "boolean", "description": "Replace a database even when a process has it open."}}},
                "Prune": {"type": "object", "additionalProperties": false, "properties": {
                    "dry_run": {"type": "boolean"},
                    "max_unused": {"type": "number", "minimum": 0, "maximum": 1, "description": "Repack a pack when more than this share of it is unused (default 0.05)."},
                    "repack_small": {"type": "boolean", "description": "Repack small packs together (default true)."}}},
                "Verify": {"type": "object", "additionalProperties": false, "properties": {
                    "read_data": {"type": "boolean"},
                    "subset": {"type": "string", "description": "N/M: read only subset N of M of the packs."}}}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/openapi.json": {"get": {"summary": "This document.", "security": [],
                "responses": {"200": ok_json("The OpenAPI document.")}}},
            "/api/snapshots": {
                "get": {"summary": "List snapshots (reader).", "parameters": [
                    {"name": "app", "in": "query", "schema": {"type": "string"}, "description": "Only this application's snapshots."},
                    {"name": "host", "in": "query", "schema": {"type": "string"}, "description": "Only this host's snapshots."}],
                    "responses": guarded("reader", json!({"200": ok_json("{snapshots: [...], damaged: [...]}"), "400": err("Bad query.")}))},
                "post": {"summary": "Take a snapshot of a profile's components (operator).",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateSnapshot"}}}},
                    "responses": guarded_json("operator", json!({"201": ok_json("{snapshots: [...]}: the snapshots taken."),
                        "400": err("Malformed JSON or unknown component."), "404": err("Unknown profile."), "409": err("The repository is locked.")}))}
            },
            "/api/snapshots/{id}": {
                "get": {"summary": "Show one snapshot (reader).", "parameters": [id_param()],
                    "responses": guarded("reader", json!({"200": ok_json("The snapshot."), "400": err("Malformed or ambiguous id."), "404": err("No such snapshot.")}))},
                "delete": {"summary": "Forget one snapshot; its data stays until `cairn prune` (admin).", "parameters": [id_param()],
                    "responses": guarded("admin", json!({"200": ok_json("{removed: [id]}"), "400": err("Malformed or ambiguous id."), "404": err("No such snapshot.")}))}
            },
            "/api/restore": {"post": {"summary": "Restore a component, in place or into a target directory (admin).",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Restore"}}}},
                "responses": guarded_json("admin", json!({"200": ok_json("What was (or, in a dry run, would be) restored."),
                    "400": err("Malformed JSON, id or time; unknown component; a target that is not absolute or holds a NUL byte."), "404": err("Unknown profile or snapshot.")}))}},
            "/api/verify": {
                "get": {"summary": "The last verify run through this server, or null (reader).",
                    "responses": guarded("reader", json!({"200": ok_json("{last: report or null}")}))},
                "post": {"summary": "Run verify (operator).",
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Verify"}}}},
                    "responses": guarded_json("operator", json!({"200": ok_json("The report; ok is false when damage was found."), "400": err("Malformed JSON or subset.")}))}
            },
            "/api/prune": {"post": {"summary": "Delete data no snapshot uses and repack, as `cairn prune` (admin).",
                "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Prune"}}}},
                "responses": guarded_json("admin", json!({"200": ok_json("{dry_run, report, bytes_freed}, as `cairn prune --json`."),
                    "400": err("Malformed JSON or max_unused."), "409": err("The repository is locked.")}))}},
            "/api/stats": {"get": {"summary": "Repository sizes and deduplication (reader).",
                "responses": guarded("reader", json!({"200": ok_json("As `cairn stats --json`.")}))}},
            "/api/status": {"get": {"summary": "Freshness and failures per source (reader).",
                "responses": guarded("reader", json!({"200": ok_json("{sources, snapshots, repo_bytes, problems}")}))}},
            "/api/log": {"get": {"summary": "The audit log, oldest first (reader). Read only.",
                "parameters": [{"name": "last", "in": "query", "schema": {"type": "integer", "minimum": 0}, "description": "Only the N newest events."}],
                "responses": guarded("reader", json!({"200": ok_json("{events: [...], problems: [...]}"), "400": err("Bad query.")}))}},
            "/metrics": {"get": {"summary": "Prometheus metrics, text format 0.0.4 (reader, or public with --metrics-public).",
                "responses": guarded("reader", json!({"200": {"description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}}}))}},
            "/": {"get": {"summary": "The status page (HTML; reader). Accepts ?token= once, then a session cookie.",
                "responses": {"200": {"description": "HTML."}, "303": {"description": "Not logged in: to /login."}}}},
            "/login": {
                "get": {"summary": "The login form (HTML).", "security": [], "responses": {"200": {"description": "HTML."}}},
                "post": {"summary": "Log in with a token (form field `token`); sets an HttpOnly SameSite=Strict session cookie (Max-Age: 12 hours).", "security": [],
                    "responses": {"303": {"description": "Logged in: to /."}, "401": {"description": "Not a valid token (HTML form again)."}, "403": {"description": "Sent from another origin."}}}
            },
            "/logout": {"post": {"summary": "End the browser session (form field `csrf`: the session's CSRF token, which the status page's button sends).", "security": [],
                "responses": {"303": {"description": "To /login."}, "403": {"description": "From another origin, or without the session's CSRF token."}}}},
            "/browse/{id}": {"get": {"summary": "A snapshot's root directory (HTML; reader).", "parameters": [id_param()],
                "responses": {"200": {"description": "HTML."}, "303": {"description": "Not logged in."}, "404": {"description": "No such snapshot."}}}},
            "/browse/{id}/{path}": {"get": {"summary": "A directory of a snapshot (HTML; reader).", "parameters": [id_param(), path_param()],
                "responses": {"200": {"description": "HTML."}, "303": {"description": "Not logged in."}, "404": {"description": "No such snapshot or path."}}}},
            "/download/{id}/{path}": {"get": {"summary": "One file of a snapshot, every chunk checked (reader).", "parameters": [id_param(), path_param()],
                "responses": {"200": {"description": "The file, as an attachment.", "content": {"application/octet-stream": {}}},
                    "400": err("Not a regular file."), "404": err("No such snapshot or path.")}}}
        }
    })
}

/// `GET /api/openapi.json`.
pub(crate) async fn document() -> Json<Value> {
    Json(spec())
}
