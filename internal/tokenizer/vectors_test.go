package tokenizer

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// testdataDir holds the repo's copy of the Hugging Face reference vectors
// (see testdata/qwen3-tokenizer/PROVENANCE.md).
var testdataDir = filepath.Join("..", "..", "testdata", "qwen3-tokenizer")

func mustQwen3(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// readJSONL decodes every line of a vectors file into a fresh T.
func readJSONL[T any](t *testing.T, name string) []T {
	t.Helper()
	f, err := os.Open(filepath.Join(testdataDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for line := 1; sc.Scan(); line++ {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("%s:%d: %v", name, line, err)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no vectors", name)
	}
	return out
}

type publicVector struct {
	ID        int      `json:"id"`
	Category  string   `json:"category"`
	Text      string   `json:"text"`
	IDs       []int    `json:"ids"`
	Pretokens []string `json:"pretokens"`
	Decoded   string   `json:"decoded"`
}

func TestPublicVectorsEncode(t *testing.T) {
	tok := mustQwen3(t)
	vs := readJSONL[publicVector](t, "public_vectors.jsonl")
	fails := 0
	for _, v := range vs {
		got := tok.Encode(v.Text)
		if !slices.Equal(got, v.IDs) {
			fails++
			if fails <= 10 {
				t.Errorf("vector %d (%s) %q:\n got %v\nwant %v", v.ID, v.Category, v.Text, got, v.IDs)
			}
		}
		if d := tok.Decode(v.IDs, false); d != v.Decoded {
			t.Errorf("vector %d: Decode = %q, want %q", v.ID, d, v.Decoded)
		}
	}
	t.Logf("%d/%d public vectors encode exactly", len(vs)-fails, len(vs))
}

// TestPublicVectorsPretokens checks the split alone, on vectors without
// added tokens (their pretokens are per segment).
func TestPublicVectorsPretokens(t *testing.T) {
	tok := mustQwen3(t)
	n := 0
	for _, v := range readJSONL[publicVector](t, "public_vectors.jsonl") {
		if _, _, _, u := tok.added.next(v.Text, 0, true); u >= 0 {
			continue
		}
		if s, _, _, _ := tok.added.next(v.Text, 0, true); s >= 0 {
			continue
		}
		var got []string
		s := nfc(v.Text)
		for p := 0; p < len(s); {
			e, _ := splitNext(s, p, true)
			got = append(got, s[p:e])
			p = e
		}
		if !slices.Equal(got, v.Pretokens) && !(len(got) == 0 && len(v.Pretokens) == 0) {
			t.Errorf("vector %d %q:\n got %q\nwant %q", v.ID, v.Text, got, v.Pretokens)
		}
		n++
	}
	t.Logf("%d vectors split checked", n)
}

type decodeVector struct {
	Kind               string `json:"kind"`
	IDs                []int  `json:"ids"`
	Decoded            string `json:"decoded"`
	DecodedSkipSpecial string `json:"decoded_skip_special"`
}

func TestDecodeVectors(t *testing.T) {
	tok := mustQwen3(t)
	vs := readJSONL[decodeVector](t, "decode_vectors.jsonl")
	for i, v := range vs {
		if got := tok.Decode(v.IDs, false); got != v.Decoded {
			t.Errorf("vector %d (%s) %v: Decode = %q, want %q", i, v.Kind, v.IDs, got, v.Decoded)
		}
		if got := tok.Decode(v.IDs, true); got != v.DecodedSkipSpecial {
			t.Errorf("vector %d (%s) %v: Decode skipSpecial = %q, want %q", i, v.Kind, v.IDs, got, v.DecodedSkipSpecial)
		}
		for _, skip := range []bool{false, true} {
			d := tok.NewStreamDecoder(skip)
			var s string
			for _, id := range v.IDs {
				s += d.Add(id)
			}
			s += d.Flush()
			if want := tok.Decode(v.IDs, skip); s != want {
				t.Errorf("vector %d (%s) skip=%v: streamed %q, want %q", i, v.Kind, skip, s, want)
			}
		}
	}
	t.Logf("%d decode vectors", len(vs))
}

type chatVector struct {
	Variant             string    `json:"variant"`
	Messages            []Message `json:"messages"`
	AddGenerationPrompt bool      `json:"add_generation_prompt"`
	EnableThinking      bool      `json:"enable_thinking"`
	Text                string    `json:"text"`
	IDs                 []int     `json:"ids"`
	UserEndIndex        int       `json:"user_end_index"`
}

func TestChatVectors(t *testing.T) {
	tok := mustQwen3(t)
	vs := readJSONL[chatVector](t, "chat_vectors.jsonl")
	plain := 0
	for i, v := range vs {
		c, err := tok.RenderChatWith(v.Messages, ChatOptions{AddGenerationPrompt: v.AddGenerationPrompt, EnableThinking: v.EnableThinking, ParseSpecial: true})
		if err != nil {
			t.Errorf("vector %d (%s): %v", i, v.Variant, err)
			continue
		}
		if c.Text != v.Text {
			t.Errorf("vector %d (%s): text\n got %q\nwant %q", i, v.Variant, c.Text, v.Text)
		}
		if !slices.Equal(c.IDs, v.IDs) {
			t.Errorf("vector %d (%s): ids\n got %v\nwant %v", i, v.Variant, c.IDs, v.IDs)
		}
		if c.UserEndIndex != v.UserEndIndex {
			t.Errorf("vector %d (%s): user_end_index %d, want %d", i, v.Variant, c.UserEndIndex, v.UserEndIndex)
		}
		// Without ParseSpecial (the default), message text that spells no
		// tag renders to exactly Hugging Face's ids.
		if !spellsTag(v.Messages) {
			plain++
			c2, err := tok.RenderChatWith(v.Messages, ChatOptions{AddGenerationPrompt: v.AddGenerationPrompt, EnableThinking: v.EnableThinking})
			if err != nil || c2.Text != v.Text || !slices.Equal(c2.IDs, v.IDs) || c2.UserEndIndex != v.UserEndIndex {
				t.Errorf("vector %d (%s): text-only rendering differs from the template's: %v", i, v.Variant, err)
			}
		}
	}
	if plain < len(vs)/2 {
		t.Errorf("only %d of %d vectors spell no tag", plain, len(vs))
	}
	t.Logf("%d chat vectors, %d also rendered text-only", len(vs), plain)
}

// spellsTag reports whether a message's text spells an added token or a
// think tag, which only the trusted rendering turns into tokens.
func spellsTag(msgs []Message) bool {
	for _, m := range msgs {
		for _, s := range []string{m.Content, m.ReasoningContent} {
			if strings.Contains(s, "<|") || strings.Contains(s, "think>") {
				return true
			}
		}
	}
	return false
}
