//! `emf-ssh hold` / `release` with real processes, users and the published count.

use crate::harness::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

struct Holds {
    dir: tempfile::TempDir,
}

impl Holds {
    fn new() -> Holds {
        let dir = tempfile::tempdir().expect("tempdir");
        // Like /run/emf-ssh/holds: sticky and world-writable.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod");
        Holds { dir }
    }
    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = emf_ssh_cmd(args, &[]);
        c.env("EMF_SSH_HOLDS_DIR", self.path());
        c
    }
    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().expect("emf-ssh")
    }
    /// Holds counted now (count --json --kinds hold).
    fn counted(&self) -> Vec<Value> {
        let out = self.run(&["count", "--json", "--kinds", "hold"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        v["sessions"].as_array().cloned().unwrap_or_default()
    }
    /// Runs `emf-ssh <args>` as the unprivileged test user.
    fn run_as_user(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={TEST_USER}"),
            &format!("--regid={TEST_USER}"),
            "--clear-groups",
            bin(),
        ]);
        clean_aws_env(&mut c)
            .args(args)
            .env("EMF_SSH_HOLDS_DIR", self.path())
            .output()
            .expect("setpriv")
    }
}

#[test]
fn a_timed_hold_counts_until_it_expires_or_is_released() {
    let h = Holds::new();
    let out = h.run(&["hold", "--for", "2s", "--reason", "nightly build"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("emf-ssh release {id}")));
    let counted = h.counted();
    assert_eq!(counted.len(), 1);
    assert_eq!(counted[0]["kind"], "hold");
    assert!(counted[0]["note"]
        .as_str()
        .unwrap_or_default()
        .contains("nightly build"));
    // The published document carries it too (and the daemon reads the same files after a restart).
    for _ in 0..2 {
        let out = h.run(&[
            "run",
            "--once",
            "--sink",
            "stdout",
            "--kinds",
            "hold",
            "--instance-id",
            TEST_INSTANCE,
        ]);
        let doc = assert_valid_emf(String::from_utf8_lossy(&out.stdout).trim());
        assert_eq!(doc["Sessions"], 1);
        assert_eq!(doc["SessionsByKind"]["hold"], 1);
    }
    let gone = wait_for(Duration::from_secs(5), || {
        h.counted().is_empty().then_some(())
    });
    assert!(gone.is_some(), "the hold did not expire");
    // A second hold, released early.
    let out = h.run(&["hold", "--for", "1h"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(h.counted().len(), 1);
    let out = h.run(&["release", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(h.counted().is_empty());
}

#[test]
fn hold_while_a_command_runs() {
    let h = Holds::new();
    let mut child = h
        .cmd(&["hold", "--reason", "train", "--", "sleep", "2"])
        .spawn()
        .expect("hold -- sleep");
    let seen = wait_for(Duration::from_secs(5), || {
        (h.counted().len() == 1).then_some(())
    });
    assert!(seen.is_some(), "no hold while the command runs");
    let status = child.wait().expect("wait");
    assert!(status.success());
    assert!(h.counted().is_empty(), "the hold ends with the command");
    assert_eq!(
        std::fs::read_dir(h.dir.path())
            .map(|d| d.count())
            .unwrap_or(99),
        0,
        "its file is gone"
    );
    // The command's exit status is passed on.
    let st = h
        .cmd(&["hold", "--", "sh", "-c", "exit 7"])
        .status()
        .expect("hold");
    assert_eq!(st.code(), Some(7));
}

#[test]
fn a_hold_whose_process_died_without_cleanup_does_not_count() {
    let h = Holds::new();
    // `hold -- sleep` killed with SIGKILL: it cannot remove its file, but its process is gone.
    let mut child = h.cmd(&["hold", "--", "sleep", "30"]).spawn().expect("hold");
    wait_for(Duration::from_secs(5), || {
        (h.counted().len() == 1).then_some(())
    })
    .expect("held");
    kill(child.id() as i32, "KILL");
    let _ = child.wait();
    // The sleep lives on (orphaned) and still holds; once it is gone, so is the hold.
    assert_eq!(h.counted().len(), 1);
    let _ = Command::new("pkill")
        .args(["-KILL", "-x", "-f", "sleep 30"])
        .status();
    let gone = wait_for(Duration::from_secs(5), || {
        h.counted().is_empty().then_some(())
    });
    assert!(gone.is_some(), "a dead process's hold still counts");
    assert_eq!(
        std::fs::read_dir(h.dir.path())
            .map(|d| d.count())
            .unwrap_or(0),
        1,
        "the stale file is there, ignored"
    );
}

#[test]
fn users_own_their_holds_and_bad_files_are_ignored() {
    if !require(is_root(), "root (to act as another user)")
        || !require(user_exists(TEST_USER), "user emfssh-test")
    {
        return;
    }
    let h = Holds::new();
    let out = h.run_as_user(&["hold", "--for", "1h", "--reason", "mine"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user_hold = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = h.run(&["hold", "--for", "1h"]);
    let root_hold = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let counted = h.counted();
    let users: Vec<&str> = counted.iter().filter_map(|s| s["user"].as_str()).collect();
    assert!(
        users.contains(&TEST_USER) && users.contains(&"root"),
        "{users:?}"
    );

    // A user cannot release root's hold; root can release anybody's.
    let out = h.run_as_user(&["release", &root_hold]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only its owner or root"));
    assert!(h.run(&["release", &user_hold]).status.success());

    // Garbage in the directory is ignored with a warning, never a crash, never counted.
    std::fs::write(h.dir.path().join("0123456789abcdef.json"), "{oops").expect("write");
    std::fs::write(
        h.dir.path().join("fedcba9876543210.json"),
        r#"{"id":"0000000000000000","created_at":1}"#,
    )
    .expect("write");
    let out = h.run(&["count", "--json", "--kinds", "hold"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["count"], 1, "only root's hold");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ignoring hold file"));
    let out = h.run(&["hold", "--list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&root_hold));
}
