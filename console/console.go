// Package console serves Herald's web console at /console: static pages,
// script and style embedded in the binary, which call the /v1 API from the
// browser. The operator signs in with a key, kept in a sealed HttpOnly,
// SameSite=Strict session cookie with a CSRF token for every change (see
// Sessions); the tenant portal, which may be framed by another site, keeps
// its link's token in the tab and sends it in the Authorization header.
// The key never appears in a URL or a log.
//
// The operator console is at /console/; the tenant portal, the same pages
// limited to one tenant's subscriptions, at /console/portal, opened with a
// link from POST /v1/tenants/{id}/portal-links.
package console

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var files embed.FS

// Config holds the console's settings; the zero value is usable.
type Config struct {
	// FrameAncestors are the origins that may embed the tenant portal in
	// a frame (CSP frame-ancestors sources such as
	// https://app.example.com); none: no one. The operator console is
	// never framed.
	FrameAncestors []string
	// Sessions keeps the operator console's cookie sessions (see
	// Sessions); nil makes a random-keyed one.
	Sessions *Sessions
	// OIDC, when set, offers sign-in with an OpenID provider beside the
	// API key.
	OIDC *OIDCConfig
}

// Handler serves the console. It is safe for concurrent use.
type Handler struct {
	static fs.FS
	// operatorCSP and portalCSP differ in frame-ancestors only.
	operatorCSP, portalCSP string
	modTime                time.Time
	sessions               *Sessions
	oidc                   *OIDCConfig
	oidcJSON               *oidcJSON // what GET /console/session offers
}

// New returns a handler for the paths /console, /console/ and below.
func New(cfg Config) *Handler {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree is part of the build
	}
	ancestors := "'none'"
	if len(cfg.FrameAncestors) > 0 {
		ancestors = strings.Join(cfg.FrameAncestors, " ")
	}
	if cfg.Sessions == nil {
		cfg.Sessions = NewSessions(nil)
	}
	h := &Handler{static: sub, operatorCSP: csp("'none'"), portalCSP: csp(ancestors), modTime: time.Now(), sessions: cfg.Sessions, oidc: cfg.OIDC}
	if cfg.OIDC != nil && cfg.OIDC.Login != nil {
		name := cfg.OIDC.Name
		if name == "" {
			name = cfg.OIDC.Login.String()
		}
		h.oidcJSON = &oidcJSON{Name: name, URL: loginPath}
	} else {
		h.oidc = nil
	}
	return h
}

// csp is the Content-Security-Policy of every console response: the
// console's own script and style only (no inline script, no eval), API
// calls to this origin only.
func csp(frameAncestors string) string {
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
		"form-action 'self'; base-uri 'none'; frame-ancestors " + frameAncestors
}

// ServeHTTP serves the pages and their assets, GET and HEAD only.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	portal := r.URL.Path == "/console/portal"
	if portal {
		hdr.Set("Content-Security-Policy", h.portalCSP)
	} else {
		hdr.Set("Content-Security-Policy", h.operatorCSP)
		hdr.Set("X-Frame-Options", "DENY")
	}
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	switch r.URL.Path {
	case "/console/session":
		h.sessions.serveSession(w, r, h.oidcJSON)
		return
	case loginPath, CallbackPath:
		if h.oidc == nil {
			http.NotFound(w, r)
		} else if r.URL.Path == loginPath {
			h.oidcLogin(w, r)
		} else {
			h.oidcCallback(w, r)
		}
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var name string
	switch p := r.URL.Path; {
	case p == "/console":
		http.Redirect(w, r, "/console/", http.StatusMovedPermanently)
		return
	case p == "/console/":
		name = "index.html"
	case portal:
		name = "portal.html"
	case strings.HasPrefix(p, "/console/assets/"):
		name = "assets/" + path.Base(p)
	default:
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(h.static, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	// Pages and assets change with the binary: revalidate each load.
	hdr.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, h.modTime, bytes.NewReader(b))
}
