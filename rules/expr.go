package rules

import (
	"fmt"
	"reflect"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"

	"github.com/heraldhq/herald"
)

// maxCost bounds one evaluation (CEL's runtime cost units): a condition
// over an event's fields costs a few dozen; this leaves room for list
// macros over a payload while a runaway expression stops early.
const maxCost = 100000

// The environments. A rule's condition and computed fields see:
//
//	value   the aggregate (int for count and distinct_count, double for
//	        sum, avg, min and max, any JSON value for latest)
//	count   events in the window (int)
//	key     the key (string)
//	window  {"start": timestamp, "end": timestamp}
//	event   the triggering event: {"topic", "seq", "id", "type", "key",
//	        "time", "data"}, data being the payload as JSON
//
// A filter is filter.CompileCEL's, over a typed event.
var (
	ruleEnv = mustEnv(
		cel.Variable("event", cel.DynType),
		cel.Variable("value", cel.DynType),
		cel.Variable("count", cel.IntType),
		cel.Variable("key", cel.StringType),
		cel.Variable("window", cel.DynType),
	)
)

func mustEnv(opts ...cel.EnvOption) *cel.Env {
	opts = append(opts, cel.CrossTypeNumericComparisons(true))
	env, err := cel.NewEnv(opts...)
	if err != nil {
		panic(err)
	}
	return env
}

// compileMu serializes compiling (cel-go v0.33's checker fills its
// function catalog lazily and unlocked); evaluation is concurrent.
var compileMu sync.Mutex

// expr is a compiled CEL expression, safe for concurrent use.
type expr struct {
	src string
	prg cel.Program
}

func compile(field, src string, env *cel.Env) (*expr, error) {
	if src == "" {
		return nil, nil
	}
	if len(src) > MaxExpressionLen {
		return nil, herald.FieldErrorf(field, "%s is longer than %d bytes", field, MaxExpressionLen)
	}
	compileMu.Lock() // see filter's compileMu: cel-go's checker races with itself
	ast, iss := env.Compile(src)
	compileMu.Unlock()
	if iss != nil && iss.Err() != nil {
		return nil, herald.FieldErrorf(field, "%s does not compile: %v", field, iss.Err())
	}
	prg, err := env.Program(ast, cel.CostLimit(maxCost), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, herald.FieldErrorf(field, "%s: %v", field, err)
	}
	return &expr{src: src, prg: prg}, nil
}

// eval runs the expression over vars and returns its value as Go.
func (e *expr) eval(vars map[string]any) (any, error) {
	out, _, err := e.prg.Eval(vars)
	if err != nil {
		return nil, err
	}
	return native(out)
}

// test runs a condition: true only for a bool true.
func (e *expr) test(vars map[string]any) (bool, error) {
	out, _, err := e.prg.Eval(vars)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("the expression gives %s, not a bool", out.Type())
	}
	return bool(b), nil
}

var jsonValueType = reflect.TypeFor[any]()

func native(v ref.Val) (any, error) {
	switch v := v.(type) {
	case types.Int, types.Uint, types.Double, types.Bool, types.String, types.Null:
		return v.Value(), nil
	case types.Timestamp:
		return v.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), nil
	}
	out, err := v.ConvertToNative(jsonValueType)
	if err != nil {
		return fmt.Sprint(v.Value()), nil
	}
	return out, nil
}
