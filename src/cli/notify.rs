//! Notification options (`--notify-command`, `--notify-url`) shared by the
//! commands that raise alerts, and sending a batch of alerts.

use anyhow::Result;
use clap::Args;

use super::output::Out;

/// Where alerts go; flatten into a command's arguments.
#[derive(Debug, Args, Clone, Default)]
pub struct NotifyArgs {
    /// Run this shell command for every alert, with the alert as JSON on
    /// its standard input and in CAIRN_ALERT_JSON (kind and message also
    /// in CAIRN_ALERT_KIND, CAIRN_ALERT_MESSAGE); killed after 60 s.
    #[arg(long, env = "CAIRN_NOTIFY_COMMAND", value_name = "CMD")]
    pub notify_command: Option<String>,
    /// POST every alert as JSON to this http:// or https:// URL (10 s
    /// timeout, two retries).
    #[arg(long, env = "CAIRN_NOTIFY_URL", value_name = "URL")]
    pub notify_url: Option<String>,
}

impl NotifyArgs {
    /// The notifier, `None` when neither option is set.
    pub fn notifier(&self) -> Result<Option<cairn::notify::Notifier>> {
        let n = cairn::notify::Notifier::new(self.notify_command.clone(), self.notify_url.clone())?;
        Ok((!n.is_empty()).then_some(n))
    }
}

/// Sends every alert, warning about each delivery that failed; returns
/// those failures' messages. The caller's exit code is not affected.
pub fn send_all(
    notifier: Option<&cairn::notify::Notifier>,
    alerts: &[cairn::notify::Alert],
    out: &Out,
) -> Vec<String> {
    let Some(n) = notifier else {
        return Vec::new();
    };
    let mut failed = Vec::new();
    for a in alerts {
        if let Err(e) = cairn::notify::send(n, a) {
            out.warn(e.to_string());
            failed.push(e.to_string());
        }
    }
    failed
}
