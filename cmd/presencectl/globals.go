package main

import (
	"flag"
	"fmt"
	"time"
)

// globals are the flags every command takes.
type globals struct {
	addr    string        // the server's gRPC address
	apiKey  string        // sent as a bearer token on backend calls; "" sends none
	token   string        // the client token watch sends in Identify
	timeout time.Duration // bound on each backend call
}

// globalFlag describes one global flag and its environment variable.
type globalFlag struct {
	name, env, def, usage string
}

var globalFlags = []globalFlag{
	{"addr", "PRESENCE_ADDR", "127.0.0.1:9090", "the presence server's gRPC `address`"},
	{"api-key", "PRESENCE_API_KEY", "", "backend API `key`, sent as \"authorization: Bearer KEY\" on backend calls (every command but watch and token)"},
	{"token", "PRESENCE_TOKEN", "", "client `token` (JWT) that watch sends in Identify"},
	{"timeout", "PRESENCE_TIMEOUT", "10s", "bound each backend call by this `duration`"},
}

// bindGlobals defines the global flags on fs. Values are read back as
// strings by resolveGlobals, so that a flag given before the command and
// one given after it do not overwrite each other's defaults.
func bindGlobals(fs *flag.FlagSet) {
	for _, g := range globalFlags {
		fs.String(g.name, g.def, fmt.Sprintf("%s (env %s)", g.usage, g.env))
	}
}

// resolveGlobals picks each global's value: the last flag set that was
// given it on the command line wins, then the environment, then the
// default.
func resolveGlobals(lookupEnv func(string) (string, bool), sets ...*flag.FlagSet) (globals, error) {
	val := make(map[string]string, len(globalFlags))
	for _, g := range globalFlags {
		val[g.name] = g.def
		if v, ok := lookupEnv(g.env); ok {
			val[g.name] = v
		}
	}
	for _, fs := range sets {
		fs.Visit(func(f *flag.Flag) {
			if _, ok := val[f.Name]; ok {
				val[f.Name] = f.Value.String()
			}
		})
	}
	g := globals{addr: val["addr"], apiKey: val["api-key"], token: val["token"]}
	if g.addr == "" {
		return globals{}, fmt.Errorf("--addr is empty; give the server's host:port")
	}
	t, err := time.ParseDuration(val["timeout"])
	if err != nil || t <= 0 {
		return globals{}, fmt.Errorf("--timeout %q: want a positive duration such as 5s", val["timeout"])
	}
	g.timeout = t
	return g, nil
}
