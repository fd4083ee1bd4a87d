// Package api serves Herald's HTTP API under /v1: topics, publishing
// (plain, CloudEvents and batch), reading events back, API keys, webhook
// subscriptions with their dead letters, replays and attempt logs, and the
// operational endpoints /healthz, /readyz, /metrics and /v1/openapi.json.
//
// Errors are RFC 9457 problems written by one function (problem.go), so a
// status never depends on which handler failed. Every route is listed in the
// embedded OpenAPI document, and a test keeps the two in step.
package api

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/template"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/identity"
	"github.com/heraldhq/herald/source"
)

// Config holds the API's settings. The zero value requires API keys and
// does not create topics on publish.
type Config struct {
	// InsecureNoAuth treats every request as admin. For local development
	// only.
	InsecureNoAuth bool
	// AdminKeyHash, when set, is the SHA-256 (herald.HashKeySecret) of a
	// bootstrap secret that is accepted as an admin key without being in
	// the store.
	AdminKeyHash []byte
	// Version is reported by /healthz.
	Version string
	// PublicURL is the base URL people reach this server at
	// (https://herald.example.com), for the portal links it mints; ""
	// uses the scheme and host of the request that asks for one.
	PublicURL string
	// PublishAudit publishes every audit log entry to the system topic
	// herald.audit as well (created when first needed).
	PublishAudit bool
}

// Publisher commits events by the rules of publishing (engine.Publisher
// implements it): the API translates its wire formats into events and
// checks the caller's scopes; everything else about publishing is the
// publisher's.
type Publisher interface {
	// Topic returns the settings of a topic the caller may publish to
	// (created with the defaults if the server auto-creates topics), or
	// CodeNotFound, or CodeInvalid for a reserved one.
	Topic(ctx context.Context, name string) (herald.Topic, error)
	// Publish commits the events, all or none.
	Publish(ctx context.Context, p engine.PublishParams) ([]herald.AppendResult, error)
}

// Topics is a cached view of the topics over the store (engine.Topics
// implements it). The API reads a topic's settings through it on every
// publish, and changes topics only through it so the cache stays true.
type Topics interface {
	// Get returns the topic's settings, or CodeNotFound.
	Get(ctx context.Context, name string) (herald.Topic, error)
	// Put creates or updates the topic and reports whether it was created.
	Put(ctx context.Context, t herald.Topic) (herald.Topic, bool, error)
	// Delete removes the topic and its events, or returns CodeNotFound.
	Delete(ctx context.Context, name string) error
}

// Deliverer sends one event to a subscription's endpoint at once and
// reports how it went: signed, through the shared sender and its SSRF
// guard, within the node's send slots (engine.Dispatcher implements it).
// The API uses it for test events, outside the delivery workers. It must be
// safe for concurrent use and return by ctx's deadline.
type Deliverer interface {
	Deliver(ctx context.Context, sub *herald.Subscription, ev *herald.Event, attempt int) herald.DeliveryResult
}

// Sessions opens the operator console's session cookies: the credential
// the browser signed in with (or, for a sign-in with an OpenID provider,
// the identity the provider vouched for: credential "", id.Subject set)
// and the session's CSRF token; false when the request has no valid
// session.
type Sessions interface {
	Open(r *http.Request) (credential string, id identity.Identity, csrf string, ok bool)
}

// Deps are the parts the API runs on. Store, Topics and Publisher are
// required; a nil Logger discards, a nil Registry gets a private one. A nil
// Subscriptions makes the subscription endpoints answer 503; a nil
// Notices is no one to tell.
type Deps struct {
	Store     herald.Store // reads, keys, topic lists, Ping
	Topics    Topics
	Publisher Publisher
	// Subscriptions keeps webhook subscriptions and their delivery state
	// (usually the same store as Store).
	Subscriptions herald.SubscriptionStore
	// Notices is told of the subscription and topic changes made through
	// the API (engine.Feed); nil is no one to tell.
	Notices Notices
	// Channels are the destinations subscriptions may name; required with
	// Subscriptions.
	Channels *channel.Registry
	// Tokens issues and verifies connection tokens; nil refuses them.
	Tokens Tokens
	Logger *slog.Logger
	// Registry receives the API's metrics and is what /metrics serves.
	Registry *prometheus.Registry

	// Deliverer sends test events (POST /v1/subscriptions/{id}/test); nil
	// makes that endpoint answer 503.
	Deliverer Deliverer

	// Delayed lists and cancels pending delayed events; nil makes those
	// endpoints answer 503.
	Delayed DelayedEvents
	// Sources keeps sources (usually the same store as Store), SourceKinds
	// are the kinds they may name, and SourceRuntime runs them and takes
	// inbound requests; with any of them nil the source endpoints answer
	// 503.
	Sources       herald.SourceStore
	SourceKinds   *source.Registry
	SourceRuntime Sources
	// Schemas keeps topics' schemas; nil makes PUT and DELETE
	// .../schema answer 503.
	Schemas Schemas
	// Schedules keeps schedules; nil makes those endpoints answer 503.
	// ScheduleWake is told of every change, so the scheduler looks at once.
	Schedules    Schedules
	ScheduleWake func()

	// Archives keeps archives (with Subscriptions, which keeps the
	// subscriptions behind them) and ArchiveReader reads their files; nil
	// makes the archive endpoints answer 503.
	Archives      herald.ArchiveStore
	ArchiveReader ArchiveReader
	// Nodes lists the nodes serving this Herald; nil makes
	// GET /v1/cluster/nodes answer 503.
	Nodes Nodes
	// Users keeps end users' server-side subscriptions and presence;
	// nil makes the /v1/users endpoints answer 503.
	Users Users

	// OIDC, when set, accepts bearer JWTs of an OpenID Connect issuer
	// beside API keys; Introspection, when set, accepts other bearer
	// tokens through the issuer's introspection endpoint (RFC 7662).
	// Sessions, when set, opens the operator console's session cookies
	// (console.Sessions): a request without an Authorization header that
	// carries one is the key it holds, and a change must carry the
	// session's X-CSRF-Token.
	Sessions Sessions

	OIDC          TokenVerifier
	Introspection TokenIntrospector

	// Usage reads usage per tenant; nil makes GET /v1/usage answer 503.
	Usage UsageReader

	// Templates is the library of named message templates of the people
	// channels; nil makes the /v1/templates endpoints answer 503.
	Templates *template.Library
}

// Server is the HTTP API. It owns no goroutines: create it with New, serve
// Handler with an http.Server, and flip SetReady around start and shutdown.
// Its methods are safe for concurrent use.
type Server struct {
	cfg       Config
	store     herald.Store
	topics    Topics
	publisher Publisher
	subs      herald.SubscriptionStore
	notices   Notices
	channels  *channel.Registry
	streams   Streams
	tokens    Tokens
	log       *slog.Logger
	metrics   *metrics
	// metricsHandler serves Deps.Registry at /metrics.
	metricsHandler http.Handler
	keys           *keyCache
	now            func() time.Time

	mux     *http.ServeMux
	routes  []route // registered routes, in registration order
	handler http.Handler
	ready   atomic.Int32 // readyStarting, readyServing or readyStopping

	// deliverer sends test events; nil when the server has none.
	deliverer Deliverer
	delayed   DelayedEvents

	sources       herald.SourceStore
	sessions      Sessions
	sourceKinds   *source.Registry
	sourceRuntime Sources
	schemas       Schemas
	viewDefs      viewDefs // views' definitions for reads

	// auditTopic is set once herald.audit is known to exist.
	auditTopic atomic.Bool

	// tenantMu serialises this node's creations of tenant subscriptions
	// and sources with their quota checks.
	tenantMu      sync.Mutex
	schedules     Schedules
	scheduleWake  func()
	archives      herald.ArchiveStore
	archiveReader ArchiveReader
	users         Users
	userHub       UserHub
	oidc          TokenVerifier
	introspector  TokenIntrospector
	nodes         Nodes
	templates     *template.Library
	usage         UsageReader
}

// New returns a server over deps. It starts nothing and is not ready until
// SetReady(true). It registers the API's metrics on deps.Registry (a second
// Server on the same registry shares them) and panics only if the registry
// holds different collectors under the same names, a wiring bug.
func New(cfg Config, deps Deps) *Server {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{
		cfg:       cfg,
		store:     deps.Store,
		topics:    deps.Topics,
		publisher: deps.Publisher,
		subs:      deps.Subscriptions,
		notices:   deps.Notices,
		channels:  cmp.Or(deps.Channels, channel.NewRegistry()),
		tokens:    deps.Tokens,
		log:       log,
		metrics:   newMetrics(reg),
		now:       time.Now,
		mux:       http.NewServeMux(),
	}
	s.metricsHandler = newMetricsHandler(reg, log)
	s.deliverer = deps.Deliverer
	s.archives, s.archiveReader = deps.Archives, deps.ArchiveReader
	s.delayed = deps.Delayed
	s.sources, s.sourceKinds, s.sourceRuntime = deps.Sources, deps.SourceKinds, deps.SourceRuntime
	s.sessions = deps.Sessions
	s.schemas = deps.Schemas
	s.schedules, s.scheduleWake = deps.Schedules, deps.ScheduleWake
	s.users = deps.Users
	s.nodes = deps.Nodes
	s.templates = deps.Templates
	s.oidc, s.introspector = deps.OIDC, deps.Introspection
	s.usage = deps.Usage
	s.keys = newKeyCache(deps.Store, keyCacheTTL, keyIndexTTL, keyCacheSize, s.now)
	s.registerRoutes()
	s.handler = s.withRequestID(trackBody(s.observe(s.recoverPanics(http.HandlerFunc(s.dispatch)))))
	return s
}

// Handler returns the whole API: every route behind the request id, body
// tracking, access log and metrics, panic recovery and auth middleware.
func (s *Server) Handler() http.Handler { return s.handler }

// SetReady sets what /readyz answers: 503 until true. Main sets it true once
// serving and false when shutdown begins, so load balancers drain the node.
func (s *Server) SetReady(ready bool) {
	if ready {
		s.ready.Store(readyServing)
	} else {
		s.ready.CompareAndSwap(readyServing, readyStopping)
	}
}

// The states behind /readyz, in the order they come.
const (
	readyStarting int32 = iota
	readyServing
	readyStopping
)

// access says who may call a route.
type access int

const (
	public        access = iota // no credentials needed
	authenticated               // any valid key; the handler checks scopes
	adminOnly                   // a key with the admin scope
	// selfAuthenticated: credentials are needed, but the handler checks
	// them itself (streams accept a key or a connection token in ?token=,
	// and answer in their own protocol once upgraded).
	selfAuthenticated
)

// route is a registered pattern and who may call it.
type route struct {
	pattern string
	access  access
}

// handlerFunc is the shape of every API handler: an error is written as a
// problem by the adapter, after nothing else was written.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) registerRoutes() {
	s.handle("GET /healthz", public, s.healthz)
	s.handle("GET /readyz", public, s.readyz)
	s.handle("GET /metrics", public, s.serveMetrics)
	s.handle("GET /v1/openapi.json", public, s.openAPI)

	s.handle("GET /v1/topics", authenticated, s.listTopics)
	s.handle("GET /v1/topics/{topic}", authenticated, s.getTopic)
	s.handle("PUT /v1/topics/{topic}", adminOnly, s.putTopic)
	s.handle("DELETE /v1/topics/{topic}", adminOnly, s.deleteTopic)
	s.handle("PUT /v1/topics/{topic}/schema", adminOnly, s.putSchema)
	s.handle("GET /v1/topics/{topic}/schema", authenticated, s.getSchema)
	s.handle("DELETE /v1/topics/{topic}/schema", adminOnly, s.deleteSchema)
	s.handle("GET /v1/topics/{topic}/schema/versions", authenticated, s.listSchemaVersions)

	s.handle("GET /v1/rules", adminOnly, s.listProcessors(ruleKind))
	s.handle("PUT /v1/rules/{name}", adminOnly, s.putProcessor(ruleKind))
	s.handle("GET /v1/rules/{name}", adminOnly, s.getProcessor(ruleKind))
	s.handle("DELETE /v1/rules/{name}", adminOnly, s.deleteProcessor(ruleKind))
	s.handle("POST /v1/rules/{name}/pause", adminOnly, s.setProcessorState(ruleKind, herald.StatePaused))
	s.handle("POST /v1/rules/{name}/resume", adminOnly, s.setProcessorState(ruleKind, herald.StateActive))
	s.handle("POST /v1/rules/{name}/rebuild", adminOnly, s.rebuildProcessor(ruleKind))
	s.handle("GET /v1/views", adminOnly, s.listProcessors(viewKind))
	s.handle("PUT /v1/views/{name}", adminOnly, s.putProcessor(viewKind))
	s.handle("GET /v1/views/{name}", adminOnly, s.getProcessor(viewKind))
	s.handle("DELETE /v1/views/{name}", adminOnly, s.deleteProcessor(viewKind))
	s.handle("POST /v1/views/{name}/pause", adminOnly, s.setProcessorState(viewKind, herald.StatePaused))
	s.handle("POST /v1/views/{name}/resume", adminOnly, s.setProcessorState(viewKind, herald.StateActive))
	s.handle("POST /v1/views/{name}/rebuild", adminOnly, s.rebuildProcessor(viewKind))
	s.handle("GET /v1/views/{name}/keys", authenticated, s.listViewRows)
	s.handle("GET /v1/views/{name}/{key}", authenticated, s.getViewRow)
	s.handle("PUT /v1/views/{name}/{key}", adminOnly, s.writeViewRow(false))
	s.handle("DELETE /v1/views/{name}/{key}", adminOnly, s.writeViewRow(true))

	s.handle("POST /v1/topics/{topic}/events", authenticated, s.publish)
	s.handle("POST /v1/topics/{topic}/events:batch", authenticated, s.publishBatch)
	s.handle("GET /v1/topics/{topic}/events", authenticated, s.listEvents)
	s.handle("GET /v1/topics/{topic}/events/{id}", authenticated, s.getEvent)
	s.handle("GET /v1/topics/{topic}/scheduled", authenticated, s.listScheduled)
	s.handle("DELETE /v1/topics/{topic}/scheduled/{id}", authenticated, s.cancelScheduled)

	s.handle("PUT /v1/schedules/{name}", adminOnly, s.putSchedule)
	s.handle("GET /v1/schedules", adminOnly, s.listSchedules)
	s.handle("GET /v1/schedules/{name}", adminOnly, s.getSchedule)
	s.handle("DELETE /v1/schedules/{name}", adminOnly, s.deleteSchedule)
	s.handle("POST /v1/schedules/{name}/pause", adminOnly, s.pauseSchedule)
	s.handle("POST /v1/schedules/{name}/resume", adminOnly, s.resumeSchedule)

	s.handle("PUT /v1/users/{user}/subscriptions/{topic}", adminOnly, s.putUserSubscription)
	s.handle("DELETE /v1/users/{user}/subscriptions/{topic}", adminOnly, s.deleteUserSubscription)
	s.handle("GET /v1/users/{user}/subscriptions", adminOnly, s.listUserSubscriptions)
	s.handle("GET /v1/users/{user}/connections", adminOnly, s.userConnections)

	s.handle("POST /v1/keys", adminOnly, s.createKey)
	s.handle("GET /v1/keys", adminOnly, s.listKeys)
	s.handle("DELETE /v1/keys/{id}", adminOnly, s.deleteKey)

	s.handle("PUT /v1/tenants/{id}", adminOnly, s.putTenant)
	s.handle("GET /v1/tenants", adminOnly, s.listTenants)
	s.handle("GET /v1/tenants/{id}", authenticated, s.getTenant)
	s.handle("DELETE /v1/tenants/{id}", adminOnly, s.deleteTenant)
	s.handle("POST /v1/tenants/{id}/portal-links", authenticated, s.createPortalLink)
	s.handle("GET /v1/tenants/{id}/portal-links", authenticated, s.listPortalLinks)
	s.handle("DELETE /v1/tenants/{id}/portal-links/{link}", authenticated, s.deletePortalLink)
	s.handle("GET /v1/cluster/nodes", adminOnly, s.listNodes)
	s.handle("GET /v1/audit", authenticated, s.listAudit)
	s.handle("GET /v1/usage", authenticated, s.getUsage)

	s.handle("POST /v1/subscriptions", authenticated, s.createSubscription)
	s.handle("GET /v1/subscriptions", authenticated, s.listSubscriptions)
	s.handle("GET /v1/subscriptions/{id}", authenticated, s.getSubscription)
	s.handle("PATCH /v1/subscriptions/{id}", authenticated, s.updateSubscription)
	s.handle("DELETE /v1/subscriptions/{id}", authenticated, s.deleteSubscription)
	s.handle("POST /v1/subscriptions/{id}/pause", authenticated, s.pauseSubscription)
	s.handle("POST /v1/subscriptions/{id}/resume", authenticated, s.resumeSubscription)
	s.handle("POST /v1/subscriptions/{id}/verify", authenticated, s.verifySubscription)
	s.handle("GET /v1/subscriptions/{id}/secret", authenticated, s.getSecret)
	s.handle("POST /v1/subscriptions/{id}/secret:rotate", authenticated, s.rotateSecret)
	s.handle("GET /v1/subscriptions/{id}/dead-letters", authenticated, s.listDeadLetters)
	s.handle("POST /v1/subscriptions/{id}/dead-letters/redrive", authenticated, s.redriveDeadLetters)
	s.handle("DELETE /v1/subscriptions/{id}/dead-letters", authenticated, s.deleteDeadLetters)
	s.handle("DELETE /v1/subscriptions/{id}/dead-letters/{event_id}", authenticated, s.deleteDeadLetters)
	s.handle("POST /v1/subscriptions/{id}/replay", authenticated, s.replay)
	s.handle("GET /v1/subscriptions/{id}/attempts", authenticated, s.listAttempts)
	s.handle("GET /v1/subscriptions/{id}/events/{event_id}", authenticated, s.eventStatus)
	s.handle("POST /v1/subscriptions/{id}/test", authenticated, s.testSubscription)

	s.handle("POST /v1/sources", authenticated, s.createSource)
	s.handle("GET /v1/sources", authenticated, s.listSources)
	s.handle("GET /v1/sources/{id}", authenticated, s.getSource)
	s.handle("PATCH /v1/sources/{id}", authenticated, s.updateSource)
	s.handle("DELETE /v1/sources/{id}", authenticated, s.deleteSource)
	s.handle("POST /v1/sources/{id}/pause", authenticated, s.pauseSource)
	s.handle("POST /v1/sources/{id}/resume", authenticated, s.resumeSource)
	// Inbound webhooks are verified by their source's own scheme (a
	// signature), not an API key.
	s.handle("POST /v1/inbound/{source}", public, s.receiveInbound)
	s.handle("GET /v1/archives", adminOnly, s.listArchives)
	s.handle("PUT /v1/archives/{name}", adminOnly, s.putArchive)
	s.handle("GET /v1/archives/{name}", adminOnly, s.getArchive)
	s.handle("DELETE /v1/archives/{name}", adminOnly, s.deleteArchive)
	s.handle("POST /v1/archives/{name}/pause", adminOnly, s.pauseArchive)
	s.handle("POST /v1/archives/{name}/resume", adminOnly, s.resumeArchive)
	s.handle("GET /v1/archives/{name}/events", adminOnly, s.queryArchive)
	s.handle("POST /v1/archives/{name}/replay", adminOnly, s.replayArchive)

	// Realtime: the stream handlers authenticate (keys or tokens) themselves.
	s.handle("GET /v1/topics/{topic}/stream", selfAuthenticated, s.serveSSE)
	s.handle("OPTIONS /v1/topics/{topic}/stream", public, s.serveSSE) // CORS preflight
	s.handle("GET /v1/stream", selfAuthenticated, s.serveWebSocket)
	s.handle("POST /v1/tokens", authenticated, s.issueToken)

	// People's links (email, SMS, push): signed tokens, no API key.
	s.handle("GET /v1/confirm/{token}", public, s.confirmLink)
	s.handle("GET /v1/unsubscribe/{token}", public, s.unsubscribePage)
	s.handle("POST /v1/unsubscribe/{token}", public, s.unsubscribe)
	s.handle("POST /v1/templates:render", authenticated, s.renderTemplates)
	s.handle("PUT /v1/templates/{name}", authenticated, s.putTemplate)
	s.handle("GET /v1/templates", authenticated, s.listTemplates)
	s.handle("GET /v1/templates/{name}", authenticated, s.getTemplate)
	s.handle("DELETE /v1/templates/{name}", authenticated, s.deleteTemplate)
	// Devices register themselves with a connection token (push.go).
	s.handle("POST /v1/push/subscriptions", selfAuthenticated, s.createPushSubscription)
	s.handle("GET /v1/push/vapid-public-key", public, s.pushVAPIDKey)
}

// handle registers h behind auth and the problem adapter.
func (s *Server) handle(pattern string, acc access, h handlerFunc) {
	s.routes = append(s.routes, route{pattern, acc})
	s.metrics.routes[pattern] = s.metrics.newRoute(pattern)
	var next http.Handler = s.adapt(wildcards(pattern), h)
	if acc != public && acc != selfAuthenticated {
		next = s.authenticate(acc, next)
	}
	if method, path, _ := strings.Cut(pattern, " "); audited(method, path, acc) {
		next = s.audit(pattern, wildcards(pattern), next)
	}
	s.mux.Handle(pattern, next)
}

// adapt turns a handlerFunc into an http.Handler: the single place where a
// returned error becomes a problem response. It refuses first a path whose
// named segments (names, the wildcards of the route's pattern) are not
// UTF-8, so no handler or store sees such a name.
func (s *Server) adapt(names []string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := checkPathValues(r, names)
		if err == nil {
			err = h(w, r)
		}
		if err != nil {
			writeProblem(w, r, s.log, err)
		}
	})
}

// wildcards returns the names of the wildcards of a ServeMux pattern
// ("{topic}", "{rest...}").
func wildcards(pattern string) []string {
	var names []string
	for rest := pattern; ; {
		_, after, ok := strings.Cut(rest, "{")
		if !ok {
			return names
		}
		name, tail, _ := strings.Cut(after, "}")
		names = append(names, strings.TrimSuffix(name, "..."))
		rest = tail
	}
}

// checkPathValues refuses path values that are not UTF-8 (a %FF in the
// URL), naming the segment.
func checkPathValues(r *http.Request, names []string) error {
	for _, name := range names {
		if v := r.PathValue(name); !utf8.ValidString(v) {
			return herald.FieldErrorf(name, "the %s in the path is not valid UTF-8: %q", name, v)
		}
	}
	return nil
}

// dispatch hands the request to the mux, answering unknown routes (404)
// and wrong methods (405) with problems instead of the mux's plain text.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	// The mux's own answer says whether the path exists for other methods.
	probe := &probeWriter{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", probe.header.Get("Allow"))
		writeProblem(w, r, s.log, &herald.Error{Code: codeMethodNotAllowed,
			Message: "method " + r.Method + " is not allowed here; allowed: " + probe.header.Get("Allow")})
		return
	}
	writeProblem(w, r, s.log, herald.Errorf(herald.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path))
}

// probeWriter records what the mux's fallback handler would answer.
type probeWriter struct {
	header http.Header
	status int
}

func (p *probeWriter) Header() http.Header { return p.header }
func (p *probeWriter) WriteHeader(status int) {
	if p.status == 0 {
		p.status = status
	}
}
func (p *probeWriter) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return len(b), nil
}
