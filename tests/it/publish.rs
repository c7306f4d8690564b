//! `emf-ssh run` against real peers: LocalStack (CloudWatch API), npm statsd, loopback
//! listeners standing in for the agent's EMF socket, a fault-injecting proxy, a fake IMDS.

use crate::harness::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn instance_args() -> Vec<&'static str> {
    vec!["--instance-id", TEST_INSTANCE, "--region", "us-east-1"]
}

/// Runs `emf-ssh run --once` with the given sink and extra args/env; returns the output.
fn run_once(sink: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut args = vec!["run", "--once", "--sink", sink];
    args.extend(instance_args());
    args.extend_from_slice(extra);
    emf_ssh_cmd(&args, env).output().expect("run --once")
}

/// Opens `n` real SSH sessions and waits until the probe counts exactly `n`.
fn sessions(n: usize) -> Option<Sshd> {
    let mut sshd = Sshd::start()?;
    for _ in 0..n {
        sshd.open(TEST_USER, &["-T"], true);
    }
    let ok = wait_for(Duration::from_secs(15), || {
        let o = emf_ssh(&["count"]);
        (String::from_utf8_lossy(&o.stdout).trim() == n.to_string()).then_some(())
    });
    assert!(ok.is_some(), "{n} sessions did not come up");
    Some(sshd)
}

#[test]
fn cloudwatch_sink_publishes_real_sessions_to_localstack() {
    let _m = machine_lock();
    let Some(url) = localstack() else { return };
    let Some(_sshd) = sessions(2) else { return };
    let ns = unique_namespace("once");
    let env = localstack_env(&url);
    let out = run_once("cloudwatch", &["--namespace", &ns], &env_refs(&env));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let client = localstack_client(&url);
    let rt = runtime();
    let now = aws_sdk_cloudwatch::primitives::DateTime::from_secs(emf_ssh::now_ms() as i64 / 1000);
    let stats = rt
        .block_on(
            client
                .get_metric_statistics()
                .namespace(&ns)
                .metric_name("Sessions")
                .dimensions(
                    aws_sdk_cloudwatch::types::Dimension::builder()
                        .name("InstanceId")
                        .value(TEST_INSTANCE)
                        .build(),
                )
                .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    now.secs() - 600,
                ))
                .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    now.secs() + 600,
                ))
                .period(60)
                .statistics(aws_sdk_cloudwatch::types::Statistic::Maximum)
                .statistics(aws_sdk_cloudwatch::types::Statistic::SampleCount)
                .send(),
        )
        .expect("GetMetricStatistics");
    let points = stats.datapoints();
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0].maximum(), Some(2.0));
    assert_eq!(points[0].sample_count(), Some(1.0));
    assert_eq!(points[0].unit().map(|u| u.as_str()), Some("Count"));

    let listed = rt
        .block_on(client.list_metrics().namespace(&ns).send())
        .expect("ListMetrics");
    let m = &listed.metrics()[0];
    let dims: Vec<(String, String)> = m
        .dimensions()
        .iter()
        .map(|d| {
            (
                d.name().unwrap_or_default().into(),
                d.value().unwrap_or_default().into(),
            )
        })
        .collect();
    assert_eq!(
        dims,
        vec![("InstanceId".to_string(), TEST_INSTANCE.to_string())]
    );
}

/// Reads one HTTP/1.1 request (headers + Content-Length body) from `s`.
fn read_request(s: &mut BufReader<TcpStream>) -> Option<(String, Vec<String>, Vec<u8>)> {
    let mut line = String::new();
    if s.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    let mut len = 0;
    loop {
        let mut h = String::new();
        s.read_line(&mut h).ok()?;
        let h = h.trim_end().to_owned();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        headers.push(h);
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).ok()?;
    Some((line.trim_end().to_owned(), headers, body))
}

/// A loopback HTTP server answering each request with `respond(n, request)`.
fn http_server(
    respond: impl Fn(usize, &str, &[String], &[u8]) -> Vec<u8> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let respond = Arc::new(respond);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let c = c.clone();
            let respond = respond.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().expect("clone");
                let mut r = BufReader::new(conn);
                while let Some((line, headers, body)) = read_request(&mut r) {
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    let resp = respond(n, &line, &headers, &body);
                    if w.write_all(&resp).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, count)
}

fn http_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A CBOR map of text strings (RFC 8949 major types 5 and 3), enough for an error body.
fn cbor_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        match s.len() {
            n if n < 24 => out.push(0x60 | n as u8),
            n if n < 256 => out.extend_from_slice(&[0x78, n as u8]),
            n => out.extend_from_slice(&[0x79, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = vec![0xa0 | pairs.len() as u8];
    for (k, v) in pairs {
        text(&mut out, k);
        text(&mut out, v);
    }
    out
}

/// Forwards a request to `upstream` (LocalStack) and returns its raw response.
fn forward(upstream: &str, line: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
    let addr = upstream.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("upstream");
    let mut req = format!("{line}\r\n");
    for h in headers
        .iter()
        .filter(|h| !h.to_ascii_lowercase().starts_with("connection:"))
    {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .and_then(|_| s.write_all(body))
        .expect("forward");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("upstream response");
    resp
}

#[test]
fn cloudwatch_sink_retries_5xx_and_throttling_then_delivers() {
    let _m = machine_lock();
    let Some(url) = localstack() else { return };
    // First a 503, then a throttling error, then LocalStack itself.
    let upstream = url.clone();
    let (proxy, hits) = http_server(move |n, line, headers, body| match n {
        0 => http_response("503 Service Unavailable", &[], b""),
        // What CloudWatch sends when throttling, in its RPCv2-CBOR protocol.
        1 => http_response(
            "400 Bad Request",
            &[
                ("Content-Type", "application/cbor"),
                ("smithy-protocol", "rpc-v2-cbor"),
                ("x-amzn-query-error", "Throttling;Sender"),
            ],
            &cbor_map(&[
                ("__type", "com.amazonaws.cloudwatch#Throttling"),
                ("message", "Rate exceeded"),
            ]),
        ),
        _ => forward(&upstream, line, headers, body),
    });
    let ns = unique_namespace("retry");
    let mut env = localstack_env(&url);
    env[0].1 = proxy;
    let out = run_once("cloudwatch", &["--namespace", &ns], &env_refs(&env));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 3, "two retries, then success");
    let listed = runtime()
        .block_on(localstack_client(&url).list_metrics().namespace(&ns).send())
        .expect("ListMetrics");
    assert_eq!(listed.metrics().len(), 1, "the retried datapoint arrived");
}

#[test]
fn cloudwatch_sink_that_keeps_failing_says_so_and_exits_1() {
    let (proxy, hits) =
        http_server(|_, _, _, _| http_response("503 Service Unavailable", &[], b""));
    let out = run_once(
        "cloudwatch",
        &[],
        &[
            ("AWS_ENDPOINT_URL", &proxy),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        4,
        "standard retry mode: 4 attempts"
    );
    assert!(stderr.contains("PutMetricData failed"), "{stderr}");
    assert!(stderr.contains("kept for retry"), "{stderr}");
}

#[test]
fn cloudwatch_sink_without_credentials_explains_what_to_do() {
    let (proxy, hits) =
        http_server(|_, _, _, _| http_response("500 Internal Server Error", &[], b""));
    let out = run_once(
        "cloudwatch",
        &[],
        &[("AWS_ENDPOINT_URL", &proxy), ("HOME", "/nonexistent")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no AWS credentials"), "{stderr}");
    assert!(stderr.contains("instance profile"), "{stderr}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing unsigned is sent");
}

#[test]
fn statsd_sink_sends_exact_bytes() {
    let _m = machine_lock();
    let Some(_sshd) = sessions(2) else { return };
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let addr = format!("statsd://{}", sock.local_addr().expect("addr"));
    let out = run_once(&addr, &[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut buf = [0u8; 2048];
    // One gauge after the sample, one with the interval maximum.
    for _ in 0..2 {
        let n = sock.recv(&mut buf).expect("datagram");
        assert_eq!(
            &buf[..n],
            format!("Sessions:2|g|#InstanceId:{TEST_INSTANCE}").as_bytes()
        );
    }
}

#[test]
fn statsd_sink_is_understood_by_the_reference_statsd_server() {
    let _m = machine_lock();
    let statsd = std::env::var("EMF_SSH_TEST_STATSD").ok();
    if !require(statsd.is_some(), "npm statsd (EMF_SSH_TEST_STATSD)") {
        return;
    }
    let statsd = std::path::PathBuf::from(statsd.unwrap_or_default());
    let Some(_sshd) = sessions(1) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr").port()
    };
    let conf = dir.path().join("conf.js");
    std::fs::write(
        &conf,
        format!(
            "{{ port: {port}, address: \"127.0.0.1\", mgmt_address: \"127.0.0.1\", mgmt_port: {}, \
             flushInterval: 300, backends: [\"./backends/console\"], deleteGauges: true }}",
            free_port()
        ),
    )
    .expect("conf");
    let out_path = dir.path().join("out");
    let mut server = Command::new("node")
        .arg(&statsd)
        .arg(&conf)
        .current_dir(statsd.parent().expect("statsd dir"))
        .stdout(std::fs::File::create(&out_path).expect("out"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("node statsd");
    let up = wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&out_path)
            .ok()
            .filter(|s| s.contains("server is up"))
            .map(|_| ())
    });
    assert!(up.is_some(), "statsd did not start");
    let out = run_once(&format!("statsd://127.0.0.1:{port}"), &[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = format!("'Sessions;InstanceId={TEST_INSTANCE}': 1");
    let seen = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&out_path)
            .ok()
            .filter(|s| s.contains(&key))
            .map(|_| ())
    });
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = server.kill();
    let _ = server.wait();
    assert!(seen.is_some(), "statsd never showed {key}:\n{text}");
    assert!(
        !text.contains("'statsd.bad_lines_seen': 1"),
        "statsd rejected a line:\n{text}"
    );
}

#[test]
fn emf_udp_sink_sends_one_valid_document_per_datagram() {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let addr = format!("emf-udp://{}", sock.local_addr().expect("addr"));
    let out = run_once(&addr, &["--log-group", "/test/group"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut buf = vec![0u8; 65536];
    let n = sock.recv(&mut buf).expect("datagram");
    let v = assert_valid_emf(std::str::from_utf8(&buf[..n]).expect("utf8"));
    assert_eq!(v["_aws"]["LogGroupName"], "/test/group");
    assert_eq!(v["InstanceId"], TEST_INSTANCE);
    assert!(v["Sessions"].is_u64());
}

#[test]
fn emf_tcp_sink_survives_the_agent_being_down_and_delivers_later() {
    let port = free_port();
    let mut args = vec![
        "run",
        "--sink",
        "",
        "--interval",
        "1s",
        "--sample-every",
        "200ms",
    ];
    let sink = format!("emf-tcp://127.0.0.1:{port}");
    args[2] = &sink;
    args.extend(instance_args());
    let daemon = Daemon::start(emf_ssh_cmd(&args, &[]));
    // The agent is down for ~3 intervals; memory must not grow with the outage (the backlog is
    // bounded; `Backlog` unit tests cover the cap, scripts/bench-run the absolute figures).
    std::thread::sleep(Duration::from_millis(1000));
    let rss_early = daemon.rss_kib();
    std::thread::sleep(Duration::from_millis(2500));
    let rss_down = daemon.rss_kib();
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("agent comes back");
    listener.set_nonblocking(false).expect("blocking");
    let (conn, _) = listener.accept().expect("daemon reconnects");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut lines = BufReader::new(conn).lines();
    let mut docs: Vec<Value> = Vec::new();
    while docs.len() < 5 {
        let line = lines.next().expect("a line").expect("read");
        docs.push(assert_valid_emf(&line));
    }
    let (code, _, stderr) = daemon.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("cannot reach"),
        "the outage was reported: {stderr}"
    );
    let ts: Vec<u64> = docs
        .iter()
        .map(|d| d["_aws"]["Timestamp"].as_u64().expect("ts"))
        .collect();
    assert!(ts.windows(2).all(|w| w[1] > w[0]), "in order: {ts:?}");
    assert!(
        ts.iter().all(|t| t % 1000 == 0),
        "aligned to the interval: {ts:?}"
    );
    // Datapoints from while the agent was down were kept and arrive first.
    assert!(ts[0] + 2000 <= ts[4], "backlog delivered: {ts:?}");
    assert!(
        rss_early > 0 && rss_down <= rss_early + 2048,
        "RSS grew while the agent was down: {rss_early} -> {rss_down} KiB"
    );
    assert!(docs
        .iter()
        .all(|d| d["_aws"]["LogGroupName"] == "/emf-ssh/sessions"));
}

/// A protocol-exact IMDSv2 stand-in: token PUT, then GETs that must carry the token.
fn fake_imds() -> (String, Arc<AtomicUsize>) {
    let rejected = Arc::new(AtomicUsize::new(0));
    let r = rejected.clone();
    let (url, _) = http_server(move |_, line, headers, _| {
        let has = |name: &str, value: Option<&str>| {
            headers.iter().any(|h| {
                let l = h.to_ascii_lowercase();
                l.starts_with(&format!("{name}:")) && value.is_none_or(|v| h.ends_with(v))
            })
        };
        if line.starts_with("PUT /latest/api/token ")
            && has("x-aws-ec2-metadata-token-ttl-seconds", None)
        {
            return http_response(
                "200 OK",
                &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
                b"TOKEN-abc",
            );
        }
        if !has("x-aws-ec2-metadata-token", Some("TOKEN-abc")) {
            r.fetch_add(1, Ordering::SeqCst);
            return http_response("401 Unauthorized", &[], b"");
        }
        match line.split_whitespace().nth(1) {
            Some("/latest/meta-data/instance-id") => {
                http_response("200 OK", &[], b"i-0fedcba9876543210")
            }
            Some("/latest/meta-data/placement/region") => {
                http_response("200 OK", &[], b"eu-west-1")
            }
            _ => http_response("404 Not Found", &[], b""),
        }
    });
    (url, rejected)
}

#[test]
fn identity_comes_from_imdsv2() {
    let (url, rejected) = fake_imds();
    let out = emf_ssh_cmd(
        &["run", "--once", "--sink", "stdout"],
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &url),
        ],
    )
    .output()
    .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v = assert_valid_emf(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(v["InstanceId"], "i-0fedcba9876543210");
    assert!(stderr.contains("eu-west-1"), "{stderr}");
    assert_eq!(
        rejected.load(Ordering::SeqCst),
        0,
        "every GET carried the token"
    );
}

#[test]
fn no_identity_is_a_clear_error_and_nothing_is_emitted() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = emf_ssh_cmd(
        &["run", "--once", "--sink", "stdout"],
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &dead),
        ],
    )
    .output()
    .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "no metric without InstanceId");
    assert!(
        stderr.contains("IMDSv2") && stderr.contains("--instance-id"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        vec!["run", "--sink", "tcp://x"],
        vec!["run", "--interval", "10x"],
        vec!["run", "--instance-id", "nope", "--once", "--sink", "stdout"],
        vec![
            "run",
            "--interval",
            "10s",
            "--sample-every",
            "1m",
            "--instance-id",
            TEST_INSTANCE,
        ],
    ] {
        let out = emf_ssh_cmd(&args, &[]).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty());
        assert!(
            stderr.contains("expected")
                || stderr.contains("use auto")
                || stderr.contains("unit")
                || stderr.contains("not an EC2")
                || stderr.contains("longer than"),
            "{args:?}: {stderr}"
        );
    }
}

/// Our EMF document says what the official client library says for the same metric.
#[test]
fn emf_matches_the_official_aws_embedded_metrics_library() {
    let py = std::env::var("EMF_SSH_TEST_PYTHON").ok();
    if !require(
        py.is_some(),
        "python venv with aws-embedded-metrics (EMF_SSH_TEST_PYTHON)",
    ) {
        return;
    }
    for interval in ["60s", "10s"] {
        let out = run_once("stdout", &["--interval", interval, "--kinds", "mosh"], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = assert_valid_emf(String::from_utf8_lossy(&out.stdout).trim());
        let resolution = if interval == "10s" { "1" } else { "60" };
        let ts = ours["_aws"]["Timestamp"].to_string();
        let value = ours["Sessions"].to_string();
        let reference = Command::new(py.as_deref().unwrap_or_default())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/it/py/emf_reference.py"
            ))
            .args(["EmfSsh", "Sessions", TEST_INSTANCE, &value, resolution, &ts])
            .output()
            .expect("python");
        assert!(
            reference.status.success(),
            "{}",
            String::from_utf8_lossy(&reference.stderr)
        );
        let theirs = assert_valid_emf(String::from_utf8_lossy(&reference.stdout).trim());
        let mut our_directive = ours["_aws"]["CloudWatchMetrics"].clone();
        // The library leaves out StorageResolution when it is the default 60.
        if resolution == "60" {
            our_directive[0]["Metrics"][0]
                .as_object_mut()
                .expect("metric")
                .remove("StorageResolution");
        }
        assert_eq!(
            our_directive, theirs["_aws"]["CloudWatchMetrics"],
            "{ours}\n{theirs}"
        );
        assert_eq!(ours["_aws"]["Timestamp"], theirs["_aws"]["Timestamp"]);
        for key in ["InstanceId", "Sessions"] {
            assert_eq!(ours[key], theirs[key], "{key}");
        }
    }
}

/// `auto` uses the agent's EMF socket while it listens, PutMetricData otherwise, and switches
/// both ways while running.
#[test]
fn auto_sink_falls_back_to_cloudwatch_and_recovers() {
    let _m = machine_lock();
    let Some(url) = localstack() else { return };
    let port = free_port();
    let ns = unique_namespace("auto");
    let agent = format!("tcp://127.0.0.1:{port}");
    let mut env = localstack_env(&url);
    env.push(("AWS_EMF_AGENT_ENDPOINT", agent));
    let daemon = Daemon::start(emf_ssh_cmd(
        &[
            "run",
            "--interval",
            "1s",
            "--sample-every",
            "250ms",
            "--instance-id",
            TEST_INSTANCE,
            "--namespace",
            &ns,
        ],
        &env_refs(&env),
    ));
    // No agent: datapoints reach CloudWatch directly.
    let client = localstack_client(&url);
    let rt = runtime();
    let direct = wait_for(Duration::from_secs(20), || {
        let l = rt
            .block_on(client.list_metrics().namespace(&ns).send())
            .ok()?;
        (!l.metrics().is_empty()).then_some(())
    });
    assert!(
        direct.is_some(),
        "no datapoint reached LocalStack: {}",
        daemon.stderr()
    );

    // The agent appears: documents arrive on its socket.
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("agent");
    let (conn, _) = listener.accept().expect("daemon connects to the agent");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut lines = BufReader::new(conn).lines();
    let doc = assert_valid_emf(&lines.next().expect("line").expect("read"));
    assert_eq!(
        doc["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        ns.as_str()
    );

    // The agent goes away again: back to PutMetricData.
    drop(lines);
    drop(listener);
    let back = wait_for(Duration::from_secs(20), || {
        let s = daemon.stderr();
        (s.matches("auto: publishing with PutMetricData").count() >= 2).then_some(())
    });
    let (code, _, stderr) = daemon.stop();
    assert!(back.is_some(), "{stderr}");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("auto: publishing through the CloudWatch agent"),
        "{stderr}"
    );
}

/// A full disk is reported with what to do, and the datapoint is kept, not silently lost.
#[test]
fn a_full_disk_is_reported_and_the_line_kept() {
    // /dev/full answers every write with ENOSPC.
    let out = run_once("emf-file:/dev/full", &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write /dev/full"), "{stderr}");
    assert!(stderr.contains("disk full"), "{stderr}");
    assert!(stderr.contains("1 datapoint(s) kept for retry"), "{stderr}");
}
