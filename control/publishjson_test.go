package control

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// readPublish reads body as the agent reads a POST /v1/ports.
func readPublish(body string) (PublishRequest, error) {
	r := httptest.NewRequest("POST", "/v1/ports", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	var req PublishRequest
	err := readJSON(httptest.NewRecorder(), r, &req)
	return req, err
}

// TestPublishRequestBadInput: every publish body the one-pass reader does
// not take gets strictUnmarshal's one-line refusal, the same as before it.
func TestPublishRequestBadInput(t *testing.T) {
	for _, c := range []struct{ name, body, want string }{
		{"unknown key", `{"endpoint":"web","specs":["80"],"spec":"80"}`, `request body: unknown key "spec"; known keys are allow_from, endpoint, specs`},
		{"case-folded key", `{"endpoint":"web","Specs":["80"]}`, `request body: key "Specs" is spelled "specs"; keys are case-sensitive`},
		{"escaped case-folded key", `{"\u0045ndpoint":"web"}`, `request body: key "Endpoint" is spelled "endpoint"; keys are case-sensitive`},
		{"trailing data", `{"endpoint":"web","specs":["80"]} x`, "request body has data after the JSON object, which ends at byte 33; send exactly one object"},
		{"second object", `{"specs":["80"]}{}`, "request body has data after the JSON object, which ends at byte 16; send exactly one object"},
		{"specs a string", `{"endpoint":"web","specs":"80"}`, `request body: key "specs" wants an array, not a JSON string`},
		{"spec a number", `{"endpoint":"web","specs":["80",81]}`, `request body: key "specs" wants a string, not a JSON number`},
		{"spec an object", `{"specs":[{}]}`, `request body: key "specs" wants a string, not a JSON object`},
		{"endpoint an array", `{"endpoint":["web"]}`, `request body: key "endpoint" wants a string, not a JSON array`},
		{"endpoint true", `{"endpoint":true}`, `request body: key "endpoint" wants a string, not a JSON bool`},
		{"allow_from a number", `{"allow_from":[10]}`, `request body: key "allow_from" wants a string, not a JSON number`},
		{"trailing comma in array", `{"specs":["80",]}`, "request body is not valid JSON: invalid character ']' looking for beginning of value; send one JSON object"},
		{"trailing comma in object", `{"specs":["80"],}`, "request body is not valid JSON: invalid character '}' looking for beginning of object key string; send one JSON object"},
		{"missing colon", `{"specs" ["80"]}`, "request body is not valid JSON: invalid character '[' after object key; send one JSON object"},
		{"unquoted spec", `{"specs":[80/tcp]}`, "request body is not valid JSON: invalid character '/' after array element; send one JSON object"},
		{"control character", "{\"endpoint\":\"w\teb\"}", "request body is not valid JSON: invalid character '\\t' in string literal; send one JSON object"},
		{"bad escape", `{"endpoint":"w\qeb"}`, "request body is not valid JSON: invalid character 'q' in string escape code; send one JSON object"},
		{"cut in a spec", `{"specs":["80`, "request body is not valid JSON: it ends in the middle of a value; send one JSON object"},
		{"cut after a spec", `{"specs":["80"]`, "request body is not valid JSON: it ends in the middle of a value; send one JSON object"},
		{"array", `["80"]`, "request body is a JSON array, not an object; send one JSON object"},
		{"string", `"80"`, "request body is a JSON string, not an object; send one JSON object"},
		{"white space only", " \n\t", "request body is empty; send one JSON object"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var fast PublishRequest
			if decodePublishRequest(c.body, &fast) {
				t.Fatalf("the one-pass reader took %q as %+v", c.body, fast)
			}
			_, err := readPublish(c.body)
			if err == nil || err.Error() != c.want {
				t.Fatalf("read %s:\ngot  %v\nwant %s", c.body, err, c.want)
			}
		})
	}
}

// TestPublishRequestOddButValid: bodies the one-pass reader leaves to
// encoding/json (escapes, null, repeated keys, non-ASCII) still read as
// encoding/json reads them.
func TestPublishRequestOddButValid(t *testing.T) {
	for _, c := range []struct {
		name, body string
		want       PublishRequest
	}{
		{"escaped spec", `{"endpoint":"web","specs":["80\/tcp"]}`, PublishRequest{Endpoint: "web", Specs: []string{"80/tcp"}}},
		{"escaped key", `{"\u0065ndpoint":"web"}`, PublishRequest{Endpoint: "web"}},
		{"null specs twice", `{"endpoint":"web","specs":null,"specs":null}`, PublishRequest{Endpoint: "web"}},
		{"null endpoint", `{"endpoint":null,"specs":[]}`, PublishRequest{Specs: []string{}}},
		{"repeated key", `{"endpoint":"a","endpoint":"b"}`, PublishRequest{Endpoint: "b"}},
		{"repeated specs", `{"specs":["1","2"],"specs":["3"]}`, PublishRequest{Specs: []string{"3"}}},
		{"non-ASCII endpoint", `{"endpoint":"wéb"}`, PublishRequest{Endpoint: "wéb"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := readPublish(c.body)
			if err != nil || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("read %s: %+v, %v; want %+v", c.body, got, err, c.want)
			}
		})
	}
}

// TestPublishRequestPlainInOnePass: what the client sends, white space
// around it or not, is read by the one-pass reader, as encoding/json
// reads it ([] as an empty slice, a missing key as nil).
func TestPublishRequestPlainInOnePass(t *testing.T) {
	for _, req := range []PublishRequest{
		mixedPublish,
		{Endpoint: "web", Specs: []string{}},
		{},
		{Endpoint: "", Specs: []string{"8080:80/tcp"}, AllowFrom: []string{"10.0.0.0/8"}},
	} {
		for _, body := range [][]byte{appendPublishRequest(nil, req), []byte(" \n{ \"specs\" : [ \"80\" , \"90\" ] , \"endpoint\" :\"web\"}\r\n")} {
			var fast, slow PublishRequest
			if !decodePublishRequest(string(body), &fast) {
				t.Fatalf("the one-pass reader refused %s", body)
			}
			if err := strictUnmarshal(body, &slow); err != nil || !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%s: one pass read %#v, encoding/json %#v (%v)", body, fast, slow, err)
			}
		}
	}
}

// FuzzDecodePublishRequest: whatever the one-pass reader takes,
// strictUnmarshal takes too and reads the same.
func FuzzDecodePublishRequest(f *testing.F) {
	for _, s := range []string{
		`{"endpoint":"web","specs":["8080:80/tcp","90/udp"],"allow_from":["10.0.0.0/8"]}`,
		`{"specs":[]}`, `{}`, ` {"endpoint":"a"} `, `{"endpoint":"a","endpoint":"b"}`,
		`{"specs":["80",]}`, `{"specs":[1]}`, `{"Specs":["1"]}`, `{"specs":["1"]}x`, `{"specs":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fast, slow PublishRequest
		if !decodePublishRequest(string(body), &fast) {
			if !reflect.DeepEqual(fast, PublishRequest{}) {
				t.Fatalf("refused %q but wrote %#v", body, fast)
			}
			return
		}
		if err := strictUnmarshal(body, &slow); err != nil || !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: one pass read %#v, strictUnmarshal %#v (%v)", body, fast, slow, err)
		}
	})
}

// FuzzDecodePublishedPorts: whatever compact reply the one-pass reader
// takes, encoding/json takes too and reads the same.
func FuzzDecodePublishedPorts(f *testing.F) {
	p := PublishedPorts{Endpoint: "web", FirstID: 7, EndpointIP: netip.MustParseAddr("10.88.0.2"), EndpointIPv6: netip.MustParseAddr("fd00::2"), HostPorts: []uint16{8080, 0, 65535}}
	full, _ := json.Marshal(p)
	for _, s := range []string{
		string(full), `{"host_ports":[]}`, `{"first_id":4294967295}`, `{"first_id":4294967296}`,
		`{"host_ports":[65536]}`, `{"host_ports":[01]}`, `{"host_ports":[-1]}`, `{"host_ports":[1.0]}`,
		`{"endpoint_ip":"10.0.0.300"}`, `{"endpoint_ip":""}`, `{"first_id":1e3}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fast, slow PublishedPorts
		if !decodePublishedPorts(string(body), &fast) {
			return
		}
		if err := json.Unmarshal(body, &slow); err != nil || !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: one pass read %#v, encoding/json %#v (%v)", body, fast, slow, err)
		}
	})
}

// TestPublishedPortsInOnePass: the agent's compact reply is read by the
// one-pass reader, as encoding/json reads it.
func TestPublishedPortsInOnePass(t *testing.T) {
	for _, p := range []PublishedPorts{
		{Endpoint: "web", FirstID: 1, EndpointIP: netip.MustParseAddr("10.88.0.2"), HostPorts: []uint16{8080, 61000, 9000}},
		{Endpoint: "web", FirstID: 4294967295, EndpointIP: netip.MustParseAddr("10.88.0.2"), EndpointIPv6: netip.MustParseAddr("fd00::2"), HostPorts: []uint16{1, 65535}},
		{HostPorts: []uint16{}},
	} {
		var buf bytes.Buffer
		json.NewEncoder(&buf).Encode(p) // as the agent's reply writes it
		var fast, slow PublishedPorts
		if !decodePublishedPorts(buf.String(), &fast) {
			t.Fatalf("the one-pass reader refused %s", buf.Bytes())
		}
		if err := json.Unmarshal(buf.Bytes(), &slow); err != nil || !reflect.DeepEqual(fast, slow) || !reflect.DeepEqual(fast, p) {
			t.Fatalf("%s: one pass read %#v, encoding/json %#v (%v)", buf.Bytes(), fast, slow, err)
		}
	}
}

// FuzzAppendPublishRequest: the client writes a publish request byte for
// byte as json.Marshal does.
func FuzzAppendPublishRequest(f *testing.F) {
	f.Add("web", "8080:80/tcp", "90", "10.0.0.0/8", true, true)
	f.Add("w\"e<b>&\u2028", "\x00", "é\xff", "", false, false)
	f.Fuzz(func(t *testing.T, endpoint, spec1, spec2, allow string, hasSpecs, hasAllow bool) {
		req := PublishRequest{Endpoint: endpoint}
		if hasSpecs {
			req.Specs = []string{spec1, spec2}
		}
		if hasAllow {
			req.AllowFrom = []string{allow}
		}
		want, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendPublishRequest(nil, req); !bytes.Equal(got, want) {
			t.Fatalf("wrote %s\njson.Marshal writes %s", got, want)
		}
	})
}
