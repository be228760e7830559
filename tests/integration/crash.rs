//! Crash safety: backups killed at random moments leave a valid repository.
