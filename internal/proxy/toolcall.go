package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/streamguard/streamguard/internal/chatmsg"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// An answer's tool calls are model output as much as its text: an agent
// runs them, a client may show them. They are judged as the assistant's
// turn, laid out as the Qwen3 template writes calls after the content
// (tokenizer.ToolCallTag, fed as its token, then tokenizer.ToolCallName...),
// and in hold-back a call's events go out only
// once the whole call was judged with its look-ahead: no client is handed
// the first half of a call that the guard then stops.
//
// Clients assemble a streamed call from its pieces by index (the OpenAI
// SDKs, LiteLLM), strings concatenated. So the guard reads the pieces as
// one text only when they come as OpenAI sends them — calls numbered from
// 0 in order, each whole before the next begins, the name before the
// arguments, the arguments as a string — and refuses anything else: a call
// that resumes after another call or text, an index out of order
// (openai-python puts an index that does not exist yet at the end, and
// reads -1 as the last call), a name that changes once the arguments
// began, arguments as an object in a stream (merged key by key). A whole
// message is read by position (clients ignore an "index" there), and its
// object arguments as the template writes them (chatmsg.ToJSON).
//
// An agent runs the arguments once its JSON parser has decoded them, so
// the guard reads their \uXXXX escapes decoded too (chatmsg.Unescaper): a
// model steered to spell a request in escapes, or a server that writes
// every non-ASCII character so, is judged on the characters.

// wireToolCall is one entry of a delta's or a message's tool_calls: a
// function call (OpenAI's form) or a custom tool's (free-form input).
type wireToolCall struct {
	Index    *int          `json:"index"`
	Function *wireFunction `json:"function"`
	Custom   *wireCustom   `json:"custom"`
}

type wireFunction struct {
	Name *string `json:"name"`
	// Arguments is JSON text in a string, or null; in a whole message an
	// object too (TGI, llama.cpp's --tool-args-object).
	Arguments json.RawMessage `json:"arguments"`
}

type wireCustom struct {
	Name  *string `json:"name"`
	Input *string `json:"input"`
}

// callPiece is what one entry adds to a call: key names the call (its
// index, or the legacy function_call), name and args the text it adds.
type callPiece struct {
	key, name, args string
	// json: args is JSON text, whose escapes an agent's parser decodes
	// (a function's arguments; a custom tool's input is free text).
	json bool
}

// functionCallKey is the key of the legacy function_call.
const functionCallKey = "function_call"

// toolCallShape is a tool call as strictJSON checks it, in a delta or,
// whole, a message (whose arguments may be an object): closed, so that a
// field the proxy does not know holds no text. Gemini's OpenAI
// compatibility adds to each call an opaque signature the client sends
// back (extra_content.google or .vertex: thought_signature).
func toolCallShape(whole bool) *shape {
	signature := closedObject(map[string]*shape{"thought_signature": scalar})
	return closedObject(map[string]*shape{
		"index": scalar, "id": scalar, "type": scalar,
		"function":      functionShape(whole),
		"custom":        closedObject(map[string]*shape{"name": scalar, "input": scalar}),
		"extra_content": closedObject(map[string]*shape{"google": signature, "vertex": signature}),
	})
}

func functionShape(whole bool) *shape {
	args := scalar
	if whole {
		args = nil
	}
	return closedObject(map[string]*shape{"name": scalar, "arguments": args})
}

// callPieces reads the tool calls of a delta or, whole, a message in
// order: the tool_calls entries (keyed by their index in a delta, by
// position in a message), then the legacy function_call.
func callPieces(calls []wireToolCall, fc *wireFunction, whole bool) ([]callPiece, error) {
	var out []callPiece
	for i, c := range calls {
		key := i
		if c.Index != nil && !whole {
			key = *c.Index
		}
		p := callPiece{key: strconv.Itoa(key)}
		switch {
		case c.Function != nil && c.Custom != nil:
			return nil, errors.New("a tool call that is both a function and a custom tool")
		case c.Function != nil:
			var err error
			if p.name, p.args, err = c.Function.text(); err != nil {
				return nil, err
			}
			p.json = true
		case c.Custom != nil:
			p.name, p.args = deref(c.Custom.Name), deref(c.Custom.Input)
		}
		out = append(out, p)
	}
	if fc != nil {
		name, args, err := fc.text()
		if err != nil {
			return nil, err
		}
		out = append(out, callPiece{key: functionCallKey, name: name, args: args, json: true})
	}
	return out, nil
}

func (f *wireFunction) text() (name, args string, err error) {
	raw := bytes.TrimSpace(f.Arguments)
	switch {
	case len(raw) == 0 || string(raw) == "null":
	case raw[0] == '"':
		err = json.Unmarshal(raw, &args)
	case raw[0] == '{' || raw[0] == '[':
		// Only a whole message's shape lets an object through.
		args, err = chatmsg.ToJSON(raw)
	default:
		err = errors.New("arguments that are not a string (JSON text)")
	}
	return deref(f.Name), args, err
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// toolCall takes one piece of a tool call: a piece for another call than
// the open one closes it and opens the next. The whole name again (some
// servers send it in every chunk) is not judged twice. It refuses pieces
// clients would assemble otherwise than the guard reads them (see above).
func (f *feeder) toolCall(ev *eventText, p callPiece) error {
	if !f.callOpen || p.key != f.callKey {
		first := f.toolCalls == 0 && !f.functionCall
		if p.key == functionCallKey {
			if f.functionCall {
				return errors.New("a function_call that resumes after other text")
			}
			f.functionCall = true
		} else {
			if want := strconv.Itoa(f.toolCalls); p.key != want {
				return fmt.Errorf("tool call %s where call %s comes next (calls are numbered from 0, each whole before the next)", p.key, want)
			}
			f.toolCalls++
		}
		f.closeCall()
		if !f.reasoningDone {
			f.endReasoning()
		}
		if !f.started {
			f.start(false)
		}
		if !first || f.contentSeen {
			f.feedSynthetic("\n")
		}
		f.tag(tokenizer.ToolCallStart, tokenizer.ToolCallTag)
		f.feedSynthetic(tokenizer.ToolCallName)
		f.callOpen, f.callKey, f.callArgs = true, p.key, false
		f.callName.Reset()
	}
	if p.name != "" && p.name == f.callName.String() {
		p.name = "" // the whole name again (some servers send it in every chunk)
	}
	if p.name != "" && f.callArgs {
		return fmt.Errorf("tool call %s: a name after its arguments", p.key)
	}
	if p.args == "" && (p.name == "" || f.callArgs) {
		// No text: nothing to hold the event for.
		return nil
	}
	if n := len(f.callEvs); n == 0 || f.callEvs[n-1] != ev {
		ev.pending++
		f.callEvs = append(f.callEvs, ev)
	}
	if !f.callArgs && p.name != "" {
		f.callName.WriteString(p.name)
		f.feed(ev, fieldTool, p.name)
	}
	if p.args != "" {
		if !f.callArgs {
			f.feedSynthetic(tokenizer.ToolCallArguments)
			f.callArgs = true
		}
		args := p.args
		if p.json {
			args = f.unescape.Write(args)
		}
		if args != "" {
			f.feed(ev, fieldTool, args)
		}
	}
	return nil
}

// closeCall ends the open tool call, if any: its events may go once its
// end was judged.
func (f *feeder) closeCall() {
	if !f.callOpen {
		return
	}
	if !f.callArgs {
		f.feedSynthetic(tokenizer.ToolCallArguments)
	}
	// An escape cut short at the end stays as it came.
	f.feedSynthetic(f.unescape.Flush() + tokenizer.ToolCallClosing)
	f.tag(tokenizer.ToolCallEnd, tokenizer.ToolCallEndTag)
	for _, ev := range f.callEvs {
		ev.pending--
		ev.fedEnd = max(ev.fedEnd, len(f.fed))
	}
	f.callEvs, f.callOpen = nil, false
}
