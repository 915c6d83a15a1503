package server

import (
	"strings"
	"testing"
)

// TestModerationsPartWithMessagesKey: an input array of content parts (as
// an application passes a user's message parts) with a "messages" key in a
// part (in any case) is refused or judged by the part's text, never judged
// as that conversation with the part's own text dropped.
func TestModerationsPartWithMessagesKey(t *testing.T) {
	const payload = "SECRETPAYLOAD"
	for _, raw := range []string{
		`[{"type":"text","text":"` + payload + `","messages":[{"role":"user","content":"hi"}]}]`,
		`[{"type":"text","text":"` + payload + `","MESSAGES":[{"role":"user","content":"hi"}]}]`,
	} {
		ins, err := parseModerationInput([]byte(raw))
		if err != nil {
			continue
		}
		var judged strings.Builder
		for _, in := range ins {
			for _, m := range in.msgs {
				judged.WriteString(m.Content + "\n")
			}
		}
		if !strings.Contains(judged.String(), payload) {
			t.Errorf("%s: judged %q, the part's text dropped", raw, judged.String())
		}
	}
}
