package guardtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"sync"
	"testing"
)

// JSONLog is a log destination safe for concurrent writers (an slog JSON
// handler's, say) whose lines a test reads back as JSON objects.
type JSONLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *JSONLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// Records parses every line written so far; a line that is not a JSON
// object fails the test.
func (l *JSONLog) Records(t testing.TB) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}
