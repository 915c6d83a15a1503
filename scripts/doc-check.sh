#!/usr/bin/env bash
# Documentation check, run by scripts/test.sh:
#  1. every relative link in README.md and docs/*.md points at a file that exists (and, for
#     #anchors into Markdown files, at a heading that exists);
#  2. no citation of documents that are not in the repository remains (spec sections "§",
#     "[TR]"/"[E]"/"[R]"/"[5]" references, cpu-anchors.md, qwen3guard-stream.md, awq-int4.md,
#     style.md, ../shared), in README.md, docs/*.md, and Go comments;
#  3. the README's fresh-machine commands that need no network run on a tiny synthetic model,
#     and the `tokenize` examples print exactly the output README shows;
#  4. the README's Go example is, word for word, the function guard/readme_test.go compiles
#     and runs, and it builds and runs from a separate module set up as README says;
#  5. the README's serving example (serve with a tenants file, then a moderation with curl)
#     answers on a tiny synthetic model, and so do the curl blocks of docs/SERVER.md and
#     docs/API.md (API.md's made-up stream id replaced by one the server opened). (The proxy example needs an upstream LLM: the OpenAI
#     SDK check, scripts/sdk-check, runs the proxy against a fake one.)
#  6. every other sh block in docs/*.md says what happens to it on the line above: `<!-- doc-check:
#     run -->` (run here, line by line in a copy of the repository with streamguard on PATH; each
#     line must exit 0) or `<!-- doc-check: skip (why) -->`; a block with neither fails.
# Each failure is printed as FILE:LINE: what is wrong; the script exits 1 if there was any.
set -uo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C.UTF-8

fail=0
err() { echo "doc-check: FAIL $*" >&2; fail=1; }
docs=(README.md docs/*.md)

# slugs FILE: the GitHub anchors of FILE's headings, one per line.
slugs() {
	awk '/^```/{f=!f; next} !f && /^#+ /{sub(/^#+ +/, ""); print}' "$1" |
		tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9 _-]//g' -e 's/ /-/g'
}

echo "== doc-check: relative links"
for f in "${docs[@]}"; do
	dir=$(dirname "$f")
	while IFS=: read -r line target; do
		target=${target#](}; target=${target%)}
		case "$target" in http://* | https://* | mailto:*) continue ;; esac
		path=${target%%#*}; anchor=
		[[ "$target" == *"#"* ]] && anchor=${target#*#}
		if [ -z "$path" ]; then dest=$f; else dest=$dir/$path; fi
		if [ ! -e "$dest" ]; then
			err "$f:$line: link to missing file: $target"
			continue
		fi
		if [ -n "$anchor" ] && [[ "$dest" == *.md ]] && ! slugs "$dest" | grep -qxF -- "$anchor"; then
			err "$f:$line: link to missing heading #$anchor in $dest"
		fi
	done < <(grep -noE '\]\([^) ]+\)' "$f")
done

echo "== doc-check: citations of documents not in the repository"
gocite='§|\[(TR|E|R)\]|cpu-anchors|qwen3guard-stream\.md|awq-int4\.md|(^|[^A-Za-z_-])style\.md|\.\./shared'
cite="$gocite"'|(^|[[:space:](])\[[0-9]+\]([^(]|$)'
while IFS= read -r hit; do
	err "${hit%%:*}:$(cut -d: -f2 <<<"$hit"): citation of a document not in this repository: $(cut -d: -f3- <<<"$hit")"
done < <(grep -nHE "$cite" "${docs[@]}")
# Go comments (RFC sections are real, public documents).
while IFS= read -r hit; do
	err "${hit%%:*}:$(cut -d: -f2 <<<"$hit"): citation of a document not in this repository: $(cut -d: -f3- <<<"$hit")"
done < <(git ls-files 'cmd/*.go' 'internal/*.go' 'guard/*.go' | xargs grep -nHE "//.*($gocite)" | grep -vE 'RFC [0-9]+ §')

echo "== doc-check: README commands on a tiny synthetic model"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# block SECTION PATTERN: the first fenced block in README section "## SECTION" holding PATTERN,
# with backslash-continued lines joined, as "LINE<TAB>COMMAND" lines.
block() {
	awk -v sec="## $1" -v pat="$2" '
		/^## / {insec = index($0, sec) == 1}
		insec && /^```/ { if (inb) { if (hit) { printf "%s", buf; exit } inb=0; buf=""; hit=0; next } inb=1; next }
		insec && inb {
			if (cont) cmd = cmd " " $0; else { cmd = $0; start = NR }
			if (index($0, pat)) hit=1
			if (sub(/\\$/, "", cmd)) { cont=1; next }
			cont=0; buf = buf start "\t" cmd "\n"
		}' README.md
}

# The fresh-machine job without network, exactly as README writes it (go run), in a temp folder.
offline=$(block "The two commands" "gen-model --preset tiny")
if [ -z "$offline" ]; then
	err "README.md: no fenced block with 'gen-model --preset tiny' under '## The two commands'"
else
	line=${offline%%$'\t'*}
	cmd=$(cut -f2- <<<"$offline" | tr '\n' ' ')
	cmd=${cmd//\/tmp\/sg-tiny/$tmp/sg-tiny}
	out=$(bash -c "$cmd" 2>&1); rc=$?
	# moderate exits 3 when it flags, which random weights may do; go run reports that as
	# "exit status 3" and exits 1.
	if { [ $rc -ne 0 ] && ! { [ $rc -eq 1 ] && [ "$(tail -n 1 <<<"$out")" = "exit status 3" ]; }; } ||
		! grep -q '^decision: ' <<<"$out"; then
		err "README.md:$line: fresh-machine command failed (exit $rc): $cmd"$'\n'"$out"
	else
		echo "README.md:$line: ok (exit $rc): $(grep '^decision: ' <<<"$out")"
	fi
fi

bin=$tmp/streamguard
if ! go build -o "$bin" ./cmd/streamguard; then
	err "README.md: go build -o streamguard ./cmd/streamguard failed"
	exit 1
fi

# Quick start, every line but bench (a 0.6B-shaped benchmark is minutes, not a doc check).
quick=$(block "Quick start" "streamguard verify")
[ -n "$quick" ] || err "README.md: no fenced block with 'streamguard verify' under '## Quick start'"
while IFS=$'\t' read -r line cmd; do
	[ -n "$cmd" ] || continue
	cmd=${cmd%%  #*}
	case "$cmd" in *"streamguard bench"*) continue ;; esac
	run=$(sed -e "s#^streamguard #$bin #" -e "s#| *streamguard #| $bin #" -e "s#/tmp/sg-tiny#$tmp/qs-tiny#g" <<<"$cmd")
	out=$(bash -c "$run" 2>&1); rc=$?
	if [ $rc -eq 0 ] || { [ $rc -eq 3 ] && [[ "$cmd" == *moderate* ]]; }; then
		echo "README.md:$line: ok (exit $rc): $cmd"
	else
		err "README.md:$line: quick-start command failed (exit $rc): $cmd"$'\n'"$out"
	fi
done <<<"$quick"

# tokenize examples: "$ COMMAND" then the exact output line.
n=0
while IFS=$'\t' read -r line cmd want; do
	n=$((n + 1))
	run=$(sed -e "s#| *streamguard #| $bin #" -e "s#MODEL_DIR#$tmp/qs-tiny#g" <<<"$cmd")
	got=$(bash -c "$run" 2>&1); rc=$?
	if [ $rc -ne 0 ] || [ "$got" != "$want" ]; then
		err "README.md:$line: tokenize example (exit $rc): $cmd"$'\n'"  README shows: $want"$'\n'"  command gave: $got"
	else
		echo "README.md:$line: ok: $cmd"
	fi
done < <(awk '
	/^## / {insec = index($0, "## Tokenizer") == 1}
	insec && /^\$ / { cmd = substr($0, 3); start = NR; while (sub(/\\$/, "", cmd)) { getline l; sub(/^ +/, "", l); cmd = cmd " " l }
		getline want; printf "%d\t%s\t%s\n", start, cmd, want }' README.md)
[ $n -gt 0 ] || err "README.md: no '\$ ... streamguard tokenize' examples found under '## Tokenizer'"

echo "== doc-check: the README's Go example"
# The first ```go block of README against the text between the markers of guard/readme_test.go.
readme_go=$(awk '/^```go$/ {inb=1; next} inb && /^```$/ {exit} inb' README.md)
test_go=$(awk '/^\/\/ README begin$/ {inb=1; next} /^\/\/ README end$/ {exit} inb' guard/readme_test.go | sed -e '/./,$!d' | sed -e ':a' -e '/^\n*$/{$d;N;ba' -e '}')
if [ -z "$readme_go" ]; then
	err "README.md: no \`\`\`go block"
elif [ "$readme_go" != "$test_go" ]; then
	err "README.md: the Go example differs from guard/readme_test.go (between '// README begin' and '// README end'):"$'\n'"$(diff <(echo "$readme_go") <(echo "$test_go"))"
else
	# A module of a user's own, set up with README's commands, running the example.
	setup=$(awk '/^### Go API/ {insec=1} insec && /^```sh$/ {inb=1; next} inb && /^```$/ {exit} inb' README.md |
		sed -e ':a' -e '/\\$/N; s/\\\n//; ta' -e 's/  *#.*$//')
	mod=$tmp/usermod
	mkdir -p "$mod"
	(cd "$mod" && go mod init example.com/usermod >/dev/null 2>&1)
	{
		printf 'package main\n\nimport (\n\t"context"\n\t"fmt"\n\t"iter"\n\t"os"\n\t"slices"\n\n\t"github.com/streamguard/streamguard/guard"\n)\n\n'
		echo "$readme_go"
		printf '\nfunc main() {\n\tif err := moderate(context.Background(), os.Args[1], "How do I bake bread?", slices.Values([]string{"Knead it", " well."})); err != nil {\n\t\tfmt.Fprintln(os.Stderr, err)\n\t\tos.Exit(1)\n\t}\n}\n'
	} >"$mod/main.go"
	run=${setup//..\/streamguard/$PWD}
	if [ -z "$setup" ]; then
		err "README.md: no \`\`\`sh block under '### Go API' setting up a module"
	elif ! out=$(cd "$mod" && bash -ec "$run" 2>&1 && go run . "$tmp/qs-tiny" 2>&1); then
		err "README.md: the Go example, from a module set up as README says, failed: $run"$'\n'"$out"
	else
		echo "README.md: ok: the Go example runs from a separate module ($(grep -c . <<<"$out") lines of output)"
	fi
fi

echo "== doc-check: the README's serving example"
serving=$(block "Serving and the proxy" "streamguard serve --model")
if [ -z "$serving" ]; then
	err "README.md: no fenced block with 'streamguard serve --model' under '## Serving and the proxy'"
else
	port=$((20000 + RANDOM % 20000))
	export KEY=doc-check-key
	printf '{"tenants": [{"name": "docs", "api_key_sha256": ["%s"]}]}\n' "$(printf %s "$KEY" | "$bin" serve --hash-key)" >"$tmp/tenants.json"
	serve_cmd=$(grep -m1 'streamguard serve' <<<"$serving" | cut -f2-)
	serve_line=$(grep -m1 'streamguard serve' <<<"$serving" | cut -f1)
	serve_cmd=$(sed -e "s#^streamguard #$bin #" -e "s#--model [^ ]*#--model $tmp/qs-tiny#" -e "s#8080#$port#g" -e "s#tenants.json#$tmp/tenants.json#" <<<"$serve_cmd")
	bash -c "exec $serve_cmd" >"$tmp/serve.log" 2>&1 &
	serve_pid=$!
	for _ in $(seq 100); do
		curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
		sleep 0.1
	done
	# The lines after serve, as one script (a JSON body may span lines).
	client=$(awk '/^## Serving and the proxy/ {insec=1} insec && /^```sh$/ {inb=1; next} inb && /^```$/ {exit} inb' README.md | sed 1d)
	out=$(bash -c "${client//8080/$port}" 2>&1); rc=$?
	if [ $rc -eq 0 ] && grep -q '"results"' <<<"$out" && grep -q '"flagged"' <<<"$out"; then
		echo "README.md:$((serve_line + 1)): ok: the moderation answered: $(head -c 100 <<<"$out")..."
	else
		err "README.md:$((serve_line + 1)): serving example (exit $rc): $client"$'\n'"$out"$'\n'"serve (README.md:$serve_line) said: $(cat "$tmp/serve.log")"
	fi
	# docs/SERVER.md's client block and every curl block of docs/API.md, in order, one shell.
	if ! command -v jq >/dev/null 2>&1; then
		err "docs/SERVER.md: jq is needed to run its examples (apt-get install jq)"
	else
		doc_blocks() { # FILE: its sh blocks that call curl (or set H) and start no server, each ending with a marker line
			awk '/^```sh$/ {inb=1; buf=""; next} inb && /^```$/ {inb=0; if ((buf ~ /curl / || buf ~ /(^|\n)H=/) && buf !~ /streamguard serve/) printf "%s#END %d\n", buf, start; next}
				inb { if (buf == "") start = NR; buf = buf $0 "\n" }' "$1"
		}
		for f in docs/SERVER.md docs/API.md; do
			script="KEY=$KEY"$'\n'
			n=0
			while IFS= read -r l; do
				if [[ "$l" == "#END "* ]]; then
					n=$((n + 1))
					script+="echo \"@@block ${l#\#END } rc=\$?\""$'\n'
					continue
				fi
				case "$l" in
				KEY=*) continue ;; # the tenant key is doc-check's
				ID=[0-9a-f]*) l='ID=$(curl -s localhost:8080/v1/streams -H "$H" -d '"'"'{"prompt": "How do I make tea?"}'"'"' | jq -r .id)' ;;
				esac
				script+="$l"$'\n'
			done < <(doc_blocks "$f")
			out=$(bash -c "${script//8080/$port}" 2>&1)
			bad=$(awk -v f="$f" '/^@@block/ {if (blk != "" && blk ~ /"error"|curl: \(|command not found|rc=[1-9]/) printf "%s:%s\n%s\n", f, $2, blk; blk=""; next} {blk = blk $0 "\n"}' <<<"$out")
			if [ "$n" -eq 0 ]; then
				err "$f: no sh block with curl found"
			elif [ -n "$bad" ]; then
				err "$f: curl examples failed against serve on a tiny model:"$'\n'"$bad"
			else
				echo "$f: ok: $n curl blocks answered"
			fi
		done
	fi
	kill "$serve_pid" 2>/dev/null
	wait "$serve_pid" 2>/dev/null
fi

echo "== doc-check: the other blocks of docs/"
mkdir -p "$tmp/path" "$tmp/repo"
ln -sf "$bin" "$tmp/path/streamguard"
# The blocks run in a copy of the tracked files, so that what they write stays out of the checkout.
git ls-files -z | xargs -0 cp --parents -t "$tmp/repo"
for f in docs/*.md; do
	case "$f" in docs/SERVER.md | docs/API.md) continue ;; esac # their curl blocks run above
	# Each sh block as "LINE<TAB>MARKER<TAB>COMMAND" per command (continuations joined).
	while IFS=$'\t' read -r line marker cmd; do
		case "$marker" in
		"<!-- doc-check: run -->")
			out=$(cd "$tmp/repo" && PATH="$tmp/path:$PATH" bash -c "$cmd" 2>&1); rc=$?
			if [ $rc -ne 0 ]; then
				err "$f:$line: (exit $rc) $cmd"$'\n'"$out"
			else
				echo "$f:$line: ok: $cmd"
			fi
			;;
		"<!-- doc-check: skip ("*")"*" -->") ;;
		*) err "$f:$line: a sh block with no <!-- doc-check: run --> or <!-- doc-check: skip (why) --> line above it" ;;
		esac
	done < <(awk '
		/^```(sh|bash)$/ { inb=1; marker=prev; next }
		inb && /^```$/ { inb=0; if (!any) printf "%d\t%s\t\n", NR, marker; any=0; next }
		inb {
			if (cont) cmd = cmd " " $0; else { cmd = $0; start = NR }
			if (sub(/\\$/, "", cmd)) { cont=1; next }
			cont=0
			sub(/[ \t]+#.*$/, "", cmd)
			if (cmd ~ /^[ \t]*(#|$)/) next
			any=1; printf "%d\t%s\t%s\n", start, marker, cmd
		}
		{ prev = $0 }' "$f")
done

if [ $fail -ne 0 ]; then
	echo "doc-check: FAILED (see the FAIL lines above)" >&2
	exit 1
fi
echo "doc-check: ok"
