package mqtt

import (
	"encoding/json"
	"net"
	"net/url"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Config is an mqtt subscription's channel config as stored.
type Config struct {
	// URL is the broker: tcp://host:1883, or ssl://host:8883 for TLS
	// (mqtt:// and mqtts:// are read as these). Stored without
	// credentials: a user and password written in the URL move to their
	// members.
	URL string `json:"url"`
	// Topic is the MQTT topic of each event: a template of {topic},
	// {key} and {type}; "{topic}" by default. The Herald topic's dots
	// become levels ("orders.eu" is "orders/eu").
	Topic string `json:"topic"`
	// QoS is 1 (the default: delivered once the broker's PUBACK came) or
	// 2 (once its PUBCOMP came).
	QoS int `json:"qos"`
	// Retain sets the retain flag: the broker keeps the last message of
	// each topic for subscribers that come later.
	Retain bool `json:"retain"`
	// Format is "raw" (the default: the payload byte for byte, as MQTT
	// 3.1.1 has no headers to carry the event's metadata) or
	// "cloudevents" (a CloudEvents JSON envelope, structured mode, with
	// the event id, type, key, topic and time around the payload).
	Format string `json:"format"`
	// User and Password log in. Password is a secret: Public never shows
	// it.
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	// max_batch_events (100 by default, up to 2000) and linger_ms.
	channel.Batching
}

// The formats of a message.
const (
	FormatRaw         = "raw"
	FormatCloudEvents = "cloudevents"
)

// Limits of a config.
const (
	maxURLLen     = 2048
	maxTopicLen   = 1024
	maxSecretLen  = 1024
	maxTopicBytes = 65535 // an MQTT topic name
	defaultTopic  = "{topic}"
)

func parseConfig(raw json.RawMessage) (Config, error) { return channel.ParseConfig[Config](Name, raw) }

func (c Config) encode() json.RawMessage { return channel.EncodeConfig(c) }

// poolKey tells apart connections that differ: the broker and the login.
func (c Config) poolKey() string { return channel.PoolKey(c.URL, c.User, c.Password) }

type input struct {
	URL      string  `json:"url"`
	Topic    string  `json:"topic"`
	QoS      *int    `json:"qos"`
	Retain   bool    `json:"retain"`
	Format   string  `json:"format"`
	User     string  `json:"user"`
	Password *string `json:"password"`
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
	out := Config{Topic: in.Topic, QoS: 1, Retain: in.Retain, Format: in.Format, User: in.User, Batching: in.Batching}
	if err := out.Check(DefaultBatch, MaxBatch); err != nil {
		return Config{}, err
	}
	if in.QoS != nil {
		out.QoS = *in.QoS
	}
	if out.QoS != 1 && out.QoS != 2 {
		return Config{}, herald.FieldErrorf("qos", "qos must be 1 (delivered at the broker's PUBACK) or 2 (at its PUBCOMP); QoS 0 has no acknowledgement to count a delivery by")
	}
	switch out.Format {
	case "":
		out.Format = FormatRaw
	case FormatRaw, FormatCloudEvents:
	default:
		return Config{}, herald.FieldErrorf("format", "format must be %q or %q", FormatRaw, FormatCloudEvents)
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
	if out.Topic == "" {
		out.Topic = defaultTopic
	}
	if err := checkTopicTemplate(out.Topic); err != nil {
		return Config{}, err
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
	if len(out.Password) > maxSecretLen {
		return Config{}, herald.FieldErrorf("password", "password must be at most %d bytes", maxSecretLen)
	}
	if out.Password != "" && out.User == "" {
		return Config{}, herald.FieldErrorf("user", "a password needs a user")
	}
	return out, nil
}

// canonicalURL checks the url member and stores it in out.URL as
// tcp://host:port or ssl://host:port. It returns the login the url held.
func canonicalURL(raw string, allowPrivate bool, out *Config) (user, pass *string, err error) {
	canon, user, pass, err := ParseURL(raw, allowPrivate)
	if err != nil {
		return nil, nil, err
	}
	out.URL = canon
	return user, pass, nil
}

// ParseURL checks a broker URL as a config's url member (errors are
// *herald.Error naming "url"; the host passes channel.CheckHostPort) and
// returns it as tcp://host:port or ssl://host:port (mqtt:// and mqtts://
// read as these), with the login it held, if any. The mqtt source reads
// its url with it too.
func ParseURL(raw string, allowPrivate bool) (canonical string, user, pass *string, err error) {
	if raw == "" {
		return "", nil, nil, herald.FieldErrorf("url", "url is required: the broker, as tcp://host:1883 (ssl://host:8883 for TLS)")
	}
	if len(raw) > maxURLLen {
		return "", nil, nil, herald.FieldErrorf("url", "url is %d bytes; the limit is %d", len(raw), maxURLLen)
	}
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "", nil, nil, herald.FieldErrorf("url", "url is not a URL (a user or password holding one of ?#@:/ must be percent-encoded)")
	}
	scheme, port := "", ""
	switch u.Scheme {
	case "tcp", "mqtt":
		scheme, port = "tcp", "1883"
	case "ssl", "tls", "mqtts":
		scheme, port = "ssl", "8883"
	default:
		return "", nil, nil, herald.FieldErrorf("url", "the scheme of %q is not tcp, mqtt, ssl, tls or mqtts", u.Redacted())
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", nil, nil, herald.FieldErrorf("url", "%q holds a path or query; the url is scheme://host:port", u.Redacted())
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
		return "", nil, nil, err
	}
	return scheme + "://" + hp, user, pass, nil
}

// checkTopicTemplate checks that a topic template makes valid topic
// names: known placeholders, no wildcard (+ #) or NUL in its fixed text,
// and not a $-topic, which belong to the broker.
func checkTopicTemplate(topic string) error {
	if len(topic) > maxTopicLen {
		return herald.FieldErrorf("topic", "topic is %d bytes; the limit is %d", len(topic), maxTopicLen)
	}
	t, err := channel.ParseTemplate(topic)
	if err != nil {
		return herald.FieldErrorf("topic", "topic %v", err)
	}
	for _, lit := range t.Literals() {
		if strings.ContainsAny(lit, "+#\x00") || !herald.ValidHeaderValue(lit) {
			return herald.FieldErrorf("topic", "topic %q holds a wildcard (+ or #) or a control character: Herald publishes to one topic per event", topic)
		}
	}
	if strings.HasPrefix(topic, "$") {
		return herald.FieldErrorf("topic", "topic %q starts with '$': such topics are the broker's", topic)
	}
	return nil
}

// topicFor returns the MQTT topic of one event. The Herald topic's dots
// become levels; a key is one level, its slashes and wildcards made '_';
// a type keeps its dots; an empty value is "_".
func topicFor(t channel.Template, ev *herald.Event) string {
	return t.Expand(ev, func(name, v string) string {
		if v == "" {
			return "_"
		}
		if name == "topic" {
			return strings.ReplaceAll(v, ".", "/")
		}
		return strings.Map(func(r rune) rune {
			switch r {
			case '/', '+', '#', 0:
				return '_'
			}
			return r
		}, v)
	})
}
