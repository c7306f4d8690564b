//! `PutMetricData` through `aws-sdk-cloudwatch`, for machines without the CloudWatch agent.
//!
//! Each datapoint is sent as a `StatisticValues` set (max/min/sum/count of the interval's
//! samples), so the alarm's Maximum sees the interval maximum. The SDK retries throttling and 5xx
//! (standard mode, 4 attempts); what still fails stays in a bounded backlog and goes out with the
//! next publication (CloudWatch accepts timestamps up to two weeks old). `AWS_ENDPOINT_URL` and
//! `AWS_ENDPOINT_URL_CLOUDWATCH` are honoured by the SDK's config loader.

use super::{Backlog, Sink, SinkError};
use crate::aggregate::Datapoint;
use crate::identity::{error_chain, MetricIdentity};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};
use std::time::Duration;

/// Datapoints kept while CloudWatch is unreachable (a day at one a minute).
const BACKLOG: usize = 1440;
/// PutMetricData takes at most 1000 datums per request.
const MAX_DATUMS: usize = 1000;

/// Shared SDK configuration for every CloudWatch call emf-ssh makes.
pub async fn sdk_config(region: Option<String>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(200)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(r) = region {
        loader = loader.region(Region::new(r));
    }
    loader.load().await
}

pub async fn client(region: Option<String>) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(&sdk_config(region).await)
}

#[derive(Debug)]
pub struct CloudWatchSink {
    client: aws_sdk_cloudwatch::Client,
    id: MetricIdentity,
    backlog: Backlog<Datapoint>,
}

impl CloudWatchSink {
    pub async fn new(region: Option<String>, id: MetricIdentity) -> Self {
        CloudWatchSink {
            client: client(region).await,
            id,
            backlog: Backlog::new(BACKLOG),
        }
    }

    /// The datapoint's datums: the total, and with idle mode the active count.
    pub fn datums(id: &MetricIdentity, dp: &Datapoint) -> Vec<MetricDatum> {
        let one = |name: &str, max: f64, min: f64, sum: f64| {
            let dims = id
                .dimensions
                .iter()
                .map(|(k, v)| Dimension::builder().name(k).value(v).build());
            MetricDatum::builder()
                .metric_name(name)
                .set_dimensions(Some(dims.collect()))
                .timestamp(DateTime::from_millis(dp.timestamp_ms as i64))
                .unit(StandardUnit::from(id.unit.unwrap_or(crate::identity::UNIT)))
                .storage_resolution(id.storage_resolution as i32)
                .statistic_values(
                    StatisticSet::builder()
                        .sample_count(dp.sample_count as f64)
                        .sum(sum)
                        .minimum(min)
                        .maximum(max)
                        .build(),
                )
                .build()
        };
        let mut v = vec![one(&id.metric_name, dp.max, dp.min, dp.sum)];
        if let Some(active) = &id.active_metric_name {
            v.push(one(active, dp.active_max, dp.active_min, dp.active_sum));
        }
        v
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        while !self.backlog.is_empty() {
            // Up to two datums per datapoint.
            let n = self.backlog.len().min(MAX_DATUMS / 2);
            let batch: Vec<MetricDatum> = self
                .backlog
                .iter()
                .take(n)
                .flat_map(|d| Self::datums(&self.id, d))
                .collect();
            let res = self
                .client
                .put_metric_data()
                .namespace(&self.id.namespace)
                .set_metric_data(Some(batch))
                .send()
                .await;
            match res {
                Ok(_) => {
                    for _ in 0..n {
                        self.backlog.pop_front();
                    }
                }
                Err(e) => {
                    let reason = match e.code() {
                        Some(code) => format!("{code}: {}", e.message().unwrap_or_default()),
                        None => error_chain(&e),
                    };
                    return Err(SinkError::CloudWatch {
                        hint: hint(&reason).into(),
                        reason,
                        queued: self.backlog.len(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// What to do next, by the shape of the failure.
pub fn hint(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("credential") {
        "; no AWS credentials: on EC2 attach an instance profile that allows cloudwatch:PutMetricData \
         (emf-ssh gen-config iam-policy), elsewhere set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    } else if r.contains("accessdenied") || r.contains("not authorized") {
        "; the credentials lack cloudwatch:PutMetricData for this namespace (emf-ssh gen-config iam-policy)"
    } else if r.contains("region") {
        "; no region: pass --region or set AWS_REGION"
    } else if r.contains("throttl")
        || r.contains("service unavailable")
        || r.contains("503")
        || r.contains("500")
    {
        "; CloudWatch is throttling or unavailable even after retries; the next publication retries"
    } else {
        ""
    }
}

impl Sink for CloudWatchSink {
    fn describe(&self) -> String {
        "CloudWatch PutMetricData".into()
    }
    async fn publish(&mut self, dp: &Datapoint) -> Result<(), SinkError> {
        self.backlog.push(dp.clone());
        self.flush().await
    }
}
