"""A real OTLP/HTTP traces endpoint on a local port: keeps every span exported to it."""

from __future__ import annotations

import http.server
import threading
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span


class OtlpReceiver:
    """`with OtlpReceiver() as receiver:` serves POST /v1/traces at `receiver.endpoint`."""

    def __init__(self) -> None:
        self.exports: list[ExportTraceServiceRequest] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                export = ExportTraceServiceRequest()
                export.ParseFromString(body)
                with receiver._lock:
                    receiver.exports.append(export)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def __enter__(self) -> OtlpReceiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def resource_spans(self) -> list[ResourceSpans]:
        with self._lock:
            return [spans for export in self.exports for spans in export.resource_spans]

    def spans(self) -> list[Span]:
        return [s for r in self.resource_spans() for scope in r.scope_spans for s in scope.spans]
