#!/usr/bin/env bash
# protocol-doc.sh: PROTOCOL.md section 8 is exactly what the reference encoder prints today.
set -u
: "${top_builddir:?}" "${top_srcdir:?}"
echo "1..1"
doc=$(sed -n '/^<!-- BEGIN wire-examples/,/^<!-- END wire-examples/p' "$top_srcdir/proto/PROTOCOL.md" |
      sed '1d;$d')
gen=$("$top_builddir/proto/wire-examples")
if [ -n "$doc" ] && [ "$doc" = "$gen" ]; then
    echo "ok 1 - PROTOCOL.md section 8 matches proto/wire-examples"
else
    echo "not ok 1 - PROTOCOL.md section 8 differs from proto/wire-examples"
    diff <(printf '%s\n' "$doc") <(printf '%s\n' "$gen") | sed 's/^/# /' | head -40
fi
