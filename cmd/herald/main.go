// Command herald runs the Herald server (serve, migrate) and calls the API
// of a running one (topics, publish, events, keys). Run "herald help".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// Exit codes of run.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // the command line or configuration is wrong
)

// run is the whole command: it runs the verb named by args[0] and returns
// the exit code. It reads and writes only the given streams and reads the
// environment only through getenv, so tests call it directly. Help goes to
// stdout when asked for with the help verb, to stderr with -h.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	err := c.dispatch(ctx, args)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		printError(stderr, "interrupted")
		return exitFailure
	}
	_, isProblem := errors.AsType[*client.Problem](err)
	if he, ok := errors.AsType[*herald.Error](err); ok && !isProblem && he.Code == herald.CodeInvalid {
		// The client refused an argument before sending it (an empty
		// name, a malformed --server URL): a usage error too.
		err = &usageError{err: err}
	}
	if ue, ok := errors.AsType[*usageError](err); ok {
		printError(stderr, ue.Error())
		help := "herald help"
		if ue.verb != "" {
			help += " " + ue.verb
		}
		fmt.Fprintf(stderr, "Run %q for usage.\n", help)
		return exitUsage
	}
	msg := err.Error()
	if _, ok := errors.AsType[*client.ConnError](err); ok {
		msg += ` (is "herald serve" running? set --server or HERALD_URL)`
	}
	printError(stderr, msg)
	if p, ok := errors.AsType[*client.Problem](err); ok && p.Status == 401 && c.apiKey() == "" {
		printError(stderr, "no API key was given: set --key or HERALD_KEY")
	}
	return exitFailure
}

// printError writes each line of msg prefixed with "herald: ".
func printError(w io.Writer, msg string) {
	var b strings.Builder
	for line := range strings.SplitSeq(msg, "\n") {
		b.WriteString("herald: ")
		b.WriteString(line)
		b.WriteString("\n")
	}
	_, _ = io.WriteString(w, b.String())
}

// usageError is a mistake in how herald was invoked or configured. run
// prints it with a pointer to the help of verb and exits 2.
type usageError struct {
	verb string // "topics create"; "" for herald itself
	err  error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}
