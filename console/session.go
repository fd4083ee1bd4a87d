package console

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/identity"
)

// SessionCookie names the operator console's session cookie.
const SessionCookie = "herald_session"

// Session limits.
const (
	// SessionTTL is how long a console session lasts after sign-in.
	SessionTTL = 12 * time.Hour
	// maxCredential bounds the key or token a session carries (an access
	// token of an outside issuer is a few KiB at most).
	maxCredential = 3000
)

// Sessions keeps the operator console's sign-ins in cookies: the API key
// (or outside token) the operator signed in with, or for a sign-in with an
// OpenID provider the identity it vouched for (subject, scopes, tenant),
// sealed with AES-GCM under the server's session key, in an HttpOnly,
// SameSite=Strict cookie (Secure over TLS) that script cannot read. Each session has a CSRF token, which
// the console sends back in X-CSRF-Token on every change: a request that
// another site makes the browser send carries the cookie but cannot know
// the token. The API checks the credential on every request as if it had
// come in the Authorization header, so a revoked key ends its sessions at
// once. Safe for concurrent use.
type Sessions struct {
	aead cipher.AEAD
	now  func() time.Time
}

// NewSessions returns sessions sealed under a key derived from secret;
// an empty secret takes a random one (sessions then end when the process
// does, and work on this node only).
func NewSessions(secret []byte) *Sessions {
	key := make([]byte, 32)
	if len(secret) == 0 {
		_, _ = rand.Read(key)
	} else {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte("herald console session key v1"))
		key = m.Sum(nil)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // a 32-byte key always makes a cipher
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &Sessions{aead: aead, now: time.Now}
}

// sessionData is what a session cookie holds: a credential, or the
// identity of an OpenID sign-in (Subject set).
type sessionData struct {
	Credential string   `json:"c,omitempty"`
	Subject    string   `json:"u,omitempty"`
	Scopes     []string `json:"p,omitempty"`
	Tenant     string   `json:"t,omitempty"`
	CSRF       string   `json:"x"`
	Expires    int64    `json:"e"`
}

// sealAs seals v for a cookie of the name (the name is authenticated too,
// so one cookie's value is no good as another's).
func (s *Sessions) sealAs(name string, v any) string {
	plain, _ := json.Marshal(v)
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(name)))
}

// openAs opens what sealAs sealed into v.
func (s *Sessions) openAs(name, sealed string, v any) bool {
	raw, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return false
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(name))
	return err == nil && json.Unmarshal(plain, v) == nil
}

func (s *Sessions) seal(d sessionData) string { return s.sealAs(SessionCookie, d) }

func (s *Sessions) open(v string) (sessionData, bool) {
	var d sessionData
	if !s.openAs(SessionCookie, v, &d) || (d.Credential == "" && d.Subject == "") || s.now().Unix() >= d.Expires {
		return sessionData{}, false
	}
	return d, true
}

// Open returns what r's session cookie holds: the credential it signed in
// with, or (for a sign-in with an OpenID provider; credential "") the
// identity the provider vouched for, and the session's CSRF token; false
// when r has no session, or a forged or expired one.
func (s *Sessions) Open(r *http.Request) (credential string, id identity.Identity, csrf string, ok bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return "", identity.Identity{}, "", false
	}
	d, ok := s.open(c.Value)
	if !ok {
		return "", identity.Identity{}, "", false
	}
	if d.Subject != "" {
		scopes, err := herald.ParseScopes(d.Scopes)
		if err != nil {
			return "", identity.Identity{}, "", false
		}
		id = identity.Identity{Subject: d.Subject, Scopes: scopes, Tenant: d.Tenant, Expires: time.Unix(d.Expires, 0)}
	}
	return d.Credential, id, d.CSRF, true
}

// CheckCSRF reports whether r carries its session's CSRF token.
func CheckCSRF(r *http.Request, csrf string) bool {
	got := r.Header.Get("X-CSRF-Token")
	return csrf != "" && subtle.ConstantTimeCompare([]byte(got), []byte(csrf)) == 1
}

type sessionJSON struct {
	SignedIn  bool   `json:"signed_in"`
	CSRFToken string `json:"csrf_token,omitempty"`
	Expires   string `json:"expires_at,omitempty"`
	// Subject names who signed in with an OpenID provider.
	Subject string `json:"subject,omitempty"`
	// OIDC offers sign-in with an OpenID provider.
	OIDC *oidcJSON `json:"oidc,omitempty"`
}

type oidcJSON struct {
	Name string `json:"name"` // "Sign in with <name>"
	URL  string `json:"url"`  // where the browser goes to start
}

// serveSession serves /console/session: GET says whether the browser has
// a session (and its CSRF token) and how else it may sign in, POST signs
// in with {"key": "..."} (JSON only, from this origin only, so no other
// site can sign a browser in), DELETE signs out (with the CSRF token).
func (s *Sessions) serveSession(w http.ResponseWriter, r *http.Request, oidc *oidcJSON) {
	w.Header().Set("Cache-Control", "no-store")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		out := sessionJSON{OIDC: oidc}
		if c, err := r.Cookie(SessionCookie); err == nil {
			if d, ok := s.open(c.Value); ok {
				out = sessionJSON{SignedIn: true, CSRFToken: d.CSRF, Expires: time.Unix(d.Expires, 0).UTC().Format(time.RFC3339), Subject: d.Subject, OIDC: oidc}
			}
		}
		writeJSON(w, http.StatusOK, out)
	case http.MethodPost:
		if !sameOrigin(r) {
			http.Error(w, "sign-in must come from this server's console", http.StatusForbidden)
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			http.Error(w, "sign-in takes application/json", http.StatusUnsupportedMediaType)
			return
		}
		var req struct {
			Key string `json:"key"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<10)).Decode(&req); err != nil || req.Key == "" || len(req.Key) > maxCredential {
			http.Error(w, "the body must be {\"key\": \"<API key>\"}", http.StatusBadRequest)
			return
		}
		d := s.start(w, r, sessionData{Credential: req.Key})
		writeJSON(w, http.StatusOK, sessionJSON{SignedIn: true, CSRFToken: d.CSRF, Expires: time.Unix(d.Expires, 0).UTC().Format(time.RFC3339)})
	case http.MethodDelete:
		_, _, csrf, ok := s.Open(r)
		if ok && !CheckCSRF(r, csrf) {
			http.Error(w, "signing out needs the session's X-CSRF-Token", http.StatusForbidden)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
			Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// start sets a new session cookie for d (a credential or an identity),
// with a new CSRF token and expiry, and returns what it sealed.
func (s *Sessions) start(w http.ResponseWriter, r *http.Request, d sessionData) sessionData {
	tok := make([]byte, 24)
	_, _ = rand.Read(tok)
	exp := s.now().Add(SessionTTL)
	d.CSRF, d.Expires = base64.RawURLEncoding.EncodeToString(tok), exp.Unix()
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: s.seal(d), Path: "/", Expires: exp, MaxAge: int(SessionTTL.Seconds()),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	return d
}

// sameOrigin reports whether r's Origin (when the browser sends one) is
// this server.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return r.Header.Get("Sec-Fetch-Site") == "" || r.Header.Get("Sec-Fetch-Site") == "same-origin"
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
