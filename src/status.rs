//! `emf-ssh status`: what is counted now and why, the daemon's last publication and idle streak,
//! when the alarm would fire, and the alarm's state. Rendering is pure (snapshot-tested); the
//! daemon shares its state through a small JSON file.

use crate::probe::{Kind, Session};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// Where the packaged daemon keeps its state (systemd RuntimeDirectory=emf-ssh-daemon).
pub const DEFAULT_STATE_FILE: &str = "/run/emf-ssh-daemon/state.json";

/// What the daemon writes after every publication. One serde struct per JSON we emit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonState {
    pub pid: u32,
    pub sink: String,
    pub interval_secs: u64,
    pub updated_at_ms: u64,
    /// The last datapoint handed to the sink.
    pub last_value: Option<f64>,
    pub last_timestamp_ms: Option<u64>,
    /// Error of the last publication, if it failed.
    pub last_error: Option<String>,
    /// Start of the current run of published zeros (`None`: the last datapoint was not 0).
    pub idle_since_ms: Option<u64>,
}

impl DaemonState {
    /// Writes atomically (temp file + rename) so `status` never reads half a file.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).expect("state serializes"),
        )?;
        std::fs::rename(&tmp, path)
    }

    pub fn load(path: &Path) -> Option<DaemonState> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

/// The alarm as `status` sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmView {
    pub name: String,
    pub state: String,
    pub reason: Option<String>,
    /// Period x evaluation periods: how long the instance must be idle.
    pub idle_secs: u64,
}

/// Everything `status` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub now_ms: u64,
    pub count: usize,
    pub sessions: Vec<Session>,
    pub daemon: Option<DaemonState>,
    /// The daemon's state file is older than three intervals: it is probably not running.
    pub daemon_stale: bool,
    pub alarm: Option<AlarmView>,
    /// Why the alarm could not be read (no region, no permission, ...).
    pub alarm_error: Option<String>,
    /// Unix ms when the alarm would fire if nothing changes.
    pub fires_at_ms: Option<u64>,
}

impl StatusReport {
    pub fn new(
        now_ms: u64,
        count: usize,
        sessions: Vec<Session>,
        daemon: Option<DaemonState>,
        alarm: Result<Option<AlarmView>, String>,
    ) -> Self {
        let daemon_stale = daemon.as_ref().is_some_and(|d| {
            now_ms.saturating_sub(d.updated_at_ms) > 3 * d.interval_secs.max(1) * 1000
        });
        let (alarm, alarm_error) = match alarm {
            Ok(a) => (a, None),
            Err(e) => (None, Some(e)),
        };
        let fires_at_ms = match (&daemon, &alarm) {
            (Some(d), Some(a)) if !daemon_stale && count == 0 && a.state != "ALARM" => {
                Some(d.idle_since_ms.unwrap_or(now_ms) + a.idle_secs * 1000)
            }
            _ => None,
        };
        StatusReport {
            now_ms,
            count,
            sessions,
            daemon,
            daemon_stale,
            alarm,
            alarm_error,
            fires_at_ms,
        }
    }
}

fn ago(now_ms: u64, then_ms: u64) -> String {
    human(now_ms.saturating_sub(then_ms) / 1000) + " ago"
}

fn human(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// The text `emf-ssh status` prints.
pub fn render(r: &StatusReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "counted now: {} session(s)", r.count);
    for x in &r.sessions {
        let kind = x.kind.as_str();
        let age = x.age_secs.map(human).unwrap_or_else(|| "?".into());
        let mut line = format!("  {kind:<5} {:<16} {:<12} {age:>7}", x.user, x.tty);
        if let Some(remote) = &x.remote {
            line.push_str(&format!("  from {remote}"));
        }
        if x.kind == Kind::Hold {
            if let Some(n) = &x.note {
                line.push_str(&format!("  {n}"));
            }
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    match &r.daemon {
        None => {
            let _ = writeln!(
                s,
                "daemon: no state file (is `emf-ssh run` running? `systemctl status emf-ssh`)"
            );
        }
        Some(d) => {
            let health = if r.daemon_stale {
                " (STALE: not updated for 3 intervals, daemon stopped?)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "daemon: pid {}, sink {}, every {}s{health}",
                d.pid, d.sink, d.interval_secs
            );
            match (d.last_value, d.last_timestamp_ms) {
                (Some(v), Some(t)) => {
                    let _ = writeln!(
                        s,
                        "last publication: {v} for the interval at {}",
                        ago(r.now_ms, t)
                    );
                }
                _ => {
                    let _ = writeln!(s, "last publication: none yet");
                }
            }
            if let Some(e) = &d.last_error {
                let _ = writeln!(s, "last publication FAILED: {e}");
            }
            match d.idle_since_ms {
                Some(t) => {
                    let _ = writeln!(s, "idle streak: 0 published since {}", ago(r.now_ms, t));
                }
                None => {
                    let _ = writeln!(s, "idle streak: none (the last datapoint was not 0)");
                }
            }
        }
    }
    match (&r.alarm, &r.alarm_error) {
        (Some(a), _) => {
            let _ = writeln!(
                s,
                "alarm {}: {} (fires after {} idle)",
                a.name,
                a.state,
                human(a.idle_secs)
            );
            if let Some(reason) = &a.reason {
                let _ = writeln!(s, "  reason: {reason}");
            }
        }
        (None, Some(e)) => {
            let _ = writeln!(s, "alarm: unknown ({e})");
        }
        (None, None) => {
            let _ = writeln!(s, "alarm: not installed (emf-ssh alarm install)");
        }
    }
    match r.fires_at_ms {
        Some(t) if t > r.now_ms => {
            let _ = writeln!(
                s,
                "=> the alarm fires in {} unless someone connects or holds (emf-ssh hold)",
                human((t - r.now_ms) / 1000)
            );
        }
        Some(_) => {
            let _ = writeln!(
                s,
                "=> the alarm is due now (CloudWatch evaluates once per period)"
            );
        }
        None if r.count > 0 => {
            let _ = writeln!(s, "=> in use: the alarm will not fire while this lasts");
        }
        None => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_627_200_000;

    fn session(kind: Kind, user: &str, tty: &str, age: u64) -> Session {
        Session {
            kind,
            user: user.into(),
            uid: 1000,
            pid: 4242,
            started_at: Some(NOW / 1000 - age),
            age_secs: Some(age),
            tty: tty.into(),
            remote: (kind == Kind::Ssh).then(|| "203.0.113.7:50000".into()),
            idle_secs: None,
            note: (kind == Kind::Hold)
                .then(|| "hold 0123456789abcdef, until unix 1795640000: training".into()),
        }
    }

    fn daemon(idle_since: Option<u64>, updated: u64) -> DaemonState {
        DaemonState {
            pid: 777,
            sink: "emf-tcp://127.0.0.1:25888".into(),
            interval_secs: 60,
            updated_at_ms: updated,
            last_value: Some(if idle_since.is_some() { 0.0 } else { 2.0 }),
            last_timestamp_ms: Some(NOW - 60_000),
            last_error: None,
            idle_since_ms: idle_since,
        }
    }

    fn alarm(state: &str) -> Result<Option<AlarmView>, String> {
        Ok(Some(AlarmView {
            name: "emf-ssh-idle-i-0123456789abcdef0".into(),
            state: state.into(),
            reason: Some(
                "Threshold Crossed: 1 datapoint [2.0] was not less than the threshold (1.0)."
                    .into(),
            ),
            idle_secs: 900,
        }))
    }

    #[test]
    fn busy_instance() {
        let r = StatusReport::new(
            NOW,
            2,
            vec![
                session(Kind::Ssh, "alice", "pts/0", 600),
                session(Kind::Hold, "bob", "notty", 4000),
            ],
            Some(daemon(None, NOW - 5_000)),
            alarm("OK"),
        );
        assert_eq!(r.fires_at_ms, None);
        insta::assert_snapshot!("status_busy", render(&r));
    }

    #[test]
    fn idle_instance_counts_down() {
        let r = StatusReport::new(
            NOW,
            0,
            vec![],
            Some(daemon(Some(NOW - 300_000), NOW - 5_000)),
            alarm("OK"),
        );
        assert_eq!(r.fires_at_ms, Some(NOW + 600_000));
        insta::assert_snapshot!("status_idle", render(&r));
    }

    #[test]
    fn stale_daemon_and_unreadable_alarm() {
        let r = StatusReport::new(
            NOW,
            0,
            vec![],
            Some(daemon(Some(NOW - 900_000), NOW - 600_000)),
            Err("no AWS region: pass --region".into()),
        );
        assert!(r.daemon_stale);
        assert_eq!(
            r.fires_at_ms, None,
            "a stopped daemon publishes nothing: the alarm (missing data) will not fire"
        );
        insta::assert_snapshot!("status_stale", render(&r));
    }

    #[test]
    fn no_daemon_no_alarm() {
        let r = StatusReport::new(NOW, 0, vec![], None, Ok(None));
        insta::assert_snapshot!("status_nothing", render(&r));
    }

    #[test]
    fn state_file_round_trips() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("state.json");
        let s = daemon(Some(1), 2);
        s.save(&p).expect("save");
        assert_eq!(DaemonState::load(&p), Some(s));
        std::fs::write(&p, "{broken").expect("write");
        assert_eq!(DaemonState::load(&p), None);
    }
}
