package chatmsg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ToJSON writes a JSON value as the chat template's tojson filter writes
// the value it decodes to (Python's json.dumps: keys in their order, ", "
// and ": " between items, strings decoded and written with only the
// escapes JSON needs). The guard must read what the model reads: a
// request's own escapes ("\u0045VIL") are not what the template writes,
// and the model reads the decoded text. Numbers are written as they came.
func ToJSON(raw json.RawMessage) (string, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var b strings.Builder
	if err := writeJSON(d, &b); err != nil {
		return "", err
	}
	if _, err := d.Token(); err != io.EOF {
		return "", errors.New("data after the JSON value")
	}
	return b.String(), nil
}

func writeJSON(d *json.Decoder, b *strings.Builder) error {
	tok, err := d.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		end := byte(']')
		if t == '{' {
			end = '}'
		}
		b.WriteByte(byte(t))
		for i := 0; d.More(); i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			if t == '{' {
				k, err := d.Token()
				if err != nil {
					return err
				}
				writeJSONString(b, k.(string))
				b.WriteString(": ")
			}
			if err := writeJSON(d, b); err != nil {
				return err
			}
		}
		if _, err := d.Token(); err != nil {
			return err
		}
		b.WriteByte(end)
	case string:
		writeJSONString(b, t)
	case json.Number:
		b.WriteString(t.String())
	case bool:
		fmt.Fprint(b, t)
	case nil:
		b.WriteString("null")
	}
	return nil
}

// writeJSONString writes s quoted, non-ASCII text as it is (json.dumps
// with ensure_ascii=False, as the template's tojson calls it).
func writeJSONString(b *strings.Builder, s string) {
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	_ = e.Encode(s) // a string always encodes
	b.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}
