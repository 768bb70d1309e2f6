"""A Stargate client in Python, written only against the stubs generated from proto/stargate/v1/gateway.proto.

Used by test/e2e/interop.test.ts and shown in the README.

    python client.py call  --gateway HOST:PORT --peer PEER_ID --method METHOD [--json JSON | --data TEXT]
    python client.py serve --gateway HOST:PORT [--prefix py]

call prints the CallResponse as one JSON line ("tier": "TIER_RELAY", ...) and exits 0; on a gRPC error it
prints "ERROR <CODE> <message>" on stdout and exits 1.
serve registers PREFIX.echo (answers with the payload) and PREFIX.fail (answers the gRPC status code given as
{"code": N}), prints "READY <peer id> <methods>" once registered and "HANDLED <method> <tier> <caller>" per call.
Each call continues the caller's trace: InboundCall.trace_context is extracted with the W3C TraceContext
propagator (its parent is the gateway's delivery span) and printed as "TRACE <method> <trace id> <parent span id>";
spans a handler starts from that context join the trace once an OpenTelemetry SDK is installed.
"""

import argparse
import json
import os
import queue
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from google.protobuf import json_format, struct_pb2  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: E402

from stargate.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402


def call(args: argparse.Namespace) -> int:
    req = gateway_pb2.CallRequest(peer_id=args.peer, method=args.method)
    if args.json is not None:
        req.json.CopyFrom(json_format.Parse(args.json, struct_pb2.Value()))
    elif args.data is not None:
        req.data = args.data.encode()
    with grpc.insecure_channel(args.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            res = stub.Call(req, timeout=args.timeout)
        except grpc.RpcError as err:
            print(f"ERROR {err.code().name} {err.details()}", flush=True)
            return 1
    print(json.dumps(json_format.MessageToDict(res, preserving_proto_field_name=True)), flush=True)
    return 0


def handle(call: gateway_pb2.InboundCall) -> None:
    """Continues the caller's trace: a span started in the extracted context is a child of the delivery span."""
    ctx = TraceContextTextMapPropagator().extract(carrier=dict(call.trace_context))
    remote = trace.get_current_span(ctx).get_span_context()
    print(f"TRACE {call.method} {trace.format_trace_id(remote.trace_id)} {trace.format_span_id(remote.span_id)}", flush=True)
    with trace.get_tracer("stargate-interop-python").start_as_current_span(
        call.method, context=ctx, kind=trace.SpanKind.SERVER
    ):
        pass


def reply_for(call: gateway_pb2.InboundCall, prefix: str) -> gateway_pb2.ServeReply:
    reply = gateway_pb2.ServeReply(call_id=call.call_id)
    if call.method == f"{prefix}.fail":
        code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
        if call.WhichOneof("payload") == "json" and call.json.HasField("struct_value"):
            fields = call.json.struct_value.fields
            if "code" in fields:
                code = int(fields["code"].number_value)
        reply.error.code = code
        reply.error.message = f"python handler failed on purpose (code {code})"
    elif call.WhichOneof("payload") == "json":
        reply.json.CopyFrom(call.json)
    else:
        reply.data = call.data
    return reply


def serve(args: argparse.Namespace) -> int:
    outbox: "queue.Queue[gateway_pb2.ServeRequest | None]" = queue.Queue()
    methods = [f"{args.prefix}.echo", f"{args.prefix}.fail"]
    outbox.put(
        gateway_pb2.ServeRequest(register=gateway_pb2.ServeRegistration(methods=methods, capabilities=[args.prefix]))
    )

    def requests():
        while True:
            item = outbox.get()
            if item is None:
                return
            yield item

    with grpc.insecure_channel(args.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        responses = stub.Serve(requests())

        def stop(*_: object) -> None:
            outbox.put(None)
            responses.cancel()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            for msg in responses:
                kind = msg.WhichOneof("kind")
                if kind == "registered":
                    print(f"READY {msg.registered.peer_id} {','.join(msg.registered.methods)}", flush=True)
                elif kind == "call":
                    c = msg.call
                    print(f"HANDLED {c.method} {gateway_pb2.Tier.Name(c.tier)} {c.caller_peer_id}", flush=True)
                    handle(c)
                    outbox.put(gateway_pb2.ServeRequest(reply=reply_for(c, args.prefix)))
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED:
                return 0
            print(f"serve stream failed: {err.code().name} {err.details()}", file=sys.stderr, flush=True)
            return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("call", help="call a method on a peer through the gateway")
    c.add_argument("--gateway", default="127.0.0.1:50051")
    c.add_argument("--peer", required=True)
    c.add_argument("--method", default="ping")
    payload = c.add_mutually_exclusive_group()
    payload.add_argument("--json", help="JSON payload")
    payload.add_argument("--data", help="bytes payload (the UTF-8 of this text)")
    c.add_argument("--timeout", type=float, default=20.0, help="deadline in seconds")
    s = sub.add_parser("serve", help="serve PREFIX.echo and PREFIX.fail on the gateway")
    s.add_argument("--gateway", default="127.0.0.1:50052")
    s.add_argument("--prefix", default="py")
    args = parser.parse_args()
    return call(args) if args.mode == "call" else serve(args)


if __name__ == "__main__":
    sys.exit(main())
