package template

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald"
)

// Named is a template kept in the library under a name, for many
// subscriptions to share. A subscription uses it when its config names it
// ("template": "order-shipped"), or, when it names none and has no
// templates of its own, when the template's Topic pattern matches the
// event's topic and its EventType (if set) the event's type.
type Named struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Topic is a topic or pattern ("orders.*") the template applies to;
	// "" applies it only to subscriptions that name it.
	Topic string `json:"topic,omitempty"`
	// EventType narrows Topic to events of this type; "" is any type.
	EventType string `json:"event_type,omitempty"`
	Templates
	UpdatedAt time.Time `json:"updated_at"`
}

// Library limits.
const (
	MaxNameLen        = 64
	MaxDescriptionLen = 500
	MaxNamed          = 1000
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// Validate checks the name, the scope and the templates (as Templates.Validate
// does, with an HTML part). Errors are CodeInvalid and name the field:
// "name", "topic", "event_type", "subject", "text", "html".
func (n Named) Validate() error {
	if len(n.Name) > MaxNameLen || !nameRE.MatchString(n.Name) {
		return herald.FieldErrorf("name", "template name %q must be 1 to %d characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", truncate(n.Name, 80), MaxNameLen)
	}
	if len(n.Description) > MaxDescriptionLen {
		return herald.FieldErrorf("description", "description is %d bytes; the limit is %d", len(n.Description), MaxDescriptionLen)
	}
	if n.Topic != "" {
		if err := herald.ValidatePattern(n.Topic); err != nil {
			return err // names "topic"
		}
	}
	if n.EventType != "" && n.Topic == "" {
		return herald.FieldErrorf("event_type", "event_type narrows topic: set topic too")
	}
	if len(n.EventType) > herald.MaxTopicNameLen {
		return herald.FieldErrorf("event_type", "event_type is %d bytes; the limit is %d", len(n.EventType), herald.MaxTopicNameLen)
	}
	return n.Templates.Validate(true)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// LibraryOwner is the herald.StateStore owner the library keeps the
// platform's templates under, one key per name; a tenant's are under
// LibraryOwner + "/" + its id (see Owner).
const LibraryOwner = "templates"

// Owner returns the herald.StateStore owner of a tenant's templates
// ("" is the platform's).
func Owner(tenant string) string {
	if tenant == "" {
		return LibraryOwner
	}
	return LibraryOwner + "/" + tenant
}

// Library keeps named templates in a herald.StateStore and resolves which
// one an event's message uses. It holds one set of templates for the
// platform (tenant "") and one for each tenant: a tenant's subscription
// uses its tenant's templates first, then the platform's. Reads are
// cached per set: a change made through this Library is seen at once on
// this node, one made on another node within the refresh interval (5 s).
// It is safe for concurrent use.
type Library struct {
	store herald.StateStore
	now   func() time.Time
	// refresh bounds how stale a cached set may be; 5 s.
	refresh time.Duration

	mu    sync.Mutex
	cache map[string]*libCache // by tenant
}

// libCache is one tenant's parsed templates and when they were read.
type libCache struct {
	loaded  time.Time
	entries map[string]*libEntry
}

type libEntry struct {
	named Named
	set   *Set
}

// NewLibrary returns a library over st; now nil means time.Now.
func NewLibrary(st herald.StateStore, now func() time.Time) *Library {
	if now == nil {
		now = time.Now
	}
	return &Library{store: st, now: now, refresh: 5 * time.Second, cache: map[string]*libCache{}}
}

// Put validates and stores n in the tenant's templates (creating or
// replacing it) and reports whether it was created. Each tenant, and the
// platform, holds at most MaxNamed.
func (l *Library) Put(ctx context.Context, tenant string, n Named) (Named, bool, error) {
	if err := n.Validate(); err != nil {
		return Named{}, false, err
	}
	owner := Owner(tenant)
	_, err := l.store.GetState(ctx, owner, n.Name)
	created := false
	switch {
	case herald.ErrorCode(err) == herald.CodeNotFound:
		created = true
		if count, err := l.store.CountState(ctx, owner); err != nil {
			return Named{}, false, fmt.Errorf("count templates: %w", err)
		} else if count >= MaxNamed {
			return Named{}, false, &herald.Error{Code: herald.CodeConflict, Field: "name", Message: fmt.Sprintf("the library holds %d templates, its limit", MaxNamed)}
		}
	case err != nil:
		return Named{}, false, fmt.Errorf("read template %s: %w", n.Name, err)
	}
	n.UpdatedAt = l.now().UTC().Truncate(time.Millisecond)
	b, err := json.Marshal(n)
	if err != nil {
		return Named{}, false, fmt.Errorf("encode template: %w", err)
	}
	if err := l.store.CommitState(ctx, owner, []herald.StateEntry{{Key: n.Name, Value: b, UpdatedAt: n.UpdatedAt}}, 0); err != nil {
		return Named{}, false, fmt.Errorf("store template %s: %w", n.Name, err)
	}
	l.invalidate(tenant)
	return n, created, nil
}

// Get returns the tenant's named template, or CodeNotFound (the
// platform's templates are not the tenant's to read).
func (l *Library) Get(ctx context.Context, tenant, name string) (Named, error) {
	e, err := l.store.GetState(ctx, Owner(tenant), name)
	if err != nil {
		if herald.ErrorCode(err) == herald.CodeNotFound {
			return Named{}, &herald.Error{Code: herald.CodeNotFound, Message: fmt.Sprintf("no template is named %q", truncate(name, 80))}
		}
		return Named{}, err
	}
	return decodeNamed(e.Value)
}

// List returns the tenant's templates in name order.
func (l *Library) List(ctx context.Context, tenant string) ([]Named, error) {
	var out []Named
	after := ""
	for {
		page, err := l.store.ListState(ctx, Owner(tenant), after, 500)
		if err != nil {
			return nil, fmt.Errorf("list templates: %w", err)
		}
		for _, e := range page {
			n, err := decodeNamed(e.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, n)
		}
		if len(page) < 500 {
			return out, nil
		}
		after = page[len(page)-1].Key
	}
}

// Delete removes the tenant's named template, or answers CodeNotFound.
// Subscriptions that name it fail their deliveries (retried) until a
// template of that name exists again (a tenant's subscription falls back
// to the platform's of that name, if there is one).
func (l *Library) Delete(ctx context.Context, tenant, name string) error {
	if _, err := l.Get(ctx, tenant, name); err != nil {
		return err
	}
	if err := l.store.CommitState(ctx, Owner(tenant), []herald.StateEntry{{Key: name}}, 0); err != nil {
		return fmt.Errorf("delete template %s: %w", name, err)
	}
	l.invalidate(tenant)
	return nil
}

// DeleteTenant removes every template of a (deleted) tenant.
func (l *Library) DeleteTenant(ctx context.Context, tenant string) error {
	if tenant == "" {
		return errors.New("the platform's templates are not a tenant's")
	}
	if err := l.store.DeleteState(ctx, Owner(tenant)); err != nil {
		return fmt.Errorf("delete the templates of tenant %s: %w", tenant, err)
	}
	l.invalidate(tenant)
	return nil
}

func decodeNamed(b []byte) (Named, error) {
	var n Named
	if err := json.Unmarshal(b, &n); err != nil {
		return Named{}, fmt.Errorf("decode stored template: %w", err)
	}
	return n, nil
}

func (l *Library) invalidate(tenant string) {
	l.mu.Lock()
	delete(l.cache, tenant)
	l.mu.Unlock()
}

// ErrMissing is the cause of a failed Resolve when a subscription names a
// template the library does not hold.
var ErrMissing = errors.New("template missing")

// Resolve returns the parsed templates for an event of the topic and type
// to a subscription of the tenant: the named template when name is set
// (the tenant's, else the platform's; ErrMissing when neither has one),
// else the most specific of the tenant's templates whose scope matches,
// else the most specific of the platform's (an exact topic before a
// pattern, a type before none, then the longer pattern, then the name),
// else nil: the caller's own or the defaults.
func (l *Library) Resolve(ctx context.Context, tenant, name, topic, eventType string) (*Set, error) {
	sets := []string{""}
	if tenant != "" {
		sets = []string{tenant, ""}
	}
	for _, t := range sets {
		entries, err := l.cached(ctx, t)
		if err != nil {
			return nil, err
		}
		if name != "" {
			if e := entries[name]; e != nil {
				return e.set, nil
			}
			continue
		}
		if best := bestMatch(entries, topic, eventType); best != nil {
			return best.set, nil
		}
	}
	if name != "" {
		return nil, fmt.Errorf("%w: no template is named %q", ErrMissing, name)
	}
	return nil, nil
}

// bestMatch is the most specific of entries whose scope matches an
// event of the topic and type, or nil.
func bestMatch(entries map[string]*libEntry, topic, eventType string) *libEntry {
	var best *libEntry
	for _, e := range entries {
		n := e.named
		if n.Topic == "" || !herald.MatchTopic(n.Topic, topic) || n.EventType != "" && n.EventType != eventType {
			continue
		}
		if best == nil || moreSpecific(n, best.named) {
			best = e
		}
	}
	return best
}

func moreSpecific(a, b Named) bool {
	if pa, pb := herald.IsPattern(a.Topic), herald.IsPattern(b.Topic); pa != pb {
		return !pa
	}
	if (a.EventType != "") != (b.EventType != "") {
		return a.EventType != ""
	}
	if len(a.Topic) != len(b.Topic) {
		return len(a.Topic) > len(b.Topic)
	}
	return a.Name < b.Name
}

// cached returns the tenant's parsed templates, reloading them when
// stale. The lock is held across the read so that one reload serves
// every caller waiting for it.
func (l *Library) cached(ctx context.Context, tenant string) (map[string]*libEntry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if c := l.cache[tenant]; c != nil && now.Sub(c.loaded) < l.refresh && !now.Before(c.loaded) {
		return c.entries, nil
	}
	all, err := l.List(ctx, tenant)
	if err != nil {
		return nil, err
	}
	entries := make(map[string]*libEntry, len(all))
	for _, n := range all {
		set, err := n.Templates.Parse(true)
		if err != nil {
			continue // stored before a rule tightened: it cannot be used
		}
		entries[n.Name] = &libEntry{named: n, set: set}
	}
	l.cache[tenant] = &libCache{loaded: now, entries: entries}
	return entries, nil
}

// Names returns the names of the templates a subscription of the tenant
// may name (the tenant's and the platform's), sorted, for error messages.
func (l *Library) Names(ctx context.Context, tenant string) []string {
	var names []string
	for _, t := range slices.Compact([]string{tenant, ""}) {
		entries, err := l.cached(ctx, t)
		if err != nil {
			return nil
		}
		for n := range entries {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// CheckConfig checks the template name of a config of a subscription of
// the tenant (on a nil Library too): the tenant's templates or the
// platform's hold it, and the config has no templates of its own (own)
// beside it. Errors are CodeInvalid naming the field "template".
func (l *Library) CheckConfig(ctx context.Context, tenant, name string, own bool) error {
	if name == "" {
		return nil
	}
	if own {
		return herald.FieldErrorf("template", "template names a library template; leave the config's own templates out with it")
	}
	if l == nil {
		return herald.FieldErrorf("template", "this server keeps no template library")
	}
	_, err := l.Get(ctx, tenant, name)
	if tenant != "" && herald.ErrorCode(err) == herald.CodeNotFound {
		_, err = l.Get(ctx, "", name)
	}
	if herald.ErrorCode(err) == herald.CodeNotFound {
		return herald.FieldErrorf("template", "no template is named %q; create it with PUT /v1/templates/%s first (there are: %s)",
			truncate(name, 80), truncate(name, 80), strings.Join(l.Names(ctx, tenant), ", "))
	}
	return err
}

// Choose returns the templates of a message about d to a subscription of
// the tenant (on a nil Library too): the subscription's own (set, when own
// is true), the library's (named by the subscription, or matching the
// event; see Resolve), or set (the channel's defaults). A named template the library lacks is a Failed
// result with reason "template-missing", retried: the template may come
// back.
func (l *Library) Choose(ctx context.Context, tenant string, own bool, set *Set, name string, d Data) (*Set, *herald.DeliveryResult) {
	if own || l == nil && name == "" {
		return set, nil
	}
	if l == nil {
		return nil, &herald.DeliveryResult{Outcome: herald.Failed, Err: "template-missing", Detail: "this server keeps no template library"}
	}
	named, err := l.Resolve(ctx, tenant, name, d.Topic, d.Type)
	if err != nil {
		return nil, &herald.DeliveryResult{Outcome: herald.Failed, Err: "template-missing", Detail: err.Error()}
	}
	if named == nil {
		return set, nil
	}
	return named, nil
}
