package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Docker's legacy plugin protocol (moby's pkg/plugins and libnetwork's
// remote driver and remote IPAM): HTTP POSTs of JSON on a unix socket that
// dockerd finds in DockerPluginDir by name. One socket serves both the
// network driver and the IPAM driver. Each call is translated into the
// agent's own operations (network create, endpoint attach, publish,
// unpublish, detach, network rm); the state file stays the one source of
// truth, so what dockerd forgets over a restart the agent still knows.
//
// go-plugins-helpers would serve one manifest per handler and bring its
// own dependencies; a net/http mux of twenty routes is less code than the
// glue around it.

// DockerPluginDir is where dockerd looks for plugin sockets; it does not
// follow dockerd's --exec-root.
const DockerPluginDir = "/run/docker/plugins"

// DefaultDockerPlugin is the plugin's name when --docker-plugin has none:
// `docker network create -d pontoon --ipam-driver pontoon`.
const DefaultDockerPlugin = "pontoon"

// dockerOwner marks networks and endpoints Docker made.
const dockerOwner = "docker"

const (
	dockerPortMapKey     = "com.docker.network.portmap"
	dockerGenericKey     = "com.docker.network.generic"
	dockerGatewayReqKey  = "RequestAddressType"
	dockerGatewayReqType = "com.docker.network.gateway"
	dockerContentType    = "application/vnd.docker.plugins.v1.2+json"
)

// dockerPlugin serves the protocol for an agent.
type dockerPlugin struct {
	a  *Agent
	mu sync.Mutex
	// subPools are the --ip-range given to RequestPool, by pool, until
	// CreateNetwork makes the network (its request does not repeat it).
	subPools map[netip.Prefix]netip.Prefix
	// created are CreateEndpoint requests until Join attaches them.
	created map[string]dockerEndpointCreate
	// dataRoot is the --data-root of the dockerd calling, for container
	// names.
	dataRoot string
}

// DockerPluginSocket is the socket of the plugin named name.
func DockerPluginSocket(dir, name string) string { return filepath.Join(dir, name+".sock") }

// checkDockerPluginName refuses a name dockerd could not look up.
func checkDockerPluginName(name string) error {
	if !nameRE.MatchString(name) || strings.Contains(name, "/") {
		return kindf(ErrInvalid, "docker plugin name %q: use letters, digits, '_', '.' or '-', such as pontoon", name)
	}
	return nil
}

// dockerNetworkName is the Pontoon network of a Docker network: the id's
// first 12 digits, as `docker network ls` shows them.
func dockerNetworkName(id string) string { return "docker-" + shortDockerID(id) }

// dockerEndpointName is the Pontoon endpoint of a Docker endpoint.
func dockerEndpointName(id string) string { return "docker-" + shortDockerID(id) }

func shortDockerID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// ownerRemoveHint says how the owner of n removes it.
func ownerRemoveHint(n *Network) string {
	if n.Owner == dockerOwner {
		return "'docker network rm " + strings.TrimPrefix(n.Name, "docker-") + "'"
	}
	return "with the tool that made it"
}

type peerPIDKey struct{}

// dockerPluginServer serves the plugin; Run shuts it down with the API.
func (a *Agent) dockerPluginServer() *http.Server {
	return &http.Server{
		Handler:           a.docker.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		// The caller's pid says which dockerd asks (its --data-root).
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if uc, ok := c.(*net.UnixConn); ok {
				if raw, err := uc.SyscallConn(); err == nil {
					var cred *unix.Ucred
					raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
					if cred != nil {
						return context.WithValue(ctx, peerPIDKey{}, int(cred.Pid))
					}
				}
			}
			return ctx
		},
	}
}

// listenDockerPlugin opens the plugin socket, replacing a stale one but
// never one something answers on.
func listenDockerPlugin(dir, name string) (net.Listener, error) {
	if err := checkDockerPluginName(name); err != nil {
		return nil, err
	}
	path := DockerPluginSocket(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create docker plugin directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("something already serves the docker plugin %s at %s: stop it, or give --docker-plugin another name", name, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale docker plugin socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// dockerd runs as root; nobody else has anything to say to it.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("set docker plugin socket mode: %w", err)
	}
	return ln, nil
}

// dockerHandler decodes a request into Req and encodes what fn returns;
// an error goes back as {"Err": "..."}, which dockerd shows its user.
func dockerHandler[Req any](p *dockerPlugin, fn func(Req) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p.noteCaller(r)
		var req Req
		// dockerd's bodies carry fields this version does not read;
		// unknown keys are expected, unlike on the agent's own API.
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			p.fail(w, r, fmt.Errorf("pontoon: read %s request: %w", r.URL.Path, err))
			return
		}
		out, err := fn(req)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		if out == nil {
			out = struct{}{}
		}
		w.Header().Set("Content-Type", dockerContentType)
		json.NewEncoder(w).Encode(out)
	}
}

func (p *dockerPlugin) fail(w http.ResponseWriter, r *http.Request, err error) {
	p.a.log.Warn("docker plugin request failed", "path", r.URL.Path, "err", err)
	w.Header().Set("Content-Type", dockerContentType)
	w.WriteHeader(http.StatusInternalServerError)
	json.NewEncoder(w).Encode(struct{ Err string }{WithDiskAdvice(err).Error()})
}

// noteCaller remembers the calling dockerd's --data-root.
func (p *dockerPlugin) noteCaller(r *http.Request) {
	pid, ok := r.Context().Value(peerPIDKey{}).(int)
	if !ok {
		return
	}
	root := dockerDataRoot(pid)
	p.mu.Lock()
	p.dataRoot = root
	p.mu.Unlock()
}

// dockerDataRoot reads --data-root from the command line of process pid;
// Docker's default when it has none.
func dockerDataRoot(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	for i, arg := range args {
		if v, ok := strings.CutPrefix(arg, "--data-root="); ok {
			return v
		}
		if arg == "--data-root" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return "/var/lib/docker"
}

// containerName is the name dockerd gave the container id, read from its
// configuration in the caller's data root; empty when not found.
func (p *dockerPlugin) containerName(id string) string {
	p.mu.Lock()
	root := p.dataRoot
	p.mu.Unlock()
	if root == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(root, "containers", id, "config.v2.json"))
	if err != nil {
		return ""
	}
	var cfg struct{ Name string }
	if json.Unmarshal(b, &cfg) != nil {
		return ""
	}
	return strings.TrimPrefix(cfg.Name, "/")
}
