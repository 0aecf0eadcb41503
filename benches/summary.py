#!/usr/bin/env python3
"""Prints the ratio table from the last `cargo bench -p hushwire-bench` run.

Reads criterion's estimates (target/criterion/<group>/<bench>/new/estimates.json) and prints:
  1. Hushwire / vodozemac for each paired operation (below 1.00 means Hushwire is faster);
  2. each Hushwire handshake over the sum of the primitive operations it performs.
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
