package proxy

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// TestConversationsOneTenantCannotEvictOthers: the memory of Responses API
// conversations (previous_response_id) is 64 MiB in all tenants, and past
// it the tenant that holds the most forgets first: one tenant relaying
// 64 conversations of 1 MiB does not push out another tenant's one small
// conversation.
func TestConversationsOneTenantCannotEvictOthers(t *testing.T) {
	c := newConversations(conversationBytes)
	small := []json.RawMessage{json.RawMessage(`{"role":"user","content":"hi"}`), json.RawMessage(`{"role":"assistant","content":[]}`)}
	c.put("victim", "resp_victim", small)
	big := []json.RawMessage{json.RawMessage(`{"role":"user","content":"` + strings.Repeat("a", 1<<20) + `"}`)}
	for i := range 64 {
		c.put("attacker", "resp_"+strconv.Itoa(i), big)
	}
	if _, ok := c.get("victim", "resp_victim"); !ok {
		t.Errorf("tenant victim's conversation (%d bytes) was forgotten after another tenant remembered %d bytes: one tenant can evict every other tenant's continuations", 300, c.bytes)
	}
}
