package api

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/identity"
)

// Streams serves the realtime endpoints once the API has established who
// calls (package stream's Hub implements it). Each method returns an error
// only before it wrote anything; the API answers it as a problem, as it
// answers every error.
type Streams interface {
	// Preflight answers a browser's CORS preflight of an SSE stream.
	Preflight(w http.ResponseWriter, r *http.Request) error
	// ServeSSE serves GET /v1/topics/{topic}/stream for who.
	ServeSSE(w http.ResponseWriter, r *http.Request, who herald.Principal) error
	// ServeWebSocket serves GET /v1/stream for who.
	ServeWebSocket(w http.ResponseWriter, r *http.Request, who herald.Principal) error
}

// Tokens issues and verifies connection tokens (package stream's Tokens
// implements it): short-lived credentials a browser passes as ?token=,
// since EventSource and WebSocket cannot set an Authorization header.
type Tokens interface {
	// Issue returns a token granting the scopes to subject for ttl, but
	// no later than notAfter (zero: no cap), and its expiry; CodeInvalid
	// naming "scopes" or "ttl".
	Issue(scopes herald.Scopes, ttl time.Duration, subject string, notAfter time.Time) (string, time.Time, error)
	// IssueUser is Issue for a token of one end user (herald.Principal.User).
	IssueUser(scopes herald.Scopes, ttl time.Duration, subject, user string, notAfter time.Time) (string, time.Time, error)
	// Verify returns who holds a token, or CodeUnauthorized.
	Verify(token string) (herald.Principal, error)
	// DefaultTTL is a token's lifetime when its request names none.
	DefaultTTL() time.Duration
}

// SetStreams attaches the realtime endpoints. Call it before the server
// handles requests; until then those routes answer 503.
func (s *Server) SetStreams(st Streams) {
	s.streams = st
	if uh, ok := st.(UserHub); ok {
		s.userHub = uh
	}
}

// errKeyRevoked answers a stream or token whose key is gone.
var errKeyRevoked = herald.Errorf(herald.CodeUnauthorized, "the API key was deleted or has expired")

// CheckKey reports whether the key a subject of Authenticate names still
// holds: its expiry (zero: never), or CodeUnauthorized once it was deleted
// or has expired. The bootstrap admin always holds. It implements
// stream.KeyChecker, so tokens never outlive their key and streams end
// with it. A key deleted through this server fails at once; one deleted
// through another node within keyIndexTTL (2 s), the age of the list of
// keys it reads.
func (s *Server) CheckKey(ctx context.Context, subject string) (time.Time, error) {
	if subject == adminSubject || identity.IsExternalSubject(subject) {
		// A token from outside cannot be asked about again: its streams
		// and connection tokens end at its expiry instead (see
		// principalExpiry).
		return time.Time{}, nil
	}
	k, err := s.keys.byID(ctx, subject)
	if herald.IsCode(err, herald.CodeNotFound) || err == nil && k.Expired(s.now()) {
		return time.Time{}, errKeyRevoked
	}
	if err != nil {
		return time.Time{}, err
	}
	return k.ExpiresAt, nil
}

// principalExpiry returns when the caller's credentials stop being
// valid: its outside token's expiry, or its key's (CheckKey).
func (s *Server) principalExpiry(ctx context.Context, p *principal) (time.Time, error) {
	if p.external != "" {
		return p.expires, nil
	}
	return s.CheckKey(ctx, p.subject())
}

var errNoStreams = &herald.Error{Code: herald.CodeUnavailable, Message: "this server does not serve realtime streams"}

// streamPrincipal establishes who opens a stream: the holder of the
// connection token in ?token=, or of the API key. Either way the key
// behind it must still hold (CheckKey): a token of a deleted key opens
// nothing. Success marks the connection as authenticated, so the Listener
// never closes it to make room for others.
func (s *Server) streamPrincipal(r *http.Request) (herald.Principal, error) {
	var who herald.Principal
	if tok := r.URL.Query().Get("token"); tok != "" {
		if s.tokens == nil {
			return who, herald.Errorf(herald.CodeUnauthorized, "connection tokens are not enabled on this server")
		}
		var err error
		if who, err = s.tokens.Verify(tok); err != nil {
			return who, err
		}
		exp, err := s.CheckKey(r.Context(), who.Subject)
		if herald.IsCode(err, herald.CodeUnauthorized) {
			return who, herald.Errorf(herald.CodeUnauthorized, "the API key that asked for this connection token was deleted or has expired")
		}
		if err != nil {
			return who, err
		}
		who.KeyExpires = exp
		connAuthenticated(r.Context())
		return who, nil
	}
	p, err := s.principal(r)
	if err != nil {
		return who, err
	}
	who = herald.Principal{Subject: p.subject(), Scopes: p.scopes}
	if who.KeyExpires, err = s.principalExpiry(r.Context(), p); err != nil {
		return who, err
	}
	return who, nil
}

func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request) error {
	if s.streams == nil {
		return errNoStreams
	}
	if r.Method == http.MethodOptions {
		return s.streams.Preflight(w, r)
	}
	who, err := s.streamPrincipal(r)
	if err != nil {
		return err
	}
	return s.streams.ServeSSE(w, r, who)
}

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) error {
	if s.streams == nil {
		return errNoStreams
	}
	who, err := s.streamPrincipal(r)
	if err != nil {
		return err
	}
	return s.streams.ServeWebSocket(w, r, who)
}

// tokenRequest is the body of POST /v1/tokens.
type tokenRequest struct {
	Scopes []string `json:"scopes"`
	TTL    string   `json:"ttl"`
	// User makes it a user's token: "{user}" in its scopes is replaced
	// by the id, and connections opened with it receive the user's
	// server-side subscriptions.
	User string `json:"user"`
}

// tokenJSON is the answer of POST /v1/tokens.
type tokenJSON struct {
	Token     string   `json:"token"`
	ExpiresAt string   `json:"expires_at"`
	Scopes    []string `json:"scopes"`
	User      string   `json:"user,omitempty"`
}

// maxTokenRequestBytes bounds the body of POST /v1/tokens.
const maxTokenRequestBytes = 16 << 10

// issueToken serves POST /v1/tokens: {"scopes": ["read:orders.>"], "ttl":
// "15m"} (ttl optional) answers a connection token holding those scopes.
// The caller's key must hold every requested scope itself (admin holds
// all), and the token expires no later than the key. The answer has
// Cache-Control: no-store.
func (s *Server) issueToken(w http.ResponseWriter, r *http.Request) error {
	if s.tokens == nil {
		return errNoStreams
	}
	p := principalFrom(r.Context())
	var req tokenRequest
	if err := decodeJSON(w, r, maxTokenRequestBytes, false, &req); err != nil {
		return err
	}
	if req.User != "" {
		if err := validateUserID(req.User); err != nil {
			return err
		}
	}
	texts := make([]string, len(req.Scopes))
	for i, sc := range req.Scopes {
		if strings.Contains(sc, userTemplate) && req.User == "" {
			return herald.FieldErrorf("scopes", "scope %q names %s: give user", sc, userTemplate)
		}
		texts[i] = strings.ReplaceAll(sc, userTemplate, req.User)
	}
	scopes, err := herald.ParseScopes(texts)
	if err != nil {
		return err
	}
	for _, sc := range scopes {
		if (sc.Action == herald.ActionRead || sc.Action == herald.ActionSubscribe) && !p.scopes.Allows(sc.Action, sc.Pattern) {
			return &herald.Error{Code: herald.CodeForbidden, Field: "scopes",
				Message: "the API key does not hold scope \"" + sc.String() + "\"; a token can only hold scopes of its key"}
		}
	}
	ttl := s.tokens.DefaultTTL()
	if req.TTL != "" {
		if ttl, err = herald.ParseDuration(req.TTL); err != nil {
			return herald.FieldErrorf("ttl", "ttl %q: want a duration such as 15m or 1h", req.TTL)
		}
	}
	keyExpires, err := s.principalExpiry(r.Context(), p)
	if err != nil {
		return err
	}
	token, exp, err := s.tokens.IssueUser(scopes, ttl, p.subject(), req.User, keyExpires)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, tokenJSON{Token: token, ExpiresAt: formatTime(exp), Scopes: scopes.Strings(), User: req.User})
}
