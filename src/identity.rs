//! What is emitted, in one place: the metric identity per sink mode, and this instance's
//! identity (IMDSv2 unless overridden). Encoders and config generators both take a
//! [`MetricIdentity`]; nobody spells a metric name twice.

use serde::Serialize;
use std::fmt;
use std::time::Duration;

pub const DEFAULT_NAMESPACE: &str = "EmfSsh";
pub const DEFAULT_METRIC_NAME: &str = "Sessions";
pub const DEFAULT_ACTIVE_METRIC_NAME: &str = "ActiveSessions";
/// The CloudWatch agent's default `metrics.namespace`, where StatsD metrics land.
pub const AGENT_DEFAULT_NAMESPACE: &str = "CWAgent";
pub const INSTANCE_ID_DIMENSION: &str = "InstanceId";
pub const UNIT: &str = "Count";

/// How the count reaches CloudWatch; decides what the stored metric looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `PutMetricData` from emf-ssh itself.
    Cloudwatch,
    /// EMF documents to the CloudWatch agent's EMF listener (TCP or UDP).
    EmfSocket,
    /// EMF documents appended to a file the CloudWatch agent tails.
    EmfFile,
    /// A StatsD gauge to the CloudWatch agent.
    Statsd,
}

/// User-chosen names (flags / environment), common to every mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub namespace: String,
    pub metric_name: String,
    /// Name of the not-idle count, published with `--idle-after`.
    pub active_metric_name: String,
    /// Namespace the agent puts StatsD metrics in (its `metrics.namespace`).
    pub agent_namespace: String,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            namespace: DEFAULT_NAMESPACE.into(),
            metric_name: DEFAULT_METRIC_NAME.into(),
            active_metric_name: DEFAULT_ACTIVE_METRIC_NAME.into(),
            agent_namespace: AGENT_DEFAULT_NAMESPACE.into(),
        }
    }
}

/// Exactly the metric CloudWatch stores, as the alarm must name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricIdentity {
    pub namespace: String,
    pub metric_name: String,
    /// Sorted by name; includes what the agent adds (StatsD: `metric_type`).
    pub dimensions: Vec<(String, String)>,
    /// `Count` where we set it; `None` for StatsD, where the agent decides the unit and the
    /// alarm must therefore not name one (an alarm with a unit ignores datapoints of another).
    pub unit: Option<&'static str>,
    /// 1 (high resolution, for 10 s / 30 s alarm periods) or 60.
    pub storage_resolution: u32,
    /// With `--idle-after`: a second metric counting only sessions that are not idle, which the
    /// alarm then watches. Same namespace, dimensions and unit.
    pub active_metric_name: Option<String>,
}

impl MetricIdentity {
    /// The identity a mode produces for an instance, publishing every `interval_secs`.
    pub fn for_mode(mode: Mode, names: &Names, instance_id: &str, interval_secs: u64) -> Self {
        let mut dimensions = vec![(INSTANCE_ID_DIMENSION.to_owned(), instance_id.to_owned())];
        let mut unit = Some(UNIT);
        let namespace = match mode {
            Mode::Statsd => {
                unit = None;
                // The agent always adds metric_type (FACTS.md §2); a gauge is "gauge".
                dimensions.push(("metric_type".into(), "gauge".into()));
                names.agent_namespace.clone()
            }
            _ => names.namespace.clone(),
        };
        dimensions.sort();
        MetricIdentity {
            namespace,
            metric_name: names.metric_name.clone(),
            dimensions,
            unit,
            storage_resolution: if interval_secs < 60 { 1 } else { 60 },
            active_metric_name: None,
        }
    }

    /// Idle mode on: also publish the active count, and let the alarm watch it.
    pub fn with_idle_mode(mut self, names: &Names, on: bool) -> Self {
        self.active_metric_name = on.then(|| names.active_metric_name.clone());
        self
    }

    /// The metric the alarm watches.
    pub fn alarm_metric_name(&self) -> &str {
        self.active_metric_name
            .as_deref()
            .unwrap_or(&self.metric_name)
    }

    /// The dimensions we send ourselves (StatsD: without the agent's `metric_type`).
    pub fn sent_dimensions(&self, mode: Mode) -> Vec<(&str, &str)> {
        self.dimensions
            .iter()
            .filter(|(k, _)| !(mode == Mode::Statsd && k == "metric_type"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// Where this process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceIdentity {
    pub instance_id: String,
    pub region: Option<String>,
}

impl fmt::Display for InstanceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            self.instance_id,
            self.region.as_deref().unwrap_or("region unknown")
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "cannot learn the instance id from the EC2 instance metadata service (IMDSv2): {0}. \
         Off EC2, pass --instance-id i-... (and --region for the cloudwatch sink); on EC2, check \
         that IMDS is enabled and reachable (hop limit >= 2 in containers)"
    )]
    Imds(String),
    #[error("`{0}` is not an EC2 instance id (expected i- followed by 8 or 17 hex digits)")]
    BadInstanceId(String),
}

pub fn validate_instance_id(id: &str) -> Result<(), IdentityError> {
    let ok = id
        .strip_prefix("i-")
        .is_some_and(|h| matches!(h.len(), 8 | 17) && h.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadInstanceId(id.into()))
    }
}

/// Resolves the instance: `--instance-id`/`--region` first, then the SDK's region variables,
/// then IMDSv2 (honouring `AWS_EC2_METADATA_SERVICE_ENDPOINT` and `AWS_EC2_METADATA_DISABLED`).
pub async fn resolve(
    instance_id: Option<String>,
    region: Option<String>,
) -> Result<InstanceIdentity, IdentityError> {
    let region = region
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .filter(|r| !r.is_empty());
    if let Some(id) = instance_id {
        validate_instance_id(&id)?;
        return Ok(InstanceIdentity {
            instance_id: id,
            region,
        });
    }
    let client = aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(2))
        .max_attempts(2)
        .build();
    let id: String = client
        .get("/latest/meta-data/instance-id")
        .await
        .map_err(|e| IdentityError::Imds(error_chain(&e)))?
        .into();
    validate_instance_id(&id)?;
    let region = match region {
        Some(r) => Some(r),
        None => Some(
            client
                .get("/latest/meta-data/placement/region")
                .await
                .map_err(|e| IdentityError::Imds(error_chain(&e)))?
                .into(),
        ),
    };
    Ok(InstanceIdentity {
        instance_id: id,
        region,
    })
}

/// An error with its sources, on one line (SDK errors hide the useful part in `source()`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statsd_identity_includes_what_the_agent_adds() {
        let n = Names::default();
        let cw = MetricIdentity::for_mode(Mode::Cloudwatch, &n, "i-0123456789abcdef0", 60);
        assert_eq!(cw.namespace, "EmfSsh");
        assert_eq!(
            cw.dimensions,
            vec![("InstanceId".into(), "i-0123456789abcdef0".into())]
        );
        assert_eq!(cw.storage_resolution, 60);
        let s = MetricIdentity::for_mode(Mode::Statsd, &n, "i-0123456789abcdef0", 10);
        assert_eq!(s.namespace, "CWAgent");
        assert_eq!(s.dimensions.len(), 2);
        assert_eq!(
            s.sent_dimensions(Mode::Statsd),
            vec![("InstanceId", "i-0123456789abcdef0")]
        );
        assert_eq!(s.storage_resolution, 1);
        // EMF modes store exactly what PutMetricData stores: `auto` can switch between them.
        for m in [Mode::EmfSocket, Mode::EmfFile] {
            assert_eq!(
                MetricIdentity::for_mode(m, &n, "i-0123456789abcdef0", 60),
                cw
            );
        }
    }

    #[test]
    fn instance_ids_are_checked() {
        assert!(validate_instance_id("i-0123456789abcdef0").is_ok());
        assert!(validate_instance_id("i-12345678").is_ok());
        assert!(validate_instance_id("i-xyz").is_err());
        assert!(validate_instance_id("0123456789abcdef0").is_err());
    }
}
