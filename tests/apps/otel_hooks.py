"""OpenTelemetry's SDK started after fork (its recommended set-up under a pre-forking server).

Spans go to one file per process in $SPANS_DIR, by an in-process exporter.
"""

import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class FileExporter(SpanExporter):
    def export(self, spans):
        with open(os.path.join(os.environ["SPANS_DIR"], f"spans-{os.getpid()}.txt"), "a") as f:
            for span in spans:
                f.write(f"{span.name} {span.attributes.get('pid')}\n")
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def post_fork(server, worker):
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(FileExporter(), schedule_delay_millis=100))
    trace.set_tracer_provider(provider)


def worker_exit(server, worker):
    trace.get_tracer_provider().shutdown()  # flush what is left
