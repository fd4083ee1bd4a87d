package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/source"
)

// Sources is the source runtime as the API sees it (source.Runtime): told
// of changes, and handed inbound requests.
type Sources interface {
	// Changed wakes the runtime after a source changed.
	Changed()
	// Receive verifies an inbound request for the source and commits its
	// event, returning after the commit.
	Receive(ctx context.Context, id string, header http.Header, body []byte) (source.Received, error)
}

// Source limits.
const (
	sourceIDPrefix = "src_"
	// maxInboundBody bounds an inbound webhook's body, read whole before
	// it is verified; the topic's max_event_bytes still applies.
	maxInboundBody = 1 << 20
)

type sourceRequest struct {
	Kind        *string          `json:"kind"`
	Config      json.RawMessage  `json:"config"`
	Topic       *string          `json:"topic"`
	Mapping     json.RawMessage  `json:"mapping"`
	Description *string          `json:"description"`
	Shards      *int             `json:"shards"`
	State       *string          `json:"state"`
	ID          *json.RawMessage `json:"id"`
	Tenant      *string          `json:"tenant"`
}

type sourceShardJSON struct {
	Shard          int    `json:"shard"`
	Node           string `json:"node"`
	LeaseExpiresAt string `json:"lease_expires_at,omitempty"`
	Lag            int64  `json:"lag"`
	EventsIn       int64  `json:"events_in"`
	Duplicates     int64  `json:"duplicates"`
	Errors         int64  `json:"errors"`
	LastError      string `json:"last_error,omitempty"`
	LastErrorAt    string `json:"last_error_at,omitempty"`
	ReportedAt     string `json:"reported_at,omitempty"`
	State          string `json:"state,omitempty"`
}

// sourceJSON is a source on the wire: config without its secrets, and the
// status its shards' runners last reported.
type sourceJSON struct {
	ID          string          `json:"id"`
	Kind        string          `json:"kind"`
	Config      json.RawMessage `json:"config"`
	Topic       string          `json:"topic"`
	Mapping     json.RawMessage `json:"mapping"`
	Description string          `json:"description"`
	Shards      int             `json:"shards"`
	State       string          `json:"state"`
	StateReason string          `json:"state_reason,omitempty"`
	// Status is what the source is doing: "running", "starting",
	// "retrying" (StatusReason says why) or "paused".
	Status       string            `json:"status"`
	StatusReason string            `json:"status_reason,omitempty"`
	Tenant       string            `json:"tenant,omitempty"`
	Managed      bool              `json:"managed"`
	InboundURL   string            `json:"inbound_path,omitempty"`
	Lag          int64             `json:"lag"`
	EventsIn     int64             `json:"events_in"`
	Duplicates   int64             `json:"duplicates"`
	Errors       int64             `json:"errors"`
	LastError    string            `json:"last_error,omitempty"`
	LastErrorAt  string            `json:"last_error_at,omitempty"`
	ShardStatus  []sourceShardJSON `json:"shard_status"`
	CreatedAt    string            `json:"created_at"`
	UpdatedAt    string            `json:"updated_at"`
}

type sourceListJSON struct {
	Sources    []sourceJSON `json:"sources"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

func (s *Server) sourceStore() (herald.SourceStore, error) {
	if s.sources == nil || s.sourceKinds == nil {
		return nil, herald.Errorf(herald.CodeUnavailable, "sources are not available on this server")
	}
	return s.sources, nil
}

// sourceCaller checks that the caller may manage sources: an admin, or a
// caller of a tenant that may publish somewhere (it manages only its
// tenant's sources). It returns the caller's tenant ("" for an admin).
func sourceCaller(r *http.Request) (string, error) {
	p := principalFrom(r.Context())
	if p.tenant != "" {
		for _, sc := range p.scopes {
			if sc.Action == herald.ActionPublish {
				return p.tenant, nil
			}
		}
		return "", herald.Errorf(herald.CodeForbidden, "managing a tenant's sources needs a publish scope")
	}
	if !p.scopes.IsAdmin() {
		return "", herald.Errorf(herald.CodeForbidden, "this operation needs the admin scope")
	}
	return "", nil
}

// checkSourceTopic refuses a tenant's source whose topic template can
// render topics outside the tenant's namespace, or, for a tenant's caller,
// outside its publish scopes.
func checkSourceTopic(r *http.Request, t *herald.Tenant, tmpl string) error {
	if t == nil {
		return nil
	}
	pattern := source.TemplatePattern(tmpl)
	if ns := t.Namespace(); pattern == "" || !herald.CoversPattern(ns, pattern) {
		return &herald.Error{Code: herald.CodeForbidden, Field: "topic",
			Message: "a source of tenant " + t.ID + " may publish only to topics matching " + ns + "; topic " + truncate(tmpl, 300) + " can reach " + pattern}
	}
	if p := principalFrom(r.Context()); p.tenant != "" && !p.scopes.Allows(herald.ActionPublish, pattern) {
		return &herald.Error{Code: herald.CodeForbidden, Field: "topic",
			Message: "this key may not publish to " + pattern + ", which topic " + truncate(tmpl, 300) + " can reach"}
	}
	return nil
}

func (s *Server) toSourceJSON(ctx context.Context, src herald.Source, withStatus bool) sourceJSON {
	out := sourceJSON{
		ID: src.ID, Kind: src.Kind, Config: src.Config, Topic: src.Topic, Mapping: src.Mapping,
		Description: src.Description, Shards: src.Shards, State: string(src.State), StateReason: src.StateReason,
		Managed: src.Managed, Tenant: src.Tenant, Lag: -1, ShardStatus: []sourceShardJSON{},
		CreatedAt: formatTime(src.CreatedAt), UpdatedAt: formatTime(src.UpdatedAt),
	}
	if k, ok := s.sourceKinds.Get(src.Kind); ok {
		out.Config = k.Public(src.Config)
		if _, ok := k.(source.Receiver); ok {
			out.InboundURL = "/v1/inbound/" + src.ID
		}
	}
	if len(out.Config) == 0 {
		out.Config = json.RawMessage("{}")
	}
	if len(out.Mapping) == 0 {
		out.Mapping = json.RawMessage("{}")
	}
	out.Status = "starting"
	if src.State == herald.SourcePaused {
		out.Status = "paused"
	} else if k, ok := s.sourceKinds.Get(src.Kind); ok {
		if _, runs := k.(source.Runner); !runs {
			out.Status = "running" // inbound: it runs when a request comes
		}
	}
	if !withStatus {
		return out
	}
	shards, err := s.sources.SourceShards(ctx, src.ID)
	if err != nil {
		return out
	}
	running, now := 0, time.Now()
	var retryAt time.Time
	var lastAt time.Time
	known := false
	var lag int64
	for _, sh := range shards {
		if sh.Shard >= max(src.Shards, 1) {
			continue // a shard of an earlier, larger shard count
		}
		j := sourceShardJSON{Shard: sh.Shard, Node: sh.Node, Lag: sh.Lag, EventsIn: sh.EventsIn, Duplicates: sh.Duplicates, Errors: sh.Errors, LastError: sh.LastError}
		if !sh.LeaseExpiresAt.IsZero() {
			j.LeaseExpiresAt = formatTime(sh.LeaseExpiresAt)
		}
		if !sh.LastErrorAt.IsZero() {
			j.LastErrorAt = formatTime(sh.LastErrorAt)
		}
		if !sh.ReportedAt.IsZero() {
			j.ReportedAt = formatTime(sh.ReportedAt)
		}
		j.State = string(sh.State)
		if sh.LeaseExpiresAt.Before(now) && sh.State != herald.ShardRetrying {
			j.State = "" // no live runner: its last report says nothing of now
		}
		switch herald.ShardState(j.State) {
		case herald.ShardRunning:
			running++
		case herald.ShardRetrying:
			if sh.LastErrorAt.After(retryAt) || retryAt.IsZero() {
				retryAt, out.StatusReason = sh.LastErrorAt, sh.LastError
			}
		}
		out.ShardStatus = append(out.ShardStatus, j)
		out.EventsIn += sh.EventsIn
		out.Duplicates += sh.Duplicates
		out.Errors += sh.Errors
		if sh.Lag >= 0 {
			lag += sh.Lag
			known = true
		}
		if sh.LastError != "" && sh.LastErrorAt.After(lastAt) {
			lastAt, out.LastError, out.LastErrorAt = sh.LastErrorAt, sh.LastError, formatTime(sh.LastErrorAt)
		}
	}
	if known {
		out.Lag = lag
	}
	if out.Status == "starting" {
		switch {
		case out.StatusReason != "":
			out.Status = "retrying"
		case running >= max(src.Shards, 1):
			out.Status = "running"
		}
	}
	return out
}

// configFieldError names a kind's config member as "config.<member>".
func configFieldError(err error) error {
	if e, ok := errors.AsType[*herald.Error](err); ok && e.Code == herald.CodeInvalid && !strings.HasPrefix(e.Field, "config") {
		c := *e
		c.Field = strings.TrimSuffix("config."+e.Field, ".")
		return &c
	}
	return err
}

// applySourceRequest checks the request's fields and writes them into src;
// create says every required field must be there.
func (s *Server) applySourceRequest(req *sourceRequest, src *herald.Source, create bool) error {
	if req.ID != nil {
		return herald.FieldErrorf("id", "id is assigned by Herald")
	}
	if create {
		if req.Kind == nil || *req.Kind == "" {
			return herald.FieldErrorf("kind", "kind is required: one of %s", strings.Join(s.sourceKinds.Names(), ", "))
		}
		src.Kind = *req.Kind
	} else if req.Kind != nil && *req.Kind != src.Kind {
		return herald.FieldErrorf("kind", "a source's kind cannot change (it is %s); create another source", src.Kind)
	}
	kind, ok := s.sourceKinds.Get(src.Kind)
	if !ok {
		return herald.FieldErrorf("kind", "unknown kind %q: one of %s", src.Kind, strings.Join(s.sourceKinds.Names(), ", "))
	}
	if create || req.Config != nil {
		var prev json.RawMessage
		if !create {
			prev = src.Config
		}
		cfg, err := kind.Validate(req.Config, prev)
		if err != nil {
			return configFieldError(err)
		}
		if len(cfg) > herald.MaxSourceConfigSize {
			return herald.FieldErrorf("config", "config is %d bytes; the limit is %d", len(cfg), herald.MaxSourceConfigSize)
		}
		src.Config = cfg
	}
	if create && req.Topic == nil {
		return source.ValidateTopicTemplate("")
	}
	if req.Topic != nil {
		if err := source.ValidateTopicTemplate(*req.Topic); err != nil {
			return err
		}
		src.Topic = *req.Topic
	}
	if create || req.Mapping != nil {
		_, canon, err := source.ParseMapping(req.Mapping)
		if err != nil {
			return err
		}
		src.Mapping = canon
	}
	if req.Description != nil {
		if len(*req.Description) > herald.MaxDescriptionLen || !utf8.ValidString(*req.Description) {
			return herald.FieldErrorf("description", "description must be at most %d bytes of UTF-8", herald.MaxDescriptionLen)
		}
		src.Description = *req.Description
	}
	if create {
		src.Shards = 1
	}
	if req.Shards != nil {
		if *req.Shards < 1 || *req.Shards > herald.MaxSourceShards {
			return herald.FieldErrorf("shards", "shards must be from 1 to %d, got %d", herald.MaxSourceShards, *req.Shards)
		}
		src.Shards = *req.Shards
	}
	if req.State != nil {
		switch st := herald.SourceState(*req.State); st {
		case herald.SourceActive, herald.SourcePaused:
			if st != src.State {
				src.State, src.StateReason = st, ""
				if st == herald.SourcePaused {
					src.StateReason = "paused through the API"
				}
			}
		default:
			return herald.FieldErrorf("state", "state must be active or paused, got %q", *req.State)
		}
	}
	return nil
}

func (s *Server) createSource(w http.ResponseWriter, r *http.Request) error {
	st, err := s.sourceStore()
	if err != nil {
		return err
	}
	if _, err := sourceCaller(r); err != nil {
		return err
	}
	var req sourceRequest
	if err := decodeJSON(w, r, maxJSONBody, false, &req); err != nil {
		return err
	}
	asked := ""
	if req.Tenant != nil {
		asked = *req.Tenant
	}
	tenant, err := s.tenantFor(r, asked)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	src := herald.Source{ID: newSourceID(), State: herald.SourceActive, CreatedAt: now, UpdatedAt: now}
	if err := s.applySourceRequest(&req, &src, true); err != nil {
		return err
	}
	if err := checkSourceTopic(r, tenant, src.Topic); err != nil {
		return err
	}
	if tenant != nil {
		src.Tenant = tenant.ID
	}
	if err := s.createWithinLimits(r.Context(), st, tenant, src); err != nil {
		return err
	}
	s.sourcesChanged()
	w.Header().Set("Location", "/v1/sources/"+src.ID)
	return writeJSON(w, http.StatusCreated, s.toSourceJSON(r.Context(), src, false))
}

// createWithinLimits stores src unless the server has herald.MaxSources
// sources or its tenant its limits.sources (CodeConflict). A tenant's
// check and insert are serialised on this node, as for subscriptions.
func (s *Server) createWithinLimits(ctx context.Context, st herald.SourceStore, tenant *herald.Tenant, src herald.Source) error {
	if tenant != nil {
		s.tenantMu.Lock()
		defer s.tenantMu.Unlock()
	}
	existing, err := st.ListSources(ctx, "", herald.MaxSources)
	if err != nil {
		return err
	}
	if len(existing) >= herald.MaxSources {
		return herald.Errorf(herald.CodeConflict, "this server has %d sources, the limit; delete one first", len(existing))
	}
	if err := checkTenantSources(tenant, existing); err != nil {
		return err
	}
	return st.CreateSource(ctx, src)
}

func (s *Server) listSources(w http.ResponseWriter, r *http.Request) error {
	st, err := s.sourceStore()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	after, err := decodeIDCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	tenant, err := sourceCaller(r)
	if err != nil {
		return err
	}
	if tenant == "" {
		tenant = q.Get("tenant") // an admin may ask for one tenant's
	} else if t := q.Get("tenant"); t != "" && t != tenant {
		return writeJSON(w, http.StatusOK, sourceListJSON{Sources: []sourceJSON{}})
	}
	var page []herald.Source
	if tenant == "" {
		if page, err = st.ListSources(r.Context(), after, int(limit)+1); err != nil {
			return err
		}
	} else {
		// At most herald.MaxSources on the server: read them all, keep
		// the tenant's.
		all, err := st.ListSources(r.Context(), after, herald.MaxSources+1)
		if err != nil {
			return err
		}
		for _, src := range all {
			if src.Tenant == tenant && len(page) <= int(limit) {
				page = append(page, src)
			}
		}
	}
	out := sourceListJSON{Sources: []sourceJSON{}}
	for i, src := range page {
		if i == int(limit) {
			out.NextCursor = encodeCursor(page[i-1].ID)
			break
		}
		out.Sources = append(out.Sources, s.toSourceJSON(r.Context(), src, true))
	}
	return writeJSON(w, http.StatusOK, out)
}

// loadSource reads the source of the path, as the caller may see it: a
// tenant's caller finds only its tenant's sources (others' answer
// CodeNotFound, as sources that do not exist).
func (s *Server) loadSource(r *http.Request) (herald.Source, error) {
	st, err := s.sourceStore()
	if err != nil {
		return herald.Source{}, err
	}
	tenant, err := sourceCaller(r)
	if err != nil {
		return herald.Source{}, err
	}
	src, err := st.GetSource(r.Context(), r.PathValue("id"))
	if err == nil && tenant != "" && src.Tenant != tenant {
		return herald.Source{}, herald.Errorf(herald.CodeNotFound, "source %s does not exist", truncate(r.PathValue("id"), 80))
	}
	return src, err
}

func (s *Server) getSource(w http.ResponseWriter, r *http.Request) error {
	src, err := s.loadSource(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.toSourceJSON(r.Context(), src, true))
}

func managedError(src herald.Source) error {
	return herald.Errorf(herald.CodeConflict, "source %s is declared in the server's sources file; change it there", src.ID)
}

func (s *Server) updateSource(w http.ResponseWriter, r *http.Request) error {
	var req sourceRequest
	if err := decodeJSON(w, r, maxJSONBody, false, &req); err != nil {
		return err
	}
	return s.changeSource(w, r, func(src *herald.Source) error {
		if req.Tenant != nil && *req.Tenant != src.Tenant {
			return herald.FieldErrorf("tenant", "a source's tenant cannot change; create another source")
		}
		if err := s.applySourceRequest(&req, src, false); err != nil {
			return err
		}
		if req.Topic == nil || src.Tenant == "" {
			return nil
		}
		t, err := s.store.GetTenant(r.Context(), src.Tenant)
		if err != nil {
			return err
		}
		return checkSourceTopic(r, &t, src.Topic)
	})
}

// changeSource applies change to the stored source and saves it, reading
// it again when another writer changed it in between.
func (s *Server) changeSource(w http.ResponseWriter, r *http.Request, change func(*herald.Source) error) error {
	st, err := s.sourceStore()
	if err != nil {
		return err
	}
	for range 5 {
		src, err := s.loadSource(r)
		if err != nil {
			return err
		}
		if src.Managed {
			return managedError(src)
		}
		if err := change(&src); err != nil {
			return err
		}
		src.UpdatedAt = s.now().UTC()
		err = st.UpdateSource(r.Context(), src)
		if herald.IsCode(err, herald.CodeConflict) {
			continue
		}
		if err != nil {
			return err
		}
		s.sourcesChanged()
		src.Version++
		return writeJSON(w, http.StatusOK, s.toSourceJSON(r.Context(), src, true))
	}
	return herald.Errorf(herald.CodeConflict, "the source kept changing; try again")
}

func (s *Server) deleteSource(w http.ResponseWriter, r *http.Request) error {
	st, err := s.sourceStore()
	if err != nil {
		return err
	}
	src, err := s.loadSource(r)
	if err != nil {
		return err
	}
	if src.Managed {
		return managedError(src)
	}
	if err := st.DeleteSource(r.Context(), src.ID); err != nil {
		return err
	}
	s.sourcesChanged()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) pauseSource(w http.ResponseWriter, r *http.Request) error {
	return s.changeSource(w, r, func(src *herald.Source) error {
		src.State, src.StateReason = herald.SourcePaused, "paused through the API"
		return nil
	})
}

func (s *Server) resumeSource(w http.ResponseWriter, r *http.Request) error {
	return s.changeSource(w, r, func(src *herald.Source) error {
		src.State, src.StateReason = herald.SourceActive, ""
		return nil
	})
}

func (s *Server) sourcesChanged() {
	if s.sourceRuntime != nil {
		s.sourceRuntime.Changed()
	}
}

type inboundJSON struct {
	ID        string `json:"id"`
	Topic     string `json:"topic"`
	Seq       int64  `json:"seq"`
	Duplicate bool   `json:"duplicate"`
}

// receiveInbound serves POST /v1/inbound/{source}: a third party's webhook,
// verified by the source's own scheme instead of an API key, committed
// before the answer. The raw body becomes the payload byte for byte.
func (s *Server) receiveInbound(w http.ResponseWriter, r *http.Request) error {
	if s.sourceRuntime == nil {
		return herald.Errorf(herald.CodeUnavailable, "sources are not available on this server")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxInboundBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return herald.Errorf(herald.CodeTooLarge, "the body is over %d bytes", maxInboundBody)
		}
		return herald.Errorf(herald.CodeInvalid, "the body could not be read")
	}
	res, err := s.sourceRuntime.Receive(r.Context(), r.PathValue("source"), r.Header, bytes.Clone(body))
	if err != nil {
		return err
	}
	status := http.StatusAccepted
	if res.Duplicate {
		status = http.StatusOK
	}
	return writeJSON(w, status, inboundJSON(res))
}

var sourceIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newSourceID returns "src_" and 10 random bytes in lowercase base32.
func newSourceID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return sourceIDPrefix + strings.ToLower(sourceIDEncoding.EncodeToString(b[:]))
}
