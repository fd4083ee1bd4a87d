package nats

import (
	"encoding/json"
	"net"
	"net/url"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Config is a nats subscription's channel config as stored.
type Config struct {
	// URL lists the servers, comma-separated: nats://host:4222 or, for
	// TLS, tls://host:4222. Stored without credentials: a user and
	// password or a token written in the URL move to their members.
	URL string `json:"url"`
	// Subject is where each event is published: a template of
	// {topic}, {key} and {type} ("{topic}" by default).
	Subject string `json:"subject"`
	// JetStream publishes to a stream and waits for its acknowledgement,
	// with Nats-Msg-Id set to the event id, so the stream drops Herald's
	// redeliveries within its duplicate window. Without it, a publish
	// counts as delivered once the server has it (core NATS: a
	// subscriber that is not listening misses it).
	JetStream bool `json:"jetstream"`
	// Stream, with JetStream, is the stream the subjects must land in:
	// a publish that another stream (or none) would take fails.
	Stream string `json:"stream,omitempty"`
	// User and Password, or Token, or Creds (the text of a .creds file:
	// a user JWT and its nkey seed) log in. Password, Token and Creds are
	// secrets: Public never shows them.
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	Token    string `json:"token,omitempty"`
	Creds    string `json:"creds,omitempty"`
	// max_batch_events (500 by default, up to 5000) and linger_ms.
	channel.Batching
}

// secrets are the members Public removes.
var secrets = []string{"password", "token", "creds"}

// Limits of a config.
const (
	maxURLLen      = 2048
	maxServers     = 16
	maxSubjectLen  = 512
	maxSecretLen   = 4096
	maxStreamLen   = 255
	defaultSubject = "{topic}"
	defaultPort    = "4222"
)

// parseConfig reads a stored config.
func parseConfig(raw json.RawMessage) (Config, error) { return channel.ParseConfig[Config](Name, raw) }

func (c Config) encode() json.RawMessage { return channel.EncodeConfig(c) }

// servers returns the URL's servers.
func (c Config) servers() []string { return strings.Split(c.URL, ",") }

// poolKey tells apart connections that differ: the servers and the login.
func (c Config) poolKey() string {
	return channel.PoolKey(c.URL, c.User, c.Password, c.Token, c.Creds)
}

// input is a config as a caller writes it. Secrets are pointers, so an
// update can tell "leave it" (absent) from "remove it" ("").
type input struct {
	URL       string  `json:"url"`
	Subject   string  `json:"subject"`
	JetStream bool    `json:"jetstream"`
	Stream    string  `json:"stream"`
	User      string  `json:"user"`
	Password  *string `json:"password"`
	Token     *string `json:"token"`
	Creds     *string `json:"creds"`
	channel.Batching
}

// validate checks a caller's config and returns its canonical form. On an
// update (prev non-nil), a secret the caller leaves out stays as stored,
// but only while the servers stay the same: credentials never follow a
// subscription to other servers unless the caller gives them again.
func validate(p channel.ValidateParams, allowPrivate bool) (Config, error) {
	var in input
	if err := channel.DecodeConfig(p.Config, &in); err != nil {
		return Config{}, err
	}
	out := Config{Subject: in.Subject, JetStream: in.JetStream, Stream: in.Stream, User: in.User, Batching: in.Batching}
	if err := out.Check(DefaultBatch, MaxBatch); err != nil {
		return Config{}, err
	}
	urlUser, urlPass, err := canonicalURL(in.URL, allowPrivate, &out)
	if err != nil {
		return Config{}, err
	}
	if urlUser != "" {
		if in.User != "" || in.Password != nil || in.Token != nil {
			return Config{}, herald.FieldErrorf("url", "the url holds a login and so do user, password or token: give it once")
		}
		if urlPass != nil {
			out.User, in.Password = urlUser, urlPass
		} else {
			in.Token = &urlUser // nats://TOKEN@host
		}
	}
	if out.Subject == "" {
		out.Subject = defaultSubject
	}
	if err := checkSubjectTemplate(out.Subject); err != nil {
		return Config{}, err
	}
	if out.Stream != "" {
		if !out.JetStream {
			return Config{}, herald.FieldErrorf("stream", "stream applies to JetStream: set jetstream to true, or leave stream out")
		}
		if len(out.Stream) > maxStreamLen || strings.ContainsAny(out.Stream, " \t\r\n.*>/\\") {
			return Config{}, herald.FieldErrorf("stream", "stream %q is not a JetStream stream name (at most %d characters, none of space . * > / \\)", out.Stream, maxStreamLen)
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
	for _, s := range []struct {
		name string
		in   *string
		out  *string
		prev string
	}{{"password", in.Password, &out.Password, prev.Password}, {"token", in.Token, &out.Token, prev.Token}, {"creds", in.Creds, &out.Creds, prev.Creds}} {
		if *s.out, err = channel.KeepSecret(s.in, s.prev, prev.URL == out.URL, s.name); err != nil {
			return Config{}, err
		}
		if len(*s.out) > maxSecretLen || strings.ContainsRune(*s.out, 0) {
			return Config{}, herald.FieldErrorf(s.name, "%s must be at most %d bytes", s.name, maxSecretLen)
		}
	}
	logins := 0
	for _, set := range []bool{out.User != "" || out.Password != "", out.Token != "", out.Creds != ""} {
		if set {
			logins++
		}
	}
	if logins > 1 {
		return Config{}, herald.FieldErrorf("token", "give one way to log in: user and password, token, or creds")
	}
	if out.Password != "" && out.User == "" {
		return Config{}, herald.FieldErrorf("user", "a password needs a user")
	}
	if out.Creds != "" {
		if _, err := nkeys.ParseDecoratedJWT([]byte(out.Creds)); err != nil {
			return Config{}, herald.FieldErrorf("creds", "creds is not the text of a NATS .creds file (a user JWT and its nkey seed)")
		}
		if _, err := nkeys.ParseDecoratedUserNKey([]byte(out.Creds)); err != nil {
			return Config{}, herald.FieldErrorf("creds", "creds holds no user nkey seed: give the whole .creds file")
		}
	}
	return out, nil
}

// canonicalURL checks the servers of a url member and stores them in
// out.URL as "scheme://host:port,...". It returns the login the url held
// (user and password, or a token as the user), which the caller moves to
// the secret members.
func canonicalURL(raw string, allowPrivate bool, out *Config) (user string, pass *string, err error) {
	if raw == "" {
		return "", nil, herald.FieldErrorf("url", "url is required: the NATS servers, as nats://host:4222 (tls://host:4222 for TLS; several separated by commas)")
	}
	if len(raw) > maxURLLen {
		return "", nil, herald.FieldErrorf("url", "url is %d bytes; the limit is %d", len(raw), maxURLLen)
	}
	parts := strings.Split(raw, ",")
	if len(parts) > maxServers {
		return "", nil, herald.FieldErrorf("url", "url lists %d servers; the limit is %d", len(parts), maxServers)
	}
	canon := make([]string, 0, len(parts))
	for _, s := range parts {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		u, err := url.Parse(s)
		if err != nil {
			return "", nil, herald.FieldErrorf("url", "%q is not a URL", s)
		}
		if u.Scheme != "nats" && u.Scheme != "tls" {
			return "", nil, herald.FieldErrorf("url", "the scheme of %q is not nats or tls", u.Redacted())
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return "", nil, herald.FieldErrorf("url", "%q holds a path or query; a NATS server URL is scheme://host:port", u.Redacted())
		}
		if u.User != nil {
			p, hasPass := u.User.Password()
			if user != "" && (user != u.User.Username() || (pass == nil) == hasPass || hasPass && *pass != p) {
				return "", nil, herald.FieldErrorf("url", "the servers of the url hold different logins")
			}
			user = u.User.Username()
			if hasPass {
				pass = &p
			}
		}
		host, port := u.Hostname(), u.Port()
		if port == "" {
			port = defaultPort
		}
		hp := net.JoinHostPort(strings.ToLower(host), port)
		if err := channel.CheckHostPort(hp, allowPrivate, "url"); err != nil {
			return "", nil, err
		}
		canon = append(canon, u.Scheme+"://"+hp)
	}
	out.URL = strings.Join(canon, ",")
	return user, pass, nil
}

// checkSubjectTemplate checks that a subject template makes valid
// subjects: known placeholders, and no wildcard or white space in its
// fixed text (what placeholders bring in is escaped).
func checkSubjectTemplate(subject string) error {
	if len(subject) > maxSubjectLen {
		return herald.FieldErrorf("subject", "subject is %d bytes; the limit is %d", len(subject), maxSubjectLen)
	}
	t, err := channel.ParseTemplate(subject)
	if err != nil {
		return herald.FieldErrorf("subject", "subject %v", err)
	}
	for _, lit := range t.Literals() {
		if strings.ContainsAny(lit, "*> \t\r\n") || strings.ContainsRune(lit, 0) {
			return herald.FieldErrorf("subject", "subject %q holds a wildcard (* or >) or white space: Herald publishes to one subject per event", subject)
		}
	}
	sample := t.Expand(&herald.Event{Topic: "t", Key: "k", Type: "y"}, func(_, v string) string { return v })
	for tok := range strings.SplitSeq(sample, ".") {
		if tok == "" {
			return herald.FieldErrorf("subject", "subject %q makes an empty token (a leading, trailing or doubled '.')", subject)
		}
	}
	return nil
}

// subjectFor returns the subject of one event. The topic is a valid run of
// tokens already; a key is one token, its dots, wildcards and white space
// made '_'; a type keeps its dots; an empty value is "_". Tokens left
// empty by a type become "_" too, so every event has a valid subject.
func subjectFor(t channel.Template, ev *herald.Event) string {
	s := t.Expand(ev, func(name, v string) string {
		if v == "" {
			return "_"
		}
		return strings.Map(func(r rune) rune {
			switch {
			case r == '*' || r == '>' || r <= ' ' || r == 0x7f:
				return '_'
			case r == '.' && name == "key":
				return '_'
			}
			return r
		}, v)
	})
	if !strings.Contains(s, "..") && !strings.HasPrefix(s, ".") && !strings.HasSuffix(s, ".") {
		return s
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		if tok == "" {
			toks[i] = "_"
		}
	}
	return strings.Join(toks, ".")
}
