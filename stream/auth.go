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

// Authenticator establishes who is calling, from the request's
// credentials: the API implements it for API keys (Authorization: Bearer).
// Connection tokens (?token=) are checked by the hub itself and never
// reach it.
//
// Authenticate returns the caller's scopes and a subject that names the
// caller for per-key limits (the key's id; any stable string), or an
// error: a *herald.Error with CodeUnauthorized for missing, unknown or
// expired credentials, or CodeForbidden. Any other error is answered as
// an internal error. It must be safe for concurrent use and should not
// block for long: it runs before every stream starts.
type Authenticator interface {
	Authenticate(r *http.Request) (scopes herald.Scopes, subject string, err error)
}

// KeyChecker is an optional capability of an Authenticator, found by type
// assertion: it tells whether the API key a subject names still holds.
// With it, a connection token is refused once its key was deleted or has
// expired, and is never issued to outlive its key; open streams of such a
// key, opened with it or with a token of it, are closed with
// ReasonKeyRevoked (at the key's expiry, or within a check of the hub's
// KeyCheckInterval after a deletion, plus the checker's own delay).
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

// caller is who opened a stream.
type caller struct {
	scopes     herald.Scopes
	subject    string
	expires    time.Time // the token's expiry; zero for API keys
	keyExpires time.Time // the key's expiry; zero: never, or no KeyChecker
}

// authenticate reads the connection token of ?token= when there is one,
// else asks the Authenticator; then it checks that the key still holds.
func (h *Hub) authenticate(r *http.Request) (caller, error) {
	var who caller
	if tok := r.URL.Query().Get("token"); tok != "" {
		if h.tokens == nil {
			return caller{}, herald.Errorf(herald.CodeUnauthorized, "connection tokens are not enabled on this server")
		}
		c, err := h.tokens.verify(tok)
		if err != nil {
			return caller{}, err
		}
		who = caller{scopes: c.scopes, subject: c.subject, expires: c.expires}
	} else {
		if h.auth == nil {
			return caller{}, herald.Errorf(herald.CodeUnauthorized, "a connection token (?token=) is required")
		}
		scopes, subject, err := h.auth.Authenticate(r)
		if err != nil {
			return caller{}, err
		}
		who = caller{scopes: scopes, subject: subject}
	}
	if h.keys != nil {
		exp, err := h.keys.CheckKey(r.Context(), who.subject)
		if herald.IsCode(err, herald.CodeUnauthorized) && !who.expires.IsZero() {
			return caller{}, herald.Errorf(herald.CodeUnauthorized, "the API key that asked for this connection token was deleted or has expired")
		}
		if err != nil {
			return caller{}, err
		}
		who.keyExpires = exp
	}
	return who, nil
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
