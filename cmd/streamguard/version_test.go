package main

import (
	"bytes"
	"runtime/debug"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	info := func(bi *debug.BuildInfo) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) { return bi, bi != nil }
	}
	cases := []struct {
		bi   *debug.BuildInfo
		want string
	}{
		{nil, "1.2.3"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "1.2.3 (devel)"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "1.2.3 (v1.2.3)"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}},
			"1.2.3 (devel, rev 0123456789ab+dirty)"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}},
			"1.2.3 (devel, rev abc)"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261205223549-168f2a2b7e2c+dirty"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "168f2a2b7e2c0000"}, {Key: "vcs.modified", Value: "true"}}},
			"1.2.3 (v0.0.0-20261205223549-168f2a2b7e2c+dirty)"},
	}
	for _, c := range cases {
		if got := buildVersion("1.2.3", info(c.bi)); got != c.want {
			t.Errorf("%+v: %q, want %q", c.bi, got, c.want)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var o, e bytes.Buffer
		if code := mainWithArgs(args, &o, &e); code != 0 || o.String() != "streamguard "+version+"\n" {
			t.Errorf("%v: exit %d, stdout %q stderr %q", args, code, o.String(), e.String())
		}
	}
}
