package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/jsonkeys"
)

// Config is the tenant file: one entry per tenant.
type Config struct {
	Tenants []TenantConfig `json:"tenants"`
}

// TenantConfig is one tenant of the config file.
type TenantConfig struct {
	Name string `json:"name"`
	// APIKeySHA256 lists the hex SHA-256 of each key the tenant may use
	// (several, so that keys can be rotated). Keys themselves are never
	// stored.
	APIKeySHA256 []string     `json:"api_key_sha256"`
	Policy       PolicyConfig `json:"policy"`
	RateLimit    RateConfig   `json:"rate_limit"`
	// MaxStreams caps the tenant's open streams (0: no cap beyond the
	// KV-cache budget).
	MaxStreams int `json:"max_streams"`
	// MaxConns caps the tenant's busy connections: requests in progress
	// (a slow client's included, from its header on) and duplex
	// connections (0: no cap beyond the server's --max-conns).
	MaxConns int `json:"max_conns"`
	// LogContent puts prompt and token text into the audit log.
	LogContent bool        `json:"log_content"`
	Proxy      ProxyConfig `json:"proxy"`
}

// PolicyConfig is a guard.Policy in the config file.
type PolicyConfig struct {
	Mode       string             `json:"mode"` // "strict" (default) or "loose"
	Debounce   int                `json:"debounce"`
	Thresholds map[string]float32 `json:"thresholds"`
	Block      []string           `json:"block"`
	// EveryTurn judges every user turn of a conversation, not only the
	// last (guard.Policy.EveryTurn): for clients that write the history.
	EveryTurn bool `json:"every_turn"`
}

// RateConfig is a token bucket over requests (a duplex connection's
// operations count one each).
type RateConfig struct {
	RequestsPerSecond float64 `json:"requests_per_second"`
	Burst             int     `json:"burst"`
}

// ProxyConfig is the tenant's setting for the chat-completions proxy
// (serve --upstream).
type ProxyConfig struct {
	Mode           string `json:"mode"` // "hold-back" (default) or "pass-through"
	Lookahead      int    `json:"lookahead"`
	FailOpen       bool   `json:"fail_open"`
	UpstreamKey    string `json:"upstream_key"`
	Refusal        string `json:"refusal"` // "error" (default) or "completion"
	RefusalMessage string `json:"refusal_message"`
	// TrimLongPrompt judges a conversation too long for the guard by its
	// system turn and last user turn alone, instead of refusing it 400
	// context_length_exceeded.
	TrimLongPrompt bool `json:"trim_long_prompt"`
}

// maxConfigBytes bounds the tenant file.
const maxConfigBytes = 16 << 20

// LoadConfig reads and checks a tenant file.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxConfigBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxConfigBytes)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses a tenant file and checks what can be checked without
// a model: names, key hashes, limits, modes. Policies are checked against
// the model's labels by NewTenants.
func ParseConfig(b []byte) (*Config, error) {
	// DisallowUnknownFields does not see a key that matches a field only
	// when case is ignored, nor a repeated key: encoding/json would fill
	// log_content from "LOG_CONTENT", or keep the last of two, silently.
	if err := jsonkeys.Check(b, &Config{}); err != nil {
		return nil, fmt.Errorf("tenant config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("tenant config: %w", err)
	}
	if dec.More() {
		return nil, errors.New("tenant config: data after the JSON object")
	}
	if len(c.Tenants) == 0 {
		return nil, errors.New("tenant config: no tenants")
	}
	names := map[string]bool{}
	hashes := map[string]string{}
	for i, t := range c.Tenants {
		where := fmt.Sprintf("tenants[%d]", i)
		if t.Name != "" {
			where += fmt.Sprintf(" (%q)", t.Name)
		}
		switch {
		case t.Name == "":
			return nil, fmt.Errorf("%s: name is empty", where)
		case names[t.Name]:
			return nil, fmt.Errorf("%s: duplicate tenant name", where)
		case t.Name == "-":
			return nil, fmt.Errorf("%s: the name \"-\" stands for unauthenticated requests in /metrics and the audit log; choose another", where)
		case len(t.APIKeySHA256) == 0:
			return nil, fmt.Errorf("%s: api_key_sha256 is empty: the tenant could never authenticate", where)
		case t.MaxStreams < 0:
			return nil, fmt.Errorf("%s: max_streams %d is negative", where, t.MaxStreams)
		case t.MaxConns < 0:
			return nil, fmt.Errorf("%s: max_conns %d is negative", where, t.MaxConns)
		case t.RateLimit.RequestsPerSecond < 0 || t.RateLimit.Burst < 0:
			return nil, fmt.Errorf("%s: rate_limit must not be negative", where)
		case t.RateLimit.Burst > 0 && t.RateLimit.RequestsPerSecond == 0:
			return nil, fmt.Errorf("%s: rate_limit.burst %d without requests_per_second would limit nothing; give both", where, t.RateLimit.Burst)
		case t.Policy.Debounce < 0:
			return nil, fmt.Errorf("%s: policy.debounce %d is negative", where, t.Policy.Debounce)
		}
		names[t.Name] = true
		for j, h := range t.APIKeySHA256 {
			raw, err := hex.DecodeString(h)
			if err != nil || len(raw) != sha256.Size {
				return nil, fmt.Errorf("%s: api_key_sha256[%d] is not 64 hex digits (store the SHA-256 of the key, not the key)", where, j)
			}
			norm := strings.ToLower(h)
			if norm == emptyKeyHash {
				return nil, fmt.Errorf("%s: api_key_sha256[%d] is the SHA-256 of an empty key (an unset variable?), which never authenticates", where, j)
			}
			if other, dup := hashes[norm]; dup {
				return nil, fmt.Errorf("%s: api_key_sha256[%d] is also a key of tenant %q", where, j, other)
			}
			hashes[norm] = t.Name
		}
		if t.Policy.Mode != "" {
			if _, err := guard.ParseMode(t.Policy.Mode); err != nil {
				return nil, fmt.Errorf("%s: policy.%w", where, err)
			}
		}
		switch t.Proxy.Mode {
		case "", "hold-back", "pass-through":
		default:
			return nil, fmt.Errorf("%s: proxy.mode %q: want hold-back or pass-through", where, t.Proxy.Mode)
		}
		switch t.Proxy.Refusal {
		case "", "error", "completion":
		default:
			return nil, fmt.Errorf("%s: proxy.refusal %q: want error or completion", where, t.Proxy.Refusal)
		}
		if t.Proxy.Lookahead < 0 {
			return nil, fmt.Errorf("%s: proxy.lookahead %d is negative", where, t.Proxy.Lookahead)
		}
	}
	return &c, nil
}

// emptyKeyHash is HashKey(""): authenticate refuses an empty key.
var emptyKeyHash = HashKey("")

// Tenant is a tenant at run time.
type Tenant struct {
	Name       string
	Policy     guard.Policy
	MaxStreams int
	MaxConns   int
	LogContent bool
	Proxy      ProxyConfig

	keys    [][sha256.Size]byte
	limiter *rateLimiter
	open    atomic.Int64 // open streams
	conns   atomic.Int64 // busy connections
}

// tenants authenticates requests.
type tenants struct {
	list []*Tenant
	// open is the tenant every request gets when no config was given.
	open *Tenant
}

// newTenants builds the run-time tenants, checking each policy against
// the model's labels. cfg nil means one tenant, "default", that needs no
// key and uses the model's default policy.
func newTenants(cfg *Config, m *guard.Model) (*tenants, error) {
	if cfg == nil {
		return &tenants{open: &Tenant{Name: "default", Policy: m.Policy()}}, nil
	}
	ts := &tenants{}
	for i, tc := range cfg.Tenants {
		p, err := tc.Policy.policy()
		if err != nil {
			return nil, fmt.Errorf("tenants[%d] (%q): %w", i, tc.Name, err)
		}
		probe := m.NewStream() // allocates no cache until tokens arrive
		err = probe.SetPolicy(p)
		probe.Close()
		if err != nil {
			return nil, fmt.Errorf("tenants[%d] (%q): %w (labels come from the model's config.json)", i, tc.Name, err)
		}
		t := &Tenant{Name: tc.Name, Policy: p, MaxStreams: tc.MaxStreams, MaxConns: tc.MaxConns, LogContent: tc.LogContent, Proxy: tc.Proxy,
			limiter: newRateLimiter(tc.RateLimit.RequestsPerSecond, tc.RateLimit.Burst)}
		for _, h := range tc.APIKeySHA256 {
			var k [sha256.Size]byte
			hex.Decode(k[:], []byte(h)) // checked by ParseConfig
			t.keys = append(t.keys, k)
		}
		ts.list = append(ts.list, t)
	}
	return ts, nil
}

func (pc PolicyConfig) policy() (guard.Policy, error) {
	p := guard.Policy{Debounce: pc.Debounce, Thresholds: pc.Thresholds, Block: pc.Block, EveryTurn: pc.EveryTurn}
	if pc.Mode != "" {
		m, err := guard.ParseMode(pc.Mode)
		if err != nil {
			return p, err
		}
		p.Mode = m
	}
	return p, nil
}

// authenticate returns the tenant whose key hashes to the same value as
// key, or nil. Every stored hash is compared, in constant time, whatever
// matches, so that timing reveals neither which tenant nor how much of a
// hash matched.
func (ts *tenants) authenticate(key string) *Tenant {
	if ts.open != nil {
		return ts.open
	}
	if key == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(key))
	var found *Tenant
	for _, t := range ts.list {
		for i := range t.keys {
			if subtle.ConstantTimeCompare(sum[:], t.keys[i][:]) == 1 {
				found = t
			}
		}
	}
	return found
}

// all lists the tenants (the open one when there is no config).
func (ts *tenants) all() []*Tenant {
	if ts.open != nil {
		return []*Tenant{ts.open}
	}
	return ts.list
}

// HashKey returns the hex SHA-256 of an API key, the form the tenant file
// stores.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
