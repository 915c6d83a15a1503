package train

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"math"
	"runtime"
	"slices"

	"golang.org/x/sys/cpu"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/kernels"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// featureFormat names the meaning of cached features; change it whenever
// what a feature row holds changes.
const featureFormat = "streamguard train-heads features v1"

// probeLen is the length of the token sequence whose hidden states
// fingerprint the engine's arithmetic.
const probeLen = 16

// backboneKey fingerprints everything a hidden state depends on: the bytes
// of every backbone tensor (the guard heads excluded, so retraining the
// heads of a model reuses its features), the backbone's config fields, and
// the engine's arithmetic on this machine: the hidden states of a fixed
// probe sequence, which change with the kernels (AVX2 and AVX-512 round
// differently), the activation quantization of INT4 models, or any other
// numerical change of the engine.
func backboneKey(set *safetensors.Set, cfg *config.Config, bb backbone) (string, error) {
	var names []string
	for _, n := range set.Names() {
		if !slices.Contains(checkpoint.HeadNames, n) {
			names = append(names, n)
		}
	}
	digests := make([][]byte, len(names))
	errs := make([]error, len(names))
	kernels.ParallelFor(len(names), kernels.Threads(), func(_, j int) {
		t, err := set.Tensor(names[j])
		if err != nil {
			errs[j] = err
			return
		}
		h := sha256.New()
		fmt.Fprintf(h, "%s %s %v\n", t.Name, t.DType, t.Shape)
		h.Write(t.Data)
		digests[j] = h.Sum(nil)
	})
	for _, err := range errs {
		if err != nil {
			return "", err
		}
	}

	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s/%s\n%+v\n%+v\n", featureFormat, runtime.GOOS, runtime.GOARCH, cpu.X86, cpu.ARM64)
	b, err := json.Marshal(backboneConfig(cfg))
	if err != nil {
		return "", err
	}
	h.Write(b)
	for _, d := range digests {
		h.Write(d)
	}
	if err := probe(h, bb); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// backboneConfig is the part of config.json the hidden states depend on.
func backboneConfig(c *config.Config) any {
	return struct {
		Vocab, Hidden, Inter, Layers, Heads, KVHeads, HeadDim, MaxPos int
		Eps, Theta                                                    float64
		Quant                                                         *config.Quantization
	}{c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads,
		c.HeadDim, c.MaxPositionEmbeddings, c.RMSNormEps, c.RopeTheta, c.QuantizationConfig}
}

// probe writes the hidden states of a fixed sequence to h, as the
// backbone's device computes them (features from two devices never share
// a key).
func probe(h hash.Hash, bb backbone) error {
	ids := make([]int, probeLen)
	for i := range ids {
		ids[i] = (i*7919 + 13) % bb.net.VocabSize()
	}
	out, err := bb.forward([][]int{ids})
	if err != nil {
		return fmt.Errorf("probe forward: %w", err)
	}
	var b [4]byte
	for _, row := range out[0].Hidden {
		for _, v := range row {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
			h.Write(b[:])
		}
	}
	return nil
}

// featureKey is the cache key of one data file's features: the backbone
// key and exactly the ids fed and positions read.
func featureKey(backbone string, convs []*Conversation, positions [][]int) string {
	h := sha256.New()
	h.Write([]byte(backbone))
	var b []byte
	for i, c := range convs {
		n := feedLen(c, positions[i])
		b = binary.AppendUvarint(b[:0], uint64(n))
		for _, id := range c.IDs[:n] {
			b = binary.AppendUvarint(b, uint64(id))
		}
		b = binary.AppendUvarint(b, uint64(len(positions[i])))
		for _, p := range positions[i] {
			b = binary.AppendUvarint(b, uint64(p))
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:40]
}
