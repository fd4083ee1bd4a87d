package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
)

// Audit limits.
const (
	// maxAuditBody is how much of a request body the audit log reads to
	// record what it changed; a longer body is recorded as truncated.
	maxAuditBody = 64 << 10
	// maxAuditChanges bounds the stored, masked changes.
	maxAuditChanges = 16 << 10
	// auditWriteTimeout bounds the store write and the publish of one entry.
	auditWriteTimeout = 5 * time.Second
)

// audited reports whether calls of the route go to the audit log: every
// change made through the API, but the publishing of events (the data,
// recorded in the topics' logs themselves) and the issuing of connection
// tokens (which change nothing).
func audited(method, path string, acc access) bool {
	if acc != authenticated && acc != adminOnly && !(acc == selfAuthenticated && path == "/v1/push/subscriptions") {
		return false
	}
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return false
	}
	switch path {
	case "/v1/topics/{topic}/events", "/v1/topics/{topic}/events:batch", "/v1/tokens":
		return false
	}
	return true
}

// auditRecord collects an audited request's facts on their way through
// authentication and the handler.
type auditRecord struct {
	p    *principal // set by authenticate, even when it refuses the call
	body bytes.Buffer
	over bool // the body was longer than maxAuditBody
}

type auditKey struct{}

func auditRecordFrom(ctx context.Context) *auditRecord {
	rec, _ := ctx.Value(auditKey{}).(*auditRecord)
	return rec
}

// teeBody copies what a handler reads of a body into the record.
type teeBody struct {
	io.ReadCloser
	rec *auditRecord
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if room := maxAuditBody - b.rec.body.Len(); room > 0 {
		b.rec.body.Write(p[:min(n, room)])
		if n > room {
			b.rec.over = true
		}
	} else if n > 0 {
		b.rec.over = true
	}
	return n, err
}

// audit records a call of the route in the audit log after it is
// answered, whatever the answer, and publishes the entry to herald.audit.
// A failure to record is logged; the caller's answer is already sent.
func (s *Server) audit(pattern string, names []string, next http.Handler) http.Handler {
	method, route, _ := strings.Cut(pattern, " ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &auditRecord{}
		if r.Body != nil {
			r.Body = &teeBody{ReadCloser: r.Body, rec: rec}
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), auditKey{}, rec)))
		if rec.p == nil {
			return // no credentials, or unknown ones: not a caller's change
		}
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		var objects []string
		for _, n := range names {
			objects = append(objects, r.PathValue(n))
		}
		object := strings.Join(objects, "/")
		if object == "" {
			// A creation names what it made in Location.
			if loc := sw.Header().Get("Location"); loc != "" {
				if i := strings.LastIndexByte(loc, '/'); i >= 0 {
					object, _ = url.PathUnescape(loc[i+1:])
				}
			}
		}
		e := herald.AuditEntry{
			Time: s.now().UTC(), Principal: rec.p.subject(), Tenant: rec.p.tenant,
			Method: method, Route: route, Object: object, Status: status,
			RequestID: requestIDFrom(r.Context()), Remote: r.RemoteAddr,
			Changes: maskedChanges(rec),
		}
		s.recordAudit(context.WithoutCancel(r.Context()), e)
	})
}

// RecordAudit appends an entry about something done outside the API's
// routes (a sign-in to the console) to the audit log, and publishes it to
// herald.audit, as the API does for its own changes. A failure is logged
// and counted; the caller goes on.
func (s *Server) RecordAudit(ctx context.Context, e herald.AuditEntry) { s.recordAudit(ctx, e) }

// recordAudit appends the entry to the store and publishes it to
// herald.audit.
func (s *Server) recordAudit(ctx context.Context, e herald.AuditEntry) {
	ctx, cancel := context.WithTimeout(ctx, auditWriteTimeout)
	defer cancel()
	id, err := s.store.AppendAudit(ctx, e)
	if err != nil {
		s.metrics.auditFailures.Inc()
		s.log.Error("audit: record a change", "method", e.Method, "route", e.Route, "object", e.Object,
			"principal", e.Principal, "request_id", e.RequestID, "err", err)
		return
	}
	e.ID = id
	s.metrics.audited.Inc()
	if !s.cfg.PublishAudit || s.publisher == nil || s.topics == nil {
		return
	}
	if !s.auditTopic.Load() {
		if _, err := s.topics.Get(ctx, herald.AuditTopic); herald.IsCode(err, herald.CodeNotFound) {
			now := s.now().UTC()
			t := herald.Topic{Name: herald.AuditTopic, CreatedAt: now, UpdatedAt: now}.WithDefaults()
			if _, _, err := s.topics.Put(ctx, t); err != nil && !herald.IsCode(err, herald.CodeConflict) {
				s.log.Warn("audit: create the topic", "topic", herald.AuditTopic, "err", err)
				return
			}
		} else if err != nil {
			s.log.Warn("audit: look up the topic", "topic", herald.AuditTopic, "err", err)
			return
		}
		s.auditTopic.Store(true)
	}
	body, _ := json.Marshal(toAuditJSON(e))
	ev := &herald.Event{ID: herald.NewID(e.Time), Topic: herald.AuditTopic, Type: "herald.audit." + strings.ToLower(e.Method),
		Key: e.Object, ContentType: "application/json", Payload: body, Time: e.Time}
	if _, err := s.publisher.Publish(ctx, engine.PublishParams{Events: []*herald.Event{ev}, System: true, Source: "herald"}); err != nil {
		s.log.Warn("audit: publish", "topic", herald.AuditTopic, "audit_id", id, "err", err)
	}
}

// maskedChanges returns the recorded body as JSON with its secrets
// masked, {"truncated":true} for one too long to read whole, or nil for
// none or one that is not JSON.
func maskedChanges(rec *auditRecord) json.RawMessage {
	if rec.over {
		return json.RawMessage(`{"truncated":true}`)
	}
	if len(bytes.TrimSpace(rec.body.Bytes())) == 0 {
		return nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(rec.body.Bytes()))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil
	}
	b, err := json.Marshal(mask("", v))
	if err != nil {
		return nil
	}
	if len(b) > maxAuditChanges {
		return json.RawMessage(`{"truncated":true}`)
	}
	return b
}

// masked replaces a secret value in the audit log.
const masked = "***"

// secretName reports whether a member of that name holds a secret.
func secretName(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"secret", "password", "passwd", "token", "private", "credential", "authorization", "api_key", "apikey", "sasl", "signing"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return n == "key" || strings.HasSuffix(n, "_key")
}

// mask returns v with the values of secret members masked, every value of
// a "headers" object masked (static headers carry credentials), and URLs
// that carry credentials or a query masked.
func mask(name string, v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, c := range v {
			switch {
			case secretName(k):
				out[k] = masked
			case strings.EqualFold(k, "headers"):
				if hm, ok := c.(map[string]any); ok {
					m := make(map[string]any, len(hm))
					for h := range hm {
						m[h] = masked
					}
					out[k] = m
				} else {
					out[k] = mask(k, c)
				}
			default:
				out[k] = mask(k, c)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, c := range v {
			out[i] = mask(name, c)
		}
		return out
	case string:
		if strings.Contains(strings.ToLower(name), "url") || strings.Contains(v, "://") {
			if u, err := url.Parse(v); err == nil && u.Scheme != "" && (u.User != nil || u.RawQuery != "") {
				u.User, u.RawQuery = nil, ""
				return u.String() + "?" + masked
			}
		}
		return v
	}
	return v
}

// auditJSON is an audit entry on the wire.
type auditJSON struct {
	ID        string          `json:"id"`
	Time      string          `json:"time"`
	Principal string          `json:"principal"`
	Tenant    string          `json:"tenant,omitempty"`
	Action    string          `json:"action"` // "PUT /v1/tenants/{id}"
	Method    string          `json:"method"`
	Route     string          `json:"route"`
	Object    string          `json:"object,omitempty"`
	Status    int             `json:"status"`
	Result    string          `json:"result"` // "success" or "failure"
	RequestID string          `json:"request_id"`
	Remote    string          `json:"remote"`
	Changes   json.RawMessage `json:"changes,omitempty"`
}

func toAuditJSON(e herald.AuditEntry) auditJSON {
	result := "success"
	if e.Status >= 400 {
		result = "failure"
	}
	return auditJSON{ID: strconv.FormatInt(e.ID, 10), Time: formatTime(e.Time), Principal: e.Principal, Tenant: e.Tenant,
		Action: e.Method + " " + e.Route, Method: e.Method, Route: e.Route, Object: e.Object, Status: e.Status, Result: result,
		RequestID: e.RequestID, Remote: e.Remote, Changes: e.Changes}
}

type auditListJSON struct {
	Entries    []auditJSON `json:"entries"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

// listAudit serves GET /v1/audit: admins see every entry, a tenant's key
// its tenant's.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) error {
	p := principalFrom(r.Context())
	if p.tenant == "" && !p.scopes.IsAdmin() {
		return herald.Errorf(herald.CodeForbidden, "this operation needs the admin scope")
	}
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	f := herald.AuditFilter{Principal: q.Get("principal"), Tenant: q.Get("tenant"), Object: q.Get("object"),
		Method: strings.ToUpper(q.Get("method")), Route: q.Get("route"), Limit: int(limit) + 1}
	if a := q.Get("action"); a != "" {
		m, rt, ok := strings.Cut(a, " ")
		if !ok {
			return herald.FieldErrorf("action", `action is a method and a route, like "DELETE /v1/tenants/{id}", got %q`, truncate(a, 200))
		}
		f.Method, f.Route = strings.ToUpper(m), rt
	}
	if p.tenant != "" {
		if f.Tenant != "" && f.Tenant != p.tenant {
			return writeJSON(w, http.StatusOK, auditListJSON{Entries: []auditJSON{}})
		}
		f.Tenant = p.tenant
	}
	for _, tm := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(tm.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return herald.FieldErrorf(tm.name, "%s must be an RFC 3339 time, like 2026-01-02T15:04:05Z, got %q", tm.name, truncate(v, 80))
			}
			*tm.dst = t
		}
	}
	if c := q.Get("cursor"); c != "" {
		raw, err := decodeCursor(c)
		id, perr := strconv.ParseInt(raw, 10, 64)
		if err != nil || perr != nil || id <= 0 {
			return herald.FieldErrorf("cursor", "cursor is not one this server issued")
		}
		f.BeforeID = id
	}
	entries, err := s.store.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	out := auditListJSON{Entries: []auditJSON{}}
	for i, e := range entries {
		if i == int(limit) {
			out.NextCursor = encodeCursor(strconv.FormatInt(entries[i-1].ID, 10))
			break
		}
		out.Entries = append(out.Entries, toAuditJSON(e))
	}
	return writeJSON(w, http.StatusOK, out)
}
