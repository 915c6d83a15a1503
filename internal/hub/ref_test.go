package hub

import (
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	good := map[string]Ref{
		"Qwen/Qwen3Guard-Stream-0.6B":                        {"Qwen/Qwen3Guard-Stream-0.6B", "main"},
		"Qwen/Qwen3Guard-Stream-0.6B@v1.0":                   {"Qwen/Qwen3Guard-Stream-0.6B", "v1.0"},
		"a/b@release-2.x/fix_1.0":                            {"a/b", "release-2.x/fix_1.0"},
		"a/b@refs/pr/1":                                      {"a/b", "refs/pr/1"},
		"org_1/x.y@0123456789abcdef0123456789abcdef01234567": {"org_1/x.y", "0123456789abcdef0123456789abcdef01234567"},
	}
	for s, want := range good {
		got, err := ParseRef(s)
		if err != nil || got != want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", s, got, err, want)
		}
		if !IsRepoID(s) {
			t.Errorf("IsRepoID(%q) = false", s)
		}
	}
	bad := map[string]string{
		"":                             "ORG/NAME",
		"gpt2":                         "ORG/NAME",
		"/abs/path":                    "ORG/NAME",
		"./models/x":                   "ORG/NAME",
		"a/b/c":                        "ORG/NAME",
		"a--b/c":                       `"--"`,
		"a/b..c":                       `".."`,
		"a/-b":                         "start and end",
		"a/b@":                         "empty revision",
		"a/b@../../x":                  `contains ".."`,
		"a/b@..0":                      `contains ".."`,
		"a/b@x..y":                     `contains ".."`,
		"a/b@x//y":                     "empty segment",
		"a/b@/x":                       "empty segment",
		"a/b@x/":                       "empty segment",
		"a/b@.hidden":                  `starts with "."`,
		"a/b@x/.y":                     `starts with "."`,
		"a/b@main.lock":                `".lock"`,
		"a/b@x.lock/y":                 `".lock"`,
		"a/b@main.":                    `ends in "."`,
		"a/b@@":                        `"@"`,
		"a/b@x@{1}":                    `"@{"`,
		"a/b@x~1":                      "not allowed",
		"a/b@x:y":                      "not allowed",
		"a/b@x y":                      "not allowed",
		"a/b c":                        "not allowed",
		"ä/b":                          "not allowed",
		"a/" + strings.Repeat("x", 96): "longer",
	}
	for s, want := range bad {
		if _, err := ParseRef(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRef(%q) error %v, want one containing %q", s, err, want)
		}
	}
	if r, _ := ParseRef("a/b@dev"); r.String() != "a/b@dev" {
		t.Errorf("String() = %q", r.String())
	}
	if r, _ := ParseRef("a/b"); r.String() != "a/b" {
		t.Errorf("String() = %q", r.String())
	}
}

func TestParseContentRange(t *testing.T) {
	good := map[string][3]int64{"bytes 0-9/10": {0, 9, 10}, "bytes 5-5/*": {5, 5, -1}, " bytes 100-199/1000": {100, 199, 1000}}
	for h, want := range good {
		a, b, c, err := parseContentRange(h)
		if err != nil || [3]int64{a, b, c} != want {
			t.Errorf("%q: %d %d %d %v", h, a, b, c, err)
		}
	}
	for _, h := range []string{"", "bytes */10", "bytes 9-0/10", "bytes 0-9/9", "items 0-1/2", "bytes -1-2/3", "bytes 0-1"} {
		if _, _, _, err := parseContentRange(h); err == nil {
			t.Errorf("%q accepted", h)
		}
	}
}

func TestNormalizeETagAndFileNames(t *testing.T) {
	for h, want := range map[string]string{`"abc"`: "abc", `W/"abc-1"`: "abc-1", "plain": "plain"} {
		if got, err := normalizeETag(h); err != nil || got != want {
			t.Errorf("normalizeETag(%q) = %q, %v", h, got, err)
		}
	}
	for _, h := range []string{`""`, `"../x"`, `".."`, `"a/b"`, `"a b"`, strings.Repeat("a", 200)} {
		if _, err := normalizeETag(h); err == nil {
			t.Errorf("normalizeETag(%q) accepted", h)
		}
	}
	for _, n := range []string{"config.json", "a/b/c.txt", ".gitattributes", "x..y"} {
		if err := checkFileName(n); err != nil {
			t.Errorf("checkFileName(%q): %v", n, err)
		}
	}
	for _, n := range []string{"", "/etc/passwd", "../x", "a/../../x", "a//b", "a\\b", "a/./b", "x\x00"} {
		if err := checkFileName(n); err == nil {
			t.Errorf("checkFileName(%q) accepted", n)
		}
	}
}

func TestParseRepoInfo(t *testing.T) {
	sha := strings.Repeat("ab", 20)
	lfs := strings.Repeat("c", 64)
	info, err := parseRepoInfo([]byte(`{"id":"a/b","sha":"` + sha + `","siblings":[{"rfilename":"config.json","size":12},` +
		`{"rfilename":"model.safetensors","size":134,"lfs":{"sha256":"` + strings.ToUpper(lfs) + `","size":999,"pointerSize":134}},{"rfilename":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []RepoFile{{"config.json", 12, ""}, {"model.safetensors", 999, lfs}, {"x", -1, ""}}
	if info.Commit != sha || len(info.Files) != 3 {
		t.Fatalf("%+v", info)
	}
	for i := range want {
		if info.Files[i] != want[i] {
			t.Errorf("file %d = %+v, want %+v", i, info.Files[i], want[i])
		}
	}
	for _, bad := range []string{
		`{"sha":"main"}`,
		`{"sha":"` + sha + `","siblings":[{"rfilename":"../../etc/x"}]}`,
		`{"sha":"` + sha + `","siblings":[{"rfilename":"a"},{"rfilename":"a"}]}`,
		`{"sha":"` + sha + `","siblings":[{"rfilename":"a","lfs":{"sha256":"xyz"}}]}`,
		`{"sha":"` + sha + `","siblings":[{"rfilename":"a","size":-5}]}`,
		`{"sha":"` + sha + `"} {}`,
		`[`,
	} {
		if _, err := parseRepoInfo([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}
