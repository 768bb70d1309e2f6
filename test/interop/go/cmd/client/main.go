// Command client is a Stargate client in Go, written only against the generated stubs of
// proto/stargate/v1/gateway.proto. It is used by test/e2e/interop.test.ts and shown in the README.
//
//	client call  -gateway HOST:PORT -peer PEER_ID -method METHOD [-json JSON | -data TEXT] [-timeout 10s]
//	client serve -gateway HOST:PORT [-prefix go]
//
// call prints the CallResponse as one JSON line (protojson: "tier": "TIER_RELAY", ...) and exits 0; on a gRPC
// error it prints "ERROR <Code> <message>" on stdout and exits 1.
// serve registers PREFIX.echo (answers with the payload) and PREFIX.fail (answers the gRPC status code given
// as {"code": N}), prints "READY <peer id> <methods>" once registered and "HANDLED <method> <tier> <caller>"
// for each call. Each call continues the caller's trace: InboundCall.trace_context is extracted with the W3C
// TraceContext propagator (its parent is the gateway's delivery span) and printed as
// "TRACE <method> <trace id> <parent span id>"; spans a handler starts from that context join the trace
// once an OpenTelemetry SDK is installed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	stargatev1 "github.com/stargate/stargate/test/interop/go/gen/stargate/v1"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: client call|serve [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "call":
		os.Exit(call(os.Args[2:]))
	case "serve":
		os.Exit(serve(os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q: want call or serve\n", os.Args[1])
		os.Exit(2)
	}
}

func dial(target string) (stargatev1.GatewayServiceClient, *grpc.ClientConn) {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(os.Stderr, "dial %s: %v\n", target, err)
		os.Exit(2)
	}
	return stargatev1.NewGatewayServiceClient(conn), conn
}

func call(args []string) int {
	fs := flag.NewFlagSet("call", flag.ExitOnError)
	gateway := fs.String("gateway", "127.0.0.1:50051", "gateway gRPC address")
	peer := fs.String("peer", "", "target peer id")
	method := fs.String("method", "ping", "method to call")
	jsonArg := fs.String("json", "", "JSON payload")
	data := fs.String("data", "", "bytes payload (the UTF-8 of this text)")
	timeout := fs.Duration("timeout", 20*time.Second, "deadline of the call")
	_ = fs.Parse(args)

	req := &stargatev1.CallRequest{PeerId: *peer, Method: *method}
	switch {
	case *jsonArg != "":
		v := &structpb.Value{}
		if err := protojson.Unmarshal([]byte(*jsonArg), v); err != nil {
			fmt.Fprintf(os.Stderr, "-json: %v\n", err)
			return 2
		}
		req.Payload = &stargatev1.CallRequest_Json{Json: v}
	case *data != "":
		req.Payload = &stargatev1.CallRequest_Data{Data: []byte(*data)}
	}

	client, conn := dial(*gateway)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res, err := client.Call(ctx, req)
	if err != nil {
		st := status.Convert(err)
		fmt.Printf("ERROR %s %s\n", st.Code(), st.Message())
		return 1
	}
	out, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(res)
	if err != nil {
		fmt.Fprintf(os.Stderr, "marshal: %v\n", err)
		return 2
	}
	fmt.Println(string(out))
	return 0
}

func serve(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	gateway := fs.String("gateway", "127.0.0.1:50052", "gateway gRPC address")
	prefix := fs.String("prefix", "go", "method name prefix")
	_ = fs.Parse(args)

	client, conn := dial(*gateway)
	defer conn.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	stream, err := client.Serve(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "serve: %v\n", err)
		return 1
	}
	methods := []string{*prefix + ".echo", *prefix + ".fail"}
	register := &stargatev1.ServeRequest{Kind: &stargatev1.ServeRequest_Register{
		Register: &stargatev1.ServeRegistration{Methods: methods, Capabilities: []string{*prefix}},
	}}
	if err := stream.Send(register); err != nil {
		fmt.Fprintf(os.Stderr, "register: %v\n", err)
		return 1
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF || ctx.Err() != nil {
			return 0
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "serve stream failed: %v\n", err)
			return 1
		}
		switch kind := msg.Kind.(type) {
		case *stargatev1.ServeResponse_Registered:
			fmt.Printf("READY %s %s\n", kind.Registered.PeerId, strings.Join(kind.Registered.Methods, ","))
		case *stargatev1.ServeResponse_Call:
			c := kind.Call
			fmt.Printf("HANDLED %s %s %s\n", c.Method, c.Tier, c.CallerPeerId)
			handle(ctx, c)
			// One Send at a time on a gRPC stream: replies are sent from this loop.
			if err := stream.Send(&stargatev1.ServeRequest{Kind: &stargatev1.ServeRequest_Reply{Reply: reply(c, *prefix)}}); err != nil {
				fmt.Fprintf(os.Stderr, "reply: %v\n", err)
				return 1
			}
		}
	}
}

// handle continues the caller's trace for one call: a span started from the extracted context is a child
// of the gateway's delivery span (with no SDK installed the global tracer records nothing).
func handle(ctx context.Context, c *stargatev1.InboundCall) {
	ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(c.TraceContext))
	remote := trace.SpanContextFromContext(ctx)
	fmt.Printf("TRACE %s %s %s\n", c.Method, remote.TraceID(), remote.SpanID())
	_, span := otel.Tracer("stargate-interop-go").Start(ctx, c.Method, trace.WithSpanKind(trace.SpanKindServer))
	span.End()
}

func reply(c *stargatev1.InboundCall, prefix string) *stargatev1.ServeReply {
	r := &stargatev1.ServeReply{CallId: c.CallId}
	if c.Method == prefix+".fail" {
		code := codes.FailedPrecondition
		if n, ok := c.GetJson().GetStructValue().GetFields()["code"]; ok {
			code = codes.Code(n.GetNumberValue())
		}
		r.Result = &stargatev1.ServeReply_Error{Error: &stargatev1.ErrorStatus{
			Code: uint32(code), Message: fmt.Sprintf("go handler failed on purpose (%s)", code),
		}}
		return r
	}
	switch p := c.Payload.(type) {
	case *stargatev1.InboundCall_Json:
		r.Result = &stargatev1.ServeReply_Json{Json: p.Json}
	case *stargatev1.InboundCall_Data:
		r.Result = &stargatev1.ServeReply_Data{Data: p.Data}
	default:
		r.Result = &stargatev1.ServeReply_Data{Data: []byte{}}
	}
	return r
}
