package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/source"
	sourceamqp "github.com/heraldhq/herald/source/amqp"
	"github.com/heraldhq/herald/source/inbound"
	sourcekafka "github.com/heraldhq/herald/source/kafka"
	sourcemqtt "github.com/heraldhq/herald/source/mqtt"
	sourcenats "github.com/heraldhq/herald/source/nats"
	"github.com/heraldhq/herald/source/outbox"
	sourceredis "github.com/heraldhq/herald/source/redis"
)

// sourceKinds is the explicit list of source kinds this build serves.
func (m *Main) sourceKinds() *source.Registry {
	return source.NewRegistry(
		inbound.Kind{},
		outbox.Kind{AllowPrivate: m.Config.AllowPrivateDestinations},
		sourcekafka.Kind{AllowPrivate: m.Config.AllowPrivateDestinations},
		sourcenats.Kind{AllowPrivate: m.Config.AllowPrivateDestinations},
		sourceamqp.Kind{AllowPrivate: m.Config.AllowPrivateDestinations},
		sourcemqtt.Kind{AllowPrivate: m.Config.AllowPrivateDestinations},
		sourceredis.Kind{AllowPrivate: m.Config.AllowPrivateDestinations},
	)
}

// newSources builds the source runtime over a store that keeps sources,
// leased per shard like the dispatcher's subscriptions: on a cluster, each
// shard runs on the node rendezvous hashing gives it.
func (m *Main) newSources(ctx context.Context, dcfg engine.DispatcherConfig) error {
	st, ok := m.store.(herald.SourceStore)
	if !ok {
		return nil
	}
	kinds := m.sourceKinds()
	if err := m.loadSourcesFile(ctx, st, kinds); err != nil {
		return err
	}
	cfg := source.RuntimeConfig{NodeID: dcfg.NodeID}
	if m.cluster != nil {
		cfg.Owns, cfg.LeaseTTL = m.cluster.Owns, cluster.LeaseTTL
	}
	m.sources = source.NewRuntime(source.RuntimeDeps{
		Store: st, Publisher: m.publisher, Kinds: kinds, Logger: m.Logger, Registry: m.Registry,
		Namespace: func(ctx context.Context, tenant string) (string, error) {
			t, err := m.store.GetTenant(ctx, tenant)
			if err != nil {
				return "", err
			}
			return t.Namespace(), nil
		},
	}, cfg)
	if m.cluster != nil {
		m.cluster.OnMembershipChange(m.sources.Changed)
	}
	return nil
}

// sourcesFile is the file named by the sources-file setting: sources
// declared with the server's configuration, kept in step with the store at
// every start (created, updated, and deleted when they leave the file),
// and read-only through the API.
type sourcesFile struct {
	Sources []fileSource `json:"sources"`
}

type fileSource struct {
	ID          string          `json:"id"`
	Kind        string          `json:"kind"`
	Config      json.RawMessage `json:"config"`
	Topic       string          `json:"topic"`
	Mapping     json.RawMessage `json:"mapping"`
	Description string          `json:"description"`
	Shards      int             `json:"shards"`
	State       string          `json:"state"`
}

var fileSourceID = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// envRef is a ${NAME} reference in the sources file, replaced by the
// environment variable's value (JSON-escaped), so secrets stay out of it.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// loadSourcesFile reads the sources file, if one is set, and makes the
// store's managed sources what it declares. Every problem is reported at
// once, naming the source and the field.
func (m *Main) loadSourcesFile(ctx context.Context, st herald.SourceStore, kinds *source.Registry) error {
	path := m.Config.SourcesFile
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("setting sources-file: %w", err)
	}
	getenv := m.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	var missing []string
	data = envRef.ReplaceAllFunc(data, func(ref []byte) []byte {
		name := string(envRef.FindSubmatch(ref)[1])
		v := getenv(name)
		if v == "" {
			missing = append(missing, name)
		}
		q, _ := json.Marshal(v)
		return q[1 : len(q)-1]
	})
	if len(missing) > 0 {
		return fmt.Errorf("sources file %s: environment variables not set: %s", path, strings.Join(missing, ", "))
	}
	var f sourcesFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("sources file %s: want {\"sources\": [{\"id\", \"kind\", \"config\", \"topic\", \"mapping\", \"shards\", \"description\", \"state\"}]}: %w", path, err)
	}
	now := time.Now().UTC()
	var errs []error
	declared := map[string]herald.Source{}
	for i, fs := range f.Sources {
		where := fmt.Sprintf("sources file %s: sources[%d] (%s)", path, i, fs.ID)
		src, err := fileSourceToSource(fs, kinds)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if _, dup := declared[src.ID]; dup {
			errs = append(errs, fmt.Errorf("%s: id %s is declared twice", where, src.ID))
			continue
		}
		declared[src.ID] = src
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	stored, err := st.ListSources(ctx, "", 0)
	if err != nil {
		return fmt.Errorf("list sources: %w", err)
	}
	have := map[string]herald.Source{}
	for _, s := range stored {
		have[s.ID] = s
		if _, ok := declared[s.ID]; s.Managed && !ok {
			if err := st.DeleteSource(ctx, s.ID); err != nil && !herald.IsCode(err, herald.CodeNotFound) {
				return fmt.Errorf("delete source %s, no longer in the sources file: %w", s.ID, err)
			}
		}
	}
	for id, src := range declared {
		old, ok := have[id]
		switch {
		case !ok:
			src.CreatedAt, src.UpdatedAt = now, now
			if err := st.CreateSource(ctx, src); err != nil {
				return fmt.Errorf("create source %s from the sources file: %w", id, err)
			}
		case !old.Managed:
			return fmt.Errorf("sources file %s: source %s exists already, made through the API; delete it or choose another id", path, id)
		case old.Kind != src.Kind:
			return fmt.Errorf("sources file %s: source %s: its kind cannot change (it is %s); choose another id", path, id, old.Kind)
		case !bytes.Equal(old.Config, src.Config) || old.Topic != src.Topic || !bytes.Equal(old.Mapping, src.Mapping) ||
			old.Description != src.Description || old.Shards != src.Shards || old.State != src.State:
			src.CreatedAt, src.UpdatedAt, src.Version = old.CreatedAt, now, old.Version
			if err := st.UpdateSource(ctx, src); err != nil {
				return fmt.Errorf("update source %s from the sources file: %w", id, err)
			}
		}
	}
	return nil
}

func fileSourceToSource(fs fileSource, kinds *source.Registry) (herald.Source, error) {
	if !fileSourceID.MatchString(fs.ID) {
		return herald.Source{}, fmt.Errorf("id must be 1 to 64 lower-case letters, digits, '_' or '-', starting with a letter or digit")
	}
	k, ok := kinds.Get(fs.Kind)
	if !ok {
		return herald.Source{}, fmt.Errorf("kind: unknown kind %q: one of %s", fs.Kind, strings.Join(kinds.Names(), ", "))
	}
	cfg, err := k.Validate(fs.Config, nil)
	if err != nil {
		var he *herald.Error
		if errors.As(err, &he) {
			return herald.Source{}, fmt.Errorf("config.%s: %s", he.Field, he.Message)
		}
		return herald.Source{}, fmt.Errorf("config: %w", err)
	}
	if err := source.ValidateTopicTemplate(fs.Topic); err != nil {
		return herald.Source{}, err
	}
	_, mapping, err := source.ParseMapping(fs.Mapping)
	if err != nil {
		return herald.Source{}, err
	}
	shards := cmp.Or(fs.Shards, 1)
	if shards < 1 || shards > herald.MaxSourceShards {
		return herald.Source{}, fmt.Errorf("shards must be from 1 to %d", herald.MaxSourceShards)
	}
	state := herald.SourceState(cmp.Or(fs.State, string(herald.SourceActive)))
	if state != herald.SourceActive && state != herald.SourcePaused {
		return herald.Source{}, fmt.Errorf("state must be active or paused")
	}
	return herald.Source{ID: fs.ID, Kind: fs.Kind, Config: cfg, Topic: fs.Topic, Mapping: mapping,
		Description: fs.Description, Shards: shards, State: state, Managed: true}, nil
}
