package filter

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/ext"

	"github.com/heraldhq/herald"
)

// CEL limits.
const (
	// MaxCELLen bounds a CEL expression, in bytes.
	MaxCELLen = 4096
	// MaxCELCost bounds one evaluation, in CEL's runtime cost units: a
	// condition over an event's fields costs a few dozen; this leaves room
	// for list macros over a payload while a runaway expression stops
	// early (and does not match).
	MaxCELCost = 100000
)

// Event is an event as a CEL filter sees it, the variable "event":
//
//	event.topic  string     event.seq   int     event.id    string
//	event.type   string     event.key   string  event.time  timestamp
//	event.data   the payload as JSON (null when it is not JSON and no
//	             schema renders it: protobuf through its topic's schema)
//
// The fields are typed, so an expression naming a field that does not
// exist (event.sq) or comparing a field with a value of another type
// (event.seq > "a") is refused when the filter is written. data is
// dynamic: its members are checked when the event is.
type Event struct {
	Topic string    `cel:"topic"`
	Seq   int64     `cel:"seq"`
	ID    string    `cel:"id"`
	Type  string    `cel:"type"`
	Key   string    `cel:"key"`
	Time  time.Time `cel:"time"`
	Data  any       `cel:"data"`
}

// Decoder renders a payload that is not JSON as JSON, protobuf through
// its topic's schema (schema.Registry implements it). It returns the
// payload as it is when it has nothing to render it with.
type Decoder interface {
	JSON(ctx context.Context, topic string, payload []byte, contentType string) ([]byte, error)
}

// celEnv is the environment of CEL filters, built once.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		ext.NativeTypes(reflect.TypeFor[Event](), ext.ParseStructTags(true)),
		cel.Variable("event", cel.ObjectType("filter.Event")),
		cel.CrossTypeNumericComparisons(true),
		ext.Strings(),
	)
})

// compileMu serializes compiling: cel-go v0.33's checker fills the
// environment's function catalog lazily on the first undeclared
// reference while other checks copy it unlocked (a data race the race
// detector finds). Compiling happens when a filter is written, not per
// event, so one at a time costs nothing that matters; evaluation is
// concurrent.
var compileMu sync.Mutex

// Expr is a compiled, type-checked CEL condition over an Event, safe for
// concurrent use.
type Expr struct {
	src string
	prg cel.Program
}

// CompileCEL compiles and type-checks a CEL condition over event (see
// Event). field names the input at fault in errors (*herald.Error with
// CodeInvalid), such as "filter" or "filter.cel". Rules use it for their
// string filters, so a rule's filter and a subscription's are one language.
func CompileCEL(field, src string) (*Expr, error) {
	if src == "" {
		return nil, herald.FieldErrorf(field, "the CEL expression is empty")
	}
	if len(src) > MaxCELLen {
		return nil, herald.FieldErrorf(field, "the CEL expression is %d bytes; the limit is %d", len(src), MaxCELLen)
	}
	env, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("CEL environment: %w", err)
	}
	compileMu.Lock()
	ast, iss := env.Compile(src)
	compileMu.Unlock()
	if iss != nil && iss.Err() != nil {
		return nil, herald.FieldErrorf(field, "the CEL expression does not compile: %v", iss.Err())
	}
	if t := ast.OutputType(); !t.IsExactType(types.BoolType) && !t.IsExactType(types.DynType) {
		return nil, herald.FieldErrorf(field, "the CEL expression gives %s; a filter must give a bool", t)
	}
	prg, err := env.Program(ast, cel.CostLimit(MaxCELCost), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, herald.FieldErrorf(field, "the CEL expression: %v", err)
	}
	return &Expr{src: src, prg: prg}, nil
}

// String is the expression's source.
func (e *Expr) String() string { return e.src }

// Test evaluates the condition over ev: true only for a bool true. An
// expression that fails (a missing member of data, too costly) is false.
func (e *Expr) Test(ev *Event) bool {
	out, _, err := e.prg.Eval(map[string]any{"event": ev})
	if err != nil {
		return false
	}
	b, ok := out.(types.Bool)
	return ok && bool(b)
}

// jsonPayload is the event's payload as JSON: the payload itself when its
// content type says JSON, the decoder's rendering otherwise (nil when
// there is none).
func jsonPayload(ctx context.Context, ev *herald.Event, dec Decoder) []byte {
	if jsonMediaType(ev.ContentType) {
		return ev.Payload
	}
	if dec == nil {
		return nil
	}
	raw, err := dec.JSON(ctx, ev.Topic, ev.Payload, ev.ContentType)
	if err != nil || !json.Valid(raw) {
		return nil // nothing rendered it as JSON
	}
	return raw
}
