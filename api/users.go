package api

import (
	"context"
	"net/http"
	"regexp"
	"time"

	"github.com/heraldhq/herald"
)

// userTemplate in a token request's scopes stands for its user id, so a
// backend asks for "read:accounts.{user}.>" and the token can read that
// user's topics only.
const userTemplate = "{user}"

// maxUserSubscriptions bounds the server-side subscriptions of one user.
const maxUserSubscriptions = 100

var userIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// validateUserID checks a user id: 1 to 128 letters, digits, '_' or '-',
// so it is one segment of a topic name.
func validateUserID(user string) error {
	if !userIDRE.MatchString(user) {
		return herald.FieldErrorf("user", "a user id is 1 to 128 letters, digits, '_' or '-' (one segment of a topic name), got %q", user)
	}
	return nil
}

// Users keeps end users' server-side subscriptions and presence (the
// store's herald.UserStore).
type Users interface {
	PutUserSubscription(ctx context.Context, user, topic string, now time.Time) (herald.UserSubscription, bool, error)
	DeleteUserSubscription(ctx context.Context, user, topic string) error
	ListUserSubscriptions(ctx context.Context, user string) ([]herald.UserSubscription, error)
	ListPresence(ctx context.Context, user string, since time.Time) ([]herald.Presence, error)
}

// UserHub is told of changes to users' subscriptions (the stream hub).
type UserHub interface {
	UserChanged(user string)
}

// presenceFresh is how old a node's presence record may be and still
// count: its nodes rewrite theirs every 2 seconds.
const presenceFresh = 10 * time.Second

type userSubJSON struct {
	User      string `json:"user"`
	Topic     string `json:"topic"`
	CreatedAt string `json:"created_at"`
}

func (s *Server) usersOrUnavailable() error {
	if s.users == nil {
		return herald.Errorf(herald.CodeUnavailable, "user subscriptions are not available on this server")
	}
	return nil
}

// putUserSubscription answers PUT /v1/users/{user}/subscriptions/{topic}:
// 201 new, 200 already there. Every connection of the user, on any node,
// receives the topic's events.
func (s *Server) putUserSubscription(w http.ResponseWriter, r *http.Request) error {
	if err := s.usersOrUnavailable(); err != nil {
		return err
	}
	user, topic := r.PathValue("user"), r.PathValue("topic")
	if err := validateUserID(user); err != nil {
		return err
	}
	if err := herald.ValidateTopicName(topic); err != nil {
		return err
	}
	if _, err := s.topics.Get(r.Context(), topic); err != nil {
		return err
	}
	if list, err := s.users.ListUserSubscriptions(r.Context(), user); err != nil {
		return err
	} else if len(list) >= maxUserSubscriptions {
		found := false
		for _, us := range list {
			found = found || us.Topic == topic
		}
		if !found {
			return herald.Errorf(herald.CodeConflict, "user %s has %d subscriptions, the most a user may have", user, maxUserSubscriptions)
		}
	}
	us, created, err := s.users.PutUserSubscription(r.Context(), user, topic, s.now().UTC())
	if err != nil {
		return err
	}
	if s.userHub != nil {
		s.userHub.UserChanged(user)
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return writeJSON(w, status, userSubJSON{User: us.User, Topic: us.Topic, CreatedAt: formatTime(us.CreatedAt)})
}

func (s *Server) deleteUserSubscription(w http.ResponseWriter, r *http.Request) error {
	if err := s.usersOrUnavailable(); err != nil {
		return err
	}
	user := r.PathValue("user")
	if err := s.users.DeleteUserSubscription(r.Context(), user, r.PathValue("topic")); err != nil {
		return err
	}
	if s.userHub != nil {
		s.userHub.UserChanged(user)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listUserSubscriptions(w http.ResponseWriter, r *http.Request) error {
	if err := s.usersOrUnavailable(); err != nil {
		return err
	}
	user := r.PathValue("user")
	if err := validateUserID(user); err != nil {
		return err
	}
	list, err := s.users.ListUserSubscriptions(r.Context(), user)
	if err != nil {
		return err
	}
	out := struct {
		Subscriptions []userSubJSON `json:"subscriptions"`
	}{Subscriptions: make([]userSubJSON, 0, len(list))}
	for _, us := range list {
		out.Subscriptions = append(out.Subscriptions, userSubJSON{User: us.User, Topic: us.Topic, CreatedAt: formatTime(us.CreatedAt)})
	}
	return writeJSON(w, http.StatusOK, out)
}

// userConnections answers GET /v1/users/{user}/connections: how many
// stream connections the user has open, and on which nodes (as the nodes
// last recorded them, within a few seconds).
func (s *Server) userConnections(w http.ResponseWriter, r *http.Request) error {
	if err := s.usersOrUnavailable(); err != nil {
		return err
	}
	user := r.PathValue("user")
	if err := validateUserID(user); err != nil {
		return err
	}
	ps, err := s.users.ListPresence(r.Context(), user, s.now().Add(-presenceFresh))
	if err != nil {
		return err
	}
	type nodeJSON struct {
		Node        string `json:"node"`
		Connections int    `json:"connections"`
	}
	out := struct {
		User        string     `json:"user"`
		Connections int        `json:"connections"`
		Nodes       []nodeJSON `json:"nodes"`
	}{User: user, Nodes: []nodeJSON{}}
	for _, p := range ps {
		out.Connections += p.Conns
		out.Nodes = append(out.Nodes, nodeJSON{Node: p.Node, Connections: p.Conns})
	}
	return writeJSON(w, http.StatusOK, out)
}
