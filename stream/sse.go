package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/filter"
)

// SSE formats, chosen with ?format=.
const (
	formatRaw  = "raw"  // data is the payload (default)
	formatJSON = "json" // data is the event as a JSON object
)

// ServeSSE serves GET /v1/topics/{topic}/stream as Server-Sent Events: the
// path value "topic" is a topic name or a pattern. Every event is written
// as "id:" (the seq; for a pattern, a position vector), "event:" (its
// type, or "message") and "data:" lines, and a comment heartbeat keeps
// the stream alive. Query parameters: since (a seq or an RFC 3339 time),
// filter (URL-encoded filter JSON), format (raw or json). The
// Last-Event-ID header, which EventSource sends when it reconnects, takes
// precedence over since. who is the caller the API established (an API
// key, or a connection token in ?token=); the hub checks its scopes cover
// the topic. See docs/streams.md for the events the stream itself carries.
//
// It returns an error only before anything was written: the API answers
// it as a problem, as it answers every error.
func (h *Hub) ServeSSE(w http.ResponseWriter, r *http.Request, who herald.Principal) error {
	if err := h.allowOrigin(w, r); err != nil {
		return err
	}
	if r.Method != http.MethodGet {
		return herald.Errorf(herald.CodeInvalid, "use GET to open a stream")
	}
	if r.ContentLength != 0 {
		// Over HTTP/1 its bytes would reach watchSSE, which takes any
		// byte from the client for a misuse and ends the stream.
		return herald.Errorf(herald.CodeInvalid, "a request that opens a stream has no body")
	}
	topic := r.PathValue("topic")
	if err := herald.ValidatePattern(topic); err != nil {
		return err
	}
	if err := authorizeStream(who.Scopes, topic); err != nil {
		return err
	}
	q := r.URL.Query()
	var f *filter.Filter
	var err error
	if raw := q.Get("filter"); raw != "" {
		if f, err = filter.Parse([]byte(raw)); err != nil {
			return err
		}
	}
	format := q.Get("format")
	switch format {
	case "", formatRaw:
		format = formatRaw
	case formatJSON:
	default:
		return herald.FieldErrorf("format", "format must be raw or json, got %q", format)
	}
	start, err := parseSince(q.Get("since"), "since")
	if err != nil {
		return err
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		resume, err := parseLastEventID(id, topic)
		if err != nil {
			return err
		}
		if resume.kind == startSeq {
			start = resume
		} else {
			start.positions, start.mark = resume.positions, resume.mark
			if start.kind == startLive && !resume.mark.IsZero() {
				start.kind, start.time = startTime, resume.mark.Add(-clockMargin)
			}
		}
	}

	ctx := r.Context()
	// An EventSource resumes from the id of the last event it got; one that
	// got none would resume from "now" and miss what came meanwhile. So a
	// stream starting live tells the client its position at once, in an
	// id-only message (which EventSource records without an event): for a
	// topic, its head seq, from which the stream then runs.
	initialID := ""
	if !herald.IsPattern(topic) {
		t, err := h.store.GetTopic(ctx, topic)
		if err != nil {
			return err
		}
		if !start.replays() {
			start = startSpec{kind: startSeq, seq: t.HeadSeq}
			initialID = strconv.FormatInt(t.HeadSeq, 10)
		}
	}

	c := &conn{hub: h, transport: transportSSE, subject: who.Subject, scopes: who.Scopes, expires: who.Expires, keyExpires: who.KeyExpires,
		wakeCh: make(chan struct{}, 1)}
	if err := h.addConn(c); err != nil {
		return err
	}
	handedOff := false
	defer func() {
		if !handedOff {
			h.removeConn(c)
		}
	}()
	s := newSub(c, "", topic, f, start)
	if err := h.addSub(c, s, false); err != nil {
		return err
	}
	cursors, gaps, err := h.plan(ctx, s)
	if err != nil {
		return err
	}
	if s.start.replays() {
		s.cursors = cursors
		c.replaying = append(c.replaying, s)
	}
	out := &sseOut{w: w, rc: http.NewResponseController(w), hub: h, format: format, pattern: !s.exact,
		mark: start.mark, subject: who.Subject}
	if !s.exact && out.mark.IsZero() && start.kind == startLive {
		out.mark = s.registered // resume unseen topics from here (see parseLastEventID)
		initialID = string(formatPositionID(nil, out.mark, &s.pos))
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream

	// Over HTTP/1 the hub takes the connection over from net/http, so an
	// idle stream holds no buffer and only watchSSE's small goroutine;
	// HTTP/2 streams cannot be taken over and keep the handler's
	// goroutine as their writer (their context ends when the client goes).
	if r.ProtoMajor == 1 {
		if nc, _, err := out.rc.Hijack(); err == nil {
			// Bytes the client pipelined behind its request are left
			// unread: the response closes the connection, so no further
			// request on it is answered.
			out.nc, out.w, out.rc = nc, nil, nil
			head := []byte("HTTP/1.1 200 OK\r\n")
			var hb bytes.Buffer
			_ = hd.Write(&hb) // a bytes.Buffer does not fail
			head = append(head, hb.Bytes()...)
			head = append(head, "Connection: close\r\n\r\n"...)
			if out.start(head, initialID, s, gaps) != nil {
				_ = nc.Close()
				return nil
			}
			c.mu.Lock()
			c.nc, c.wakeCh = nc, nil
			c.mu.Unlock()
			handedOff = true
			c.startWriter(out)
			_ = nc.SetReadDeadline(time.Time{}) // net/http's ReadTimeout no longer applies
			go h.watchSSE(c, nc)
			return nil
		}
	}
	w.WriteHeader(http.StatusOK)
	if out.start(nil, initialID, s, gaps) != nil {
		return nil // the client is gone
	}
	h.runSSE(ctx, c, out)
	return nil
}

// watchSSE waits for the client of a taken-over SSE stream to go away, so
// that the stream is unregistered (its place under the key's limit, the
// gauges, its memory) at once instead of when a write, often the next
// heartbeat, fails. A client sends nothing after its request, so the read
// returns only when the connection ends: closed or reset by the client,
// or closed by the writer ending the stream. A client that sends a byte
// anyway misuses the stream; rather than read and discard whatever it
// sends, the stream ends too.
//
// It is the connection's last goroutine: it unregisters the connection
// and waits for the writer (which the close makes fail fast), as readWS
// does for a WebSocket. The hub owns it: Stop waits for it, and the
// writer's end closes the connection, which ends the read. Its only work
// while it waits is one shallow Read, so its stack stays at the minimum.
func (h *Hub) watchSSE(c *conn, nc net.Conn) {
	var b [1]byte
	_, _ = nc.Read(b[:])
	_ = nc.Close()
	h.removeConn(c)
}

// sseWriter is an SSE output: sseOut, or a user's stream (userSSEOut).
type sseWriter interface {
	output
	end(err error)
}

// runSSE is the writer loop of an SSE stream that stays in its handler's
// goroutine (HTTP/2).
func (h *Hub) runSSE(ctx context.Context, c *conn, out sseWriter) {
	heartbeat := time.NewTimer(h.cfg.HeartbeatInterval)
	defer heartbeat.Stop()
	for {
		more, err := c.step(ctx, out)
		if err != nil {
			out.end(err)
			return
		}
		if more {
			continue
		}
		select {
		case <-c.wakeCh:
		case <-heartbeat.C:
			if out.frame(heartbeatLine) != nil || out.flush() != nil {
				return
			}
			heartbeat.Reset(h.cfg.HeartbeatInterval)
		case <-ctx.Done():
			return
		}
	}
}

// sseOut writes SSE to a response (HTTP/2) or to a connection taken over
// from net/http (HTTP/1), where writes gather in a buffer sent at flush.
type sseOut struct {
	w       http.ResponseWriter      // in the handler
	rc      *http.ResponseController // in the handler
	nc      net.Conn                 // taken over
	pending []byte                   // taken over: written at flush
	hub     *Hub
	subject string // for logs
	format  string
	pattern bool      // ids are position vectors
	mark    time.Time // start mark of a pattern stream's ids
	buf     []byte    // scratch for one field line
	armed   bool      // in the handler: a write deadline is set for this batch
	dirty   bool      // written since the last flush
}

// maxPending is how much a taken-over stream gathers before it writes.
const maxPending = 32 << 10

// start writes the response head (taken over: the status line and
// headers), the retry field, the initial id and the gaps, and flushes.
func (o *sseOut) start(head []byte, initialID string, s *sub, gaps []gapInfo) error {
	o.buf = append(o.buf[:0], head...)
	o.buf = append(o.buf, "retry: "...)
	o.buf = strconv.AppendInt(o.buf, o.hub.cfg.SSERetry.Milliseconds(), 10)
	o.buf = append(o.buf, "\n\n"...)
	if initialID != "" {
		o.buf = append(o.buf, "id: "+initialID+"\n\n"...)
	}
	if err := o.write(o.buf); err != nil {
		return err
	}
	for _, g := range gaps {
		if err := o.gap(s, g); err != nil {
			return err
		}
	}
	return o.flush()
}

func (o *sseOut) write(b []byte) error {
	o.dirty = true
	if o.nc != nil {
		o.pending = append(o.pending, b...)
		if len(o.pending) >= maxPending {
			return o.send()
		}
		return nil
	}
	if !o.armed {
		_ = o.rc.SetWriteDeadline(time.Now().Add(o.hub.cfg.WriteTimeout)) // unsupported: the server's timeouts apply
		o.armed = true
	}
	if _, err := o.w.Write(b); err != nil {
		return writeError{err}
	}
	return nil
}

// send writes what a taken-over stream has gathered.
func (o *sseOut) send() error {
	if len(o.pending) == 0 {
		return nil
	}
	_ = o.nc.SetWriteDeadline(time.Now().Add(o.hub.cfg.WriteTimeout))
	_, err := o.nc.Write(o.pending)
	if cap(o.pending) > 4096 {
		o.pending = nil // an idle stream keeps no large buffer
	} else {
		o.pending = o.pending[:0]
	}
	if err != nil {
		return writeError{err}
	}
	return nil
}

func (o *sseOut) started(*sub, bool, int64) error { return nil }

func (o *sseOut) gap(_ *sub, g gapInfo) error {
	data, _ := json.Marshal(g) // strings and numbers always marshal
	o.buf = append(o.buf[:0], "event: herald.gap\ndata: "...)
	o.buf = append(o.buf, data...)
	o.buf = append(o.buf, "\n\n"...)
	return o.write(o.buf)
}

func (o *sseOut) event(s *sub, oe *outEvent) error {
	o.buf = append(o.buf[:0], "id: "...)
	if o.pattern {
		o.buf = formatPositionID(o.buf, o.mark, &s.pos)
	} else {
		o.buf = strconv.AppendInt(o.buf, oe.ev.Seq, 10)
	}
	o.buf = append(o.buf, '\n')
	if err := o.write(o.buf); err != nil {
		return err
	}
	if o.format == formatJSON {
		return o.write(oe.sseJSONFormat(o.hub.ctx, o.hub.dec))
	}
	return o.write(oe.sseRaw())
}

// frame writes prepared lines (the heartbeat).
func (o *sseOut) frame(b []byte) error { return o.write(b) }

// failed ends the stream: an SSE response carries one subscription.
func (o *sseOut) failed(_ *sub, err error) error { return err }

func (o *sseOut) flush() error {
	if cap(o.buf) > 4096 {
		o.buf = nil
	}
	if !o.dirty {
		return nil
	}
	o.dirty = false
	if o.nc != nil {
		return o.send()
	}
	o.armed = false
	if err := o.rc.Flush(); err != nil {
		return writeError{err}
	}
	return nil
}

// disconnectEvent is the data of "herald.disconnect", the last event of a
// stream the server ends. Code is slow-consumer, shutdown, token-expired,
// key-revoked or a problem code such as unavailable.
type disconnectEvent struct {
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

// end tells the client why the server ends the stream, when it can.
func (o *sseOut) end(err error) {
	var d disconnectEvent
	if ce, ok := errors.AsType[closeError](err); ok {
		switch ce.reason {
		case reasonSlowConsumer:
			o.hub.log.Info("stream client too slow; disconnected", "transport", "sse", "subject", o.subject)
			d = disconnectEvent{"slow-consumer", ReasonSlowConsumer}
		case reasonShutdown:
			d = disconnectEvent{"shutdown", ReasonShutdown}
		case reasonTokenExpired:
			d = disconnectEvent{"token-expired", ReasonTokenExpired}
		case reasonKeyRevoked:
			d = disconnectEvent{"key-revoked", ReasonKeyRevoked}
		}
	} else if _, ok := errors.AsType[writeError](err); ok {
		return // the client is gone or too slow to write to
	} else {
		p, code := problemFor(err)
		d = disconnectEvent{string(code), p.Detail}
	}
	data, _ := json.Marshal(d)
	o.buf = append(o.buf[:0], "event: herald.disconnect\ndata: "...)
	o.buf = append(o.buf, data...)
	o.buf = append(o.buf, "\n\n"...)
	if o.write(o.buf) == nil {
		_ = o.flush()
	}
}
