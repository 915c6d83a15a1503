package main

import (
	"math"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// FuzzParseSize checks --kv-budget and --max-body's parser: a size it
// accepts is a byte count, 0 or more, and at most the 1<<62 it bounds.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "1024", "512MiB", "2GiB", "1.5 GiB", "10KB", "7B", "1e3", "lots", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			return
		}
		if n < 0 || n > 1<<62 {
			t.Fatalf("parseSize(%q) = %d: accepted a size that is not a byte count", s, n)
		}
	})
}

// TestParseSizeNaN: a size that is not a number is a usage error, NaN
// too (strconv.ParseFloat reads it, and it failed neither f < 0 nor the
// upper bound: converted it became math.MinInt64, which a KV budget reads
// as no budget at all). Infinity is over the bound.
func TestParseSizeNaN(t *testing.T) {
	for _, s := range []string{"NaN", "nan", "NaN GiB", "-NaN", "Inf", "+Inf GiB", "-Inf"} {
		n, err := parseSize(s)
		if err == nil {
			t.Errorf("parseSize(%q) = %d, nil; want an error (MinInt64 is %d)", s, n, int64(math.MinInt64))
		}
	}
}

// FuzzFlagLists checks the parsed flag values: parseInts (bench's
// --positions, --streams), --threads and --threshold CATEGORY=P.
func FuzzFlagLists(f *testing.F) {
	for _, s := range []string{"1,2,3", " 4 , 5", "", ",", "0", "-1", "Violent=0.5", "x=NaN", "8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ns, err := parseInts("positions", s); err == nil {
			for _, n := range ns {
				if n < 0 {
					t.Fatalf("parseInts(%q) accepted %d", s, n)
				}
			}
		}
		var th threadsValue
		if th.Set(s) == nil && (th < 0 || int(th) > 1<<20) {
			t.Fatalf("--threads %q accepted as %d", s, th)
		}
		tf := thresholdFlags{}
		if tf.Set(s) == nil {
			for k, p := range tf {
				if !(p >= 0 && p <= 1) || !strings.Contains(s, k) {
					t.Fatalf("--threshold %q accepted as %q=%v", s, k, p)
				}
			}
		}
	})
}

// FuzzTokenizeLine feeds `tokenize`'s stdin lines (encode, decode, chat)
// to tokenizeLine: an error or an answer, never a panic.
func FuzzTokenizeLine(f *testing.F) {
	for _, s := range []string{
		`{"text":"hello <|im_start|> world"}`,
		`{"ids":[9707,1879,151644]}`,
		`{"ids":[-1,999999999]}`,
		`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}],"add_generation_prompt":true}`,
	} {
		for mode := range 3 {
			f.Add(uint8(mode), []byte(s))
		}
	}
	tok, err := tokenizer.LoadQwen3()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, mode uint8, line []byte) {
		o := tokenizeOptions{mode: tokenizeMode(mode % 3), skipSpecial: mode&4 != 0, parseSpecial: mode&8 != 0}
		_, _ = tokenizeLine(tok, o, line)
	})
}
