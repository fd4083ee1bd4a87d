package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/api"
	"github.com/heraldhq/herald/archive"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/amqp"
	"github.com/heraldhq/herald/channel/kafka"
	"github.com/heraldhq/herald/channel/mqtt"
	"github.com/heraldhq/herald/channel/nats"
	"github.com/heraldhq/herald/channel/redis"
	"github.com/heraldhq/herald/channel/template"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/console"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/rules"
	"github.com/heraldhq/herald/schedule"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/source"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/stream"
	"github.com/heraldhq/herald/usage"
	"github.com/heraldhq/herald/webhook"
)

// Main is a Herald server: the store, the engine and the HTTP API wired
// together. End-to-end tests build one, set Config directly, and call Run
// and Close; the serve verb does the same from flags.
type Main struct {
	Config Config
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string

	// Logger is built from Config by Run unless a test sets it first.
	Logger *slog.Logger
	// startedAt is when Run began, for GET /v1/cluster/nodes.
	startedAt time.Time
	// Registry holds every metric of this server; made by Run.
	Registry *prometheus.Registry

	store     herald.Store
	feed      *engine.Feed // notices between components; see Run
	committer *engine.Committer
	publisher *engine.Publisher // the one path into the log: API, sources, rules, schedules
	pruner    *engine.Pruner
	usage     *usage.Meter      // usage per tenant and day, flushed to the store
	sessions  *console.Sessions // the operator console's sign-ins
	// consoleOIDC offers sign-in with an OpenID provider; nil: keys only.
	consoleOIDC *console.OIDCConfig
	tenants     *engine.TenantLimits // each tenant's publish rate, deliveries/s and in flight, on this node
	tail        *engine.Tail
	topics      *engine.Topics // the API's cache of topic settings
	schemas     *schema.Registry
	dispatcher  *engine.Dispatcher
	cluster     *cluster.Cluster // nil on a store without cluster support (SQLite)
	sender      *webhook.Sender
	channels    *channel.Registry
	closers     []func() // channels' shared senders, closed after the dispatcher
	archiver    *archive.Channel
	templates   *template.Library // named message templates of the people channels
	// peopleNow is the clock of quiet hours (time.Now when nil); tests
	// set it before Run.
	peopleNow func() time.Time
	// pushClient, when a test sets it before Run, is the HTTP client of
	// FCM and APNs (one trusting the test's TLS servers); nil means each
	// provider's own.
	pushClient *http.Client
	hub        *stream.Hub
	promoter   *schedule.Promoter // nil on a store without herald.TimeStore
	sources    *source.Runtime    // runs the sources (connectors in); nil on a store without them
	scheduler  *schedule.Scheduler
	api        *api.Server
	http       *http.Server
	ln         net.Listener
	served     chan error
	debug      *http.Server // the profiler; nil unless debug-addr is set
	debugLn    net.Listener
	locks      []*os.File // held while the process runs: see lockSQLite and nodeID

	closeOnce sync.Once
	closeErr  error
}

// NewMain returns a Main writing to the given streams, with the default
// configuration.
func NewMain(stdout, stderr io.Writer, getenv func(string) string) *Main {
	return &Main{Config: DefaultConfig(), Stdout: stdout, Stderr: stderr, Getenv: getenv}
}

// ParseFlags reads the configuration from args, the environment and the
// config file.
func (m *Main) ParseFlags(args []string) error {
	cfg, err := ParseConfig(args, m.Getenv, m.Stderr)
	if err != nil {
		return err
	}
	m.Config = cfg
	return nil
}

// Addr is the address the HTTP server listens on, known after Run (useful
// when Config.Addr has port 0).
func (m *Main) Addr() string {
	if m.ln == nil {
		return ""
	}
	return m.ln.Addr().String()
}

// DebugAddr returns the profiler's listen address, or "" when it is off.
func (m *Main) DebugAddr() string {
	if m.debugLn == nil {
		return ""
	}
	return m.debugLn.Addr().String()
}

// URL is the base URL of the running server.
func (m *Main) URL() string {
	addr := m.Addr()
	if host, port, err := net.SplitHostPort(addr); err == nil && (host == "::" || host == "0.0.0.0" || host == "") {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	return "http://" + addr
}

// Run opens the store, starts the engine and the HTTP server, and returns
// once the server accepts connections. On error everything started so far is
// closed again.
func (m *Main) Run(ctx context.Context) (err error) {
	m.startedAt = time.Now()
	defer func() {
		if err != nil {
			_ = m.Close(context.WithoutCancel(ctx))
		}
	}()
	if m.Logger == nil {
		m.Logger = newLogger(m.Stderr, m.Config.LogLevel, m.Config.LogFormat)
	}
	log := m.Logger
	m.Registry = prometheus.NewRegistry()
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	exclusive := false
	if path, _, ok := m.sqlitePath(); ok {
		if exclusive, err = m.lockSQLite(path); err != nil {
			return err
		}
	}
	if m.store, err = m.openStore(ctx); err != nil {
		return err
	}
	adminHash, err := m.bootstrapKeys(ctx)
	if err != nil {
		return err
	}
	// Listen before starting the engine: a cluster node records its
	// address, and a port in use fails the start before anything runs.
	if m.ln, err = net.Listen("tcp", m.Config.Addr); err != nil {
		return fmt.Errorf("listen on %s (setting addr): %w", m.Config.Addr, err)
	}

	// The feed carries every notice between components: this node's
	// commits (from the committer), other nodes' commits and deletions
	// (from the cluster), and the API's changes. Caches hear each notice
	// before the consumers that read them (see engine.Feed).
	m.feed = engine.NewFeed()
	m.committer = engine.NewCommitter(m.store, engine.CommitterConfig{}, log, m.Registry)
	m.committer.OnCommit(m.feed.Committed)
	m.tail = engine.NewTail(engine.TailConfig{})
	m.feed.Listen(engine.StageCache, m.tail.Listener())
	m.sender = webhook.NewSender(webhook.SenderConfig{
		AllowPrivate:        m.Config.AllowPrivateDestinations,
		MaxIdleConnsPerHost: m.Config.WebhookMaxConcurrency,
	})
	dcfg := engine.DispatcherConfig{
		NodeID:           m.nodeID(),
		Exclusive:        exclusive,
		DisableAfter:     m.Config.WebhookDisableAfter,
		AttemptRetention: m.Config.AttemptRetention,
		SuccessSample:    successSample(m.Config.SuccessSample),
		MaxConcurrency:   m.Config.WebhookMaxConcurrency,
	}
	// A store that can coordinate nodes (PostgreSQL) makes this node a
	// cluster member: it dispatches only the subscriptions rendezvous
	// hashing gives it, under leases short enough for a dead node's share
	// to move within seconds, and other nodes' commits wake its workers.
	cs, isMember := m.store.(cluster.Store)
	bus, hasBus := m.store.(cluster.Bus)
	if isMember && hasBus {
		m.cluster = cluster.New(cs, bus, cluster.Config{
			NodeID: dcfg.NodeID,
			Addr:   m.Addr(),
			Leases: func() int { return m.dispatcher.Dispatching() },
		}, log, m.Registry)
		dcfg.Owns, dcfg.LeaseTTL = m.cluster.Owns, cluster.LeaseTTL
	}
	// Rules and views run as channels: subscriptions whose state lives in
	// the store and whose results go through the publisher (made below).
	m.schemas = schema.NewRegistry(m.store, 0)
	ruleChannel, viewChannel := rules.NewChannels(rules.Deps{
		State: m.store, Publisher: mainPublisher{m}, Decoder: m.schemas, Logger: log, Registry: m.Registry,
	})
	m.templates = template.NewLibrary(m.store, nil)
	people, err := m.peopleChannels()
	if err != nil {
		return err
	}
	archiveDir := m.Config.ArchiveDir
	if archiveDir == "" {
		archiveDir = filepath.Join(m.Config.DataDir, "archive")
	}
	m.archiver = archive.New(archive.ChannelConfig{Dir: archiveDir, AllowPrivate: m.Config.AllowPrivateDestinations, Schemas: m.schemas}, log, m.Registry)
	m.channels = channel.NewRegistry(append([]channel.Channel{
		m.archiver,
		ruleChannel, viewChannel,
		webhook.NewChannel(m.sender, webhook.ChannelConfig{AllowPrivate: m.Config.AllowPrivateDestinations}),
		kafka.New(kafka.ChannelConfig{AllowPrivate: m.Config.AllowPrivateDestinations, Logger: log, Registry: m.Registry}),
		nats.NewChannel(nats.ChannelConfig{AllowPrivate: m.Config.AllowPrivateDestinations, Logger: log, Registry: m.Registry}),
		redis.New(redis.ChannelConfig{AllowPrivate: m.Config.AllowPrivateDestinations, Logger: log, Registry: m.Registry}),
		amqp.NewChannel(amqp.ChannelConfig{AllowPrivate: m.Config.AllowPrivateDestinations, Logger: log, Registry: m.Registry}),
		mqtt.NewChannel(mqtt.ChannelConfig{AllowPrivate: m.Config.AllowPrivateDestinations, Logger: log, Registry: m.Registry}),
	}, people...)...)
	m.topics = engine.NewTopics(m.store, engine.TopicsConfig{})
	m.feed.Listen(engine.StageCache, m.topics.Listener())
	m.usage = usage.New(m.store, usage.Config{FlushInterval: m.Config.UsageFlushInterval, LabelTenants: splitList(m.Config.MetricsTenantLabels)}, log, m.Registry)
	m.tenants = engine.NewTenantLimits(m.store, engine.TenantLimitsConfig{Label: m.usage.Label}, log, m.Registry)
	m.feed.Listen(engine.StageCache, m.tenants.Listener())
	pcfg := engine.PublisherConfig{AutoCreateTopics: m.Config.AutoCreateTopics, Schemas: m.schemas, Usage: m.usage, Tenants: m.tenants}
	// Delayed events wait in the store until due; the promoter, leased so
	// one node of a cluster does it, moves them into the log then.
	timeStore, hasTime := m.store.(herald.TimeStore)
	if hasTime {
		pcfg.Delayed = timeStore
		pcfg.OnDelayed = func(due time.Time) { m.promoter.Wake(due) }
	}
	m.publisher = engine.NewPublisher(m.topics, m.committer, pcfg, log, m.Registry)
	if hasTime {
		m.promoter = schedule.NewPromoter(timeStore, m.publisher, schedule.PromoterConfig{NodeID: dcfg.NodeID}, log, m.Registry)
		m.scheduler = schedule.NewScheduler(timeStore, m.publisher, schedule.SchedulerConfig{NodeID: dcfg.NodeID}, log, m.Registry)
	}
	m.dispatcher = engine.NewDispatcher(engine.DispatcherDeps{
		Store: m.store, Tail: m.tail, Channels: m.channels, Publisher: m.publisher, Logger: log, Registry: m.Registry,
		Usage: m.usage, Tenants: m.tenants, Decoder: m.schemas,
	}, dcfg)
	m.feed.Listen(engine.StageConsumer, m.dispatcher.Listener())
	deps := api.Deps{
		Store:     m.store,
		Topics:    m.topics,
		Publisher: m.publisher,
		Logger:    log,
		Registry:  m.Registry,
	}
	deps.Subscriptions = m.store
	deps.Usage = m.usage
	deps.Channels = m.channels
	if as, ok := m.store.(herald.ArchiveStore); ok {
		deps.Archives, deps.ArchiveReader = as, m.archiver
	}
	deps.Notices = m.feed
	deps.Schemas = m.schemas
	deps.Templates = m.templates
	deps.Deliverer = m.dispatcher // test events: outside the workers, within the send slots
	if us, ok := m.store.(herald.UserStore); ok {
		deps.Users = us
	}
	if hasTime {
		deps.Delayed = timeStore
		deps.Schedules, deps.ScheduleWake = timeStore, m.scheduler.Wake
	}
	if err := m.newSources(ctx, dcfg); err != nil {
		return err
	}
	if m.sources != nil {
		deps.Sources, deps.SourceKinds, deps.SourceRuntime = m.store.(herald.SourceStore), m.sourceKinds(), m.sources
	}
	deps.Nodes = mainNodes{m}
	tokens, err := m.newTokens()
	if err != nil {
		return err
	}
	deps.Tokens = tokens
	if err := m.newIdentity(&deps, log); err != nil {
		return err
	}
	// Console sessions are sealed under a key derived from the admin key
	// when there is one, so every node that shares it opens the others'
	// sessions and they outlive a restart; else a random key per process.
	m.sessions = console.NewSessions(adminHash)
	deps.Sessions = m.sessions
	m.api = api.New(api.Config{
		InsecureNoAuth: m.Config.InsecureNoAuth,
		AdminKeyHash:   adminHash,
		Version:        herald.Version,
		PublishAudit:   m.Config.AuditPublish,
		PublicURL:      m.Config.PublicURL,
	}, deps)
	m.newStreams()
	if m.cluster != nil {
		m.cluster.OnRemoteCommit(m.feed.RemoteCommitted)
		m.cluster.OnMembershipChange(m.feed.SubscriptionsChanged)
		m.cluster.OnSubscriptionChanged(m.feed.SubscriptionChanged)
		m.cluster.OnTopicDeleted(m.feed.TopicDeleted)
	}
	if err := m.committer.Start(ctx); err != nil {
		return err
	}
	if m.cluster != nil {
		if err := m.cluster.Start(ctx); err != nil {
			return err
		}
	}
	// The tenants' limits are known before the first delivery or publish.
	if err := m.tenants.Start(ctx); err != nil {
		return err
	}
	if err := m.dispatcher.Start(ctx); err != nil {
		return err
	}
	if err := m.hub.Start(ctx); err != nil {
		return err
	}
	if m.sources != nil {
		if err := m.sources.Start(ctx); err != nil {
			return err
		}
	}
	m.pruner = engine.NewPruner(m.store, engine.PrunerConfig{Interval: m.Config.RetentionCheckInterval, AuditRetention: m.Config.AuditRetention}, log, m.Registry)
	if err := m.pruner.Start(ctx); err != nil {
		return err
	}
	if err := m.usage.Start(ctx); err != nil {
		return err
	}
	if m.promoter != nil {
		if err := m.promoter.Start(ctx); err != nil {
			return err
		}
		if err := m.scheduler.Start(ctx); err != nil {
			return err
		}
	}

	m.http = &http.Server{
		Handler: withConsole(m.api.Handler(), console.New(console.Config{FrameAncestors: strings.Fields(m.Config.ConsoleFrameAncestors), Sessions: m.sessions, OIDC: m.consoleOIDC})),
		// The whole request must arrive within ReadTimeout: a client that
		// announces a body and sends it slowly, or not at all, is answered
		// 408 and cut off. net/http clears the deadline once the body is
		// read (or at once for a request without one), so responses and
		// streams run as long as they need.
		ReadHeaderTimeout: min(readHeaderTimeout, m.Config.HTTPReadTimeout),
		ReadTimeout:       m.Config.HTTPReadTimeout,
		IdleTimeout:       m.Config.HTTPIdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext:       api.ConnContext, // the API tells the listener who authenticated
	}
	// Shutdown does not wait for hijacked connections (WebSockets, SSE
	// over HTTP/1): tell them to reconnect as soon as shutdown begins.
	m.http.RegisterOnShutdown(func() { _ = m.hub.Stop(context.WithoutCancel(ctx)) })
	warnOpenFiles(log, m.Config)
	ln := api.NewListener(m.ln, api.ListenerConfig{
		MaxConns:        m.Config.HTTPMaxConns,
		MaxConnsPerAddr: m.Config.HTTPMaxConnsPerAddr,
	}, log, m.Registry)
	m.served = make(chan error, 1)
	go func() { m.served <- m.http.Serve(ln) }()
	m.api.SetReady(true)
	if m.Config.DebugAddr != "" {
		if err := m.serveDebug(log); err != nil {
			return err
		}
	}

	if m.Config.InsecureNoAuth {
		log.Warn("authentication is OFF (insecure-no-auth): every request is treated as admin; use this for local development only")
	}
	log.Info("herald serving", "addr", m.Addr(), "version", herald.Version, "store", m.storeKind(), "node_id", m.dispatcher.NodeID())
	return nil
}

// serveDebug serves Go's profiler (net/http/pprof) on debug-addr, apart
// from the API: it has no authentication and is for operators on the
// machine.
func (m *Main) serveDebug(log *slog.Logger) error {
	ln, err := net.Listen("tcp", m.Config.DebugAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (setting debug-addr): %w", m.Config.DebugAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	m.debug, m.debugLn = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln
	go func() { _ = m.debug.Serve(ln) }()
	log.Info("profiler serving", "addr", ln.Addr().String())
	return nil
}

func (m *Main) storeKind() string {
	if strings.HasPrefix(string(m.Config.DatabaseURL), "postgres") {
		return "postgres"
	}
	return "sqlite"
}

// sqlitePath returns the SQLite database file database-url names, and the
// setting that names it; ok is false when database-url is not SQLite.
func (m *Main) sqlitePath() (path, setting string, ok bool) {
	dsn := string(m.Config.DatabaseURL)
	switch {
	case dsn == "":
		return filepath.Join(m.Config.DataDir, "herald.db"), "data-dir", true
	case strings.HasPrefix(dsn, "sqlite:"):
		return strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//"), "database-url", true
	}
	return "", "", false
}

// openStore chooses the store by the scheme of database-url: none means the
// embedded SQLite file in data-dir.
func (m *Main) openStore(ctx context.Context) (herald.Store, error) {
	dsn := string(m.Config.DatabaseURL)
	if path, setting, ok := m.sqlitePath(); ok {
		s, err := sqlite.Open(ctx, path, sqlite.Options{Logger: m.Logger})
		if err != nil {
			return nil, fmt.Errorf("open SQLite store %s (setting %s): %w", path, setting, err)
		}
		return s, nil
	}
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s, err := postgres.Open(ctx, dsn, postgres.Options{Logger: m.Logger})
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL store %s (setting database-url): %w", redactDSN(dsn), err)
		}
		return s, nil
	default:
		return nil, fmt.Errorf("setting database-url: unsupported scheme in %q; use postgres://..., sqlite:PATH, or leave it empty for SQLite in data-dir", redactDSN(dsn))
	}
}

// newTokens builds the connection-token issuer. Without a configured
// secret a random one is made: tokens then work only on this node, and
// only until it restarts, so several nodes must share one.
func (m *Main) newTokens() (*stream.Tokens, error) {
	secret := []byte(m.Config.StreamTokenSecret)
	if len(secret) == 0 {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
		if m.storeKind() == "postgres" {
			m.Logger.Warn("no stream.token-secret set: connection tokens issued by this node are refused by the other nodes and after a restart; set the same stream.token-secret on every node")
		} else {
			m.Logger.Info("no stream.token-secret set: connection tokens are valid only until this process restarts")
		}
	}
	tokens, err := stream.NewTokens(stream.TokensConfig{Secret: secret})
	if err != nil {
		return nil, fmt.Errorf("setting stream.token-secret: %w", err)
	}
	return tokens, nil
}

// newStreams builds the realtime hub, hears the feed's notices and serves
// the API's stream endpoints.
func (m *Main) newStreams() {
	var origins []string
	for o := range strings.SplitSeq(m.Config.StreamAllowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	m.hub = stream.NewHub(stream.Config{
		QueueSize:               m.Config.StreamQueueSize,
		MaxSubscriptionsPerConn: m.Config.StreamMaxSubscriptions,
		MaxConnsPerSubject:      m.Config.StreamMaxConnsPerKey,
		AllowedOrigins:          origins,
		NodeID:                  m.dispatcher.NodeID(),
	}, stream.Deps{Store: m.store, Tail: m.tail, Keys: m.api, Logger: m.Logger, Registry: m.Registry, Users: userStore(m.store), Decoder: m.schemas,
		Presence: m.presencePublisher(), Leases: leasesOf(m.store)})
	m.feed.Listen(engine.StageConsumer, m.hub.Listener())
	m.api.SetStreams(m.hub)
}

// leasesOf returns the store's named leases, or nil when it has none.
func leasesOf(st herald.Store) stream.Leases {
	if l, ok := st.(stream.Leases); ok {
		return l
	}
	return nil
}

// presencePublisher returns how the hub publishes users' joins and
// leaves to stream.PresenceTopic (created with the defaults at the first
// one), or nil when stream.presence-events is off.
func (m *Main) presencePublisher() func(context.Context, []*herald.Event) error {
	if !m.Config.StreamPresenceEvents {
		return nil
	}
	return func(ctx context.Context, events []*herald.Event) error {
		params := engine.PublishParams{Events: events, System: true, Source: "presence"}
		_, err := m.publisher.Publish(ctx, params)
		if herald.IsCode(err, herald.CodeNotFound) {
			now := time.Now().UTC()
			if _, _, err := m.topics.Put(ctx, herald.Topic{Name: stream.PresenceTopic, CreatedAt: now, UpdatedAt: now}.WithDefaults()); err != nil {
				return fmt.Errorf("create %s: %w", stream.PresenceTopic, err)
			}
			_, err = m.publisher.Publish(ctx, params)
		}
		return err
	}
}

// bootstrapKeys makes sure someone can administer the server: a configured
// admin key is accepted as admin; with none configured and none stored, the
// first start creates an admin key and prints it once. It returns the hash
// of the configured admin key, if any.
func (m *Main) bootstrapKeys(ctx context.Context) ([]byte, error) {
	if m.Config.AdminKey != "" {
		return herald.HashKeySecret(string(m.Config.AdminKey)), nil
	}
	if m.Config.InsecureNoAuth {
		return nil, nil
	}
	keys, err := m.store.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	if len(keys) > 0 {
		return nil, nil
	}
	secret, hash := herald.NewKeySecret()
	k := herald.APIKey{
		ID:        herald.NewKeyID(),
		Name:      "bootstrap-admin",
		Hash:      hash,
		Prefix:    secret[:len(herald.KeySecretPrefix)+6],
		Scopes:    herald.Scopes{{Action: herald.ActionAdmin}},
		CreatedAt: time.Now().UTC(),
	}
	if err := m.store.CreateKey(ctx, k); err != nil {
		return nil, fmt.Errorf("create the first admin key: %w", err)
	}
	fmt.Fprintf(m.Stderr, "\nHerald created the first admin API key. It is shown only this once; store it now:\n\n    %s\n\nUse it as: Authorization: Bearer <key>   (or HERALD_KEY for the CLI)\n\n", secret)
	return nil, nil
}

// Close shuts down in order: not ready, while the listener keeps serving
// for the drain delay (shutdown-drain-delay) so load balancers see /readyz
// fail and stop sending; stop accepting HTTP and let in-flight requests
// (and their commits) finish; streams told to reconnect; stop the pruner;
// leave the cluster; drain the dispatcher (in-flight deliveries finish,
// progress is written, leases are released); drain and stop the committer;
// close the store. shutdown-timeout bounds the whole sequence.
//
// ctx ending cuts the drain delay short (the rest still runs, bounded by
// shutdown-timeout). Close is idempotent and returns the first error.
func (m *Main) Close(ctx context.Context) error {
	m.closeOnce.Do(func() {
		timeout := m.Config.ShutdownTimeout
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		drain := ctx
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		var errs []error
		if m.api != nil {
			m.api.SetReady(false)
			if m.http != nil && m.Config.ShutdownDrainDelay > 0 {
				m.Logger.Info("draining: /readyz answers 503; still serving", "drain_delay", m.Config.ShutdownDrainDelay)
				waitDrain(drain, ctx, m.Config.ShutdownDrainDelay)
			}
		}
		if m.debug != nil {
			_ = m.debug.Close() // profiles in progress are cut short
		}
		if m.sources != nil {
			// Sources stop first: what they took from their services and
			// have not committed stays there, unacknowledged, for the next
			// holder of each shard.
			if err := m.sources.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop sources: %w", err))
			}
		}
		if m.http != nil {
			if err := m.http.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("shut down HTTP: %w", err))
				_ = m.http.Close()
			}
			if err := <-m.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, fmt.Errorf("serve HTTP: %w", err))
			}
		} else if m.ln != nil {
			_ = m.ln.Close()
		}
		if m.hub != nil {
			// Streams were told to reconnect when shutdown began; wait for
			// their handlers.
			if err := m.hub.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop streams: %w", err))
			}
		}
		if m.pruner != nil {
			if err := m.pruner.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop pruner: %w", err))
			}
		}
		if m.promoter != nil {
			// Before the committer: a promotion in progress finishes, and
			// the lease goes to another node at once.
			if err := m.promoter.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop promoter: %w", err))
			}
			if err := m.scheduler.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop scheduler: %w", err))
			}
		}
		if m.cluster != nil {
			// Leave first: the others start taking this node's share,
			// and get each lease as the dispatcher releases it below.
			if err := m.cluster.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop cluster membership: %w", err))
			}
		}
		if m.dispatcher != nil {
			if err := m.dispatcher.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop dispatcher: %w", err))
			}
		}
		if m.tenants != nil {
			_ = m.tenants.Stop(ctx) // only stops reading the tenants
		}
		if m.usage != nil {
			// After the dispatcher and the API: their last counts go too.
			if err := m.usage.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("flush usage: %w", err))
			}
		}
		if m.committer != nil {
			if err := m.committer.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop committer: %w", err))
			}
		}
		if m.sender != nil {
			m.sender.Close()
		}
		for _, close := range m.closers {
			close()
		}
		if m.store != nil {
			if err := m.store.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close store: %w", err))
			}
		}
		for _, f := range m.locks {
			_ = f.Close() // releases the lock
		}
		m.closeErr = errors.Join(errs...)
		if m.Logger != nil {
			m.Logger.Info("herald stopped")
		}
	})
	return m.closeErr
}

// waitDrain waits for d, or until either context ends.
func waitDrain(a, b context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-a.Done():
	case <-b.Done():
	}
}

// readHeaderTimeout bounds the wait for a request's headers (less when
// http.read-timeout is shorter).
const readHeaderTimeout = 10 * time.Second

// serveCommand runs `herald serve`: it serves until ctx ends (SIGINT or
// SIGTERM), then shuts down gracefully; another SIGINT or SIGTERM then
// skips what is left of the drain delay.
func serveCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	m := NewMain(stdout, stderr, getenv)
	if err := m.ParseFlags(args); err != nil {
		return err
	}
	if err := m.Run(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	m.Logger.Info("shutting down", "timeout", m.Config.ShutdownTimeout, "drain_delay", m.Config.ShutdownDrainDelay)
	// A second signal cuts the drain delay short.
	again, stop := signal.NotifyContext(context.WithoutCancel(ctx), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return m.Close(again)
}

// migrateCommand runs `herald migrate`: it applies the store's embedded
// migrations (opening the store does that) and exits.
func migrateCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	m := NewMain(stdout, stderr, getenv)
	if err := m.ParseFlags(args); err != nil {
		return err
	}
	m.Logger = newLogger(stderr, m.Config.LogLevel, m.Config.LogFormat)
	s, err := m.openStore(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrations applied (%s store)\n", m.storeKind())
	return s.Close()
}

// newLogger returns the server's logger in the format: "json" or text.
// Durations read the same in both ("1.5s"): the JSON handler would write
// them as integer nanoseconds.
func newLogger(w io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		opts.ReplaceAttr = durationsAsText
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// durationsAsText is a slog ReplaceAttr that writes durations as
// time.Duration.String does.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// redactDSN hides a password in a connection URL for messages.
func redactDSN(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return dsn
	}
	userinfo := dsn[scheme+3 : at]
	if user, _, ok := strings.Cut(userinfo, ":"); ok {
		return dsn[:scheme+3] + user + ":xxxxx" + dsn[at:]
	}
	return dsn
}

// userStore returns the store's users' part for the stream hub, or nil.
func userStore(s herald.Store) stream.UserStore {
	if us, ok := s.(herald.UserStore); ok {
		return us
	}
	return nil
}

// mainPublisher publishes through m's publisher, which is made after the
// channels that need it (rules emit through it).
type mainPublisher struct{ m *Main }

func (p mainPublisher) Publish(ctx context.Context, params engine.PublishParams) ([]herald.AppendResult, error) {
	return p.m.publisher.Publish(ctx, params)
}

func (p mainPublisher) CommitState(ctx context.Context, params engine.PublishParams, b herald.StateBatch) ([]herald.AppendResult, error) {
	return p.m.publisher.CommitState(ctx, params, b)
}

// withConsole serves the web console at /console beside the API, and
// sends a browser that opens the server's root there.
func withConsole(apiHandler, con http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", apiHandler)
	mux.Handle("/console", con)
	mux.Handle("/console/", con)
	mux.Handle("GET /{$}", http.RedirectHandler("/console/", http.StatusFound))
	return mux
}

// mainNodes reports the nodes for GET /v1/cluster/nodes: the cluster's
// members, or this node alone.
type mainNodes struct{ m *Main }

func (n mainNodes) Nodes(context.Context) ([]api.NodeInfo, error) {
	m := n.m
	self := m.dispatcher.NodeID()
	if m.cluster == nil {
		now := time.Now()
		return []api.NodeInfo{{ID: self, Addr: m.Addr(), StartedAt: m.startedAt, HeartbeatAt: now, Self: true, Dispatching: m.dispatcher.Dispatching()}}, nil
	}
	var out []api.NodeInfo
	for _, mb := range m.cluster.Members() {
		ni := api.NodeInfo{ID: mb.ID, Addr: mb.Addr, StartedAt: mb.StartedAt, HeartbeatAt: mb.HeartbeatAt, Self: mb.ID == self}
		if ni.Self {
			ni.Dispatching = m.dispatcher.Dispatching()
		}
		out = append(out, ni)
	}
	return out, nil
}

// successSample is the dispatcher's form of the success-sample setting,
// whose 0 means "none" (the dispatcher's 0 is its default).
func successSample(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
