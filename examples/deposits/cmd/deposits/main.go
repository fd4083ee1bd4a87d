// Command deposits runs the wallet deposit service over a Herald server.
//
//	deposits serve [-addr :8080]      apply the Herald config, serve /deposit and /check/{wallet_id}
//	deposits flag WALLET              flag a wallet by hand
//	deposits flag -remove WALLET      clear its flag
//
// HERALD_URL (default http://localhost:8480) and HERALD_KEY (an admin key)
// name the Herald server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/examples/deposits"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "deposits:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	base := getenv("HERALD_URL")
	if base == "" {
		base = "http://localhost:8480"
	}
	c := client.New(base, client.WithKey(getenv("HERALD_KEY")))
	if len(args) == 0 {
		return errors.New("usage: deposits serve [-addr :8080] | deposits flag [-remove] WALLET")
	}
	switch args[0] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		addr := fs.String("addr", ":8080", "address to serve /deposit and /check on")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return serve(ctx, c, *addr)
	case "flag":
		fs := flag.NewFlagSet("flag", flag.ContinueOnError)
		remove := fs.Bool("remove", false, "clear the flag instead of setting it")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: deposits flag [-remove] WALLET")
		}
		op := deposits.Flag
		if *remove {
			op = deposits.Unflag
		}
		seq, err := op(ctx, c, fs.Arg(0))
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "{\"wallet_id\": %q, \"seq\": %d}\n", fs.Arg(0), seq)
		return err
	}
	return fmt.Errorf("unknown command %q: use serve or flag", args[0])
}

func serve(ctx context.Context, c *client.Client, addr string) error {
	if err := deposits.Setup(ctx, c); err != nil {
		return err
	}
	svc := &deposits.Service{Herald: c}
	srv := &http.Server{Addr: addr, Handler: svc.Handler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	slog.Info("deposits serving", "addr", addr)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
