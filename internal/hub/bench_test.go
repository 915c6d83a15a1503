package hub

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/streamguard/streamguard/internal/hub/hubtest"
)

// benchFileSize keeps one iteration cheap (the CI runs every benchmark
// once) while the transfer still dominates the fixed costs.
const benchFileSize = 32 << 20

// BenchmarkPull downloads one LFS file through the fake hub and CDN on
// loopback into a fresh cache, sha256 verification included.
func BenchmarkPull(b *testing.B) {
	data := make([]byte, benchFileSize)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < len(data); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(data); j++ {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	h := hubtest.New(b)
	h.AddRepo("Bench/model", map[string]hubtest.File{"model.safetensors": {Data: data, LFS: true}, "config.json": {Data: []byte("{}")}})
	ref, _ := ParseRef("Bench/model")
	base := b.TempDir()
	b.SetBytes(benchFileSize)
	n := 0
	for b.Loop() {
		n++
		c := NewClient(Env{Endpoint: h.URL(), CacheDir: filepath.Join(base, "cache", strconv.Itoa(n))})
		if _, err := c.Pull(context.Background(), ref, PullOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(c.CacheDir)
		b.StartTimer()
	}
}

// BenchmarkVerifySHA256 is the cost of checking a cached blob.
func BenchmarkVerifySHA256(b *testing.B) {
	data := make([]byte, benchFileSize)
	path := filepath.Join(b.TempDir(), "blob")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	etag := hubtest.SHA256Hex(data)
	b.SetBytes(benchFileSize)
	for b.Loop() {
		if _, err := verifyBlob(path, etag, benchFileSize); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoopbackGET is the baseline for BenchmarkPull: the same bytes
// over the same loopback HTTP, into io.Discard, with no cache, check or
// file.
func BenchmarkLoopbackGET(b *testing.B) {
	data := make([]byte, benchFileSize)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(data) }))
	defer srv.Close()
	b.SetBytes(benchFileSize)
	for b.Loop() {
		resp, err := http.Get(srv.URL)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}
