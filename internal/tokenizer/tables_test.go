package tokenizer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"maps"
	"os"
	"reflect"
	"sync"
	"testing"
)

var updateTables = flag.Bool("update", false, "rewrite qwen3data/tables.bin from the embedded tokenizer.json")

// TestQwen3Tables: the embedded tables are exactly what the embedded
// tokenizer.json gives (with -update, rewrites them), and the tokenizer
// built from them equals the one parsed from the JSON, table for table.
func TestQwen3Tables(t *testing.T) {
	js, err := gunzip(qwen3TokenizerGz)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(js)
	if hex.EncodeToString(sum[:]) != Qwen3SHA256 {
		t.Fatalf("embedded tokenizer.json has SHA-256 %x, Qwen3SHA256 says %s", sum, Qwen3SHA256)
	}
	rest, tb, err := splitTables(js)
	if err != nil {
		t.Fatal(err)
	}
	want, err := encodeTables(sum, rest, tb)
	if err != nil {
		t.Fatal(err)
	}
	if *updateTables {
		if err := os.WriteFile("qwen3data/tables.bin", want, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("wrote qwen3data/tables.bin")
		return
	}
	got := qwen3Tables
	if !bytes.Equal(got, want) {
		t.Fatal("qwen3data/tables.bin is stale: go generate ./internal/tokenizer (go test -run TestQwen3Tables -update)")
	}
	fromJSON, err := FromJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	fromTab, err := fromTables(got, sum)
	if err != nil {
		t.Fatal(err)
	}
	for name, pair := range map[string][2]any{
		"vocab": {fromJSON.vocabMap(), fromTab.vocabMap()}, "idToken": {fromJSON.idToken, fromTab.idToken},
		"present": {fromJSON.present, fromTab.present}, "special": {fromJSON.special, fromTab.special},
		"idBytes": {fromJSON.idBytes, fromTab.idBytes}, "idOff": {fromJSON.idOff, fromTab.idOff},
		"byteID": {fromJSON.byteID, fromTab.byteID}, "merges": {fromJSON.merges, fromTab.merges},
		"added": {fromJSON.added, fromTab.added}, "nfc": {fromJSON.nfc, fromTab.nfc},
		"ignoreMrg": {fromJSON.ignoreMrg, fromTab.ignoreMrg},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("%s differs between the JSON and the tables", name)
		}
	}
	if len(fromTab.merges) != 151387 || len(fromTab.vocabMap()) != 151643 {
		t.Errorf("tables hold %d merges and %d tokens, want Qwen3's 151387 and 151643", len(fromTab.merges), len(fromTab.vocabMap()))
	}
	text := "Hello, world! 你好 <|im_start|>assistant\n<think>\n\n</think>\n\n  naïve café 123456789"
	if a, b := fromJSON.Encode(text), fromTab.Encode(text); !reflect.DeepEqual(a, b) {
		t.Errorf("encodings differ: %v and %v", a, b)
	}
	other := sum
	other[0] ^= 1
	if _, err := fromTables(got, other); err == nil {
		t.Error("tables accepted for another tokenizer.json")
	}
}

// TestTablesTiny: tables made from the tiny tokenizer.json build the
// tokenizer FromJSON parses — the byte symbols' ids found without a map,
// the map of tokens built on first use, and from the tables, not from the
// id table that an added token inside the vocabulary's range writes to —
// and tables that lack a byte symbol, or hold one twice, are refused.
func TestTablesTiny(t *testing.T) {
	js := tinyJSON(t, func(m map[string]any) {
		// An added token inside the vocabulary's range, at id 258, a hole
		// below "zz" (259). (One over a vocabulary token's id with other
		// text is refused: TestAddedTokenCannotTakeVocabID.)
		m["model"].(map[string]any)["vocab"].(map[string]any)["zz"] = 259
		m["added_tokens"] = append(m["added_tokens"].([]any), map[string]any{"id": 258, "content": "<abc>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false})
	})
	sum := sha256.Sum256(js)
	rest, tb, err := splitTables(js)
	if err != nil {
		t.Fatal(err)
	}
	b, err := encodeTables(sum, rest, tb)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := FromJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	fromTab, err := fromTables(b, sum)
	if err != nil {
		t.Fatal(err)
	}
	if fromTab.byteID != fromJSON.byteID || !reflect.DeepEqual(fromTab.idToken, fromJSON.idToken) {
		t.Error("byte ids or id table differ between the JSON and the tables")
	}
	if fromTab.vocab != nil {
		t.Error("the map of tokens was built before its first use")
	}
	for _, tok := range []string{"abc", "ab", "<abc>", "<x>", "Ġ", "zz"} {
		a, okA := fromJSON.TokenID(tok)
		b, okB := fromTab.TokenID(tok)
		if a != b || okA != okB {
			t.Errorf("TokenID(%q): JSON %d, %v; tables %d, %v", tok, a, okA, b, okB)
		}
	}
	if id, ok := fromTab.TokenID("abc"); !ok || id != 257 {
		t.Errorf("TokenID(abc) = %d, %v; want the vocabulary's 257", id, ok)
	}
	v := maps.Clone(tb.vocab)
	delete(v, "Ġ")
	missing, err := encodeTables(sum, rest, &tables{vocab: v, merges: tb.merges})
	if err != nil {
		t.Fatal(err)
	}
	// Id 256 ("ab", two bytes) made a second "Ġ" (U+0120, two bytes).
	twice := bytes.Replace(b, []byte("\x02\x00ab\x03\x00abc"), []byte("\x02\x00\xc4\xa0\x03\x00abc"), 1)
	if bytes.Equal(twice, b) {
		t.Fatal("id 256's entry not found in the tables")
	}
	for name, bad := range map[string][]byte{"a byte symbol missing": missing, "a byte symbol twice": twice} {
		if _, err := fromTables(bad, sum); err == nil {
			t.Errorf("%s: tables accepted", name)
		}
	}
}

// TestTokenIDConcurrent: the first TokenID calls of a tokenizer built from
// the tables, from several goroutines at once, build its map of tokens once
// and all see it (run with -race).
func TestTokenIDConcurrent(t *testing.T) {
	var sum [32]byte
	copy(sum[:], qwen3Tables[len(tablesMagic):])
	tok, err := fromTables(qwen3Tables, sum)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"Ġthe": 279, "hello": 14990, "<|im_end|>": 151645}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for s, id := range want {
				if got, ok := tok.TokenID(s); !ok || got != id {
					t.Errorf("TokenID(%q) = %d, %v; want %d", s, got, ok, id)
				}
			}
		})
	}
	wg.Wait()
}

// FuzzFromTables: damaged tables are refused, never a panic.
func FuzzFromTables(f *testing.F) {
	b := qwen3Tables
	var sum [32]byte
	copy(sum[:], b[len(tablesMagic):])
	f.Add(b[:4096])
	f.Add(b[:len(tablesMagic)+32+4])
	f.Fuzz(func(t *testing.T, data []byte) {
		fromTables(data, sum)
	})
}
