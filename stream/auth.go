package stream

import (
	"context"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// KeyChecker tells whether the API key a subject names still holds (the
// API implements it). With it, open streams of a key deleted or expired,
// opened with the key or with a token of it, are closed with
// ReasonKeyRevoked: at the key's expiry (Principal.KeyExpires), or within
// a check of the hub's KeyCheckInterval after a deletion, plus the
// checker's own delay.
type KeyChecker interface {
	// CheckKey returns the expiry of the key the subject names (zero: it
	// never expires), or a *herald.Error with CodeUnauthorized when the
	// key was deleted or has expired. Other errors (the store is
	// unreachable) decide nothing. Answers may come from a cache, so a
	// deletion made elsewhere is seen after a delay the implementation
	// bounds and documents. It must be safe for concurrent use and
	// should not block for long.
	CheckKey(ctx context.Context, subject string) (expires time.Time, err error)
}

// authorizeStream checks that the scopes allow streaming the topic or
// pattern: read or subscribe on it, for every topic a pattern can match.
func authorizeStream(scopes herald.Scopes, topic string) error {
	if mayStream(scopes, topic) {
		return nil
	}
	return &herald.Error{Code: herald.CodeForbidden, Field: "topic",
		Message: "the credentials have no read or subscribe scope covering " + quote(topic)}
}

// mayStream reports whether the scopes allow streaming the topic or
// pattern.
func mayStream(scopes herald.Scopes, topic string) bool {
	return scopes.Allows(herald.ActionRead, topic) || scopes.Allows(herald.ActionSubscribe, topic)
}

// Preflight answers a browser's CORS preflight (OPTIONS) of an SSE stream
// from an allowed origin. It returns an error, before writing anything,
// for an origin that is not allowed.
func (h *Hub) Preflight(w http.ResponseWriter, r *http.Request) error {
	if err := h.allowOrigin(w, r); err != nil {
		return err
	}
	hd := w.Header()
	hd.Set("Access-Control-Allow-Methods", "GET")
	hd.Set("Access-Control-Allow-Headers", "Authorization, Last-Event-ID, Cache-Control")
	hd.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// allowOrigin checks the request's Origin and, for a cross-origin one
// that is allowed, sets the CORS headers of the answer.
func (h *Hub) allowOrigin(w http.ResponseWriter, r *http.Request) error {
	origin, err := h.checkOrigin(r)
	if err != nil {
		return err
	}
	if origin != "" {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", origin)
		hd.Add("Vary", "Origin")
	}
	return nil
}

// checkOrigin lets a request through when it comes from no browser (no
// Origin header), from the server's own host, or from an allowed origin.
// It returns the origin to echo in CORS headers ("" when none is needed).
func (h *Hub) checkOrigin(r *http.Request) (string, error) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return "", nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return "", herald.Errorf(herald.CodeForbidden, "the Origin header %q is not a valid origin", origin)
	}
	if strings.EqualFold(u.Host, r.Host) {
		return "", nil
	}
	for _, p := range h.cfg.AllowedOrigins {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return origin, nil
		}
	}
	return "", herald.Errorf(herald.CodeForbidden, "origin %q is not allowed to open streams (setting stream allowed origins)", origin)
}
