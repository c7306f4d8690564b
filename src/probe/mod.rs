//! The session probe: who is using this machine right now.
//!
//! `title` is pure classification; `proc` reads `/proc` (through a root the caller chooses, so
//! tests point it at fixture trees). The result is a [`Snapshot`] or an error, never a guessed 0.

pub mod proc;
pub mod title;

use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use proc::{Probe, ProbeOptions};
pub mod hold;

/// What kind of use a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An authenticated OpenSSH connection.
    Ssh,
    /// An AWS Systems Manager Session Manager session (`ssm-session-worker`).
    Ssm,
    /// A mosh session (`mosh-server`), which outlives its bootstrap SSH connection.
    Mosh,
    /// An `emf-ssh hold`: a user asked to keep the instance up (a job in tmux, a long build).
    Hold,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Ssh, Kind::Ssm, Kind::Mosh, Kind::Hold];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ssh => "ssh",
            Kind::Ssm => "ssm",
            Kind::Mosh => "mosh",
            Kind::Hold => "hold",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown session kind `{s}` (expected ssh, ssm, mosh or hold)"))
    }
}

/// One person's use of the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub kind: Kind,
    /// From the sshd title for SSH; from the process owner for SSM and mosh.
    pub user: String,
    /// Owner of the counted process.
    pub uid: u32,
    /// The counted process (for SSH: the one titled `USER@...` or `USER`).
    pub pid: i32,
    /// Unix time (seconds) the counted process started, when boot time is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// Seconds since `started_at`, at the snapshot's `taken_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_secs: Option<u64>,
    /// `pts/0`, `pts/0,pts/1`, or `notty` (also for `ssh -N`, SSM and mosh).
    pub tty: String,
    /// `ip:port` of the client, when the caller may read the process's sockets (root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Seconds since the last terminal input on the session's pty(s) (what `w` shows as IDLE);
    /// unknown (`None`) for sessions without a pty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_secs: Option<u64>,
    /// Holds: id, reason and expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How the snapshot was obtained. A zero always comes from [`ScanMethod::Full`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanMethod {
    /// Walked down from known roots (PID 1, sshd pid files, roots seen before): cost grows with
    /// sshd's processes, not with the machine's.
    Tree,
    /// Read every process in `/proc`.
    Full,
}

/// The sessions seen at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Unix time in milliseconds, passed in by the caller.
    pub taken_at_ms: u64,
    pub method: ScanMethod,
    pub sessions: Vec<Session>,
}

impl Snapshot {
    /// The number that is published: sessions of the counted kinds.
    pub fn count(&self, kinds: &KindSet) -> usize {
        self.sessions
            .iter()
            .filter(|s| kinds.contains(s.kind))
            .count()
    }

    /// Counted sessions that are not idle for `idle_after` seconds or more. Sessions whose idle
    /// time is unknown (no pty: `ssh -T`, `-N`, VS Code; SSM, mosh, holds) always count.
    pub fn active_count(&self, kinds: &KindSet, idle_after: Option<u64>) -> usize {
        self.sessions
            .iter()
            .filter(|s| kinds.contains(s.kind))
            .filter(|s| match (idle_after, s.idle_secs) {
                (Some(limit), Some(idle)) => idle < limit,
                _ => true,
            })
            .count()
    }
}

/// Which kinds make up the published count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindSet(BTreeSet<Kind>);

impl KindSet {
    pub fn all() -> Self {
        KindSet(Kind::ALL.into_iter().collect())
    }
    pub fn contains(&self, k: Kind) -> bool {
        self.0.contains(&k)
    }
}

impl Default for KindSet {
    fn default() -> Self {
        Self::all()
    }
}

impl FromStr for KindSet {
    type Err = String;
    /// `ssh,ssm,mosh,hold` (any non-empty subset).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let set: BTreeSet<Kind> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Kind::from_str)
            .collect::<Result<_, _>>()?;
        if set.is_empty() {
            return Err("at least one session kind is needed (ssh, ssm, mosh, hold)".into());
        }
        Ok(KindSet(set))
    }
}

/// Why the probe could not produce a trustworthy snapshot. Each message says what to fix,
/// because the alternative, a 0, would stop somebody's machine.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot read {root}: {source}; emf-ssh needs a mounted /proc to see sessions")]
    NoProc {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{root} is mounted with `{option}`, which hides other users' processes from uid {uid}: \
         sessions would be invisible and the count a false 0. Run emf-ssh as root, add its user to \
         the group named by the mount's gid= option, or remount /proc without hidepid \
         (systemd: drop ProtectProc=/ProcSubset= from the unit)"
    )]
    Hidden {
        root: PathBuf,
        option: String,
        uid: u32,
    },
    #[error(
        "permission denied reading {path}: emf-ssh cannot see other users' processes, so it will not \
         report a count. Run it as root or give it read access to /proc (no hidepid, no ProtectProc=)"
    )]
    PermissionDenied { path: PathBuf },
    #[error("unexpected error reading {path}: {message}")]
    Read { path: PathBuf, message: String },
}

#[cfg(test)]
mod fixture_tests;
