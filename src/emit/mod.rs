//! Encoders (pure) and sinks (I/O). Every sink implements [`Sink`]; the daemon loop knows nothing
//! about files, sockets or the SDK.

pub mod cloudwatch;
pub mod emf;
pub mod file;
pub mod socket;
pub mod statsd;

use crate::aggregate::Datapoint;
use crate::identity::Mode;
use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Default address of the CloudWatch agent's EMF listener.
pub const DEFAULT_AGENT_ENDPOINT: &str = "tcp://127.0.0.1:25888";

/// `--sink` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// The agent's EMF socket when it accepts connections, otherwise `cloudwatch`.
    Auto,
    Stdout,
    EmfFile(PathBuf),
    EmfTcp(String),
    EmfUdp(String),
    Statsd(String),
    Cloudwatch,
}

impl SinkSpec {
    /// The mode that decides the stored metric's identity. `auto` and `stdout` produce the same
    /// identity as the EMF socket and `PutMetricData`, which is what lets `auto` switch freely.
    pub fn mode(&self) -> Mode {
        match self {
            SinkSpec::Auto | SinkSpec::EmfTcp(_) | SinkSpec::EmfUdp(_) => Mode::EmfSocket,
            SinkSpec::Stdout | SinkSpec::EmfFile(_) => Mode::EmfFile,
            SinkSpec::Statsd(_) => Mode::Statsd,
            SinkSpec::Cloudwatch => Mode::Cloudwatch,
        }
    }

    /// The agent endpoint from `AWS_EMF_AGENT_ENDPOINT` (aws-embedded-metrics convention).
    pub fn agent_endpoint_from_env() -> Result<SinkSpec, String> {
        let ep = std::env::var("AWS_EMF_AGENT_ENDPOINT")
            .unwrap_or_else(|_| DEFAULT_AGENT_ENDPOINT.into());
        format!("emf-{ep}")
            .parse()
            .map_err(|e| format!("AWS_EMF_AGENT_ENDPOINT: {e}"))
    }
}

impl FromStr for SinkSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hostport = |rest: &str, scheme: &str| -> Result<String, String> {
            match rest.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {
                    Ok(rest.to_owned())
                }
                _ => Err(format!(
                    "`{s}`: expected {scheme}HOST:PORT, e.g. {scheme}127.0.0.1:25888"
                )),
            }
        };
        match s {
            "auto" => Ok(SinkSpec::Auto),
            "stdout" => Ok(SinkSpec::Stdout),
            "cloudwatch" => Ok(SinkSpec::Cloudwatch),
            _ => {
                if let Some(p) = s.strip_prefix("emf-file:") {
                    if p.is_empty() {
                        return Err(
                            "emf-file: needs a path, e.g. emf-file:/var/log/emf-ssh/emf.log".into(),
                        );
                    }
                    Ok(SinkSpec::EmfFile(PathBuf::from(p)))
                } else if let Some(r) = s.strip_prefix("emf-tcp://") {
                    hostport(r, "emf-tcp://").map(SinkSpec::EmfTcp)
                } else if let Some(r) = s.strip_prefix("emf-udp://") {
                    hostport(r, "emf-udp://").map(SinkSpec::EmfUdp)
                } else if let Some(r) = s.strip_prefix("statsd://") {
                    hostport(r, "statsd://").map(SinkSpec::Statsd)
                } else {
                    Err(format!(
                        "unknown sink `{s}`; use auto, stdout, emf-file:PATH, emf-tcp://HOST:PORT, \
                         emf-udp://HOST:PORT, statsd://HOST:PORT or cloudwatch"
                    ))
                }
            }
        }
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkSpec::Auto => f.write_str("auto"),
            SinkSpec::Stdout => f.write_str("stdout"),
            SinkSpec::EmfFile(p) => write!(f, "emf-file:{}", p.display()),
            SinkSpec::EmfTcp(a) => write!(f, "emf-tcp://{a}"),
            SinkSpec::EmfUdp(a) => write!(f, "emf-udp://{a}"),
            SinkSpec::Statsd(a) => write!(f, "statsd://{a}"),
            SinkSpec::Cloudwatch => f.write_str("cloudwatch"),
        }
    }
}

/// What went wrong in a sink. The data is kept (bounded) unless the message says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot reach {target}: {reason}; {queued} datapoint(s) kept for retry{hint}")]
    Unreachable {
        target: String,
        reason: String,
        queued: usize,
        hint: &'static str,
    },
    #[error("cannot write {target}: {reason}; {queued} datapoint(s) kept for retry")]
    Write {
        target: String,
        reason: String,
        queued: usize,
    },
    #[error(
        "CloudWatch PutMetricData failed: {reason}; {queued} datapoint(s) kept for retry{hint}"
    )]
    CloudWatch {
        reason: String,
        queued: usize,
        hint: String,
    },
}

/// The seam between the daemon and the outside world.
#[allow(async_fn_in_trait)] // used with static dispatch only (see AnySink)
pub trait Sink {
    /// Human-readable destination, for logs.
    fn describe(&self) -> String;
    /// Called after every successful sample (StatsD re-sends its gauge here).
    async fn sample(&mut self, _counts: crate::aggregate::Counts) -> Result<(), SinkError> {
        Ok(())
    }
    /// Publishes one interval's datapoint.
    async fn publish(&mut self, dp: &Datapoint) -> Result<(), SinkError>;
    /// SIGHUP: reopen files (after logrotate without copytruncate).
    fn reopen(&mut self) {}
}

/// Bounded FIFO of unsent items: while a peer is down the oldest are dropped (and counted) so
/// memory stays bounded however long the outage.
#[derive(Debug)]
pub struct Backlog<T> {
    items: VecDeque<T>,
    cap: usize,
    dropped: u64,
}

impl<T> Backlog<T> {
    pub fn new(cap: usize) -> Self {
        Backlog {
            items: VecDeque::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }
    pub fn push(&mut self, item: T) {
        if self.items.len() == self.cap {
            self.items.pop_front();
            self.dropped += 1;
            tracing::warn!(
                dropped_total = self.dropped,
                "backlog full: dropped the oldest unsent datapoint"
            );
        }
        self.items.push_back(item);
    }
    pub fn front(&self) -> Option<&T> {
        self.items.front()
    }
    pub fn pop_front(&mut self) -> Option<T> {
        self.items.pop_front()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_specs_parse_and_print_back() {
        for s in [
            "auto",
            "stdout",
            "cloudwatch",
            "emf-file:/var/log/x.log",
            "emf-tcp://127.0.0.1:25888",
            "emf-udp://localhost:25888",
            "statsd://127.0.0.1:8125",
        ] {
            assert_eq!(
                s.parse::<SinkSpec>().map(|x| x.to_string()),
                Ok(s.to_owned())
            );
        }
        for bad in [
            "",
            "tcp://x:1",
            "emf-tcp://nohost",
            "emf-tcp://h:0",
            "statsd://h:99999",
            "emf-file:",
        ] {
            let e = bad.parse::<SinkSpec>().expect_err(bad);
            assert!(
                e.contains("e.g.") || e.contains("use auto") || e.contains("needs a path"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn backlog_drops_oldest_and_counts() {
        let mut b = Backlog::new(2);
        for i in 0..5 {
            b.push(i);
        }
        assert_eq!(b.iter().copied().collect::<Vec<_>>(), [3, 4]);
        assert_eq!(b.dropped(), 3);
    }
}
