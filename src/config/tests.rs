//! Snapshots of every generated file, schema checks, and the agent's mapping rules as data.

use super::{agent, alarm, iam};
use crate::identity::{MetricIdentity, Mode, Names};

const INSTANCE: &str = "i-0123456789abcdef0";

fn agent_schema() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/cloudwatch-agent/translator/config/schema.json"
    );
    let text = std::fs::read_to_string(path).expect("shared agent schema");
    jsonschema::draft7::new(&serde_json::from_str(&text).expect("schema JSON")).expect("schema")
}

fn agent_json(mode: Mode) -> String {
    let o = agent::AgentOptions {
        mode,
        ..agent::AgentOptions::default()
    };
    agent::to_json(&agent::agent_config(&o).expect("config"))
}

#[test]
fn agent_configs_snapshot_and_validate_against_the_agent_schema() {
    let schema = agent_schema();
    for (mode, name) in [
        (Mode::EmfSocket, "emf-socket"),
        (Mode::EmfFile, "emf-file"),
        (Mode::Statsd, "statsd"),
    ] {
        let text = agent_json(mode);
        insta::assert_snapshot!(format!("agent_{name}"), text);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let errors: Vec<String> = schema
            .iter_errors(&v)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
    assert!(agent::agent_config(&agent::AgentOptions {
        mode: Mode::Cloudwatch,
        ..Default::default()
    })
    .is_none());
}

#[test]
fn the_schema_check_can_fail() {
    // A wrong type where the schema is strict: proves the validation above means something.
    let bad = serde_json::json!({"metrics": {"metrics_collected": {"statsd": {"service_address": 8125}}}});
    assert!(!agent_schema().is_valid(&bad));
}

#[test]
fn sample_agent_configs_in_the_repo_are_current() {
    for name in ["emf-socket", "emf-file", "statsd"] {
        let mode = match name {
            "emf-socket" => Mode::EmfSocket,
            "emf-file" => Mode::EmfFile,
            _ => Mode::Statsd,
        };
        let path = format!("{}/agent-config/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            on_disk,
            agent_json(mode),
            "{path} is stale: regenerate with `emf-ssh gen-config agent --mode {name} > {path}`"
        );
    }
}

fn options(period: u64, idle: f64) -> alarm::AlarmOptions {
    alarm::AlarmOptions {
        region: "eu-west-1".into(),
        period_secs: period,
        idle_minutes: idle,
        action: alarm::Action::Stop,
        missing: alarm::MissingData::Missing,
        sns_topic: None,
        name: None,
    }
}

#[test]
fn alarm_per_mode_snapshots() {
    for (mode, name) in [
        (Mode::Cloudwatch, "cloudwatch"),
        (Mode::EmfSocket, "emf-socket"),
        (Mode::EmfFile, "emf-file"),
        (Mode::Statsd, "statsd"),
    ] {
        let id = MetricIdentity::for_mode(mode, &Names::default(), INSTANCE, 60);
        let a = alarm::build(&id, INSTANCE, &options(60, 15.0)).expect("alarm");
        insta::assert_snapshot!(format!("alarm_{name}"), alarm::to_json(&a));
    }
    let id = MetricIdentity::for_mode(Mode::Cloudwatch, &Names::default(), INSTANCE, 10);
    let mut o = options(10, 0.5);
    o.sns_topic = Some("arn:aws:sns:eu-west-1:123456789012:idle".into());
    o.action = alarm::Action::Terminate;
    insta::assert_snapshot!(
        "alarm_10s_terminate_sns",
        alarm::to_json(&alarm::build(&id, INSTANCE, &o).expect("alarm"))
    );
}

#[test]
fn alarm_watches_exactly_the_emitted_identity_in_every_mode() {
    for mode in [
        Mode::Cloudwatch,
        Mode::EmfSocket,
        Mode::EmfFile,
        Mode::Statsd,
    ] {
        for period in [10, 60] {
            let id = MetricIdentity::for_mode(mode, &Names::default(), INSTANCE, period);
            let a = alarm::build(&id, INSTANCE, &options(period, 15.0)).expect("alarm");
            assert_eq!(a.namespace, id.namespace);
            assert_eq!(a.metric_name, id.metric_name);
            let dims: Vec<(String, String)> = a
                .dimensions
                .iter()
                .map(|d| (d.name.clone(), d.value.clone()))
                .collect();
            assert_eq!(dims, id.dimensions);
            assert_eq!(a.unit, id.unit);
            assert_eq!(a.statistic, "Maximum");
        }
    }
}

/// FACTS.md §2 as data: StatsD tags become dimensions, the agent adds `metric_type` and its
/// `append_dimensions`; the namespace is the agent's. The alarm must name exactly that set.
#[test]
fn statsd_alarm_dimensions_are_our_tags_plus_what_the_agent_adds() {
    let names = Names::default();
    let id = MetricIdentity::for_mode(Mode::Statsd, &names, INSTANCE, 60);
    let line = crate::emit::statsd::gauge_line(&id, &id.metric_name, 1);
    let tags: Vec<&str> = line
        .split("|#")
        .nth(1)
        .expect("tags")
        .split(',')
        .map(|t| t.split(':').next().unwrap_or(""))
        .collect();
    let cfg = agent::agent_config(&agent::AgentOptions {
        mode: Mode::Statsd,
        ..Default::default()
    })
    .expect("cfg");
    let mut stored: Vec<&str> = tags
        .iter()
        .copied()
        .chain(agent::statsd_agent_added_dimensions(&cfg))
        .collect();
    stored.sort_unstable();
    stored.dedup();
    let a = alarm::build(&id, INSTANCE, &options(60, 15.0)).expect("alarm");
    let alarm_dims: Vec<&str> = a.dimensions.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(alarm_dims, stored);
    assert_eq!(
        a.namespace,
        cfg.metrics.as_ref().expect("metrics").namespace
    );
    assert_eq!(
        a.unit, None,
        "the agent decides the unit of StatsD metrics; the alarm must not filter on one"
    );
    // EMF: the agent adds nothing (append_dimensions does not apply), so the document's own
    // dimension set is the stored one.
    let emf = MetricIdentity::for_mode(Mode::EmfSocket, &names, INSTANCE, 60);
    let a = alarm::build(&emf, INSTANCE, &options(60, 15.0)).expect("alarm");
    assert_eq!(a.dimensions.len(), 1);
    assert_eq!(a.unit, Some("Count"));
}

#[test]
fn periods_and_idle_times_are_checked() {
    for p in [10, 30, 60, 120, 300] {
        assert!(alarm::check_period(p).is_ok(), "{p}");
    }
    for p in [0, 5, 20, 45, 90] {
        assert_eq!(alarm::check_period(p), Err(alarm::AlarmError::Period(p)));
    }
    assert_eq!(alarm::evaluation_periods(15.0, 60), Ok(15));
    assert_eq!(alarm::evaluation_periods(0.5, 10), Ok(3));
    assert_eq!(
        alarm::evaluation_periods(2.5, 60),
        Ok(3),
        "rounded up to whole periods"
    );
    assert!(alarm::evaluation_periods(0.0, 60).is_err());
    assert!(alarm::evaluation_periods(f64::NAN, 60).is_err());
    assert!(matches!(
        alarm::evaluation_periods(2000.0, 60),
        Err(alarm::AlarmError::TooLong { .. })
    ));
    let id = MetricIdentity::for_mode(Mode::Cloudwatch, &Names::default(), INSTANCE, 60);
    let mut o = options(60, 15.0);
    o.action = alarm::Action::Hibernate;
    assert_eq!(
        alarm::build(&id, INSTANCE, &o),
        Err(alarm::AlarmError::Hibernate)
    );
}

#[test]
fn iam_policies_snapshot() {
    let id = MetricIdentity::for_mode(Mode::Cloudwatch, &Names::default(), INSTANCE, 60);
    let name = alarm::default_alarm_name("*");
    insta::assert_snapshot!(
        "iam_cloudwatch",
        iam::to_json(&iam::policy(&id, Mode::Cloudwatch, false, &name))
    );
    insta::assert_snapshot!(
        "iam_cloudwatch_alarm",
        iam::to_json(&iam::policy(&id, Mode::Cloudwatch, true, &name))
    );
    let statsd = MetricIdentity::for_mode(Mode::Statsd, &Names::default(), INSTANCE, 60);
    let p = iam::to_json(&iam::policy(&statsd, Mode::Statsd, false, &name));
    assert!(
        !p.contains("PutMetricData"),
        "the agent publishes StatsD metrics, not emf-ssh"
    );
}
