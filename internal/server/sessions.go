package server

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"
)

// session is a stream reached by id through the REST endpoints.
type session struct {
	id string
	// mu serialises the stream's operations: one in flight at a time, so
	// that its tokens are judged in the order the requests were made.
	mu      sync.Mutex
	c       *convo
	lastUse atomic.Int64 // unix nanoseconds
}

// sessions maps ids to streams.
type sessions struct {
	mu sync.Mutex
	m  map[sessionKey]*session
}

// sessionKey scopes a stream id to its tenant: two tenants may use the
// same id on one replica, and neither can learn that the other's exists.
type sessionKey struct {
	t  *Tenant
	id string
}

func newSessions() *sessions { return &sessions{m: map[sessionKey]*session{}} }

// newStreamID returns 128 random bits in hex: unguessable, so that ids
// can be handed out without revealing anything about other streams.
func newStreamID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand panics on a broken source)
	return hex.EncodeToString(b[:])
}

func (ss *sessions) add(s *session) {
	s.lastUse.Store(time.Now().UnixNano())
	ss.mu.Lock()
	ss.m[sessionKey{s.c.tenant, s.id}] = s
	ss.mu.Unlock()
}

// get returns t's stream with that id. Another tenant's stream is
// reported as missing, exactly like an unknown id.
func (ss *sessions) get(t *Tenant, id string) *session {
	ss.mu.Lock()
	s := ss.m[sessionKey{t, id}]
	ss.mu.Unlock()
	return s
}

func (ss *sessions) remove(t *Tenant, id string) {
	ss.mu.Lock()
	delete(ss.m, sessionKey{t, id})
	ss.mu.Unlock()
}

func (ss *sessions) len() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.m)
}

// expire closes the streams idle since before cutoff. A stream with an
// operation in flight is busy, not idle, and is skipped.
func (ss *sessions) expire(cutoff time.Time) int {
	ss.mu.Lock()
	var idle []*session
	for _, s := range ss.m {
		if s.lastUse.Load() < cutoff.UnixNano() {
			idle = append(idle, s)
		}
	}
	ss.mu.Unlock()
	n := 0
	for _, s := range idle {
		if !s.mu.TryLock() {
			continue
		}
		if s.lastUse.Load() < cutoff.UnixNano() && !s.c.closed {
			s.c.close("expired")
			ss.remove(s.c.tenant, s.id)
			n++
		}
		s.mu.Unlock()
	}
	return n
}

// closeAll closes every stream (at shutdown, once no request is running).
func (ss *sessions) closeAll() {
	ss.mu.Lock()
	all := make([]*session, 0, len(ss.m))
	for _, s := range ss.m {
		all = append(all, s)
	}
	ss.m = map[sessionKey]*session{}
	ss.mu.Unlock()
	for _, s := range all {
		s.mu.Lock()
		s.c.close("shutdown")
		s.mu.Unlock()
	}
}
