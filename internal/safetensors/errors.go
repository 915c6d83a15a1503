package safetensors

import (
	"errors"
	"strconv"
	"strings"
)

// Error describes a malformed or unusable safetensors file, index or
// request. File and Tensor are empty when they do not apply.
type Error struct {
	File   string // path of the file (or folder) involved
	Tensor string // tensor name
	Msg    string // what is wrong
	Err    error  // underlying cause, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("safetensors: ")
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Tensor != "" {
		b.WriteString("tensor ")
		b.WriteString(strconv.Quote(e.Tensor))
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Err != nil {
		if e.Msg != "" {
			b.WriteString(": ")
		}
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// inFile attaches a file name to an error produced without one (by the
// pure parsers), keeping the *Error type so callers can inspect it.
func inFile(err error, file string) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) && e.File == "" {
		c := *e
		c.File = file
		return &c
	}
	return &Error{File: file, Err: err}
}
