//! The status page, login, snapshot browsing and file download: plain
//! server-rendered HTML with inline CSS and an inline SVG chart, so it
//! works with no network beyond the server itself.
//!
//! Every text that comes from the repository (names, paths, tags, audit
//! details) goes through `html_escape` before it is written into the page;
//! path segments in links are percent-encoded first.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
use serde::Deserialize;

use super::{ApiError, AppState, Caller, Role, SESSION_COOKIE};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::SnapshotId;

type St = State<Arc<AppState>>;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.3em 0}td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}\
th{background:#f4f4f4}.num{text-align:right}.ok{color:#176b2c}.bad{color:#b00020;font-weight:bold}\
.muted{color:#777}code{font-size:.95em}header form{display:inline}svg{background:#fafafa;border:1px solid #ddd}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n",
        text(title)
    )
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        page(title, body),
    )
        .into_response()
}

/// Bytes for people.
fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[expect(clippy::cast_precision_loss, reason = "a size for display")]
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let u = UNITS.get(unit).copied().unwrap_or("B");
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {u}")
    }
}

fn when(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Percent-encodes one path segment for a URL (everything but RFC 3986's
/// unreserved characters).
fn url_segment(raw: &[u8]) -> String {
    let mut out = String::new();
    for &b in raw {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn url_path(path: &[u8]) -> String {
    path.split(|&b| b == b'/')
        .filter(|s| !s.is_empty())
        .map(url_segment)
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

/// The session cookie: HttpOnly, SameSite=Strict, and gone from the
/// browser when the server forgets the session at the latest.
fn session_cookie(id: &str) -> String {
    format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        super::SESSION_LIFETIME.as_secs()
    )
}

/// The page's caller: session cookie, else a `?token=` (which then opens
/// a session, so the links on the page work without it); with the new
/// cookie to set, if any, and the session's CSRF token, for the page's
/// forms. `Err` is the answer to give instead: to the login form when
/// not logged in.
fn page_caller(
    st: &AppState,
    headers: &HeaderMap,
    token: Option<&str>,
) -> Result<(Caller, Option<String>, Option<String>), Box<Response>> {
    match st.authorize(headers, token, Role::Reader) {
        Ok(c) => {
            let live = super::session_id(headers).filter(|s| st.session_csrf(s).is_some());
            let (session, cookie) = match (token, live) {
                (_, Some(s)) => (Some(s), None),
                (Some(t), None) => {
                    let opened = st.open_session(t).ok().flatten();
                    let cookie = opened.as_deref().map(session_cookie);
                    (opened, cookie)
                }
                (None, None) => (None, None),
            };
            let csrf = session.and_then(|s| st.session_csrf(&s));
            Ok((c, cookie, csrf))
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            Err(Box::new(Redirect::to("/login").into_response()))
        }
        Err(e) => Err(Box::new(e.into_response())),
    }
}

fn with_cookie(mut r: Response, cookie: Option<String>) -> Response {
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

fn login_body(message: Option<&str>) -> String {
    let msg = message.map_or_else(String::new, |m| format!("<p class=\"bad\">{}</p>", text(m)));
    format!(
        "<h1>cairn</h1>{msg}<form method=\"post\" action=\"/login\"><label>Token <input type=\"password\" name=\"token\" size=\"70\" autocomplete=\"off\"></label> <button>Log in</button></form>\
<p class=\"muted\">Create a token with <code>cairn token add NAME --role reader</code>.</p>"
    )
}

/// `GET /login`.
#[utoipa::path(get, path = "/login", tag = "status page", security(),
    summary = "The login form (HTML).",
    responses((status = 200, description = "HTML.", content_type = "text/html")))]
pub(crate) async fn login_form() -> Response {
    html(StatusCode::OK, "cairn: log in", &login_body(None))
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

/// `POST /login`: a valid token opens a session (HttpOnly, SameSite=Strict
/// cookie holding a random id; the server maps it to the token's hash).
/// Refused from another origin, so that no other site can log a browser
/// in with a token of its choosing.
#[utoipa::path(post, path = "/login", tag = "status page", security(),
    summary = "Log in with a token (form field `token`); sets an HttpOnly SameSite=Strict session cookie.",
    responses((status = 303, description = "Logged in: to /."), (status = 401, description = "Not a valid token (HTML form again)."), (status = 403, description = "Sent from another origin.")))]
pub(crate) async fn login(
    State(st): St,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Err(e) = super::same_origin(&headers, true) {
        return html(
            StatusCode::FORBIDDEN,
            "cairn: log in",
            &login_body(Some(&e.message)),
        );
    }
    let Ok(axum::Form(form)) = form else {
        return html(
            StatusCode::BAD_REQUEST,
            "cairn: log in",
            &login_body(Some("the form needs a token field")),
        );
    };
    match st.open_session(form.token.trim()) {
        Ok(Some(id)) => with_cookie(Redirect::to("/").into_response(), Some(session_cookie(&id))),
        Ok(None) => html(
            StatusCode::UNAUTHORIZED,
            "cairn: log in",
            &login_body(Some("that token is not valid")),
        ),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogoutForm {
    csrf: Option<String>,
}

/// `POST /logout`: ends the session; like every write the session
/// authorizes, only from the server's own page (its form sends the CSRF
/// token in the `csrf` field).
#[utoipa::path(post, path = "/logout", tag = "status page", security(),
    summary = "End the browser session (form field `csrf`: the session's CSRF token, which the status page's button sends).",
    responses((status = 303, description = "To /login."), (status = 403, description = "From another origin, or without the session's CSRF token.")))]
pub(crate) async fn logout(
    State(st): St,
    headers: HeaderMap,
    form: Result<axum::Form<LogoutForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let presented = form.as_ref().ok().and_then(|f| f.csrf.as_deref());
    if let Err(e) = st.check_csrf(&headers, presented) {
        return html(
            StatusCode::FORBIDDEN,
            "cairn",
            &format!("<p class=\"bad\">{}</p>", text(&e.message)),
        );
    }
    st.close_session(&headers);
    with_cookie(
        Redirect::to("/login").into_response(),
        Some(format!(
            "{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        )),
    )
}

/// The SVG chart: cumulative bytes stored (the repository's growth, a
/// line) and bytes stored per snapshot (bars) over time.
fn chart(snaps: &[(SnapshotId, Snapshot)], repo_bytes: u64) -> String {
    const W: f64 = 860.0;
    const H: f64 = 280.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 20.0;
    // Room above the plot for the legend.
    const TOP: f64 = 48.0;
    const BOTTOM: f64 = 50.0;
    let mut points: Vec<(i64, u64, u64)> = Vec::new();
    let mut total = 0u64;
    for (_, s) in snaps {
        total = total.saturating_add(s.summary.bytes_stored);
        // Milliseconds: snapshots taken in the same second still spread.
        points.push((
            s.timestamp().as_millisecond(),
            total,
            s.summary.bytes_stored,
        ));
    }
    let mut svg = format!(
        "<svg id=\"size-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"Repository size and bytes added over time\">\
<title>Repository size (bytes stored, cumulative) and bytes added per snapshot over time</title>"
    );
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        svg.push_str("<text x=\"20\" y=\"40\">no snapshots yet</text></svg>");
        return svg;
    };
    let (t0, t1) = (first.0, last.0.max(first.0 + 1));
    let ymax = total.max(1);
    #[expect(clippy::cast_precision_loss, reason = "pixel positions")]
    let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (W - LEFT - RIGHT);
    #[expect(clippy::cast_precision_loss, reason = "pixel positions")]
    let y = |v: u64| H - BOTTOM - v as f64 / ymax as f64 * (H - TOP - BOTTOM);
    // Axes, with the ends labelled.
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#333\"/><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"#333\"/>\
<text x=\"{l}\" y=\"{yt}\" text-anchor=\"end\" font-size=\"11\">{ymax_s}</text><text x=\"{l}\" y=\"{b}\" text-anchor=\"end\" font-size=\"11\">0</text>\
<text x=\"{LEFT}\" y=\"{xl}\" font-size=\"11\">{t0_s}</text><text x=\"{r}\" y=\"{xl}\" text-anchor=\"end\" font-size=\"11\">{t1_s}</text>\
<text x=\"{mid}\" y=\"{xt}\" text-anchor=\"middle\" font-size=\"12\">time (UTC)</text>\
<text x=\"14\" y=\"{ymid}\" font-size=\"12\" transform=\"rotate(-90 14 {ymid})\" text-anchor=\"middle\">bytes stored</text>",
        b = H - BOTTOM,
        r = W - RIGHT,
        l = LEFT - 6.0,
        yt = TOP + 4.0,
        xl = H - BOTTOM + 16.0,
        xt = H - 10.0,
        mid = (LEFT + W - RIGHT) / 2.0,
        ymid = (TOP + H - BOTTOM) / 2.0,
        ymax_s = text(&size(ymax)),
        t0_s = text(
            &snaps
                .first()
                .map_or_else(String::new, |(_, s)| when(s.timestamp()))
        ),
        t1_s = text(
            &snaps
                .last()
                .map_or_else(String::new, |(_, s)| when(s.timestamp()))
        ),
    );
    for &(t, _, added) in &points {
        let _ = write!(
            svg,
            "<rect class=\"added\" x=\"{:.1}\" y=\"{:.1}\" width=\"4\" height=\"{:.1}\" fill=\"#f0a030\"><title>{} added</title></rect>",
            x(t) - 2.0,
            y(added),
            (H - BOTTOM) - y(added),
            text(&size(added))
        );
    }
    let line: Vec<String> = points
        .iter()
        .map(|&(t, cum, _)| format!("{:.1},{:.1}", x(t), y(cum)))
        .collect();
    for &(t, cum, _) in &points {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#2060c0\"><title>{}</title></circle>",
            x(t),
            y(cum),
            text(&size(cum))
        );
    }
    let _ = write!(
        svg,
        "<polyline class=\"size\" fill=\"none\" stroke=\"#2060c0\" stroke-width=\"2\" points=\"{}\"/>",
        line.join(" ")
    );
    let _ = write!(
        svg,
        "<rect x=\"{lx}\" y=\"{ly}\" width=\"12\" height=\"3\" fill=\"#2060c0\"/><text x=\"{tx}\" y=\"{ty}\" font-size=\"11\">repository size (bytes stored, cumulative; now {now} on disk)</text>\
<rect x=\"{lx}\" y=\"{y2}\" width=\"12\" height=\"8\" fill=\"#f0a030\"/><text x=\"{tx}\" y=\"{ty2}\" font-size=\"11\">bytes added by each snapshot</text></svg>",
        lx = LEFT + 10.0,
        tx = LEFT + 28.0,
        ly = 12.0,
        ty = 17.0,
        y2 = 24.0,
        ty2 = 32.0,
        now = text(&size(repo_bytes)),
    );
    svg
}

fn git_cell(s: &Snapshot) -> String {
    match s.app.as_ref().and_then(|a| a.git.as_ref()) {
        None => "<span class=\"muted\">no git</span>".to_owned(),
        Some(g) => format!(
            "{} <code>{}</code>{}",
            text(g.branch.as_deref().unwrap_or("(detached)")),
            text(g.commit.get(..10).unwrap_or(&g.commit)),
            if g.dirty {
                " <span class=\"bad\">dirty</span>"
            } else {
                ""
            }
        ),
    }
}

fn snapshot_rows(out: &mut String, list: &[&(SnapshotId, Snapshot)], app: bool) {
    out.push_str("<tr><th>time</th><th>host</th>");
    out.push_str(if app {
        "<th>components</th><th>git</th>"
    } else {
        "<th>paths</th>"
    });
    out.push_str(
        "<th>tags</th><th class=\"num\">size</th><th class=\"num\">added</th><th>id</th></tr>",
    );
    for (id, s) in list.iter().rev() {
        let what = match &s.app {
            Some(a) => {
                let names: Vec<&str> = a.components.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "<td>{}</td><td>{}</td>",
                    text(&names.join(", ")),
                    git_cell(s)
                )
            }
            None => format!("<td>{}</td>", text(&s.display_paths().join(" "))),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td>{what}<td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><a href=\"/browse/{}\"><code>{}</code></a></td></tr>",
            text(&when(s.timestamp())),
            text(&s.hostname),
            text(&s.tags.join(", ")),
            text(&size(s.summary.total_size)),
            text(&size(s.summary.bytes_stored)),
            attr(&id.to_hex()),
            text(&id.short()),
        );
    }
}

/// `GET /`: the status page.
#[utoipa::path(get, path = "/", tag = "status page",
    summary = "The status page (HTML; reader). Accepts ?token= once, then a session cookie.",
    responses((status = 200, description = "HTML.", content_type = "text/html"), (status = 303, description = "Not logged in: to /login.")))]
pub(crate) async fn index(
    State(st): St,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    let (caller, cookie, csrf) = match page_caller(&st, &headers, q.token.as_deref()) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let data = st
        .read(|repo| {
            let status = crate::ops::status::status(repo)?;
            let snaps = repo.snapshots()?;
            let log = crate::repo::audit::read_log(repo, Some(20))?;
            Ok((repo.backend().location(), status, snaps, log))
        })
        .await;
    let (location, status, all, log) = match data {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let snaps: Vec<(SnapshotId, Snapshot)> = all
        .into_iter()
        .filter_map(|(id, s)| s.ok().map(|s| (id, s)))
        .collect();
    let now = jiff::Timestamp::now();
    let mut b = String::new();
    // The session's CSRF token: the page's forms send it, and a script
    // of the page would send it as X-CSRF-Token.
    let csrf = attr(&csrf.unwrap_or_default()).into_owned();
    let _ = write!(
        b,
        "<meta name=\"cairn-csrf\" content=\"{csrf}\"><header><h1>cairn</h1><p>Repository <code>{}</code>: {} snapshots, {} on disk. Logged in as <b>{}</b> ({}). \
<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button>Log out</button></form></p></header>",
        text(&location),
        status.snapshots,
        text(&size(status.repo_bytes)),
        text(&caller.name),
        caller.role,
    );
    for p in &status.problems {
        let _ = write!(b, "<p class=\"bad\">{}</p>", text(p));
    }
    freshness_table(&mut b, &status, now);
    b.push_str("</table><h2>Repository size</h2>");
    b.push_str(&chart(&snaps, status.repo_bytes));
    b.push_str("<h2>Snapshots</h2>");
    snapshot_tables(&mut b, &snaps);
    audit_table(&mut b, &log);
    with_cookie(html(StatusCode::OK, "cairn status", &b), cookie)
}

/// The freshness table: one row per source, with its state.
fn freshness_table(b: &mut String, status: &crate::ops::status::RepoStatus, now: jiff::Timestamp) {
    b.push_str("<h2>Freshness</h2><table id=\"freshness\"><tr><th>application</th><th>component / paths</th><th>host</th><th>newest snapshot (watched: moment stored)</th><th class=\"num\">age</th><th class=\"num\">snapshots</th><th>state</th></tr>");
    for s in &status.sources {
        let state = match &s.failure {
            Some((t, e)) => format!(
                "<span class=\"bad\">failing since {}: {}</span>",
                text(&when(*t)),
                text(e)
            ),
            None if s.watch.as_ref().is_some_and(|w| w.ended.is_some()) => format!(
                "<span class=\"bad\">watch ended: {}</span>",
                text(
                    s.watch
                        .as_ref()
                        .and_then(|w| w.ended.as_deref())
                        .unwrap_or_default()
                )
            ),
            None if s.watch.is_some() => "<span class=\"ok\">ok, watched</span>".to_owned(),
            None if s.last.is_some() => "<span class=\"ok\">ok</span>".to_owned(),
            None => "<span class=\"bad\">no snapshot</span>".to_owned(),
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{state}</td></tr>",
            text(if s.source.app.is_empty() {
                "(plain backup)"
            } else {
                &s.source.app
            }),
            text(&s.source.component),
            text(&s.source.host),
            text(&s.newest().map_or_else(|| "-".to_owned(), when)),
            text(&s.age_secs(now).map_or_else(|| "-".to_owned(), age)),
            s.snapshots,
        );
    }
}

/// A table of snapshots per application, then one of plain backups.
fn snapshot_tables(b: &mut String, snaps: &[(SnapshotId, Snapshot)]) {
    let mut apps: Vec<&str> = snaps
        .iter()
        .filter_map(|(_, s)| s.app.as_ref().map(|a| a.name.as_str()))
        .collect();
    apps.sort_unstable();
    apps.dedup();
    for app in apps {
        let list: Vec<&(SnapshotId, Snapshot)> = snaps
            .iter()
            .filter(|(_, s)| s.app.as_ref().is_some_and(|a| a.name == app))
            .collect();
        let _ = write!(
            b,
            "<h3>Application {}</h3><table class=\"snapshots\" data-app=\"{}\">",
            text(app),
            attr(app)
        );
        snapshot_rows(b, &list, true);
        b.push_str("</table>");
    }
    let plain: Vec<&(SnapshotId, Snapshot)> =
        snaps.iter().filter(|(_, s)| s.app.is_none()).collect();
    if !plain.is_empty() {
        b.push_str("<h3>Plain backups</h3><table class=\"snapshots\" data-app=\"\">");
        snapshot_rows(b, &plain, false);
        b.push_str("</table>");
    }
    if snaps.is_empty() {
        b.push_str("<p class=\"muted\">No snapshots yet.</p>");
    }
}

/// The newest audit events, newest first, and the log's problems.
fn audit_table(b: &mut String, log: &crate::repo::audit::AuditLog) {
    b.push_str("<h2>Recent audit log</h2><table id=\"audit\"><tr><th>time</th><th>who</th><th>action</th><th>result</th><th>target</th><th>detail</th></tr>");
    for (_, e) in log.events.iter().rev() {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&when(e.timestamp())),
            text(&e.actor),
            text(&e.action),
            if e.ok {
                "<span class=\"ok\">ok</span>"
            } else {
                "<span class=\"bad\">FAILED</span>"
            },
            text(&e.target),
            text(&e.detail),
        );
    }
    b.push_str("</table>");
    for p in &log.problems {
        let _ = write!(b, "<p class=\"bad\">{}</p>", text(p));
    }
}

/// `GET /browse/{id}`.
#[utoipa::path(get, path = "/browse/{id}", tag = "status page",
    summary = "A snapshot's root directory (HTML; reader).",
    params(("id" = String, Path, description = "A snapshot id, a unique prefix of one (hex), or `latest`.")),
    responses((status = 200, description = "HTML.", content_type = "text/html"), (status = 303, description = "Not logged in."), (status = 404, description = "No such snapshot.")))]
pub(crate) async fn browse_root(
    st: St,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    q: Query<TokenQuery>,
) -> Response {
    match super::api::path(id) {
        Ok(id) => browse_at(st, headers, id, String::new(), q).await,
        Err(e) => e.into_response(),
    }
}

/// `GET /browse/{id}/{*path}`.
#[utoipa::path(get, path = "/browse/{id}/{path}", tag = "status page",
    summary = "A directory of a snapshot (HTML; reader).",
    params(("id" = String, Path, description = "A snapshot id, a unique prefix of one (hex), or `latest`."),
           ("path" = String, Path, description = "A path inside the snapshot, `/`-separated.")),
    responses((status = 200, description = "HTML.", content_type = "text/html"), (status = 303, description = "Not logged in."), (status = 404, description = "No such snapshot or path.")))]
pub(crate) async fn browse(
    st: St,
    headers: HeaderMap,
    params: Result<Path<(String, String)>, PathRejection>,
    q: Query<TokenQuery>,
) -> Response {
    match super::api::path(params) {
        Ok((id, path)) => browse_at(st, headers, id, path, q).await,
        Err(e) => e.into_response(),
    }
}

async fn browse_at(
    State(st): St,
    headers: HeaderMap,
    id: String,
    path: String,
    Query(q): Query<TokenQuery>,
) -> Response {
    let (_, cookie, _) = match page_caller(&st, &headers, q.token.as_deref()) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if let Err(e) = super::api::check_ref(&id) {
        return e.into_response();
    }
    let lookup = path.clone();
    let found = st
        .read(move |repo| {
            let (id, snap) = repo.find_snapshot(&id)?;
            let tree = match crate::repo::walk::find_node(repo, &snap.tree, lookup.as_bytes()) {
                Ok(None) => snap.tree,
                Ok(Some(Node {
                    kind: NodeKind::Dir { subtree },
                    ..
                })) => subtree,
                Ok(Some(_)) => {
                    return Err(ApiError::bad_request(format!(
                        "{lookup} is not a directory: download it instead"
                    )));
                }
                Err(e) => return Err(ApiError::not_found(e.to_string())),
            };
            Ok((id, snap, repo.read_tree(&tree)?))
        })
        .await;
    let (id, snap, tree) = match found {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let hex = id.to_hex();
    let base = url_path(path.as_bytes());
    let mut b = format!(
        "<p><a href=\"/\">status</a> · snapshot <code>{}</code> of {} on {}</p><h1>/{}</h1>",
        text(&id.short()),
        text(&when(snap.timestamp())),
        text(&snap.hostname),
        text(&path),
    );
    if !base.is_empty() {
        let parent = base.rsplit_once('/').map_or("", |(p, _)| p);
        let up = if parent.is_empty() {
            format!("/browse/{hex}")
        } else {
            format!("/browse/{hex}/{parent}")
        };
        let _ = write!(b, "<p><a href=\"{}\">..</a></p>", attr(&up));
    }
    b.push_str("<table id=\"entries\"><tr><th>name</th><th>type</th><th class=\"num\">size</th><th>modified</th><th>mode</th></tr>");
    for n in &tree.nodes {
        let name = String::from_utf8_lossy(&n.name);
        let child = if base.is_empty() {
            url_segment(&n.name)
        } else {
            format!("{base}/{}", url_segment(&n.name))
        };
        let link = match &n.kind {
            NodeKind::Dir { .. } => format!(
                "<a href=\"{}\">{}/</a>",
                attr(&format!("/browse/{hex}/{child}")),
                text(&name)
            ),
            NodeKind::File { .. } | NodeKind::ListedFile { .. } => {
                format!(
                    "<a href=\"{}\">{}</a>",
                    attr(&format!("/download/{hex}/{child}")),
                    text(&name)
                )
            }
            NodeKind::Symlink { target } => format!(
                "{} → {}",
                text(&name),
                text(&String::from_utf8_lossy(target))
            ),
            _ => text(&name).into_owned(),
        };
        let mtime = jiff::Timestamp::new(n.mtime, 0).map_or_else(|_| "-".to_owned(), when);
        let _ = write!(
            b,
            "<tr><td>{link}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td><code>{:04o}</code></td></tr>",
            crate::ops::inspect::EntryType::of(&n.kind).name(),
            text(&size(n.size)),
            text(&mtime),
            n.mode,
        );
    }
    b.push_str("</table>");
    with_cookie(html(StatusCode::OK, &format!("cairn: /{path}"), &b), cookie)
}

/// A response body fed by a blocking writer through a bounded channel:
/// the file is streamed, one chunk in memory at a time.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

/// The writing end of a [`ChannelBody`]; fails when the client is gone.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /download/{id}/{*path}`: one file, each chunk checked against its
/// id before it is sent (`cairn::dump`). A chunk found damaged midway
/// ends the response early, so the client sees a truncated transfer
/// rather than wrong bytes.
#[utoipa::path(get, path = "/download/{id}/{path}", tag = "status page",
    summary = "One file of a snapshot, every chunk checked (reader).",
    params(("id" = String, Path, description = "A snapshot id, a unique prefix of one (hex), or `latest`."),
           ("path" = String, Path, description = "A path inside the snapshot, `/`-separated.")),
    responses(
        (status = 200, description = "The file, as an attachment.", content_type = "application/octet-stream"),
        (status = 400, description = "Not a regular file.", body = super::ErrorBody),
        (status = 404, description = "No such snapshot or path.", body = super::ErrorBody),
    ))]
pub(crate) async fn download(
    State(st): St,
    headers: HeaderMap,
    params: Result<Path<(String, String)>, PathRejection>,
    Query(q): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    st.authorize(&headers, q.token.as_deref(), Role::Reader)?;
    let (id, path) = super::api::path(params)?;
    super::api::check_ref(&id)?;
    let lookup = path.clone();
    let (node, full) = st
        .read(move |repo| {
            let (_, snap) = repo.find_snapshot(&id)?;
            let node = crate::repo::walk::find_node(repo, &snap.tree, lookup.as_bytes())
                .map_err(|e| ApiError::not_found(e.to_string()))?
                .ok_or_else(|| {
                    ApiError::bad_request("the snapshot's root is a directory: name a file")
                })?;
            if !matches!(
                node.kind,
                NodeKind::File { .. } | NodeKind::ListedFile { .. }
            ) {
                return Err(ApiError::bad_request(format!(
                    "{lookup} is not a regular file"
                )));
            }
            Ok((node, format!("/{lookup}")))
        })
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let repo = Arc::clone(&st.repo);
    let name = String::from_utf8_lossy(&node.name).into_owned();
    let length = node.size;
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter(tx.clone());
        if let Err(e) = crate::ops::inspect::dump(&repo, full.as_bytes(), &node, &mut w) {
            eprintln!("cairn serve: download of {full} stopped: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    // The name as an RFC 6266 filename*: percent-encoded UTF-8.
    let disposition = format!(
        "attachment; filename*=UTF-8''{}",
        url_segment(name.as_bytes())
    );
    let mut r = Response::new(Body::new(ChannelBody(rx)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(r)
}
