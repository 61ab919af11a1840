package lite

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// TestGrpcurl runs a grpcurl binary against the server; it is skipped
// unless LITE_GRPCURL names one (e.g. built from
// github.com/fullstorydev/grpcurl/cmd/grpcurl):
//
//	LITE_GRPCURL=/tmp/grpcurl go test -run Grpcurl ./lite/
func TestGrpcurl(t *testing.T) {
	bin := os.Getenv("LITE_GRPCURL")
	if bin == "" {
		t.Skip("LITE_GRPCURL not set")
	}
	s := NewServer(Options{})
	healthpb.RegisterHealthServer(s, health.NewServer())
	reflection.Register(s)
	addr := startServer(t, s)
	runErr := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append([]string{"-plaintext"}, args...)...).CombinedOutput()
		return string(out), err
	}
	run := func(args ...string) string {
		out, err := runErr(args...)
		if err != nil {
			t.Fatalf("grpcurl %v: %v\n%s", args, err, out)
		}
		return out
	}
	if out := run(addr, "list"); !strings.Contains(out, "grpc.health.v1.Health") || !strings.Contains(out, "grpc.reflection.v1.ServerReflection") {
		t.Fatalf("list:\n%s", out)
	}
	if out := run(addr, "describe", "grpc.health.v1.Health"); !strings.Contains(out, "rpc Watch") {
		t.Fatalf("describe:\n%s", out)
	}
	if out := run("-d", `{"service":""}`, addr, "grpc.health.v1.Health/Check"); !strings.Contains(out, `"SERVING"`) {
		t.Fatalf("Check:\n%s", out)
	}
	// Watch streams until -max-time ends it with DeadlineExceeded.
	if out, _ := runErr("-max-time", "1", "-d", `{}`, addr, "grpc.health.v1.Health/Watch"); !strings.Contains(out, `"SERVING"`) || !strings.Contains(out, "DeadlineExceeded") {
		t.Fatalf("Watch:\n%s", out)
	}
}
