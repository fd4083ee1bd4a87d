package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/rules"
)

// Rules and views are subscriptions whose channel is the rule engine
// (package rules): the subscription's id is the name with a prefix, its
// config the definition. These handlers are the resource view of them.

// processorRetry is the retry schedule of a rule's or a view's
// subscription: a batch fails only when the store or the publisher does,
// so it is retried for long, never dead-lettered in practice.
var processorRetry = herald.RetryPolicy{MaxAttempts: herald.MaxRetryAttempts, Initial: time.Second, Max: time.Minute}

// processor is what differs between rules and views.
type processor struct {
	kind   string // rules.ChannelRule or rules.ChannelView
	prefix string // subscription id prefix
}

var (
	ruleKind = processor{kind: rules.ChannelRule, prefix: rules.RulePrefix}
	viewKind = processor{kind: rules.ChannelView, prefix: rules.ViewPrefix}
)

func (s *Server) toProcessorJSON(p processor, sub herald.Subscription) map[string]any {
	out := map[string]any{}
	_ = json.Unmarshal(sub.Config, &out)
	out["name"] = strings.TrimPrefix(sub.ID, p.prefix)
	out["state"] = string(sub.State)
	if sub.StateReason != "" {
		out["state_reason"] = sub.StateReason
	}
	out["created_at"] = formatTime(sub.CreatedAt)
	out["updated_at"] = formatTime(sub.UpdatedAt)
	return out
}

func (s *Server) processorsOr503() error {
	if s.subs == nil || !s.channels.Has(rules.ChannelRule) || !s.channels.Has(rules.ChannelView) {
		return herald.Errorf(herald.CodeUnavailable, "this server does not run rules and views")
	}
	return nil
}

func processorName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	return name, rules.ValidateName(name)
}

// spec returns the definition's input topic and filter, and the emit
// topic of a rule.
type specSummary struct {
	input  string
	filter json.RawMessage
	emit   string
}

func summarize(kind string, config json.RawMessage) (specSummary, error) {
	if kind == rules.ChannelRule {
		p, err := rules.ParseSpec(config)
		if err != nil {
			return specSummary{}, err
		}
		return specSummary{input: p.Spec().Input, filter: p.SubscriptionFilter(), emit: p.Spec().Emit.Topic}, nil
	}
	p, err := rules.ParseViewSpec(config)
	if err != nil {
		return specSummary{}, err
	}
	return specSummary{input: p.Spec().Input, filter: p.SubscriptionFilter()}, nil
}

// ensureTopic creates a topic with the defaults when it is missing.
func (s *Server) ensureTopic(ctx context.Context, name string) error {
	_, err := s.topics.Get(ctx, name)
	if herald.IsCode(err, herald.CodeNotFound) {
		_, _, err = s.topics.Put(ctx, herald.Topic{Name: name}.WithDefaults())
	}
	return err
}

func (s *Server) putProcessor(p processor) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.processorsOr503(); err != nil {
			return err
		}
		name, err := processorName(r)
		if err != nil {
			return err
		}
		body, err := readBody(w, r, maxJSONBody)
		if err != nil {
			return err
		}
		var probe map[string]json.RawMessage
		if err := unmarshalStrict(body, &probe, ""); err != nil {
			return err
		}
		ch, err := s.channels.Get(p.kind)
		if err != nil {
			return err
		}
		ctx := r.Context()
		config, err := ch.Validate(ctx, channel.ValidateParams{Config: body, Admin: true, Internal: true})
		if err != nil {
			return err
		}
		sum, err := summarize(p.kind, config)
		if err != nil {
			return err
		}
		if sum.emit != "" {
			if err := s.ensureTopic(ctx, sum.emit); err != nil {
				return err
			}
		}
		ids := partitionIDs(p, name, config)
		if stored, err := s.subs.GetSubscription(ctx, ids[0]); err == nil && stored.Channel == p.kind {
			if was := len(partitionIDs(p, name, stored.Config)); was != len(ids) {
				return herald.FieldErrorf("partitions", "%s %q runs in %d partitions; that cannot change (delete it and create it again)", p.kind, name, was)
			}
		} else if err != nil && !herald.IsCode(err, herald.CodeNotFound) {
			return err
		}
		now := s.now().UTC()
		// Partitions after the first, then the first: a rule listed (by
		// its first) has all its partitions.
		for _, id := range ids[1:] {
			if _, _, err := s.upsertProcessor(r, p, id, name, sum, config, now); err != nil {
				return err
			}
		}
		sub, status, err := s.upsertProcessor(r, p, ids[0], name, sum, config, now)
		if err != nil {
			return err
		}
		s.viewDefs.forget(name) // a view's reads here see the new definition at once
		return writeJSON(w, status, s.toProcessorJSON(p, sub))
	}
}

// upsertProcessor creates or updates one subscription of a rule or view
// and returns it as stored, with 201 when it was created.
func (s *Server) upsertProcessor(r *http.Request, p processor, id, name string, sum specSummary, config json.RawMessage, now time.Time) (herald.Subscription, int, error) {
	ctx := r.Context()
	status := http.StatusOK
	var sub herald.Subscription
	var err error
	for range 5 {
		sub, err = s.subs.GetSubscription(ctx, id)
		if herald.IsCode(err, herald.CodeNotFound) {
			status = http.StatusCreated
			sub = herald.Subscription{
				ID: id, Topic: sum.input, Channel: p.kind, Config: config, Filter: sum.filter,
				Description: p.kind + " " + name,
				Retry:       processorRetry, Timeout: herald.MaxTimeout, MaxInFlight: 1, Ordered: true,
				State: herald.StateActive, OwnerKeyID: principalKeyID(r),
				CreatedAt: now, UpdatedAt: now, LastActivityAt: now,
			}
			err = s.subs.CreateSubscription(ctx, sub, herald.StartPosition{Earliest: true})
			if herald.IsCode(err, herald.CodeConflict) {
				continue // created meanwhile: update it
			}
			break
		}
		if err != nil {
			return sub, 0, err
		}
		if sub.Topic != sum.input {
			return sub, 0, herald.FieldErrorf("input", "the input of %s %q is %q; it cannot change (delete it and create it again)", p.kind, name, sub.Topic)
		}
		sub.Config, sub.Filter, sub.UpdatedAt = config, sum.filter, now
		err = s.subs.UpdateSubscription(ctx, sub)
		if herald.IsCode(err, herald.CodeConflict) {
			continue // changed meanwhile: read it again
		}
		break
	}
	if err != nil {
		return sub, 0, err
	}
	if s.notices != nil {
		s.notices.SubscriptionChanged(id)
	}
	sub, err = s.subs.GetSubscription(ctx, id)
	return sub, status, err
}

// partitionIDs returns the subscriptions a rule or view runs as: its own,
// and one per further partition of a rule with partitions.
func partitionIDs(p processor, name string, config json.RawMessage) []string {
	n := 1
	if p.kind == rules.ChannelRule {
		if prg, err := rules.ParseSpec(config); err == nil {
			n = prg.Partitions()
		}
	}
	ids := make([]string, n)
	for i := range ids {
		if p.kind == rules.ChannelRule {
			ids[i] = rules.PartitionID(name, i)
		} else {
			ids[i] = p.prefix + name
		}
	}
	return ids
}

// stateOwners returns the StateStore owners of a rule's or view's state,
// one per partition.
func stateOwners(p processor, name string, config json.RawMessage) []string {
	ids := partitionIDs(p, name, config)
	owners := make([]string, len(ids))
	for i := range ids {
		if p.kind == rules.ChannelRule {
			owners[i] = rules.PartitionOwner(name, i)
		} else {
			owners[i] = rules.Owner(p.kind, name)
		}
	}
	return owners
}

func (s *Server) loadProcessor(p processor, r *http.Request) (herald.Subscription, string, error) {
	if err := s.processorsOr503(); err != nil {
		return herald.Subscription{}, "", err
	}
	name, err := processorName(r)
	if err != nil {
		return herald.Subscription{}, "", err
	}
	sub, err := s.subs.GetSubscription(r.Context(), p.prefix+name)
	if herald.IsCode(err, herald.CodeNotFound) || err == nil && sub.Channel != p.kind {
		return herald.Subscription{}, "", herald.Errorf(herald.CodeNotFound, "no %s named %q", p.kind, name)
	}
	return sub, name, err
}

func (s *Server) getProcessor(p processor) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		sub, name, err := s.loadProcessor(p, r)
		if err != nil {
			return err
		}
		out := s.toProcessorJSON(p, sub)
		// position: the newest input seq whose effect is committed (a
		// rule over a pattern has none: its input has a seq per topic).
		// A partitioned rule's position is its slowest partition's.
		var pos int64 = -1
		for _, owner := range stateOwners(p, name, sub.Config) {
			at, err := s.store.StatePosition(r.Context(), owner)
			if err != nil {
				return err
			}
			if pos < 0 || at < pos {
				pos = at
			}
		}
		out["position"] = pos
		return writeJSON(w, http.StatusOK, out)
	}
}

func (s *Server) listProcessors(p processor) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.processorsOr503(); err != nil {
			return err
		}
		q := r.URL.Query()
		limit, err := queryInt(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
		if err != nil {
			return err
		}
		after := ""
		if c := q.Get("cursor"); c != "" {
			if after, err = decodeCursor(c); err != nil {
				return err
			}
		}
		out := struct {
			Items      []map[string]any `json:"items"`
			NextCursor string           `json:"next_cursor,omitempty"`
		}{Items: []map[string]any{}}
		// A rule's partitions after the first are no items of their own:
		// read on past them until the page is full.
		from := p.prefix + after
	pages:
		for {
			subs, err := s.subs.ListSubscriptions(r.Context(), herald.SubscriptionFilter{After: from, Limit: int(limit) + 1})
			if err != nil {
				return err
			}
			for _, sub := range subs {
				from = sub.ID
				if !strings.HasPrefix(sub.ID, p.prefix) {
					break pages
				}
				if sub.Channel != p.kind || rules.IsPartition(sub.ID) {
					continue
				}
				if len(out.Items) == int(limit) {
					out.NextCursor = encodeCursor(out.Items[len(out.Items)-1]["name"].(string))
					break pages
				}
				out.Items = append(out.Items, s.toProcessorJSON(p, sub))
			}
			if len(subs) < int(limit)+1 {
				break
			}
		}
		return writeJSON(w, http.StatusOK, out)
	}
}

func (s *Server) deleteProcessor(p processor) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		sub, name, err := s.loadProcessor(p, r)
		if err != nil {
			return err
		}
		if err := s.deletePartitions(r.Context(), p, name, sub); err != nil {
			return err
		}
		s.viewDefs.forget(name)
		for _, owner := range stateOwners(p, name, sub.Config) {
			if err := s.store.DeleteState(r.Context(), owner); err != nil {
				return err
			}
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}

// setProcessorState pauses (to paused) or resumes (to active).
func (s *Server) setProcessorState(p processor, to herald.SubscriptionState) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		for range 5 {
			sub, name, err := s.loadProcessor(p, r)
			if err != nil {
				return err
			}
			switch {
			case to == herald.StatePaused && sub.State == herald.StatePaused:
				return herald.Errorf(herald.CodeConflict, "%s %q is already paused", p.kind, name)
			case to == herald.StateActive && sub.State == herald.StateActive:
				return herald.Errorf(herald.CodeConflict, "%s %q is already active", p.kind, name)
			}
			sub.State, sub.StateReason, sub.UpdatedAt = to, "", s.now().UTC()
			if to == herald.StatePaused {
				sub.StateReason = pausedReason
			} else {
				sub.FailingSince = time.Time{}
			}
			err = s.subs.UpdateSubscription(r.Context(), sub)
			if herald.IsCode(err, herald.CodeConflict) {
				continue
			}
			if err != nil {
				return err
			}
			if s.notices != nil {
				s.notices.SubscriptionChanged(sub.ID)
			}
			if err := s.setPartitionsState(r.Context(), p, name, sub); err != nil {
				return err
			}
			return writeJSON(w, http.StatusOK, s.toProcessorJSON(p, sub))
		}
		return herald.Errorf(herald.CodeConflict, "the %s kept changing; try again", p.kind)
	}
}

// rebuildProcessor drops the state and reads the retained input again from
// its first event: the subscription is created anew (same name, same
// definition), so no worker keeps state from before.
func (s *Server) rebuildProcessor(p processor) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		sub, name, err := s.loadProcessor(p, r)
		if err != nil {
			return err
		}
		ctx := r.Context()
		if err := s.deletePartitions(ctx, p, name, sub); err != nil {
			return err
		}
		for _, owner := range stateOwners(p, name, sub.Config) {
			if err := s.store.DeleteState(ctx, owner); err != nil {
				return err
			}
		}
		sub.UpdatedAt = s.now().UTC()
		sub.State, sub.StateReason, sub.FailingSince = herald.StateActive, "", time.Time{}
		ids := partitionIDs(p, name, sub.Config)
		for i := len(ids) - 1; i >= 0; i-- { // the first last, as a PUT creates them
			part := sub
			part.ID = ids[i]
			if err := s.subs.CreateSubscription(ctx, part, herald.StartPosition{Earliest: true}); err != nil {
				return err
			}
			if s.notices != nil {
				s.notices.SubscriptionChanged(part.ID)
			}
		}
		return writeJSON(w, http.StatusAccepted, s.toProcessorJSON(p, sub))
	}
}

func principalKeyID(r *http.Request) string {
	if p := principalFrom(r.Context()); p != nil {
		return p.keyID
	}
	return ""
}

// deletePartitions deletes the subscriptions a rule or view runs as: the
// first (sub) last, so a rule is listed until all of it is gone.
func (s *Server) deletePartitions(ctx context.Context, p processor, name string, sub herald.Subscription) error {
	ids := partitionIDs(p, name, sub.Config)
	for i := len(ids) - 1; i >= 0; i-- {
		err := s.subs.DeleteSubscription(ctx, ids[i])
		if err != nil && (i == 0 || !herald.IsCode(err, herald.CodeNotFound)) {
			return err
		}
		if s.notices != nil {
			s.notices.SubscriptionChanged(ids[i])
		}
	}
	return nil
}

// setPartitionsState gives a rule's further partitions the state of its
// first (sub): paused or active together.
func (s *Server) setPartitionsState(ctx context.Context, p processor, name string, sub herald.Subscription) error {
	for _, id := range partitionIDs(p, name, sub.Config)[1:] {
		for try := 0; ; try++ {
			part, err := s.subs.GetSubscription(ctx, id)
			if err != nil {
				return err
			}
			if part.State == sub.State {
				break
			}
			part.State, part.StateReason, part.UpdatedAt, part.FailingSince = sub.State, sub.StateReason, sub.UpdatedAt, sub.FailingSince
			err = s.subs.UpdateSubscription(ctx, part)
			if err == nil {
				if s.notices != nil {
					s.notices.SubscriptionChanged(id)
				}
				break
			}
			if !herald.IsCode(err, herald.CodeConflict) || try == 4 {
				return err
			}
		}
	}
	return nil
}
