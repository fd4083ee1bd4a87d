package api

import (
	"context"
	_ "embed"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldhq/herald"
)

// readyPingTimeout bounds the store check behind /readyz.
const readyPingTimeout = 2 * time.Second

//go:embed openapi.json
var openAPIDocument []byte

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": s.cfg.Version})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	switch s.ready.Load() {
	case readyStarting:
		return herald.Errorf(herald.CodeUnavailable, "not ready: starting")
	case readyStopping:
		return herald.Errorf(herald.CodeUnavailable, "not ready: shutting down")
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyPingTimeout)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		return &herald.Error{Code: herald.CodeUnavailable, Message: "not ready: the store does not answer", Err: err}
	}
	// A store that answers may still be unable to commit (a full disk).
	if h, ok := s.publisher.(commitHealth); ok {
		if err := h.Health(); err != nil {
			msg := "the event store cannot commit"
			if he, ok := errors.AsType[*herald.Error](err); ok && he.Message != "" {
				msg = he.Message
			}
			return &herald.Error{Code: herald.CodeUnavailable, Message: "not ready: " + msg, Err: err}
		}
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// commitHealth is a Publisher that knows whether it can commit now
// (engine.Committer): nil, or why not, in caller-safe words.
type commitHealth interface {
	Health() error
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	s.metricsHandler.ServeHTTP(w, r)
	return nil
}

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(openAPIDocument) // the client may be gone; nothing to do
	return nil
}

func newMetricsHandler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          reg,
		EnableOpenMetrics: false,
	})
}
