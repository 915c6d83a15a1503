package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Go's encoding/json matches object keys to struct fields case-insensitively
// and keeps the last of repeated keys, where other parsers (the upstream's,
// the client's) may match exactly or keep the first. A body the proxy reads
// differently from them would let the guard judge other text than the one
// the model receives or the client shows, so every JSON the proxy decodes
// passes strictJSON first.

// shape is what strictJSON knows of a JSON value: the fields an object
// is decoded into (the keys must match them exactly) and the shape of
// array elements. A nil shape is a value the proxy does not decode (its
// objects are still checked for repeated keys).
type shape struct {
	fields map[string]*shape
	elem   *shape
	// closed: the value is null or an object whose keys outside fields
	// hold no text (textless). A choice, its delta and its message are
	// closed: whatever a client may show of them is judged, or named in
	// fields as carrying no model text, so that a field the proxy does not
	// know (an audio answer's transcript, logprobs, a legacy "text") is
	// refused instead of forwarded unjudged.
	closed bool
	// scalar: the value is not an object or an array.
	scalar bool
}

func object(fields map[string]*shape) *shape { return &shape{fields: fields} }
func closedObject(fields map[string]*shape) *shape {
	return &shape{fields: fields, closed: true}
}
func arrayOf(elem *shape) *shape { return &shape{elem: elem} }

// scalar is a field that must hold a string, a number, a boolean or null.
var scalar = &shape{scalar: true}

var (
	// requestShape is what parseRequest decodes; content is a string or an
	// array of parts.
	requestShape = object(map[string]*shape{
		"model": nil, "stream": nil, "n": nil, "stream_options": object(map[string]*shape{"include_usage": nil}),
		"logprobs": nil, "modalities": nil, "tools": nil, "functions": nil,
		"response_format": object(map[string]*shape{"json_schema": nil}), "documents": nil, "chat_template": nil, "chat_template_kwargs": nil, "plugins": nil, "data_sources": nil,
		"messages": arrayOf(object(map[string]*shape{
			"role": nil, "reasoning_content": nil, "reasoning": nil, "reasoning_details": nil,
			"tool_calls": arrayOf(requestCallShape), "function_call": requestFunctionShape,
			"content": {elem: object(map[string]*shape{"type": nil, "text": nil, "refusal": nil, "thinking": nil})},
		})),
	})
	// requestCallShape and requestFunctionShape are the tool calls of a
	// request's messages, as chatmsg.ToolCalls reads them: open (a client
	// may send more), but what it reads is matched exactly, as an upstream
	// that decodes with Go's encoding/json (Ollama) would take an
	// "ARGUMENTS" after "arguments" for the arguments.
	requestFunctionShape = object(map[string]*shape{"name": nil, "arguments": nil})
	requestCallShape     = object(map[string]*shape{
		"id": nil, "type": nil, "index": nil, "function": requestFunctionShape,
		"custom": object(map[string]*shape{"name": nil, "input": nil}),
	})

	// deltaShape and messageShape are a delta and a message (textShape).
	deltaShape   = textShape(false)
	messageShape = textShape(true)

	// choiceFields are the fields of a choice, less delta or message:
	// index and finish_reason; logprobs, which must hold no entries (their
	// tokens and top_logprobs alternatives spell text the guard does not
	// judge, see parseRequest); the legacy "text", accepted only as a copy
	// of the content (checkLegacyText); why generation stopped, as vLLM
	// (stop_reason), SGLang (matched_stop) and OpenRouter
	// (native_finish_reason) say it: a token id or one of the client's own
	// stop strings; and Azure's content_filter_results (categories and
	// severities, no text).
	choiceFields = map[string]*shape{
		"index": scalar, "finish_reason": scalar, "logprobs": closedObject(nil), "text": scalar,
		"stop_reason": scalar, "matched_stop": scalar, "native_finish_reason": scalar, "content_filter_results": nil,
		"content_filter_offsets": closedObject(nil),
	}
	// chunkShape is a streamed chunk; completionShape a whole response.
	chunkShape = object(map[string]*shape{
		"id": nil, "object": nil, "created": nil, "model": nil, "system_fingerprint": nil, "error": nil, "usage": nil,
		"choices": arrayOf(closedObject(with(choiceFields, "delta", deltaShape))),
	})
	completionShape = object(map[string]*shape{
		"id": nil, "object": nil, "created": nil, "model": nil, "system_fingerprint": nil, "error": nil,
		"choices": arrayOf(closedObject(with(choiceFields, "message", messageShape))),
	})
)

// textShape is a delta or, whole, a message: the judged text fields (tool
// calls among them), and those that carry no text of the answer: the role
// and annotations (the URLs and titles of cited sources).
func textShape(whole bool) *shape {
	return closedObject(map[string]*shape{
		"content": nil, "reasoning_content": nil, "reasoning": nil, "refusal": nil, "role": scalar,
		"tool_calls": arrayOf(toolCallShape(whole)), "function_call": functionShape(whole), "annotations": nil,
		"reasoning_details": arrayOf(closedObject(map[string]*shape{
			"type": scalar, "text": scalar, "summary": scalar, "data": scalar, "signature": scalar, "format": scalar, "id": scalar, "index": scalar,
		})),
	})
}

// with is fields plus one more.
func with(fields map[string]*shape, key string, sh *shape) map[string]*shape {
	out := map[string]*shape{key: sh}
	for k, v := range fields {
		out[k] = v
	}
	return out
}

// maxJSONDepth bounds nesting (encoding/json allows 10000).
const maxJSONDepth = 512

// strictJSON checks that data is one JSON value in valid UTF-8 whose
// objects repeat no key and, where sh knows the fields, name none of them
// in another case (such as "Content" for "content"). It checks only that;
// decoding follows.
func strictJSON(data []byte, sh *shape) error {
	_, err := strictKeys(data, sh)
	return err
}

// strictKeys is strictJSON that also returns the keys of the value when
// it is an object (nil otherwise): what a reader that dispatches on the
// members present needs, without decoding the value again.
func strictKeys(data []byte, sh *shape) (map[string]bool, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("invalid UTF-8")
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var keys map[string]bool
	if err := strictValue(d, sh, 0, &keys); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return keys, nil
}

// strictValue reads one value (strictJSON); keys, when not nil, gets the
// keys of an object.
func strictValue(d *json.Decoder, sh *shape, depth int, keys *map[string]bool) error {
	if depth > maxJSONDepth {
		return errors.New("JSON nested too deeply")
	}
	tok, err := d.Token()
	if err != nil {
		return err
	}
	delim, ok := tok.(json.Delim)
	switch {
	case sh == nil:
	case sh.scalar && ok:
		return errors.New("an object or array where a string, number or null belongs")
	case sh.closed && tok != nil && delim != '{':
		return errors.New("a value that is not an object where a choice, delta or message belongs")
	}
	if !ok {
		return nil
	}
	switch delim {
	case '[':
		var elem *shape
		if sh != nil {
			elem = sh.elem
		}
		for d.More() {
			if err := strictValue(d, elem, depth+1, nil); err != nil {
				return err
			}
		}
	case '{':
		seen := map[string]bool{}
		if keys != nil {
			*keys = seen
		}
		for d.More() {
			tok, err := d.Token()
			if err != nil {
				return err
			}
			key, ok := tok.(string)
			if !ok {
				return errors.New("object key is not a string")
			}
			if seen[key] {
				return fmt.Errorf("key %q repeated", key)
			}
			seen[key] = true
			var child *shape
			known := true
			if sh != nil && (sh.fields != nil || sh.closed) {
				child, known = sh.fields[key]
				if !known {
					for f := range sh.fields {
						if strings.EqualFold(f, key) {
							return fmt.Errorf("key %q differs from %q only by case", key, f)
						}
					}
				}
			}
			if !known && sh.closed {
				if err := textless(d); err != nil {
					return fmt.Errorf("field %q %v", key, err)
				}
				continue
			}
			if err := strictValue(d, child, depth+1, nil); err != nil {
				if child != nil && (child.scalar || child.closed) {
					return fmt.Errorf("in %q: %v", key, err)
				}
				return err
			}
		}
	}
	_, err = d.Token() // the closing delimiter
	return err
}

// textless reads a value that must carry no text: null, a boolean, a
// number, "", [] or {}. A field the proxy does not know may hold one (vLLM
// sends "audio": null, Together a token id), never a string or anything
// nested, which could hold the model's text.
func textless(d *json.Decoder) error {
	tok, err := d.Token()
	if err != nil {
		return err
	}
	bad := errors.New("holds what streamguard does not judge (a field it does not know must be null, a number, a boolean or empty)")
	switch v := tok.(type) {
	case string:
		if v != "" {
			return bad
		}
	case json.Delim:
		if d.More() {
			return bad
		}
		_, err = d.Token() // the closing delimiter
		return err
	}
	return nil
}
