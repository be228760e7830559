//! Damaged repositories: what verify reports and what restore saves.
