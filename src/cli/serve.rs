//! `cairn serve` and `cairn token`: the HTTP API server and its tokens.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};

use cairn::server::{Role, ServeOptions, Tokens};

use super::advice::Advised;
use super::exit;
use super::global::Global;
use super::output::Out;
use super::password::cache_dir;
use super::repo_open::open;

/// Options naming the tokens file, shared by `serve` and `token`.
#[derive(Debug, Args)]
pub struct TokensFile {
    /// The tokens file. Default: tokens.json in cairn's config directory
    /// (~/.config/cairn/tokens.json).
    #[arg(long = "tokens", env = "CAIRN_TOKENS", value_name = "FILE")]
    tokens: Option<PathBuf>,
}

impl TokensFile {
    fn path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.tokens {
            return Ok(p.clone());
        }
        let d = directories::ProjectDirs::from("", "", "cairn").ok_or_else(|| {
            anyhow!("cannot find your home directory for the tokens file: pass --tokens FILE or set CAIRN_TOKENS")
        })?;
        Ok(d.config_dir().join("tokens.json"))
    }
}

#[derive(Debug, Args)]
#[command(after_help = "\
Routes (JSON under /api/; every error is {\"error\", \"status\"}; the full description is
GET /api/openapi.json, which needs no token):
  GET    /api/snapshots[?app=&host=]   reader    list snapshots
  GET    /api/snapshots/{id}           reader    one snapshot (id, unique prefix or latest)
  POST   /api/snapshots                operator  {\"profile\": APP, \"components\"?: [..]}
  POST   /api/restore                  admin     {\"profile\", \"component\", \"snapshot\"? | \"at\"?,
                                                  \"target\"?: DIR, \"dry_run\"?: bool, \"force\"?: bool}
                                                 (a target only below --allow-restore-target)
  DELETE /api/snapshots/{id}           admin     forget one snapshot
  POST   /api/verify, GET /api/verify  operator, reader
  GET    /api/stats, /api/status, /api/log[?last=N]   reader
  GET    /metrics                      reader (or anyone with --metrics-public)
  GET    /                             the status page (log in with a token; or ?token=)
  GET    /browse/{id}/{path}, /download/{id}/{path}   reader

Authenticate with 'Authorization: Bearer TOKEN'; create tokens with `cairn token add`.
No token or a bad one: 401; a role too small: 403; a body without 'Content-Type:
application/json': 415. Writes through the status page's session cookie need the same
origin and the session's X-CSRF-Token; sessions end 30 min unused or 12 h after login.
Headers must arrive within 10 s, each part of a body within 10 s of the last. Snapshots, restores and deletes run one
at a time and are recorded in the audit log as token:NAME. The bound address is printed on
standard output when the server is ready. Stop it with Ctrl-C or SIGTERM.")]
pub struct ServeArgs {
    /// Address and port to listen on. The default is loopback only: put a
    /// TLS-terminating proxy in front before listening elsewhere.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// An application profile (cairn.toml) whose snapshots and restores
    /// the API offers, by its app name (repeatable). Default: the profile
    /// of --profile / CAIRN_PROFILE / the current directory, if any.
    #[arg(long = "app-profile", value_name = "FILE")]
    profiles: Vec<PathBuf>,
    /// Serve /metrics without a token (for a Prometheus scraper on a
    /// trusted network).
    #[arg(long)]
    metrics_public: bool,
    /// A directory POST /api/restore may restore into with a "target"
    /// (repeatable; the target must be it or below it). Without any, the
    /// API only puts components back in place, into their own paths. A
    /// restore into / replaces live files and, like an in-place restore,
    /// takes a safety snapshot first.
    #[arg(long = "allow-restore-target", value_name = "DIR")]
    restore_targets: Vec<PathBuf>,
    #[command(flatten)]
    tokens: TokensFile,
}

/// `cairn serve`.
pub fn serve(g: &Global, out: &Out, a: &ServeArgs) -> Result<u8> {
    let mut profiles = Vec::new();
    for f in &a.profiles {
        profiles.push(
            cairn::Profile::load(f)
                .with_context(|| format!("cannot load the profile {}", f.display()))?,
        );
    }
    if profiles.is_empty()
        && let Some(p) = &g.loaded
    {
        profiles.push(p.clone());
    }
    let tokens = a.tokens.path()?;
    let known = load_tokens(&tokens)?;
    if known.tokens.is_empty() {
        out.warn(format!(
            "no tokens in {}: every request will get 401 until you add one with `cairn token add NAME --role reader`",
            tokens.display()
        ));
    }
    if !a.listen.ip().is_loopback() {
        out.warn(format!(
            "listening on {}, beyond this machine, over plain HTTP: tokens and data cross the network unencrypted unless a TLS proxy is in front",
            a.listen
        ));
    }
    let (repo, _) = open(g)?;
    let opts = ServeOptions {
        listen: a.listen,
        tokens,
        profiles,
        metrics_public: a.metrics_public,
        cache_dir: cache_dir(g),
        restore_targets: a
            .restore_targets
            .iter()
            .map(|d| {
                std::fs::canonicalize(d).with_context(|| {
                    format!(
                        "--allow-restore-target {}: not an existing directory",
                        d.display()
                    )
                })
            })
            .collect::<Result<_>>()?,
    };
    let apps: Vec<String> = opts.profiles.iter().map(|p| p.name.clone()).collect();
    cairn::server::serve(repo, opts, |addr| {
        // The first line of standard output, for scripts and tests that
        // listen on port 0.
        outln!("listening on http://{addr}");
        if !apps.is_empty() {
            out.info(format!("applications: {}", apps.join(", ")));
        }
    })?;
    Ok(exit::OK)
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once; only its hash is stored.
    Add(TokenAddArgs),
    /// List tokens: names, roles, creation times (never secrets).
    List(TokenListArgs),
    /// Remove a token: requests with it get 401 at once.
    Remove(TokenRemoveArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
Roles: reader lists and reads (snapshots, files, stats, status, log, metrics, the status
page); operator also creates snapshots and runs verify; admin also restores and deletes.")]
pub struct TokenAddArgs {
    /// The token's name, recorded in the audit log as token:NAME.
    name: String,
    /// What it may do: reader, operator or admin.
    #[arg(long, value_name = "ROLE")]
    role: String,
    #[command(flatten)]
    tokens: TokensFile,
}

#[derive(Debug, Args)]
pub struct TokenListArgs {
    #[command(flatten)]
    tokens: TokensFile,
}

#[derive(Debug, Args)]
pub struct TokenRemoveArgs {
    /// The token's name.
    name: String,
    #[command(flatten)]
    tokens: TokensFile,
}

/// Reads the tokens file; one that cannot be read is named with the option
/// that chose it.
fn load_tokens(path: &std::path::Path) -> Result<Tokens> {
    Tokens::load(path).map_err(|e| match e {
        cairn::Error::Io { .. } => {
            Advised::new(e, "; fix its permissions or pass another --tokens FILE").into()
        }
        e => e.into(),
    })
}

/// `cairn token`.
pub fn token(out: &Out, cmd: &TokenCommand) -> Result<u8> {
    match cmd {
        TokenCommand::Add(a) => {
            let role: Role = a.role.parse()?;
            let path = a.tokens.path()?;
            let mut t = load_tokens(&path)?;
            let secret = t.add(&a.name, role)?;
            t.save(&path)?;
            if out.json {
                out.print_json(&serde_json::json!({
                    "name": a.name, "role": role, "token": secret, "file": path,
                }))?;
            } else {
                outln!("{secret}");
                out.info(format!(
                    "token '{}' ({role}) added to {}; it is shown only now: keep it secret",
                    a.name,
                    path.display()
                ));
            }
        }
        TokenCommand::List(a) => {
            let t = load_tokens(&a.tokens.path()?)?;
            if out.json {
                let list: Vec<_> = t
                    .tokens
                    .iter()
                    .map(|e| serde_json::json!({"name": e.name, "role": e.role, "created": e.created}))
                    .collect();
                out.print_json(&list)?;
            } else {
                for e in &t.tokens {
                    outln!("{:<24}  {:<8}  {}", e.name, e.role, e.created);
                }
            }
        }
        TokenCommand::Remove(a) => {
            let path = a.tokens.path()?;
            let mut t = load_tokens(&path)?;
            t.remove(&a.name)?;
            t.save(&path)?;
            out.info(format!("token '{}' removed", a.name));
        }
    }
    Ok(exit::OK)
}
