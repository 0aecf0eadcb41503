#!/usr/bin/env bash
# Scripted check of the interactive `hushwire chat` in a real terminal (tmux): a message typed in
# alice's chat reaches bob, bob's reply shows up in the chat, the screen locks after
# --lock-after seconds without typing (cleared, prompt shown), a wrong passphrase is refused,
# the right one unlocks, and a message that arrived while locked is shown after the unlock.
#
#   scripts/chat-tmux-check.sh              # builds hushwire and hushwire-relay (debug) first
#   SKIP_BUILD=1 HUSHWIRE_BIN_DIR=target/release scripts/chat-tmux-check.sh
#
# Prints PASS/FAIL per step; exits non-zero if any step failed. Needs tmux
# (`apt-get install -y tmux`). Uses its own tmux server socket and temporary homes; the stores
# use HUSHWIRE_INSECURE_FAST_KDF=1 (test-only key derivation).

set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${HUSHWIRE_BIN_DIR:-$ROOT/target/debug}
# Long enough for bob's recv and reply to finish before alice's screen locks, even on a busy machine.
LOCK_AFTER=${LOCK_AFTER:-10}

if ! command -v tmux >/dev/null; then
    echo "FAIL: tmux is not installed (apt-get install -y tmux)"
    exit 2
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build -q -p hushwire-cli -p hushwire-relay) || { echo "FAIL: build"; exit 2; }
fi

WORK=$(mktemp -d)
SOCKET="hushwire-chat-check-$$"
SESSION="chat"
RELAY_PID=""
TMUX_CMD=(tmux -L "$SOCKET" -f /dev/null)

cleanup() {
    "${TMUX_CMD[@]}" kill-server 2>/dev/null
    [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null && wait "$RELAY_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

export HUSHWIRE_PASSPHRASE="tmux check passphrase"
export HUSHWIRE_INSECURE_FAST_KDF=1
unset HUSHWIRE_HOME HUSHWIRE_CLIENT_FAULT HUSHWIRE_LOG

FAILURES=0
pass() { echo "PASS: $1"; }
fail() {
    echo "FAIL: $1"
    FAILURES=$((FAILURES + 1))
    echo "----- alice's pane -----"
    pane
    echo "------------------------"
}
pane() { "${TMUX_CMD[@]}" capture-pane -p -t "$SESSION"; }
pane_all() { "${TMUX_CMD[@]}" capture-pane -p -S - -t "$SESSION"; }
# wait_for TEXT SECONDS: until TEXT is on alice's screen.
wait_for() {
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -le "$deadline" ]; do
        pane | grep -qF -- "$1" && return 0
        sleep 0.2
    done
    return 1
}
hw() { local home=$1; shift; "$BIN/hushwire" --home "$WORK/$home" "$@"; }

# ---- relay and two users -------------------------------------------------------------------
"$BIN/hushwire-relay" --listen 127.0.0.1:0 --data-dir "$WORK/relay" serve 2>"$WORK/relay.log" &
RELAY_PID=$!
URL=""
for _ in $(seq 1 100); do
    URL=$(grep -o 'ws://127\.0\.0\.1:[0-9]*/v1/websocket' "$WORK/relay.log" | head -n 1)
    [ -n "$URL" ] && break
    sleep 0.1
done
if [ -z "$URL" ]; then
    echo "FAIL: the relay did not start"; cat "$WORK/relay.log"; exit 1
fi
pass "relay listening on $URL"

setup_ok=1
for who in alice bob; do
    hw "$who" init >/dev/null 2>&1 && hw "$who" register "$URL" >/dev/null || setup_ok=0
done
ALICE=$(hw alice whoami --json | sed -n 's/.*"address":"\([^"]*\)".*/\1/p')
BOB=$(hw bob whoami --json | sed -n 's/.*"address":"\([^"]*\)".*/\1/p')
hw alice contact add bob "$BOB" >/dev/null || setup_ok=0
hw bob contact add alice "$ALICE" >/dev/null || setup_ok=0
if [ $setup_ok = 1 ] && [ -n "$ALICE" ] && [ -n "$BOB" ]; then
    pass "two homes set up (init, register, contact add)"
else
    echo "FAIL: setting up the homes"; exit 1
fi

# ---- alice's chat in tmux ------------------------------------------------------------------
"${TMUX_CMD[@]}" new-session -d -s "$SESSION" -x 120 -y 30 \
    "env HUSHWIRE_PASSPHRASE='$HUSHWIRE_PASSPHRASE' '$BIN/hushwire' --home '$WORK/alice' chat bob --lock-after $LOCK_AFTER"
"${TMUX_CMD[@]}" set-option -t "$SESSION" remain-on-exit on >/dev/null
if wait_for "Chat with bob" 10; then pass "chat started"; else fail "chat started"; fi

"${TMUX_CMD[@]}" send-keys -t "$SESSION" "hello from alice in tmux" Enter
if wait_for "you: hello from alice in tmux" 3; then pass "typed message shown as sent"; else fail "typed message shown as sent"; fi

if hw bob recv --json --wait 10 | grep -qF '"text":"hello from alice in tmux"'; then
    pass "bob received the typed message"
else
    fail "bob received the typed message"
fi

hw bob send alice "reply from bob" >/dev/null
if wait_for "bob: reply from bob" 5; then pass "bob's reply appeared in alice's chat"; else fail "bob's reply appeared in alice's chat"; fi

# ---- automatic lock ------------------------------------------------------------------------
if wait_for "Locked after $LOCK_AFTER s idle (automatic logoff). Enter passphrase to unlock:" $((LOCK_AFTER + 5)); then
    pass "locked after $LOCK_AFTER s idle with the unlock prompt"
else
    fail "locked after $LOCK_AFTER s idle with the unlock prompt"
fi
if pane_all | grep -qF -e "hello from alice" -e "reply from bob"; then
    fail "earlier conversation cleared from the screen and scrollback"
else
    pass "earlier conversation cleared from the screen and scrollback"
fi

hw bob send alice "sent while locked" >/dev/null
sleep 1.5
if pane_all | grep -qF "sent while locked"; then
    fail "message arriving while locked is not shown"
else
    pass "message arriving while locked is not shown"
fi

"${TMUX_CMD[@]}" send-keys -t "$SESSION" "not-the-passphrase" Enter
if wait_for "wrong passphrase" 10; then pass "wrong passphrase refused"; else fail "wrong passphrase refused"; fi
if pane_all | grep -qF "not-the-passphrase"; then
    fail "typed passphrase not echoed"
else
    pass "typed passphrase not echoed"
fi
if pane | grep -qF "bob: sent while locked"; then
    fail "still locked after the wrong passphrase"
else
    pass "still locked after the wrong passphrase"
fi

"${TMUX_CMD[@]}" send-keys -t "$SESSION" "$HUSHWIRE_PASSPHRASE" Enter
if wait_for "Unlocked." 10; then pass "right passphrase unlocks"; else fail "right passphrase unlocks"; fi
if wait_for "bob: sent while locked" 3; then
    pass "message sent while locked shown after unlock"
else
    fail "message sent while locked shown after unlock"
fi
if pane_all | grep -qF "$HUSHWIRE_PASSPHRASE"; then
    fail "passphrase never on screen"
else
    pass "passphrase never on screen"
fi

# ---- leave ---------------------------------------------------------------------------------
"${TMUX_CMD[@]}" send-keys -t "$SESSION" "/quit" Enter
dead=0
for _ in $(seq 1 50); do
    if [ "$("${TMUX_CMD[@]}" display-message -p -t "$SESSION" '#{pane_dead}')" = 1 ]; then dead=1; break; fi
    sleep 0.2
done
status=$("${TMUX_CMD[@]}" display-message -p -t "$SESSION" '#{pane_dead_status}')
if [ $dead = 1 ] && [ "$status" = 0 ]; then
    pass "/quit exits with status 0"
else
    fail "/quit exits with status 0 (dead=$dead status=$status)"
fi

if [ $FAILURES -eq 0 ]; then
    echo "ALL PASSED"
    exit 0
fi
echo "$FAILURES step(s) FAILED"
exit 1
