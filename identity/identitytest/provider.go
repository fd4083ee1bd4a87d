// Package identitytest runs a real OpenID provider in-process for tests:
// zitadel/oidc's OP package behind an httptest server, with discovery,
// JWKS, the token endpoint (client credentials grant, JWT or opaque access
// tokens) and the introspection endpoint (RFC 7662). Tests shape its
// clients (claims, audience, token lifetime and clock skew), rotate its
// signing key, revoke tokens and take it down. Import it from tests only.
package identitytest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Client is a service client of the provider that gets tokens through
// the client credentials grant.
type Client struct {
	ID, Secret string
	// JWT makes its access tokens JWTs; otherwise they are opaque and
	// only introspection tells what they are.
	JWT bool
	// Audience of its tokens; empty: its own id.
	Audience []string
	// Claims are added to its tokens (JWT) and introspection answers.
	Claims map[string]any
	// Lifetime of its tokens; 0: an hour. Negative issues expired ones.
	Lifetime time.Duration
	// Skew moves iat and nbf back by it; negative moves them ahead, so
	// tokens are not valid yet.
	Skew time.Duration
}

// Provider is a running OpenID provider.
type Provider struct {
	// Issuer is its issuer URL (http://127.0.0.1:port).
	Issuer string
	srv    *httptest.Server
	down   atomic.Bool
	// KeyFetches counts requests for the key set.
	KeyFetches  atomic.Int64
	Introspects atomic.Int64
	st          *storage
}

// New starts a provider, closed at the end of the test.
func New(t testing.TB) *Provider {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	p := &Provider{Issuer: "http://" + srv.Listener.Addr().String(), srv: srv,
		st: &storage{clients: map[string]*Client{}, tokens: map[string]*token{}}}
	p.st.rotate(false)
	var key [32]byte
	_, _ = rand.Read(key[:])
	o, err := op.NewOpenIDProvider(p.Issuer, &op.Config{CryptoKey: key}, p.st, op.WithAllowInsecure())
	if err != nil {
		t.Fatal(err)
	}
	h := o.HttpHandler()
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		switch r.URL.Path {
		case "/keys":
			p.KeyFetches.Add(1)
		case "/oauth/introspect":
			p.Introspects.Add(1)
		}
		h.ServeHTTP(w, r)
	})
	srv.Start()
	t.Cleanup(srv.Close)
	return p
}

// IntrospectionURL is the provider's introspection endpoint.
func (p *Provider) IntrospectionURL() string { return p.Issuer + "/oauth/introspect" }

// AddClient registers a client.
func (p *Provider) AddClient(c Client) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	cc := c
	p.st.clients[c.ID] = &cc
}

// Token gets an access token for the client through the token endpoint.
func (p *Provider) Token(t testing.TB, clientID string) string {
	t.Helper()
	p.st.mu.Lock()
	c := p.st.clients[clientID]
	p.st.mu.Unlock()
	if c == nil {
		t.Fatalf("identitytest: no client %s", clientID)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"openid"}}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, p.Issuer+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK || out.AccessToken == "" {
		t.Fatalf("identitytest: token for %s: %s %s %s", clientID, resp.Status, out.Error, out.Description)
	}
	return out.AccessToken
}

// RotateKey makes a new signing key. With keepOld the key set publishes
// the old key beside it; without, the old key is gone.
func (p *Provider) RotateKey(keepOld bool) { p.st.rotate(keepOld) }

// SigningKeyID is the id of the key tokens are signed with now.
func (p *Provider) SigningKeyID() string {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	return p.st.keys[0].id
}

// RevokeAll makes every token issued so far inactive.
func (p *Provider) RevokeAll() {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	clear(p.st.tokens)
}

// SetDown makes every endpoint answer 503 (true) or serve again.
func (p *Provider) SetDown(down bool) { p.down.Store(down) }

type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *signingKey) Key() any                                    { return k.key }
func (k *signingKey) ID() string                                  { return k.id }

type publicKey struct{ *signingKey }

func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return &k.key.PublicKey }

type token struct {
	id, clientID string
	audience     []string
	expires      time.Time
}

// storage is the provider's state: just what the client credentials
// grant, the key set and introspection need.
type storage struct {
	mu      sync.Mutex
	keys    []*signingKey // [0] signs
	n       int
	clients map[string]*Client
	tokens  map[string]*token
}

func (s *storage) rotate(keepOld bool) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	nk := &signingKey{id: fmt.Sprintf("key-%d", s.n), key: k}
	if keepOld {
		s.keys = append([]*signingKey{nk}, s.keys...)
	} else {
		s.keys = []*signingKey{nk}
	}
}

func (s *storage) client(id string) (*Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, errors.New("client not found")
	}
	return c, nil
}

type tokenRequest struct {
	subject  string
	audience []string
}

func (r *tokenRequest) GetSubject() string    { return r.subject }
func (r *tokenRequest) GetAudience() []string { return r.audience }
func (r *tokenRequest) GetScopes() []string   { return []string{"openid"} }

func (s *storage) ClientCredentials(_ context.Context, id, secret string) (op.Client, error) {
	c, err := s.client(id)
	if err != nil || c.Secret != secret {
		return nil, errors.New("wrong client credentials")
	}
	return opClient{c}, nil
}

func (s *storage) ClientCredentialsTokenRequest(_ context.Context, id string, _ []string) (op.TokenRequest, error) {
	c, err := s.client(id)
	if err != nil {
		return nil, err
	}
	aud := c.Audience
	if len(aud) == 0 {
		aud = []string{c.ID}
	}
	return &tokenRequest{subject: c.ID, audience: aud}, nil
}

func (s *storage) CreateAccessToken(_ context.Context, r op.TokenRequest) (string, time.Time, error) {
	c, err := s.client(r.GetSubject())
	if err != nil {
		return "", time.Time{}, err
	}
	life := c.Lifetime
	if life == 0 {
		life = time.Hour
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	tok := &token{id: fmt.Sprintf("%x", id), clientID: c.ID, audience: r.GetAudience(), expires: time.Now().Add(life)}
	s.mu.Lock()
	s.tokens[tok.id] = tok
	s.mu.Unlock()
	return tok.id, tok.expires, nil
}

func (s *storage) GetPrivateClaimsFromScopes(_ context.Context, _, clientID string, _ []string) (map[string]any, error) {
	c, err := s.client(clientID)
	if err != nil {
		return nil, err
	}
	return c.Claims, nil
}

func (s *storage) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, _ string) error {
	s.mu.Lock()
	tok, ok := s.tokens[tokenID]
	s.mu.Unlock()
	if !ok || time.Now().After(tok.expires) {
		return errors.New("token is not active")
	}
	c, err := s.client(tok.clientID)
	if err != nil {
		return err
	}
	resp.Subject, resp.ClientID, resp.Audience = subject, tok.clientID, tok.audience
	resp.Expiration = oidc.FromTime(tok.expires)
	resp.Scope = oidc.SpaceDelimitedArray{"openid"}
	resp.Claims = c.Claims
	return nil
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[0], nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]op.Key, len(s.keys))
	for i, k := range s.keys {
		out[i] = publicKey{k}
	}
	return out, nil
}

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	c, err := s.client(id)
	if err != nil {
		return nil, err
	}
	return opClient{c}, nil
}

func (s *storage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	c, err := s.client(id)
	if err != nil || c.Secret != secret {
		return errors.New("wrong client credentials")
	}
	return nil
}

func (s *storage) Health(context.Context) error { return nil }

// What the provider does not do: interactive logins, refresh tokens,
// userinfo, JWT profile grants.
var errUnsupported = errors.New("identitytest: not supported")

func (s *storage) CreateAuthRequest(context.Context, *oidc.AuthRequest, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}
func (s *storage) AuthRequestByID(context.Context, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}
func (s *storage) AuthRequestByCode(context.Context, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}
func (s *storage) SaveAuthCode(context.Context, string, string) error { return errUnsupported }
func (s *storage) DeleteAuthRequest(context.Context, string) error    { return errUnsupported }
func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errUnsupported
}
func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, errUnsupported
}
func (s *storage) TerminateSession(context.Context, string, string) error { return errUnsupported }
func (s *storage) RevokeToken(context.Context, string, string, string) *oidc.Error {
	return oidc.ErrUnsupportedGrantType()
}
func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}
func (s *storage) SetUserinfoFromToken(context.Context, *oidc.UserInfo, string, string, string) error {
	return errUnsupported
}
func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errUnsupported
}
func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errUnsupported
}

// opClient is a Client as the OP sees it.
type opClient struct{ c *Client }

func (c opClient) GetID() string                       { return c.c.ID }
func (c opClient) RedirectURIs() []string              { return nil }
func (c opClient) PostLogoutRedirectURIs() []string    { return nil }
func (c opClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }
func (c opClient) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodBasic }
func (c opClient) ResponseTypes() []oidc.ResponseType  { return nil }
func (c opClient) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeClientCredentials}
}
func (c opClient) LoginURL(string) string               { return "" }
func (c opClient) IDTokenLifetime() time.Duration       { return time.Hour }
func (c opClient) DevMode() bool                        { return true }
func (c opClient) IsScopeAllowed(string) bool           { return true }
func (c opClient) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c opClient) ClockSkew() time.Duration             { return c.c.Skew }
func (c opClient) AccessTokenType() op.AccessTokenType {
	if c.c.JWT {
		return op.AccessTokenTypeJWT
	}
	return op.AccessTokenTypeBearer
}
func (c opClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c opClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
