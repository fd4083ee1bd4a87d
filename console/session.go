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
// (or outside token) the operator signed in with, sealed with AES-GCM under
// the server's session key, in an HttpOnly, SameSite=Strict cookie (Secure
// over TLS) that script cannot read. Each session has a CSRF token, which
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

type sessionData struct {
	Credential string `json:"c"`
	CSRF       string `json:"x"`
	Expires    int64  `json:"e"`
}

func (s *Sessions) seal(d sessionData) string {
	plain, _ := json.Marshal(d)
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(SessionCookie)))
}

func (s *Sessions) open(v string) (sessionData, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return sessionData{}, false
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(SessionCookie))
	if err != nil {
		return sessionData{}, false
	}
	var d sessionData
	if json.Unmarshal(plain, &d) != nil || d.Credential == "" || s.now().Unix() >= d.Expires {
		return sessionData{}, false
	}
	return d, true
}

// Open returns the credential and CSRF token of r's session cookie; false
// when r has none, or a forged or expired one.
func (s *Sessions) Open(r *http.Request) (credential, csrf string, ok bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return "", "", false
	}
	d, ok := s.open(c.Value)
	return d.Credential, d.CSRF, ok
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
}

// serveSession serves /console/session: GET says whether the browser has
// a session (and its CSRF token), POST signs in with {"key": "..."} (JSON
// only, from this origin only, so no other site can sign a browser in),
// DELETE signs out (with the CSRF token).
func (s *Sessions) serveSession(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		out := sessionJSON{}
		if c, err := r.Cookie(SessionCookie); err == nil {
			if d, ok := s.open(c.Value); ok {
				out = sessionJSON{SignedIn: true, CSRFToken: d.CSRF, Expires: time.Unix(d.Expires, 0).UTC().Format(time.RFC3339)}
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
		s.start(w, r, req.Key)
	case http.MethodDelete:
		_, csrf, ok := s.Open(r)
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

// start sets a new session cookie for the credential and answers its CSRF
// token.
func (s *Sessions) start(w http.ResponseWriter, r *http.Request, credential string) {
	tok := make([]byte, 24)
	_, _ = rand.Read(tok)
	exp := s.now().Add(SessionTTL)
	d := sessionData{Credential: credential, CSRF: base64.RawURLEncoding.EncodeToString(tok), Expires: exp.Unix()}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: s.seal(d), Path: "/", Expires: exp, MaxAge: int(SessionTTL.Seconds()),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, sessionJSON{SignedIn: true, CSRFToken: d.CSRF, Expires: exp.UTC().Format(time.RFC3339)})
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
