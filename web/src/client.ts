// The browser client: a relay connection over WebSocket, login bound to the pinned relay key,
// registration, prekeys, bundles, sessions, send / acknowledge / receipts, and the pipelines of
// docs/client.md §5 that a patient chat needs: a persistent queue of outgoing messages, store
// before acknowledge, delivered receipts, reconnect with backoff. Frames, payloads, sessions and
// sealing are all the WebAssembly core's (./wasm); this file only moves bytes and keeps state.

import * as hw from "./wasm";
import { SealedStore } from "./store";

export type MessageState = "queued" | "sent" | "delivered" | "failed";

export interface ChatMessage {
  id: string; // 32 hex digits
  outgoing: boolean;
  text: string;
  sentAtMs: number;
  state?: MessageState;
  seq?: number; // the record's number: stored as `msg:<peer>:<seq>`, one record per message
  ciphertext?: string; // hex; an encrypted queued message not yet taken by the relay
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
}

export interface ClientEvents {
  onChange?(peer: string): void;
  onStatus?(text: string, connected: boolean): void;
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

  private constructor(
    readonly store: SealedStore,
    private account: hw.Account,
    private meta: Meta,
    private relayUrl: string,
    private events: ClientEvents,
  ) {}

  /** Opens the client's state from `store`, creating an account the first time. */
  static async open(
    store: SealedStore,
    relayUrl: string,
    events: ClientEvents = {},
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
    const client = new HushwireClient(store, account, meta, relayUrl, events);
    client.relayKeyFingerprint = meta.relayKeyFingerprint ?? "";
    const decoder = new TextDecoder();
    for (const peer of meta.peers) {
      const sealed = await store.getBytes(`session:${peer}`);
      if (sealed) client.sessions.set(peer, hw.Session.unseal(sealed, store.storageKey));
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
    const answers: Promise<unknown>[] = [];
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
