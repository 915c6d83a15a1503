package server

import (
	"net"
	"net/netip"
	"strings"
)

// hostAllowed is the check against DNS rebinding: a web page whose name
// its owner re-points at 127.0.0.1 becomes, to the browser, same-origin
// with a server on this machine, so neither the cross-site check nor CORS
// stops it; only the Host header still carries the page's name. A request
// passes when its Host is an IP address (a rebinding page has a name, not
// an address), localhost or a name under .localhost (which browsers
// resolve to this machine themselves), or one of allowed (case-insensitive;
// an entry starting with "." allows the names under it).
func hostAllowed(hostport string, allowed []string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if hostport == "" {
		// HTTP/1.0 without a Host (HAProxy's default health check): no
		// browser sends one, so no page can be behind it.
		return true
	}
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	for _, a := range allowed {
		a = strings.ToLower(strings.TrimSuffix(a, "."))
		if host == a || strings.HasPrefix(a, ".") && strings.HasSuffix(host, a) {
			return true
		}
	}
	return false
}
