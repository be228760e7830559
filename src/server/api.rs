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
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// The command that undoes a restore, for the API's caller (who may be on
/// another machine: the repository is named by its location).
fn undo_command(repo: &Repository, undo: Option<&crate::ops::protect::Undo>) -> Option<String> {
    undo.map(|u| u.command(Some(&repo.backend().location())))
}

/// The JSON body of a request whose body may be empty (then `T`'s
/// default), or 400 naming what is wrong with it.
fn optional_body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        body(bytes)
    }
}

/// A report as JSON.
fn json_of<T: serde::Serialize>(report: &T) -> Result<Value, ApiError> {
    serde_json::to_value(report)
        .map_err(|e| ApiError::internal(format!("cannot render the report: {e}")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only this application's snapshots.
    app: Option<String>,
    /// Only this host's snapshots.
    host: Option<String>,
}

/// `GET /api/snapshots`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SnapshotList {
    /// The snapshots, oldest first.
    snapshots: Vec<crate::ops::report::SnapshotView>,
    /// Snapshot files that could not be read, each with the reason.
    damaged: Vec<DamagedSnapshot>,
}

/// A snapshot file that could not be read.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DamagedSnapshot {
    /// Its name.
    id: SnapshotId,
    /// Why it could not be read.
    error: String,
}

/// `POST /api/snapshots`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Created {
    /// One per snapshot taken.
    snapshots: Vec<crate::ops::report::BackupReport>,
}

/// `DELETE /api/snapshots/{id}`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Removed {
    /// The snapshot removed.
    removed: Vec<SnapshotId>,
}

/// A verify run through this server.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct VerifyRun {
    /// When it ended (RFC 3339).
    time: String,
    /// Who ran it: `token:NAME`.
    by: String,
    /// What it found.
    #[serde(flatten)]
    report: crate::ops::report::VerifySummary,
}

/// `GET /api/verify`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LastVerify {
    /// The last run, or null.
    last: Option<VerifyRun>,
}

/// `GET /api/snapshots`.
#[utoipa::path(get, path = "/api/snapshots", tag = "snapshots",
    summary = "List snapshots (reader).",
    params(ListQuery),
    responses(
        (status = 200, description = "The snapshots, and those whose file could not be read.", body = SnapshotList),
        (status = 400, description = "Bad query.", body = super::ErrorBody),
    ))]
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
                        list.push(crate::ops::report::SnapshotView::new(id, &s));
                    }
                    Err(e) => damaged.push(DamagedSnapshot {
                        id,
                        error: e.to_string(),
                    }),
                }
            }
            Ok((list, damaged))
        })
        .await?;
    ok(json_of(&SnapshotList {
        snapshots: list,
        damaged,
    })?)
}

/// `GET /api/snapshots/{id}`.
#[utoipa::path(get, path = "/api/snapshots/{id}", tag = "snapshots",
    summary = "Show one snapshot (reader).",
    params(("id" = String, Path, description = "A snapshot id, a unique prefix of one (hex), or `latest`.")),
    responses(
        (status = 200, description = "The snapshot.", body = crate::ops::report::SnapshotView),
        (status = 400, description = "Malformed or ambiguous id.", body = super::ErrorBody),
        (status = 404, description = "No such snapshot.", body = super::ErrorBody),
    ))]
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
            json_of(&crate::ops::report::SnapshotView::new(id, &s))
        })
        .await?;
    ok(v)
}

/// `POST /api/snapshots`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    /// An application name of a --profile the server was started with.
    profile: String,
    /// Only these components (default: all).
    #[serde(default)]
    components: Vec<String>,
    /// Tags for the snapshots.
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
#[utoipa::path(post, path = "/api/snapshots", tag = "snapshots",
    summary = "Take a snapshot of a profile's components (operator).",
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The snapshots taken, as `cairn snap --json` reports each.", body = Created),
        (status = 400, description = "Malformed JSON.", body = super::ErrorBody),
        (status = 404, description = "Unknown profile or component.", body = super::ErrorBody),
        (status = 409, description = "The repository is locked.", body = super::ErrorBody),
    ))]
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
    let created = Created {
        snapshots: done
            .iter()
            .map(crate::ops::backup::BackupOutcome::report)
            .collect(),
    };
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// `POST /api/restore`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreBody {
    /// Snapshot id, prefix or latest; default: the newest of the component
    /// at `at`.
    snapshot: Option<String>,
    /// A time (RFC 3339, `2026-11-20 14:00`, `2h ago`): the newest snapshot
    /// of the component at or before it.
    at: Option<String>,
    /// An application name of a --profile the server was started with.
    profile: String,
    /// The component to restore.
    component: String,
    /// Absolute directory on the server to restore into, at or below
    /// `serve --allow-restore-target`; without it the component is restored
    /// in place (after a safety snapshot).
    #[schema(value_type = Option<String>)]
    target: Option<PathBuf>,
    /// Say what would be done; change nothing.
    #[serde(default)]
    dry_run: bool,
    /// Replace a database even when a process has it open.
    #[serde(default)]
    force: bool,
}

/// What a dry run of a restore into a target would restore.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RestorePlan {
    /// The snapshot.
    snapshot: SnapshotId,
    /// The component.
    component: String,
    /// Always false: into a target.
    in_place: bool,
    /// Always true.
    dry_run: bool,
    /// Where to.
    #[schema(value_type = String)]
    target: PathBuf,
    /// The paths of the snapshot that would be restored.
    #[schema(value_type = Vec<String>)]
    includes: Vec<PathBuf>,
    /// The paths below them left out (other components').
    #[schema(value_type = Vec<String>)]
    excludes: Vec<PathBuf>,
}

/// The answers of `POST /api/restore`, by the request's form.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum RestoreAnswer {
    /// Into a target: as `cairn restore --component C --target DIR --json`.
    Target(crate::ops::report::RestoreReport),
    /// In place: as `cairn restore --component C --json`.
    InPlace(crate::apps::profile::ComponentRestoreReport),
    /// A dry run into a target.
    Plan(RestorePlan),
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
#[utoipa::path(post, path = "/api/restore", tag = "restore",
    summary = "Restore a component, in place or into a target directory (admin).",
    description = "With `target`, the answer is the report `cairn restore --target --json` gives. In place (no `target`), it lists each file replaced, created or unchanged, the safety snapshot and the undo command; a dry run lists what would be done.",
    request_body(content = RestoreBody, content_type = "application/json"),
    responses(
        (status = 200, description = "What was (or, in a dry run, would be) restored.", body = RestoreAnswer),
        (status = 400, description = "Malformed JSON, id or time; a snapshot that is not an application snapshot; a target that is not absolute or holds a NUL byte.", body = super::ErrorBody),
        (status = 404, description = "Unknown profile, component or snapshot.", body = super::ErrorBody),
        (status = 409, description = "The repository is locked, or a database to replace is open.", body = super::ErrorBody),
    ))]
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
                    let done = crate::apps::profile::restore_component(
                        repo,
                        id,
                        &snap,
                        &opts,
                        &crate::ops::backup::NoProgress,
                    )?;
                    let undo = undo_command(repo, done.undo.as_ref());
                    json_of(&RestoreAnswer::InPlace(done.report(
                        id,
                        &b.component,
                        b.dry_run,
                        undo,
                    )))
                }
                Some(target) => {
                    let (includes, excludes) = crate::apps::profile::component_paths(
                        repo,
                        id,
                        &snap,
                        &b.component,
                        Some(&p),
                    )?;
                    if b.dry_run {
                        return json_of(&RestoreAnswer::Plan(RestorePlan {
                            snapshot: id,
                            component: b.component.clone(),
                            in_place: false,
                            dry_run: true,
                            target: target.clone(),
                            includes,
                            excludes,
                        }));
                    }
                    let mut opts = crate::ops::restore::RestoreOptions::new(target);
                    opts.includes = includes;
                    opts.excludes = excludes;
                    opts.force = b.force;
                    opts.cache_dir = cache_dir;
                    opts.profile = Some(p.file.clone());
                    let done = crate::apps::engine::restore(
                        repo,
                        &snap,
                        &opts,
                        &crate::ops::backup::NoProgress,
                    )?;
                    let undo = undo_command(repo, done.undo.as_ref());
                    json_of(&RestoreAnswer::Target(done.report(
                        id,
                        target.clone(),
                        Some(b.component.clone()),
                        undo,
                    )))
                }
            }
        })
        .await?;
    ok(v)
}

/// `DELETE /api/snapshots/{id}`: forgets one snapshot (its data stays
/// until `cairn prune`).
#[utoipa::path(delete, path = "/api/snapshots/{id}", tag = "snapshots",
    summary = "Forget one snapshot; its data stays until `cairn prune` (admin).",
    params(("id" = String, Path, description = "A snapshot id, a unique prefix of one (hex), or `latest`.")),
    responses(
        (status = 200, description = "The snapshot removed.", body = Removed),
        (status = 400, description = "Malformed or ambiguous id.", body = super::ErrorBody),
        (status = 404, description = "No such snapshot.", body = super::ErrorBody),
    ))]
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
            json_of(&Removed {
                removed: done.removed,
            })
        })
        .await?;
    ok(v)
}

/// `POST /api/prune`'s body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PruneBody {
    /// Say what would be deleted and repacked; change nothing.
    #[serde(default)]
    dry_run: bool,
    /// Repack a pack when more than this share of it is unused, 0 to 1
    /// (default 0.05, as `cairn prune`).
    max_unused: Option<f64>,
    /// Repack small packs together (default true).
    repack_small: Option<bool>,
}

/// `POST /api/prune`: deletes unused data and repacks, as `cairn prune`.
#[utoipa::path(post, path = "/api/prune", tag = "maintenance",
    summary = "Delete data no snapshot uses and repack, as `cairn prune` (admin).",
    request_body(content = Option<PruneBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "What was (or would be) deleted, as `cairn prune --json`.", body = crate::ops::report::PruneSummary),
        (status = 400, description = "Malformed JSON or max_unused.", body = super::ErrorBody),
        (status = 409, description = "The repository is locked.", body = super::ErrorBody),
        (status = 500, description = "Damaged or missing data that prune will not delete around (named).", body = super::ErrorBody),
    ))]
pub(crate) async fn run_prune(State(st): St, headers: HeaderMap, bytes: Bytes) -> ApiResult {
    let caller = st.authorize(&headers, None, Role::Admin)?;
    let b: PruneBody = optional_body(&bytes)?;
    let mut opts = crate::ops::prune::PruneOptions::default();
    if let Some(share) = b.max_unused {
        if !(0.0..=1.0).contains(&share) {
            return Err(ApiError::bad_request(format!(
                "max_unused {share}: give a share between 0 and 1, for example 0.05"
            )));
        }
        opts.max_unused = share;
    }
    if let Some(small) = b.repack_small {
        opts.repack_small = small;
    }
    opts.dry_run = b.dry_run;
    let v = st
        .change(&caller, move |repo| {
            let r = crate::ops::prune::prune(repo, &opts)?;
            json_of(&r.summary(opts.dry_run))
        })
        .await?;
    ok(v)
}

/// `POST /api/verify`'s body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyBody {
    /// Read every pack and check every blob.
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
#[utoipa::path(post, path = "/api/verify", tag = "maintenance",
    summary = "Run verify (operator).",
    request_body(content = Option<VerifyBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The report, as `cairn verify --json`; ok is false when damage was found.", body = crate::ops::report::VerifySummary),
        (status = 400, description = "Malformed JSON or subset.", body = super::ErrorBody),
    ))]
pub(crate) async fn run_verify(State(st): St, headers: HeaderMap, bytes: Bytes) -> ApiResult {
    let caller = st.authorize(&headers, None, Role::Operator)?;
    let b: VerifyBody = optional_body(&bytes)?;
    let opts = crate::ops::verify::VerifyOptions {
        read_data: b.read_data || b.subset.is_some(),
        subset: b.subset.as_deref().map(parse_subset).transpose()?,
    };
    let by = caller.name.clone();
    let v = st
        .change(&caller, move |repo| {
            let r = crate::ops::verify::verify(repo, &opts)?;
            Ok(r.summary(&opts))
        })
        .await?;
    // The last run, with when and by whom, for `GET /api/verify`.
    *lock(&st.last_verify) = Some(VerifyRun {
        time: jiff::Timestamp::now().to_string(),
        by: format!("token:{by}"),
        report: v.clone(),
    });
    ok(json_of(&v)?)
}

/// `GET /api/verify`: the last verify run through this server.
#[utoipa::path(get, path = "/api/verify", tag = "maintenance",
    summary = "The last verify run through this server, or null (reader).",
    responses((status = 200, description = "The last run.", body = LastVerify)))]
pub(crate) async fn last_verify(State(st): St, headers: HeaderMap) -> ApiResult {
    st.authorize(&headers, None, Role::Reader)?;
    let last = lock(&st.last_verify).clone();
    ok(json_of(&LastVerify { last })?)
}

/// `GET /api/stats`.
#[utoipa::path(get, path = "/api/stats", tag = "repository",
    summary = "Repository sizes and deduplication (reader).",
    responses((status = 200, description = "As `cairn stats --json`.", body = crate::ops::stats::RepoStats)))]
pub(crate) async fn stats(State(st): St, headers: HeaderMap) -> ApiResult {
    st.authorize(&headers, None, Role::Reader)?;
    let s = st.read(|repo| Ok(crate::ops::stats::stats(repo)?)).await?;
    ok(serde_json::to_value(&s).map_err(|e| ApiError::internal(e.to_string()))?)
}

/// `GET /api/status`.
#[utoipa::path(get, path = "/api/status", tag = "repository",
    summary = "Freshness and failures per source (reader).",
    responses((status = 200, description = "The sources, as `cairn status --json` shows them (which adds whether each is stale by --max-age, and free space and alerts).", body = crate::ops::report::StatusView)))]
pub(crate) async fn status(State(st): St, headers: HeaderMap) -> ApiResult {
    st.authorize(&headers, None, Role::Reader)?;
    let s = st
        .read(|repo| Ok(crate::ops::status::status(repo)?))
        .await?;
    ok(json_of(&crate::ops::report::StatusView::new(
        &s,
        jiff::Timestamp::now(),
    ))?)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogQuery {
    /// Only the N newest events.
    last: Option<usize>,
}

/// `GET /api/log`: read only; no route changes or deletes events.
#[utoipa::path(get, path = "/api/log", tag = "repository",
    summary = "The audit log, oldest first (reader). Read only.",
    params(LogQuery),
    responses(
        (status = 200, description = "The events, as `cairn log --json`.", body = crate::ops::report::LogView),
        (status = 400, description = "Bad query.", body = super::ErrorBody),
    ))]
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
    ok(json_of(&crate::ops::report::LogView::new(&log))?)
}

/// `GET /metrics`: Prometheus text format 0.0.4.
#[utoipa::path(get, path = "/metrics", tag = "repository",
    summary = "Prometheus metrics, text format 0.0.4 (reader, or public with --metrics-public).",
    responses((status = 200, description = "Metrics.", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(st): St, headers: HeaderMap) -> ApiResult {
    if !st.metrics_public {
        st.authorize(&headers, None, Role::Reader)?;
    }
    let s = st
        .read(|repo| Ok(crate::ops::status::status(repo)?))
        .await?;
    let text = super::metrics::prometheus(s, jiff::Timestamp::now());
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(super::metrics::CONTENT_TYPE),
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
