//! Shared test plumbing: the emf-ssh binary, a private real sshd, and polling helpers.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const TEST_USER: &str = "emfssh-test";

/// Tests that open sessions or count them share the machine's process table: one at a time.
static MACHINE: Mutex<()> = Mutex::new(());

pub fn machine_lock() -> MutexGuard<'static, ()> {
    MACHINE.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_emf-ssh")
}

pub fn emf_ssh(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run emf-ssh")
}

/// Whether real peers are required (the test command) or optional (a bare `cargo test`).
pub fn peers_required() -> bool {
    std::env::var_os("EMF_SSH_REAL_PEERS").is_some_and(|v| v == "1")
}

/// Returns a reason when a prerequisite is missing; panics instead when peers are required.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    assert!(
        !peers_required(),
        "required test peer missing: {what} (run scripts/test)"
    );
    eprintln!("skipping: {what} (scripts/test installs it)");
    false
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

pub fn user_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .map(|p| p.lines().any(|l| l.starts_with(&format!("{name}:"))))
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private OpenSSH server on a loopback port: own config, host key and authorized key, never
/// `/etc/ssh` or the system service. It daemonizes like the packaged service, so its listener
/// is re-parented to PID 1 just as under systemd.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    clients: Vec<Child>,
}

impl Sshd {
    /// `None` (skip) when sshd, root or the test user is missing and peers are optional.
    pub fn start() -> Option<Sshd> {
        if !require(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd (apt-get install openssh-server)",
        ) || !require(is_root(), "root (sshd needs it to switch users)")
            || !require(user_exists(TEST_USER), "user emfssh-test")
        {
            return None;
        }
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("emf-ssh-sshd")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        for key in ["host_key", "client_key"] {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .expect("ssh-keygen");
            assert!(st.success());
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        // The askpass helper never answers: the client stays in authentication.
        write_exec(
            &d.join("askpass"),
            &format!(
                "#!/bin/sh\ntouch {}/askpass.called\nexec sleep 300\n",
                d.display()
            ),
        );
        let sshd = Sshd {
            port: free_port(),
            dir,
            clients: Vec::new(),
        };
        std::fs::write(
            sshd.path("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1:{port}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nLogLevel ERROR\nLoginGraceTime 120\nMaxStartups 100\n",
                port = sshd.port,
                d = d.display()
            ),
        )
        .expect("sshd_config");
        sshd.start_listener();
        Some(sshd)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid_file(&self) -> PathBuf {
        self.path("sshd.pid")
    }

    pub fn listener_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Starts (or restarts) the listener and waits until it accepts connections.
    pub fn start_listener(&self) {
        let _ = std::fs::remove_file(self.pid_file());
        let st = Command::new("/usr/sbin/sshd")
            .arg("-f")
            .arg(self.path("sshd_config"))
            .status()
            .expect("sshd");
        assert!(st.success(), "sshd did not start");
        let up = wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .ok()
                .and(self.listener_pid())
        });
        assert!(up.is_some(), "sshd did not listen on {}", self.port);
    }

    /// Kills the listener (as a package upgrade would); open sessions survive.
    pub fn kill_listener(&self) {
        let pid = self.listener_pid().expect("listener pid");
        kill(pid, "TERM");
        let gone = wait_for(Duration::from_secs(10), || {
            (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        });
        assert!(gone.is_some(), "listener {pid} did not exit");
    }

    fn ssh_command(&self, user: &str) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-i")
            .arg(self.path("client_key"))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ])
            .args(["-p", &self.port.to_string()])
            .arg(format!("-l{user}"));
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// Opens an ssh client with extra options; the remote command (if any) is `sleep 600`.
    pub fn open(&mut self, user: &str, opts: &[&str], remote_command: bool) {
        let mut c = self.ssh_command(user);
        c.args(["-o", "BatchMode=yes"]).args(opts).arg("127.0.0.1");
        if remote_command {
            c.args(["sleep", "600"]);
        }
        self.clients.push(c.spawn().expect("ssh"));
    }

    /// Like `open` with a pty (`-tt`, remote `sleep 600`), but the client's output (what the
    /// session's terminal shows) goes to a file, which is returned.
    pub fn open_captured(&mut self, user: &str) -> PathBuf {
        let out = self.path(&format!("client-{}.out", self.clients.len()));
        let mut c = self.ssh_command(user);
        c.args(["-o", "BatchMode=yes", "-tt", "127.0.0.1", "sleep", "600"]);
        c.stdout(std::fs::File::create(&out).expect("capture file"));
        self.clients.push(c.spawn().expect("ssh"));
        out
    }

    /// A client that sent its user name and now waits forever for a password.
    pub fn open_pending_auth(&mut self, user: &str) {
        let mut c = self.ssh_command(user);
        c.args([
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "NumberOfPasswordPrompts=1",
        ])
        .env("SSH_ASKPASS", self.path("askpass"))
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .arg("127.0.0.1");
        self.clients.push(c.spawn().expect("ssh"));
        let asked = wait_for(Duration::from_secs(10), || {
            self.path("askpass.called").exists().then_some(())
        });
        assert!(
            asked.is_some(),
            "the client never reached the password prompt"
        );
    }

    /// Closes every client connection.
    pub fn close_clients(&mut self) {
        for mut c in self.clients.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.close_clients();
        if let Some(pid) = self.listener_pid() {
            kill(pid, "TERM");
        }
        // Remote `sleep`s and re-parented session processes of this test's connections.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", TEST_USER])
            .status();
        let _ = Command::new("pkill")
            .args(["-f", &format!("sshd: .*{}", self.dir.path().display())])
            .status();
    }
}

pub fn kill(pid: i32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

pub fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Environment for child processes that must not find real AWS settings of the developer.
pub fn clean_aws_env(c: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("EMF_SSH_") && k != "EMF_SSH_REAL_PEERS" {
            c.env_remove(k);
        }
    }
    c.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
}

/// `emf-ssh` with a clean AWS environment plus `env`.
pub fn emf_ssh_cmd(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin());
    clean_aws_env(&mut c).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// LocalStack's URL when the test command started it.
pub fn localstack() -> Option<String> {
    let url = std::env::var("EMF_SSH_TEST_LOCALSTACK").ok();
    require(url.is_some(), "LocalStack (EMF_SSH_TEST_LOCALSTACK)").then(|| url.unwrap_or_default())
}

pub const TEST_INSTANCE: &str = "i-0123456789abcdef0";

/// A CloudWatch client for LocalStack with its dummy credentials.
pub fn localstack_client(url: &str) -> aws_sdk_cloudwatch::Client {
    let conf = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_sdk_cloudwatch::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .build();
    aws_sdk_cloudwatch::Client::from_conf(conf)
}

/// Env that points emf-ssh at LocalStack.
pub fn localstack_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", url.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A unique namespace per test, so LocalStack's shared state cannot mix tests.
pub fn unique_namespace(tag: &str) -> String {
    format!(
        "EmfSshTest/{tag}/{}/{}",
        std::process::id(),
        emf_ssh::now_ms()
    )
}

/// A running `emf-ssh run` daemon; stderr goes to a file for assertions.
pub struct Daemon {
    pub child: Child,
    pub stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start(mut cmd: Command) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr_path = dir.path().join("stderr");
        let f = std::fs::File::create(&stderr_path).expect("stderr file");
        cmd.stderr(f).stdout(Stdio::piped());
        let child = cmd.spawn().expect("spawn emf-ssh run");
        Daemon {
            child,
            stderr_path,
            _dir: dir,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        kill(self.child.id() as i32, sig);
    }

    /// SIGTERM and wait; returns the exit code and stdout.
    pub fn stop(mut self) -> (Option<i32>, String, String) {
        self.signal("TERM");
        let out = wait_for(Duration::from_secs(20), || {
            self.child.try_wait().ok().flatten()
        });
        if out.is_none() {
            let _ = self.child.kill();
        }
        let mut stdout = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut s, &mut stdout);
        }
        let code = out.and_then(|s| s.code());
        (code, stdout, self.stderr())
    }

    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reference EMF schema from ../shared.
pub fn emf_schema() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/emf/emf-schema.json"
    );
    let text = std::fs::read_to_string(path).expect("shared EMF schema");
    jsonschema::draft7::new(&serde_json::from_str(&text).expect("schema JSON")).expect("schema")
}

pub fn assert_valid_emf(line: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let schema = emf_schema();
    let errors: Vec<String> = schema.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}: {line}");
    v
}

/// Borrowed view of owned env pairs, for `emf_ssh_cmd`.
pub fn env_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}
