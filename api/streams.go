package api

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"time"

	"github.com/heraldhq/herald"
)

// Streams serves the realtime endpoints; package stream's Hub implements
// it. The handlers authenticate the request themselves (API key or a
// connection token in ?token=).
type Streams interface {
	ServeSSE(w http.ResponseWriter, r *http.Request)
	ServeWebSocket(w http.ResponseWriter, r *http.Request)
}

// SetStreams attaches the realtime endpoints and the connection-token
// issuer (POST /v1/tokens). Call it before the server handles requests;
// until then those routes answer 503.
func (s *Server) SetStreams(st Streams, tokens http.Handler) {
	s.streams, s.tokens = st, tokens
}

// Authenticate checks the request's API key, as every API route does, and
// returns its scopes and a subject naming the key (for per-key connection
// limits). It implements stream.Authenticator.
func (s *Server) Authenticate(r *http.Request) (herald.Scopes, string, error) {
	p, err := s.principal(r)
	if err != nil {
		return nil, "", err
	}
	subject := p.keyID
	if subject == "" {
		subject = adminSubject
	}
	return p.scopes, subject, nil
}

// errKeyRevoked answers a stream or token whose key is gone.
var errKeyRevoked = herald.Errorf(herald.CodeUnauthorized, "the API key was deleted or has expired")

// CheckKey reports whether the key a subject of Authenticate names still
// holds: its expiry (zero: never), or CodeUnauthorized once it was deleted
// or has expired. The bootstrap admin always holds. It implements
// stream.KeyChecker, so tokens never outlive their key and streams end
// with it. A key deleted through this server fails at once; one deleted
// through another node within keyIndexTTL (2 s), the age of the list of
// keys it reads.
func (s *Server) CheckKey(ctx context.Context, subject string) (time.Time, error) {
	if subject == adminSubject {
		return time.Time{}, nil
	}
	k, err := s.keys.byID(ctx, subject)
	if herald.IsCode(err, herald.CodeNotFound) || err == nil && k.Expired(s.now()) {
		return time.Time{}, errKeyRevoked
	}
	if err != nil {
		return time.Time{}, err
	}
	return k.ExpiresAt, nil
}

// WriteProblem writes err as application/problem+json, exactly as the API
// writes its own errors, so streams and tokens answer in the same shape.
func (s *Server) WriteProblem(w http.ResponseWriter, r *http.Request, err error) {
	writeProblem(w, r, s.log, err)
}

var errNoStreams = &herald.Error{Code: herald.CodeUnavailable, Message: "this server does not serve realtime streams"}

func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request) error {
	if s.streams == nil {
		return errNoStreams
	}
	s.streams.ServeSSE(streamStarted{w, r}, r)
	return nil
}

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) error {
	if s.streams == nil {
		return errNoStreams
	}
	s.streams.ServeWebSocket(streamStarted{w, r}, r)
	return nil
}

// streamStarted tells the Listener that a stream's connection has
// authenticated once the stream starts: when it takes the connection over
// (SSE and WebSockets over HTTP/1) or answers 200 (SSE over HTTP/2). The
// stream package does either only after it accepted the key or connection
// token (tokens never reach principal), so a browser's stream is not
// among the connections closed to make room.
type streamStarted struct {
	http.ResponseWriter
	r *http.Request
}

func (w streamStarted) WriteHeader(status int) {
	if status == http.StatusOK || status == http.StatusSwitchingProtocols {
		connAuthenticated(w.r.Context())
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w streamStarted) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	connAuthenticated(w.r.Context())
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w streamStarted) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) issueToken(w http.ResponseWriter, r *http.Request) error {
	if s.tokens == nil {
		return errNoStreams
	}
	s.tokens.ServeHTTP(w, r)
	return nil
}
