package hub

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestEnvFrom(t *testing.T) {
	noFile := func(string) ([]byte, error) { return nil, errors.New("absent") }
	tests := []struct {
		name string
		vars map[string]string
		file map[string]string
		want Env
	}{
		{"defaults", nil, nil, Env{Endpoint: DefaultEndpoint, CacheDir: "/home/u/.cache/huggingface/hub"}},
		{"xdg", map[string]string{"XDG_CACHE_HOME": "/x"}, nil, Env{Endpoint: DefaultEndpoint, CacheDir: "/x/huggingface/hub"}},
		{"hf_home and token file", map[string]string{"HF_HOME": "~/hf"}, map[string]string{"/home/u/hf/token": "hf_abc\n"},
			Env{Endpoint: DefaultEndpoint, CacheDir: "/home/u/hf/hub", Token: "hf_abc"}},
		{"explicit", map[string]string{"HF_ENDPOINT": "https://mirror.example/", "HF_HUB_CACHE": "/c", "HF_TOKEN": "t1",
			"HF_HUB_OFFLINE": "yes", "HF_HOME": "/ignored"}, map[string]string{"/ignored/token": "t2"},
			Env{Endpoint: "https://mirror.example", CacheDir: "/c", Token: "t1", Offline: true}},
		{"legacy names", map[string]string{"HUGGINGFACE_HUB_CACHE": "/old", "HUGGING_FACE_HUB_TOKEN": "t3", "TRANSFORMERS_OFFLINE": "1"}, nil,
			Env{Endpoint: DefaultEndpoint, CacheDir: "/old", Token: "t3", Offline: true}},
		{"offline false", map[string]string{"HF_HUB_OFFLINE": "0"}, nil, Env{Endpoint: DefaultEndpoint, CacheDir: "/home/u/.cache/huggingface/hub"}},
		{"token path", map[string]string{"HF_TOKEN_PATH": "/secrets/t"}, map[string]string{"/secrets/t": " t4 "},
			Env{Endpoint: DefaultEndpoint, CacheDir: "/home/u/.cache/huggingface/hub", Token: "t4"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			read := noFile
			if tc.file != nil {
				read = func(p string) ([]byte, error) {
					if s, ok := tc.file[filepath.Clean(p)]; ok {
						return []byte(s), nil
					}
					return nil, errors.New("absent")
				}
			}
			got := EnvFrom(func(k string) string { return tc.vars[k] }, "/home/u", read)
			if got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	for v, want := range map[string]bool{"1": true, "ON": true, "true": true, "Yes": true, "": false, "0": false, "no": false, "2": false} {
		if isTrue(v) != want {
			t.Errorf("isTrue(%q) = %v", v, !want)
		}
	}
}
