package control

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// maxBody bounds a request; 1,000 specs fit many times over.
const maxBody = 4 << 20

func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { reply(a.Status())(w) })

	mux.HandleFunc("GET /v1/networks", func(w http.ResponseWriter, r *http.Request) { reply(a.Networks(), nil)(w) })
	mux.HandleFunc("POST /v1/networks", func(w http.ResponseWriter, r *http.Request) {
		var req NetworkCreate
		if decodeBody(w, r, &req) {
			reply(a.CreateNetwork(req))(w)
		}
	})
	mux.HandleFunc("GET /v1/networks/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(a.Network(r.PathValue("name")))(w)
	})
	mux.HandleFunc("DELETE /v1/networks/{name}", func(w http.ResponseWriter, r *http.Request) {
		err := a.RemoveNetwork(r.PathValue("name"), r.URL.Query().Get("force") == "true")
		reply(struct{}{}, err)(w)
	})

	mux.HandleFunc("GET /v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		reply(a.Endpoints(r.URL.Query().Get("network")))(w)
	})
	mux.HandleFunc("POST /v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		var req EndpointAttach
		if decodeBody(w, r, &req) {
			reply(a.Attach(req))(w)
		}
	})
	mux.HandleFunc("GET /v1/endpoints/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(a.Endpoint(r.PathValue("name")))(w)
	})
	mux.HandleFunc("DELETE /v1/endpoints/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(struct{}{}, a.Detach(r.PathValue("name")))(w)
	})

	mux.HandleFunc("GET /v1/ports", func(w http.ResponseWriter, r *http.Request) {
		reply(a.Ports(r.URL.Query().Get("endpoint")))(w)
	})
	mux.HandleFunc("POST /v1/ports", func(w http.ResponseWriter, r *http.Request) {
		var req PublishRequest
		if decodeBody(w, r, &req) {
			reply(a.Publish(req))(w)
		}
	})
	mux.HandleFunc("POST /v1/ports/unpublish", func(w http.ResponseWriter, r *http.Request) {
		var req UnpublishRequest
		if decodeBody(w, r, &req) {
			reply(a.Unpublish(req))(w)
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, kindf(ErrNotFound, "no API %s %s; this agent serves /v1", r.Method, r.URL.Path))
	})
	return a.guardRequests(mux)
}

// reply turns a (value, error) pair into a response writer.
func reply[T any](v T, err error) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
}

func writeError(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(statusOf(err))
	json.NewEncoder(w).Encode(apiError{Error: err.Error()})
}

func decodeBody(w http.ResponseWriter, r *http.Request, into any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		writeError(w, fmt.Errorf("%w request body: %v", ErrInvalid, err))
		return false
	}
	return true
}

// Status reports the agent, its attachments and how much state it holds.
func (a *Agent) Status() (*Status, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := &Status{
		PID: os.Getpid(), StateFile: a.store.Path(), Socket: a.cfg.Socket, PinDir: a.dp.PinDir(),
		Cgroup: a.cfg.Cgroup, TCMode: "none (no uplink attached)", Uplinks: []Uplink{},
		Networks: len(a.st.networks), Endpoints: len(a.st.endpoints), Mappings: len(a.st.ports),
		DynamicPorts: a.ipam.DynamicPorts().String(), SNATPorts: a.snatPorts.String(),
	}
	a.fillHealth(s)
	for _, u := range a.uplinks {
		s.Uplinks = append(s.Uplinks, u)
		s.TCMode = u.Mode
	}
	slices.SortFunc(s.Uplinks, func(x, y Uplink) int { return strings.Compare(x.Name, y.Name) })
	var err error
	if s.Attachments, err = loader.ListAttachments(a.dp.PinDir()); err != nil {
		return nil, err
	}
	bs, err := a.bindings.All()
	if err != nil {
		return nil, err
	}
	s.Bindings = len(bs)
	// Both tables: ct holds answered flows, ct_new the rest.
	ct, err := maps.NewCT(a.dp.Maps.CT).All()
	if err != nil {
		return nil, err
	}
	ctNew, err := maps.NewCT(a.dp.Maps.CTNew).All()
	if err != nil {
		return nil, err
	}
	s.CTEntries, s.CTNew = len(ct)+len(ctNew), len(ctNew)
	ha, err := maps.NewHostAddrs(a.dp.Maps.HostAddrs).All()
	if err != nil {
		return nil, err
	}
	s.HostAddrs = len(ha)
	if s.Counters, err = maps.NewStats(a.dp.Maps.Stats).Read(); err != nil {
		return nil, err
	}
	return s, nil
}
