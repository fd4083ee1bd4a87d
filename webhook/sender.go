package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Sender defaults; a zero SenderConfig field takes the default.
const (
	DefaultConnectTimeout      = 5 * time.Second
	DefaultTLSHandshakeTimeout = 5 * time.Second
	DefaultRequestTimeout      = 15 * time.Second // the Standard Webhooks advice is 15 to 30 s
	DefaultMaxIdleConnsPerHost = 256
	DefaultIdleConnTimeout     = 90 * time.Second

	// MaxExcerpt is how much of a response body Result.Excerpt keeps.
	MaxExcerpt = 1 << 10
	// MaxDrain is how much more of a response body is read and discarded
	// so the connection can be reused; a longer body closes the connection.
	MaxDrain = 64 << 10
	// MaxRetryAfter caps a receiver's Retry-After.
	MaxRetryAfter = 24 * time.Hour
	// maxResponseHeaderBytes bounds what a hostile endpoint can make us buffer.
	maxResponseHeaderBytes = 64 << 10
)

// SenderConfig configures a Sender. A zero or negative field takes its
// default, so the zero value is safe:
// private destinations refused, no proxy, the default timeouts and bounds.
type SenderConfig struct {
	// AllowPrivate lets requests reach loopback, private, link-local and
	// other refused addresses (see CheckAddr). Off by default; the server
	// exposes it as HERALD_ALLOW_PRIVATE_DESTINATIONS.
	AllowPrivate bool
	// ConnectTimeout bounds the TCP connect to each address tried.
	ConnectTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake.
	TLSHandshakeTimeout time.Duration
	// RequestTimeout is the whole-exchange timeout of a Request without one.
	RequestTimeout time.Duration
	// MaxIdleConnsPerHost is how many idle keep-alive connections to one
	// host are kept for reuse (HTTP/1.1; HTTP/2 multiplexes on one); four
	// times as many are kept over all hosts. Set it to the most requests
	// the callers have in flight at once. Default
	// DefaultMaxIdleConnsPerHost.
	MaxIdleConnsPerHost int
	// UserAgent is sent when the request sets none; "Herald/<version>" by
	// default.
	UserAgent string
	// Proxy picks a proxy per request; nil means no proxy, and the
	// environment (HTTPS_PROXY...) is ignored unless this is
	// http.ProxyFromEnvironment. With a proxy, the dial guard checks the
	// proxy's address, not the destination's: the proxy must do its own
	// filtering (Stripe's smokescreen, for example).
	Proxy func(*http.Request) (*url.URL, error)
	// TLSClientConfig overrides the TLS settings (for a private CA); nil
	// uses the system roots.
	TLSClientConfig *tls.Config
}

// Sender sends webhook requests through one shared HTTP transport: connections
// are reused across subscriptions, every dial passes the SSRF guard,
// redirects are not followed, and response bodies are capped and drained.
// It does not bound the requests in flight: its caller does, fairly (the
// engine's send slots), so a request never waits here and its timeout is
// all its own. It is safe for concurrent use. NewSender starts nothing;
// Close releases idle connections.
type Sender struct {
	transport *http.Transport
	userAgent string
	timeout   time.Duration
}

// NewSender returns a Sender for the config, with defaults for zero fields.
func NewSender(cfg SenderConfig) *Sender {
	cfg.ConnectTimeout = positiveOr(cfg.ConnectTimeout, DefaultConnectTimeout)
	cfg.TLSHandshakeTimeout = positiveOr(cfg.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout)
	cfg.RequestTimeout = positiveOr(cfg.RequestTimeout, DefaultRequestTimeout)
	// Keep as many idle connections to one host as requests may be in
	// flight: fan-out often targets one provider's host from many
	// subscriptions, and a smaller pool closes and redials connections
	// under load (measured: 9% of CPU at 100 endpoints on one host).
	cfg.MaxIdleConnsPerHost = positiveOr(cfg.MaxIdleConnsPerHost, DefaultMaxIdleConnsPerHost)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "Herald/" + herald.Version
	}
	dialer := &net.Dialer{
		Timeout:        cfg.ConnectTimeout,
		KeepAlive:      30 * time.Second,
		ControlContext: channel.DialControl(cfg.AllowPrivate),
	}
	t := &http.Transport{
		Proxy:                  cfg.Proxy,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        cfg.TLSClientConfig,
		TLSHandshakeTimeout:    cfg.TLSHandshakeTimeout,
		ForceAttemptHTTP2:      true, // a custom DialContext turns HTTP/2 off otherwise
		MaxIdleConns:           4 * cfg.MaxIdleConnsPerHost,
		MaxIdleConnsPerHost:    cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:        DefaultIdleConnTimeout,
		DisableCompression:     true, // excerpts are for people; no need to inflate
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
	return &Sender{
		transport: t,
		userAgent: cfg.UserAgent,
		timeout:   cfg.RequestTimeout,
	}
}

// positiveOr returns v, or def when v is zero or negative.
func positiveOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Request is one webhook request: a POST of Body to URL with Headers.
type Request struct {
	URL string
	// Headers are sent as given (Content-Type, signature headers...).
	// Send takes them over: it adds User-Agent when missing, and the
	// caller must not use or change them afterwards.
	Headers http.Header
	Body    []byte
	// Timeout bounds the whole exchange, from connecting to reading the
	// excerpt; zero uses the Sender's RequestTimeout.
	Timeout time.Duration
}

// Result is what came of one request.
type Result struct {
	// StatusCode is the response status, or 0 when no response arrived.
	StatusCode int
	// Latency runs from sending the request (connecting included) to
	// receiving the response headers, or to the failure.
	Latency time.Duration
	// Err is why no response arrived: a timeout, a refused destination
	// (errors.Is(err, channel.ErrDestinationRefused)), a connection failure. It
	// never contains the URL, which may hold credentials.
	Err error
	// Excerpt holds the first bytes of the response body, at most MaxExcerpt.
	Excerpt []byte
	// RetryAfter is the receiver's Retry-After on a 429 or 503 response,
	// in seconds or as an HTTP date, capped at MaxRetryAfter; 0 if absent.
	RetryAfter time.Duration
}

// Send POSTs the request and returns its result; it never panics on a bad
// URL or a misbehaving endpoint, and reports every failure in Result.Err.
// The request's timeout starts at once. The response body is read up to
// MaxExcerpt, drained up to MaxDrain more bytes and closed, so the
// connection returns to the pool.
func (s *Sender) Send(ctx context.Context, r Request) Result {
	timeout := positiveOr(r.Timeout, s.timeout)
	// One start for the deadline and the latency, so a request that ran
	// out of time reports a latency of at least its timeout.
	start := time.Now()
	ctx, cancel := context.WithDeadline(ctx, start.Add(timeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		return Result{Err: fmt.Errorf("build request: %s", parseReason(err))}
	}
	if r.Headers != nil {
		req.Header = r.Headers // Send owns it now: no copy per request
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", s.userAgent)
	}

	// The transport directly, not an http.Client: Herald follows no
	// redirects (a 3xx is the receiver's answer), and the client's
	// redirect bookkeeping copied every request's headers.
	resp, err := s.transport.RoundTrip(req)
	res := Result{Latency: time.Since(start)}
	if err != nil {
		res.Err = sendError(ctx, err, timeout)
		return res
	}
	res.StatusCode = resp.StatusCode
	// A body that fails mid-read does not change the answer: the status is
	// what the receiver said.
	res.Excerpt = readExcerpt(resp.Body)
	_, _ = io.CopyN(io.Discard, resp.Body, MaxDrain)
	_ = resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		res.RetryAfter, _ = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return res
}

// excerptBufs holds MaxExcerpt-byte buffers for reading response bodies.
var excerptBufs = sync.Pool{New: func() any { return new([MaxExcerpt]byte) }}

// readExcerpt reads up to MaxExcerpt bytes of body and returns a copy of
// just those: most receivers answer with an empty or tiny body, which
// then costs no allocation, or one of its own size.
func readExcerpt(body io.Reader) []byte {
	buf := excerptBufs.Get().(*[MaxExcerpt]byte)
	defer excerptBufs.Put(buf)
	n, _ := io.ReadFull(body, buf[:]) // a body that fails mid-read keeps what came
	if n == 0 {
		return nil
	}
	return bytes.Clone(buf[:n])
}

// sendError strips the URL from a client error and says plainly when the
// request ran out of time.
func sendError(ctx context.Context, err error, timeout time.Duration) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no response within %s: %w", timeout, err)
	}
	return fmt.Errorf("post: %w", err)
}

// ParseRetryAfter reads a Retry-After value: a non-negative number of
// seconds, or an HTTP date taken relative to now (a past date is 0). The
// result is capped at MaxRetryAfter; ok is false when v is empty or
// malformed.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		if secs > uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), MaxRetryAfter), true
}

// Close closes the idle connections. Call it after the last Send; a Send
// after Close still works but opens new connections.
func (s *Sender) Close() {
	s.transport.CloseIdleConnections()
}

// Outcome is how a dispatcher should treat a Result.
type Outcome int

// The outcomes, after the Standard Webhooks advice on status codes.
const (
	// OutcomeFailure: retry on the backoff schedule. Any status other than
	// those below (3xx included: redirects are not followed), timeouts,
	// connection errors and refused destinations.
	OutcomeFailure Outcome = iota
	// OutcomeSuccess: any 2xx status.
	OutcomeSuccess
	// OutcomeGone: 410; the receiver wants no more, disable the subscription.
	OutcomeGone
	// OutcomeRetryAfter: 429 or 503 with a positive Retry-After; retry no
	// sooner than Result.RetryAfter.
	OutcomeRetryAfter
)

// String returns "failure", "success", "gone" or "retry_after", stable
// values fit for metric labels.
func (o Outcome) String() string {
	switch o {
	case OutcomeSuccess:
		return "success"
	case OutcomeGone:
		return "gone"
	case OutcomeRetryAfter:
		return "retry_after"
	default:
		return "failure"
	}
}

// Classify returns the outcome of a result.
func Classify(r Result) Outcome {
	switch {
	case r.Err != nil || r.StatusCode == 0:
		return OutcomeFailure
	case r.StatusCode >= 200 && r.StatusCode <= 299:
		return OutcomeSuccess
	case r.StatusCode == http.StatusGone:
		return OutcomeGone
	case (r.StatusCode == http.StatusTooManyRequests || r.StatusCode == http.StatusServiceUnavailable) && r.RetryAfter > 0:
		return OutcomeRetryAfter
	default:
		return OutcomeFailure
	}
}
