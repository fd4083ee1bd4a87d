package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/webhook"
)

const listenUsage = `herald listen TOPIC [options]

A webhook receiver for development. It listens on a local port, subscribes
that port to TOPIC (a name, or a pattern such as orders.> ) with a signing
secret of its own, answers the verification challenge, checks the signature
of every request and prints each one (its headers, its body and the
verdict) until interrupted (Ctrl-C). Then it deletes the subscription,
unless --keep; one left behind by a killed listener is removed by Herald
after an hour without a matching event.

Herald refuses to deliver to loopback and private addresses unless it runs
with allow-private-destinations, so for local development start the
server with:

  herald serve -allow-private-destinations

or give --url a public address that forwards to the listener (a tunnel).
"herald subscriptions test ID" sends the listener a test event.`

// Limits and defaults of herald listen.
const (
	// maxListenBody bounds a request body the listener reads: the largest
	// event payload a topic may allow, and some.
	maxListenBody = 5 << 20
	// listenIdleExpiry makes the server remove a listener's subscription
	// that was left behind (the process was killed before it could delete
	// it) once no event matched it for this long.
	listenIdleExpiry = time.Hour
	// listenStopTimeout bounds deleting the subscription and closing the
	// listener when stopping.
	listenStopTimeout = 10 * time.Second
)

// listenArgs is a parsed "listen" command line.
type listenArgs struct {
	topic       string
	addr        string // where to listen
	url         string // what Herald calls; "" derives it from the listener
	filter      json.RawMessage
	start       herald.StartPosition
	status      int  // the answer to a verified event
	keep        bool // keep the subscription when stopping
	waitTimeout time.Duration
}

func parseListen(c *cli, args []string) (listenArgs, error) {
	a := listenArgs{addr: "127.0.0.1:0", status: http.StatusNoContent, waitTimeout: 30 * time.Second}
	var filterText, start string
	fs := c.flagSet("listen", listenUsage)
	fs.StringVar(&a.addr, "listen", a.addr, "listen on `ADDR`, host:port (port 0: any free one)")
	fs.StringVar(&a.url, "url", "", "the `URL` Herald sends to, when it cannot reach the listen address itself (a tunnel); default http://ADDR/")
	fs.StringVar(&filterText, "filter", "", "only events that pass the filter `JSON`, e.g. '{\"types\":[\"order.*\"]}'")
	fs.StringVar(&start, "start", "", "deliver from `POS`: now (default), earliest, a seq (single topics only) or an RFC 3339 time")
	fs.IntVar(&a.status, "status", a.status, "answer every verified event with HTTP status `N`, such as 503 to watch the retries")
	fs.Var(boolFlag{&a.keep}, "keep", "keep the subscription when stopping (it is deleted by default)")
	fs.Var(durationFlag{&a.waitTimeout}, "wait-timeout", "give up when the subscription is not active after `D`")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return a, err
	}
	a.topic = pos[0]
	if filterText != "" {
		if !json.Valid([]byte(filterText)) {
			return a, fs.usageErrorf("--filter: not valid JSON; want an object such as {\"types\":[\"order.*\"]}")
		}
		a.filter = json.RawMessage(filterText)
	}
	if a.start, err = parseStartFlag(start); err != nil {
		return a, fs.usageErrorf("%v", err)
	}
	if a.status < 200 || a.status > 599 {
		return a, fs.usageErrorf("--status %d: want an HTTP status from 200 to 599", a.status)
	}
	if a.waitTimeout <= 0 {
		return a, fs.usageErrorf("--wait-timeout: want a duration above 0")
	}
	return a, nil
}

// listenVerb runs "herald listen". It returns nil when interrupted after
// the subscription was active: that is how a listener ends.
func listenVerb(ctx context.Context, c *cli, args []string) error {
	a, err := parseListen(c, args)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	url := a.url
	if url == "" {
		url = "http://" + ln.Addr().String() + "/"
	}
	r := &receiver{secret: webhook.NewSecret(), status: a.status, out: c.stdout, notes: c.stdout, asJSON: c.g.output == outputJSON}
	if r.asJSON {
		r.notes = c.stderr // stdout is one JSON object per request
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) }) // ends with ErrServerClosed on Shutdown
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), listenStopTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
		wg.Wait()
	}()

	cl := c.client()
	spec := client.SubscriptionSpec{
		Topic: a.topic, URL: url, Secret: r.secret, Filter: a.filter, Start: a.start,
		Description: "herald listen on " + hostname(),
	}
	if !a.keep {
		spec.ExpiresAfterIdle = listenIdleExpiry
	}
	sub, err := cl.CreateSubscription(ctx, spec)
	if err != nil {
		if p, ok := errors.AsType[*client.Problem](err); ok && p.Status == http.StatusBadRequest && p.Field == "url" {
			return fmt.Errorf("%w\nFor local development run the server with \"herald serve -allow-private-destinations\"\n"+
				"(or HERALD_ALLOW_PRIVATE_DESTINATIONS=true), or give --url a public URL that forwards to %s (a tunnel)", err, ln.Addr())
		}
		return err
	}
	r.say("Listening on %s for %s as subscription %s\nSigning secret: %s\nWaiting for the verification challenge...\n", url, a.topic, sub.ID, r.secret)
	sub, err = waitActive(ctx, cl, sub, a.waitTimeout)
	if err == nil {
		r.say("Subscription %s is active. Every request is printed with the verdict on its signature; Ctrl-C stops.\n", sub.ID)
		<-ctx.Done()
	}
	if a.keep {
		r.say("Kept subscription %s (secret %s); delete it with: herald subscriptions delete %s\n", sub.ID, r.secret, sub.ID)
		return ignoreCanceled(ctx, err)
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), listenStopTimeout)
	defer cancel()
	if derr := cl.DeleteSubscription(dctx, sub.ID); derr != nil {
		return errors.Join(ignoreCanceled(ctx, err), fmt.Errorf("delete subscription %s: %w; delete it with: herald subscriptions delete %s", sub.ID, derr, sub.ID))
	}
	r.say("Deleted subscription %s\n", sub.ID)
	return ignoreCanceled(ctx, err)
}

// ignoreCanceled drops the error of an interrupted wait: stopping is how a
// listener ends.
func ignoreCanceled(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "an unknown host"
	}
	return h
}

// receiver answers Herald's requests for herald listen: it checks every
// signature with the shared Standard Webhooks verifier, echoes
// verification challenges, answers events with the chosen status, and
// prints each request. It is safe for concurrent use.
type receiver struct {
	secret string
	status int
	asJSON bool

	mu    sync.Mutex // serialises writes to out and notes
	out   io.Writer  // the requests
	notes io.Writer  // what happens to the subscription, for people
}

// say writes a note for people.
func (r *receiver) say(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.notes, format, args...)
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	at := time.Now()
	body, readErr := io.ReadAll(http.MaxBytesReader(w, req.Body, maxListenBody))
	verr := readErr
	if verr == nil {
		verr = client.VerifyWebhook(r.secret, req.Header, body)
	}
	challenge := req.Header.Get("Herald-Event-Type") == webhook.VerificationType
	status := r.status
	var answer []byte
	switch {
	case readErr != nil:
		status = http.StatusRequestEntityTooLarge
	case verr != nil:
		status = http.StatusUnauthorized
	case challenge:
		var c struct {
			Challenge string `json:"challenge"`
		}
		if json.Unmarshal(body, &c) != nil || c.Challenge == "" {
			status = http.StatusBadRequest
			break
		}
		status = http.StatusOK
		answer, _ = json.Marshal(c)
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = w.Write(answer)
	r.print(at, req, body, verr, status)
}

// print writes one request: a block of text, or a line of JSON.
func (r *receiver) print(at time.Time, req *http.Request, body []byte, verr error, status int) {
	var b bytes.Buffer
	if r.asJSON {
		line := struct {
			Time       string            `json:"time"`
			Method     string            `json:"method"`
			Path       string            `json:"path"`
			Headers    map[string]string `json:"headers"`
			Body       *string           `json:"body,omitempty"`
			BodyBase64 []byte            `json:"body_base64,omitempty"`
			Verified   bool              `json:"verified"`
			Error      string            `json:"error,omitempty"`
			Status     int               `json:"status"`
		}{Time: at.UTC().Format(time.RFC3339Nano), Method: req.Method, Path: req.URL.RequestURI(),
			Headers: map[string]string{}, Verified: verr == nil, Status: status}
		for name, values := range req.Header {
			line.Headers[name] = strings.Join(values, ", ")
		}
		if utf8Text := string(body); isText(body) {
			line.Body = &utf8Text
		} else {
			line.BodyBase64 = body
		}
		if verr != nil {
			line.Error = verr.Error()
		}
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(line)
	} else {
		verdict := "signature verified"
		if verr != nil {
			verdict = "REJECTED: " + cell(verr.Error())
		}
		what := "event"
		if req.Header.Get("Herald-Event-Type") == webhook.VerificationType {
			what = "verification challenge"
		}
		fmt.Fprintf(&b, "\n--- %s %s %s %s: %s; answered %d\n", at.UTC().Format(listenTimeFormat), req.Method, cell(req.URL.RequestURI()), what, verdict, status)
		for _, name := range slices.Sorted(maps.Keys(req.Header)) {
			for _, v := range req.Header[name] {
				fmt.Fprintf(&b, "%s: %s\n", name, cell(v))
			}
		}
		b.WriteString("\n")
		b.WriteString(listenBody(req.Header.Get("Content-Type"), body))
		b.WriteString("\n")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = r.out.Write(b.Bytes())
}

// listenTimeFormat is when a request arrived: RFC 3339, milliseconds, UTC.
const listenTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// listenBody renders a body for a terminal: JSON as sent, other text with
// control characters quoted, binary summarised.
func listenBody(contentType string, body []byte) string {
	switch {
	case len(body) == 0:
		return "(empty body)"
	case client.IsJSONContentType(contentType) && json.Valid(body) && isText(body):
		return strings.TrimRight(string(body), "\r\n")
	case isText(body):
		var lines []string
		for line := range strings.Lines(string(body)) {
			lines = append(lines, cell(strings.TrimRight(line, "\r\n")))
		}
		return strings.Join(lines, "\n")
	}
	return "(" + strconv.Itoa(len(body)) + " bytes of binary data; --output json shows them in base64)"
}
