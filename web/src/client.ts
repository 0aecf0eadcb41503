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
export type MessageState = "queued" | "held" | "sent" | "delivered" | "failed";

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
  archived?: boolean; // false: its archive copy is not filed yet
  serverTimeMs?: number; // incoming: the relay's time of its delivery (recall window, §8.3)
  recalled?: string; // "Recalled by Name at HH:MM": shown instead of the text, which is kept
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
}

/** The patient's conversation with the clinic (docs/conversations.md §5.1). */
interface ClinicState {
  id: string; // the conversation id, 32 hex digits
  changes: string[]; // the verified membership changes, hex, in epoch order
  deviceList: boolean; // this device's device list is published (rule 14)
  opened: boolean; // the relay accepted OpenConversation
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
}

const DEVICE_ID = 1;
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
  /** Clinic mode: the patient's conversation with the clinic, verified in WebAssembly. */
  private membership?: hw.Membership;
  /** The clinic's archive policy (hex), verified under the clinic's key, if it has one. */
  private archivePolicy?: string;

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
      client.membership = new hw.Membership(clinic, fromHex(meta.clinic.id));
      const now = Math.floor(Date.now() / 1000);
      for (const change of meta.clinic.changes) client.membership.apply(fromHex(change), now);
    }
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
    this.open();
  }

  close(): void {
    this.stopped = true;
    this.socket?.close();
    this.socket = undefined;
    for (const s of this.sessions.values()) s.free();
    this.sessions.clear();
    this.membership?.free();
    this.membership = undefined;
    this.account.free();
    this.store.close();
  }

  private status(text: string, connected = false): void {
    this.events.onStatus?.(text, connected);
  }

  private open(): void {
    if (this.stopped) return;
    this.status("Connecting…");
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
    this.status(`Not connected. Retrying in ${Math.round(delay / 1000)} s…`);
    setTimeout(() => this.open(), delay);
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
    const answer = this.account.answerChallenge(challenge, pinned, register, 1);
    const reply = new Promise<hw.Incoming>((resolve, reject) =>
      this.pending.set(1, { resolve, reject }),
    );
    socket.send(answer as Uint8Array<ArrayBuffer>);
    const result = await reply;
    if (result.kind !== "ok") {
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
    if (this.clinic) await this.syncConversation();
    this.status("Connected", true);
    // The queue: everything not yet held by the relay goes now, in order.
    this.scheduleFlush();
  }

  // ------------------------------------------------------------------------------------------
  // Sending
  // ------------------------------------------------------------------------------------------

  /**
   * Queues a text message: stored first (state "queued", its own record), then sent when
   * connected. Messages queued together are stored in one transaction and sent together.
   */
  async sendText(peer: string, text: string): Promise<ChatMessage> {
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
      if (this.membership && c.peer === this.clinicPeer) {
        await this.flushConversation(c);
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
    const convReceipts = new Map<string, string[]>();
    let convChanged = false;
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
        if (await this.conversationInbound(peer, frame.serverTimeMs, payload, records, convReceipts)) {
          convChanged = true;
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
    const convOutgoing: [string, Uint8Array][] = [];
    const membership = this.membership;
    if (membership) {
      for (const [peer, ids] of convReceipts) {
        const session = this.sessions.get(peer);
        if (!session) continue;
        for (const part of chunks(ids, 256)) {
          convOutgoing.push([peer, session.encrypt(hw.encodeConversationReceipt(membership.conversationId, part))]);
        }
      }
      if (convChanged) records.meta = this.meta;
    }
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
    if (convChanged) this.events.onChange?.(this.clinicPeer);
    const answers: Promise<unknown>[] = [];
    if (membership && convOutgoing.length > 0) {
      // Delivered receipts to each member device that wrote, in ConversationSend (§8.2).
      for (const group of chunks(convOutgoing, ENVELOPES_PER_FRAME)) {
        answers.push(this.sendToMembers(group).catch(() => undefined));
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
  // The clinic conversation (docs/conversations.md): the patient's side
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

  /**
   * The agents on the conversation now, each as "Name — verified agent of Clinic": the name is
   * that of the clinic certificate which the membership change adding them carried, verified
   * in WebAssembly under the clinic's key (rules 6 and 7). Empty while it waits in the queue.
   */
  verifiedAgents(): string[] {
    const m = this.membership;
    if (!m || !this.clinic) return [];
    const clinicName = this.clinic.name;
    return m
      .members()
      .filter((x) => x.role === "agent")
      .map((x) => `${x.name} — verified agent of ${clinicName}`);
  }

  /** Run at every login (inside `serial`): publish, open, catch up on the history, policy. */
  private async syncConversation(): Promise<void> {
    const state = this.meta.clinic;
    const clinic = this.clinic;
    if (!state || !clinic || !this.membership) return;
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
      this.membership.free();
      this.membership = membership;
      const answer = await this.call((id) =>
        this.account.openConversationFrame(membership, id, Math.floor(Date.now() / 1000)),
      );
      if (answer.kind === "ok") {
        state.opened = true;
        await this.store.put({ ...this.recordChanges(0), meta: this.meta });
        this.events.onChange?.(this.clinicPeer);
      } else if (answer.errorName === "ConversationExists") {
        // Opened before a reload with another signature: the relay's history is fetched below.
        state.opened = true;
        this.membership = new hw.Membership(clinic, fromHex(state.id));
        membership.free();
        await this.store.put({ meta: this.meta });
      } else {
        this.membership = new hw.Membership(clinic, fromHex(state.id));
        membership.free();
        throw new Error(`the clinic refused the conversation: ${answer.errorName}`);
      }
    }
    await this.refreshMembership();
    // The clinic's archive policy (§7.1): used only if it verifies under the clinic's key.
    const policy = await this.call((id) => hw.fetchArchivePolicyFrame(id)).catch(() => undefined);
    const bytes = policy?.archivePolicy;
    if (bytes && bytes.length > 0) {
      try {
        clinic.verifyArchivePolicy(bytes);
        this.archivePolicy = toHex(bytes);
      } catch {
        this.archivePolicy = undefined;
      }
    }
    this.events.onMembership?.();
  }

  /**
   * Notes the changes verified from index `from` on in `meta.clinic.changes` and as notices in
   * the conversation; returns the records to store (the caller stores them with `meta`).
   */
  private recordChanges(from: number): Record<string, object> {
    const m = this.membership;
    const state = this.meta.clinic;
    const records: Record<string, object> = {};
    if (!m || !state) return records;
    const peer = this.clinicPeer;
    const c = this.conversations.get(peer);
    for (let i = from; i < m.nextEpoch; i++) {
      if (i >= state.changes.length) state.changes.push(toHex(m.change(i)));
      if (!c) continue;
      const notice: ChatMessage = {
        id: `change-${i}`,
        outgoing: false,
        notice: true,
        text: m.describe(i),
        sentAtMs: Date.now(),
      };
      if (this.byId.has(`${peer}|${notice.id}`)) continue;
      this.remember(peer, c, notice);
      records[messageKey(peer, notice.seq ?? 0)] = notice;
    }
    return records;
  }

  /** Applies changes in order; returns the fingerprints of agents who joined. Throws on the first refusal. */
  private applyChanges(changes: Uint8Array[]): string[] {
    const m = this.membership;
    if (!m) return [];
    const agentsBefore = new Set(m.members().filter((x) => x.role === "agent").map((x) => x.fingerprint));
    const now = Math.floor(Date.now() / 1000);
    for (const change of changes) m.apply(change, now);
    return m
      .members()
      .filter((x) => x.role === "agent" && !agentsBefore.has(x.fingerprint))
      .map((x) => x.fingerprint);
  }

  /** Fetches the history from the verified head, verifies and keeps it (inside `serial`). */
  private async refreshMembership(): Promise<void> {
    const m = this.membership;
    const state = this.meta.clinic;
    if (!m || !state?.opened) return;
    for (let round = 0; round < 16; round++) {
      const from = m.nextEpoch;
      const answer = await this.call((id) => hw.fetchMembershipFrame(id, m.conversationId, from));
      if (answer.queueKind !== "membership" || answer.changeCount === 0) return;
      const changes: Uint8Array[] = [];
      for (let i = 0; i < answer.changeCount; i++) changes.push(answer.change(i));
      let joined: string[] = [];
      let refused: Error | undefined;
      try {
        joined = this.applyChanges(changes);
      } catch (e) {
        refused = e as Error; // what verified before the refused change is kept
      }
      await this.afterChanges(from, joined);
      if (refused) throw refused;
    }
  }

  /** A pushed change: applied when it is the next one, else the history is fetched. */
  private async learnPushed(frame: hw.Incoming): Promise<void> {
    const m = this.membership;
    if (!m || !this.meta.clinic?.opened) return;
    const from = m.nextEpoch;
    let joined: string[];
    try {
      joined = this.applyChanges([frame.change(0)]);
    } catch {
      await this.refreshMembership(); // a gap (or another conversation's): fetch and verify
      return;
    }
    await this.afterChanges(from, joined);
  }

  /** Stores newly verified changes, shows them, and shares waiting messages with new agents. */
  private async afterChanges(from: number, joinedAgents: string[]): Promise<void> {
    if (!this.membership || this.membership.nextEpoch === from) return;
    const records = this.recordChanges(from);
    await this.store.put({ ...records, meta: this.meta });
    this.events.onChange?.(this.clinicPeer);
    this.events.onMembership?.();
    for (const agent of joinedAgents) {
      await this.shareWaiting(agent).catch(() => undefined);
    }
    this.scheduleFlush();
  }

  /**
   * §4.5: what this patient wrote while no agent was on the conversation is shared with the
   * agent who joined, in HistoryShare payloads to each of the agent's member devices.
   */
  private async shareWaiting(agentFingerprint: string): Promise<void> {
    const m = this.membership;
    const c = this.conversations.get(this.clinicPeer);
    if (!m || !c) return;
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
    const envelopes: [string, Uint8Array][] = [];
    const records: Record<string, Uint8Array | object> = {};
    for (const device of agent.devices) {
      const session = await this.sessionFor(device);
      for (const p of payloads) envelopes.push([device, session.encrypt(p)]);
      records[`session:${device}`] = session.seal(this.store.storageKey);
    }
    await this.store.put(records);
    let shared = false;
    for (const group of chunks(envelopes, ENVELOPES_PER_FRAME)) {
      const answer = await this.sendToMembers(group);
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
  private sendToMembers(envelopes: [string, Uint8Array][]): Promise<hw.Incoming> {
    const m = this.membership;
    if (!m) return Promise.reject(new Error("no clinic conversation"));
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
   * The clinic conversation's queued messages (inside `serial`): each encrypted once per other
   * member device at the verified head epoch (pairwise fan-out, §2), stored with the sessions,
   * then sent in `ConversationSend` frames. Written while no agent is on it, a message is
   * "held" (shared when an agent claims, §4.5). `StaleEpoch` or `NotOnConversation`: the
   * history is fetched and the stored ciphertexts go again to the devices still members
   * (§4.4); a removed device gets nothing, and a message none of whose recipients stayed is
   * encrypted again for the members at the new head.
   */
  private async flushConversation(c: Conversation): Promise<void> {
    const m = this.membership;
    if (!m || !this.meta.clinic?.opened) return;
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
        if (this.archivePolicy) x.archived = false;
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
          this.sendToMembers(group.map(([to, ct]) => [to, fromHex(ct)])).catch(() => undefined),
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
      await this.refreshMembership();
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
    await this.fileArchive(c, updated);
    if (Object.keys(updated).length > 0) {
      await this.store.put(updated);
      this.events.onChange?.(c.peer);
    }
    if (requeued) this.scheduleFlush();
  }

  /** §7.3: each message not yet archived is sealed to the clinic's archive key and filed. */
  private async fileArchive(c: Conversation, updated: Record<string, object>): Promise<void> {
    const m = this.membership;
    const policy = this.archivePolicy;
    if (!m || !policy || !this.clinic) return;
    for (const x of c.messages) {
      if (!x.outgoing || x.archived !== false || x.epoch === undefined || x.state === "queued") continue;
      const payload = hw.encodeConversationMessage(m.conversationId, x.epoch, fromHex(x.id), x.sentAtMs, x.text);
      const clinic = this.clinic;
      const answer = await this.call((id) =>
        clinic.putArchiveFrame(id, fromHex(policy), m.conversationId, this.address, x.epoch ?? 0, payload),
      ).catch(() => undefined);
      if (answer?.kind !== "ok") return; // tried again at the next flush
      x.archived = true;
      updated[messageKey(c.peer, x.seq ?? 0)] = x;
    }
  }

  /**
   * A clinic conversation payload from `peer` (inside `receive`): a message is kept only if its
   * sender was a member that writes at its epoch (fetched first if not verified yet);
   * receipts mark this patient's messages delivered. Returns whether anything changed.
   */
  private async conversationInbound(
    peer: string,
    serverTimeMs: number,
    payload: hw.DecodedPayload,
    records: Record<string, Uint8Array | object>,
    receipts: Map<string, string[]>,
  ): Promise<boolean> {
    const m = this.membership;
    const c = this.conversations.get(this.clinicPeer);
    if (!m || !c || payload.conversation !== this.meta.clinic?.id) return false;
    const cp = c.peer;
    if (payload.kind === "conversationMessage" || payload.kind === "conversationBinary") {
      if (payload.epoch >= m.nextEpoch) await this.refreshMembership().catch(() => undefined);
      if (this.byId.has(`${cp}|${payload.messageId}`)) {
        receipts.set(peer, [...(receipts.get(peer) ?? []), payload.messageId]);
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
      if (member) receipts.set(peer, [...(receipts.get(peer) ?? []), payload.messageId]);
      return true;
    }
    if (payload.kind === "conversationDelivered" || payload.kind === "conversationRead") {
      let changed = false;
      for (const id of payload.receiptIds) {
        const x = this.byId.get(`${cp}|${id}`);
        if (x?.outgoing && x.state !== "delivered") {
          x.state = "delivered";
          delete x.envelopes;
          records[messageKey(cp, x.seq ?? 0)] = x;
          changed = true;
        }
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
        x.recalled = `Recalled by ${x.senderName ?? "the clinic"} at ${at}`;
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
    // History shares and staff notes are not for a patient's device.
    return false;
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
