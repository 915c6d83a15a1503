package tokenizer

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func benchText(b *testing.B) string {
	gz, err := os.ReadFile(filepath.Join(testdataDir, "bench_text.txt.gz"))
	if err != nil {
		b.Fatal(err)
	}
	text, err := gunzip(gz)
	if err != nil {
		b.Fatal(err)
	}
	return string(text)
}

// BenchmarkEncode encodes bench_text.txt (1 MiB of mixed text) whole; run
// with -cpu 1 for the single-thread figure compared with tokenizers.
func BenchmarkEncode(b *testing.B) {
	tok := mustQwen3(b)
	text := benchText(b)
	tokens := len(tok.Encode(text)) // also warms the piece cache
	b.SetBytes(int64(len(text)))
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := processCPU()
	n := 0
	for b.Loop() {
		tok.Encode(text)
		n++
	}
	cpu := processCPU() - cpu0
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(tokens)*float64(n)/b.Elapsed().Seconds(), "tokens/s")
	if cpu > 0 {
		// Process CPU time, GC included: comparable across a busy machine.
		b.ReportMetric(float64(tokens)*float64(n)/cpu.Seconds(), "tokens/cpu-s")
	}
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(tokens*n), "allocs/token")
}

// BenchmarkStreamEncode feeds the same text in 16-byte chunks.
func BenchmarkStreamEncode(b *testing.B) {
	tok := mustQwen3(b)
	text := benchText(b)
	tokens := len(tok.Encode(text))
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		e := tok.NewStreamEncoder()
		for i := 0; i < len(text); i += 16 {
			e.Write(text[i:min(i+16, len(text))])
		}
		e.Flush()
	}
	b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

func BenchmarkDecode(b *testing.B) {
	tok := mustQwen3(b)
	ids := tok.Encode(benchText(b))
	for b.Loop() {
		tok.Decode(ids, false)
	}
	b.ReportMetric(float64(len(ids))*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkLoad is the start-up cost: parsing the embedded tokenizer.json.
func BenchmarkLoad(b *testing.B) {
	tj, _, err := Qwen3Files()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := FromJSON(tj); err != nil {
			b.Fatal(err)
		}
	}
}
