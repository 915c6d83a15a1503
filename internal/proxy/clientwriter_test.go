package proxy

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// deadlineRecorder is a ResponseWriter that logs its writes' sizes and the
// write deadlines set between them.
type deadlineRecorder struct {
	http.ResponseWriter
	log []string
}

func (d *deadlineRecorder) Write(b []byte) (int, error) {
	d.log = append(d.log, "write "+strconv.Itoa(len(b)))
	return len(b), nil
}

func (d *deadlineRecorder) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		d.log = append(d.log, "clear")
	} else {
		d.log = append(d.log, "deadline")
	}
	return nil
}

// TestClientWriterPieces: a write to the client gets the idle allowance
// for each piece of at most clientPiece bytes, not for the whole: a whole
// answer of 80 KiB given one allowance would cut a client that reads it
// slowly but steadily. The deadline is cleared after the write, so a pause
// before the server's own last flush cuts nothing.
func TestClientWriterPieces(t *testing.T) {
	rec := &deadlineRecorder{}
	w := newClientWriter(rec, time.Second)
	n, err := w.Write(make([]byte, 80<<10))
	if n != 80<<10 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	want := "deadline,write 32768,deadline,write 32768,deadline,write 16384,clear"
	if got := strings.Join(rec.log, ","); got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}
