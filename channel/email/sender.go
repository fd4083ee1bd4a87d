package email

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
	"golang.org/x/time/rate"
)

// TLS modes of a mail server connection.
const (
	TLSStartTLS = "starttls" // plain connection upgraded with STARTTLS, required (port 587)
	TLSImplicit = "tls"      // TLS from the first byte (port 465)
	TLSNone     = "none"     // no TLS: a relay on the same host or network only
)

// Authentication mechanisms.
const (
	AuthNone  = "none"
	AuthPlain = "plain"
	AuthLogin = "login"
)

// ServerConfig is how to reach one mail server (a submission service, a
// relay). Zero values mean the defaults.
type ServerConfig struct {
	Host string // required
	// Port defaults to 587 for starttls, 465 for tls and 25 for none.
	Port int
	// TLS is TLSStartTLS (default), TLSImplicit or TLSNone.
	TLS string
	// Auth is AuthPlain or AuthLogin when Username is set (default
	// AuthPlain), AuthNone otherwise. Credentials are only sent over TLS
	// unless TLS is TLSNone.
	Auth     string
	Username string
	Password string
	// TLSConfig is used for the handshake (a test's root CAs); nil means
	// the system roots and Host as the server name.
	TLSConfig *tls.Config
	// MaxConns bounds the connections open to the server at once; idle
	// ones are reused. Default 8.
	MaxConns int
	// RateLimit bounds the messages sent per second over all connections;
	// 0 means no bound. Burst is one second's worth.
	RateLimit float64
	// Timeout bounds connecting (with TLS and AUTH) and each command.
	// Default 30s.
	Timeout time.Duration
	// IdleTimeout closes a connection unused this long instead of reusing
	// it: servers drop idle sessions (often after 60s or so). Default 30s.
	IdleTimeout time.Duration
	// HELO is the name given in EHLO; default "localhost".
	HELO string
}

// Sender sends messages to one mail server over a bounded pool of reused
// SMTP sessions, within a rate limit. It is safe for concurrent use; Close
// ends the idle sessions.
type Sender struct {
	cfg     ServerConfig
	client  *mail.Client // settings only: each session is its own smtp.Client
	limiter *rate.Limiter
	slots   chan struct{} // one per open or opening session
	idle    chan idleConn // sessions ready for reuse; as many as slots

	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

type idleConn struct {
	c    *smtp.Client
	used time.Time
}

// NewSender checks the settings and returns a sender; it connects to
// nothing until the first message.
func NewSender(cfg ServerConfig) (*Sender, error) {
	if cfg.Host == "" {
		return nil, errors.New("the mail server host is required")
	}
	if cfg.TLS == "" {
		cfg.TLS = TLSStartTLS
	}
	if cfg.Port == 0 {
		cfg.Port = map[string]int{TLSStartTLS: 587, TLSImplicit: 465, TLSNone: 25}[cfg.TLS]
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 8
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.HELO == "" {
		cfg.HELO = "localhost"
	}
	tlsCfg := cfg.TLSConfig
	if tlsCfg == nil {
		tlsCfg = &tls.Config{ServerName: cfg.Host, MinVersion: tls.VersionTLS12}
	}
	opts := []mail.Option{
		mail.WithPort(cfg.Port), mail.WithTimeout(cfg.Timeout), mail.WithHELO(cfg.HELO),
		mail.WithTLSConfig(tlsCfg),
		// Each send already fails on a dead session and is retried once on
		// a fresh one (see Send): a NOOP before every message would double
		// the round trips.
		mail.WithoutNoop(),
	}
	switch cfg.TLS {
	case TLSStartTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	case TLSImplicit:
		opts = append(opts, mail.WithSSL())
	case TLSNone:
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	default:
		return nil, fmt.Errorf("TLS mode %q: want %s, %s or %s", cfg.TLS, TLSStartTLS, TLSImplicit, TLSNone)
	}
	if cfg.Username != "" {
		if cfg.Auth == "" {
			cfg.Auth = AuthPlain
		}
		var typ mail.SMTPAuthType
		switch {
		case cfg.Auth == AuthPlain && cfg.TLS == TLSNone:
			typ = mail.SMTPAuthPlainNoEnc
		case cfg.Auth == AuthPlain:
			typ = mail.SMTPAuthPlain
		case cfg.Auth == AuthLogin && cfg.TLS == TLSNone:
			typ = mail.SMTPAuthLoginNoEnc
		case cfg.Auth == AuthLogin:
			typ = mail.SMTPAuthLogin
		default:
			return nil, fmt.Errorf("auth %q: want %s or %s with a username", cfg.Auth, AuthPlain, AuthLogin)
		}
		opts = append(opts, mail.WithSMTPAuth(typ), mail.WithUsername(cfg.Username), mail.WithPassword(cfg.Password))
	} else if cfg.Auth != "" && cfg.Auth != AuthNone {
		return nil, fmt.Errorf("auth %q needs a username", cfg.Auth)
	}
	client, err := mail.NewClient(cfg.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("mail client for %s: %w", cfg.Host, err)
	}
	s := &Sender{cfg: cfg, client: client, slots: make(chan struct{}, cfg.MaxConns),
		idle: make(chan idleConn, cfg.MaxConns), done: make(chan struct{})}
	if cfg.RateLimit > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), max(1, int(cfg.RateLimit)))
	}
	return s, nil
}

// Addr is the server's host:port, the destination all subscriptions of
// this sender share.
func (s *Sender) Addr() string {
	return net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port))
}

// Send sends the message, waiting for the rate limit and a session until
// ctx ends. A session that turns out to be dead (the server closed it
// while idle) is replaced and the message sent once more on a new one.
// The error is a *mail.SendError for an SMTP reply (see Classify).
func (s *Sender) Send(ctx context.Context, msg *mail.Msg) error {
	if s.limiter != nil {
		if err := s.limiter.Wait(ctx); err != nil {
			return fmt.Errorf("waiting for the rate limit: %w", err)
		}
	}
	for try := 0; ; try++ {
		c, reused, err := s.take(ctx)
		if err != nil {
			return err
		}
		err = s.sendOn(ctx, c, msg)
		if err == nil {
			s.put(c)
			return nil
		}
		var se *mail.SendError
		if errors.As(err, &se) && se.ErrorCode() >= 400 {
			// The server answered: the session is fine (the message was
			// reset), the message is not.
			s.put(c)
			return err
		}
		s.discard(c)
		if !reused || try > 0 || ctx.Err() != nil {
			return err
		}
	}
}

// sendOn sends over one session, abandoning it when ctx ends.
func (s *Sender) sendOn(ctx context.Context, c *smtp.Client, msg *mail.Msg) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.UpdateDeadline(min(time.Until(dl), s.cfg.Timeout))
	}
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	return s.client.SendWithSMTPClient(c, msg)
}

// take returns an idle session, or a new one when there is a free slot,
// waiting for either until ctx ends. reused reports an idle session.
func (s *Sender) take(ctx context.Context) (c *smtp.Client, reused bool, err error) {
	for {
		select {
		case ic := <-s.idle:
			if time.Since(ic.used) < s.cfg.IdleTimeout {
				return ic.c, true, nil
			}
			go s.quitAndFree(ic.c) // stale: the server may already have closed it
			continue
		default:
		}
		select {
		case ic := <-s.idle:
			if time.Since(ic.used) < s.cfg.IdleTimeout {
				return ic.c, true, nil
			}
			go s.quitAndFree(ic.c)
			continue
		case s.slots <- struct{}{}:
		case <-s.done:
			return nil, false, errors.New("the mail sender is closed")
		case <-ctx.Done():
			return nil, false, fmt.Errorf("waiting for a connection to the mail server: %w", ctx.Err())
		}
		dctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		c, err := s.client.DialToSMTPClientWithContext(dctx)
		cancel()
		if err != nil {
			<-s.slots
			return nil, false, err
		}
		return c, false, nil
	}
}

// put returns a session to the idle pool. The pool holds as many as
// there are slots, so this never blocks.
func (s *Sender) put(c *smtp.Client) {
	select {
	case <-s.done:
		s.quitAndFree(c)
	default:
		s.idle <- idleConn{c: c, used: time.Now()}
	}
}

// discard closes a broken session and frees its slot.
func (s *Sender) discard(c *smtp.Client) {
	_ = c.Close()
	<-s.slots
}

func (s *Sender) quitAndFree(c *smtp.Client) {
	_ = c.UpdateDeadline(5 * time.Second)
	_ = c.Quit()
	_ = c.Close()
	<-s.slots
}

// Close ends the idle sessions; sessions in use end as their sends
// return. It is idempotent.
func (s *Sender) Close() {
	s.closeOnce.Do(func() { close(s.done) })
	for {
		select {
		case ic := <-s.idle:
			s.quitAndFree(ic.c)
		default:
			return
		}
	}
}
