package stream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/filter"
)

// MaxSubscriptionIDBytes bounds the "id" a client gives a subscription.
const MaxSubscriptionIDBytes = 128

// WebSocket close codes the server uses, with the reasons in Reason*.
const (
	CloseServiceRestart = websocket.StatusServiceRestart          // 1012: the server is stopping
	CloseSlowConsumer   = websocket.StatusTryAgainLater           // 1013: the connection's queue was full
	CloseTokenExpired   = websocket.StatusPolicyViolation         // 1008: the connection token expired
	CloseInvalidUTF8    = websocket.StatusInvalidFramePayloadData // 1007: a text frame was not UTF-8
	CloseKeyRevoked     = websocket.StatusPolicyViolation         // 1008: the API key was deleted or expired
)

// ServeWebSocket serves GET /v1/stream for who, the caller the API
// established: it checks the Origin and upgrades to a WebSocket that
// carries many subscriptions as JSON text frames (the protocol is in the
// package documentation and docs/streams.md). It returns an error, which
// the API answers as a problem, only before the upgrade: not a WebSocket
// request (400), an origin not allowed (403), too many connections for
// the key (429), not running (503).
func (h *Hub) ServeWebSocket(w http.ResponseWriter, r *http.Request, who herald.Principal) error {
	if !headerHasToken(r.Header, "Upgrade", "websocket") {
		if headerHasToken(r.Header, "Accept", "text/event-stream") {
			return h.serveUserSSE(w, r, who)
		}
		return herald.Errorf(herald.CodeInvalid, "this is a WebSocket endpoint: send a WebSocket upgrade request (or, with a user token, Accept: text/event-stream for the user's stream as SSE)")
	}
	if _, err := h.checkOrigin(r); err != nil {
		return err
	}
	c := &conn{hub: h, transport: transportWS, subject: who.Subject, scopes: who.Scopes, expires: who.Expires, keyExpires: who.KeyExpires, user: who.User}
	if c.user != "" {
		pos, err := parseUserPositions(r.URL.Query().Get("positions"))
		if err != nil {
			return err
		}
		c.userPos = pos
	}
	if err := h.addConn(c); err != nil {
		return err
	}
	// checkOrigin above has applied AllowedOrigins and answered a refusal
	// with a problem; the library's own check would only repeat it.
	sb := &smallBuffers{ResponseWriter: w, writeTimeout: h.cfg.WriteTimeout}
	ws, err := websocket.Accept(sb, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		h.removeConn(c)
		return nil // Accept has answered the request
	}
	ws.SetReadLimit(h.cfg.MaxMessageBytes)
	c.mu.Lock()
	c.ws = ws
	c.mu.Unlock()
	c.startWriter(&wsOut{c: c, ws: ws, cork: sb.cork})
	// The handler returns now, so net/http's goroutine, buffers and request
	// state for the connection are freed: an idle WebSocket keeps only this
	// reader goroutine. The hub owns it (Stop waits for it).
	go h.readWS(c)
	if c.user != "" {
		h.syncConnUser(h.ctx, c)
	}
	return nil
}

// readWS reads the client's messages until the connection ends, then
// unregisters it.
func (h *Hub) readWS(c *conn) {
	defer h.removeConn(c)
	defer c.ws.CloseNow()
	for {
		typ, data, err := c.ws.Read(context.Background())
		if err != nil {
			return // closed by the client, by the writer, or by a failed ping
		}
		if typ != websocket.MessageText {
			c.sendError("", herald.Errorf(herald.CodeUnsupported, "send JSON text frames"))
			continue
		}
		if !utf8.Valid(data) {
			// RFC 6455 fails the connection. Decoding it would quietly
			// replace the bad bytes, and a name could then mean another.
			// The writer closes it; this loop's next read then ends.
			c.shutdown(reasonInvalidUTF8)
			continue
		}
		// Handle the message on a goroutine of its own and wait for it:
		// decoding, filters and store reads need a deep stack, which would
		// otherwise stay with this long-lived reader.
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.handleOp(c, data)
		}()
		<-done
	}
}

// Buffer sizes of an accepted WebSocket: client messages are small, and
// the library writes only control frames (at most 127 bytes; text frames
// go through corkedWriter.writeText), so its writer needs no more than
// one of them. Every idle connection holds both buffers.
const (
	wsReadBuffer  = 512
	wsWriteBuffer = 256
)

// smallBuffers gives the WebSocket library small buffers for the hijacked
// connection instead of net/http's 4 KiB reader and writer, which every
// idle connection would otherwise hold. Its writer goes through a
// corkedWriter, so a batch of frames leaves in one system call.
type smallBuffers struct {
	http.ResponseWriter
	writeTimeout time.Duration
	cork         *corkedWriter // set by Hijack
}

func (w *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nc, brw, err
	}
	br := brw.Reader
	if br.Buffered() == 0 {
		br = bufio.NewReaderSize(nc, wsReadBuffer)
	} // else the client sent frames right behind its handshake: they stay with their buffer
	w.cork = &corkedWriter{nc: nc, timeout: w.writeTimeout}
	return nc, bufio.NewReadWriter(br, bufio.NewWriterSize(w.cork, wsWriteBuffer)), nil
}

func (w *smallBuffers) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// corkedWriter is what the WebSocket library's buffered writer flushes
// into, and where the connection's writer puts its text frames. Uncorked,
// it writes straight to the connection. While the connection's writer
// works through a batch (between cork and uncork) it gathers the frames,
// up to maxPending, and uncork sends them in one write: a client behind on
// many events costs one system call per batch, not one per event. Control
// frames the library writes meanwhile (a pong, a close) join the batch;
// the batch is short, and uncork follows it.
//
// The server's text frames are framed here (writeText) rather than by the
// library: a broadcast writes the same small frame to thousands of
// connections, and the library's per-message work (a lock, a context
// timer, a message writer) cost a third of the server's CPU in that case
// (docs/adr/0005). The library still does the handshake, reading, control
// frames and the close handshake. Its control frames are at most 127
// bytes, under its 256-byte buffer, so each reaches Write in one call and
// never interleaves with a text frame.
type corkedWriter struct {
	nc      net.Conn
	timeout time.Duration

	mu       sync.Mutex
	corked   bool
	pending  []byte
	deadline time.Time // the connection's write deadline
	err      error     // the first failed write; every later one fails too
}

func (w *corkedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if w.corked {
		if len(w.pending)+len(p) > maxPending {
			if err := w.sendLocked(); err != nil {
				return 0, err
			}
		}
		if len(p) < maxPending {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
	}
	return w.writeLocked(p)
}

// writeText writes one unfragmented, unmasked text frame (RFC 6455 5.2)
// carrying payload.
func (w *corkedWriter) writeText(payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	var hb [10]byte
	head := appendTextHeader(hb[:0], len(payload))
	size := len(head) + len(payload)
	if len(w.pending)+size > maxPending {
		if err := w.sendLocked(); err != nil {
			return err
		}
	}
	if !w.corked || size > maxPending {
		w.pending = append(append(w.pending, head...), payload...)
		return w.sendLocked()
	}
	w.pending = append(append(w.pending, head...), payload...)
	return nil
}

// appendTextHeader appends the header of a final, unmasked text frame of n
// payload bytes.
func appendTextHeader(b []byte, n int) []byte {
	b = append(b, 0x80|0x1) // FIN, opcode text
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xFFFF:
		return append(b, 126, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
}

func (w *corkedWriter) cork() {
	w.mu.Lock()
	w.corked = true
	w.mu.Unlock()
}

// uncork sends what was gathered and lets later writes through.
func (w *corkedWriter) uncork() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.corked = false
	if w.err != nil {
		return w.err
	}
	return w.sendLocked()
}

func (w *corkedWriter) sendLocked() error {
	if len(w.pending) == 0 {
		return nil
	}
	_, err := w.writeLocked(w.pending)
	if cap(w.pending) > 4096 {
		w.pending = nil // an idle connection keeps no large buffer
	} else {
		w.pending = w.pending[:0]
	}
	return err
}

// writeLocked writes under a deadline between half the hub's write
// timeout and all of it: the deadline moves only when less than half is
// left, not on every write (a broadcast writes to thousands of
// connections, and each move costs a timer update).
func (w *corkedWriter) writeLocked(p []byte) (int, error) {
	if now := time.Now(); w.deadline.Sub(now) < w.timeout/2 {
		w.deadline = now.Add(w.timeout)
		_ = w.nc.SetWriteDeadline(w.deadline)
	}
	n, err := w.nc.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// clientOp is a message from a WebSocket client.
type clientOp struct {
	Op        string           `json:"op"`
	ID        string           `json:"id"`
	Topic     string           `json:"topic"`
	Since     json.RawMessage  `json:"since"`
	Positions map[string]int64 `json:"positions"`
	Filter    json.RawMessage  `json:"filter"`
	// Format "json" renders protobuf payloads as JSON in data; "" or
	// "raw" sends them as data_base64.
	Format string `json:"format"`
}

var pongFrame = []byte(`{"op":"pong"}`)

func (h *Hub) handleOp(c *conn, data []byte) {
	var op clientOp
	if err := json.Unmarshal(data, &op); err != nil {
		c.sendError("", herald.Errorf(herald.CodeInvalid, "each message must be a JSON object with an \"op\": subscribe, unsubscribe or ping"))
		return
	}
	switch op.Op {
	case "subscribe":
		id := op.ID
		if id == "" {
			id = op.Topic
		}
		if err := h.subscribe(c, id, op); err != nil {
			c.sendError(id, err)
		}
	case "unsubscribe":
		if op.ID == "" {
			c.sendError("", herald.FieldErrorf("id", "unsubscribe needs the id of the subscription"))
			return
		}
		frame := marshalFrame(unsubscribedFrame{Op: "unsubscribed", ID: op.ID})
		if !h.removeSub(c, op.ID, nil, frame) {
			c.sendError(op.ID, &herald.Error{Code: herald.CodeNotFound, Field: "id", Message: "no subscription with id " + quote(op.ID) + " on this connection"})
		}
	case "ping":
		c.enqueueFrame(pongFrame)
	default:
		c.sendError(op.ID, herald.FieldErrorf("op", "unknown op %q: want subscribe, unsubscribe or ping", op.Op))
	}
}

func (h *Hub) subscribe(c *conn, id string, op clientOp) error {
	if strings.HasPrefix(id, userSubPrefix) {
		return herald.FieldErrorf("id", "subscription ids starting %q name the server-side subscriptions of the connection's user", userSubPrefix)
	}
	return h.subscribeAs(c, id, op, true)
}

// subscribeAs subscribes c; checkScope is false for the server-side
// subscriptions of c's user, which an admin made on the user's behalf.
func (h *Hub) subscribeAs(c *conn, id string, op clientOp, checkScope bool) error {
	if len(id) > MaxSubscriptionIDBytes || !utf8.ValidString(id) {
		return herald.FieldErrorf("id", "the subscription id must be UTF-8 of at most %d bytes", MaxSubscriptionIDBytes)
	}
	if err := herald.ValidatePattern(op.Topic); err != nil {
		return err
	}
	if checkScope {
		if err := authorizeStream(c.scopes, op.Topic); err != nil {
			return err
		}
	}
	var f *filter.Filter
	if raw := bytes.TrimSpace(op.Filter); len(raw) > 0 && string(raw) != "null" {
		var err error
		if f, err = filter.Parse(raw); err != nil {
			return err
		}
	}
	switch op.Format {
	case "", "raw", "json":
	default:
		return herald.FieldErrorf("format", "format must be \"raw\" or \"json\", got %s", quote(op.Format[:min(len(op.Format), 32)]))
	}
	start, err := parseSinceJSON(op.Since)
	if err != nil {
		return err
	}
	if len(op.Positions) > 0 {
		if err := checkPositions(op.Topic, op.Positions); err != nil {
			return err
		}
		start.positions = op.Positions
	}
	if !herald.IsPattern(op.Topic) && !start.replays() {
		// Live on one topic: start after its head, so the acknowledgement
		// can tell the client its exact position (after_seq), which it
		// resumes from if it drops before any event.
		t, err := h.store.GetTopic(h.ctx, op.Topic)
		if err != nil {
			return err
		}
		start = startSpec{kind: startSeq, seq: t.HeadSeq}
	}
	s := newSub(c, id, op.Topic, f, start)
	s.idJSON = jsonString(id)
	s.rendered = op.Format == "json"
	return h.addSub(c, s, true)
}

// sendError queues an error frame with the problem for err.
func (c *conn) sendError(id string, err error) {
	p, _ := problemFor(err)
	c.enqueueFrame(marshalFrame(errorFrame{Op: "error", ID: id, Error: p}))
}

// closeWS ends the WebSocket, with a close code and reason the client can
// act on when the server chose to end it.
func (c *conn) closeWS(err error) {
	if o, ok := c.out.(*wsOut); ok && o.cork != nil {
		_ = o.cork.uncork() // a batch cut short must not hold back the close frame
	}
	ce, ok := errors.AsType[closeError](err)
	if !ok {
		_ = c.ws.CloseNow() // a failed write: nothing more can be said
		return
	}
	switch ce.reason {
	case reasonSlowConsumer:
		c.hub.log.Info("stream client too slow; disconnected", "transport", c.transport.String(), "subject", c.subject)
		_ = c.ws.Close(CloseSlowConsumer, ReasonSlowConsumer)
	case reasonShutdown:
		_ = c.ws.Close(CloseServiceRestart, ReasonShutdown)
	case reasonTokenExpired:
		_ = c.ws.Close(CloseTokenExpired, ReasonTokenExpired)
	case reasonInvalidUTF8:
		_ = c.ws.Close(CloseInvalidUTF8, ReasonInvalidUTF8)
	case reasonKeyRevoked:
		_ = c.ws.Close(CloseKeyRevoked, ReasonKeyRevoked)
	default:
		_ = c.ws.CloseNow()
	}
}

// ping sends a protocol ping from its own short-lived goroutine and
// closes the connection if no pong comes back in time.
func (c *conn) ping() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished || c.ws == nil || c.closing != reasonNone || c.pinging {
		return
	}
	c.pinging = true
	c.wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.hub.cfg.PongTimeout)
		err := c.ws.Ping(ctx)
		cancel()
		if err != nil {
			_ = c.ws.CloseNow()
		}
		c.mu.Lock()
		c.pinging = false
		c.mu.Unlock()
	})
}

// wsOut writes WebSocket text frames, one message each: through the
// corkedWriter, gathered per batch, or (without one) through the library
// under one write deadline per batch.
type wsOut struct {
	c      *conn
	ws     *websocket.Conn
	cork   *corkedWriter // nil: the library writes every frame
	corked bool          // a batch is being gathered in cork
	ctx    context.Context
	cancel context.CancelFunc
	buf    []byte
}

func (o *wsOut) write(b []byte) error {
	if o.cork != nil {
		if !o.corked {
			o.cork.cork()
			o.corked = true
		}
		if err := o.cork.writeText(b); err != nil {
			return writeError{err}
		}
		return nil
	}
	if o.ctx == nil {
		o.ctx, o.cancel = context.WithTimeout(context.Background(), o.c.hub.cfg.WriteTimeout)
	}
	if err := o.ws.Write(o.ctx, websocket.MessageText, b); err != nil {
		return writeError{err}
	}
	return nil
}

func (o *wsOut) flush() error {
	if o.cancel != nil {
		o.cancel()
		o.ctx, o.cancel = nil, nil
	}
	if o.corked {
		o.corked = false
		if err := o.cork.uncork(); err != nil {
			return writeError{err}
		}
	}
	if cap(o.buf) > 4096 {
		o.buf = nil // an idle connection keeps no large buffer
	}
	return nil
}

func (o *wsOut) started(s *sub, recovered bool, firstSeq int64) error {
	ack := ackFrame{Op: "subscribed", ID: s.id, Topic: s.pattern, Recovered: recovered,
		FirstSeq: firstSeq, Time: formatTime(s.registered)}
	if s.exact {
		ack.AfterSeq = &s.startAfter
	}
	return o.write(marshalFrame(ack))
}

func (o *wsOut) gap(s *sub, g gapInfo) error {
	return o.write(marshalFrame(gapFrame{Op: "gap", Sub: s.id, gapInfo: g}))
}

func (o *wsOut) event(s *sub, oe *outEvent) error {
	obj := oe.jsonObject()
	if s.rendered {
		obj = oe.renderedObject(s.conn.hub.ctx, s.conn.hub.dec)
	}
	o.buf = append(o.buf[:0], `{"op":"event","sub":`...)
	o.buf = append(o.buf, s.idJSON...)
	o.buf = append(o.buf, ',')
	o.buf = append(o.buf, obj[1:]...)
	return o.write(o.buf)
}

func (o *wsOut) frame(b []byte) error { return o.write(b) }

// failed tells the client its subscription ended; the connection goes on.
func (o *wsOut) failed(s *sub, err error) error {
	p, _ := problemFor(err)
	return o.write(marshalFrame(errorFrame{Op: "error", ID: s.id, Error: p}))
}

// headerHasToken reports whether a comma-separated header holds the token,
// case-insensitively.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}
