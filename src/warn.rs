//! Warnings before the alarm stops the instance, written to the idle sessions' terminals.
//!
//! The daemon knows the idle streak it has published (consecutive datapoints of 0 on the metric
//! the alarm watches) and how long the alarm waits. When the stop is at most `warn_before` away
//! and idle pty sessions are still connected, each of their terminals gets a short message, once
//! per streak — like `wall`, but only to those ttys, and only where the user allows messages
//! (`mesg n` makes the write fail, which we respect).

use crate::probe::{Kind, Session};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Warner {
    pub warn_before_secs: u64,
    pub alarm_idle_secs: u64,
    pub idle_after_secs: u64,
    pub dev_root: PathBuf,
    /// The streak (its start) already warned about.
    warned: Option<u64>,
}

impl Warner {
    pub fn new(
        warn_before_secs: u64,
        alarm_idle_secs: u64,
        idle_after_secs: u64,
        dev_root: PathBuf,
    ) -> Self {
        Warner {
            warn_before_secs,
            alarm_idle_secs,
            idle_after_secs,
            dev_root,
            warned: None,
        }
    }

    /// The idle ptys to warn now, if it is time; marks the streak as warned.
    pub fn due(
        &mut self,
        idle_since_ms: Option<u64>,
        now_ms: u64,
        sessions: &[Session],
    ) -> Option<(u64, Vec<String>)> {
        let since = idle_since_ms?;
        if self.warned == Some(since) {
            return None;
        }
        let stop_at_ms = since + self.alarm_idle_secs * 1000;
        if now_ms + self.warn_before_secs * 1000 < stop_at_ms {
            return None;
        }
        let ttys: Vec<String> = sessions
            .iter()
            .filter(|s| {
                s.kind == Kind::Ssh && s.idle_secs.is_some_and(|i| i >= self.idle_after_secs)
            })
            .flat_map(|s| s.tty.split(',').map(str::to_owned).collect::<Vec<_>>())
            .filter(|t| t.starts_with("pts/") || t.starts_with("tty"))
            .collect();
        self.warned = Some(since);
        (!ttys.is_empty()).then_some((stop_at_ms, ttys))
    }

    /// Writes the warning to each tty; returns those written.
    pub fn send(&self, stop_at_ms: u64, now_ms: u64, ttys: &[String]) -> Vec<String> {
        let text = message(stop_at_ms, now_ms);
        ttys.iter()
            .filter(|t| write_tty(&self.dev_root, t, &text).is_ok())
            .cloned()
            .collect()
    }
}

/// The message (pure).
pub fn message(stop_at_ms: u64, now_ms: u64) -> String {
    let secs = stop_at_ms / 1000 % 86_400;
    let mins = stop_at_ms.saturating_sub(now_ms).div_ceil(60_000);
    format!(
        "\r\n*** emf-ssh: nobody is active on this instance; it will be stopped at {:02}:{:02} UTC \
         (in about {mins} min).\r\n*** Press a key in this terminal to stay, or run \
         `emf-ssh hold --for 2h` to keep it up.\r\n",
        secs / 3600,
        secs / 60 % 60
    )
}

fn write_tty(dev_root: &Path, tty: &str, text: &str) -> std::io::Result<()> {
    if tty.contains("..") {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    // O_NOCTTY: never become the terminal's controlling process; O_NONBLOCK: a stuck terminal
    // must not stall the daemon.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(dev_root.join(tty))?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(tty: &str, idle: Option<u64>) -> Session {
        Session {
            kind: Kind::Ssh,
            user: "alice".into(),
            uid: 1000,
            pid: 1,
            started_at: None,
            age_secs: None,
            tty: tty.into(),
            remote: None,
            idle_secs: idle,
            note: None,
        }
    }

    #[test]
    fn warns_once_per_streak_only_idle_ptys_and_only_when_due() {
        let mut w = Warner::new(300, 900, 600, "/dev".into());
        let sessions = [
            session("pts/1", Some(700)),
            session("pts/2,pts/3", Some(2000)),
            session("notty", None),
            session("pts/4", Some(10)),
        ];
        let since = 1_000_000;
        // 10 minutes before the stop: not yet.
        assert_eq!(w.due(Some(since), since + 300_000, &sessions), None);
        let due = w.due(Some(since), since + 600_000, &sessions).expect("due");
        assert_eq!(
            due,
            (
                since + 900_000,
                vec!["pts/1".into(), "pts/2".into(), "pts/3".into()]
            )
        );
        assert_eq!(
            w.due(Some(since), since + 700_000, &sessions),
            None,
            "once per streak"
        );
        assert!(
            w.due(Some(since + 1), since + 1_000_000, &sessions)
                .is_some(),
            "a new streak warns again"
        );
        assert_eq!(
            w.due(None, since + 1_000_000, &sessions),
            None,
            "no streak, no warning"
        );
    }

    #[test]
    fn message_snapshot() {
        insta::assert_snapshot!(message(1_795_627_200_000 + 300_000, 1_795_627_200_000));
    }
}
