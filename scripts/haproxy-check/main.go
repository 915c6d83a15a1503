// Command haproxy-check drives three `streamguard serve` replicas behind
// HAProxy configured by deploy/haproxy/haproxy.cfg, and checks stream-affine
// routing end to end: every operation of a stream reaches the replica that
// opened it; when a replica dies, its streams answer 404 stream_lost (in
// OpenAI's error shape) from the replicas that take over its ids, the other
// streams go on where they were, and a lost stream resumed under the same id
// from the conversation so far ("resume": true) gives, from then on, every
// verdict and state a solo run of the same conversation gives.
// scripts/haproxy-check.sh builds the binary and the model and runs it; every
// address it uses is on 127.0.0.1.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"
)

const (
	streamHeader  = "X-Streamguard-Stream"
	replicaHeader = "X-Streamguard-Replica"
)

func main() {
	bin := flag.String("streamguard", "", "streamguard binary")
	model := flag.String("model", "", "model folder (a tiny synthetic one is enough)")
	haproxy := flag.String("haproxy", "haproxy", "haproxy binary")
	cfg := flag.String("config", "deploy/haproxy/haproxy.cfg", "HAProxy configuration under test")
	streams := flag.Int("streams", 12, "streams in each phase")
	flag.Parse()
	if *bin == "" || *model == "" || *streams < 3 {
		fmt.Fprintln(os.Stderr, "usage: haproxy-check --streamguard BIN --model DIR [--haproxy BIN] [--config FILE] [--streams N>=3]")
		os.Exit(2)
	}
	start := time.Now()
	c := &check{bin: *bin, model: *model, client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}}
	err := c.run(*haproxy, *cfg, *streams)
	c.stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "haproxy-check: FAIL:", err)
		c.dumpLogs()
		os.Exit(1)
	}
	fmt.Printf("haproxy-check: ok (%.1f s)\n", time.Since(start).Seconds())
}

type replica struct {
	name, addr string
	cmd        *exec.Cmd
	stderr     *bytes.Buffer
}

type check struct {
	bin, model string
	client     *http.Client
	replicas   []*replica
	proxy      *exec.Cmd
	proxyLog   *bytes.Buffer
	base       string // HAProxy's URL
}

func (c *check) run(haproxy, cfg string, n int) error {
	for i := 1; i <= 3; i++ {
		if err := c.startReplica(fmt.Sprintf("r%d", i)); err != nil {
			return err
		}
	}
	if err := c.startHAProxy(haproxy, cfg); err != nil {
		return err
	}
	addrs := make([]string, len(c.replicas))
	for i, r := range c.replicas {
		addrs[i] = r.name + " " + r.addr
	}
	fmt.Printf("haproxy-check: HAProxy on %s (config %s) in front of %s\n", strings.TrimPrefix(c.base, "http://"), cfg, strings.Join(addrs, ", "))

	// Opening a stream without choosing its id: the replicas run with
	// --require-stream-id, and say so in OpenAI's shape.
	code, _, body, err := c.do("POST", "/v1/streams", "", `{"prompt": "hi"}`)
	if err != nil {
		return err
	}
	if code != http.StatusBadRequest || errorCode(body) != "stream_id_required" {
		return fmt.Errorf("POST /v1/streams without %s: %d %s, want 400 stream_id_required", streamHeader, code, body)
	}

	// Phase 1: every operation of each stream, all through HAProxy.
	owners := map[string]string{}
	perReplica := map[string]int{}
	for i := range n {
		id := newID(fmt.Sprintf("a%02d", i))
		owner, err := c.lifecycle(id)
		if err != nil {
			return err
		}
		owners[id] = owner
		perReplica[owner]++
	}
	if len(perReplica) < 2 {
		return fmt.Errorf("all %d streams were placed on one replica (%v): the header is not being hashed", n, perReplica)
	}
	fmt.Printf("haproxy-check: %d streams, each through create, prompt, append (text), append (ids), flush, get (with and without the header), delete, get after delete: every operation of a stream answered by the replica that opened it (%s)\n",
		n, counts(perReplica))

	// Phase 2: streams left open in their second turn, mid-word, then one
	// replica dies.
	open := make([]string, 0, n)
	placed := map[string]string{}
	before := map[string][]answer{} // each stream's answers to the conversation's first steps
	for i := range n {
		id := newID(fmt.Sprintf("b%02d", i))
		var owner string
		for _, st := range conversation[:cut] {
			by, a, err := c.step(id, st, owner)
			if err != nil {
				return err
			}
			owner = by
			before[id] = append(before[id], a)
		}
		open = append(open, id)
		placed[id] = owner
	}
	victim := c.byName(busiestName(placed))
	var lost, kept []string
	for _, id := range open {
		if placed[id] == victim.name {
			lost = append(lost, id)
		} else {
			kept = append(kept, id)
		}
	}
	if len(kept) == 0 {
		return fmt.Errorf("every open stream is on %s: nothing would survive", victim.name)
	}
	if err := victim.cmd.Process.Kill(); err != nil {
		return err
	}
	victim.cmd.Wait()
	fmt.Printf("haproxy-check: killed %s (SIGKILL) holding %d of %d open streams (%s)\n", victim.name, len(lost), len(open), counts(countOwners(placed)))

	// At once, before HAProxy's health check has noticed: the dead
	// replica's streams are answered 404 stream_lost by a live one.
	takers := map[string]int{}
	for _, id := range lost {
		code, hdr, body, err := c.do("POST", "/v1/streams/"+id+"/append", id, conversation[cut].body)
		if err != nil {
			return err
		}
		if code != http.StatusNotFound {
			return fmt.Errorf("stream %s of the dead replica: %d %s, want 404 stream_lost", id, code, body)
		}
		if err := openAIError(body, "invalid_request_error", "stream_lost"); err != nil {
			return fmt.Errorf("stream %s of the dead replica: %w", id, err)
		}
		by := hdr.Get(replicaHeader)
		if by == "" || by == victim.name {
			return fmt.Errorf("stream %s: 404 answered by %q", id, by)
		}
		takers[by]++
	}
	after := map[string][]answer{} // the kept streams' answers to the rest of the conversation
	for _, id := range kept {
		for _, st := range conversation[cut:] {
			_, a, err := c.step(id, st, placed[id])
			if err != nil {
				return fmt.Errorf("a stream of a live replica after the kill: %w", err)
			}
			after[id] = append(after[id], a)
		}
	}
	fmt.Printf("haproxy-check: its %d streams: 404 stream_lost in OpenAI's shape, answered by %s; the other %d streams went on on their own replicas\n",
		len(lost), counts(takers), len(kept))

	// The reference: the same conversation on one stream that is never
	// interrupted, alone.
	var solo []answer
	soloID := newID("solo")
	soloOwner := ""
	for _, st := range conversation {
		by, a, err := c.step(soloID, st, soloOwner)
		if err != nil {
			return fmt.Errorf("solo run: %w", err)
		}
		soloOwner = by
		solo = append(solo, a)
	}
	if _, err := c.expect(soloID, "DELETE", "/v1/streams/"+soloID, "", http.StatusOK, soloOwner); err != nil {
		return err
	}
	for id, as := range before {
		if err := sameAnswers(as, solo[:cut]); err != nil {
			return fmt.Errorf("stream %s before the kill: %w", id, err)
		}
	}
	for id, as := range after {
		if err := sameAnswers(as, solo[cut:]); err != nil {
			return fmt.Errorf("stream %s of a live replica after the kill: %w", id, err)
		}
	}

	// Recovery: resume each lost stream under its id from the conversation
	// so far; it lands on the replica that now owns the id, stays there,
	// and from the resume on answers what the solo run answered.
	moved := map[string]int{}
	for _, id := range lost {
		owner, a, err := c.step(id, step{"POST", "/v1/streams", resumeBody, http.StatusCreated}, "")
		if err != nil {
			return fmt.Errorf("resuming lost stream: %w", err)
		}
		if owner == victim.name {
			return fmt.Errorf("stream %s resumed on the dead replica", id)
		}
		// The last prompt's verdict, the current response's replayed
		// verdicts (tokens_from 0) and the state: what the lost stream had.
		want := answer{Prompt: solo[cut-2].Prompt, Tokens: solo[cut-1].Tokens, State: solo[cut-1].State}
		if err := sameAnswers([]answer{a}, []answer{want}); err != nil {
			return fmt.Errorf("resumed stream %s: %w", id, err)
		}
		var as []answer
		for _, st := range conversation[cut:] {
			_, a, err := c.step(id, st, owner)
			if err != nil {
				return err
			}
			as = append(as, a)
		}
		if err := sameAnswers(as, solo[cut:]); err != nil {
			return fmt.Errorf("resumed stream %s: %w", id, err)
		}
		placed[id] = owner
		moved[owner]++
	}
	for _, id := range open {
		if _, err := c.expect(id, "GET", "/v1/streams/"+id, "", http.StatusOK, placed[id]); err != nil {
			return err
		}
		if _, err := c.expect(id, "DELETE", "/v1/streams/"+id, "", http.StatusOK, placed[id]); err != nil {
			return err
		}
	}
	fmt.Printf("haproxy-check: the %d lost streams resumed under their ids (%s) from the conversation so far (a flushed first turn, the second cut mid-word) and went on: the resume's prompt verdict, replayed verdicts and state, and every later verdict and state equal a solo run's, bit for bit (so do the %d uninterrupted streams'); all %d streams read and closed on their replicas\n",
		len(lost), counts(moved), len(kept), len(open))
	return nil
}

// step is one request of a stream.
type step struct {
	method, path, body string
	want               int
}

// conversation is what phase 2 sends each stream: two turns, the second
// response cut mid-word at cut (the steps before it are sent before the
// kill, the rest after).
var conversation = []step{
	{"POST", "/v1/streams", `{"prompt": "How do I make tea?"}`, http.StatusCreated},
	{"POST", "/v1/streams/{id}/append", `{"text": "Boil water, then steep.", "flush": true}`, http.StatusOK},
	{"POST", "/v1/streams/{id}/prompt", `{"prompt": "And coffee? Café\u0301 au lait"}`, http.StatusOK},
	{"POST", "/v1/streams/{id}/append", `{"text": "Grind the be"}`, http.StatusOK},
	{"POST", "/v1/streams/{id}/append", `{"text": "ans, then brew 🫘."}`, http.StatusOK},
	{"POST", "/v1/streams/{id}/flush", ``, http.StatusOK},
}

const cut = 4

// resumeBody resumes a stream lost after conversation[:cut]: what it had
// been sent, the held-back "be" included, and the verdicts of the current
// response's tokens.
const resumeBody = `{"resume": true, "prompt": "How do I make tea?",
	"response": {"text": "Boil water, then steep.", "flush": true},
	"turns": [{"prompt": "And coffee? Café\u0301 au lait", "response": {"text": "Grind the be"}}],
	"tokens_from": 0}`

// answer is what a stream request answered: verdicts as the server wrote
// them (float32 values print exactly, so equal text is equal bits) and the
// state without its id.
type answer struct {
	Prompt json.RawMessage            `json:"prompt"`
	Tokens json.RawMessage            `json:"tokens"`
	State  map[string]json.RawMessage `json:"state"`
}

// step sends st for stream id (expecting owner to answer, "" for any) and
// returns the replica that answered and its answer.
func (c *check) step(id string, st step, owner string) (string, answer, error) {
	path := strings.ReplaceAll(st.path, "{id}", id)
	by, raw, err := c.exchange(id, st.method, path, st.body, st.want, owner)
	if err != nil {
		return "", answer{}, err
	}
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		return "", answer{}, fmt.Errorf("%s %s: %w: %s", st.method, path, err, raw)
	}
	if a.State == nil {
		return "", answer{}, fmt.Errorf("%s %s: no state: %s", st.method, path, raw)
	}
	delete(a.State, "id")
	return by, a, nil
}

// sameAnswers compares answers field by field, verdicts byte for byte.
func sameAnswers(got, want []answer) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d answers, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if !bytes.Equal(g.Prompt, w.Prompt) {
			return fmt.Errorf("answer %d: prompt verdict %s, want %s", i, g.Prompt, w.Prompt)
		}
		if !bytes.Equal(g.Tokens, w.Tokens) {
			return fmt.Errorf("answer %d: token verdicts %s, want %s", i, g.Tokens, w.Tokens)
		}
		gs, _ := json.Marshal(g.State)
		ws, _ := json.Marshal(w.State)
		if !bytes.Equal(gs, ws) {
			return fmt.Errorf("answer %d: state %s, want %s", i, gs, ws)
		}
	}
	return nil
}

// lifecycle runs every operation of one stream and returns the replica
// that answered them all.
func (c *check) lifecycle(id string) (string, error) {
	owner, err := c.expect(id, "POST", "/v1/streams", `{"prompt": "How do I make tea?"}`, http.StatusCreated, "")
	if err != nil {
		return "", err
	}
	p := "/v1/streams/" + id
	steps := []struct{ method, path, body string }{
		{"POST", p + "/append", `{"text": "Boil water, then"}`},
		{"POST", p + "/append", `{"ids": [279, 3015]}`},
		{"POST", p + "/flush", ``},
		{"POST", p + "/prompt", `{"prompt": "And coffee?"}`},
		{"POST", p + "/append", `{"text": "Grind the beans.", "flush": true}`},
		{"GET", p, ``},
	}
	for _, s := range steps {
		if _, err := c.expect(id, s.method, s.path, s.body, http.StatusOK, owner); err != nil {
			return "", err
		}
	}
	// Without the header: HAProxy takes the id from the path.
	code, hdr, body, err := c.do("GET", p, "", "")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK || hdr.Get(replicaHeader) != owner || hdr.Get(streamHeader) != id {
		return "", fmt.Errorf("GET %s without the header: %d from %q (stream header %q), want 200 from %s: %s", p, code, hdr.Get(replicaHeader), hdr.Get(streamHeader), owner, body)
	}
	if _, err := c.expect(id, "DELETE", p, "", http.StatusOK, owner); err != nil {
		return "", err
	}
	// Closed: the owner (and only it) answers stream_lost.
	code, hdr, body, err = c.do("GET", p, id, "")
	if err != nil {
		return "", err
	}
	if code != http.StatusNotFound || hdr.Get(replicaHeader) != owner {
		return "", fmt.Errorf("GET %s after delete: %d from %q, want 404 from %s: %s", p, code, hdr.Get(replicaHeader), owner, body)
	}
	if err := openAIError(body, "invalid_request_error", "stream_lost"); err != nil {
		return "", fmt.Errorf("GET %s after delete: %w", p, err)
	}
	return owner, nil
}

// expect sends a request of stream id (with its header) and checks the
// status, that the answer names the stream, and that owner answered it
// ("" for any replica); it returns the replica that answered.
func (c *check) expect(id, method, path, body string, want int, owner string) (string, error) {
	by, _, err := c.exchange(id, method, path, body, want, owner)
	return by, err
}

// exchange is expect returning the answer's body too.
func (c *check) exchange(id, method, path, body string, want int, owner string) (string, []byte, error) {
	code, hdr, raw, err := c.do(method, path, id, body)
	if err != nil {
		return "", nil, err
	}
	by := hdr.Get(replicaHeader)
	switch {
	case code != want:
		return "", nil, fmt.Errorf("%s %s (stream %s): status %d from %q, want %d: %s", method, path, id, code, by, want, raw)
	case by == "":
		return "", nil, fmt.Errorf("%s %s: no %s header", method, path, replicaHeader)
	case owner != "" && by != owner:
		return "", nil, fmt.Errorf("%s %s: answered by %s, but stream %s lives on %s", method, path, by, id, owner)
	case hdr.Get(streamHeader) != id:
		return "", nil, fmt.Errorf("%s %s: %s %q, want %q", method, path, streamHeader, hdr.Get(streamHeader), id)
	}
	if method == "POST" && path == "/v1/streams" {
		var created struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(raw, &created); err != nil || created.ID != id {
			return "", nil, fmt.Errorf("create: id %q, want the chosen %q (%v)", created.ID, id, err)
		}
	}
	return by, raw, nil
}

func (c *check) do(method, path, id, body string) (int, http.Header, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if id != "" {
		req.Header.Set(streamHeader, id)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw, err
}

func errorCode(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(body, &e)
	return e.Error.Code
}

// openAIError checks OpenAI's error shape: exactly message, type, param
// and code.
func openAIError(body []byte, typ, code string) error {
	var e struct {
		Error map[string]json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		return fmt.Errorf("not an OpenAI error: %s", body)
	}
	want := map[string]string{"type": `"` + typ + `"`, "code": `"` + code + `"`, "param": "null"}
	for k, v := range want {
		if string(e.Error[k]) != v {
			return fmt.Errorf("error.%s = %s, want %s: %s", k, e.Error[k], v, body)
		}
	}
	if _, ok := e.Error["message"]; !ok || len(e.Error) != 4 {
		return fmt.Errorf("error keys: want message, type, param, code: %s", body)
	}
	return nil
}

// startReplica starts a replica and waits for it to listen; stop() ends
// it, whatever happens here.
func (c *check) startReplica(name string) error {
	cmd := exec.Command(c.bin, "serve", "--model", c.model, "--addr", "127.0.0.1:0", "--json",
		"--replica-id", name, "--require-stream-id", "--max-stream-tokens", "1024")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	r := &replica{name: name, cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	c.replicas = append(c.replicas, r)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, out)
	}()
	select {
	case line := <-lines:
		var ev struct{ Event, Addr string }
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Event != "listening" {
			return fmt.Errorf("replica %s: first line %q", name, line)
		}
		r.addr = ev.Addr
	case <-time.After(60 * time.Second):
		return fmt.Errorf("replica %s did not start in 60 s", name)
	}
	return nil
}

func (c *check) startHAProxy(bin, cfg string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	bind := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Env = append(os.Environ(), "SG_BIND="+bind)
	for i, r := range c.replicas {
		cmd.Env = append(cmd.Env, fmt.Sprintf("SG_REPLICA_%d=%s", i+1, r.addr))
	}
	c.proxyLog = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = c.proxyLog, c.proxyLog
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("haproxy: %w", err)
	}
	c.proxy = cmd
	c.base = "http://" + bind
	// Ready once requests without an id have reached every replica
	// (round-robin) and HAProxy's checks have seen them all.
	seen := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(seen) < len(c.replicas) {
		if ctx.Err() != nil {
			return errors.New("HAProxy did not reach all three replicas in 30 s")
		}
		code, hdr, _, err := c.do("GET", "/readyz", "", "")
		if err == nil && code == http.StatusOK {
			seen[hdr.Get(replicaHeader)] = true
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(1500 * time.Millisecond) // a round of health checks
	return nil
}

func (c *check) stop() {
	if c.proxy != nil && c.proxy.Process != nil {
		c.proxy.Process.Kill()
		c.proxy.Wait()
	}
	for _, r := range c.replicas {
		if r.cmd.ProcessState == nil {
			r.cmd.Process.Kill()
			r.cmd.Wait()
		}
	}
}

func (c *check) dumpLogs() {
	if c.proxyLog != nil && c.proxyLog.Len() > 0 {
		fmt.Fprintf(os.Stderr, "--- haproxy:\n%s\n", tail(c.proxyLog.String()))
	}
	for _, r := range c.replicas {
		fmt.Fprintf(os.Stderr, "--- replica %s:\n%s\n", r.name, tail(r.stderr.String()))
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

// newID is a client-chosen stream id: a prefix and 128 random bits.
func newID(prefix string) string {
	var b [16]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

func (c *check) byName(name string) *replica {
	for _, r := range c.replicas {
		if r.name == name {
			return r
		}
	}
	return nil
}

func countOwners(placed map[string]string) map[string]int {
	m := map[string]int{}
	for _, o := range placed {
		m[o]++
	}
	return m
}

// busiestName is the replica holding the most streams (ties: the first
// name).
func busiestName(placed map[string]string) string {
	m := countOwners(placed)
	best := ""
	for _, name := range sortedKeys(m) {
		if best == "" || m[name] > m[best] {
			best = name
		}
	}
	return best
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func counts(m map[string]int) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
