//! The JSON routes under `/api/` and `/metrics`. Each handler checks the
//! caller's role first, then every input, and only then touches the
//! repository (see the module doc of `server` for the invariants).

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{ApiError, AppState, Role};
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::sync::lock;

type St = State<Arc<AppState>>;
type ApiResult = Result<Response, ApiError>;

fn ok(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// The JSON body of a request, or 400 naming what is wrong with it.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not valid JSON for this route: {e}"
        ))
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}

/// The path parameters, or 400 (a percent-encoding that is not UTF-8).
pub(crate) fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
}

/// Checks that `r` is `latest` or a hex id or id prefix, before any
/// lookup: a malformed reference is a 400, an unknown one a 404.
pub(crate) fn check_ref(r: &str) -> Result<(), ApiError> {
    let hex = !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_hexdigit());
    if r == "latest" || hex {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "malformed snapshot id '{}': give a snapshot id, a unique prefix of one (hex digits), or latest",
            r.chars().take(80).collect::<String>()
        )))
    }
}

/// A snapshot as the API and `cairn snapshots --json` show it.
pub(crate) fn snapshot_json(id: SnapshotId, s: &Snapshot) -> Value {
    json!({
        "id": id,
        "short_id": id.short(),
        "time": s.timestamp().to_string(),
        "hostname": s.hostname,
        "username": s.username,
        "paths": s.display_paths(),
        "tags": s.tags,
        "parent": s.parent,
        "tree": s.tree,
        "summary": s.summary,
        "program_version": s.program_version,
        "app": s.app.as_ref().map(|a| json!({
            "name": a.name,
            "root": lossy(&a.root),
            "components": a.components.iter().map(|c| json!({
                "name": c.name,
                "kind": c.kind,
                "paths": c.paths.iter().map(|p| lossy(p)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "git": a.git,
        })),
        "databases": s.databases.iter().map(|d| json!({
            "path": lossy(&d.path),
            "page_size": d.page_size,
            "tables": d.tables,
        })).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    app: Option<String>,
    host: Option<String>,
}

/// `GET /api/snapshots`.
pub(crate) async fn list_snapshots(
    State(st): St,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    st.authorize(&headers, None, Role::Reader)?;
    let q = query(q)?;
    let (list, damaged) = st
        .read(move |repo| {
            let mut list = Vec::new();
            let mut damaged = Vec::new();
            for (id, s) in repo.snapshots()? {
                match s {
                    Ok(s) => {
                        let app = s.app.as_ref().map(|a| a.name.as_str());
                        if q.app.as_deref().is_some_and(|want| app != Some(want))
                            || q.host.as_deref().is_some_and(|h| s.hostname != h)
                        {
                            continue;
                        }
                        list.push(snapshot_json(id, &s));
                    }
                    Err(e) => damaged.push(json!({"id": id, "error": e.to_string()})),
                }
            }
            Ok((list, damaged))
        })
        .await?;
    ok(json!({ "snapshots": list, "damaged": damaged }))
}

/// `GET /api/snapshots/{id}`.
pub(crate) async fn show_snapshot(
    State(st): St,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    st.authorize(&headers, None, Role::Reader)?;
    let id = path(id)?;
    check_ref(&id)?;
    let v = st
        .read(move |repo| {
            let (id, s) = repo.find_snapshot(&id)?;
            Ok(snapshot_json(id, &s))
        })
        .await?;
    ok(v)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    profile: String,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// The profile named `name`, or 404 listing the known ones.
fn profile<'a>(
    st: &'a AppState,
    name: &str,
) -> Result<&'a crate::apps::profile::Profile, ApiError> {
    st.profiles.get(name).ok_or_else(|| {
        let known: Vec<&str> = st.profiles.keys().map(String::as_str).collect();
        ApiError::not_found(format!(
            "unknown profile '{name}': this server has {}; start it with --app-profile FILE for more",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// `POST /api/snapshots`.
pub(crate) async fn create_snapshot(State(st): St, headers: HeaderMap, bytes: Bytes) -> ApiResult {
    let caller = st.authorize(&headers, None, Role::Operator)?;
    let b: CreateBody = body(&bytes)?;
    let p = profile(&st, &b.profile)?.clone();
    for c in &b.components {
        p.component(c)?;
    }
    crate::format::snapshot::check_user_tags(&b.tags)?;
    let cache_dir = st.cache_dir.clone();
    let done = st
        .change(&caller, move |repo| {
            let opts = crate::apps::profile::SnapOptions {
                components: b.components,
                tags: b.tags,
                cache_dir,
                force: false,
            };
            Ok(crate::apps::profile::snap(
                repo,
                &p,
                &opts,
                &crate::ops::backup::NoProgress,
            )?)
        })
        .await?;
    let snaps: Vec<Value> = done
        .iter()
        .map(|d| {
            let mut v = snapshot_json(d.id, &d.snapshot);
            if let Some(o) = v.as_object_mut() {
                o.insert("warnings".into(), json!(d.warnings));
            }
            v
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "snapshots": snaps })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    snapshot: Option<String>,
    at: Option<String>,
    profile: String,
    component: String,
    target: Option<PathBuf>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
}

/// The snapshot a restore request names: `snapshot`, else the newest of
/// the application holding the component at or before `at` (default now).
fn restore_source(
    repo: &Repository,
    b: &RestoreBody,
    at: Option<jiff::Timestamp>,
) -> Result<(SnapshotId, Snapshot), ApiError> {
    if let Some(r) = &b.snapshot {
        let (id, s) = repo.find_snapshot(r)?;
        if s.app.as_ref().map(|a| a.name.as_str()) != Some(b.profile.as_str()) {
            return Err(ApiError::bad_request(format!(
                "snapshot {} is not a snapshot of application '{}'",
                id.short(),
                b.profile
            )));
        }
        return Ok((id, s));
    }
    let at = at.unwrap_or_else(jiff::Timestamp::now);
    // A damaged snapshot file might be the newest: refuse rather than
    // quietly restore an older one.
    crate::repo::readable_snapshots(repo.snapshots()?, crate::repo::DamagedSnapshots::Refuse)?
        .into_iter()
        .rev()
        .find(|(_, s)| {
            s.timestamp() <= at
                && !s.is_safety()
                && s.app.as_ref().is_some_and(|a| {
                    a.name == b.profile && a.components.iter().any(|c| c.name == b.component)
                })
        })
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no snapshot of component '{}' of application '{}' at or before {at}",
                b.component, b.profile
            ))
        })
}

/// Checks a restore request's `target` before anything is done: an
/// absolute path without NUL bytes, at or below one of the directories the
/// server was started to allow (`--allow-restore-target`), symlinks in its
/// existing part resolved so that none leads out of them.
fn allowed_target(t: &std::path::Path, allowed: &[PathBuf]) -> Result<PathBuf, ApiError> {
    let shown = t.display();
    if t.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(ApiError::bad_request(format!(
            "target '{}' contains a NUL byte",
            shown.to_string().escape_debug()
        )));
    }
    if !t.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "target '{shown}' must be an absolute path on the server"
        )));
    }
    if t.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ApiError::bad_request(format!(
            "target '{shown}' must not contain '..'"
        )));
    }
    // The longest existing ancestor, with its symlinks resolved, and the
    // rest as given (it is created by the restore, below that ancestor).
    let mut existing = t.to_path_buf();
    let mut rest = Vec::new();
    let real = loop {
        match std::fs::canonicalize(&existing) {
            Ok(r) => break r,
            Err(_) => match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name.to_owned());
                    existing = parent.to_path_buf();
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "target '{shown}' cannot be resolved"
                    )));
                }
            },
        }
    };
    let real = rest.iter().rev().fold(real, |p, n| p.join(n));
    if allowed.iter().any(|a| real.starts_with(a)) {
        return Ok(real);
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        if allowed.is_empty() {
            format!(
                "target '{shown}': this server restores components only in place (no target); start it with --allow-restore-target DIR to allow restores into DIR"
            )
        } else {
            format!(
                "target '{shown}' is not below a directory this server may restore into ({})",
                allowed
                    .iter()
                    .map(|a| a.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    ))
}

/// `POST /api/restore`.
pub(crate) async fn restore(State(st): St, headers: HeaderMap, bytes: Bytes) -> ApiResult {
    let caller = st.authorize(&headers, None, Role::Admin)?;
    let b: RestoreBody = body(&bytes)?;
    let p = profile(&st, &b.profile)?.clone();
    p.component(&b.component)?;
    if b.snapshot.is_some() && b.at.is_some() {
        return Err(ApiError::bad_request(
            "give either snapshot or at, not both",
        ));
    }
    if let Some(r) = &b.snapshot {
        check_ref(r)?;
    }
    let at = match &b.at {
        Some(t) => Some(crate::timespec::parse_time(
            t,
            jiff::Timestamp::now(),
            &jiff::tz::TimeZone::system(),
        )?),
        None => None,
    };
    // Restored into the resolved path that was checked, not the one given.
    let mut b = b;
    if let Some(t) = &b.target {
        b.target = Some(allowed_target(t, &st.restore_targets)?);
    }
    let cache_dir = st.cache_dir.clone();
    let v = st
        .change(&caller, move |repo| {
            let (id, snap) = restore_source(repo, &b, at)?;
            match &b.target {
                None => {
                    let opts = crate::apps::profile::ComponentRestoreOptions {
                        component: b.component.clone(),
                        dry_run: b.dry_run,
                        force: b.force,
                        cache_dir,
                        profile: Some(p),
                    };
                    let done =
                        crate::apps::profile::restore_component(repo, id, &snap, &opts, &crate::ops::backup::NoProgress)?;
                    let files: Vec<Value> = done
                        .files
                        .iter()
                        .map(|f| {
                            json!({
                                "path": f.path,
                                "action": match f.action {
                                    crate::apps::profile::FileAction::Replace => "replace",
                                    crate::apps::profile::FileAction::Create => "create",
                                    crate::apps::profile::FileAction::Unchanged => "unchanged",
                                },
                                "tables": f.tables.iter().map(|t| json!({
                                    "name": t.name, "now": t.now, "snapshot": t.snapshot,
                                })).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                    Ok(json!({
                        "snapshot": id,
                        "component": b.component,
                        "in_place": true,
                        "dry_run": b.dry_run,
                        "safety_snapshot": done.safety,
                        "undo": done.undo.as_ref().map(|u| u.command(Some(&repo.backend().location()))),
                        "files": files,
                        "warnings": done.warnings,
                    }))
                }
                Some(target) => {
                    let (includes, excludes) =
                        crate::apps::profile::component_paths(repo, id, &snap, &b.component, Some(&p))?;
                    if b.dry_run {
                        return Ok(json!({
                            "snapshot": id,
                            "component": b.component,
                            "in_place": false,
                            "dry_run": true,
                            "target": target,
                            "includes": includes,
                            "excludes": excludes,
                        }));
                    }
                    let mut opts = crate::ops::restore::RestoreOptions::new(target);
                    opts.includes = includes;
                    opts.excludes = excludes;
                    opts.force = b.force;
                    opts.cache_dir = cache_dir;
                    opts.profile = Some(p.file.clone());
                    let done = crate::apps::engine::restore(repo, &snap, &opts, &crate::ops::backup::NoProgress)?;
                    Ok(json!({
                        "snapshot": id,
                        "component": b.component,
                        "in_place": false,
                        "dry_run": false,
                        "target": target,
                        "files": done.files,
                        "dirs": done.dirs,
                        "others": done.others,
                        "bytes": done.bytes,
                        "complete": done.errors.is_empty() && !done.index_damaged,
                        "safety_snapshot": done.undo.as_ref().map(|u| u.snapshot),
                        "undo": done.undo.as_ref().map(|u| u.command(Some(&repo.backend().location()))),
                        "errors": done.errors,
                        "warnings": done.warnings,
                    }))
                }
            }
        })
        .await?;
    ok(v)
}

/// `DELETE /api/snapshots/{id}`: forgets one snapshot (its data stays
/// until `cairn prune`).
pub(crate) async fn delete_snapshot(
    State(st): St,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let caller = st.authorize(&headers, None, Role::Admin)?;
    let id = path(id)?;
    check_ref(&id)?;
    let v = st
        .change(&caller, move |repo| {
            // Resolved first, so that an unknown id is a 404 that records
            // nothing rather than a failed forget in the audit log.
            let (id, _) = repo.find_snapshot(&id)?;
            let opts = crate::ops::forget::ForgetOptions {
                ids: vec![id.to_hex()],
                ..crate::ops::forget::ForgetOptions::default()
            };
            let done = crate::ops::forget::forget(repo, &opts)?;
            Ok(json!({ "removed": done.removed }))
        })
        .await?;
    ok(v)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    #[serde(default)]
    read_data: bool,
    /// `N/M`: read only subset N of M of the packs.
    subset: Option<String>,
}

fn parse_subset(s: &str) -> Result<(u32, u32), ApiError> {
    let parsed = s
        .split_once('/')
        .and_then(|(n, m)| Some((n.trim().parse::<u32>().ok()?, m.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((n, m)) if m > 0 && (1..=m).contains(&n) => Ok((n, m)),
        _ => Err(ApiError::bad_request(format!(
            "subset '{s}': give N/M with 1 <= N <= M, for example 1/7"
        ))),
    }
}

/// `POST /api/verify`: runs verify (read-only; serialized with the
/// changing operations so that it sees none half done).
pub(crate) async fn run_verify(State(st): St, headers: HeaderMap, bytes: Bytes) -> ApiResult {
    let caller = st.authorize(&headers, None, Role::Operator)?;
    let b: VerifyBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        VerifyBody::default()
    } else {
        body(&bytes)?
    };
    let opts = crate::ops::verify::VerifyOptions {
        read_data: b.read_data || b.subset.is_some(),
        subset: b.subset.as_deref().map(parse_subset).transpose()?,
    };
    let by = caller.name.clone();
    let v = st
        .change(&caller, move |repo| {
            let r = crate::ops::verify::verify(repo, &opts)?;
            Ok(json!({
                "ok": r.errors.is_empty(),
                "time": jiff::Timestamp::now().to_string(),
                "by": format!("token:{by}"),
                "read_data": opts.read_data,
                "subset": b.subset,
                "errors": r.errors,
                "warnings": r.warnings,
                "snapshots": r.snapshots,
                "trees": r.trees,
                "packs_read": r.packs_read,
                "blobs_read": r.blobs_read,
                "bytes_read": r.bytes_read,
            }))
        })
        .await?;
    *lock(&st.last_verify) = Some(v.clone());
    ok(v)
}

/// `GET /api/verify`: the last verify run through this server.
pub(crate) async fn last_verify(State(st): St, headers: HeaderMap) -> ApiResult {
    st.authorize(&headers, None, Role::Reader)?;
    let last = lock(&st.last_verify).clone();
    ok(json!({ "last": last }))
}

/// `GET /api/stats`.
pub(crate) async fn stats(State(st): St, headers: HeaderMap) -> ApiResult {
    st.authorize(&headers, None, Role::Reader)?;
    let s = st.read(|repo| Ok(crate::ops::stats::stats(repo)?)).await?;
    ok(serde_json::to_value(&s).map_err(|e| ApiError::internal(e.to_string()))?)
}

/// The status as JSON, shared with the status page.
pub(crate) fn status_json(s: &crate::ops::status::RepoStatus, now: jiff::Timestamp) -> Value {
    let sources: Vec<Value> = s.sources.iter().map(|x| x.to_json(now)).collect();
    json!({
        "sources": sources,
        "snapshots": s.snapshots,
        "repo_bytes": s.repo_bytes,
        "problems": s.problems,
    })
}

/// `GET /api/status`.
pub(crate) async fn status(State(st): St, headers: HeaderMap) -> ApiResult {
    st.authorize(&headers, None, Role::Reader)?;
    let s = st
        .read(|repo| Ok(crate::ops::status::status(repo)?))
        .await?;
    ok(status_json(&s, jiff::Timestamp::now()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogQuery {
    last: Option<usize>,
}

/// `GET /api/log`: read only; no route changes or deletes events.
pub(crate) async fn log(
    State(st): St,
    headers: HeaderMap,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult {
    st.authorize(&headers, None, Role::Reader)?;
    let q = query(q)?;
    let log = st
        .read(move |repo| Ok(crate::repo::audit::read_log(repo, q.last)?))
        .await?;
    let events: Vec<Value> = log.events.iter().map(|(id, e)| e.to_json(id)).collect();
    ok(json!({ "events": events, "problems": log.problems }))
}

/// `GET /metrics`: Prometheus text format 0.0.4.
pub(crate) async fn metrics(State(st): St, headers: HeaderMap) -> ApiResult {
    if !st.metrics_public {
        st.authorize(&headers, None, Role::Reader)?;
    }
    let s = st
        .read(|repo| Ok(crate::ops::status::status(repo)?))
        .await?;
    let text = crate::ops::status::prometheus(&s, jiff::Timestamp::now());
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// Any path without a route.
pub(crate) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {method} {}: the routes are listed in /api/openapi.json",
        uri.path()
    ))
}

/// A route called with a method it does not have.
pub(crate) async fn no_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {method}: the routes are listed in /api/openapi.json",
            uri.path()
        ),
    )
}
