package push

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// APNs sends through Apple's push notification service over HTTP/2 with
// token-based authentication: a JWT (ES256, kid = the key id, iss = the
// team id) signed with the .p8 key. Apple refuses tokens older than an
// hour and asks that they be renewed at most every 20 minutes, so one is
// reused for 40. Safe for concurrent use.
type APNs struct {
	base   string // https://api.push.apple.com
	keyID  string
	teamID string
	topic  string // the app's bundle id
	key    *ecdsa.PrivateKey
	client *http.Client
	now    func() time.Time

	mu     sync.Mutex
	token  string
	issued time.Time
}

// apnsTokenAge is how long one provider token is reused.
const apnsTokenAge = 40 * time.Minute

// APNsConfig configures APNs.
type APNsConfig struct {
	Key    []byte // the .p8 file: a PKCS#8 P-256 key in PEM
	KeyID  string
	TeamID string
	Topic  string // the bundle id the apps were built with
	// BaseURL: default https://api.push.apple.com (the sandbox is
	// https://api.sandbox.push.apple.com).
	BaseURL string
	Client  *http.Client // must speak HTTP/2; the default one does
	Now     func() time.Time
}

// NewAPNs reads the .p8 key.
func NewAPNs(cfg APNsConfig) (*APNs, error) {
	block, _ := pem.Decode(cfg.Key)
	if block == nil {
		return nil, errors.New("the APNs key is not a .p8 (PEM) file")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the APNs key: %w", err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("the APNs key is not an ECDSA P-256 key")
	}
	if cfg.KeyID == "" || cfg.TeamID == "" || cfg.Topic == "" {
		return nil, errors.New("APNs needs the key id, the team id and the topic (the app's bundle id)")
	}
	a := &APNs{base: strings.TrimSuffix(cfg.BaseURL, "/"), keyID: cfg.KeyID, teamID: cfg.TeamID, topic: cfg.Topic,
		key: key, client: cfg.Client, now: cfg.Now}
	if a.base == "" {
		a.base = "https://api.push.apple.com"
	}
	if a.client == nil {
		a.client = newClient()
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a, nil
}

// Destination is the API host.
func (a *APNs) Destination() string { return hostOf(a.base) }

func (a *APNs) providerToken() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if a.token != "" && now.Sub(a.issued) < apnsTokenAge {
		return a.token, nil
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": a.teamID, "iat": now.Unix()})
	t.Header["kid"] = a.keyID
	s, err := t.SignedString(a.key)
	if err != nil {
		return "", fmt.Errorf("sign the APNs provider token: %w", err)
	}
	a.token, a.issued = s, now
	return s, nil
}

func (a *APNs) dropToken(tok string) {
	a.mu.Lock()
	if a.token == tok {
		a.token = ""
	}
	a.mu.Unlock()
}

// Send sends one alert to a device token.
func (a *APNs) Send(ctx context.Context, device string, m Message) Result {
	tok, err := a.providerToken()
	if err != nil {
		return Result{Err: err}
	}
	payload := map[string]any{
		"aps": map[string]any{"alert": map[string]string{"title": m.Title, "body": m.Body}},
		"herald": map[string]any{
			"event_id": m.EventID, "topic": m.Topic, "type": m.Type, "unsubscribe_url": m.UnsubscribeURL,
			"url": m.URL, "payload": m.Data,
		},
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return Result{Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/3/device/"+url.PathEscape(device), bytes.NewReader(body))
	if err != nil {
		return Result{Err: err}
	}
	req.Header.Set("Authorization", "bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("apns-topic", a.topic)
	req.Header.Set("apns-push-type", "alert")
	priority := "10"
	if m.Urgency == "low" || m.Urgency == "very-low" {
		priority = "5"
	}
	req.Header.Set("apns-priority", priority)
	req.Header.Set("apns-expiration", strconv.FormatInt(a.now().Add(m.TTL).Unix(), 10))
	if m.CollapseID != "" {
		req.Header.Set("apns-collapse-id", m.CollapseID)
	}
	if id := uuidOf(m.EventID); id != "" {
		req.Header.Set("apns-id", id) // the same on a retry: Apple's logs match it
	}
	res, answer := do(a.client, req)
	if res.Err != nil {
		return res
	}
	var e struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(answer, &e)
	switch {
	case res.Status >= 200 && res.Status < 300:
	case e.Reason == "BadDeviceToken" || e.Reason == "Unregistered" || e.Reason == "DeviceTokenNotForTopic" || res.Status == http.StatusGone:
		res.Gone = true
	case e.Reason == "ExpiredProviderToken" || e.Reason == "InvalidProviderToken":
		a.dropToken(tok)
		res.Permanent = false
	}
	if e.Reason != "" {
		res.Reason = strings.ToLower(e.Reason)
	}
	return res
}

// uuidOf returns an event id (a UUID, or a ULID's 26 characters of
// Crockford base32 are not one) as the canonical UUID text APNs wants, or
// "" when it is not a UUID.
func uuidOf(id string) string {
	h := strings.ReplaceAll(id, "-", "")
	if len(h) != 32 || strings.Trim(strings.ToLower(h), "0123456789abcdef") != "" {
		return ""
	}
	h = strings.ToLower(h)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
