//! emf-ssh: count who is really using an EC2 instance and publish it to CloudWatch.
//!
//! Data flows one way: `/proc` -> [`probe`] -> snapshot -> [`aggregate`] -> [`emit`] encoders ->
//! sinks. Everything in the middle is pure; I/O sits at the edges.

pub mod aggregate;
pub mod alarm_api;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod emit;
pub mod identity;
pub mod probe;
pub mod status;
pub mod warn;

/// Unix time in milliseconds: the one place the wall clock is read for stamps.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
