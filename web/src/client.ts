// The browser client: a relay connection over WebSocket, login bound to the pinned relay key,
// registration, prekeys, bundles, sessions, send / acknowledge / receipts, and the pipelines of
// docs/client.md §5 that a patient chat needs: a persistent queue of outgoing messages, store
// before acknowledge, delivered receipts, reconnect with backoff. Frames, payloads, sessions and
// sealing are all the WebAssembly core's (./wasm); this file only moves bytes and keeps state.

import * as hw from "./wasm";
import { SealedStore } from "./store";

// "held": a clinic conversation's message written while no agent is on it (waiting in the
// queue): stored, sealed to the archive, and shared with the agent who claims (conversations.md
// §4.5); nobody else holds a session to send it to yet.
// "read": a clinic conversation's message some member's device showed on a visible screen (a
// read receipt, conversations.md §8.2); "delivered" when a member's device stored it.
export type MessageState = "queued" | "held" | "sent" | "delivered" | "read" | "failed";

export interface ChatMessage {
  id: string; // 32 hex digits
  outgoing: boolean;
  text: string;
  sentAtMs: number;
  state?: MessageState;
  seq?: number; // the record's number: stored as `msg:<peer>:<seq>`, one record per message
  ciphertext?: string; // hex; an encrypted queued message not yet taken by the relay
  // Clinic conversations (docs/conversations.md):
  epoch?: number; // the membership epoch it was written at
  sender?: string; // incoming: the sending device (a verified member at `epoch`)
  senderName?: string; // incoming: the sender's certified name, from the verified membership
  notice?: boolean; // a membership event (who joined or left), not a message
  envelopes?: [string, string][]; // outgoing: [recipient device, ciphertext hex] not yet sent
  archived?: boolean; // false: its archive copy is not filed yet (filed in order, even after a reload)
  archiveEnvelope?: string; // hex: its archive copy, sealed once, resent byte for byte until filed
  recallArchive?: RecallCopy; // outgoing, recalled: the recall's archive copy, not filed yet
  archiveRefused?: string; // the relay refused its archive copy for good: its error's name
  serverTimeMs?: number; // incoming: the relay's time of its delivery (recall window, §8.3)
  recalled?: string; // "Recalled by Name at HH:MM": shown instead of the text, which is kept
  readSent?: boolean; // incoming, clinic conversation: this device's read receipt went out
  shared?: boolean; // incoming: came in a history share (written before this device joined)
  staffNote?: boolean; // agent console: a hand-off note for staff only (§8.5), never the patient's
}

/** A recall's archive copy waiting to be filed (§7.3): what rebuilds the very payload sent. */
interface RecallCopy {
  atMs: number; // the recall's time, in its payload
  epoch: number; // the verified head it was sent at
  afterSeq: number; // filed after the copies of the messages up to this record number
  envelope?: string; // hex: the copy, sealed once, resent byte for byte until filed
}

/** An archive copy (§7.3) of this device's message or recall, rebuilt from its stored record. */
interface ArchiveCopy {
  cs: ConvRuntime;
  c: Conversation;
  x: ChatMessage;
  recall: boolean;
}

export interface Conversation {
  peer: string; // fingerprint:deviceId
  messages: ChatMessage[]; // in memory; stored one record per message (`msg:<peer>:<seq>`)
  agentName?: string; // from a verified agent certificate
}

/** The largest number of envelopes in one `Send` frame (the relay's limit). */
const ENVELOPES_PER_FRAME = 16;
/** The largest number of deliveries decrypted, stored and acknowledged together. */
const DELIVERIES_PER_BATCH = 256;
/**
 * Archive filing (§7.3) after `RateLimited` (120 copies a minute per device, relay-protocol.md
 * §6): the relay's `retry_after_ms`, but at least 1 s (a token or two refilled, not one request
 * per token) and at most 60 s (the whole minute refilled).
 */
const FILING_RETRY_MIN_MS = 1_000;
const FILING_RETRY_MAX_MS = 60_000;
/** Filing again after a refusal that is neither the rate nor for good (the relay's trouble). */
const FILING_RETRY_AFTER_ERROR_MS = 30_000;
/** Copies filed per turn in `serial`: a backlog does not hold up receiving and sending. */
const COPIES_PER_FILING_TURN = 16;
/**
 * While archive copies wait for a verified archive policy (none published, or none that
 * verifies), the policy is fetched again after 5 s, then 10, 20 … at most every 5 minutes (one
 * timer; back to 5 s at each login, which fetches it too), as the Rust client asks again while
 * its copies wait.
 */
const POLICY_RETRY_MIN_MS = 5_000;
const POLICY_RETRY_MAX_MS = 300_000;

function messageKey(peer: string, seq: number): string {
  return `msg:${peer}:${seq.toString().padStart(12, "0")}`;
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

interface Meta {
  relayKey?: number[]; // pinned at first registration
  relayKeyFingerprint?: string;
  registered: boolean;
  peers: string[];
  clinic?: ClinicState;
  agent?: AgentState;
}

/** The agent console: this device is clinic staff (docs/browser.md "Agent console"). */
interface AgentState {
  link: string; // the clinic link, verified at every open
  certificate: string; // this device's certificate (base64url), verified at every open
  deviceList: boolean; // this identity's device list is published (a hand-off names it)
  onDuty: boolean;
  conversations: ClinicState[]; // the conversations this device claimed or was handed
  renewal?: boolean; // a renewed certificate imported while offline: UpdateCertificate at login
  // Hand-off notes for conversations waiting in the queue that this device does not hold (a
  // note handed back to the queue goes to the agents on duty, §5.2): shown with the queue entry,
  // moved into the conversation when this device takes it up.
  queueNotes?: Record<string, ChatMessage[]>;
}

/** A conversation this device takes part in, with its verified membership. */
interface ConvRuntime {
  state: ClinicState;
  membership: hw.Membership;
}

/** A conversation waiting in the clinic's queue (FetchQueue, QueueChanged pushes). */
export interface QueueItem {
  conversation: string; // 32 hex digits
  state: string; // "new" or "handedBack"
  openedAt: number; // Unix seconds
  waitingSince: number; // Unix seconds
}

/**
 * One entry of a conversation's clinic archive as a supervisor reads it (`readArchive`), opened
 * and checked in WebAssembly (`hw.ArchiveReading`, docs/conversations.md §7.3). Its text is PHI:
 * shown with textContent only.
 */
export interface ArchiveRecord {
  kind: "message" | "recall";
  id: string; // the message id (for a recall: the message recalled), 32 hex digits
  from: string; // how the verified membership names the sender
  sender: string; // the sending device the entry names, fingerprint:deviceId
  device: number;
  epoch: number;
  verified: boolean; // a member device that writes at that epoch, and the device that filed it
  sentAtMs: number; // a message's time on its sender's clock
  recalledAtMs: number; // a recall's time on its sender's clock
  filedAtMs: number; // when the relay filed it (its clock)
  text: string;
  recalledBy: string; // a message a verified recall from its sender names: who ("" if none)
  recallAtMs: number;
}

/** The patient's conversation with the clinic (docs/conversations.md §5.1). */
interface ClinicState {
  id: string; // the conversation id, 32 hex digits
  changes: string[]; // the verified membership changes, hex, in epoch order
  deviceList: boolean; // this device's device list is published (rule 14)
  opened: boolean; // the relay accepted OpenConversation
  archiveWaitShown?: boolean; // its line "copies wait for the archive policy" is shown (once a wait)
  // Agent console: this device joined it read-only as a supervisor (§5.1 step 5), reading along
  // or, once it stopped, keeping what it read. Never written to, never filed from.
  supervised?: boolean;
}

/** The pseudo-peer a clinic conversation's messages are kept under (`msg:conv:<id>:<seq>`). */
export function conversationPeer(id: string): string {
  return `conv:${id}`;
}

export interface ClientEvents {
  onChange?(peer: string): void;
  onStatus?(text: string, connected: boolean): void;
  /** The clinic conversation's verified membership changed (or was first learned). */
  onMembership?(): void;
  /** Agent console: the clinic's queue changed (`queue`). */
  onQueue?(): void;
}

const DEVICE_ID = 1;
/** What a supervisor-only console is told when it tries an agent's work (duty, claiming). */
const ONLY_AGENTS =
  "Only an agent goes on duty and answers patients: this console's certificate grants the supervisor role, not the agent role.";
const ONE_TIME_PREKEYS = 20;

const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += HEX[b];
  return s;
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function fingerprintOf(address: string): string {
  return address.split(":")[0] ?? "";
}

/** Runs async jobs one at a time, in order (frames, sends and saves never interleave). */
class Serial {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(job: () => Promise<T>): Promise<T> {
    const next = this.tail.then(job, job);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

export class HushwireClient {
  private socket?: WebSocket;
  private nextRequest = 2;
  private pending = new Map<number, { resolve(f: hw.Incoming): void; reject(e: Error): void }>();
  private serial = new Serial();
  private backoffMs = 1000;
  /** `sendText` calls whose message is not stored yet (`savingMessages`). */
  private savesInFlight = 0;
  /** Connection attempts that failed since the last login: said in the status until one works. */
  private failedAttempts = 0;
  private stopped = false;
  private authenticated = false;
  private sessions = new Map<string, hw.Session>();
  readonly conversations = new Map<string, Conversation>();
  relayKeyFingerprint = "";
  /** `peer|id` → message, so receipts and duplicates cost O(1) however long the history. */
  private byId = new Map<string, ChatMessage>();
  private nextSeq = new Map<string, number>();
  private unsaved: [string, ChatMessage][] = [];
  private saving?: Promise<void>;
  private flushing?: Promise<void>;
  private inbox: hw.Incoming[] = [];
  private draining?: Promise<void>;
  /** Clinic conversations by id (the patient's one, or those an agent is on), verified in WebAssembly. */
  private convs = new Map<string, ConvRuntime>();
  /** Agent console: this device's certificate, verified under the clinic's key. */
  private ownCertificate?: hw.OwnCertificate;
  /** Agent console: why the stored certificate no longer verifies ("" if it does). */
  agentProblem = "";
  /** Agent console, on duty: the conversations waiting in the clinic's queue, by id. */
  readonly queue = new Map<string, QueueItem>();
  /** The clinic's archive policy (hex), verified under the clinic's key, if it has one. */
  private archivePolicy?: string;
  /** Its sequence: a policy the relay returns replaces it only with a higher one (§7.1). */
  private archivePolicySequence = 0;
  /** Copies wait for a policy: the one timer fetching it again, and its next delay. */
  private policyTimer?: ReturnType<typeof setTimeout>;
  private policyRetryMs = POLICY_RETRY_MIN_MS;
  /** Archive filing: the turn queued in `serial`, and the one timer waiting out the relay's rate. */
  private filing?: Promise<void>;
  private filingTimer?: ReturnType<typeof setTimeout>;

  private constructor(
    readonly store: SealedStore,
    private account: hw.Account,
    private meta: Meta,
    private relayUrl: string,
    private events: ClientEvents,
    private clinic?: hw.Clinic,
  ) {}

  /**
   * Opens the client's state from `store`, creating an account the first time. With `clinic`
   * the client is a patient writing to the clinic: it opens one conversation with it (waiting
   * in the clinic's queue until an agent claims it), kept under `clinicPeer`.
   */
  static async open(
    store: SealedStore,
    relayUrl: string,
    events: ClientEvents = {},
    clinic?: hw.Clinic,
  ): Promise<HushwireClient> {
    const sealedAccount = await store.getBytes("account");
    let account: hw.Account;
    let meta = await store.getJson<Meta>("meta");
    if (sealedAccount && meta) {
      account = hw.Account.unseal(sealedAccount, store.storageKey);
    } else {
      account = new hw.Account(DEVICE_ID, Math.floor(Date.now() / 1000));
      meta = { registered: false, peers: [] };
      await store.put({ account: account.seal(store.storageKey), meta });
    }
    const client = new HushwireClient(store, account, meta, relayUrl, events, clinic);
    client.relayKeyFingerprint = meta.relayKeyFingerprint ?? "";
    const decoder = new TextDecoder();
    // Every session, also those with the members of a clinic conversation (not peers).
    for (const [name, sealed] of await store.getPrefix("session:")) {
      client.sessions.set(name.slice("session:".length), hw.Session.unseal(sealed, store.storageKey));
    }
    if (clinic) {
      if (!meta.clinic) {
        // The conversation id is chosen now; the relay learns it when the conversation opens.
        meta.clinic = { id: toHex(hw.newConversationId()), changes: [], deviceList: false, opened: false };
        meta.peers.push(conversationPeer(meta.clinic.id));
        await store.put({ meta, [`conversation:${conversationPeer(meta.clinic.id)}`]: { peer: conversationPeer(meta.clinic.id) } });
      }
      // The stored history is verified again, change by change, as it is loaded.
      const membership = new hw.Membership(clinic, fromHex(meta.clinic.id));
      const now = Math.floor(Date.now() / 1000);
      for (const change of meta.clinic.changes) membership.apply(fromHex(change), now);
      client.convs.set(meta.clinic.id, { state: meta.clinic, membership });
    }
    if (meta.agent) client.loadAgent(meta.agent);
    for (const peer of meta.peers) {
      const stored = await store.getJson<Partial<Conversation>>(`conversation:${peer}`);
      const conversation: Conversation = { peer, messages: [], agentName: stored?.agentName };
      const records = await store.getPrefix(`msg:${peer}:`);
      conversation.messages = records.map(([, v]) => JSON.parse(decoder.decode(v)) as ChatMessage);
      if (stored?.messages?.length) {
        // An older store kept the whole history in one value: move it to one record a message.
        let seq = conversation.messages.length;
        const moved: Record<string, object> = {};
        for (const m of stored.messages) {
          m.seq = seq++;
          moved[messageKey(peer, m.seq)] = m;
          conversation.messages.push(m);
        }
        await store.put({ ...moved, [`conversation:${peer}`]: { peer, agentName: stored.agentName } });
      }
      client.conversations.set(peer, conversation);
      client.index(peer, conversation);
    }
    return client;
  }

  private index(peer: string, c: Conversation): void {
    let next = 0;
    for (const m of c.messages) {
      this.byId.set(`${peer}|${m.id}`, m);
      next = Math.max(next, (m.seq ?? 0) + 1);
    }
    this.nextSeq.set(peer, next);
  }

  private takeSeq(peer: string): number {
    const seq = this.nextSeq.get(peer) ?? 0;
    this.nextSeq.set(peer, seq + 1);
    return seq;
  }

  private remember(peer: string, c: Conversation, m: ChatMessage): void {
    m.seq = this.takeSeq(peer);
    c.messages.push(m);
    this.byId.set(`${peer}|${m.id}`, m);
  }

  get address(): string {
    return this.account.address();
  }

  get fingerprint(): string {
    return this.account.fingerprint();
  }

  safetyNumber(peer: string): string | undefined {
    return this.sessions.get(peer)?.safetyNumber();
  }

  /** Adds a conversation with `peer` (saved at once). */
  async addPeer(peer: string): Promise<Conversation> {
    const known = this.conversations.get(peer);
    if (known) return known;
    return this.serial.run(async () => {
      let c = this.conversations.get(peer);
      if (!c) {
        c = { peer, messages: [] };
        this.conversations.set(peer, c);
        this.nextSeq.set(peer, 0);
        this.meta.peers.push(peer);
        await this.store.put({ meta: this.meta, [`conversation:${peer}`]: { peer } });
      }
      return c;
    });
  }

  // ------------------------------------------------------------------------------------------
  // Connection
  // ------------------------------------------------------------------------------------------

  /** Connects and keeps reconnecting (1 s doubling to 30 s, with jitter) until `close`. */
  connect(): void {
    this.stopped = false;
    // Already connected or connecting (the console connects before a renewal, then again).
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) return;
    this.open();
  }

  close(): void {
    this.stopped = true;
    clearTimeout(this.filingTimer);
    this.filingTimer = undefined;
    clearTimeout(this.policyTimer);
    this.policyTimer = undefined;
    this.socket?.close();
    this.socket = undefined;
    for (const s of this.sessions.values()) s.free();
    this.sessions.clear();
    for (const cs of this.convs.values()) cs.membership.free();
    this.convs.clear();
    this.ownCertificate?.free();
    this.ownCertificate = undefined;
    this.account.free();
    this.store.close();
  }

  private status(text: string, connected = false): void {
    this.events.onStatus?.(text, connected);
  }

  private open(): void {
    if (this.stopped) return;
    // After a failure the status keeps saying so while it tries again (a page its relay does not
    // allow, or a network down, must not look like a connection about to open).
    this.status(this.failedAttempts === 0 ? "Connecting…" : `${this.cannotConnect()} Trying again now…`);
    let socket: WebSocket;
    try {
      socket = new WebSocket(this.relayUrl);
    } catch (e) {
      // Refused before any connection (a content security policy, a malformed URL).
      this.status(`Cannot reach the relay: ${(e as Error).message}`);
      this.retryLater();
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    // A connection that does not open within 10 s (a stalled network, or one the page's
    // content security policy silently blocks) is given up and retried with backoff.
    const stalled = setTimeout(() => {
      if (this.socket === socket && socket.readyState !== WebSocket.OPEN) {
        this.socket = undefined;
        socket.close();
        this.retryLater();
      }
    }, 10_000);
    socket.onopen = () => clearTimeout(stalled);
    this.authenticated = false;
    let first = true;
    socket.onmessage = (event) => {
      if (!(event.data instanceof ArrayBuffer)) return;
      const bytes = new Uint8Array(event.data);
      if (first) {
        first = false;
        void this.serial.run(() => this.login(socket, bytes)).catch((e: Error) => {
          this.status(`Cannot log in: ${e.message}`);
          this.stopped = /key changed/.test(e.message) || this.stopped;
          socket.close();
        });
        return;
      }
      let frame: hw.Incoming;
      try {
        frame = hw.decodeFrame(bytes);
      } catch {
        return;
      }
      const waiter = frame.requestId ? this.pending.get(frame.requestId) : undefined;
      if (waiter) {
        this.pending.delete(frame.requestId);
        waiter.resolve(frame);
      } else if (frame.kind === "deliver") {
        this.inbox.push(frame);
        this.scheduleDrain();
      } else if (frame.kind === "queue" && frame.queueKind === "membershipChanged") {
        // A change the relay accepted, pushed to member devices: verified here in order.
        void this.serial.run(() => this.learnPushed(frame)).catch(() => undefined);
      } else if (frame.kind === "queue" && frame.queueKind === "queueChanged") {
        // On duty: a conversation appeared in the queue, changed, or left it (claimed, closed).
        this.noteQueue(frame.queueEntries, false);
      }
    };
    socket.onclose = (event) => {
      clearTimeout(stalled);
      if (this.socket !== socket) return;
      this.authenticated = false;
      for (const w of this.pending.values()) w.reject(new Error("the connection closed"));
      this.pending.clear();
      if (event.code === 4001) {
        this.status("This chat was opened elsewhere; this tab no longer receives messages.");
        this.stopped = true;
        return;
      }
      this.retryLater();
    };
  }

  private retryLater(): void {
    if (this.stopped) return;
    const delay = this.backoffMs * (0.5 + Math.random() / 2);
    this.backoffMs = Math.min(this.backoffMs * 2, 30_000);
    this.failedAttempts++;
    this.status(`${this.cannotConnect()} Trying again in ${Math.max(1, Math.round(delay / 1000))} s…`);
    setTimeout(() => this.open(), delay);
  }

  /** The status while connections fail: what happened, and that nothing written is lost. */
  private cannotConnect(): string {
    const n = this.failedAttempts;
    return `Cannot connect to the chat service (${n} ${n === 1 ? "try" : "tries"}); what you write waits here and is sent once connected. If this lasts, the service may be down or may not allow this page.`;
  }

  /** Sends a frame and waits for its answer (or a synthetic Ok-less close). */
  private call(make: (requestId: number) => Uint8Array): Promise<hw.Incoming> {
    const id = this.nextRequest++;
    return this.callWith(id, make(id));
  }

  private callWith(id: number, frame: Uint8Array): Promise<hw.Incoming> {
    return new Promise((resolve, reject) => {
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected"));
        return;
      }
      this.pending.set(id, { resolve, reject });
      this.socket.send(frame as Uint8Array<ArrayBuffer>);
    });
  }

  private async login(socket: WebSocket, challenge: Uint8Array): Promise<void> {
    const register = !this.meta.registered;
    const pinned = this.meta.relayKey ? new Uint8Array(this.meta.relayKey) : undefined;
    const seen = hw.decodeFrame(challenge);
    if (this.meta.agent && !this.ownCertificate && register) {
      throw new Error("this console has no valid certificate yet: import one first");
    }
    // An agent console registers presenting its certificate (as `hushwire register --certificate`).
    const certificate = register && this.ownCertificate ? this.ownCertificate.bytes() : undefined;
    const answer = this.account.answerChallenge(challenge, pinned, register, 1, certificate);
    const reply = new Promise<hw.Incoming>((resolve, reject) =>
      this.pending.set(1, { resolve, reject }),
    );
    socket.send(answer as Uint8Array<ArrayBuffer>);
    const result = await reply;
    if (result.kind !== "ok") {
      if (result.errorName === "CertificateRefused") {
        throw new Error(
          "the relay refused this console's certificate (not the clinic's, expired, revoked, or this identity registered before without one)",
        );
      }
      throw new Error(result.errorName || "the relay closed the connection");
    }
    this.authenticated = true;
    if (register) {
      this.meta.relayKey = Array.from(seen.relayKey);
      this.meta.relayKeyFingerprint = seen.relayKeyFingerprint;
      this.relayKeyFingerprint = seen.relayKeyFingerprint;
      const id = this.nextRequest++;
      const upload = this.account.uploadPrekeysFrame(id, ONE_TIME_PREKEYS, ONE_TIME_PREKEYS);
      // The one-time secrets are stored before the public halves are published.
      await this.store.put({ account: this.account.seal(this.store.storageKey) });
      const answer = await this.callWith(id, upload);
      if (answer.kind !== "ok") throw new Error(`prekey upload refused: ${answer.errorName}`);
      this.meta.registered = true;
      await this.store.put({ meta: this.meta });
    }
    this.backoffMs = 1000;
    this.failedAttempts = 0;
    // The archive policy is fetched below: a timer waiting to fetch it again starts over.
    clearTimeout(this.policyTimer);
    this.policyTimer = undefined;
    this.policyRetryMs = POLICY_RETRY_MIN_MS;
    if (this.meta.clinic) await this.syncConversation();
    if (this.meta.agent) await this.syncAgent();
    this.status("Connected", true);
    // The queue: everything not yet held by the relay goes now, in order; then the archive
    // copies still to file (refused for the rate before a reload, or of a conversation this
    // device no longer writes on).
    this.scheduleFlush();
    this.scheduleFiling();
  }

  // ------------------------------------------------------------------------------------------
  // Sending
  // ------------------------------------------------------------------------------------------

  /**
   * Queues a text message: stored first (state "queued", its own record), then sent when
   * connected. Messages queued together are stored in one transaction and sent together.
   */
  async sendText(peer: string, text: string): Promise<ChatMessage> {
    this.refuseReadOnly(peer, "send");
    // Counted from the call on: the message is the caller's until it is on disk.
    this.savesInFlight++;
    try {
      return await this.queueText(peer, text);
    } finally {
      this.savesInFlight--;
    }
  }

  private async queueText(peer: string, text: string): Promise<ChatMessage> {
    const conversation = await this.addPeer(peer);
    const message: ChatMessage = {
      id: toHex(crypto.getRandomValues(new Uint8Array(16))),
      outgoing: true,
      text,
      sentAtMs: Date.now(),
      state: "queued",
    };
    this.remember(peer, conversation, message);
    this.unsaved.push([peer, message]);
    this.events.onChange?.(peer);
    await this.persistQueued();
    return message;
  }

  /**
   * Whether a message handed to `sendText` is not on disk yet (its write waits its turn behind
   * the client's serial queue, which may be awaiting the relay): a page asks before it unloads
   * then (`beforeunload`), or the message would be lost with the tab.
   */
  get savingMessages(): boolean {
    return this.savesInFlight > 0;
  }

  /** Stores every message queued since the last call in one transaction, then flushes. */
  private persistQueued(): Promise<void> {
    this.saving ??= this.serial.run(async () => {
      this.saving = undefined;
      const batch = this.unsaved.splice(0);
      const records: Record<string, object> = {};
      for (const [peer, m] of batch) records[messageKey(peer, m.seq ?? 0)] = m;
      await this.store.put(records);
      this.scheduleFlush();
    });
    return this.saving;
  }

  private scheduleFlush(): void {
    if (!this.authenticated) return;
    this.flushing ??= this.serial.run(async () => {
      this.flushing = undefined;
      await this.flush();
    });
  }

  /** Encrypts every payload for every device, in order, and stores each device's session
   *  after them in one write (a history share to a member's devices). */
  private async encryptForDevices(
    devices: string[],
    payloads: Uint8Array[],
  ): Promise<[string, Uint8Array][]> {
    const envelopes: [string, Uint8Array][] = [];
    const records: Record<string, Uint8Array | object> = {};
    for (const device of devices) {
      const session = await this.sessionFor(device);
      for (const p of payloads) envelopes.push([device, session.encrypt(p)]);
      records[`session:${device}`] = session.seal(this.store.storageKey);
    }
    await this.store.put(records);
    return envelopes;
  }

  private async sessionFor(peer: string): Promise<hw.Session> {
    let session = this.sessions.get(peer);
    if (session) return session;
    const bundle = await this.call((id) => hw.fetchBundleFrame(id, peer));
    if (bundle.kind !== "bundle") throw new Error(`no bundle for ${peer}: ${bundle.errorName}`);
    session = hw.Session.initiate(this.account, bundle.bundle);
    this.sessions.set(peer, session);
    return session;
  }

  /**
   * Encrypts every queued message of each peer, stores the ratchet state with the messages
   * (and their ciphertexts) in one transaction, then sends them in frames of up to 16
   * envelopes, all frames in flight at once. Runs inside `serial`.
   */
  private async flush(): Promise<void> {
    for (const c of this.conversations.values()) {
      if (!this.authenticated) return;
      const cs = this.convOf(c.peer);
      if (cs) {
        await this.flushConversation(c, cs);
        continue;
      }
      const queued = c.messages.filter((m) => m.outgoing && m.state === "queued");
      if (queued.length === 0) continue;
      let session: hw.Session;
      try {
        session = await this.sessionFor(c.peer);
      } catch {
        continue; // stays queued; retried on the next connection
      }
      const fresh = queued.filter((m) => m.ciphertext === undefined);
      if (fresh.length > 0) {
        const records: Record<string, Uint8Array | object> = {};
        for (const m of fresh) {
          const payload = hw.encodeTextMessage(fromHex(m.id), m.sentAtMs, m.text);
          m.ciphertext = toHex(session.encrypt(payload));
          records[messageKey(c.peer, m.seq ?? 0)] = m;
        }
        // The ratchet state is stored before any ciphertext leaves: no key is used twice, and
        // a reload sends the very same ciphertexts again.
        records[`session:${c.peer}`] = session.seal(this.store.storageKey);
        await this.store.put(records);
      }
      const inFlight = chunks(queued, ENVELOPES_PER_FRAME).map((group) => {
        const parts = group.map((m) => fromHex(m.ciphertext ?? ""));
        const lengths = Uint32Array.from(parts, (p) => p.length);
        const answer = this.call((id) => hw.sendFrameMany(id, c.peer, concat(parts), lengths));
        return { group, answer: answer.catch(() => undefined) };
      });
      const sent: ChatMessage[] = [];
      let retryAfterMs: number | undefined;
      let refused = false;
      for (const { group, answer } of inFlight) {
        const a = await answer;
        if (a?.kind === "sent") {
          for (const m of group) {
            m.state = "sent";
            delete m.ciphertext;
          }
          sent.push(...group);
        } else {
          refused = true; // stays queued with its ciphertext; sent again later
          if (a?.kind === "error" && a.errorName === "RateLimited") {
            retryAfterMs = Math.max(retryAfterMs ?? 0, a.retryAfterMs || 1000);
          }
        }
      }
      if (sent.length > 0) {
        const records: Record<string, object> = {};
        for (const m of sent) records[messageKey(c.peer, m.seq ?? 0)] = m;
        await this.store.put(records);
        this.events.onChange?.(c.peer);
      }
      if (refused) {
        if (retryAfterMs !== undefined) setTimeout(() => this.scheduleFlush(), retryAfterMs);
        return;
      }
    }
  }

  // ------------------------------------------------------------------------------------------
  // Receiving
  // ------------------------------------------------------------------------------------------

  private scheduleDrain(): void {
    this.draining ??= this.serial.run(async () => {
      this.draining = undefined;
      const batch = this.inbox.splice(0, DELIVERIES_PER_BATCH);
      if (this.inbox.length > 0) this.scheduleDrain();
      await this.receive(batch);
    });
  }

  /**
   * Consecutive deliveries: decrypt each, store all the messages, sessions and the account in
   * one transaction, and only then acknowledge them together and send the delivered receipts.
   */
  private async receive(frames: hw.Incoming[]): Promise<void> {
    const serverIds: Uint8Array[] = [];
    const records: Record<string, Uint8Array | object> = {};
    const touched = new Set<string>();
    const receipts = new Map<string, string[]>();
    let accepted = false;
    let metaChanged = false;
    // Clinic conversations: delivered receipts by "conversation id|sending device", and the
    // conversations (their pseudo-peers) that changed.
    const convReceipts = new Map<string, string[]>();
    const convChanged = new Set<string>();
    for (const frame of frames) {
      const peer = frame.sender;
      serverIds.push(frame.serverIds);
      const ciphertext = frame.payload;
      let plaintext: Uint8Array | undefined;
      const existing = this.sessions.get(peer);
      if (existing) {
        try {
          plaintext = existing.decrypt(ciphertext);
        } catch {
          plaintext = undefined;
        }
      }
      if (plaintext === undefined && hw.isPrekeyMessage(ciphertext)) {
        try {
          const a = this.account.accept(ciphertext);
          plaintext = a.plaintext;
          existing?.free();
          this.sessions.set(peer, a.takeSession());
          accepted = true;
        } catch {
          plaintext = undefined;
        }
      }
      // Undecryptable (lost state, a replay) or undecodable: acknowledged with the rest so the
      // mailbox does not jam.
      if (plaintext === undefined) continue;
      touched.add(peer);
      let payload: hw.DecodedPayload;
      try {
        payload = hw.decodePayload(plaintext);
      } catch {
        continue;
      }
      if (payload.conversation !== "") {
        // A clinic conversation's payload: checked against the verified membership.
        const cs = this.convs.get(payload.conversation);
        if (!cs && payload.kind === "staffNote" && this.meta.agent) {
          // A note handed back to the queue, to this on-duty console (§5.2).
          if (await this.queueNoteInbound(payload.conversation, peer, frame.serverTimeMs, payload.text)) metaChanged = true;
          payload.free();
          continue;
        }
        if (cs && (await this.conversationInbound(cs, peer, frame.serverTimeMs, payload, records, convReceipts))) {
          convChanged.add(conversationPeer(cs.state.id));
        }
        payload.free();
        continue;
      }
      let conversation = this.conversations.get(peer);
      if (!conversation) {
        conversation = { peer, messages: [] };
        this.conversations.set(peer, conversation);
        this.nextSeq.set(peer, 0);
        this.meta.peers.push(peer);
        records[`conversation:${peer}`] = { peer };
        metaChanged = true;
      }
      if (payload.kind === "message") {
        if (!this.byId.has(`${peer}|${payload.messageId}`)) {
          const m: ChatMessage = {
            id: payload.messageId,
            outgoing: false,
            text: payload.text,
            sentAtMs: payload.sentAtMs,
          };
          this.remember(peer, conversation, m);
          records[messageKey(peer, m.seq ?? 0)] = m;
        }
        const list = receipts.get(peer) ?? [];
        list.push(payload.messageId);
        receipts.set(peer, list);
      } else if (payload.kind === "receipt") {
        for (const id of payload.receiptIds) {
          const m = this.byId.get(`${peer}|${id}`);
          if (m?.outgoing && m.state !== "delivered") {
            m.state = "delivered";
            delete m.ciphertext;
            records[messageKey(peer, m.seq ?? 0)] = m;
          }
        }
      }
    }
    // The receipts are encrypted now so that the session stored below is the one after them.
    const outgoing: [string, Uint8Array[]][] = [];
    for (const [peer, ids] of receipts) {
      const session = this.sessions.get(peer);
      if (!session) continue;
      outgoing.push([peer, chunks(ids, 64).map((part) => session.encrypt(hw.encodeReceipt(part)))]);
    }
    const convOutgoing: [ConvRuntime, [string, Uint8Array][]][] = [];
    for (const [key, ids] of convReceipts) {
      const [id, peer] = key.split("|");
      const cs = this.convs.get(id);
      const session = this.sessions.get(peer);
      if (!cs || !session) continue;
      const envelopes: [string, Uint8Array][] = chunks(ids, 256).map((part) => [
        peer,
        session.encrypt(hw.encodeConversationReceipt(cs.membership.conversationId, part)),
      ]);
      convOutgoing.push([cs, envelopes]);
    }
    if (convChanged.size > 0) records.meta = this.meta;
    for (const peer of touched) {
      const session = this.sessions.get(peer);
      if (session) records[`session:${peer}`] = session.seal(this.store.storageKey);
    }
    if (metaChanged) records.meta = this.meta;
    if (accepted) records.account = this.account.seal(this.store.storageKey);
    // Store before acknowledge (docs/client.md §5): the messages, sessions and account (one-time
    // prekey used up) are durable before the relay may delete the envelopes.
    if (Object.keys(records).length > 0) await this.store.put(records);
    for (const peer of touched) this.events.onChange?.(peer);
    for (const peer of convChanged) this.events.onChange?.(peer);
    const answers: Promise<unknown>[] = [];
    // Delivered receipts to each member device that wrote, in ConversationSend (§8.2).
    for (const [cs, envelopes] of convOutgoing) {
      for (const group of chunks(envelopes, ENVELOPES_PER_FRAME)) {
        answers.push(this.sendToMembers(cs, group).catch(() => undefined));
      }
    }
    if (serverIds.length > 0) {
      answers.push(this.call((id) => hw.ackFrame(id, concat(serverIds))).catch(() => undefined));
    }
    for (const [peer, cts] of outgoing) {
      for (const group of chunks(cts, ENVELOPES_PER_FRAME)) {
        const lengths = Uint32Array.from(group, (p) => p.length);
        answers.push(
          this.call((id) => hw.sendFrameMany(id, peer, concat(group), lengths)).catch(() => undefined),
        );
      }
    }
    await Promise.all(answers);
  }

  // ------------------------------------------------------------------------------------------
  // Clinic conversations (docs/conversations.md): the patient's side and the agent console's
  // ------------------------------------------------------------------------------------------

  /** The pseudo-peer the clinic conversation's messages are kept under ("" without a clinic). */
  get clinicPeer(): string {
    return this.meta.clinic ? conversationPeer(this.meta.clinic.id) : "";
  }

  /** The clinic conversation's id, 32 hex digits ("" without a clinic). */
  get conversationId(): string {
    return this.meta.clinic?.id ?? "";
  }

  /** Whether the relay accepted the conversation (it is in the clinic's queue or claimed). */
  get conversationOpen(): boolean {
    return this.meta.clinic?.opened ?? false;
  }

  /** The patient's conversation (clinic mode). */
  private get patientConv(): ConvRuntime | undefined {
    return this.meta.clinic ? this.convs.get(this.meta.clinic.id) : undefined;
  }

  /** The conversation kept under the pseudo-peer `peer` (`conv:<id>`), if this device is on it. */
  private convOf(peer: string): ConvRuntime | undefined {
    return peer.startsWith("conv:") ? this.convs.get(peer.slice(5)) : undefined;
  }

  /**
   * The agents on the conversation now, each as "Name — verified agent of Clinic": the name is
   * that of the clinic certificate which the membership change adding them carried, verified
   * in WebAssembly under the clinic's key (rules 6 and 7). Empty while it waits in the queue.
   * Without `peer`, the patient's conversation.
   */
  verifiedAgents(peer?: string): string[] {
    const m = (peer ? this.convOf(peer) : this.patientConv)?.membership;
    if (!m || !this.clinic) return [];
    const clinicName = this.clinic.name;
    return m
      .members()
      .filter((x) => x.role === "agent")
      .map((x) => `${x.name} — verified agent of ${clinicName}`);
  }

  /** The verified members of the conversation kept under `peer` (agent console). */
  members(peer: string): { fingerprint: string; role: string; name: string; devices: string[] }[] {
    const m = this.convOf(peer)?.membership;
    if (!m) return [];
    return m.members().map((x) => {
      const out = { fingerprint: x.fingerprint, role: x.role, name: x.name, devices: x.devices };
      x.free();
      return out;
    });
  }

  /** Whether this device writes on the conversation under `peer` now (not handed off). */
  writesOn(peer: string): boolean {
    const m = this.convOf(peer)?.membership;
    return m ? m.writesNow(this.address) : false;
  }

  /** Run at every login (inside `serial`): publish, open, catch up on the history, policy. */
  private async syncConversation(): Promise<void> {
    const state = this.meta.clinic;
    const clinic = this.clinic;
    const cs = this.patientConv;
    if (!state || !clinic || !cs) return;
    if (!state.deviceList) {
      // Rule 14: the relay checks the opening change's devices against the patient's list.
      const answer = await this.call((id) => this.account.publishDeviceListFrame(id, 1));
      // ListRefused: a list of this identity is held already (published before a crash).
      if (answer.kind !== "ok" && answer.errorName !== "ListRefused") {
        throw new Error(`the device list was refused: ${answer.errorName}`);
      }
      state.deviceList = true;
      await this.store.put({ meta: this.meta });
    }
    if (!state.opened) {
      // A change signed before a reload but never confirmed was not kept: sign it anew.
      const membership = new hw.Membership(clinic, fromHex(state.id));
      cs.membership.free();
      cs.membership = membership;
      const answer = await this.call((id) =>
        this.account.openConversationFrame(membership, id, Math.floor(Date.now() / 1000)),
      );
      if (answer.kind === "ok") {
        state.opened = true;
        await this.store.put({ ...this.recordChanges(cs, 0), meta: this.meta });
        this.events.onChange?.(this.clinicPeer);
      } else if (answer.errorName === "ConversationExists") {
        // Opened before a reload with another signature: the relay's history is fetched below.
        state.opened = true;
        cs.membership = new hw.Membership(clinic, fromHex(state.id));
        membership.free();
        await this.store.put({ meta: this.meta });
      } else {
        cs.membership = new hw.Membership(clinic, fromHex(state.id));
        membership.free();
        throw new Error(`the clinic refused the conversation: ${answer.errorName}`);
      }
    }
    await this.refreshMembership(cs);
    await this.fetchArchivePolicy();
    this.events.onMembership?.();
  }

  /**
   * The clinic's archive policy (§7.1): used only if it verifies under the clinic's key, and
   * kept until one with a higher sequence verifies (a relay can neither substitute its own key
   * nor take the clinic back to an older one). None published, or one that does not verify:
   * the policy held so far (if any) stays, and copies needing one wait (`fileArchiveCopies`).
   */
  private async fetchArchivePolicy(): Promise<void> {
    const clinic = this.clinic;
    if (!clinic) return;
    const policy = await this.call((id) => hw.fetchArchivePolicyFrame(id)).catch(() => undefined);
    const bytes = policy?.archivePolicy;
    if (bytes && bytes.length > 0) {
      try {
        const sequence = clinic.verifyArchivePolicy(bytes);
        if (this.archivePolicy === undefined || sequence > this.archivePolicySequence) {
          this.archivePolicy = toHex(bytes);
          this.archivePolicySequence = sequence;
        }
      } catch {
        // Not the clinic's: ignored (logged without its bytes).
        console.warn("hushwire: the relay's archive policy does not verify under the clinic's key; ignored");
      }
    }
  }

  /**
   * Copies wait for a policy: the one timer fetches it again (5 s doubling to 5 minutes), then
   * files what it can. Not while disconnected: the next login fetches it anyway.
   */
  private fetchPolicyLater(): void {
    if (this.policyTimer !== undefined || this.stopped) return;
    const delay = this.policyRetryMs;
    this.policyRetryMs = Math.min(this.policyRetryMs * 2, POLICY_RETRY_MAX_MS);
    this.policyTimer = setTimeout(() => {
      this.policyTimer = undefined;
      if (!this.authenticated) return;
      void this.serial
        .run(() => this.fetchArchivePolicy())
        .then(() => this.scheduleFiling())
        .catch(() => undefined);
    }, delay);
  }

  /**
   * Notes the changes verified from index `from` on in the conversation's stored changes and
   * as notices in the conversation (described by the core; for the agent console from staff's
   * side); returns the records to store (the caller stores them with `meta`).
   */
  private recordChanges(cs: ConvRuntime, from: number): Record<string, object> {
    const m = cs.membership;
    const state = cs.state;
    const records: Record<string, object> = {};
    const peer = conversationPeer(state.id);
    const c = this.conversations.get(peer);
    const viewer = this.meta.agent ? this.fingerprint : undefined;
    for (let i = from; i < m.nextEpoch; i++) {
      if (i >= state.changes.length) state.changes.push(toHex(m.change(i)));
      if (!c) continue;
      const notice: ChatMessage = {
        id: `change-${i}`,
        outgoing: false,
        notice: true,
        text: m.describe(i, viewer),
        sentAtMs: Date.now(),
      };
      if (this.byId.has(`${peer}|${notice.id}`)) continue;
      this.remember(peer, c, notice);
      records[messageKey(peer, notice.seq ?? 0)] = notice;
    }
    return records;
  }

  /** Applies changes in order; returns the fingerprints of agents who joined. Throws on the first refusal. */
  private applyChanges(cs: ConvRuntime, changes: Uint8Array[]): string[] {
    const m = cs.membership;
    const agentsBefore = new Set(m.members().filter((x) => x.role === "agent").map((x) => x.fingerprint));
    const now = Math.floor(Date.now() / 1000);
    for (const change of changes) m.apply(change, now);
    return m
      .members()
      .filter((x) => x.role === "agent" && !agentsBefore.has(x.fingerprint))
      .map((x) => x.fingerprint);
  }

  /** Fetches the history from the verified head, verifies and keeps it (inside `serial`). */
  private async refreshMembership(cs: ConvRuntime): Promise<void> {
    const m = cs.membership;
    if (!cs.state.opened) return;
    for (let round = 0; round < 16; round++) {
      const from = m.nextEpoch;
      const answer = await this.call((id) => hw.fetchMembershipFrame(id, m.conversationId, from));
      if (answer.queueKind !== "membership" || answer.changeCount === 0) return;
      const changes: Uint8Array[] = [];
      for (let i = 0; i < answer.changeCount; i++) changes.push(answer.change(i));
      let joined: string[] = [];
      let refused: Error | undefined;
      try {
        joined = this.applyChanges(cs, changes);
      } catch (e) {
        refused = e as Error; // what verified before the refused change is kept
      }
      await this.afterChanges(cs, from, joined);
      if (refused) throw refused;
    }
  }

  /** A pushed change: applied when it is the next one, else the history is fetched. */
  private async learnPushed(frame: hw.Incoming): Promise<void> {
    let cs = this.convs.get(frame.conversationHex);
    // Agent console: a colleague handed this device a conversation it did not know.
    if (!cs && this.meta.agent) cs = await this.adopt(frame.conversationHex);
    if (!cs || !cs.state.opened) return;
    const from = cs.membership.nextEpoch;
    let joined: string[];
    try {
      joined = this.applyChanges(cs, [frame.change(0)]);
    } catch {
      await this.refreshMembership(cs); // a gap (or one applied already): fetch and verify
      return;
    }
    await this.afterChanges(cs, from, joined);
  }

  /** Stores newly verified changes, shows them, and shares waiting messages with new agents. */
  private async afterChanges(cs: ConvRuntime, from: number, joinedAgents: string[]): Promise<void> {
    if (cs.membership.nextEpoch === from) return;
    const records = this.recordChanges(cs, from);
    await this.store.put({ ...records, meta: this.meta });
    this.events.onChange?.(conversationPeer(cs.state.id));
    this.events.onMembership?.();
    if (cs === this.patientConv) {
      for (const agent of joinedAgents) {
        await this.shareWaiting(cs, agent).catch(() => undefined);
      }
    }
    this.scheduleFlush();
  }

  /**
   * §4.5: what this patient wrote while no agent was on the conversation is shared with the
   * agent who joined, in HistoryShare payloads to each of the agent's member devices.
   */
  private async shareWaiting(cs: ConvRuntime, agentFingerprint: string): Promise<void> {
    const m = cs.membership;
    const c = this.conversations.get(conversationPeer(cs.state.id));
    if (!c) return;
    const agent = m.members().find((x) => x.fingerprint === agentFingerprint);
    if (!agent) return;
    const waiting = c.messages.filter(
      (x) => x.outgoing && !x.notice && x.epoch !== undefined && x.state !== "queued" && !m.agentOnAt(x.epoch),
    );
    if (waiting.length === 0) return;
    const payloads = chunks(waiting, 32).map((group) =>
      hw.encodeHistoryShare(
        m.conversationId,
        this.address,
        concat(group.map((x) => fromHex(x.id))),
        Float64Array.from(group, (x) => x.epoch ?? 0),
        Float64Array.from(group, (x) => x.sentAtMs),
        group.map((x) => x.text),
      ),
    );
    const envelopes = await this.encryptForDevices(agent.devices, payloads);
    let shared = false;
    for (const group of chunks(envelopes, ENVELOPES_PER_FRAME)) {
      const answer = await this.sendToMembers(cs, group);
      shared ||= answer.kind === "sent";
    }
    if (shared) {
      const updated: Record<string, object> = {};
      for (const x of waiting) {
        if (x.state === "held") {
          x.state = "sent";
          updated[messageKey(c.peer, x.seq ?? 0)] = x;
        }
      }
      await this.store.put(updated);
      this.events.onChange?.(c.peer);
    }
  }

  /** One `ConversationSend` frame at the verified head epoch. */
  private sendToMembers(cs: ConvRuntime, envelopes: [string, Uint8Array][]): Promise<hw.Incoming> {
    const m = cs.membership;
    const parts = envelopes.map(([, ct]) => ct);
    return this.call((id) =>
      hw.conversationSendFrame(
        id,
        m.conversationId,
        m.nextEpoch,
        envelopes.map(([to]) => to),
        concat(parts),
        Uint32Array.from(parts, (p) => p.length),
      ),
    );
  }

  /**
   * A clinic conversation's queued messages (inside `serial`): each encrypted once per other
   * member device at the verified head epoch (pairwise fan-out, §2), stored with the sessions,
   * then sent in `ConversationSend` frames. Written while no agent is on it, a message is
   * "held" (shared when an agent claims, §4.5). `StaleEpoch` or `NotOnConversation`: the
   * history is fetched and the stored ciphertexts go again to the devices still members
   * (§4.4); a removed device gets nothing, and a message none of whose recipients stayed is
   * encrypted again for the members at the new head.
   */
  private async flushConversation(c: Conversation, cs: ConvRuntime): Promise<void> {
    const m = cs.membership;
    if (!cs.state.opened) return;
    const queued = c.messages.filter((x) => x.outgoing && x.state === "queued");
    const fresh = queued.filter((x) => x.envelopes === undefined);
    if (fresh.length > 0) {
      const epoch = m.nextEpoch;
      const recipients = m.recipients(this.address);
      const records: Record<string, Uint8Array | object> = {};
      const sessions: hw.Session[] = [];
      try {
        for (const to of recipients) sessions.push(await this.sessionFor(to));
      } catch {
        return; // a member's bundle is not available now: stays queued
      }
      for (const x of fresh) {
        x.epoch = epoch;
        const payload = hw.encodeConversationMessage(m.conversationId, epoch, fromHex(x.id), x.sentAtMs, x.text);
        x.envelopes = recipients.map((to, i) => [to, toHex(sessions[i].encrypt(payload))]);
        if (recipients.length === 0) {
          x.state = "held";
          delete x.envelopes;
        }
        // Every message this device writes here has an archive copy, kept with it from now on
        // whether or not the clinic's policy is known yet: filed once it is (§7.3).
        x.archived = false;
        records[messageKey(c.peer, x.seq ?? 0)] = x;
      }
      recipients.forEach((to, i) => (records[`session:${to}`] = sessions[i].seal(this.store.storageKey)));
      // As for two-party messages: the ratchet state is stored before any ciphertext leaves.
      await this.store.put(records);
      this.events.onChange?.(c.peer);
    }
    const sending = c.messages.filter((x) => x.outgoing && x.state === "queued" && x.envelopes);
    const updated: Record<string, object> = {};
    let requeued = false;
    for (let attempt = 0; attempt < 2 && sending.length > 0; attempt++) {
      const inFlight = sending.map((x) => ({
        x,
        answers: chunks(x.envelopes ?? [], ENVELOPES_PER_FRAME).map((group) =>
          this.sendToMembers(cs, group.map(([to, ct]) => [to, fromHex(ct)])).catch(() => undefined),
        ),
      }));
      let stale = false;
      const again: ChatMessage[] = [];
      for (const { x, answers } of inFlight) {
        const results = await Promise.all(answers);
        if (results.every((a) => a?.kind === "sent")) {
          x.state = "sent";
          delete x.envelopes;
          updated[messageKey(c.peer, x.seq ?? 0)] = x;
        } else {
          stale ||= results.some((a) => a?.errorName === "StaleEpoch" || a?.errorName === "NotOnConversation");
          again.push(x);
        }
      }
      sending.splice(0, sending.length, ...again);
      if (!stale || sending.length === 0) break;
      await this.refreshMembership(cs);
      const members = new Set(m.recipients(this.address));
      for (const x of sending) {
        x.envelopes = (x.envelopes ?? []).filter(([to]) => members.has(to));
        if (x.envelopes.length === 0) {
          // Every device it was encrypted for has left, and the relay took no copy (all its
          // frames were refused): nobody has read it, so it is written again, at the verified
          // head, for the members now (or held for the next agent if none is on).
          delete x.envelopes;
          delete x.epoch;
          requeued = true;
        }
        updated[messageKey(c.peer, x.seq ?? 0)] = x;
      }
      sending.splice(0, sending.length, ...sending.filter((x) => x.envelopes));
    }
    if (Object.keys(updated).length > 0) {
      await this.store.put(updated);
      this.events.onChange?.(c.peer);
    }
    if (requeued) this.scheduleFlush();
    // What went (or is held for an agent) is filed to the clinic's archive next, in order.
    this.scheduleFiling();
  }

  // ------------------------------------------------------------------------------------------
  // The clinic archive (docs/conversations.md §7.3): filing this device's copies
  // ------------------------------------------------------------------------------------------

  /** How many archive copies of this device's messages and recalls wait to be filed. */
  get pendingArchiveCopies(): number {
    let n = 0;
    for (const cs of this.convs.values()) {
      for (const x of this.conversations.get(conversationPeer(cs.state.id))?.messages ?? []) {
        if (x.outgoing && x.archived === false) n++;
        if (x.outgoing && x.recallArchive) n++;
      }
    }
    return n;
  }

  /** Queues a filing turn in `serial`, unless one is queued already or the relay's rate is awaited. */
  private scheduleFiling(): void {
    if (!this.authenticated || this.filingTimer !== undefined) return;
    this.filing ??= this.serial
      .run(async () => {
        this.filing = undefined;
        await this.fileArchiveCopies();
      })
      .catch(() => this.fileLater(FILING_RETRY_AFTER_ERROR_MS)); // the store failed: later
  }

  /** The one filing timer: filing resumes after `ms`, kept between the floor and the ceiling. */
  private fileLater(ms: number): void {
    if (this.filingTimer !== undefined || this.stopped) return;
    const delay = Math.min(Math.max(ms, FILING_RETRY_MIN_MS), FILING_RETRY_MAX_MS);
    this.filingTimer = setTimeout(() => {
      this.filingTimer = undefined;
      this.scheduleFiling();
    }, delay);
  }

  /**
   * The copies waiting to be filed, per conversation in the order they were written: a
   * message's once it went to the members (or is held for an agent), a recall's after the
   * messages written before it. Every one is rebuilt from the message's stored record (kept
   * there, `archived: false`, from before the message itself was sent), so none is lost to a
   * reload.
   */
  private archiveCopies(): ArchiveCopy[] {
    const copies: ArchiveCopy[] = [];
    for (const cs of this.convs.values()) {
      const c = this.conversations.get(conversationPeer(cs.state.id));
      // A conversation read along as supervisor: this device never writes there, so it has
      // nothing to file (and the relay would refuse it: NotOnConversation).
      if (!c || !cs.state.opened || cs.state.supervised) continue;
      const mine: [number, ArchiveCopy][] = [];
      for (const x of c.messages) {
        if (!x.outgoing) continue;
        if (x.archived === false && x.epoch !== undefined && x.state !== "queued") {
          mine.push([x.seq ?? 0, { cs, c, x, recall: false }]);
        }
        if (x.recallArchive) mine.push([x.recallArchive.afterSeq + 0.5, { cs, c, x, recall: true }]);
      }
      copies.push(...mine.sort(([a], [b]) => a - b).map(([, copy]) => copy));
    }
    return copies;
  }

  /**
   * One filing turn (inside `serial`): up to 16 copies, oldest first, one request in flight.
   * Each copy is sealed to the clinic's archive key by the core **once**
   * (`Clinic.sealArchiveEnvelope`) and the envelope stored in the message's record before its
   * first attempt; every attempt, after a lost `Ok`, a reconnect or a reload, files exactly
   * those bytes (`putArchiveEnvelopeFrame`), so the relay can tell a retry from a new copy
   * (§7.3). A copy sealed under a policy since replaced by a newer one is still filed as sealed
   * (its envelope names its policy's sequence, whose key file opens it): sealing it again could
   * put a second, different copy in the archive if the first had reached it; copies not sealed
   * yet are sealed under the newest verified policy, as the Rust client seals each copy under
   * the policy it holds when it files it. A copy that needs sealing while no verified policy is
   * known waits (with those after it), the conversation says so once (`noteArchiveWaiting`)
   * and the policy is fetched again later (`fetchPolicyLater`). A copy the relay took is stored
   * as filed at once (a reload files only what is left). `RateLimited`: the rest waits for the
   * relay's `retry_after_ms` (one timer). `NotOnConversation` or `UnknownConversation`: the
   * relay takes copies from any device that ever wrote on the conversation, so this device
   * never did and never will: its copies of that conversation are dropped, which the
   * conversation shows in a line and the console logs (no content). Another refusal: again in
   * 30 s; the connection gone: at the next login.
   */
  private async fileArchiveCopies(): Promise<void> {
    const clinic = this.clinic;
    if (!clinic || this.filingTimer !== undefined) return;
    const refused = new Map<ConvRuntime, { c: Conversation; why: string; records: Record<string, object> }>();
    const waiting = new Map<ConvRuntime, { c: Conversation; count: number }>();
    let requests = 0;
    try {
      for (const copy of this.archiveCopies()) {
        const { cs, c, x, recall } = copy;
        const dropped = refused.get(cs);
        if (dropped) {
          // The refusal is about this device on this conversation, not one copy: the rest go too.
          this.dropCopy(copy, dropped.why);
          dropped.records[messageKey(c.peer, x.seq ?? 0)] = x;
          continue;
        }
        const held = waiting.get(cs);
        if (held) {
          held.count++; // in order: nothing after a copy waiting for the policy goes before it
          continue;
        }
        if (!this.authenticated) return;
        const stored = recall ? x.recallArchive?.envelope : x.archiveEnvelope;
        if (stored === undefined && this.archivePolicy === undefined) {
          waiting.set(cs, { c, count: 1 });
          continue;
        }
        if (requests++ === COPIES_PER_FILING_TURN) {
          this.scheduleFiling(); // the rest in the next turn, after what waits in `serial`
          return;
        }
        const envelope = stored ?? (await this.sealCopy(clinic, copy));
        const answer = await this.putArchive(fromHex(envelope));
        if (answer === undefined) return; // not connected: filed after the next login
        if (answer.kind === "ok") {
          if (recall) delete x.recallArchive;
          else {
            x.archived = true;
            delete x.archiveEnvelope;
          }
          const records: Record<string, object> = { [messageKey(c.peer, x.seq ?? 0)]: x };
          if (cs.state.archiveWaitShown) {
            // The wait is over: a later one is told again.
            delete cs.state.archiveWaitShown;
            records.meta = this.meta;
          }
          await this.store.put(records);
        } else if (answer.errorName === "NotOnConversation" || answer.errorName === "UnknownConversation") {
          this.dropCopy(copy, answer.errorName);
          refused.set(cs, { c, why: answer.errorName, records: { [messageKey(c.peer, x.seq ?? 0)]: x } });
        } else {
          this.fileLater(answer.errorName === "RateLimited" ? answer.retryAfterMs : FILING_RETRY_AFTER_ERROR_MS);
          return;
        }
      }
    } finally {
      for (const [cs, { c, why, records }] of refused) await this.noteRefusedCopies(cs, c, why, records);
      if (waiting.size > 0) {
        for (const [cs, { c, count }] of waiting) await this.noteArchiveWaiting(cs, c, count);
        this.fetchPolicyLater();
      }
    }
  }

  /**
   * Seals `copy` once under the held policy and stores the envelope in its record before it is
   * filed; returns it (hex). A failed store leaves the record as it was (nothing is sent).
   */
  private async sealCopy(clinic: hw.Clinic, { cs, c, x, recall }: ArchiveCopy): Promise<string> {
    const policy = this.archivePolicy;
    if (policy === undefined) throw new Error("no archive policy");
    const m = cs.membership;
    const epoch = recall ? (x.recallArchive?.epoch ?? 0) : (x.epoch ?? 0);
    const payload = recall
      ? hw.encodeRecall(m.conversationId, fromHex(x.id), x.recallArchive?.atMs ?? 0)
      : hw.encodeConversationMessage(m.conversationId, epoch, fromHex(x.id), x.sentAtMs, x.text);
    const envelope = toHex(clinic.sealArchiveEnvelope(fromHex(policy), m.conversationId, this.address, epoch, payload));
    const target = recall ? x.recallArchive : x;
    if (!target) throw new Error("no recall copy");
    if (recall) (target as RecallCopy).envelope = envelope;
    else (target as ChatMessage).archiveEnvelope = envelope;
    try {
      await this.store.put({ [messageKey(c.peer, x.seq ?? 0)]: x });
    } catch (e) {
      if (recall) delete (target as RecallCopy).envelope;
      else delete (target as ChatMessage).archiveEnvelope;
      throw e;
    }
    return envelope;
  }

  /**
   * Files one sealed archive envelope with `PutArchive`: the relay's answer, or `undefined` if
   * the connection is gone (the browser test wraps it to lose an `Ok` and to see the bytes).
   */
  private putArchive(envelope: Uint8Array): Promise<hw.Incoming | undefined> {
    return this.call((id) => hw.putArchiveEnvelopeFrame(id, envelope)).catch(() => undefined);
  }

  /** A copy the relay refused for good: no longer waiting, and the refusal kept with it. */
  private dropCopy({ x, recall }: ArchiveCopy, why: string): void {
    if (recall) delete x.recallArchive;
    else {
      delete x.archived;
      delete x.archiveEnvelope;
    }
    x.archiveRefused = why;
  }

  /**
   * Copies of this conversation wait for the clinic's archive policy: one line in the
   * conversation says so (once per wait: not again until a copy of it has been filed, also
   * after a reload), and the page's console logs the conversation id and the count only (as
   * the Rust client's `ArchiveUnavailable`).
   */
  private async noteArchiveWaiting(cs: ConvRuntime, c: Conversation, count: number): Promise<void> {
    if (cs.state.archiveWaitShown) return;
    console.warn(`hushwire: conversation ${cs.state.id}: no verified archive policy; ${count} archive copies wait`);
    const notice: ChatMessage = {
      id: `archive-waiting-${Date.now()}`,
      outgoing: false,
      notice: true,
      text: "The clinic has not published an archive policy this device can verify yet: the copies of messages from this device for the clinic's record wait here and are filed as soon as it has one.",
      sentAtMs: Date.now(),
    };
    cs.state.archiveWaitShown = true;
    this.remember(c.peer, c, notice);
    try {
      await this.store.put({ meta: this.meta, [messageKey(c.peer, notice.seq ?? 0)]: notice });
    } catch (e) {
      delete cs.state.archiveWaitShown;
      c.messages.pop();
      this.byId.delete(`${c.peer}|${notice.id}`);
      throw e;
    }
    this.events.onChange?.(c.peer);
  }

  /**
   * Stores the dropped copies' records with one line in the conversation saying how many the
   * clinic's record lacks, and logs it with the conversation id and the relay's error only.
   */
  private async noteRefusedCopies(
    cs: ConvRuntime,
    c: Conversation,
    why: string,
    records: Record<string, object>,
  ): Promise<void> {
    const count = Object.keys(records).length;
    console.warn(`hushwire: conversation ${cs.state.id}: the relay refused this device's archive copies (${why}); ${count} dropped, not filed`);
    const notice: ChatMessage = {
      id: `archive-refused-${Date.now()}`,
      outgoing: false,
      notice: true,
      text: `The clinic's archive refused ${count === 1 ? "the copy of a message" : `the copies of ${count} messages`} from this device (${why}): the clinic's record of this conversation lacks ${count === 1 ? "it" : "them"}.`,
      sentAtMs: Date.now(),
    };
    this.remember(c.peer, c, notice);
    await this.store.put({ ...records, [messageKey(c.peer, notice.seq ?? 0)]: notice });
    this.events.onChange?.(c.peer);
  }

  /**
   * A clinic conversation payload from `peer` (inside `receive`): a message is kept only if its
   * sender was a member that writes at its epoch (fetched first if not verified yet);
   * receipts mark this device's messages delivered or read; a history share (agent side) adds
   * the sharer's own messages written at epochs where it wrote. Returns whether anything changed.
   */
  private async conversationInbound(
    cs: ConvRuntime,
    peer: string,
    serverTimeMs: number,
    payload: hw.DecodedPayload,
    records: Record<string, Uint8Array | object>,
    receipts: Map<string, string[]>,
  ): Promise<boolean> {
    const m = cs.membership;
    const cp = conversationPeer(cs.state.id);
    const c = this.conversations.get(cp);
    if (!c) return false;
    const key = `${cs.state.id}|${peer}`;
    // Delivered receipts go from a member that writes only (§8.2; ConversationSend is for
    // writers): a supervisor reading along sends none, as the Rust client.
    const iWrite = m.writesNow(this.address);
    const ack = (id: string) => {
      if (iWrite) receipts.set(key, [...(receipts.get(key) ?? []), id]);
    };
    if (payload.kind === "conversationMessage" || payload.kind === "conversationBinary") {
      if (payload.epoch >= m.nextEpoch) await this.refreshMembership(cs).catch(() => undefined);
      if (this.byId.has(`${cp}|${payload.messageId}`)) {
        ack(payload.messageId);
        return false;
      }
      const member = m.writerAt(payload.epoch, peer);
      const name = m.staffName(fingerprintOf(peer));
      const x: ChatMessage = member
        ? {
            id: payload.messageId,
            outgoing: false,
            text: payload.kind === "conversationMessage" ? payload.text : "(an attachment this chat cannot show)",
            sentAtMs: payload.sentAtMs,
            epoch: payload.epoch,
            sender: peer,
            senderName: name || undefined,
            serverTimeMs,
          }
        : {
            id: `refused-${payload.messageId}`,
            outgoing: false,
            notice: true,
            text: "A message from a device that was not on the conversation was refused.",
            sentAtMs: Date.now(),
          };
      this.remember(cp, c, x);
      records[messageKey(cp, x.seq ?? 0)] = x;
      if (member) ack(payload.messageId);
      return true;
    }
    if (payload.kind === "conversationDelivered" || payload.kind === "conversationRead") {
      // §8.2: per member device; shown as the furthest any member reached (read > delivered).
      const read = payload.kind === "conversationRead";
      let changed = false;
      for (const id of payload.receiptIds) {
        const x = this.byId.get(`${cp}|${id}`);
        if (!x?.outgoing || x.state === "read" || (!read && x.state === "delivered")) continue;
        x.state = read ? "read" : "delivered";
        delete x.envelopes;
        records[messageKey(cp, x.seq ?? 0)] = x;
        changed = true;
      }
      return changed;
    }
    if (payload.kind === "historyShare") {
      // §4.5, as the Rust client: the sharer must have written on the conversation (a hand-off
      // shares, then removes the agent), and each message is kept only if its own sender was a
      // member that writes at the message's epoch.
      let sharerWrote = false;
      for (let e = 0; e <= m.nextEpoch && !sharerWrote; e++) sharerWrote = m.writerAt(e, peer);
      let changed = false;
      for (const s of payload.shared) {
        const sender = s.sender;
        if (
          sharerWrote &&
          !this.byId.has(`${cp}|${s.messageId}`) &&
          s.epoch >= 1 &&
          s.epoch <= m.nextEpoch &&
          m.writerAt(s.epoch, sender)
        ) {
          const name = m.staffName(fingerprintOf(sender));
          const x: ChatMessage = {
            id: s.messageId,
            outgoing: sender === this.address,
            text: s.text,
            sentAtMs: s.sentAtMs,
            epoch: s.epoch,
            sender,
            senderName: name || undefined,
            serverTimeMs,
            shared: true,
          };
          if (x.outgoing) x.state = "sent";
          this.remember(cp, c, x);
          records[messageKey(cp, x.seq ?? 0)] = x;
          if (!x.outgoing && sender === peer) ack(s.messageId);
          changed = true;
        }
        s.free();
      }
      return changed;
    }
    if (payload.kind === "recall") {
      // §8.3: only the message's sender (same identity) within 10 minutes on the relay's
      // clock. The text is withheld from display, not erased; a refused recall is shown.
      const x = this.byId.get(`${cp}|${payload.messageId}`);
      const sameSender = x?.sender !== undefined && fingerprintOf(x.sender) === fingerprintOf(peer);
      const inTime =
        x?.serverTimeMs !== undefined && serverTimeMs - x.serverTimeMs <= hw.recallWindowMs();
      if (x && sameSender && inTime) {
        if (x.recalled) return false;
        const at = new Date(payload.sentAtMs).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        x.recalled = `Recalled by ${x.senderName ?? (this.meta.agent ? "the patient" : "the clinic")} at ${at}`;
        records[messageKey(cp, x.seq ?? 0)] = x;
        return true;
      }
      const notice: ChatMessage = {
        id: `refused-recall-${payload.messageId}-${serverTimeMs}`,
        outgoing: false,
        notice: true,
        text: "A recall was refused: too late, or not from the message's sender.",
        sentAtMs: Date.now(),
      };
      this.remember(cp, c, notice);
      records[messageKey(cp, notice.seq ?? 0)] = notice;
      return true;
    }
    if (payload.kind === "staffNote") return this.staffNoteInbound(cs, c, peer, serverTimeMs, payload.text, records);
    return false;
  }

  /**
   * Recalls this device's message `id` of the conversation under `peer` (§8.3, `hushwire
   * recall`): a Recall payload fanned out to every other member device at the verified head
   * (the sessions stored before it leaves), filed to the clinic's archive (once it has a policy),
   * and the message then shown as recalled here. Members apply it only within 10 minutes on the
   * relay's times; past that, or for a message not sent yet, it is refused here in words.
   */
  async recall(peer: string, id: string): Promise<void> {
    this.refuseReadOnly(peer, "recall");
    const cs = this.convOf(peer);
    const x = this.byId.get(`${peer}|${id}`);
    if (!cs || !x || !x.outgoing || x.notice) throw new Error("Only your own messages can be recalled.");
    if (x.recalled) return;
    if (x.state === "queued" || x.state === "held" || x.state === "failed") {
      throw new Error("This message has not reached the relay yet.");
    }
    if (Date.now() - x.sentAtMs > hw.recallWindowMs()) {
      throw new Error("Too late: a message can be recalled within 10 minutes of sending it.");
    }
    return this.serial.run(async () => {
      if (!this.authenticated) throw new Error("Not connected to the relay yet; try again in a moment.");
      await this.refreshMembership(cs);
      const m = cs.membership;
      const at = Date.now();
      const payload = hw.encodeRecall(m.conversationId, fromHex(id), at);
      const envelopes: [string, Uint8Array][] = [];
      const records: Record<string, Uint8Array | object> = {};
      for (const to of m.recipients(this.address)) {
        const session = await this.sessionFor(to);
        envelopes.push([to, session.encrypt(payload)]);
        records[`session:${to}`] = session.seal(this.store.storageKey);
      }
      await this.store.put(records);
      for (const group of chunks(envelopes, ENVELOPES_PER_FRAME)) {
        const answer = await this.sendToMembers(cs, group);
        if (answer.kind !== "sent") throw new Error(`The relay refused the recall (${answer.errorName || answer.kind}).`);
      }
      // As the CLI: the recall is filed too, so the archive shows what was withdrawn; its copy
      // is stored with the recall (policy known yet or not), then filed after the copies of what
      // was written before it.
      x.recallArchive = { atMs: at, epoch: m.nextEpoch, afterSeq: (this.nextSeq.get(peer) ?? 1) - 1 };
      x.recalled = `You recalled this message at ${new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
      await this.store.put({ [messageKey(peer, x.seq ?? 0)]: x });
      this.events.onChange?.(peer);
      this.scheduleFiling();
    });
  }

  /**
   * Read receipts (§8.2, status read): every message of the conversation under `peer` from
   * another member that is shown now and not yet acknowledged as read. The caller decides
   * "shown": the widget and the console call this only while the page is visible and the
   * conversation on screen. Sent once per message, to its sending device.
   */
  async markRead(peer: string): Promise<void> {
    const cs = this.convOf(peer);
    const c = this.conversations.get(peer);
    if (!cs || !c) return;
    // A supervisor reading along sends no read receipts (§8.2: from members that write).
    if (cs.state.supervised || !cs.membership.writesNow(this.address)) return;
    if (!c.messages.some((x) => !x.outgoing && !x.notice && x.sender && !x.readSent)) return;
    await this.serial.run(async () => {
      if (!this.authenticated) return;
      const m = cs.membership;
      const bySender = new Map<string, ChatMessage[]>();
      for (const x of c.messages) {
        if (x.outgoing || x.notice || !x.sender || x.readSent) continue;
        bySender.set(x.sender, [...(bySender.get(x.sender) ?? []), x]);
      }
      const members = new Set(m.recipients(this.address));
      const records: Record<string, Uint8Array | object> = {};
      const envelopes: [string, Uint8Array][] = [];
      for (const [sender, list] of bySender) {
        const session = this.sessions.get(sender);
        for (const x of list) {
          x.readSent = true;
          records[messageKey(peer, x.seq ?? 0)] = x;
        }
        // A device no longer on the conversation gets no receipt (the relay would refuse it).
        if (!session || !members.has(sender)) continue;
        for (const part of chunks(list, 256)) {
          envelopes.push([sender, session.encrypt(hw.encodeConversationReadReceipt(m.conversationId, part.map((x) => x.id)))]);
        }
        records[`session:${sender}`] = session.seal(this.store.storageKey);
      }
      await this.store.put(records);
      for (const group of chunks(envelopes, ENVELOPES_PER_FRAME)) {
        await this.sendToMembers(cs, group).catch(() => undefined);
      }
    });
  }

  // ------------------------------------------------------------------------------------------
  // The agent console (docs/browser.md "Agent console"): certificate, duty, queue, claim,
  // hand-off. Every check and signature is the core's (crates/hushwire-wasm/src/agent.rs).
  // ------------------------------------------------------------------------------------------

  /** Whether this device is set up as a clinic agent console (a certificate imported). */
  get isAgent(): boolean {
    return this.meta.agent !== undefined;
  }

  /**
   * Whether this console's certificate grants `role` (`agent`, `supervisor`, `admin`): an agent
   * goes on duty and claims; a supervisor who is not also an agent only reads along and opens
   * the archive.
   */
  hasRole(role: "agent" | "supervisor" | "admin"): boolean {
    const cert = this.ownCertificate;
    return cert !== undefined && cert.roles.split(/[\s,]+/).includes(role);
  }

  /** Whether this device registered at the relay (then without a certificate it is a patient for good). */
  get registered(): boolean {
    return this.meta.registered;
  }

  /** This device's certificate request (`hushwire org certify` reads it): its identity key. */
  get certificateRequest(): string {
    return this.account.certificateRequest();
  }

  /** The certified name and roles of this console's certificate ("" without one). */
  get certificateSummary(): { name: string; roles: string; notAfter: number } | undefined {
    const c = this.ownCertificate;
    return c ? { name: c.name, roles: c.roles, notAfter: c.notAfter } : undefined;
  }

  /** The clinic's name (agent console, or the widget's clinic). */
  get clinicName(): string {
    return this.clinic?.name ?? "";
  }

  get onDuty(): boolean {
    return this.meta.agent?.onDuty ?? false;
  }

  /** Verifies the stored link and certificate again (at every open); keeps what verifies. */
  private loadAgent(a: AgentState): void {
    try {
      this.clinic = hw.Clinic.parse(a.link);
    } catch (e) {
      this.agentProblem = `The stored clinic link no longer verifies: ${(e as Error).message}`;
      return;
    }
    const clinic = this.clinic;
    try {
      this.ownCertificate = clinic.verifyOwnCertificate(a.certificate, this.account, Math.floor(Date.now() / 1000));
    } catch (e) {
      this.agentProblem = `This console's certificate no longer verifies: ${(e as Error).message}. Import a renewed one.`;
    }
    const now = Math.floor(Date.now() / 1000);
    for (const state of a.conversations) {
      const membership = new hw.Membership(clinic, fromHex(state.id));
      try {
        for (const change of state.changes) membership.apply(fromHex(change), now);
      } catch {
        // kept up to the refused change; the relay's history is fetched at login
      }
      this.convs.set(state.id, { state, membership });
    }
  }

  /**
   * Imports this console's certificate: `link` (the clinic's `hushwire-clinic:` link) must
   * verify, and the certificate (the line `hushwire org certify` printed) must verify under
   * its organization key, for this device's identity, with the agent role — all in
   * WebAssembly. A console not registered yet registers presenting it at the next connection;
   * a certified console already registered installs it as a renewal (`UpdateCertificate`).
   * Returns the certified name. Throws in plain words.
   */
  async installCertificate(link: string, certificate: string): Promise<string> {
    return this.serial.run(async () => {
      let clinic: hw.Clinic;
      try {
        clinic = hw.Clinic.parse(link);
      } catch (e) {
        throw new Error(`The clinic link does not verify: ${(e as Error).message}`);
      }
      let cert: hw.OwnCertificate;
      try {
        cert = clinic.verifyOwnCertificate(certificate, this.account, Math.floor(Date.now() / 1000));
      } catch (e) {
        clinic.free();
        throw e;
      }
      if (this.meta.registered && !this.meta.agent) {
        clinic.free();
        cert.free();
        throw new Error(
          "This console already registered at the relay without a certificate, as a patient would, and the relay never makes such an identity staff. Erase this browser's console data and set the console up again.",
        );
      }
      let renewal = false;
      if (this.meta.registered && this.authenticated) {
        const answer = await this.call((id) => this.account.updateCertificateFrame(id, cert));
        if (answer.kind !== "ok") {
          clinic.free();
          cert.free();
          throw new Error(`The relay refused the certificate (${answer.errorName}).`);
        }
      } else if (this.meta.registered) {
        renewal = true; // sent at the next login
      }
      const before = this.meta.agent;
      this.meta.agent = {
        link: link.trim(),
        certificate: cert.text,
        deviceList: before?.deviceList ?? false,
        onDuty: before?.onDuty ?? false,
        conversations: before?.conversations ?? [],
        renewal,
      };
      if (!before) this.clinic = clinic;
      else clinic.free();
      this.ownCertificate?.free();
      this.ownCertificate = cert;
      this.agentProblem = "";
      await this.store.put({ meta: this.meta });
      return cert.name;
    });
  }

  /** Agent login (inside `serial`): device list, duty, queue, the histories, the archive policy. */
  private async syncAgent(): Promise<void> {
    const a = this.meta.agent;
    const cert = this.ownCertificate;
    if (!a) return;
    if (!cert) return; // an expired or unreadable certificate: no staff role until a renewal
    if (a.renewal) {
      // A renewed certificate imported while offline (`hushwire certificate install`).
      const answer = await this.call((id) => this.account.updateCertificateFrame(id, cert));
      if (answer.kind !== "ok") throw new Error(`the relay refused the renewed certificate (${answer.errorName})`);
      a.renewal = false;
      await this.store.put({ meta: this.meta });
    }
    if (!a.deviceList) {
      // As `hushwire on-duty on` does: a colleague's hand-off names the devices of this list.
      const answer = await this.call((id) => this.account.publishDeviceListFrame(id, 1));
      if (answer.kind !== "ok" && answer.errorName !== "ListRefused") {
        throw new Error(`the device list was refused: ${answer.errorName}`);
      }
      a.deviceList = true;
      await this.store.put({ meta: this.meta });
    }
    if (a.onDuty && this.hasRole("agent")) {
      await this.call((id) => hw.setOnDutyFrame(id, true));
      await this.loadQueue();
    }
    for (const cs of this.convs.values()) await this.refreshMembership(cs).catch(() => undefined);
    await this.fetchArchivePolicy();
    this.events.onMembership?.();
  }

  private noteQueue(entries: hw.QueueEntryInfo[], replace: boolean): void {
    if (replace) this.queue.clear();
    for (const e of entries) {
      const id = e.conversation;
      const held = this.convs.get(id);
      // A conversation this device handed back (or was removed from) may be claimed again.
      if ((e.state === "new" || e.state === "handedBack") && (!held || !held.membership.writesNow(this.address))) {
        this.queue.set(id, { conversation: id, state: e.state, openedAt: e.openedAt, waitingSince: e.waitingSince });
      } else {
        this.queue.delete(id);
      }
      e.free();
    }
    this.events.onQueue?.();
  }

  private async loadQueue(): Promise<void> {
    const answer = await this.call((id) => hw.fetchQueueFrame(id));
    if (answer.queueKind !== "queue") throw new Error(`the relay refused the queue: ${answer.errorName}`);
    this.noteQueue(answer.queueEntries, true);
  }

  /** Goes on or off duty (`hushwire on-duty on|off`): on duty, the queue is listed and kept live. */
  async setOnDuty(on: boolean): Promise<void> {
    const a = this.meta.agent;
    if (!a) throw new Error("This console has no certificate yet.");
    if (!this.hasRole("agent")) throw new Error(ONLY_AGENTS);
    return this.serial.run(async () => {
      if (!this.authenticated) throw new Error("Not connected to the relay yet; try again in a moment.");
      const answer = await this.call((id) => hw.setOnDutyFrame(id, on));
      if (answer.kind !== "ok") throw new Error(`The relay refused (${answer.errorName}).`);
      a.onDuty = on;
      await this.store.put({ meta: this.meta });
      if (on) await this.loadQueue();
      else this.noteQueue([], true);
    });
  }

  /** Starts keeping a conversation this device is on (claimed or handed to it). */
  private async keep(cs: ConvRuntime): Promise<void> {
    const a = this.meta.agent;
    if (!a) return;
    a.conversations.push(cs.state);
    this.convs.set(cs.state.id, cs);
    const peer = conversationPeer(cs.state.id);
    const c: Conversation = { peer, messages: [] };
    this.conversations.set(peer, c);
    this.nextSeq.set(peer, 0);
    this.meta.peers.push(peer);
    const records = this.recordChanges(cs, 0);
    for (const note of a.queueNotes?.[cs.state.id] ?? []) {
      this.remember(peer, c, note);
      records[messageKey(peer, note.seq ?? 0)] = note;
    }
    if (a.queueNotes) delete a.queueNotes[cs.state.id];
    await this.store.put({ ...records, meta: this.meta, [`conversation:${peer}`]: { peer } });
    this.queue.delete(cs.state.id);
    this.events.onQueue?.();
    this.events.onChange?.(peer);
    this.events.onMembership?.();
  }

  /** A conversation a push names that this device does not hold: kept if it is on it now. */
  private async adopt(id: string): Promise<ConvRuntime | undefined> {
    if (!this.clinic || !/^[0-9a-f]{32}$/.test(id)) return undefined;
    const cs: ConvRuntime = {
      state: { id, changes: [], deviceList: true, opened: true },
      membership: new hw.Membership(this.clinic, fromHex(id)),
    };
    try {
      await this.fetchInto(cs);
    } catch {
      cs.membership.free();
      return undefined;
    }
    if (!cs.membership.writesNow(this.address)) {
      cs.membership.free();
      return undefined;
    }
    await this.keep(cs);
    return cs;
  }

  /** Fetches and verifies a conversation's whole history into `cs` (not stored). */
  private async fetchInto(cs: ConvRuntime): Promise<void> {
    const m = cs.membership;
    const now = Math.floor(Date.now() / 1000);
    for (let round = 0; round < 64; round++) {
      const answer = await this.call((id) => hw.fetchMembershipFrame(id, m.conversationId, m.nextEpoch));
      if (answer.kind === "error") throw new Error(answer.errorName);
      if (answer.queueKind !== "membership" || answer.changeCount === 0) return;
      for (let i = 0; i < answer.changeCount; i++) m.apply(answer.change(i), now);
    }
  }

  /**
   * Supervisor: reads conversation `id`'s clinic archive as `hushwire archive` does (§7.3):
   * `key` (opened from the archive key file, it stays in WebAssembly) must be the one the
   * clinic's archive policy names (fetched again and verified under the clinic's key); the
   * conversation's history is fetched and verified from epoch 0; then every envelope the relay
   * returns for `FetchArchive` is opened and checked against it in WebAssembly. Messages and
   * recalls, oldest first, as the CLI lists them. Throws in plain words (no such conversation,
   * not a supervisor, an envelope that does not open) and then shows nothing.
   */
  async readArchive(id: string, key: hw.ArchiveKey): Promise<ArchiveRecord[]> {
    const clinic = this.clinic;
    if (!clinic || !this.ownCertificate) throw new Error(this.agentProblem || "This console has no certificate yet.");
    if (!/^[0-9a-f]{32}$/.test(id)) throw new Error("A conversation id is 32 hex digits (0-9, a-f).");
    if (!this.authenticated) throw new Error("Not connected to the relay yet; try again in a moment.");
    await this.fetchArchivePolicy();
    const policy = this.archivePolicy;
    if (!policy) throw new Error("The clinic has published no archive policy that verifies: there is no archive to read.");
    if (!key.matchesPolicy(fromHex(policy))) {
      throw new Error(
        "This archive key is not the one the clinic's archive policy names: choose the clinic's current archive key file.",
      );
    }
    const cs: ConvRuntime = {
      state: { id, changes: [], deviceList: true, opened: true },
      membership: new hw.Membership(clinic, fromHex(id)),
    };
    const reading = new hw.ArchiveReading(fromHex(id));
    try {
      try {
        await this.fetchInto(cs);
      } catch (e) {
        const why = (e as Error).message;
        throw new Error(
          why === "UnknownConversation"
            ? "The relay has no such conversation of this clinic."
            : why === "NotOnConversation"
              ? "The relay does not show this conversation's history to this console (a supervisor's certificate is needed)."
              : `The conversation's history could not be verified: ${why}`,
        );
      }
      let from = 0;
      for (;;) {
        const answer = await this.call((rid) => hw.fetchArchiveFrame(rid, fromHex(id), from));
        if (answer.kind === "error") {
          throw new Error(
            answer.errorName === "Forbidden"
              ? "The relay refused: reading the archive needs a supervisor's certificate."
              : `The relay refused to return the archive: ${answer.errorName}`,
          );
        }
        if (answer.queueKind !== "archiveItems" || answer.archiveItemCount === 0) break;
        reading.addItems(key, answer, cs.membership);
        const next = answer.archiveNextIndex;
        if (next <= from) break;
        from = next;
      }
      const records: ArchiveRecord[] = [];
      for (const e of reading.entries()) {
        const kind = e.kind;
        if (kind === "message" || kind === "recall") {
          records.push({
            kind,
            id: e.id,
            from: e.from,
            sender: e.sender,
            device: e.device,
            epoch: e.epoch,
            verified: e.verified,
            sentAtMs: e.sentAtMs,
            recalledAtMs: e.recalledAtMs,
            filedAtMs: e.filedAtMs,
            text: e.text,
            recalledBy: e.recalledBy,
            recallAtMs: e.recallAtMs,
          });
        }
        e.free();
      }
      return records;
    } finally {
      reading.free();
      cs.membership.free();
    }
  }

  /** Whether this console joined the conversation under `peer` as a supervisor (reading along, or stopped). */
  supervised(peer: string): boolean {
    return this.convOf(peer)?.state.supervised ?? false;
  }

  /** Whether this console reads along in the conversation under `peer` now (a supervisor member). */
  readsAlong(peer: string): boolean {
    const fingerprint = this.fingerprint;
    return this.members(peer).some((x) => x.fingerprint === fingerprint && x.role === "supervisor");
  }

  /**
   * Refuses, in words, what a supervisor never does in a conversation it reads along (or read
   * along) in: write, recall, hand off. The core would refuse the changes and the relay the
   * messages; this says why before anything is stored or sent.
   */
  private refuseReadOnly(peer: string, what: "send" | "recall" | "hand off"): void {
    if (!this.supervised(peer) && !this.readsAlong(peer)) return;
    const verb = what === "send" ? "write in" : what === "recall" ? "recall messages in" : "hand off";
    throw new Error(`This conversation is read only for you: a supervisor reading along does not ${verb} it.`);
  }

  /**
   * Supervision (`hushwire join --read-only CONVERSATION`, docs/conversations.md §5.1 step 5):
   * needs the supervisor role in this console's certificate. The conversation's history is
   * fetched and verified, the core signs the self-join as supervisor and checks it on a copy,
   * then it goes in `PublishChange`. Once the relay accepts it, the conversation is kept as the
   * agent's are (stored, verified again at every open): what its members fan out to this device
   * is decrypted and shown, membership changes verified. Nothing is kept if anything refuses.
   * Throws in plain words.
   */
  async joinReadOnly(id: string): Promise<void> {
    const clinic = this.clinic;
    const cert = this.ownCertificate;
    if (!clinic || !cert) throw new Error(this.agentProblem || "This console has no certificate yet.");
    if (!this.hasRole("supervisor")) {
      throw new Error("Only a supervisor reads along: this console's certificate does not grant the supervisor role.");
    }
    if (!/^[0-9a-f]{32}$/.test(id)) throw new Error("A conversation id is 32 hex digits (0-9, a-f).");
    return this.serial.run(async () => {
      if (!this.authenticated) throw new Error("Not connected to the relay yet; try again in a moment.");
      const refused = (answer: hw.Incoming) =>
        new Error(
          answer.errorName === "StaleEpoch"
            ? "The conversation changed meanwhile: try again."
            : answer.errorName === "Forbidden" || answer.errorName === "NotOnConversation"
              ? `The relay refused: this console may not read along in that conversation (${answer.errorName}).`
              : `The relay refused to let you read along (${answer.errorName || answer.kind}).`,
        );
      const now = Math.floor(Date.now() / 1000);
      const held = this.convs.get(id);
      if (held) {
        // Read along (or was on it) before: joined again on the history kept here, made current.
        await this.refreshMembership(held).catch(() => undefined);
        if (this.readsAlong(conversationPeer(id))) throw new Error("You already read along in this conversation.");
        let sent: Uint8Array | undefined;
        const answer = await this.call((rid) => (sent = this.account.joinReadOnlyFrame(held.membership, cert, rid, now)));
        if (answer.kind !== "ok" || !sent) throw refused(answer);
        const from = held.membership.nextEpoch;
        held.membership.applyOwnFrame(sent, now);
        held.state.supervised = true;
        await this.afterChanges(held, from, []);
        return;
      }
      const cs: ConvRuntime = {
        state: { id, changes: [], deviceList: true, opened: true, supervised: true },
        membership: new hw.Membership(clinic, fromHex(id)),
      };
      try {
        try {
          await this.fetchInto(cs);
        } catch (e) {
          const why = (e as Error).message;
          throw new Error(
            why === "UnknownConversation"
              ? "The relay has no such conversation of this clinic."
              : why === "NotOnConversation" || why === "Forbidden"
                ? "The relay does not show this conversation's history to this console (a supervisor's certificate is needed)."
                : `The conversation's history could not be verified: ${why}`,
          );
        }
        if (cs.membership.nextEpoch === 0) throw new Error("The relay has no such conversation of this clinic.");
        let sent: Uint8Array | undefined;
        const answer = await this.call((rid) => (sent = this.account.joinReadOnlyFrame(cs.membership, cert, rid, now)));
        if (answer.kind !== "ok" || !sent) throw refused(answer);
        cs.membership.applyOwnFrame(sent, now);
      } catch (e) {
        cs.membership.free();
        throw e;
      }
      await this.keep(cs);
    });
  }

  /**
   * A supervisor stops reading along (`hushwire leave CONVERSATION`, §5.1 step 5): the core
   * signs this identity's removal as supervisor at the verified next epoch and checks it; it
   * goes in `PublishChange`. The conversation stays listed here with what was read, as left;
   * the relay gives this device nothing written afterwards. Throws in plain words.
   */
  async leave(peer: string): Promise<void> {
    const cs = this.convOf(peer);
    const cert = this.ownCertificate;
    if (!cs || !cert) throw new Error("Not a conversation this console is on.");
    if (!this.readsAlong(peer)) throw new Error("You do not read along in this conversation.");
    return this.serial.run(async () => {
      if (!this.authenticated) throw new Error("Not connected to the relay yet; try again in a moment.");
      await this.refreshMembership(cs);
      const now = Math.floor(Date.now() / 1000);
      let sent: Uint8Array | undefined;
      const answer = await this.call((rid) => (sent = this.account.leaveReadOnlyFrame(cs.membership, cert, rid, now)));
      if (answer.kind !== "ok" || !sent) {
        throw new Error(
          answer.errorName === "StaleEpoch"
            ? "The conversation changed meanwhile: try again."
            : `The relay refused (${answer.errorName || answer.kind}): you still read along.`,
        );
      }
      const from = cs.membership.nextEpoch;
      cs.membership.applyOwnFrame(sent, now);
      cs.state.supervised = true;
      await this.afterChanges(cs, from, []);
    });
  }

  /**
   * Claims a waiting conversation (`hushwire claim`): its history is fetched and verified, the
   * claim signed and checked by the core, then sent. "taken" when another agent was first
   * (the relay shows a claimed conversation only to those on it, or answers AlreadyClaimed).
   */
  async claim(id: string): Promise<"claimed" | "taken"> {
    const clinic = this.clinic;
    const cert = this.ownCertificate;
    if (!clinic || !cert) throw new Error(this.agentProblem || "This console has no certificate yet.");
    if (!this.hasRole("agent")) throw new Error(ONLY_AGENTS);
    if (!/^[0-9a-f]{32}$/.test(id)) throw new Error("Not a conversation id.");
    return this.serial.run(async () => {
      if (!this.authenticated) throw new Error("Not connected to the relay yet; try again in a moment.");
      const held = this.convs.get(id);
      if (held && this.readsAlong(conversationPeer(id))) {
        throw new Error("You read along in this conversation as a supervisor: stop reading along first, then claim it.");
      }
      if (held) return this.claimAgain(held, cert);
      const cs: ConvRuntime = {
        state: { id, changes: [], deviceList: true, opened: true },
        membership: new hw.Membership(clinic, fromHex(id)),
      };
      const taken = () => {
        cs.membership.free();
        this.queue.delete(id);
        this.events.onQueue?.();
        return "taken" as const;
      };
      try {
        await this.fetchInto(cs);
      } catch (e) {
        if ((e as Error).message === "NotOnConversation") return taken();
        cs.membership.free();
        throw new Error(`The conversation's history could not be verified: ${(e as Error).message}`);
      }
      let sent: Uint8Array | undefined;
      let answer: hw.Incoming;
      const now = Math.floor(Date.now() / 1000);
      try {
        answer = await this.call((rid) => (sent = this.account.claimFrame(cs.membership, cert, rid, now)));
      } catch (e) {
        if (/already claimed/.test((e as Error).message)) return taken();
        cs.membership.free();
        throw e;
      }
      if (answer.queueKind === "alreadyClaimed" || answer.errorName === "StaleEpoch") return taken();
      if (answer.queueKind !== "claimed" || !sent) {
        cs.membership.free();
        throw new Error(`The relay refused the claim (${answer.errorName || answer.kind}).`);
      }
      cs.membership.applyOwnFrame(sent, now);
      await this.keep(cs);
      return "claimed";
    });
  }

  /** Claims a conversation this device holds already (handed back by it): on its kept history. */
  private async claimAgain(cs: ConvRuntime, cert: hw.OwnCertificate): Promise<"claimed" | "taken"> {
    const taken = () => {
      this.queue.delete(cs.state.id);
      this.events.onQueue?.();
      return "taken" as const;
    };
    await this.refreshMembership(cs).catch(() => undefined);
    const now = Math.floor(Date.now() / 1000);
    let sent: Uint8Array | undefined;
    let answer: hw.Incoming;
    try {
      answer = await this.call((rid) => (sent = this.account.claimFrame(cs.membership, cert, rid, now)));
    } catch (e) {
      if (/already claimed/.test((e as Error).message)) return taken();
      throw e;
    }
    if (answer.queueKind === "alreadyClaimed" || answer.errorName === "StaleEpoch" || answer.errorName === "NotOnConversation") {
      return taken();
    }
    if (answer.queueKind !== "claimed" || !sent) {
      throw new Error(`The relay refused the claim (${answer.errorName || answer.kind}).`);
    }
    const from = cs.membership.nextEpoch;
    cs.membership.applyOwnFrame(sent, now);
    // A supervisor who read along and stopped, now claiming as an agent: from here on it writes
    // (stored with the changes below, so a reload keeps it writable).
    delete cs.state.supervised;
    await this.afterChanges(cs, from, []);
    this.queue.delete(cs.state.id);
    this.events.onQueue?.();
    return "claimed";
  }

  /**
   * Hands the conversation under `peer` back to the clinic's queue (`hushwire handoff
   * CONVERSATION queue [--note TEXT]`): the core signs this device's removal and checks it;
   * the conversation waits for the next agent, and this device keeps its history read only. A
   * `note` (one line, at most 200 bytes) goes to the staff left on it and the agents on duty.
   */
  async handBack(peer: string, note = ""): Promise<void> {
    this.refuseReadOnly(peer, "hand off");
    const cs = this.convOf(peer);
    const cert = this.ownCertificate;
    if (!cs || !cert) throw new Error("Not a conversation this console is on.");
    const notePayload = this.staffNotePayload(cs, note); // refused here, before anything is sent
    return this.serial.run(async () => {
      if (!this.authenticated) throw new Error("Not connected to the relay yet; try again in a moment.");
      await this.refreshMembership(cs);
      const now = Math.floor(Date.now() / 1000);
      const none = new Uint8Array();
      const notes = notePayload ? await this.staffNoteEnvelopes(cs, notePayload, true) : [];
      let sent: Uint8Array | undefined;
      const answer = await this.call(
        (rid) => (sent = this.handOffFrame(cs, cert, rid, now, none, none, notes)),
      );
      if (answer.kind !== "ok" || !sent) {
        throw new Error(`The relay refused to hand it back (${answer.errorName || answer.kind}).`);
      }
      const from = cs.membership.nextEpoch;
      cs.membership.applyOwnFrame(sent, now);
      await this.afterChanges(cs, from, []);
      if (notePayload) await this.keepOwnNote(cs, note, notes.length);
      // The queue push may have come before this answer, while the device was still on it.
      if (this.meta.agent?.onDuty) await this.loadQueue();
    });
  }

  /**
   * Hands the conversation under `peer` to a named colleague (`hushwire handoff CONVERSATION
   * AGENT [--note TEXT]`): `colleague` is their fingerprint or address. Their certificate and
   * device list come from the relay and are verified by the core. As the CLI does by default,
   * the conversation so far is shared with them (`shareHistory`): the change adding them goes
   * first (`PublishChange`), then the history share to their devices, then this device's
   * removal (`HandOff`, carrying the `note` for the staff devices on it then: the colleague's
   * and any supervisor's); without sharing, both changes go in one `HandOff` (no note then).
   * Returns their certified name. This device is then off the conversation (read only).
   */
  async handOff(peer: string, colleague: string, shareHistory = true, note = ""): Promise<string> {
    this.refuseReadOnly(peer, "hand off");
    const cs = this.convOf(peer);
    const c = this.conversations.get(peer);
    const clinic = this.clinic;
    const cert = this.ownCertificate;
    if (!cs || !c || !clinic || !cert) throw new Error("Not a conversation this console is on.");
    const notePayload = this.staffNotePayload(cs, note); // refused here, before anything is sent
    if (notePayload && !shareHistory) throw new Error("A note goes only with a hand-off that shares the conversation.");
    const fingerprint = fingerprintOf(colleague.trim().toLowerCase());
    if (!/^[0-9a-f]{64}$/.test(fingerprint)) {
      throw new Error("Give the colleague's fingerprint or address (64 hex digits, optionally :device).");
    }
    if (fingerprint === this.fingerprint) throw new Error("A hand-off to yourself changes nothing.");
    return this.serial.run(async () => {
      if (!this.authenticated) throw new Error("Not connected to the relay yet; try again in a moment.");
      await this.refreshMembership(cs);
      const certAnswer = await this.call((id) => hw.fetchCertificateFrame(id, fingerprint));
      const theirs = certAnswer.certificate;
      if (certAnswer.kind !== "certificate" || theirs.length === 0) {
        throw new Error("That person holds no certificate of the clinic at the relay.");
      }
      const now = Math.floor(Date.now() / 1000);
      const name = clinic.verifyAgent(theirs, now, fingerprint);
      const list = (await this.call((id) => hw.fetchDeviceListFrame(id, fingerprint))).deviceList;
      const refused = (answer: hw.Incoming) =>
        new Error(
          answer.errorName === "StaleEpoch"
            ? "The conversation changed meanwhile: look at it again and retry."
            : `The relay refused the hand-off (${answer.errorName || answer.kind}).`,
        );
      const none = new Uint8Array();
      if (shareHistory) {
        let add: Uint8Array | undefined;
        const added = await this.call(
          (rid) => (add = this.account.addColleagueFrame(cs.membership, cert, rid, now, theirs, list)),
        );
        if (added.kind !== "ok" || !add) throw refused(added);
        const from = cs.membership.nextEpoch;
        cs.membership.applyOwnFrame(add, now);
        await this.afterChanges(cs, from, []);
        try {
          await this.shareHistory(cs, c, fingerprint);
        } catch (e) {
          throw new Error(
            `${name} was added, but you are still on the conversation (the history could not be shared: ${(e as Error).message}): hand off again, or reply`,
          );
        }
      }
      // The colleague is on it now (added above): the note goes to the staff devices but this one.
      const notes = notePayload ? await this.staffNoteEnvelopes(cs, notePayload, false) : [];
      let sent: Uint8Array | undefined;
      const answer = await this.call(
        (rid) =>
          (sent = shareHistory
            ? this.handOffFrame(cs, cert, rid, now, none, none, notes)
            : this.account.handOffFrame(cs.membership, cert, rid, now, theirs, list)),
      );
      if (answer.kind !== "ok" || !sent) throw refused(answer);
      const from = cs.membership.nextEpoch;
      cs.membership.applyOwnFrame(sent, now);
      await this.afterChanges(cs, from, []);
      if (notePayload) await this.keepOwnNote(cs, note, notes.length);
      return name;
    });
  }

  /**
   * §4.5 at a hand-off: the conversation's text messages so far (the patient's, this device's,
   * other agents'; recalled ones left out, as the CLI does), each under its sender, in
   * HistoryShare payloads to each of the colleague's member devices.
   */
  private async shareHistory(cs: ConvRuntime, c: Conversation, colleague: string): Promise<void> {
    const m = cs.membership;
    const member = m.members().find((x) => x.fingerprint === colleague);
    if (!member) throw new Error("the colleague is not on the conversation");
    const messages = c.messages.filter(
      (x) =>
        !x.notice &&
        !x.recalled &&
        x.epoch !== undefined &&
        (x.outgoing ? x.state !== "queued" && x.state !== "failed" : x.sender !== undefined),
    );
    if (messages.length === 0) return;
    const payloads = chunks(messages, 32).map((group) =>
      hw.encodeHistoryShareFrom(
        m.conversationId,
        group.map((x) => (x.outgoing ? this.address : (x.sender ?? ""))),
        concat(group.map((x) => fromHex(x.id))),
        Float64Array.from(group, (x) => x.epoch ?? 0),
        Float64Array.from(group, (x) => x.sentAtMs),
        group.map((x) => x.text),
      ),
    );
    const envelopes = await this.encryptForDevices(member.devices, payloads);
    for (const group of chunks(envelopes, ENVELOPES_PER_FRAME)) {
      const answer = await this.sendToMembers(cs, group);
      if (answer.kind !== "sent") throw new Error(answer.errorName || answer.kind);
    }
  }

  /**
   * A hand-off note's StaffNote payload (§8.5), encoded by the core, or undefined for no note.
   * Throws, in words, for a note that is not one line of at most 200 bytes (`clinic.md` §1).
   */
  private staffNotePayload(cs: ConvRuntime, note: string): Uint8Array | undefined {
    const text = note.trim();
    if (text === "") return undefined;
    const bytes = new TextEncoder().encode(text).length;
    if (bytes > hw.staffNoteMaxLen()) {
      throw new Error(`The note is ${bytes} bytes long; a note is at most ${hw.staffNoteMaxLen()} bytes (one line).`);
    }
    try {
      return hw.encodeStaffNote(cs.membership.conversationId, text);
    } catch (e) {
      throw new Error(`The note was refused: ${(e as Error).message}.`);
    }
  }

  /**
   * §5.2, as `hushwire handoff --note` chooses them: every device of every staff member of the
   * verified membership but this identity and, handing back (`toQueue`), every device of the
   * agents on duty (`FetchOnDuty`) whose certificate verifies under the clinic's key with the
   * agent role. Never a patient's device (the relay refuses the hand-off then). The note is
   * encrypted by the core for each over its pairwise session, the sessions stored before the
   * frame leaves; a device without a session or bundle gets no note, as in the CLI.
   */
  private async staffNoteEnvelopes(cs: ConvRuntime, payload: Uint8Array, toQueue: boolean): Promise<[string, Uint8Array][]> {
    const devices = new Set<string>();
    for (const m of cs.membership.members()) {
      if (m.role !== "patient" && m.fingerprint !== this.fingerprint) for (const d of m.devices) devices.add(d);
      m.free();
    }
    const clinic = this.clinic;
    if (toQueue && clinic) {
      const answer = await this.call((id) => hw.fetchOnDutyFrame(id));
      if (answer.queueKind !== "onDuty") throw new Error(`The relay did not list the agents on duty (${answer.errorName || answer.kind}).`);
      const now = Math.floor(Date.now() / 1000);
      for (const d of answer.onDutyDevices) {
        const fingerprint = fingerprintOf(d);
        if (devices.has(d) || fingerprint === this.fingerprint) continue;
        const cert = await this.call((id) => hw.fetchCertificateFrame(id, fingerprint));
        try {
          if (cert.kind === "certificate" && cert.certificate.length > 0) {
            clinic.verifyAgent(cert.certificate, now, fingerprint);
            devices.add(d);
          }
        } catch {
          // Not a verified agent of this clinic: no note for that device.
        }
      }
    }
    const envelopes: [string, Uint8Array][] = [];
    for (const d of [...devices].slice(0, 64)) {
      try {
        envelopes.push(...(await this.encryptForDevices([d], [payload])));
      } catch {
        // No session and no bundle for it: that device gets no note (the CLI's rule).
      }
    }
    return envelopes;
  }

  /** This console's own hand-off note, kept in its read-only copy of the conversation. */
  private async keepOwnNote(cs: ConvRuntime, note: string, devices: number): Promise<void> {
    const cp = conversationPeer(cs.state.id);
    const c = this.conversations.get(cp);
    if (!c) return;
    const x: ChatMessage = {
      id: `note-own-${Date.now()}`,
      outgoing: true,
      staffNote: true,
      sentAtMs: Date.now(),
      // No staff device to give it to (nobody else on it or on duty): said where it is shown.
      text: devices > 0 ? note.trim() : `${note.trim()} (no other staff device could receive it)`,
    };
    this.remember(cp, c, x);
    await this.store.put({ [messageKey(cp, x.seq ?? 0)]: x });
    this.events.onChange?.(cp);
  }

  /**
   * A staff note for conversation `id`, which this device does not hold (a hand-back's note to
   * the agents on duty, §5.2): its history is fetched and verified from epoch 0 (an agent may
   * while it waits in the queue), and the note kept only from a device that was an agent on it,
   * as the Rust client keeps it; until this device takes the conversation up it is shown with
   * the queue entry. Nothing is kept if the history cannot be read (claimed by someone else).
   * At most 16 notes a conversation and 64 conversations are kept. Returns whether it was kept.
   */
  private async queueNoteInbound(id: string, peer: string, serverTimeMs: number, text: string): Promise<boolean> {
    const a = this.meta.agent;
    if (!a || !this.ownCertificate || !this.clinic || !/^[0-9a-f]{32}$/.test(id)) return false;
    const cs: ConvRuntime = {
      state: { id, changes: [], deviceList: true, opened: true },
      membership: new hw.Membership(this.clinic, fromHex(id)),
    };
    try {
      await this.fetchInto(cs);
      const m = cs.membership;
      const name = m.staffName(fingerprintOf(peer));
      let agent = false;
      for (let e = 1; e <= m.nextEpoch && !agent; e++) agent = name !== "" && m.writerAt(e, peer);
      if (!agent) return false;
      const notes = (a.queueNotes ??= {});
      const list = notes[id] ?? [];
      const noteId = `note-${serverTimeMs}-${peer}`;
      if (list.some((x) => x.id === noteId)) return false;
      list.push({ id: noteId, outgoing: false, staffNote: true, text, sentAtMs: serverTimeMs, sender: peer, senderName: name, serverTimeMs, readSent: true });
      notes[id] = list.slice(-16);
      for (const old of Object.keys(notes).slice(0, -64)) delete notes[old];
      this.events.onQueue?.();
      return true;
    } catch {
      return false;
    } finally {
      cs.membership.free();
    }
  }

  /** The hand-off notes received for conversation `id` while it waits in the queue. */
  queueNotesFor(id: string): ChatMessage[] {
    return this.meta.agent?.queueNotes?.[id] ?? [];
  }

  /** The HandOff frame, with the note envelopes when there are any. */
  private handOffFrame(
    cs: ConvRuntime,
    cert: hw.OwnCertificate,
    rid: number,
    now: number,
    theirs: Uint8Array,
    list: Uint8Array,
    notes: [string, Uint8Array][],
  ): Uint8Array {
    if (notes.length === 0) return this.account.handOffFrame(cs.membership, cert, rid, now, theirs, list);
    return this.account.handOffFrameWithNotes(
      cs.membership,
      cert,
      rid,
      now,
      theirs,
      list,
      notes.map(([d]) => d),
      concat(notes.map(([, m]) => m)),
      Uint32Array.from(notes, ([, m]) => m.length),
    );
  }

  /**
   * A staff note received (§8.5), kept as the Rust client keeps it: only on a staff device, and
   * only from a device that was an agent on the conversation (a member that writes with a
   * certified staff name). Shown as "Note from Name: …", marked staff only; a refused note is
   * said as such. The patient's widget never keeps one (it is sent to staff devices only).
   */
  private staffNoteInbound(
    cs: ConvRuntime,
    c: Conversation,
    peer: string,
    serverTimeMs: number,
    text: string,
    records: Record<string, Uint8Array | object>,
  ): boolean {
    if (!this.meta.agent || !this.ownCertificate) return false; // not staff: ignored, never shown
    const m = cs.membership;
    const cp = conversationPeer(cs.state.id);
    const name = m.staffName(fingerprintOf(peer));
    let agent = false;
    for (let e = 1; e <= m.nextEpoch && !agent; e++) agent = name !== "" && m.writerAt(e, peer);
    const x: ChatMessage = agent
      ? {
          id: `note-${serverTimeMs}-${peer}`,
          outgoing: false,
          staffNote: true,
          text,
          sentAtMs: serverTimeMs,
          sender: peer,
          senderName: name,
          serverTimeMs,
          readSent: true, // a note is not a message: no receipt for it (§8.2 names message ids)
        }
      : {
          id: `refused-note-${serverTimeMs}-${peer}`,
          outgoing: false,
          notice: true,
          text: "A staff note from someone who was never an agent on this conversation was refused.",
          sentAtMs: Date.now(),
        };
    if (this.byId.has(`${cp}|${x.id}`)) return false;
    this.remember(cp, c, x);
    records[messageKey(cp, x.seq ?? 0)] = x;
    return true;
  }

  /** The agent's certified name, if the relay holds a certificate that `clinic` verifies. */
  async agentName(clinic: hw.Clinic, peer: string): Promise<string | undefined> {
    return this.serial.run(async () => {
      if (!this.authenticated) return undefined;
      const answer = await this.call((id) => hw.fetchCertificateFrame(id, fingerprintOf(peer)));
      const cert = answer.certificate;
      if (answer.kind !== "certificate" || cert.length === 0) return undefined;
      try {
        return clinic.verifyAgent(cert, Math.floor(Date.now() / 1000), fingerprintOf(peer));
      } catch {
        return undefined;
      }
    });
  }
}
