//! `cairn serve`: an HTTP API over one open repository, with bearer-token
//! access control, Prometheus metrics and a server-rendered status page.
//!
//! Invariants:
//! - The repository is opened once, by the caller, and shared. Engine
//!   calls block, so they run on tokio's blocking pool.
//! - Changing operations (snapshot, restore, forget) run one at a time
//!   under [`AppState::write`], with the repository's audit actor set to
//!   `token:NAME` of the caller just before, so every audit event they
//!   record names who asked. No route changes or deletes audit events.
//! - Every input is checked before anything is changed: a request refused
//!   with a 4xx leaves the repository and its audit log as they were.
//! - Every 4xx and 5xx of the API is a JSON body `{"error", "status"}`;
//!   a token's secret never appears in a response or a message.
//! - The token file is read on each request, so `cairn token remove`
//!   revokes a token (and the browser sessions opened with it) at once.

mod api;
mod openapi;
mod page;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{Error, Result};
use crate::profile::Profile;
use crate::repo::{Repository, lock};
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
    last_verify: Mutex<Option<serde_json::Value>>,
    /// Browser sessions: random session id → hash of the token that
    /// opened it. The token itself is never kept.
    sessions: Mutex<HashMap<String, String>>,
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

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            // "no snapshot matches" / "has no snapshots yet" are unknown
            // ids; "matches several" is an input too short to decide.
            Error::SnapshotRef(m) if m.contains("several") => StatusCode::BAD_REQUEST,
            Error::SnapshotRef(_) => StatusCode::NOT_FOUND,
            Error::Locked { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.message,
            "status": self.status.as_u16(),
        });
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

/// At most this many browser sessions are kept; past it the oldest are
/// not tracked, so all are dropped and browsers log in again. Bounds the
/// memory an attacker holding a token could make the server use.
const MAX_SESSIONS: usize = 10_000;

impl AppState {
    fn tokens(&self) -> std::result::Result<Tokens, ApiError> {
        Tokens::load(&self.tokens_path).map_err(|e| ApiError::internal(e.to_string()))
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
            let hash = lock(&self.sessions).get(&session).cloned();
            hash.and_then(|h| tokens.by_hash(&h).cloned())
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
        crate::random_bytes(&mut raw)?;
        let id = hex::encode(raw);
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= MAX_SESSIONS {
            sessions.clear();
        }
        sessions.insert(id.clone(), entry.hash.clone());
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
            repo.set_actor(actor);
            repo.refresh_index()?;
            let done = f(repo);
            for e in repo.take_audit_errors() {
                eprintln!("cairn serve: warning: {e}");
            }
            done
        })
        .await
    }
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

/// The server's router.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    routes(Router::new())
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::no_method)
        .with_state(state)
}

/// Serves the API for `repo` until interrupted (SIGINT or SIGTERM),
/// calling `ready` with the bound address once it listens.
///
/// # Errors
/// [`Error::Invalid`] when two profiles name the same application, when
/// the address cannot be bound (naming it), or when the server fails.
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
        .map_err(|e| Error::invalid(format!("cannot start the server's runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| {
                Error::invalid(format!(
                    "cannot listen on {}: {e}; choose another --listen address or port",
                    opts.listen
                ))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::invalid(format!("cannot read the bound address: {e}")))?;
        ready(addr);
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|e| Error::invalid(format!("the server failed: {e}")))
    })
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
            Arc::new(crate::MemoryBackend::new()),
            Some(b"pw"),
            &crate::InitOptions::default(),
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
    fn engine_errors_map_to_statuses() {
        let s = |e: Error| ApiError::from(e).status.as_u16();
        assert_eq!(s(Error::invalid("x")), 400);
        assert_eq!(
            s(Error::SnapshotRef("no snapshot matches 'ab'".into())),
            404
        );
        assert_eq!(
            s(Error::SnapshotRef("'a' matches several snapshots".into())),
            400
        );
        assert_eq!(s(Error::corrupt("pack", "bad")), 500);
        assert!(api::check_ref("latest").is_ok() && api::check_ref("0aF9").is_ok());
        for bad in ["", "xyz", "../etc", &"a".repeat(65)] {
            assert!(api::check_ref(bad).is_err(), "{bad}");
        }
    }
}
