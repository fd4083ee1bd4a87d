package amqp

import (
	"encoding/json"
	"net"
	"net/url"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Config is an amqp subscription's channel config as stored.
type Config struct {
	// URL is the broker: amqp://host:5672/vhost, or amqps:// for TLS.
	// Stored without credentials: a user and password written in the URL
	// move to their members.
	URL string `json:"url"`
	// Exchange receives the messages; "" is the default exchange, which
	// routes a message to the queue its routing key names.
	Exchange string `json:"exchange"`
	// RoutingKey is a template of {topic}, {key} and {type}; "{topic}" by
	// default.
	RoutingKey string `json:"routing_key"`
	// Mandatory (the default) makes a message no queue takes a failure,
	// retried later, instead of one the broker drops.
	Mandatory bool `json:"mandatory"`
	// User and Password log in (PLAIN); with neither, the broker's
	// default guest login is tried. Password is a secret: Public never
	// shows it.
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	// max_batch_events (500 by default, up to 2000) and linger_ms.
	channel.Batching
}

// Limits of a config.
const (
	maxURLLen         = 2048
	maxNameLen        = 255 // AMQP short strings: exchange names, routing keys
	maxSecretLen      = 1024
	defaultRoutingKey = "{topic}"
)

func parseConfig(raw json.RawMessage) (Config, error) { return channel.ParseConfig[Config](Name, raw) }

func (c Config) encode() json.RawMessage { return channel.EncodeConfig(c) }

// poolKey tells apart connections that differ: the broker and the login.
func (c Config) poolKey() string { return channel.PoolKey(c.URL, c.User, c.Password) }

// input is a config as a caller writes it; Password and Mandatory are
// pointers to tell "absent" from a value.
type input struct {
	URL        string  `json:"url"`
	Exchange   string  `json:"exchange"`
	RoutingKey string  `json:"routing_key"`
	Mandatory  *bool   `json:"mandatory"`
	User       string  `json:"user"`
	Password   *string `json:"password"`
	channel.Batching
}

// validate checks a caller's config and returns its canonical form. On an
// update a password left out stays, but only while the broker stays the
// same.
func validate(p channel.ValidateParams, allowPrivate bool) (Config, error) {
	var in input
	if err := channel.DecodeConfig(p.Config, &in); err != nil {
		return Config{}, err
	}
	out := Config{Exchange: in.Exchange, RoutingKey: in.RoutingKey, Mandatory: in.Mandatory == nil || *in.Mandatory, User: in.User, Batching: in.Batching}
	if err := out.Check(DefaultBatch, MaxBatch); err != nil {
		return Config{}, err
	}
	urlUser, urlPass, err := canonicalURL(in.URL, allowPrivate, &out)
	if err != nil {
		return Config{}, err
	}
	if urlUser != nil {
		if in.User != "" || in.Password != nil {
			return Config{}, herald.FieldErrorf("url", "the url holds a login and so do user or password: give it once")
		}
		out.User, in.Password = *urlUser, urlPass
	}
	if len(out.Exchange) > maxNameLen || !printableName(out.Exchange) {
		return Config{}, herald.FieldErrorf("exchange", "exchange must be at most %d printable characters", maxNameLen)
	}
	if out.RoutingKey == "" {
		out.RoutingKey = defaultRoutingKey
	}
	if len(out.RoutingKey) > maxNameLen {
		return Config{}, herald.FieldErrorf("routing_key", "routing_key is %d bytes; the limit is %d", len(out.RoutingKey), maxNameLen)
	}
	t, err := channel.ParseTemplate(out.RoutingKey)
	if err != nil {
		return Config{}, herald.FieldErrorf("routing_key", "routing_key %v", err)
	}
	for _, lit := range t.Literals() {
		if !printableName(lit) {
			return Config{}, herald.FieldErrorf("routing_key", "routing_key %q holds control characters", out.RoutingKey)
		}
	}
	if len(out.User) > maxSecretLen || strings.ContainsAny(out.User, "\x00\r\n") {
		return Config{}, herald.FieldErrorf("user", "user must be at most %d bytes on one line", maxSecretLen)
	}
	var prev Config
	if p.Previous != nil {
		if prev, err = parseConfig(p.Previous); err != nil {
			return Config{}, err
		}
	}
	if out.Password, err = channel.KeepSecret(in.Password, prev.Password, prev.URL == out.URL, "password"); err != nil {
		return Config{}, err
	}
	if len(out.Password) > maxSecretLen || strings.ContainsRune(out.Password, 0) {
		return Config{}, herald.FieldErrorf("password", "password must be at most %d bytes", maxSecretLen)
	}
	if out.Password != "" && out.User == "" {
		return Config{}, herald.FieldErrorf("user", "a password needs a user")
	}
	return out, nil
}

// canonicalURL checks the url member and stores it in out.URL as
// scheme://host:port/vhost. It returns the login the url held, which the
// caller moves to the user and password members.
func canonicalURL(raw string, allowPrivate bool, out *Config) (user, pass *string, err error) {
	if raw == "" {
		return nil, nil, herald.FieldErrorf("url", "url is required: the broker, as amqp://host:5672/vhost (amqps:// for TLS)")
	}
	if len(raw) > maxURLLen {
		return nil, nil, herald.FieldErrorf("url", "url is %d bytes; the limit is %d", len(raw), maxURLLen)
	}
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, nil, herald.FieldErrorf("url", "url is not a URL (a user or password holding one of ?#@:/ must be percent-encoded)")
	}
	var port string
	switch u.Scheme {
	case "amqp":
		port = "5672"
	case "amqps":
		port = "5671"
	default:
		return nil, nil, herald.FieldErrorf("url", "the scheme of %q is not amqp or amqps", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, nil, herald.FieldErrorf("url", "%q holds a query or fragment; the url is scheme://host:port/vhost", u.Redacted())
	}
	if u.User != nil {
		name := u.User.Username()
		p, _ := u.User.Password()
		user, pass = &name, &p
	}
	if u.Port() != "" {
		port = u.Port()
	}
	hp := net.JoinHostPort(strings.ToLower(u.Hostname()), port)
	if err := channel.CheckHostPort(hp, allowPrivate, "url"); err != nil {
		return nil, nil, err
	}
	// The vhost is the path after the first '/', "/" when there is none
	// (RabbitMQ's default); written escaped, as the URI spec wants.
	vhost := "/"
	if u.Path != "" && u.Path != "/" {
		vhost = strings.TrimPrefix(u.Path, "/")
	}
	if len(vhost) > maxNameLen {
		return nil, nil, herald.FieldErrorf("url", "the vhost is %d bytes; the limit is %d", len(vhost), maxNameLen)
	}
	out.URL = u.Scheme + "://" + hp + "/" + url.PathEscape(vhost)
	return user, pass, nil
}

// printableName reports whether s holds no control characters and is
// valid UTF-8.
func printableName(s string) bool {
	return herald.ValidHeaderValue(s) && !strings.ContainsRune(s, '\t')
}

// routingKey returns the routing key of one event: a key is one word of a
// topic exchange's dotted key, its dots made '_'; an empty value is "".
func routingKey(t channel.Template, ev *herald.Event) string {
	return t.Expand(ev, func(name, v string) string {
		if name == "key" {
			return strings.ReplaceAll(v, ".", "_")
		}
		return v
	})
}
