//! `cairn serve`: an HTTP API over one open repository, with bearer-token
//! access control, Prometheus metrics (`metrics.rs`) and a server-rendered
//! status page.
//!
//! Invariants:
//! - The repository is opened once, by the caller, and shared. Engine
//!   calls block, so they run on tokio's blocking pool.
//! - Changing operations (snapshot, restore, forget) run one at a time
//!   under `AppState::write`, with the repository's audit actor set to
//!   `token:NAME` of the caller for that operation alone
//!   (`Repository::acting_as`), so every audit event they record names who
//!   asked. No route changes or deletes audit events.
//! - Every input is checked before anything is changed: a request refused
//!   with a 4xx leaves the repository and its audit log as they were.
//! - Every 4xx and 5xx of the API is a JSON body `{"error", "status"}`;
//!   a token's secret never appears in a response or a message.
//! - The token file is read on each request, so `cairn token remove`
//!   revokes a token (and the browser sessions opened with it) at once.
//!   A tokens file that cannot be read or parsed while serving gives 503;
//!   its path and the reason go to the server's log, never to a client.
//! - A browser session (cookie) is forgotten after [`SESSION_IDLE`]
//!   unused or [`SESSION_LIFETIME`] after login. A write it authenticates
//!   must come from the server's own origin (`Origin` / `Sec-Fetch-Site`)
//!   and carry the session's CSRF token (`X-CSRF-Token`, or the `csrf`
//!   field of the page's forms); a bearer token needs neither.
//! - Every write under `/api/` with a body must say `Content-Type:
//!   application/json` (415 otherwise), so that no HTML form or
//!   "simple" cross-site request can reach a JSON route.
//! - Slow clients cannot hold the server: request headers must arrive
//!   within [`HEADER_READ_TIMEOUT`], each part of a body within
//!   [`BODY_READ_TIMEOUT`] of the last, and at most
//!   [`max_connections`] connections are served at once (more wait in
//!   the listen queue until one ends).

mod api;
mod metrics;
mod openapi;
mod page;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::apps::profile::Profile;
use crate::error::{Error, ErrorKind, Result};
use crate::repo::Repository;
use crate::sync::lock;
pub use metrics::prometheus;
pub use tokens::{Role, TOKEN_PREFIX, TokenEntry, Tokens, hash_token};

/// How `cairn serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The tokens file.
    pub tokens: PathBuf,
    /// The application profiles whose snapshots and restores the API
    /// offers, by application name.
    pub profiles: Vec<Profile>,
    /// Serve `/metrics` without a token.
    pub metrics_public: bool,
    /// Cache directory for snapshots taken through the API.
    pub cache_dir: Option<PathBuf>,
    /// Directories `POST /api/restore` may restore into with a `target`,
    /// besides putting a component back in place (no target).
    pub restore_targets: Vec<PathBuf>,
}

/// A caller who presented a valid token.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    name: String,
    role: Role,
}

/// The server's shared state.
pub(crate) struct AppState {
    repo: Arc<Repository>,
    tokens_path: PathBuf,
    profiles: BTreeMap<String, Profile>,
    metrics_public: bool,
    cache_dir: Option<PathBuf>,
    /// `ServeOptions::restore_targets`.
    restore_targets: Vec<PathBuf>,
    /// Held by each changing operation for its whole run: they are
    /// serialized, so the audit actor set for one is not replaced by
    /// another's before it records its event. The guard moves into the
    /// blocking task, so a client that disconnects midway does not
    /// release it while the operation still runs.
    write: Arc<tokio::sync::Mutex<()>>,
    /// The last verify run through the API, as returned then.
    last_verify: Mutex<Option<api::VerifyRun>>,
    /// Browser sessions by their random id. The token itself is never
    /// kept.
    sessions: Mutex<HashMap<String, Session>>,
}

/// A browser session, opened by logging in with a token.
#[derive(Debug, Clone)]
struct Session {
    /// The hash of the token that opened it: removing the token ends it.
    token_hash: String,
    /// The session's CSRF token, which a write it authenticates must
    /// carry. Random, so another site cannot know it.
    csrf: String,
    /// When it was opened.
    created: Instant,
    /// When it was last used.
    used: Instant,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) < SESSION_LIFETIME
            && now.saturating_duration_since(self.used) < SESSION_IDLE
    }
}

/// An error answer: JSON `{"error": message, "status": code}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

/// The HTTP status of each kind of engine failure: the one table of them.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        // An id prefix too short to decide is a request to fix, like any
        // other bad input.
        ErrorKind::InvalidInput | ErrorKind::Ambiguous => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        // Another process holds what the request needs: a repository
        // lock, or a database an application has open.
        ErrorKind::Locked | ErrorKind::LockLost | ErrorKind::Busy => StatusCode::CONFLICT,
        // The server opened its repository at start: a password or a
        // missing repository now is the server's own failure, as is
        // damage, storage, local I/O, a database, a stream or an alert.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self::new(status_of(e.kind()), e.to_string())
    }
}

/// Every error the API answers: the message, naming the input or object
/// and what to do, and the HTTP status again.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    error: String,
    /// The HTTP status.
    status: u16,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            status: self.status.as_u16(),
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cairn\""),
            );
        }
        r
    }
}

/// The name of the browser session cookie.
const SESSION_COOKIE: &str = "cairn_session";

/// A browser session unused this long is forgotten: log in again.
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);

/// A browser session is forgotten this long after login, used or not.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// The header carrying a session's CSRF token on writes.
const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");

/// A client must send a request's headers within this time of opening
/// the connection or of the previous response; else it is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A client must send each part of a request body within this time of
/// the previous one; else the request fails and the connection closes.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections are served at once: half the open-file limit
/// (the repository needs files too), between 16 and 1024. Connections
/// past it wait in the listen queue until a served one ends.
#[must_use]
pub fn max_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    usize::try_from(soft / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, 1024)
}

/// At most this many browser sessions are kept; past it the oldest are
/// not tracked, so all are dropped and browsers log in again. Bounds the
/// memory an attacker holding a token could make the server use.
const MAX_SESSIONS: usize = 10_000;

impl AppState {
    /// The tokens file. When it cannot be read, the reason (naming the
    /// file) goes to the server's log and the client gets a 503 that
    /// names nothing on the server.
    fn tokens(&self) -> std::result::Result<Tokens, ApiError> {
        Tokens::load(&self.tokens_path).map_err(|e| {
            eprintln!("cairn serve: error: {e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server cannot read its tokens file, so no request can be authorized; the server's log says why",
            )
        })
    }

    /// The live session `id`, marked used at `now`; an expired one is
    /// forgotten.
    fn session_at(&self, id: &str, now: Instant) -> Option<Session> {
        let mut sessions = lock(&self.sessions);
        let s = sessions.get_mut(id)?;
        if s.live(now) {
            s.used = now;
            Some(s.clone())
        } else {
            sessions.remove(id);
            None
        }
    }

    /// The CSRF token of the live session `id`, for the status page.
    pub(crate) fn session_csrf(&self, id: &str) -> Option<String> {
        self.session_at(id, Instant::now()).map(|s| s.csrf)
    }

    /// Checks that a write authenticated by the session cookie in
    /// `headers` is no cross-site request forgery: it comes from this
    /// server's own origin and carries the session's CSRF token
    /// (`presented`: the form field, else the `X-CSRF-Token` header). A
    /// request without a live session passes: it is authorized (or
    /// refused) by its token as any other.
    ///
    /// # Errors
    /// 403 when it comes from another origin or lacks the token.
    pub(crate) fn check_csrf(
        &self,
        headers: &HeaderMap,
        presented: Option<&str>,
    ) -> std::result::Result<(), ApiError> {
        if headers.contains_key(header::AUTHORIZATION) {
            return Ok(());
        }
        let Some(session) = session_id(headers).and_then(|id| self.session_at(&id, Instant::now()))
        else {
            return Ok(());
        };
        same_origin(headers, false)?;
        let presented =
            presented.or_else(|| headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()));
        match presented {
            Some(p) if bool::from(p.as_bytes().ct_eq(session.csrf.as_bytes())) => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "a change authorized by the browser session needs the session's CSRF token in the X-CSRF-Token header (the status page has it); scripts should send 'Authorization: Bearer TOKEN' instead",
            )),
        }
    }

    /// The caller of a request: a bearer token, else the browser session
    /// cookie, else (`query_token`, status page only) a `?token=`.
    ///
    /// # Errors
    /// 401 when there is none or it is not valid, 403 when its role is
    /// below `min`.
    pub(crate) fn authorize(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        min: Role,
    ) -> std::result::Result<Caller, ApiError> {
        let tokens = self.tokens()?;
        let entry = if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let presented = auth
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim());
            let Some(presented) = presented else {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "the Authorization header must be 'Bearer TOKEN'",
                ));
            };
            tokens.check(presented).cloned()
        } else if let Some(session) = session_id(headers) {
            self.session_at(&session, Instant::now())
                .and_then(|s| tokens.by_hash(&s.token_hash).cloned())
        } else if let Some(t) = query_token {
            tokens.check(t).cloned()
        } else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no token: send 'Authorization: Bearer TOKEN' (create one with `cairn token add NAME --role reader`)",
            ));
        };
        let Some(entry) = entry else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the token is not valid (unknown or removed); create one with `cairn token add`",
            ));
        };
        if entry.role < min {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "token '{}' has role {}; this needs {} or higher",
                    entry.name, entry.role, min
                ),
            ));
        }
        Ok(Caller {
            name: entry.name,
            role: entry.role,
        })
    }

    /// Opens a browser session for the token `presented` and returns its
    /// id, or `None` when the token is not valid.
    pub(crate) fn open_session(
        &self,
        presented: &str,
    ) -> std::result::Result<Option<String>, ApiError> {
        let tokens = self.tokens()?;
        let Some(entry) = tokens.check(presented) else {
            return Ok(None);
        };
        let mut raw = [0u8; 32];
        crate::format::crypto::random(&mut raw)?;
        let id = hex::encode(raw);
        crate::format::crypto::random(&mut raw)?;
        let csrf = hex::encode(raw);
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.live(now));
        }
        if sessions.len() >= MAX_SESSIONS {
            sessions.clear();
        }
        sessions.insert(
            id.clone(),
            Session {
                token_hash: entry.hash.clone(),
                csrf,
                created: now,
                used: now,
            },
        );
        Ok(Some(id))
    }

    pub(crate) fn close_session(&self, headers: &HeaderMap) {
        if let Some(s) = session_id(headers) {
            lock(&self.sessions).remove(&s);
        }
    }

    /// Runs `f` on the blocking pool.
    pub(crate) async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Repository) -> std::result::Result<T, ApiError> + Send + 'static,
    ) -> std::result::Result<T, ApiError> {
        let st = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&st.repo))
            .await
            .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
    }

    /// Runs the changing operation `f` for `caller`: alone (after any
    /// other changing operation), with the index refreshed (a command-line
    /// backup may have run meanwhile) and the audit actor naming the
    /// caller. Audit events that could not be written are logged.
    pub(crate) async fn change<T: Send + 'static>(
        self: &Arc<Self>,
        caller: &Caller,
        f: impl FnOnce(&Repository) -> std::result::Result<T, ApiError> + Send + 'static,
    ) -> std::result::Result<T, ApiError> {
        let one_at_a_time = Arc::clone(&self.write).lock_owned().await;
        let actor = format!("token:{}", caller.name);
        self.read(move |repo| {
            let _held = one_at_a_time;
            repo.acting_as(actor, || {
                repo.refresh_index()?;
                let done = f(repo);
                for e in repo.take_audit_errors() {
                    eprintln!("cairn serve: warning: {e}");
                }
                done
            })
        })
        .await
    }
}

/// Checks that a request comes from this server's own origin, as far as
/// the browser says: `Sec-Fetch-Site`, when sent, must be `same-origin`
/// (or `none`, a navigation the user started, when `user_started` is
/// allowed), and `Origin`, when sent, must name the host and port the
/// request was sent to (its `Host`; the scheme is not compared, so that a
/// TLS proxy in front changes nothing). Another port on the same host is
/// another origin. Clients that are not browsers send neither and pass.
///
/// # Errors
/// 403 naming the origin that was refused.
pub(crate) fn same_origin(
    headers: &HeaderMap,
    user_started: bool,
) -> std::result::Result<(), ApiError> {
    let refuse = |what: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "cross-site request refused ({what}): a change through the browser session must come from this server's own pages"
            ),
        )
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        let ok = site == "same-origin" || (user_started && site == "none");
        if !ok {
            return Err(refuse(&format!(
                "Sec-Fetch-Site: {}",
                site.to_str().unwrap_or("?")
            )));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("?");
        let authority = text
            .parse::<Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.as_str().to_ascii_lowercase()));
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        if authority.is_none() || authority != host {
            let shown: String = text.chars().take(100).collect();
            return Err(refuse(&format!("Origin: {shown}")));
        }
    }
    Ok(())
}

/// Whether a request has a body (or may have one: a chunked one).
fn has_body(req: &Request) -> bool {
    http_body::Body::size_hint(req.body()).exact() != Some(0)
}

/// The guard in front of every route: a write under `/api/` authorized
/// by the browser session must pass [`AppState::check_csrf`] (403, and
/// logged without secrets), and one with a body must be JSON (415).
async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if write && req.uri().path().starts_with("/api/") {
        // The forgery check first: a cross-site request is refused as
        // such (and logged), whatever its body.
        if let Err(e) = st.check_csrf(req.headers(), None) {
            eprintln!(
                "cairn serve: refused {} {}: {}",
                req.method(),
                req.uri().path(),
                e.message
            );
            return e.into_response();
        }
        if has_body(&req) {
            let json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
            if !json {
                return ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "the request body must be JSON sent with 'Content-Type: application/json'",
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// Headers on every answer: no framing (clickjacking), no type sniffing,
/// no caching of private pages and data, no referrer, and a content
/// security policy that lets the pages load nothing from elsewhere.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

/// The session id in the request's cookies.
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Declares the routes once, producing both the router and [`ROUTES`], so
/// that the list the OpenAPI test checks is the router's own.
macro_rules! routes {
    ($($path:literal => $m0:ident($h0:path) $(. $m:ident($h:path))*;)*) => {
        /// Every route of the server: its path (axum syntax) and methods,
        /// lowercase. The OpenAPI document describes each.
        pub const ROUTES: &[(&str, &[&str])] = &[$(($path, &[stringify!($m0) $(, stringify!($m))*])),*];

        fn routes(r: Router<Arc<AppState>>) -> Router<Arc<AppState>> {
            r$(.route($path, axum::routing::$m0($h0)$(.$m($h))*))*
        }
    };
}

routes! {
    "/api/openapi.json" => get(openapi::document);
    "/api/snapshots" => get(api::list_snapshots).post(api::create_snapshot);
    "/api/snapshots/{id}" => get(api::show_snapshot).delete(api::delete_snapshot);
    "/api/restore" => post(api::restore);
    "/api/verify" => get(api::last_verify).post(api::run_verify);
    "/api/prune" => post(api::run_prune);
    "/api/stats" => get(api::stats);
    "/api/status" => get(api::status);
    "/api/log" => get(api::log);
    "/metrics" => get(api::metrics);
    "/" => get(page::index);
    "/login" => get(page::login_form).post(page::login);
    "/logout" => post(page::logout);
    "/browse/{id}" => get(page::browse_root);
    "/browse/{id}/{*path}" => get(page::browse);
    "/download/{id}/{*path}" => get(page::download);
}

/// The server's router, with the guard, the security headers and the
/// body read timeout around every route.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    routes(Router::new())
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::no_method)
        // Innermost, so that the guard sees the body's own size hint.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            BODY_READ_TIMEOUT,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            guard,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Serves the API for `repo` until interrupted (SIGINT or SIGTERM),
/// calling `ready` with the bound address once it listens.
///
/// # Errors
/// [`Error::Invalid`] when two profiles name the same application;
/// [`Error::Listen`] when the address cannot be bound; [`Error::Internal`]
/// when the server's runtime fails.
pub fn serve(repo: Repository, opts: ServeOptions, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let mut profiles = BTreeMap::new();
    for p in opts.profiles {
        if let Some(old) = profiles.insert(p.name.clone(), p.clone()) {
            return Err(Error::invalid(format!(
                "the profiles {} and {} both name the application '{}': give each once",
                old.file.display(),
                p.file.display(),
                p.name
            )));
        }
    }
    let state = Arc::new(AppState {
        repo: Arc::new(repo),
        tokens_path: opts.tokens,
        profiles,
        metrics_public: opts.metrics_public,
        cache_dir: opts.cache_dir,
        restore_targets: opts.restore_targets,
        write: Arc::new(tokio::sync::Mutex::new(())),
        last_verify: Mutex::new(None),
        sessions: Mutex::new(HashMap::new()),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the server's runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| Error::Listen {
                address: opts.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("cannot read the bound address: {e}")))?;
        ready(addr);
        accept_loop(listener, router(state), max_connections()).await;
        Ok(())
    })
}

/// Serves connections from `listener` until SIGINT or SIGTERM: at most
/// `limit` at once, each with [`HEADER_READ_TIMEOUT`], then waits for
/// the requests being answered (up to a minute) before returning.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router, limit: usize) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(limit));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(shutdown());
    loop {
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => match s {
                Ok(s) => s,
                // Never closed; if it were, stop serving.
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for
                    // some to be closed rather than spin.
                    eprintln!("cairn serve: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A failed connection (a timeout, a client gone) concerns
            // only that client.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(60), graceful.shutdown()).await;
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C stops the server.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(dir: &std::path::Path) -> AppState {
        let repo = Repository::init(
            Arc::new(crate::storage::MemoryBackend::new()),
            Some(b"pw"),
            &crate::repo::InitOptions::default(),
        )
        .expect("repo");
        AppState {
            repo: Arc::new(repo),
            tokens_path: dir.join("tokens.json"),
            profiles: BTreeMap::new(),
            metrics_public: false,
            cache_dir: None,
            restore_targets: Vec::new(),
            write: Arc::new(tokio::sync::Mutex::new(())),
            last_verify: Mutex::new(None),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).expect("header"));
        h
    }

    #[test]
    fn authorize_checks_token_scheme_role_and_session() {
        let dir = tempfile::tempdir().expect("tmp");
        let st = state(dir.path());
        let mut t = Tokens::default();
        let reader = t.add("r", Role::Reader).expect("add");
        t.save(&st.tokens_path).expect("save");
        let code = |r: std::result::Result<Caller, ApiError>| r.err().map(|e| e.status.as_u16());
        assert_eq!(
            code(st.authorize(&HeaderMap::new(), None, Role::Reader)),
            Some(401)
        );
        let basic = with(header::AUTHORIZATION, "Basic dXNlcjpwdw==");
        assert_eq!(code(st.authorize(&basic, None, Role::Reader)), Some(401));
        let bearer = with(header::AUTHORIZATION, &format!("bearer {reader}"));
        assert_eq!(code(st.authorize(&bearer, None, Role::Reader)), None);
        assert_eq!(code(st.authorize(&bearer, None, Role::Operator)), Some(403));
        // ?token= only where the caller passes it (the status page).
        assert_eq!(
            code(st.authorize(&HeaderMap::new(), Some(&reader), Role::Reader)),
            None
        );
        let session = st.open_session(&reader).expect("session").expect("valid");
        assert!(st.open_session("cairn_nope").expect("session").is_none());
        let cookie = with(header::COOKIE, &format!("a=b; {SESSION_COOKIE}={session}"));
        let caller = st
            .authorize(&cookie, None, Role::Reader)
            .expect("by session");
        assert_eq!((caller.name.as_str(), caller.role), ("r", Role::Reader));
        // Removing the token ends its sessions too.
        t.remove("r").expect("remove");
        t.save(&st.tokens_path).expect("save");
        assert_eq!(code(st.authorize(&cookie, None, Role::Reader)), Some(401));
        st.close_session(&cookie);
        assert!(lock(&st.sessions).is_empty());
    }

    #[test]
    fn sessions_end_when_idle_and_at_their_lifetime() {
        let dir = tempfile::tempdir().expect("tmp");
        let st = state(dir.path());
        let mut t = Tokens::default();
        let reader = t.add("r", Role::Reader).expect("add");
        t.save(&st.tokens_path).expect("save");
        let start = Instant::now();
        let kept = st.open_session(&reader).expect("session").expect("valid");
        let minute = Duration::from_secs(60);
        // Used every 20 minutes, it lasts until its lifetime is over.
        let mut now = start;
        while now + 21 * minute < start + SESSION_LIFETIME {
            now += 20 * minute;
            assert!(st.session_at(&kept, now).is_some(), "{:?}", now - start);
        }
        assert!(
            st.session_at(&kept, start + SESSION_LIFETIME + minute)
                .is_none()
        );
        assert!(!lock(&st.sessions).contains_key(&kept), "kept after expiry");
        // Unused, it ends after SESSION_IDLE.
        let idle = st.open_session(&reader).expect("session").expect("valid");
        let later = Instant::now() + SESSION_IDLE + minute;
        assert!(st.session_at(&idle, later).is_none());
        assert!(
            st.session_csrf(&idle).is_none(),
            "the expired session was kept"
        );
        // Two sessions have different CSRF tokens.
        let a = st.open_session(&reader).expect("session").expect("valid");
        let b = st.open_session(&reader).expect("session").expect("valid");
        let (ca, cb) = (st.session_csrf(&a), st.session_csrf(&b));
        assert!(ca.is_some() && cb.is_some() && ca != cb);
    }

    #[test]
    fn same_origin_compares_host_and_port() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                );
            }
            m
        };
        let host = ("host", "127.0.0.1:8080");
        let ok = |m: &HeaderMap, user: bool| same_origin(m, user).is_ok();
        assert!(ok(&h(&[host]), false), "not a browser");
        assert!(ok(&h(&[host, ("origin", "http://127.0.0.1:8080")]), false));
        assert!(ok(&h(&[host, ("origin", "https://127.0.0.1:8080")]), false));
        assert!(!ok(&h(&[host, ("origin", "http://127.0.0.1:8081")]), false));
        assert!(!ok(&h(&[host, ("origin", "http://localhost:8080")]), false));
        assert!(!ok(&h(&[host, ("origin", "null")]), false));
        assert!(!ok(&h(&[("origin", "http://127.0.0.1:8080")]), false));
        assert!(ok(&h(&[host, ("sec-fetch-site", "same-origin")]), false));
        assert!(!ok(&h(&[host, ("sec-fetch-site", "same-site")]), false));
        assert!(!ok(&h(&[host, ("sec-fetch-site", "cross-site")]), false));
        assert!(!ok(&h(&[host, ("sec-fetch-site", "none")]), false));
        assert!(ok(&h(&[host, ("sec-fetch-site", "none")]), true));
    }

    #[test]
    fn a_damaged_tokens_file_is_a_503_that_names_no_path() {
        let dir = tempfile::tempdir().expect("tmp");
        let st = state(dir.path());
        std::fs::write(&st.tokens_path, "not json").expect("write");
        let e = st
            .authorize(&HeaderMap::new(), None, Role::Reader)
            .expect_err("refused");
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.message.contains("tokens.json"), "{}", e.message);
        assert!(!e.message.contains(&dir.path().display().to_string()));
    }

    #[test]
    fn engine_errors_map_to_statuses() {
        let s = |e: Error| ApiError::from(e).status.as_u16();
        assert_eq!(s(Error::invalid("x")), 400);
        assert_eq!(s(Error::NotFound("no snapshot matches 'ab'".into())), 404);
        assert_eq!(
            s(Error::Ambiguous("'a' matches several snapshots".into())),
            400
        );
        assert_eq!(s(Error::corrupt("pack", "bad")), 500);
        let locked = Error::Locked {
            operation: "backup".into(),
            holders: "an exclusive lock of prune".into(),
        };
        assert_eq!(s(locked), 409);
        assert_eq!(s(Error::LockLost { age_secs: 900 }), 409);
        let in_use = Error::InUse {
            path: "/srv/app.db".into(),
            users: "process 4242 (node)".into(),
        };
        assert_eq!(s(in_use), 409);
        assert_eq!(
            s(Error::Busy("the application kept the write lock".into())),
            409
        );
        assert_eq!(s(Error::internal("a pack writer thread panicked")), 500);
        let not_a_file = Error::NotAFile {
            path: "/srv".into(),
            entry: "dir",
        };
        assert_eq!(s(not_a_file), 400);
        assert!(api::check_ref("latest").is_ok() && api::check_ref("0aF9").is_ok());
        for bad in ["", "xyz", "../etc", &"a".repeat(65)] {
            assert!(api::check_ref(bad).is_err(), "{bad}");
        }
    }
}
