package quantize

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// Doc is one calibration or evaluation document: plain text, or a chat
// rendered with the Qwen3 template.
type Doc struct {
	Text     string              `json:"text,omitempty"`
	Messages []tokenizer.Message `json:"messages,omitempty"`
}

// Dataset is a named list of documents.
type Dataset struct {
	// Source describes where the documents came from, for provenance:
	// "built-in (32 documents)" or "file NAME sha256:HEX".
	Source string
	Docs   []Doc
}

// DefaultCalibration is the built-in calibration set.
func DefaultCalibration() *Dataset {
	return &Dataset{Source: fmt.Sprintf("built-in (%d documents)", len(defaultCalibration)), Docs: defaultCalibration}
}

// DefaultHeldOut is the built-in set of conversations the quality report
// runs.
func DefaultHeldOut() *Dataset {
	return &Dataset{Source: fmt.Sprintf("built-in (%d conversations)", len(defaultHeldOut)), Docs: defaultHeldOut}
}

// maxCalibFile bounds a calibration file; calibration uses at most a few
// hundred thousand tokens.
const maxCalibFile = 256 << 20

// ReadDataset reads a calibration file. A .jsonl or .json file holds one
// JSON object per line with either "text" (a string) or "messages" (chat
// turns with role and content, rendered with the chat template); blank
// lines are skipped. Any other file is plain text whose documents are
// separated by blank lines.
func ReadDataset(path string) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCalibFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxCalibFile {
		return nil, fmt.Errorf("%s: larger than %d MiB; calibration needs far less text", path, maxCalibFile>>20)
	}
	var docs []Doc
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".json":
		docs, err = ParseJSONL(b)
	default:
		docs, err = ParseText(b)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no documents", path)
	}
	sum := sha256.Sum256(b)
	return &Dataset{Source: fmt.Sprintf("file %s sha256:%s (%d documents)", filepath.Base(path), hex.EncodeToString(sum[:]), len(docs)), Docs: docs}, nil
}

// ParseJSONL decodes JSON lines of {"text": ...} or {"messages": [...]}.
// Errors name the line.
func ParseJSONL(b []byte) ([]Doc, error) {
	var docs []Doc
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, maxCalibFile)
	for line := 1; sc.Scan(); line++ {
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		var v struct {
			Text     *string             `json:"text"`
			Messages []tokenizer.Message `json:"messages"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		switch {
		case v.Text != nil && v.Messages != nil:
			return nil, fmt.Errorf("line %d: has both \"text\" and \"messages\"; give one", line)
		case v.Text != nil:
			if strings.TrimSpace(*v.Text) == "" {
				return nil, fmt.Errorf("line %d: \"text\" is empty", line)
			}
			docs = append(docs, Doc{Text: *v.Text})
		case len(v.Messages) > 0:
			for i, m := range v.Messages {
				switch m.Role {
				case "system", "user", "assistant":
				default:
					return nil, fmt.Errorf("line %d: message %d: role %q is not system, user or assistant", line, i, m.Role)
				}
			}
			docs = append(docs, Doc{Messages: v.Messages})
		default:
			return nil, fmt.Errorf("line %d: needs \"text\" (a string) or \"messages\" (a non-empty list of chat turns)", line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return docs, nil
}

// ParseText splits plain text into documents at blank lines.
func ParseText(b []byte) ([]Doc, error) {
	if !isUTF8(b) {
		return nil, errors.New("not UTF-8 text")
	}
	var docs []Doc
	var cur []string
	flush := func() {
		if s := strings.TrimSpace(strings.Join(cur, "\n")); s != "" {
			docs = append(docs, Doc{Text: s})
		}
		cur = cur[:0]
	}
	for _, line := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n") {
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs, nil
}

func isUTF8(b []byte) bool { return strings.ToValidUTF8(string(b), "\uFFFD") == string(b) }

// Tokens renders and tokenizes one document.
func (d Doc) Tokens(tok *tokenizer.Tokenizer) ([]int, error) {
	if len(d.Messages) == 0 {
		return tok.Encode(d.Text), nil
	}
	c, err := tok.RenderChat(d.Messages)
	if err != nil {
		return nil, err
	}
	return c.IDs, nil
}

// Samples are the calibration sequences: the documents, shuffled with a
// seed, tokenized, concatenated and cut into sequences of one length (as
// AutoAWQ builds its blocks; the remainder is dropped).
type Samples struct {
	Seqs      [][]int
	SeqLen    int
	Available int // tokens in all documents
}

// Tokens is the number of tokens in all sequences.
func (s *Samples) Tokens() int {
	n := 0
	for _, q := range s.Seqs {
		n += len(q)
	}
	return n
}

// BuildSamples makes up to n sequences of seqLen tokens from ds. With too
// little text it makes as many full sequences as there are, or one shorter
// sequence when not even one fills up; it never repeats text.
func BuildSamples(tok *tokenizer.Tokenizer, ds *Dataset, n, seqLen int, seed uint64) (*Samples, error) {
	if n <= 0 || seqLen <= 0 {
		return nil, fmt.Errorf("need a positive number of samples and sequence length, got %d and %d", n, seqLen)
	}
	order := make([]int, len(ds.Docs))
	for i := range order {
		order[i] = i
	}
	rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	var all []int
	for _, i := range order {
		ids, err := ds.Docs[i].Tokens(tok)
		if err != nil {
			return nil, fmt.Errorf("calibration document %d: %w", i+1, err)
		}
		all = append(all, ids...)
		if len(all) >= n*seqLen {
			break
		}
	}
	s := &Samples{SeqLen: seqLen, Available: len(all)}
	for len(s.Seqs) < n && len(all) >= seqLen {
		s.Seqs = append(s.Seqs, all[:seqLen:seqLen])
		all = all[seqLen:]
	}
	if len(s.Seqs) == 0 {
		if len(all) == 0 {
			return nil, errors.New("calibration text tokenizes to nothing")
		}
		s.Seqs = [][]int{all}
		s.SeqLen = len(all)
	}
	return s, nil
}

// evalSeq is one held-out conversation: its ids and where its verdicts are
// read.
type evalSeq struct {
	ids []int
	// userEnd is the <|im_end|> closing the user turn (prompt verdict),
	// -1 if none; respFrom..respTo are the judged response tokens.
	userEnd, respFrom, respTo int
}

// buildEval tokenizes held-out documents, at most maxTokens tokens each.
func buildEval(tok *tokenizer.Tokenizer, ds *Dataset, maxTokens int) ([]evalSeq, error) {
	var out []evalSeq
	for i, d := range ds.Docs {
		e := evalSeq{userEnd: -1, respFrom: -1, respTo: -1}
		if len(d.Messages) == 0 {
			e.ids = tok.Encode(d.Text)
		} else {
			c, err := tok.RenderChat(d.Messages)
			if err != nil {
				return nil, fmt.Errorf("held-out document %d: %w", i+1, err)
			}
			e.ids, e.userEnd = c.IDs, c.UserEndIndex
			// Response verdicts start after "</think>\n\n" and stop before the closing <|im_end|>.
			for j := max(e.userEnd, 0); j+1 < len(e.ids); j++ {
				if e.ids[j] == tokenizer.ThinkEnd {
					e.respFrom = j + 2
					break
				}
			}
			for j := len(e.ids) - 1; j > e.respFrom && e.respFrom >= 0; j-- {
				if e.ids[j] == tokenizer.ImEnd {
					e.respTo = j
					break
				}
			}
			if e.respTo < 0 {
				e.respFrom = -1
			}
		}
		if len(e.ids) > maxTokens {
			e.ids = e.ids[:maxTokens]
			if e.userEnd >= maxTokens {
				e.userEnd = -1
			}
			e.respTo = min(e.respTo, maxTokens)
		}
		if len(e.ids) > 0 {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("held-out set tokenizes to nothing")
	}
	return out, nil
}
