// The patient widget: one script tag on a clinic's page.
//
//   <script src="/hushwire-widget.js" data-clinic-link="hushwire-clinic:...">
//
// The patient writes to the clinic: the widget opens a conversation with it (docs/
// conversations.md), which waits in the clinic's queue until an agent claims it; who answers is
// shown from the membership history verified in WebAssembly ("Name — verified agent of Clinic").
// `data-agent="FP:ID"` instead chats two-party with that one device (the earlier mode, kept for
// clinics whose relay does not serve conversations).
//
// Optional: `data-lock-after` (seconds of inactivity before the screen clears and locks;
// default 300), `data-store` (the IndexedDB store name; default "widget").
//
// Every peer-supplied or user-supplied text is set with `textContent`, never as HTML.

import * as hw from "../src/wasm";
import { HushwireClient, ChatMessage } from "../src/client";
import { ONE_OFF_SUFFIX, SealedStore, deleteDatabase } from "../src/store";

const script = document.currentScript as HTMLScriptElement | null;
const base = new URL(".", script?.src ?? location.href);

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  text?: string,
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

/**
 * Peer- or user-supplied text (a message, a name) in its own bidirectional isolate: a `<bdi>`
 * (direction from its own text, `unicode-bidi: isolate`), so an override character in it
 * (U+202E) can never reorder the labels, time or status around it. Text only, never HTML.
 */
function isolated(text: string, attrs: Record<string, string> = {}): HTMLElement {
  return el("bdi", { dir: "auto", ...attrs }, text);
}

const STATE_TEXT: Record<string, string> = {
  queued: "waiting to send",
  held: "waiting for an agent",
  sent: "sent",
  delivered: "delivered",
  read: "read",
  failed: "not sent",
};

class Widget {
  private root = el("section", { class: "hw-widget", role: "region", "aria-label": "Secure chat" });
  private header = el("header", { class: "hw-header" });
  private clinicName = el("h2", { class: "hw-clinic", id: "hw-clinic-name" });
  private agentLine = el("p", { class: "hw-agent" });
  private statusLine = el("p", { class: "hw-status", role: "status", "aria-live": "polite" });
  private body = el("div", { class: "hw-body" });
  private client?: HushwireClient;
  private lockTimer?: number;
  private releaseLock?: () => void;
  private clinic?: hw.Clinic;
  private relayUrl = "";
  private oneOff = false;
  /** Whose messages are shown: the clinic conversation's pseudo-peer, or `data-agent`. */
  private peer = "";

  constructor(
    private clinicLink: string,
    private agent: string,
    private lockAfterMs: number,
    private storeName: string,
  ) {
    this.header.append(this.clinicName, this.agentLine);
    this.root.append(this.header, this.statusLine, this.body);
    this.root.setAttribute("aria-labelledby", "hw-clinic-name");
    document.body.append(this.root);
    for (const ev of ["keydown", "pointerdown", "input"]) {
      this.root.addEventListener(ev, () => this.touch());
    }
    // A message just written is stored when its turn in the client's queue comes: leaving the
    // page before that would lose it, so the browser asks first.
    window.addEventListener("beforeunload", (event) => {
      if (this.client?.savingMessages) {
        event.preventDefault();
        event.returnValue = "";
      }
    });
  }

  async start(): Promise<void> {
    const css = el("link", { rel: "stylesheet", href: new URL("hushwire-widget.css", base).href });
    document.head.append(css);
    this.status("Loading…");
    await hw.loadWasm(new URL("hushwire_wasm_bg.wasm", base));
    try {
      this.clinic = hw.Clinic.parse(this.clinicLink);
      this.clinicName.replaceChildren(isolated(this.clinic.name));
      this.relayUrl = this.clinic.relayUrl;
    } catch (e) {
      this.clinicName.textContent = "Unverified clinic link";
      this.status(`This page's clinic link does not verify: ${(e as Error).message}`);
      return;
    }
    // One tab per store: the Web Locks API. A second tab is refused with a clear message.
    const granted = await new Promise<boolean>((resolve) => {
      void navigator.locks.request(
        `hushwire-store-${this.storeName}`,
        { ifAvailable: true },
        (lock) => {
          if (!lock) {
            resolve(false);
            return undefined;
          }
          resolve(true);
          return new Promise<void>((release) => (this.releaseLock = release));
        },
      );
    });
    if (!granted) {
      this.body.replaceChildren(
        el(
          "p",
          { class: "hw-refused", role: "alert" },
          "This chat is already open in another tab or window. Close it there, then reload this page.",
        ),
      );
      this.status("Open in another tab");
      return;
    }
    await this.showUnlock();
  }

  private status(text: string): void {
    this.statusLine.textContent = text;
  }

  private async showUnlock(): Promise<void> {
    const exists = await SealedStore.exists(this.storeName);
    const form = el("form", { class: "hw-unlock", "aria-label": exists ? "Unlock chat" : "Start chat" });
    const intro = el(
      "p",
      {},
      exists
        ? "Enter your chat passphrase to see this conversation."
        : "Choose a passphrase (at least 8 characters). It protects this browser's copy of the chat; it cannot be recovered.",
    );
    const label = el("label", { for: "hw-passphrase" }, "Passphrase");
    const input = el("input", {
      id: "hw-passphrase",
      type: "password",
      autocomplete: exists ? "current-password" : "new-password",
      minlength: "8",
      required: "",
    });
    const button = el("button", { type: "submit" }, exists ? "Unlock" : "Start secure chat");
    const error = el("p", { class: "hw-error", role: "alert" });
    // A one-off chat: nothing this browser keeps can be read once the tab is closed.
    const oneOff = el("button", { type: "button", class: "hw-oneoff" }, "Chat without saving");
    const oneOffNote = el(
      "p",
      { class: "hw-note", id: "hw-oneoff-note" },
      "Nothing readable stays in this browser after you close the tab; the conversation cannot be reopened.",
    );
    oneOff.setAttribute("aria-describedby", "hw-oneoff-note");
    oneOff.addEventListener("click", () => {
      button.disabled = true;
      oneOff.disabled = true;
      this.status("Starting…");
      void this.unlock(undefined).catch((e: Error) => {
        button.disabled = false;
        oneOff.disabled = false;
        error.textContent = e.message;
        this.status("Not started");
      });
    });
    form.append(intro, label, input, button, error, oneOff, oneOffNote);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (input.value.length < 8) {
        error.textContent = "The passphrase needs at least 8 characters.";
        return;
      }
      button.disabled = true;
      this.status("Unlocking…");
      const passphrase = input.value;
      input.value = "";
      // Let the status paint before Argon2id occupies the thread.
      setTimeout(() => {
        void this.unlock(passphrase).catch((e: Error) => {
          button.disabled = false;
          error.textContent = e.message === "wrong passphrase" ? "Wrong passphrase." : e.message;
          this.status("Locked");
        });
      }, 20);
    });
    this.body.replaceChildren(form);
    input.focus();
    this.status(exists ? "Locked" : "Not started");
  }

  /** Opens the saved chat under `passphrase`, or (without one) starts a one-off chat. */
  private async unlock(passphrase: string | undefined): Promise<void> {
    const t0 = performance.now();
    const store =
      passphrase === undefined
        ? await SealedStore.oneOff(this.storeName)
        : await SealedStore.unlock(this.storeName, passphrase);
    this.oneOff = store.isOneOff;
    this.root.dataset.oneOff = String(this.oneOff);
    this.root.dataset.unlockMs = String(Math.round(performance.now() - t0));
    const clinicMode = this.agent === "";
    const client = await HushwireClient.open(store, this.relayUrl, {
      onChange: () => this.scheduleRender(),
      onMembership: () => this.showAgents(),
      onStatus: (text, connected) => {
        this.status(text);
        this.root.dataset.connected = String(connected);
        if (connected && this.clinic && !clinicMode) {
          void client.agentName(this.clinic, this.agent).then((name) => {
            if (name) {
              this.agentLine.replaceChildren(
                "You are talking to ",
                isolated(name),
                " (verified by ",
                isolated(this.clinic?.name ?? "the clinic"),
                ")",
              );
            } else this.agentLine.textContent = "Agent identity: not certified yet";
          });
        }
      },
    }, clinicMode ? this.clinic : undefined);
    this.client = client;
    if (clinicMode) {
      this.peer = client.clinicPeer;
      this.root.dataset.conversation = client.conversationId;
      this.showAgents();
    } else {
      this.peer = this.agent;
    }
    await client.addPeer(this.peer);
    // Test pages only (`data-test-hooks="1"`, set by crates/hushwire-wasm/tests/browser.rs): the
    // client for API-level measurements. A clinic's page never sets it.
    if (script?.dataset.testHooks === "1") {
      (window as unknown as { hushwireTest?: object }).hushwireTest = {
        client,
        agent: this.peer,
        HushwireClient,
        SealedStore,
      };
    }
    this.root.dataset.address = client.address;
    this.showChat();
    client.connect();
    this.touch();
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.client === client) this.scheduleRender();
    });
  }

  private list = el("ol", { class: "hw-messages", "aria-label": "Messages", "aria-live": "polite" });

  private showChat(): void {
    this.list = el("ol", { class: "hw-messages", "aria-label": "Messages", "aria-live": "polite" });
    const form = el("form", { class: "hw-compose", "aria-label": "Write a message" });
    const label = el("label", { for: "hw-input", class: "hw-visually-hidden" }, "Message");
    const input = el("textarea", { id: "hw-input", rows: "2", maxlength: "4000" });
    const send = el("button", { type: "submit" }, "Send");
    form.append(label, input, send);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text || !this.client) return;
      input.value = "";
      void this.client.sendText(this.peer, text);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    const you = el("p", { class: "hw-you" });
    you.textContent = `Your device: ${this.client?.address ?? ""}`;
    const erase = el("button", { type: "button", class: "hw-erase" }, "End chat and erase this browser's copy");
    erase.addEventListener("click", () => void this.erase());
    const lock = el("button", { type: "button", class: "hw-lock" }, "Lock now");
    lock.addEventListener("click", () => void this.lock("asked"));
    const tools = el("div", { class: "hw-tools" });
    tools.append(lock, erase);
    this.body.replaceChildren(this.list, form, tools, you);
    this.render();
    input.focus();
  }

  private renderPending = false;

  /** Redraws at most once a frame, however many messages changed since the last one. */
  private scheduleRender(): void {
    if (this.renderPending) return;
    this.renderPending = true;
    requestAnimationFrame(() => {
      this.renderPending = false;
      this.render();
    });
  }

  private render(): void {
    const conversation = this.client?.conversations.get(this.peer);
    if (!conversation) return;
    // A staff note is for staff only (conversations.md §8.5): never shown to the patient.
    this.list.replaceChildren(...conversation.messages.filter((m) => !m.staffNote).map((m) => this.item(m)));
    this.list.lastElementChild?.scrollIntoView({ block: "end" });
    // Clinic mode: the agents' messages are on the screen of a visible tab now: read receipts
    // (conversations.md §8.2). A hidden tab sends none until it is shown (visibilitychange).
    if (this.agent === "" && document.visibilityState === "visible") void this.client?.markRead(this.peer);
  }

  private item(m: ChatMessage): HTMLLIElement {
    if (m.notice) {
      // A verified membership change (or a refusal): text only, like every message.
      const notice = el("li", { class: "hw-notice", role: "note", "data-id": m.id });
      notice.append(isolated(m.text));
      return notice;
    }
    const li = el("li", { class: m.outgoing ? "hw-out" : "hw-in", "data-id": m.id });
    const who = isolated(m.outgoing ? "You" : (m.senderName ?? "Clinic"), { class: "hw-who" });
    // textContent only, in its own isolate: the time and state after it stay where they are.
    const text = isolated(m.recalled ?? m.text, { class: m.recalled ? "hw-text hw-recalled" : "hw-text" });
    const time = new Date(m.sentAtMs).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const meta = el("span", { class: "hw-meta" }, m.outgoing ? `${time} · ${STATE_TEXT[m.state ?? "sent"]}` : time);
    if (m.outgoing) li.dataset.state = m.state ?? "";
    li.append(who, text, meta);
    return li;
  }

  /** Clinic mode: who answers, from the verified membership. */
  private showAgents(): void {
    const client = this.client;
    if (!client || this.agent !== "") return;
    // "Name — verified agent of Clinic", as client.verifiedAgents() words it, each name isolated.
    const agents = client.members(this.peer).filter((m) => m.role === "agent");
    const clinicName = this.clinic?.name ?? "the clinic";
    if (agents.length) {
      this.agentLine.replaceChildren(
        ...agents.flatMap((a, i) => [
          ...(i > 0 ? ["; "] : []),
          isolated(a.name),
          " — verified agent of ",
          isolated(clinicName),
        ]),
      );
    } else {
      this.agentLine.textContent = client.conversationOpen
        ? "Waiting for the clinic's next available agent…"
        : "Opening a conversation with the clinic…";
    }
    this.root.dataset.agents = String(agents.length);
  }

  private touch(): void {
    if (!this.client) return;
    if (this.lockTimer !== undefined) clearTimeout(this.lockTimer);
    this.lockTimer = window.setTimeout(() => void this.lock("idle"), this.lockAfterMs);
  }

  /** Clears the screen and forgets the key; the passphrase opens it again. */
  private async lock(why: "idle" | "asked"): Promise<void> {
    if (this.oneOff) {
      // A one-off chat has no passphrase to reopen it: locking ends it.
      await this.erase(false);
      return;
    }
    if (this.lockTimer !== undefined) clearTimeout(this.lockTimer);
    this.lockTimer = undefined;
    const client = this.client;
    this.client = undefined;
    this.body.replaceChildren();
    this.agentLine.textContent = "";
    client?.close();
    this.root.dataset.locked = "true";
    // Nothing that names this chat stays on the page while it is locked.
    for (const key of ["conversation", "address", "connected"]) delete this.root.dataset[key];
    await this.showUnlock();
    this.status(
      why === "idle" ? "Locked after inactivity. Enter your passphrase to continue." : "Locked. Enter your passphrase to continue.",
    );
  }

  private async erase(ask = true): Promise<void> {
    if (ask && !confirm("End this chat and erase every trace of it from this browser?")) return;
    if (this.lockTimer !== undefined) clearTimeout(this.lockTimer);
    const client = this.client;
    this.client = undefined;
    client?.close();
    await deleteDatabase(this.oneOff ? this.storeName + ONE_OFF_SUFFIX : this.storeName);
    this.body.replaceChildren(
      el("p", { class: "hw-erased", role: "status" }, "The chat has ended and this browser's copy was erased."),
    );
    this.agentLine.textContent = "";
    this.status("Erased");
    this.root.dataset.erased = "true";
    this.releaseLock?.();
  }
}

/** The default of `data-lock-after`, in seconds. */
const DEFAULT_LOCK_AFTER = 300;

interface Settings {
  clinicLink: string;
  agent: string;
  lockAfterMs: number;
  storeName: string;
}

/**
 * The script tag's data-* settings, each checked before anything starts: a setting that
 * cannot work is a sentence for the page (the widget stops, nothing registered), not a
 * codec error later or a message that waits forever. A lock delay that is not a positive
 * number of seconds falls back to the default with a console warning (never "lock at once").
 */
function readSettings(data: DOMStringMap): Settings | string {
  const clinicLink = (data.clinicLink ?? "").trim();
  if (clinicLink === "") {
    return "The page's script tag has no data-clinic-link attribute: the clinic's link (hushwire-clinic:…) is needed.";
  }
  const agent = (data.agent ?? "").trim();
  if (agent !== "") {
    const m = /^([0-9a-fA-F]{64}):(\d{1,10})$/.exec(agent);
    if (!m || Number(m[2]) > 0xffff_ffff) {
      return "The page's data-agent attribute is not a device address (64 hex digits, a colon and a device number).";
    }
  }
  let lockAfter = DEFAULT_LOCK_AFTER;
  if (data.lockAfter !== undefined) {
    const n = Number(data.lockAfter.trim());
    if (data.lockAfter.trim() !== "" && Number.isFinite(n) && n >= 1 && n <= 86_400) lockAfter = Math.floor(n);
    else {
      console.warn(
        `hushwire: data-lock-after must be a number of seconds from 1 to 86400; using the default ${DEFAULT_LOCK_AFTER}`,
      );
    }
  }
  const storeName = data.store ?? "widget";
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(storeName)) {
    return "The page's data-store attribute is not a store name (1 to 64 letters, digits, - or _).";
  }
  return { clinicLink, agent, lockAfterMs: lockAfter * 1000, storeName };
}

const settings = readSettings(script?.dataset ?? {});
if (typeof settings === "string") {
  // A setting that cannot work: said in words where the chat would be; nothing starts.
  const root = el("section", { class: "hw-widget", role: "region", "aria-label": "Secure chat" });
  const css = el("link", { rel: "stylesheet", href: new URL("hushwire-widget.css", base).href });
  document.head.append(css);
  root.append(
    el("h2", { class: "hw-clinic" }, "Secure chat unavailable"),
    el("p", { class: "hw-status hw-settings-error", role: "alert" }, settings),
  );
  document.body.append(root);
  console.error(`hushwire: ${settings}`);
} else {
  const widget = new Widget(settings.clinicLink, settings.agent, settings.lockAfterMs, settings.storeName);
  void widget.start().catch(failed);
}

function failed(e: Error): void {
  const p = el("p", { role: "alert" });
  p.textContent = `The secure chat could not start: ${e.message}`;
  document.body.append(p);
}
