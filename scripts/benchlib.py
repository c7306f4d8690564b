"""Helpers shared by the benchmark scripts (stdlib only)."""
import os, shutil, signal, socket, subprocess, sys, time

SSH_USER = "emfssh-test"


def start_sshd(d):
    os.makedirs("/run/sshd", exist_ok=True)
    os.chmod(d, 0o755)  # sshd reads authorized_keys as the logging-in user
    for k in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/{k}"], check=True)
    shutil.copy(f"{d}/client_key.pub", f"{d}/authorized_keys")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with open(f"{d}/sshd_config", "w") as f:
        f.write(f"ListenAddress 127.0.0.1:{port}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
                f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
                "UsePAM no\nStrictModes no\nLogLevel ERROR\n")
    subprocess.run(["/usr/sbin/sshd", "-f", f"{d}/sshd_config"], check=True)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return port
        except OSError:
            time.sleep(0.05)
    sys.exit("sshd did not start")



def open_sessions(d, port, specs):
    """specs: [(user, [ssh options])]; returns the client processes (remote `sleep 3600`)."""
    base = ["ssh", "-i", f"{d}/client_key", "-o", "StrictHostKeyChecking=no", "-o",
            "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-p", str(port)]
    return [subprocess.Popen(base + opts + [f"{user}@127.0.0.1", "sleep", "3600"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL) for user, opts in specs]


def wait_count(exe, n, tries=200):
    for _ in range(tries):
        out = subprocess.run([exe, "count"], capture_output=True, text=True).stdout.strip()
        if out == str(n):
            return
        time.sleep(0.1)
    sys.exit(f"expected {n} sessions, emf-ssh count says {out}")


def stop_sshd(d, clients):
    for p in clients:
        p.kill()
        p.wait()
    try:
        os.kill(int(open(f"{d}/sshd.pid").read()), signal.SIGTERM)
    except (OSError, ValueError):
        pass
    subprocess.run(["pkill", "-KILL", "-u", SSH_USER], check=False)
    shutil.rmtree(d, ignore_errors=True)
