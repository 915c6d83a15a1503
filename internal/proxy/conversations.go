package proxy

import (
	"container/list"
	"encoding/json"
	"sync"
)

// conversations remembers, for each Responses API answer the proxy relayed
// judged whole and not cut, the conversation it ended — the request's
// turns and the answer as chat messages — under its tenant and the
// response's id, so that a request that continues it
// (previous_response_id: the upstream reads the stored conversation) is
// judged in that context. An answer the guard cut, or that went out
// unjudged (fail-open), is not remembered: the upstream keeps all of it,
// the part a cut withheld included, and a continuation would have the
// model read it. The least recently used are forgotten past maxBytes; a
// conversation not remembered (forgotten, another replica's, never relayed
// here) cannot be continued through the proxy. Safe for concurrent use.
type conversations struct {
	mu       sync.Mutex
	maxBytes int64
	bytes    int64
	l        *list.List // of *conversation, most recent first
	m        map[string]*list.Element
}

type conversation struct {
	key  string
	raws []json.RawMessage
	size int64
}

// conversationBytes bounds what the proxy remembers of conversations.
const conversationBytes = 64 << 20

func newConversations(maxBytes int64) *conversations {
	return &conversations{maxBytes: maxBytes, l: list.New(), m: map[string]*list.Element{}}
}

func conversationKey(tenant, id string) string { return tenant + "\x00" + id }

// get returns the conversation the tenant's response id ended.
func (c *conversations) get(tenant, id string) ([]json.RawMessage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[conversationKey(tenant, id)]
	if !ok {
		return nil, false
	}
	c.l.MoveToFront(e)
	return e.Value.(*conversation).raws, true
}

// put remembers the conversation the tenant's response id ended.
func (c *conversations) put(tenant, id string, raws []json.RawMessage) {
	var size int64
	for _, r := range raws {
		size += int64(len(r))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	key := conversationKey(tenant, id)
	if e, ok := c.m[key]; ok {
		c.bytes -= e.Value.(*conversation).size
		c.l.Remove(e)
		delete(c.m, key)
	}
	if size > c.maxBytes {
		return
	}
	c.m[key] = c.l.PushFront(&conversation{key: key, raws: raws, size: size})
	c.bytes += size
	for c.bytes > c.maxBytes {
		e := c.l.Back()
		v := e.Value.(*conversation)
		c.l.Remove(e)
		delete(c.m, v.key)
		c.bytes -= v.size
	}
}

// remember keeps the conversation a judged, uncut answer ended: the
// request's turns and the answer as the assistant's turn.
func (x *exchange) remember(id string, o *outState) {
	if id == "" || x.req == nil {
		return
	}
	turns := append(append([]json.RawMessage(nil), x.req.Turns...), o.assistant())
	x.h.convs.put(x.t.Name, id, turns)
}
