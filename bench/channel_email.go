package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// emailBroker benches the email channel against Mailpit: the bare side is
// go-mail (the library the channel sends with) over MaxInFlight reused
// SMTP sessions, each sending one message at a time as the channel does;
// both sides' messages are read back through Mailpit's HTTP API. Herald
// must send through the same Mailpit (email.smtp-host, email.smtp-tls
// none): the bench cannot point a running server at it.
//
// Each target is an address, target@bench.example; a message's subject is
// "bench <seq>", so the reader counts seqs from subjects.
type emailBroker struct {
	cfg  ChannelConfig
	smtp string // host:port of Mailpit's SMTP
	api  string // Mailpit's base URL
	hc   *http.Client
}

// emailDomain is the domain of the bench's addresses.
const emailDomain = "bench.example"

func newEmailBroker(cfg ChannelConfig) (*emailBroker, error) {
	b := &emailBroker{cfg: cfg, smtp: cfg.Broker, api: strings.TrimSuffix(cfg.MailAPI, "/"), hc: &http.Client{Timeout: 30 * time.Second}}
	if b.smtp == "" {
		b.smtp = "127.0.0.1:1025"
	}
	if b.api == "" {
		b.api = "http://127.0.0.1:8025"
	}
	if _, _, err := net.SplitHostPort(b.smtp); err != nil {
		return nil, fmt.Errorf("--broker %q: want Mailpit's SMTP host:port", b.smtp)
	}
	return b, nil
}

func (b *emailBroker) name() string { return "mailpit smtp://" + b.smtp + " " + b.api }

// verification makes Herald's subscription active at once: the bench's
// addresses confirm nothing.
func (b *emailBroker) verification() string { return "none" }

func (b *emailBroker) config(target string) json.RawMessage {
	raw, _ := json.Marshal(map[string]any{"address": target + "@" + emailDomain, "subject": "bench {{.Seq}}", "text": "{{.Text}}"})
	return raw
}

// prepare checks that Mailpit answers and keeps every message: its
// default of 500 would drop most of a run.
func (b *emailBroker) prepare(ctx context.Context, _ string) error {
	var info struct {
		Version string `json:"Version"`
	}
	if err := b.getJSON(ctx, "/api/v1/info", &info); err != nil {
		return fmt.Errorf("mailpit at %s: %w (start it with: mailpit --max 0 --smtp-auth-allow-insecure)", b.api, err)
	}
	return nil
}

func (b *emailBroker) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.api+path, nil)
	if err != nil {
		return err
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// message builds the bare side's message: multipart text and HTML with
// the headers the channel sets, so both sides send alike.
func (b *emailBroker) message(target string, seq int, payload []byte) (*gomail.Msg, error) {
	m := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	if err := m.From("bench@" + emailDomain); err != nil {
		return nil, err
	}
	if err := m.To(target + "@" + emailDomain); err != nil {
		return nil, err
	}
	m.Subject("bench " + strconv.Itoa(seq))
	m.SetMessageIDWithValue(fmt.Sprintf("bare.%d.%s@%s", seq, target, emailDomain))
	m.SetDate()
	m.SetGenHeader(gomail.HeaderListUnsubscribe, "<https://herald.example/v1/unsubscribe/x>")
	m.SetGenHeader(gomail.HeaderListUnsubscribePost, "List-Unsubscribe=One-Click")
	m.SetBodyString(gomail.TypeTextPlain, string(payload))
	m.AddAlternativeString(gomail.TypeTextHTML, "<pre>"+string(payload)+"</pre>")
	return m, nil
}

// bare sends seq 1..n over MaxInFlight SMTP sessions, each opened once.
func (b *emailBroker) bare(ctx context.Context, target string, n int, payload func(int) []byte, _ func(int) string) (int64, error) {
	host, portText, _ := net.SplitHostPort(b.smtp)
	port, _ := strconv.Atoi(portText)
	var next, acked atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range b.cfg.MaxInFlight {
		wg.Go(func() {
			c, err := gomail.NewClient(host, gomail.WithPort(port), gomail.WithTLSPolicy(gomail.NoTLS), gomail.WithTimeout(30*time.Second))
			if err == nil {
				err = c.DialWithContext(ctx)
			}
			if err != nil {
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			defer c.Close()
			for {
				seq := int(next.Add(1))
				if seq > n || ctx.Err() != nil {
					return
				}
				m, err := b.message(target, seq, payload(seq))
				if err == nil {
					err = c.Send(m)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				acked.Add(1)
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return acked.Load(), *e
	}
	return acked.Load(), nil
}

// mailpitList is a page of Mailpit's message list, newest first, and the
// number of messages it holds.
type mailpitList struct {
	MessagesCount int `json:"messages_count"`
	Messages      []struct {
		ID      string    `json:"ID"`
		Subject string    `json:"Subject"`
		Created time.Time `json:"Created"`
		To      []struct {
			Address string `json:"Address"`
		} `json:"To"`
	} `json:"messages"`
}

// mailpitPage is how many messages read asks Mailpit for at once.
const mailpitPage = 1000

// read is readTimed without the times (the bench uses readTimed).
func (b *emailBroker) read(ctx context.Context, target string, seen func(int64), ready func()) error {
	return b.readTimed(ctx, target, func(seq int64, _ time.Time) { seen(seq) }, ready)
}

// readTimed polls Mailpit's message list and reports every message to
// target once, by the seq in its subject, at the time Mailpit received
// it: the rate is then Mailpit's, not the poll's, so the poll can be
// slow and cheap. (A search by recipient scans every message, and Mailpit
// would spend more on such a reader than on the mail.)
//
// Nothing is deleted during a run, so Mailpit's count only grows, and
// count - base - len(known) is how many messages the reader has yet to
// meet. A poll walks the list from the newest message down until it has
// met them, passing the ones it knows, since a message may be stored
// after a newer one. While mail flows it gives up after a page of known
// ones (the next poll looks again); once the count stands still it walks
// down to the reader's start, and what it still cannot find was counted
// but is listed below that start: no target's.
func (b *emailBroker) readTimed(ctx context.Context, target string, seen func(int64, time.Time), ready func()) error {
	addr := target + "@" + emailDomain
	// Nothing is sent to target before ready: messages older than floor
	// are no target's. The margin covers Mailpit's milliseconds.
	floor := time.Now().Add(-2 * time.Second)
	known := map[string]bool{}
	base := 0 // messages that are not in known and no target's
	// walk reads the list down from the newest message; each message it
	// has not met before goes to meet. It stops when meet says so, at
	// floor, after a page of known messages unless deep, or at the end.
	walk := func(deep bool, meet func(count int, id, subject, to string, at time.Time) bool) (count int, err error) {
		run := 0 // known messages in a row
		for start := 0; ; start += mailpitPage {
			var l mailpitList
			if err := b.getJSON(ctx, "/api/v1/messages?start="+strconv.Itoa(start)+"&limit="+strconv.Itoa(mailpitPage), &l); err != nil {
				return 0, err
			}
			if start == 0 {
				count = l.MessagesCount // Mailpit counts after listing: every listed message is counted
			}
			for _, m := range l.Messages {
				if m.Created.Before(floor) {
					return count, nil
				}
				if known[m.ID] {
					if run++; run > mailpitPage && !deep {
						return count, nil
					}
					continue
				}
				run = 0
				known[m.ID] = true
				to := ""
				if len(m.To) == 1 {
					to = m.To[0].Address
				}
				if !meet(count, m.ID, m.Subject, to, m.Created) {
					return count, nil
				}
			}
			if len(l.Messages) < mailpitPage {
				return count, nil
			}
		}
	}
	count, err := walk(true, func(int, string, string, string, time.Time) bool { return true })
	base = count - len(known)
	ready()
	if err != nil {
		return err
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := count
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		var head mailpitList
		if err := b.getJSON(ctx, "/api/v1/messages?limit=1", &head); err != nil {
			continue // a loaded Mailpit may be slow: the next poll retries
		}
		deep := head.MessagesCount == last
		last = head.MessagesCount
		if head.MessagesCount-base-len(known) <= 0 {
			continue
		}
		count, err := walk(deep, func(count int, _, subject, to string, at time.Time) bool {
			if to == addr {
				if seq, err := strconv.ParseInt(strings.TrimPrefix(subject, "bench "), 10, 64); err == nil {
					seen(seq, at)
				}
			}
			return count-base-len(known) > 0
		})
		if missing := count - base - len(known); err == nil && deep && missing > 0 && count == last {
			base += missing // counted, but listed below floor
		}
	}
}

// cleanup deletes the targets' messages from Mailpit.
func (b *emailBroker) cleanup(ctx context.Context, targets ...string) {
	for _, t := range targets {
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, b.api+"/api/v1/search?query="+url.QueryEscape("to:"+t+"@"+emailDomain), nil)
		if err != nil {
			continue
		}
		if resp, err := b.hc.Do(req); err == nil {
			resp.Body.Close()
		}
	}
}

func (b *emailBroker) close() {}
