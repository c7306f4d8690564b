//! What each subcommand does, over the library. `main` only maps the result to an exit code.

use crate::cli::{Cli, Command, CountArgs, ProbeArgs};
use crate::probe::{Kind, Probe, ProbeOptions, ScanMethod, Session, Snapshot};
use serde::Serialize;
use std::io::Write;

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Count(args) => count(&args),
    }
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
