//! Generated configuration (pure): the CloudWatch agent JSON, the alarm, the IAM policy. Each
//! takes the [`MetricIdentity`](crate::identity::MetricIdentity) the sinks use, so what the alarm
//! watches is what is emitted by construction.

pub mod agent;
pub mod alarm;
pub mod iam;

#[cfg(test)]
mod tests;
