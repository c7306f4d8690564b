"""Serializes an EMF document with the official aws-embedded-metrics library, for comparison.

argv: namespace metric_name instance_id value resolution(1|60) timestamp_ms
"""
import sys

from aws_embedded_metrics.logger.metrics_context import MetricsContext
from aws_embedded_metrics.serializers.log_serializer import LogSerializer
from aws_embedded_metrics.storage_resolution import StorageResolution

namespace, name, instance, value, resolution, ts = sys.argv[1:7]
ctx = MetricsContext.empty()
ctx.namespace = namespace
ctx.should_use_default_dimensions = False
ctx.set_dimensions([{"InstanceId": instance}])
res = StorageResolution.HIGH if resolution == "1" else StorageResolution.STANDARD
ctx.put_metric(name, int(value), "Count", res)
ctx.meta["Timestamp"] = int(ts)
print(LogSerializer.serialize(ctx)[0])
