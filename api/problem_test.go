package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
)

func TestProblemFor(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		status int
		typ    string
		detail string
		field  string
	}{
		{"invalid with field", herald.FieldErrorf("retention", "bad retention"), 400, "invalid", "bad retention", "retention"},
		{"unauthorized", herald.Errorf(herald.CodeUnauthorized, "no key"), 401, "unauthorized", "no key", ""},
		{"forbidden", herald.Errorf(herald.CodeForbidden, "no scope"), 403, "forbidden", "no scope", ""},
		{"not found", herald.Errorf(herald.CodeNotFound, "no topic"), 404, "not-found", "no topic", ""},
		{"conflict", herald.Errorf(herald.CodeConflict, "exists"), 409, "conflict", "exists", ""},
		{"gone", herald.Errorf(herald.CodeGone, "pruned"), 410, "gone", "pruned", ""},
		{"too large", herald.Errorf(herald.CodeTooLarge, "big"), 413, "too-large", "big", ""},
		{"unsupported", herald.Errorf(herald.CodeUnsupported, "media"), 415, "unsupported", "media", ""},
		{"rate limited", herald.Errorf(herald.CodeRateLimited, "slow down"), 429, "rate-limited", "slow down", ""},
		{"unavailable", herald.Errorf(herald.CodeUnavailable, "stopping"), 503, "unavailable", "stopping", ""},
		{"timeout", herald.Errorf(herald.CodeTimeout, "late"), 504, "timeout", "late", ""},
		{"method not allowed", herald.Errorf(codeMethodNotAllowed, "no PATCH"), 405, "method-not-allowed", "no PATCH", ""},
		{"wrapped herald error", fmt.Errorf("put topic: %w", herald.Errorf(herald.CodeNotFound, "no topic")), 404, "not-found", "no topic", ""},
		{"empty message uses title", &herald.Error{Code: herald.CodeConflict}, 409, "conflict", "Conflict", ""},
		{"internal hides its message", &herald.Error{Code: herald.CodeInternal, Message: "sqlite: locked"}, 500, "internal", internalDetail, ""},
		{"plain error", errors.New("dial tcp 10.0.0.1: refused"), 500, "internal", internalDetail, ""},
		{"unknown code", &herald.Error{Code: "made-up", Message: "x"}, 500, "internal", internalDetail, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, _ := problemFor(c.err)
			want := problem{Type: herald.ProblemTypeBase + c.typ, Status: c.status, Detail: c.detail, Field: c.field, Title: p.Title}
			if p != want || p.Title == "" {
				t.Errorf("got %+v, want %+v", p, want)
			}
		})
	}
	// Titles are fixed per code, whatever the message.
	a, _ := problemFor(herald.Errorf(herald.CodeInvalid, "one"))
	b, _ := problemFor(herald.Errorf(herald.CodeInvalid, "two"))
	if a.Title != b.Title {
		t.Errorf("titles differ: %q %q", a.Title, b.Title)
	}
}

func TestWriteProblem(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	request := func(ctx context.Context) *http.Request {
		r := httptest.NewRequestWithContext(context.WithValue(ctx, requestStateKey, &requestState{id: "rid-1"}), "GET", "/v1/x", nil)
		return r
	}

	w := httptest.NewRecorder()
	writeProblem(w, request(t.Context()), log, herald.Errorf(herald.CodeUnauthorized, "no key"))
	if w.Code != 401 || w.Header().Get("Content-Type") != problemContentType || !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("401: %d %v", w.Code, w.Header())
	}
	var p problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.RequestID != "rid-1" || p.Status != 401 {
		t.Errorf("body %s (%v)", w.Body, err)
	}
	if strings.Contains(w.Body.String(), `"field"`) {
		t.Errorf("empty field not omitted: %s", w.Body)
	}
	if logs.Len() != 0 {
		t.Errorf("a client error was logged: %s", logs.String())
	}

	w = httptest.NewRecorder()
	writeProblem(w, request(t.Context()), log, fmt.Errorf("commit: %w", errors.New("disk full")))
	if w.Code != 500 || strings.Contains(w.Body.String(), "disk") {
		t.Errorf("500: %d %s", w.Code, w.Body)
	}
	if got := logs.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "level=ERROR") || !strings.Contains(got, "request_id=rid-1") || !strings.Contains(got, "disk full") {
		t.Errorf("internal error log: %q", got)
	}

	// A client that went away is not a server error.
	logs.Reset()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	w = httptest.NewRecorder()
	writeProblem(w, request(ctx), log, fmt.Errorf("append: %w", context.Canceled))
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("client cancel logged as an error: %s", logs.String())
	}
}
