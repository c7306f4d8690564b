//! StatsD encoding (pure): a gauge with DogStatsD tags, which the CloudWatch agent turns into
//! dimensions (plus its own `metric_type`, see `MetricIdentity::for_mode`).

use crate::identity::{MetricIdentity, Mode};

/// `Sessions:2|g|#InstanceId:i-0123456789abcdef0`
pub fn gauge_line(id: &MetricIdentity, value: usize) -> String {
    let tags: Vec<String> = id
        .sent_dimensions(Mode::Statsd)
        .into_iter()
        .map(|(k, v)| format!("{}:{}", sanitize(k), sanitize(v)))
        .collect();
    format!(
        "{}:{}|g|#{}",
        sanitize(&id.metric_name),
        value,
        tags.join(",")
    )
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
            gauge_line(&id, 2),
            "Sessions:2|g|#InstanceId:i-0123456789abcdef0"
        );
    }
}
