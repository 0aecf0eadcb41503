#!/usr/bin/env bash
# Scripted check of the interactive `hushwire chat` in a real terminal (tmux): the line editor
# (/help, an unknown /command refused and never sent, Ctrl-A editing, Up recalling history), a
# message typed in alice's chat reaches bob, a 5,000-character line is sent whole, a message
# full of escape sequences is shown escaped, keystrokes without Enter keep the screen unlocked,
# the screen locks after --lock-after seconds without typing (cleared with its scrollback, the
# half-typed draft gone and never sent), a wrong passphrase is refused, the right one unlocks, a
# message that arrived while locked is shown after the unlock, /quit clears the screen and exits
# 0, and Ctrl-C exits 130.
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
LOCK_AFTER=${LOCK_AFTER:-20}

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

keys() { "${TMUX_CMD[@]}" send-keys -t "$SESSION" "$@"; }

# ---- the line editor -----------------------------------------------------------------------
keys "/help" Enter
if wait_for "/lock   lock the screen now" 3; then pass "/help lists the commands"; else fail "/help lists the commands"; fi
keys "/nosuch command" Enter
if wait_for "unknown command /nosuch: nothing was sent" 3; then pass "unknown /command refused locally"; else fail "unknown /command refused locally"; fi
# Ctrl-A moves to the start of the line: only a line editor in raw mode does that.
keys -l "from alice in tmux"
keys C-a
keys -l "hello "
keys Enter
if wait_for "you: hello from alice in tmux" 3; then pass "typed message (edited with Ctrl-A) shown as sent"; else fail "typed message (edited with Ctrl-A) shown as sent"; fi
keys Up Enter
sleep 1
if [ "$(pane | grep -cF "you: hello from alice in tmux")" -ge 2 ]; then pass "Up recalls the sent line"; else fail "Up recalls the sent line"; fi

LONG="long:$(head -c 4991 /dev/zero | tr '\0' 'x'):END"
keys -l "$LONG"
keys Enter
if wait_for "x:END" 10; then pass "5,000-character line shown as sent"; else fail "5,000-character line shown as sent"; fi

BOB_GOT=$(hw bob recv --json --wait 10)
if [ "$(echo "$BOB_GOT" | grep -cF '"text":"hello from alice in tmux"')" = 2 ]; then
    pass "bob received the typed message and its recalled copy"
else
    fail "bob received the typed message and its recalled copy"
fi
if echo "$BOB_GOT" | grep -qF "nosuch"; then
    fail "the unknown /command never reached bob"
else
    pass "the unknown /command never reached bob"
fi
if echo "$BOB_GOT" | grep -qF "\"text\":\"$LONG\""; then
    pass "bob received the 5,000-character line whole"
else
    fail "bob received the 5,000-character line whole ($(echo "$BOB_GOT" | grep -o '"text":"long:x*' | wc -c) chars)"
fi

hw bob send alice "$(printf 'reply from bob \033[2J\033[H\033[31mRED\033]2;pwned\007 \342\200\256gnp.exe')" >/dev/null
if wait_for 'bob: reply from bob \x1b[2J\x1b[H\x1b[31mRED\x1b]2;pwned\x07 \u{202e}gnp.exe' 5; then
    pass "bob's reply with escape sequences shown escaped"
else
    fail "bob's reply with escape sequences shown escaped"
fi
if pane | grep -qF "x:END"; then
    pass "the escape sequences did not clear alice's screen"
else
    fail "the escape sequences did not clear alice's screen"
fi

# ---- keystrokes are activity; the lock discards the draft -------------------------------------
# Type a draft one key at a time for longer than --lock-after, without Enter.
DRAFT="zqxdraftzqx"
steps=$((LOCK_AFTER / 4 + 2))
for i in $(seq 1 $steps); do
    keys -l "${DRAFT:$(( (i - 1) % ${#DRAFT} )):1}"
    sleep 4
done
if pane | grep -qF "Locked after"; then
    fail "keystrokes without Enter keep the screen unlocked ($((steps * 4)) s > $LOCK_AFTER s)"
else
    pass "keystrokes without Enter keep the screen unlocked ($((steps * 4)) s > $LOCK_AFTER s)"
fi
DRAFT_SHOWN=$(pane | grep -o '> zqx[a-z]*' | head -n 1 | cut -c3-)

if wait_for "Locked after $LOCK_AFTER s idle (automatic logoff). Enter passphrase to unlock:" $((LOCK_AFTER + 5)); then
    pass "locked after $LOCK_AFTER s idle with the unlock prompt"
else
    fail "locked after $LOCK_AFTER s idle with the unlock prompt"
fi
if pane_all | grep -qF -e "hello from alice" -e "reply from bob" -e "x:END"; then
    fail "earlier conversation cleared from the screen and scrollback"
else
    pass "earlier conversation cleared from the screen and scrollback"
fi
if [ -n "$DRAFT_SHOWN" ] && ! pane_all | grep -qF "$DRAFT_SHOWN"; then
    pass "the half-typed draft ($DRAFT_SHOWN) is gone from the locked screen"
else
    fail "the half-typed draft ($DRAFT_SHOWN) is gone from the locked screen"
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
if pane_all | grep -qF "zqx"; then
    fail "the draft is not back after the unlock"
else
    pass "the draft is not back after the unlock"
fi

# The right passphrase as the very first thing typed after a lock unlocks (the first key after
# a lock used to end up last in the line, so the first try always failed).
keys "/lock" Enter
if wait_for "Enter passphrase to unlock:" 10; then pass "/lock locks"; else fail "/lock locks"; fi
"${TMUX_CMD[@]}" send-keys -t "$SESSION" "$HUSHWIRE_PASSPHRASE" Enter
if wait_for "Unlocked." 10; then
    pass "the right passphrase typed first after a lock unlocks"
else
    fail "the right passphrase typed first after a lock unlocks"
fi

# ---- leave ---------------------------------------------------------------------------------
keys "/quit" Enter
# wait_dead: until the pane's process has exited; prints its exit status.
wait_dead() {
    for _ in $(seq 1 50); do
        if [ "$("${TMUX_CMD[@]}" display-message -p -t "$SESSION" '#{pane_dead}')" = 1 ]; then
            # tmux may mark the pane dead a moment before it records the status.
            local st
            st=$("${TMUX_CMD[@]}" display-message -p -t "$SESSION" '#{pane_dead_status}#{?pane_dead_signal,signal #{pane_dead_signal},}')
            if [ -n "$st" ]; then echo "$st"; return 0; fi
        fi
        sleep 0.2
    done
    echo "alive"
}
status=$(wait_dead)
if [ "$status" = 0 ]; then pass "/quit exits with status 0"; else fail "/quit exits with status 0 (status=$status)"; fi
if pane_all | grep -qF -e "sent while locked" -e "Unlocked."; then
    fail "leaving clears the screen and scrollback"
else
    pass "leaving clears the screen and scrollback"
fi
if BOB_GOT=$(hw bob recv --json --wait 10) && echo "$BOB_GOT" | grep -qF -e "zqx" -e "$HUSHWIRE_PASSPHRASE" -e "not-the-passphrase"; then
    fail "neither the draft nor a passphrase attempt was sent to bob"
else
    pass "neither the draft nor a passphrase attempt was sent to bob"
fi

"${TMUX_CMD[@]}" respawn-pane -k -t "$SESSION" \
    "env HUSHWIRE_PASSPHRASE='$HUSHWIRE_PASSPHRASE' '$BIN/hushwire' --home '$WORK/alice' chat bob --lock-after $LOCK_AFTER"
if wait_for "Chat with bob" 10; then
    keys C-c
    status=$(wait_dead)
    if [ "$status" = 130 ]; then pass "Ctrl-C exits with status 130"; else fail "Ctrl-C exits with status 130 (status=$status)"; fi
else
    fail "chat started again for Ctrl-C"
fi

if [ $FAILURES -eq 0 ]; then
    echo "ALL PASSED"
    exit 0
fi
echo "$FAILURES step(s) FAILED"
exit 1
