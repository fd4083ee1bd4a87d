package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

const (
	defaultServer = "http://127.0.0.1:8480"
	outputText    = "text"
	outputJSON    = "json"
)

// cli is what a verb runs with: the injected streams, the environment and
// the global options.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	g              globals
}

// globals are the options of every client verb, given before or after it.
// Empty means not given on the command line.
type globals struct {
	server string
	key    string
	output string
}

func (c *cli) globalFlags(fs *flag.FlagSet) {
	fs.Var(stringFlag{&c.g.server}, "server", "the server's `URL` (env HERALD_URL; default "+defaultServer+")")
	fs.Var(stringFlag{&c.g.key}, "key", "the API `KEY` to send (env HERALD_KEY)")
	fs.Var(stringFlag{&c.g.output}, "output", "output `FORMAT`: text or json")
}

func (c *cli) serverURL() string {
	if c.g.server != "" {
		return c.g.server
	}
	if s := c.getenv("HERALD_URL"); s != "" {
		return s
	}
	return defaultServer
}

func (c *cli) apiKey() string {
	if c.g.key != "" {
		return c.g.key
	}
	return c.getenv("HERALD_KEY")
}

// client returns an API client for the global options.
func (c *cli) client() *client.Client {
	return client.New(c.serverURL(), client.WithKey(c.apiKey()), client.WithUserAgent("herald-cli/"+herald.Version))
}

// stringFlag sets a string without resetting it on registration and
// without showing it as a default, so the API key never appears in help.
type stringFlag struct{ p *string }

func (f stringFlag) String() string     { return "" }
func (f stringFlag) Set(s string) error { *f.p = s; return nil }

// durationFlag is a duration in herald.ParseDuration form ("7d", "90m").
type durationFlag struct{ p *time.Duration }

func (f durationFlag) String() string {
	if f.p == nil || *f.p == 0 {
		return ""
	}
	return herald.FormatDuration(*f.p)
}

func (f durationFlag) Set(s string) error {
	d, err := herald.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as 90m, 24h or 7d")
	}
	if d < 0 {
		return fmt.Errorf("want a duration that is not negative")
	}
	*f.p = d
	return nil
}

// listFlag collects the values of a repeated flag.
type listFlag struct{ p *[]string }

func (f listFlag) String() string     { return "" }
func (f listFlag) Set(s string) error { *f.p = append(*f.p, s); return nil }

// cmdFlags is the flag set of one verb, with the global options added.
type cmdFlags struct {
	*flag.FlagSet
	c     *cli
	verb  string // "topics create"
	usage string // synopsis, blank line, description
}

// flagSet returns the flag set of a verb. usage starts with the synopsis
// line, without "Usage:".
func (c *cli) flagSet(verb, usage string) *cmdFlags {
	fs := flag.NewFlagSet("herald "+verb, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	c.globalFlags(fs)
	return &cmdFlags{FlagSet: fs, c: c, verb: verb, usage: usage}
}

// parse parses args, with flags before, between or after the positional
// arguments ("--" ends the flags), checks that there are min to max
// positional arguments (max < 0: no limit) and that --output is valid, and
// returns the positional arguments. On -h it writes the verb's help to
// stderr and returns flag.ErrHelp; other mistakes are usage errors.
func (f *cmdFlags) parse(args []string, min, max int) ([]string, error) {
	pos, err := parseInterspersed(f.FlagSet, args)
	if errors.Is(err, flag.ErrHelp) {
		f.writeUsage(f.c.stderr)
		return nil, flag.ErrHelp
	}
	if err != nil {
		return nil, f.usageErrorf("%v", err)
	}
	switch f.c.g.output {
	case "":
		f.c.g.output = outputText
	case outputText, outputJSON:
	default:
		return nil, f.usageErrorf("--output %q: want text or json", f.c.g.output)
	}
	switch {
	case len(pos) < min:
		return nil, f.usageErrorf("missing arguments; usage: herald %s", synopsis(f.usage))
	case max >= 0 && len(pos) > max:
		return nil, f.usageErrorf("unexpected argument %q; usage: herald %s", pos[max], synopsis(f.usage))
	}
	return pos, nil
}

func (f *cmdFlags) usageErrorf(format string, args ...any) error {
	return &usageError{verb: f.verb, err: fmt.Errorf("%s: %w", f.verb, fmt.Errorf(format, args...))}
}

func synopsis(usage string) string {
	line, _, _ := strings.Cut(usage, "\n")
	return strings.TrimPrefix(line, "herald ")
}

// writeUsage writes the verb's help and its own options; the global ones
// are summarised.
func (f *cmdFlags) writeUsage(w io.Writer) {
	var b strings.Builder
	b.WriteString("Usage: " + f.usage + "\n")
	first := true
	f.VisitAll(func(fl *flag.Flag) {
		if fl.Name == "server" || fl.Name == "key" || fl.Name == "output" {
			return
		}
		if first {
			b.WriteString("\nOptions:\n")
			first = false
		}
		name, usage := flag.UnquoteUsage(fl)
		fmt.Fprintf(&b, "  --%s %s\n        %s", fl.Name, name, usage)
		if fl.DefValue != "" {
			fmt.Fprintf(&b, " (default %s)", fl.DefValue)
		}
		b.WriteString("\n")
	})
	b.WriteString("\n" + globalUsage)
	_, _ = io.WriteString(w, b.String())
}

// parseInterspersed parses flags anywhere among the positional arguments,
// which the flag package alone stops at, and returns the positional ones.
// Everything after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// subverb runs the subverb named by args[0] among subs, or writes the verb's
// overview.
func (c *cli) subverb(ctx context.Context, verb, overview string, args []string, subs map[string]func(ctx context.Context, c *cli, args []string) error) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		_, _ = io.WriteString(c.stderr, overview+"\n"+globalUsage)
		if len(args) == 0 {
			return &usageError{verb: verb, err: fmt.Errorf("%s: missing subverb", verb)}
		}
		return flag.ErrHelp
	}
	run, ok := subs[args[0]]
	if !ok {
		return &usageError{verb: verb, err: fmt.Errorf("%s: unknown subverb %q", verb, args[0])}
	}
	return run(ctx, c, args[1:])
}

// formatTime writes a time for text output: RFC 3339 in UTC, or "-".
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// orDash returns s, or "-" when it is empty, for table cells.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// timeFlag is a flag holding an RFC 3339 time.
type timeFlag struct{ p *time.Time }

func (f timeFlag) String() string {
	if f.p == nil || f.p.IsZero() {
		return ""
	}
	return f.p.UTC().Format(time.RFC3339)
}

func (f timeFlag) Set(s string) error {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("want an RFC 3339 time such as 2030-01-02T15:04:05Z")
	}
	*f.p = t
	return nil
}
