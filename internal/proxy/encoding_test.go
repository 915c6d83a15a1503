package proxy

import (
	"context"
	"net/http"
	"testing"
)

// TestContentEncodingLines: a compressed answer is refused whichever of
// its Content-Encoding lines or values names the coding: Envoy passes every
// line on, and clients such as httpx join them ("identity, gzip") and
// decompress.
func TestContentEncodingLines(t *testing.T) {
	m := tinyModel(t)
	ext, err := NewExternal(Config{DefaultTenant: Tenant{Policy: safePolicy(m)}}, Direct(m))
	if err != nil {
		t.Fatal(err)
	}
	for _, lines := range [][]string{{"identity", "gzip"}, {"", "br"}, {"identity, gzip"}, {" Identity ,deflate"}} {
		c, ans := ext.Start(context.Background(), nil, http.Header{}, mustJSON(map[string]any{"model": "m",
			"messages": []any{map[string]any{"role": "user", "content": "Hello"}}}))
		if ans != nil {
			t.Fatalf("refused: %d %s", ans.Status, ans.Body)
		}
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		h["Content-Encoding"] = lines
		if k, _ := c.Response(200, h); k != RefusedResponse {
			t.Errorf("Content-Encoding %q: kind %v, want RefusedResponse", h["Content-Encoding"], k)
		}
		c.Close()
	}
}
