package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// serve runs a presence daemon with the --srv-* settings until SIGINT,
// SIGTERM or --deadline: a stand-in for presenced with the transport knobs
// it has no flags for yet, and with pprof, so the server alone can be
// profiled and measured in its own process (pinned with taskset). It is a
// bench harness, not a product: every listener must be loopback.
func serve(cfg *config, stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.deadline)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	grpcAddr, err := loopbackAddr(ctx, "grpc-addr", cfg.grpcAddr)
	if err != nil {
		return err
	}
	httpAddr, err := loopbackAddr(ctx, "http-addr", cfg.httpAddr)
	if err != nil {
		return err
	}
	log := slog.New(slog.DiscardHandler)
	if cfg.srv.logLevel != "off" {
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	d, err := startDaemon(cfg, grpcAddr, httpAddr, log)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		d.Shutdown(sctx)
	}()

	if cfg.pprofAddr != "" {
		addr, err := loopbackAddr(ctx, "pprof-addr", cfg.pprofAddr)
		if err != nil {
			return err
		}
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--pprof-addr: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(lis)
		defer hs.Close()
	}
	fmt.Fprintf(stderr, "presencebench --serve: pid %d, gRPC %s, HTTP %s, pprof %q (a bench harness, not presenced)\n",
		os.Getpid(), d.GRPCAddr(), d.HTTPAddr(), cfg.pprofAddr)
	select {
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			fmt.Fprintln(stderr, "presencebench --serve: --deadline reached")
		}
		return nil
	case err := <-d.Err():
		return fmt.Errorf("serving: %w", err)
	}
}
