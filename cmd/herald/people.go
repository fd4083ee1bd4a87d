package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/email"
	"github.com/heraldhq/herald/channel/push"
	"github.com/heraldhq/herald/channel/sms"
)

// publicURL is the base URL of the links in messages to people: the
// public-url setting, or this server's own URL.
func (m *Main) publicURL() string {
	if m.Config.PublicURL != "" {
		return m.Config.PublicURL
	}
	return m.URL()
}

// peopleChannels builds the channels that send to people, as configured:
// email when email.smtp-host is set, sms with sms.provider, push with any
// of the push providers' keys.
func (m *Main) peopleChannels() ([]channel.Channel, error) {
	var out []channel.Channel
	if m.Config.EmailSMTPHost != "" {
		ch, err := m.emailChannel()
		if err != nil {
			return nil, err
		}
		out = append(out, ch)
	}
	if m.Config.SMSProvider != "" {
		ch, err := m.smsChannel()
		if err != nil {
			return nil, err
		}
		out = append(out, ch)
	}
	if c := m.Config; c.PushVAPIDPrivateKey != "" || c.PushFCMCredentialsFile != "" || c.PushAPNsKeyFile != "" {
		ch, err := m.pushChannel()
		if err != nil {
			return nil, err
		}
		out = append(out, ch)
	}
	return out, nil
}

// pushChannel builds the push channel with the providers configured.
func (m *Main) pushChannel() (*push.Channel, error) {
	c := m.Config
	cfg := push.ChannelConfig{PublicURL: m.publicURL, AllowPrivate: c.AllowPrivateDestinations, Library: m.templates, Now: m.peopleNow}
	var err error
	if c.PushVAPIDPrivateKey != "" {
		if cfg.VAPID, err = push.NewVAPID(string(c.PushVAPIDPrivateKey), c.PushVAPIDSubject, nil); err != nil {
			return nil, fmt.Errorf("settings push.vapid-*: %w", err)
		}
	}
	if c.PushFCMCredentialsFile != "" {
		creds, err := os.ReadFile(c.PushFCMCredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("setting push.fcm-credentials-file: %w", err)
		}
		if cfg.FCM, err = push.NewFCM(push.FCMConfig{Credentials: creds, BaseURL: c.PushFCMURL, Client: m.pushClient}); err != nil {
			return nil, fmt.Errorf("setting push.fcm-credentials-file: %w", err)
		}
	}
	if c.PushAPNsKeyFile != "" {
		key, err := os.ReadFile(c.PushAPNsKeyFile)
		if err != nil {
			return nil, fmt.Errorf("setting push.apns-key-file: %w", err)
		}
		if cfg.APNs, err = push.NewAPNs(push.APNsConfig{Key: key, KeyID: c.PushAPNsKeyID, TeamID: c.PushAPNsTeamID, Topic: c.PushAPNsTopic, BaseURL: c.PushAPNsURL, Client: m.pushClient}); err != nil {
			return nil, fmt.Errorf("settings push.apns-*: %w", err)
		}
	}
	return push.NewChannel(cfg)
}

func (m *Main) smsChannel() (*sms.Channel, error) {
	c := m.Config
	var provider sms.Provider
	var err error
	switch c.SMSProvider {
	case "twilio":
		provider, err = sms.NewTwilio(sms.TwilioConfig{BaseURL: c.SMSTwilioURL, AccountSID: c.SMSTwilioAccountSID,
			AuthToken: string(c.SMSTwilioAuthToken), From: c.SMSFrom, MessagingServiceSID: c.SMSTwilioMessagingSID})
	case "http":
		var headers map[string]string
		if h := string(c.SMSHTTPHeader); h != "" {
			name, value, _ := strings.Cut(h, ":")
			headers = map[string]string{strings.TrimSpace(name): strings.TrimSpace(value)}
		}
		provider, err = sms.NewHTTP(sms.HTTPConfig{URL: c.SMSHTTPURL, Method: c.SMSHTTPMethod, Headers: headers,
			Body: c.SMSHTTPBody, ContentType: c.SMSHTTPContentType, From: c.SMSFrom})
	}
	if err != nil {
		return nil, fmt.Errorf("settings sms.*: %w", err)
	}
	return sms.NewChannel(sms.ChannelConfig{Provider: provider, PublicURL: m.publicURL, Library: m.templates, Now: m.peopleNow})
}

func (m *Main) emailChannel() (*email.Channel, error) {
	c := m.Config
	if c.EmailFrom == "" {
		return nil, fmt.Errorf("setting email.from is required with email.smtp-host: the sender of every message, such as \"Herald <herald@example.com>\"")
	}
	tlsCfg := &tls.Config{ServerName: c.EmailSMTPHost, MinVersion: tls.VersionTLS12}
	if c.EmailSMTPCAFile != "" {
		pem, err := os.ReadFile(c.EmailSMTPCAFile)
		if err != nil {
			return nil, fmt.Errorf("setting email.smtp-ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("setting email.smtp-ca-file: %s holds no PEM certificate", c.EmailSMTPCAFile)
		}
		tlsCfg.RootCAs = pool
	}
	auth := c.EmailSMTPAuth
	if c.EmailSMTPUsername == "" {
		auth = "" // email.smtp-auth has a default; without a username there is no AUTH
	}
	sender, err := email.NewSender(email.ServerConfig{
		Host: c.EmailSMTPHost, Port: c.EmailSMTPPort, TLS: c.EmailSMTPTLS, Auth: auth,
		Username: c.EmailSMTPUsername, Password: string(c.EmailSMTPPassword), TLSConfig: tlsCfg,
		MaxConns: c.EmailMaxConns, RateLimit: float64(c.EmailRateLimit),
	})
	if err != nil {
		return nil, fmt.Errorf("settings email.*: %w", err)
	}
	ch, err := email.NewChannel(sender, email.ChannelConfig{From: c.EmailFrom, PublicURL: m.publicURL, Library: m.templates, Now: m.peopleNow})
	if err != nil {
		sender.Close()
		return nil, fmt.Errorf("setting email.from: %w", err)
	}
	m.closers = append(m.closers, sender.Close)
	return ch, nil
}
