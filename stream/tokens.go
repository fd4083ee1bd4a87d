package stream

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
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
	// Logger receives internal errors of the token endpoint; nil discards.
	Logger *slog.Logger
	// WriteProblem answers failed token requests; nil uses the package's
	// RFC 9457 writer.
	WriteProblem ProblemWriter
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
	problem    ProblemWriter
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
		problem:    cfg.WriteProblem,
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
	if t.problem == nil {
		log := cfg.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		t.problem = defaultProblemWriter(log)
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
	jwt.RegisteredClaims
}

// Issue returns a token that grants the scopes to subject until now+ttl,
// and its expiry (whole seconds, as the token holds it). Scopes may only
// be read or subscribe scopes; ttl must be positive and at most the
// configured maximum. Errors are CodeInvalid with the field at fault.
// Issue does not check that anyone may hold the scopes: Handler does.
func (t *Tokens) Issue(scopes herald.Scopes, ttl time.Duration, subject string) (string, time.Time, error) {
	return t.issue(scopes, ttl, subject, time.Time{})
}

// issue is Issue with the expiry capped at notAfter, unless it is zero.
func (t *Tokens) issue(scopes herald.Scopes, ttl time.Duration, subject string, notAfter time.Time) (string, time.Time, error) {
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
// returns its scopes and subject. A token that is malformed, forged,
// expired or not yet valid is a CodeUnauthorized *herald.Error saying
// which, without revealing more.
func (t *Tokens) Verify(token string) (herald.Scopes, string, error) {
	c, err := t.verify(token)
	return c.scopes, c.subject, err
}

type verified struct {
	scopes  herald.Scopes
	subject string
	expires time.Time
}

func (t *Tokens) verify(token string) (verified, error) {
	if len(token) > MaxTokenBytes {
		return verified{}, herald.Errorf(herald.CodeUnauthorized, "the connection token is not valid")
	}
	var claims tokenClaims
	_, err := t.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return t.secret, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return verified{}, herald.Errorf(herald.CodeUnauthorized, "the connection token has expired; ask for a new one (POST /v1/tokens)")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return verified{}, herald.Errorf(herald.CodeUnauthorized, "the connection token is not valid yet")
	case err != nil:
		return verified{}, herald.Errorf(herald.CodeUnauthorized, "the connection token is not valid")
	}
	scopes, err := herald.ParseScopes(claims.Scopes)
	if err != nil {
		return verified{}, herald.Errorf(herald.CodeUnauthorized, "the connection token is not valid")
	}
	return verified{scopes: scopes, subject: claims.Subject, expires: claims.ExpiresAt.Time}, nil
}

// tokenRequest is the body of POST /v1/tokens.
type tokenRequest struct {
	Scopes []string `json:"scopes"`
	TTL    string   `json:"ttl"`
}

// TokenResponse is the answer of POST /v1/tokens.
type TokenResponse struct {
	Token     string   `json:"token"`
	ExpiresAt string   `json:"expires_at"`
	Scopes    []string `json:"scopes"`
}

// Handler serves POST /v1/tokens: {"scopes": ["read:orders.>"], "ttl":
// "15m"} (ttl optional, herald duration form, at most the maximum)
// answers 200 with a TokenResponse. The caller, established by auth, must
// hold every requested scope itself (admin holds all). When auth is a
// KeyChecker, the token expires no later than the caller's key. The
// answer has Cache-Control: no-store. Failures are problems: 400 with the
// field at fault, 401 and 403 from auth, 403 for a scope the caller lacks.
func (t *Tokens) Handler(auth Authenticator) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := t.serveIssue(w, r, auth); err != nil {
			t.problem(w, r, err)
		}
	})
}

func (t *Tokens) serveIssue(w http.ResponseWriter, r *http.Request, auth Authenticator) error {
	if r.Method != http.MethodPost {
		return herald.Errorf(herald.CodeInvalid, "use POST to ask for a connection token")
	}
	if auth == nil {
		return herald.Errorf(herald.CodeUnauthorized, "an API key is required")
	}
	callerScopes, subject, err := auth.Authenticate(r)
	if err != nil {
		return err
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return herald.Errorf(herald.CodeUnsupported, "send the token request as application/json")
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxTokenRequestBytes))
	dec.DisallowUnknownFields()
	var req tokenRequest
	if err := dec.Decode(&req); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return herald.Errorf(herald.CodeTooLarge, "the token request is over %d bytes", maxTokenRequestBytes)
		}
		return &herald.Error{Code: herald.CodeInvalid, Message: "the body must be a JSON object {\"scopes\": [...], \"ttl\": \"15m\"}", Err: err}
	}
	if _, err := dec.Token(); err != io.EOF {
		return herald.Errorf(herald.CodeInvalid, "the body must hold one JSON object")
	}
	scopes, err := herald.ParseScopes(req.Scopes)
	if err != nil {
		return err
	}
	for _, s := range scopes {
		if s.Action == herald.ActionRead || s.Action == herald.ActionSubscribe {
			if !callerScopes.Allows(s.Action, s.Pattern) {
				return &herald.Error{Code: herald.CodeForbidden, Field: "scopes",
					Message: "the API key does not hold scope " + quote(s.String()) + "; a token can only hold scopes of its key"}
			}
		}
	}
	ttl := t.defaultTTL
	if req.TTL != "" {
		if ttl, err = herald.ParseDuration(req.TTL); err != nil {
			return herald.FieldErrorf("ttl", "ttl %q: want a duration such as 15m or 1h", req.TTL)
		}
	}
	var keyExpires time.Time
	if kc, ok := auth.(KeyChecker); ok {
		if keyExpires, err = kc.CheckKey(r.Context(), subject); err != nil {
			return err
		}
	}
	token, exp, err := t.issue(scopes, ttl, subject, keyExpires)
	if err != nil {
		return err
	}
	body, err := json.Marshal(TokenResponse{Token: token, ExpiresAt: formatTime(exp), Scopes: scopes.Strings()})
	if err != nil {
		return fmt.Errorf("encode token response: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
	return nil
}
