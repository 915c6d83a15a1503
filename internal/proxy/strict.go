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
}

func object(fields map[string]*shape) *shape { return &shape{fields: fields} }
func arrayOf(elem *shape) *shape             { return &shape{elem: elem} }

var (
	// requestShape is what parseRequest decodes; content is a string or an
	// array of parts.
	requestShape = object(map[string]*shape{
		"model": nil, "stream": nil, "n": nil, "stream_options": object(map[string]*shape{"include_usage": nil}),
		"messages": arrayOf(object(map[string]*shape{
			"role": nil, "reasoning_content": nil,
			"content": {elem: object(map[string]*shape{"type": nil, "text": nil, "refusal": nil})},
		})),
	})
	textShape = object(map[string]*shape{"content": nil, "reasoning_content": nil, "reasoning": nil, "refusal": nil, "role": nil})
	// chunkShape is a streamed chunk; completionShape a whole response.
	chunkShape = object(map[string]*shape{
		"id": nil, "object": nil, "created": nil, "model": nil, "system_fingerprint": nil, "error": nil, "usage": nil,
		"choices": arrayOf(object(map[string]*shape{"index": nil, "delta": textShape, "finish_reason": nil})),
	})
	completionShape = object(map[string]*shape{
		"id": nil, "object": nil, "created": nil, "model": nil, "system_fingerprint": nil, "error": nil,
		"choices": arrayOf(object(map[string]*shape{"index": nil, "message": textShape, "finish_reason": nil})),
	})
)

// maxJSONDepth bounds nesting (encoding/json allows 10000).
const maxJSONDepth = 512

// strictJSON checks that data is one JSON value in valid UTF-8 whose
// objects repeat no key and, where sh knows the fields, name none of them
// in another case (such as "Content" for "content"). It checks only that;
// decoding follows.
func strictJSON(data []byte, sh *shape) error {
	if !utf8.Valid(data) {
		return errors.New("invalid UTF-8")
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := strictValue(d, sh, 0); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

func strictValue(d *json.Decoder, sh *shape, depth int) error {
	if depth > maxJSONDepth {
		return errors.New("JSON nested too deeply")
	}
	tok, err := d.Token()
	if err != nil {
		return err
	}
	delim, ok := tok.(json.Delim)
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
			if err := strictValue(d, elem, depth+1); err != nil {
				return err
			}
		}
	case '{':
		seen := map[string]bool{}
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
			if sh != nil && sh.fields != nil {
				var known bool
				child, known = sh.fields[key]
				if !known {
					for f := range sh.fields {
						if strings.EqualFold(f, key) {
							return fmt.Errorf("key %q differs from %q only by case", key, f)
						}
					}
				}
			}
			if err := strictValue(d, child, depth+1); err != nil {
				return err
			}
		}
	}
	_, err = d.Token() // the closing delimiter
	return err
}
