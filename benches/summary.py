#!/usr/bin/env python3
"""Prints the ratio table from the last `cargo bench -p hushwire-bench` run.

Reads criterion's estimates (target/criterion/<group>/<bench>/new/estimates.json) and prints:
  1. Hushwire / vodozemac for each paired operation (below 1.00 means Hushwire is faster);
  2. each Hushwire handshake over the sum of the primitive operations it performs;
  3. clinic conversations by pairwise fan-out: time and wire bytes per receiving device
     against a two-party message (groups fanout_256B and fanout_4KiB, fanout_bytes.json).
Usage: python3 benches/summary.py [target-dir]
"""
import json
import os
import sys

root = os.path.join(sys.argv[1] if len(sys.argv) > 1 else "target", "criterion")


def estimate(group, bench):
    # criterion stores "a/b" benchmark ids in directories named "a_b".
    path = os.path.join(root, group, bench.replace("/", "_"), "new", "estimates.json")
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    return (data.get("slope") or data["mean"])["point_estimate"]


def fmt(ns):
    if ns is None:
        return "-"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


if not os.path.isdir(root):
    sys.exit(f"no criterion results under {root}: run `cargo bench -p hushwire-bench` first")

pairs = [
    ("handshake", "hushwire/initiate", "vodozemac/initiate"),
    ("handshake", "hushwire/respond", "vodozemac/respond"),
]
for size in ("16B", "1KiB", "64KiB"):
    pairs += [(f"encrypt_{size}", "hushwire", "vodozemac"), (f"decrypt_{size}", "hushwire", "vodozemac")]
pairs += [
    ("ratchet_turn", "hushwire", "vodozemac"),
    ("out_of_order_decrypt", "hushwire", "vodozemac"),
    ("session_save_load", "hushwire/seal", "vodozemac/pickle"),
    ("session_save_load", "hushwire/unseal", "vodozemac/unpickle"),
]

print("| operation | Hushwire | vodozemac | Hushwire / vodozemac |")
print("|---|---|---|---|")
for group, ours, theirs in pairs:
    a, b = estimate(group, ours), estimate(group, theirs)
    ratio = f"{a / b:.2f}" if a and b else "-"
    label = f"{group} ({ours.split('/')[-1]})" if "/" in ours else group
    print(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio} |")

p = {name: estimate("primitive", name) for name in (
    "x25519_keygen", "x25519_dh", "ed25519_sign", "ed25519_verify", "mlkem1024_encaps",
    "mlkem1024_decaps", "chacha20poly1305_1KiB", "hkdf_sha256_64B", "hmac_sha256_1B")}
if all(p.values()):
    # What each side of the handshake does (docs/protocol.md §4), in primitive operations.
    initiate = (3 * p["ed25519_verify"]        # identity binding, signed prekey, ML-KEM prekey
                + 2 * p["x25519_keygen"]        # EK_A and the first ratchet key
                + 5 * p["x25519_dh"]            # DH1..DH4 and the first ratchet DH
                + p["mlkem1024_encaps"]
                + 2 * p["hkdf_sha256_64B"])     # SK, first root step
    respond = (p["ed25519_verify"]              # initiator's identity binding
               + 5 * p["x25519_dh"] + p["x25519_keygen"]
               + p["mlkem1024_decaps"]
               + 3 * p["hkdf_sha256_64B"]       # SK, two root steps
               + p["chacha20poly1305_1KiB"])
    print()
    print("| handshake side | measured | sum of its primitives | measured / primitives |")
    print("|---|---|---|---|")
    for name, floor in (("initiate", initiate), ("respond", respond)):
        m = estimate("handshake", f"hushwire/{name}")
        print(f"| {name} | {fmt(m)} | {fmt(floor)} | {m / floor:.2f} |" if m else f"| {name} | - | {fmt(floor)} | - |")
    print()
    print("| primitive | time |")
    print("|---|---|")
    for name, ns in p.items():
        print(f"| {name} | {fmt(ns)} |")

# Clinic conversations: pairwise fan-out (docs/conversations.md §2), per receiving device
# against a two-party message (n = 2), from the `fanout_*` groups of the same run.
members = (2, 5, 10, 32)
bytes_path = os.path.join(root, "fanout_bytes.json")
wire = {}
if os.path.exists(bytes_path):
    with open(bytes_path) as f:
        for row in json.load(f):
            wire[(row["padded"], row["members"])] = row
for size, padded in (("256B", 256), ("4KiB", 4096)):
    group = f"fanout_{size}"
    plain = {n: estimate(group, f"n{n}/fanout") for n in members}
    sealed = {n: estimate(group, f"n{n}/fanout+archive") for n in members}
    if not plain[2] or not sealed[2]:
        continue
    seal = estimate(group, "archive_seal")
    print()
    print(f"Payload padded to {size}; archive seal alone: {fmt(seal)}")
    print()
    print("| member devices | fan-out | per receiving device | ÷ two-party | fan-out + archive | per receiving device | ÷ n = 2 with archive | ÷ two-party without archive |")
    print("|---|---|---|---|---|---|---|---|")
    for n in members:
        a, b = plain[n], sealed[n]
        if not a or not b:
            continue
        pa, pb = a / (n - 1), b / (n - 1)
        print(f"| {n} | {fmt(a)} | {fmt(pa)} | {pa / plain[2]:.2f} | {fmt(b)} | {fmt(pb)} | {pb / sealed[2]:.2f} | {pb / plain[2]:.2f} |")
    if all((padded, n) in wire for n in members):
        two = wire[(padded, 2)]
        two_plain = two["upload_without_archive"] + two["download"]
        two_sealed = two["upload"] + two["download"]
        print()
        print("| member devices | session message | uploaded: without archive / with | downloaded | per receiving device without archive | ÷ two-party | per receiving device with archive | ÷ n = 2 with archive | ÷ two-party without archive |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n in members:
            w = wire[(padded, n)]
            plain_per = (w["upload_without_archive"] + w["download"]) / (n - 1)
            sealed_per = (w["upload"] + w["download"]) / (n - 1)
            print(f"| {n} | {w['session_message']} B | {w['upload_without_archive']} / {w['upload']} B | {w['download']} B | {plain_per:.0f} B | {plain_per / two_plain:.2f} | {sealed_per:.0f} B | {sealed_per / two_sealed:.2f} | {sealed_per / two_plain:.2f} |")
