//! The options every command takes (`--repo`, the password sources,
//! limits, caches, output mode, the profile), as clap parses them.

use std::path::PathBuf;

use clap::Args;

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Repository location: a directory, or S3-compatible object storage as
    /// s3:https://HOST[:PORT]/BUCKET[/PREFIX] (credentials from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws, region from
    /// AWS_REGION; add ?style=virtual or ?style=path to choose the bucket
    /// addressing). Without it and without CAIRN_REPO, cairn uses a default
    /// repository in your data directory.
    #[arg(
        short = 'r',
        long = "repo",
        env = "CAIRN_REPO",
        global = true,
        value_name = "LOCATION"
    )]
    pub repo: Option<PathBuf>,
    /// Limit uploads to the repository to this many KiB/s (on average).
    #[arg(
        long,
        env = "CAIRN_LIMIT_UPLOAD",
        global = true,
        value_name = "KIB_PER_S"
    )]
    pub limit_upload: Option<u32>,
    /// Limit downloads from the repository to this many KiB/s (on average).
    #[arg(
        long,
        env = "CAIRN_LIMIT_DOWNLOAD",
        global = true,
        value_name = "KIB_PER_S"
    )]
    pub limit_download: Option<u32>,
    /// Print more: for a repository on object storage, the number of
    /// requests the command made.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Read the repository password from the first line of this file.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use the first line it prints as the password.
    #[arg(
        long,
        env = "CAIRN_PASSWORD_COMMAND",
        global = true,
        value_name = "CMD"
    )]
    pub password_command: Option<String>,
    /// Directory for local caches (the files cache of each repository).
    /// Default: cairn's directory in your cache directory (~/.cache/cairn).
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// If another process holds a conflicting repository lock, wait up to
    /// this long for it (e.g. 30s, 10m) instead of failing at once.
    #[arg(long, global = true, value_name = "DURATION")]
    pub retry_lock: Option<String>,
    /// Take no repository lock: for restore and verify of a repository on
    /// read-only media (a concurrent prune could then remove data they read).
    #[arg(long, global = true)]
    pub no_lock: bool,
    /// Use no local cache: every file is compared with the parent snapshot.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The application profile to use. Default: the nearest cairn.toml in
    /// the current directory or above, which then also names the
    /// repository and password source unless options or the environment do.
    #[arg(long, env = "CAIRN_PROFILE", global = true, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// The profile loaded, if any.
    #[arg(skip)]
    pub loaded: Option<cairn::Profile>,
}

impl Global {
    /// These options as a command line for another cairn process (the
    /// daemon's watchers): where the repository is and how to open it, not
    /// how to print.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let mut pair = |name: &str, value: Option<std::ffi::OsString>| {
            if let Some(v) = value {
                args.push(name.into());
                args.push(v);
            }
        };
        pair("--repo", self.repo.clone().map(Into::into));
        pair(
            "--limit-upload",
            self.limit_upload.map(|v| v.to_string().into()),
        );
        pair(
            "--limit-download",
            self.limit_download.map(|v| v.to_string().into()),
        );
        pair(
            "--password-file",
            self.password_file.clone().map(Into::into),
        );
        pair(
            "--password-command",
            self.password_command.clone().map(Into::into),
        );
        pair("--cache-dir", self.cache_dir.clone().map(Into::into));
        pair("--retry-lock", self.retry_lock.clone().map(Into::into));
        pair("--profile", self.profile.clone().map(Into::into));
        for (set, flag) in [(self.no_lock, "--no-lock"), (self.no_cache, "--no-cache")] {
            if set {
                args.push(flag.into());
            }
        }
        args
    }
}
