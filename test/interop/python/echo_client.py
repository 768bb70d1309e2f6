"""An ordinary gRPC client of stargate.test.v1.EchoService, written only against the stubs grpcio-tools generated.

From test/proto/stargate/test/v1/echo.proto. Pointed at a gateway instead of the server, it calls the server through
the tunnel; the only Stargate-specific thing it can do is set the stargate-peer header (--peer), and only when told to.
Flags, output and exit codes are those of the Go echo-client (test/interop/go/cmd/echo-client), so a test drives
both the same way:

    python echo_client.py --addr HOST:PORT [--peer PEER_ID] [--idempotency-key KEY]
      [--kinds unary,server_stream,client_stream,bidi] [--sizes 0,1024] [--count 3] [--response-bytes N]
      [--metadata KEY=VALUE]... [--timeout-ms N] [--delay-ms N] [--fail-code N --fail-message TEXT --fail-details B64]
      [--cancel-after-ms N] [--stall-after N]

One JSON line per call ({"event": "result", "kind", "size", "code", "message", "elapsed_ms", "sent_messages",
"sent_bytes", "sent_sha256", "received_messages", "received_bytes", "received_sha256", "in_order", "server",
"headers", "trailers", "details"}); message n of a call carries size bytes, byte i being (n + i) mod 256.
"""

import argparse
import base64
import binascii
import faulthandler
import hashlib
import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402

from stargate.test.v1 import echo_pb2, echo_pb2_grpc  # noqa: E402

_lock = threading.Lock()
_BASE = bytes(range(256))
DETAILS_KEY = "grpc-status-details-bin"


def emit(event: dict) -> None:
    line = json.dumps(event, separators=(",", ":"))
    with _lock:
        print(line, flush=True)


def payload(n: int, size: int) -> bytes:
    """Message n of size bytes: byte i is (n + i) mod 256."""
    reps = (size + n % 256) // 256 + 1
    return (_BASE * reps)[n % 256 : n % 256 + size]


def md_json(md) -> dict:
    out: dict = {}
    for key, value in md or ():
        if key == DETAILS_KEY:
            continue
        out.setdefault(key, []).append(base64.b64encode(value).decode() if key.endswith("-bin") else value)
    return out


class Tally:
    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.sum = hashlib.sha256()

    def add(self, p: bytes) -> None:
        self.messages += 1
        self.bytes += len(p)
        self.sum.update(p)


class Result:
    def __init__(self) -> None:
        self.sent = Tally()
        self.received = Tally()
        self.in_order = True
        self.server = None
        self.call = None  # the grpc.Call (headers, trailers, status)
        self.cancelled = False


def fail(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.exit(2)


class Client:
    def __init__(self, args: argparse.Namespace, stub: echo_pb2_grpc.EchoServiceStub) -> None:
        self.args = args
        self.stub = stub
        self.metadata = []
        for kv in args.metadata:
            key, sep, value = kv.partition("=")
            if not sep:
                fail(f"--metadata {kv!r}: want KEY=VALUE")
            key = key.lower()
            if key.endswith("-bin"):
                try:
                    value = base64.b64decode(value, validate=True)
                except binascii.Error as err:
                    fail(f"--metadata {kv!r}: a -bin value is base64: {err}")
            self.metadata.append((key, value))
        self.behavior = echo_pb2.Behavior()
        if args.delay_ms > 0:
            self.behavior.delay.CopyFrom(duration_pb2.Duration(seconds=args.delay_ms // 1000, nanos=(args.delay_ms % 1000) * 1_000_000))
        if args.fail_code != 0:
            self.behavior.failure.code = args.fail_code
            self.behavior.failure.message = args.fail_message
            self.behavior.failure.details = base64.b64decode(args.fail_details)

    def call_metadata(self, kind: str) -> list:
        md = list(self.metadata)
        if self.args.peer:
            md.append(("stargate-peer", self.args.peer))
        if self.args.idempotency_key and kind == "unary":
            md.append(("stargate-idempotency-key", self.args.idempotency_key))
        return md

    def cancel_later(self, kind: str, r: Result, cancel) -> threading.Timer | None:
        if self.args.cancel_after_ms <= 0:
            return None

        def fire() -> None:
            emit({"event": "cancelling", "kind": kind, "at_ms": int(time.time() * 1000)})
            r.cancelled = True
            cancel()

        t = threading.Timer(self.args.cancel_after_ms / 1000, fire)
        t.daemon = True
        t.start()
        return t

    def receive(self, kind: str, r: Result, responses) -> None:
        it = iter(responses)
        while True:
            if self.args.stall_after > 0 and kind == "server_stream" and r.received.messages == self.args.stall_after:
                emit({"event": "stalled", "kind": kind, "received_messages": r.received.messages})
                sys.stdin.readline()
            try:
                m = next(it)
            except StopIteration:
                return
            if m.index != r.received.messages:
                r.in_order = False
            r.received.add(m.payload)

    def requests(self, r: Result, size: int, message):
        for n in range(self.args.count):
            p = payload(n, size)
            m = message(payload=p)
            if n == 0:
                m.behavior.CopyFrom(self.behavior)
            r.sent.add(p)
            yield m

    def call(self, kind: str, size: int) -> Result:
        r = Result()
        opts = {"metadata": self.call_metadata(kind), "timeout": self.args.timeout_ms / 1000}
        timer = None
        try:
            if kind == "unary":
                p = payload(0, size)
                r.sent.add(p)
                fut = self.stub.Unary.future(echo_pb2.UnaryRequest(payload=p, behavior=self.behavior), **opts)
                r.call = fut
                timer = self.cancel_later(kind, r, fut.cancel)
                r.received.add(fut.result().payload)
            elif kind == "server_stream":
                p = payload(0, size)
                r.sent.add(p)
                req = echo_pb2.ServerStreamRequest(
                    payload=p, behavior=self.behavior, response_count=self.args.count, response_bytes=self.args.response_bytes
                )
                call = self.stub.ServerStream(req, **opts)
                r.call = call
                timer = self.cancel_later(kind, r, call.cancel)
                self.receive(kind, r, call)
            elif kind == "client_stream":
                fut = self.stub.ClientStream.future(self.requests(r, size, echo_pb2.ClientStreamRequest), **opts)
                r.call = fut
                timer = self.cancel_later(kind, r, fut.cancel)
                res = fut.result()
                r.server = {
                    "received_messages": res.received_messages,
                    "received_bytes": res.received_bytes,
                    "sha256": res.sha256.hex(),
                }
            elif kind == "bidi":
                call = self.stub.Bidi(self.requests(r, size, echo_pb2.BidiRequest), **opts)
                r.call = call
                timer = self.cancel_later(kind, r, call.cancel)
                self.receive(kind, r, call)
            else:
                fail(f"--kinds: {kind!r} is not one of unary, server_stream, client_stream, bidi")
        except (grpc.RpcError, grpc.FutureCancelledError):
            pass
        finally:
            if timer is not None:
                timer.cancel()
        return r

    def status(self, r: Result) -> tuple[int, str, str]:
        if r.cancelled and isinstance(r.call, grpc.Future) and r.call.cancelled():
            return grpc.StatusCode.CANCELLED.value[0], "cancelled by the client", ""
        code = r.call.code()
        details = ""
        for key, value in r.call.trailing_metadata() or ():
            if key == DETAILS_KEY:
                details = base64.b64encode(value).decode()
        return code.value[0], r.call.details() or "", details


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--addr", "-addr", default="127.0.0.1:50051", help="gRPC address to call (a gateway, or the server itself)")
    add("--peer", "-peer", default="", help="set the stargate-peer request header to this peer id (default: not set)")
    add("--idempotency-key", "-idempotency-key", default="", help="set the stargate-idempotency-key header (unary calls)")
    add("--kinds", "-kinds", default="unary,server_stream,client_stream,bidi")
    add("--sizes", "-sizes", default="1024")
    add("--count", "-count", type=int, default=3)
    add("--response-bytes", "-response-bytes", type=int, default=0)
    add("--metadata", "-metadata", action="append", default=[])
    add("--timeout-ms", "-timeout-ms", type=int, default=60_000)
    add("--delay-ms", "-delay-ms", type=int, default=0)
    add("--fail-code", "-fail-code", type=int, default=0)
    add("--fail-message", "-fail-message", default="")
    add("--fail-details", "-fail-details", default="")
    add("--cancel-after-ms", "-cancel-after-ms", type=int, default=0)
    add("--stall-after", "-stall-after", type=int, default=0)
    args = parser.parse_args()
    # A test that finds this client stuck sends SIGQUIT: print where every thread is, then die of the signal.
    faulthandler.register(signal.SIGQUIT, all_threads=True, chain=True)

    limit = 64 << 20
    options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    with grpc.insecure_channel(args.addr, options=options) as channel:
        client = Client(args, echo_pb2_grpc.EchoServiceStub(channel))
        for kind in args.kinds.split(","):
            for s in args.sizes.split(","):
                if not s.isdigit():
                    fail(f"--sizes: {s!r} is not a size")
                size = int(s)
                start = time.monotonic()
                r = client.call(kind, size)
                elapsed_ms = (time.monotonic() - start) * 1000
                code, message, details = client.status(r)
                out = {
                    "event": "result",
                    "kind": kind,
                    "size": size,
                    "code": code,
                    "message": message,
                    "elapsed_ms": round(elapsed_ms, 3),
                    "sent_messages": r.sent.messages,
                    "sent_bytes": r.sent.bytes,
                    "sent_sha256": r.sent.sum.hexdigest(),
                    "received_messages": r.received.messages,
                    "received_bytes": r.received.bytes,
                    "received_sha256": r.received.sum.hexdigest(),
                    "in_order": r.in_order,
                    "headers": md_json(r.call.initial_metadata()),
                    "trailers": md_json(r.call.trailing_metadata()),
                    "details": details,
                }
                if r.server is not None:
                    out["server"] = r.server
                emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
