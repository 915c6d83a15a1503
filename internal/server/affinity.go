package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
)

// Stream affinity: a session lives in one replica's memory, so every
// request about it must reach that replica. A load balancer in front of
// several replicas hashes the X-Streamguard-Stream header (consistent
// hashing), which the client sends on every request of the stream,
// including the one that opens it: there the header carries an id the
// client chose, so the stream is placed on the replica its id hashes to
// from the first request on.

// StreamHeader carries a session's id: on every session response, and on
// requests for a load balancer to hash. On POST /v1/streams it carries
// the id the client chose for the new stream.
const StreamHeader = "X-Streamguard-Stream"

// ReplicaHeader names the replica that answered (Options.ReplicaID), on
// every response when the replica has a name.
const ReplicaHeader = "X-Streamguard-Replica"

// MaxStreamIDLen is the longest stream id a client may choose.
const MaxStreamIDLen = 64

// codeStreamLost answers a request for a stream this replica does not
// hold: never opened, closed, expired, another tenant's, or opened on a
// replica that has gone away (its memory went with it). The client resumes
// it: POST /v1/streams with "resume": true and what it had sent the stream
// (resume.go), under the same id, on whichever replica now owns the id.
const codeStreamLost = "stream_lost"

// writeStreamLost answers 404 stream_lost for id.
func writeStreamLost(w http.ResponseWriter, id string) {
	writeErr(w, http.StatusNotFound, "invalid_request_error", codeStreamLost,
		"no stream "+id+" on this replica (closed, expired, never opened, or held by a replica that went away): resume it (POST /v1/streams with \"resume\": true, the conversation so far and the same "+StreamHeader+")")
}

// ValidStreamID reports whether a client may choose id for a stream:
// 1 to MaxStreamIDLen characters of [A-Za-z0-9_-].
func ValidStreamID(id string) bool {
	if id == "" || len(id) > MaxStreamIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// streamIDKey keys the id chosen for a stream being opened in its
// request's context.
type streamIDKey struct{}

// requestStreamID is the id of the stream a POST /v1/streams opens: the
// one openingStream chose (the client's, or a new random one).
func requestStreamID(r *http.Request) string {
	if id, ok := r.Context().Value(streamIDKey{}).(string); ok {
		return id
	}
	return newStreamID()
}

// streamIDs holds the ids of streams being opened, so that two requests
// choosing the same id cannot both open it.
type streamIDs struct {
	mu      sync.Mutex
	opening map[sessionKey]bool
}

// reserve claims id for a stream about to be opened; false when a stream
// with that id is open or being opened.
func (ids *streamIDs) reserve(t *Tenant, id string, open *sessions) bool {
	k := sessionKey{t, id}
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if ids.opening[k] || open.get(t, id) != nil {
		return false
	}
	if ids.opening == nil {
		ids.opening = map[sessionKey]bool{}
	}
	ids.opening[k] = true
	return true
}

// errStreamExists is an open under an id the tenant holds: a stream open
// on this replica, one being opened, or a duplex connection's.
var errStreamExists = errors.New("a stream with this id is already open on this replica: choose another id (or close that stream first)")

// release ends the claim: the stream is open (in sessions) or failed.
func (ids *streamIDs) release(t *Tenant, id string) {
	ids.mu.Lock()
	delete(ids.opening, sessionKey{t, id})
	ids.mu.Unlock()
}

// openingStream wraps POST /v1/streams: it takes the id the client chose
// in X-Streamguard-Stream (or, unless Options.RequireStreamID, makes a
// random one), claims it, and names it in the response's header.
func (srv *Server) openingStream(h tenantHandler) tenantHandler {
	return func(w http.ResponseWriter, r *http.Request, t *Tenant) {
		vals := r.Header.Values(StreamHeader)
		id, chosen := "", len(vals) > 0
		switch {
		case len(vals) > 1:
			writeHeaderErr(w, http.StatusBadRequest, "invalid_stream_id", "give one "+StreamHeader+" header, not several")
			return
		case chosen && !ValidStreamID(vals[0]):
			writeHeaderErr(w, http.StatusBadRequest, "invalid_stream_id",
				fmt.Sprintf("%s must be 1 to %d characters of A-Z, a-z, 0-9, '_' and '-' (a random id of 128 bits or more, such as 32 hex digits, is best)", StreamHeader, MaxStreamIDLen))
			return
		case chosen:
			id = vals[0]
		case srv.opts.RequireStreamID:
			writeHeaderErr(w, http.StatusBadRequest, "stream_id_required",
				"this server requires the client to choose the stream id: send "+StreamHeader+" (1 to 64 characters of A-Z, a-z, 0-9, '_' and '-') with POST /v1/streams, so that a load balancer hashing it sends every request of the stream to one replica")
			return
		default:
			id = newStreamID()
		}
		w.Header().Set(StreamHeader, id)
		if !chosen {
			// A random id names nothing until the stream is open.
			w = &dropOnError{ResponseWriter: w, header: StreamHeader}
		}
		if !srv.streamIDs.reserve(t, id, srv.sessions) {
			writeHeaderErr(w, http.StatusConflict, "stream_exists", "a stream with id "+id+" is already open on this replica: choose another id (or close that stream first)")
			return
		}
		defer srv.streamIDs.release(t, id)
		h(w, r.WithContext(context.WithValue(r.Context(), streamIDKey{}, id)), t)
	}
}

// onStream wraps the routes of one stream (/v1/streams/{id}...): an
// X-Streamguard-Stream header, if the request has one, must name the
// stream of the path, and the response names it.
func (srv *Server) onStream(h tenantHandler) tenantHandler {
	return func(w http.ResponseWriter, r *http.Request, t *Tenant) {
		id := r.PathValue("id")
		if vals := r.Header.Values(StreamHeader); len(vals) > 1 || len(vals) == 1 && vals[0] != id {
			writeHeaderErr(w, http.StatusBadRequest, "stream_id_mismatch",
				fmt.Sprintf("the %s header (%q) does not name the stream of the path (%q)", StreamHeader, vals, id))
			return
		}
		if ValidStreamID(id) {
			w.Header().Set(StreamHeader, id)
		}
		h(w, r, t)
	}
}

// writeHeaderErr answers an error about the X-Streamguard-Stream header,
// in OpenAI's shape with the header as its param.
func writeHeaderErr(w http.ResponseWriter, code int, short, msg string) {
	param := StreamHeader
	writeJSON(w, code, apiError{apiErrorBody{Message: msg, Type: "invalid_request_error", Param: &param, Code: short}})
}

// dropOnError removes a header before an error status is written.
type dropOnError struct {
	http.ResponseWriter
	header  string
	written bool
}

func (d *dropOnError) WriteHeader(code int) {
	if !d.written && code >= http.StatusBadRequest {
		d.Header().Del(d.header)
	}
	d.written = true
	d.ResponseWriter.WriteHeader(code)
}

func (d *dropOnError) Write(b []byte) (int, error) {
	d.written = true
	return d.ResponseWriter.Write(b)
}

func (d *dropOnError) Unwrap() http.ResponseWriter { return d.ResponseWriter }
