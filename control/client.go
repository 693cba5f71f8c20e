package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
)

// Client talks to an agent over its unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the agent at socket.
func NewClient(socket string) *Client {
	return &Client{
		socket: socket,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", socket)
			},
		}},
	}
}

// do sends one request; an error body from the agent becomes the error.
func (c *Client) do(method, path string, body, out any) error {
	resp, err := c.send(method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("read agent reply: %w", err)
	}
	return nil
}

// send sends one request and returns the agent's reply when it is not a
// refusal; the caller closes its body. A body of type []byte is sent as
// it is, anything else as its JSON.
func (c *Client) send(method, path string, body any) (*http.Response, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, "http://pontoon"+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.dialError(err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e apiError
		if json.NewDecoder(resp.Body).Decode(&e) != nil || e.Error == "" {
			return nil, &ReplyError{Status: resp.StatusCode, Message: fmt.Sprintf("agent answered %s", resp.Status)}
		}
		return nil, &ReplyError{Status: resp.StatusCode, Message: e.Error}
	}
	return resp, nil
}

// ReplyError is the agent's refusal of a request: the HTTP status and
// its one-line message, which is all Error says.
type ReplyError struct {
	Status  int
	Message string
}

func (e *ReplyError) Error() string { return e.Message }

// unreachableError is the advice for an agent that does not answer; it
// keeps the cause, and Unreachable tells it from a refusal (the CNI
// plugin answers "try again later" to it).
type unreachableError struct {
	advice string
	cause  error
}

func (e *unreachableError) Error() string { return e.advice }
func (e *unreachableError) Unwrap() error { return e.cause }

// Unreachable says whether err is a client's failure to reach the agent
// at all, as opposed to the agent's answer.
func Unreachable(err error) bool {
	var u *unreachableError
	return errors.As(err, &u)
}

// dialError says what to do when the agent cannot be reached.
func (c *Client) dialError(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return &unreachableError{fmt.Sprintf("the pontoon agent is not running (nothing answers on %s): start it with 'systemctl start pontoon' or 'pontoon agent', or point --socket/PONTOON_SOCKET at its socket", c.socket), err}
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("permission denied on %s: run as root or as a member of the socket's group", c.socket)
	}
	return &unreachableError{fmt.Sprintf("reach the agent on %s: %v", c.socket, err), err}
}

// nameGiven refuses an empty name before it becomes a path that names
// nothing ("/v1/networks/").
func nameGiven(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%s name is empty; give one of the names 'pontoon %s ls' lists", kind, kind)
	}
	return nil
}

func (c *Client) Status() (*Status, error) {
	var s Status
	return &s, c.do("GET", "/v1/status", nil, &s)
}

func (c *Client) CreateNetwork(req NetworkCreate) (*NetworkInfo, error) {
	var n NetworkInfo
	return &n, c.do("POST", "/v1/networks", req, &n)
}

func (c *Client) Networks() ([]*NetworkInfo, error) {
	var ns []*NetworkInfo
	return ns, c.do("GET", "/v1/networks", nil, &ns)
}

func (c *Client) Network(name string) (*NetworkInfo, error) {
	if err := nameGiven("network", name); err != nil {
		return nil, err
	}
	var n NetworkInfo
	return &n, c.do("GET", "/v1/networks/"+url.PathEscape(name), nil, &n)
}

func (c *Client) RemoveNetwork(name string, force bool) error {
	if err := nameGiven("network", name); err != nil {
		return err
	}
	return c.do("DELETE", "/v1/networks/"+url.PathEscape(name)+fmt.Sprintf("?force=%t", force), nil, nil)
}

func (c *Client) Attach(req EndpointAttach) (*Endpoint, error) {
	var e Endpoint
	return &e, c.do("POST", "/v1/endpoints", req, &e)
}

func (c *Client) Endpoints(network string) ([]*Endpoint, error) {
	var es []*Endpoint
	return es, c.do("GET", "/v1/endpoints?network="+url.QueryEscape(network), nil, &es)
}

func (c *Client) Endpoint(name string) (*Endpoint, error) {
	if err := nameGiven("endpoint", name); err != nil {
		return nil, err
	}
	var e Endpoint
	return &e, c.do("GET", "/v1/endpoints/"+url.PathEscape(name), nil, &e)
}

func (c *Client) Detach(name string) error {
	if err := nameGiven("endpoint", name); err != nil {
		return err
	}
	return c.do("DELETE", "/v1/endpoints/"+url.PathEscape(name), nil, nil)
}

// Publish publishes req's specs and returns their mappings. It asks for
// the compact reply and rebuilds the mappings from it and req; an agent
// older than that reply answers with the mappings themselves.
func (c *Client) Publish(req PublishRequest) ([]*PortMapping, error) {
	resp, err := c.send("POST", "/v1/ports?reply=ports", appendPublishRequest(nil, req))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// The compact reply is at most 6 bytes a spec (17 when it lists the
	// binding ids), and some 200 more.
	body, err := readString(resp.Body, 17*len(req.Specs)+512)
	if err != nil {
		return nil, fmt.Errorf("read agent reply: %w", err)
	}
	body = strings.TrimSpace(body)
	// An agent that ignores ?reply=ports sends the array of mappings.
	if strings.HasPrefix(body, "[") {
		var ms []*PortMapping
		if err := json.Unmarshal([]byte(body), &ms); err != nil {
			return nil, fmt.Errorf("read agent reply: %w", err)
		}
		return ms, nil
	}
	var p PublishedPorts
	if !decodePublishedPorts(body, &p) {
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			return nil, fmt.Errorf("read agent reply: %w", err)
		}
	}
	return p.mappings(req)
}

func (c *Client) Unpublish(req UnpublishRequest) ([]*PortMapping, error) {
	var ms []*PortMapping
	return ms, c.do("POST", "/v1/ports/unpublish", req, &ms)
}

func (c *Client) Ports(endpoint string) ([]*PortMapping, error) {
	var ms []*PortMapping
	return ms, c.do("GET", "/v1/ports?endpoint="+url.QueryEscape(endpoint), nil, &ms)
}

// Monitor streams the datapath's events (see MonitorMessage) to fn until
// ctx ends (nil is returned), fn fails, or the agent ends the stream.
func (c *Client) Monitor(ctx context.Context, endpoint string, drops bool, fn func(MonitorMessage) error) error {
	q := url.Values{}
	if endpoint != "" {
		q.Set("endpoint", endpoint)
	}
	if drops {
		q.Set("drops", "true")
	}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://pontoon/v1/monitor?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return c.dialError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e apiError
		if json.NewDecoder(resp.Body).Decode(&e) != nil || e.Error == "" {
			return fmt.Errorf("agent answered %s", resp.Status)
		}
		return errors.New(e.Error)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var m MonitorMessage
		if err := dec.Decode(&m); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return errors.New("the agent ended the event stream (it stopped or restarted): run 'pontoon monitor' again")
			}
			return fmt.Errorf("read events: %w", err)
		}
		if err := fn(m); err != nil {
			return err
		}
	}
}
