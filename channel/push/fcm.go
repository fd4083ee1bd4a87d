package push

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FCM sends through Firebase Cloud Messaging's HTTP v1 API
// (POST /v1/projects/{project}/messages:send) with an OAuth2 access token
// obtained from a service account: a JWT signed with the account's RSA key
// is exchanged at its token URI (the JWT bearer grant, RFC 7523), and the
// token is cached until a minute before it expires. Safe for concurrent
// use.
type FCM struct {
	base     string // https://fcm.googleapis.com
	project  string
	email    string
	keyID    string
	key      *rsa.PrivateKey
	tokenURL string
	client   *http.Client
	now      func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
}

// FCMScope is the OAuth2 scope of the messaging API.
const FCMScope = "https://www.googleapis.com/auth/firebase.messaging"

// ServiceAccount is the part of a Google service-account key file (JSON)
// FCM needs.
type ServiceAccount struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`
}

// FCMConfig configures FCM.
type FCMConfig struct {
	// Credentials is the service-account key file's content.
	Credentials []byte
	// BaseURL is the API's base; default https://fcm.googleapis.com.
	BaseURL string
	Client  *http.Client
	Now     func() time.Time
}

// NewFCM reads the service account.
func NewFCM(cfg FCMConfig) (*FCM, error) {
	var sa ServiceAccount
	if err := json.Unmarshal(cfg.Credentials, &sa); err != nil {
		return nil, fmt.Errorf("the FCM credentials are not a service-account key file (JSON): %w", err)
	}
	if sa.ProjectID == "" || sa.ClientEmail == "" || sa.PrivateKey == "" {
		return nil, errors.New("the FCM service-account file lacks project_id, client_email or private_key")
	}
	block, _ := pem.Decode([]byte(sa.PrivateKey))
	if block == nil {
		return nil, errors.New("the FCM service account's private_key is not PEM")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the FCM service account's private_key: %w", err)
	}
	key, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("the FCM service account's private_key is not an RSA key")
	}
	if sa.TokenURI == "" {
		sa.TokenURI = "https://oauth2.googleapis.com/token"
	}
	f := &FCM{base: strings.TrimSuffix(cfg.BaseURL, "/"), project: sa.ProjectID, email: sa.ClientEmail, keyID: sa.PrivateKeyID,
		key: key, tokenURL: sa.TokenURI, client: cfg.Client, now: cfg.Now}
	if f.base == "" {
		f.base = "https://fcm.googleapis.com"
	}
	if f.client == nil {
		f.client = newClient()
	}
	if f.now == nil {
		f.now = time.Now
	}
	return f, nil
}

// Destination is the API host.
func (f *FCM) Destination() string { return hostOf(f.base) }

// accessToken returns a cached token or exchanges a new assertion.
func (f *FCM) accessToken(ctx context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock() // one exchange at a time; the rest wait for its token
	now := f.now()
	if f.token != "" && now.Before(f.expires.Add(-time.Minute)) {
		return f.token, nil
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": f.email, "scope": FCMScope, "aud": f.tokenURL,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
	if f.keyID != "" {
		t.Header["kid"] = f.keyID
	}
	assertion, err := t.SignedString(f.key)
	if err != nil {
		return "", fmt.Errorf("sign the FCM token request: %w", err)
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := f.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("FCM token exchange: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("FCM token exchange answered %d: %s", resp.StatusCode, excerpt(body))
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("FCM token exchange: no access_token in the answer")
	}
	f.token, f.expires = tok.AccessToken, now.Add(time.Duration(max(tok.ExpiresIn, 60))*time.Second)
	return f.token, nil
}

// dropToken forgets a token the API refused, so the next send gets a new
// one.
func (f *FCM) dropToken(tok string) {
	f.mu.Lock()
	if f.token == tok {
		f.token = ""
	}
	f.mu.Unlock()
}

// Send sends one message to a registration token.
func (f *FCM) Send(ctx context.Context, token string, m Message) Result {
	access, err := f.accessToken(ctx)
	if err != nil {
		return Result{Err: err, Reason: "auth-failed"}
	}
	data := map[string]string{"event_id": m.EventID, "topic": m.Topic, "unsubscribe_url": m.UnsubscribeURL}
	if m.Type != "" {
		data["type"] = m.Type
	}
	if m.URL != "" {
		data["url"] = m.URL
	}
	if m.Data != "" {
		data["payload"] = m.Data
	}
	msg := map[string]any{
		"token":        token,
		"notification": map[string]string{"title": m.Title, "body": m.Body},
		"data":         data,
		"android":      map[string]any{"ttl": fmt.Sprintf("%ds", int(m.TTL.Seconds())), "priority": map[bool]string{true: "HIGH", false: "NORMAL"}[m.Urgency == "high"]},
	}
	body, err := json.Marshal(map[string]any{"message": msg})
	if err != nil {
		return Result{Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.base+"/v1/projects/"+url.PathEscape(f.project)+"/messages:send", bytes.NewReader(body))
	if err != nil {
		return Result{Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+access)
	req.Header.Set("Content-Type", "application/json")
	res, answer := do(f.client, req)
	if res.Err != nil {
		return res
	}
	var e struct {
		Name  string `json:"name"`
		Error struct {
			Status  string `json:"status"`
			Details []struct {
				ErrorCode string `json:"errorCode"`
			} `json:"details"`
		} `json:"error"`
	}
	_ = json.Unmarshal(answer, &e)
	res.ID = e.Name
	code := e.Error.Status
	for _, d := range e.Error.Details {
		if d.ErrorCode != "" {
			code = d.ErrorCode
		}
	}
	switch {
	case res.Status >= 200 && res.Status < 300:
	case code == "UNREGISTERED" || res.Status == http.StatusNotFound:
		// The app was uninstalled or the token expired: never again.
		res.Gone, res.Reason = true, "unregistered"
	case res.Status == http.StatusUnauthorized || res.Status == http.StatusForbidden:
		f.dropToken(access)
		res.Permanent = false
	case code == "INVALID_ARGUMENT" && res.Status == http.StatusBadRequest:
		res.Reason = "invalid-argument"
	}
	if res.Reason == "" && code != "" && res.Status >= 300 {
		res.Reason = strings.ToLower(strings.ReplaceAll(code, "_", "-"))
	}
	return res
}
