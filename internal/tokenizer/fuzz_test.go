package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadGzip loads arbitrary bytes as a tokenizer.json.gz and compares
// with compress/gzip read to one byte past MaxFileBytes: Load must fail
// where that read fails or passes the bound, and otherwise give what
// FromJSON gives for the decompressed bytes. The size in the gzip trailer
// (a hint Load uses to refuse early and to size its buffer) is the
// fuzzer's too, so a lying trailer must change nothing.
func FuzzLoadGzip(f *testing.F) {
	gz := func(parts ...[]byte) []byte {
		var b bytes.Buffer
		for _, p := range parts {
			zw := gzip.NewWriter(&b)
			zw.Write(p)
			zw.Close()
		}
		return b.Bytes()
	}
	tiny := tinyJSON(f, nil)
	f.Add(gz(tiny))
	f.Add(gz(tiny[:len(tiny)/2], tiny[len(tiny)/2:])) // two members
	f.Add(gz([]byte("{}")))
	lying := gz(tiny)
	binary.LittleEndian.PutUint32(lying[len(lying)-4:], MaxFileBytes+1)
	f.Add(lying)
	f.Add(gz(make([]byte, 1<<20)))
	f.Add([]byte("\x1f\x8b"))
	dir := f.TempDir()
	path := filepath.Join(dir, "tokenizer.json.gz")
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		tok, err := Load(path)
		var ref []byte
		zr, rerr := gzip.NewReader(bytes.NewReader(b))
		if rerr == nil {
			ref, rerr = io.ReadAll(io.LimitReader(zr, MaxFileBytes+1))
		}
		switch {
		case len(b) == 0:
			// An empty file is not mapped; Load then parses nothing.
		case rerr != nil:
			if err == nil {
				t.Fatalf("Load accepted what compress/gzip refuses (%v)", rerr)
			}
		case len(ref) > MaxFileBytes:
			if err == nil || !strings.HasSuffix(err.Error(), "decompresses to more than the 67108864 bytes allowed for a tokenizer.json") {
				t.Fatalf("Load of a .gz decompressing past the bound: %v", err)
			}
		default:
			want, werr := FromJSONShared(ref)
			if (err == nil) != (werr == nil) {
				t.Fatalf("Load: %v; FromJSON of the decompressed bytes: %v", err, werr)
			}
			if err == nil && tok.VocabSize() != want.VocabSize() {
				t.Fatalf("Load: %d tokens, FromJSON: %d", tok.VocabSize(), want.VocabSize())
			}
		}
	})
}
