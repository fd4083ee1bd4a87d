// Package stream serves Herald's realtime streams: Server-Sent Events on
// GET /v1/topics/{topic}/stream and WebSockets on GET /v1/stream, with
// replay from the store so a client that reconnects continues exactly
// where it left off, and short-lived connection tokens for browsers
// (POST /v1/tokens). docs/streams.md is the user's guide; this is the
// contract in brief.
//
// # Delivery
//
// Committed events reach the Hub through OnCommit (a committer hook) or
// Notify (another node committed them). One goroutine fans them out from
// memory, in commit order, to every matching connection's bounded queue;
// nothing is sent before it is durable, and a store query per client is
// needed only to replay history. A connection whose queue is full is a
// slow consumer: it is disconnected (WebSocket close 1013, or an SSE
// "herald.disconnect" event with code "slow-consumer") with
// ReasonSlowConsumer, and it never delays other clients or the committer.
//
// Connections cost little while idle: a WebSocket holds the library's
// reader goroutine and small buffers; an SSE stream over HTTP/1 is taken
// over from net/http and holds one small goroutine, blocked in a read so
// that a client's close is seen at once (a client that sends anything on
// an SSE stream is cut off). Each gets a writer goroutine only while it
// has something to write. Over HTTP/2, an SSE stream keeps its handler's
// goroutine.
//
// A subscription that starts from a position first registers for live
// events, then reads the log from the tail cache or the store, then goes
// live; events that arrive meanwhile are read from the log too, and a seq
// already sent is never sent again. So a resume has no gap and no
// duplicate. Where the log no longer holds the events after the position
// (retention), the client is told: a WebSocket ack has "recovered": false
// (and "first_seq" for a single topic) and a "gap" frame follows; an SSE
// stream starts with an "herald.gap" event.
//
// # Starting positions
//
// since is a seq (events after it; 0 is every retained event) or an
// RFC 3339 time (events at or after it). Without one, a subscription gets
// the events committed from the moment it starts. A pattern resumes per
// topic: the WebSocket "positions" object maps topics to the seq last
// received, and since (if any) applies to the matching topics it does not
// list; the SSE id of a pattern stream is such a map, written
// "@<unix ms>,<topic>=<seq>,...", where the mark is the time the stream
// first started live (its topics not yet seen resume from that time, less
// a small margin).
//
// # WebSocket protocol
//
// JSON text frames. The client sends:
//
//	{"op":"subscribe","id":"a","topic":"orders.*","since":42,"positions":{"orders.eu":17},"filter":{"types":["order.*"]}}
//	{"op":"unsubscribe","id":"a"}
//	{"op":"ping"}
//
// id is the client's name for the subscription (default: the topic),
// unique on the connection. The server answers:
//
//	{"op":"subscribed","id":"a","topic":"orders.*","recovered":true,"time":"..."}
//	{"op":"gap","sub":"a","topic":"orders.eu","missed_from":1,"missed_to":9,"first_seq":10}
//	{"op":"event","sub":"a","topic":"orders.eu","seq":18,"id":"...","type":"order.created","key":"...","time":"...","content_type":"application/json","data":{...}}
//	{"op":"unsubscribed","id":"a"}
//	{"op":"error","id":"a","error":{"type":"https://herald.dev/problems/forbidden","title":"Forbidden","status":403,"detail":"..."}}
//	{"op":"pong"}
//
// Each client message gets exactly one answer, in the order the messages
// came: subscribed or error, unsubscribed or error, pong. A subscription's
// gaps and events come after its subscribed and never after its
// unsubscribed. A JSON payload travels inline as "data"; any other as
// "data_base64".
// The server pings every PingInterval and closes a connection that does
// not answer. It closes with 1012 when it stops, 1013 for a slow
// consumer, 1008 when the connection token expires or its API key is
// deleted or expires (ReasonKeyRevoked), and 1007 for a text frame that
// is not UTF-8.
//
// # SSE
//
// Each event is "id:" (the seq, or a pattern's position map), "event:"
// (the event type, or "message") and "data:": the payload, one line per
// line, or "base64," and the payload in base64 when it is not text that
// survives EventSource unchanged; ?format=json sends the event as the
// JSON object of the WebSocket frames instead. A comment line is sent
// every HeartbeatInterval. The server's own events are "herald.gap" and
// "herald.disconnect" ({"code","reason"}, the last event of a stream the
// server ends).
//
// # Deleted topics
//
// When a topic is deleted (Hub.Forget), a subscription to it ends with a
// not-found problem: a WebSocket "error" frame with the subscription's id
// (the connection goes on), or an SSE "herald.disconnect" event of code
// "not-found" that ends the stream, whose reconnect then gets 404. A
// pattern stops receiving the topic.
//
// # Authentication
//
// The API establishes who opens a stream (an API key, or ?token= with a
// connection token that Tokens issued and verifies) and hands the hub a
// herald.Principal; it also answers, as problems, the errors ServeSSE and
// ServeWebSocket return before a stream starts. Streaming a topic or
// pattern needs the read or subscribe scope covering it. With a
// KeyChecker (Deps.Keys), the streams of a key (or of its tokens) end with
// ReasonKeyRevoked once it expires or is deleted: Revoke on the node that
// deleted it, a check every KeyCheckInterval on the others.
// Connections are limited per key (MaxConnsPerSubject; a token counts for
// the key that asked for it) and subscriptions per WebSocket
// (MaxSubscriptionsPerConn). Browser origins other than the server's own
// must be listed in Config.AllowedOrigins.
package stream
