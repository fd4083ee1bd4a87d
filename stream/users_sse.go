package stream

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// serveUserSSE serves GET /v1/stream as Server-Sent Events (a request
// that accepts text/event-stream and asks for no upgrade): the stream of
// a user token's server-side subscriptions, the same ones a WebSocket of
// the token receives, for clients that cannot or would rather not use a
// WebSocket (EventSource, proxies that pass only plain HTTP).
//
// Each event is written as "id:" (the position vector of the user's
// topics: "<topic>=<seq>,..."), "event:" (its type, or "message") and
// "data:" (the event as a JSON object, with its topic and seq, as SSE's
// JSON format writes it). The stream's own messages carry the frames a
// WebSocket would get, as JSON, under event names "herald.subscribed",
// "herald.unsubscribed", "herald.gap" and "herald.error"; a subscription
// acknowledgement carries the id too, so a client resumes from there
// even before any event. Reconnecting, the Last-Event-ID header (which
// EventSource sends) or ?positions= resumes each server-side
// subscription from its seq; the header wins for the topics it names.
func (h *Hub) serveUserSSE(w http.ResponseWriter, r *http.Request, who herald.Principal) error {
	if err := h.allowOrigin(w, r); err != nil {
		return err
	}
	if who.User == "" {
		return herald.Errorf(herald.CodeInvalid, "an SSE stream on /v1/stream carries a user's server-side subscriptions: open it with a user token (POST /v1/tokens with \"user\"); for one topic or pattern use GET /v1/topics/{topic}/stream")
	}
	if r.ContentLength != 0 {
		return herald.Errorf(herald.CodeInvalid, "a request that opens a stream has no body")
	}
	pos, err := parseUserPositions(r.URL.Query().Get("positions"))
	if err != nil {
		return err
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		resume, err := parseUserEventID(id)
		if err != nil {
			return err
		}
		if pos == nil {
			pos = make(map[string]int64, len(resume))
		}
		for t, seq := range resume {
			pos[t] = seq
		}
	}
	c := &conn{hub: h, transport: transportSSE, subject: who.Subject, scopes: who.Scopes, expires: who.Expires, keyExpires: who.KeyExpires,
		user: who.User, userPos: pos, wakeCh: make(chan struct{}, 1)}
	if err := h.addConn(c); err != nil {
		return err
	}
	handedOff := false
	defer func() {
		if !handedOff {
			h.removeConn(c)
		}
	}()
	out := &userSSEOut{sseOut: &sseOut{w: w, rc: http.NewResponseController(w), hub: h, format: formatJSON, subject: who.Subject},
		pos: make(map[string]int64, len(pos))}
	// The positions asked for are the stream's until their subscriptions
	// say otherwise: an id written before then keeps them.
	for t, seq := range pos {
		out.pos[t] = seq
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no")
	head := "retry: " + strconv.FormatInt(h.cfg.SSERetry.Milliseconds(), 10) + "\n\n"

	// As ServeSSE: over HTTP/1 the hub takes the connection over.
	if r.ProtoMajor == 1 {
		if nc, _, err := out.rc.Hijack(); err == nil {
			out.nc, out.w, out.rc = nc, nil, nil
			var hb bytes.Buffer
			_ = hd.Write(&hb)
			b := append([]byte("HTTP/1.1 200 OK\r\n"), hb.Bytes()...)
			b = append(b, "Connection: close\r\n\r\n"...)
			b = append(b, head...)
			if out.write(b) != nil || out.flush() != nil {
				_ = nc.Close()
				return nil
			}
			c.mu.Lock()
			c.nc, c.wakeCh = nc, nil
			c.mu.Unlock()
			handedOff = true
			c.startWriter(out)
			_ = nc.SetReadDeadline(time.Time{})
			go h.watchSSE(c, nc)
			h.startUserSSE(c)
			return nil
		}
	}
	w.WriteHeader(http.StatusOK)
	if out.write([]byte(head)) != nil || out.flush() != nil {
		return nil
	}
	h.startUserSSE(c)
	h.runSSE(r.Context(), c, out)
	return nil
}

// startUserSSE starts the server-side subscriptions of a user's SSE
// stream, then, when it could read them, queues userSynced behind their
// starts.
func (h *Hub) startUserSSE(c *conn) {
	if h.syncConnUser(h.ctx, c) {
		c.enqueueFrame(userSynced)
	}
}

// userSynced is queued, never written: the subscriptions the stream began
// with have all started, so the positions it was asked to resume that
// name none of them are dropped from its ids.
var userSynced = []byte("\x00synced")

// userSSEOut writes a user's SSE stream: many subscriptions, one per
// topic, whose positions make up each event's id.
type userSSEOut struct {
	*sseOut
	pos         map[string]int64 // topic -> newest seq sent or started after
	startedSubs map[string]bool  // topics whose subscription started
	id          []byte           // scratch
}

// idLine writes the "id:" line of the positions now.
func (o *userSSEOut) idLine() error {
	topics := make([]string, 0, len(o.pos))
	for t := range o.pos {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	o.id = append(o.id[:0], "id: "...)
	for i, t := range topics {
		if i > 0 {
			o.id = append(o.id, ',')
		}
		o.id = append(o.id, t...)
		o.id = append(o.id, '=')
		o.id = strconv.AppendInt(o.id, o.pos[t], 10)
	}
	o.id = append(o.id, '\n')
	return o.write(o.id)
}

// message writes a stream message: the frame a WebSocket would get, as
// the data of the event "herald.<op>".
func (o *userSSEOut) message(op string, frame []byte) error {
	o.buf = append(o.buf[:0], "event: herald."...)
	o.buf = append(o.buf, op...)
	o.buf = append(o.buf, "\ndata: "...)
	o.buf = append(o.buf, frame...)
	o.buf = append(o.buf, "\n\n"...)
	return o.write(o.buf)
}

func (o *userSSEOut) started(s *sub, recovered bool, firstSeq int64) error {
	o.pos[s.pattern] = s.startAfter
	if o.startedSubs == nil {
		o.startedSubs = map[string]bool{}
	}
	o.startedSubs[s.pattern] = true
	if err := o.idLine(); err != nil {
		return err
	}
	ack := ackFrame{Op: "subscribed", ID: s.id, Topic: s.pattern, Recovered: recovered,
		FirstSeq: firstSeq, Time: formatTime(s.registered), AfterSeq: &s.startAfter}
	return o.message("subscribed", marshalFrame(ack))
}

func (o *userSSEOut) gap(s *sub, g gapInfo) error {
	return o.message("gap", marshalFrame(gapFrame{Op: "gap", Sub: s.id, gapInfo: g}))
}

func (o *userSSEOut) event(s *sub, oe *outEvent) error {
	o.pos[oe.ev.Topic] = oe.ev.Seq
	if err := o.idLine(); err != nil {
		return err
	}
	return o.write(oe.sseJSONFormat(o.hub.ctx, o.hub.dec))
}

// frame writes the heartbeat as it is, and a WebSocket control frame
// (an unsubscribe of a server-side subscription, an error) as a message.
func (o *userSSEOut) frame(b []byte) error {
	if bytes.Equal(b, heartbeatLine) {
		return o.write(b)
	}
	if bytes.Equal(b, userSynced) {
		for t := range o.pos {
			if !o.startedSubs[t] {
				delete(o.pos, t)
			}
		}
		return nil
	}
	var f struct {
		Op string `json:"op"`
		ID string `json:"id"`
	}
	if json.Unmarshal(b, &f) != nil || f.Op == "" {
		return nil // not a frame: nothing an SSE client would read
	}
	if f.Op == "unsubscribed" {
		t := strings.TrimPrefix(f.ID, userSubPrefix)
		delete(o.pos, t)
		delete(o.startedSubs, t)
	}
	return o.message(f.Op, b)
}

// failed reports the subscription's end as a "herald.error" message; the
// stream goes on with the user's other subscriptions.
func (o *userSSEOut) failed(s *sub, err error) error {
	p, _ := problemFor(err)
	return o.message("error", marshalFrame(errorFrame{Op: "error", ID: s.id, Error: p}))
}

// parseUserEventID reads the Last-Event-ID of a user's SSE stream:
// "<topic>=<seq>" pairs joined by commas.
func parseUserEventID(id string) (map[string]int64, error) {
	const field = "Last-Event-ID"
	pos := map[string]int64{}
	for part := range strings.SplitSeq(id, ",") {
		topic, seqText, ok := strings.Cut(part, "=")
		seq, err := strconv.ParseInt(seqText, 10, 64)
		if !ok || err != nil || !isDigits(seqText) || herald.ValidateTopicName(topic) != nil {
			return nil, herald.FieldErrorf(field, "Last-Event-ID: want \"<topic>=<seq>,...\" as the stream wrote it, got %q", part)
		}
		pos[topic] = seq
	}
	if len(pos) > maxUserPositions {
		return nil, herald.FieldErrorf(field, "Last-Event-ID names %d topics; at most %d", len(pos), maxUserPositions)
	}
	return pos, nil
}
