#!/usr/bin/env bash
# Scripted check of a clinic conversation in the interactive `hushwire chat`, in a real terminal
# (tmux): an organization, a clinic relay, two agents (Ada and Ben) and a patient. The patient
# opens a conversation and Ada claims it; then the patient's and Ada's chats run in tmux. The
# patient's header names the verified agent; a message with HTML and an escape sequence reaches
# Ada as text; Ada's reply reaches the patient under her verified name, with delivered/read
# receipts for the patient's message; Ada's /recall shows as recalled on the patient's screen;
# Ada hands the conversation to Ben with a staff note, which Ben's chat shows (with the patient's
# earlier message, shared by Ada) and the patient's never does; the patient sees Ben join and Ada
# leave; Ben and the patient exchange messages that Ada no longer gets; /quit exits 0 everywhere.
#
#   scripts/conversation-tmux-check.sh      # builds hushwire and hushwire-relay (debug) first
#   SKIP_BUILD=1 HUSHWIRE_BIN_DIR=target/release scripts/conversation-tmux-check.sh
#
# Prints PASS/FAIL per step; exits non-zero if any step failed. Needs tmux
# (`apt-get install -y tmux`) and python3 (to pick a free port). Uses its own tmux server socket
# and temporary homes; the stores use HUSHWIRE_INSECURE_FAST_KDF=1 (test-only key derivation).

set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${HUSHWIRE_BIN_DIR:-$ROOT/target/debug}
WAIT=${WAIT:-20}

if ! command -v tmux >/dev/null; then
    echo "FAIL: tmux is not installed (apt-get install -y tmux)"
    exit 2
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build -q -p hushwire-cli -p hushwire-relay) || { echo "FAIL: build"; exit 2; }
fi

WORK=$(mktemp -d)
SOCKET="hushwire-conversation-check-$$"
SESSION="conv"
RELAY_PID=""
TMUX_CMD=(tmux -L "$SOCKET" -f /dev/null)

cleanup() {
    "${TMUX_CMD[@]}" kill-server 2>/dev/null
    [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null && wait "$RELAY_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

export HUSHWIRE_PASSPHRASE="tmux check passphrase"
export HUSHWIRE_ORG_PASSPHRASE="tmux check organization passphrase"
export HUSHWIRE_INSECURE_FAST_KDF=1
unset HUSHWIRE_HOME HUSHWIRE_CLIENT_FAULT HUSHWIRE_LOG

FAILURES=0
pass() { echo "PASS: $1"; }
fail() {
    echo "FAIL: $1"
    FAILURES=$((FAILURES + 1))
    for w in pat ada ben; do
        if "${TMUX_CMD[@]}" has-session -t "$SESSION:$w" 2>/dev/null; then
            echo "----- $w's pane -----"
            pane_all "$w"
        fi
    done
    echo "---------------------"
}
# pane WINDOW: the visible screen; pane_all WINDOW: with the scrollback.
pane() { "${TMUX_CMD[@]}" capture-pane -p -J -t "$SESSION:$1" 2>/dev/null; }
pane_all() { "${TMUX_CMD[@]}" capture-pane -p -J -S - -t "$SESSION:$1" 2>/dev/null; }
# wait_for WINDOW TEXT [SECONDS]: until TEXT is in WINDOW (screen or scrollback).
wait_for() {
    local deadline=$((SECONDS + ${3:-$WAIT}))
    while [ $SECONDS -le "$deadline" ]; do
        pane_all "$1" | grep -qF -- "$2" && return 0
        sleep 0.3
    done
    return 1
}
# check NAME WINDOW TEXT...: PASS if every TEXT shows in WINDOW within $WAIT seconds.
check() {
    local name=$1 win=$2; shift 2
    local t
    for t in "$@"; do
        if ! wait_for "$win" "$t"; then fail "$name (missing in $win's pane: $t)"; return 1; fi
    done
    pass "$name"
}
keys() { local w=$1; shift; "${TMUX_CMD[@]}" send-keys -t "$SESSION:$w" "$@"; }
type_line() { keys "$1" -l "$2"; keys "$1" Enter; }
hw() { local home=$1; shift; "$BIN/hushwire" --home "$WORK/$home" "$@"; }
# chat_cmd HOME: the pane's command; the chat's exit status goes to $WORK/HOME.status.
chat_cmd() {
    echo "sh -c 'HUSHWIRE_PASSPHRASE=\"$HUSHWIRE_PASSPHRASE\" HUSHWIRE_INSECURE_FAST_KDF=1 \"$BIN/hushwire\" --home \"$WORK/$1\" chat $CONV; echo \$? > \"$WORK/$1.status.tmp\"; mv \"$WORK/$1.status.tmp\" \"$WORK/$1.status\"'"
}
# wait_dead WINDOW: until the chat in WINDOW has exited; prints its exit status. The pane runs
# the chat under sh, which writes the status to a file (with several windows, tmux sometimes
# leaves an exited chat unreaped for a long while, so #{pane_dead_status} is not reliable here).
wait_dead() {
    for _ in $(seq 1 $((WAIT * 5))); do
        if [ -s "$WORK/$1.status" ]; then cat "$WORK/$1.status"; return 0; fi
        sleep 0.2
    done
    echo "alive"
}

# ---- organization, clinic relay, staff and patient -------------------------------------------
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="ws://127.0.0.1:$PORT/v1/websocket"
ORG="$WORK/org"
LINK="$WORK/link.txt"
setup() {
    "$BIN/hushwire" org --org-dir "$ORG" init --name 'Lakeside Clinic' --relay "$URL" >"$WORK/setup.log" 2>&1 || return 1
    "$BIN/hushwire" org --org-dir "$ORG" link --no-qr >"$LINK" 2>>"$WORK/setup.log" || return 1
    "$BIN/hushwire-relay" --listen "127.0.0.1:$PORT" --data-dir "$WORK/relay" --clinic-link "$(cat "$LINK")" \
        >"$WORK/relay.log" 2>&1 &
    RELAY_PID=$!
    local up=0
    for _ in $(seq 1 150); do
        if grep -q "127.0.0.1:$PORT" "$WORK/relay.log" 2>/dev/null; then up=1; break; fi
        sleep 0.2
    done
    [ $up = 1 ] || { echo "the relay did not start:"; cat "$WORK/relay.log"; return 1; }
    local who name
    for who in ada ben; do
        case $who in ada) name='Dr. Ada Okafor' ;; ben) name='Ben Marsh' ;; esac
        hw $who init >>"$WORK/setup.log" 2>&1 || return 1
        hw $who certificate request >"$WORK/$who.request" 2>>"$WORK/setup.log" || return 1
        "$BIN/hushwire" org --org-dir "$ORG" certify "$WORK/$who.request" --name "$name" --roles agent \
            --out "$WORK/$who.cert" >>"$WORK/setup.log" 2>&1 || return 1
        hw $who register "$URL" --certificate "$WORK/$who.cert" --clinic "$LINK" >>"$WORK/setup.log" 2>&1 || return 1
    done
    hw pat init >>"$WORK/setup.log" 2>&1 || return 1
    hw pat clinic add "$LINK" >>"$WORK/setup.log" 2>&1 || return 1
    hw ada on-duty on >>"$WORK/setup.log" 2>&1 || return 1
    hw ben on-duty on >>"$WORK/setup.log" 2>&1 || return 1
    CONV=$(hw pat open-conversation --id-only 2>>"$WORK/setup.log") || return 1
    echo "$CONV" | grep -qE '^[0-9a-f]{32}$' || return 1
    hw ada queue >>"$WORK/setup.log" 2>&1 || return 1
    hw ada claim "$CONV" >>"$WORK/setup.log" 2>&1 || return 1
}
CONV=""
if setup; then
    pass "organization, clinic relay on $URL, agents Ada and Ben on duty, patient's conversation $CONV claimed by Ada"
else
    echo "FAIL: setting up the clinic"; cat "$WORK/setup.log"; exit 1
fi
BEN_ADDR=$(hw ben whoami --address)

# ---- the patient's and Ada's chats ---------------------------------------------------------
"${TMUX_CMD[@]}" new-session -d -s "$SESSION" -n pat -x 160 -y 40 "$(chat_cmd pat)"
"${TMUX_CMD[@]}" set-option -g remain-on-exit on >/dev/null
"${TMUX_CMD[@]}" set-option -t "$SESSION:pat" remain-on-exit on >/dev/null
"${TMUX_CMD[@]}" new-window -d -t "$SESSION" -n ada "$(chat_cmd ada)"
"${TMUX_CMD[@]}" set-option -t "$SESSION:ada" remain-on-exit on >/dev/null

ADA_V="Dr. Ada Okafor — verified agent of Lakeside Clinic"
BEN_V="Ben Marsh — verified agent of Lakeside Clinic"

# 1. header
check "1. patient's chat header: on it: $ADA_V" pat "on it: $ADA_V"
wait_for ada "$CONV" 10 >/dev/null || true
sleep 1

# 2. HTML and an escape sequence arrive as text
type_line pat 'I have a <b>rash</b>'
# A terminal user cannot type a raw ESC as text (the line editor takes it as a key), so the
# escape sequence is typed as its literal text.
type_line pat 'and \e[31mred\e[0m spots'

check "2. patient's HTML and escape sequence shown as text in Ada's pane" ada \
    "patient: I have a <b>rash</b>" 'patient: and \e[31mred\e[0m spots'
if pane_all ada | grep -qF 'I have a rash'; then
    fail "2b. the HTML in Ada's pane is not interpreted"
else
    pass "2b. the HTML in Ada's pane is not interpreted"
fi

# 3. Ada's reply under her verified name; receipts for the patient's message
type_line ada 'Since when? Any fever?'
check "3. Ada's reply shown to the patient under her verified name" pat \
    "$ADA_V:" "Since when? Any fever?"
if wait_for pat '"I have a <b>rash</b>")' && pane_all pat | grep -qE '^\(delivered by a member: [0-9:]+ "I have a <b>rash</b>"\)' \
    && wait_for pat "(read by a member" && pane_all pat | grep -qE '^\(read by a member: [0-9:]+ "I have a <b>rash</b>"\)'; then
    pass "3b. the patient sees delivered and read receipts"
else
    fail "3b. the patient sees delivered and read receipts"
fi

# 4. /recall
type_line ada 'Take 500 mg of penicillin (wrong patient)'
wait_for pat 'wrong patient' || true
type_line ada '/recall'
check "4. Ada's /recall shown in the patient's pane" pat "was recalled by Dr. Ada Okafor"

# 5. Ada quits, hands off with a note; Ben's chat
keys ada -l '/quit'; keys ada Enter
status=$(wait_dead ada)
if [ "$status" = 0 ]; then pass "5a. Ada's /quit exits with status 0"; else fail "5a. Ada's /quit exits with status 0 (status=$status)"; fi
NOTE='allergic to penicillin'
if hw ada handoff "$CONV" "$BEN_ADDR" --note "$NOTE" >"$WORK/handoff.log" 2>&1; then
    pass "5b. Ada hands the conversation to Ben with a note"
else
    fail "5b. Ada hands the conversation to Ben with a note: $(cat "$WORK/handoff.log")"
fi
"${TMUX_CMD[@]}" new-window -d -t "$SESSION" -n ben "$(chat_cmd ben)"
"${TMUX_CMD[@]}" set-option -t "$SESSION:ben" remain-on-exit on >/dev/null
check "5c. Ben's pane shows the staff note and the patient's earlier message shared by Ada" ben \
    "staff note from Dr. Ada Okafor" "$NOTE" "I have a <b>rash</b>" "(shared by Dr. Ada Okafor"

if pane_all ben | grep -qF "wrong patient"; then
    fail "5d. Ada's recalled message is not shared with Ben"
else
    pass "5d. Ada's recalled message is not shared with Ben"
fi

# 6. the patient sees Ben join and Ada leave, never the note
check "6. the patient's pane shows Ben joined and Ada left" pat "($BEN_V joined" "($ADA_V left)"
if pane_all pat | grep -qiF -e "$NOTE" -e "staff note"; then
    fail "6b. the note never reaches the patient's pane"
else
    pass "6b. the note never reaches the patient's pane"
fi

# 7. Ben and the patient; Ada does not get them
type_line ben 'Ben here: I have your notes.'
check "7. Ben's message shown to the patient under his verified name" pat "$BEN_V:" "Ben here: I have your notes."
type_line pat 'Thank you, Ben.'
check "7b. the patient's message shown in Ben's pane" ben "patient: Thank you, Ben."
ADA_GOT=$(hw ada recv --wait 5 2>&1)
if echo "$ADA_GOT" | grep -qF -e "Ben here" -e "Thank you, Ben"; then
    fail "7c. Ada no longer gets the conversation's messages: $ADA_GOT"
else
    pass "7c. Ada no longer gets the conversation's messages"
fi

# 8. /quit in each remaining pane
for w in pat ben; do
    keys $w -l '/quit'; keys $w Enter
    status=$(wait_dead $w)
    if [ "$status" = 0 ]; then
        pass "8. $w's /quit exits with status 0"
    else
        fail "8. $w's /quit exits with status 0 (status=$status after ${WAIT} s)"
    fi
done

if [ $FAILURES -eq 0 ]; then
    echo "ALL PASSED"
    exit 0
fi
echo "$FAILURES step(s) FAILED"
exit 1
