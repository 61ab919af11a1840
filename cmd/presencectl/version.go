package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version from the build info is used.
var version = ""

var versionCmd = &command{
	name:    "version",
	usage:   "version",
	summary: "print presencectl's version",
	about:   "Prints presencectl's version, the Go version it was built with, and the platform.",
	setup: func(*flag.FlagSet) func(context.Context, *env) error {
		return func(_ context.Context, e *env) error {
			_, err := fmt.Fprintf(e.stdout, "presencectl %s %s %s/%s\n", versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		}
	},
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
