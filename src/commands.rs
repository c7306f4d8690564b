//! What each subcommand does, over the library. `main` only maps the result to an exit code.

use crate::cli::{
    AgentArgs, AlarmArgs, AlarmCommand, AlarmRefArgs, Cli, Command, CountArgs, GenConfigCommand,
    IamArgs, InstanceArgs, ProbeArgs, RunArgs,
};
use crate::config::{agent, alarm, iam};
use crate::daemon::{self, RunConfig};
use crate::emit::{emf, SinkSpec};
use crate::identity::{InstanceIdentity, MetricIdentity};
use crate::probe::hold;
use crate::probe::{Kind, Probe, ProbeOptions, ScanMethod, Session, Snapshot};
use serde::Serialize;
use std::io::Write;

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Count(args) => count(&args),
        Command::Run(args) => runtime()?.block_on(run_daemon(args)),
        Command::GenConfig { what } => match what {
            GenConfigCommand::Agent(a) => print(&gen_agent(&a)),
            GenConfigCommand::Alarm(a) => {
                let text = runtime()?.block_on(gen_alarm(&a))?;
                print(&text)
            }
            GenConfigCommand::IamPolicy(a) => print(&gen_iam(&a)),
        },
        Command::Alarm { op } => runtime()?.block_on(alarm_command(op)),
        Command::Assets { dir } => write_assets(&dir),
        Command::Hold(a) => hold_command(&a),
        Command::Status(a) => runtime()?.block_on(status_command(&a)),
        Command::Release(a) => {
            let h = hold::release(
                &a.holds_dir,
                &a.id,
                crate::probe::proc::effective_uid(),
                &user_names(),
            )?;
            print(&format!("released {}\n", hold::describe(&h.file)))
        }
    }
}

/// Man page and completions, generated from the clap definitions.
fn write_assets(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut man = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut man)?;
    std::fs::write(dir.join("emf-ssh.1"), man)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "emf-ssh", dir)?;
    }
    Ok(())
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread: the work is a sample every few seconds; a second thread would only cost memory.
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

impl ProbeArgs {
    pub fn options(&self) -> ProbeOptions {
        ProbeOptions {
            root: self.proc_root.clone(),
            sshd_pid_files: self.sshd_pid_files.clone(),
            holds_dir: Some(self.holds_dir.clone()),
            full_scan_every: self.full_scan_every,
            ..ProbeOptions::default()
        }
    }
}

/// `emf-ssh count --json`.
#[derive(Debug, Serialize)]
pub struct CountReport<'a> {
    pub count: usize,
    /// With `--idle-after`: sessions that are not idle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<usize>,
    pub kinds: Vec<Kind>,
    pub taken_at_ms: u64,
    pub method: ScanMethod,
    pub sessions: Vec<&'a Session>,
}

impl<'a> CountReport<'a> {
    pub fn new(snapshot: &'a Snapshot, args: &ProbeArgs) -> Self {
        CountReport {
            count: snapshot.count(&args.kinds),
            active: args
                .idle_after
                .map(|d| snapshot.active_count(&args.kinds, Some(d.as_secs()))),
            kinds: Kind::ALL
                .into_iter()
                .filter(|k| args.kinds.contains(*k))
                .collect(),
            taken_at_ms: snapshot.taken_at_ms,
            method: snapshot.method,
            sessions: snapshot
                .sessions
                .iter()
                .filter(|s| args.kinds.contains(s.kind))
                .collect(),
        }
    }
}

fn count(args: &CountArgs) -> anyhow::Result<()> {
    let mut probe = Probe::new(args.probe.options())?;
    let mut snapshot = probe.sample(crate::now_ms())?;
    for _ in 1..args.samples {
        snapshot = probe.sample(crate::now_ms())?;
    }
    let report = CountReport::new(&snapshot, &args.probe);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", report.count)?;
    }
    Ok(())
}

async fn run_daemon(args: RunArgs) -> anyhow::Result<()> {
    if args.sample_every > args.interval {
        anyhow::bail!(
            "--sample-every ({:?}) is longer than --interval ({:?}): every interval needs a sample",
            args.sample_every,
            args.interval
        );
    }
    // Fail on a blind probe before anything else: never start publishing zeros.
    let mut probe = Probe::new(args.probe.options())?;
    if args.check {
        let snapshot = probe.sample(crate::now_ms())?;
        if let Some(id) = &args.instance.instance_id {
            crate::identity::validate_instance_id(id)?;
        }
        return print(&format!(
            "configuration OK: sink {}, interval {:?}, sample every {:?}; the probe sees {} session(s)\n",
            args.sink,
            args.interval,
            args.sample_every,
            snapshot.count(&args.probe.kinds)
        ));
    }
    let instance = crate::identity::resolve(
        args.instance.instance_id.clone(),
        args.instance.region.clone(),
    )
    .await?;
    if matches!(args.sink, SinkSpec::Cloudwatch | SinkSpec::Auto) && instance.region.is_none() {
        anyhow::bail!(
            "no AWS region for the {} sink: pass --region or set AWS_REGION",
            args.sink
        );
    }
    let mut cfg = RunConfig {
        sink: args.sink.clone(),
        interval: args.interval,
        sample_every: args.sample_every,
        once: args.once,
        kinds: args.probe.kinds.clone(),
        names: args.names.names(),
        state_file: Some(args.state_file.clone()),
        idle_after: args.probe.idle_after.map(|d| d.as_secs()),
        warn: Some((args.warn_before.as_secs(), args.alarm_idle.as_secs())),
        dev_root: std::path::PathBuf::from("/dev"),
        log_target: emf::LogTarget {
            log_group_name: Some(args.log_group.clone()),
            log_stream_name: args.log_stream.clone(),
        },
    };
    let mut sink = daemon::build_sink(&cfg, &instance)
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!(instance = %instance, "identity");
    if !cfg.once && !args.no_rearm {
        if let Some(idle) = rearm(&args, &instance).await {
            // Warnings follow the real alarm's idle time (period x evaluation periods).
            cfg.warn = Some((args.warn_before.as_secs(), idle));
        }
    }
    if cfg.once {
        daemon::run_once(&cfg, &mut probe, &mut sink).await?;
    } else {
        let summary = daemon::run_loop(&cfg, &mut probe, &mut sink).await?;
        tracing::info!(?summary, "stopped");
    }
    Ok(())
}

/// `gen-config agent`: pure, no instance needed (the agent fills in `${aws:InstanceId}`).
pub fn gen_agent(a: &AgentArgs) -> String {
    let o = agent::AgentOptions {
        mode: a.mode.into(),
        names: a.names.names(),
        period_secs: a.period,
        emf_file: a.emf_file.clone(),
        log_group: a.log_group.clone(),
        retention_days: a.retention_days,
    };
    agent::to_json(&agent::agent_config(&o).expect("agent modes always have a config"))
}

/// `gen-config iam-policy`: covers every instance's alarm (`emf-ssh-idle-*`), so one policy
/// serves a whole fleet or AMI.
pub fn gen_iam(a: &IamArgs) -> String {
    let id = MetricIdentity::for_mode(a.mode, &a.names.names(), "i-00000000", 60);
    iam::to_json(&iam::policy(
        &id,
        a.mode,
        a.alarm,
        &alarm::default_alarm_name("*"),
    ))
}

async fn instance_with_region(i: &InstanceArgs) -> anyhow::Result<InstanceIdentity> {
    let instance = crate::identity::resolve(i.instance_id.clone(), i.region.clone()).await?;
    if instance.region.is_none() {
        anyhow::bail!("no AWS region: pass --region or set AWS_REGION");
    }
    Ok(instance)
}

/// The alarm for `args`, from the same identity the sinks of that mode emit.
pub fn alarm_input(
    args: &AlarmArgs,
    instance: &InstanceIdentity,
) -> anyhow::Result<alarm::PutMetricAlarmInput> {
    let names = args.names.names();
    let id = MetricIdentity::for_mode(args.mode, &names, &instance.instance_id, args.period)
        .with_idle_mode(&names, args.idle_after.is_some());
    let o = alarm::AlarmOptions {
        region: instance.region.clone().unwrap_or_default(),
        period_secs: args.period,
        idle_minutes: args.idle_minutes,
        action: args.action,
        missing: args.treat_missing_data,
        sns_topic: args.sns_topic.clone(),
        name: args.target.alarm_name.clone(),
    };
    Ok(alarm::build(&id, &instance.instance_id, &o)?)
}

async fn gen_alarm(a: &AlarmArgs) -> anyhow::Result<String> {
    let instance = instance_with_region(&a.target.instance).await?;
    Ok(alarm::to_json(&alarm_input(a, &instance)?))
}

async fn alarm_command(op: AlarmCommand) -> anyhow::Result<()> {
    let target: &AlarmRefArgs = match &op {
        AlarmCommand::Install(a) => &a.target,
        AlarmCommand::Status(t) | AlarmCommand::Remove(t) => t,
    };
    let instance = instance_with_region(&target.instance).await?;
    let name = target
        .alarm_name
        .clone()
        .unwrap_or_else(|| alarm::default_alarm_name(&instance.instance_id));
    let client = crate::emit::cloudwatch::client(instance.region.clone()).await;
    match op {
        AlarmCommand::Install(a) => {
            let input = alarm_input(&a, &instance)?;
            crate::alarm_api::install(&client, &input).await?;
            print(&format!(
                "installed {}: {} when {}/{} < 1 for {} x {} s\n",
                input.alarm_name,
                input.alarm_actions.join(", "),
                input.namespace,
                input.metric_name,
                input.evaluation_periods,
                input.period
            ))
        }
        AlarmCommand::Status(_) => {
            print(&crate::alarm_api::status(&client, &name, crate::now_ms()).await?)
        }
        AlarmCommand::Remove(_) => {
            let existed = crate::alarm_api::remove(&client, &name).await?;
            print(&if existed {
                format!("removed {name}\n")
            } else {
                format!("{name} did not exist\n")
            })
        }
    }
}

/// Start-up re-arm: best effort, never fatal (the daemon's job is publishing).
/// Returns the alarm's idle time (period x evaluation periods) when it could be read.
async fn rearm(args: &RunArgs, instance: &InstanceIdentity) -> Option<u64> {
    let region = instance.region.clone()?;
    let name = args
        .alarm_name
        .clone()
        .unwrap_or_else(|| alarm::default_alarm_name(&instance.instance_id));
    let client = crate::emit::cloudwatch::client(Some(region)).await;
    let res = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        crate::alarm_api::rearm(&client, &name),
    )
    .await;
    match res {
        Ok(Ok(true)) => {
            tracing::warn!(alarm = %name, "alarm was in ALARM at start-up: set back to OK (re-armed)")
        }
        Ok(Ok(false)) => tracing::debug!(alarm = %name, "alarm not in ALARM: nothing to re-arm"),
        Ok(Err(e)) => {
            tracing::warn!(alarm = %name, "could not check/re-arm the alarm, going on: {e}")
        }
        Err(_) => tracing::warn!(alarm = %name, "re-arm timed out, going on"),
    }
    let idle = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        crate::alarm_api::idle_secs(&client, &name),
    );
    idle.await.ok().and_then(Result::ok).flatten()
}

fn user_names() -> impl Fn(u32) -> String {
    let map = std::fs::read_to_string("/etc/passwd")
        .map(|t| crate::probe::proc::parse_passwd(&t))
        .unwrap_or_default();
    move |uid| map.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
}

/// `emf-ssh hold`: create, list, or hold while a command runs (exiting with its status).
fn hold_command(a: &crate::cli::HoldArgs) -> anyhow::Result<()> {
    let now = crate::now_ms() / 1000;
    if a.list {
        let holds = hold::list(&a.holds_dir, &user_names());
        if a.json {
            serde_json::to_writer_pretty(std::io::stdout().lock(), &holds)?;
            return print("\n");
        }
        let mut text = String::new();
        for h in &holds {
            let state = if hold::is_active(&h.file, now, std::path::Path::new("/proc")) {
                "active"
            } else {
                "ended"
            };
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\n",
                h.file.id,
                h.user,
                state,
                hold::describe(&h.file)
            ));
        }
        return print(&text);
    }
    if a.command.is_empty() {
        let until = now + a.duration.as_secs();
        let h = hold::create(
            &a.holds_dir,
            crate::probe::proc::effective_uid(),
            a.reason.as_deref(),
            Some(until),
            None,
            now,
        )?;
        eprintln!(
            "emf-ssh: holding for {:?}; end it early with `emf-ssh release {}`",
            a.duration, h.id
        );
        return print(&format!("{}\n", h.id));
    }
    // Hold exactly while the command runs: tied to its pid and start time.
    let mut child = std::process::Command::new(&a.command[0])
        .args(&a.command[1..])
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", a.command[0]))?;
    let pid = child.id() as i32;
    let start = hold::process_start(std::path::Path::new("/proc"), pid);
    // `None`: the command exited before we could look, so there is nothing to hold.
    let created = start.map(|start| {
        hold::create(
            &a.holds_dir,
            crate::probe::proc::effective_uid(),
            a.reason.as_deref(),
            None,
            Some((pid, start)),
            now,
        )
    });
    let h = match created.transpose() {
        Ok(h) => h,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.into());
        }
    };
    let status = child.wait()?;
    if let Some(h) = h {
        hold::remove_quietly(&a.holds_dir, &h.id);
    }
    match status.code() {
        Some(0) => Ok(()),
        Some(c) => std::process::exit(c),
        None => anyhow::bail!("{} was killed by a signal", a.command[0]),
    }
}

/// `emf-ssh status`.
async fn status_command(a: &crate::cli::StatusArgs) -> anyhow::Result<()> {
    let now = crate::now_ms();
    let mut probe = Probe::new(a.probe.options())?;
    let snapshot = probe.sample(now)?;
    let count = snapshot.count(&a.probe.kinds);
    let sessions: Vec<_> = snapshot
        .sessions
        .into_iter()
        .filter(|s| a.probe.kinds.contains(s.kind))
        .collect();
    let daemon = crate::status::DaemonState::load(&a.state_file);
    let alarm = if a.offline {
        Err("--offline".to_string())
    } else {
        read_alarm(&a.target).await
    };
    let report = crate::status::StatusReport::new(now, count, sessions, daemon, alarm);
    if a.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        Ok(())
    } else {
        print(&crate::status::render(&report))
    }
}

async fn read_alarm(t: &AlarmRefArgs) -> Result<Option<crate::status::AlarmView>, String> {
    let instance = instance_with_region(&t.instance)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let name = t
        .alarm_name
        .clone()
        .unwrap_or_else(|| alarm::default_alarm_name(&instance.instance_id));
    let client = crate::emit::cloudwatch::client(instance.region.clone()).await;
    let alarm = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        crate::alarm_api::describe(&client, &name),
    )
    .await
    .map_err(|_| "DescribeAlarms timed out".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(alarm.map(|m| crate::status::AlarmView {
        name: name.clone(),
        state: m
            .state_value()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        reason: m.state_reason().map(str::to_owned),
        idle_secs: crate::alarm_api::idle_secs_of(&m),
    }))
}
