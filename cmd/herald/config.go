package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/console"
	"github.com/heraldhq/herald/identity"
)

// Config is the configuration of `herald serve` and `herald migrate`. Every
// field is one setting with one name in three forms: the flag -name, the
// environment variable HERALD_NAME and the config file key name (see
// settings and ParseConfig). DefaultConfig holds the defaults; Validate
// checks a Config built by hand, as end-to-end tests do.
type Config struct {
	Addr                     string        // addr: HTTP listen address, host:port
	DataDir                  string        // data-dir: directory for the SQLite database and other local state
	NodeID                   string        // node-id: this node's name in dispatch leases and the cluster; "" = kept in data-dir
	DatabaseURL              Secret        // database-url: "" = SQLite in DataDir; postgres://... for PostgreSQL
	AdminKey                 Secret        // admin-key: a bootstrap key with the admin scope; "" = none
	LogLevel                 slog.Level    // log-level: debug, info, warn or error
	LogFormat                string        // log-format: "text" or "json"
	InsecureNoAuth           bool          // insecure-no-auth: treat every request as admin
	AutoCreateTopics         bool          // auto-create-topics: publishing to an unknown topic creates it
	AllowPrivateDestinations bool          // allow-private-destinations: let webhooks reach private and loopback addresses
	ShutdownTimeout          time.Duration // shutdown-timeout: how long a graceful shutdown may take, drain delay included
	ShutdownDrainDelay       time.Duration // shutdown-drain-delay: how long /readyz answers 503 before the listener closes
	RetentionCheckInterval   time.Duration // retention-check-interval: how often expired events are pruned
	WebhookDisableAfter      time.Duration // webhook.disable-after: disable a subscription failing this long
	WebhookMaxConcurrency    int           // webhook.max-concurrency: webhook requests in flight across all subscriptions
	AttemptRetention         time.Duration // attempt-retention: how long the delivery attempt log is kept
	SuccessSample            int           // success-sample: successful attempts kept per subscription
	AuditRetention           time.Duration // audit.retention: how long the audit log is kept
	AuditPublish             bool          // audit.publish: publish audit entries to herald.audit too
	ConsoleFrameAncestors    string        // console.frame-ancestors: origins that may embed the tenant portal in a frame
	ConsoleOIDCIssuer        string        // console.oidc.issuer: sign in to the console with this OpenID provider; "" = keys only
	ConsoleOIDCName          string        // console.oidc.name: the provider's name on the sign-in button
	ConsoleOIDCClientID      string        // console.oidc.client-id
	ConsoleOIDCClientSecret  Secret        // console.oidc.client-secret: "" = a public client (PKCE only)
	ConsoleOIDCRedirectURL   string        // console.oidc.redirect-url: the callback as registered; "" = from the request
	ConsoleOIDCScopes        string        // console.oidc.scopes: space-separated scopes asked for
	StreamTokenSecret        Secret        // stream.token-secret: signs browser connection tokens
	StreamAllowedOrigins     string        // stream.allowed-origins: browser origins allowed to open streams
	StreamQueueSize          int           // stream.queue-size: events waiting per stream connection
	StreamMaxConnsPerKey     int           // stream.max-conns-per-key: open streams per API key
	ArchiveDir               string        // archive-dir: folder of archives with local destinations; "" = data-dir/archive
	StreamMaxSubscriptions   int           // stream.max-subscriptions: subscriptions per WebSocket
	StreamPresenceEvents     bool          // stream.presence-events: publish users' joins and leaves (cluster-wide) to herald.presence
	DebugAddr                string        // debug-addr: listen address of the Go profiler (net/http/pprof); "" = off
	HTTPReadTimeout          time.Duration // http.read-timeout: time to read a whole request, headers and body
	HTTPIdleTimeout          time.Duration // http.idle-timeout: how long a keep-alive connection may wait for its next request
	HTTPMaxConns             int           // http.max-conns: open client connections, streams included
	HTTPMaxConnsPerAddr      int           // http.max-conns-per-addr: open client connections from one remote address
	SourcesFile              string        // sources-file: a JSON file of sources declared with the configuration; "" = none
	PublicURL                string        // public-url: the base URL of links in messages to people; "" = http://<addr>
	EmailSMTPHost            string        // email.smtp-host: the mail server; "" = no email channel
	EmailSMTPPort            int           // email.smtp-port: 0 = by email.smtp-tls (587, 465 or 25)
	EmailSMTPTLS             string        // email.smtp-tls: starttls, tls or none
	EmailSMTPAuth            string        // email.smtp-auth: plain or login (with a username)
	EmailSMTPUsername        string        // email.smtp-username: "" = no AUTH
	EmailSMTPPassword        Secret        // email.smtp-password
	EmailSMTPCAFile          string        // email.smtp-ca-file: PEM certificates to trust besides the system's
	EmailFrom                string        // email.from: the sender of every message
	EmailMaxConns            int           // email.max-conns: SMTP sessions open at once
	EmailRateLimit           int           // email.rate-limit: messages per second; 0 = no bound
	SMSProvider              string        // sms.provider: "" (no SMS channel), twilio or http
	SMSFrom                  string        // sms.from: the sending number or name
	SMSTwilioURL             string        // sms.twilio-url: the Messages API's base URL
	SMSTwilioAccountSID      string        // sms.twilio-account-sid
	SMSTwilioAuthToken       Secret        // sms.twilio-auth-token
	SMSTwilioMessagingSID    string        // sms.twilio-messaging-service-sid: instead of sms.from
	SMSHTTPURL               string        // sms.http-url: the generic provider's URL
	SMSHTTPMethod            string        // sms.http-method
	SMSHTTPHeader            Secret        // sms.http-header: one "Name: value" header, such as the credentials
	SMSHTTPBody              string        // sms.http-body: the request body template
	SMSHTTPContentType       string        // sms.http-content-type
	PushVAPIDPrivateKey      Secret        // push.vapid-private-key: "" = no Web Push
	PushVAPIDSubject         string        // push.vapid-subject: mailto: or https: contact for push services
	PushFCMCredentialsFile   string        // push.fcm-credentials-file: "" = no FCM
	PushFCMURL               string        // push.fcm-url
	PushAPNsKeyFile          string        // push.apns-key-file: "" = no APNs
	PushAPNsKeyID            string        // push.apns-key-id
	PushAPNsTeamID           string        // push.apns-team-id
	PushAPNsTopic            string        // push.apns-topic: the app's bundle id
	PushAPNsURL              string        // push.apns-url
	OIDCIssuer               string        // auth.oidc.issuer: accept bearer JWTs of this OpenID Connect issuer; "" = off
	OIDCAudience             string        // auth.oidc.audience: comma-separated aud values accepted
	OIDCSubjectClaim         string        // auth.oidc.subject-claim
	OIDCScopesClaim          string        // auth.oidc.scopes-claim: claim holding Herald scopes; "" = none
	OIDCRolesClaim           string        // auth.oidc.roles-claim: claim holding roles, mapped by auth.oidc.role-scopes
	OIDCRoleScopes           string        // auth.oidc.role-scopes: "role=scope scope;role=scope"
	OIDCTenantClaim          string        // auth.oidc.tenant-claim: claim binding the caller to a tenant; "" = none
	IntrospectionURL         string        // auth.introspection.url: RFC 7662 endpoint for opaque tokens; "" = off
	IntrospectionClientID    string        // auth.introspection.client-id
	IntrospectionSecret      Secret        // auth.introspection.client-secret
	IntrospectionAudience    string        // auth.introspection.audience: comma-separated aud values accepted; "" = not checked
	IntrospectionCacheTTL    time.Duration // auth.introspection.cache-ttl: how long an answer is reused
	IntrospectionSubject     string        // auth.introspection.subject-claim
	IntrospectionScopesClaim string        // auth.introspection.scopes-claim
	IntrospectionRolesClaim  string        // auth.introspection.roles-claim
	IntrospectionRoleScopes  string        // auth.introspection.role-scopes
	IntrospectionTenantClaim string        // auth.introspection.tenant-claim
	UsageFlushInterval       time.Duration // usage.flush-interval: how often usage counts are written to the store
	MetricsTenantLabels      string        // metrics.tenant-labels: tenants with their own tenant label in herald_tenant_* metrics
}

// settings is the table of every setting: one entry per Config field. The
// name is the file key; the flag and the environment variable derive from
// it (flagName, envName). def is the default in the text form a user would
// write; want says what is accepted, for error messages.
func settings() []setting {
	return []setting{
		{"addr", ":8480", "HTTP listen address (host:port)", `host:port, such as ":8480" or "127.0.0.1:8480"`, func(c *Config) binding { return textField(&c.Addr, validAddr) }},
		{"data-dir", "./herald-data", "directory for the SQLite database and other local state", "a non-empty path", func(c *Config) binding { return textField(&c.DataDir, nonEmpty) }},
		{"node-id", "", `this node's name in dispatch leases and the cluster, unique among running nodes; "" keeps one in data-dir/node-id`, `"" or 1 to 64 letters, digits, '.', '_' or '-'`, func(c *Config) binding { return textField(&c.NodeID, orEmpty(validNodeID)) }},
		{"database-url", "", `the database: "" for SQLite in data-dir, sqlite:PATH, or a postgres:// URL`, `"" (SQLite in data-dir), sqlite:PATH, or a postgres:// or postgresql:// URL`, func(c *Config) binding { return secretField(&c.DatabaseURL, validDatabaseURL) }},
		{"admin-key", "", `an API key accepted with the admin scope, at least 16 characters; "" for none`, `"" or at least 16 characters without spaces (make one with: openssl rand -base64 32)`, func(c *Config) binding { return secretField(&c.AdminKey, validAdminKey) }},
		{"log-level", "info", "least severe level logged: debug, info, warn or error", "debug, info, warn or error", func(c *Config) binding { return levelField(&c.LogLevel) }},
		{"log-format", "text", "log format: text or json", "text or json", func(c *Config) binding { return textField(&c.LogFormat, oneOf("text", "json")) }},
		{"insecure-no-auth", "false", "treat every request as admin, with no API key (local development only)", "true or false", func(c *Config) binding { return boolField(&c.InsecureNoAuth) }},
		{"auto-create-topics", "false", "create unknown topics with default settings on first publish", "true or false", func(c *Config) binding { return boolField(&c.AutoCreateTopics) }},
		{"allow-private-destinations", "false", "let webhooks reach private, loopback and link-local addresses", "true or false", func(c *Config) binding { return boolField(&c.AllowPrivateDestinations) }},
		{"shutdown-timeout", "30s", "how long a graceful shutdown may take before work is abandoned, drain delay included", "a duration above zero, such as 30s or 2m", func(c *Config) binding { return durationField(&c.ShutdownTimeout, atLeast(time.Nanosecond)) }},
		{"shutdown-drain-delay", "5s", "on shutdown, how long /readyz answers 503 while requests are still served, so load balancers stop sending first; 0 for none", "a duration from 0s to 10m, such as 5s", func(c *Config) binding { return durationField(&c.ShutdownDrainDelay, between(0, 10*time.Minute)) }},
		{"retention-check-interval", "1m", "how often events past their topic's retention are pruned", "a duration of at least 1s, such as 1m or 1h", func(c *Config) binding { return durationField(&c.RetentionCheckInterval, atLeast(time.Second)) }},
		{"webhook.disable-after", "5d", "disable a subscription when every delivery has failed for this long", "a duration of at least 1m, such as 5d or 12h", func(c *Config) binding { return durationField(&c.WebhookDisableAfter, atLeast(time.Minute)) }},
		{"webhook.max-concurrency", "256", "webhook requests in flight at once across all subscriptions; one subscription holds at most a quarter of them, one host half", "a whole number from 1 to 65536", func(c *Config) binding { return intField(&c.WebhookMaxConcurrency, 1, 65536) }},
		{"stream.token-secret", "", `signs browser connection tokens; every node needs the same one; "" makes a random one per start (single node only)`, `"" or at least 32 characters (make one with: openssl rand -base64 32)`, func(c *Config) binding { return secretField(&c.StreamTokenSecret, validTokenSecret) }},
		{"stream.allowed-origins", "", "comma-separated browser origins (host patterns such as app.example.com) allowed to open streams besides the server's own", "a comma-separated list of host patterns, or empty", func(c *Config) binding { return textField(&c.StreamAllowedOrigins, nil) }},
		{"stream.queue-size", "1024", "events waiting to be written to one stream connection before it is cut off as a slow consumer", "a whole number from 16 to 1048576", func(c *Config) binding { return intField(&c.StreamQueueSize, 16, 1<<20) }},
		{"stream.max-conns-per-key", "1000", "open streams (SSE and WebSocket) per API key", "a whole number from 1 to 1000000", func(c *Config) binding { return intField(&c.StreamMaxConnsPerKey, 1, 1_000_000) }},
		{"archive-dir", "", `folder that archives with a local destination write into (each in its own path); "" for data-dir/archive`, "a path, or empty", func(c *Config) binding { return textField(&c.ArchiveDir, func(string) bool { return true }) }},
		{"stream.max-subscriptions", "100", "subscriptions one WebSocket may carry", "a whole number from 1 to 10000", func(c *Config) binding { return intField(&c.StreamMaxSubscriptions, 1, 10_000) }},
		{"stream.presence-events", "false", "publish to the system topic herald.presence when a user's first stream in the cluster opens and its last one closes", "true or false", func(c *Config) binding { return boolField(&c.StreamPresenceEvents) }},
		{"debug-addr", "", `listen address of the Go profiler (/debug/pprof/), such as 127.0.0.1:6060; "" for none. It has no authentication: keep it on loopback`, `"" or host:port`, func(c *Config) binding { return textField(&c.DebugAddr, orEmpty(validAddr)) }},
		{"http.read-timeout", "1m", "a request's headers and body must arrive within this, or it is answered 408 and its connection closed; open streams are not affected", "a duration from 1ms to 1h, such as 1m", func(c *Config) binding {
			return durationField(&c.HTTPReadTimeout, between(time.Millisecond, time.Hour))
		}},
		{"http.idle-timeout", "2m", "how long a keep-alive connection may wait for its next request before it is closed", "a duration from 1ms to 1h, such as 2m", func(c *Config) binding {
			return durationField(&c.HTTPIdleTimeout, between(time.Millisecond, time.Hour))
		}},
		{"http.max-conns", "4096", "open client connections at once, streams included; over it the oldest connection that has not authenticated is closed to make room, or, when all have, the new one is answered 503. Keep it below the process's open-file limit", "a whole number from 1 to 10000000", func(c *Config) binding { return intField(&c.HTTPMaxConns, 1, 10_000_000) }},
		{"http.max-conns-per-addr", "256", "open client connections from one remote IP address, streams included, bounded as http.max-conns is; behind a load balancer or proxy every client shares its address: set it to http.max-conns there", "a whole number from 1 to 10000000", func(c *Config) binding { return intField(&c.HTTPMaxConnsPerAddr, 1, 10_000_000) }},
		{"sources-file", "", `a JSON file of sources ({"sources": [...]}, see docs/sources.md) kept in step with the store at start; ${NAME} in it reads the environment; "" for none`, `"" or a path`, func(c *Config) binding { return textField(&c.SourcesFile, nil) }},
		{"public-url", "", `the base URL people reach this server at, for the confirmation and unsubscribe links in messages (https://herald.example.com); "" uses http:// and the listen address, for local use only`, `"" or an http:// or https:// URL without a query`, func(c *Config) binding { return textField(&c.PublicURL, orEmpty(validPublicURL)) }},
		{"email.smtp-host", "", `the mail server (submission service or relay) the email channel sends through; "" turns the email channel off`, `"" or a host name or IP address`, func(c *Config) binding { return textField(&c.EmailSMTPHost, nil) }},
		{"email.smtp-port", "0", "the mail server's port; 0 picks 587 for starttls, 465 for tls, 25 for none", "a whole number from 0 to 65535", func(c *Config) binding { return intField(&c.EmailSMTPPort, 0, 65535) }},
		{"email.smtp-tls", "starttls", "how the connection to the mail server is encrypted: starttls (required, not opportunistic), tls (implicit, port 465) or none (a relay on the same host only)", "starttls, tls or none", func(c *Config) binding { return textField(&c.EmailSMTPTLS, oneOf("starttls", "tls", "none")) }},
		{"email.smtp-auth", "plain", "the AUTH mechanism used with email.smtp-username: plain or login", "plain or login", func(c *Config) binding { return textField(&c.EmailSMTPAuth, oneOf("plain", "login")) }},
		{"email.smtp-username", "", `the user name for SMTP AUTH; "" sends without AUTH`, "any text", func(c *Config) binding { return textField(&c.EmailSMTPUsername, nil) }},
		{"email.smtp-password", "", "the password for SMTP AUTH", "any text", func(c *Config) binding { return secretField(&c.EmailSMTPPassword, func(string) bool { return true }) }},
		{"email.smtp-ca-file", "", `a PEM file of certificates to trust for the mail server besides the system's (a private relay); "" for the system's only`, `"" or a file path`, func(c *Config) binding { return textField(&c.EmailSMTPCAFile, nil) }},
		{"email.from", "", `the sender of every message, such as "Herald <herald@example.com>"; required with email.smtp-host`, "an email address, with or without a display name", func(c *Config) binding { return textField(&c.EmailFrom, nil) }},
		{"email.max-conns", "8", "SMTP sessions open to the mail server at once; idle ones are reused", "a whole number from 1 to 1024", func(c *Config) binding { return intField(&c.EmailMaxConns, 1, 1024) }},
		{"email.rate-limit", "0", "messages per second sent to the mail server, over all subscriptions; 0 for no bound", "a whole number from 0 to 1000000", func(c *Config) binding { return intField(&c.EmailRateLimit, 0, 1_000_000) }},
		{"sms.provider", "", `the SMS provider API: twilio (a Twilio-compatible Messages API) or http (a request per message, see sms.http-*); "" turns the SMS channel off`, `"", twilio or http`, func(c *Config) binding { return textField(&c.SMSProvider, orEmpty(oneOf("twilio", "http"))) }},
		{"sms.from", "", "the number (E.164) or sender name messages come from", "any text", func(c *Config) binding { return textField(&c.SMSFrom, nil) }},
		{"sms.twilio-url", "https://api.twilio.com", "the base URL of the Twilio-compatible Messages API", "an http:// or https:// URL", func(c *Config) binding { return textField(&c.SMSTwilioURL, validPublicURL) }},
		{"sms.twilio-account-sid", "", "the account SID (the Basic auth user)", "any text", func(c *Config) binding { return textField(&c.SMSTwilioAccountSID, nil) }},
		{"sms.twilio-auth-token", "", "the auth token (the Basic auth password)", "any text", func(c *Config) binding { return secretField(&c.SMSTwilioAuthToken, func(string) bool { return true }) }},
		{"sms.twilio-messaging-service-sid", "", `a messaging service to send from instead of sms.from; "" for none`, "any text", func(c *Config) binding { return textField(&c.SMSTwilioMessagingSID, nil) }},
		{"sms.http-url", "", "the generic provider's URL, with sms.provider http", `"" or an http:// or https:// URL`, func(c *Config) binding { return textField(&c.SMSHTTPURL, orEmpty(validPublicURL)) }},
		{"sms.http-method", "POST", "the generic provider's request method", "POST or PUT", func(c *Config) binding { return textField(&c.SMSHTTPMethod, oneOf("POST", "PUT")) }},
		{"sms.http-header", "", `one header sent with every generic provider request, "Name: value" (the credentials: "Authorization: Bearer ...")`, `"" or "Name: value"`, func(c *Config) binding {
			return secretField(&c.SMSHTTPHeader, orEmpty(func(s string) bool { n, _, ok := strings.Cut(s, ":"); return ok && strings.TrimSpace(n) != "" }))
		}},
		{"sms.http-body", "", `the generic provider's body, a Go template over {{.To}}, {{.From}} and {{.Text}} with the function json; "" for {"to":...,"from":...,"text":...}`, "a Go template", func(c *Config) binding { return textField(&c.SMSHTTPBody, nil) }},
		{"sms.http-content-type", "application/json", "the generic provider's body content type", "a media type", func(c *Config) binding { return textField(&c.SMSHTTPContentType, nonEmpty) }},
		{"push.vapid-private-key", "", `the Web Push application server key (VAPID, RFC 8292): the 32-byte P-256 private key, base64url ("herald push vapid-keys" makes a pair); "" turns Web Push off`, `"" or 43 base64url characters`, func(c *Config) binding {
			return secretField(&c.PushVAPIDPrivateKey, orEmpty(func(s string) bool { return len(strings.TrimRight(s, "=")) == 43 }))
		}},
		{"push.vapid-subject", "", "the contact push services may use about this server's messages; required with push.vapid-private-key", `"" or a mailto: or https: URL`, func(c *Config) binding {
			return textField(&c.PushVAPIDSubject, orEmpty(func(s string) bool { return strings.HasPrefix(s, "mailto:") || strings.HasPrefix(s, "https://") }))
		}},
		{"push.fcm-credentials-file", "", `a Google service-account key file (JSON) with the Firebase Cloud Messaging scope; "" turns FCM off`, `"" or a file path`, func(c *Config) binding { return textField(&c.PushFCMCredentialsFile, nil) }},
		{"push.fcm-url", "https://fcm.googleapis.com", "the base URL of the FCM HTTP v1 API", "an http:// or https:// URL", func(c *Config) binding { return textField(&c.PushFCMURL, validPublicURL) }},
		{"push.apns-key-file", "", `the APNs token signing key (.p8); "" turns APNs off`, `"" or a file path`, func(c *Config) binding { return textField(&c.PushAPNsKeyFile, nil) }},
		{"push.apns-key-id", "", "the id of the APNs key (10 characters, from the developer account)", "any text", func(c *Config) binding { return textField(&c.PushAPNsKeyID, nil) }},
		{"push.apns-team-id", "", "the developer team id that owns the APNs key", "any text", func(c *Config) binding { return textField(&c.PushAPNsTeamID, nil) }},
		{"push.apns-topic", "", "the app's bundle id (apns-topic)", "any text", func(c *Config) binding { return textField(&c.PushAPNsTopic, nil) }},
		{"push.apns-url", "https://api.push.apple.com", "the APNs base URL (https://api.sandbox.push.apple.com for development builds)", "an http:// or https:// URL", func(c *Config) binding { return textField(&c.PushAPNsURL, validPublicURL) }},
		{"success-sample", "100", "successful attempts each subscription keeps as a sample: successes are counted, not logged one row each (failures always are)", "a whole number from 0 to 1000", func(c *Config) binding { return intField(&c.SuccessSample, 0, herald.MaxSuccessSample) }},
		{"attempt-retention", "7d", "how long the delivery attempt log is kept", "a duration of at least 1h, such as 7d", func(c *Config) binding { return durationField(&c.AttemptRetention, atLeast(time.Hour)) }},
		{"audit.retention", "90d", "how long the audit log (GET /v1/audit) is kept", "a duration of at least 1h, such as 90d", func(c *Config) binding { return durationField(&c.AuditRetention, atLeast(time.Hour)) }},
		{"console.frame-ancestors", "", `space-separated origins that may show the tenant portal (/console/portal) in a frame, such as https://app.example.com; "" for none. The operator console is never framed`, `"" or space-separated http(s) origins or host patterns (https://*.example.com)`, func(c *Config) binding { return textField(&c.ConsoleFrameAncestors, orEmpty(validFrameAncestors)) }},
		{"audit.publish", "true", "publish every audit log entry to the system topic herald.audit as well", "true or false", func(c *Config) binding { return boolField(&c.AuditPublish) }},
		{"console.oidc.issuer", "", `offer "Sign in with ..." in the operator console with this OpenID Connect provider (authorization code flow with PKCE); the person's roles and tenant come from the claims the auth.oidc.* mapping settings name; "" offers API keys only`, `"" or an http:// or https:// URL`, func(c *Config) binding { return textField(&c.ConsoleOIDCIssuer, orEmpty(validIssuer)) }},
		{"console.oidc.name", "", `the provider's name on the sign-in button ("Sign in with <name>"); "" shows the issuer's host`, "any text up to 60 characters", func(c *Config) binding {
			return textField(&c.ConsoleOIDCName, func(s string) bool { return len(s) <= 60 })
		}},
		{"console.oidc.client-id", "", "Herald's client id at the provider; required with console.oidc.issuer", "any text", func(c *Config) binding { return textField(&c.ConsoleOIDCClientID, nil) }},
		{"console.oidc.client-secret", "", `Herald's client secret at the provider (write-only: never logged or shown); "" makes Herald a public client that PKCE alone protects`, "any text", func(c *Config) binding {
			return secretField(&c.ConsoleOIDCClientSecret, func(string) bool { return true })
		}},
		{"console.oidc.redirect-url", "", `the console's callback as registered at the provider: {public URL}/console/oidc/callback; "" builds it from the address the browser uses, which is wrong behind a proxy that changes the scheme or host`, `"" or an http:// or https:// URL ending in /console/oidc/callback`, func(c *Config) binding {
			return textField(&c.ConsoleOIDCRedirectURL, orEmpty(func(s string) bool { return validIssuer(s) && strings.HasSuffix(s, console.CallbackPath) }))
		}},
		{"console.oidc.scopes", "openid profile email", `the scopes asked for at sign-in, space-separated ("openid" is always asked for); add the one that makes your provider put roles or groups in the tokens`, "space-separated scope names", func(c *Config) binding { return textField(&c.ConsoleOIDCScopes, nil) }},
		{"auth.oidc.issuer", "", `accept bearer JWTs issued by this OpenID Connect issuer beside API keys (its discovery document and keys are fetched from it); "" turns it off`, `"" or an http:// or https:// URL`, func(c *Config) binding { return textField(&c.OIDCIssuer, orEmpty(validIssuer)) }},
		{"auth.oidc.audience", "", `the "aud" values a token must name one of, comma-separated (usually Herald's client id at the provider); required with auth.oidc.issuer`, "a comma-separated list", func(c *Config) binding { return textField(&c.OIDCAudience, nil) }},
		{"auth.oidc.subject-claim", "sub", "the claim naming the caller in the audit log", "a claim name or dotted path", func(c *Config) binding { return textField(&c.OIDCSubjectClaim, nonEmpty) }},
		{"auth.oidc.scopes-claim", "", `a claim holding Herald scopes as written ("admin", "publish:orders.>"), an array or a space-separated string; other values are ignored; "" reads none`, "a claim name or dotted path, or empty", func(c *Config) binding { return textField(&c.OIDCScopesClaim, nil) }},
		{"auth.oidc.roles-claim", "roles", "a claim holding the caller's roles or groups, mapped to scopes by auth.oidc.role-scopes (dotted paths reach nested claims: realm_access.roles)", "a claim name or dotted path", func(c *Config) binding { return textField(&c.OIDCRolesClaim, nil) }},
		{"auth.oidc.role-scopes", "", `the scopes of each role: "role=scope scope;role=scope", such as "herald-admins=admin;billing=publish:billing.> read:billing.>"`, `role=scope [scope ...] entries separated by ';'`, func(c *Config) binding { return textField(&c.OIDCRoleScopes, validRoleScopes) }},
		{"auth.oidc.tenant-claim", "", `a claim that binds a caller to the tenant it names (a tenant's caller cannot be admin); "" binds none`, "a claim name or dotted path, or empty", func(c *Config) binding { return textField(&c.OIDCTenantClaim, nil) }},
		{"auth.introspection.url", "", `accept opaque bearer tokens checked at this OAuth 2.0 token introspection endpoint (RFC 7662); "" turns it off`, `"" or an http:// or https:// URL`, func(c *Config) binding { return textField(&c.IntrospectionURL, orEmpty(validIssuer)) }},
		{"auth.introspection.client-id", "", "the client id Herald authenticates to the introspection endpoint with (HTTP Basic); required with auth.introspection.url", "any text", func(c *Config) binding { return textField(&c.IntrospectionClientID, nil) }},
		{"auth.introspection.client-secret", "", "the client secret for the introspection endpoint", "any text", func(c *Config) binding { return secretField(&c.IntrospectionSecret, func(string) bool { return true }) }},
		{"auth.introspection.audience", "", `"aud" values an active token must name one of, comma-separated; "" checks none`, "a comma-separated list, or empty", func(c *Config) binding { return textField(&c.IntrospectionAudience, nil) }},
		{"auth.introspection.cache-ttl", "1m", "how long an introspection answer is reused for the same token (never past the token's exp); a revoked token is refused within this", "a duration from 1s to 1h, such as 1m", func(c *Config) binding {
			return durationField(&c.IntrospectionCacheTTL, between(time.Second, time.Hour))
		}},
		{"auth.introspection.subject-claim", "sub", "the member naming the caller (client_id, then username, when it is absent)", "a member name or dotted path", func(c *Config) binding { return textField(&c.IntrospectionSubject, nonEmpty) }},
		{"auth.introspection.scopes-claim", "", `a member holding Herald scopes as written (RFC 7662's "scope" is a space-separated string); "" reads none`, "a member name or dotted path, or empty", func(c *Config) binding { return textField(&c.IntrospectionScopesClaim, nil) }},
		{"auth.introspection.roles-claim", "roles", "a member holding roles, mapped by auth.introspection.role-scopes", "a member name or dotted path", func(c *Config) binding { return textField(&c.IntrospectionRolesClaim, nil) }},
		{"auth.introspection.role-scopes", "", `the scopes of each role, as auth.oidc.role-scopes`, `role=scope [scope ...] entries separated by ';'`, func(c *Config) binding { return textField(&c.IntrospectionRoleScopes, validRoleScopes) }},
		{"usage.flush-interval", "10s", "how often each node writes its usage counts (GET /v1/usage) to the store; a crash loses at most this much of them", "a duration from 1s to 10m, such as 10s", func(c *Config) binding {
			return durationField(&c.UsageFlushInterval, between(time.Second, 10*time.Minute))
		}},
		{"metrics.tenant-labels", "", `comma-separated tenant ids that get their own tenant label in the herald_tenant_* metrics; every other tenant counts as tenant="_other", so the series stay few`, "a comma-separated list of tenant ids, or empty", func(c *Config) binding {
			return textField(&c.MetricsTenantLabels, func(s string) bool {
				for _, id := range splitList(s) {
					if !herald.ValidTenantID(id) {
						return false
					}
				}
				return true
			})
		}},
		{"auth.introspection.tenant-claim", "", `a member that binds a caller to the tenant it names; "" binds none`, "a member name or dotted path, or empty", func(c *Config) binding { return textField(&c.IntrospectionTenantClaim, nil) }},
	}
}

// validIssuer accepts an http or https URL with a host.
func validIssuer(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Fragment == ""
}

func validRoleScopes(s string) bool {
	_, err := identity.ParseRoleScopes(s)
	return err == nil
}

// validateAuth checks the settings of outside identity that depend on
// each other.
func (c Config) validateAuth() []error {
	var errs []error
	if c.OIDCIssuer != "" {
		if splitList(c.OIDCAudience) == nil {
			errs = append(errs, errors.New("auth.oidc.audience: required with auth.oidc.issuer: the aud value (usually Herald's client id at the provider) that tokens must name"))
		}
		if c.OIDCScopesClaim == "" && c.OIDCRoleScopes == "" {
			errs = append(errs, errors.New("auth.oidc.scopes-claim or auth.oidc.role-scopes: set at least one with auth.oidc.issuer, or no token can do anything"))
		}
	}
	if c.ConsoleOIDCIssuer != "" {
		if c.ConsoleOIDCClientID == "" {
			errs = append(errs, errors.New("console.oidc.client-id: required with console.oidc.issuer: Herald's client id at the provider"))
		}
		if c.OIDCScopesClaim == "" && c.OIDCRoleScopes == "" {
			errs = append(errs, errors.New("auth.oidc.scopes-claim or auth.oidc.role-scopes: set at least one with console.oidc.issuer, or no one who signs in can do anything"))
		}
	}
	if c.IntrospectionURL != "" {
		if c.IntrospectionClientID == "" {
			errs = append(errs, errors.New("auth.introspection.client-id: required with auth.introspection.url"))
		}
		if c.IntrospectionScopesClaim == "" && c.IntrospectionRoleScopes == "" {
			errs = append(errs, errors.New("auth.introspection.scopes-claim or auth.introspection.role-scopes: set at least one with auth.introspection.url, or no token can do anything"))
		}
	}
	return errs
}

// splitList splits a comma-separated list, dropping blanks; nil for none.
func splitList(s string) []string {
	var out []string
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Secret is a setting that must not be shown: a password-bearing URL, a
// key. Its String, GoString, LogValue and MarshalText redact it, so printing
// or logging a Config does not leak it. Use string(s) for the value.
type Secret string

const redacted = "[redacted]"

// String returns "[redacted]", or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString redacts for %#v.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// LogValue redacts for log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText redacts for encoding/json and other encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// DefaultConfig returns the configuration with every setting at its
// default: SQLite in ./herald-data, port 8480, API keys required.
func DefaultConfig() Config {
	var c Config
	for _, s := range settings() {
		if err := s.bind(&c).set(s.def); err != nil {
			panic(fmt.Sprintf("setting %s: default %q: %v", s.name, s.def, err)) // a bug in the table; a test catches it
		}
	}
	return c
}

// Validate checks every setting of c and reports every problem at once
// (errors.Join), each naming the setting, its value and what is accepted.
func (c Config) Validate() error {
	var errs []error
	for _, s := range settings() {
		if b := s.bind(&c); !b.valid() {
			errs = append(errs, s.problem(b.text(), b.secret(), ""))
		}
	}
	errs = append(errs, c.validateAuth()...)
	return errors.Join(errs...)
}

// ParseConfig builds the configuration from the command-line arguments
// after the verb, the environment (read through getenv) and the config
// file, in that order of precedence, over the defaults. It writes nothing
// unless args ask for help (-h), when it writes the usage to stderr and
// returns flag.ErrHelp.
//
// The config file is named by -config PATH or HERALD_CONFIG. It holds one
// "key = value" per line, where key is a setting's name (addr,
// shutdown-timeout, webhook.timeout...). Blank lines and lines whose first
// non-blank character is # are ignored; there are no comments after a
// value, since '#' may be part of one. Spaces around key and value are
// trimmed; a value may be written in double quotes, with Go escapes, to keep
// spaces or to be empty. Unknown keys and repeated keys are errors.
//
// An environment variable set to "" counts as unset. Every problem (a flag
// that does not exist, an unknown file key, a value that does not parse or
// is out of range) is reported at once, joined; the error is a usage error,
// so run exits 2 on it when serveCommand returns it unchanged or wrapped.
func ParseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	table := settings()
	fs := flag.NewFlagSet("herald", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fromFlags := map[string]string{}
	for _, s := range table {
		fs.Var(&rawFlag{name: s.name, into: fromFlags, isBool: s.bind(new(Config)).isBool()}, flagName(s.name), s.usage)
	}
	var configPath string
	fs.StringVar(&configPath, "config", "", "read settings from this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeConfigUsage(stderr, table)
			return Config{}, flag.ErrHelp
		}
		return Config{}, usageErrorf("%v (see -h for the settings)", err)
	}
	if fs.NArg() > 0 {
		return Config{}, usageErrorf("unexpected argument %q: settings are flags, such as -addr :8480 (see -h)", fs.Arg(0))
	}

	var errs []error
	configSource := "-config"
	if configPath == "" {
		configPath, configSource = getenv("HERALD_CONFIG"), "HERALD_CONFIG"
	}
	var fromFile map[string]fileValue
	if configPath != "" {
		var err error
		if fromFile, err = readConfigFile(configPath, configSource, table); err != nil {
			errs = append(errs, err) // fromFile still holds the good lines
		}
	}

	var c Config
	for _, s := range table {
		text, source := s.def, "default"
		if v, ok := fromFile[s.name]; ok {
			text, source = v.text, fmt.Sprintf("%s:%d", configPath, v.line)
		}
		if v := getenv(envName(s.name)); v != "" {
			text, source = v, envName(s.name)
		}
		if v, ok := fromFlags[s.name]; ok {
			text, source = v, "-"+flagName(s.name)
		}
		b := s.bind(&c)
		if err := b.set(text); err != nil || !b.valid() {
			errs = append(errs, s.problem(text, b.secret(), source))
		}
	}
	if len(errs) > 0 {
		return Config{}, &usageError{err: errors.Join(errs...)}
	}
	return c, nil
}

// setting is one row of the settings table.
type setting struct {
	name  string                  // the file key; see flagName and envName
	def   string                  // the default, as text
	usage string                  // one line for -h
	want  string                  // what is accepted, for error messages
	bind  func(c *Config) binding // the field of c this setting sets
}

func flagName(name string) string { return name }

func envName(name string) string {
	return "HERALD_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(name))
}

// problem describes an unaccepted value: the setting, the value (redacted
// for secrets), where it came from and what is accepted.
func (s setting) problem(text string, secret bool, source string) error {
	value := strconv.Quote(text)
	if secret && text != "" {
		value = fmt.Sprintf("%s (%d characters)", redacted, utf8.RuneCountInString(text))
	}
	from := ""
	if source != "" {
		from = " (from " + source + ")"
	}
	return fmt.Errorf("%s = %s%s is not accepted: want %s", s.name, value, from, s.want)
}

// binding connects a setting to its Config field.
type binding interface {
	set(text string) error // parse text into the field
	text() string          // the field's value as text
	valid() bool           // whether the field's value is accepted
	secret() bool          // whether the value must not be shown
	isBool() bool          // whether the flag may be given without a value
	addr() any             // the field's address, for tests
}

type field[T any] struct {
	p      *T
	parse  func(string) (T, error)
	format func(T) string
	ok     func(T) bool // nil: every value that parses
}

func (f field[T]) set(text string) error {
	v, err := f.parse(text)
	if err != nil {
		return err
	}
	*f.p = v
	return nil
}

func (f field[T]) text() string { return f.format(*f.p) }
func (f field[T]) valid() bool  { return f.ok == nil || f.ok(*f.p) }
func (f field[T]) addr() any    { return f.p }
func (f field[T]) secret() bool { _, ok := any(f.p).(*Secret); return ok }
func (f field[T]) isBool() bool { _, ok := any(f.p).(*bool); return ok }

func textField(p *string, ok func(string) bool) binding {
	return field[string]{p: p, parse: func(s string) (string, error) { return s, nil }, format: func(s string) string { return s }, ok: ok}
}

func secretField(p *Secret, ok func(string) bool) binding {
	return field[Secret]{p: p, parse: func(s string) (Secret, error) { return Secret(s), nil },
		format: func(s Secret) string { return string(s) }, ok: func(s Secret) bool { return ok(string(s)) }}
}

func boolField(p *bool) binding {
	return field[bool]{p: p, parse: strconv.ParseBool, format: strconv.FormatBool}
}

func durationField(p *time.Duration, ok func(time.Duration) bool) binding {
	return field[time.Duration]{p: p, parse: herald.ParseDuration, format: herald.FormatDuration, ok: ok}
}

func intField(p *int, least, most int) binding {
	return field[int]{p: p, parse: strconv.Atoi, format: strconv.Itoa, ok: func(n int) bool { return n >= least && n <= most }}
}

func levelField(p *slog.Level) binding {
	return field[slog.Level]{p: p, parse: parseLevel, format: func(l slog.Level) string { return strings.ToLower(l.String()) },
		ok: func(l slog.Level) bool { _, err := parseLevel(strings.ToLower(l.String())); return err == nil }}
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q", s)
}

func validAddr(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

func nonEmpty(s string) bool { return strings.TrimSpace(s) != "" }

func validPublicURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.RawQuery == "" && u.Fragment == ""
}

// frameAncestorRE is one CSP host source: an optional http(s) scheme, a
// host that may start with "*.", an optional port.
var frameAncestorRE = regexp.MustCompile(`^(https?://)?(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:([0-9]{1,5}|\*))?$`)

// validFrameAncestors accepts space-separated CSP host sources, nothing
// that could end the directive or add another.
func validFrameAncestors(s string) bool {
	fields := strings.Fields(s)
	for _, f := range fields {
		if !frameAncestorRE.MatchString(f) {
			return false
		}
	}
	return len(fields) > 0
}

// validNodeID accepts 1 to 64 ASCII letters, digits, '.', '_' and '-': a
// host name fits, and so does what the logs and the nodes table show.
func validNodeID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// orEmpty accepts "" besides what valid accepts.
func orEmpty(valid func(string) bool) func(string) bool {
	return func(s string) bool { return s == "" || valid(s) }
}

func oneOf(values ...string) func(string) bool {
	return func(s string) bool {
		for _, v := range values {
			if s == v {
				return true
			}
		}
		return false
	}
}

func atLeast(least time.Duration) func(time.Duration) bool {
	return func(d time.Duration) bool { return d >= least }
}

func between(least, most time.Duration) func(time.Duration) bool {
	return func(d time.Duration) bool { return d >= least && d <= most }
}

func validTokenSecret(s string) bool { return s == "" || len(s) >= 32 }

func validDatabaseURL(s string) bool {
	if s == "" {
		return true
	}
	if path, ok := strings.CutPrefix(s, "sqlite:"); ok {
		return strings.TrimPrefix(path, "//") != ""
	}
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql")
}

func validAdminKey(s string) bool {
	if s == "" {
		return true
	}
	if utf8.RuneCountInString(s) < 16 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// rawFlag records a flag's text; ParseConfig parses it with the other
// sources, so every bad value is reported at once.
type rawFlag struct {
	name   string
	into   map[string]string
	isBool bool
}

func (f *rawFlag) String() string {
	if f == nil || f.into == nil {
		return ""
	}
	return f.into[f.name]
}

func (f *rawFlag) Set(s string) error { f.into[f.name] = s; return nil }
func (f *rawFlag) IsBoolFlag() bool   { return f.isBool }

// fileValue is a value read from the config file, with its line number.
type fileValue struct {
	text string
	line int
}

// maxConfigFileBytes bounds the config file, which is small by nature.
const maxConfigFileBytes = 1 << 20

// readConfigFile reads the "key = value" file described at ParseConfig. It
// reports every malformed line at once.
// source says where the path came from, for the error when it cannot be
// read.
func readConfigFile(path, source string, table []setting) (map[string]fileValue, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the config file named by %s: %w", source, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read the config file named by %s: %w", source, err)
	}
	if len(data) > maxConfigFileBytes {
		return nil, fmt.Errorf("the config file %s (named by %s) is over %d bytes", path, source, maxConfigFileBytes)
	}
	known := map[string]bool{}
	var names []string
	for _, s := range table {
		known[s.name] = true
		names = append(names, s.name)
	}

	out := map[string]fileValue{}
	var errs []error
	text := strings.TrimPrefix(string(data), "\uFEFF")
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s:%d: want \"key = value\", got %q", path, n, line))
			continue
		case key == "":
			errs = append(errs, fmt.Errorf("%s:%d: the key before '=' is empty", path, n))
			continue
		case !known[key]:
			errs = append(errs, fmt.Errorf("%s:%d: unknown setting %q; the settings are %s", path, n, key, strings.Join(names, ", ")))
			continue
		}
		if prev, dup := out[key]; dup {
			errs = append(errs, fmt.Errorf("%s:%d: %s is already set on line %d", path, n, key, prev.line))
			continue
		}
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			unq, err := strconv.Unquote(value)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: %s: malformed quoted value: %v", path, n, key, err))
				continue
			}
			value = unq
		}
		out[key] = fileValue{text: value, line: n}
	}
	return out, errors.Join(errs...)
}

func writeConfigUsage(w io.Writer, table []setting) {
	var b strings.Builder
	b.WriteString(`Usage: herald serve [settings]
       herald migrate [settings]

Each setting has one name in three forms: a flag (-addr), an environment
variable (HERALD_ADDR) and a key in the config file (addr). Flags win over
the environment, which wins over the file, which wins over the default.

  -config PATH, HERALD_CONFIG
        read settings from this file: one "key = value" per line; blank
        lines and lines starting with # are ignored; a value may be quoted
        ("...", Go escapes); unknown keys are errors.

Settings:
`)
	for _, s := range table {
		def := s.def
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(&b, "\n  -%s, %s, %s  (default %s)\n        %s\n", flagName(s.name), envName(s.name), s.name, def, s.usage)
	}
	_, _ = io.WriteString(w, b.String())
}
