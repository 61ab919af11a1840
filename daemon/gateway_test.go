package daemon

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// countsServer answers GetCounts with what a gRPC handler can see and do:
// the caller's metadata, a response header and a trailer.
type countsServer struct {
	presencev1.UnimplementedBackendServiceServer
	sawKey string
}

func (s *countsServer) GetCounts(ctx context.Context, _ *presencev1.GetCountsRequest) (*presencev1.GetCountsResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) > 0 {
		s.sawKey = v[0]
	}
	if err := grpc.SetHeader(ctx, metadata.Pairs("x-handler", "set")); err != nil {
		return nil, err
	}
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "set"))
	return &presencev1.GetCountsResponse{OnlineUids: 7, Sessions: 9}, nil
}

// TestInProcessGateway proves that a REST call the gateway makes in
// process behaves as the gRPC call it replaces: the interceptors run with
// the method's full name and the request's metadata, and what the handler
// sets as header and trailer reaches the HTTP response.
func TestInProcessGateway(t *testing.T) {
	impl := &countsServer{}
	var sawMethod string
	refuse := false
	intercept := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		sawMethod = info.FullMethod
		if refuse {
			return nil, status.Error(codes.Unauthenticated, "no")
		}
		return h(ctx, req)
	}
	gw := runtime.NewServeMux()
	api := &inProcessBackend{srv: impl, unary: intercept}
	if err := presencev1.RegisterBackendServiceHandlerClient(context.Background(), gw, api); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(gw)
	defer hs.Close()
	get := func() (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/v1/counts", nil)
		req.Header.Set("Authorization", "Bearer k1")
		req.Header.Set("TE", "trailers") // the gateway forwards trailers when asked
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}

	resp, body := get()
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"onlineUids":"7"`) {
		t.Fatalf("GET /v1/counts = %d %s; want 200 with onlineUids 7", resp.StatusCode, body)
	}
	if sawMethod != "/presence.v1.BackendService/GetCounts" {
		t.Errorf("interceptor saw method %q", sawMethod)
	}
	if impl.sawKey != "Bearer k1" {
		t.Errorf("handler saw authorization %q; want the request's", impl.sawKey)
	}
	if got := resp.Header.Get("Grpc-Metadata-X-Handler"); got != "set" {
		t.Errorf("header set by the handler = %q; want it forwarded", got)
	}
	if got := resp.Trailer.Get("Grpc-Trailer-X-Trailer"); got != "set" {
		t.Errorf("trailer set by the handler = %q; want it forwarded (trailers %v)", got, resp.Trailer)
	}

	refuse = true
	if resp, body := get(); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("refused by the interceptor: %d %s; want 401", resp.StatusCode, body)
	}
}
