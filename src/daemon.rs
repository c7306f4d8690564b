//! The run loop: sample every `sample_every`, publish the interval's maximum at aligned interval
//! boundaries, react to signals, talk to systemd. It knows sinks only through [`Sink`].

use crate::aggregate::{interval_start, Aggregator, Counts, Datapoint};
use crate::emit::cloudwatch::CloudWatchSink;
use crate::emit::file::{EmfFileSink, StdoutSink};
use crate::emit::socket::{EmfTcpSink, UdpSink};
use crate::emit::{emf, Sink, SinkError, SinkSpec};
use crate::identity::{InstanceIdentity, MetricIdentity, Names};
use crate::probe::{KindSet, Probe};
use crate::status::DaemonState;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep_until, Instant};

/// Every sink, statically dispatched (async trait methods are not object-safe).
#[allow(clippy::large_enum_variant)] // one per process: boxing buys nothing
#[derive(Debug)]
pub enum AnySink {
    Stdout(StdoutSink),
    File(EmfFileSink),
    Tcp(EmfTcpSink),
    Udp(UdpSink),
    CloudWatch(CloudWatchSink),
    Auto(AutoSink),
}

macro_rules! each_sink {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnySink::Stdout($s) => $e,
            AnySink::File($s) => $e,
            AnySink::Tcp($s) => $e,
            AnySink::Udp($s) => $e,
            AnySink::CloudWatch($s) => $e,
            AnySink::Auto($s) => $e,
        }
    };
}

impl Sink for AnySink {
    fn describe(&self) -> String {
        each_sink!(self, s => s.describe())
    }
    async fn sample(&mut self, counts: Counts) -> Result<(), SinkError> {
        each_sink!(self, s => s.sample(counts).await)
    }
    async fn publish(&mut self, dp: &Datapoint) -> Result<(), SinkError> {
        each_sink!(self, s => s.publish(dp).await)
    }
    fn reopen(&mut self) {
        each_sink!(self, s => s.reopen())
    }
}

/// `auto`: the agent's EMF socket while it accepts connections, else PutMetricData. Both store
/// the same metric identity, so the alarm does not care which one delivered a datapoint. The
/// choice is re-evaluated at every publication and logged when it changes.
#[derive(Debug)]
pub struct AutoSink {
    agent: EmfTcpSink,
    cloudwatch: Option<CloudWatchSink>,
    region: Option<String>,
    id: MetricIdentity,
    using_agent: Option<bool>,
}

impl Sink for AutoSink {
    fn describe(&self) -> String {
        format!(
            "auto (agent EMF at tcp://{}, else CloudWatch PutMetricData)",
            self.agent.addr()
        )
    }
    async fn publish(&mut self, dp: &Datapoint) -> Result<(), SinkError> {
        let agent_result = self.agent.send_now(dp).await;
        let via_agent = agent_result.is_ok();
        if self.using_agent != Some(via_agent) {
            match &agent_result {
                Ok(()) => tracing::info!(
                    addr = self.agent.addr(),
                    "auto: publishing through the CloudWatch agent"
                ),
                Err(e) => tracing::warn!("auto: publishing with PutMetricData ({e})"),
            }
            self.using_agent = Some(via_agent);
        }
        if via_agent {
            return Ok(());
        }
        if self.cloudwatch.is_none() {
            self.cloudwatch = Some(CloudWatchSink::new(self.region.clone(), self.id.clone()).await);
        }
        self.cloudwatch
            .as_mut()
            .expect("created above")
            .publish(dp)
            .await
    }
}

/// Everything `run` needs besides the probe.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub sink: SinkSpec,
    pub interval: Duration,
    pub sample_every: Duration,
    pub once: bool,
    pub kinds: KindSet,
    pub names: Names,
    pub log_target: emf::LogTarget,
    /// Where `emf-ssh status` finds the daemon's last publication and idle streak.
    pub state_file: Option<std::path::PathBuf>,
    /// `--idle-after` in seconds: pty sessions without input for that long are not active.
    pub idle_after: Option<u64>,
    /// Warnings to idle sessions before the stop (idle mode only).
    pub warn: Option<(u64, u64)>,
    /// Where session ttys live.
    pub dev_root: std::path::PathBuf,
}

impl RunConfig {
    pub fn counts(&self, s: &crate::probe::Snapshot) -> Counts {
        Counts {
            total: s.count(&self.kinds),
            active: s.active_count(&self.kinds, self.idle_after),
        }
    }

    pub fn identity(&self, instance: &InstanceIdentity) -> MetricIdentity {
        MetricIdentity::for_mode(
            self.sink.mode(),
            &self.names,
            &instance.instance_id,
            self.interval.as_secs(),
        )
        .with_idle_mode(&self.names, self.idle_after.is_some())
    }
}

/// Builds the sink the spec names.
pub async fn build_sink(cfg: &RunConfig, instance: &InstanceIdentity) -> Result<AnySink, String> {
    let id = cfg.identity(instance);
    // The EMF file input takes the log group from the agent's collect_list entry; the socket
    // needs it in every document (the agent silently drops events without one).
    let socket_target = cfg.log_target.clone();
    let file_target = emf::LogTarget {
        log_group_name: None,
        log_stream_name: None,
    };
    Ok(match &cfg.sink {
        SinkSpec::Stdout => AnySink::Stdout(StdoutSink::new(id, socket_target)),
        SinkSpec::EmfFile(p) => AnySink::File(EmfFileSink::new(p.clone(), id, file_target)),
        SinkSpec::EmfTcp(a) => AnySink::Tcp(EmfTcpSink::new(a.clone(), id, socket_target)),
        SinkSpec::EmfUdp(a) => AnySink::Udp(UdpSink::emf(a.clone(), id, socket_target)),
        SinkSpec::Statsd(a) => AnySink::Udp(UdpSink::statsd(a.clone(), id)),
        SinkSpec::Cloudwatch => {
            AnySink::CloudWatch(CloudWatchSink::new(instance.region.clone(), id).await)
        }
        SinkSpec::Auto => match SinkSpec::agent_endpoint_from_env()? {
            SinkSpec::EmfTcp(a) => AnySink::Auto(AutoSink {
                agent: EmfTcpSink::new(a, id.clone(), socket_target),
                cloudwatch: None,
                region: instance.region.clone(),
                id,
                using_agent: None,
            }),
            SinkSpec::EmfUdp(a) => {
                tracing::warn!("AWS_EMF_AGENT_ENDPOINT is UDP: auto cannot tell whether the agent listens; always using it");
                AnySink::Udp(UdpSink::emf(a, id, socket_target))
            }
            other => {
                return Err(format!(
                    "AWS_EMF_AGENT_ENDPOINT must be tcp:// or udp://, not {other}"
                ))
            }
        },
    })
}

/// What a run did, for `--once` callers and tests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunSummary {
    pub samples: u64,
    pub failed_samples: u64,
    pub published: u64,
    pub publish_failures: u64,
}

fn notify(state: sd_notify::NotifyState<'_>) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(&[state]) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }
}

/// `--once`: one sample, one datapoint stamped now. A failed sample publishes nothing (exit 1).
pub async fn run_once(
    cfg: &RunConfig,
    probe: &mut Probe,
    sink: &mut AnySink,
) -> anyhow::Result<RunSummary> {
    let now = crate::now_ms();
    let snapshot = probe.sample(now)?;
    let mut agg = Aggregator::new(now);
    let counts = cfg.counts(&snapshot);
    agg.add_counts(counts, &snapshot.sessions);
    let dp = agg.finish(now).expect("one good sample");
    sink.sample(counts).await?;
    sink.publish(&dp).await?;
    tracing::info!(value = dp.max, sink = %sink.describe(), "published");
    Ok(RunSummary {
        samples: 1,
        published: 1,
        ..RunSummary::default()
    })
}

/// The daemon loop. Returns after SIGTERM/SIGINT, having published what was pending.
pub async fn run_loop(
    cfg: &RunConfig,
    probe: &mut Probe,
    sink: &mut AnySink,
) -> anyhow::Result<RunSummary> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let interval_ms = cfg.interval.as_millis().max(1) as u64;
    let watchdog = sd_notify::watchdog_enabled();
    if let Some(w) = watchdog {
        if cfg.sample_every * 2 > w {
            tracing::warn!(?w, sample_every = ?cfg.sample_every, "WatchdogSec is less than twice --sample-every: systemd may kill the service");
        }
    }

    // Wall-clock alignment: intervals start at multiples of the interval since the epoch, like
    // CloudWatch's periods. Monotonic deadlines are derived from it once and then stepped.
    let now_wall = crate::now_ms();
    let mut agg = Aggregator::new(interval_start(now_wall, interval_ms));
    let to_boundary = interval_ms - now_wall % interval_ms;
    let mut next_publish = Instant::now() + Duration::from_millis(to_boundary);
    let mut next_sample = Instant::now();
    let mut summary = RunSummary::default();
    let mut state = DaemonState {
        pid: std::process::id(),
        sink: cfg.sink.to_string(),
        interval_secs: cfg.interval.as_secs().max(1),
        updated_at_ms: now_wall,
        last_value: None,
        last_timestamp_ms: None,
        last_error: None,
        idle_since_ms: None,
    };
    let state_file = cfg.state_file.as_deref();
    let mut warner = match (cfg.warn, cfg.idle_after) {
        (Some((before, alarm_idle)), Some(idle_after)) => Some(crate::warn::Warner::new(
            before,
            alarm_idle,
            idle_after,
            cfg.dev_root.clone(),
        )),
        _ => None,
    };
    let mut last_sessions: Vec<crate::probe::Session> = Vec::new();
    let mut ready = false;
    tracing::info!(sink = %sink.describe(), interval = ?cfg.interval, sample_every = ?cfg.sample_every, "running");

    loop {
        tokio::select! {
            biased;
            _ = term.recv() => { tracing::info!("SIGTERM: publishing what is pending"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: publishing what is pending"); break; }
            _ = hup.recv() => { tracing::info!("SIGHUP: reopening files"); sink.reopen(); }
            _ = sleep_until(next_publish) => {
                let dp = agg.finish(interval_start(crate::now_ms(), interval_ms));
                publish(cfg, sink, dp, &mut summary, &mut state, state_file).await;
                next_publish += cfg.interval;
                if let Some(w) = warner.as_mut() {
                    let now = crate::now_ms();
                    if let Some((stop_at, ttys)) = w.due(state.idle_since_ms, now, &last_sessions) {
                        let sent = w.send(stop_at, now, &ttys);
                        tracing::warn!(?sent, "warned idle sessions: the alarm stops this instance in about {} s", stop_at.saturating_sub(now) / 1000);
                    }
                }
            }
            _ = sleep_until(next_sample) => {
                next_sample += cfg.sample_every;
                take_sample(cfg, probe, sink, &mut agg, &mut summary, &mut last_sessions).await;
                if !ready {
                    notify(sd_notify::NotifyState::Ready);
                    ready = true;
                }
                if watchdog.is_some() {
                    notify(sd_notify::NotifyState::Watchdog);
                }
            }
        }
    }
    notify(sd_notify::NotifyState::Stopping);
    // One last look, so the datapoint published on the way out reflects the moment of stopping.
    take_sample(cfg, probe, sink, &mut agg, &mut summary, &mut last_sessions).await;
    let dp = agg.finish(0);
    publish(cfg, sink, dp, &mut summary, &mut state, state_file).await;
    Ok(summary)
}

async fn take_sample(
    cfg: &RunConfig,
    probe: &mut Probe,
    sink: &mut AnySink,
    agg: &mut Aggregator,
    summary: &mut RunSummary,
    last_sessions: &mut Vec<crate::probe::Session>,
) {
    summary.samples += 1;
    match probe.sample(crate::now_ms()) {
        Ok(s) => {
            let counts = cfg.counts(&s);
            agg.add_counts(counts, &s.sessions);
            *last_sessions = s.sessions;
            if let Err(e) = sink.sample(counts).await {
                tracing::warn!("{e}");
            }
        }
        Err(e) => {
            // Never a false zero: this sample does not exist.
            summary.failed_samples += 1;
            agg.add_failure();
            tracing::error!("sample skipped, nothing counted: {e}");
        }
    }
}

async fn publish(
    cfg: &RunConfig,
    sink: &mut AnySink,
    dp: Option<Datapoint>,
    summary: &mut RunSummary,
    state: &mut DaemonState,
    state_file: Option<&std::path::Path>,
) {
    let Some(dp) = dp else {
        tracing::warn!("no successful sample in this interval: nothing published");
        return;
    };
    let result = sink.publish(&dp).await;
    match &result {
        Ok(()) => {
            summary.published += 1;
            tracing::debug!(value = dp.max, samples = dp.sample_count, "published");
        }
        Err(e) => {
            summary.publish_failures += 1;
            tracing::error!("{e}");
        }
    }
    // The idle streak as the alarm will see it: consecutive datapoints of 0.
    // With idle mode the alarm watches the active count.
    let watched = if cfg.idle_after.is_some() {
        dp.active_max
    } else {
        dp.max
    };
    state.idle_since_ms = if watched == 0.0 {
        state.idle_since_ms.or(Some(dp.timestamp_ms))
    } else {
        None
    };
    state.last_value = Some(dp.max);
    state.last_timestamp_ms = Some(dp.timestamp_ms);
    state.last_error = result.err().map(|e| e.to_string());
    state.updated_at_ms = crate::now_ms();
    if let Some(path) = state_file {
        if let Err(e) = state.save(path) {
            tracing::debug!(path = %path.display(), error = %e, "cannot write the state file for `emf-ssh status`");
        }
    }
}
