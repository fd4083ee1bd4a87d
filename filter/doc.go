// Package filter implements Herald's filter language, which selects the
// events a subscription receives: webhook subscriptions and realtime stream
// subscriptions use the same filters.
//
// # Filters
//
// A filter is a JSON object with two optional fields:
//
//	{
//	  "types":   ["order.*", "payment.captured"],
//	  "payload": {"amount": [{"numeric": [">", 100]}], "currency": ["EUR", "USD"]}
//	}
//
// An event passes when its type matches "types" AND its payload matches
// "payload". A missing field accepts everything, so {} passes every event,
// and so does an absent filter.
//
// # Types
//
// "types" lists event type patterns; the event passes when its type matches
// any of them. A pattern is 1 to 200 printable ASCII characters without
// spaces. "*" matches any run of characters, including none and including
// dots, so "order.*" matches "order.created" and "order.item.added" (and
// "order."), "*.failed" matches "payment.failed" and "job.retry.failed", and
// "*" matches every type. Every other character matches only itself, case
// sensitively. An event without a type matches only patterns that match the
// empty string, such as "*". An empty list is an error: leave "types" out to
// accept every type.
//
// # Payload policies
//
// "payload" is a policy on the event's payload, in the style of Amazon SNS
// and EventBridge filter policies. It maps payload keys to a list of
// conditions:
//
//		{"status": ["shipped", "delivered"], "amount": [{"numeric": [">=", 100]}]}
//
//	  - Between keys it is AND: every key must match.
//	  - Within a key's list it is OR: one condition must match one value of
//	    the key.
//	  - An object instead of a list applies a nested policy to the object under
//	    the key: {"customer": {"tier": ["gold"]}} matches
//	    {"customer": {"tier": "gold", "id": 7}}.
//	  - "$or" takes a list of policies and matches when any of them does, for
//	    OR across groups of keys. It may appear at any level, beside other
//	    keys (which must match too):
//
//	    {"$or": [{"priority": ["high"]}, {"amount": [{"numeric": [">", 1000]}]}]}
//
// When the value at a key is an array, the key matches if any element
// matches: {"tags": ["urgent"]} matches {"tags": ["new", "urgent"]}. This
// holds through nesting: {"items": {"sku": ["A-1"]}} matches a payload
// whose "items" is an array of objects, one of which has "sku": "A-1". As in
// SNS, each key is checked on its own, so {"items": {"sku": ["A-1"], "qty":
// [5]}} also matches when one item has sku A-1 and another has qty 5. An
// empty array holds no values, like a missing key.
//
// A payload policy only ever matches JSON objects. It looks at payloads
// whose content type is application/json, any type ending in "+json"
// (application/cloudevents+json, application/vnd.acme+json), or empty; the
// payload must then be valid JSON with an object at the top. Any other
// payload (protobuf, text, malformed JSON, a JSON array) fails every payload
// policy, though it still passes a filter that only has "types". An empty
// policy, "payload": {}, is the same as none.
//
// # Conditions
//
// Each element of a key's list is one condition:
//
//	"shipped"                          the string, exactly
//	42, 1.5, -3e2                      the number, compared numerically: 100 matches 100, 100.0 and 1e2
//	true, false                        the boolean
//	null                               a JSON null (not a missing key)
//	{"prefix": "ord_"}                 a string that starts with "ord_"
//	{"suffix": ".png"}                 a string that ends with ".png"
//	{"equals-ignore-case": "eur"}      a string equal to "eur" under Unicode case folding ("EUR", "Eur")
//	{"wildcard": "img/*.png"}          a string matching the pattern; "*" matches any run of characters
//	{"cidr": "10.0.0.0/8"}             a string holding an IP address inside the prefix (a bare address
//	                                   means just that address); IPv4-mapped IPv6 forms count as IPv4
//	{"numeric": [">", 0]}              a number in the range; the operators are =, <, <=, >, >=
//	{"numeric": [">=", 0, "<", 100]}   a number in a range with both ends: one lower bound (> or >=)
//	                                   and one upper bound (< or <=), in either order
//	{"exists": true}                   the key is present, with any value, null included
//	{"exists": false}                  the key is absent (or an empty array)
//	{"anything-but": "red"}            a value other than "red"
//	{"anything-but": ["red", 0, null]} a value equal to none of those
//	{"anything-but": {"prefix": "test_"}}  a string that does not start with "test_"; also
//	                                   with suffix, equals-ignore-case and wildcard
//
// Types are never converted: the string "42" does not match the number 42,
// and numeric conditions match only JSON numbers. Numbers are compared as
// IEEE 754 double-precision values, so integers beyond 2^53 are compared
// approximately. A number too large for a double (1e400) counts as
// infinite. String conditions compare the decoded string: "caf\u00e9"
// in a payload equals "café" in a filter.
//
// Value conditions apply to strings, numbers, booleans and null. An object
// found at a key counts only for "exists"; use a nested policy to look
// inside it. "anything-but" needs a value: a missing key does not match it
// (and an object does not count as one). To accept a missing key as well,
// add {"exists": false} to the same list:
//
//	{"env": [{"anything-but": "test"}, {"exists": false}]}
//
// The forms of "anything-but" with prefix, suffix, equals-ignore-case or
// wildcard match only strings. With a list, a value of another type than all
// listed ones always matches ({"anything-but": ["red"]} matches 7).
//
// # CEL
//
// A filter may also hold a condition in CEL, the expression language of
// Kubernetes and Envoy, over the variable event (see Event): either the
// whole filter as a JSON string, or a "cel" member beside "types" and
// "payload" (all three must then pass):
//
//	"event.data.amount > 100 && event.type.startsWith('order.')"
//	{"types": ["order.*"], "cel": "event.data.items.exists(i, i.sku == 'A-1')"}
//
// event has topic, seq, id, type, key, time (a timestamp) and data, the
// payload decoded as JSON (null when it is not JSON; a protobuf payload
// of a topic with a protobuf schema is read through the schema when the
// caller passes a Decoder to MatchEvent, as the server does). The
// expression is compiled and type-checked by Parse: a field of event that
// does not exist, an operator applied to the wrong types, a result that is
// not a bool, or an expression longer than MaxCELLen is refused with
// CodeInvalid naming "filter" (or "filter.cel"). Members of data are
// checked when an event is: an expression that fails on an event (a
// missing member, a wrong type, more than MaxCELCost cost units) does not
// match it. Numbers in data are doubles; comparisons across int and
// double work (event.data.amount > 100). A CEL filter costs about ten
// microseconds per event on a small payload (BenchmarkCEL): the payload
// is decoded into a map for it, where a payload policy scans it once.
//
// A CEL-only filter's canonical form is the string; otherwise the object,
// with "cel" after "types" and "payload".
//
// # Limits
//
// Parse refuses filters beyond these limits (see the constants):
//
//   - MaxSize: 16 KiB of filter JSON.
//   - MaxTypes: 100 type patterns, each at most MaxTypeLen (200) bytes.
//   - MaxDepth: 5 levels of policy. A top-level key is at level 1; each
//     nested object and each "$or" adds a level, so {"a": {"b": {"c": {"d":
//     {"e": [1]}}}}} is the deepest plain nesting allowed.
//   - MaxKeys: 100 keys in all, counting nested keys and keys in "$or"
//     branches.
//   - MaxConditions: 150 conditions in all; each value listed in an
//     "anything-but" counts as one.
//
// Parse also refuses unknown fields and operators, empty lists and empty
// nested objects, a key that appears twice in one object, keys that start
// with "$" other than "$or" (so a payload key named "$or" cannot be
// filtered on), numeric ranges that match no number, and numbers too large
// for a double.
//
// # Canonical form
//
// String and MarshalJSON return a canonical form: no spaces, type patterns
// sorted with duplicates removed, keys sorted, conditions and "$or"
// branches sorted with duplicates removed, runs of "*" collapsed, numbers in
// their shortest form ({"numeric": [">=", 5, "<=", 5]} becomes
// {"numeric": ["=", 5]}). Filters that mean the same in these ways have the
// same canonical form, and parsing it gives the same filter back.
//
// # Cost
//
// Match reads the payload once, in a single pass that validates it and
// records only the values at keys the policy names, without building a map
// of the payload; it then evaluates the policy against those values. Its
// cost is linear in the payload size plus the number of conditions times
// the values found at their keys. A filter without a payload policy never
// looks at the payload.
package filter
