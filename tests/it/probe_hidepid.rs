//! Never a false zero: a probe that cannot see other users' processes fails loudly.

use crate::harness::{bin, is_root, machine_lock, require, user_exists, TEST_USER};
use std::process::{Command, Output};

/// Runs `emf-ssh count` in a private mount namespace whose /proc is mounted with `options`,
/// as the unprivileged test user (or as root).
fn count_with_proc_mount(options: &str, as_root: bool) -> Output {
    emf_ssh_with_proc_mount(options, as_root, "count")
}

/// Runs `emf-ssh ARGS` likewise.
fn emf_ssh_with_proc_mount(options: &str, as_root: bool, args: &str) -> Output {
    let drop_privileges = if as_root {
        String::new()
    } else {
        format!("setpriv --reuid={TEST_USER} --regid={TEST_USER} --clear-groups ")
    };
    let script = format!(
        "mount -t proc -o {options} proc /proc && exec {drop_privileges}{} {args}",
        bin()
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare")
}

fn prerequisites() -> bool {
    require(is_root(), "root (to mount proc in a private namespace)")
        && require(user_exists(TEST_USER), "user emfssh-test")
        && require(
            Command::new("unshare").arg("--version").output().is_ok(),
            "unshare (util-linux)",
        )
}

#[test]
fn hidepid_is_an_error_never_a_zero() {
    let _machine = machine_lock();
    if !prerequisites() {
        return;
    }
    for hide in ["hidepid=2", "hidepid=1", "hidepid=invisible"] {
        let out = count_with_proc_mount(hide, false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{hide}: exit status, stderr: {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "{hide}: nothing on stdout, got {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains("hides other users' processes"),
            "{hide}: {stderr}"
        );
        assert!(
            stderr.contains("hidepid="),
            "{hide}: names the option: {stderr}"
        );
    }
}

#[test]
fn the_same_user_counts_on_a_plain_proc_and_root_sees_through_hidepid() {
    let _machine = machine_lock();
    if !prerequisites() {
        return;
    }
    for (options, as_root) in [("rw", false), ("hidepid=2", true)] {
        let out = count_with_proc_mount(options, as_root);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{options}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.trim().parse::<usize>().is_ok(),
            "{options}: a number, got {text:?}"
        );
    }
}

/// The daemon refuses to start blind: the unit's ExecStartPre and `run` itself exit 1.
#[test]
fn the_daemon_refuses_to_start_blind() {
    let _machine = machine_lock();
    if !prerequisites() {
        return;
    }
    for args in [
        "run --check",
        "run --sink stdout --instance-id i-0123456789abcdef0",
    ] {
        let out = emf_ssh_with_proc_mount("hidepid=2", false, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args}: {stderr}");
        assert!(out.stdout.is_empty(), "{args}: nothing published");
        assert!(
            stderr.contains("hides other users' processes"),
            "{args}: {stderr}"
        );
    }
}
