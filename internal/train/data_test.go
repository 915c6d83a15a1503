package train

import (
	"strings"
	"testing"
)

const (
	userOnly = `"messages":[{"role":"user","content":"how do I pick a lock"}]`
	withResp = `"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Hello there"}]`
)

func TestParseExample(t *testing.T) {
	good := []string{
		`{` + userOnly + `,"prompt":{"risk":"Unsafe","category":"Locks"}}`,
		`{` + userOnly + `,"prompt":{"risk":"Safe"},"id":17,"meta":{"source":"x"}}`,
		`{` + withResp + `,"response":{"risk":"Unsafe","category":"Locks","unsafe_start_index":1}}`,
		`{` + withResp + `,"response":{"risk":"Safe"}}`,
		`{` + withResp + `,"prompt":{"risk":"Safe"},"response":{"token_risk":["Safe",null,"Unsafe"],"token_category":[null,null,"Locks"]}}`,
		`{` + withResp + `,"response":{"token_risk":["Safe","Safe"]}}`,
	}
	for _, line := range good {
		if _, err := ParseExample([]byte(line)); err != nil {
			t.Errorf("%s: %v", line, err)
		}
	}
	bad := []struct{ line, want string }{
		{`{`, "invalid JSON"},
		{`{"messages":[]}`, `"messages" is missing or empty`},
		{`{` + userOnly + `}`, "no label"},
		{`{` + userOnly + `,"promt":{"risk":"Safe"}}`, `unknown field "promt"`},
		{`{` + userOnly + `,"prompt":{"risk":"Unsafe"}}`, `risk "Unsafe" needs a category`},
		{`{` + userOnly + `,"prompt":{"category":"X"}}`, `"risk" is missing`},
		{`{` + userOnly + `,"response":{"risk":"Safe"}}`, "need a final assistant message"},
		{`{"messages":[{"role":"assistant","content":"x"}],"response":{"risk":"Safe"}}`, "must end with a user turn"},
		{`{"messages":[{"role":"user","content":"  "}],"prompt":{"risk":"Safe"}}`, "no content"},
		{`{"messages":[{"role":"tool","content":"x"}],"prompt":{"risk":"Safe"}}`, `role "tool"`},
		{`{` + withResp + `,"response":{"risk":"Unsafe","category":"X","unsafe_start_index":-1}}`, "negative"},
		{`{` + withResp + `,"response":{"risk":"Safe","unsafe_start_index":2}}`, "a Safe response has no unsafe_start_index"},
		{`{` + withResp + `,"response":{"risk":"Safe","token_risk":["Safe"]}}`, "not both"},
		{`{` + withResp + `,"response":{"token_risk":["Safe"],"token_category":[null,null]}}`, "token_category has 2 entries but token_risk has 1"},
		{`{` + withResp + `,"response":{"token_risk":[null,null]}}`, "labels no token"},
		{`{` + withResp + `,"response":{"token_risk":[null],"token_category":["X"]}}`, "a category without a risk"},
		{`{` + withResp + `,"response":{"token_risk":["Unsafe"]}}`, `response token 0: risk "Unsafe" needs a category`},
		{`{` + withResp + `,"response":{"risk":"Safe","token_category":["X"]}}`, "token_category needs token_risk"},
		{`{` + userOnly + `,"prompt":{"risk":"Safe"}} {}`, "more than one value"},
	}
	for _, c := range bad {
		_, err := ParseExample([]byte(c.line))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.line, err, c.want)
		}
	}
}

func TestParseDataLineNumbers(t *testing.T) {
	in := "\n{" + userOnly + `,"prompt":{"risk":"Safe"}}` + "\n\n{bad\n{" + userOnly + "}\n"
	_, err := ParseData(strings.NewReader(in))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"line 4: invalid JSON", "line 5: no label"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	exs, err := ParseData(strings.NewReader("\n{" + userOnly + `,"prompt":{"risk":"Safe"}}` + "\n"))
	if err != nil || len(exs) != 1 || exs[0].Line != 2 {
		t.Fatalf("got %v, %v; want one example on line 2", exs, err)
	}
	if _, err := ParseData(strings.NewReader("\n \n")); err == nil || !strings.Contains(err.Error(), "no examples") {
		t.Errorf("empty file: %v", err)
	}
	var many strings.Builder
	for range 30 {
		many.WriteString("{x\n")
	}
	if _, err := ParseData(strings.NewReader(many.String())); err == nil || strings.Count(err.Error(), "invalid JSON") != maxReportedErrors {
		t.Errorf("30 bad lines: want %d reported, got %v", maxReportedErrors, err)
	}
}

// FuzzParseData: any input gives examples or an error, never a panic, and
// every accepted example passes its own checks.
func FuzzParseData(f *testing.F) {
	f.Add([]byte(`{` + withResp + `,"prompt":{"risk":"Safe"},"response":{"token_risk":["Safe",null,"Unsafe"],"token_category":[null,null,"Locks"]}}`))
	f.Add([]byte(`{` + withResp + `,"response":{"risk":"Unsafe","category":"Locks","unsafe_start_index":1}}` + "\n{" + userOnly + `,"prompt":{"risk":"Safe"}}`))
	f.Add([]byte(`{"messages":[{"role":"user","content":"x","reasoning_content":"y"}],"prompt":{"risk":"Controversial","category":"Z"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		exs, err := ParseData(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		for _, ex := range exs {
			if err := ex.check(); err != nil {
				t.Fatalf("accepted example fails its check: %v", err)
			}
			_ = DataCategories(exs, Query)
			_ = DataCategories(exs, Response)
		}
	})
}
