//! The idle-stop alarm, as the JSON `aws cloudwatch put-metric-alarm --cli-input-json` takes and
//! as the SDK call `alarm install` makes. Built from the same `MetricIdentity` the sinks emit.

use crate::identity::MetricIdentity;
use serde::Serialize;

/// What the alarm does to the instance. CloudWatch's EC2 alarm actions are stop, terminate,
/// reboot and recover; hibernation is not among them (it needs an `ec2:StopInstances` call with
/// `Hibernate=true`, which no alarm action makes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    Stop,
    Terminate,
    Hibernate,
}

/// How the alarm treats periods without a datapoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MissingData {
    /// Keep the current state: AWS's recommendation for stop actions; a daemon that died or an
    /// instance that is already stopped never triggers a stop.
    Missing,
    NotBreaching,
    Breaching,
    Ignore,
}

impl MissingData {
    pub fn as_str(self) -> &'static str {
        match self {
            MissingData::Missing => "missing",
            MissingData::NotBreaching => "notBreaching",
            MissingData::Breaching => "breaching",
            MissingData::Ignore => "ignore",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AlarmOptions {
    pub region: String,
    pub period_secs: u64,
    /// May be fractional (e.g. 0.5 for tests with 10 s periods).
    pub idle_minutes: f64,
    pub action: Action,
    pub missing: MissingData,
    pub sns_topic: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AlarmError {
    #[error("--period {0}: CloudWatch alarm periods are 10, 30 or a multiple of 60 seconds")]
    Period(u64),
    #[error("--idle-minutes {0}: must be positive and cover at least one period")]
    Idle(String),
    #[error(
        "idle time {idle_secs} s at period {period} s is {periods} evaluation periods; CloudWatch \
         allows at most one day of evaluation (86400 s): use a longer --period"
    )]
    TooLong {
        idle_secs: u64,
        period: u64,
        periods: u64,
    },
    #[error(
        "CloudWatch alarms cannot hibernate an instance (EC2 alarm actions are stop, terminate, \
         reboot, recover); use --action stop, or an EventBridge rule on the alarm that calls \
         StopInstances with Hibernate=true"
    )]
    Hibernate,
}

/// `PutMetricAlarm` input, field for field as the AWS CLI's `--cli-input-json` expects.
#[derive(Debug, Serialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct PutMetricAlarmInput {
    pub alarm_name: String,
    pub alarm_description: String,
    pub actions_enabled: bool,
    #[serde(rename = "OKActions", skip_serializing_if = "Vec::is_empty")]
    pub ok_actions: Vec<String>,
    pub alarm_actions: Vec<String>,
    pub metric_name: String,
    pub namespace: String,
    pub statistic: &'static str,
    pub dimensions: Vec<AlarmDimension>,
    pub period: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'static str>,
    pub evaluation_periods: u64,
    pub datapoints_to_alarm: u64,
    pub threshold: f64,
    pub comparison_operator: &'static str,
    pub treat_missing_data: &'static str,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct AlarmDimension {
    pub name: String,
    pub value: String,
}

/// Stable per instance, so install/status/remove and the daemon's re-arm find the same alarm.
pub fn default_alarm_name(instance_id: &str) -> String {
    format!("emf-ssh-idle-{instance_id}")
}

pub fn check_period(p: u64) -> Result<(), AlarmError> {
    if p == 10 || p == 30 || (p >= 60 && p.is_multiple_of(60)) {
        Ok(())
    } else {
        Err(AlarmError::Period(p))
    }
}

/// Evaluation periods for an idle time: enough whole periods to cover it.
pub fn evaluation_periods(idle_minutes: f64, period: u64) -> Result<u64, AlarmError> {
    if !(idle_minutes.is_finite() && idle_minutes > 0.0) {
        return Err(AlarmError::Idle(idle_minutes.to_string()));
    }
    let idle_secs = (idle_minutes * 60.0).round() as u64;
    let periods = idle_secs.div_ceil(period).max(1);
    if periods * period > 86_400 {
        return Err(AlarmError::TooLong {
            idle_secs,
            period,
            periods,
        });
    }
    Ok(periods)
}

pub fn build(
    id: &MetricIdentity,
    instance_id: &str,
    o: &AlarmOptions,
) -> Result<PutMetricAlarmInput, AlarmError> {
    check_period(o.period_secs)?;
    let periods = evaluation_periods(o.idle_minutes, o.period_secs)?;
    let verb = match o.action {
        Action::Stop => "stop",
        Action::Terminate => "terminate",
        Action::Hibernate => return Err(AlarmError::Hibernate),
    };
    let mut alarm_actions = vec![format!("arn:aws:automate:{}:ec2:{verb}", o.region)];
    let mut ok_actions = Vec::new();
    if let Some(t) = &o.sns_topic {
        alarm_actions.push(t.clone());
        ok_actions.push(t.clone());
    }
    let idle = if o.idle_minutes.fract() == 0.0 {
        format!("{} minutes", o.idle_minutes)
    } else {
        format!("{} seconds", (o.idle_minutes * 60.0).round())
    };
    Ok(PutMetricAlarmInput {
        alarm_name: o.name.clone().unwrap_or_else(|| default_alarm_name(instance_id)),
        alarm_description: format!(
            "emf-ssh: {verb} {instance_id} after {idle} without a session ({} < 1 for {periods} x {} s)",
            id.alarm_metric_name(), o.period_secs
        ),
        actions_enabled: true,
        ok_actions,
        alarm_actions,
        metric_name: id.alarm_metric_name().to_owned(),
        namespace: id.namespace.clone(),
        statistic: "Maximum",
        dimensions: id.dimensions.iter().map(|(n, v)| AlarmDimension { name: n.clone(), value: v.clone() }).collect(),
        period: o.period_secs,
        unit: id.unit,
        evaluation_periods: periods,
        datapoints_to_alarm: periods,
        threshold: 1.0,
        comparison_operator: "LessThanThreshold",
        treat_missing_data: o.missing.as_str(),
    })
}

pub fn to_json(a: &PutMetricAlarmInput) -> String {
    serde_json::to_string_pretty(a).expect("alarm serializes") + "\n"
}
