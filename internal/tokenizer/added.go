package tokenizer

import (
	"fmt"
	"sort"
	"strings"
)

// addedMatcher finds added tokens in raw text the way tokenizers does before
// normalisation: leftmost match first, and the longest token among those
// starting there.
type addedMatcher struct {
	ids     map[string]int
	byFirst [256][]addedToken // candidates by first byte, longest first
	first   [256]bool
	any     bool
}

type addedToken struct {
	content string
	id      int
}

func (m *addedMatcher) add(content string, id int) error {
	if m.ids == nil {
		m.ids = map[string]int{}
	}
	if old, dup := m.ids[content]; dup && old != id {
		return fmt.Errorf("added token %q has two ids, %d and %d", content, old, id)
	}
	m.ids[content] = id
	return nil
}

func (m *addedMatcher) finish() {
	for content, id := range m.ids {
		b := content[0]
		m.byFirst[b] = append(m.byFirst[b], addedToken{content, id})
		m.first[b] = true
		m.any = true
	}
	for b := range m.byFirst {
		c := m.byFirst[b]
		sort.Slice(c, func(i, j int) bool {
			if len(c[i].content) != len(c[j].content) {
				return len(c[i].content) > len(c[j].content)
			}
			return c[i].content < c[j].content
		})
	}
}

// next looks for the first added token in s at or after from. It returns the
// match [start, end) and its id; start is -1 when there is none. When atEOF
// is false and, at some position, s ends inside what could still become a
// token, next stops there and returns start = -1 and undecided = that
// position; everything before it is plain text for certain.
func (m *addedMatcher) next(s string, from int, atEOF bool) (start, end, id, undecided int) {
	undecided = -1
	if !m.any {
		return -1, -1, -1, -1
	}
	for i := from; i < len(s); i++ {
		if !m.first[s[i]] {
			continue
		}
		rest := s[i:]
		for _, c := range m.byFirst[s[i]] {
			if len(rest) < len(c.content) {
				if !atEOF && strings.HasPrefix(c.content, rest) {
					return -1, -1, -1, i
				}
				continue
			}
			if rest[:len(c.content)] == c.content {
				return i, i + len(c.content), c.id, -1
			}
		}
	}
	return -1, -1, -1, -1
}
