// The agent console, served by the relay (`--web-dir`) at /console/; it connects to the same
// host's relay. Two ways to use it:
//
// - a clinic agent console (docs/browser.md "Agent console"): this device shows its certificate
//   request and the command the clinic's administrator runs, imports the certificate (checked in
//   WebAssembly under the clinic link's organization key), registers presenting it and
//   publishes its device list as `hushwire register --certificate` and `on-duty on` do; then on
//   duty, the live queue, claim, several conversations side by side, reply, the verified
//   members, delivered and read states, hand-off to a named colleague or back to the queue with
//   an optional note for staff (shown to the staff who receive it as "Note from …"); for a supervisor's
//   certificate, "Read along (supervisor)" (joining a conversation read-only, its panel marked
//   "Reading along — read only" without composer, and "Stop reading along") and "Open the
//   clinic archive" (the archive key file opened, and every envelope opened and checked, in
//   WebAssembly) with its JSON and text export;
// - two-party only (no certificate): the modest console it was before, for a widget's
//   `data-agent`.
//
// Every peer text is set with textContent; every check and signature is the core's.
//
// Automatic logoff: after `data-lock-after` seconds without a key, pointer, wheel or input event
// (on the page's <html>; default 600) or on "Lock now", the console reloads itself: the client,
// every key in WebAssembly memory and every patient's text on the page are gone, and the
// passphrase opens it again.

import * as hw from "../src/wasm";
import { HushwireClient, fingerprintOf, type ArchiveRecord, type ChatMessage } from "../src/client";
import { SealedStore } from "../src/store";

const main = document.getElementById("main") as HTMLElement;
const statusLine = document.getElementById("status") as HTMLElement;
const relayUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/websocket`;
const open = new Set<string>();
let client: HushwireClient | undefined;
let panels: HTMLElement;
let list: HTMLElement;
let queueList: HTMLElement | undefined;
let dutyButton: HTMLButtonElement | undefined;
let alertLine: HTMLElement | undefined;

const STATE_TEXT: Record<string, string> = {
  queued: "waiting to send",
  held: "waiting",
  sent: "sent",
  delivered: "delivered",
  read: "read",
  failed: "not sent",
};

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

/**
 * Peer text (a message, a name, a note, an archive entry) in its own bidirectional isolate: a
 * `<bdi>` (direction from its own text, `unicode-bidi: isolate`), so an override character in
 * it (U+202E) can never reorder the labels, time or status around it. Text only, never HTML.
 */
function isolated(text: string, attrs: Record<string, string> = {}): HTMLElement {
  return el("bdi", { dir: "auto", ...attrs }, text);
}

function time(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** Shows a problem (or an outcome) in plain words, announced to screen readers. */
function say(...parts: (string | Node)[]): void {
  alertLine?.replaceChildren(...parts);
}

// ---------------------------------------------------------------------------------------------
// Automatic logoff (HIPAA § 164.312(a)(2)(iii), docs/browser.md "Agent console")
// ---------------------------------------------------------------------------------------------

const LOCK_AFTER_DEFAULT_S = 600;
/** Set for the page load that follows a lock, to say why the console is locked. */
const LOCKED_KEY = "hushwire-console-locked";
let idleTimer: number | undefined;

/** Seconds of inactivity before the console locks: `data-lock-after` if it is a number ≥ 1. */
function lockAfterSeconds(): number {
  const raw = document.documentElement.dataset.lockAfter;
  const n = raw === undefined ? NaN : Number(raw);
  if (raw !== undefined && !(Number.isFinite(n) && n >= 1)) {
    console.warn(`hushwire console: data-lock-after="${raw}" is not a number of seconds ≥ 1; locking after ${LOCK_AFTER_DEFAULT_S} s`);
  }
  return Number.isFinite(n) && n >= 1 ? n : LOCK_AFTER_DEFAULT_S;
}

/** Locks by reloading: nothing of the unlocked console survives in the page or its memory. */
function lockConsole(why: "idle" | "asked"): void {
  if (idleTimer !== undefined) clearTimeout(idleTimer);
  client?.close();
  client = undefined;
  main.replaceChildren();
  try {
    sessionStorage.setItem(LOCKED_KEY, why);
  } catch {
    // Storage refused (private mode settings): the console still locks, without the reason.
  }
  location.reload();
}

/** Starts the inactivity timer and the "Lock now" button, once the console is unlocked. */
function armIdleLock(): void {
  const ms = lockAfterSeconds() * 1000;
  const restart = () => {
    if (idleTimer !== undefined) clearTimeout(idleTimer);
    idleTimer = window.setTimeout(() => lockConsole("idle"), ms);
  };
  for (const ev of ["keydown", "pointerdown", "wheel", "input"]) document.addEventListener(ev, restart, { passive: true });
  restart();
  const lockNow = el("button", { type: "button", id: "lock-now" }, "Lock now");
  lockNow.addEventListener("click", () => lockConsole("asked"));
  statusLine.after(lockNow);
}

// A message just written is stored when its turn in the client's queue comes: leaving before
// that would lose it, so the browser asks first.
window.addEventListener("beforeunload", (event) => {
  if (client?.savingMessages) {
    event.preventDefault();
    event.returnValue = "";
  }
});

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
    statusLine.textContent = "Open in another tab";
    return;
  }
  // First run (no store yet): the passphrase is chosen, typed twice, at least 8 characters
  // (the widget's rule), so a typo cannot silently become it.
  const firstRun = !(await SealedStore.exists("console"));
  const form = el("form", { "aria-label": firstRun ? "Choose the console passphrase" : "Unlock the console" });
  const label = el("label", { for: "pass" }, firstRun ? "Choose a passphrase (at least 8 characters)" : "Console passphrase");
  const input = el("input", {
    id: "pass",
    type: "password",
    required: "",
    minlength: "8",
    autocomplete: firstRun ? "new-password" : "current-password",
  });
  const confirmLabel = el("label", { for: "pass-confirm" }, "Type it again");
  const confirmInput = el("input", { id: "pass-confirm", type: "password", required: "", autocomplete: "new-password" });
  const button = el("button", { type: "submit" }, firstRun ? "Set the passphrase" : "Unlock");
  const error = el("p", { role: "alert", id: "pass-error" });
  if (firstRun) form.append(label, input, confirmLabel, confirmInput, button, error);
  else form.append(label, input, button, error);
  for (const field of [input, confirmInput]) field.addEventListener("input", () => (error.textContent = ""));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    error.textContent = "";
    if (firstRun && input.value.length < 8) {
      error.textContent = "The passphrase needs at least 8 characters.";
      return;
    }
    if (firstRun && input.value !== confirmInput.value) {
      error.textContent = "The two passphrases differ: type the same passphrase in both fields.";
      confirmInput.value = "";
      confirmInput.focus();
      return;
    }
    button.disabled = true;
    statusLine.textContent = "Unlocking…";
    const pass = input.value;
    input.value = "";
    confirmInput.value = "";
    setTimeout(() => {
      void unlock(pass).catch((err: Error) => {
        button.disabled = false;
        error.textContent = err.message === "wrong passphrase" ? "Wrong passphrase." : sentence(err.message);
        statusLine.textContent = firstRun ? "Not set up yet" : "Locked";
        input.focus();
      });
    }, 20);
  });
  main.replaceChildren(form);
  let why: string | null = null;
  try {
    why = sessionStorage.getItem(LOCKED_KEY);
    sessionStorage.removeItem(LOCKED_KEY);
  } catch {
    why = null;
  }
  const idle = lockAfterSeconds();
  statusLine.textContent =
    why === "idle"
      ? `Locked after ${idle < 120 ? `${idle} s` : `${Math.round(idle / 60)} min`} of inactivity. Enter the passphrase to continue.`
      : why === "asked"
        ? "Locked. Enter the passphrase to continue."
        : firstRun
          ? "Not set up yet"
          : "Locked";
  input.focus();
}

async function unlock(passphrase: string): Promise<void> {
  const store = await SealedStore.unlock("console", passphrase);
  const c = await HushwireClient.open(store, relayUrl, {
    onChange: (peer) => scheduleRender(peer),
    onMembership: () => {
      for (const peer of open) scheduleRender(peer);
    },
    onQueue: () => renderQueue(),
    onStatus: (text, connected) => {
      statusLine.textContent = text;
      document.body.dataset.connected = String(connected);
    },
  });
  client = c;
  armIdleLock();
  // Test pages only (`<html data-test-hooks="1">`, written by crates/hushwire-wasm/tests/browser.rs
  // as console/test.html): the client, so a test can hold back queue pushes, and `openPanel`, to open
  // a conversation handed to this console. /console/ never sets it.
  if (document.documentElement.dataset.testHooks === "1") {
    (window as unknown as { hushwireTest?: object }).hushwireTest = { client: c, openPanel };
  }
  if (c.isAgent && c.certificateSummary) showAgentConsole();
  else if (c.isAgent) {
    // The stored certificate no longer verifies (expired, say): import a renewed one.
    showSetup();
    c.connect();
  } else if (c.registered) showPairwise();
  else showSetup();
}

const dirty = new Set<string>();
let renderPending = false;

/** Redraws the list and the changed panels at most once a frame, however many messages changed. */
function scheduleRender(peer: string): void {
  dirty.add(peer);
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    renderList();
    for (const p of dirty) if (open.has(p)) renderPanel(p);
    dirty.clear();
  });
}

// ---------------------------------------------------------------------------------------------
// Setting up: a certified agent device, or two-party only
// ---------------------------------------------------------------------------------------------

function showSetup(): void {
  const c = client;
  if (!c) return;
  const intro = el("h2", {}, c.isAgent ? "Renew this console's certificate" : "Set up this console as a clinic agent's device");
  const problem = el("p", { role: "alert" }, c.agentProblem);
  const fp = el("p", {}, "This console's identity fingerprint: ");
  fp.append(el("span", { class: "mono", id: "own-fingerprint" }, c.fingerprint));
  const request = c.certificateRequest;
  const reqLabel = el("p", {}, "Its certificate request (no secret; send it to your clinic's administrator):");
  const reqText = el("pre", { class: "mono", id: "cert-request", tabindex: "0", "aria-label": "Certificate request" }, request);
  const cmdLabel = el(
    "p",
    {},
    "The administrator certifies it on the organization key's computer with (for a supervisor: --roles supervisor, or agent,supervisor):",
  );
  const cmd = el(
    "pre",
    { class: "mono", id: "certify-command", tabindex: "0", "aria-label": "Command for the administrator" },
    `hushwire org certify ${request} --name 'Your Name' --roles agent`,
  );
  const form = el("form", { "aria-label": "Import the certificate", id: "setup-form" });
  const linkLabel = el("label", { for: "clinic-link" }, "Your clinic's link (hushwire-clinic:…)");
  const linkInput = el("textarea", { id: "clinic-link", rows: "2", required: "" });
  const certLabel = el("label", { for: "certificate" }, "The certificate the administrator sent (paste the line)");
  const certInput = el("textarea", { id: "certificate", rows: "3" });
  const fileLabel = el("label", { for: "certificate-file" }, "…or choose the certificate file");
  const fileInput = el("input", { id: "certificate-file", type: "file", accept: ".cert,.txt,text/plain" });
  const submit = el("button", { type: "submit" }, "Import the certificate and register");
  const error = el("p", { role: "alert", id: "setup-error" });
  form.append(linkLabel, linkInput, certLabel, certInput, fileLabel, fileInput, submit, error);
  // An error line is about what was submitted: gone once the link or the certificate changes.
  for (const field of [linkInput, certInput]) field.addEventListener("input", () => (error.textContent = ""));
  fileInput.addEventListener("change", () => {
    error.textContent = "";
    const file = fileInput.files?.[0];
    if (!file) return;
    if (file.size > 16 * 1024) {
      error.textContent = "That file is far too large to be a certificate.";
      return;
    }
    void file.text().then((t) => (certInput.value = t.trim()));
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    void c
      .installCertificate(linkInput.value, certInput.value)
      .then(() => {
        showAgentConsole();
      })
      .catch((err: Error) => {
        error.textContent = err.message;
        submit.disabled = false;
      });
  });
  const pairwise = el("button", { type: "button", id: "pairwise-only" }, "Use without a certificate (two-party chats only)");
  pairwise.addEventListener("click", () => showPairwise());
  const note = el(
    "p",
    {},
    "Without a certificate the console registers as an ordinary device and can never become clinic staff later.",
  );
  if (c.isAgent) main.replaceChildren(intro, problem, fp, reqLabel, reqText, cmdLabel, cmd, form);
  else main.replaceChildren(intro, fp, reqLabel, reqText, cmdLabel, cmd, form, el("hr"), pairwise, note);
  linkInput.focus();
  statusLine.textContent = "Not registered yet";
}

// ---------------------------------------------------------------------------------------------
// The clinic agent console
// ---------------------------------------------------------------------------------------------

function showAgentConsole(): void {
  const c = client;
  if (!c) return;
  const cert = c.certificateSummary;
  const who = el("p", { id: "agent-identity" });
  const agent = c.hasRole("agent");
  const supervisor = c.hasRole("supervisor");
  if (cert) {
    who.replaceChildren(
      isolated(cert.name),
      ` — verified ${agent ? "agent" : "supervisor"} of `,
      isolated(c.clinicName),
      ` (roles: ${cert.roles}; certificate valid until ${isoDate(cert.notAfter)})`,
    );
  } else who.textContent = c.agentProblem;
  const fp = el("p", {}, "This device: ");
  fp.append(el("span", { class: "mono", id: "own-address" }, c.address));
  alertLine = el("p", { role: "alert", id: "console-alert" });
  dutyButton = el("button", { type: "button", id: "duty", "aria-pressed": String(c.onDuty) });
  dutyButton.addEventListener("click", () => {
    const on = !c.onDuty;
    if (dutyButton) dutyButton.disabled = true;
    void c
      .setOnDuty(on)
      .then(() => say(on ? "You are on duty." : "You are off duty."))
      .catch((e: Error) => say(e.message))
      .finally(() => {
        if (dutyButton) dutyButton.disabled = false;
        renderQueue();
      });
  });
  const queueHeading = el("h2", { id: "queue-heading" }, "Waiting patients");
  queueList = el("ul", { class: "queue", id: "queue", "aria-labelledby": "queue-heading", "aria-live": "polite" });
  const convHeading = el("h2", { id: "conversations-heading" }, "Your conversations");
  list = el("ul", { class: "list", "aria-labelledby": "conversations-heading" });
  panels = el("div", { class: "panels" });
  // A supervisor who is not an agent has no duty and no queue: it reads along and opens the
  // archive. Before the certificate is read (cert undefined) the agent's page is shown.
  if (agent || !cert) main.replaceChildren(who, fp, dutyButton, alertLine, queueHeading, queueList);
  else main.replaceChildren(who, fp, alertLine);
  if (supervisor) main.append(readAlongSection(c));
  main.append(convHeading, list, panels);
  if (supervisor) main.append(archiveSection(c));
  document.body.dataset.mode = "agent";
  renderQueue();
  renderList();
  for (const peer of c.conversations.keys()) if (peer.startsWith("conv:")) openPanel(peer);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") for (const peer of open) void client?.markRead(peer);
  });
  if (cert) c.connect();
}

/** A date as YYYY-MM-DD (UTC): unambiguous whatever the browser's locale. */
function isoDate(unixSeconds: number): string {
  const d = new Date(unixSeconds * 1000);
  return Number.isNaN(d.getTime()) ? `${unixSeconds} (Unix seconds)` : d.toISOString().slice(0, 10);
}

/** An error message from the core or the client as a sentence (capital first). */
function sentence(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/**
 * Supervisors (`hushwire join --read-only CONVERSATION`): a conversation id, checked here (hex,
 * 32 digits) before anything is sent; the client and the core then check the role and the
 * rules, and the relay decides. The conversation opens in a read-only panel.
 */
function readAlongSection(c: HushwireClient): HTMLElement {
  const section = el("section", { class: "read-along-join", id: "read-along", "aria-labelledby": "read-along-heading" });
  const heading = el("h2", { id: "read-along-heading" }, "Read along (supervisor)");
  const intro = el(
    "p",
    {},
    "Join a conversation of the clinic read-only: you see what the patient and the agents write from now on; " +
      "the patient and the agents see that a supervisor reads along. You never write in it.",
  );
  const form = el("form", { id: "read-along-form", "aria-label": "Read along in a conversation" });
  const label = el("label", { for: "read-along-conversation" }, "Conversation id (32 hex digits)");
  const input = el("input", {
    id: "read-along-conversation",
    size: "36",
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": "read-along-error",
  });
  const submit = el("button", { type: "submit", id: "read-along-submit" }, "Read along");
  const error = el("p", { role: "alert", id: "read-along-error" });
  form.append(label, input, submit);
  input.addEventListener("input", () => (error.textContent = ""));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    error.textContent = "";
    const id = input.value.trim().toLowerCase();
    if (id === "") {
      error.textContent = "Type the conversation id first.";
      return;
    }
    if (!/^[0-9a-f]+$/.test(id)) {
      error.textContent = "That is not a conversation id: it has characters other than hex digits (0-9, a-f).";
      return;
    }
    if (id.length !== 32) {
      error.textContent = `That is not a conversation id: it has ${id.length} hex digits, a conversation id has 32.`;
      return;
    }
    submit.disabled = true;
    void c
      .joinReadOnly(id)
      .then(() => {
        input.value = "";
        say("You read along in the conversation: its panel is below, read only.");
        openPanel(`conv:${id}`);
      })
      .catch((err: Error) => {
        error.textContent = `Could not read along: ${sentence(err.message)}`;
      })
      .finally(() => {
        submit.disabled = false;
      });
  });
  section.append(heading, intro, form, error);
  return section;
}

function renderQueue(): void {
  const c = client;
  if (!c || !queueList || !dutyButton) return;
  dutyButton.textContent = c.onDuty ? "Go off duty" : "Go on duty";
  dutyButton.setAttribute("aria-pressed", String(c.onDuty));
  if (!c.onDuty) {
    queueList.replaceChildren(el("li", {}, "Go on duty to see the patients waiting."));
    return;
  }
  const items = [...c.queue.values()].sort((a, b) => a.waitingSince - b.waitingSince);
  if (items.length === 0) {
    queueList.replaceChildren(el("li", {}, "Nobody is waiting."));
    return;
  }
  queueList.replaceChildren(
    ...items.map((q) => {
      const li = el("li", { "data-conversation": q.conversation });
      const what = q.state === "handedBack" ? "handed back to the queue" : "new";
      li.append(
        el("span", {}, `Patient conversation ${q.conversation.slice(0, 8)}… (${what}), waiting since ${time(q.waitingSince * 1000)} `),
      );
      const claim = el("button", { type: "button", class: "claim", "data-conversation": q.conversation }, "Claim");
      claim.setAttribute("aria-label", `Claim the conversation ${q.conversation.slice(0, 8)}`);
      claim.addEventListener("click", () => {
        claim.disabled = true;
        void c
          .claim(q.conversation)
          .then((outcome) => {
            if (outcome === "taken") {
              say("Another agent took it: that patient is already being answered.");
            } else {
              say("Claimed: the conversation is open below.");
              openPanel(`conv:${q.conversation}`);
            }
          })
          .catch((e: Error) => {
            claim.disabled = false;
            say(`Could not claim: ${e.message}`);
          });
      });
      li.append(claim);
      // A note handed back with it (§5.2): staff only, as text.
      const notes = c.queueNotesFor(q.conversation);
      if (notes.length > 0) {
        const ul = el("ul", { class: "queue-notes", "aria-label": "Hand-off notes" });
        for (const n of notes) ul.append(staffNoteItem(n));
        li.append(ul);
      }
      return li;
    }),
  );
}

function patientLabel(peer: string): string {
  const patient = client?.members(peer).find((m) => m.role === "patient");
  return patient ? `Patient ${patient.fingerprint.slice(0, 12)}…` : `Conversation ${peer.slice(5, 13)}…`;
}

function renderAgentPanel(peer: string, panel: HTMLElement): void {
  const c = client;
  if (!c) return;
  const conversation = c.conversations.get(peer);
  const id = panel.id;
  const members = c.members(peer);
  const patient = members.find((m) => m.role === "patient");
  const title = el("h2", {}, patientLabel(peer));
  const facts = el("dl", { class: "facts" });
  const fact = (term: string, value: string | (string | Node)[], cls = "") => {
    const dd = el("dd", cls ? { class: cls } : {});
    dd.append(...(typeof value === "string" ? [value] : value));
    facts.append(el("dt", {}, term), dd);
  };
  fact("Conversation", peer.slice(5), "mono");
  if (patient) {
    fact("Patient identity (verified member)", patient.fingerprint, "mono patient-fingerprint");
    for (const device of patient.devices) {
      const safety = c.safetyNumber(device);
      fact(
        `Patient device ${device.split(":")[1]}`,
        safety ? `safety number ${safety.match(/.{1,5}/g)?.join(" ")}` : "no session yet",
        "mono safety",
      );
    }
  }
  const staff = members.filter((m) => m.role !== "patient");
  fact(
    "Staff on it",
    staff.length
      ? staff.flatMap((m, i) => [
          ...(i > 0 ? ["; "] : []),
          isolated(m.name),
          ` — verified ${m.role} of `,
          isolated(c.clinicName),
          m.fingerprint === c.fingerprint ? " (you)" : "",
        ])
      : "nobody",
    "staff",
  );
  const ol = el("ol", { "aria-label": "Messages", "aria-live": "polite", class: "messages" });
  const supervised = c.supervised(peer);
  const onIt = !supervised && c.writesOn(peer);
  for (const m of conversation?.messages ?? []) ol.append(agentItem(m, onIt ? peer : ""));
  const children: HTMLElement[] = [title, facts, ol];
  panel.classList.toggle("read-along", supervised);
  if (supervised) {
    // Supervision (§5.1 step 5): read only — no composer, no hand-off, no recall.
    const reading = c.readsAlong(peer);
    children.splice(
      1,
      0,
      el(
        "p",
        { class: "read-only-mark", role: "note" },
        reading ? "Reading along — read only" : "Read along — read only; you stopped reading along",
      ),
    );
    if (reading) {
      const stop = el("button", { type: "button", class: "stop-reading" }, "Stop reading along");
      stop.addEventListener("click", () => {
        stop.disabled = true;
        void c
          .leave(peer)
          .then(() => say("You stopped reading along: nothing written from now on reaches this console."))
          .catch((err: Error) => {
            stop.disabled = false;
            say(`Could not stop reading along: ${sentence(err.message)}`);
          });
      });
      children.push(stop);
    } else {
      children.push(el("p", { class: "left" }, "You no longer read along in this conversation (what you read is kept here, read only)."));
    }
  } else if (onIt) {
    const form = el("form", { "aria-label": "Reply", class: "reply" });
    const label = el("label", { for: `${id}-reply` }, "Reply");
    const input = el("textarea", { id: `${id}-reply`, rows: "2", maxlength: "4000" });
    form.append(label, input, el("button", { type: "submit" }, "Send"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      input.value = "";
      void c.sendText(peer, text);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    // The hand-off note (`hushwire handoff --note`): one line for staff only, with either hand-off.
    const noteBox = el("div", { class: "handoff-note" });
    const noteInput = el("input", {
      id: `${id}-note`,
      size: "40",
      autocomplete: "off",
      "aria-describedby": `${id}-note-hint`,
    });
    const noteHint = el("span", { id: `${id}-note-hint`, class: "meta" }, noteHintText(""));
    noteInput.addEventListener("input", () => {
      noteHint.textContent = noteHintText(noteInput.value);
    });
    noteBox.append(el("label", { for: `${id}-note` }, "Note for staff with the hand-off (optional, one line)"), noteInput, noteHint);
    /** The note to send, or undefined (and said why) if it is too long to send. */
    const noteToSend = (): string | undefined => {
      const bytes = new TextEncoder().encode(noteInput.value.trim()).length;
      if (bytes <= hw.staffNoteMaxLen()) return noteInput.value;
      say(`The note is ${bytes} bytes long; a note is at most ${hw.staffNoteMaxLen()} bytes. Shorten it, then hand off.`);
      noteInput.focus();
      return undefined;
    };
    const hand = el("form", { "aria-label": "Hand off to a colleague", class: "handoff" });
    const handLabel = el("label", { for: `${id}-handoff` }, "Hand off to colleague (their fingerprint or address)");
    const handInput = el("input", { id: `${id}-handoff`, size: "40", autocomplete: "off" });
    const handButton = el("button", { type: "submit" }, "Hand off");
    hand.append(handLabel, handInput, handButton);
    hand.addEventListener("submit", (e) => {
      e.preventDefault();
      const note = noteToSend();
      if (note === undefined) return;
      handButton.disabled = true;
      void c
        .handOff(peer, handInput.value, true, note)
        .then((name) => say("Handed off to ", isolated(name), ". You have left the conversation."))
        .catch((err: Error) => {
          handButton.disabled = false;
          say(`Could not hand off: ${err.message}`);
        });
    });
    const back = el("button", { type: "button", class: "hand-back" }, "Hand back to the queue");
    back.addEventListener("click", () => {
      const note = noteToSend();
      if (note === undefined) return;
      back.disabled = true;
      void c
        .handBack(peer, note)
        .then(() => say("Handed back to the queue: the next agent on duty can claim it."))
        .catch((err: Error) => {
          back.disabled = false;
          say(`Could not hand it back: ${err.message}`);
        });
    });
    children.push(form, noteBox, hand, back);
  } else {
    children.push(el("p", { class: "left" }, "You are no longer on this conversation (its history is kept here, read only)."));
  }
  const close = el("button", { type: "button" }, "Close");
  close.addEventListener("click", () => {
    open.delete(peer);
    panel.remove();
  });
  children.push(close);
  const hadFocus = panel.contains(document.activeElement) ? (document.activeElement as HTMLElement).id : "";
  const draft = (document.getElementById(`${id}-reply`) as HTMLTextAreaElement | null)?.value ?? "";
  const noteDraft = (document.getElementById(`${id}-note`) as HTMLInputElement | null)?.value ?? "";
  panel.replaceChildren(...children);
  const reply = document.getElementById(`${id}-reply`) as HTMLTextAreaElement | null;
  if (reply && draft) reply.value = draft;
  const noteField = document.getElementById(`${id}-note`) as HTMLInputElement | null;
  if (noteField && noteDraft) {
    noteField.value = noteDraft;
    noteField.dispatchEvent(new Event("input"));
  }
  if (hadFocus) document.getElementById(hadFocus)?.focus();
  ol.lastElementChild?.scrollIntoView({ block: "end" });
  // On the screen of a visible page: read receipts for what the patient wrote.
  if (document.visibilityState === "visible") void c.markRead(peer);
}

/** "N of 200 bytes" under the hand-off note field. */
function noteHintText(note: string): string {
  const bytes = new TextEncoder().encode(note.trim()).length;
  const max = hw.staffNoteMaxLen();
  return bytes > max ? `${bytes} of ${max} bytes: too long` : `${bytes} of ${max} bytes; staff only, never shown to the patient`;
}

/** A hand-off note (§8.5): marked as for staff only, its text as text. */
function staffNoteItem(m: ChatMessage): HTMLLIElement {
  const li = el("li", { class: "staff-note", role: "note", "data-id": m.id });
  const who = el("span", { class: "who" });
  if (m.outgoing) who.textContent = "Your note for staff";
  else who.append("Note from ", isolated(m.senderName ?? "a colleague"));
  const text = isolated(m.text, { class: "text" }); // textContent only: markup stays text
  li.append(who, el("span", {}, ": "), text, el("span", {}, " "), el("span", { class: "meta" }, `${time(m.sentAtMs)} · staff only`));
  return li;
}

/** One message; with `peer` (this device is on the conversation) its own sent messages can be recalled. */
function agentItem(m: ChatMessage, peer: string): HTMLLIElement {
  if (m.notice) {
    const notice = el("li", { class: "notice", role: "note", "data-id": m.id });
    notice.append(isolated(m.text));
    return notice;
  }
  if (m.staffNote) return staffNoteItem(m);
  const li = el("li", { class: m.outgoing ? "out" : "in", "data-id": m.id });
  const who = isolated(m.outgoing ? "You" : (m.senderName ?? "Patient"), { class: "who" });
  // textContent only, in its own isolate: the time and state after it stay where they are.
  const text = isolated(m.recalled ?? m.text, { class: m.recalled ? "text recalled" : "text" });
  const meta = el(
    "span",
    { class: "meta" },
    m.outgoing ? `${time(m.sentAtMs)} · ${STATE_TEXT[m.state ?? "sent"]}` : `${time(m.sentAtMs)}${m.shared ? " · written while waiting" : ""}`,
  );
  if (m.outgoing) li.dataset.state = m.state ?? "";
  li.append(who, el("span", {}, ": "), text, el("span", {}, " "), meta);
  const recallable =
    peer &&
    m.outgoing &&
    !m.recalled &&
    (m.state === "sent" || m.state === "delivered" || m.state === "read") &&
    Date.now() - m.sentAtMs < hw.recallWindowMs();
  if (recallable) {
    const recall = el("button", { type: "button", class: "recall", "aria-label": "Recall this message" }, "Recall");
    recall.addEventListener("click", () => {
      recall.disabled = true;
      void client
        ?.recall(peer, m.id)
        .then(() => say("Recalled: the patient sees that you withdrew it."))
        .catch((err: Error) => {
          recall.disabled = false;
          say(`Could not recall: ${err.message}`);
        });
    });
    li.append(el("span", {}, " "), recall);
  }
  return li;
}

// ---------------------------------------------------------------------------------------------
// The clinic archive (supervisors; docs/conversations.md §7, `hushwire archive`)
// ---------------------------------------------------------------------------------------------

/** The archive key file is small (conversations.md §7.5: an opener refuses more than 64 KiB). */
const MAX_ARCHIVE_KEY_FILE = 64 * 1024;

/** "[HH:MM:SS]" of the relay's or a sender's clock, in UTC, as `hushwire archive` prints it. */
function clock(ms: number): string {
  const s = Math.floor(ms / 1000) % 86_400;
  const two = (n: number) => String(n).padStart(2, "0");
  return `${two(Math.floor(s / 3600))}:${two(Math.floor((s % 3600) / 60))}:${two(s % 60)}`;
}

const NOT_VERIFIED = "NOT VERIFIED: not a member that writes at its epoch, or not the device that filed it";

/**
 * The supervisor's view: the archive key file and its passphrase, a conversation, then its
 * archive opened and checked in WebAssembly, shown as text and exported as `hushwire archive`
 * would print it (`--json` or not).
 */
function archiveSection(c: HushwireClient): HTMLElement {
  const section = el("section", { class: "archive", id: "archive", "aria-labelledby": "archive-heading" });
  const heading = el("h2", { id: "archive-heading" }, "Open the clinic archive");
  const intro = el(
    "p",
    {},
    "For supervisors: the clinic's record of a conversation, sealed to the archive key. Choose the archive key file " +
      "(archive-key-….sealed, written by hushwire org archive-policy) and type its passphrase (the archive passphrase, " +
      "not the organization key's). The key is opened and used inside WebAssembly, and forgotten once the archive is read.",
  );
  const form = el("form", { "aria-label": "Open the clinic archive", id: "archive-form", class: "archive-form" });
  const fileLabel = el("label", { for: "archive-key-file" }, "Archive key file");
  const fileInput = el("input", { id: "archive-key-file", type: "file", accept: ".sealed", required: "" });
  const passLabel = el("label", { for: "archive-passphrase" }, "Archive key passphrase");
  const passInput = el("input", { id: "archive-passphrase", type: "password", autocomplete: "off", required: "" });
  const convLabel = el("label", { for: "archive-conversation" }, "Conversation id (32 hex digits)");
  const convInput = el("input", {
    id: "archive-conversation",
    size: "36",
    autocomplete: "off",
    spellcheck: "false",
    required: "",
    pattern: "[0-9a-fA-F]{32}",
    list: "archive-conversations",
  });
  const known = el("datalist", { id: "archive-conversations" });
  for (const peer of c.conversations.keys()) if (peer.startsWith("conv:")) known.append(el("option", { value: peer.slice(5) }));
  const submit = el("button", { type: "submit" }, "Open the archive");
  const error = el("p", { role: "alert", id: "archive-error" });
  const view = el("div", { id: "archive-view" });
  form.append(fileLabel, fileInput, passLabel, passInput, convLabel, convInput, known, submit);
  // An error line is about what was submitted: gone once a field changes.
  form.addEventListener("input", () => (error.textContent = ""));
  form.addEventListener("change", () => (error.textContent = ""));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    error.textContent = "";
    const file = fileInput.files?.[0];
    const passphrase = passInput.value;
    const conversation = convInput.value.trim().toLowerCase();
    if (!file) {
      error.textContent = "Choose the archive key file first.";
      return;
    }
    if (file.size > MAX_ARCHIVE_KEY_FILE) {
      error.textContent = "That file is far too large to be an archive key file.";
      return;
    }
    passInput.value = "";
    submit.disabled = true;
    submit.textContent = "Opening…";
    // Argon2id takes a moment: let the button's state paint first.
    setTimeout(() => {
      void openArchive(c, file, passphrase, conversation)
        .then(({ records, conversation: id }) => showArchive(view, id, records))
        .catch((err: Error) => {
          const m = err.message;
          error.textContent = m.charAt(0).toUpperCase() + m.slice(1);
        })
        .finally(() => {
          submit.disabled = false;
          submit.textContent = "Open the archive";
        });
    }, 20);
  });
  section.append(heading, intro, form, error, view);
  return section;
}

/** Opens the key file (in WebAssembly), reads the archive with it, and frees the key. */
async function openArchive(
  c: HushwireClient,
  file: File,
  passphrase: string,
  conversation: string,
): Promise<{ records: ArchiveRecord[]; conversation: string }> {
  if (!/^[0-9a-f]{32}$/.test(conversation)) throw new Error("A conversation id is 32 hex digits (0-9, a-f).");
  const bytes = new Uint8Array(await file.arrayBuffer());
  const key = hw.ArchiveKey.openFile(bytes, passphrase);
  try {
    return { records: await c.readArchive(conversation, key), conversation };
  } finally {
    key.free();
  }
}

function showArchive(view: HTMLElement, conversation: string, records: ArchiveRecord[]): void {
  const flagged = records.filter((r) => !r.verified).length;
  const title = el("h3", { id: "archive-view-heading" }, `Archive of conversation ${conversation}`);
  const summary = el(
    "p",
    { id: "archive-summary" },
    records.length === 0
      ? "The archive holds nothing for this conversation."
      : `${records.length} entries, in the order the relay filed them; ${flagged === 0 ? "none flagged" : `${flagged} flagged as not verified`}. Times are UTC.`,
  );
  const ol = el("ol", { id: "archive-entries", class: "archive-entries", "aria-labelledby": "archive-view-heading" });
  for (const r of records) ol.append(archiveItem(r));
  const downloads = el("div", { class: "archive-downloads" });
  const json = el("button", { type: "button", id: "archive-download-json" }, "Download JSON");
  json.addEventListener("click", () =>
    download(`archive-${conversation}.json`, "application/json", archiveJson(records)),
  );
  const text = el("button", { type: "button", id: "archive-download-text" }, "Download text");
  text.addEventListener("click", () => download(`archive-${conversation}.txt`, "text/plain", archiveText(records)));
  downloads.append(json, text);
  const close = el("button", { type: "button", id: "archive-close" }, "Close the archive");
  close.addEventListener("click", () => view.replaceChildren());
  view.replaceChildren(title, summary, ol, downloads, close);
  title.setAttribute("tabindex", "-1");
  title.focus();
}

/** One entry, every peer text through textContent. */
function archiveItem(r: ArchiveRecord): HTMLLIElement {
  const li = el("li", { "data-id": r.id, "data-kind": r.kind, "data-verified": String(r.verified) });
  if (!r.verified) li.classList.add("flagged");
  const when = el("span", { class: "when" }, `[${clock(r.kind === "message" ? r.sentAtMs : r.filedAtMs)}]`);
  const who = el("span", { class: "who" });
  who.append(isolated(r.from), ` (device ${r.device})`);
  li.append(when, el("span", {}, " "), who);
  if (!r.verified) li.append(el("span", {}, " "), el("strong", { class: "flag" }, NOT_VERIFIED));
  if (r.kind === "message") {
    li.append(el("span", {}, ": "));
    li.append(isolated(r.text, { class: "text" })); // textContent only: markup stays text
    if (r.recalledBy) {
      li.classList.add("recalled");
      const mark = el("span", { class: "recall-mark" }, " — recalled by ");
      mark.append(isolated(r.recalledBy), ` at ${clock(r.recallAtMs)} (kept in the archive)`);
      li.append(mark);
    }
  } else {
    li.append(el("span", { class: "text" }, ` recalled message ${r.id}`));
  }
  return li;
}

/** The entries as `hushwire --json archive` prints them: the same objects and field names. */
function archiveJson(records: ArchiveRecord[]): string {
  const out = records.map((r) =>
    r.kind === "message"
      ? {
          kind: "message",
          id: r.id,
          from: r.from,
          device: r.device,
          epoch: r.epoch,
          verified: r.verified,
          sent_at_ms: r.sentAtMs,
          filed_at_ms: r.filedAtMs,
          text: r.text,
        }
      : { kind: "recall", id: r.id, from: r.from, verified: r.verified, filed_at_ms: r.filedAtMs },
  );
  return `${JSON.stringify(out)}\n`;
}

/**
 * The entries as `hushwire archive` prints them (lines of a message's text continued below):
 * names and texts escaped by the core's own function, the CLI's (`hw.escapeText`,
 * `hw.messageBlock`), so control and format characters read exactly as in the CLI's output.
 */
function archiveText(records: ArchiveRecord[]): string {
  if (records.length === 0) return "The archive holds nothing for this conversation.\n";
  const flag = (r: ArchiveRecord) => (r.verified ? "" : ` [${NOT_VERIFIED}]`);
  const lines = records.map((r) => {
    if (r.kind === "recall") return `[${clock(r.filedAtMs)}] ${hw.escapeText(r.from)}${flag(r)} recalled message ${r.id}`;
    const header = `[${clock(r.sentAtMs)}] message ${r.id} ${hw.escapeText(r.from)} (device ${r.device})${flag(r)}:`;
    return hw.messageBlock(header, r.text);
  });
  return `${lines.join("\n")}\n`;
}

/** Hands `body` to the browser as a file download (a Blob behind a short-lived object URL). */
function download(name: string, type: string, body: string): void {
  const url = URL.createObjectURL(new Blob([body], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// ---------------------------------------------------------------------------------------------
// Two-party only (no certificate)
// ---------------------------------------------------------------------------------------------

function showPairwise(): void {
  const c = client;
  if (!c) return;
  const me = el("p", {}, "This console's address (give it to patients' widgets as data-agent): ");
  me.append(el("span", { class: "mono", id: "own-address" }, c.address));
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
  c.connect();
}

function renderList(): void {
  const c = client;
  if (!c || !list) return;
  const agent = c.isAgent;
  list.replaceChildren(
    ...[...c.conversations.values()]
      .filter((x) => agent === x.peer.startsWith("conv:"))
      .map((x) => {
        const li = el("li");
        const reading = agent && c.supervised(x.peer) ? (c.readsAlong(x.peer) ? " — reading along" : " — read along, left") : "";
        const label = agent
          ? `${patientLabel(x.peer)}${reading} (${x.messages.filter((m) => !m.notice).length})`
          : `Patient ${fingerprintOf(x.peer).slice(0, 12)}… (${x.messages.length})`;
        const b = el("button", { type: "button" }, label);
        b.addEventListener("click", () => openPanel(x.peer));
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
  if (!client || !panels) return;
  const id = `panel-${peer.startsWith("conv:") ? peer.slice(5, 21) : fingerprintOf(peer).slice(0, 16)}`;
  let panel = document.getElementById(id);
  if (!panel) {
    panel = el("section", { class: "panel", id, "aria-label": `Conversation with ${peer.startsWith("conv:") ? patientLabel(peer) : peer}` });
    if (peer.startsWith("conv:")) panel.dataset.conversation = peer.slice(5);
    panels.append(panel);
  }
  if (client.isAgent) {
    renderAgentPanel(peer, panel);
    return;
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
    li.append(`${m.outgoing ? "You" : "Patient"}: `, isolated(m.text, { class: "text" }));
    if (m.outgoing) li.append(` (${m.state ?? ""})`);
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
