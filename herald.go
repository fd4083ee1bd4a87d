// Package herald holds the vocabulary every other package of Herald speaks:
// events, topics, API keys and scopes, the Error type with its codes, and the
// Store interface that the engine and the API run on.
//
// Herald is a self-hosted event notification service: producers publish
// events to topics, Herald commits each one durably before it answers, then
// delivers it at least once to every matching subscription. This package
// imports no driver, HTTP code or broker.
package herald

// Version is the release of this build; the linker may override it with
// -ldflags "-X github.com/heraldhq/herald.Version=...".
var Version = "0.1.0-dev"
