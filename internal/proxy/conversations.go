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
// model read it. Past maxBytes, the least recently used of the tenant that
// holds the most are forgotten first, so that no tenant's answers push out
// another's while it holds less than a fair share; a conversation not
// remembered (forgotten, another replica's, never relayed here) cannot be
// continued through the proxy. Safe for concurrent use.
type conversations struct {
	mu       sync.Mutex
	maxBytes int64
	bytes    int64
	tenants  map[string]*tenantConversations
	m        map[string]*list.Element
}

// tenantConversations are one tenant's conversations, most recent first.
type tenantConversations struct {
	l     *list.List // of *conversation
	bytes int64
}

type conversation struct {
	tenant, key string
	raws        []json.RawMessage // nil: an id given to two answers, not to be continued
	size        int64
}

// conversationOverhead is what a conversation costs beyond its turns and
// key (its list element, map entry, slice).
const conversationOverhead = 256

// maxResponseID bounds the response ids remembered (OpenAI's are about 50
// bytes; vLLM's request_id, which a client could set, is refused).
const maxResponseID = 256

// conversationBytes bounds what the proxy remembers of conversations.
const conversationBytes = 64 << 20

func newConversations(maxBytes int64) *conversations {
	return &conversations{maxBytes: maxBytes, tenants: map[string]*tenantConversations{}, m: map[string]*list.Element{}}
}

func conversationKey(tenant, id string) string { return tenant + "\x00" + id }

// get returns the conversation the tenant's response id ended.
func (c *conversations) get(tenant, id string) ([]json.RawMessage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[conversationKey(tenant, id)]
	if !ok || e.Value.(*conversation).raws == nil {
		return nil, false
	}
	c.tenants[tenant].l.MoveToFront(e)
	return e.Value.(*conversation).raws, true
}

// put remembers the conversation the tenant's response id ended. An id
// that ended another answer before is ambiguous (the upstream keeps one
// of them): it is kept as not to be continued.
func (c *conversations) put(tenant, id string, raws []json.RawMessage) {
	key := conversationKey(tenant, id)
	size := int64(len(key)) + conversationOverhead
	for _, r := range raws {
		size += int64(len(r))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok {
		c.remove(e)
		raws, size = nil, int64(len(key))+conversationOverhead
	}
	c.add(tenant, key, raws, size)
}

// forget keeps the tenant's response id as not to be continued: an answer
// under it was cut, flagged or not judged whole.
func (c *conversations) forget(tenant, id string) {
	key := conversationKey(tenant, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok {
		c.remove(e)
	}
	c.add(tenant, key, nil, int64(len(key))+conversationOverhead)
}

func (c *conversations) remove(e *list.Element) {
	v := e.Value.(*conversation)
	tc := c.tenants[v.tenant]
	tc.l.Remove(e)
	tc.bytes -= v.size
	if tc.l.Len() == 0 {
		delete(c.tenants, v.tenant)
	}
	delete(c.m, v.key)
	c.bytes -= v.size
}

func (c *conversations) add(tenant, key string, raws []json.RawMessage, size int64) {
	if size > c.maxBytes {
		return
	}
	tc := c.tenants[tenant]
	if tc == nil {
		tc = &tenantConversations{l: list.New()}
		c.tenants[tenant] = tc
	}
	c.m[key] = tc.l.PushFront(&conversation{tenant: tenant, key: key, raws: raws, size: size})
	tc.bytes += size
	c.bytes += size
	for c.bytes > c.maxBytes {
		// The tenant that holds the most gives up its least recent (a
		// handful of tenants: a scan is cheaper than a heap).
		var most *tenantConversations
		for _, t := range c.tenants {
			if most == nil || t.bytes > most.bytes {
				most = t
			}
		}
		c.remove(most.l.Back())
	}
}

// remember keeps the conversation a judged, uncut answer ended: the
// request's turns (its instructions among them: vLLM's model reads them
// in a continuation, OpenAI's does not, and as context they hide nothing)
// and the answer as the assistant's turn. An answer whose final response
// the proxy rewrote is not remembered (the upstream keeps its own), nor
// one of a request that asked the upstream not to store it.
func (x *exchange) remember(id string, o *outState, rewritten bool) {
	if id == "" || x.req == nil || x.req.NoStore {
		return
	}
	if rewritten || len(id) > maxResponseID {
		x.h.convs.forget(x.t.Name, id)
		return
	}
	var turns []json.RawMessage
	if x.req.Instructions != nil {
		turns = append(turns, x.req.Instructions)
	}
	turns = append(append(turns, x.req.Turns...), o.assistant())
	x.h.convs.put(x.t.Name, id, turns)
}

// forgetAnswer keeps the response id of an answer that did not end
// allowed as not to be continued (conversations.forget).
func (x *exchange) forgetAnswer() {
	if x.respID != "" && len(x.respID) <= maxResponseID {
		x.h.convs.forget(x.t.Name, x.respID)
	}
}
