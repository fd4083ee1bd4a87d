// Package identitytest runs a real OpenID provider in-process for tests:
// zitadel/oidc's OP package behind an httptest server, with discovery,
// JWKS, the token endpoint (client credentials grant, and the
// authorization code grant with PKCE for clients with redirect URIs; JWT
// or opaque access tokens) and the introspection endpoint (RFC 7662).
// Tests shape its clients (claims, audience, token lifetime and clock
// skew), choose the user who signs in at its login step (which has no
// page: it signs the current user in at once, or refuses when there is
// none), rotate its signing key, revoke tokens, make it misbehave and take
// it down. Import it from tests only.
package identitytest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
	// Claims are added to its tokens (JWT) and introspection answers;
	// a "scope" string joins the scope of introspection answers.
	Claims map[string]any
	// Lifetime of its tokens; 0: an hour. Negative issues expired ones.
	Lifetime time.Duration
	// Skew moves iat and nbf back by it; negative moves them ahead, so
	// tokens are not valid yet.
	Skew time.Duration
	// RedirectURIs make it a client of the authorization code grant (a
	// web application signing people in), redirected back to one of
	// these. Without a Secret it is a public client, which must use PKCE.
	RedirectURIs []string
}

// User is a person who signs in at the provider's login step.
type User struct {
	Subject string
	// Claims are added to the user's ID tokens, JWT access tokens and
	// introspection answers.
	Claims map[string]any
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
	// Logins counts the sign-ins completed at the login step.
	Logins atomic.Int64
	st     *storage
	o      op.OpenIDProvider
}

// New starts a provider, closed at the end of the test.
func New(t testing.TB) *Provider {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	p := &Provider{Issuer: "http://" + srv.Listener.Addr().String(), srv: srv,
		st: &storage{clients: map[string]*Client{}, tokens: map[string]*token{}, users: map[string]*User{},
			requests: map[string]*authRequest{}, codes: map[string]string{}}}
	p.st.rotate(false)
	var key [32]byte
	_, _ = rand.Read(key[:])
	o, err := op.NewOpenIDProvider(p.Issuer, &op.Config{CryptoKey: key, CodeMethodS256: true}, p.st, op.WithAllowInsecure())
	if err != nil {
		t.Fatal(err)
	}
	p.o = o
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
		case "/login":
			p.login(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
	srv.Start()
	t.Cleanup(srv.Close)
	return p
}

// login is the provider's login step, where the browser lands from the
// authorization endpoint: it signs the current user (SetUser) in at once
// and sends the browser on to the authorization callback, which redirects
// to the client with a code. With no current user it answers the client
// access_denied, as a person who cancels does.
func (p *Provider) login(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	p.st.mu.Lock()
	req, ok := p.st.requests[id]
	user := p.st.current
	if ok && user != nil {
		req.subject, req.done, req.authTime = user.Subject, true, time.Now()
		req.badNonce = p.st.badNonce
	}
	p.st.mu.Unlock()
	switch {
	case !ok:
		http.Error(w, "no such authorization request", http.StatusBadRequest)
	case user == nil:
		q := url.Values{"error": {"access_denied"}, "error_description": {"the user cancelled the sign-in"}, "state": {req.State}}
		http.Redirect(w, r, req.RedirectURI+"?"+q.Encode(), http.StatusFound)
	default:
		p.Logins.Add(1)
		http.Redirect(w, r, p.o.AuthorizationEndpoint().Absolute(p.Issuer)+"/callback?id="+url.QueryEscape(id), http.StatusFound)
	}
}

// SetUser makes u the person who signs in at the login step; nil makes
// the login step refuse (access_denied).
func (p *Provider) SetUser(u *User) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	p.st.current = u
	if u != nil {
		p.st.users[u.Subject] = u
	}
}

// SetBadNonce makes the ID tokens of sign-ins from now on carry a nonce
// other than the one the client sent (true), as a code injected from
// another sign-in would.
func (p *Provider) SetBadNonce(bad bool) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	p.st.badNonce = bad
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
	id, clientID, subject string
	audience              []string
	expires               time.Time
}

// authRequest is a sign-in of the authorization code grant in progress.
type authRequest struct {
	*oidc.AuthRequest
	id       string
	subject  string // the user, once signed in
	done     bool
	authTime time.Time
	badNonce bool
}

func (a *authRequest) GetID() string          { return a.id }
func (a *authRequest) GetACR() string         { return "" }
func (a *authRequest) GetAMR() []string       { return []string{"pwd"} }
func (a *authRequest) GetAudience() []string  { return []string{a.ClientID} }
func (a *authRequest) GetAuthTime() time.Time { return a.authTime }
func (a *authRequest) GetClientID() string    { return a.ClientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if a.CodeChallenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: a.CodeChallenge, Method: a.CodeChallengeMethod}
}
func (a *authRequest) GetNonce() string {
	if a.badNonce {
		return "not-" + a.Nonce
	}
	return a.Nonce
}
func (a *authRequest) GetRedirectURI() string             { return a.RedirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType { return a.ResponseType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode { return a.ResponseMode }
func (a *authRequest) GetScopes() []string                { return a.Scopes }
func (a *authRequest) GetState() string                   { return a.State }
func (a *authRequest) GetSubject() string                 { return a.subject }
func (a *authRequest) Done() bool                         { return a.done }

// storage is the provider's state: what the client credentials and
// authorization code grants, the key set and introspection need.
type storage struct {
	mu       sync.Mutex
	keys     []*signingKey // [0] signs
	n        int
	clients  map[string]*Client
	tokens   map[string]*token
	users    map[string]*User
	current  *User
	badNonce bool
	requests map[string]*authRequest // by id
	codes    map[string]string       // code to request id
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
	clientID := r.GetSubject() // the client credentials grant: the client is the subject
	if ar, ok := r.(op.AuthRequest); ok {
		clientID = ar.GetClientID()
	}
	c, err := s.client(clientID)
	if err != nil {
		return "", time.Time{}, err
	}
	life := c.Lifetime
	if life == 0 {
		life = time.Hour
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	tok := &token{id: fmt.Sprintf("%x", id), clientID: c.ID, subject: r.GetSubject(), audience: r.GetAudience(), expires: time.Now().Add(life)}
	s.mu.Lock()
	s.tokens[tok.id] = tok
	s.mu.Unlock()
	return tok.id, tok.expires, nil
}

// claimsOf are the claims of a user's tokens, or of a client's own.
func (s *storage) claimsOf(subject, clientID string) (map[string]any, error) {
	s.mu.Lock()
	u, ok := s.users[subject]
	s.mu.Unlock()
	if ok && subject != clientID {
		return u.Claims, nil
	}
	c, err := s.client(clientID)
	if err != nil {
		return nil, err
	}
	return c.Claims, nil
}

func (s *storage) GetPrivateClaimsFromScopes(_ context.Context, subject, clientID string, _ []string) (map[string]any, error) {
	return s.claimsOf(subject, clientID)
}

func (s *storage) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, _ string) error {
	s.mu.Lock()
	tok, ok := s.tokens[tokenID]
	s.mu.Unlock()
	if !ok || time.Now().After(tok.expires) {
		return errors.New("token is not active")
	}
	claims, err := s.claimsOf(tok.subject, tok.clientID)
	if err != nil {
		return err
	}
	resp.Subject, resp.ClientID, resp.Audience = subject, tok.clientID, tok.audience
	resp.Expiration = oidc.FromTime(tok.expires)
	resp.Scope = oidc.SpaceDelimitedArray{"openid"}
	// A "scope" claim (a space-separated string) is the token's scope.
	if sc, ok := claims["scope"].(string); ok {
		resp.Scope = append(resp.Scope, strings.Fields(sc)...)
		claims = maps.Clone(claims)
		delete(claims, "scope")
	}
	resp.Claims = claims
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

// What the provider does not do: refresh tokens, userinfo from a token,
// JWT profile grants.
var errUnsupported = errors.New("identitytest: not supported")

func (s *storage) CreateAuthRequest(_ context.Context, r *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	var id [12]byte
	_, _ = rand.Read(id[:])
	ar := &authRequest{AuthRequest: r, id: fmt.Sprintf("%x", id)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[ar.id] = ar
	return ar, nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ar, ok := s.requests[id]
	if !ok {
		return nil, errors.New("no such authorization request")
	}
	return ar, nil
}

func (s *storage) AuthRequestByCode(_ context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ar, ok := s.requests[s.codes[code]]
	if !ok {
		return nil, errors.New("no such code")
	}
	return ar, nil
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

// DeleteAuthRequest ends a sign-in once its code is exchanged: a code
// works once.
func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	for c, rid := range s.codes {
		if rid == id {
			delete(s.codes, c)
		}
	}
	return nil
}

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

// SetUserinfoFromScopes fills the ID token of a user's sign-in with the
// user's claims.
func (s *storage) SetUserinfoFromScopes(_ context.Context, ui *oidc.UserInfo, subject, _ string, _ []string) error {
	s.mu.Lock()
	u, ok := s.users[subject]
	s.mu.Unlock()
	ui.Subject = subject
	if ok {
		for k, v := range u.Claims {
			ui.AppendClaims(k, v)
		}
	}
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
func (c opClient) RedirectURIs() []string              { return c.c.RedirectURIs }
func (c opClient) PostLogoutRedirectURIs() []string    { return nil }
func (c opClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }
func (c opClient) AuthMethod() oidc.AuthMethod {
	if c.c.Secret == "" {
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic
}
func (c opClient) ResponseTypes() []oidc.ResponseType {
	if len(c.c.RedirectURIs) > 0 {
		return []oidc.ResponseType{oidc.ResponseTypeCode}
	}
	return nil
}
func (c opClient) GrantTypes() []oidc.GrantType {
	if len(c.c.RedirectURIs) > 0 {
		return []oidc.GrantType{oidc.GrantTypeClientCredentials, oidc.GrantTypeCode}
	}
	return []oidc.GrantType{oidc.GrantTypeClientCredentials}
}
func (c opClient) LoginURL(id string) string            { return "/login?id=" + url.QueryEscape(id) }
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
