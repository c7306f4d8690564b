//! Holds: "keep this instance up" requests by local users (`emf-ssh hold`).
//!
//! A hold is a small JSON file in a sticky, world-writable directory under `/run` (a reboot ends
//! every hold; the package's tmpfiles.d entry creates the directory at boot). Who holds is the
//! file's *owner* — the kernel's word, not the file's content — and the sticky bit means only the
//! owner (or root) can remove or replace it. A hold ends when it expires, when it is released,
//! or, for `emf-ssh hold -- COMMAND`, when the command's process (pid *and* start time, so a
//! recycled pid cannot keep it alive) is gone. Anything malformed or suspicious is ignored with a
//! warning: a hold can only ever keep an instance up, never make it look idle.

use super::{Kind, Session};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_HOLDS_DIR: &str = "/run/emf-ssh/holds";
/// Larger files are not holds.
const MAX_HOLD_FILE: u64 = 4096;
const MAX_REASON: usize = 200;

/// The file's content. One serde struct per JSON we write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldFile {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// `hold -- COMMAND`: the command's pid and its start time (clock ticks after boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
}

/// A hold read back from disk, with its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    #[serde(flatten)]
    pub file: HoldFile,
    pub uid: u32,
    pub user: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error(
        "the holds directory {0} does not exist; it is created at boot by the package \
         (systemd-tmpfiles --create emf-ssh.conf), or run any `emf-ssh hold` once as root"
    )]
    NoDir(PathBuf),
    #[error("cannot write a hold in {dir}: {source}")]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no hold `{0}` (see `emf-ssh hold --list`)")]
    NotFound(String),
    #[error("hold `{id}` belongs to {owner}; only its owner or root may release it")]
    NotOwner { id: String, owner: String },
    #[error("`{0}` is not a hold id (16 hex digits)")]
    BadId(String),
}

pub fn valid_id(id: &str) -> bool {
    id.len() == 16
        && id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

fn new_id() -> String {
    // The kernel's random UUID: no RNG crate needed.
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|u| u.trim().replace('-', "")[..16].to_owned())
        .unwrap_or_else(|_| {
            format!(
                "{:016x}",
                crate::now_ms() ^ u64::from(std::process::id()) << 40
            )
        })
}

/// Makes sure the directory exists (root creates it sticky and world-writable, like /tmp).
pub fn ensure_dir(dir: &Path, euid: u32) -> Result<(), HoldError> {
    if dir.is_dir() {
        return Ok(());
    }
    if euid != 0 {
        return Err(HoldError::NoDir(dir.to_owned()));
    }
    let err = |source| HoldError::Write {
        dir: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)).map_err(err)
}

/// Writes a new hold; returns it as stored.
pub fn create(
    dir: &Path,
    euid: u32,
    reason: Option<&str>,
    expires_at: Option<u64>,
    process: Option<(i32, u64)>,
    now_secs: u64,
) -> Result<HoldFile, HoldError> {
    ensure_dir(dir, euid)?;
    let file = HoldFile {
        id: new_id(),
        reason: reason.map(|r| {
            r.chars()
                .filter(|c| !c.is_control())
                .take(MAX_REASON)
                .collect()
        }),
        created_at: now_secs,
        expires_at,
        pid: process.map(|p| p.0),
        pid_start: process.map(|p| p.1),
    };
    let path = dir.join(format!("{}.json", file.id));
    let text = serde_json::to_vec(&file).expect("hold serializes");
    let err = |source| HoldError::Write {
        dir: dir.to_owned(),
        source,
    };
    // create_new + no symlink following: never write through somebody else's file.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(err)?;
    std::io::Write::write_all(&mut f, &text).map_err(err)?;
    Ok(file)
}

/// Reads one hold file; `None` (with a warning) for anything that is not a well-formed hold.
fn read_one(path: &Path, users: &dyn Fn(u32) -> String) -> Option<Hold> {
    let name = path.file_name()?.to_str()?;
    let id = name.strip_suffix(".json")?;
    let warn = |why: &str| {
        tracing::warn!(path = %path.display(), "ignoring hold file: {why}");
        None
    };
    if !valid_id(id) {
        return warn("name is not ID.json");
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return None, // released meanwhile
    };
    if !meta.file_type().is_file() {
        return warn("not a regular file");
    }
    if meta.len() > MAX_HOLD_FILE {
        return warn("too large");
    }
    let mut text = String::new();
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    if opened
        .and_then(|mut f| f.by_ref().take(MAX_HOLD_FILE).read_to_string(&mut text))
        .is_err()
    {
        return warn("unreadable");
    }
    let file: HoldFile = match serde_json::from_str(&text) {
        Ok(f) => f,
        Err(e) => return warn(&format!("malformed: {e}")),
    };
    if file.id != id {
        return warn("id does not match the file name");
    }
    if file.pid.is_some() != file.pid_start.is_some() {
        return warn("pid without start time");
    }
    Some(Hold {
        uid: meta.uid(),
        user: users(meta.uid()),
        file,
    })
}

/// Every well-formed hold in `dir`, expired or not, sorted by creation.
pub fn list(dir: &Path, users: &dyn Fn(u32) -> String) -> Vec<Hold> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut holds: Vec<Hold> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| read_one(&e.path(), users))
        .collect();
    holds.sort_by(|a, b| (a.file.created_at, &a.file.id).cmp(&(b.file.created_at, &b.file.id)));
    holds
}

/// Whether a hold still counts: not expired, and its process (if any) is the same process.
pub fn is_active(h: &HoldFile, now_secs: u64, proc_root: &Path) -> bool {
    if h.expires_at.is_some_and(|t| now_secs >= t) {
        return false;
    }
    match (h.pid, h.pid_start) {
        (Some(pid), Some(start)) => process_start(proc_root, pid) == Some(start),
        _ => true,
    }
}

/// Start time (ticks after boot) of a live, non-zombie process.
pub fn process_start(proc_root: &Path, pid: i32) -> Option<u64> {
    let stat = procfs::process::Process::new_with_root(proc_root.join(pid.to_string()))
        .ok()?
        .stat()
        .ok()?;
    (stat.state != 'Z' && stat.state != 'X').then_some(stat.starttime)
}

/// Active holds as sessions.
pub fn sessions(
    dir: &Path,
    now_secs: u64,
    proc_root: &Path,
    users: &dyn Fn(u32) -> String,
) -> Vec<Session> {
    list(dir, users)
        .into_iter()
        .filter(|h| is_active(&h.file, now_secs, proc_root))
        .map(|h| Session {
            kind: Kind::Hold,
            user: h.user.clone(),
            uid: h.uid,
            pid: h.file.pid.unwrap_or(0),
            started_at: Some(h.file.created_at),
            age_secs: Some(now_secs.saturating_sub(h.file.created_at)),
            tty: "notty".into(),
            remote: None,
            idle_secs: None,
            note: Some(describe(&h.file)),
        })
        .collect()
}

/// `id=...; until=...; reason=...` for lists and EMF properties.
pub fn describe(h: &HoldFile) -> String {
    let mut s = format!("hold {}", h.id);
    match (h.expires_at, h.pid) {
        (Some(t), _) => s.push_str(&format!(", until unix {t}")),
        (None, Some(p)) => s.push_str(&format!(", while pid {p} runs")),
        (None, None) => s.push_str(", until released"),
    }
    if let Some(r) = &h.reason {
        s.push_str(&format!(": {r}"));
    }
    s
}

/// Removes a hold: its owner or root only (the sticky directory enforces the same).
pub fn release(
    dir: &Path,
    id: &str,
    euid: u32,
    users: &dyn Fn(u32) -> String,
) -> Result<Hold, HoldError> {
    if !valid_id(id) {
        return Err(HoldError::BadId(id.into()));
    }
    let path = dir.join(format!("{id}.json"));
    let hold = read_one(&path, users).ok_or_else(|| HoldError::NotFound(id.into()))?;
    if euid != 0 && euid != hold.uid {
        return Err(HoldError::NotOwner {
            id: id.into(),
            owner: hold.user,
        });
    }
    std::fs::remove_file(&path).map_err(|source| HoldError::Write {
        dir: dir.to_owned(),
        source,
    })?;
    Ok(hold)
}

/// Removes the hold file `id` if it is still there (end of `hold -- COMMAND`).
pub fn remove_quietly(dir: &Path, id: &str) {
    let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(uid: u32) -> String {
        format!("u{uid}")
    }

    #[test]
    fn create_list_expire_release() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("holds");
        std::fs::create_dir(&dir).expect("mkdir");
        let euid = std::fs::metadata(d.path()).expect("meta").uid();
        let a = create(
            &dir,
            euid,
            Some("training\x1b[31m run"),
            Some(1_000),
            None,
            100,
        )
        .expect("hold");
        let b = create(&dir, euid, None, None, None, 200).expect("hold");
        assert!(valid_id(&a.id) && a.id != b.id);
        assert_eq!(
            a.reason.as_deref(),
            Some("training[31m run"),
            "control characters stripped"
        );
        let all = list(&dir, &users);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].uid, euid);
        let proc_root = Path::new("/proc");
        assert_eq!(sessions(&dir, 500, proc_root, &users).len(), 2);
        assert_eq!(
            sessions(&dir, 1_000, proc_root, &users).len(),
            1,
            "a expired at 1000"
        );
        release(&dir, &b.id, euid, &users).expect("release");
        assert!(matches!(
            release(&dir, &b.id, euid, &users),
            Err(HoldError::NotFound(_))
        ));
        assert!(matches!(
            release(&dir, "../../etc/pass", euid, &users),
            Err(HoldError::BadId(_))
        ));
        if euid != 0 {
            assert!(matches!(
                release(&dir, &a.id, euid + 1, &users),
                Err(HoldError::NotOwner { .. })
            ));
        } else {
            assert!(matches!(
                release(&dir, &a.id, 4242, &users),
                Err(HoldError::NotOwner { .. })
            ));
        }
    }

    #[test]
    fn a_hold_on_a_process_ends_with_it_and_survives_no_pid_reuse() {
        let me = std::process::id() as i32;
        let start = process_start(Path::new("/proc"), me).expect("own start");
        let mut h = HoldFile {
            id: "0123456789abcdef".into(),
            reason: None,
            created_at: 0,
            expires_at: None,
            pid: Some(me),
            pid_start: Some(start),
        };
        assert!(is_active(&h, 10, Path::new("/proc")));
        // Same pid, other start time: a recycled pid.
        h.pid_start = Some(start + 1);
        assert!(!is_active(&h, 10, Path::new("/proc")));
        h.pid = Some(i32::MAX);
        assert!(!is_active(&h, 10, Path::new("/proc")));
    }

    #[test]
    fn hostile_and_malformed_files_are_ignored() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path();
        std::fs::write(dir.join("0123456789abcdef.json"), "{not json").expect("w");
        std::fs::write(
            dir.join("1111111111111111.json"),
            r#"{"id":"2222222222222222","created_at":1}"#,
        )
        .expect("w");
        std::fs::write(
            dir.join("3333333333333333.json"),
            r#"{"id":"3333333333333333","created_at":1,"evil":true}"#,
        )
        .expect("w");
        std::fs::write(dir.join("4444444444444444.json"), "x".repeat(10_000)).expect("w");
        std::fs::write(dir.join("notahold.txt"), "{}").expect("w");
        std::fs::write(
            dir.join("5555555555555555.json"),
            r#"{"id":"5555555555555555","created_at":1,"pid":1}"#,
        )
        .expect("w");
        std::os::unix::fs::symlink("/etc/passwd", dir.join("6666666666666666.json"))
            .expect("symlink");
        std::fs::create_dir(dir.join("7777777777777777.json")).expect("dir");
        std::fs::write(
            dir.join("8888888888888888.json"),
            r#"{"id":"8888888888888888","created_at":1}"#,
        )
        .expect("w");
        let all = list(dir, &users);
        assert_eq!(
            all.iter().map(|h| h.file.id.as_str()).collect::<Vec<_>>(),
            ["8888888888888888"]
        );
    }
}
