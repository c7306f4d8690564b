//! What each subcommand does, over the library. `main` only maps the result to an exit code.

use crate::cli::{Cli, Command, CountArgs, ProbeArgs, RunArgs};
use crate::daemon::{self, RunConfig};
use crate::emit::{emf, SinkSpec};
use crate::probe::{Kind, Probe, ProbeOptions, ScanMethod, Session, Snapshot};
use serde::Serialize;
use std::io::Write;

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Count(args) => count(&args),
        Command::Run(args) => runtime()?.block_on(run_daemon(args)),
    }
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
            full_scan_every: self.full_scan_every,
            ..ProbeOptions::default()
        }
    }
}

/// `emf-ssh count --json`.
#[derive(Debug, Serialize)]
pub struct CountReport<'a> {
    pub count: usize,
    pub kinds: Vec<Kind>,
    pub taken_at_ms: u64,
    pub method: ScanMethod,
    pub sessions: Vec<&'a Session>,
}

impl<'a> CountReport<'a> {
    pub fn new(snapshot: &'a Snapshot, args: &ProbeArgs) -> Self {
        CountReport {
            count: snapshot.count(&args.kinds),
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
    let cfg = RunConfig {
        sink: args.sink.clone(),
        interval: args.interval,
        sample_every: args.sample_every,
        once: args.once,
        kinds: args.probe.kinds.clone(),
        names: args.names.names(),
        log_target: emf::LogTarget {
            log_group_name: Some(args.log_group.clone()),
            log_stream_name: args.log_stream.clone(),
        },
    };
    let mut sink = daemon::build_sink(&cfg, &instance)
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!(instance = %instance, "identity");
    if cfg.once {
        daemon::run_once(&mut probe, &cfg.kinds, &mut sink).await?;
    } else {
        let summary = daemon::run_loop(&cfg, &mut probe, &mut sink).await?;
        tracing::info!(?summary, "stopped");
    }
    Ok(())
}
