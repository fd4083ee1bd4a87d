// Package client is the Go SDK for Herald's HTTP API v1: manage topics and
// API keys, publish events one at a time or in batches, and read events back.
//
// A Client is safe for concurrent use. Every method takes a context first and
// does one HTTP request; nothing is retried, so a caller that retries a
// publish should set PublishOptions.IdempotencyKey to make the retry safe.
//
// Errors:
//   - a problem response of the server (RFC 9457) is a *Problem; it unwraps
//     to a *herald.Error with the problem's code, so herald.IsCode and
//     herald.ErrorCode work on it;
//   - a failure to reach the server at all (refused, DNS, TLS, timeout) is a
//     *ConnError naming the server URL;
//   - input the client can tell is wrong before sending it is a
//     *herald.Error with herald.CodeInvalid and the Field at fault;
//   - a cancelled or expired ctx yields an error that errors.Is matches
//     against ctx.Err().
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// DefaultTimeout bounds one whole request (connect, send, wait, read) of the
// HTTP client that New builds when WithHTTPClient is not given.
const DefaultTimeout = 60 * time.Second

// Client calls one Herald server. Build it with New; the zero value is not
// usable. It holds no goroutines of its own; idle connections of its HTTP
// client are closed by CloseIdleConnections or by the transport's idle
// timeout.
type Client struct {
	base    string // scheme://host[:port][/prefix], no trailing slash
	baseErr error  // a malformed base URL, reported by every call
	key     string
	ua      string
	hc      *http.Client
}

// Option configures a Client in New.
type Option func(*Client)

// WithKey sets the API key sent as "Authorization: Bearer <key>" on every
// request. Without it requests are unauthenticated, which a server accepts
// only for public endpoints or when it runs with --insecure-no-auth.
func WithKey(key string) Option { return func(c *Client) { c.key = key } }

// WithHTTPClient makes the Client send its requests with hc, which then owns
// timeouts, proxies and TLS settings. A nil hc keeps the default client.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// WithUserAgent sets the User-Agent header; the default is
// "herald-go/<version>".
func WithUserAgent(ua string) Option { return func(c *Client) { c.ua = ua } }

// New returns a Client for the server at baseURL, for example
// "http://127.0.0.1:8480" or "https://herald.example.com/prefix". A baseURL
// without a scheme gets "http://". A malformed baseURL is not reported here
// but by every method, as a *herald.Error with CodeInvalid.
//
// Unless WithHTTPClient is given, the Client uses its own *http.Client
// (never http.DefaultClient) with connect, TLS-handshake and response-header
// timeouts and an overall limit of DefaultTimeout per request.
func New(baseURL string, opts ...Option) *Client {
	c := &Client{ua: "herald-go/" + herald.Version}
	c.base, c.baseErr = normalizeBase(baseURL)
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	}
	return c
}

// BaseURL returns the server URL the Client calls, as normalised by New.
func (c *Client) BaseURL() string { return c.base }

// CloseIdleConnections closes the idle keep-alive connections of the
// Client's HTTP client. Requests may still be made afterwards.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

func defaultHTTPClient() *http.Client {
	return &http.Client{
		Timeout: DefaultTimeout,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			ExpectContinueTimeout: time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   16,
			ForceAttemptHTTP2:     true,
		},
	}
}

func normalizeBase(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", herald.FieldErrorf("server", "the server URL is empty")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return s, &herald.Error{Code: herald.CodeInvalid, Field: "server", Message: fmt.Sprintf("the server URL %q is malformed", raw), Err: err}
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return s, herald.FieldErrorf("server", "the server URL %q must be http:// or https:// with a host and no query", raw)
	}
	return strings.TrimRight(s, "/"), nil
}

// ConnError reports that the server could not be reached or did not answer:
// connection refused, DNS failure, TLS failure, reset or timeout. The
// request may or may not have been processed when the failure came after it
// was sent; retry publishes only with an idempotency key.
type ConnError struct {
	URL string // the server URL, as given to New (normalised)
	Err error  // the transport's error
}

func (e *ConnError) Error() string {
	return fmt.Sprintf("cannot reach Herald at %s: %v", e.URL, e.Err)
}

func (e *ConnError) Unwrap() error { return e.Err }

// maxProblemBytes caps how much of an error response is read.
const maxProblemBytes = 64 << 10

// request is one API call.
type request struct {
	method string
	path   string // escaped, starting with /v1/
	query  url.Values
	header http.Header
	body   io.Reader
	out    any // decoded from a 2xx JSON body when non-nil
}

// do sends r and returns the response status. A non-2xx answer is a
// *Problem.
func (c *Client) do(ctx context.Context, r request) (int, error) {
	if c.baseErr != nil {
		return 0, c.baseErr
	}
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, r.body)
	if err != nil {
		return 0, fmt.Errorf("build request %s %s: %w", r.method, r.path, err)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	if c.ua != "" {
		req.Header.Set("User-Agent", c.ua)
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("%s %s: %w", r.method, r.path, context.Cause(ctx))
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in ConnError already
		}
		return 0, &ConnError{URL: c.base, Err: err}
	}
	defer func() {
		// Drain a little so the connection can be reused, then close.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProblemBytes))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, decodeProblem(resp, c.base)
	}
	if r.out == nil {
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(r.out); err != nil {
		if ctx.Err() != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", r.method, r.path, context.Cause(ctx))
		}
		return resp.StatusCode, fmt.Errorf("%s %s: the response is not Herald's JSON (is %s a Herald server?): %w", r.method, r.path, c.base, err)
	}
	return resp.StatusCode, nil
}

// jsonBody encodes v for a request body.
func jsonBody(v any) (io.Reader, http.Header, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, nil, fmt.Errorf("encode request: %w", err)
	}
	return bytes.NewReader(b), http.Header{"Content-Type": {"application/json"}}, nil
}

// segment escapes one path segment, rejecting an empty one, which would
// address a different endpoint.
func segment(field, v string) (string, error) {
	if v == "" {
		return "", herald.FieldErrorf(field, "%s is empty", strings.ReplaceAll(field, "_", " "))
	}
	return url.PathEscape(v), nil
}
