//! Command-line definitions (also the source of the man page and shell completions).

use crate::probe::KindSet;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "emf-ssh",
    version,
    about = "Count who is really using this machine (SSH, SSM, mosh) and publish it to CloudWatch",
    long_about = "Count who is really using this machine (authenticated SSH connections, AWS SSM \
Session Manager sessions, mosh sessions) and publish the count to Amazon CloudWatch, where an alarm \
stops the instance after it has been idle for a while.\n\nA count is never guessed: when the \
processes of other users cannot be seen, emf-ssh fails instead of reporting 0."
)]
pub struct Cli {
    /// Log level for messages on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "EMF_SSH_LOG", default_value = "info")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print how many sessions are open now (exit 1, never 0, when they cannot be seen).
    Count(CountArgs),
}

/// Where and what the probe looks at; shared by every command that counts.
#[derive(Debug, Args, Clone)]
pub struct ProbeArgs {
    /// Session kinds that make up the count, comma-separated.
    #[arg(long, default_value = "ssh,ssm,mosh", value_name = "KINDS")]
    pub kinds: KindSet,

    /// The proc file system to read (tests point it at fixture trees).
    #[arg(long, default_value = "/proc", value_name = "PATH")]
    pub proc_root: PathBuf,

    /// sshd pid file(s) whose listener is walked without a full /proc scan.
    #[arg(long = "sshd-pid-file", value_name = "PATH", default_values = ["/run/sshd.pid", "/var/run/sshd.pid"])]
    pub sshd_pid_files: Vec<PathBuf>,

    /// While sessions are found by walking down from known roots, still read all of /proc every
    /// N samples to find sessions under parents not seen before (0: only to confirm a zero).
    #[arg(long, default_value_t = 360, value_name = "N")]
    pub full_scan_every: u32,
}

#[derive(Debug, Args)]
pub struct CountArgs {
    /// Print the count and the session list as JSON.
    #[arg(long)]
    pub json: bool,

    /// Sample this many times in one process and print the last (for the benchmark).
    #[arg(long, default_value_t = 1, hide = true)]
    pub samples: u32,

    #[command(flatten)]
    pub probe: ProbeArgs,
}
