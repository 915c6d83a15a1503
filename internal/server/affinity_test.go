package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// affinityDo sends a request with headers hdr (key-a's key unless hdr
// sets Authorization) and returns the status, the response headers and
// the body.
func affinityDo(t *testing.T, h *harness, method, path string, hdr map[string][]string, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, raw
}

// wantAPIError checks an error body: OpenAI's shape, with exactly the
// keys message, type, param and code, and the given type, code and param
// ("" for null).
func wantAPIError(t *testing.T, what string, raw []byte, typ, code, param string) {
	t.Helper()
	var e struct {
		Error map[string]json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(raw, &e); err != nil || e.Error == nil {
		t.Fatalf("%s: body %q is not an OpenAI error: %v", what, raw, err)
	}
	wantParam := "null"
	if param != "" {
		wantParam = `"` + param + `"`
	}
	want := map[string]string{"type": `"` + typ + `"`, "code": `"` + code + `"`, "param": wantParam}
	for k, v := range want {
		if got := string(e.Error[k]); got != v {
			t.Errorf("%s: error.%s = %s, want %s (body %s)", what, k, got, v, raw)
		}
	}
	var msg string
	if err := json.Unmarshal(e.Error["message"], &msg); err != nil || msg == "" {
		t.Errorf("%s: error.message missing or empty (body %s)", what, raw)
	}
	if len(e.Error) != 4 {
		t.Errorf("%s: error has keys %d, want message, type, param, code (body %s)", what, len(e.Error), raw)
	}
}

func streamHdr(id string) map[string][]string {
	return map[string][]string{StreamHeader: {id}}
}

// TestStreamAffinity: a client-chosen id opens the stream, every response
// of the stream names it and the replica, and every operation works with
// the header, without it, and refuses a header naming another stream.
func TestStreamAffinity(t *testing.T) {
	h := newHarness(t, Options{ReplicaID: "replica-7"})
	const id = "conv-42_A"
	code, hdr, raw := affinityDo(t, h, "POST", "/v1/streams", streamHdr(id), `{"prompt": "How do I make tea?"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: status %d %s", code, raw)
	}
	var created streamResponse
	if err := json.Unmarshal(raw, &created); err != nil {
		t.Fatal(err)
	}
	if created.ID != id || created.State.ID != id || created.Prompt == nil {
		t.Fatalf("create: id %q, state id %q, prompt %v; want the chosen id %q and a prompt verdict", created.ID, created.State.ID, created.Prompt, id)
	}
	if got := hdr.Get(StreamHeader); got != id {
		t.Errorf("create: %s = %q, want %q", StreamHeader, got, id)
	}
	if got := hdr.Get(ReplicaHeader); got != "replica-7" {
		t.Errorf("create: %s = %q, want replica-7", ReplicaHeader, got)
	}

	ops := []struct {
		method, path, body string
		code               int
	}{
		{"POST", "/append", `{"text": "Boil water, then"}`, 200},
		{"POST", "/prompt", `{"prompt": "And coffee?"}`, 200},
		{"POST", "/append", `{"text": " grind the beans"}`, 200},
		{"POST", "/flush", ``, 200},
		{"GET", "", ``, 200},
	}
	for _, withHeader := range []bool{true, false} {
		for _, op := range ops {
			var sent map[string][]string
			if withHeader {
				sent = streamHdr(id)
			}
			code, hdr, raw := affinityDo(t, h, op.method, "/v1/streams/"+id+op.path, sent, op.body)
			if code != op.code {
				t.Fatalf("%s %s (header %v): status %d %s", op.method, op.path, withHeader, code, raw)
			}
			var resp streamResponse
			if err := json.Unmarshal(raw, &resp); err != nil || resp.ID != id {
				t.Fatalf("%s %s: id %q (%v), want %q", op.method, op.path, resp.ID, err, id)
			}
			if hdr.Get(StreamHeader) != id || hdr.Get(ReplicaHeader) != "replica-7" {
				t.Errorf("%s %s (header %v): %s %q, %s %q", op.method, op.path, withHeader,
					StreamHeader, hdr.Get(StreamHeader), ReplicaHeader, hdr.Get(ReplicaHeader))
			}
		}
	}

	// A header naming another stream is refused before anything runs.
	_, _, before := affinityDo(t, h, "GET", "/v1/streams/"+id, nil, "")
	for _, sent := range []map[string][]string{streamHdr("conv-43"), {StreamHeader: {id, id}}} {
		code, hdr, raw = affinityDo(t, h, "POST", "/v1/streams/"+id+"/append", sent, `{"text": " more"}`)
		if code != http.StatusBadRequest {
			t.Fatalf("mismatched header %v: status %d %s", sent, code, raw)
		}
		wantAPIError(t, "mismatched header", raw, "invalid_request_error", "stream_id_mismatch", StreamHeader)
		if hdr.Get(StreamHeader) != "" {
			t.Errorf("mismatched header: the answer names stream %q", hdr.Get(StreamHeader))
		}
	}
	_, _, after := affinityDo(t, h, "GET", "/v1/streams/"+id, nil, "")
	if string(before) != string(after) {
		t.Errorf("a refused append changed the stream:\nbefore %s\nafter  %s", before, after)
	}

	code, hdr, raw = affinityDo(t, h, "DELETE", "/v1/streams/"+id, streamHdr(id), "")
	if code != 200 || hdr.Get(StreamHeader) != id {
		t.Fatalf("delete: status %d, header %q: %s", code, hdr.Get(StreamHeader), raw)
	}
	// Closed: this replica holds it no more.
	code, hdr, raw = affinityDo(t, h, "GET", "/v1/streams/"+id, streamHdr(id), "")
	if code != http.StatusNotFound {
		t.Fatalf("get after delete: status %d %s", code, raw)
	}
	wantAPIError(t, "get after delete", raw, "invalid_request_error", "stream_lost", "")
	if hdr.Get(StreamHeader) != id || hdr.Get(ReplicaHeader) != "replica-7" {
		t.Errorf("stream_lost answer: %s %q, %s %q", StreamHeader, hdr.Get(StreamHeader), ReplicaHeader, hdr.Get(ReplicaHeader))
	}
	// The id is free again: the client recovers by opening it anew.
	if code, _, raw := affinityDo(t, h, "POST", "/v1/streams", streamHdr(id), `{"prompt": "How do I make tea?"}`); code != http.StatusCreated {
		t.Fatalf("re-open after delete: status %d %s", code, raw)
	}
}

// TestStreamLostEveryRoute: every operation on an id the replica does not
// hold answers 404 stream_lost in OpenAI's shape.
func TestStreamLostEveryRoute(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil)})
	keyA := map[string][]string{"Authorization": {"Bearer key-a"}}
	keyB := map[string][]string{"Authorization": {"Bearer key-b"}}
	code, _, raw := affinityDo(t, h, "POST", "/v1/streams", map[string][]string{"Authorization": {"Bearer key-a"}, StreamHeader: {"owned-by-a"}}, `{"prompt": "hi"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: status %d %s", code, raw)
	}
	for _, c := range []struct {
		who        map[string][]string
		id         string
		method, op string
	}{
		{keyA, "never-opened", "GET", ""}, {keyA, "never-opened", "POST", "/append"}, {keyA, "never-opened", "POST", "/flush"},
		{keyA, "never-opened", "POST", "/prompt"}, {keyA, "never-opened", "DELETE", ""},
		// Another tenant's stream is answered like an unknown one.
		{keyB, "owned-by-a", "GET", ""}, {keyB, "owned-by-a", "POST", "/append"}, {keyB, "owned-by-a", "DELETE", ""},
	} {
		code, _, raw := affinityDo(t, h, c.method, "/v1/streams/"+c.id+c.op, c.who, `{"text": "x", "prompt": "y"}`)
		if code != http.StatusNotFound {
			t.Fatalf("%s %s%s: status %d %s", c.method, c.id, c.op, code, raw)
		}
		wantAPIError(t, c.method+" "+c.id+c.op, raw, "invalid_request_error", "stream_lost", "")
	}
}

// TestChosenStreamIDs: what a client may choose, and a chosen id is
// opened at most once at a time.
func TestChosenStreamIDs(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil)})
	auth := func(key string, ids ...string) map[string][]string {
		m := map[string][]string{"Authorization": {"Bearer " + key}}
		if len(ids) > 0 {
			m[StreamHeader] = ids
		}
		return m
	}
	for _, bad := range [][]string{{strings.Repeat("a", MaxStreamIDLen+1)}, {"a/b"}, {"a b"}, {"a.b"}, {"ü"}, {"a", "b"}} {
		code, hdr, raw := affinityDo(t, h, "POST", "/v1/streams", auth("key-a", bad...), `{"prompt": "hi"}`)
		if code != http.StatusBadRequest {
			t.Fatalf("id %q: status %d %s", bad, code, raw)
		}
		wantAPIError(t, "bad id", raw, "invalid_request_error", "invalid_stream_id", StreamHeader)
		if hdr.Get(StreamHeader) != "" {
			t.Errorf("id %q: answer names stream %q", bad, hdr.Get(StreamHeader))
		}
	}
	longest := strings.Repeat("Z9_-", MaxStreamIDLen/4)
	if code, hdr, raw := affinityDo(t, h, "POST", "/v1/streams", auth("key-a", longest), `{"prompt": "hi"}`); code != 201 || hdr.Get(StreamHeader) != longest {
		t.Fatalf("64-character id: status %d, header %q: %s", code, hdr.Get(StreamHeader), raw)
	}
	// Open already: refused for its tenant.
	code, hdr, raw := affinityDo(t, h, "POST", "/v1/streams", auth("key-a", longest), `{"prompt": "hi"}`)
	if code != http.StatusConflict {
		t.Fatalf("re-opening an open id: status %d %s", code, raw)
	}
	wantAPIError(t, "open id", raw, "invalid_request_error", "stream_exists", StreamHeader)
	if hdr.Get(StreamHeader) != longest {
		t.Errorf("conflict answer names %q, want the chosen id", hdr.Get(StreamHeader))
	}
	// Another tenant's id space is its own: the same id opens a second,
	// separate stream, so no tenant learns which ids another holds.
	if code, _, raw := affinityDo(t, h, "POST", "/v1/streams", auth("key-b", longest), `{"prompt": "hi"}`); code != 201 {
		t.Fatalf("tenant b opening an id tenant a holds: status %d %s", code, raw)
	}
	if code, _, raw := affinityDo(t, h, "DELETE", "/v1/streams/"+longest, auth("key-b"), ``); code != 200 {
		t.Fatalf("tenant b closing its stream: status %d %s", code, raw)
	}
	// Many clients choosing one id at once: exactly one opens it.
	const n = 8
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() {
			codes[i], _, _ = affinityDo(t, h, "POST", "/v1/streams", auth("key-b", "race"), `{"prompt": "hi"}`)
		})
	}
	wg.Wait()
	created, conflicts := 0, 0
	for _, c := range codes {
		switch c {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
			conflicts++
		}
	}
	if created != 1 || conflicts != n-1 {
		t.Fatalf("concurrent opens of one id: statuses %v, want one 201 and %d 409", codes, n-1)
	}
}

// TestServerChosenStreamID: without the header the server picks the id
// and names it in the header too, except on an error (no stream exists);
// RequireStreamID refuses such a request.
func TestServerChosenStreamID(t *testing.T) {
	h := newHarness(t, Options{})
	code, hdr, raw := affinityDo(t, h, "POST", "/v1/streams", nil, `{"prompt": "hi"}`)
	var created streamResponse
	if code != 201 || json.Unmarshal(raw, &created) != nil {
		t.Fatalf("create: status %d %s", code, raw)
	}
	if len(created.ID) != 32 || hdr.Get(StreamHeader) != created.ID {
		t.Fatalf("server-chosen id %q, header %q: want 32 hex digits, the same in both", created.ID, hdr.Get(StreamHeader))
	}
	if hdr.Get(ReplicaHeader) != "" {
		t.Errorf("no ReplicaID, yet %s = %q", ReplicaHeader, hdr.Get(ReplicaHeader))
	}
	code, hdr, raw = affinityDo(t, h, "POST", "/v1/streams", nil, `{"prompt": ""}`)
	if code != http.StatusBadRequest || hdr.Get(StreamHeader) != "" {
		t.Fatalf("failed create: status %d, header %q: %s", code, hdr.Get(StreamHeader), raw)
	}

	hr := newHarness(t, Options{RequireStreamID: true, ReplicaID: "r2"})
	code, hdr, raw = affinityDo(t, hr, "POST", "/v1/streams", nil, `{"prompt": "hi"}`)
	if code != http.StatusBadRequest {
		t.Fatalf("RequireStreamID without header: status %d %s", code, raw)
	}
	wantAPIError(t, "RequireStreamID", raw, "invalid_request_error", "stream_id_required", StreamHeader)
	if hdr.Get(ReplicaHeader) != "r2" {
		t.Errorf("error answer: %s = %q, want r2", ReplicaHeader, hdr.Get(ReplicaHeader))
	}
	if code, _, raw := affinityDo(t, hr, "POST", "/v1/streams", streamHdr("client-id"), `{"prompt": "hi"}`); code != 201 {
		t.Fatalf("RequireStreamID with header: status %d %s", code, raw)
	}
	// Every response names the replica, unknown routes and probes too.
	for _, p := range []string{"/healthz", "/readyz", "/nowhere"} {
		if _, hdr, _ := affinityDo(t, hr, "GET", p, nil, ""); hdr.Get(ReplicaHeader) != "r2" {
			t.Errorf("GET %s: %s = %q, want r2", p, ReplicaHeader, hdr.Get(ReplicaHeader))
		}
	}
}

func TestValidStreamID(t *testing.T) {
	for id, want := range map[string]bool{
		"": false, "a": true, "0f8a6c1e2b9d4c7a8e3f5b1d2c4a6e80": true, "conv_1-A": true,
		strings.Repeat("x", 64): true, strings.Repeat("x", 65): false,
		"a/b": false, "a b": false, "a\nb": false, "a%2F": false, "é": false, "a:b": false, "a.b": false,
	} {
		if got := ValidStreamID(id); got != want {
			t.Errorf("ValidStreamID(%q) = %v, want %v", id, got, want)
		}
	}
}
