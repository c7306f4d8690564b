//! CloudWatch agent configuration per mode, for
//! `amazon-cloudwatch-agent-ctl -a append-config -m ec2 -c file:...`.

use crate::emit::emf::DEFAULT_LOG_GROUP;
use crate::identity::{Mode, Names, INSTANCE_ID_DIMENSION};
use serde::Serialize;

/// Where the EMF file lives by default (the package creates the directory).
pub const DEFAULT_EMF_FILE: &str = "/var/log/emf-ssh/emf.log";
/// EMF listener restricted to loopback (the agent's default binds 0.0.0.0).
pub const EMF_SERVICE_ADDRESS: &str = "tcp://127.0.0.1:25888";
/// StatsD listener restricted to loopback (the agent's default binds all interfaces).
pub const STATSD_SERVICE_ADDRESS: &str = "127.0.0.1:8125";

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub mode: Mode,
    pub names: Names,
    /// The publication interval (s): StatsD collection/aggregation follow it.
    pub period_secs: u64,
    pub emf_file: String,
    pub log_group: String,
    pub retention_days: u32,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            mode: Mode::EmfSocket,
            names: Names::default(),
            period_secs: 60,
            emf_file: DEFAULT_EMF_FILE.into(),
            log_group: DEFAULT_LOG_GROUP.into(),
            retention_days: 30,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AgentConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogsSection>,
}

#[derive(Debug, Serialize)]
pub struct MetricsSection {
    pub namespace: String,
    pub append_dimensions: AppendDimensions,
    pub metrics_collected: MetricsCollected,
}

#[derive(Debug, Serialize)]
pub struct AppendDimensions {
    #[serde(rename = "InstanceId")]
    pub instance_id: &'static str,
}

#[derive(Debug, Serialize)]
pub struct MetricsCollected {
    pub statsd: StatsdInput,
}

#[derive(Debug, Serialize)]
pub struct StatsdInput {
    pub service_address: &'static str,
    pub metrics_collection_interval: u64,
    pub metrics_aggregation_interval: u64,
}

#[derive(Debug, Serialize)]
pub struct LogsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_collected: Option<LogsMetricsCollected>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs_collected: Option<LogsCollected>,
}

#[derive(Debug, Serialize)]
pub struct LogsMetricsCollected {
    pub emf: EmfInput,
}

#[derive(Debug, Serialize)]
pub struct EmfInput {
    pub service_address: &'static str,
}

#[derive(Debug, Serialize)]
pub struct LogsCollected {
    pub files: Files,
}

#[derive(Debug, Serialize)]
pub struct Files {
    pub collect_list: Vec<CollectEntry>,
}

#[derive(Debug, Serialize)]
pub struct CollectEntry {
    pub file_path: String,
    pub log_group_name: String,
    pub log_stream_name: &'static str,
    pub retention_in_days: u32,
}

/// The agent configuration for a mode. `None` for `cloudwatch`, which needs no agent.
pub fn agent_config(o: &AgentOptions) -> Option<AgentConfig> {
    match o.mode {
        Mode::Cloudwatch => None,
        Mode::EmfSocket => Some(AgentConfig {
            metrics: None,
            logs: Some(LogsSection {
                metrics_collected: Some(LogsMetricsCollected {
                    emf: EmfInput {
                        service_address: EMF_SERVICE_ADDRESS,
                    },
                }),
                logs_collected: None,
            }),
        }),
        Mode::EmfFile => Some(AgentConfig {
            metrics: None,
            logs: Some(LogsSection {
                metrics_collected: None,
                logs_collected: Some(LogsCollected {
                    files: Files {
                        collect_list: vec![CollectEntry {
                            file_path: o.emf_file.clone(),
                            log_group_name: o.log_group.clone(),
                            log_stream_name: "{instance_id}",
                            retention_in_days: o.retention_days,
                        }],
                    },
                }),
            }),
        }),
        Mode::Statsd => {
            // The agent keeps a gauge for one collection interval; collect at least as often as
            // the period, and aggregate over exactly the period the alarm evaluates.
            let collect = o.period_secs.min(10);
            Some(AgentConfig {
                metrics: Some(MetricsSection {
                    namespace: o.names.agent_namespace.clone(),
                    append_dimensions: AppendDimensions {
                        instance_id: "${aws:InstanceId}",
                    },
                    metrics_collected: MetricsCollected {
                        statsd: StatsdInput {
                            service_address: STATSD_SERVICE_ADDRESS,
                            metrics_collection_interval: collect,
                            metrics_aggregation_interval: o.period_secs,
                        },
                    },
                }),
                logs: None,
            })
        }
    }
}

/// The dimensions the agent adds to a StatsD metric on top of the tags we send (FACTS.md §2):
/// `metric_type` always, and each `append_dimensions` key.
pub fn statsd_agent_added_dimensions(config: &AgentConfig) -> Vec<&'static str> {
    let mut dims = vec!["metric_type"];
    if config.metrics.is_some() {
        dims.push(INSTANCE_ID_DIMENSION);
    }
    dims
}

pub fn to_json(config: &AgentConfig) -> String {
    serde_json::to_string_pretty(config).expect("agent config serializes") + "\n"
}
