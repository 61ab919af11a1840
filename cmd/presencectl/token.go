package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/presence-dev/presence/auth"
)

var tokenCmd = &command{
	name:    "token",
	usage:   "token --uid U (--secret S | --secret-file F) [--ttl 1h] [--audience A] [--issuer I]",
	summary: "mint a development client token (HS256 JWT) for a uid",
	about: `Mints a client token for a uid, signed with the same HMAC secret presenced
verifies with (--token-secret or --token-secret-file), and prints it on one
line. For development and tests: in production your own auth service issues
tokens. The secret also comes from PRESENCE_TOKEN_SECRET.`,
	setup: func(fs *flag.FlagSet) func(context.Context, *env) error {
		uid := fs.String("uid", "", "the user `id` the token proves (its subject; required)")
		secret := fs.String("secret", "", "the HMAC `secret` (at least 32 bytes); or PRESENCE_TOKEN_SECRET")
		secretFile := fs.String("secret-file", "", "a `file` holding the HMAC secret")
		ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
		aud := fs.String("audience", "", "the aud claim, when presenced checks one")
		iss := fs.String("issuer", "", "the iss claim, when presenced checks one")
		return func(_ context.Context, e *env) error {
			if *uid == "" {
				return usageErr("token", "--uid is required")
			}
			key := *secret
			if *secretFile != "" {
				b, err := os.ReadFile(*secretFile)
				if err != nil {
					return usageErr("token", "--secret-file: %v", err)
				}
				key = strings.TrimRight(string(b), "\r\n")
			}
			if key == "" {
				key = os.Getenv("PRESENCE_TOKEN_SECRET")
			}
			if len(key) < 32 {
				return usageErr("token", "a secret of at least 32 bytes is required (--secret, --secret-file or PRESENCE_TOKEN_SECRET)")
			}
			if *ttl <= 0 {
				return usageErr("token", "--ttl must be positive")
			}
			tok, err := auth.MintHS256([]byte(key), *uid, *ttl, *aud, *iss)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(e.stdout, tok)
			return err
		}
	},
}
