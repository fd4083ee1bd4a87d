package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// The main tests of the client run end to end against the real server. The
// tests here cover only how the client reads answers a real Herald rarely
// or never gives: problem documents with odd fields, a proxy's error page,
// a server that is not Herald, and no server at all.

// answer returns a client whose every request gets the status, content type
// and body.
func answer(t *testing.T, status int, contentType, body string, header ...string) *client.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return client.New(srv.URL, client.WithKey("hrld_test"))
}

func TestProblemDecoded(t *testing.T) {
	c := answer(t, http.StatusBadRequest, "application/problem+json",
		`{"type":"https://herald.dev/problems/invalid","title":"Invalid input","status":400,
		  "detail":"retention must be between 1m and 8760h0m0s, got 1s","field":"retention","request_id":"req-1"}`)
	_, _, err := c.PutTopic(t.Context(), "orders", client.TopicSettings{})

	p, ok := errors.AsType[*client.Problem](err)
	if !ok {
		t.Fatalf("err = %T %v, want *client.Problem", err, err)
	}
	want := client.Problem{
		Type: "https://herald.dev/problems/invalid", Title: "Invalid input", Status: 400,
		Detail: "retention must be between 1m and 8760h0m0s, got 1s", Field: "retention", RequestID: "req-1",
	}
	if *p != want {
		t.Errorf("problem = %+v\nwant %+v", *p, want)
	}
	const msg = "retention must be between 1m and 8760h0m0s, got 1s (field: retention, status 400, type https://herald.dev/problems/invalid)"
	if err.Error() != msg {
		t.Errorf("message = %q\nwant      %q", err.Error(), msg)
	}
	if !herald.IsCode(err, herald.CodeInvalid) {
		t.Errorf("herald.ErrorCode(err) = %q, want invalid", herald.ErrorCode(err))
	}
	if he, _ := errors.AsType[*herald.Error](err); he == nil || he.Field != "retention" {
		t.Errorf("unwrapped herald.Error = %+v, want field retention", he)
	}
}

func TestProblemEdgeCases(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		header      []string
		wantStatus  int
		wantCode    herald.Code
		wantReqID   string
		wantInMsg   []string
		wantNotIn   []string
	}{
		{
			name: "the HTTP status wins over the body's", status: 404, contentType: "application/problem+json",
			body:       `{"type":"https://herald.dev/problems/not-found","title":"Not found","status":200,"detail":"topic \"x\" not found"}`,
			wantStatus: 404, wantCode: herald.CodeNotFound,
			wantInMsg: []string{`topic "x" not found (status 404, type https://herald.dev/problems/not-found)`},
		},
		{
			name: "request id from the header when the body has none", status: 409, contentType: "application/problem+json; charset=utf-8",
			body: `{"type":"https://herald.dev/problems/conflict","title":"Conflict","status":409}`, header: []string{"X-Request-Id", "abc123"},
			wantStatus: 409, wantCode: herald.CodeConflict, wantReqID: "abc123",
			wantInMsg: []string{"Conflict (status 409, type https://herald.dev/problems/conflict)"},
		},
		{
			name: "a proxy's HTML page", status: 502, contentType: "text/html", body: "<html><body>Bad Gateway</body></html>",
			header:     []string{"X-Request-Id", "proxy-7"},
			wantStatus: 502, wantCode: herald.CodeInternal, wantReqID: "proxy-7",
			wantInMsg: []string{"unexpected response 502 Bad Gateway", `"text/html"`, "is it a Herald server?", "(status 502)"},
			wantNotIn: []string{"<html>"},
		},
		{
			name: "plain text explanation is quoted", status: 503, contentType: "text/plain; charset=utf-8", body: "upstream\n  connect error\n",
			wantStatus: 503, wantCode: herald.CodeUnavailable,
			wantInMsg: []string{"unexpected response 503 Service Unavailable", ": upstream connect error (status 503)"},
		},
		{
			name: "a problem type that is not JSON", status: 400, contentType: "application/problem+json", body: `{"type": 7`,
			wantStatus: 400, wantCode: herald.CodeInvalid,
			wantInMsg: []string{"unexpected response 400 Bad Request"},
		},
		{
			name: "a status field of the wrong type", status: 403, contentType: "application/problem+json", body: `{"type":"x","status":"403"}`,
			wantStatus: 403, wantCode: herald.CodeForbidden,
			wantInMsg: []string{"unexpected response 403 Forbidden"},
		},
		{
			name: "a foreign problem type maps by status", status: 429, contentType: "application/problem+json",
			body:       `{"type":"https://example.com/slow-down","title":"Slow down","detail":"try in 5s"}`,
			wantStatus: 429, wantCode: herald.CodeRateLimited,
			wantInMsg: []string{"try in 5s (status 429, type https://example.com/slow-down)"},
		},
		{
			name: "an empty body", status: 404,
			wantStatus: 404, wantCode: herald.CodeNotFound,
			wantInMsg: []string{"unexpected response 404 Not Found with an empty body"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := answer(t, tt.status, tt.contentType, tt.body, tt.header...)
			_, err := c.GetTopic(t.Context(), "x")
			p, ok := errors.AsType[*client.Problem](err)
			if !ok {
				t.Fatalf("err = %T %v, want *client.Problem", err, err)
			}
			if p.Status != tt.wantStatus || p.Code() != tt.wantCode || p.RequestID != tt.wantReqID {
				t.Errorf("status, code, request id = %d, %q, %q; want %d, %q, %q",
					p.Status, p.Code(), p.RequestID, tt.wantStatus, tt.wantCode, tt.wantReqID)
			}
			for _, s := range tt.wantInMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q lacks %q", err.Error(), s)
				}
			}
			for _, s := range tt.wantNotIn {
				if strings.Contains(err.Error(), s) {
					t.Errorf("message %q contains %q", err.Error(), s)
				}
			}
		})
	}
}

func TestNotHeraldJSON(t *testing.T) {
	c := answer(t, http.StatusOK, "text/html", "<!doctype html><title>Welcome to nginx</title>")
	_, err := c.GetTopic(t.Context(), "orders")
	if err == nil || !strings.Contains(err.Error(), "is not Herald's JSON") || !strings.Contains(err.Error(), "a Herald server?") {
		t.Fatalf("err = %v, want a hint that the server is not Herald", err)
	}
	if _, ok := errors.AsType[*client.Problem](err); ok {
		t.Errorf("a 200 answer became a Problem: %v", err)
	}
}

// closedAddr returns the URL of a port that nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestConnectionRefused(t *testing.T) {
	base := closedAddr(t)
	c := client.New(base + "/")
	_, err := c.ListTopics(t.Context(), "", 0)

	ce, ok := errors.AsType[*client.ConnError](err)
	if !ok {
		t.Fatalf("err = %T %v, want *client.ConnError", err, err)
	}
	if ce.URL != base {
		t.Errorf("URL = %q, want %q", ce.URL, base)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("err = %v, want it to wrap ECONNREFUSED", err)
	}
	if want := "cannot reach Herald at " + base + ": dial tcp"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("message = %q, want prefix %q", err.Error(), want)
	}
}

func TestCancelledContextIsNotAConnError(t *testing.T) {
	c := client.New(closedAddr(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := c.GetTopic(ctx, "orders")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, ok := errors.AsType[*client.ConnError](err); ok {
		t.Errorf("a cancelled call was reported as unreachable: %v", err)
	}
}

// Input the client can reject is rejected before any request: these calls
// point at a closed port, so a request would have been a *ConnError.
func TestInvalidInputSendsNothing(t *testing.T) {
	c := client.New(closedAddr(t))
	ctx := t.Context()
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"empty topic", func() error { _, err := c.GetTopic(ctx, ""); return err }, "topic"},
		{"empty event id", func() error { _, err := c.GetEvent(ctx, "orders", ""); return err }, "id"},
		{"empty key id", func() error { return c.DeleteKey(ctx, "") }, "id"},
		{"newline in type", func() error {
			_, err := c.Publish(ctx, "orders", nil, client.PublishOptions{Type: "a\r\nX-Evil: 1"})
			return err
		}, "type"},
		{"bad header name", func() error {
			_, err := c.Publish(ctx, "orders", nil, client.PublishOptions{Headers: map[string]string{"two words": "v"}})
			return err
		}, "headers"},
		{"control character in header value", func() error {
			_, err := c.Publish(ctx, "orders", nil, client.PublishOptions{Headers: map[string]string{"X-A": "v\x00"}})
			return err
		}, "headers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			he, ok := errors.AsType[*herald.Error](err)
			if !ok || he.Code != herald.CodeInvalid || he.Field != tt.field {
				t.Fatalf("err = %T %v, want *herald.Error invalid with field %q", err, err, tt.field)
			}
		})
	}
}

func TestMalformedBaseURL(t *testing.T) {
	for _, base := range []string{"", "ftp://example.com", "http://", "http://host/?q=1", "http://[::1"} {
		_, err := client.New(base).ListKeys(t.Context())
		if he, ok := errors.AsType[*herald.Error](err); !ok || he.Field != "server" {
			t.Errorf("New(%q): err = %v, want an invalid server URL", base, err)
		}
	}
	if got := client.New("127.0.0.1:8480/").BaseURL(); got != "http://127.0.0.1:8480" {
		t.Errorf("BaseURL without scheme = %q, want http://127.0.0.1:8480", got)
	}
}
