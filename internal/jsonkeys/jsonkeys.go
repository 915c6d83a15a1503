// Package jsonkeys checks the object keys of a JSON file before
// encoding/json decodes it.
//
// encoding/json matches an object key to a struct field without regard to
// case ("Hidden_Size" fills hidden_size) and keeps the last of repeated
// keys, with no error in either case. Other readers of the same file
// (transformers, jq, Python's json) match keys exactly and may keep the
// first, so one file could mean one thing to them and another to
// streamguard: a config.json whose "RESPONSE_RISK_LEVEL_MAP" silently
// replaces the response_risk_level_map every other tool shows, or a
// tenant file whose "LOG_CONTENT": true after "log_content": false turns
// content logging on. Check refuses both, so every reader agrees or the
// file is refused.
package jsonkeys

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxDepth is encoding/json's own nesting limit: Check refuses nothing
// for its depth that Unmarshal would accept.
const maxDepth = 10000

// Check checks the first JSON value of data, which the caller is about to
// decode into v (a value or a pointer of the target type), and refuses:
//   - a key that appears twice in one object, anywhere in the value
//     (struct fields, maps and values decoded into any alike);
//   - a key that matches a field of the struct its object is decoded into
//     only case-insensitively.
//
// Keys that match no field in any case are left to the caller (config.json
// keeps them, the tenant file refuses them with DisallowUnknownFields), as
// are types and syntax: a syntax error is returned as the decoder reports
// it. Errors name the key with %q and its place in the value, such as
// tenants[0].
func Check(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	w := walker{d: d}
	return w.value(reflect.TypeOf(v))
}

// walker holds the decoder and the place in the value: the keys and
// indexes from the top, rendered only for an error (building a path
// string at every level would cost the square of the depth).
type walker struct {
	d    *json.Decoder
	path []string // ".key" or "[i]"
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// value checks one value that decodes into t; a nil t is a value whose
// shape is not known (an interface, a type with its own UnmarshalJSON, an
// unknown key's value, or a type mismatch Unmarshal will report): its
// objects are still checked for repeated keys.
func (w *walker) value(t reflect.Type) error {
	if len(w.path) > maxDepth {
		return fmt.Errorf("JSON nested more than %d deep", maxDepth)
	}
	t = shape(t)
	tok, err := w.d.Token()
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch delim {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; w.d.More(); i++ {
			w.path = append(w.path, "["+strconv.Itoa(i)+"]")
			if err := w.value(elem); err != nil {
				return err
			}
			w.path = w.path[:len(w.path)-1]
		}
	case '{':
		var fields map[string]reflect.Type
		var elem reflect.Type
		if t != nil {
			switch t.Kind() {
			case reflect.Struct:
				fields = structFields(t)
			case reflect.Map:
				elem = t.Elem()
			}
		}
		seen := map[string]bool{}
		for w.d.More() {
			tok, err := w.d.Token()
			if err != nil {
				return err
			}
			key, ok := tok.(string)
			if !ok {
				return fmt.Errorf("object key%s is not a string", w.where())
			}
			if seen[key] {
				return fmt.Errorf("key %s%s appears twice: readers differ on which value counts", quote(key), w.where())
			}
			seen[key] = true
			child := elem
			if fields != nil {
				var known bool
				if child, known = fields[key]; !known {
					for name := range fields {
						// encoding/json folds exactly as strings.EqualFold does.
						if strings.EqualFold(name, key) {
							return fmt.Errorf("key %s%s matches the field %q only when case is ignored: other readers ignore it, so spell it exactly", quote(key), w.where(), name)
						}
					}
				}
			}
			w.path = append(w.path, "."+key)
			if err := w.value(child); err != nil {
				return err
			}
			w.path = w.path[:len(w.path)-1]
		}
	}
	_, err = w.d.Token() // the closing delimiter
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// shape is t with pointers removed, or nil when the JSON's shape cannot
// be known from t: an interface, or a type that decodes itself.
func shape(t reflect.Type) reflect.Type {
	for t != nil {
		if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) ||
			t.Implements(textUnmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) {
			return nil
		}
		switch t.Kind() {
		case reflect.Pointer:
			t = t.Elem()
		case reflect.Interface:
			return nil
		default:
			return t
		}
	}
	return nil
}

// structFields maps the JSON names of t's fields, as encoding/json names
// them (the tag's name, else the Go name; "-" and unexported fields
// skipped; embedded structs without a tag name promoted), to their types.
func structFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	addFields(m, t, 0)
	return m
}

func addFields(m map[string]reflect.Type, t reflect.Type, depth int) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && depth < 16 {
				addFields(m, ft, depth+1)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, dup := m[name]; !dup {
			m[name] = f.Type
		}
	}
}

// where places an error in the value: nothing at the top level, else
// ` in "tenants[0]"` (quoted: keys are untrusted text that may hold
// terminal escapes).
func (w *walker) where() string {
	if len(w.path) == 0 {
		return ""
	}
	return " in " + quote(strings.TrimPrefix(strings.Join(w.path, ""), "."))
}

// quote quotes s, cut to its first 80 bytes: a key may be megabytes long.
func quote(s string) string {
	const max = 80
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}
