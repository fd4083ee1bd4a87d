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

// LibraryOwner is the herald.StateStore owner the library keeps its
// templates under, one key per name.
const LibraryOwner = "templates"

// Library keeps named templates in a herald.StateStore and resolves which
// one an event's message uses. Reads are cached: a change made through
// this Library is seen at once on this node, one made on another node
// within RefreshEvery. It is safe for concurrent use.
type Library struct {
	store herald.StateStore
	now   func() time.Time
	// RefreshEvery bounds how stale the cache may be; default 5s.
	refresh time.Duration

	mu      sync.Mutex
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
	return &Library{store: st, now: now, refresh: 5 * time.Second}
}

// Put validates and stores n (creating or replacing it) and reports
// whether it was created.
func (l *Library) Put(ctx context.Context, n Named) (Named, bool, error) {
	if err := n.Validate(); err != nil {
		return Named{}, false, err
	}
	_, err := l.store.GetState(ctx, LibraryOwner, n.Name)
	created := false
	switch {
	case herald.ErrorCode(err) == herald.CodeNotFound:
		created = true
		if count, err := l.store.CountState(ctx, LibraryOwner); err != nil {
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
	if err := l.store.CommitState(ctx, LibraryOwner, []herald.StateEntry{{Key: n.Name, Value: b, UpdatedAt: n.UpdatedAt}}, 0); err != nil {
		return Named{}, false, fmt.Errorf("store template %s: %w", n.Name, err)
	}
	l.invalidate()
	return n, created, nil
}

// Get returns the named template, or CodeNotFound.
func (l *Library) Get(ctx context.Context, name string) (Named, error) {
	e, err := l.store.GetState(ctx, LibraryOwner, name)
	if err != nil {
		if herald.ErrorCode(err) == herald.CodeNotFound {
			return Named{}, &herald.Error{Code: herald.CodeNotFound, Message: fmt.Sprintf("no template is named %q", truncate(name, 80))}
		}
		return Named{}, err
	}
	return decodeNamed(e.Value)
}

// List returns the templates in name order.
func (l *Library) List(ctx context.Context) ([]Named, error) {
	var out []Named
	after := ""
	for {
		page, err := l.store.ListState(ctx, LibraryOwner, after, 500)
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

// Delete removes the named template, or answers CodeNotFound. Subscriptions
// that name it fail their deliveries (retried) until a template of that
// name exists again.
func (l *Library) Delete(ctx context.Context, name string) error {
	if _, err := l.Get(ctx, name); err != nil {
		return err
	}
	if err := l.store.CommitState(ctx, LibraryOwner, []herald.StateEntry{{Key: name}}, 0); err != nil {
		return fmt.Errorf("delete template %s: %w", name, err)
	}
	l.invalidate()
	return nil
}

func decodeNamed(b []byte) (Named, error) {
	var n Named
	if err := json.Unmarshal(b, &n); err != nil {
		return Named{}, fmt.Errorf("decode stored template: %w", err)
	}
	return n, nil
}

func (l *Library) invalidate() {
	l.mu.Lock()
	l.entries = nil
	l.mu.Unlock()
}

// ErrMissing is the cause of a failed Resolve when a subscription names a
// template the library does not hold.
var ErrMissing = errors.New("template missing")

// Resolve returns the parsed templates for an event of the topic and type:
// the named template when name is set (ErrMissing when there is none),
// else the most specific template whose scope matches (an exact topic
// before a pattern, a type before none, then the longer pattern, then the
// name), else nil: the caller's own or the defaults.
func (l *Library) Resolve(ctx context.Context, name, topic, eventType string) (*Set, error) {
	entries, err := l.cached(ctx)
	if err != nil {
		return nil, err
	}
	if name != "" {
		e := entries[name]
		if e == nil {
			return nil, fmt.Errorf("%w: no template is named %q", ErrMissing, name)
		}
		return e.set, nil
	}
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
	if best == nil {
		return nil, nil
	}
	return best.set, nil
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

// cached returns the parsed templates, reloading them when stale.
func (l *Library) cached(ctx context.Context) (map[string]*libEntry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.entries != nil && now.Sub(l.loaded) < l.refresh && !now.Before(l.loaded) {
		return l.entries, nil
	}
	all, err := l.List(ctx)
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
	l.entries, l.loaded = entries, now
	return entries, nil
}

// Names returns the names of the templates, sorted (for error messages).
func (l *Library) Names(ctx context.Context) []string {
	entries, err := l.cached(ctx)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// CheckConfig checks a subscription config's template name (on a nil
// Library too): the library holds it, and the config has no templates of
// its own (own) beside it. Errors are CodeInvalid naming the field
// "template".
func (l *Library) CheckConfig(ctx context.Context, name string, own bool) error {
	if name == "" {
		return nil
	}
	if own {
		return herald.FieldErrorf("template", "template names a library template; leave the config's own templates out with it")
	}
	if l == nil {
		return herald.FieldErrorf("template", "this server keeps no template library")
	}
	if _, err := l.Get(ctx, name); err != nil {
		if herald.ErrorCode(err) == herald.CodeNotFound {
			return herald.FieldErrorf("template", "no template is named %q; create it with PUT /v1/templates/%s first (there are: %s)",
				truncate(name, 80), truncate(name, 80), strings.Join(l.Names(ctx), ", "))
		}
		return err
	}
	return nil
}

// Choose returns the templates of a message about d (on a nil Library
// too): the subscription's own (set, when own is true), the library's
// (named by the subscription, or matching the event), or set (the
// channel's defaults). A named template the library lacks is a Failed
// result with reason "template-missing", retried: the template may come
// back.
func (l *Library) Choose(ctx context.Context, own bool, set *Set, name string, d Data) (*Set, *herald.DeliveryResult) {
	if own || l == nil && name == "" {
		return set, nil
	}
	if l == nil {
		return nil, &herald.DeliveryResult{Outcome: herald.Failed, Err: "template-missing", Detail: "this server keeps no template library"}
	}
	named, err := l.Resolve(ctx, name, d.Topic, d.Type)
	if err != nil {
		return nil, &herald.DeliveryResult{Outcome: herald.Failed, Err: "template-missing", Detail: err.Error()}
	}
	if named == nil {
		return set, nil
	}
	return named, nil
}
