//! EMF encoding (pure): one CloudWatch Embedded Metric Format document per datapoint, one line.
//!
//! The document carries the metric (the interval maximum) plus, as plain properties that cost
//! nothing as metrics, who was connected, so Logs Insights can answer "who kept this instance
//! running?" (`fields Users, Sessions | filter Sessions > 0`).

use crate::aggregate::Datapoint;
use crate::identity::MetricIdentity;
use crate::probe::Session;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// At most this many sessions are listed in one document; the rest are summarized by count.
/// 100 entries stay far below the agent's 64 KiB UDP datagram and 1 MiB line limits.
pub const MAX_LISTED_SESSIONS: usize = 100;
/// At most this many user names in the `Users` summary.
pub const MAX_LISTED_USERS: usize = 50;

#[derive(Debug, Serialize)]
pub struct EmfDocument<'a> {
    #[serde(rename = "_aws")]
    pub aws: EmfMetadata<'a>,
    /// Dimension values and the metric value, keyed by their (configurable) names.
    #[serde(flatten)]
    pub fields: BTreeMap<&'a str, Value>,
    /// Distinct users with a session, sorted, comma-separated (capped).
    #[serde(rename = "Users")]
    pub users: String,
    #[serde(rename = "SessionsByKind")]
    pub by_kind: BTreeMap<&'static str, usize>,
    #[serde(rename = "SessionList")]
    pub session_list: Vec<SessionProperty<'a>>,
    /// Sessions left out of `SessionList` by the cap.
    #[serde(rename = "SessionsOmitted", skip_serializing_if = "is_zero")]
    pub omitted: usize,
    #[serde(rename = "SampleCount")]
    pub sample_count: u32,
    #[serde(rename = "FailedSamples", skip_serializing_if = "is_zero_u32")]
    pub failed_samples: u32,
    #[serde(rename = "Publisher")]
    pub publisher: &'static str,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Serialize)]
pub struct EmfMetadata<'a> {
    #[serde(rename = "Timestamp")]
    pub timestamp: u64,
    /// Required by the agent's EMF socket listener (events without it are silently dropped);
    /// the EMF file input takes the group from its collect_list entry instead.
    #[serde(rename = "LogGroupName", skip_serializing_if = "Option::is_none")]
    pub log_group_name: Option<&'a str>,
    #[serde(rename = "LogStreamName", skip_serializing_if = "Option::is_none")]
    pub log_stream_name: Option<&'a str>,
    #[serde(rename = "CloudWatchMetrics")]
    pub cloudwatch_metrics: [MetricDirective<'a>; 1],
}

#[derive(Debug, Serialize)]
pub struct MetricDirective<'a> {
    #[serde(rename = "Namespace")]
    pub namespace: &'a str,
    #[serde(rename = "Dimensions")]
    pub dimensions: [Vec<&'a str>; 1],
    #[serde(rename = "Metrics")]
    pub metrics: Vec<MetricDefinition<'a>>,
}

#[derive(Debug, Serialize)]
pub struct MetricDefinition<'a> {
    #[serde(rename = "Name")]
    pub name: &'a str,
    #[serde(rename = "Unit")]
    pub unit: &'a str,
    #[serde(rename = "StorageResolution")]
    pub storage_resolution: u32,
}

#[derive(Debug, Serialize)]
pub struct SessionProperty<'a> {
    pub user: &'a str,
    pub kind: &'static str,
    pub tty: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'a str>,
}

/// Where the document goes decides whether it names its log group.
#[derive(Debug, Clone, Default)]
pub struct LogTarget {
    pub log_group_name: Option<String>,
    pub log_stream_name: Option<String>,
}

/// Default log group for EMF documents (`AWS_EMF_LOG_GROUP_NAME` overrides).
pub const DEFAULT_LOG_GROUP: &str = "/emf-ssh/sessions";

pub fn document<'a>(
    id: &'a MetricIdentity,
    dp: &'a Datapoint,
    target: &'a LogTarget,
) -> EmfDocument<'a> {
    let mut fields: BTreeMap<&str, Value> = id
        .dimensions
        .iter()
        .map(|(k, v)| (k.as_str(), Value::String(v.clone())))
        .collect();
    fields.insert(id.metric_name.as_str(), metric_value(dp.max));
    if let Some(active) = &id.active_metric_name {
        fields.insert(active.as_str(), metric_value(dp.active_max));
    }
    let mut by_kind = BTreeMap::new();
    for s in &dp.sessions {
        *by_kind.entry(s.kind.as_str()).or_insert(0) += 1;
    }
    let mut users: Vec<&str> = dp.sessions.iter().map(|s| s.user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let more = users.len().saturating_sub(MAX_LISTED_USERS);
    users.truncate(MAX_LISTED_USERS);
    let mut users = users.join(",");
    if more > 0 {
        users.push_str(&format!(",+{more} more"));
    }
    EmfDocument {
        aws: EmfMetadata {
            timestamp: dp.timestamp_ms,
            log_group_name: target.log_group_name.as_deref(),
            log_stream_name: target.log_stream_name.as_deref(),
            cloudwatch_metrics: [MetricDirective {
                namespace: &id.namespace,
                dimensions: [id.dimensions.iter().map(|(k, _)| k.as_str()).collect()],
                metrics: std::iter::once(&id.metric_name)
                    .chain(id.active_metric_name.as_ref())
                    .map(|name| MetricDefinition {
                        name,
                        unit: id.unit.unwrap_or(crate::identity::UNIT),
                        storage_resolution: id.storage_resolution,
                    })
                    .collect(),
            }],
        },
        fields,
        users,
        by_kind,
        session_list: dp
            .sessions
            .iter()
            .take(MAX_LISTED_SESSIONS)
            .map(property)
            .collect(),
        omitted: dp.sessions.len().saturating_sub(MAX_LISTED_SESSIONS),
        sample_count: dp.sample_count,
        failed_samples: dp.failed_samples,
        publisher: concat!("emf-ssh/", env!("CARGO_PKG_VERSION")),
    }
}

fn property(s: &Session) -> SessionProperty<'_> {
    SessionProperty {
        user: &s.user,
        kind: s.kind.as_str(),
        tty: &s.tty,
        age_secs: s.age_secs,
        remote: s.remote.as_deref(),
        note: s.note.as_deref(),
    }
}

/// Counts are whole numbers: write `2`, not `2.0`.
fn metric_value(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

/// The document as one line (no trailing newline).
pub fn encode(id: &MetricIdentity, dp: &Datapoint, target: &LogTarget) -> String {
    serde_json::to_string(&document(id, dp, target)).unwrap_or_else(|e| {
        // Serializing plain strings and numbers cannot fail; keep the daemon alive regardless.
        tracing::error!(error = %e, "EMF serialization failed");
        String::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Mode, Names};
    use crate::probe::{Kind, Session};

    pub(crate) fn reference_schema() -> jsonschema::Validator {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/emf/emf-schema.json"
        );
        let text = std::fs::read_to_string(path).expect("shared EMF schema");
        // The reference schema uses draft-07 style `$id`s (`#/properties/...`).
        jsonschema::draft7::new(&serde_json::from_str(&text).expect("schema JSON")).expect("schema")
    }

    fn session(i: usize) -> Session {
        Session {
            kind: if i % 3 == 2 { Kind::Mosh } else { Kind::Ssh },
            user: format!("user{}", i % 7),
            uid: 1000 + i as u32,
            pid: 4000 + i as i32,
            started_at: Some(1_795_600_000),
            age_secs: Some(60 + i as u64),
            tty: if i.is_multiple_of(2) {
                "pts/0".into()
            } else {
                "notty".into()
            },
            remote: (i % 3 != 2).then(|| format!("203.0.113.{}:5{i:04}", i % 250)),
            idle_secs: None,
            note: None,
        }
    }

    fn datapoint(n: usize) -> Datapoint {
        Datapoint {
            timestamp_ms: 1_795_627_020_000,
            max: n as f64,
            min: 0.0,
            sum: n as f64,
            active_max: (n / 2) as f64,
            active_min: 0.0,
            active_sum: (n / 2) as f64,
            sample_count: 6,
            failed_samples: 0,
            sessions: (0..n).map(session).collect(),
        }
    }

    fn id(interval: u64) -> MetricIdentity {
        MetricIdentity::for_mode(
            Mode::EmfSocket,
            &Names::default(),
            "i-0123456789abcdef0",
            interval,
        )
    }

    fn socket_target() -> LogTarget {
        LogTarget {
            log_group_name: Some(DEFAULT_LOG_GROUP.into()),
            log_stream_name: None,
        }
    }

    #[test]
    fn emf_document_snapshot_and_schema() {
        let line = encode(&id(60), &datapoint(3), &socket_target());
        assert!(!line.contains('\n'));
        insta::assert_snapshot!("emf_socket_3_sessions", line);
        let v: Value = serde_json::from_str(&line).expect("json");
        let schema = reference_schema();
        assert!(
            schema.is_valid(&v),
            "{:?}",
            schema
                .iter_errors(&v)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
        // The metric value and the dimension value sit at the top level, as EMF requires.
        assert_eq!(v["Sessions"], 3);
        assert_eq!(v["InstanceId"], "i-0123456789abcdef0");
    }

    #[test]
    fn file_documents_leave_the_log_group_to_the_agent_and_high_resolution_below_a_minute() {
        let line = encode(&id(10), &datapoint(0), &LogTarget::default());
        insta::assert_snapshot!("emf_file_idle_10s", line);
        let v: Value = serde_json::from_str(&line).expect("json");
        assert!(v["_aws"].get("LogGroupName").is_none());
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["StorageResolution"],
            1
        );
        assert!(reference_schema().is_valid(&v));
    }

    #[test]
    fn idle_mode_publishes_the_active_count_as_a_second_metric() {
        let names = Names::default();
        let id = MetricIdentity::for_mode(Mode::EmfSocket, &names, "i-0123456789abcdef0", 60)
            .with_idle_mode(&names, true);
        let line = encode(&id, &datapoint(3), &socket_target());
        insta::assert_snapshot!("emf_idle_mode", line);
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(
            (v["Sessions"].as_u64(), v["ActiveSessions"].as_u64()),
            (Some(3), Some(1))
        );
        let names: Vec<&str> = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .filter_map(|m| m["Name"].as_str())
            .collect();
        assert_eq!(names, ["Sessions", "ActiveSessions"]);
        assert!(reference_schema().is_valid(&v));
        assert_eq!(id.alarm_metric_name(), "ActiveSessions");
    }

    #[test]
    fn a_thousand_sessions_stay_small_and_summarized() {
        let line = encode(&id(60), &datapoint(1000), &socket_target());
        assert!(
            line.len() < 32 * 1024,
            "{} bytes: must fit a UDP datagram with room to spare",
            line.len()
        );
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["Sessions"], 1000);
        assert_eq!(
            v["SessionList"].as_array().map(Vec::len),
            Some(MAX_LISTED_SESSIONS)
        );
        assert_eq!(v["SessionsOmitted"], 900);
        assert_eq!(
            v["SessionsByKind"]["ssh"].as_u64().unwrap_or(0)
                + v["SessionsByKind"]["mosh"].as_u64().unwrap_or(0),
            1000
        );
        assert!(reference_schema().is_valid(&v));
    }
}
