//! The alarm through the CloudWatch API (I/O): install, status, remove, and the daemon's re-arm.

use crate::config::alarm::PutMetricAlarmInput;
use crate::identity::error_chain;
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, MetricAlarm, StandardUnit, StateValue, Statistic,
};
use aws_sdk_cloudwatch::Client;
use std::fmt::Write as _;

#[derive(Debug, thiserror::Error)]
#[error("CloudWatch {op} failed: {reason}{hint}")]
pub struct ApiError {
    pub op: &'static str,
    pub reason: String,
    pub hint: &'static str,
}

fn api_error<E>(op: &'static str, e: &aws_sdk_cloudwatch::error::SdkError<E>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let reason = match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or_default()),
        None => error_chain(e),
    };
    ApiError {
        op,
        hint: crate::emit::cloudwatch::hint(&reason),
        reason,
    }
}

/// Creates or replaces the alarm (PutMetricAlarm is an upsert).
pub async fn install(client: &Client, a: &PutMetricAlarmInput) -> Result<(), ApiError> {
    let dims = a
        .dimensions
        .iter()
        .map(|d| Dimension::builder().name(&d.name).value(&d.value).build());
    client
        .put_metric_alarm()
        .alarm_name(&a.alarm_name)
        .alarm_description(&a.alarm_description)
        .actions_enabled(a.actions_enabled)
        .set_ok_actions((!a.ok_actions.is_empty()).then(|| a.ok_actions.clone()))
        .set_alarm_actions(Some(a.alarm_actions.clone()))
        .metric_name(&a.metric_name)
        .namespace(&a.namespace)
        .statistic(Statistic::from(a.statistic))
        .set_dimensions(Some(dims.collect()))
        .period(a.period as i32)
        .set_unit(a.unit.map(StandardUnit::from))
        .evaluation_periods(a.evaluation_periods as i32)
        .datapoints_to_alarm(a.datapoints_to_alarm as i32)
        .threshold(a.threshold)
        .comparison_operator(ComparisonOperator::from(a.comparison_operator))
        .treat_missing_data(a.treat_missing_data)
        .send()
        .await
        .map_err(|e| api_error("PutMetricAlarm", &e))?;
    Ok(())
}

/// Deletes the alarm; a missing alarm is not an error. Returns whether it existed.
pub async fn remove(client: &Client, name: &str) -> Result<bool, ApiError> {
    let existed = state(client, name).await?.is_some();
    if existed {
        client
            .delete_alarms()
            .alarm_names(name)
            .send()
            .await
            .map_err(|e| api_error("DeleteAlarms", &e))?;
    }
    Ok(existed)
}

/// The alarm, or `None` when it does not exist.
pub async fn describe(client: &Client, name: &str) -> Result<Option<MetricAlarm>, ApiError> {
    let out = client
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .map_err(|e| api_error("DescribeAlarms", &e))?;
    Ok(out.metric_alarms().first().cloned())
}

/// The alarm's current state, or `None` when it does not exist.
pub async fn state(client: &Client, name: &str) -> Result<Option<StateValue>, ApiError> {
    Ok(describe(client, name)
        .await?
        .and_then(|a| a.state_value().cloned()))
}

/// How long the alarm waits before acting (period x evaluation periods).
pub fn idle_secs_of(a: &MetricAlarm) -> u64 {
    a.period().unwrap_or(60).max(0) as u64 * a.evaluation_periods().unwrap_or(1).max(0) as u64
}

/// How long the alarm waits before acting, if it exists.
pub async fn idle_secs(client: &Client, name: &str) -> Result<Option<u64>, ApiError> {
    Ok(describe(client, name).await?.as_ref().map(idle_secs_of))
}

/// If the alarm is in ALARM (an instance started again while it was), set it to OK so the next
/// idle period makes a new transition — EC2 actions run only on transitions into ALARM.
pub async fn rearm(client: &Client, name: &str) -> Result<bool, ApiError> {
    if state(client, name).await? != Some(StateValue::Alarm) {
        return Ok(false);
    }
    client
        .set_alarm_state()
        .alarm_name(name)
        .state_value(StateValue::Ok)
        .state_reason(
            "emf-ssh started on this instance: re-armed so the next idle period stops it again",
        )
        .send()
        .await
        .map_err(|e| api_error("SetAlarmState", &e))?;
    Ok(true)
}

/// Human-readable status: state, reason, what it watches, the last datapoints.
pub async fn status(client: &Client, name: &str, now_ms: u64) -> Result<String, ApiError> {
    let Some(a) = describe(client, name).await? else {
        return Ok(format!(
            "alarm {name}: not installed (emf-ssh alarm install)\n"
        ));
    };
    let mut s = String::new();
    let state = a.state_value().map(|v| v.as_str()).unwrap_or("?");
    let _ = writeln!(s, "alarm {name}: {state}");
    if let Some(r) = a.state_reason() {
        let _ = writeln!(s, "  reason: {r}");
    }
    let dims: Vec<String> = a
        .dimensions()
        .iter()
        .map(|d| format!("{}={}", d.name().unwrap_or(""), d.value().unwrap_or("")))
        .collect();
    let period = a.period().unwrap_or(60);
    let _ = writeln!(
        s,
        "  watches: {}/{} {{{}}} {} over {} s; {} after {} periods < {}",
        a.namespace().unwrap_or(""),
        a.metric_name().unwrap_or(""),
        dims.join(", "),
        a.statistic().map(|x| x.as_str()).unwrap_or("?"),
        period,
        a.alarm_actions().join(", "),
        a.evaluation_periods().unwrap_or(0),
        a.threshold().unwrap_or(1.0),
    );
    let window = (a.evaluation_periods().unwrap_or(1) as i64 + 2) * period as i64;
    let end = (now_ms / 1000) as i64;
    let stats = client
        .get_metric_statistics()
        .namespace(a.namespace().unwrap_or(""))
        .metric_name(a.metric_name().unwrap_or(""))
        .set_dimensions(Some(a.dimensions().to_vec()))
        .start_time(DateTime::from_secs(end - window))
        .end_time(DateTime::from_secs(end))
        .period(period)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .map_err(|e| api_error("GetMetricStatistics", &e))?;
    let mut points: Vec<(i64, f64)> = stats
        .datapoints()
        .iter()
        .filter_map(|d| Some((d.timestamp()?.secs(), d.maximum()?)))
        .collect();
    points.sort_by_key(|p| p.0);
    if points.is_empty() {
        let _ = writeln!(
            s,
            "  last datapoints: none in the last {window} s (is `emf-ssh run` publishing?)"
        );
    } else {
        let list: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{} s ago: {v}", end - t))
            .collect();
        let _ = writeln!(s, "  last datapoints (Maximum): {}", list.join(", "));
    }
    Ok(s)
}
