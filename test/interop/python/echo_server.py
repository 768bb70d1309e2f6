"""An ordinary gRPC server of stargate.test.v1.EchoService, written only against the stubs grpcio-tools generated.

From test/proto/stargate/test/v1/echo.proto, with server reflection on (grpcio-reflection). The tunnelling tests put
it behind a gateway (--expose) and call it through another; it knows nothing about Stargate.

    python echo_server.py [--listen 127.0.0.1:0] [--progress-bytes 1048576]

It prints "LISTENING HOST:PORT" once it serves, then one JSON line per event on stdout, as the Go echo-server does:
{"event": "call", "method", "metadata"} when a call starts (-bin values base64); {"event": "cancelled", "method",
"reason": "cancelled"|"deadline_exceeded", "at_ms"} when a call ends (client cancel or deadline) before the server
answered; {"event": "progress", "method": "ServerStream", "messages", "bytes"} each time a ServerStream handed
another --progress-bytes of payload to gRPC.

The echo rules are the proto's: echo-* request metadata comes back in the response headers and again in the
trailers as trailer-echo-*; Behavior.delay waits (ending early when the call ends), then Behavior.failure ends the
call with that status (details verbatim as grpc-status-details-bin) or the server answers.
"""

import argparse
import base64
import hashlib
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection  # noqa: E402

from stargate.test.v1 import echo_pb2, echo_pb2_grpc  # noqa: E402

_lock = threading.Lock()
_CODES = {c.value[0]: c for c in grpc.StatusCode}
_BASE = bytes(range(256))


def emit(event: dict) -> None:
    line = json.dumps(event, separators=(",", ":"))
    with _lock:
        print(line, flush=True)


def md_json(md) -> dict:
    out: dict = {}
    for key, value in md:
        out.setdefault(key, []).append(base64.b64encode(value).decode() if key.endswith("-bin") else value)
    return out


def generated(n: int, size: int) -> bytes:
    """Response n of size bytes: byte i is (n + i) mod 256."""
    reps = (size + n % 256) // 256 + 1
    return (_BASE * reps)[n % 256 : n % 256 + size]


class Call:
    """One call in progress: reports a cancellation the server observes before it answered."""

    def __init__(self, context: grpc.ServicerContext, method: str) -> None:
        self.context = context
        self.answered = False
        self.ended = threading.Event()
        md = context.invocation_metadata()
        emit({"event": "call", "method": method, "metadata": md_json(md)})

        def on_end() -> None:
            self.ended.set()
            if self.answered:
                return
            remaining = context.time_remaining()
            reason = "deadline_exceeded" if remaining is not None and remaining <= 0 else "cancelled"
            emit({"event": "cancelled", "method": method, "reason": reason, "at_ms": int(time.time() * 1000)})

        context.add_callback(on_end)
        echoed = [(k, v) for k, v in md if k.startswith("echo-")]
        # Without echo-* metadata no headers are sent first: a failure is then a trailers-only response.
        if echoed:
            context.send_initial_metadata(echoed)
        self.trailers = [("trailer-" + k, v) for k, v in echoed]
        context.set_trailing_metadata(self.trailers)

    def behave(self, behavior: echo_pb2.Behavior) -> None:
        """Waits the delay (unless the call ends first), then ends the call with the failure, if any."""
        if behavior.HasField("delay"):
            if self.ended.wait(behavior.delay.ToTimedelta().total_seconds()):
                self.context.abort(grpc.StatusCode.CANCELLED, "the call ended during the delay")
        if behavior.HasField("failure"):
            f = behavior.failure
            self.answered = True
            if f.details:
                self.context.set_trailing_metadata(self.trailers + [("grpc-status-details-bin", f.details)])
            self.context.abort(_CODES.get(f.code, grpc.StatusCode.UNKNOWN), f.message)


class EchoService(echo_pb2_grpc.EchoServiceServicer):
    def __init__(self, progress_bytes: int) -> None:
        self.progress_bytes = progress_bytes

    def Unary(self, request, context):
        c = Call(context, "Unary")
        c.behave(request.behavior)
        c.answered = True
        return echo_pb2.UnaryResponse(payload=request.payload)

    def ServerStream(self, request, context):
        c = Call(context, "ServerStream")
        c.behave(request.behavior)
        sent = reported = 0
        for n in range(request.response_count):
            payload = generated(n, request.response_bytes) if request.response_bytes > 0 else request.payload
            yield echo_pb2.ServerStreamResponse(index=n, payload=payload)
            sent += len(payload)
            if self.progress_bytes > 0 and sent // self.progress_bytes > reported:
                reported = sent // self.progress_bytes
                emit({"event": "progress", "method": "ServerStream", "messages": n + 1, "bytes": sent})
        c.answered = True

    def ClientStream(self, request_iterator, context):
        c = Call(context, "ClientStream")
        digest = hashlib.sha256()
        messages = size = 0
        behavior = echo_pb2.Behavior()
        for m in request_iterator:
            if messages == 0:
                behavior = m.behavior
            messages += 1
            size += len(m.payload)
            digest.update(m.payload)
        c.behave(behavior)
        c.answered = True
        return echo_pb2.ClientStreamResponse(received_messages=messages, received_bytes=size, sha256=digest.digest())

    def Bidi(self, request_iterator, context):
        c = Call(context, "Bidi")
        for n, m in enumerate(request_iterator):
            if n == 0:
                c.behave(m.behavior)
            yield echo_pb2.BidiResponse(index=n, payload=m.payload)
        c.answered = True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", "-listen", default="127.0.0.1:0", help="address to serve on (port 0: any free port)")
    parser.add_argument("--progress-bytes", "-progress-bytes", type=int, default=1 << 20)
    args = parser.parse_args()

    limit = 64 << 20
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
    )
    echo_pb2_grpc.add_EchoServiceServicer_to_server(EchoService(args.progress_bytes), server)
    names = (echo_pb2.DESCRIPTOR.services_by_name["EchoService"].full_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    host = args.listen.rsplit(":", 1)[0]
    port = server.add_insecure_port(args.listen)
    if port == 0:
        print(f"cannot listen on {args.listen}", file=sys.stderr, flush=True)
        return 1
    server.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    print(f"LISTENING {host}:{port}", flush=True)
    stopped.wait()
    server.stop(0).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
