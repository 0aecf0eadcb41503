// The agent console (modest): unlock, the list of conversations (pairwise for now), several
// open side by side, reply, and each patient device's verified fingerprint and safety number.
// Served by the relay (`--web-dir`) at /console/; it connects to the same host's relay.
// Every peer text is set with textContent.

import * as hw from "../src/wasm";
import { HushwireClient, fingerprintOf } from "../src/client";
import { SealedStore } from "../src/store";

const main = document.getElementById("main") as HTMLElement;
const statusLine = document.getElementById("status") as HTMLElement;
const relayUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/websocket`;
const open = new Set<string>();
let client: HushwireClient | undefined;
let panels: HTMLElement;
let list: HTMLElement;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

async function start(): Promise<void> {
  await hw.loadWasm(new URL("../hushwire_wasm_bg.wasm", location.href));
  const granted = await new Promise<boolean>((resolve) => {
    void navigator.locks.request("hushwire-store-console", { ifAvailable: true }, (lock) => {
      resolve(lock !== null);
      return lock ? new Promise<void>(() => undefined) : undefined;
    });
  });
  if (!granted) {
    main.replaceChildren(el("p", { role: "alert" }, "The console is already open in another tab. Use that tab."));
    return;
  }
  const form = el("form", { "aria-label": "Unlock the console" });
  const label = el("label", { for: "pass" }, "Console passphrase");
  const input = el("input", { id: "pass", type: "password", required: "", minlength: "8" });
  const button = el("button", { type: "submit" }, "Unlock");
  const error = el("p", { role: "alert" });
  form.append(label, input, button, error);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    button.disabled = true;
    statusLine.textContent = "Unlocking…";
    const pass = input.value;
    input.value = "";
    setTimeout(() => {
      void unlock(pass).catch((err: Error) => {
        button.disabled = false;
        error.textContent = err.message;
      });
    }, 20);
  });
  main.replaceChildren(form);
  statusLine.textContent = "Locked";
  input.focus();
}

async function unlock(passphrase: string): Promise<void> {
  const store = await SealedStore.unlock("console", passphrase);
  client = await HushwireClient.open(store, relayUrl, {
    onChange: (peer) => {
      renderList();
      if (open.has(peer)) renderPanel(peer);
    },
    onStatus: (text) => (statusLine.textContent = text),
  });
  const me = el("p", {}, "This console's address (give it to patients' widgets as data-agent): ");
  me.append(el("span", { class: "mono", id: "own-address" }, client.address));
  const add = el("form", { "aria-label": "Open a conversation by address" });
  const addLabel = el("label", { for: "peer" }, "Patient device address");
  const addInput = el("input", { id: "peer", size: "40" });
  add.append(addLabel, addInput, el("button", { type: "submit" }, "Open"));
  add.addEventListener("submit", (e) => {
    e.preventDefault();
    const peer = addInput.value.trim();
    if (!/^[0-9a-f]{64}:\d+$/.test(peer)) return;
    addInput.value = "";
    void client?.addPeer(peer).then(() => openPanel(peer));
  });
  list = el("ul", { class: "list", "aria-label": "Conversations" });
  panels = el("div", { class: "panels" });
  main.replaceChildren(me, add, list, panels);
  renderList();
  client.connect();
}

function renderList(): void {
  if (!client) return;
  list.replaceChildren(
    ...[...client.conversations.values()].map((c) => {
      const li = el("li");
      const b = el("button", { type: "button" }, `Patient ${fingerprintOf(c.peer).slice(0, 12)}… (${c.messages.length})`);
      b.addEventListener("click", () => openPanel(c.peer));
      li.append(b);
      return li;
    }),
  );
}

function openPanel(peer: string): void {
  open.add(peer);
  renderPanel(peer);
}

function renderPanel(peer: string): void {
  if (!client) return;
  const id = `panel-${fingerprintOf(peer).slice(0, 16)}`;
  let panel = document.getElementById(id);
  if (!panel) {
    panel = el("section", { class: "panel", id, "aria-label": `Conversation with ${peer}` });
    panels.append(panel);
  }
  const c = client.conversations.get(peer);
  const title = el("h2", {}, `Patient device ${peer}`);
  const safety = client.safetyNumber(peer);
  const verify = el(
    "p",
    { class: "safety" },
    safety
      ? `Safety number (compare with the patient): ${safety.match(/.{1,5}/g)?.join(" ")}`
      : "No session yet: the safety number appears after the first message.",
  );
  const ol = el("ol", { "aria-label": "Messages", "aria-live": "polite" });
  for (const m of c?.messages ?? []) {
    const li = el("li", { class: m.outgoing ? "out" : "in" });
    li.textContent = `${m.outgoing ? "You" : "Patient"}: ${m.text}${m.outgoing ? ` (${m.state ?? ""})` : ""}`;
    ol.append(li);
  }
  const form = el("form", { "aria-label": "Reply" });
  const label = el("label", { for: `${id}-reply` }, "Reply");
  const input = el("textarea", { id: `${id}-reply`, rows: "2" });
  form.append(label, input, el("button", { type: "submit" }, "Send"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (text) void client?.sendText(peer, text);
  });
  const close = el("button", { type: "button" }, "Close");
  close.addEventListener("click", () => {
    open.delete(peer);
    panel?.remove();
  });
  const hadFocus = panel.contains(document.activeElement) ? (document.activeElement as HTMLElement).id : "";
  panel.replaceChildren(title, verify, ol, form, close);
  if (hadFocus) document.getElementById(hadFocus)?.focus();
}

void start();
