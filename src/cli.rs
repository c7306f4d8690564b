//! Command-line definitions (also the source of the man page and shell completions).

use crate::emit::SinkSpec;
use crate::probe::KindSet;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

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
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Print how many sessions are open now (exit 1, never 0, when they cannot be seen).
    Count(CountArgs),
    /// Sample the sessions and publish the interval maximum to CloudWatch (the daemon).
    Run(RunArgs),
    /// Print generated configuration: CloudWatch agent JSON, the idle-stop alarm, the IAM policy.
    GenConfig {
        #[command(subcommand)]
        what: GenConfigCommand,
    },
    /// Install, inspect or remove this instance's idle-stop alarm through the CloudWatch API.
    Alarm {
        #[command(subcommand)]
        op: AlarmCommand,
    },
    /// What is counted now and why, the idle streak, when the alarm would fire, the alarm's state.
    Status(StatusArgs),
    /// Keep this instance counted as busy: for a while, or while COMMAND runs.
    Hold(HoldArgs),
    /// End a hold (its owner or root).
    Release(ReleaseArgs),
    /// Write the man page and shell completions into DIR (used by scripts/package).
    #[command(hide = true)]
    Assets { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum GenConfigCommand {
    /// CloudWatch agent configuration for a mode (for amazon-cloudwatch-agent-ctl -a append-config).
    Agent(AgentArgs),
    /// The alarm as JSON for `aws cloudwatch put-metric-alarm --cli-input-json file://...`.
    Alarm(AlarmArgs),
    /// Least-privilege IAM policy for the instance role.
    IamPolicy(IamArgs),
}

#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// Create or update the alarm (idempotent).
    Install(AlarmArgs),
    /// Show the alarm's state, reason, what it watches and the last datapoints.
    Status(AlarmRefArgs),
    /// Delete the alarm (idempotent).
    Remove(AlarmRefArgs),
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Which agent input emf-ssh publishes to.
    #[arg(long, value_enum)]
    pub mode: AgentMode,

    /// Alarm period in seconds; StatsD collection and aggregation follow it.
    #[arg(long, default_value_t = 60)]
    pub period: u64,

    /// The EMF file the agent tails (emf-file mode).
    #[arg(long, default_value = crate::config::agent::DEFAULT_EMF_FILE)]
    pub emf_file: String,

    /// Log group for the EMF file's events (emf-file mode).
    #[arg(long, default_value = crate::emit::emf::DEFAULT_LOG_GROUP)]
    pub log_group: String,

    /// Days to keep the EMF log events (emf-file mode).
    #[arg(long, default_value_t = 30)]
    pub retention_days: u32,

    #[command(flatten)]
    pub names: NameArgs,
}

/// The modes with an agent in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentMode {
    EmfSocket,
    EmfFile,
    Statsd,
}

impl From<AgentMode> for crate::identity::Mode {
    fn from(m: AgentMode) -> Self {
        match m {
            AgentMode::EmfSocket => crate::identity::Mode::EmfSocket,
            AgentMode::EmfFile => crate::identity::Mode::EmfFile,
            AgentMode::Statsd => crate::identity::Mode::Statsd,
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct AlarmArgs {
    /// How the count reaches CloudWatch (decides namespace and dimensions; auto and stdout are
    /// emf-socket / emf-file).
    #[arg(long, value_enum, default_value = "cloudwatch")]
    pub mode: crate::identity::Mode,

    /// Alarm period in seconds: 10, 30 or a multiple of 60. Run the daemon with the same
    /// --interval (10 s and 30 s need its high-resolution metric).
    #[arg(long, default_value_t = 60)]
    pub period: u64,

    /// Idle time before the action, in minutes (fractions allowed, e.g. 0.5).
    #[arg(long, default_value_t = 15.0)]
    pub idle_minutes: f64,

    /// What to do to the idle instance.
    #[arg(long, value_enum, default_value = "stop")]
    pub action: crate::config::alarm::Action,

    /// TreatMissingData. `missing` (AWS's advice for stop actions) keeps the state when no data
    /// arrives, so a stopped daemon never stops the instance.
    #[arg(long, value_enum, default_value = "missing")]
    pub treat_missing_data: crate::config::alarm::MissingData,

    /// The daemon runs with --idle-after: watch the active-session metric instead of the total.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub idle_after: Option<Duration>,

    /// SNS topic ARN notified on ALARM and back to OK.
    #[arg(long, value_name = "ARN")]
    pub sns_topic: Option<String>,

    #[command(flatten)]
    pub target: AlarmRefArgs,

    #[command(flatten)]
    pub names: NameArgs,
}

/// Which alarm (and instance).
#[derive(Debug, Args, Clone)]
pub struct AlarmRefArgs {
    /// Alarm name (default: emf-ssh-idle-INSTANCE_ID).
    #[arg(long, env = "EMF_SSH_ALARM_NAME")]
    pub alarm_name: Option<String>,

    #[command(flatten)]
    pub instance: InstanceArgs,
}

#[derive(Debug, Args)]
pub struct IamArgs {
    /// How the count reaches CloudWatch (cloudwatch and emf-socket/auto need PutMetricData).
    #[arg(long, value_enum, default_value = "cloudwatch")]
    pub mode: crate::identity::Mode,

    /// Also allow `emf-ssh alarm install|status|remove`.
    #[arg(long)]
    pub alarm: bool,

    #[command(flatten)]
    pub names: NameArgs,
}

/// Where and what the probe looks at; shared by every command that counts.
#[derive(Debug, Args, Clone)]
pub struct ProbeArgs {
    /// Session kinds that make up the count, comma-separated.
    #[arg(long, default_value = "ssh,ssm,mosh,hold", value_name = "KINDS")]
    pub kinds: KindSet,

    /// The proc file system to read (tests point it at fixture trees).
    #[arg(long, default_value = "/proc", value_name = "PATH")]
    pub proc_root: PathBuf,

    /// sshd pid file(s) whose listener is walked without a full /proc scan.
    #[arg(long = "sshd-pid-file", value_name = "PATH", default_values = ["/run/sshd.pid", "/var/run/sshd.pid"])]
    pub sshd_pid_files: Vec<PathBuf>,

    /// Directory of `emf-ssh hold` files.
    #[arg(long, env = "EMF_SSH_HOLDS_DIR", default_value = crate::probe::hold::DEFAULT_HOLDS_DIR, value_name = "DIR")]
    pub holds_dir: PathBuf,

    /// Idle mode: a pty session without terminal input for this long stops counting as active
    /// (sessions without a pty always count). `run` then also publishes the active count.
    #[arg(long, env = "EMF_SSH_IDLE_AFTER", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_after: Option<Duration>,

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

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where to publish: auto, stdout, emf-file:PATH, emf-tcp://HOST:PORT, emf-udp://HOST:PORT,
    /// statsd://HOST:PORT or cloudwatch. auto = the CloudWatch agent's EMF socket
    /// (AWS_EMF_AGENT_ENDPOINT, default tcp://127.0.0.1:25888) while it listens, else PutMetricData.
    #[arg(
        long,
        env = "EMF_SSH_SINK",
        default_value = "auto",
        value_name = "SINK"
    )]
    pub sink: SinkSpec,

    /// Sample once, publish one datapoint and exit (for cron and tests).
    #[arg(long)]
    pub once: bool,

    /// Check the settings and that the probe can see sessions, then exit (systemd ExecStartPre).
    /// Contacts no AWS service.
    #[arg(long, conflicts_with = "once")]
    pub check: bool,

    /// Publication interval, aligned to the clock. Under 60s publishes high-resolution metrics.
    #[arg(long, env = "EMF_SSH_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub interval: Duration,

    /// How often to sample within an interval (the interval maximum is published).
    #[arg(long, env = "EMF_SSH_SAMPLE_EVERY", default_value = "10s", value_parser = parse_duration)]
    pub sample_every: Duration,

    #[command(flatten)]
    pub instance: InstanceArgs,

    #[command(flatten)]
    pub names: NameArgs,

    /// Log group named in EMF documents sent to the agent's socket (and stdout).
    #[arg(long, env = "AWS_EMF_LOG_GROUP_NAME", default_value = crate::emit::emf::DEFAULT_LOG_GROUP)]
    pub log_group: String,

    /// Log stream for EMF socket documents (default: the agent uses the instance id).
    #[arg(long, env = "AWS_EMF_LOG_STREAM_NAME")]
    pub log_stream: Option<String>,

    /// Where to keep the last publication and idle streak for `emf-ssh status`.
    #[arg(long, env = "EMF_SSH_STATE_FILE", default_value = crate::status::DEFAULT_STATE_FILE, value_name = "PATH")]
    pub state_file: PathBuf,

    /// With --idle-after: warn idle sessions on their terminals this long before the alarm
    /// stops the instance.
    #[arg(long, env = "EMF_SSH_WARN_BEFORE", default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub warn_before: Duration,

    /// How long the alarm waits, for warnings when the alarm itself cannot be read at start-up.
    #[arg(long, env = "EMF_SSH_ALARM_IDLE", default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
    pub alarm_idle: Duration,

    /// Do not set this instance's alarm back to OK at start-up when it is in ALARM.
    #[arg(long)]
    pub no_rearm: bool,

    /// Alarm to re-arm at start-up (default: emf-ssh-idle-INSTANCE_ID).
    #[arg(long, env = "EMF_SSH_ALARM_NAME")]
    pub alarm_name: Option<String>,

    #[command(flatten)]
    pub probe: ProbeArgs,
}

/// Which instance the metric belongs to.
#[derive(Debug, Args, Clone)]
pub struct InstanceArgs {
    /// EC2 instance id (default: from the instance metadata service, IMDSv2).
    #[arg(long, env = "EMF_SSH_INSTANCE_ID", value_name = "ID")]
    pub instance_id: Option<String>,

    /// AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, then IMDSv2).
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
}

/// Names of what is published (defaults documented in the README).
#[derive(Debug, Args, Clone)]
pub struct NameArgs {
    /// CloudWatch namespace of the metric (EMF and PutMetricData modes).
    #[arg(long, env = "EMF_SSH_NAMESPACE", default_value = crate::identity::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Metric name.
    #[arg(long, env = "EMF_SSH_METRIC_NAME", default_value = crate::identity::DEFAULT_METRIC_NAME)]
    pub metric_name: String,

    /// Name of the second metric published with --idle-after: sessions that are not idle.
    #[arg(long, env = "EMF_SSH_ACTIVE_METRIC_NAME", default_value = crate::identity::DEFAULT_ACTIVE_METRIC_NAME)]
    pub active_metric_name: String,

    /// The CloudWatch agent's metrics.namespace, where StatsD metrics land.
    #[arg(long, env = "EMF_SSH_AGENT_NAMESPACE", default_value = crate::identity::AGENT_DEFAULT_NAMESPACE)]
    pub agent_namespace: String,
}

impl NameArgs {
    pub fn names(&self) -> crate::identity::Names {
        crate::identity::Names {
            namespace: self.namespace.clone(),
            metric_name: self.metric_name.clone(),
            active_metric_name: self.active_metric_name.clone(),
            agent_namespace: self.agent_namespace.clone(),
        }
    }
}

/// `10s`, `2m`, `1h`, `500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 10s, 2m, 1h)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use s, m or h)")),
    };
    if d.is_zero() {
        return Err("a duration must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_snapshots() {
        // Every command's --help, nested ones included, so a changed flag shows up in review.
        fn walk(cmd: &mut clap::Command, path: String) {
            let mut c = cmd.clone().term_width(100);
            insta::assert_snapshot!(format!("help_{path}"), c.render_long_help().to_string());
            for sub in cmd.get_subcommands_mut() {
                if sub.get_name() != "help" {
                    let name = format!("{path}_{}", sub.get_name());
                    walk(sub, name);
                }
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        walk(&mut cmd, "emf-ssh".into());
    }
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    /// How long to hold (ignored with COMMAND, which holds exactly while it runs).
    #[arg(long = "for", default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,

    /// Why, shown in `hold --list`, `count --json` and the published session list.
    #[arg(long)]
    pub reason: Option<String>,

    /// List the holds instead of creating one.
    #[arg(long, conflicts_with_all = ["reason", "command"])]
    pub list: bool,

    /// With --list: print JSON.
    #[arg(long, requires = "list")]
    pub json: bool,

    /// Directory of hold files.
    #[arg(long, env = "EMF_SSH_HOLDS_DIR", default_value = crate::probe::hold::DEFAULT_HOLDS_DIR, value_name = "DIR")]
    pub holds_dir: PathBuf,

    /// Run COMMAND and hold exactly while it runs (`emf-ssh hold -- make -j8`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The hold id printed by `emf-ssh hold`.
    pub id: String,

    /// Directory of hold files.
    #[arg(long, env = "EMF_SSH_HOLDS_DIR", default_value = crate::probe::hold::DEFAULT_HOLDS_DIR, value_name = "DIR")]
    pub holds_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// Do not call AWS (no alarm state).
    #[arg(long)]
    pub offline: bool,

    /// The daemon's state file.
    #[arg(long, env = "EMF_SSH_STATE_FILE", default_value = crate::status::DEFAULT_STATE_FILE, value_name = "PATH")]
    pub state_file: PathBuf,

    #[command(flatten)]
    pub target: AlarmRefArgs,

    #[command(flatten)]
    pub probe: ProbeArgs,
}
