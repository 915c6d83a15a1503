package train

import (
	"fmt"
	"slices"
	"strings"
)

// Path names one of the two head pairs.
type Path string

const (
	// Query is the prompt head pair (query_risk_level_category_*), read at
	// the <|im_end|> closing the last user turn.
	Query Path = "query"
	// Response is the response head pair (risk_level_category_*), read on
	// every judged response token.
	Response Path = "response"
)

// Paths lists both paths in checkpoint order of their tensors' config maps.
var Paths = []Path{Query, Response}

// ParsePaths reads a comma-separated list of paths.
func ParsePaths(s string) ([]Path, error) {
	var out []Path
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		switch Path(p) {
		case Query, Response:
			if slices.Contains(out, Path(p)) {
				return nil, fmt.Errorf("path %q listed twice", p)
			}
			out = append(out, Path(p))
		default:
			return nil, fmt.Errorf("unknown path %q (want query, response)", p)
		}
	}
	return out, nil
}

// Taxonomy is the label set of one path: risk levels (index 0 is "Safe")
// and categories, in head-row order.
type Taxonomy struct {
	Risk       []string `json:"risk"`
	Categories []string `json:"categories"`
}

// Sample is one labelled position of one path.
type Sample struct {
	Example int // index of the example in its file
	Token   int // judged response token index; -1 for a prompt sample
	Row     int // row of its hidden state in the feature matrix
	Risk    int
	// Category is the category index, -1 where the risk is Safe: the
	// category head learns from non-Safe labels only, as upstream.
	Category int
}

// labelled reports whether ex has labels for path.
func labelled(ex *Example, p Path) bool {
	if p == Query {
		return ex.Prompt != nil
	}
	return ex.Response != nil
}

// DataCategories lists the categories of non-Safe labels of path in exs,
// in order of first appearance.
func DataCategories(exs []*Example, p Path) []string {
	var out []string
	add := func(risk, cat string) {
		if risk != "Safe" && cat != "" && !slices.Contains(out, cat) {
			out = append(out, cat)
		}
	}
	for _, ex := range exs {
		switch {
		case p == Query && ex.Prompt != nil:
			add(ex.Prompt.Risk, ex.Prompt.Category)
		case p == Response && ex.Response != nil:
			r := ex.Response
			if !r.PerToken() {
				add(r.Risk, r.Category)
				continue
			}
			for i, risk := range r.TokenRisk {
				if risk != nil && r.TokenCategory != nil && r.TokenCategory[i] != nil {
					add(*risk, *r.TokenCategory[i])
				}
			}
		}
	}
	return out
}

// Samples turns the labels of path into samples, checking every name
// against tax and every token count against the rendered conversation.
// rows gives the feature rows of each example (see featureRows).
func Samples(exs []*Example, convs []*Conversation, rows []exampleRows, p Path, tax Taxonomy) ([]Sample, error) {
	risk := func(name string) (int, error) {
		if i := slices.Index(tax.Risk, name); i >= 0 {
			return i, nil
		}
		return 0, fmt.Errorf("risk %q is not a risk level of the model (%s)", name, strings.Join(tax.Risk, ", "))
	}
	label := func(r, c string) (int, int, error) {
		ri, err := risk(r)
		if err != nil {
			return 0, 0, err
		}
		if ri == 0 {
			return 0, -1, nil
		}
		ci := slices.Index(tax.Categories, c)
		if ci < 0 {
			return 0, 0, fmt.Errorf("category %q is not in the taxonomy (%s)", c, strings.Join(tax.Categories, ", "))
		}
		return ri, ci, nil
	}
	var out []Sample
	for i, ex := range exs {
		if !labelled(ex, p) {
			continue
		}
		fail := func(err error) ([]Sample, error) { return nil, fmt.Errorf("line %d: %w", ex.Line, err) }
		if p == Query {
			ri, ci, err := label(ex.Prompt.Risk, ex.Prompt.Category)
			if err != nil {
				return fail(fmt.Errorf("prompt: %w", err))
			}
			out = append(out, Sample{Example: i, Token: -1, Row: rows[i].prompt, Risk: ri, Category: ci})
			continue
		}
		r, n := ex.Response, len(convs[i].ResponsePos)
		if n == 0 {
			return fail(fmt.Errorf("response: the assistant turn has no judged tokens"))
		}
		if r.PerToken() {
			if len(r.TokenRisk) != n {
				return fail(fmt.Errorf("response: token_risk has %d entries but the response has %d judged tokens (see streamguard tokenize --chat)", len(r.TokenRisk), n))
			}
			for t, rk := range r.TokenRisk {
				if rk == nil {
					continue
				}
				cat := ""
				if r.TokenCategory != nil && r.TokenCategory[t] != nil {
					cat = *r.TokenCategory[t]
				}
				ri, ci, err := label(*rk, cat)
				if err != nil {
					return fail(fmt.Errorf("response token %d: %w", t, err))
				}
				out = append(out, Sample{Example: i, Token: t, Row: rows[i].response + t, Risk: ri, Category: ci})
			}
			continue
		}
		ri, ci, err := label(r.Risk, r.Category)
		if err != nil {
			return fail(fmt.Errorf("response: %w", err))
		}
		start := 0
		if ri != 0 {
			if r.UnsafeStartIndex != nil {
				start = *r.UnsafeStartIndex
			}
			if start >= n {
				return fail(fmt.Errorf("response: unsafe_start_index %d is past the last of its %d judged tokens", start, n))
			}
		} else {
			start = n
		}
		for t := range n {
			s := Sample{Example: i, Token: t, Row: rows[i].response + t, Risk: 0, Category: -1}
			if t >= start {
				s.Risk, s.Category = ri, ci
			}
			out = append(out, s)
		}
	}
	return out, nil
}
