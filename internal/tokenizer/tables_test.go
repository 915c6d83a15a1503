package tokenizer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"os"
	"reflect"
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
		"vocab": {fromJSON.vocab, fromTab.vocab}, "idToken": {fromJSON.idToken, fromTab.idToken},
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
	if len(fromTab.merges) != 151387 || len(fromTab.vocab) != 151643 {
		t.Errorf("tables hold %d merges and %d tokens, want Qwen3's 151387 and 151643", len(fromTab.merges), len(fromTab.vocab))
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
