// Package mqtt is the source kind "mqtt": MQTT 3.1.1 topic filters read
// through a shared subscription ($share/<group>/<filter>) at QoS 1 or 2,
// with Eclipse Paho.
//
// Each shard is one member of the share group: a client with a fixed id
// ("herald-<source id>-<shard>") and a persistent session (clean session
// off), so what the broker sent it and it did not acknowledge is sent again
// when the shard reconnects, on this node or on the one that takes its
// lease. Automatic acknowledgement is off: messages are gathered into a
// batch, published through the publisher, and acknowledged (PUBACK) only
// after Herald's commit. MQTT 3.1.1 carries no message id, so the
// idempotency key is the id the id_from template finds in the message (a
// JSON payload field, for one) or, without one, a digest of the topic and
// the payload.
package mqtt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	chmqtt "github.com/heraldhq/herald/channel/mqtt"
	"github.com/heraldhq/herald/source"
)

// Name is the kind's name.
const Name = "mqtt"

// Limits of a config.
const (
	maxFilters   = 100
	maxFilterLen = 1024
	maxSecretLen = 1024
	maxBatch     = 10000
)

// Config is the kind's config as stored. Password is write-only.
type Config struct {
	// URL is the broker: tcp://host:1883 or ssl://host:8883 (mqtt:// and
	// mqtts:// read as these), stored without a login.
	URL string `json:"url"`
	// Topics are the topic filters to read ("sensors/+/temp", "orders/#").
	Topics []string `json:"topics"`
	// Group is the share group (default "herald-<source id>").
	Group string `json:"group,omitempty"`
	// QoS is 1 (the default) or 2: the level the subscription asks for.
	QoS int `json:"qos"`
	// Batch bounds the messages published in one Herald commit (default
	// 100); the broker's in-flight window bounds it too.
	Batch int `json:"batch"`
	// IDFrom is a template (source.Mapping's syntax) that finds a
	// message's own id, "{payload.id}" for one; its value, when not
	// empty, is the idempotency key. Without it, or when it finds
	// nothing, the key is a digest of the topic and the payload.
	IDFrom   string `json:"id_from,omitempty"`
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
}

// Kind is the MQTT source kind.
type Kind struct {
	// AllowPrivate lets configs name loopback, private and other refused
	// addresses, and lets the client reach them (channel.CheckHost).
	AllowPrivate bool
}

var _ source.Runner = Kind{}

// Name returns "mqtt".
func (Kind) Name() string { return Name }

type input struct {
	Config
	Password *string `json:"password"`
}

func parse(raw json.RawMessage) (Config, error) {
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return Config{}, fmt.Errorf("mqtt source config: %w", err)
	}
	return c, nil
}

// Validate checks the config and applies the defaults. A password left out
// on an update is kept while the broker and the user stay the same.
func (k Kind) Validate(raw, previous json.RawMessage) (json.RawMessage, error) {
	var in input
	if len(bytes.TrimSpace(raw)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			return nil, herald.FieldErrorf("", "config must be an object with url, topics, group, qos, batch, id_from, user and password: %v", err)
		}
	}
	out := in.Config
	canon, urlUser, urlPass, err := chmqtt.ParseURL(in.URL, k.AllowPrivate)
	if err != nil {
		return nil, err
	}
	out.URL = canon
	if urlUser != nil {
		if in.User != "" || in.Password != nil {
			return nil, herald.FieldErrorf("url", "the url holds a login and so do user or password: give it once")
		}
		out.User, in.Password = *urlUser, urlPass
	}
	if len(out.Topics) == 0 || len(out.Topics) > maxFilters {
		return nil, herald.FieldErrorf("topics", "topics must list 1 to %d topic filters, such as \"sensors/+/temperature\" or \"orders/#\"", maxFilters)
	}
	for _, f := range out.Topics {
		if err := checkFilter(f); err != nil {
			return nil, err
		}
	}
	if len(out.Group) > 255 || strings.ContainsAny(out.Group, "/+#\x00") {
		return nil, herald.FieldErrorf("group", "group must be at most 255 bytes without / + # (it is a level of $share/<group>/...)")
	}
	if out.QoS == 0 {
		out.QoS = 1
	}
	if out.QoS != 1 && out.QoS != 2 {
		return nil, herald.FieldErrorf("qos", "qos must be 1 or 2: at QoS 0 the broker forgets a message once sent, so a crash would lose it")
	}
	if out.Batch == 0 {
		out.Batch = 100
	}
	if out.Batch < 1 || out.Batch > maxBatch {
		return nil, herald.FieldErrorf("batch", "batch must be from 1 to %d", maxBatch)
	}
	if out.IDFrom != "" {
		if len(out.IDFrom) > 512 {
			return nil, herald.FieldErrorf("id_from", "id_from is at most 512 bytes")
		}
		if _, err := source.ParseTemplate(out.IDFrom); err != nil {
			return nil, herald.FieldErrorf("id_from", "id_from: %v", err)
		}
	}
	if len(out.User) > maxSecretLen || strings.ContainsAny(out.User, "\x00\r\n") {
		return nil, herald.FieldErrorf("user", "user must be at most %d bytes on one line", maxSecretLen)
	}
	var prev Config
	if previous != nil {
		prev, _ = parse(previous)
	}
	switch {
	case in.Password != nil:
		out.Password = *in.Password
	case prev.Password != "" && (prev.URL != out.URL || prev.User != out.User):
		return nil, herald.FieldErrorf("password", "the broker or the user changed: give the password again (a stored password is kept only for the broker and user it was given for)")
	default:
		out.Password = prev.Password
	}
	if len(out.Password) > maxSecretLen {
		return nil, herald.FieldErrorf("password", "password must be at most %d bytes", maxSecretLen)
	}
	if out.Password != "" && out.User == "" {
		return nil, herald.FieldErrorf("user", "a password needs a user")
	}
	b, _ := json.Marshal(out)
	return b, nil
}

// checkFilter checks an MQTT topic filter: '#' only as the last level, '+'
// only as a whole level, not a $-topic or a share of its own.
func checkFilter(f string) error {
	if f == "" || len(f) > maxFilterLen || strings.ContainsRune(f, 0) || !herald.ValidHeaderValue(f) {
		return herald.FieldErrorf("topics", "topic filter %q must be 1 to %d bytes of printable text", f, maxFilterLen)
	}
	if strings.HasPrefix(f, "$") {
		return herald.FieldErrorf("topics", "topic filter %q starts with '$': Herald adds $share/<group>/ itself, and $SYS topics are the broker's", f)
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return herald.FieldErrorf("topics", "topic filter %q: '#' must be the whole last level", f)
		}
		if strings.Contains(l, "+") && l != "+" {
			return herald.FieldErrorf("topics", "topic filter %q: '+' must be a whole level", f)
		}
	}
	return nil
}

// Public returns the config without its password.
func (Kind) Public(raw json.RawMessage) json.RawMessage {
	c, err := parse(raw)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	c.Password = ""
	b, _ := json.Marshal(c)
	return b
}

// clientID is the shard's fixed client id: the broker keeps its session
// (subscriptions, unacknowledged messages) across reconnects and nodes.
func clientID(sourceID string, shard int) string {
	return fmt.Sprintf("herald-%s-%d", sourceID, shard)
}

// Run is one member of the share group until ctx ends or the connection
// fails.
func (k Kind) Run(ctx context.Context, sh *source.Shard) error {
	c, err := parse(sh.Source.Config)
	if err != nil {
		return err
	}
	var idFrom source.Template
	if c.IDFrom != "" {
		if idFrom, err = source.ParseTemplate(c.IDFrom); err != nil {
			return err
		}
	}
	group := c.Group
	if group == "" {
		group = "herald-" + sh.Source.ID
	}
	// Messages wait here between Paho's handler and the batch loop. The
	// handler blocks while it is full, which holds the broker back (its
	// in-flight window fills); it gives up when the run ends, leaving the
	// message unacknowledged for the next run.
	in := make(chan paho.Message, max(c.Batch, 100))
	lost := make(chan error, 1)
	quit := make(chan struct{}) // closed before Disconnect, which waits for the handler
	dial := channel.Dialer(k.AllowPrivate, nil)
	opts := paho.NewClientOptions().
		AddBroker(c.URL).
		SetClientID(clientID(sh.Source.ID, sh.Index)).
		SetCleanSession(false).
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetPingTimeout(10 * time.Second).
		// The runtime reconnects, with backoff, and shows why it failed.
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			conn, err := dial(ctx, "tcp", u.Host)
			if err != nil || u.Scheme != "ssl" {
				return conn, err
			}
			tc := tls.Client(conn, &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12})
			hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := tc.HandshakeContext(hctx); err != nil {
				_ = conn.Close()
				return nil, err
			}
			return tc, nil
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		}).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			select {
			case in <- m:
			case <-quit:
			case <-ctx.Done():
			}
		})
	if c.User != "" {
		opts.SetUsername(c.User).SetPassword(c.Password)
	}
	cl := paho.NewClient(opts)
	if err := wait(ctx, cl.Connect()); err != nil {
		return fmt.Errorf("connect to %s: %w", c.URL, err)
	}
	defer cl.Disconnect(250)
	defer close(quit)
	filters := make(map[string]byte, len(c.Topics))
	for _, f := range c.Topics {
		filters["$share/"+group+"/"+f] = byte(c.QoS)
	}
	sub := cl.SubscribeMultiple(filters, nil) // messages reach the default handler
	if err := wait(ctx, sub); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if st, ok := sub.(*paho.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code == 0x80 {
				return fmt.Errorf("the broker refused the subscription %s", f)
			}
		}
	}
	sh.Running()
	batch := make([]paho.Message, 0, c.Batch)
	msgs := make([]source.Message, 0, c.Batch)
	for {
		batch, msgs = batch[:0], msgs[:0]
		select {
		case <-ctx.Done():
			return nil
		case err := <-lost:
			return fmt.Errorf("the connection to %s was lost: %w", c.URL, err)
		case m := <-in:
			batch = append(batch, m)
		}
	drain:
		for len(batch) < c.Batch {
			select {
			case m := <-in:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		for _, m := range batch {
			msgs = append(msgs, message(m, idFrom))
		}
		if err := sh.Publish(ctx, msgs); err != nil {
			// Unacknowledged: the broker sends them again to this
			// session when it reconnects.
			return err
		}
		for _, m := range batch {
			m.Ack()
		}
	}
}

// wait waits for a Paho token, or for ctx.
func wait(ctx context.Context, t paho.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// message is an MQTT message before mapping. Its topic's levels become
// dot-separated segments ("sensors/eu/1" is "sensors.eu.1"); the topic as
// the broker wrote it is "{header.mqtt-topic}".
func message(m paho.Message, idFrom source.Template) source.Message {
	msg := source.Message{
		Topic:   strings.ReplaceAll(m.Topic(), "/", "."),
		Payload: m.Payload(),
		Meta:    map[string]string{"mqtt-topic": m.Topic()},
	}
	if msg.Payload == nil {
		msg.Payload = []byte{}
	}
	if id := idFrom.Render(&msg); id != "" {
		msg.ID = id
		msg.IdempotencyKey = "id:" + id
		if len(msg.IdempotencyKey) > 200 {
			sum := sha256.Sum256([]byte(id))
			msg.IdempotencyKey = "id-sha256:" + hex.EncodeToString(sum[:])
		}
		return msg
	}
	h := sha256.New()
	h.Write([]byte(m.Topic()))
	h.Write([]byte{0})
	h.Write(msg.Payload)
	msg.IdempotencyKey = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return msg
}
