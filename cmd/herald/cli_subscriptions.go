package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

const subscriptionsOverview = `Usage: herald subscriptions <subverb> [arguments]     (alias: subs)

  create TOPIC URL [options]   create a webhook subscription to a topic or pattern
  list [--state S] [--topic T] list the subscriptions the key may manage
  get ID                       show a subscription with its backlog
  update ID [options]          change some settings of a subscription
  delete ID                    delete a subscription and its delivery state
  pause ID                     stop delivering; events wait for it
  resume ID                    continue where it stopped
  verify ID CHALLENGE          confirm the endpoint with its challenge token
  secret ID                    show the signing secret
  rotate-secret ID [--grace D] make a new signing secret
  dead-letters ID              list the events that used up their retries
  redrive ID [EVENT_ID...]     retry dead letters again (all by default)
  delete-dead-letters ID [EVENT_ID...]
                               drop dead letters (all by default)
  replay ID (--from-seq N | --from-time T) [--to-seq N] [--topic T]
                               deliver retained events again
  attempts ID [--event-id E] [--outcome O]
                               list delivery attempts, newest first
  test ID                      send a signed herald.test event to the endpoint now

A new subscription is pending until its endpoint answers the signed
verification challenge Herald sends it (or "verify" confirms the token).
Managing a subscription needs an admin key or a key with a subscribe scope
that covers its topic.

Run "herald help subscriptions <subverb>" for its options.
`

func subscriptionsVerb(ctx context.Context, c *cli, args []string) error {
	return c.subverb(ctx, "subscriptions", subscriptionsOverview, args, map[string]func(context.Context, *cli, []string) error{
		"create":              subsCreate,
		"list":                subsList,
		"get":                 subsGet,
		"update":              subsUpdate,
		"delete":              subsDelete,
		"pause":               subsPause,
		"resume":              subsResume,
		"verify":              subsVerify,
		"secret":              subsSecret,
		"rotate-secret":       subsRotateSecret,
		"dead-letters":        subsDeadLetters,
		"redrive":             subsRedrive,
		"delete-dead-letters": subsDeleteDeadLetters,
		"replay":              subsReplay,
		"attempts":            subsAttempts,
		"test":                subsTest,
	})
}

// maxFilterFile bounds a --filter @file read; the server takes 16 KiB.
const maxFilterFile = 64 << 10

// settingsFlags are the settings options of create and update.
type settingsFlags struct {
	url              string // update only
	description      string
	filter           string
	headers          []string
	removeHeaders    []string // update only
	retryMaxAttempts int
	retryInitial     time.Duration
	retryMax         time.Duration
	timeout          time.Duration
	maxInFlight      int
	rateLimit        float64
	ordered          bool
	expiresAfterIdle time.Duration
	verification     string
}

func (f *settingsFlags) register(fs *cmdFlags, update bool) {
	if update {
		fs.StringVar(&f.url, "url", "", "the new endpoint `URL`; it must be verified again unless --verification none")
	}
	fs.StringVar(&f.description, "description", "", "a `TEXT` for people")
	filterHelp := "only events passing the filter `JSON` (or @FILE), such as {\"types\":[\"order.*\"]}"
	if update {
		filterHelp += "; null removes it"
	}
	fs.StringVar(&f.filter, "filter", "", filterHelp)
	fs.Var(listFlag{&f.headers}, "header", "a static request header `NAME=VALUE`; repeatable")
	if update {
		fs.Var(listFlag{&f.removeHeaders}, "remove-header", "remove the static header `NAME`; repeatable")
	}
	fs.Var(intFlag{&f.retryMaxAttempts}, "retry-max-attempts", fmt.Sprintf("try each event at most `N` times (server default %d)", herald.DefaultRetryPolicy.MaxAttempts))
	fs.Var(durationFlag{&f.retryInitial}, "retry-initial", "wait `D` before the first retry (server default 5s)")
	fs.Var(durationFlag{&f.retryMax}, "retry-max", "wait at most `D` between retries (server default 4h)")
	fs.Var(durationFlag{&f.timeout}, "timeout", "give each request `D`, 1s to 60s (server default 15s)")
	fs.Var(intFlag{&f.maxInFlight}, "max-in-flight", "send at most `N` requests at once (server default 16)")
	fs.Var(floatFlag{&f.rateLimit}, "rate-limit", "send at most `R` requests per second; 0 is unlimited")
	fs.Var(boolFlag{&f.ordered}, "ordered", "deliver events with the same key one at a time, in order")
	expiresHelp := "delete the subscription after `D` with no matching event and no API call (at least 1h)"
	if update {
		expiresHelp += "; 0 never"
	}
	fs.Var(durationFlag{&f.expiresAfterIdle}, "expires-after-idle", expiresHelp)
	fs.StringVar(&f.verification, "verification", "", "`MODE`: challenge (the default) or none (admin keys only: no verification)")
}

// check validates what the server cannot see: numbers, headers, the
// filter file. It returns the filter JSON ("" when not given).
func (f *settingsFlags) check(fs *cmdFlags, set map[string]bool) (json.RawMessage, map[string]string, error) {
	switch {
	case set["retry-max-attempts"] && f.retryMaxAttempts < 1:
		return nil, nil, fs.usageErrorf("--retry-max-attempts %d: want 1 or more", f.retryMaxAttempts)
	case set["max-in-flight"] && f.maxInFlight < 1:
		return nil, nil, fs.usageErrorf("--max-in-flight %d: want 1 or more", f.maxInFlight)
	case f.rateLimit < 0:
		return nil, nil, fs.usageErrorf("--rate-limit %v: want 0 (unlimited) or more", f.rateLimit)
	case f.verification != "" && f.verification != herald.VerifyChallenge && f.verification != herald.VerifyNone:
		return nil, nil, fs.usageErrorf("--verification %q: want challenge or none", f.verification)
	}
	var headers map[string]string
	for _, h := range f.headers {
		name, value, ok := strings.Cut(h, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, nil, fs.usageErrorf("--header %q: want NAME=VALUE", h)
		}
		if headers == nil {
			headers = map[string]string{}
		}
		headers[strings.TrimSpace(name)] = value
	}
	if !set["filter"] {
		return nil, headers, nil
	}
	raw := []byte(f.filter)
	if path, ok := strings.CutPrefix(f.filter, "@"); ok {
		file, err := os.Open(path)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: --filter: %w", fs.verb, err)
		}
		defer file.Close()
		raw, err = io.ReadAll(io.LimitReader(file, maxFilterFile+1))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: --filter: read %s: %w", fs.verb, path, err)
		}
		if len(raw) > maxFilterFile {
			return nil, nil, fs.usageErrorf("--filter: %s is over %d bytes", path, maxFilterFile)
		}
	}
	if !json.Valid(raw) {
		return nil, nil, fs.usageErrorf("--filter: not valid JSON; want an object such as {\"types\":[\"order.*\"]}")
	}
	return raw, headers, nil
}

// intFlag, floatFlag and boolFlag are numbers and switches whose zero
// value is not shown as a default in help: the server's default applies.
type (
	intFlag   struct{ p *int }
	floatFlag struct{ p *float64 }
	boolFlag  struct{ p *bool }
)

func (f intFlag) String() string { return "" }
func (f intFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("want a whole number")
	}
	*f.p = n
	return nil
}

func (f floatFlag) String() string { return "" }
func (f floatFlag) Set(s string) error {
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n != n {
		return fmt.Errorf("want a number")
	}
	*f.p = n
	return nil
}

func (f boolFlag) String() string   { return "" }
func (f boolFlag) IsBoolFlag() bool { return true }
func (f boolFlag) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false")
	}
	*f.p = b
	return nil
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *cmdFlags) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// parseStartFlag reads --start: now, earliest, a seq or an RFC 3339 time.
func parseStartFlag(s string) (herald.StartPosition, error) {
	switch s {
	case "", "now":
		return herald.StartPosition{}, nil
	case "earliest":
		return herald.StartPosition{Earliest: true}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return herald.StartPosition{}, fmt.Errorf("--start %d: want a seq of 0 or more", n)
		}
		if n == 0 {
			return herald.StartPosition{Earliest: true}, nil
		}
		return herald.StartPosition{Seq: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return herald.StartPosition{}, fmt.Errorf("--start %q: want now, earliest, a seq or an RFC 3339 time such as 2025-01-02T15:04:05Z", s)
	}
	return herald.StartPosition{Time: t}, nil
}

// subsCreateArgs is a parsed "subscriptions create" command line.
type subsCreateArgs struct {
	spec        client.SubscriptionSpec
	wait        bool          // wait until the subscription is active
	waitTimeout time.Duration // for at most this long
}

// defaultWaitTimeout bounds --wait. A receiver that misses the first
// challenge gets the next ones 5s, 15s and 45s later: a minute covers the
// first retries.
const defaultWaitTimeout = time.Minute

// maxSecretFile bounds a --secret @file read; a secret is under 100 bytes.
const maxSecretFile = 4 << 10

func parseSubsCreate(c *cli, args []string) (subsCreateArgs, error) {
	var (
		f           settingsFlags
		start       string
		secret      string
		channelName string
		config      string
		a           = subsCreateArgs{waitTimeout: defaultWaitTimeout}
	)
	spec := &a.spec
	fs := c.flagSet("subscriptions create", `herald subscriptions create TOPIC URL [options]
herald subscriptions create TOPIC --channel CHANNEL --config JSON [options]

Create a webhook subscription that delivers the events of TOPIC (a name, or
a pattern such as orders.* or orders.>) to URL, and print it with its
signing secret. It is pending until the endpoint answers the verification
challenge Herald sends it at once: give the receiver its secret first, by
choosing it with --secret, so that it passes that first challenge; --wait
waits until it has. Settings not given take the server's defaults.

  export WEBHOOK_SECRET="whsec_$(openssl rand -base64 32)"
  # start the receiver with WEBHOOK_SECRET, then:
  herald subscriptions create orders https://example.com/hook --secret "$WEBHOOK_SECRET" --wait

With --channel, the subscription delivers through another channel (kafka,
redis, nats, amqp, mqtt: docs/channels.md) whose settings --config gives
as a JSON object, or @FILE to keep a password off the command line. It
takes no URL, and is active at once.

  herald subscriptions create deposits --channel kafka --ordered \
    --config '{"brokers":["kafka-1.internal:9092"],"topic":"herald.{topic}"}'`)
	f.register(fs, false)
	fs.StringVar(&channelName, "channel", "", "deliver through `CHANNEL`: webhook (the default), kafka, redis, nats, amqp, mqtt")
	fs.StringVar(&config, "config", "", "the channel's settings, a `JSON` object or @FILE (docs/channels.md)")
	fs.StringVar(&start, "start", "", "deliver from `POS`: now (default), earliest, a seq (single topics only) or an RFC 3339 time")
	fs.StringVar(&secret, "secret", "", "sign with `SECRET`, whsec_ and the base64 of 24 to 64 random bytes, or read it from @FILE (command lines are visible to other users of the machine); default: the server makes one")
	fs.Var(boolFlag{&a.wait}, "wait", "wait until the endpoint has answered the verification challenge; exit 1 with the reason if it has not by --wait-timeout")
	fs.Var(durationFlag{&a.waitTimeout}, "wait-timeout", "give up waiting after `D`")
	pos, err := fs.parse(args, 1, 2)
	if err != nil {
		return a, err
	}
	set := setFlags(fs)
	webhook := channelName == "" || channelName == herald.ChannelWebhook
	switch {
	case webhook && len(pos) < 2 && !set["config"]:
		_, err := fs.parse(args, 2, 2) // a webhook needs its URL: the usual message
		return a, err
	case !webhook && len(pos) > 1:
		return a, fs.usageErrorf("a %s subscription takes no URL: its destination is in --config", channelName)
	case !webhook && !set["config"]:
		return a, fs.usageErrorf("--channel %s needs --config with its settings (docs/channels.md)", channelName)
	}
	if set["config"] {
		if spec.Config, err = readConfigFlag(fs, config); err != nil {
			return a, err
		}
	}
	spec.Channel = channelName
	filter, headers, err := f.check(fs, set)
	if err != nil {
		return a, err
	}
	if spec.Start, err = parseStartFlag(start); err != nil {
		return a, fs.usageErrorf("%v", err)
	}
	spec.Topic = pos[0]
	if len(pos) > 1 {
		spec.URL = pos[1]
	}
	spec.Description, spec.Filter, spec.Headers = f.description, filter, headers
	spec.Retry = herald.RetryPolicy{MaxAttempts: f.retryMaxAttempts, Initial: f.retryInitial, Max: f.retryMax}
	spec.Timeout, spec.MaxInFlight, spec.RateLimit = f.timeout, f.maxInFlight, f.rateLimit
	spec.Ordered, spec.ExpiresAfterIdle, spec.Verification = f.ordered, f.expiresAfterIdle, f.verification
	if set["expires-after-idle"] && f.expiresAfterIdle == 0 {
		return a, fs.usageErrorf("--expires-after-idle 0: leave it out to never expire")
	}
	if set["secret"] {
		if spec.Secret, err = readSecretFlag(fs, secret); err != nil {
			return a, err
		}
	}
	if set["wait-timeout"] && (!a.wait || a.waitTimeout <= 0) {
		return a, fs.usageErrorf("--wait-timeout: want a duration above 0, with --wait")
	}
	return a, nil
}

// maxConfigFile bounds a --config value or @file; TLS certificates make
// the largest configs.
const maxConfigFile = 256 << 10

// readConfigFlag returns the JSON object of --config: the value, or the
// file named after "@". The server checks its members.
func readConfigFlag(fs *cmdFlags, v string) (json.RawMessage, error) {
	b := []byte(v)
	if path, ok := strings.CutPrefix(v, "@"); ok {
		file, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("%s: --config: %w", fs.verb, err)
		}
		defer file.Close()
		if b, err = io.ReadAll(io.LimitReader(file, maxConfigFile+1)); err != nil {
			return nil, fmt.Errorf("%s: --config: read %s: %w", fs.verb, path, err)
		}
	}
	if len(b) > maxConfigFile {
		return nil, fs.usageErrorf("--config is over %d bytes", maxConfigFile)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
		return nil, fs.usageErrorf("--config must be a JSON object, such as {\"brokers\":[\"host:9092\"]}")
	}
	return b, nil
}

// readSecretFlag returns the secret of --secret: the value, or the first
// line of the file named after "@". The server checks its form.
func readSecretFlag(fs *cmdFlags, v string) (string, error) {
	path, ok := strings.CutPrefix(v, "@")
	if !ok {
		if v == "" {
			return "", fs.usageErrorf("--secret is empty; leave it out to have the server make one")
		}
		return v, nil
	}
	file, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: --secret: %w", fs.verb, err)
	}
	defer file.Close()
	b, err := io.ReadAll(io.LimitReader(file, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("%s: --secret: read %s: %w", fs.verb, path, err)
	}
	if len(b) > maxSecretFile {
		return "", fs.usageErrorf("--secret: %s is over %d bytes; it should hold only the secret", path, maxSecretFile)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if line = strings.TrimSpace(line); line == "" {
		return "", fs.usageErrorf("--secret: %s is empty", path)
	}
	return line, nil
}

func subsCreate(ctx context.Context, c *cli, args []string) error {
	a, err := parseSubsCreate(c, args)
	if err != nil {
		return err
	}
	cl := c.client()
	s, err := cl.CreateSubscription(ctx, a.spec)
	if err != nil {
		return err
	}
	if c.g.output != outputJSON {
		if _, err := fmt.Fprintf(c.stdout, "created subscription %s\n", s.ID); err != nil {
			return err
		}
		if err := writeSubscription(c.stdout, s); err != nil {
			return err
		}
	}
	if !a.wait {
		if c.g.output == outputJSON {
			return c.printJSON(s)
		}
		if s.State == herald.StatePending {
			_, err = fmt.Fprintf(c.stderr, "The endpoint must answer the verification challenge before %s; until then nothing is delivered (--wait waits for it).\n", formatTime(s.VerifyDeadline))
		}
		return err
	}
	if c.g.output != outputJSON && s.State == herald.StatePending {
		fmt.Fprintf(c.stderr, "Waiting up to %s for the endpoint to answer the verification challenge...\n", herald.FormatDuration(a.waitTimeout))
	}
	got, waitErr := waitActive(ctx, cl, s, a.waitTimeout)
	if c.g.output == outputJSON {
		got.Secret = s.Secret // shown only by create
		if err := c.printJSON(got); err != nil {
			return err
		}
	} else if waitErr == nil {
		if _, err := fmt.Fprintf(c.stdout, "subscription %s is active: the endpoint answered the verification challenge\n", s.ID); err != nil {
			return err
		}
	}
	return waitErr
}

// waitPoll is how often waitActive reads the subscription.
const waitPoll = 250 * time.Millisecond

// waitActive reads the subscription s until it is active and returns it.
// It stops with an error naming the state and its reason when the
// subscription is in a state it will not leave by itself (failed, paused,
// disabled), when it is still pending after timeout, or when ctx ends. The
// subscription last read is returned with the error.
func waitActive(ctx context.Context, cl *client.Client, s client.Subscription, timeout time.Duration) (client.Subscription, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(waitPoll)
	defer tick.Stop()
	for {
		reason := cell(s.StateReason)
		switch {
		case s.State == herald.StateActive:
			return s, nil
		case s.State != herald.StatePending:
			if reason == "" {
				reason = "no reason given"
			}
			return s, fmt.Errorf("subscription %s is %s: %s", s.ID, s.State, reason)
		case !time.Now().Before(deadline):
			if reason == "" {
				reason = "the endpoint has not answered the verification challenge yet"
			}
			return s, fmt.Errorf("subscription %s is still pending after %s: %s", s.ID, herald.FormatDuration(timeout), reason)
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-tick.C:
		}
		next, err := cl.GetSubscription(ctx, s.ID)
		if err != nil {
			return s, err
		}
		s = next
	}
}

// subsUpdateArgs is a parsed "subscriptions update" command line.
type subsUpdateArgs struct {
	id    string
	patch client.SubscriptionPatch
}

func parseSubsUpdate(c *cli, args []string) (subsUpdateArgs, error) {
	var (
		f      settingsFlags
		a      subsUpdateArgs
		config string
	)
	fs := c.flagSet("subscriptions update", `herald subscriptions update ID [options]

Change the settings given as options; the others stay. A new --url must be
verified again: the subscription is pending until its endpoint answers
(a paused one stays paused and is verified when resumed). --config merges
into the channel's settings: the members given replace the stored ones, a
null removes one, the rest (secrets included) stay.

  herald subscriptions update sub_... --config '{"topic":"herald.orders.v2"}'`)
	f.register(fs, true)
	fs.StringVar(&config, "config", "", "merge into the channel's settings, a `JSON` object or @FILE (docs/channels.md)")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return a, err
	}
	set := setFlags(fs)
	filter, headers, err := f.check(fs, set)
	if err != nil {
		return a, err
	}
	a.id = pos[0]
	p := &a.patch
	if set["config"] {
		if p.Config, err = readConfigFlag(fs, config); err != nil {
			return a, err
		}
	}
	if set["url"] {
		p.URL = new(f.url)
	}
	if set["description"] {
		p.Description = new(f.description)
	}
	p.Filter = filter
	for name, value := range headers {
		if p.Headers == nil {
			p.Headers = map[string]*string{}
		}
		p.Headers[name] = new(value)
	}
	for _, name := range f.removeHeaders {
		if p.Headers == nil {
			p.Headers = map[string]*string{}
		}
		p.Headers[strings.TrimSpace(name)] = nil
	}
	if set["retry-max-attempts"] || set["retry-initial"] || set["retry-max"] {
		p.Retry = &herald.RetryPolicy{MaxAttempts: f.retryMaxAttempts, Initial: f.retryInitial, Max: f.retryMax}
		if (set["retry-initial"] && f.retryInitial == 0) || (set["retry-max"] && f.retryMax == 0) {
			return a, fs.usageErrorf("--retry-initial and --retry-max: want a duration above 0")
		}
	}
	if set["timeout"] {
		p.Timeout = new(f.timeout)
	}
	if set["max-in-flight"] {
		p.MaxInFlight = new(f.maxInFlight)
	}
	if set["rate-limit"] {
		p.RateLimit = new(f.rateLimit)
	}
	if set["ordered"] {
		p.Ordered = new(f.ordered)
	}
	if set["expires-after-idle"] {
		p.ExpiresAfterIdle = new(f.expiresAfterIdle)
	}
	p.Verification = f.verification
	delete(set, "server")
	delete(set, "key")
	delete(set, "output")
	if len(set) == 0 {
		return a, fs.usageErrorf("nothing to change: give at least one setting, such as --url or --timeout")
	}
	return a, nil
}

func subsUpdate(ctx context.Context, c *cli, args []string) error {
	a, err := parseSubsUpdate(c, args)
	if err != nil {
		return err
	}
	s, err := c.client().UpdateSubscription(ctx, a.id, a.patch)
	if err != nil {
		return err
	}
	return c.printSubscription("updated", s)
}

// printSubscription writes a subscription after an action: JSON, or a
// line saying what happened and the details.
func (c *cli) printSubscription(what string, s client.Subscription) error {
	if c.g.output == outputJSON {
		return c.printJSON(s)
	}
	if _, err := fmt.Fprintf(c.stdout, "%s subscription %s: %s\n", what, s.ID, s.State); err != nil {
		return err
	}
	return writeSubscription(c.stdout, s)
}

func subsList(ctx context.Context, c *cli, args []string) error {
	var o client.SubscriptionListOptions
	var state string
	fs := c.flagSet("subscriptions list", `herald subscriptions list [--state S] [--topic T]

List the subscriptions the key may manage (all for an admin key), in id order.`)
	fs.StringVar(&state, "state", "", "only subscriptions in `STATE`: pending, active, paused, disabled or failed")
	fs.StringVar(&o.Topic, "topic", "", "only subscriptions whose topic or pattern is exactly `T`")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	o.State, o.Limit = herald.SubscriptionState(state), 1000
	cl := c.client()
	var subs []client.Subscription
	for {
		page, err := cl.ListSubscriptions(ctx, o)
		if err != nil {
			return err
		}
		subs = append(subs, page.Subscriptions...)
		if page.NextCursor == "" || page.NextCursor == o.Cursor {
			break
		}
		o.Cursor = page.NextCursor
	}
	if c.g.output == outputJSON {
		return c.printJSON(client.SubscriptionPage{Subscriptions: append([]client.Subscription{}, subs...)})
	}
	if len(subs) == 0 {
		_, err := fmt.Fprintln(c.stderr, "no subscriptions")
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tTOPIC\tURL\tDESCRIPTION\tCREATED")
	for _, s := range subs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.State, s.Topic, cell(s.URL), orDash(cell(truncateCell(s.Description, 40))), formatTime(s.CreatedAt))
	}
	return tw.Flush()
}

func truncateCell(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// oneID parses a subverb that takes only a subscription id.
func oneID(c *cli, verb, usage string, args []string) (string, error) {
	fs := c.flagSet("subscriptions "+verb, usage)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return "", err
	}
	return pos[0], nil
}

func subsGet(ctx context.Context, c *cli, args []string) error {
	id, err := oneID(c, "get", `herald subscriptions get ID

Show the subscription ID with its backlog: lag, retries and dead letters.`, args)
	if err != nil {
		return err
	}
	s, err := c.client().GetSubscription(ctx, id)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(s)
	}
	return writeSubscription(c.stdout, s)
}

func subsDelete(ctx context.Context, c *cli, args []string) error {
	id, err := oneID(c, "delete", `herald subscriptions delete ID

Delete the subscription ID with its retries, dead letters and attempt log.`, args)
	if err != nil {
		return err
	}
	if err := c.client().DeleteSubscription(ctx, id); err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return nil // the API answers 204 with no body
	}
	_, err = fmt.Fprintf(c.stdout, "deleted subscription %s\n", id)
	return err
}

func subsPause(ctx context.Context, c *cli, args []string) error {
	id, err := oneID(c, "pause", `herald subscriptions pause ID

Stop delivering to the subscription ID (active or pending). Its events wait
for it until the topic's retention removes them.`, args)
	if err != nil {
		return err
	}
	s, err := c.client().PauseSubscription(ctx, id)
	if err != nil {
		return err
	}
	return c.printSubscription("paused", s)
}

func subsResume(ctx context.Context, c *cli, args []string) error {
	id, err := oneID(c, "resume", `herald subscriptions resume ID

Resume the paused or disabled subscription ID where it stopped. A failed
one, or one never verified, is pending again with a new challenge.`, args)
	if err != nil {
		return err
	}
	s, err := c.client().ResumeSubscription(ctx, id)
	if err != nil {
		return err
	}
	return c.printSubscription("resumed", s)
}

func subsVerify(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("subscriptions verify", `herald subscriptions verify ID CHALLENGE

Confirm the pending subscription ID with the CHALLENGE token its endpoint
received, when the endpoint cannot echo it itself.`)
	pos, err := fs.parse(args, 2, 2)
	if err != nil {
		return err
	}
	s, err := c.client().VerifySubscription(ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	return c.printSubscription("verified", s)
}

func subsSecret(ctx context.Context, c *cli, args []string) error {
	id, err := oneID(c, "secret", `herald subscriptions secret ID

Show the signing secret of the subscription ID, and the previous one while
a rotation's grace lasts.`, args)
	if err != nil {
		return err
	}
	s, err := c.client().GetSecret(ctx, id)
	if err != nil {
		return err
	}
	return c.printSecret(s)
}

func (c *cli) printSecret(s client.Secret) error {
	if c.g.output == outputJSON {
		return c.printJSON(s)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "secret:\t%s\n", s.Secret)
	if s.PreviousSecret != "" {
		fmt.Fprintf(tw, "previous secret:\t%s\n", s.PreviousSecret)
		fmt.Fprintf(tw, "previous signs until:\t%s\n", formatTime(s.PreviousExpiresAt))
	}
	return tw.Flush()
}

// subsRotateArgs is a parsed "subscriptions rotate-secret" command line.
type subsRotateArgs struct {
	id    string
	grace *time.Duration
}

func parseSubsRotate(c *cli, args []string) (subsRotateArgs, error) {
	var grace time.Duration
	fs := c.flagSet("subscriptions rotate-secret", `herald subscriptions rotate-secret ID [--grace D]

Give the subscription ID a new signing secret and print both. The old one
keeps signing too for the grace, so receivers can switch without losing
requests.`)
	fs.Var(durationFlag{&grace}, "grace", "keep signing with the old secret for `D`, 0s to 7d (server default 24h)")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return subsRotateArgs{}, err
	}
	a := subsRotateArgs{id: pos[0]}
	if setFlags(fs)["grace"] {
		a.grace = &grace
	}
	return a, nil
}

func subsRotateSecret(ctx context.Context, c *cli, args []string) error {
	a, err := parseSubsRotate(c, args)
	if err != nil {
		return err
	}
	s, err := c.client().RotateSecret(ctx, a.id, a.grace)
	if err != nil {
		return err
	}
	return c.printSecret(s)
}

// pageFlags are the paging options of the listing subverbs.
type pageFlags struct {
	cursor string
	limit  int
}

func (p *pageFlags) register(fs *cmdFlags) {
	fs.StringVar(&p.cursor, "cursor", "", "continue from `C`, printed by the previous page")
	fs.IntVar(&p.limit, "limit", 100, "show at most `N` (1 to 1000)")
}

func (p *pageFlags) check(fs *cmdFlags) error {
	if p.limit < 1 || p.limit > 1000 {
		return fs.usageErrorf("--limit %d: want 1 to 1000", p.limit)
	}
	return nil
}

// moreHint tells the user how to see the next page.
func (c *cli) moreHint(verb, id, next string) error {
	if next == "" {
		return nil
	}
	_, err := fmt.Fprintf(c.stderr, "more: herald subscriptions %s %s --cursor %s\n", verb, id, next)
	return err
}

func subsDeadLetters(ctx context.Context, c *cli, args []string) error {
	var p pageFlags
	fs := c.flagSet("subscriptions dead-letters", `herald subscriptions dead-letters ID [--limit N] [--cursor C]

List the dead letters of the subscription ID: events that used up their
retries, in topic and seq order.`)
	p.register(fs)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if err := p.check(fs); err != nil {
		return err
	}
	page, err := c.client().ListDeadLetters(ctx, pos[0], p.cursor, p.limit)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(page)
	}
	if len(page.DeadLetters) == 0 {
		_, err := fmt.Fprintln(c.stderr, "no dead letters")
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tSEQ\tEVENT ID\tKEY\tATTEMPTS\tDEAD AT\tLAST ERROR")
	for _, d := range page.DeadLetters {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\n", d.Topic, d.Seq, cell(d.EventID), orDash(cell(d.Key)),
			d.Attempts, formatTime(d.DeadAt), cell(truncateCell(d.LastError, 80)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return c.moreHint("dead-letters", pos[0], page.NextCursor)
}

func subsRedrive(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("subscriptions redrive", `herald subscriptions redrive ID [EVENT_ID...]

Move dead letters of the subscription ID back into its retry set, due now:
those of the given events, or all of them.`)
	pos, err := fs.parse(args, 1, -1)
	if err != nil {
		return err
	}
	n, err := c.client().RedriveDeadLetters(ctx, pos[0], eventIDs(pos[1:]))
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(map[string]int64{"redriven": n})
	}
	_, err = fmt.Fprintf(c.stdout, "redriven %d dead letters of %s\n", n, pos[0])
	return err
}

// eventIDs returns the listed ids, or nil (all) when there are none.
func eventIDs(ids []string) []string {
	if len(ids) == 0 {
		return nil
	}
	return ids
}

func subsDeleteDeadLetters(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("subscriptions delete-dead-letters", `herald subscriptions delete-dead-letters ID [EVENT_ID...]

Delete dead letters of the subscription ID: those of the given events, or
all of them. Deleted dead letters cannot be redriven.`)
	pos, err := fs.parse(args, 1, -1)
	if err != nil {
		return err
	}
	cl := c.client()
	var total int64
	if len(pos) == 1 {
		if total, err = cl.DeleteDeadLetters(ctx, pos[0], ""); err != nil {
			return err
		}
	}
	for _, ev := range pos[1:] {
		n, err := cl.DeleteDeadLetters(ctx, pos[0], ev)
		if err != nil {
			return err
		}
		total += n
	}
	if c.g.output == outputJSON {
		return c.printJSON(map[string]int64{"deleted": total})
	}
	_, err = fmt.Fprintf(c.stdout, "deleted %d dead letters of %s\n", total, pos[0])
	return err
}

// subsReplayArgs is a parsed "subscriptions replay" command line.
type subsReplayArgs struct {
	id   string
	opts client.ReplayOptions
}

func parseSubsReplay(c *cli, args []string) (subsReplayArgs, error) {
	var (
		a        subsReplayArgs
		fromTime string
	)
	fs := c.flagSet("subscriptions replay", `herald subscriptions replay ID (--from-seq N | --from-time T) [--to-seq N] [--topic T]

Deliver retained events to the subscription ID again, from seq N or from
time T up to --to-seq (default: the newest). For a pattern subscription
every matching topic is replayed, or only --topic. At most 100000 events
per call.`)
	fs.Int64Var(&a.opts.FromSeq, "from-seq", 0, "replay from seq `N`")
	fs.StringVar(&fromTime, "from-time", "", "replay from the first event at or after `T`, an RFC 3339 time")
	fs.Int64Var(&a.opts.ToSeq, "to-seq", 0, "replay up to seq `N` (default: the newest)")
	fs.StringVar(&a.opts.Topic, "topic", "", "replay only topic `T` (for a pattern subscription)")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return a, err
	}
	a.id = pos[0]
	set := setFlags(fs)
	switch {
	case set["from-seq"] == set["from-time"]:
		return a, fs.usageErrorf("give exactly one of --from-seq and --from-time")
	case a.opts.FromSeq < 0:
		return a, fs.usageErrorf("--from-seq %d: want 0 or more", a.opts.FromSeq)
	case set["to-seq"] && a.opts.ToSeq < 1:
		return a, fs.usageErrorf("--to-seq %d: want 1 or more", a.opts.ToSeq)
	}
	if set["from-time"] {
		t, err := time.Parse(time.RFC3339Nano, fromTime)
		if err != nil {
			return a, fs.usageErrorf("--from-time %q: want an RFC 3339 time such as 2025-01-02T15:04:05Z", fromTime)
		}
		a.opts.FromTime = t
	}
	return a, nil
}

func subsReplay(ctx context.Context, c *cli, args []string) error {
	a, err := parseSubsReplay(c, args)
	if err != nil {
		return err
	}
	r, err := c.client().Replay(ctx, a.id, a.opts)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(r)
	}
	var left []string
	if r.AlreadyPending > 0 {
		left = append(left, fmt.Sprintf("%d already waiting in the retry set", r.AlreadyPending))
	}
	if r.NotRetained > 0 {
		left = append(left, fmt.Sprintf("%d past retention", r.NotRetained))
	}
	line := fmt.Sprintf("scheduled %d events for delivery to %s", r.Scheduled, a.id)
	if len(left) > 0 {
		line += " (left out: " + strings.Join(left, ", ") + ")"
	}
	if r.Reason != "" {
		line += ": " + cell(r.Reason)
	}
	_, err = fmt.Fprintln(c.stdout, line)
	return err
}

// responseCellLen is how much of an endpoint's answer the attempts table
// shows; --output json has all of it (up to 1 KiB).
const responseCellLen = 60

func subsAttempts(ctx context.Context, c *cli, args []string) error {
	var (
		p       pageFlags
		o       client.AttemptListOptions
		outcome string
	)
	fs := c.flagSet("subscriptions attempts", `herald subscriptions attempts ID [--event-id E] [--outcome O] [--limit N] [--cursor C]

List the delivery attempts of the subscription ID, newest first, with the
start of each answer (--output json shows it all, up to 1 KiB).`)
	fs.StringVar(&o.EventID, "event-id", "", "only attempts to deliver event `E`")
	fs.StringVar(&outcome, "outcome", "", "only attempts with outcome `O`: success or failure")
	p.register(fs)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if err := p.check(fs); err != nil {
		return err
	}
	if outcome != "" && outcome != string(herald.OutcomeSuccess) && outcome != string(herald.OutcomeFailure) {
		return fs.usageErrorf("--outcome %q: want success or failure", outcome)
	}
	o.Outcome, o.Cursor, o.Limit = herald.Outcome(outcome), p.cursor, p.limit
	page, err := c.client().ListAttempts(ctx, pos[0], o)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(page)
	}
	if len(page.Attempts) == 0 {
		_, err := fmt.Fprintln(c.stderr, "no attempts")
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTOPIC\tSEQ\tEVENT ID\tATTEMPT\tOUTCOME\tSTATUS\tLATENCY\tERROR\tRESPONSE")
	for _, a := range page.Attempts {
		status := "-"
		if a.StatusCode != 0 {
			status = strconv.Itoa(a.StatusCode)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", formatTime(a.Time), a.Topic, a.Seq, cell(a.EventID),
			a.Attempt, a.Outcome, status, a.Latency.Round(time.Millisecond/10), orDash(cell(truncateCell(a.Error, 80))),
			orDash(cell(truncateCell(a.Response, responseCellLen))))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return c.moreHint("attempts", pos[0], page.NextCursor)
}

func subsTest(ctx context.Context, c *cli, args []string) error {
	id, err := oneID(c, "test", `herald subscriptions test ID

Send a synthetic event of type herald.test to the endpoint of the
subscription ID now, signed and sent like every event, and print how the
endpoint took it: the status, the time it took and the start of its
answer. It exits 1 when the endpoint did not answer 2xx.

The test event is in no topic's log: it is not retried and not in the
attempt log, and it does not change the subscription's state. Only an
endpoint that has answered the verification challenge gets one.`, args)
	if err != nil {
		return err
	}
	r, err := c.client().TestSubscription(ctx, id)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		if err := c.printJSON(r); err != nil {
			return err
		}
	} else if err := writeTestResult(c.stdout, id, r); err != nil {
		return err
	}
	if r.Outcome != herald.OutcomeSuccess {
		return fmt.Errorf("the endpoint of %s did not accept the test event: %s", id, orDash(cell(r.Error)))
	}
	return nil
}

// writeTestResult writes how an endpoint took a test event.
func writeTestResult(w io.Writer, id string, r client.TestResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "test event:\t%s to %s\n", r.EventID, id)
	fmt.Fprintf(tw, "outcome:\t%s\n", r.Outcome)
	status := "- (no response)"
	if r.StatusCode != 0 {
		status = strconv.Itoa(r.StatusCode)
	}
	fmt.Fprintf(tw, "status:\t%s\n", status)
	fmt.Fprintf(tw, "latency:\t%s\n", r.Latency.Round(time.Millisecond/10))
	if r.Error != "" {
		fmt.Fprintf(tw, "error:\t%s\n", cell(r.Error))
	}
	if r.Response != "" {
		fmt.Fprintf(tw, "response:\t%s\n", cell(truncateCell(r.Response, 200)))
	}
	return tw.Flush()
}

// writeSubscription writes a subscription's details as a two-column list.
func writeSubscription(w io.Writer, s client.Subscription) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", s.ID)
	fmt.Fprintf(tw, "topic:\t%s\n", s.Topic)
	if s.Channel != "" && s.Channel != herald.ChannelWebhook {
		fmt.Fprintf(tw, "channel:\t%s\n", s.Channel)
		fmt.Fprintf(tw, "config:\t%s\n", cell(string(s.Config)))
	} else {
		fmt.Fprintf(tw, "url:\t%s\n", cell(s.URL))
	}
	state := string(s.State)
	if s.StateReason != "" {
		state += " (" + cell(s.StateReason) + ")"
	}
	fmt.Fprintf(tw, "state:\t%s\n", state)
	if s.State == herald.StatePending {
		fmt.Fprintf(tw, "verify by:\t%s\n", formatTime(s.VerifyDeadline))
	}
	fmt.Fprintf(tw, "description:\t%s\n", orDash(cell(s.Description)))
	filter := "- (every event)"
	if len(s.Filter) > 0 {
		filter = cell(string(s.Filter))
	}
	fmt.Fprintf(tw, "filter:\t%s\n", filter)
	headers := make([]string, 0, len(s.Headers))
	for _, name := range sortedKeys(s.Headers) {
		headers = append(headers, name+": "+cell(s.Headers[name]))
	}
	fmt.Fprintf(tw, "headers:\t%s\n", orDash(strings.Join(headers, ", ")))
	fmt.Fprintf(tw, "retry:\t%d attempts, waits %s to %s\n", s.Retry.MaxAttempts, herald.FormatDuration(s.Retry.Initial), herald.FormatDuration(s.Retry.Max))
	fmt.Fprintf(tw, "timeout:\t%s\n", herald.FormatDuration(s.Timeout))
	fmt.Fprintf(tw, "max in flight:\t%d\n", s.MaxInFlight)
	rate := "unlimited"
	if s.RateLimit > 0 {
		rate = strconv.FormatFloat(s.RateLimit, 'f', -1, 64) + " per second"
	}
	fmt.Fprintf(tw, "rate limit:\t%s\n", rate)
	ordered := "no"
	if s.Ordered {
		ordered = "yes, per event key"
	}
	fmt.Fprintf(tw, "ordered:\t%s\n", ordered)
	expires := "never"
	if s.ExpiresAfterIdle > 0 {
		expires = "after " + herald.FormatDuration(s.ExpiresAfterIdle) + " idle"
	}
	fmt.Fprintf(tw, "expires:\t%s\n", expires)
	if s.Stats != nil {
		fmt.Fprintf(tw, "lag:\t%d events\n", s.Stats.Lag)
		fmt.Fprintf(tw, "retries:\t%d\n", s.Stats.Retries)
		fmt.Fprintf(tw, "dead letters:\t%d\n", s.Stats.DeadLetters)
		fmt.Fprintf(tw, "delivered:\t%d (failed attempts: %d)\n", s.Stats.Delivered, s.Stats.Failed)
		if s.Stats.Delivered > 0 {
			fmt.Fprintf(tw, "latency:\tp50 %.1f ms, p90 %.1f ms, p99 %.1f ms\n", s.Stats.LatencyMS.P50, s.Stats.LatencyMS.P90, s.Stats.LatencyMS.P99)
		}
	}
	fmt.Fprintf(tw, "created:\t%s\n", formatTime(s.CreatedAt))
	fmt.Fprintf(tw, "updated:\t%s\n", formatTime(s.UpdatedAt))
	fmt.Fprintf(tw, "last success:\t%s\n", formatTime(s.LastSuccessAt))
	if !s.FailingSince.IsZero() {
		fmt.Fprintf(tw, "failing since:\t%s\n", formatTime(s.FailingSince))
	}
	fmt.Fprintf(tw, "last activity:\t%s\n", formatTime(s.LastActivityAt))
	if s.Secret != "" {
		fmt.Fprintf(tw, "secret:\t%s\n", s.Secret)
	}
	return tw.Flush()
}
