// Command echo-client is an ordinary gRPC client of stargate.test.v1.EchoService
// (test/proto/stargate/test/v1/echo.proto), written only against the stubs protoc-gen-go and
// protoc-gen-go-grpc generated from it. Pointed at a gateway instead of the server, it calls the server
// through the tunnel; the only Stargate-specific thing it can do is set the stargate-peer header (-peer),
// and only when told to.
//
//	echo-client -addr HOST:PORT [-peer PEER_ID] [-idempotency-key KEY]
//	  [-kinds unary,server_stream,client_stream,bidi] [-sizes 0,1024] [-count 3] [-response-bytes N]
//	  [-metadata KEY=VALUE]... [-timeout-ms N] [-delay-ms N] [-fail-code N -fail-message TEXT -fail-details BASE64]
//	  [-cancel-after-ms N] [-stall-after N]
//
// For each kind and each size it makes one call and prints one JSON line:
//
//	{"event":"result","kind":"bidi","size":1024,"code":0,"message":"","elapsed_ms":3.1,
//	 "sent_messages":3,"sent_bytes":3072,"sent_sha256":"…","received_messages":3,"received_bytes":3072,
//	 "received_sha256":"…","in_order":true,"server":{…},"headers":{…},"trailers":{…},"details":"…"}
//
// Message n of a call carries size bytes, byte i being (n + i) mod 256 (the proto's generated-response rule),
// so a test can compute every digest itself. sha256 values are hex over the payloads in order; "server" is
// the ClientStream response (received_messages, received_bytes, sha256); metadata is key → values with -bin
// values base64; "details" is the grpc-status-details-bin trailer (base64, "" when absent); "code" is the
// gRPC status code number. -metadata values of -bin keys are base64.
// -cancel-after-ms cancels each call after that long, printing {"event":"cancelling","kind":…,"at_ms":…}
// (wall-clock milliseconds) first. -stall-after N stops reading a ServerStream after N responses, prints
// {"event":"stalled","kind":"server_stream","received_messages":N} and reads on only after a line (or EOF)
// on stdin. Exits 0 when every call was made (whatever its status), 2 on bad flags.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	testv1 "github.com/stargate/stargate/test/interop/go/gen/stargate/test/v1"
	"github.com/stargate/stargate/test/interop/go/internal/echoout"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

type options struct {
	peer, idempotencyKey string
	count, responseBytes int
	metadata             metadata.MD
	timeout, cancelAfter time.Duration
	behavior             *testv1.Behavior
	stallAfter           int
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

// tally counts and hashes payloads.
type tally struct {
	messages, bytes int
	sum             hash.Hash
}

func newTally() *tally { return &tally{sum: sha256.New()} }

func (t *tally) add(p []byte) {
	t.messages++
	t.bytes += len(p)
	t.sum.Write(p)
}

// result is what one call printed.
type result struct {
	sent, received *tally
	inOrder        bool
	server         map[string]any
	header         metadata.MD
	trailer        metadata.MD
	err            error
}

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "gRPC address to call (a gateway, or the server itself)")
	peer := flag.String("peer", "", "set the stargate-peer request header to this peer id (default: not set)")
	idem := flag.String("idempotency-key", "", "set the stargate-idempotency-key request header (unary calls)")
	kinds := flag.String("kinds", "unary,server_stream,client_stream,bidi", "call kinds to make, in order")
	sizes := flag.String("sizes", "1024", "payload sizes in bytes; one call per kind and size")
	count := flag.Int("count", 3, "messages per stream (ServerStream responses, ClientStream and Bidi requests)")
	responseBytes := flag.Int("response-bytes", 0, "ServerStream: ask for generated responses of this many bytes instead of echoes")
	var md repeated
	flag.Var(&md, "metadata", "request metadata KEY=VALUE (repeatable; base64 values for -bin keys)")
	timeoutMs := flag.Int("timeout-ms", 60_000, "deadline of each call")
	delayMs := flag.Int("delay-ms", 0, "Behavior.delay: the server waits this long before it answers")
	failCode := flag.Int("fail-code", 0, "Behavior.failure.code: the server ends the call with this status (0: answer)")
	failMessage := flag.String("fail-message", "", "Behavior.failure.message")
	failDetails := flag.String("fail-details", "", "Behavior.failure.details, base64 (a serialized google.rpc.Status)")
	cancelAfterMs := flag.Int("cancel-after-ms", 0, "cancel each call after this long (0: never)")
	stallAfter := flag.Int("stall-after", 0, "ServerStream: stop reading after this many responses until a line on stdin (0: never)")
	flag.Parse()

	o := options{
		peer: *peer, idempotencyKey: *idem, count: *count, responseBytes: *responseBytes, metadata: metadata.MD{},
		timeout: time.Duration(*timeoutMs) * time.Millisecond, cancelAfter: time.Duration(*cancelAfterMs) * time.Millisecond,
		behavior: &testv1.Behavior{}, stallAfter: *stallAfter,
	}
	for _, kv := range md {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			fail("-metadata %q: want KEY=VALUE", kv)
		}
		k = strings.ToLower(k)
		if strings.HasSuffix(k, "-bin") {
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				fail("-metadata %q: a -bin value is base64: %v", kv, err)
			}
			v = string(b)
		}
		o.metadata.Append(k, v)
	}
	if *delayMs > 0 {
		o.behavior.Delay = durationpb.New(time.Duration(*delayMs) * time.Millisecond)
	}
	if *failCode != 0 {
		details, err := base64.StdEncoding.DecodeString(*failDetails)
		if err != nil {
			fail("-fail-details: base64: %v", err)
		}
		o.behavior.Failure = &testv1.Failure{Code: uint32(*failCode), Message: *failMessage, Details: details}
	}

	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		fail("dial %s: %v", *addr, err)
	}
	defer conn.Close()
	client := testv1.NewEchoServiceClient(conn)

	for _, kind := range strings.Split(*kinds, ",") {
		for _, s := range strings.Split(*sizes, ",") {
			size, err := strconv.Atoi(s)
			if err != nil || size < 0 {
				fail("-sizes: %q is not a size", s)
			}
			start := time.Now()
			r := o.call(client, kind, size)
			out := map[string]any{
				"event": "result", "kind": kind, "size": size,
				"elapsed_ms":        float64(time.Since(start).Microseconds()) / 1000,
				"sent_messages":     r.sent.messages,
				"sent_bytes":        r.sent.bytes,
				"sent_sha256":       hex.EncodeToString(r.sent.sum.Sum(nil)),
				"received_messages": r.received.messages,
				"received_bytes":    r.received.bytes,
				"received_sha256":   hex.EncodeToString(r.received.sum.Sum(nil)),
				"in_order":          r.inOrder,
				"headers":           echoout.Metadata(r.header),
				"trailers":          echoout.Metadata(r.trailer),
				"code":              0, "message": "", "details": "",
			}
			if r.server != nil {
				out["server"] = r.server
			}
			if r.err != nil {
				st := status.Convert(r.err)
				out["code"], out["message"] = int(st.Code()), st.Message()
				// grpc-go parses grpc-status-details-bin into the status; marshalled again it is the trailer's bytes.
				if p := st.Proto(); len(p.GetDetails()) > 0 {
					b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
					if err != nil {
						fail("marshal status: %v", err)
					}
					out["details"] = base64.StdEncoding.EncodeToString(b)
				}
			}
			echoout.Emit(out)
		}
	}
}

// context of one call: deadline, metadata, and the cancel timer.
func (o *options) context(kind string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	md := o.metadata.Copy()
	if o.peer != "" {
		md.Set("stargate-peer", o.peer)
	}
	if o.idempotencyKey != "" && kind == "unary" {
		md.Set("stargate-idempotency-key", o.idempotencyKey)
	}
	ctx = metadata.NewOutgoingContext(ctx, md)
	if o.cancelAfter > 0 {
		t := time.AfterFunc(o.cancelAfter, func() {
			echoout.Emit(map[string]any{"event": "cancelling", "kind": kind, "at_ms": time.Now().UnixMilli()})
			cancel()
		})
		return ctx, func() { t.Stop(); cancel() }
	}
	return ctx, cancel
}

func (o *options) call(client testv1.EchoServiceClient, kind string, size int) *result {
	ctx, cancel := o.context(kind)
	defer cancel()
	r := &result{sent: newTally(), received: newTally(), inOrder: true}
	opts := []grpc.CallOption{grpc.Header(&r.header), grpc.Trailer(&r.trailer)}
	switch kind {
	case "unary":
		p := echoout.Payload(0, size)
		r.sent.add(p)
		res, err := client.Unary(ctx, &testv1.UnaryRequest{Payload: p, Behavior: o.behavior}, opts...)
		r.err = err
		if err == nil {
			r.received.add(res.GetPayload())
		}
	case "server_stream":
		p := echoout.Payload(0, size)
		r.sent.add(p)
		req := &testv1.ServerStreamRequest{Payload: p, Behavior: o.behavior, ResponseCount: uint32(o.count), ResponseBytes: uint32(o.responseBytes)}
		stream, err := client.ServerStream(ctx, req, opts...)
		if err != nil {
			r.err = err
			break
		}
		r.err = o.receive(kind, r, func() (uint32, []byte, error) {
			m, err := stream.Recv()
			return m.GetIndex(), m.GetPayload(), err
		})
	case "client_stream":
		stream, err := client.ClientStream(ctx, opts...)
		if err != nil {
			r.err = err
			break
		}
		for n := 0; n < o.count; n++ {
			p := echoout.Payload(n, size)
			req := &testv1.ClientStreamRequest{Payload: p}
			if n == 0 {
				req.Behavior = o.behavior
			}
			if err := stream.Send(req); err != nil {
				break // the status comes from CloseAndRecv
			}
			r.sent.add(p)
		}
		res, err := stream.CloseAndRecv()
		r.err = err
		if err == nil {
			r.server = map[string]any{
				"received_messages": res.GetReceivedMessages(),
				"received_bytes":    res.GetReceivedBytes(),
				"sha256":            hex.EncodeToString(res.GetSha256()),
			}
		}
	case "bidi":
		stream, err := client.Bidi(ctx, opts...)
		if err != nil {
			r.err = err
			break
		}
		var sender sync.WaitGroup
		sender.Add(1)
		go func() {
			defer sender.Done()
			for n := 0; n < o.count; n++ {
				p := echoout.Payload(n, size)
				req := &testv1.BidiRequest{Payload: p}
				if n == 0 {
					req.Behavior = o.behavior
				}
				if err := stream.Send(req); err != nil {
					return
				}
				r.sent.add(p)
			}
			_ = stream.CloseSend()
		}()
		r.err = o.receive(kind, r, func() (uint32, []byte, error) {
			m, err := stream.Recv()
			return m.GetIndex(), m.GetPayload(), err
		})
		cancel() // a sender still blocked in Send (the call failed) returns now
		sender.Wait()
	default:
		fail("-kinds: %q is not one of unary, server_stream, client_stream, bidi", kind)
	}
	return r
}

// receive reads responses until the end of the stream; nil at a clean end (OK status).
func (o *options) receive(kind string, r *result, recv func() (uint32, []byte, error)) error {
	for {
		if o.stallAfter > 0 && kind == "server_stream" && r.received.messages == o.stallAfter {
			echoout.Emit(map[string]any{"event": "stalled", "kind": kind, "received_messages": r.received.messages})
			_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		}
		index, p, err := recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if int(index) != r.received.messages {
			r.inOrder = false
		}
		r.received.add(p)
	}
}
