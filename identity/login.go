package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// LoginConfig configures sign-in with an OpenID provider.
type LoginConfig struct {
	// Issuer is the provider's issuer URL, as in OIDCConfig.
	Issuer string
	// ClientID and ClientSecret are Herald's registration at the
	// provider. No secret makes Herald a public client, which PKCE alone
	// protects.
	ClientID, ClientSecret string
	// Scopes asked for; "openid" is added when missing.
	Scopes []string
	// Mapping turns the claims of the ID token (and of the access token,
	// when it is a JWT of the same issuer) into scopes and a tenant.
	Mapping Mapping
	// Client calls the provider; nil is a client with a 10 s timeout.
	Client *http.Client
	Now    func() time.Time
	Logger *slog.Logger
}

// Login signs people in with an OpenID provider through the
// authorization code flow (OpenID Connect Core 3.1) with PKCE (RFC 7636,
// S256), a state that ties the answer to the browser that asked and a
// nonce that ties the ID token to the sign-in. It is safe for concurrent
// use and starts no goroutine; it asks the provider nothing until the
// first sign-in.
type Login struct {
	cfg LoginConfig
	o   *OIDC // verifies ID tokens: aud is the client id
}

// NewLogin returns a Login; the issuer and client id are required.
func NewLogin(cfg LoginConfig) (*Login, error) {
	if cfg.ClientID == "" {
		return nil, errors.New("identity: a client id is required to sign in with OpenID Connect")
	}
	if !slices.Contains(cfg.Scopes, "openid") {
		cfg.Scopes = append([]string{"openid"}, cfg.Scopes...)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	o, err := NewOIDC(OIDCConfig{Issuer: cfg.Issuer, Audiences: []string{cfg.ClientID}, Mapping: cfg.Mapping,
		Client: cfg.Client, Now: cfg.Now, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	return &Login{cfg: cfg, o: o}, nil
}

// LoginRequest is one sign-in in progress: what the browser that started
// it must bring back to finish it. Keep it where only that browser can
// read it back (a sealed, HttpOnly cookie).
type LoginRequest struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"` // the PKCE code verifier
	// RedirectURL is where the provider sends the browser back to; the
	// token request names it again.
	RedirectURL string `json:"r"`
}

// NewLoginRequest makes a sign-in with fresh random state, nonce and
// code verifier (32 bytes each).
func NewLoginRequest(redirectURL string) LoginRequest {
	return LoginRequest{State: random32(), Nonce: random32(), Verifier: random32(), RedirectURL: redirectURL}
}

func random32() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// CheckState reports whether the state the provider sent back is the
// request's (in constant time).
func (r LoginRequest) CheckState(state string) bool {
	return r.State != "" && subtle.ConstantTimeCompare([]byte(state), []byte(r.State)) == 1
}

// AuthURL is the provider's authorization endpoint with the request:
// where to send the browser. Errors: CodeUnavailable when the discovery
// document cannot be read.
func (l *Login) AuthURL(ctx context.Context, req LoginRequest) (string, error) {
	doc, err := l.discovery(ctx)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(req.Verifier))
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {l.cfg.ClientID},
		"redirect_uri":          {req.RedirectURL},
		"scope":                 {strings.Join(l.cfg.Scopes, " ")},
		"state":                 {req.State},
		"nonce":                 {req.Nonce},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
	}
	sep := "?"
	if strings.Contains(doc.AuthorizationEndpoint, "?") {
		sep = "&"
	}
	return doc.AuthorizationEndpoint + sep + q.Encode(), nil
}

func (l *Login) discovery(ctx context.Context) (*discovery, error) {
	doc, err := l.o.discovery(ctx)
	if err != nil {
		return nil, &herald.Error{Code: herald.CodeUnavailable, Message: "the OpenID provider cannot be reached; try again later", Err: err}
	}
	if doc.AuthorizationEndpoint == "" || doc.TokenEndpoint == "" {
		return nil, herald.Errorf(herald.CodeUnavailable, "the OpenID provider's discovery document names no authorization or token endpoint")
	}
	return doc, nil
}

// maxTokenResponse bounds the token endpoint's answer.
const maxTokenResponse = 256 << 10

// Exchange finishes the sign-in: it trades the code the provider sent
// back for tokens (with the request's code verifier), checks the ID
// token (signature, iss, aud and azp, exp, and the request's nonce) and
// maps its claims. Errors: CodeUnauthorized when the provider refuses the
// code (a wrong verifier, a code used twice or expired) or the ID token
// is not good, with the reason; CodeForbidden when the person maps to no
// Herald scope or to a tenant and admin at once; CodeUnavailable when the
// provider cannot be reached.
func (l *Login) Exchange(ctx context.Context, req LoginRequest, code string) (Identity, error) {
	if code == "" || len(code) > 4096 {
		return Identity{}, herald.Errorf(herald.CodeUnauthorized, "the provider sent back no usable code")
	}
	doc, err := l.discovery(ctx)
	if err != nil {
		return Identity{}, err
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {req.RedirectURL}, "code_verifier": {req.Verifier}}
	basic := l.cfg.ClientSecret != "" && (len(doc.TokenAuthMethods) == 0 || slices.Contains(doc.TokenAuthMethods, "client_secret_basic"))
	switch {
	case l.cfg.ClientSecret == "":
		form.Set("client_id", l.cfg.ClientID)
	case !basic:
		form.Set("client_id", l.cfg.ClientID)
		form.Set("client_secret", l.cfg.ClientSecret)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, doc.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return Identity{}, err
	}
	hreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hreq.Header.Set("Accept", "application/json")
	if basic {
		// RFC 6749 2.3.1: both form-encoded before Basic.
		hreq.SetBasicAuth(url.QueryEscape(l.cfg.ClientID), url.QueryEscape(l.cfg.ClientSecret))
	}
	resp, err := l.cfg.Client.Do(hreq)
	if err != nil {
		return Identity{}, &herald.Error{Code: herald.CodeUnavailable, Message: "the OpenID provider cannot be reached; try again later", Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse))
	if err != nil {
		return Identity{}, &herald.Error{Code: herald.CodeUnavailable, Message: "the OpenID provider's answer broke off", Err: err}
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		IDToken     string `json:"id_token"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.Unmarshal(body, &tok)
	switch {
	case resp.StatusCode >= 500:
		return Identity{}, herald.Errorf(herald.CodeUnavailable, "the OpenID provider's token endpoint answered %s; try again later", resp.Status)
	case resp.StatusCode != http.StatusOK:
		reason := tok.Error
		if reason == "" {
			reason = resp.Status
		}
		if tok.Description != "" {
			reason += ": " + truncate(tok.Description, 200)
		}
		return Identity{}, herald.Errorf(herald.CodeUnauthorized, "the OpenID provider refused the sign-in (%s)", reason)
	case tok.IDToken == "":
		return Identity{}, herald.Errorf(herald.CodeUnauthorized, "the OpenID provider answered no ID token (is the openid scope allowed for client %s?)", l.cfg.ClientID)
	}
	claims, err := l.o.claims(ctx, l.o.parser, tok.IDToken)
	if err != nil {
		var he *herald.Error
		if errors.As(err, &he) && he.Code == herald.CodeUnauthorized {
			he = &herald.Error{Code: he.Code, Message: "the ID token is not good: " + strings.TrimPrefix(he.Message, "the token "), Err: he.Err}
			return Identity{}, he
		}
		return Identity{}, err
	}
	if nonce, _ := claims["nonce"].(string); req.Nonce == "" || subtle.ConstantTimeCompare([]byte(nonce), []byte(req.Nonce)) != 1 {
		return Identity{}, herald.Errorf(herald.CodeUnauthorized, "the ID token's nonce is not this sign-in's: the answer belongs to another sign-in")
	}
	if aud, _ := claims.GetAudience(); len(aud) > 1 {
		if azp, _ := claims["azp"].(string); azp != l.cfg.ClientID {
			return Identity{}, herald.Errorf(herald.CodeUnauthorized, "the ID token names several audiences and another authorized party (azp)")
		}
	}
	// Providers differ in where they put roles and groups: many (such as
	// Keycloak) put them in the access token only. Read it too when it is
	// a JWT of the same issuer about the same person; the ID token wins.
	if LooksLikeJWT(tok.AccessToken) {
		at, err := l.o.claims(ctx, l.o.anyAudience, tok.AccessToken)
		switch {
		case err != nil:
			l.cfg.Logger.Debug("oidc sign-in: the access token is not a JWT Herald can read", "issuer", l.cfg.Issuer, "err", err)
		case at["sub"] == claims["sub"]:
			merged := maps.Clone(map[string]any(at))
			maps.Copy(merged, claims)
			claims = merged
		}
	}
	id, err := l.cfg.Mapping.apply(claims, SubjectPrefixOIDC)
	if err != nil {
		return Identity{}, err
	}
	if len(id.Scopes) == 0 {
		return Identity{}, herald.Errorf(herald.CodeForbidden, "%s signed in, but the configured claims map them to no Herald scope", strings.TrimPrefix(id.Subject, SubjectPrefixOIDC))
	}
	return id, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// String names the provider for people: its issuer's host.
func (l *Login) String() string {
	if u, err := url.Parse(l.cfg.Issuer); err == nil && u.Host != "" {
		return u.Host
	}
	return l.cfg.Issuer
}
