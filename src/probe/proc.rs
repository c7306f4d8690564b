//! Reading `/proc` (the only I/O of the probe).
//!
//! Cost model (FACTS.md §1): opening any per-process file costs ~20 µs, so a scan of every
//! process is ~0.2 s at 10,000 processes. A sample therefore walks *down* from a few roots
//! (PID 1, sshd's pid files, and the parents under which sessions were last found) through
//! `/proc/PID/task/PID/children`, touching only sshd's processes and the roots' direct children.
//!
//! How a 0 is confirmed: the tree walk can miss sessions (a listener under a supervisor we do not
//! know yet, a child list read while a sibling exits, which procfs(5) warns about). A miss is
//! harmless while the walk still finds someone — the instance stays up either way — but a 0 is
//! only ever reported after a full scan of every process in `/proc` agrees. Full scans also refresh
//! the roots, and run every `full_scan_every` samples so the session list stays complete.

use super::title::{
    argv_of, classify_sshd, SshdTitle, MOSH_COMM, SSHD_COMMS, SSM_AGENT_COMMS, SSM_WORKER_COMM,
    SSM_WORKER_NAME,
};
use super::{Kind, ProbeError, ScanMethod, Session, Snapshot};
use procfs::process::{FDTarget, Process};
use procfs::ProcError;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where and how to look.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The proc file system to read (`/proc`; tests use fixture trees).
    pub root: PathBuf,
    /// sshd pid files: their listeners are walked from without a full scan.
    pub sshd_pid_files: Vec<PathBuf>,
    /// Look up each SSH session's client address (needs to read the session's fds: root).
    pub remote_addresses: bool,
    /// Force a full scan after this many tree-walk samples (0: only to confirm a zero).
    pub full_scan_every: u32,
    /// Where uid -> user name comes from, for SSM and mosh sessions.
    pub passwd: PathBuf,
    /// Check the mount and PID 1 for hidepid before trusting a zero (off only for fixture trees
    /// that have no `self/mountinfo`).
    pub check_visibility: bool,
    /// Where the session ptys live (`/dev`; tests use a fixture tree).
    pub dev_root: PathBuf,
    /// Where `emf-ssh hold` keeps holds (`None`: holds are not counted).
    pub holds_dir: Option<PathBuf>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            root: PathBuf::from("/proc"),
            sshd_pid_files: vec![
                PathBuf::from("/run/sshd.pid"),
                PathBuf::from("/var/run/sshd.pid"),
            ],
            remote_addresses: true,
            full_scan_every: 360,
            passwd: PathBuf::from("/etc/passwd"),
            check_visibility: true,
            dev_root: PathBuf::from("/dev"),
            holds_dir: Some(PathBuf::from(super::hold::DEFAULT_HOLDS_DIR)),
        }
    }
}

/// What we know about one process after reading its `stat`.
#[derive(Debug, Clone)]
struct Info {
    pid: i32,
    ppid: i32,
    comm: String,
    starttime: u64,
}

/// What one process contributes.
enum Found {
    Session(Session),
    /// Not counted, but sessions may hang below it (listener, monitor, SSM agent).
    Container,
    Nothing,
}

/// A sampler over one proc root. Keeps the roots of the last walk between samples.
#[derive(Debug)]
pub struct Probe {
    opts: ProbeOptions,
    /// pid -> starttime, so a recycled pid is not mistaken for the old root.
    roots: BTreeMap<i32, u64>,
    tree_samples_since_full: u32,
    boot_time: Option<u64>,
    ticks_per_second: u64,
    users: HashMap<u32, String>,
    /// (pid, start) -> client address. A connection's peer never changes, and reading the TCP
    /// tables costs ~1.5 ms whatever the number of sessions, so each session is looked up once.
    remotes: HashMap<(i32, Option<u64>), Option<String>>,
    euid: u32,
}

impl Probe {
    pub fn new(opts: ProbeOptions) -> Result<Self, ProbeError> {
        let euid = effective_uid();
        let boot_time = std::fs::read_to_string(opts.root.join("stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse().ok())
            });
        let probe = Probe {
            opts,
            roots: BTreeMap::new(),
            tree_samples_since_full: 0,
            boot_time,
            ticks_per_second: procfs::ticks_per_second().max(1),
            users: HashMap::new(),
            remotes: HashMap::new(),
            euid,
        };
        probe.check_visible()?;
        Ok(probe)
    }

    pub fn options(&self) -> &ProbeOptions {
        &self.opts
    }

    /// One sample. `now_ms` (Unix milliseconds) stamps the snapshot and computes session ages.
    pub fn sample(&mut self, now_ms: u64) -> Result<Snapshot, ProbeError> {
        let due_full = self.opts.full_scan_every > 0
            && self.tree_samples_since_full >= self.opts.full_scan_every;
        // PID 1 is always a root (socket-activated sshd and sessions that outlived an sshd restart
        // hang below it), so the walk is worth trying even before any full scan.
        if !due_full {
            let sessions = self.walk(now_ms)?;
            if !sessions.is_empty() {
                self.tree_samples_since_full += 1;
                return Ok(self.snapshot(now_ms, ScanMethod::Tree, sessions));
            }
        }
        // A zero (or a due refresh) is decided by reading everything.
        self.check_visible()?;
        let sessions = self.full_scan(now_ms)?;
        self.tree_samples_since_full = 0;
        Ok(self.snapshot(now_ms, ScanMethod::Full, sessions))
    }

    fn snapshot(
        &mut self,
        now_ms: u64,
        method: ScanMethod,
        mut sessions: Vec<Session>,
    ) -> Snapshot {
        if self.opts.remote_addresses {
            self.fill_remote_addresses(&mut sessions);
        }
        for s in sessions.iter_mut().filter(|s| s.kind == Kind::Ssh) {
            s.idle_secs = tty_idle_secs(&self.opts.dev_root, &s.tty, now_ms / 1000);
        }
        if let Some(dir) = &self.opts.holds_dir {
            // Holds add to what the processes show; they never decide a zero on their own.
            let passwd = std::cell::OnceCell::new();
            let users = |uid: u32| {
                let map = passwd.get_or_init(|| {
                    std::fs::read_to_string(&self.opts.passwd)
                        .map(|t| parse_passwd(&t))
                        .unwrap_or_default()
                });
                map.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
            };
            sessions.extend(super::hold::sessions(
                dir,
                now_ms / 1000,
                &self.opts.root,
                &users,
            ));
        }
        sessions.sort_by_key(|s| (s.kind, s.started_at, s.pid));
        Snapshot {
            taken_at_ms: now_ms,
            method,
            sessions,
        }
    }

    /// Refuses to go on when other users' processes may be hidden from us.
    fn check_visible(&self) -> Result<(), ProbeError> {
        let root = &self.opts.root;
        if let Err(source) = std::fs::read_dir(root) {
            return Err(ProbeError::NoProc {
                root: root.clone(),
                source,
            });
        }
        if !self.opts.check_visibility || self.euid == 0 {
            // Root sees through hidepid (CAP_SYS_PTRACE), and fixture trees have no mount table.
            return Ok(());
        }
        if let Some(option) = hidepid_option(root) {
            return Err(ProbeError::Hidden {
                root: root.clone(),
                option,
                uid: self.euid,
            });
        }
        // Belt and braces: a namespace's PID 1 is always there unless something hides it.
        match Process::new_with_root(root.join("1")).and_then(|p| p.stat()) {
            Ok(_) => Ok(()),
            Err(ProcError::PermissionDenied(_)) | Err(ProcError::NotFound(_)) => {
                Err(ProbeError::Hidden {
                    root: root.clone(),
                    option: "PID 1 is not visible".into(),
                    uid: self.euid,
                })
            }
            Err(e) => Err(read_error(root.join("1/stat"), e)),
        }
    }

    /// Walks from the roots down through sshd's and the SSM agent's processes.
    fn walk(&mut self, now_ms: u64) -> Result<Vec<Session>, ProbeError> {
        let mut starts: Vec<i32> = vec![1];
        for file in &self.opts.sshd_pid_files {
            if let Some(pid) = std::fs::read_to_string(file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                starts.push(pid);
            }
        }
        // Drop cached roots whose pid now belongs to another process.
        let cached: Vec<(i32, u64)> = self.roots.iter().map(|(p, s)| (*p, *s)).collect();
        for (pid, start) in cached {
            match self.read_info(pid)? {
                Some(info) if info.starttime == start => starts.push(pid),
                _ => {
                    self.roots.remove(&pid);
                }
            }
        }
        starts.sort_unstable();
        starts.dedup();

        let mut sessions = Vec::new();
        let mut seen: HashSet<i32> = starts.iter().copied().collect();
        let mut queue: Vec<(i32, u8)> = starts.into_iter().map(|p| (p, 0)).collect();
        while let Some((pid, depth)) = queue.pop() {
            for child in self.children(pid)? {
                if !seen.insert(child) {
                    continue;
                }
                let Some(info) = self.read_info(child)? else {
                    continue;
                };
                match self.examine(&info, now_ms)? {
                    Found::Session(s) => sessions.push(s),
                    // listener -> monitor -> session is the deepest chain; the SSM agent is
                    // agent -> agent worker -> session worker. Depth 6 bounds any cycle.
                    Found::Container if depth < 6 => queue.push((child, depth + 1)),
                    _ => {}
                }
            }
        }
        Ok(sessions)
    }

    /// Reads every process. Also remembers under which parents the sessions were found.
    fn full_scan(&mut self, now_ms: u64) -> Result<Vec<Session>, ProbeError> {
        let root = &self.opts.root;
        let dir = std::fs::read_dir(root).map_err(|source| ProbeError::NoProc {
            root: root.clone(),
            source,
        })?;
        let pids: Vec<i32> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        let mut sessions = Vec::new();
        // pid -> ppid of every process that is a session or may have sessions below it.
        let mut interesting: HashMap<i32, Info> = HashMap::new();
        let mut comm = Vec::with_capacity(32);
        for pid in pids {
            // Cheap first look: `comm` is one short read, `stat` (and procfs's directory handle)
            // only for the few processes whose name matters. Halves the cost of a full scan.
            if !self.comm_may_matter(pid, &mut comm)? {
                continue;
            }
            let Some(info) = self.read_info(pid)? else {
                continue;
            };
            match self.examine(&info, now_ms)? {
                Found::Session(s) => {
                    sessions.push(s);
                    interesting.insert(pid, info);
                }
                Found::Container => {
                    interesting.insert(pid, info);
                }
                Found::Nothing => {}
            }
        }
        // Roots for the next walks: the parents of the topmost interesting processes.
        let mut roots = BTreeMap::new();
        for info in interesting.values() {
            if !interesting.contains_key(&info.ppid) && info.ppid > 0 {
                if let Some(parent) = self.read_info(info.ppid)? {
                    roots.insert(parent.pid, parent.starttime);
                }
            }
        }
        self.roots = roots;
        Ok(sessions)
    }

    /// Whether `/proc/PID/comm` names a process the probe looks at. Vanished: `false`;
    /// permission denied: an error (we cannot see, and a 0 would be a lie).
    fn comm_may_matter(&self, pid: i32, buf: &mut Vec<u8>) -> Result<bool, ProbeError> {
        use std::io::Read as _;
        let path = self.opts.root.join(format!("{pid}/comm"));
        buf.clear();
        let read = std::fs::File::open(&path).and_then(|mut f| f.read_to_end(buf));
        if let Err(e) = read {
            return tolerate(path, e.into()).map(|_: Option<()>| false);
        }
        let name = buf.strip_suffix(b"\n").unwrap_or(buf);
        Ok(is_interesting_comm(name))
    }

    /// `Ok(None)` for a process that vanished (normal at any moment) or cannot be parsed.
    fn read_info(&self, pid: i32) -> Result<Option<Info>, ProbeError> {
        let dir = self.opts.root.join(pid.to_string());
        let stat = match Process::new_with_root(dir.clone()).and_then(|p| p.stat()) {
            Ok(s) => s,
            Err(e) => return tolerate(dir.join("stat"), e),
        };
        Ok(Some(Info {
            pid,
            ppid: stat.ppid,
            comm: stat.comm,
            starttime: stat.starttime,
        }))
    }

    /// Children of every thread of `pid`: an orphan is re-parented to *some* live thread of its
    /// reaper (a multi-threaded init keeps children on several threads), and each thread's
    /// `children` file lists only its own.
    fn children(&self, pid: i32) -> Result<Vec<i32>, ProbeError> {
        let tasks = self.opts.root.join(format!("{pid}/task"));
        let tids: Vec<String> = match std::fs::read_dir(&tasks) {
            Ok(d) => d
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(e) => return tolerate(tasks, e.into()).map(|_: Option<()>| Vec::new()),
        };
        let mut kids = Vec::new();
        for tid in tids {
            let path = tasks.join(&tid).join("children");
            match std::fs::read_to_string(&path) {
                Ok(s) => kids.extend(s.split_whitespace().filter_map(|c| c.parse::<i32>().ok())),
                Err(e) => tolerate(path, e.into()).map(|_: Option<()>| ())?,
            }
        }
        Ok(kids)
    }

    fn examine(&mut self, info: &Info, now_ms: u64) -> Result<Found, ProbeError> {
        let comm = info.comm.as_str();
        let kind = if SSHD_COMMS.contains(&comm) {
            Kind::Ssh
        } else if comm == MOSH_COMM {
            Kind::Mosh
        } else if comm == SSM_WORKER_COMM {
            Kind::Ssm
        } else if SSM_AGENT_COMMS.contains(&comm) {
            return Ok(Found::Container);
        } else {
            return Ok(Found::Nothing);
        };
        let dir = self.opts.root.join(info.pid.to_string());
        let process = match Process::new_with_root(dir.clone()) {
            Ok(p) => p,
            Err(e) => return tolerate(dir, e).map(|_: Option<()>| Found::Nothing),
        };
        let cmdline = match read_bytes(&process, "cmdline") {
            Ok(c) => c,
            Err(e) => return tolerate(dir.join("cmdline"), e).map(|_: Option<()>| Found::Nothing),
        };
        let uid = match process.uid() {
            Ok(u) => u,
            Err(e) => return tolerate(dir, e).map(|_: Option<()>| Found::Nothing),
        };
        let (user, tty) = match kind {
            Kind::Ssh => match classify_sshd(&cmdline) {
                SshdTitle::Session { user, ttys } => (user, ttys.unwrap_or_else(|| "notty".into())),
                t if t.may_have_sessions_below() => return Ok(Found::Container),
                _ => return Ok(Found::Nothing),
            },
            Kind::Ssm => {
                // comm is truncated: make sure the program really is ssm-session-worker.
                let argv = argv_of(&cmdline);
                if argv.first().and_then(|a| a.rsplit('/').next()) != Some(SSM_WORKER_NAME) {
                    return Ok(Found::Nothing);
                }
                (self.user_name(uid), "notty".into())
            }
            // Holds are files, not processes (see hold.rs).
            Kind::Hold => return Ok(Found::Nothing),
            Kind::Mosh => {
                if cmdline.is_empty() {
                    return Ok(Found::Nothing); // a zombie: exited, not yet reaped
                }
                (self.user_name(uid), "notty".into())
            }
        };
        let started_at = self
            .boot_time
            .map(|b| b + info.starttime / self.ticks_per_second);
        Ok(Found::Session(Session {
            kind,
            user,
            uid,
            pid: info.pid,
            started_at,
            age_secs: started_at.map(|s| (now_ms / 1000).saturating_sub(s)),
            tty,
            remote: None,
            idle_secs: None,
            note: None,
        }))
    }

    fn user_name(&mut self, uid: u32) -> String {
        if !self.users.contains_key(&uid) {
            if let Ok(text) = std::fs::read_to_string(&self.opts.passwd) {
                self.users = parse_passwd(&text);
            }
        }
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    /// Client `ip:port` per SSH session, from the session's socket and the TCP tables of its
    /// network namespace. Without permission (not root) the address stays unknown.
    fn fill_remote_addresses(&mut self, sessions: &mut [Session]) {
        let mut tables: Option<HashMap<u64, String>> = None;
        let mut known = HashMap::with_capacity(sessions.len());
        for s in sessions.iter_mut().filter(|s| s.kind == Kind::Ssh) {
            let key = (s.pid, s.started_at);
            if let Some(remote) = self.remotes.remove(&key) {
                s.remote = remote.clone();
                known.insert(key, remote);
                continue;
            }
            s.remote = self.lookup_remote(s.pid, &mut tables);
            known.insert(key, s.remote.clone());
        }
        // Forget sessions that ended.
        self.remotes = known;
    }

    fn lookup_remote(&self, pid: i32, tables: &mut Option<HashMap<u64, String>>) -> Option<String> {
        let process = Process::new_with_root(self.opts.root.join(pid.to_string())).ok()?;
        let inodes: Vec<u64> = process
            .fd()
            .ok()?
            .filter_map(|fd| fd.ok())
            .filter_map(|fd| match fd.target {
                FDTarget::Socket(inode) => Some(inode),
                _ => None,
            })
            .collect();
        if inodes.is_empty() {
            return None;
        }
        let table = tables.get_or_insert_with(|| {
            let v4 = process.tcp().unwrap_or_default();
            let v6 = process.tcp6().unwrap_or_default();
            v4.into_iter()
                .chain(v6)
                .map(|e| (e.inode, e.remote_address.to_string()))
                .collect()
        });
        inodes.iter().find_map(|i| table.get(i).cloned())
    }
}

fn read_bytes(process: &Process, name: &str) -> Result<Vec<u8>, ProcError> {
    let mut f = process.open_relative(name)?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(ProcError::from)?;
    Ok(buf)
}

/// Process-level errors that are normal: the process exited (ENOENT/ESRCH) or its files do not
/// parse. Permission problems are not normal: they mean we cannot see, and a 0 would be a lie.
fn tolerate<T>(path: PathBuf, e: ProcError) -> Result<Option<T>, ProbeError> {
    match e {
        ProcError::NotFound(_) | ProcError::Incomplete(_) | ProcError::Other(_) => Ok(None),
        ProcError::PermissionDenied(_) => Err(ProbeError::PermissionDenied { path }),
        ProcError::Io(ref io, _) if io.raw_os_error() == Some(3) /* ESRCH */ => Ok(None),
        other => {
            tracing::debug!(path = %path.display(), error = %other, "skipping unreadable process");
            Ok(None)
        }
    }
}

fn read_error(path: PathBuf, e: ProcError) -> ProbeError {
    ProbeError::Read {
        path,
        message: e.to_string(),
    }
}

/// The `hidepid=` (or `subset=pid`) option of the proc mount at `root`, when it hides anything.
fn hidepid_option(root: &Path) -> Option<String> {
    let mounts = procfs::process::Process::myself().ok()?.mountinfo().ok()?;
    let canonical = std::fs::canonicalize(root).ok()?;
    let m = mounts
        .into_iter()
        .rev()
        .find(|m| m.fs_type == "proc" && m.mount_point == canonical)?;
    m.super_options.iter().find_map(|(k, v)| {
        let v = v.as_deref().unwrap_or("");
        match k.as_str() {
            "hidepid" if !matches!(v, "0" | "off") => Some(format!("hidepid={v}")),
            "subset" if v == "pid" => None, // hides non-process files only
            _ => None,
        }
    })
}

/// This process's effective uid (`u32::MAX` if unreadable: then treated as unprivileged).
pub fn effective_uid() -> u32 {
    procfs::process::Process::myself()
        .and_then(|p| p.status())
        .ok()
        .map(|s| s.euid)
        .unwrap_or(u32::MAX)
}

/// uid -> name from `/etc/passwd` text.
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_owned()))
        })
        .collect()
}

/// Idle time of a session's ptys: since the newest access time (terminal input updates it, as
/// `w` and `who -u` rely on). `None` without a pty or when no tty can be stat'ed.
pub fn tty_idle_secs(dev_root: &Path, ttys: &str, now_secs: u64) -> Option<u64> {
    let newest = ttys
        .split(',')
        .filter(|t| t.starts_with("pts/") || t.starts_with("tty"))
        .filter_map(|t| std::fs::metadata(dev_root.join(t)).ok())
        .map(|m| std::os::unix::fs::MetadataExt::atime(&m).max(0) as u64)
        .max()?;
    Some(now_secs.saturating_sub(newest))
}

/// Process names the probe examines (sshd's, mosh's, the SSM agent's and its session workers).
fn is_interesting_comm(name: &[u8]) -> bool {
    SSHD_COMMS.iter().any(|c| c.as_bytes() == name)
        || name == MOSH_COMM.as_bytes()
        || name == SSM_WORKER_COMM.as_bytes()
        || SSM_AGENT_COMMS.iter().any(|c| c.as_bytes() == name)
}
