package channel

import (
	"fmt"
	"strings"

	"github.com/heraldhq/herald"
)

// Template is a destination name (a NATS subject, a routing key, an MQTT
// topic) with placeholders each event fills in: {topic}, {key} and
// {type}. "orders.{key}" sends the event of key "42" to "orders.42". A
// channel escapes what each placeholder brings in, by its own rules, so
// an event can never widen its destination (a key holding a wildcard).
type Template struct {
	text  string
	parts []templatePart
}

type templatePart struct {
	literal     string
	placeholder string // "topic", "key" or "type"; "" for a literal
}

// TemplatePlaceholders are the names a Template may hold, in braces.
var TemplatePlaceholders = []string{"topic", "key", "type"}

// ParseTemplate reads a template. Errors say what is wrong in plain words
// (an unknown placeholder, an unmatched brace); the channel names the
// field.
func ParseTemplate(text string) (Template, error) {
	t := Template{text: text}
	rest := text
	for rest != "" {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			t.parts = append(t.parts, templatePart{literal: rest})
			break
		}
		if rest[open] == '}' {
			return Template{}, fmt.Errorf("%q has a '}' without its '{'", text)
		}
		if open > 0 {
			t.parts = append(t.parts, templatePart{literal: rest[:open]})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return Template{}, fmt.Errorf("%q has a '{' without its '}'", text)
		}
		name := rest[open+1 : open+end]
		known := false
		for _, p := range TemplatePlaceholders {
			known = known || p == name
		}
		if !known {
			return Template{}, fmt.Errorf("%q holds the placeholder {%s}; the placeholders are {topic}, {key} and {type}", text, name)
		}
		t.parts = append(t.parts, templatePart{placeholder: name})
		rest = rest[open+end+1:]
	}
	return t, nil
}

// String returns the template as written.
func (t Template) String() string { return t.text }

// Literals returns the fixed text of the template, between placeholders,
// for a channel to check against its naming rules.
func (t Template) Literals() []string {
	var out []string
	for _, p := range t.parts {
		if p.placeholder == "" {
			out = append(out, p.literal)
		}
	}
	return out
}

// Expand fills the placeholders from ev. escape receives each
// placeholder's name and value and returns the text to put in its place.
func (t Template) Expand(ev *herald.Event, escape func(placeholder, value string) string) string {
	var b strings.Builder
	for _, p := range t.parts {
		switch p.placeholder {
		case "":
			b.WriteString(p.literal)
		case "topic":
			b.WriteString(escape(p.placeholder, ev.Topic))
		case "key":
			b.WriteString(escape(p.placeholder, ev.Key))
		case "type":
			b.WriteString(escape(p.placeholder, ev.Type))
		}
	}
	return b.String()
}

// KeepKeyOrder marks Failed every event of a batch that follows a failed
// event of the same topic and key, as channel.Batcher requires of a
// destination that may accept a key's later events when an earlier one
// failed: the retry then sends them again, in order, and none arrives
// before the event it follows. Events without a key have no order to
// keep. It changes res in place.
func KeepKeyOrder(batch []Delivery, res []herald.DeliveryResult) {
	type key struct{ topic, key string }
	var failed map[key]bool
	for i, d := range batch {
		if d.Event.Key == "" {
			continue
		}
		k := key{d.Event.Topic, d.Event.Key}
		if failed[k] {
			if res[i].Outcome == herald.Delivered {
				res[i] = herald.DeliveryResult{Outcome: herald.Failed, Err: ReasonOrder, Latency: res[i].Latency}
			}
			continue
		}
		if res[i].Outcome != herald.Delivered {
			if failed == nil {
				failed = map[key]bool{}
			}
			failed[k] = true
		}
	}
}

// ReasonOrder is the failure reason of an event a destination accepted
// but that follows a failed event of its key in the same batch: it is sent
// again after that one, to keep the key's order.
const ReasonOrder = "earlier-event-of-key-failed" // the kafka channel says the same
