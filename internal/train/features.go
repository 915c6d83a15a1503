package train

import (
	"fmt"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/qwen3"
)

// batchTokens is the number of tokens one backbone forward packs: enough
// rows for the matrix kernels to run at full speed.
const batchTokens = 512

// kvBudget bounds the KV-cache memory of the conversations of one forward.
// Every cache takes at least minCachePositions positions (the engine's
// first allocation), 29 MB for the 0.6B model, so many short conversations
// in one forward would otherwise take gigabytes.
const (
	kvBudget          = 512 << 20
	minCachePositions = 128
)

// exampleRows locates one example's hidden states in the feature matrix;
// -1 where the example has no such label.
type exampleRows struct{ prompt, response int }

// featurePlan lists, per conversation, the positions whose hidden states
// training needs (the prompt's <|im_end|> when the prompt is labelled, every
// judged response token when the response is), and where each example's
// rows start in the feature matrix.
func featurePlan(exs []*Example, convs []*Conversation) (positions [][]int, rows []exampleRows, total int) {
	positions = make([][]int, len(convs))
	rows = make([]exampleRows, len(convs))
	for i, c := range convs {
		rows[i] = exampleRows{prompt: -1, response: -1}
		if exs[i].Prompt != nil {
			rows[i].prompt = total + len(positions[i])
			positions[i] = append(positions[i], c.PromptPos)
		}
		if exs[i].Response != nil {
			rows[i].response = total + len(positions[i])
			positions[i] = append(positions[i], c.ResponsePos...)
		}
		total += len(positions[i])
	}
	return positions, rows, total
}

// Progress receives extraction progress: conversations done of total, and
// tokens run through the backbone so far.
type Progress func(done, total, tokens int, elapsed time.Duration)

// extract runs every conversation through the backbone, up to its last
// wanted position, and returns the final normed hidden states at the
// wanted positions, rows in plan order. Conversations are packed into
// forwards of about batchTokens tokens; each keeps its own cache, so its
// hidden states are bitwise those of running it alone (the engine's batch
// invariance), which is what guard.Model.Moderate computes.
func extract(bb backbone, convs []*Conversation, positions [][]int, progress Progress) ([]float32, int, error) {
	net := bb.net
	H := net.Hidden()
	total := 0
	for _, p := range positions {
		total += len(p)
	}
	feats := make([]float32, total*H)
	start := time.Now()
	row, tokens := 0, 0
	perPos := net.BytesPerPosition()
	for lo := 0; lo < len(convs); {
		hi, n := lo, 0
		var kv int64
		for hi < len(convs) {
			f := feedLen(convs[hi], positions[hi])
			c := int64(max(f, minCachePositions)) * perPos
			if hi > lo && (n+f > batchTokens || kv+c > kvBudget) {
				break
			}
			n, kv = n+f, kv+c
			hi++
		}
		idss := make([][]int, 0, hi-lo)
		idx := make([]int, 0, hi-lo)
		for i := lo; i < hi; i++ {
			if len(positions[i]) == 0 {
				continue
			}
			idss = append(idss, convs[i].IDs[:feedLen(convs[i], positions[i])])
			idx = append(idx, i)
		}
		outs, err := bb.forward(idss)
		if err != nil {
			return nil, 0, fmt.Errorf("conversation %d: %w", lo, err)
		}
		for j, i := range idx {
			for _, p := range positions[i] {
				copy(feats[row*H:(row+1)*H], outs[j].Hidden[p])
				row++
			}
		}
		tokens += n
		lo = hi
		if progress != nil {
			progress(hi, len(convs), tokens, time.Since(start))
		}
	}
	return feats, tokens, nil
}

// feedLen is how many ids of c the backbone must see: through the last
// wanted position.
func feedLen(c *Conversation, positions []int) int {
	last := -1
	for _, p := range positions {
		last = max(last, p)
	}
	return last + 1
}

// backbone is where hidden states come from: the network's shapes (net,
// the CPU engine) and the forward of the device the model runs on, which
// runs each id sequence from an empty cache and returns hidden states.
type backbone struct {
	net     *qwen3.Model
	forward func(ids [][]int) ([]qwen3.Output, error)
}

// modelBackbone is m's backbone, on m's device (guard.Options.Device).
func modelBackbone(m *guard.Model) backbone {
	return backbone{net: guardhook.Network(m), forward: func(ids [][]int) ([]qwen3.Output, error) { return guardhook.Forward(m, ids) }}
}
