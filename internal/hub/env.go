package hub

import (
	"os"
	"path/filepath"
	"strings"
)

// DefaultEndpoint is the hub used when HF_ENDPOINT is not set.
const DefaultEndpoint = "https://huggingface.co"

// Env is the configuration huggingface_hub reads from the environment,
// read the same way so that both use the same cache, hub and token.
type Env struct {
	// Endpoint is HF_ENDPOINT without a trailing '/'.
	Endpoint string
	// Token is HF_TOKEN (or the legacy HUGGING_FACE_HUB_TOKEN), else the
	// token file written by `hf auth login` ($HF_TOKEN_PATH, default
	// $HF_HOME/token). Empty means anonymous.
	Token string
	// CacheDir is HF_HUB_CACHE (or the legacy HUGGINGFACE_HUB_CACHE),
	// default $HF_HOME/hub; HF_HOME defaults to $XDG_CACHE_HOME/huggingface,
	// then ~/.cache/huggingface.
	CacheDir string
	// Offline is HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to 1, ON,
	// YES or TRUE: no network, the cache only.
	Offline bool
}

// EnvFromOS reads Env from the process environment.
func EnvFromOS() Env {
	home, _ := os.UserHomeDir()
	return EnvFrom(os.Getenv, home, os.ReadFile)
}

// EnvFrom reads Env through getenv, with home as the user's home folder and
// readFile to read the token file (injected for tests).
func EnvFrom(getenv func(string) string, home string, readFile func(string) ([]byte, error)) Env {
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := getenv(k); v != "" {
				return v
			}
		}
		return ""
	}
	expand := func(p string) string {
		if p == "~" || strings.HasPrefix(p, "~/") {
			return filepath.Join(home, p[1:])
		}
		return p
	}
	hfHome := expand(getenv("HF_HOME"))
	if hfHome == "" {
		xdg := expand(getenv("XDG_CACHE_HOME"))
		if xdg == "" {
			xdg = filepath.Join(home, ".cache")
		}
		hfHome = filepath.Join(xdg, "huggingface")
	}
	e := Env{
		Endpoint: strings.TrimRight(first("HF_ENDPOINT"), "/"),
		CacheDir: expand(first("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")),
		Offline:  isTrue(first("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")),
		Token:    strings.TrimSpace(first("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")),
	}
	if e.Endpoint == "" {
		e.Endpoint = DefaultEndpoint
	}
	if e.CacheDir == "" {
		e.CacheDir = filepath.Join(hfHome, "hub")
	}
	if e.Token == "" && readFile != nil {
		path := expand(getenv("HF_TOKEN_PATH"))
		if path == "" {
			path = filepath.Join(hfHome, "token")
		}
		if b, err := readFile(path); err == nil {
			e.Token = strings.TrimSpace(string(b))
		}
	}
	return e
}

// isTrue is huggingface_hub's reading of a boolean variable.
func isTrue(v string) bool {
	switch strings.ToUpper(strings.TrimSpace(v)) {
	case "1", "ON", "YES", "TRUE":
		return true
	}
	return false
}
