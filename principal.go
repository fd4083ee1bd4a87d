package herald

import "time"

// Principal is who makes a request, as authentication established it: the
// scopes it holds, a subject naming it (the API key's id, or "admin" for
// the bootstrap key), and when its credentials stop being valid. The API
// establishes it and hands it to what serves the request after, such as
// the stream hub.
type Principal struct {
	Subject string
	Scopes  Scopes
	// Expires is when a connection token stops being valid; zero for an
	// API key.
	Expires time.Time
	// User is the end user a connection token was issued for (its user
	// claim), "" otherwise: the connection receives that user's
	// server-side subscriptions.
	User string
	// KeyExpires is when the API key behind the credentials (the key
	// itself, or the key that asked for the token) expires; zero: never.
	KeyExpires time.Time
}
