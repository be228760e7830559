//! The OpenAPI 3 description of every route, generated with utoipa from
//! the handlers' `#[utoipa::path]` attributes and the types they take and
//! answer with (the library's report types among them), so that it cannot
//! drift from what the server does. A test checks that each route of the
//! router appears in it.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Components, OpenApi as Document, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{api, page};

/// The document's routes and types.
#[derive(OpenApi)]
#[openapi(
    info(title = "cairn serve"),
    paths(
        document,
        api::list_snapshots,
        api::create_snapshot,
        api::show_snapshot,
        api::delete_snapshot,
        api::restore,
        api::last_verify,
        api::run_verify,
        api::run_prune,
        api::stats,
        api::status,
        api::log,
        api::metrics,
        page::index,
        page::login_form,
        page::login,
        page::logout,
        page::browse_root,
        page::browse,
        page::download,
    ),
    security(("bearer" = [])),
    modifiers(&Guarded),
)]
struct ApiDoc;

/// The bearer scheme, and the answers every guarded route can give: 401,
/// 403 and 503 on each route that needs a token, 415 on each that takes a
/// JSON body.
struct Guarded;

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .into()
}

impl Modify for Guarded {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Components::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.delete,
                &mut item.put,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                // An operation with `security()` of its own is public.
                let public = op.security.as_ref().is_some_and(|s| {
                    s.iter()
                        .all(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
                });
                let r = &mut op.responses.responses;
                if !public {
                    r.entry("401".into())
                        .or_insert_with(|| error_response("No token, or not a valid one."));
                    r.entry("403".into()).or_insert_with(|| {
                        error_response("The token's role is below the route's; or, for a change authorized by the browser session, the request came from another origin or lacked the session's X-CSRF-Token.")
                    });
                    r.entry("503".into()).or_insert_with(|| {
                        error_response("The server cannot read its tokens file (the reason is in the server's log).")
                    });
                }
                if op.request_body.is_some() {
                    r.entry("415".into()).or_insert_with(|| {
                        error_response("A body sent without 'Content-Type: application/json'.")
                    });
                }
            }
        }
    }
}

/// The document.
pub(crate) fn spec() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.info.license = None;
    doc.info.description = Some(format!(
        "The HTTP API of a cairn repository. Authenticate with `Authorization: Bearer TOKEN` (tokens from `cairn token add NAME --role reader|operator|admin`). Roles: reader lists and reads; operator also creates snapshots and runs verify; admin also restores, prunes and deletes. Every error is a JSON object {{\"error\", \"status\"}}. Changing calls are recorded in the repository's audit log as token:NAME; no route changes or deletes audit events. A request body must be sent with `Content-Type: application/json` (else 415). The status page's session cookie also authorizes the API; a change authorized by it must come from the server's own origin (`Origin`, `Sec-Fetch-Site`) and carry the session's CSRF token in `X-CSRF-Token` (else 403). Sessions end {idle} minutes unused or {life} hours after login. Request headers must arrive within {hdr} s and each part of a body within {body} s of the last. Every answer says `Cache-Control: no-store`, `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` and a `Content-Security-Policy` with `frame-ancestors 'none'`.",
        idle = super::SESSION_IDLE.as_secs() / 60,
        life = super::SESSION_LIFETIME.as_secs() / 3600,
        hdr = super::HEADER_READ_TIMEOUT.as_secs(),
        body = super::BODY_READ_TIMEOUT.as_secs()
    ));
    doc
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "documentation", security(),
    summary = "This document.",
    responses((status = 200, description = "The OpenAPI document.", body = Object)))]
pub(crate) async fn document() -> Json<Document> {
    Json(spec())
}
