//! The alarm watches exactly what is published, the real AWS CLI accepts the generated JSON, and
//! LocalStack (which evaluates alarms) goes to ALARM only when the instance is idle.

use crate::harness::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn aws_cli() -> Option<String> {
    let aws = std::env::var("EMF_SSH_TEST_AWS").ok();
    require(
        aws.is_some(),
        "AWS CLI v1 in the test venv (EMF_SSH_TEST_AWS)",
    )
    .then(|| aws.unwrap_or_default())
}

fn aws(cli: &str, url: &str, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(cli);
    clean_aws_env(&mut c)
        .args(args)
        .args([
            "--endpoint-url",
            url,
            "--region",
            "us-east-1",
            "--output",
            "json",
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("aws cli")
}

fn gen_alarm(extra: &[&str]) -> Value {
    let mut args = vec![
        "gen-config",
        "alarm",
        "--instance-id",
        TEST_INSTANCE,
        "--region",
        "us-east-1",
    ];
    args.extend_from_slice(extra);
    let out = emf_ssh_cmd(&args, &[]).output().expect("gen-config alarm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("alarm JSON")
}

#[test]
fn generated_alarms_are_accepted_by_the_aws_cli() {
    let Some(url) = localstack() else { return };
    let Some(cli) = aws_cli() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    for mode in ["cloudwatch", "emf-socket", "emf-file", "statsd"] {
        let name = format!("emf-ssh-cli-{mode}-{}", std::process::id());
        let alarm = gen_alarm(&[
            "--mode",
            mode,
            "--alarm-name",
            &name,
            "--sns-topic",
            "arn:aws:sns:us-east-1:000000000000:idle",
        ]);
        let file = dir.path().join(format!("{mode}.json"));
        std::fs::write(&file, serde_json::to_string_pretty(&alarm).expect("json")).expect("write");
        let out = aws(
            &cli,
            &url,
            &[
                "cloudwatch",
                "put-metric-alarm",
                "--cli-input-json",
                &format!("file://{}", file.display()),
            ],
        );
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = aws(
            &cli,
            &url,
            &["cloudwatch", "describe-alarms", "--alarm-names", &name],
        );
        let d: Value = serde_json::from_slice(&out.stdout).expect("describe");
        let stored = &d["MetricAlarms"][0];
        for key in [
            "Namespace",
            "MetricName",
            "Statistic",
            "Period",
            "Threshold",
            "ComparisonOperator",
            "Dimensions",
        ] {
            assert_eq!(stored[key], alarm[key], "{mode}: {key}");
        }
        aws(
            &cli,
            &url,
            &["cloudwatch", "delete-alarms", "--alarm-names", &name],
        );
    }
    // The check is real: the CLI rejects an unknown field.
    let mut bad = gen_alarm(&[]);
    bad["Bogus"] = Value::from(1);
    let file = dir.path().join("bad.json");
    std::fs::write(&file, bad.to_string()).expect("write");
    let out = aws(
        &cli,
        &url,
        &[
            "cloudwatch",
            "put-metric-alarm",
            "--cli-input-json",
            &format!("file://{}", file.display()),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(255),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn published_metric_is_exactly_what_the_generated_alarm_watches() {
    let _m = machine_lock();
    let Some(url) = localstack() else { return };
    let ns = unique_namespace("identity");
    let env = localstack_env(&url);
    let env_refs = env_refs(&env);
    for interval in ["60s", "10s"] {
        let out = emf_ssh_cmd(
            &[
                "run",
                "--once",
                "--sink",
                "cloudwatch",
                "--instance-id",
                TEST_INSTANCE,
                "--namespace",
                &ns,
                "--interval",
                interval,
            ],
            &env_refs,
        )
        .output()
        .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let period = "10";
    let alarm = gen_alarm(&[
        "--mode",
        "cloudwatch",
        "--namespace",
        &ns,
        "--period",
        period,
    ]);
    let listed = runtime()
        .block_on(localstack_client(&url).list_metrics().namespace(&ns).send())
        .expect("ListMetrics");
    assert_eq!(
        listed.metrics().len(),
        1,
        "one metric identity, whatever the resolution: {:?}",
        listed.metrics()
    );
    let m = &listed.metrics()[0];
    assert_eq!(m.namespace(), alarm["Namespace"].as_str());
    assert_eq!(m.metric_name(), alarm["MetricName"].as_str());
    let dims: Vec<Value> = m
        .dimensions()
        .iter()
        .map(|d| serde_json::json!({"Name": d.name(), "Value": d.value()}))
        .collect();
    assert_eq!(Value::Array(dims), alarm["Dimensions"]);
}

#[test]
fn alarm_install_status_remove_through_the_api() {
    let Some(url) = localstack() else { return };
    let name = format!("emf-ssh-api-{}", std::process::id());
    let env = localstack_env(&url);
    let env_refs = env_refs(&env);
    let run = |args: &[&str]| {
        let mut all = vec!["alarm"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--instance-id", TEST_INSTANCE, "--alarm-name", &name]);
        let out = emf_ssh_cmd(&all, &env_refs).output().expect("alarm");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["status"]).contains("not installed"));
    assert!(run(&["install", "--period", "60", "--idle-minutes", "20"]).contains("installed"));
    // Idempotent: a second install replaces the first.
    run(&["install", "--period", "60", "--idle-minutes", "20"]);
    let status = run(&["status"]);
    assert!(status.contains(&format!("alarm {name}: ")), "{status}");
    assert!(
        status.contains("EmfSsh/Sessions {InstanceId=i-0123456789abcdef0} Maximum over 60 s"),
        "{status}"
    );
    assert!(
        status.contains("arn:aws:automate:us-east-1:ec2:stop after 20 periods"),
        "{status}"
    );
    assert!(run(&["remove"]).contains("removed"));
    assert!(run(&["remove"]).contains("did not exist"));
}

fn alarm_state(url: &str, name: &str) -> String {
    let out = runtime()
        .block_on(
            localstack_client(url)
                .describe_alarms()
                .alarm_names(name)
                .send(),
        )
        .expect("DescribeAlarms");
    out.metric_alarms()
        .first()
        .and_then(|a| a.state_value())
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default()
}

fn wait_state(url: &str, name: &str, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    wait_for(within, || (alarm_state(url, name) == want).then_some(())).unwrap_or_else(|| {
        panic!(
            "alarm {name} never reached {want} within {within:?} (is {})",
            alarm_state(url, name)
        )
    });
    start.elapsed()
}

/// The whole loop: a real session keeps the alarm OK, idleness drives it to ALARM, and a daemon
/// started while it is in ALARM re-arms it.
#[test]
fn alarm_fires_only_when_idle_and_the_daemon_rearms_it() {
    let _m = machine_lock();
    let Some(url) = localstack() else { return };
    let Some(mut sshd) = Sshd::start() else {
        return;
    };
    let ns = unique_namespace("fire");
    let name = format!("emf-ssh-fire-{}", std::process::id());
    let mut env = localstack_env(&url);
    env.push(("EMF_SSH_NAMESPACE", ns.clone()));
    env.push(("EMF_SSH_ALARM_NAME", name.clone()));
    let env_refs = env_refs(&env);
    // 10 s periods, idle after 30 s (3 periods).
    let out = emf_ssh_cmd(
        &[
            "alarm",
            "install",
            "--instance-id",
            TEST_INSTANCE,
            "--period",
            "10",
            "--idle-minutes",
            "0.5",
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

    sshd.open(TEST_USER, &["-T"], true);
    let daemon_args = [
        "run",
        "--sink",
        "cloudwatch",
        "--interval",
        "10s",
        "--sample-every",
        "2s",
        "--instance-id",
        TEST_INSTANCE,
    ];
    let daemon = Daemon::start(emf_ssh_cmd(&daemon_args, &env_refs));
    wait_state(&url, &name, "OK", Duration::from_secs(60));
    // In use: it stays OK well past the idle time.
    let busy_until = Instant::now() + Duration::from_secs(45);
    while Instant::now() < busy_until {
        assert_eq!(
            alarm_state(&url, &name),
            "OK",
            "the alarm fired while a session was open"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // Idle: ALARM after about three periods.
    sshd.close_clients();
    let took = wait_state(&url, &name, "ALARM", Duration::from_secs(90));
    eprintln!("idle -> ALARM after {took:?}");
    assert!(took >= Duration::from_secs(20), "fired too early: {took:?}");
    let (code, _, stderr) = daemon.stop();
    assert_eq!(code, Some(0), "{stderr}");

    // The instance "starts again" while the alarm is still in ALARM: the daemon re-arms it.
    let daemon = Daemon::start(emf_ssh_cmd(&daemon_args, &env_refs));
    wait_state(&url, &name, "OK", Duration::from_secs(30));
    let (code, _, stderr) = daemon.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("re-armed"), "{stderr}");
}
