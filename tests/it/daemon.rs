//! The daemon end to end: real sessions open and close under a running `emf-ssh run`, files
//! rotate, samples fail, signals arrive; every published datapoint is checked.

use crate::harness::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn read_docs(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(assert_valid_emf)
        .collect()
}

fn value(d: &Value) -> u64 {
    d["Sessions"].as_u64().expect("Sessions")
}

fn wait_docs(path: &Path, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    wait_for(Duration::from_secs(20), || {
        let d = read_docs(path);
        pred(&d).then_some(d)
    })
    .unwrap_or_else(|| {
        panic!(
            "never saw the expected datapoints in {}: {:?}",
            path.display(),
            read_docs(path)
        )
    })
}

#[test]
fn daemon_publishes_interval_maxima_of_real_sessions_and_stops_cleanly() {
    let _m = machine_lock();
    let Some(mut sshd) = Sshd::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("emf.log");
    let sink = format!("emf-file:{}", file.display());
    let daemon = Daemon::start(emf_ssh_cmd(
        &[
            "run",
            "--sink",
            &sink,
            "--interval",
            "2s",
            "--sample-every",
            "250ms",
            "--instance-id",
            TEST_INSTANCE,
        ],
        &[],
    ));
    let baseline = wait_docs(&file, |d| !d.is_empty());
    let base = value(&baseline[0]);

    // Two sessions for a while.
    sshd.open(TEST_USER, &["-T"], true);
    sshd.open("root", &["-tt"], true);
    let docs = wait_docs(&file, |d| d.iter().any(|x| value(x) == base + 2));
    let n_before = docs.len();
    let with_two = docs.iter().find(|x| value(x) == base + 2).expect("two");
    assert_eq!(with_two["SessionsByKind"]["ssh"].as_u64(), Some(base + 2));
    assert!(
        with_two["Users"]
            .as_str()
            .unwrap_or_default()
            .contains(TEST_USER),
        "{with_two}"
    );

    // All closed: back to the baseline.
    sshd.close_clients();
    let docs = wait_docs(&file, |d| {
        d.len() > n_before && d.last().is_some_and(|x| value(x) == base)
    });

    // A session shorter than the interval is not lost: the interval maximum catches it.
    let n_before = docs.len();
    sshd.open(TEST_USER, &["-T"], true);
    wait_for(Duration::from_secs(10), || {
        let o = emf_ssh(&["count"]);
        (String::from_utf8_lossy(&o.stdout).trim() == (base + 1).to_string()).then_some(())
    })
    .expect("short session up");
    std::thread::sleep(Duration::from_millis(400)); // at least one sample sees it
    sshd.close_clients();
    wait_docs(&file, |d| {
        d[n_before..].iter().any(|x| value(x) == base + 1)
    });

    // SIGTERM publishes what is pending and exits 0.
    let before_stop = read_docs(&file).len();
    let (code, _, stderr) = daemon.stop();
    assert_eq!(code, Some(0), "{stderr}");
    let docs = read_docs(&file);
    assert!(
        docs.len() > before_stop,
        "the pending interval was published on SIGTERM"
    );
    let ts: Vec<u64> = docs
        .iter()
        .map(|d| d["_aws"]["Timestamp"].as_u64().expect("ts"))
        .collect();
    assert!(ts.iter().all(|t| t % 2000 == 0), "aligned to 2 s: {ts:?}");
    assert!(
        ts.windows(2).all(|w| w[1] > w[0]),
        "one datapoint per interval: {ts:?}"
    );
    assert!(docs
        .iter()
        .all(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["StorageResolution"] == 1));
    assert!(
        docs.iter().all(|d| d["_aws"].get("LogGroupName").is_none()),
        "the agent's collect_list names the group"
    );
    assert!(docs
        .iter()
        .all(|d| d["SampleCount"].as_u64().unwrap_or(0) >= 1));
}

#[test]
fn emf_file_survives_rotation_and_failed_samples_publish_nothing() {
    let _m = machine_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("emf.log");
    // The probe reads /proc through a link we can pull away: samples then fail.
    let proc_link = dir.path().join("proc");
    std::os::unix::fs::symlink("/proc", &proc_link).expect("symlink");
    let sink = format!("emf-file:{}", file.display());
    let daemon = Daemon::start(emf_ssh_cmd(
        &[
            "run",
            "--sink",
            &sink,
            "--interval",
            "1s",
            "--sample-every",
            "200ms",
            "--instance-id",
            TEST_INSTANCE,
            "--proc-root",
            &proc_link.display().to_string(),
        ],
        &[],
    ));
    wait_docs(&file, |d| d.len() >= 2);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o644, "readable by the agent's user");

    // logrotate `create`: rename, the daemon notices and writes a new file.
    let rotated = dir.path().join("emf.log.1");
    std::fs::rename(&file, &rotated).expect("rotate");
    wait_docs(&file, |d| !d.is_empty());
    // logrotate `copytruncate`: lines keep landing whole at the start of the truncated file.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_len(0))
        .expect("truncate");
    wait_docs(&file, |d| !d.is_empty());
    // SIGHUP reopens.
    daemon.signal("HUP");
    let n = read_docs(&file).len();
    wait_docs(&file, |d| d.len() > n);

    // No /proc: samples fail loudly and nothing is published for those intervals.
    std::fs::remove_file(&proc_link).expect("unlink");
    std::thread::sleep(Duration::from_millis(300));
    let n_gap = read_docs(&file).len();
    std::thread::sleep(Duration::from_millis(2500));
    let during = read_docs(&file).len();
    assert!(
        during <= n_gap + 1,
        "at most the interval already sampled is published: {n_gap} -> {during}"
    );
    std::os::unix::fs::symlink("/proc", &proc_link).expect("symlink back");
    wait_docs(&file, |d| d.len() > during);

    let (code, _, stderr) = daemon.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("sample skipped, nothing counted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no successful sample in this interval"),
        "{stderr}"
    );
    assert!(!read_docs(&rotated).is_empty());
}

#[test]
fn status_shows_the_running_daemon_holds_and_the_alarm() {
    let _m = machine_lock();
    let Some(url) = localstack() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let holds = dir.path().join("holds");
    std::fs::create_dir(&holds).expect("holds dir");
    let name = format!("emf-ssh-status-{}", std::process::id());
    let mut env = localstack_env(&url);
    env.push(("EMF_SSH_STATE_FILE", state.display().to_string()));
    env.push(("EMF_SSH_HOLDS_DIR", holds.display().to_string()));
    env.push(("EMF_SSH_ALARM_NAME", name.clone()));
    env.push(("EMF_SSH_NAMESPACE", unique_namespace("status")));
    let env_refs = env_refs(&env);
    let daemon = Daemon::start(emf_ssh_cmd(
        &[
            "run",
            "--sink",
            "stdout",
            "--interval",
            "1s",
            "--sample-every",
            "250ms",
            "--instance-id",
            TEST_INSTANCE,
            "--kinds",
            "hold",
        ],
        &env_refs,
    ));
    let out = emf_ssh_cmd(
        &[
            "alarm",
            "install",
            "--instance-id",
            TEST_INSTANCE,
            "--period",
            "60",
            "--idle-minutes",
            "10",
        ],
        &env_refs,
    )
    .output()
    .expect("install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Idle (no hold): a zero streak and a countdown.
    let status = |extra: &[&str]| {
        let mut args = vec!["status", "--instance-id", TEST_INSTANCE, "--kinds", "hold"];
        args.extend_from_slice(extra);
        let out = emf_ssh_cmd(&args, &env_refs).output().expect("status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let idle = wait_for(Duration::from_secs(10), || {
        let s = status(&[]);
        s.contains("idle streak: 0 published since").then_some(s)
    })
    .expect("the daemon's idle streak shows up");
    assert!(
        idle.contains(&format!(
            "daemon: pid {}, sink stdout, every 1s",
            daemon.child.id()
        )),
        "{idle}"
    );
    assert!(idle.contains(&format!("alarm {name}: ")), "{idle}");
    assert!(idle.contains("=> the alarm fires in"), "{idle}");
    // A hold: counted, shown, no countdown.
    let out = emf_ssh_cmd(
        &["hold", "--for", "1h", "--reason", "status test"],
        &env_refs,
    )
    .output()
    .expect("hold");
    assert!(out.status.success());
    let busy = wait_for(Duration::from_secs(10), || {
        let s = status(&[]);
        s.contains("idle streak: none").then_some(s)
    })
    .expect("the hold ends the idle streak");
    assert!(
        busy.contains("counted now: 1 session(s)") && busy.contains("status test"),
        "{busy}"
    );
    assert!(busy.contains("=> in use"), "{busy}");
    let json: serde_json::Value = serde_json::from_str(&status(&["--json"])).expect("json");
    assert_eq!(json["count"], 1);
    assert_eq!(json["alarm"]["name"], name.as_str());
    let (code, _, stderr) = daemon.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

/// Idle mode with a real pty session: the idle clock is the tty's access time (set here as if
/// the last keystroke was an hour ago). The total still counts it; the active count does not.
#[test]
fn idle_pty_sessions_stop_counting_as_active() {
    let _m = machine_lock();
    let Some(mut sshd) = Sshd::start() else {
        return;
    };
    sshd.open(TEST_USER, &["-tt"], true);
    sshd.open(TEST_USER, &["-T"], true);
    let report = wait_for(Duration::from_secs(15), || {
        let out = emf_ssh(&["count", "--json", "--kinds", "ssh"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let ours: Vec<Value> = v["sessions"]
            .as_array()?
            .iter()
            .filter(|s| s["user"] == TEST_USER)
            .cloned()
            .collect();
        let has_pty = ours
            .iter()
            .any(|s| s["tty"].as_str().is_some_and(|t| t.starts_with("pts/")));
        (ours.len() == 2 && has_pty).then_some(ours)
    })
    .expect("two sessions");
    let tty = report
        .iter()
        .find_map(|s| s["tty"].as_str().filter(|t| t.starts_with("pts/")))
        .expect("a pty")
        .to_owned();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(format!("/dev/{tty}"))
        .and_then(|f| f.set_times(std::fs::FileTimes::new().set_accessed(hour_ago)))
        .expect("set the tty's access time");
    let out = emf_ssh(&["count", "--json", "--kinds", "ssh", "--idle-after", "10m"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let total = v["count"].as_u64().expect("count");
    assert_eq!(
        v["active"].as_u64(),
        Some(total - 1),
        "the idle pty session is not active: {v}"
    );
    let idle = v["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["tty"] == tty.as_str())
        .expect("ours");
    assert!(idle["idle_secs"].as_u64().unwrap_or(0) >= 3599, "{idle}");
    // Published: both metrics; the alarm generated for idle mode watches the active one.
    let out = emf_ssh_cmd(
        &[
            "run",
            "--once",
            "--sink",
            "stdout",
            "--kinds",
            "ssh",
            "--idle-after",
            "10m",
            "--instance-id",
            TEST_INSTANCE,
        ],
        &[],
    )
    .output()
    .expect("run");
    let doc = assert_valid_emf(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(
        doc["ActiveSessions"].as_u64(),
        Some(doc["Sessions"].as_u64().unwrap_or(0) - 1),
        "{doc}"
    );
    let out = emf_ssh_cmd(
        &[
            "gen-config",
            "alarm",
            "--idle-after",
            "10m",
            "--instance-id",
            TEST_INSTANCE,
            "--region",
            "us-east-1",
        ],
        &[],
    )
    .output()
    .expect("gen-config");
    let alarm: Value = serde_json::from_slice(&out.stdout).expect("alarm");
    assert_eq!(alarm["MetricName"], "ActiveSessions");
}

/// Sessions whose terminal is idle are warned before the stop, on their own ttys, once; with an
/// active session nobody is warned.
#[test]
fn idle_sessions_are_warned_on_their_terminals_before_the_stop() {
    let _m = machine_lock();
    let Some(mut sshd) = Sshd::start() else {
        return;
    };
    let a = sshd.open_captured(TEST_USER);
    let b = sshd.open_captured("root");
    let ttys = wait_for(Duration::from_secs(15), || {
        let out = emf_ssh(&["count", "--json", "--kinds", "ssh"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let t: Vec<String> = v["sessions"]
            .as_array()?
            .iter()
            .filter_map(|s| {
                s["tty"]
                    .as_str()
                    .filter(|t| t.starts_with("pts/"))
                    .map(str::to_owned)
            })
            .collect();
        (t.len() >= 2).then_some(t)
    })
    .expect("two pty sessions");
    let age = |tty: &str, secs: u64| {
        let t = std::time::SystemTime::now() - Duration::from_secs(secs);
        std::fs::File::options()
            .write(true)
            .open(format!("/dev/{tty}"))
            .and_then(|f| f.set_times(std::fs::FileTimes::new().set_accessed(t)))
            .expect("set atime");
    };
    let args = [
        "run",
        "--sink",
        "stdout",
        "--interval",
        "1s",
        "--sample-every",
        "200ms",
        "--kinds",
        "ssh",
        "--idle-after",
        "10m",
        "--warn-before",
        "2s",
        "--alarm-idle",
        "3s",
        "--no-rearm",
        "--instance-id",
        TEST_INSTANCE,
    ];
    // One session active: no warning anywhere.
    age(&ttys[0], 3600);
    let daemon = Daemon::start(emf_ssh_cmd(&args, &[]));
    std::thread::sleep(Duration::from_secs(5));
    let (code, _, stderr) = daemon.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warned idle sessions"), "{stderr}");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(!read(&a).contains("emf-ssh:") && !read(&b).contains("emf-ssh:"));

    // All idle: both terminals get the warning, once.
    for t in &ttys {
        age(t, 3600);
    }
    let daemon = Daemon::start(emf_ssh_cmd(&args, &[]));
    let warned = wait_for(Duration::from_secs(15), || {
        (read(&a).contains("will be stopped at") && read(&b).contains("will be stopped at"))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (code, _, stderr) = daemon.stop();
    assert!(
        warned.is_some(),
        "terminals: {:?} / {:?}\n{stderr}",
        read(&a),
        read(&b)
    );
    assert_eq!(code, Some(0), "{stderr}");
    for p in [&a, &b] {
        let text = read(p);
        assert_eq!(
            text.matches("will be stopped at").count(),
            1,
            "once per idle streak: {text:?}"
        );
        assert!(text.contains("emf-ssh hold --for 2h"), "{text:?}");
    }
}

/// The packaged unit is Type=notify with WatchdogSec=: the daemon must say READY=1 after its
/// first sample and keep sending WATCHDOG=1, or systemd fails or kills it.
#[test]
fn systemd_notify_ready_and_watchdog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let daemon = Daemon::start(emf_ssh_cmd(
        &[
            "run",
            "--sink",
            "stdout",
            "--interval",
            "1s",
            "--sample-every",
            "200ms",
            "--instance-id",
            TEST_INSTANCE,
        ],
        &[
            ("NOTIFY_SOCKET", &sock_path.display().to_string()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    ));
    let mut messages = Vec::new();
    let mut buf = [0u8; 512];
    while messages
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 3
    {
        let n = sock.recv(&mut buf).expect("a notification");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let (code, _, stderr) = daemon.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(messages[0].contains("READY=1"), "READY first: {messages:?}");
    let mut rest = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if rest.last().is_some_and(|m| m.contains("STOPPING=1")) {
            break;
        }
    }
    assert!(
        rest.iter().any(|m| m.contains("STOPPING=1")),
        "STOPPING on SIGTERM: {rest:?}"
    );
}

/// ExecStartPre=emf-ssh run --check: settings and probe checked, no AWS contacted.
#[test]
fn run_check_validates_without_aws() {
    let out = emf_ssh_cmd(&["run", "--check", "--sink", "cloudwatch"], &[])
        .output()
        .expect("check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("configuration OK: sink cloudwatch"),
        "{text}"
    );
    let out = emf_ssh_cmd(&["run", "--check", "--instance-id", "i-bad"], &[])
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an EC2 instance id"));
}
