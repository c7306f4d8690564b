//! Sockets to the CloudWatch agent: EMF over TCP (newline-delimited, reconnecting with backoff,
//! bounded backlog while the agent is down), EMF over UDP (one document per datagram), and
//! StatsD over UDP.

use super::{emf, statsd, Backlog, Sink, SinkError};
use crate::aggregate::{Counts, Datapoint};
use crate::identity::MetricIdentity;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout, Instant};

/// Documents kept while the agent is down (a day of one-minute datapoints, ~1 MiB at most).
const BACKLOG: usize = 1440;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct EmfTcpSink {
    addr: String,
    id: MetricIdentity,
    target: emf::LogTarget,
    stream: Option<TcpStream>,
    backlog: Backlog<String>,
    backoff: Duration,
    next_attempt: Option<Instant>,
}

impl EmfTcpSink {
    pub fn new(addr: String, id: MetricIdentity, target: emf::LogTarget) -> Self {
        EmfTcpSink {
            addr,
            id,
            target,
            stream: None,
            backlog: Backlog::new(BACKLOG),
            backoff: Duration::from_secs(1),
            next_attempt: None,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn unreachable(&self, reason: String) -> SinkError {
        SinkError::Unreachable {
            target: format!("the CloudWatch agent's EMF listener at tcp://{}", self.addr),
            reason,
            queued: self.backlog.len(),
            hint: "; is the agent running with logs.metrics_collected.emf? (emf-ssh gen-config agent --mode emf-socket)",
        }
    }

    /// A connected stream, or why not. Respects the backoff after failures.
    pub async fn connect(&mut self) -> Result<(), String> {
        if let Some(s) = &self.stream {
            // The agent closing its end shows as EOF on a read; a write would still "succeed".
            let mut probe = [0u8; 1];
            match s.try_read(&mut probe) {
                Ok(0) => self.stream = None,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => self.stream = None,
                _ => return Ok(()),
            }
        }
        if let Some(t) = self.next_attempt {
            if Instant::now() < t {
                return Err(format!(
                    "waiting {:?} before reconnecting",
                    t - Instant::now()
                ));
            }
        }
        match timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr)).await {
            Ok(Ok(s)) => {
                tracing::info!(addr = %self.addr, "connected to the agent's EMF listener");
                self.stream = Some(s);
                self.backoff = Duration::from_secs(1);
                self.next_attempt = None;
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail(e.to_string())),
            Err(_) => Err(self.fail("connect timed out".into())),
        }
    }

    fn fail(&mut self, reason: String) -> String {
        self.stream = None;
        self.next_attempt = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        reason
    }

    /// Sends the backlog in order; stops at the first failure (the rest stays queued).
    async fn flush(&mut self) -> Result<(), SinkError> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        if let Err(reason) = self.connect().await {
            return Err(self.unreachable(reason));
        }
        while let Some(line) = self.backlog.front() {
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            let stream = self.stream.as_mut().expect("connected above");
            match timeout(CONNECT_TIMEOUT, stream.write_all(&buf)).await {
                Ok(Ok(())) => {
                    self.backlog.pop_front();
                }
                Ok(Err(e)) => {
                    let r = self.fail(e.to_string());
                    return Err(self.unreachable(r));
                }
                Err(_) => {
                    let r = self.fail("write timed out".into());
                    return Err(self.unreachable(r));
                }
            }
        }
        Ok(())
    }

    /// Queue-less send for `auto`: either the agent takes the document now, or the caller
    /// publishes elsewhere (so nothing is sent twice when the agent comes back).
    pub async fn send_now(&mut self, dp: &Datapoint) -> Result<(), SinkError> {
        debug_assert!(self.backlog.is_empty());
        self.backlog.push(emf::encode(&self.id, dp, &self.target));
        let r = self.flush().await;
        while self.backlog.pop_front().is_some() {}
        r
    }
}

impl Sink for EmfTcpSink {
    fn describe(&self) -> String {
        format!("EMF over TCP to {}", self.addr)
    }
    async fn publish(&mut self, dp: &Datapoint) -> Result<(), SinkError> {
        self.backlog.push(emf::encode(&self.id, dp, &self.target));
        self.flush().await
    }
}

/// One datagram per document (or StatsD line); UDP cannot tell whether anyone listens.
#[derive(Debug)]
pub struct UdpSink {
    addr: String,
    id: MetricIdentity,
    target: emf::LogTarget,
    statsd: bool,
    socket: Option<UdpSocket>,
}

impl UdpSink {
    pub fn emf(addr: String, id: MetricIdentity, target: emf::LogTarget) -> Self {
        UdpSink {
            addr,
            id,
            target,
            statsd: false,
            socket: None,
        }
    }
    pub fn statsd(addr: String, id: MetricIdentity) -> Self {
        UdpSink {
            addr,
            id,
            target: emf::LogTarget::default(),
            statsd: true,
            socket: None,
        }
    }

    async fn send(&mut self, payload: &[u8]) -> Result<(), SinkError> {
        let err = |reason: String| SinkError::Unreachable {
            target: format!("udp://{}", self.addr),
            reason,
            queued: 0,
            hint: "",
        };
        if self.socket.is_none() {
            let target = tokio::net::lookup_host(&self.addr)
                .await
                .map_err(|e| err(e.to_string()))?
                .next()
                .ok_or_else(|| err("no address".into()))?;
            let bind = if target.is_ipv6() {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let s = UdpSocket::bind(bind)
                .await
                .map_err(|e| err(e.to_string()))?;
            s.connect(target).await.map_err(|e| err(e.to_string()))?;
            self.socket = Some(s);
        }
        let s = self.socket.as_ref().expect("bound above");
        match s.send(payload).await {
            Ok(_) => Ok(()),
            // ECONNREFUSED from an earlier datagram's ICMP: nobody listened then; try again later.
            Err(e) => {
                self.socket = None;
                Err(err(e.to_string()))
            }
        }
    }
}

impl Sink for UdpSink {
    fn describe(&self) -> String {
        if self.statsd {
            format!("StatsD over UDP to {}", self.addr)
        } else {
            format!("EMF over UDP to {}", self.addr)
        }
    }
    /// The agent deletes StatsD gauges after each collection interval (10 s by default), so the
    /// gauge is re-sent after every sample.
    async fn sample(&mut self, counts: Counts) -> Result<(), SinkError> {
        if !self.statsd {
            return Ok(());
        }
        for line in statsd::gauge_lines(&self.id, counts) {
            self.send(line.as_bytes()).await?;
        }
        Ok(())
    }
    async fn publish(&mut self, dp: &Datapoint) -> Result<(), SinkError> {
        if self.statsd {
            // The interval maximum too, so a session between two samples' gauges is not lost.
            let counts = Counts {
                total: dp.max as usize,
                active: dp.active_max as usize,
            };
            for line in statsd::gauge_lines(&self.id, counts) {
                self.send(line.as_bytes()).await?;
            }
            return Ok(());
        }
        let doc = emf::encode(&self.id, dp, &self.target);
        self.send(doc.as_bytes()).await
    }
}
