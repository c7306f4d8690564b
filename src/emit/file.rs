//! EMF lines to stdout or to a file the CloudWatch agent tails.
//!
//! The file survives logrotate either way: with `copytruncate` our `O_APPEND` writes land at the
//! new end by themselves; with `create` (rename + new file) every write first checks that the
//! path still names the file we hold, and reopens it if not. SIGHUP reopens too. A full disk or
//! any write error keeps the lines (bounded) and reports; the next publication retries.

use super::{emf, Backlog, Sink, SinkError};
use crate::aggregate::Datapoint;
use crate::identity::MetricIdentity;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

/// Lines kept while the file cannot be written (a day of one-minute datapoints).
const BACKLOG: usize = 1440;

#[derive(Debug)]
pub struct StdoutSink {
    id: MetricIdentity,
    target: emf::LogTarget,
}

impl StdoutSink {
    pub fn new(id: MetricIdentity, target: emf::LogTarget) -> Self {
        StdoutSink { id, target }
    }
}

impl Sink for StdoutSink {
    fn describe(&self) -> String {
        "stdout (EMF)".into()
    }
    async fn publish(&mut self, dp: &Datapoint) -> Result<(), SinkError> {
        let line = emf::encode(&self.id, dp, &self.target);
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|_| out.flush())
            .map_err(|e| SinkError::Write {
                target: "stdout".into(),
                reason: e.to_string(),
                queued: 0,
            })
    }
}

#[derive(Debug)]
pub struct EmfFileSink {
    path: PathBuf,
    id: MetricIdentity,
    target: emf::LogTarget,
    file: Option<(File, u64, u64)>,
    backlog: Backlog<String>,
}

impl EmfFileSink {
    pub fn new(path: PathBuf, id: MetricIdentity, target: emf::LogTarget) -> Self {
        EmfFileSink {
            path,
            id,
            target,
            file: None,
            backlog: Backlog::new(BACKLOG),
        }
    }

    /// The open file, reopened when the path now names another file (rotated) or none.
    fn file(&mut self) -> std::io::Result<&mut File> {
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let stale = match (&self.file, current) {
            (Some((_, dev, ino)), Some(now)) => (*dev, *ino) != now,
            _ => true,
        };
        if stale {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            // 0644: the CloudWatch agent (its own user) must read what we write.
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o644)
                .open(&self.path)?;
            let m = f.metadata()?;
            if self.file.is_some() {
                tracing::info!(path = %self.path.display(), "EMF file was rotated; reopened");
            }
            self.file = Some((f, m.dev(), m.ino()));
        }
        Ok(&mut self.file.as_mut().expect("just opened").0)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        while let Some(line) = self.backlog.front() {
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            // One write() per line: O_APPEND keeps lines whole even next to copytruncate.
            let res = self.file().and_then(|f| f.write_all(&buf));
            if let Err(e) = res {
                self.file = None;
                let hint = if e.raw_os_error() == Some(28) {
                    " (disk full)"
                } else {
                    ""
                };
                return Err(SinkError::Write {
                    target: self.path.display().to_string(),
                    reason: format!("{e}{hint}"),
                    queued: self.backlog.len(),
                });
            }
            self.backlog.pop_front();
        }
        Ok(())
    }
}

impl Sink for EmfFileSink {
    fn describe(&self) -> String {
        format!("EMF file {}", self.path.display())
    }
    async fn publish(&mut self, dp: &Datapoint) -> Result<(), SinkError> {
        self.backlog.push(emf::encode(&self.id, dp, &self.target));
        self.flush()
    }
    fn reopen(&mut self) {
        self.file = None;
    }
}
