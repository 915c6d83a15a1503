package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

func init() {
	register(&command{
		name:    "tokenize",
		summary: "encode, decode or render chats with the Qwen3 tokenizer (JSON lines)",
		run:     runTokenize,
	})
}

// tokenizeStdin is where runTokenize reads; tests replace it.
var tokenizeStdin io.Reader = os.Stdin

func runTokenize(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tokenize", "[--tokenizer PATH] [--decode [--skip-special] | --chat] [--parse-special] < in.jsonl > out.jsonl", stderr)
	path := fs.String("tokenizer", "", "model folder or tokenizer.json (.gz accepted); default: the embedded Qwen3 tokenizer")
	decode := fs.Bool("decode", false, `read {"ids": [...]} lines and write {"text": ...}`)
	skipSpecial := fs.Bool("skip-special", false, "with --decode: drop special tokens")
	chat := fs.Bool("chat", false, `read {"messages": [...]} lines (optional "add_generation_prompt", "enable_thinking") and write {"text", "ids", "user_end_index"}`)
	parseSpecial := fs.Bool("parse-special", false, "encode tags spelled in text (<|im_end|>, <think>, ...) as those tokens, and with --chat take a <think> block in assistant content as its reasoning, as Hugging Face does; for trusted text only")
	fs.Bool("json", true, "output is always JSON lines; accepted for uniformity")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: streamguard tokenize [--tokenizer PATH] [--decode [--skip-special] | --chat] [--parse-special] < in.jsonl

Reads JSON lines on stdin and writes one JSON line per input line, in order:
  default   {"text": "..."}        -> {"ids": [...]}
  --decode  {"ids": [...]}         -> {"text": "..."}
  --chat    {"messages": [{"role": "user", "content": "..."}, ...]}
                                   -> {"text": "...", "ids": [...], "user_end_index": N}
Text is ordinary text: a tag it spells, such as <|im_end|>, is encoded as text, as the
guard encodes what users and models write; only the chat template's own scaffold
writes special tokens. --parse-special encodes such tags as the tokens, as Hugging Face's
encode and apply_chat_template do. No BOS/EOS is added.
A bad line stops the run with an error naming its line number.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	if *decode && *chat {
		return usageErrorf("--decode and --chat exclude each other")
	}
	if *skipSpecial && !*decode {
		return usageErrorf("--skip-special needs --decode")
	}
	if *parseSpecial && *decode {
		return usageErrorf("--parse-special applies to encoding, not --decode")
	}
	var tok *tokenizer.Tokenizer
	var err error
	if *path == "" {
		tok, err = tokenizer.LoadQwen3()
	} else {
		tok, err = tokenizer.Load(*path)
	}
	if err != nil {
		return err
	}
	o := tokenizeOptions{mode: tokenizeEncode, skipSpecial: *skipSpecial, parseSpecial: *parseSpecial}
	switch {
	case *decode:
		o.mode = tokenizeDecode
	case *chat:
		o.mode = tokenizeChat
	}
	return tokenizeLines(tok, o, tokenizeStdin, stdout)
}

type tokenizeMode int

const (
	tokenizeEncode tokenizeMode = iota
	tokenizeDecode
	tokenizeChat
)

type tokenizeOptions struct {
	mode         tokenizeMode
	skipSpecial  bool // decode: drop special tokens
	parseSpecial bool // encode: tags in text become tokens
}

type tokenizeIn struct {
	Text                *string             `json:"text"`
	IDs                 *[]int              `json:"ids"`
	Messages            []tokenizer.Message `json:"messages"`
	AddGenerationPrompt bool                `json:"add_generation_prompt"`
	EnableThinking      bool                `json:"enable_thinking"`
}

type chatOut struct {
	Text         string `json:"text"`
	IDs          []int  `json:"ids"`
	UserEndIndex int    `json:"user_end_index"`
}

// tokenizeLines answers each non-blank input line with one output line. It
// flushes whenever no more input is buffered, so it also works as a
// co-process answering one line at a time.
func tokenizeLines(tok *tokenizer.Tokenizer, o tokenizeOptions, r io.Reader, w io.Writer) error {
	in := bufio.NewReaderSize(r, 1<<16)
	bw := bufio.NewWriterSize(w, 1<<16)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for lineNo := 1; ; lineNo++ {
		line, readErr := in.ReadBytes('\n')
		if readErr != nil && !errors.Is(readErr, io.EOF) {
			bw.Flush()
			return fmt.Errorf("stdin line %d: %w", lineNo, readErr)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			out, err := tokenizeLine(tok, o, line)
			if err == nil {
				err = enc.Encode(out)
			}
			if err != nil {
				bw.Flush()
				return fmt.Errorf("stdin line %d: %w", lineNo, err)
			}
		}
		if readErr != nil {
			return bw.Flush()
		}
		if in.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
	}
}

func tokenizeLine(tok *tokenizer.Tokenizer, o tokenizeOptions, line []byte) (any, error) {
	var v tokenizeIn
	if err := json.Unmarshal(line, &v); err != nil {
		return nil, fmt.Errorf("bad JSON: %w", err)
	}
	switch o.mode {
	case tokenizeDecode:
		if v.IDs == nil {
			return nil, errors.New(`want {"ids": [...]}`)
		}
		return struct {
			Text string `json:"text"`
		}{tok.Decode(*v.IDs, o.skipSpecial)}, nil
	case tokenizeChat:
		if v.Messages == nil {
			return nil, errors.New(`want {"messages": [...]}`)
		}
		c, err := tok.RenderChatWith(v.Messages, tokenizer.ChatOptions{AddGenerationPrompt: v.AddGenerationPrompt, EnableThinking: v.EnableThinking, ParseSpecial: o.parseSpecial})
		if err != nil {
			return nil, err
		}
		return chatOut{c.Text, c.IDs, c.UserEndIndex}, nil
	default:
		if v.Text == nil {
			return nil, errors.New(`want {"text": "..."}`)
		}
		var ids []int
		if o.parseSpecial {
			ids = tok.Encode(*v.Text)
		} else {
			ids = tok.EncodeText(*v.Text)
		}
		if len(ids) == 0 {
			ids = []int{}
		}
		return struct {
			IDs []int `json:"ids"`
		}{ids}, nil
	}
}
