package proxy

import (
	"net/http"
	"time"
)

// clientWriter bounds each write to the client, and each flush, by the
// idle allowance: a streamed answer has no overall write deadline (it
// lasts as long as the upstream generates), so without one a client that
// stops reading would block the relay in a write for as long as it keeps
// its connection open, holding its guard stream, KV charge, connection
// slot and upstream call. A write past the allowance fails, which ends the
// exchange like a client that left. The deadline is cleared after each
// write, so the server's own last flush is not cut by a pause before it.
type clientWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func newClientWriter(w http.ResponseWriter, idle time.Duration) *clientWriter {
	return &clientWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: idle}
}

// clientPiece is the most one write is given the idle allowance for: a
// whole answer written at once goes in pieces, so that a client reading
// slowly but steadily is not taken for one that stopped.
const clientPiece = 32 << 10

func (w *clientWriter) Write(b []byte) (int, error) {
	defer w.rc.SetWriteDeadline(time.Time{})
	n := 0
	for n < len(b) {
		_ = w.rc.SetWriteDeadline(time.Now().Add(w.idle))
		m, err := w.ResponseWriter.Write(b[n:min(len(b), n+clientPiece)])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// FlushError is what http.ResponseController.Flush calls.
func (w *clientWriter) FlushError() error {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.idle))
	defer w.rc.SetWriteDeadline(time.Time{})
	return w.rc.Flush()
}

// Unwrap gives http.ResponseController the writer underneath for the
// rest (SetWriteDeadline, SetReadDeadline).
func (w *clientWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
