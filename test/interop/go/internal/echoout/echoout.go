// Package echoout is what the Go echo-server and echo-client print and generate alike: JSON event lines,
// metadata as JSON, and the proto's generated payloads.
package echoout

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/grpc/metadata"
)

var stdout sync.Mutex

// Emit prints one JSON event line on stdout (safe from several goroutines).
func Emit(event map[string]any) {
	line, err := json.Marshal(event)
	if err != nil {
		panic(err)
	}
	stdout.Lock()
	defer stdout.Unlock()
	fmt.Println(string(line))
}

// Metadata renders metadata as key → values, -bin values base64 (standard, padded).
func Metadata(md metadata.MD) map[string][]string {
	out := map[string][]string{}
	for k, vs := range md {
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.StdEncoding.EncodeToString([]byte(v))
			}
			out[k] = append(out[k], v)
		}
	}
	return out
}

// Payload is message n of size bytes: byte i is (n + i) mod 256 (the proto's generated-response rule).
func Payload(n, size int) []byte {
	out := make([]byte, size)
	for i := range out {
		out[i] = byte(n + i)
	}
	return out
}
