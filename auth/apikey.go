package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// MinAPIKeyLen is the shortest API key accepted in configuration.
const MinAPIKeyLen = 16

// APIKeys is the set of keys that open the backend API. Several keys may be
// valid at once, so a key can be rotated without downtime. Keys are stored
// as SHA-256 digests and compared in constant time, every key every time.
type APIKeys struct {
	digests [][sha256.Size]byte
}

// NewAPIKeys returns the set of keys; each must be at least MinAPIKeyLen
// characters.
func NewAPIKeys(keys ...string) (*APIKeys, error) {
	k := &APIKeys{}
	for i, key := range keys {
		if len(key) < MinAPIKeyLen {
			return nil, errors.New("API key " + strconv.Itoa(i+1) + " is shorter than 16 characters; use a long random key")
		}
		k.digests = append(k.digests, sha256.Sum256([]byte(key)))
	}
	if len(k.digests) == 0 {
		return nil, errors.New("no API key given")
	}
	return k, nil
}

// Valid reports whether key is one of the set.
func (k *APIKeys) Valid(key string) bool {
	d := sha256.Sum256([]byte(key))
	ok := 0
	for i := range k.digests {
		ok |= subtle.ConstantTimeCompare(d[:], k.digests[i][:])
	}
	return ok == 1
}

// Check returns nil when ctx's incoming metadata carries
// "authorization: Bearer <key>" with a valid key, and an Unauthenticated
// status saying what is wrong otherwise.
func (k *APIKeys) Check(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, "API key missing: send the header \"authorization: Bearer <key>\"")
	}
	scheme, key, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return status.Error(codes.Unauthenticated, "authorization header malformed: want \"Bearer <key>\"")
	}
	if !k.Valid(strings.TrimSpace(key)) {
		return status.Error(codes.Unauthenticated, "API key invalid")
	}
	return nil
}

// Interceptors return gRPC interceptors that require a valid key on every
// method whose full name starts with prefix (for example
// "/presence.v1.BackendService/") and let every other method through.
func (k *APIKeys) Interceptors(prefix string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if strings.HasPrefix(info.FullMethod, prefix) {
			if err := k.Check(ctx); err != nil {
				return nil, err
			}
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if strings.HasPrefix(info.FullMethod, prefix) {
			if err := k.Check(ss.Context()); err != nil {
				return err
			}
		}
		return h(srv, ss)
	}
	return unary, stream
}
