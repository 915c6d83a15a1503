package tokenizer

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
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

	ToolCallStart     = 151657 // <tool_call>
	ToolCallEnd       = 151658 // </tool_call>
	ToolResponseStart = 151665 // <tool_response>
	ToolResponseEnd   = 151666 // </tool_response>
)

//go:generate go test -run TestQwen3Tables -update .

// The Qwen3 tokenizer files are embedded so that tools and tests work
// without a model folder; qwen3data/ holds them gzipped (see PROVENANCE.md
// in testdata/qwen3-tokenizer).
var (
	//go:embed qwen3data/tokenizer.json.gz
	qwen3TokenizerGz []byte
	//go:embed qwen3data/tokenizer_config.json.gz
	qwen3ConfigGz []byte
	// qwen3Tables is the same tokenizer as tables (see tables.go), stored
	// uncompressed: decompressing them took longer than building from them.
	//go:embed qwen3data/tables.bin
	qwen3Tables []byte
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

// LoadQwen3 returns the embedded Qwen3 tokenizer. It is built once per
// process, from tables made for the purpose (see tables.go), and every
// caller shares the result (a Tokenizer is safe for concurrent use).
func LoadQwen3() (*Tokenizer, error) {
	qwen3.once.Do(func() {
		var sum [32]byte
		hex.Decode(sum[:], []byte(Qwen3SHA256))
		var err error
		if qwen3.tok, err = fromTables(qwen3Tables, sum); err != nil {
			qwen3.err = fmt.Errorf("embedded qwen3 tokenizer: %w", err)
		}
	})
	return qwen3.tok, qwen3.err
}

// FromJSONShared is FromJSON, except that when b is the official Qwen3
// tokenizer.json (by SHA-256) it returns the tokenizer LoadQwen3 shares:
// a model folder's stock tokenizer then costs no parse at all.
func FromJSONShared(b []byte) (*Tokenizer, error) {
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != Qwen3SHA256 {
		return FromJSON(b)
	}
	return LoadQwen3()
}

// gunzip decompresses b, refusing more than MaxFileBytes of output: a few
// KiB of gzip can expand a thousandfold, and the bound a tokenizer.json
// has on disk must hold for what a .gz expands to as well.
func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	// The trailer's ISIZE is the (last member's) size modulo 2^32: a
	// claim only, but one over the bound cannot come from a file within
	// it, and an honest one sizes the buffer so the read allocates once
	// (the extra byte is where EOF shows). A lying one costs doubling the
	// buffer up to one byte past the bound, no further.
	var hint int
	if len(b) >= 4 {
		hint = int(binary.LittleEndian.Uint32(b[len(b)-4:]))
	}
	tooBig := fmt.Errorf("decompresses to more than the %d bytes allowed for a tokenizer.json", MaxFileBytes)
	if hint > MaxFileBytes {
		return nil, tooBig
	}
	out := make([]byte, 0, hint+1)
	for {
		if len(out) == cap(out) {
			if len(out) > MaxFileBytes {
				return nil, tooBig
			}
			grown := make([]byte, len(out), min(2*cap(out)+bytes.MinRead, MaxFileBytes+1))
			copy(grown, out)
			out = grown
		}
		n, err := zr.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if len(out) > MaxFileBytes {
		return nil, tooBig
	}
	return out, zr.Close()
}
