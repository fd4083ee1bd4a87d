// Package redis is the source kind "redis": Redis streams read by a
// consumer group (XREADGROUP), with go-redis.
//
// Each shard is one consumer of the group, named "herald-<shard>", so a
// shard that moves to another node reads on as the same consumer. A shard
// first reads back what the group delivered to it and was never
// acknowledged (its pending entries), then new entries, in batches; it
// acknowledges (XACK) a batch only after Herald's commit. Entries left
// pending by a consumer that no longer runs (the source now has fewer
// shards) are claimed (XAUTOCLAIM) once idle for claim_idle. The
// idempotency key is the stream and the entry id, so an entry read twice
// is a duplicate in Herald.
package redis

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/source"
)

// Name is the kind's name.
const Name = "redis"

// Limits of a config.
const (
	maxStreams   = 100
	maxKeyLen    = 1024
	maxSecretLen = 1024
	maxBatch     = 10000
)

// Entry fields read as the message's metadata; the others are headers.
// They are the fields the redis channel writes, so events that went out
// through a redis subscription come back whole.
const (
	fieldKey         = "key"
	fieldType        = "type"
	fieldContentType = "content_type"
	fieldHeaders     = "headers" // a JSON object of strings
)

// Config is the kind's config as stored. Password and the TLS key are
// write-only.
type Config struct {
	// Address is the server, "host:port".
	Address string `json:"address"`
	// DB is the database number (SELECT), 0 to 15.
	DB int `json:"db"`
	// Streams are the stream keys to read.
	Streams []string `json:"streams"`
	// Group is the consumer group (default "herald-<source id>"), made
	// with MKSTREAM when it does not exist.
	Group string `json:"group,omitempty"`
	// Start is where a group Herald makes starts: "earliest" (the
	// default: the whole stream) or "latest" (entries added from then).
	Start string `json:"start"`
	// PayloadField is the entry field that is the event's payload
	// (default "payload"). An entry without it becomes a JSON object of
	// all its fields.
	PayloadField string `json:"payload_field"`
	// Batch bounds one read, and one Herald commit (default 500).
	Batch int `json:"batch"`
	// ClaimIdle is how long an entry stays pending on a consumer that
	// does not acknowledge it before a shard claims it (default 1m).
	ClaimIdle string `json:"claim_idle"`
	Username  string `json:"username,omitempty"`
	Password  string `json:"password,omitempty"`
	channel.TLSOptions
}

// Kind is the Redis streams source kind.
type Kind struct {
	// AllowPrivate lets configs name loopback, private and other refused
	// addresses, and lets the client reach them (channel.CheckHost).
	AllowPrivate bool
}

var _ source.Runner = Kind{}

// Name returns "redis".
func (Kind) Name() string { return Name }

func parse(raw json.RawMessage) (Config, error) {
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return Config{}, fmt.Errorf("redis source config: %w", err)
	}
	return c, nil
}

// Validate checks the config and applies the defaults. A password left out
// on an update is kept while the server and user stay the same; a TLS key,
// while the certificate does.
func (k Kind) Validate(raw, previous json.RawMessage) (json.RawMessage, error) {
	var c Config
	if len(bytes.TrimSpace(raw)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return nil, herald.FieldErrorf("", "config must be an object with address, db, streams, group, start, payload_field, batch, claim_idle, username, password and tls_*: %v", err)
		}
	}
	var prev Config
	if previous != nil {
		prev, _ = parse(previous)
	}
	c.Address = strings.TrimSpace(c.Address)
	if c.Address == "" {
		return nil, herald.FieldErrorf("address", `address is required: the Redis server as "host:port"`)
	}
	if err := channel.CheckHostPort(c.Address, k.AllowPrivate, "address"); err != nil {
		return nil, err
	}
	if c.DB < 0 || c.DB > 15 {
		return nil, herald.FieldErrorf("db", "db must be from 0 to 15")
	}
	if len(c.Streams) == 0 || len(c.Streams) > maxStreams {
		return nil, herald.FieldErrorf("streams", "streams must list 1 to %d stream keys", maxStreams)
	}
	for _, s := range c.Streams {
		if s == "" || len(s) > maxKeyLen {
			return nil, herald.FieldErrorf("streams", "stream key %q must be 1 to %d bytes", s, maxKeyLen)
		}
	}
	if len(c.Group) > 255 || strings.ContainsFunc(c.Group, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return nil, herald.FieldErrorf("group", "group must be at most 255 bytes without spaces or control characters")
	}
	switch c.Start {
	case "":
		c.Start = "earliest"
	case "earliest", "latest":
	default:
		return nil, herald.FieldErrorf("start", "start must be earliest or latest")
	}
	if c.PayloadField == "" {
		c.PayloadField = "payload"
	}
	if len(c.PayloadField) > 255 {
		return nil, herald.FieldErrorf("payload_field", "payload_field is at most 255 bytes")
	}
	if c.Batch == 0 {
		c.Batch = 500
	}
	if c.Batch < 1 || c.Batch > maxBatch {
		return nil, herald.FieldErrorf("batch", "batch must be from 1 to %d", maxBatch)
	}
	if c.ClaimIdle == "" {
		c.ClaimIdle = "1m"
	}
	if d, err := time.ParseDuration(c.ClaimIdle); err != nil || d < time.Second || d > 24*time.Hour {
		return nil, herald.FieldErrorf("claim_idle", "claim_idle must be a duration from 1s to 24h, such as \"1m\"")
	}
	if len(c.Username) > maxSecretLen || len(c.Password) > maxSecretLen {
		return nil, herald.FieldErrorf("password", "username and password are at most %d bytes each", maxSecretLen)
	}
	if c.Password == "" && prev.Password != "" && prev.Address == c.Address && prev.Username == c.Username {
		c.Password = prev.Password // an update that leaves the secret out keeps it
	}
	if c.Username != "" && c.Password == "" {
		return nil, herald.FieldErrorf("password", "username needs its password (it is never shown again; an update may leave it out to keep it)")
	}
	var err error
	// Sources are an administrator's: every TLS option is open to them.
	if c.TLSOptions, err = c.TLSOptions.Validate(prev.TLSOptions, true); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(c)
	return b, nil
}

// Public returns the config without the password and the TLS key.
func (Kind) Public(raw json.RawMessage) json.RawMessage {
	c, err := parse(raw)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	c.Password, c.KeyPEM = "", ""
	b, _ := json.Marshal(c)
	return b
}

// Run is one consumer of the group until ctx ends or Redis fails.
func (k Kind) Run(ctx context.Context, sh *source.Shard) error {
	c, err := parse(sh.Source.Config)
	if err != nil {
		return err
	}
	claimIdle, _ := time.ParseDuration(c.ClaimIdle)
	tc, err := c.TLSOptions.Config()
	if err != nil {
		return err
	}
	rdb := goredis.NewClient(&goredis.Options{
		Addr:                  c.Address,
		Dialer:                channel.Dialer(k.AllowPrivate, tc),
		Username:              c.Username,
		Password:              c.Password,
		DB:                    c.DB,
		MaxRetries:            -1, // the runtime retries, with backoff, and shows why
		ContextTimeoutEnabled: true,
		DialTimeout:           10 * time.Second,
		PoolSize:              2,
		DisableIdentity:       true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	})
	defer rdb.Close()
	r := &reader{rdb: rdb, sh: sh, c: c, group: c.Group, consumer: fmt.Sprintf("herald-%d", sh.Index)}
	if r.group == "" {
		r.group = "herald-" + sh.Source.ID
	}
	start := "0"
	if c.Start == "latest" {
		start = "$"
	}
	for _, s := range c.Streams {
		err := rdb.XGroupCreateMkStream(ctx, s, r.group, start).Err()
		if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return r.fail(ctx, fmt.Errorf("create the consumer group %s on %s: %w", r.group, s, err))
		}
	}
	sh.Running()
	// What the group gave this consumer before and it never acknowledged
	// (a crash, a lost lease): read from 0 until none is left.
	for {
		n, err := r.read(ctx, "0", 0)
		if err != nil {
			return r.fail(ctx, err)
		}
		if n == 0 {
			break
		}
	}
	var nextClaim, nextLag time.Time
	for ctx.Err() == nil {
		now := time.Now()
		if !now.Before(nextClaim) {
			if err := r.claim(ctx, claimIdle); err != nil {
				return r.fail(ctx, err)
			}
			nextClaim = now.Add(claimIdle / 2)
		}
		n, err := r.read(ctx, ">", 2*time.Second)
		if err != nil {
			return r.fail(ctx, err)
		}
		if n < c.Batch && !now.Before(nextLag) {
			r.reportLag(ctx)
			nextLag = now.Add(2 * time.Second)
		}
	}
	return nil
}

type reader struct {
	rdb             *goredis.Client
	sh              *source.Shard
	c               Config
	group, consumer string
}

// fail returns nil when ctx ended (the error is the cancellation's), else
// err.
func (r *reader) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// read reads one batch from every stream after id ("0": this consumer's
// pending entries; ">": new ones, waiting up to block), publishes it and
// acknowledges it. It returns how many entries it read.
func (r *reader) read(ctx context.Context, id string, block time.Duration) (int, error) {
	args := &goredis.XReadGroupArgs{Group: r.group, Consumer: r.consumer, Count: int64(r.c.Batch), Block: block}
	if block == 0 {
		args.Block = -1 // no BLOCK: answer at once
	}
	args.Streams = append(slices.Clone(r.c.Streams), slices.Repeat([]string{id}, len(r.c.Streams))...)
	res, err := r.rdb.XReadGroup(ctx, args).Result()
	if errors.Is(err, goredis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("XREADGROUP %s: %w", strings.Join(r.c.Streams, " "), err)
	}
	n := 0
	for _, s := range res {
		if err := r.publish(ctx, s.Stream, s.Messages); err != nil {
			return n, err
		}
		n += len(s.Messages)
	}
	return n, nil
}

// claim takes over the entries of the streams that have been pending on
// another consumer for longer than idle, and publishes them.
func (r *reader) claim(ctx context.Context, idle time.Duration) error {
	for _, s := range r.c.Streams {
		cursor := "0-0"
		for range 100 { // bounded: what is left waits for the next round
			msgs, next, err := r.rdb.XAutoClaim(ctx, &goredis.XAutoClaimArgs{
				Stream: s, Group: r.group, Consumer: r.consumer, MinIdle: idle, Start: cursor, Count: int64(r.c.Batch),
			}).Result()
			if err != nil {
				return fmt.Errorf("XAUTOCLAIM %s: %w", s, err)
			}
			if err := r.publish(ctx, s, msgs); err != nil {
				return err
			}
			if next == "0-0" || next == "" {
				break
			}
			cursor = next
		}
	}
	return nil
}

// publish commits the entries as events and only then acknowledges them.
func (r *reader) publish(ctx context.Context, stream string, entries []goredis.XMessage) error {
	if len(entries) == 0 {
		return nil
	}
	msgs := make([]source.Message, len(entries))
	ids := make([]string, len(entries))
	for i, e := range entries {
		msgs[i] = message(stream, e, r.c.PayloadField)
		ids[i] = e.ID
	}
	if err := r.sh.Publish(ctx, msgs); err != nil {
		return err // left pending: read again from 0, or claimed
	}
	if err := r.rdb.XAck(ctx, stream, r.group, ids...).Err(); err != nil {
		return fmt.Errorf("XACK %s: %w", stream, err)
	}
	return nil
}

// reportLag sums what the group has not yet read of each stream (XINFO
// GROUPS; Redis 7 or later, unknown before).
func (r *reader) reportLag(ctx context.Context) {
	var lag int64
	for _, s := range r.c.Streams {
		groups, err := r.rdb.XInfoGroups(ctx, s).Result()
		if err != nil {
			r.sh.SetLag(-1)
			return
		}
		for _, g := range groups {
			if g.Name == r.group {
				if g.Lag < 0 {
					r.sh.SetLag(-1)
					return
				}
				lag += g.Lag
			}
		}
	}
	r.sh.SetLag(lag)
}

// message is a stream entry before mapping: the payload field is the
// payload; key, type, content_type and headers (a JSON object) are
// metadata; every other field is a header.
func message(stream string, e goredis.XMessage, payloadField string) source.Message {
	m := source.Message{Topic: stream, ID: e.ID, IdempotencyKey: stream + "@" + e.ID}
	str := func(name string) string {
		s, _ := e.Values[name].(string)
		return s
	}
	p, hasPayload := e.Values[payloadField].(string)
	if !hasPayload {
		// No payload field: the entry itself, as a JSON object.
		m.Payload, _ = json.Marshal(e.Values)
		m.ContentType = "application/json"
		return m
	}
	m.Payload = []byte(p)
	m.Key, m.Type, m.ContentType = str(fieldKey), str(fieldType), str(fieldContentType)
	for _, name := range slices.Sorted(maps.Keys(e.Values)) {
		switch name {
		case payloadField, fieldKey, fieldType, fieldContentType:
			continue
		case fieldHeaders:
			var hs map[string]string
			if json.Unmarshal([]byte(str(name)), &hs) == nil {
				for k, v := range hs {
					setHeader(&m, k, v)
				}
				continue
			}
		}
		setHeader(&m, name, str(name))
	}
	return m
}

func setHeader(m *source.Message, name, value string) {
	if m.Headers == nil {
		m.Headers = map[string]string{}
	}
	m.Headers[name] = value
}
