package identity

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald"
)

// OIDC defaults.
const (
	DefaultKeysMaxAge      = time.Hour
	DefaultKeysMinInterval = 10 * time.Second
	DefaultLeeway          = 30 * time.Second
	// maxDocument bounds a discovery document or key set read.
	maxDocument = 1 << 20
	// MaxTokenBytes bounds a bearer token from outside.
	MaxTokenBytes = 16 << 10
)

// OIDCConfig configures an OIDC verifier.
type OIDCConfig struct {
	// Issuer is the provider's issuer URL, exactly as its tokens name it
	// in "iss"; its discovery document is at
	// Issuer + "/.well-known/openid-configuration".
	Issuer string
	// Audiences are the values of "aud" accepted; a token must name one.
	Audiences []string
	Mapping   Mapping
	// Client fetches the discovery document and the keys; nil is a
	// client with a 10 s timeout.
	Client *http.Client
	// KeysMaxAge is how long fetched keys are used before they are fetched
	// again (0: DefaultKeysMaxAge). Keys still serve when a fetch fails.
	KeysMaxAge time.Duration
	// KeysMinInterval is the least time between two fetches caused by a
	// token signed with a key not in the set (0: DefaultKeysMinInterval),
	// so made-up key ids cannot make Herald hammer the provider.
	KeysMinInterval time.Duration
	// Leeway is the clock skew allowed on exp and nbf (0: DefaultLeeway;
	// negative: none).
	Leeway time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

// OIDC verifies bearer JWTs issued by one OpenID Connect provider: the
// signature with a key of the provider's JWKS (found through discovery,
// cached, fetched again when a token names a key id not in the set, so a
// rotation needs no restart), and iss, aud, exp (required) and nbf. It is
// safe for concurrent use; it starts no goroutine.
type OIDC struct {
	cfg    OIDCConfig
	parser *jwt.Parser
	// anyAudience checks what parser does but aud: for the access token a
	// sign-in gets beside its ID token, meant for whatever API the
	// provider chose.
	anyAudience *jwt.Parser

	// fetchMu is held while the keys are fetched: one fetch at a time,
	// the others wait for its result.
	fetchMu sync.Mutex

	mu        sync.Mutex
	doc       *discovery                  // nil until read
	keys      map[string]crypto.PublicKey // by kid
	fetchedAt time.Time                   // of keys
	triedAt   time.Time                   // last fetch, good or not
	lastErr   error                       // of the last fetch
}

// NewOIDC returns a verifier; it asks the provider nothing until the
// first token.
func NewOIDC(cfg OIDCConfig) (*OIDC, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("identity: an OIDC issuer is required")
	}
	if len(cfg.Audiences) == 0 {
		return nil, errors.New("identity: an OIDC audience is required")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.KeysMaxAge <= 0 {
		cfg.KeysMaxAge = DefaultKeysMaxAge
	}
	if cfg.KeysMinInterval <= 0 {
		cfg.KeysMinInterval = DefaultKeysMinInterval
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway < 0:
		cfg.Leeway = 0
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	o := &OIDC{cfg: cfg}
	common := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}),
		jwt.WithIssuer(cfg.Issuer), jwt.WithExpirationRequired(), jwt.WithLeeway(cfg.Leeway), jwt.WithTimeFunc(cfg.Now)}
	o.parser = jwt.NewParser(append(common, jwt.WithAudience(cfg.Audiences...))...)
	o.anyAudience = jwt.NewParser(common...)
	return o, nil
}

// LooksLikeJWT reports whether the token has the shape of a JWS in compact
// form (three dot-separated parts), as opposed to an opaque token or an
// API key.
func LooksLikeJWT(token string) bool {
	return strings.Count(token, ".") == 2 && !strings.HasPrefix(token, herald.KeySecretPrefix)
}

var errUnknownKey = errors.New("unknown key")

// Verify checks the token and maps its claims. Errors: CodeUnauthorized
// (malformed, forged, expired, not yet valid, another issuer or
// audience, a key the provider does not have), CodeForbidden (see
// Mapping.TenantClaim), CodeUnavailable (the provider's keys cannot be
// fetched and none cached match).
func (o *OIDC) Verify(ctx context.Context, token string) (Identity, error) {
	claims, err := o.claims(ctx, o.parser, token)
	if err != nil {
		return Identity{}, err
	}
	id, err := o.cfg.Mapping.apply(claims, SubjectPrefixOIDC)
	if err != nil {
		return Identity{}, err
	}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		id.Expires = exp.Time
	}
	return id, nil
}

// claims checks the token with the parser and returns its claims, or an
// error as Verify's.
func (o *OIDC) claims(ctx context.Context, parser *jwt.Parser, token string) (jwt.MapClaims, error) {
	if len(token) > MaxTokenBytes {
		return nil, herald.Errorf(herald.CodeUnauthorized, "the token is longer than %d bytes", MaxTokenBytes)
	}
	var unavailable error
	claims := jwt.MapClaims{}
	_, err := parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, err := o.key(ctx, kid)
		if err != nil && !errors.Is(err, errUnknownKey) {
			unavailable = err
		}
		return k, err
	})
	switch {
	case err == nil:
	case unavailable != nil:
		return nil, &herald.Error{Code: herald.CodeUnavailable,
			Message: "the OpenID provider's signing keys cannot be fetched; try again later", Err: unavailable}
	case errors.Is(err, errUnknownKey):
		return nil, herald.Errorf(herald.CodeUnauthorized, "the token is signed with a key the OpenID provider does not publish")
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, herald.Errorf(herald.CodeUnauthorized, "the token has expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return nil, herald.Errorf(herald.CodeUnauthorized, "the token is not valid yet")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return nil, herald.Errorf(herald.CodeUnauthorized, "the token is not meant for this server (aud)")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return nil, herald.Errorf(herald.CodeUnauthorized, "the token is from another issuer (iss)")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return nil, herald.Errorf(herald.CodeUnauthorized, "the token lacks a required claim (exp)")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, herald.Errorf(herald.CodeUnauthorized, "the token's signature is not valid")
	default:
		return nil, herald.Errorf(herald.CodeUnauthorized, "the token is not a valid JWT")
	}
	return claims, nil
}

// key returns the public key with the id: from the cached set when it has
// it and is fresh, else from a fetch. A kid missing from a fresh set
// fetches again at most once per KeysMinInterval. A failed fetch keeps the
// old set serving.
func (o *OIDC) key(ctx context.Context, kid string) (crypto.PublicKey, error) {
	k, found, fresh, mayFetch, lastErr := o.cached(kid)
	if found && fresh {
		return k, nil
	}
	if !mayFetch {
		if found {
			return k, nil
		}
		if lastErr != nil {
			return nil, lastErr
		}
		return nil, errUnknownKey
	}
	o.fetchMu.Lock()
	defer o.fetchMu.Unlock()
	// Another caller may have fetched while this one waited.
	k, found, fresh, mayFetch, lastErr = o.cached(kid)
	if found && fresh {
		return k, nil
	}
	if !mayFetch && !found && lastErr != nil {
		return nil, lastErr
	}
	if mayFetch {
		if err := o.fetch(ctx); err != nil {
			o.cfg.Logger.Warn("oidc: fetch the provider's keys", "issuer", o.cfg.Issuer, "err", err)
			if found {
				return k, nil // the old set still serves
			}
			return nil, err
		}
		k, found, _, _, _ = o.cached(kid)
	}
	if !found {
		return nil, errUnknownKey
	}
	return k, nil
}

// cached looks kid up. A kid of "" matches the set's only key.
func (o *OIDC) cached(kid string) (k crypto.PublicKey, found, fresh, mayFetch bool, lastErr error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.cfg.Now()
	if kid == "" && len(o.keys) == 1 {
		for _, only := range o.keys {
			k, found = only, true
		}
	} else {
		k, found = o.keys[kid]
	}
	fresh = o.keys != nil && now.Sub(o.fetchedAt) < o.cfg.KeysMaxAge
	// A failed fetch is tried again after a second; a set that lacks a kid
	// after KeysMinInterval; a stale set at once.
	switch {
	case o.lastErr != nil:
		mayFetch = now.Sub(o.triedAt) >= time.Second
	case !fresh:
		mayFetch = true
	default:
		mayFetch = now.Sub(o.triedAt) >= o.cfg.KeysMinInterval
	}
	return k, found, fresh, mayFetch, o.lastErr
}

// fetch reads the discovery document (once) and the key set. fetchMu is
// held.
func (o *OIDC) fetch(ctx context.Context) (err error) {
	start := o.cfg.Now()
	defer func() {
		o.mu.Lock()
		o.triedAt, o.lastErr = start, err
		o.mu.Unlock()
	}()
	o.mu.Lock()
	doc := o.doc
	o.mu.Unlock()
	if doc == nil {
		if doc, err = o.readDiscovery(ctx); err != nil {
			return err
		}
		o.mu.Lock()
		o.doc = doc
		o.mu.Unlock()
	}
	uri := doc.JWKSURI
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := getJSON(ctx, o.cfg.Client, uri, &set); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	keys := make(map[string]crypto.PublicKey, len(set.Keys))
	for _, raw := range set.Keys {
		kid, k, err := parseJWK(raw)
		if err != nil {
			o.cfg.Logger.Debug("oidc: skip a key", "issuer", o.cfg.Issuer, "kid", kid, "err", err)
			continue
		}
		if k != nil {
			keys[kid] = k
		}
	}
	if len(keys) == 0 {
		return errors.New("keys: the set has no signing key Herald can use")
	}
	o.mu.Lock()
	o.keys, o.fetchedAt = keys, start
	o.mu.Unlock()
	return nil
}

// discovery is what Herald reads of a provider's discovery document.
type discovery struct {
	Issuer                string   `json:"issuer"`
	JWKSURI               string   `json:"jwks_uri"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	TokenAuthMethods      []string `json:"token_endpoint_auth_methods_supported"`
}

// readDiscovery reads the provider's discovery document.
func (o *OIDC) readDiscovery(ctx context.Context) (*discovery, error) {
	var doc discovery
	if err := getJSON(ctx, o.cfg.Client, strings.TrimSuffix(o.cfg.Issuer, "/")+"/.well-known/openid-configuration", &doc); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	if doc.Issuer != o.cfg.Issuer {
		return nil, fmt.Errorf("discovery: the document names issuer %q, not %q", doc.Issuer, o.cfg.Issuer)
	}
	if doc.JWKSURI == "" {
		return nil, errors.New("discovery: the document has no jwks_uri")
	}
	return &doc, nil
}

// discovery returns the provider's discovery document, read once.
func (o *OIDC) discovery(ctx context.Context) (*discovery, error) {
	o.mu.Lock()
	doc := o.doc
	o.mu.Unlock()
	if doc != nil {
		return doc, nil
	}
	o.fetchMu.Lock()
	defer o.fetchMu.Unlock()
	o.mu.Lock()
	doc = o.doc
	o.mu.Unlock()
	if doc != nil {
		return doc, nil
	}
	doc, err := o.readDiscovery(ctx)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	o.doc = doc
	o.mu.Unlock()
	return doc, nil
}

// getJSON reads a JSON document of at most maxDocument bytes.
func getJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if len(body) > maxDocument {
		return fmt.Errorf("GET %s: the document is larger than %d bytes", url, maxDocument)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}
