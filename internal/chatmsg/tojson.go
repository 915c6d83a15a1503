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
// and the model reads the decoded text. Numbers are written as they came
// (json.dumps writes 1E5 as 100000.0: digits, not words, either way).
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

// writeJSONString writes s quoted as Python's json.dumps writes it with
// ensure_ascii=False (as the template's tojson calls it): only '"', '\\'
// and control characters escaped; everything else, U+2028 and U+2029
// included (which Go's encoder escapes), as it is.
func writeJSONString(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\b':
			b.WriteString(`\b`)
		case c == '\f':
			b.WriteString(`\f`)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}
