package console

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/identity"
)

// loginCookie holds a sign-in with an OpenID provider in progress (its
// state, nonce and PKCE verifier), sealed like a session, for the
// callback only. It is SameSite=Lax: the provider sends the browser back
// with a navigation from its own site, which a Strict cookie would not
// go with.
const (
	loginCookie     = "herald_oidc"
	loginCookiePath = "/console/oidc/"
	// loginTTL bounds the time from "Sign in with" to the callback.
	loginTTL = 10 * time.Minute
	// CallbackPath is where the provider sends the browser back: register
	// {public URL}/console/oidc/callback as a redirect URI at the provider.
	CallbackPath = "/console/oidc/callback"
	loginPath    = "/console/oidc/login"
)

// OIDCConfig turns on sign-in with an OpenID provider in the operator
// console.
type OIDCConfig struct {
	Login *identity.Login
	// Name is the provider's name on the button ("Sign in with <Name>");
	// "" is the issuer's host.
	Name string
	// RedirectURL is this console's callback as registered at the
	// provider; "" builds it from the request the sign-in starts from
	// (scheme and Host), which is right unless a proxy changes them.
	RedirectURL string
	// Audit records each sign-in in the audit log; nil records none.
	Audit func(ctx context.Context, e herald.AuditEntry)
	// Logger tells of refused sign-ins; nil discards.
	Logger *slog.Logger
}

type loginData struct {
	identity.LoginRequest
	Expires int64 `json:"e"`
}

// oidcLogin serves GET /console/oidc/login: it starts a sign-in (fresh
// state, nonce and PKCE verifier, kept in the login cookie) and sends the
// browser to the provider.
func (h *Handler) oidcLogin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	redirect := h.oidc.RedirectURL
	if redirect == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		redirect = scheme + "://" + r.Host + CallbackPath
	}
	req := identity.NewLoginRequest(redirect)
	to, err := h.oidc.Login.AuthURL(r.Context(), req)
	if err != nil {
		h.loginFailed(w, r, err)
		return
	}
	d := loginData{LoginRequest: req, Expires: h.sessions.now().Add(loginTTL).Unix()}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: h.sessions.sealAs(loginCookie, d), Path: loginCookiePath,
		MaxAge: int(loginTTL.Seconds()), HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, to, http.StatusFound)
}

// oidcCallback serves GET /console/oidc/callback: the provider's answer.
// The state must be the login cookie's (else another site started it),
// the code is traded with the cookie's PKCE verifier, and the ID token
// must carry the cookie's nonce. Then the browser gets a session cookie
// as a key's sign-in does, and goes on to the console.
func (h *Handler) oidcCallback(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// The login cookie serves one callback, whatever its end.
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: loginCookiePath, MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
	q := r.URL.Query()
	var d loginData
	c, err := r.Cookie(loginCookie)
	switch {
	case err != nil || !h.sessions.openAs(loginCookie, c.Value, &d):
		h.loginFailed(w, r, herald.Errorf(herald.CodeInvalid, "this browser started no sign-in, or it was from another browser: start again from the console"))
		return
	case h.sessions.now().Unix() >= d.Expires:
		h.loginFailed(w, r, herald.Errorf(herald.CodeInvalid, "the sign-in took longer than %s: start again from the console", loginTTL))
		return
	case !d.CheckState(q.Get("state")):
		h.loginFailed(w, r, herald.Errorf(herald.CodeInvalid, "the provider's answer does not carry this sign-in's state: start again from the console"))
		return
	case q.Get("error") != "":
		msg := q.Get("error")
		if desc := q.Get("error_description"); desc != "" {
			msg += ": " + desc
		}
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		h.loginFailed(w, r, herald.Errorf(herald.CodeUnauthorized, "the provider did not sign you in (%s)", msg))
		return
	}
	id, err := h.oidc.Login.Exchange(r.Context(), d.LoginRequest, q.Get("code"))
	if err != nil {
		h.loginFailed(w, r, err)
		return
	}
	scopes := make([]string, len(id.Scopes))
	for i, sc := range id.Scopes {
		scopes[i] = sc.String()
	}
	h.sessions.start(w, r, sessionData{Subject: id.Subject, Scopes: scopes, Tenant: id.Tenant})
	if h.oidc.Audit != nil {
		changes, _ := json.Marshal(map[string]any{"sign_in": "oidc", "scopes": scopes})
		h.oidc.Audit(context.WithoutCancel(r.Context()), herald.AuditEntry{
			Time: h.sessions.now().UTC(), Principal: id.Subject, Tenant: id.Tenant,
			Method: http.MethodGet, Route: CallbackPath, Object: id.Subject, Status: http.StatusSeeOther,
			Remote: r.RemoteAddr, Changes: changes,
		})
	}
	h.logger().Info("console: signed in with the OpenID provider", "subject", id.Subject, "tenant", id.Tenant)
	// A relative redirect: the session cookie is SameSite=Strict, so the
	// page this navigation (begun at the provider) lands on loads without
	// it; the page's own requests to this origin carry it.
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

func (h *Handler) logger() *slog.Logger {
	if h.oidc != nil && h.oidc.Logger != nil {
		return h.oidc.Logger
	}
	return slog.New(slog.DiscardHandler)
}

var failedPage = template.Must(template.New("failed").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<title>Sign-in failed · Herald</title><link rel="stylesheet" href="/console/assets/app.css"></head>
<body><main id="view"><section class="login"><h1>Sign-in failed</h1>
<p class="error" id="signin-error">{{.}}</p>
<p><a id="signin-again" href="/console/">Back to the console</a></p></section></main></body></html>
`))

// loginFailed answers a refused sign-in with a page that says why: 400
// for a callback this browser did not start, 401 for a refusal of the
// provider or a bad ID token, 403 for a person who maps to nothing, 503
// for a provider that cannot be reached.
func (h *Handler) loginFailed(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "the sign-in failed"
	var he *herald.Error
	if errors.As(err, &he) {
		msg = he.Message
		switch he.Code {
		case herald.CodeInvalid:
			status = http.StatusBadRequest
		case herald.CodeUnauthorized:
			status = http.StatusUnauthorized
		case herald.CodeForbidden:
			status = http.StatusForbidden
		case herald.CodeUnavailable:
			status = http.StatusServiceUnavailable
		}
	}
	h.logger().Warn("console: an OpenID sign-in was refused", "status", status, "reason", msg, "remote", r.RemoteAddr, "err", err)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = failedPage.Execute(w, msg)
}
