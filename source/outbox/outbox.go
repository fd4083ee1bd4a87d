// Package outbox is the source kind "outbox": Herald reads an application's
// transactional outbox table, in PostgreSQL or MySQL/MariaDB, publishes
// each row as an event, and then deletes the row (or marks it published).
//
// The application writes a row in the same transaction as its business
// change (client/outbox.Write does it), so the event exists exactly when
// the change does. Herald reads rows in id order, in batches, under
// SELECT ... FOR UPDATE SKIP LOCKED, publishes the batch through
// engine.Publisher with the row's id as the idempotency key, and only
// then deletes the rows, in the same database transaction that locked
// them. A crash between Herald's commit and the outbox's leaves the rows
// in place; read again, they are duplicates in Herald: never lost, never
// twice.
//
// A source of several shards splits the table by ranges of a hash of the
// row's key, as the creditors agent splits creditor ids: shard i of n takes
// the keys whose 32-bit hash h has floor(h*n/2^32) = i. Each shard's
// batches hold a lock in the outbox database itself (a transaction-level
// advisory lock on PostgreSQL, a named lock on MySQL), so even a node that
// lost its lease but does not know it yet cannot interleave a batch with
// the new holder's: per-key order holds across a handover. On PostgreSQL
// the runner LISTENs on a channel an insert trigger NOTIFYs, and so wakes
// at once; otherwise it polls.
//
// This is the one place where Herald runs SQL against a database that is
// not its own store; docs/adr/0008-outbox-sql.md says why it lives here.
package outbox

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/source"
)

// Name is the kind's name.
const Name = "outbox"

// Drivers.
const (
	DriverPostgres = "postgres"
	DriverMySQL    = "mysql"
)

// What happens to a row once its event is committed.
const (
	OnPublishDelete = "delete" // the default
	OnPublishMark   = "mark"   // set published_at; the application prunes
)

// Config is the kind's config. DSN holds a password: it is write-only, and
// shown with the password replaced.
type Config struct {
	// Driver is postgres or mysql; inferred from a postgres:// or
	// mysql:// DSN.
	Driver string `json:"driver"`
	// DSN is the outbox database: a postgres:// URL, or a MySQL DSN
	// ("user:pass@tcp(host:3306)/db", optionally after "mysql://").
	DSN string `json:"dsn,omitempty"`
	// Table is the outbox table (default herald_outbox), optionally
	// schema-qualified.
	Table string `json:"table"`
	// BatchSize is how many rows one batch takes (default 500, at most
	// 10000).
	BatchSize int `json:"batch_size"`
	// PollInterval is how often an idle shard looks for rows (default
	// 1s); on PostgreSQL a NOTIFY wakes it sooner.
	PollInterval string `json:"poll_interval"`
	// OnPublish is delete (default) or mark (sets published_at).
	OnPublish string `json:"on_publish"`
	// NotifyChannel is the PostgreSQL channel the insert trigger
	// notifies (default herald_outbox).
	NotifyChannel string `json:"notify_channel,omitempty"`
}

// Limits.
const (
	DefaultBatchSize = 500
	MaxBatchSize     = 10000
)

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

// Kind is the outbox kind.
type Kind struct {
	// AllowPrivate lets configs name loopback, private and other refused
	// addresses, and lets the source reach them (channel.CheckHost).
	AllowPrivate bool
}

var _ source.Runner = Kind{}

// Name returns "outbox".
func (Kind) Name() string { return Name }

func parse(raw json.RawMessage) (Config, error) {
	var c Config
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, herald.FieldErrorf("", "config must be an object with driver, dsn, table, batch_size, poll_interval, on_publish and notify_channel: %v", err)
	}
	return c, nil
}

// Validate checks the config and applies the defaults; a DSN left out on
// an update is kept.
func (k Kind) Validate(raw, previous json.RawMessage) (json.RawMessage, error) {
	c, err := parse(raw)
	if err != nil {
		return nil, err
	}
	if c.DSN == "" && previous != nil {
		if p, err := parse(previous); err == nil {
			c.DSN = p.DSN
			if c.Driver == "" {
				c.Driver = p.Driver
			}
		}
	}
	switch {
	case c.DSN == "":
		return nil, herald.FieldErrorf("dsn", "dsn is required: a postgres:// URL or a MySQL DSN such as user:pass@tcp(127.0.0.1:3306)/app")
	case strings.HasPrefix(c.DSN, "postgres://"), strings.HasPrefix(c.DSN, "postgresql://"):
		if c.Driver == "" {
			c.Driver = DriverPostgres
		}
		if _, err := url.Parse(c.DSN); err != nil {
			return nil, herald.FieldErrorf("dsn", "dsn is not a valid URL")
		}
	case strings.HasPrefix(c.DSN, "mysql://"):
		if c.Driver == "" {
			c.Driver = DriverMySQL
		}
	}
	switch c.Driver {
	case DriverPostgres:
		pc, err := pgx.ParseConfig(c.DSN)
		if err != nil {
			return nil, herald.FieldErrorf("dsn", "dsn is not a PostgreSQL connection string")
		}
		hosts := []string{pc.Host}
		for _, f := range pc.Fallbacks {
			hosts = append(hosts, f.Host)
		}
		for _, h := range hosts {
			if err := checkDBHost(h, k.AllowPrivate); err != nil {
				return nil, err
			}
		}
	case DriverMySQL:
		mc, err := mysqlDSN(c.DSN)
		if err != nil {
			return nil, herald.FieldErrorf("dsn", "dsn is not a MySQL DSN (user:pass@tcp(host:3306)/db): %v", err)
		}
		if mc.Net == "unix" {
			if err := checkDBHost("/"+mc.Addr, k.AllowPrivate); err != nil {
				return nil, err
			}
		} else if host, _, err := net.SplitHostPort(mc.Addr); err != nil {
			return nil, herald.FieldErrorf("dsn", "the dsn's address %q is not host:port", mc.Addr)
		} else if err := checkDBHost(host, k.AllowPrivate); err != nil {
			return nil, err
		}
	case "":
		return nil, herald.FieldErrorf("driver", "driver is required (postgres or mysql) when the dsn does not say")
	default:
		return nil, herald.FieldErrorf("driver", "driver must be postgres or mysql, got %q", c.Driver)
	}
	if c.Table == "" {
		c.Table = "herald_outbox"
	}
	if !identRE.MatchString(c.Table) {
		return nil, herald.FieldErrorf("table", "table must be a name of letters, digits and '_', optionally schema.table")
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchSize < 1 || c.BatchSize > MaxBatchSize {
		return nil, herald.FieldErrorf("batch_size", "batch_size must be from 1 to %d", MaxBatchSize)
	}
	if c.PollInterval == "" {
		c.PollInterval = "1s"
	}
	if d, err := herald.ParseDuration(c.PollInterval); err != nil || d < 10*time.Millisecond || d > time.Minute {
		return nil, herald.FieldErrorf("poll_interval", "poll_interval must be a duration from 10ms to 1m, like \"1s\"")
	}
	if c.OnPublish == "" {
		c.OnPublish = OnPublishDelete
	}
	if c.OnPublish != OnPublishDelete && c.OnPublish != OnPublishMark {
		return nil, herald.FieldErrorf("on_publish", "on_publish must be delete or mark")
	}
	if c.Driver == DriverPostgres {
		if c.NotifyChannel == "" {
			c.NotifyChannel = "herald_outbox"
		}
		if !identRE.MatchString(c.NotifyChannel) || strings.Contains(c.NotifyChannel, ".") {
			return nil, herald.FieldErrorf("notify_channel", "notify_channel must be a name of letters, digits and '_'")
		}
	} else {
		c.NotifyChannel = ""
	}
	out, _ := json.Marshal(c)
	return out, nil
}

// Public returns the config with the DSN's password replaced.
func (Kind) Public(raw json.RawMessage) json.RawMessage {
	c, _ := parse(raw)
	c.DSN = redact(c.DSN)
	out, _ := json.Marshal(c)
	return out
}

// redact hides the password of a URL or MySQL DSN: what lies between the
// first ':' after the scheme and the last '@' before the host.
func redact(dsn string) string {
	rest, prefix := dsn, ""
	if i := strings.Index(dsn, "://"); i >= 0 {
		prefix, rest = dsn[:i+3], dsn[i+3:]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return dsn
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return dsn
	}
	return prefix + user + ":xxxxx" + rest[at:]
}

// Run runs one shard until ctx ends or the database fails.
func (k Kind) Run(ctx context.Context, sh *source.Shard) error {
	c, err := parse(sh.Source.Config)
	if err != nil {
		return err
	}
	poll, _ := herald.ParseDuration(c.PollInterval)
	if c.Driver == DriverMySQL {
		return runMySQL(ctx, c, poll, sh, k.AllowPrivate)
	}
	return runPostgres(ctx, c, poll, sh, k.AllowPrivate)
}

// row is one outbox row read.
type row struct {
	id        int64
	topic     string
	key, typ  string
	headers   []byte
	payload   []byte
	createdAt time.Time
}

func (r *row) message() source.Message {
	m := source.Message{Topic: r.topic, Key: r.key, Type: r.typ, ID: fmt.Sprint(r.id), Payload: r.payload,
		IdempotencyKey: fmt.Sprintf("row:%d@%d", r.id, r.createdAt.UnixMicro())}
	if len(r.headers) > 0 {
		var hs map[string]any
		if json.Unmarshal(r.headers, &hs) == nil {
			m.Headers = map[string]string{}
			for k, v := range hs {
				if s, ok := v.(string); ok {
					m.Headers[k] = s
				} else if b, err := json.Marshal(v); err == nil {
					m.Headers[k] = string(b)
				}
			}
		}
	}
	return m
}

// lockName names a shard's lock in the outbox database: the same for every
// Herald node running the source's shard.
func lockName(sh *source.Shard) string {
	return fmt.Sprintf("herald:%s:%d", sh.Source.ID, sh.Index)
}

// PostgresDDL and MySQLDDL create the outbox table (and, on PostgreSQL,
// the trigger that wakes Herald) in the shape the kind reads.
var (
	//go:embed postgres.sql
	PostgresDDL string
	//go:embed mysql.sql
	MySQLDDL string
)

// checkDBHost checks the host of an outbox database as channel.CheckHost
// does; a Unix socket (a path) is this machine, refused alike.
func checkDBHost(host string, allowPrivate bool) error {
	if strings.HasPrefix(host, "/") {
		if allowPrivate {
			return nil
		}
		return &herald.Error{Code: herald.CodeInvalid, Field: "dsn", Err: channel.ErrDestinationRefused,
			Message: fmt.Sprintf("the dsn names a Unix socket on this machine; Herald may only reach public addresses unless the server runs with %s=true", channel.AllowPrivateEnv)}
	}
	return channel.CheckHost(host, allowPrivate, "dsn", "the dsn's host")
}

// dialer dials the outbox database through the SSRF guard.
func dialer(allowPrivate bool) *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, ControlContext: channel.DialControl(allowPrivate)}
}
