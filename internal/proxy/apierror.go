package proxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// apiError is the body of an OpenAI error response: {"error": {...}}.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
	// Flag, on the refusal of a flagged prompt or answer, goes beside
	// "error" as "streamguard": what flagged ({reason: prompt_flagged or
	// response_flagged, token, level, category, request_id}), as a cut
	// stream's last chunk carries it.
	Flag *cutInfo `json:"-"`
}

// OpenAI error types the proxy uses.
const (
	typeInvalidRequest = "invalid_request_error"
	typeServer         = "server_error"
	typeUpstream       = "upstream_error"
)

func errorBody(e apiError) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	// Compact, with "error" first: OpenAI clients recognise an error event
	// in a stream by the prefix `data: {"error":`.
	_ = enc.Encode(struct {
		Error       apiError `json:"error"`
		Streamguard *cutInfo `json:"streamguard,omitempty"`
	}{e, e.Flag})
	return bytes.TrimRight(b.Bytes(), "\n")
}

// writeError answers status with an OpenAI error body.
func writeError(w http.ResponseWriter, status int, e apiError) {
	body := errorBody(e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// errorEvent is an OpenAI error as an SSE event, for faults after a stream
// has started and its status can no longer change.
func errorEvent(e apiError) []byte {
	return append(append([]byte("data: "), errorBody(e)...), "\n\n"...)
}

// isAPIError reports whether body is already an OpenAI-style error object.
func isAPIError(body []byte) bool {
	var v struct {
		Error json.RawMessage `json:"error"`
	}
	return json.Unmarshal(body, &v) == nil && len(v.Error) > 0 && string(v.Error) != "null"
}
