package tokenizer

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
)

// Ids of the Qwen3 added tokens the guard and the chat template use.
const (
	EndOfText = 151643 // <|endoftext|>
	ImStart   = 151644 // <|im_start|>
	ImEnd     = 151645 // <|im_end|>
	Think     = 151667 // <think>
	ThinkEnd  = 151668 // </think>
)

// The Qwen3 tokenizer files are embedded so that tools and tests work
// without a model folder; qwen3data/ holds them gzipped (see PROVENANCE.md
// in testdata/qwen3-tokenizer).
var (
	//go:embed qwen3data/tokenizer.json.gz
	qwen3TokenizerGz []byte
	//go:embed qwen3data/tokenizer_config.json.gz
	qwen3ConfigGz []byte
)

// Qwen3Files returns the embedded Qwen3 tokenizer.json and
// tokenizer_config.json, uncompressed, in fresh slices the caller may keep.
func Qwen3Files() (tokenizerJSON, tokenizerConfig []byte, err error) {
	tokenizerJSON, err = gunzip(qwen3TokenizerGz)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded qwen3 tokenizer.json: %w", err)
	}
	tokenizerConfig, err = gunzip(qwen3ConfigGz)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded qwen3 tokenizer_config.json: %w", err)
	}
	return tokenizerJSON, tokenizerConfig, nil
}

var qwen3 struct {
	once sync.Once
	tok  *Tokenizer
	err  error
}

// Qwen3SHA256 is the SHA-256 of the official Qwen3 tokenizer.json, the file
// embedded here (a test checks they agree).
const Qwen3SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"

// LoadQwen3 returns the embedded Qwen3 tokenizer. Parsing takes a noticeable
// fraction of a second, so it happens once per process and every caller
// shares the result (a Tokenizer is safe for concurrent use).
func LoadQwen3() (*Tokenizer, error) {
	return sharedQwen3(func() ([]byte, error) { return gunzip(qwen3TokenizerGz) })
}

// FromJSONShared is FromJSON, except that when b is the official Qwen3
// tokenizer.json (by SHA-256) it returns the copy LoadQwen3 shares, parsed
// from b when no caller has parsed it yet: a model folder's stock
// tokenizer then costs one parse per process and no decompression.
func FromJSONShared(b []byte) (*Tokenizer, error) {
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != Qwen3SHA256 {
		return FromJSON(b)
	}
	return sharedQwen3(func() ([]byte, error) { return b, nil })
}

// sharedQwen3 parses the Qwen3 tokenizer.json that src gives, once per
// process.
func sharedQwen3(src func() ([]byte, error)) (*Tokenizer, error) {
	qwen3.once.Do(func() {
		b, err := src()
		if err != nil {
			qwen3.err = fmt.Errorf("embedded qwen3 tokenizer.json: %w", err)
			return
		}
		qwen3.tok, qwen3.err = FromJSON(b)
		if qwen3.err != nil {
			qwen3.err = fmt.Errorf("qwen3 tokenizer.json: %w", qwen3.err)
		}
	})
	return qwen3.tok, qwen3.err
}

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	return out, zr.Close()
}
