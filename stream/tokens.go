package stream

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald"
)

// Connection token limits and defaults.
const (
	// MinTokenSecretBytes is the shortest secret NewTokens accepts.
	MinTokenSecretBytes = 32
	// DefaultTokenTTL is a token's lifetime when the request names none.
	DefaultTokenTTL = 15 * time.Minute
	// DefaultMaxTokenTTL is the longest lifetime a token may be given.
	DefaultMaxTokenTTL = 24 * time.Hour
	// MaxTokenBytes bounds a token the server will parse.
	MaxTokenBytes = 4096
	// maxTokenRequestBytes bounds the body of POST /v1/tokens.
	maxTokenRequestBytes = 16 << 10

	tokenIssuer   = "herald"
	tokenAudience = "herald-stream"
)

// TokensConfig configures connection tokens.
type TokensConfig struct {
	// Secret signs and verifies tokens (HMAC-SHA256); at least
	// MinTokenSecretBytes bytes. Every node of a cluster needs the same
	// secret, or tokens only work on the node that issued them.
	Secret []byte
	// DefaultTTL is used when a request names no ttl (default 15m).
	DefaultTTL time.Duration
	// MaxTTL bounds the ttl a request may ask for (default 24h).
	MaxTTL time.Duration
	// Now is the clock for issuing and checking expiry; nil is time.Now.
	Now func() time.Time
}

// Tokens issues and verifies short-lived connection tokens: JWTs (HS256)
// that carry read or subscribe scopes on topic patterns, an expiry, and
// the subject of the key that asked for them ("sub": the key's id), so a
// token is refused once its key is gone (see KeyChecker). Browsers, which
// cannot set an Authorization header on EventSource or WebSocket, pass
// them as ?token=. A Tokens is safe for concurrent use.
type Tokens struct {
	secret     []byte
	defaultTTL time.Duration
	maxTTL     time.Duration
	now        func() time.Time
	parser     *jwt.Parser
}

// NewTokens returns a token issuer and verifier. It fails when the secret
// is shorter than MinTokenSecretBytes.
func NewTokens(cfg TokensConfig) (*Tokens, error) {
	if len(cfg.Secret) < MinTokenSecretBytes {
		return nil, fmt.Errorf("stream token secret: %d bytes; at least %d are needed", len(cfg.Secret), MinTokenSecretBytes)
	}
	t := &Tokens{
		secret:     append([]byte(nil), cfg.Secret...),
		defaultTTL: cfg.DefaultTTL,
		maxTTL:     cfg.MaxTTL,
		now:        cfg.Now,
	}
	if t.maxTTL <= 0 {
		t.maxTTL = DefaultMaxTokenTTL
	}
	if t.defaultTTL <= 0 {
		t.defaultTTL = min(DefaultTokenTTL, t.maxTTL)
	}
	if t.now == nil {
		t.now = time.Now
	}
	t.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(tokenIssuer),
		jwt.WithAudience(tokenAudience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(func() time.Time { return t.now() }),
	)
	return t, nil
}

type tokenClaims struct {
	Scopes []string `json:"scopes"`
	User   string   `json:"user,omitempty"`
	jwt.RegisteredClaims
}

// DefaultTTL is the lifetime of a token whose request names none.
func (t *Tokens) DefaultTTL() time.Duration { return t.defaultTTL }

// Issue returns a token that grants the scopes to subject until now+ttl,
// or until notAfter when that is sooner (a token never outlives its key;
// zero: no cap), and its expiry (whole seconds, as the token holds it).
// Scopes may only be read or subscribe scopes; ttl must be positive and at
// most the configured maximum. Errors are CodeInvalid with the field at
// fault. Issue does not check that the subject may hold the scopes: the
// API, which knows the caller, does.
func (t *Tokens) Issue(scopes herald.Scopes, ttl time.Duration, subject string, notAfter time.Time) (string, time.Time, error) {
	return t.IssueUser(scopes, ttl, subject, "", notAfter)
}

// IssueUser is Issue for a token of one end user: a connection opened
// with it is that user's, and receives the user's server-side
// subscriptions. user "" is Issue.
func (t *Tokens) IssueUser(scopes herald.Scopes, ttl time.Duration, subject, user string, notAfter time.Time) (string, time.Time, error) {
	if len(scopes) == 0 {
		return "", time.Time{}, herald.FieldErrorf("scopes", "at least one scope is required")
	}
	for _, s := range scopes {
		if s.Action != herald.ActionRead && s.Action != herald.ActionSubscribe {
			return "", time.Time{}, herald.FieldErrorf("scopes", "scope %q: a connection token may hold only read and subscribe scopes", s.String())
		}
	}
	if ttl <= 0 || ttl > t.maxTTL {
		return "", time.Time{}, herald.FieldErrorf("ttl", "ttl must be more than 0 and at most %s, got %s", herald.FormatDuration(t.maxTTL), ttl)
	}
	now := t.now()
	exp := now.Add(ttl)
	if !notAfter.IsZero() && notAfter.Before(exp) {
		exp = notAfter // a token never outlives its key
	}
	exp = exp.Truncate(time.Second)
	var jti [12]byte
	_, _ = rand.Read(jti[:]) // crypto/rand.Read never fails
	claims := tokenClaims{
		Scopes: scopes.Strings(),
		User:   user,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   subject,
			Audience:  jwt.ClaimStrings{tokenAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        base64.RawURLEncoding.EncodeToString(jti[:]),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign connection token: %w", err)
	}
	return s, exp.UTC(), nil
}

// Verify checks a token's signature, issuer, audience and expiry and
// returns who holds it: its subject, scopes and expiry. A token that is
// malformed, forged, expired or not yet valid is a CodeUnauthorized
// *herald.Error saying which, without revealing more.
func (t *Tokens) Verify(token string) (herald.Principal, error) {
	if len(token) > MaxTokenBytes {
		return herald.Principal{}, herald.Errorf(herald.CodeUnauthorized, "the connection token is not valid")
	}
	var claims tokenClaims
	_, err := t.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return t.secret, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return herald.Principal{}, herald.Errorf(herald.CodeUnauthorized, "the connection token has expired; ask for a new one (POST /v1/tokens)")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return herald.Principal{}, herald.Errorf(herald.CodeUnauthorized, "the connection token is not valid yet")
	case err != nil:
		return herald.Principal{}, herald.Errorf(herald.CodeUnauthorized, "the connection token is not valid")
	}
	scopes, err := herald.ParseScopes(claims.Scopes)
	if err != nil {
		return herald.Principal{}, herald.Errorf(herald.CodeUnauthorized, "the connection token is not valid")
	}
	return herald.Principal{Subject: claims.Subject, Scopes: scopes, Expires: claims.ExpiresAt.Time, User: claims.User}, nil
}
