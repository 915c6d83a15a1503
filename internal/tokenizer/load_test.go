package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// tinyJSON is a minimal tokenizer.json in the Qwen3 shape: the 256 byte
// symbols, two merges and two added tokens. edit may alter it first.
func tinyJSON(t testing.TB, edit func(m map[string]any)) []byte {
	t.Helper()
	vocab := map[string]any{}
	for b := 0; b < 256; b++ {
		vocab[string(byteToRune[b])] = b
	}
	vocab["ab"] = 256
	vocab["abc"] = 257
	m := map[string]any{
		"version":    "1.0",
		"truncation": nil,
		"padding":    nil,
		"added_tokens": []any{
			map[string]any{"id": 300, "content": "<|end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
			map[string]any{"id": 301, "content": "<x>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false},
		},
		"normalizer": map[string]any{"type": "NFC"},
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": qwen2SplitPattern}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
		}},
		"post_processor": map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
		"decoder":        map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
		"model": map[string]any{
			"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": "", "end_of_word_suffix": "",
			"fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
			"vocab": vocab, "merges": []any{"a b", "ab c"},
		},
	}
	if edit != nil {
		edit(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTinyTokenizer(t *testing.T) {
	for _, form := range []string{"strings", "pairs"} {
		tok, err := FromJSON(tinyJSON(t, func(m map[string]any) {
			if form == "pairs" {
				m["model"].(map[string]any)["merges"] = [][]string{{"a", "b"}, {"ab", "c"}}
			}
		}))
		if err != nil {
			t.Fatal(err)
		}
		// "abc" merges fully; " abcd" is one pre-token "Ġabcd" with no
		// merge for the space: [Ġ abc d].
		if got, want := tok.Encode("abc<|end|> abcd<x>"), []int{257, 300, 32, 257, 100, 301}; !slices.Equal(got, want) {
			t.Errorf("%s merges: Encode = %v, want %v", form, got, want)
		}
		if got := tok.VocabSize(); got != 302 {
			t.Errorf("VocabSize = %d, want 302", got)
		}
		if got := tok.Decode([]int{257, 300, 301, 299, -1, 1 << 30}, true); got != "abc<x>" {
			t.Errorf("Decode skipSpecial = %q, want %q", got, "abc<x>")
		}
	}
}

// TestAddedTokensAnyOrder: added tokens past the vocabulary, listed with
// their ids descending, give the same tokenizer as listed ascending (the
// id table grows to the largest id at once).
func TestAddedTokensAnyOrder(t *testing.T) {
	tok, err := FromJSON(tinyJSON(t, func(m map[string]any) {
		a := m["added_tokens"].([]any)
		a[0], a[1] = a[1], a[0]
		m["added_tokens"] = append(a, map[string]any{"id": 260, "content": "<y>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false})
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tok.Encode("abc<|end|><y> abcd<x>"), []int{257, 300, 260, 32, 257, 100, 301}; !slices.Equal(got, want) {
		t.Errorf("Encode = %v, want %v", got, want)
	}
	if got := tok.VocabSize(); got != 302 {
		t.Errorf("VocabSize = %d, want 302", got)
	}
	for id, want := range map[int]string{260: "<y>", 300: "<|end|>", 301: "<x>"} {
		if got, ok := tok.IDToken(id); !ok || got != want {
			t.Errorf("IDToken(%d) = %q, %v; want %q", id, got, ok, want)
		}
	}
	if _, ok := tok.IDToken(299); ok {
		t.Error("IDToken(299): an id with no token is present")
	}
	if got := tok.Decode([]int{257, 260, 300, 301}, true); got != "abc<y><x>" {
		t.Errorf("Decode skipSpecial = %q, want %q", got, "abc<y><x>")
	}
}

func TestLoadRefusesUnsupported(t *testing.T) {
	pre := func(m map[string]any) []any { return m["pre_tokenizer"].(map[string]any)["pretokenizers"].([]any) }
	model := func(m map[string]any) map[string]any { return m["model"].(map[string]any) }
	added := func(m map[string]any) map[string]any { return m["added_tokens"].([]any)[0].(map[string]any) }
	cases := []struct {
		name string
		edit func(m map[string]any)
		want string
	}{
		{"model WordPiece", func(m map[string]any) { model(m)["type"] = "WordPiece" }, `model: type "WordPiece"`},
		{"normalizer NFKC", func(m map[string]any) { m["normalizer"] = map[string]any{"type": "NFKC"} }, `normalizer: type "NFKC"`},
		{"normalizer Sequence with Lowercase", func(m map[string]any) {
			m["normalizer"] = map[string]any{"type": "Sequence", "normalizers": []any{map[string]any{"type": "NFC"}, map[string]any{"type": "Lowercase"}}}
		}, `"Lowercase"`},
		{"pre-tokenizer Whitespace", func(m map[string]any) { m["pre_tokenizer"] = map[string]any{"type": "Whitespace"} }, `pre_tokenizer: type "Whitespace"`},
		{"other split pattern", func(m map[string]any) {
			pre(m)[0].(map[string]any)["pattern"] = map[string]any{"Regex": `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`}
		}, "Split pattern"},
		{"split behavior", func(m map[string]any) { pre(m)[0].(map[string]any)["behavior"] = "Removed" }, "behavior"},
		{"byte level prefix space", func(m map[string]any) { pre(m)[1].(map[string]any)["add_prefix_space"] = true }, "add_prefix_space"},
		{"no pre-tokenizer", func(m map[string]any) { m["pre_tokenizer"] = nil }, "pre_tokenizer: missing"},
		{"template post-processor", func(m map[string]any) { m["post_processor"] = map[string]any{"type": "TemplateProcessing"} }, `post_processor: type "TemplateProcessing"`},
		{"decoder", func(m map[string]any) { m["decoder"] = map[string]any{"type": "WordPiece"} }, `decoder: type "WordPiece"`},
		{"dropout", func(m map[string]any) { model(m)["dropout"] = 0.1 }, "dropout"},
		{"byte fallback", func(m map[string]any) { model(m)["byte_fallback"] = true }, "byte_fallback"},
		{"subword prefix", func(m map[string]any) { model(m)["continuing_subword_prefix"] = "##" }, "continuing_subword_prefix"},
		{"truncation", func(m map[string]any) { m["truncation"] = map[string]any{"max_length": 8} }, "truncation"},
		{"missing byte symbol", func(m map[string]any) { delete(model(m)["vocab"].(map[string]any), "Ġ") }, "byte 0x20"},
		{"merge out of vocab", func(m map[string]any) { model(m)["merges"] = []any{"a z"} }, `merge 0 "a" "z"`},
		{"repeated merge", func(m map[string]any) { model(m)["merges"] = []any{"a b", "a b"} }, `merge 1 "a" "b" repeats`},
		{"malformed merge", func(m map[string]any) { model(m)["merges"] = []any{"abc"} }, `merge 0 "abc"`},
		{"lstrip added token", func(m map[string]any) { added(m)["lstrip"] = true }, "lstrip"},
		{"normalized added token", func(m map[string]any) { added(m)["normalized"] = true }, "normalized added tokens"},
	}
	for _, c := range cases {
		_, err := FromJSON(tinyJSON(t, c.edit))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	if _, err := FromJSON([]byte("{")); err == nil {
		t.Error("truncated JSON: no error")
	}
}

func TestLoadPaths(t *testing.T) {
	dir := t.TempDir()
	b := tinyJSON(t, nil)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(b)
	zw.Close()
	gzPath := filepath.Join(dir, "tok.json.gz")
	if err := os.WriteFile(gzPath, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "tokenizer.json"), gzPath} {
		tok, err := Load(p)
		if err != nil {
			t.Fatalf("Load(%s): %v", p, err)
		}
		if got := tok.Encode("abc"); !slices.Equal(got, []int{257}) {
			t.Errorf("Load(%s): Encode = %v", p, got)
		}
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, tinyJSON(t, func(m map[string]any) { m["decoder"] = nil }), 0o644)
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Load(bad): %v, want an error naming the file", err)
	}
	if _, err := Load(filepath.Join(dir, "missing")); err == nil {
		t.Error("Load(missing): no error")
	}
}

func TestQwen3FilesAndIDs(t *testing.T) {
	tj, tc, err := Qwen3Files()
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		EOS string `json:"eos_token"`
	}
	if err := json.Unmarshal(tc, &cfg); err != nil || cfg.EOS != "<|im_end|>" {
		t.Errorf("tokenizer_config.json: eos %q, err %v", cfg.EOS, err)
	}
	if len(tj) != 11422654 {
		t.Errorf("tokenizer.json is %d bytes, want the 11422654 of the reference file", len(tj))
	}
	tok := mustQwen3(t)
	if got := tok.VocabSize(); got != 151669 {
		t.Errorf("VocabSize = %d, want 151669", got)
	}
	// The Qwen3 ids of the special tokens.
	for tokStr, id := range map[string]int{
		"<|endoftext|>": EndOfText, "<|im_start|>": ImStart, "<|im_end|>": ImEnd, "<think>": Think, "</think>": ThinkEnd,
		"user": 872, "assistant": 77091, "system": 8948, "Ċ": 198, "ĊĊ": 271,
	} {
		if got, ok := tok.TokenID(tokStr); !ok || got != id {
			t.Errorf("TokenID(%q) = %d, %v; want %d", tokStr, got, ok, id)
		}
		if got, ok := tok.IDToken(id); !ok || got != tokStr {
			t.Errorf("IDToken(%d) = %q, %v; want %q", id, got, ok, tokStr)
		}
	}
	if _, ok := tok.IDToken(151669); ok {
		t.Error("IDToken(151669) exists")
	}
	if !tok.IsSpecial(ImEnd) || tok.IsSpecial(Think) || tok.IsSpecial(0) {
		t.Error("IsSpecial: <|im_end|> is special, <think> and \"!\" are not")
	}
	if got := tok.Encode("<|im_start|>assistant\n<think>\n\n</think>\n\n"); !slices.Equal(got, []int{151644, 77091, 198, 151667, 271, 151668, 271}) {
		t.Errorf("assistant header = %v", got)
	}
}

func TestConcurrentEncode(t *testing.T) {
	tok := mustQwen3(t)
	texts := []string{"Hello, world! How are you?", "你好，世界", "we'll see   \n\n ok", "<|im_start|>user\nhi<|im_end|>"}
	want := make([][]int, len(texts))
	for i, s := range texts {
		want[i] = tok.Encode(s)
	}
	done := make(chan string)
	for g := range 4 {
		go func() {
			for i := range 200 {
				k := (g + i) % len(texts)
				if got := tok.Encode(texts[k]); !slices.Equal(got, want[k]) {
					done <- texts[k]
					return
				}
			}
			done <- ""
		}()
	}
	for range 4 {
		if s := <-done; s != "" {
			t.Errorf("concurrent Encode(%q) differs", s)
		}
	}
}

// TestAddedTokenCannotTakeVocabID: an added token may reuse the id of the
// vocabulary entry spelled the same, never one with other text: the
// merges that make "ab" (id 256) would then encode the plain text "ab" to
// the special <|end|>, which text must never reach.
func TestAddedTokenCannotTakeVocabID(t *testing.T) {
	added := func(id int, content string) func(m map[string]any) {
		return func(m map[string]any) {
			m["added_tokens"] = append(m["added_tokens"].([]any),
				map[string]any{"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
		}
	}
	tok, err := FromJSON(tinyJSON(t, added(256, "<|end2|>")))
	if want := `added_tokens[2] "<|end2|>": id 256 is the vocabulary token "ab"`; err == nil || err.Error() != want {
		t.Errorf("FromJSON = %v, want error %s", err, want)
		if err == nil {
			t.Errorf("EncodeText(\"ab\") = %v, IsSpecial(256) = %v", tok.EncodeText("ab"), tok.IsSpecial(256))
		}
	}
	// The same text at the vocabulary's id is allowed: it changes nothing.
	tok, err = FromJSON(tinyJSON(t, added(256, "ab")))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode("ab"); !slices.Equal(got, []int{256}) {
		t.Errorf("Encode(\"ab\") = %v, want [256]", got)
	}
}

// TestLoadGzipBounded: a .gz tokenizer may not decompress to more than a
// tokenizer.json may hold (MaxFileBytes): 64 MiB of zeros is 64 KiB of
// gzip. The trailer's size refuses an honest bomb before decompressing;
// one whose trailer lies (a second, empty member) is cut at the bound.
func TestLoadGzipBounded(t *testing.T) {
	var honest bytes.Buffer
	zw := gzip.NewWriter(&honest)
	zero := make([]byte, 1<<20)
	for range MaxFileBytes>>20 + 1 {
		zw.Write(zero)
	}
	zw.Close()
	var lying bytes.Buffer
	lying.Write(honest.Bytes())
	zw = gzip.NewWriter(&lying)
	zw.Close() // a second member, of 0 bytes: the trailer says 0
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		gz       []byte
		maxAlloc uint64
	}{
		{"honest.json.gz", honest.Bytes(), 1 << 20},
		// Growing a buffer to the bound costs about twice the bound.
		{"lying.json.gz", lying.Bytes(), 3 * MaxFileBytes},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, tc.gz, 0o644); err != nil {
			t.Fatal(err)
		}
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		_, err := Load(p)
		runtime.ReadMemStats(&m1)
		want := p + ": decompresses to more than the 67108864 bytes allowed for a tokenizer.json"
		if err == nil || err.Error() != want {
			t.Errorf("Load(%s) = %v, want %s", tc.name, err, want)
		}
		if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > tc.maxAlloc {
			t.Errorf("Load(%s) of %d bytes allocated %d bytes (at most %d)", tc.name, len(tc.gz), alloc, tc.maxAlloc)
		}
	}
	// An uncompressed file over the bound is refused from its size.
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, MaxFileBytes+1); err != nil {
		t.Fatal(err)
	}
	want := big + ": 67108865 bytes, more than the 67108864 allowed for a tokenizer.json"
	if _, err := Load(big); err == nil || err.Error() != want {
		t.Errorf("Load(big.json) = %v, want %s", err, want)
	}
}
