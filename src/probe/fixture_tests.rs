//! The probe against fixture `/proc` trees: every row of FACTS.md §1, both title prefixes,
//! and bad data. Real sshd processes are covered by the integration tests.

use super::*;
use std::fs;
use std::path::Path;

/// A fake proc root. Each process gets `stat`, `cmdline` and `task/PID/children`.
struct Tree {
    dir: tempfile::TempDir,
    children: std::collections::BTreeMap<i32, Vec<i32>>,
}

const BTIME: u64 = 1_700_000_000;

impl Tree {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join("stat"),
            format!("cpu 1 2 3\nbtime {BTIME}\n"),
        )
        .expect("write stat");
        let mut t = Tree {
            dir,
            children: Default::default(),
        };
        t.proc(1, 0, "init", b"/sbin/init\0");
        t
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a process; `starttime` is pid * 100 ticks so ages differ.
    fn proc(&mut self, pid: i32, ppid: i32, comm: &str, cmdline: &[u8]) -> &mut Self {
        let d = self.root().join(pid.to_string());
        fs::create_dir_all(d.join(format!("task/{pid}"))).expect("mkdir");
        let start = pid as u64 * 100;
        fs::write(
            d.join("stat"),
            format!(
                "{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194304 97 0 0 0 0 0 0 0 20 0 1 0 {start} \
                 3133440 394 18446744073709551615 1 1 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 1 1 1 1 1 1 1 0\n"
            ),
        )
        .expect("write stat");
        fs::write(d.join("cmdline"), cmdline).expect("write cmdline");
        fs::write(d.join("comm"), format!("{comm}\n")).expect("write comm");
        if ppid > 0 {
            self.children.entry(ppid).or_default().push(pid);
        }
        self.children.entry(pid).or_default();
        self.write_children();
        self
    }

    /// A current-style listener (`[listener]` title).
    fn listener(&mut self, pid: i32, ppid: i32) -> &mut Self {
        self.proc(
            pid,
            ppid,
            "sshd",
            b"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups\0\0",
        )
    }

    /// An authenticated OpenSSH 9.2 connection: `USER [priv]` monitor at `monitor`, the counted
    /// process `sshd: TITLE` at `monitor + 1`.
    fn session(&mut self, monitor: i32, parent: i32, user: &str, title: &str) -> &mut Self {
        self.proc(
            monitor,
            parent,
            "sshd",
            format!("sshd: {user} [priv]\0").as_bytes(),
        );
        self.proc(
            monitor + 1,
            monitor,
            "sshd",
            format!("sshd: {title}\0").as_bytes(),
        )
    }

    fn write_children(&self) {
        for (pid, kids) in &self.children {
            let path = self.root().join(format!("{pid}/task/{pid}/children"));
            if path.parent().is_some_and(|p| p.exists()) {
                let text: Vec<String> = kids.iter().map(|k| format!("{k} ")).collect();
                fs::write(path, text.concat()).expect("write children");
            }
        }
    }

    fn probe(&self, pid_files: Vec<std::path::PathBuf>, full_scan_every: u32) -> Probe {
        Probe::new(ProbeOptions {
            root: self.root().to_path_buf(),
            sshd_pid_files: pid_files,
            remote_addresses: false,
            full_scan_every,
            passwd: self.root().join("passwd"),
            check_visibility: false,
            dev_root: self.root().join("dev"),
            holds_dir: None,
        })
        .expect("probe")
    }

    fn sample(&self) -> Snapshot {
        self.probe(vec![], 0)
            .sample(BTIME * 1000 + 3_600_000)
            .expect("sample")
    }
}

fn users_ttys(s: &Snapshot) -> Vec<(Kind, String, String)> {
    s.sessions
        .iter()
        .map(|x| (x.kind, x.user.clone(), x.tty.clone()))
        .collect()
}

/// listener -> the OpenSSH 9.2 rows of FACTS.md §1, or the 9.8+ rows with `sshd-session`.
fn openssh_tree(session_comm: &str, prefix: &str) -> Tree {
    let mut t = Tree::new();
    let p = |s: &str| format!("{prefix}: {s}\0\0\0\0").into_bytes();
    t.listener(100, 1);
    // TCP accepted, no user yet.
    t.proc(110, 100, session_comm, &p("[accepted]"));
    t.proc(111, 110, session_comm, &p("[net]"));
    // User name sent, not authenticated.
    t.proc(120, 100, session_comm, &p("mallory [priv]"));
    t.proc(121, 120, session_comm, &p("mallory [net]"));
    t.proc(125, 100, session_comm, &p("[session-auth early]"));
    // Authenticated: pty, notty, -N.
    t.proc(130, 100, session_comm, &p("alice [priv]"));
    t.proc(131, 130, session_comm, &p("alice@pts/0"));
    t.proc(140, 100, session_comm, &p("bob [priv]"));
    t.proc(141, 140, session_comm, &p("bob@notty"));
    t.proc(150, 100, session_comm, &p("carol [priv]"));
    t.proc(151, 150, session_comm, &p("carol"));
    // Several channels on one connection.
    t.proc(160, 100, session_comm, &p("dave [priv]"));
    t.proc(161, 160, session_comm, &p("dave@pts/1,pts/2"));
    // The user's shell below a session is never looked into.
    t.proc(162, 161, "bash", b"-bash\0");
    t
}

#[test]
fn openssh_9_2_counts_authenticated_connections_only() {
    let mut t = openssh_tree("sshd", "sshd");
    // 9.2 root login: a single process, no [priv] monitor.
    t.proc(170, 100, "sshd", b"sshd: root@pts/3\0\0");
    let s = t.sample();
    assert_eq!(
        users_ttys(&s),
        vec![
            (Kind::Ssh, "alice".into(), "pts/0".into()),
            (Kind::Ssh, "bob".into(), "notty".into()),
            (Kind::Ssh, "carol".into(), "notty".into()),
            (Kind::Ssh, "dave".into(), "pts/1,pts/2".into()),
            (Kind::Ssh, "root".into(), "pts/3".into()),
        ]
    );
    assert_eq!(
        s.method,
        ScanMethod::Tree,
        "sessions below PID 1's listener need no full scan"
    );
    assert_eq!(s.count(&KindSet::all()), 5);
}

#[test]
fn openssh_9_8_sshd_session_prefix_and_root_monitor() {
    let mut t = openssh_tree("sshd-session", "sshd-session");
    // From 9.8 root gets a monitor too.
    t.proc(170, 100, "sshd-session", b"sshd-session: root [priv]\0");
    t.proc(171, 170, "sshd-session", b"sshd-session: root@pts/3\0");
    t.proc(180, 100, "sshd-auth", b"sshd-auth: eve [net]\0");
    let s = t.sample();
    let users: Vec<_> = s.sessions.iter().map(|x| x.user.as_str()).collect();
    assert_eq!(users, ["alice", "bob", "carol", "dave", "root"]);
    assert_eq!(s.sessions[0].pid, 131);
    assert_eq!(
        s.sessions[0].started_at,
        Some(BTIME + 131 * 100 / procfs::ticks_per_second())
    );
}

#[test]
fn old_openssh_listener_with_untouched_argv() {
    let mut t = Tree::new();
    t.proc(100, 1, "sshd", b"/usr/sbin/sshd\0-D\0");
    t.session(130, 100, "ec2-user", "ec2-user@pts/0");
    assert_eq!(t.sample().count(&KindSet::all()), 1);
}

#[test]
fn pre_auth_only_is_a_confirmed_zero() {
    let mut t = Tree::new();
    t.proc(
        100,
        1,
        "sshd",
        b"sshd: /usr/sbin/sshd -D [listener] 2 of 10-100 startups\0",
    );
    t.proc(120, 100, "sshd", b"sshd: root [priv]\0");
    t.proc(121, 120, "sshd", b"sshd: root [net]\0");
    t.proc(110, 100, "sshd", b"sshd: [accepted]\0");
    let s = t.sample();
    assert_eq!(s.count(&KindSet::all()), 0);
    assert_eq!(
        s.method,
        ScanMethod::Full,
        "a zero is only reported after a full scan"
    );
}

#[test]
fn sessions_that_outlived_a_restart_hang_below_pid_1() {
    let mut t = Tree::new();
    // Old sessions re-parented to PID 1, new listener with a session of its own.
    t.session(130, 1, "alice", "alice@pts/0");
    t.proc(140, 1, "sshd", b"sshd: root@notty\0");
    t.listener(200, 1);
    t.session(230, 200, "bob", "bob");
    let s = t.sample();
    assert_eq!(s.count(&KindSet::all()), 3);
    assert_eq!(s.method, ScanMethod::Tree);
}

#[test]
fn socket_activated_per_connection_sshd_has_no_listener() {
    let mut t = Tree::new();
    // sshd@.service (Accept=yes): one `sshd -i` per connection, directly below systemd.
    t.session(300, 1, "alice", "alice@pts/0");
    assert_eq!(t.sample().count(&KindSet::all()), 1);
}

#[test]
fn listener_under_an_unknown_supervisor_is_found_by_the_full_scan_and_then_walked() {
    let mut t = Tree::new();
    t.proc(50, 1, "runsv", b"runsv\0sshd\0");
    t.listener(100, 50);
    t.session(130, 100, "alice", "alice@pts/0");
    let mut probe = t.probe(vec![], 0);
    let first = probe.sample(BTIME * 1000).expect("sample");
    assert_eq!(
        (first.method, first.count(&KindSet::all())),
        (ScanMethod::Full, 1)
    );
    // The full scan remembered runsv as a root: the next sample walks from it.
    let second = probe.sample(BTIME * 1000).expect("sample");
    assert_eq!(
        (second.method, second.count(&KindSet::all())),
        (ScanMethod::Tree, 1)
    );
}

#[test]
fn pid_file_names_a_listener_the_walk_starts_from() {
    let mut t = Tree::new();
    t.proc(50, 1, "bash", b"bash\0");
    t.listener(100, 50);
    t.session(130, 100, "alice", "alice@notty");
    let pid_file = t.root().join("sshd.pid");
    fs::write(&pid_file, "100\n").expect("pid file");
    let s = t
        .probe(vec![pid_file], 0)
        .sample(BTIME * 1000)
        .expect("sample");
    assert_eq!((s.method, s.count(&KindSet::all())), (ScanMethod::Tree, 1));
}

#[test]
fn full_scan_every_n_samples_refreshes_the_list() {
    let mut t = openssh_tree("sshd", "sshd");
    t.proc(50, 1, "bash", b"bash\0");
    t.proc(60, 50, "mosh-server", b"mosh-server new -s\0");
    let mut probe = t.probe(vec![], 2);
    let methods: Vec<_> = (0..5)
        .map(|_| {
            let s = probe.sample(BTIME * 1000).expect("sample");
            (s.method, s.count(&KindSet::all()))
        })
        .collect();
    // The walk misses the mosh-server below an unknown bash until the first full scan adds bash
    // as a root; the count is never 0 either way.
    assert_eq!(methods[0], (ScanMethod::Tree, 4));
    assert_eq!(methods[1], (ScanMethod::Tree, 4));
    assert_eq!(methods[2], (ScanMethod::Full, 5));
    assert_eq!(methods[3], (ScanMethod::Tree, 5));
}

#[test]
fn ssm_and_mosh_are_their_own_kinds() {
    let mut t = Tree::new();
    fs::write(t.root().join("passwd"), "root:x:0:0::/root:/bin/sh\n").expect("passwd");
    t.proc(40, 1, "amazon-ssm-agen", b"/usr/bin/amazon-ssm-agent\0");
    t.proc(41, 40, "ssm-agent-worke", b"/usr/bin/ssm-agent-worker\0");
    t.proc(
        42,
        41,
        "ssm-session-wor",
        b"/usr/bin/ssm-session-worker\0alice-0123456789abcdef0\0i-0abc\0",
    );
    // Truncated comm alone is not enough: argv[0] must be the worker.
    t.proc(43, 41, "ssm-session-wor", b"/opt/ssm-session-wormhole\0");
    t.proc(
        60,
        1,
        "mosh-server",
        b"mosh-server new -s -c 256 -l LANG=C.UTF-8\0",
    );
    let s = t.sample();
    let kinds: Vec<_> = s.sessions.iter().map(|x| x.kind).collect();
    assert_eq!(kinds, [Kind::Ssm, Kind::Mosh]);
    let uid = fs::metadata(t.root().join("60"))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .expect("uid");
    if uid == 0 {
        assert_eq!(s.sessions[0].user, "root");
    }
    assert_eq!(s.count(&"ssh".parse().expect("kinds")), 0);
    assert_eq!(s.count(&"ssh,mosh".parse().expect("kinds")), 1);
}

#[test]
fn bad_data_is_skipped_never_an_error() {
    let mut t = Tree::new();
    t.listener(100, 1);
    // Truncated cmdline, empty cmdline (zombie), non-UTF-8 title and comm.
    t.proc(130, 100, "sshd", b"sshd: alice [pri");
    t.proc(140, 100, "sshd", b"");
    t.proc(150, 100, "sshd", b"sshd: \xff\xfe [priv]\0");
    t.proc(151, 150, "sshd", b"sshd: \xff\xfe@pts/4\0");
    t.proc(160, 100, "\u{fffd}weird", b"\xff\0");
    // A pid listed as a child whose directory is gone (exited mid-scan), and one with no stat.
    t.children.entry(100).or_default().push(999);
    t.write_children();
    t.proc(170, 100, "sshd", b"sshd: bob@notty\0");
    fs::remove_file(t.root().join("170/stat")).expect("rm");
    let s = t.sample();
    assert_eq!(
        users_ttys(&s),
        vec![(Kind::Ssh, "\u{fffd}\u{fffd}".into(), "pts/4".into())]
    );
}

#[test]
fn missing_proc_is_an_error_not_a_zero() {
    let err = Probe::new(ProbeOptions {
        root: "/nonexistent/proc".into(),
        ..ProbeOptions::default()
    })
    .expect_err("must fail");
    assert!(matches!(err, ProbeError::NoProc { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/proc"));
}

#[test]
fn kind_sets_parse_and_reject() {
    assert!("ssh,bogus".parse::<KindSet>().is_err());
    assert!(",".parse::<KindSet>().is_err());
    assert_eq!(
        "mosh, ssh"
            .parse::<KindSet>()
            .map(|k| k.contains(Kind::Ssh)),
        Ok(true)
    );
}

#[test]
fn pty_idle_time_comes_from_the_ttys_access_time() {
    let mut t = Tree::new();
    t.listener(100, 1);
    t.session(130, 100, "alice", "alice@pts/0,pts/1");
    t.session(140, 100, "bob", "bob@notty");
    let now = BTIME + 10_000;
    let pts = t.root().join("dev/pts");
    fs::create_dir_all(&pts).expect("dev/pts");
    for (tty, atime) in [("0", now - 3_000), ("1", now - 700)] {
        let f = fs::File::create(pts.join(tty)).expect("tty");
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(atime);
        f.set_times(fs::FileTimes::new().set_accessed(at).set_modified(at))
            .expect("times");
    }
    let s = t.probe(vec![], 0).sample(now * 1000).expect("sample");
    let idle: Vec<Option<u64>> = s.sessions.iter().map(|x| x.idle_secs).collect();
    assert_eq!(
        idle,
        [Some(700), None],
        "the most recent input on any of its ttys; notty unknown"
    );
    let kinds = KindSet::all();
    assert_eq!(s.active_count(&kinds, None), 2);
    assert_eq!(
        s.active_count(&kinds, Some(600)),
        1,
        "alice idle for 700 s, bob (notty) always counts"
    );
    assert_eq!(s.active_count(&kinds, Some(800)), 2);
}
