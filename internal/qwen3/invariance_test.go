package qwen3

import (
	"math"
	"strconv"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/internal/safetensors"
)

// flatten concatenates every output of a sequence in token order.
func flatten(outs ...Output) []float32 {
	var f []float32
	for _, o := range outs {
		for i := range o.Risk {
			f = append(f, o.Risk[i]...)
			f = append(f, o.Category[i]...)
			f = append(f, o.QueryRisk[i]...)
			f = append(f, o.QueryCategory[i]...)
			f = append(f, o.Hidden[i]...)
		}
	}
	return f
}

func requireBitwise(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Errorf("%s: value %d is %v, want %v (bitwise)", what, i, got[i], want[i])
			return
		}
	}
}

// TestChunkingIsBitwiseInvariant feeds one sequence all at once, token by
// token, and in chunks of several sizes: every logit and hidden value must
// be bitwise equal, because each row goes through the same float32
// operations whatever the chunk. It holds within each KV-cache type: a
// position's stored (rounded or quantized) key and value depend on that
// position alone.
func TestChunkingIsBitwiseInvariant(t *testing.T) {
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16} {
		for _, kv := range kvTypes {
			t.Run(string(dt)+"/"+kv.String(), func(t *testing.T) {
				requireChunkingInvariant(t, tiny(t, dt).m, kv, testIDs(41, 2), []int{1, 2, 3, 7, 16, 40})
			})
		}
	}
}

// requireChunkingInvariant checks that feeding ids in chunks of each size
// gives bitwise the outputs of feeding them at once, with caches of type
// kv.
func requireChunkingInvariant(t *testing.T, m *Model, kv KVType, ids []int, chunks []int) {
	t.Helper()
	opts := ForwardOptions{Hidden: true}
	whole, err := m.Forward([]Sequence{{Cache: m.NewCacheOf(kv), IDs: ids}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := flatten(whole...)
	for _, chunk := range chunks {
		c := m.NewCacheOf(kv)
		var outs []Output
		for i := 0; i < len(ids); i += chunk {
			o, err := m.Forward([]Sequence{{Cache: c, IDs: ids[i:min(i+chunk, len(ids))]}}, opts)
			if err != nil {
				t.Fatal(err)
			}
			outs = append(outs, o...)
		}
		requireBitwise(t, "chunk "+strconv.Itoa(chunk), flatten(outs...), want)
	}
}

// TestBatchIsBitwiseInvariant runs sequences of different lengths and
// cached prefixes alone and then together in one batch, several times
// concurrently (for -race): each sequence's outputs must be bitwise equal.
func TestBatchIsBitwiseInvariant(t *testing.T) {
	for _, kv := range kvTypes {
		t.Run(kv.String(), func(t *testing.T) {
			requireBatchInvariant(t, tiny(t, safetensors.BF16).m, kv)
		})
	}
}

// requireBatchInvariant runs sequences with different cached prefixes and
// new lengths alone, then batched (three batches concurrently, for -race),
// and checks each sequence's outputs are bitwise equal, with caches of
// type kv.
func requireBatchInvariant(t *testing.T, m *Model, kv KVType) {
	t.Helper()
	opts := ForwardOptions{Hidden: true}
	type seq struct{ prefix, fresh []int }
	seqs := []seq{
		{nil, testIDs(9, 10)},
		{testIDs(5, 11), testIDs(1, 12)},
		{testIDs(30, 13), testIDs(4, 14)},
		{testIDs(2, 15), nil},
		{nil, testIDs(1, 16)},
	}
	prefill := func() []*Cache {
		cs := make([]*Cache, len(seqs))
		for i, s := range seqs {
			cs[i] = m.NewCacheOf(kv)
			if _, err := m.Forward([]Sequence{{Cache: cs[i], IDs: s.prefix}}, opts); err != nil {
				t.Fatal(err)
			}
		}
		return cs
	}
	alone := make([][]float32, len(seqs))
	for i, c := range prefill() {
		o, err := m.Forward([]Sequence{{Cache: c, IDs: seqs[i].fresh}}, opts)
		if err != nil {
			t.Fatal(err)
		}
		alone[i] = flatten(o...)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs := prefill()
			batch := make([]Sequence, len(seqs))
			for i := range seqs {
				batch[i] = Sequence{Cache: cs[i], IDs: seqs[i].fresh}
			}
			outs, err := m.Forward(batch, opts)
			if err != nil {
				t.Error(err)
				return
			}
			for i := range seqs {
				requireBitwise(t, "batched sequence "+strconv.Itoa(i), flatten(outs[i]), alone[i])
				if cs[i].Len() != len(seqs[i].prefix)+len(seqs[i].fresh) {
					t.Errorf("sequence %d: cache length %d", i, cs[i].Len())
				}
			}
		}()
	}
	wg.Wait()
}

// TestPrepareInAttentionItems checks that a decode batch, whose rows are
// prepared inside the attention's (block, head) items, gives bitwise what
// the separate preparation pass gives, for every KV-cache type.
func TestPrepareInAttentionItems(t *testing.T) {
	m := tiny(t, safetensors.BF16).m
	for _, kv := range kvTypes {
		t.Run(kv.String(), func(t *testing.T) {
			run := func(separate bool) []float32 {
				defer func(old bool) { separatePrepare = old }(separatePrepare)
				separatePrepare = separate
				var seqs []Sequence
				for i := range 5 {
					c := m.NewCacheOf(kv)
					if _, err := m.Forward([]Sequence{{Cache: c, IDs: testIDs(9+3*i, i)}}, ForwardOptions{}); err != nil {
						t.Fatal(err)
					}
					seqs = append(seqs, Sequence{Cache: c, IDs: []int{5 + i}})
				}
				var f []float32
				for range 3 { // three decode steps of five streams
					outs, err := m.Forward(seqs, ForwardOptions{Hidden: true})
					if err != nil {
						t.Fatal(err)
					}
					f = append(f, flatten(outs...)...)
				}
				return f
			}
			requireBitwise(t, "decode batch", run(false), run(true))
		})
	}
}

func TestOwnBlocks(t *testing.T) {
	a, b, c := &Cache{}, &Cache{}, &Cache{}
	rows := []row{{a, 7}, {a, 8}, {b, 3}, {c, 0}} // Forward keeps a sequence's rows adjacent
	for _, tc := range []struct {
		starts []int
		want   bool
	}{
		{[]int{0, 2, 3, 4}, true},
		{[]int{0, 1, 2, 3, 4}, false}, // a over two blocks
	} {
		if got := ownBlocks(rows, tc.starts); got != tc.want {
			t.Errorf("ownBlocks(%v) = %v, want %v", tc.starts, got, tc.want)
		}
	}
}
