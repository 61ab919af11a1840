package daemon

import (
	"context"
	"log/slog"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

// FuzzRESTDecode decodes arbitrary bodies with the REST facade's codec and
// hands what decodes to the server: nothing may panic, and every refusal
// must be a client error (INVALID_ARGUMENT or NOT_FOUND), never INTERNAL.
func FuzzRESTDecode(f *testing.F) {
	for _, s := range []string{
		`{"data": {"text": "hi"}}`, `{"data": 1e308}`, `{"data": null}`, `{"binary": {"contentType": "a/b", "data": "aGk="}}`,
		`{"dta": 1}`, `{"data": `, `[]`, `{"uid": "x", "data": "y"}`, `{"binary": "x"}`, `{"data": {"a": [1, {"b": null}]}}`,
		`{"data": "\ud800"}`, `{"binary": {"data": "!!"}}`,
	} {
		f.Add([]byte(s))
	}
	srv, err := server.New(server.Options{Logger: slog.New(slog.DiscardHandler), MaxPayloadBytes: 1024})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(srv.Close)
	m := restMarshaler()
	ok := map[codes.Code]bool{codes.OK: true, codes.InvalidArgument: true, codes.NotFound: true}
	f.Fuzz(func(t *testing.T, body []byte) {
		var send presencev1.SendToUidRequest
		if m.Unmarshal(body, &send) == nil {
			if send.Uid == "" {
				send.Uid = "fuzz"
			}
			if _, err := srv.SendToUid(context.Background(), &send); !ok[status.Code(err)] {
				t.Fatalf("SendToUid(%s) = %v", body, err)
			}
		}
		var bc presencev1.BroadcastRequest
		if m.Unmarshal(body, &bc) == nil {
			resp, err := srv.Broadcast(context.Background(), &bc)
			if !ok[status.Code(err)] {
				t.Fatalf("Broadcast(%s) = %v", body, err)
			}
			if err == nil {
				if _, err := m.Marshal(resp); err != nil {
					t.Fatalf("response does not encode: %v", err)
				}
			}
		}
	})
}
