package sms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	texttemplate "text/template"
	"time"
)

// Provider sends one text message through an SMS provider's HTTP API.
type Provider interface {
	// Send sends body to the E.164 number to.
	Send(ctx context.Context, to, body string) Result
	// Destination names the provider's API host, for the send slots.
	Destination() string
}

// Result is what a provider answered.
type Result struct {
	StatusCode int
	ID         string // the provider's message id, when it gives one
	Excerpt    []byte // the start of the answer
	// Permanent: the provider refused this message for good (an invalid
	// or unreachable number): retrying cannot help.
	Permanent  bool
	RetryAfter time.Duration
	Err        error // no answer: a connection failure, a timeout
}

// maxExcerpt bounds the answer kept.
const maxExcerpt = 512

func newHTTPClient(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// do sends req and classifies the answer: 2xx sent; 408, 429 and 5xx to
// retry; other 4xx permanent.
func do(client *http.Client, req *http.Request) (Result, []byte) {
	resp, err := client.Do(req)
	if err != nil {
		return Result{Err: err}, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	res := Result{StatusCode: resp.StatusCode, Excerpt: body[:min(len(body), maxExcerpt)]}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			res.RetryAfter = time.Duration(min(n, 3600)) * time.Second
		}
	}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
	case c == http.StatusUnauthorized || c == http.StatusForbidden:
		// Herald's credentials, not the message: retry once they are fixed.
	default:
		res.Permanent = true
	}
	return res, body
}

// TwilioConfig is a Twilio-compatible Messages API.
type TwilioConfig struct {
	// BaseURL is the API's base; default https://api.twilio.com.
	BaseURL    string
	AccountSID string
	AuthToken  string
	// From is the sending number, or MessagingServiceSID the messaging
	// service; one is required.
	From                string
	MessagingServiceSID string
	Timeout             time.Duration
}

// Twilio sends through the Twilio Messages API: POST
// {base}/2010-04-01/Accounts/{sid}/Messages.json, Basic auth with the
// account SID and auth token, a form body of To, From (or
// MessagingServiceSid) and Body.
type Twilio struct {
	cfg    TwilioConfig
	url    string
	client *http.Client
}

// NewTwilio checks the settings.
func NewTwilio(cfg TwilioConfig) (*Twilio, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = "https://api.twilio.com"
	}
	if cfg.AccountSID == "" || cfg.AuthToken == "" {
		return nil, errors.New("the account SID and auth token are required")
	}
	if cfg.From == "" && cfg.MessagingServiceSID == "" {
		return nil, errors.New("a sending number (from) or a messaging service SID is required")
	}
	if _, err := url.Parse(cfg.BaseURL); err != nil {
		return nil, fmt.Errorf("base URL: %w", err)
	}
	return &Twilio{cfg: cfg, client: newHTTPClient(cfg.Timeout),
		url: strings.TrimSuffix(cfg.BaseURL, "/") + "/2010-04-01/Accounts/" + url.PathEscape(cfg.AccountSID) + "/Messages.json"}, nil
}

// Destination is the API's host.
func (t *Twilio) Destination() string {
	u, _ := url.Parse(t.cfg.BaseURL)
	return "sms+" + u.Scheme + "://" + u.Host
}

// Send posts the message.
func (t *Twilio) Send(ctx context.Context, to, body string) Result {
	form := url.Values{"To": {to}, "Body": {body}}
	if t.cfg.MessagingServiceSID != "" {
		form.Set("MessagingServiceSid", t.cfg.MessagingServiceSID)
	} else {
		form.Set("From", t.cfg.From)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, strings.NewReader(form.Encode()))
	if err != nil {
		return Result{Err: err}
	}
	req.SetBasicAuth(t.cfg.AccountSID, t.cfg.AuthToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	res, raw := do(t.client, req)
	var answer struct {
		SID string `json:"sid"`
	}
	if res.Err == nil && json.Unmarshal(raw, &answer) == nil {
		res.ID = answer.SID
	}
	return res
}

// HTTPConfig is a generic provider: a request per message, its body from
// a template.
type HTTPConfig struct {
	URL    string
	Method string // default POST
	// Headers are sent with every request ("Authorization: Bearer ...").
	Headers map[string]string
	// Body is a text/template over {{.To}}, {{.Text}}, {{.From}} with the
	// function json (a JSON string); default
	// {"to":{{json .To}},"from":{{json .From}},"text":{{json .Text}}}.
	Body        string
	ContentType string // default application/json
	From        string
	Timeout     time.Duration
}

// DefaultHTTPBody is the generic provider's default body template.
const DefaultHTTPBody = `{"to":{{json .To}},"from":{{json .From}},"text":{{json .Text}}}`

// HTTP is a generic provider.
type HTTP struct {
	cfg    HTTPConfig
	body   *texttemplate.Template
	client *http.Client
}

// NewHTTP checks the settings.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("the provider URL %q must be http:// or https://", cfg.URL)
	}
	if cfg.Method == "" {
		cfg.Method = http.MethodPost
	}
	if cfg.ContentType == "" {
		cfg.ContentType = "application/json"
	}
	if cfg.Body == "" {
		cfg.Body = DefaultHTTPBody
	}
	tmpl, err := texttemplate.New("body").Funcs(map[string]any{"json": func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}, "urlquery": url.QueryEscape}).Option("missingkey=error").Parse(cfg.Body)
	if err != nil {
		return nil, fmt.Errorf("body template: %w", err)
	}
	return &HTTP{cfg: cfg, body: tmpl, client: newHTTPClient(cfg.Timeout)}, nil
}

// Destination is the provider's host.
func (h *HTTP) Destination() string {
	u, _ := url.Parse(h.cfg.URL)
	return "sms+" + u.Scheme + "://" + u.Host
}

// Send renders the body and sends it.
func (h *HTTP) Send(ctx context.Context, to, text string) Result {
	var b bytes.Buffer
	if err := h.body.Execute(&b, struct{ To, Text, From string }{to, text, h.cfg.From}); err != nil {
		return Result{Err: fmt.Errorf("body template: %w", err), Permanent: true}
	}
	req, err := http.NewRequestWithContext(ctx, h.cfg.Method, h.cfg.URL, &b)
	if err != nil {
		return Result{Err: err}
	}
	for k, v := range h.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", h.cfg.ContentType)
	res, raw := do(h.client, req)
	var answer struct {
		ID  string `json:"id"`
		SID string `json:"sid"`
	}
	if res.Err == nil && json.Unmarshal(raw, &answer) == nil {
		res.ID = answer.ID
		if res.ID == "" {
			res.ID = answer.SID
		}
	}
	return res
}
