//! `emf-ssh count` against a real OpenSSH server with real client sessions.

use crate::harness::{emf_ssh, machine_lock, wait_for, Sshd, TEST_USER};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::Duration;

fn count_json(args: &[&str]) -> Value {
    let mut all = vec!["count", "--json"];
    all.extend_from_slice(args);
    let out = emf_ssh(&all);
    assert!(
        out.status.success(),
        "count failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("count --json prints JSON")
}

/// `pts/3` -> `pts`, `pts/3,pts/4` -> `pts,pts`: tty numbers depend on the machine.
fn tty_shape(tty: &str) -> String {
    tty.split(',')
        .map(|t| t.split('/').next().unwrap_or(t))
        .collect::<Vec<_>>()
        .join(",")
}

/// Our sessions (those not present before the test) as sorted (user, tty shape).
fn ours(report: &Value, baseline: &BTreeSet<i64>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = report["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter(|s| !baseline.contains(&s["pid"].as_i64().unwrap_or_default()))
        .map(|s| {
            assert_eq!(s["kind"], "ssh");
            (
                s["user"].as_str().unwrap_or_default().to_owned(),
                tty_shape(s["tty"].as_str().unwrap_or_default()),
            )
        })
        .collect();
    v.sort();
    v
}

struct Counter {
    baseline: BTreeSet<i64>,
    pid_file: String,
}

impl Counter {
    /// Waits until exactly `expected` of our sessions are counted, with and without the pid-file
    /// shortcut, and that `count` (plain) agrees with the JSON.
    fn expect(&self, step: &str, expected: &[(&str, &str)]) -> Value {
        let mut want: Vec<(String, String)> = expected
            .iter()
            .map(|(u, t)| (u.to_string(), t.to_string()))
            .collect();
        want.sort();
        let mut last = Vec::new();
        let report = wait_for(Duration::from_secs(15), || {
            let r = count_json(&["--sshd-pid-file", &self.pid_file]);
            last = ours(&r, &self.baseline);
            (last == want).then_some(r)
        })
        .unwrap_or_else(|| panic!("{step}: expected {want:?}, counted {last:?}"));
        let without_pid_file = count_json(&[]);
        assert_eq!(
            ours(&without_pid_file, &self.baseline),
            want,
            "{step}: without the pid file"
        );
        let plain = emf_ssh(&["count"]);
        let n: usize = String::from_utf8_lossy(&plain.stdout)
            .trim()
            .parse()
            .expect("a number");
        assert_eq!(n, want.len() + self.baseline.len(), "{step}: plain count");
        if report["count"] != 0 {
            assert_eq!(
                report["method"], "tree",
                "{step}: sessions are found without a full scan"
            );
        } else {
            assert_eq!(
                report["method"], "full",
                "{step}: a zero is confirmed by a full scan"
            );
        }
        report
    }
}

/// Titles of all sshd-family processes, read the way `ps` would.
fn sshd_titles() -> Vec<String> {
    let mut titles = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let t = String::from_utf8_lossy(c.split(|b| *b == 0).next().unwrap_or_default())
                .into_owned();
            if t.starts_with("sshd") {
                titles.push(t);
            }
        }
    }
    titles
}

#[test]
fn real_sshd_counts_authenticated_connections_through_restart() {
    let _machine = machine_lock();
    let Some(mut sshd) = Sshd::start() else {
        return;
    };
    let first = count_json(&[]);
    let baseline: BTreeSet<i64> = first["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["pid"].as_i64())
        .collect();
    let c = Counter {
        baseline,
        pid_file: sshd.pid_file().display().to_string(),
    };
    c.expect("fresh server", &[]);

    // Pre-auth: a TCP connection holding the banner, and a user name sent with auth pending.
    let mut tcp = BufReader::new(TcpStream::connect(("127.0.0.1", sshd.port)).expect("connect"));
    let mut banner = String::new();
    tcp.read_line(&mut banner).expect("banner");
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner}");
    sshd.open_pending_auth(TEST_USER);
    let priv_title = format!("sshd: {TEST_USER} [priv]");
    let seen = wait_for(Duration::from_secs(10), || {
        sshd_titles().contains(&priv_title).then_some(())
    });
    assert!(
        seen.is_some(),
        "no pending-auth monitor among {:?}",
        sshd_titles()
    );
    // The classic `grep '\[priv\]'` recipe would count the pending client; we must not.
    c.expect("pre-auth connections only", &[]);

    sshd.open(TEST_USER, &["-tt"], true);
    c.expect("pty session", &[(TEST_USER, "pts")]);
    sshd.open(TEST_USER, &["-T"], true);
    c.expect("notty session", &[(TEST_USER, "pts"), (TEST_USER, "notty")]);
    sshd.open(TEST_USER, &["-N"], false);
    let three = [
        (TEST_USER, "pts"),
        (TEST_USER, "notty"),
        (TEST_USER, "notty"),
    ];
    c.expect("-N session", &three);
    sshd.open("root", &["-tt"], true);
    let mut four = three.to_vec();
    four.push(("root", "pts"));
    let report = c.expect("root session", &four);
    for s in report["sessions"].as_array().expect("sessions") {
        let remote = s["remote"].as_str().unwrap_or_default();
        assert!(
            remote.starts_with("127.0.0.1:"),
            "root sees client addresses: {s}"
        );
    }

    // Two channels over one ControlMaster connection count once.
    let cm = sshd.path("cm").display().to_string();
    sshd.open(
        TEST_USER,
        &[
            "-o",
            "ControlMaster=yes",
            "-o",
            &format!("ControlPath={cm}"),
            "-N",
        ],
        false,
    );
    let mut five = four.clone();
    five.push((TEST_USER, "notty"));
    c.expect("control master, no channel yet", &five);
    sshd.open(
        TEST_USER,
        &[
            "-tt",
            "-o",
            "ControlMaster=no",
            "-o",
            &format!("ControlPath={cm}"),
        ],
        true,
    );
    sshd.open(
        TEST_USER,
        &[
            "-tt",
            "-o",
            "ControlMaster=no",
            "-o",
            &format!("ControlPath={cm}"),
        ],
        true,
    );
    five.pop();
    five.push((TEST_USER, "pts,pts"));
    c.expect("two channels on one connection", &five);

    // sshd restart: the sessions outlive the listener and hang below PID 1.
    sshd.kill_listener();
    c.expect("listener killed", &five);
    sshd.start_listener();
    c.expect("listener restarted", &five);
    sshd.open(TEST_USER, &["-T"], true);
    let mut six = five.clone();
    six.push((TEST_USER, "notty"));
    c.expect("new session after restart", &six);

    drop(tcp);
    sshd.close_clients();
    c.expect("all closed", &[]);
}
