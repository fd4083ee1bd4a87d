package identity

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald"
)

// Introspection defaults.
const (
	DefaultIntrospectionCacheTTL  = time.Minute
	DefaultIntrospectionCacheSize = 10_000
)

// IntrospectorConfig configures an Introspector.
type IntrospectorConfig struct {
	// URL is the provider's introspection endpoint.
	URL string
	// ClientID and ClientSecret authenticate Herald to it (HTTP Basic,
	// client_secret_basic).
	ClientID     string
	ClientSecret string
	// Audiences, when set, must contain one of the "aud" values of the
	// answer; empty checks none.
	Audiences []string
	Mapping   Mapping
	// CacheTTL bounds how long an answer is reused (0:
	// DefaultIntrospectionCacheTTL); an active token's answer is never
	// reused past its exp.
	CacheTTL time.Duration
	// CacheSize bounds the answers kept (0: DefaultIntrospectionCacheSize).
	CacheSize int
	// Client calls the endpoint; nil is a client with a 10 s timeout.
	Client *http.Client
	Now    func() time.Time
}

// Introspector checks opaque bearer tokens with the provider's
// introspection endpoint (RFC 7662) and maps the answer's members as
// claims. Answers, active or not, are cached by the token's SHA-256 for a
// bounded time, so a busy caller costs one call per CacheTTL; failures to
// ask are not cached. It is safe for concurrent use and starts no
// goroutine.
type Introspector struct {
	cfg IntrospectorConfig

	mu    sync.Mutex
	cache map[[sha256.Size]byte]introspected
}

type introspected struct {
	id      Identity
	err     error // the answer for an inactive or refused token
	expires time.Time
}

// NewIntrospector returns an introspector; it asks nothing until the
// first token.
func NewIntrospector(cfg IntrospectorConfig) (*Introspector, error) {
	if cfg.URL == "" {
		return nil, errors.New("identity: an introspection URL is required")
	}
	if cfg.ClientID == "" {
		return nil, errors.New("identity: an introspection client id is required")
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultIntrospectionCacheTTL
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultIntrospectionCacheSize
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Introspector{cfg: cfg, cache: map[[sha256.Size]byte]introspected{}}, nil
}

var errInactive = herald.Errorf(herald.CodeUnauthorized, "the token is not active (the provider's introspection says so)")

// Introspect checks the token. Errors: CodeUnauthorized (the provider says
// it is not active, or it is expired, not yet valid, or for another
// audience), CodeForbidden (see Mapping.TenantClaim), CodeUnavailable (the
// provider cannot be asked or answered nonsense).
func (in *Introspector) Introspect(ctx context.Context, token string) (Identity, error) {
	if len(token) > MaxTokenBytes {
		return Identity{}, herald.Errorf(herald.CodeUnauthorized, "the token is longer than %d bytes", MaxTokenBytes)
	}
	hash := sha256.Sum256([]byte(token))
	now := in.cfg.Now()
	in.mu.Lock()
	e, ok := in.cache[hash]
	in.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.id, e.err
	}
	claims, err := in.ask(ctx, token)
	if err != nil {
		return Identity{}, &herald.Error{Code: herald.CodeUnavailable,
			Message: "the token introspection endpoint cannot be reached; try again later", Err: err}
	}
	id, err := in.judge(claims, now)
	e = introspected{id: id, err: err, expires: now.Add(in.cfg.CacheTTL)}
	if err == nil && !id.Expires.IsZero() && id.Expires.Before(e.expires) {
		e.expires = id.Expires
	}
	in.mu.Lock()
	if len(in.cache) >= in.cfg.CacheSize {
		in.evict(now)
	}
	in.cache[hash] = e
	in.mu.Unlock()
	return id, err
}

// judge maps an introspection answer to an identity or the reason it is
// refused.
func (in *Introspector) judge(claims map[string]any, now time.Time) (Identity, error) {
	if active, _ := claims["active"].(bool); !active {
		return Identity{}, errInactive
	}
	var exp, nbf time.Time
	if v, ok := claims["exp"].(float64); ok {
		exp = time.Unix(int64(v), 0)
		if !now.Before(exp) {
			return Identity{}, herald.Errorf(herald.CodeUnauthorized, "the token has expired")
		}
	}
	if v, ok := claims["nbf"].(float64); ok {
		if nbf = time.Unix(int64(v), 0); now.Before(nbf) {
			return Identity{}, herald.Errorf(herald.CodeUnauthorized, "the token is not valid yet")
		}
	}
	if len(in.cfg.Audiences) > 0 {
		if !slices.ContainsFunc(claimStrings(claims, "aud"), func(a string) bool { return slices.Contains(in.cfg.Audiences, a) }) {
			return Identity{}, herald.Errorf(herald.CodeUnauthorized, "the token is not meant for this server (aud)")
		}
	}
	id, err := in.cfg.Mapping.apply(claims, SubjectPrefixIntrospection, "client_id", "username")
	if err != nil {
		return Identity{}, err
	}
	id.Expires = exp
	return id, nil
}

// ask posts the token to the endpoint and returns the answer's members.
func (in *Introspector) ask(ctx context.Context, token string) (map[string]any, error) {
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.cfg.URL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 2.3.1: the credentials are form-encoded before Basic.
	req.SetBasicAuth(url.QueryEscape(in.cfg.ClientID), url.QueryEscape(in.cfg.ClientSecret))
	resp, err := in.cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST %s: %s", in.cfg.URL, resp.Status)
	}
	if len(body) > maxDocument {
		return nil, fmt.Errorf("POST %s: the answer is larger than %d bytes", in.cfg.URL, maxDocument)
	}
	var claims map[string]any
	if err := json.Unmarshal(body, &claims); err != nil {
		return nil, fmt.Errorf("POST %s: the answer is not a JSON object: %w", in.cfg.URL, err)
	}
	if _, ok := claims["active"].(bool); !ok {
		return nil, fmt.Errorf("POST %s: the answer has no boolean \"active\"", in.cfg.URL)
	}
	return claims, nil
}

// evict makes room: expired answers go, then arbitrary ones until a
// quarter is free. in.mu is held.
func (in *Introspector) evict(now time.Time) {
	for h, e := range in.cache {
		if !now.Before(e.expires) {
			delete(in.cache, h)
		}
	}
	for h := range in.cache {
		if len(in.cache) < in.cfg.CacheSize*3/4 {
			break
		}
		delete(in.cache, h)
	}
}
