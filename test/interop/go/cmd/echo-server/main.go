// Command echo-server is an ordinary gRPC server of stargate.test.v1.EchoService
// (test/proto/stargate/test/v1/echo.proto), written only against the stubs protoc-gen-go and
// protoc-gen-go-grpc generated from it, with server reflection on. The tunnelling tests put it behind a
// gateway (--expose) and call it through another; it knows nothing about Stargate.
//
//	echo-server [-listen 127.0.0.1:0] [-progress-bytes 1048576]
//
// It prints "LISTENING HOST:PORT" once it serves, then one JSON line per event on stdout:
//
//	{"event":"call","method":"Unary","metadata":{"echo-a":["1"],"echo-b-bin":["AAE="]}}
//	{"event":"cancelled","method":"Unary","reason":"deadline_exceeded","at_ms":1700000000000}
//	{"event":"progress","method":"ServerStream","messages":16,"bytes":1048576}
//
// "call" when a call starts, with the request metadata as the server sees it (-bin values base64);
// "cancelled" when a call's context is done (client cancel or deadline) before the server answered
// ("reason" cancelled or deadline_exceeded, "at_ms" wall-clock milliseconds); "progress" each time a
// ServerStream has handed another -progress-bytes of payload to gRPC (Send returns once flow control
// lets the message through, so a stalled client stops the progress).
//
// The echo rules are the proto's: echo-* request metadata comes back in the response headers and again in
// the trailers as trailer-echo-*; Behavior.delay waits (ending early when the call is cancelled), then
// Behavior.failure ends the call with that status (details as grpc-status-details-bin) or the server answers.
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	testv1 "github.com/stargate/stargate/test/interop/go/gen/stargate/test/v1"
	"github.com/stargate/stargate/test/interop/go/internal/echoout"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

type server struct {
	testv1.UnimplementedEchoServiceServer
	progressBytes int
}

// call is one call in progress: it reports a cancellation the server observes before it answered.
type call struct {
	ctx      context.Context
	answered atomic.Bool
	md       metadata.MD
}

// begin records the call, sends the echoed headers and starts watching its context.
func (s *server) begin(ctx context.Context, method string) (*call, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	c := &call{ctx: ctx, md: md}
	echoout.Emit(map[string]any{"event": "call", "method": method, "metadata": echoout.Metadata(md)})
	go func() {
		<-ctx.Done()
		if c.answered.Load() {
			return
		}
		reason := "cancelled"
		if ctx.Err() == context.DeadlineExceeded {
			reason = "deadline_exceeded"
		}
		echoout.Emit(map[string]any{"event": "cancelled", "method": method, "reason": reason, "at_ms": time.Now().UnixMilli()})
	}()
	// Without echo-* metadata no headers are sent first: a failure is then a trailers-only response.
	headers := echoed(md, "")
	if len(headers) > 0 {
		if err := grpc.SendHeader(ctx, headers); err != nil {
			return nil, err
		}
	}
	if err := grpc.SetTrailer(ctx, echoed(md, "trailer-")); err != nil {
		return nil, err
	}
	return c, nil
}

// echoed is the request's echo-* entries, with a key prefix.
func echoed(md metadata.MD, prefix string) metadata.MD {
	out := metadata.MD{}
	for k, vs := range md {
		if strings.HasPrefix(k, "echo-") {
			out[prefix+k] = append([]string(nil), vs...)
		}
	}
	return out
}

// behave waits the delay (unless the call ends first) and returns the failure to end the call with, if any.
// A nil error means: answer.
func (c *call) behave(b *testv1.Behavior) error {
	if d := b.GetDelay().AsDuration(); b.GetDelay() != nil && d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.ctx.Done():
			return status.FromContextError(c.ctx.Err()).Err()
		}
	}
	f := b.GetFailure()
	if f == nil {
		return nil
	}
	c.answered.Store(true)
	if len(f.GetDetails()) == 0 {
		return status.Error(codes.Code(f.GetCode()), f.GetMessage())
	}
	// grpc-go writes grpc-status-details-bin from the status proto: the details are a google.rpc.Status,
	// marshalled again byte for byte (its code and message are the failure's).
	p := &spb.Status{}
	if err := proto.Unmarshal(f.GetDetails(), p); err != nil {
		return status.Errorf(codes.InvalidArgument, "behavior.failure.details is not a serialized google.rpc.Status: %v", err)
	}
	p.Code = int32(f.GetCode())
	p.Message = f.GetMessage()
	return status.FromProto(p).Err()
}

func (s *server) Unary(ctx context.Context, req *testv1.UnaryRequest) (*testv1.UnaryResponse, error) {
	c, err := s.begin(ctx, "Unary")
	if err != nil {
		return nil, err
	}
	if err := c.behave(req.GetBehavior()); err != nil {
		return nil, err
	}
	c.answered.Store(true)
	return &testv1.UnaryResponse{Payload: req.GetPayload()}, nil
}

func (s *server) ServerStream(req *testv1.ServerStreamRequest, stream grpc.ServerStreamingServer[testv1.ServerStreamResponse]) error {
	c, err := s.begin(stream.Context(), "ServerStream")
	if err != nil {
		return err
	}
	if err := c.behave(req.GetBehavior()); err != nil {
		return err
	}
	sent, reported := 0, 0
	for n := 0; n < int(req.GetResponseCount()); n++ {
		payload := req.GetPayload()
		if req.GetResponseBytes() > 0 {
			payload = echoout.Payload(n, int(req.GetResponseBytes()))
		}
		if err := stream.Send(&testv1.ServerStreamResponse{Index: uint32(n), Payload: payload}); err != nil {
			return err
		}
		sent += len(payload)
		if s.progressBytes > 0 && sent/s.progressBytes > reported {
			reported = sent / s.progressBytes
			echoout.Emit(map[string]any{"event": "progress", "method": "ServerStream", "messages": n + 1, "bytes": sent})
		}
	}
	c.answered.Store(true)
	return nil
}

func (s *server) ClientStream(stream grpc.ClientStreamingServer[testv1.ClientStreamRequest, testv1.ClientStreamResponse]) error {
	c, err := s.begin(stream.Context(), "ClientStream")
	if err != nil {
		return err
	}
	hash := sha256.New()
	var messages uint32
	var bytes uint64
	var behavior *testv1.Behavior
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if messages == 0 {
			behavior = m.GetBehavior()
		}
		messages++
		bytes += uint64(len(m.GetPayload()))
		hash.Write(m.GetPayload())
	}
	if err := c.behave(behavior); err != nil {
		return err
	}
	c.answered.Store(true)
	return stream.SendAndClose(&testv1.ClientStreamResponse{ReceivedMessages: messages, ReceivedBytes: bytes, Sha256: hash.Sum(nil)})
}

func (s *server) Bidi(stream grpc.BidiStreamingServer[testv1.BidiRequest, testv1.BidiResponse]) error {
	c, err := s.begin(stream.Context(), "Bidi")
	if err != nil {
		return err
	}
	for n := uint32(0); ; n++ {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if n == 0 {
			if err := c.behave(m.GetBehavior()); err != nil {
				return err
			}
		}
		if err := stream.Send(&testv1.BidiResponse{Index: n, Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
	c.answered.Store(true)
	return nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on (port 0: any free port)")
	progressBytes := flag.Int("progress-bytes", 1<<20, "print a progress line each time a ServerStream sent this many more payload bytes (0: never)")
	flag.Parse()

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "listen %s: %v\n", *listen, err)
		os.Exit(1)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	testv1.RegisterEchoServiceServer(srv, &server{progressBytes: *progressBytes})
	reflection.Register(srv)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	fmt.Printf("LISTENING %s\n", lis.Addr())
	if err := srv.Serve(lis); err != nil {
		fmt.Fprintf(os.Stderr, "serve: %v\n", err)
		os.Exit(1)
	}
}
