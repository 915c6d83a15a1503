package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/streamguard/streamguard/internal/mmap"
)

// qwen2SplitPattern is the only split pattern the hand-written scanner
// implements; any other pattern is refused rather than approximated.
const qwen2SplitPattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// Tokenizer encodes and decodes text with one loaded tokenizer.json.
type Tokenizer struct {
	vocab         map[string]int // model vocabulary, byte-level form: use vocabMap
	vocabLen      int            // entries of the model vocabulary
	vocabOnce     sync.Once
	vocabLazy     func() map[string]int // builds vocab on first use (fromTables)
	idToken       []string              // id -> token (byte-level form for the model, content for added tokens)
	present       []bool                // id has a token
	special       []bool                // id is an added token marked special
	idBytes       []byte                // decoded bytes of every id, back to back
	idOff         []uint32              // idBytes[idOff[id]:idOff[id+1]]
	maxTokenBytes int                   // the longest idBytes entry of a vocabulary (not added) token
	byteID        [256]int32            // the one-byte token of each byte
	merges        map[uint64]uint64
	added         addedMatcher
	nfc           bool
	ignoreMrg     bool
	cache         pieceCache
}

// MaxFileBytes bounds a tokenizer.json, and what a tokenizer.json.gz may
// decompress to; the Qwen3 one is about 11 MiB.
const MaxFileBytes = 64 << 20

// Load reads a tokenizer from a model folder (its tokenizer.json) or from a
// tokenizer.json path; a path ending in .gz is decompressed.
func Load(path string) (*Tokenizer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		path = filepath.Join(path, "tokenizer.json")
	}
	// Mapped, not read: the stock tokenizer is only hashed (it is built
	// from the embedded tables), and a parse copies what it keeps.
	f, st, err := mmap.OpenFile(path)
	if errors.Is(err, mmap.ErrNotRegular) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err != nil {
		return nil, err
	}
	// The bound checkpoint.CheckTokenizerFile applies, here for every
	// caller: a parse allocates in proportion to the file.
	if st.Size() > MaxFileBytes {
		f.Close()
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed for a tokenizer.json", path, st.Size(), MaxFileBytes)
	}
	var b []byte
	if st.Size() > 0 {
		b, err = mmap.Map(f, int(st.Size()))
	}
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer mmap.Unmap(b)
	if strings.HasSuffix(path, ".gz") {
		if b, err = gunzip(b); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	t, err := FromJSONShared(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

type fileJSON struct {
	Truncation    json.RawMessage  `json:"truncation"`
	Padding       json.RawMessage  `json:"padding"`
	AddedTokens   []addedTokenJSON `json:"added_tokens"`
	Normalizer    json.RawMessage  `json:"normalizer"`
	PreTokenizer  json.RawMessage  `json:"pre_tokenizer"`
	PostProcessor json.RawMessage  `json:"post_processor"`
	Decoder       json.RawMessage  `json:"decoder"`
	Model         *modelJSON       `json:"model"`
}

type addedTokenJSON struct {
	ID         *int   `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type modelJSON struct {
	Type                    string   `json:"type"`
	Dropout                 *float64 `json:"dropout"`
	ContinuingSubwordPrefix *string  `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string  `json:"end_of_word_suffix"`
	ByteFallback            bool     `json:"byte_fallback"`
	IgnoreMerges            bool     `json:"ignore_merges"`
}

// component is the part of every tokenizers component object this package
// inspects.
type component struct {
	Type          string            `json:"type"`
	Normalizers   []json.RawMessage `json:"normalizers"`
	Pretokenizers []json.RawMessage `json:"pretokenizers"`
	Pattern       *struct {
		Regex  *string `json:"Regex"`
		String *string `json:"String"`
	} `json:"pattern"`
	Behavior       string `json:"behavior"`
	Invert         bool   `json:"invert"`
	AddPrefixSpace bool   `json:"add_prefix_space"`
	UseRegex       bool   `json:"use_regex"`
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

func parseComponent(what string, raw json.RawMessage) (component, error) {
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("%s: %w", what, err)
	}
	return c, nil
}

// FromJSON builds a tokenizer from the contents of a tokenizer.json.
func FromJSON(b []byte) (*Tokenizer, error) {
	rest, tb, err := splitTables(b)
	if err != nil {
		return nil, err
	}
	return build(rest, func(t *Tokenizer, m *modelJSON) error { return t.loadModel(m, tb.vocab, tb.merges) })
}

// build makes a tokenizer from rest, a tokenizer.json whose vocab and
// merges were cut out, and model, which loads them.
func build(rest []byte, model func(*Tokenizer, *modelJSON) error) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(rest, &f); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if !isNull(f.Truncation) {
		return nil, fmt.Errorf("tokenizer.json: truncation is set; only untruncated encoding is supported")
	}
	if !isNull(f.Padding) {
		return nil, fmt.Errorf("tokenizer.json: padding is set; only unpadded encoding is supported")
	}
	t := &Tokenizer{}
	var err error
	if t.nfc, err = checkNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	if err := checkPreTokenizer(f.PreTokenizer); err != nil {
		return nil, err
	}
	if err := checkPostProcessor(f.PostProcessor); err != nil {
		return nil, err
	}
	if err := checkDecoder(f.Decoder); err != nil {
		return nil, err
	}
	if err := model(t, f.Model); err != nil {
		return nil, err
	}
	if err := t.loadAdded(f.AddedTokens); err != nil {
		return nil, err
	}
	t.buildDecodeTable()
	t.cache.init()
	initClasses()
	return t, nil
}

func checkNormalizer(raw json.RawMessage) (nfc bool, err error) {
	if isNull(raw) {
		return false, nil
	}
	c, err := parseComponent("normalizer", raw)
	if err != nil {
		return false, err
	}
	switch c.Type {
	case "NFC":
		return true, nil
	case "Sequence":
		// A sequence holding only NFC steps is NFC (NFC is idempotent).
		for i, sub := range c.Normalizers {
			s, err := parseComponent("normalizer", sub)
			if err != nil {
				return false, err
			}
			if s.Type != "NFC" {
				return false, fmt.Errorf("normalizer: Sequence step %d is %q; only NFC is supported", i, s.Type)
			}
			nfc = true
		}
		return nfc, nil
	}
	return false, fmt.Errorf("normalizer: type %q is not supported (only NFC)", c.Type)
}

func checkPreTokenizer(raw json.RawMessage) error {
	if isNull(raw) {
		return fmt.Errorf("pre_tokenizer: missing; only Sequence[Split(Qwen2 pattern), ByteLevel] is supported")
	}
	c, err := parseComponent("pre_tokenizer", raw)
	if err != nil {
		return err
	}
	if c.Type != "Sequence" || len(c.Pretokenizers) != 2 {
		return fmt.Errorf("pre_tokenizer: type %q is not supported (only Sequence[Split(Qwen2 pattern), ByteLevel])", c.Type)
	}
	split, err := parseComponent("pre_tokenizer", c.Pretokenizers[0])
	if err != nil {
		return err
	}
	if split.Type != "Split" {
		return fmt.Errorf("pre_tokenizer: first step %q is not supported (want Split)", split.Type)
	}
	if split.Pattern == nil || split.Pattern.Regex == nil {
		return fmt.Errorf("pre_tokenizer: Split must use a Regex pattern")
	}
	if *split.Pattern.Regex != qwen2SplitPattern {
		return fmt.Errorf("pre_tokenizer: Split pattern %q is not supported (only the Qwen2 pattern)", *split.Pattern.Regex)
	}
	if split.Behavior != "Isolated" || split.Invert {
		return fmt.Errorf("pre_tokenizer: Split behavior %q invert=%v is not supported (only Isolated, invert false)", split.Behavior, split.Invert)
	}
	bl, err := parseComponent("pre_tokenizer", c.Pretokenizers[1])
	if err != nil {
		return err
	}
	if bl.Type != "ByteLevel" {
		return fmt.Errorf("pre_tokenizer: second step %q is not supported (want ByteLevel)", bl.Type)
	}
	if bl.AddPrefixSpace || bl.UseRegex {
		return fmt.Errorf("pre_tokenizer: ByteLevel with add_prefix_space=%v use_regex=%v is not supported (only false, false)", bl.AddPrefixSpace, bl.UseRegex)
	}
	return nil
}

func checkPostProcessor(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	c, err := parseComponent("post_processor", raw)
	if err != nil {
		return err
	}
	// ByteLevel post-processing only trims offsets, which this package does
	// not report; anything else could add tokens.
	if c.Type != "ByteLevel" {
		return fmt.Errorf("post_processor: type %q is not supported (only ByteLevel or none)", c.Type)
	}
	return nil
}

func checkDecoder(raw json.RawMessage) error {
	if isNull(raw) {
		return fmt.Errorf("decoder: missing; only ByteLevel is supported")
	}
	c, err := parseComponent("decoder", raw)
	if err != nil {
		return err
	}
	if c.Type != "ByteLevel" {
		return fmt.Errorf("decoder: type %q is not supported (only ByteLevel)", c.Type)
	}
	return nil
}

func (t *Tokenizer) loadModel(m *modelJSON, vocab map[string]int, merges [][2]string) error {
	if err := t.checkModel(m); err != nil {
		return err
	}
	if err := t.setVocab(vocab); err != nil {
		return err
	}
	t.merges = make(map[uint64]uint64, len(merges))
	var cat []byte
	for rank, mg := range merges {
		a, ok1 := vocab[mg[0]]
		b, ok2 := vocab[mg[1]]
		cat = append(append(cat[:0], mg[0]...), mg[1]...)
		c, ok3 := vocab[string(cat)]
		if !ok1 || !ok2 || !ok3 {
			return fmt.Errorf("model: merge %d %q %q uses a token missing from the vocab", rank, mg[0], mg[1])
		}
		if err := t.addMerge(rank, a, b, c); err != nil {
			return err
		}
	}
	return nil
}

// checkModel refuses BPE options the encoder does not implement.
func (t *Tokenizer) checkModel(m *modelJSON) error {
	if m == nil {
		return fmt.Errorf("model: missing")
	}
	if m.Type != "BPE" {
		return fmt.Errorf("model: type %q is not supported (only BPE)", m.Type)
	}
	if m.Dropout != nil && *m.Dropout != 0 {
		return fmt.Errorf("model: BPE dropout %v is not supported", *m.Dropout)
	}
	if m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "" {
		return fmt.Errorf("model: continuing_subword_prefix %q is not supported", *m.ContinuingSubwordPrefix)
	}
	if m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "" {
		return fmt.Errorf("model: end_of_word_suffix %q is not supported", *m.EndOfWordSuffix)
	}
	if m.ByteFallback {
		return fmt.Errorf("model: byte_fallback is not supported")
	}
	t.ignoreMrg = m.IgnoreMerges
	return nil
}

// setVocab installs the model vocabulary and the tables derived from it.
func (t *Tokenizer) setVocab(vocab map[string]int) error {
	if len(vocab) == 0 {
		return fmt.Errorf("model: empty vocab")
	}
	t.vocab, t.vocabLen = vocab, len(vocab)
	maxID := -1
	for tok, id := range vocab {
		if id < 0 || id > maxDenseID(len(vocab)) {
			return fmt.Errorf("model: vocab token %q has id %d out of range", tok, id)
		}
		maxID = max(maxID, id)
	}
	t.idToken = make([]string, maxID+1)
	t.present = make([]bool, maxID+1)
	for tok, id := range vocab {
		if t.present[id] {
			return fmt.Errorf("model: vocab id %d is used by %q and %q", id, t.idToken[id], tok)
		}
		t.idToken[id] = tok
		t.present[id] = true
	}
	for b := 0; b < 256; b++ {
		id, ok := vocab[string(byteToRune[b])]
		if !ok {
			return errNoByteSymbol(b)
		}
		t.byteID[b] = int32(id)
	}
	return nil
}

// errNoByteSymbol is the error for a vocabulary without the byte-level
// symbol of byte b: the encoder needs a token for every byte.
func errNoByteSymbol(b int) error {
	return fmt.Errorf("model: vocab lacks the byte-level symbol %q for byte 0x%02x", string(byteToRune[b]), b)
}

// vocabMap is the model vocabulary, built on first use where the loader
// deferred it (vocabLazy): only TokenID and tokenizers that ignore merges
// look tokens up by text.
func (t *Tokenizer) vocabMap() map[string]int {
	t.vocabOnce.Do(func() {
		if t.vocabLazy != nil {
			t.vocab, t.vocabLazy = t.vocabLazy(), nil
		}
	})
	return t.vocab
}

// addMerge records merge rank: tokens a and b make c.
func (t *Tokenizer) addMerge(rank, a, b, c int) error {
	if t.merges == nil {
		t.merges = make(map[uint64]uint64)
	}
	key := uint64(a)<<32 | uint64(b)
	// One hash per merge: a key already present leaves the count as it
	// was.
	n := len(t.merges)
	t.merges[key] = uint64(rank)<<32 | uint64(c)
	if len(t.merges) == n {
		// Which rank would win is an accident of the reference
		// implementation's map building; refuse rather than guess.
		return fmt.Errorf("model: merge %d %q %q repeats an earlier merge", rank, t.idToken[a], t.idToken[b])
	}
	return nil
}

// maxDenseID bounds ids: tables are indexed by id, so a tokenizer.json with
// a few huge ids must not make the loader allocate gigabytes. Real
// vocabularies number their n tokens 0..n-1, give or take padding.
func maxDenseID(n int) int { return 2*n + 1<<16 }

func (t *Tokenizer) loadAdded(toks []addedTokenJSON) error {
	// An added token may take the id of a vocabulary token only when its
	// text is that token's (tokenizers gives an added token the id of the
	// vocabulary entry spelled the same). With other text it would replace
	// the token the id decodes to, while the merges that make the
	// vocabulary token still produce the id: plain text would encode to
	// the added, possibly special, token. Checked before any added token
	// is installed, so that t.present is the vocabulary's alone.
	for i, a := range toks {
		if a.ID == nil || *a.ID < 0 || *a.ID >= len(t.idToken) {
			continue // out of the vocabulary's range, or refused below
		}
		if id := *a.ID; t.present[id] && t.idToken[id] != a.Content {
			return fmt.Errorf("added_tokens[%d] %q: id %d is the vocabulary token %q", i, a.Content, id, t.idToken[id])
		}
	}
	for i, a := range toks {
		if a.ID == nil || *a.ID < 0 || *a.ID > maxDenseID(t.vocabLen+len(toks)) {
			return fmt.Errorf("added_tokens[%d] %q: missing or out-of-range id", i, a.Content)
		}
		if a.Content == "" {
			return fmt.Errorf("added_tokens[%d]: empty content", i)
		}
		if a.SingleWord || a.LStrip || a.RStrip {
			return fmt.Errorf("added_tokens[%d] %q: single_word/lstrip/rstrip are not supported", i, a.Content)
		}
		if a.Normalized {
			return fmt.Errorf("added_tokens[%d] %q: normalized added tokens are not supported", i, a.Content)
		}
		id := *a.ID
		if id >= len(t.idToken) {
			// Grown to the largest added id at once: the added tokens
			// usually follow the vocabulary, one id each.
			n := id + 1
			for _, b := range toks[i+1:] {
				if b.ID != nil && *b.ID >= n && *b.ID <= maxDenseID(t.vocabLen+len(toks)) {
					n = *b.ID + 1
				}
			}
			t.idToken = append(t.idToken, make([]string, n-len(t.idToken))...)
			t.present = append(t.present, make([]bool, n-len(t.present))...)
		}
		t.idToken[id] = a.Content
		t.present[id] = true
		if err := t.added.add(a.Content, id); err != nil {
			return fmt.Errorf("added_tokens[%d]: %w", i, err)
		}
	}
	t.special = make([]bool, len(t.idToken))
	for _, a := range toks {
		if a.Special {
			t.special[*a.ID] = true
		}
	}
	t.added.finish()
	return nil
}

// VocabSize is one more than the largest id of the vocabulary and the added
// tokens.
func (t *Tokenizer) VocabSize() int { return len(t.idToken) }

// TokenID returns the id of a token: an added token's content, or a
// vocabulary entry in its byte-level form (a space is "Ġ").
func (t *Tokenizer) TokenID(tok string) (int, bool) {
	if id, ok := t.added.ids[tok]; ok {
		return id, true
	}
	id, ok := t.vocabMap()[tok]
	return id, ok
}

// IDToken returns the token of an id, as TokenID takes it.
func (t *Tokenizer) IDToken(id int) (string, bool) {
	if id < 0 || id >= len(t.idToken) || !t.present[id] {
		return "", false
	}
	return t.idToken[id], true
}

// IsSpecial reports whether id is an added token marked special, the ones
// Decode drops when skipSpecial is set.
func (t *Tokenizer) IsSpecial(id int) bool {
	return id >= 0 && id < len(t.special) && t.special[id]
}

// IsAdded reports whether id is an added token, special or not: one of the
// tokens only the chat scaffold writes, since text never encodes to them.
func (t *Tokenizer) IsAdded(id int) bool {
	s, ok := t.IDToken(id)
	if !ok {
		return false
	}
	aid, ok := t.added.ids[s]
	return ok && aid == id
}
