//! Least-privilege IAM policy for the instance role.

use crate::identity::{MetricIdentity, Mode};
use serde::Serialize;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Policy {
    pub version: &'static str,
    pub statement: Vec<Statement>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    pub sid: &'static str,
    pub effect: &'static str,
    pub action: Vec<&'static str>,
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
}

/// `mode` decides whether emf-ssh itself calls PutMetricData (cloudwatch, and `auto`'s fallback);
/// `alarm` adds what `emf-ssh alarm install|status|remove` and the daemon's re-arm need, limited
/// to this tool's alarms.
pub fn policy(id: &MetricIdentity, mode: Mode, alarm: bool, alarm_name: &str) -> Policy {
    let alarm_arn = format!("arn:aws:cloudwatch:*:*:alarm:{alarm_name}");
    let mut statement = Vec::new();
    if matches!(mode, Mode::Cloudwatch | Mode::EmfSocket) {
        // PutMetricData has no resource ARN; the namespace condition is the restriction.
        let only_our_namespace =
            serde_json::json!({"StringEquals": {"cloudwatch:namespace": id.namespace}});
        statement.push(allow(
            "PublishSessionCount",
            vec!["cloudwatch:PutMetricData"],
            "*".into(),
            Some(only_our_namespace),
        ));
    }
    // Re-arming at start-up is useful in every mode.
    let rearm = vec!["cloudwatch:DescribeAlarms", "cloudwatch:SetAlarmState"];
    statement.push(allow("RearmIdleAlarm", rearm, alarm_arn.clone(), None));
    if alarm {
        let manage = vec!["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"];
        statement.push(allow("ManageIdleAlarm", manage, alarm_arn, None));
        // Creating an alarm with an EC2 action checks the instance, and the first one in an
        // account creates CloudWatch's service-linked role that performs the action.
        let describe = vec!["ec2:DescribeInstances", "ec2:DescribeInstanceStatus"];
        statement.push(allow("AlarmWithEc2Action", describe, "*".into(), None));
        let events_role = "arn:aws:iam::*:role/aws-service-role/events.amazonaws.com/AWSServiceRoleForCloudWatchEvents*";
        let only_events =
            serde_json::json!({"StringLike": {"iam:AWSServiceName": "events.amazonaws.com"}});
        let slr = vec!["iam:CreateServiceLinkedRole"];
        statement.push(allow(
            "CloudWatchEventsServiceLinkedRole",
            slr,
            events_role.into(),
            Some(only_events),
        ));
        statement.push(allow(
            "ReadIdleMetric",
            vec!["cloudwatch:GetMetricStatistics"],
            "*".into(),
            None,
        ));
    }
    Policy {
        version: "2012-10-17",
        statement,
    }
}

fn allow(
    sid: &'static str,
    action: Vec<&'static str>,
    resource: String,
    condition: Option<serde_json::Value>,
) -> Statement {
    Statement {
        sid,
        effect: "Allow",
        action,
        resource,
        condition,
    }
}

pub fn to_json(p: &Policy) -> String {
    serde_json::to_string_pretty(p).expect("policy serializes") + "\n"
}
