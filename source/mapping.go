package source

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/heraldhq/herald"
)

// Mapping is how a message becomes an event: templates for the event's
// key, type, id, content type and headers. A template is text with
// placeholders in braces:
//
//	{topic}          the message's topic, subject or queue
//	{key} {type} {id} what the service says of them
//	{header.NAME}    a message header (for inbound webhooks, an HTTP header)
//	{payload.a.b.0}  a field of a JSON payload: objects by name, arrays by index
//
// A placeholder that finds nothing is empty. The zero Mapping carries the
// message's key, type, content type and headers as they are, and leaves
// the id to Herald.
type Mapping struct {
	Key         string            `json:"key,omitempty"`
	Type        string            `json:"type,omitempty"`
	ID          string            `json:"id,omitempty"`
	ContentType string            `json:"content_type,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
}

// Mapping limits.
const (
	maxTemplateLen = 512
)

// ParseMapping reads and checks a mapping's JSON ("" or null: the default)
// and returns its canonical form. Errors name the field as
// "mapping.<member>".
func ParseMapping(raw json.RawMessage) (Mapping, json.RawMessage, error) {
	var m Mapping
	if len(bytes.TrimSpace(raw)) > 0 && string(bytes.TrimSpace(raw)) != "null" {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil {
			return Mapping{}, nil, herald.FieldErrorf("mapping", "mapping must be an object with key, type, id, content_type and headers (templates): %v", err)
		}
	}
	check := func(field, tmpl string) error {
		if len(tmpl) > maxTemplateLen {
			return herald.FieldErrorf(field, "%s is %d bytes; the limit is %d", field, len(tmpl), maxTemplateLen)
		}
		if _, err := parseTemplate(tmpl); err != nil {
			return herald.FieldErrorf(field, "%s: %v", field, err)
		}
		return nil
	}
	for _, f := range []struct{ name, v string }{{"key", m.Key}, {"type", m.Type}, {"id", m.ID}, {"content_type", m.ContentType}} {
		if err := check("mapping."+f.name, f.v); err != nil {
			return Mapping{}, nil, err
		}
	}
	if len(m.Headers) > herald.MaxHeaders {
		return Mapping{}, nil, herald.FieldErrorf("mapping.headers", "%d headers; the limit is %d", len(m.Headers), herald.MaxHeaders)
	}
	for _, name := range slices.Sorted(maps.Keys(m.Headers)) {
		if !herald.ValidHeaderName(name) || len(name) > herald.MaxHeaderNameLen {
			return Mapping{}, nil, herald.FieldErrorf("mapping.headers", "header name %q must be 1 to %d letters, digits or !#$%%&'*+-.^_`|~", name, herald.MaxHeaderNameLen)
		}
		if err := check("mapping.headers", m.Headers[name]); err != nil {
			return Mapping{}, nil, err
		}
	}
	canon, _ := json.Marshal(m)
	return m, canon, nil
}

// ValidateTopicTemplate checks a source's target topic: a topic name, or a
// template whose placeholders make one. Errors name "topic".
func ValidateTopicTemplate(tmpl string) error {
	if tmpl == "" {
		return herald.FieldErrorf("topic", "topic is required: a topic name, or a template such as \"orders.{topic}\" or \"{payload.kind}\"")
	}
	if len(tmpl) > maxTemplateLen {
		return herald.FieldErrorf("topic", "topic is %d bytes; the limit is %d", len(tmpl), maxTemplateLen)
	}
	parts, err := parseTemplate(tmpl)
	if err != nil {
		return herald.FieldErrorf("topic", "topic: %v", err)
	}
	if len(parts) == 1 && parts[0].literal {
		if err := herald.ValidateTopicName(tmpl); err != nil {
			return err
		}
		if herald.IsSystemTopic(tmpl) {
			return herald.FieldErrorf("topic", "topic %q is reserved: names starting %q are written by Herald only", tmpl, herald.SystemTopicPrefix)
		}
	}
	return nil
}

// TemplatePattern returns a topic pattern matching every topic the topic
// template can render: the template itself when it has no placeholder,
// else its whole literal segments before the first placeholder followed by
// ">" (a placeholder's value may hold dots). "" for an invalid template.
func TemplatePattern(tmpl string) string {
	parts, err := parseTemplate(tmpl)
	if err != nil || len(parts) == 0 {
		return ""
	}
	if len(parts) == 1 && parts[0].literal {
		return tmpl
	}
	lit := ""
	if parts[0].literal {
		lit = parts[0].text
	}
	i := strings.LastIndexByte(lit, '.')
	if i < 0 {
		return ">"
	}
	return lit[:i] + ".>"
}

// part is a piece of a template: literal text, or a placeholder path.
type part struct {
	literal bool
	text    string   // the literal
	path    []string // the placeholder: "topic", "key", "type", "id", "header"+name, "payload"+path...
}

func parseTemplate(s string) ([]part, error) {
	var parts []part
	for s != "" {
		open := strings.IndexAny(s, "{}")
		if open < 0 {
			parts = append(parts, part{literal: true, text: s})
			break
		}
		if s[open] == '}' {
			return nil, fmt.Errorf("a '}' without its '{'")
		}
		if open > 0 {
			parts = append(parts, part{literal: true, text: s[:open]})
		}
		end := strings.IndexByte(s[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("a '{' without its '}'")
		}
		expr := s[open+1 : open+end]
		s = s[open+end+1:]
		path := strings.Split(expr, ".")
		switch path[0] {
		case "topic", "key", "type", "id":
			if len(path) != 1 {
				return nil, fmt.Errorf("{%s} takes no path", path[0])
			}
		case "header":
			if len(path) < 2 || path[1] == "" {
				return nil, fmt.Errorf("{header.NAME} needs a header name")
			}
			path = []string{"header", strings.ToLower(strings.Join(path[1:], "."))}
		case "payload":
			if slices.Contains(path[1:], "") {
				return nil, fmt.Errorf("{%s}: a payload path has an empty step", expr)
			}
		default:
			return nil, fmt.Errorf("unknown placeholder {%s}: use {topic}, {key}, {type}, {id}, {header.NAME} or {payload.PATH}", expr)
		}
		parts = append(parts, part{path: path})
	}
	return parts, nil
}

// render evaluates a template against a message; payload is the decoded
// JSON payload (nil when it is not JSON), decoded once per message.
func render(parts []part, m *Message, payload *lazyJSON) string {
	if len(parts) == 1 && parts[0].literal {
		return parts[0].text
	}
	var b strings.Builder
	for _, p := range parts {
		if p.literal {
			b.WriteString(p.text)
			continue
		}
		switch p.path[0] {
		case "topic":
			b.WriteString(m.Topic)
		case "key":
			b.WriteString(m.Key)
		case "type":
			b.WriteString(m.Type)
		case "id":
			b.WriteString(m.ID)
		case "header":
			b.WriteString(lookupHeader(m, p.path[1]))
		case "payload":
			b.WriteString(payload.get(p.path[1:]))
		}
	}
	return b.String()
}

func lookupHeader(m *Message, name string) string {
	for _, hs := range []map[string]string{m.Headers, m.Meta} {
		if v, ok := hs[name]; ok {
			return v
		}
		for k, v := range hs {
			if strings.EqualFold(k, name) {
				return v
			}
		}
	}
	return ""
}

// lazyJSON decodes a payload the first time a template reads it.
type lazyJSON struct {
	raw     []byte
	decoded bool
	v       any
}

func (l *lazyJSON) get(path []string) string {
	if !l.decoded {
		l.decoded = true
		d := json.NewDecoder(bytes.NewReader(l.raw))
		d.UseNumber()
		if d.Decode(&l.v) != nil {
			l.v = nil
		}
	}
	v := l.v
	for _, step := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[step]
		case []any:
			i, err := strconv.Atoi(step)
			if err != nil || i < 0 || i >= len(x) {
				return ""
			}
			v = x[i]
		default:
			return ""
		}
	}
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

// mapper is a source's compiled topic template and mapping.
type mapper struct {
	topic                    []part
	key, typ, id, ctype      []part
	headers                  map[string][]part
	defaultKey, defaultType  bool
	defaultCType, allHeaders bool
}

func newMapper(topic string, raw json.RawMessage) (*mapper, error) {
	m, _, err := ParseMapping(raw)
	if err != nil {
		return nil, err
	}
	mp := &mapper{headers: map[string][]part{}}
	if mp.topic, err = parseTemplate(topic); err != nil {
		return nil, err
	}
	mp.key, _ = parseTemplate(m.Key)
	mp.typ, _ = parseTemplate(m.Type)
	mp.id, _ = parseTemplate(m.ID)
	mp.ctype, _ = parseTemplate(m.ContentType)
	mp.defaultKey, mp.defaultType, mp.defaultCType = m.Key == "", m.Type == "", m.ContentType == ""
	mp.allHeaders = m.Headers == nil
	for name, t := range m.Headers {
		mp.headers[name], _ = parseTemplate(t)
	}
	return mp, nil
}

// event maps one message to an event of the source.
func (mp *mapper) event(sourceID string, m *Message) *herald.Event {
	pl := &lazyJSON{raw: m.Payload}
	e := &herald.Event{
		Topic:   render(mp.topic, m, pl),
		ID:      render(mp.id, m, pl),
		Payload: m.Payload,
	}
	e.Key = m.Key
	if !mp.defaultKey {
		e.Key = render(mp.key, m, pl)
	}
	e.Type = m.Type
	if !mp.defaultType {
		e.Type = render(mp.typ, m, pl)
	}
	e.ContentType = m.ContentType
	if !mp.defaultCType {
		e.ContentType = render(mp.ctype, m, pl)
	}
	if e.ContentType == "" {
		if json.Valid(m.Payload) {
			e.ContentType = "application/json"
		} else {
			e.ContentType = "application/octet-stream"
		}
	}
	if mp.allHeaders {
		for k, v := range m.Headers {
			if len(e.Headers) >= herald.MaxHeaders {
				break
			}
			if herald.ValidHeaderName(k) && len(k) <= herald.MaxHeaderNameLen && herald.ValidHeaderValue(v) && len(v) <= herald.MaxHeaderValueLen {
				if e.Headers == nil {
					e.Headers = map[string]string{}
				}
				e.Headers[k] = v
			}
		}
	} else {
		for name, t := range mp.headers {
			if v := render(t, m, pl); v != "" {
				if e.Headers == nil {
					e.Headers = map[string]string{}
				}
				e.Headers[name] = v
			}
		}
	}
	if m.IdempotencyKey != "" {
		e.IdempotencyKey = "src:" + sourceID + ":" + m.IdempotencyKey
	}
	return e
}

// Template is a parsed template (see Mapping) that a kind evaluates
// itself: the mqtt kind's id_from, for one.
type Template struct{ parts []part }

// ParseTemplate parses a template; the error says what is wrong in it.
func ParseTemplate(s string) (Template, error) {
	parts, err := parseTemplate(s)
	return Template{parts}, err
}

// Render evaluates the template against a message; "" for the zero
// Template.
func (t Template) Render(m *Message) string {
	if len(t.parts) == 0 {
		return ""
	}
	return render(t.parts, m, &lazyJSON{raw: m.Payload})
}
