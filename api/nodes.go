package api

import (
	"context"
	"net/http"
	"time"

	"github.com/heraldhq/herald"
)

// NodeInfo is one node serving this Herald, as GET /v1/cluster/nodes
// shows it.
type NodeInfo struct {
	ID          string
	Addr        string // the address its API listens on
	StartedAt   time.Time
	HeartbeatAt time.Time // its last heartbeat; now for a single node
	// Self marks the node that answers; Dispatching, known for it only,
	// is how many subscriptions it dispatches (holds the lease of) now.
	Self        bool
	Dispatching int
}

// Nodes lists the nodes serving this Herald: the cluster's live members,
// or this node alone.
type Nodes interface {
	Nodes(ctx context.Context) ([]NodeInfo, error)
}

type nodeInfoJSON struct {
	ID          string `json:"id"`
	Addr        string `json:"addr"`
	StartedAt   string `json:"started_at"`
	HeartbeatAt string `json:"heartbeat_at"`
	Self        bool   `json:"self"`
	Dispatching *int   `json:"dispatching,omitempty"`
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) error {
	if s.nodes == nil {
		return herald.Errorf(herald.CodeUnavailable, "this server does not report its nodes")
	}
	nodes, err := s.nodes.Nodes(r.Context())
	if err != nil {
		return err
	}
	out := struct {
		Nodes []nodeInfoJSON `json:"nodes"`
	}{Nodes: []nodeInfoJSON{}}
	for _, n := range nodes {
		j := nodeInfoJSON{ID: n.ID, Addr: n.Addr, StartedAt: formatTime(n.StartedAt), HeartbeatAt: formatTime(n.HeartbeatAt), Self: n.Self}
		if n.Self {
			j.Dispatching = new(n.Dispatching)
		}
		out.Nodes = append(out.Nodes, j)
	}
	return writeJSON(w, http.StatusOK, out)
}
