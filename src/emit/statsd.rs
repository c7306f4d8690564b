//! StatsD encoding (pure): a gauge with DogStatsD tags, which the CloudWatch agent turns into
//! dimensions (plus its own `metric_type`, see `MetricIdentity::for_mode`).

use crate::identity::{MetricIdentity, Mode};

/// `Sessions:2|g|#InstanceId:i-0123456789abcdef0`
/// Gauge lines for one sample: the total, and with `--idle-after` the active count.
pub fn gauge_lines(id: &MetricIdentity, counts: crate::aggregate::Counts) -> Vec<String> {
    let mut lines = vec![gauge_line(id, &id.metric_name, counts.total)];
    if let Some(active) = &id.active_metric_name {
        lines.push(gauge_line(id, active, counts.active));
    }
    lines
}

pub fn gauge_line(id: &MetricIdentity, name: &str, value: usize) -> String {
    let tags: Vec<String> = id
        .sent_dimensions(Mode::Statsd)
        .into_iter()
        .map(|(k, v)| format!("{}:{}", sanitize(k), sanitize(v)))
        .collect();
    format!("{}:{}|g|#{}", sanitize(name), value, tags.join(","))
}

/// StatsD's separators cannot appear in names or tag values.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, ':' | '|' | '#' | ',' | '\n') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Names;

    #[test]
    fn gauge_with_instance_tag() {
        let id =
            MetricIdentity::for_mode(Mode::Statsd, &Names::default(), "i-0123456789abcdef0", 60);
        assert_eq!(
            gauge_line(&id, "Sessions", 2),
            "Sessions:2|g|#InstanceId:i-0123456789abcdef0"
        );
    }
}
