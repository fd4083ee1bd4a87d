// Package template renders the messages people receive (email, SMS,
// push) from an event: a subject, a text body and an HTML body, written as
// Go templates (text/template for the subject and text, html/template,
// which escapes what it inserts, for HTML) over Data.
//
// A template that names a field Data does not have is refused when it is
// saved; one that names a payload member the event lacks fails when it
// renders ("map has no entry for key"), which the channels report as a
// permanent failure of that event, since a retry would fail the same way.
package template

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
)

// MaxTemplateLen bounds each template's source.
const MaxTemplateLen = 16 << 10

// MaxOutputLen bounds what one template renders.
const MaxOutputLen = 256 << 10

// Templates are the sources of a message's parts; "" means the default.
type Templates struct {
	Subject string `json:"subject,omitempty"`
	Text    string `json:"text,omitempty"`
	HTML    string `json:"html,omitempty"`
}

// The default templates.
const (
	DefaultSubject = `{{.Topic}}{{with .Type}}: {{.}}{{end}}`
	DefaultText    = `{{with .Type}}{{.}} on {{end}}{{.Topic}} at {{.Time.Format "2006-01-02 15:04:05 MST"}}
{{if .Events}}{{len .Events}} events:
{{range .Events}}
- {{with .Type}}{{.}} {{end}}at {{.Time.Format "15:04:05"}}: {{.Text}}{{end}}{{else}}
{{.Text}}{{end}}`
	DefaultHTML = `<p>{{with .Type}}<b>{{.}}</b> on {{end}}<b>{{.Topic}}</b> at {{.Time.Format "2006-01-02 15:04:05 MST"}}</p>
{{if .Events}}<p>{{len .Events}} events:</p><ul>{{range .Events}}<li>{{with .Type}}{{.}} {{end}}at {{.Time.Format "15:04:05"}}: <code>{{.Text}}</code></li>{{end}}</ul>{{else}}<pre>{{.Text}}</pre>{{end}}`
)

// Data is what a template sees. Payload is the event's payload decoded
// when it is JSON (a map for an object: {{.Payload.amount}}), nil
// otherwise; Text is the payload as text when it is UTF-8.
type Data struct {
	ID          string
	Topic       string
	Type        string
	Key         string
	Seq         int64
	Time        time.Time
	ContentType string
	Headers     map[string]string
	Payload     any
	Text        string
	// SubscriptionID and UnsubscribeURL are the recipient's.
	SubscriptionID string
	UnsubscribeURL string
	// Events are the events of a digest (each without Events), oldest
	// first; nil for one event. The top level is then the newest event.
	Events []Data
}

// DataFor returns what templates see of ev.
func DataFor(ev *herald.Event, subID, unsubscribeURL string) Data {
	d := Data{
		ID: ev.ID, Topic: ev.Topic, Type: ev.Type, Key: ev.Key, Seq: ev.Seq, Time: ev.Time.UTC(),
		ContentType: ev.ContentType, Headers: ev.Headers, SubscriptionID: subID, UnsubscribeURL: unsubscribeURL,
	}
	if utf8.Valid(ev.Payload) {
		d.Text = string(ev.Payload)
	}
	if json.Valid(ev.Payload) {
		var v any
		if json.Unmarshal(ev.Payload, &v) == nil {
			d.Payload = v
		}
	}
	return d
}

// DigestData returns what templates see of a digest of evs (oldest
// first, at least one).
func DigestData(evs []*herald.Event, subID, unsubscribeURL string) Data {
	d := DataFor(evs[len(evs)-1], subID, unsubscribeURL)
	d.Events = make([]Data, len(evs))
	for i, ev := range evs {
		d.Events[i] = DataFor(ev, subID, unsubscribeURL)
	}
	return d
}

// Output is a rendered message.
type Output struct {
	Subject string
	Text    string
	HTML    string
}

// Set is parsed templates, safe for concurrent use.
type Set struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template // nil when the channel sends no HTML
}

var funcs = map[string]any{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"upper": strings.ToUpper,
	"lower": strings.ToLower,
}

// Parse parses the templates (defaults for those left empty); withHTML
// says whether the channel sends an HTML part. Errors name the member
// ("subject", "text", "html").
func (t Templates) Parse(withHTML bool) (*Set, error) {
	var s Set
	var err error
	parse := func(field, src, def string) (*texttemplate.Template, error) {
		if len(src) > MaxTemplateLen {
			return nil, herald.FieldErrorf(field, "the %s template is %d bytes; the limit is %d", field, len(src), MaxTemplateLen)
		}
		tt, err := texttemplate.New(field).Funcs(funcs).Option("missingkey=error").Parse(cmpOr(src, def))
		if err != nil {
			return nil, herald.FieldErrorf(field, "the %s template does not parse: %v", field, err)
		}
		return tt, nil
	}
	if s.subject, err = parse("subject", t.Subject, DefaultSubject); err != nil {
		return nil, err
	}
	if s.text, err = parse("text", t.Text, DefaultText); err != nil {
		return nil, err
	}
	if withHTML {
		if len(t.HTML) > MaxTemplateLen {
			return nil, herald.FieldErrorf("html", "the html template is %d bytes; the limit is %d", len(t.HTML), MaxTemplateLen)
		}
		if s.html, err = htmltemplate.New("html").Funcs(funcs).Option("missingkey=error").Parse(cmpOr(t.HTML, DefaultHTML)); err != nil {
			return nil, herald.FieldErrorf("html", "the html template does not parse: %v", err)
		}
	} else if t.HTML != "" {
		return nil, herald.FieldErrorf("html", "this channel sends no HTML; leave html out")
	}
	return &s, nil
}

// Validate parses the templates and runs them over a sample event, so a
// template that names a field Data lacks ({{.Topik}}) or calls a method
// wrongly is refused now rather than failing every message. Payload
// members cannot be checked: the sample has none, and errors about them
// are let through.
func (t Templates) Validate(withHTML bool) error {
	s, err := t.Parse(withHTML)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	sample := &herald.Event{ID: herald.NewID(now), Topic: "sample.topic", Type: "sample.type", Time: now, Payload: []byte(`{}`), ContentType: "application/json"}
	d := DigestData([]*herald.Event{sample}, "sub_sample", "https://herald.example/v1/unsubscribe/x")
	check := func(field string, err error) error {
		if err == nil || strings.Contains(err.Error(), "map has no entry") || strings.Contains(err.Error(), "nil pointer evaluating interface") {
			return nil
		}
		return herald.FieldErrorf(field, "the %s template fails on an event: %v", field, err)
	}
	var b bytes.Buffer
	if err := check("subject", s.subject.Execute(&b, d)); err != nil {
		return err
	}
	if err := check("text", s.text.Execute(&b, d)); err != nil {
		return err
	}
	if s.html != nil {
		if err := check("html", s.html.Execute(&b, d)); err != nil {
			return err
		}
	}
	return nil
}

// Render runs the templates over d. The subject is one line (line breaks
// become spaces).
func (s *Set) Render(d Data) (Output, error) {
	var out Output
	var b limitedBuffer
	if err := s.subject.Execute(&b, d); err != nil {
		return out, fmt.Errorf("subject template: %w", err)
	}
	out.Subject = strings.Join(strings.Fields(b.String()), " ")
	b.Reset()
	if err := s.text.Execute(&b, d); err != nil {
		return out, fmt.Errorf("text template: %w", err)
	}
	out.Text = b.String()
	if s.html != nil {
		b.Reset()
		if err := s.html.Execute(&b, d); err != nil {
			return out, fmt.Errorf("html template: %w", err)
		}
		out.HTML = b.String()
	}
	return out, nil
}

// limitedBuffer refuses output past MaxOutputLen.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > MaxOutputLen {
		return 0, fmt.Errorf("the template renders more than %d bytes", MaxOutputLen)
	}
	return b.Buffer.Write(p)
}

// HTMLText escapes s for HTML text.
func HTMLText(s string) string { return html.EscapeString(s) }

// HTMLAttr escapes s for a quoted HTML attribute.
func HTMLAttr(s string) string { return html.EscapeString(s) }

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
