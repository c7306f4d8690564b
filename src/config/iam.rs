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
    let mut statement = Vec::new();
    if matches!(mode, Mode::Cloudwatch | Mode::EmfSocket) {
        statement.push(Statement {
            sid: "PublishSessionCount",
            effect: "Allow",
            action: vec!["cloudwatch:PutMetricData"],
            // PutMetricData has no resource ARN; the namespace condition is the restriction.
            resource: "*".into(),
            condition: Some(
                serde_json::json!({"StringEquals": {"cloudwatch:namespace": id.namespace}}),
            ),
        });
    }
    // Re-arming at start-up is useful in every mode.
    statement.push(Statement {
        sid: "RearmIdleAlarm",
        effect: "Allow",
        action: vec!["cloudwatch:DescribeAlarms", "cloudwatch:SetAlarmState"],
        resource: format!("arn:aws:cloudwatch:*:*:alarm:{alarm_name}"),
        condition: None,
    });
    if alarm {
        statement.push(Statement {
            sid: "ManageIdleAlarm",
            effect: "Allow",
            action: vec!["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"],
            resource: format!("arn:aws:cloudwatch:*:*:alarm:{alarm_name}"),
            condition: None,
        });
        // Creating an alarm with an EC2 action checks the instance, and the first one in an
        // account creates CloudWatch's service-linked role that performs the action.
        statement.push(Statement {
            sid: "AlarmWithEc2Action",
            effect: "Allow",
            action: vec!["ec2:DescribeInstances", "ec2:DescribeInstanceStatus"],
            resource: "*".into(),
            condition: None,
        });
        statement.push(Statement {
            sid: "CloudWatchEventsServiceLinkedRole",
            effect: "Allow",
            action: vec!["iam:CreateServiceLinkedRole"],
            resource: "arn:aws:iam::*:role/aws-service-role/events.amazonaws.com/AWSServiceRoleForCloudWatchEvents*".into(),
            condition: Some(serde_json::json!({"StringLike": {"iam:AWSServiceName": "events.amazonaws.com"}})),
        });
        statement.push(Statement {
            sid: "ReadIdleMetric",
            effect: "Allow",
            action: vec!["cloudwatch:GetMetricStatistics"],
            resource: "*".into(),
            condition: None,
        });
    }
    Policy {
        version: "2012-10-17",
        statement,
    }
}

pub fn to_json(p: &Policy) -> String {
    serde_json::to_string_pretty(p).expect("policy serializes") + "\n"
}
