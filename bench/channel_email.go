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

// mailpitList is a page of Mailpit's search, newest first.
type mailpitList struct {
	MessagesCount int `json:"messages_count"`
	Messages      []struct {
		ID      string `json:"ID"`
		Subject string `json:"Subject"`
	} `json:"messages"`
}

// read polls Mailpit for target's messages: each poll reads the newest
// ones it has not seen (plus a margin for arrivals while it reads), and
// when the newest pages show nothing new while the count says there is,
// it reads them all again. Every Mailpit message is reported once, by the
// seq in its subject.
func (b *emailBroker) read(ctx context.Context, target string, seen func(int64), ready func()) error {
	ready() // target keeps what is written to it: reading starts from its beginning
	query := "/api/v1/search?query=" + url.QueryEscape("to:"+target+"@"+emailDomain)
	ids := map[string]bool{}
	page := func(start, limit int) (mailpitList, int) {
		var l mailpitList
		if err := b.getJSON(ctx, query+"&start="+strconv.Itoa(start)+"&limit="+strconv.Itoa(limit), &l); err != nil {
			return l, 0
		}
		fresh := 0
		for _, m := range l.Messages {
			if ids[m.ID] {
				continue
			}
			ids[m.ID] = true
			fresh++
			if seq, err := strconv.ParseInt(strings.TrimPrefix(m.Subject, "bench "), 10, 64); err == nil {
				seen(seq)
			}
		}
		return l, fresh
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		l, _ := page(0, 1)
		missing := l.MessagesCount - len(ids)
		if missing <= 0 {
			continue
		}
		if _, fresh := page(0, missing+500); fresh < missing {
			for start := 0; start < l.MessagesCount+500 && ctx.Err() == nil; start += 5000 {
				page(start, 5000)
			}
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
