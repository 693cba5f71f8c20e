package control

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
)

// health is whether the agent can still be trusted to serve: it is not
// after its state store broke (a bbolt panic) or a request panicked. It
// never recovers; a restart does.
type health struct {
	mu  sync.Mutex
	err error
}

// markUnhealthy records the first reason the agent stopped being healthy,
// logs it and tells systemd.
func (a *Agent) markUnhealthy(err error) {
	a.health.mu.Lock()
	first := a.health.err == nil
	if first {
		a.health.err = err
	}
	a.health.mu.Unlock()
	if first {
		a.log.Error("agent unhealthy: it answers status only until restarted", "err", err)
		// Not waiting: a notify socket nobody reads blocks its writers,
		// and this may run inside a request.
		go Notify("STATUS=unhealthy: " + err.Error())
	}
}

// healthErr says why the agent is unhealthy, nil while it is healthy.
func (a *Agent) healthErr() error {
	if a.store != nil {
		if err := a.store.Broken(); err != nil {
			a.markUnhealthy(err)
		}
	}
	a.health.mu.Lock()
	defer a.health.mu.Unlock()
	return a.health.err
}

// fillHealth says in a status whether the agent is healthy and where the
// last good copy of its state file is.
func (a *Agent) fillHealth(s *Status) {
	s.Health = "ok"
	if err := a.healthErr(); err != nil {
		s.Health = "unhealthy: " + err.Error() + "; restart the agent (systemctl restart pontoon)"
	}
	s.StateBackup = LastGoodPath(a.store.Path())
}

// guardRequests contains a request's panic: the handler's deferred
// unlocks release the agent's mutex as the panic unwinds, the client gets
// a 500 with one line, and the agent turns unhealthy (its watchdog stops,
// so systemd restarts it). An unhealthy agent answers only GET /v1/status;
// everything else gets a 503 saying why. After a change that succeeded,
// the last good copy of the state file is refreshed.
func (a *Agent) guardRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := r.Method == http.MethodGet && r.URL.Path == "/v1/status"
		if err := a.healthErr(); err != nil && !status {
			answer(w, http.StatusServiceUnavailable, fmt.Sprintf("the agent is unhealthy (%v) and refuses requests until restarted: run 'systemctl restart pontoon'", err))
			return
		}
		defer func() {
			v := recover()
			if v == http.ErrAbortHandler {
				panic(v)
			}
			if v != nil {
				err := fmt.Errorf("%s %s panicked: %v", r.Method, r.URL.Path, v)
				a.markUnhealthy(err)
				answer(w, http.StatusInternalServerError, fmt.Sprintf("the agent failed inside this request (%v) and is now unhealthy: restart it ('systemctl restart pontoon'), then check the change with 'pontoon status'", v))
				return
			}
			if r.Method != http.MethodGet {
				a.saveLastGoodSoon()
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// answer writes an error body with a status of its own.
func answer(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(apiError{Error: msg})
}
