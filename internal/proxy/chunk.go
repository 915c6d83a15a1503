package proxy

import (
	"bytes"
	"encoding/json"
	"time"
)

// chunkMeta is the metadata of a streamed chunk, kept in the chunks the
// proxy writes itself.
type chunkMeta struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Created           int64  `json:"created"`
	Model             string `json:"model"`
	SystemFingerprint string `json:"system_fingerprint,omitempty"`
}

// textFields are the text fields of a delta or message that the guard
// judges; a nil pointer is a field that is absent.
type textFields struct {
	Content          *string `json:"content"`
	ReasoningContent *string `json:"reasoning_content"`
	Reasoning        *string `json:"reasoning"`
}

// reasoning returns the reasoning text; servers name the field
// reasoning_content or reasoning, and some send both with the same text.
func (f *textFields) reasoning() string {
	switch {
	case f.ReasoningContent != nil:
		return *f.ReasoningContent
	case f.Reasoning != nil:
		return *f.Reasoning
	}
	return ""
}

type wireChunk struct {
	chunkMeta
	Choices []struct {
		Index        int        `json:"index"`
		Delta        textFields `json:"delta"`
		FinishReason *string    `json:"finish_reason"`
	} `json:"choices"`
	Error json.RawMessage `json:"error"`
}

// parsedEvent is what the relay needs from one upstream event.
type parsedEvent struct {
	done     bool // data: [DONE]
	isChunk  bool // a chunk the proxy could parse
	meta     chunkMeta
	index    int // the choice index of the text
	text     textFields
	finished bool            // finish_reason set
	apiErr   json.RawMessage // an error object sent inside the stream
}

func parseEvent(ev sseEvent) parsedEvent {
	if ev.data == nil {
		return parsedEvent{}
	}
	d := bytes.TrimSpace(ev.data)
	if string(d) == "[DONE]" {
		return parsedEvent{done: true}
	}
	var c wireChunk
	if err := json.Unmarshal(d, &c); err != nil {
		return parsedEvent{}
	}
	p := parsedEvent{isChunk: true, meta: c.chunkMeta}
	if len(c.Error) > 0 && string(c.Error) != "null" {
		p.apiErr = c.Error
	}
	if len(c.Choices) > 0 {
		ch := c.Choices[0]
		p.index, p.text = ch.Index, ch.Delta
		p.finished = ch.FinishReason != nil && *ch.FinishReason != ""
	}
	return p
}

// chunkOut is a chunk the proxy writes: a partial delta at a cut, the
// content_filter finish, or a refusal.
type chunkOut struct {
	chunkMeta
	Choices     []choiceOut `json:"choices"`
	Streamguard *cutInfo    `json:"streamguard,omitempty"`
}

type choiceOut struct {
	Index        int            `json:"index"`
	Delta        map[string]any `json:"delta"`
	FinishReason *string        `json:"finish_reason"`
}

// cutInfo tells the client why the stream ended (an extension field that
// OpenAI clients ignore).
type cutInfo struct {
	Reason   string `json:"reason"`
	Token    int    `json:"token"`
	Level    string `json:"level,omitempty"`
	Category string `json:"category,omitempty"`
	Request  string `json:"request_id,omitempty"`
}

func (c chunkOut) event() []byte {
	if c.Object == "" {
		c.Object = "chat.completion.chunk"
	}
	var b bytes.Buffer
	b.WriteString("data: ")
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(c)
	b.Truncate(b.Len() - 1)
	b.WriteString("\n\n")
	return b.Bytes()
}

var doneEvent = []byte("data: [DONE]\n\n")

const finishContentFilter = "content_filter"

func finishChunk(meta chunkMeta, index int, info *cutInfo) []byte {
	r := finishContentFilter
	return chunkOut{chunkMeta: meta, Choices: []choiceOut{{Index: index, Delta: map[string]any{}, FinishReason: &r}}, Streamguard: info}.event()
}

func deltaChunk(meta chunkMeta, index int, delta map[string]any) []byte {
	return chunkOut{chunkMeta: meta, Choices: []choiceOut{{Index: index, Delta: delta}}}.event()
}

// syntheticMeta is the metadata of a completion the proxy answers itself.
func syntheticMeta(id, model string) chunkMeta {
	return chunkMeta{ID: "chatcmpl-" + id, Object: "chat.completion.chunk", Created: time.Now().Unix(), Model: model}
}
